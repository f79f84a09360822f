//! `rrr rootfs`: the qcow2 disk that boots straight to the stimulus: static busybox, rrr's
//! /init and the stimulus, built as an unprivileged user (`mkfs.ext4 -d`, `qemu-img convert`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::cache::{self, Key};
use crate::tools::{require, run_quiet};

/// The /init script.
pub(crate) const INIT: &str = include_str!("../assets/init.sh");
/// Printed by /init when it waits for the go line.
pub(crate) const READY: &str = "RRR-READY";
/// Printed by /init when the stimulus has exited.
pub(crate) const END: &str = "RRR-END status=";
/// The console line that makes /init power the machine off once the stimulus has ended.
pub(crate) const POWER_OFF: &str = "off\n";
/// The stimulus's name on the disk (`/stimulus`), which the kernel gives its task.
pub(crate) const STIMULUS_NAME: &str = "stimulus";
/// Where `busybox-static` installs busybox.
const BUSYBOX: &str = "/bin/busybox";
/// Bumped when the image recipe changes.
const RECIPE: &str = "rootfs-recipe-1";

/// True if the ELF file at `path` has no program interpreter (is statically linked).
fn is_static_elf(path: &Path) -> anyhow::Result<bool> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let u16_at = |o: usize| {
        b.get(o..o + 2)
            .map(|s| u16::from_le_bytes([s[0], s[1]]) as usize)
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
    };
    if b.get(..5) != Some(b"\x7fELF\x02") {
        return Ok(false);
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Ok(false);
    };
    const PT_INTERP: u32 = 3;
    Ok((0..phnum).all(|i| {
        let at = phoff as usize + i * phentsize;
        b.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().expect("4 bytes")) != PT_INTERP)
    }))
}

/// Builds (or finds in the cache) the disk image for `stimulus`; returns the qcow2's path.
pub fn build(stimulus: &Path) -> crate::Result<PathBuf> {
    let busybox = Path::new(BUSYBOX);
    if !busybox.is_file() || !is_static_elf(busybox)? {
        crate::fail!(
            MissingTool,
            "{BUSYBOX} is missing or not static: install busybox-static (scripts/setup does it)"
        );
    }
    if !is_static_elf(stimulus)? {
        crate::fail!(
            BadInput,
            "{} is not a static x86-64 ELF: build it with `rrr stimulus FILE.c`",
            stimulus.display()
        );
    }
    let mkfs = require("mkfs.ext4", "e2fsprogs")?;
    let qemu_img = require("qemu-img", "qemu-utils")?;
    let mut key = Key::default();
    key.add("recipe", RECIPE.as_bytes())
        .add("init", INIT.as_bytes())
        .add_file("busybox", busybox)?
        .add_file("stimulus", stimulus)?;
    let disk = cache::file_entry(cache::Kind::Rootfs, &key, "rootfs.qcow2", |dir| {
        let root = dir.join("root");
        for d in ["bin", "dev", "proc", "sys", "tmp"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        std::fs::copy(busybox, root.join("bin/busybox"))?;
        let list = Command::new(busybox).arg("--list").output()?;
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if !applet.is_empty() && applet != "busybox" {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
            }
        }
        write_executable(&root.join("init"), INIT.as_bytes())?;
        write_executable(&root.join(STIMULUS_NAME), &std::fs::read(stimulus)?)?;
        let raw = dir.join("rootfs.ext4");
        std::fs::File::create(&raw)?.set_len(64 << 20)?;
        run_quiet(
            Command::new(mkfs)
                .args(["-q", "-F", "-L", "rrr-root", "-d"])
                .arg(&root)
                .arg(&raw),
            "mkfs.ext4",
        )?;
        run_quiet(
            Command::new(qemu_img)
                .args(["convert", "-O", "qcow2"])
                .arg(&raw)
                .arg(dir.join("rootfs.qcow2")),
            "qemu-img convert",
        )?;
        std::fs::remove_file(&raw)?;
        std::fs::remove_dir_all(&root)?;
        Ok(())
    })?;
    Ok(disk)
}

fn write_executable(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}
