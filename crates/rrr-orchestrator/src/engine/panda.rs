//! PANDA (`panda-system-x86_64`, QEMU 2.9 with its own record/replay) on the i440FX `pc`
//! machine with an IDE disk, the tracer as the PANDA plugin `rrr_trace`, reverse debugging
//! through PANDA's checkpoint plugin and its instruction-count breakpoints.
//!
//! How a recording starts. `-record-from SNAPSHOT:NAME` sets a flag that PANDA's main loop
//! acts on (`vl.c` `main_loop` -> `rr_do_begin_record` in `panda/src/rr/rr_log.c`): it loads
//! the snapshot (`load_vmstate`), writes the recording's own snapshot (`qemu_savevm_state`)
//! and opens the log. By then a machine started without `-S` is running: its vCPU executes
//! the BIOS, and `load_vmstate`, unlike the monitor's `loadvm`, does not stop it first. And
//! `qemu_savevm_state` drops the global lock while it writes its header
//! (`migration/savevm.c`), which lets the vCPU run the freshly loaded kernel, unrecorded,
//! with what the BIOS left where the snapshot has nothing, and the snapshot's clock offsets
//! loaded into running clocks (the guest's clock jumps by the host's uptime). The recording
//! starts from wherever that run got to, not from the snapshot (from a snapshot taken in
//! `vfs_write`, a recording that starts idle in `native_safe_halt`, same jiffies); from some
//! snapshots (more of them on a busy host) with an interrupt requested that no interrupt
//! controller holds, which the vCPU takes as vector -1: a general protection fault in /init
//! at the recording's first instructions; from others it hangs. rrr starts the recording's
//! machine paused (`-S`): the snapshot is loaded and saved into a machine that never ran, so
//! the recording starts exactly at the snapshot, and rrr lets it run once PANDA has opened
//! the log ([`Emulator::begin_recording`]).
//!
//! Where the snapshot is taken. gdb's reverse steps restore the checkpoint PANDA's checkpoint
//! plugin takes at the replay's first block and run forward from there; from a recording whose
//! first instruction is in the middle of kernel code (a snapshot taken while /init still
//! writes its ready marker) the restored replay spins at instruction 0 and PANDA aborts
//! (`detect_infinite_loops`). rrr takes the ready snapshot with the vCPU halted, idle, as it is
//! once /init waits for its go line ([`Emulator::settle_for_snapshot`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rrr_trace::locate::Located;

use super::{Boot, Emulator, GdbTo, Mode, RunEnd, Verdict};
use crate::machine::{self, AtEnd, Vm, READY_SNAPSHOT};
use crate::tools;

/// What PANDA prints once `-record-from` has loaded the snapshot and written the recording's
/// start: the last step before it records.
const RECORDING_BEGUN: &str = "opening nondet log for write";
/// How long PANDA may take to load the ready snapshot and write the recording's start.
const RECORD_START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the booted machine may take to go idle after /init's ready marker.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The PANDA system emulator.
const PANDA: &str = "panda-system-x86_64";
/// What PANDA prints when a replay reached the end of its log.
const REPLAY_DONE: &str = "Replay completed successfully";
/// What PANDA prints when a replay's input does not match its log.
const REPLAY_MISMATCH: &str = "rr_assertion";

/// The PANDA engine.
pub struct Panda;

impl Emulator for Panda {
    fn binary(&self) -> &'static str {
        PANDA
    }

    /// `$RRR_PANDA` if set, else `panda-system-x86_64` from PATH.
    fn program(&self) -> PathBuf {
        locate()
            .ok()
            .flatten()
            .unwrap_or_else(|| PathBuf::from(PANDA))
    }

    fn require(&self) -> anyhow::Result<String> {
        require_panda()
    }

    fn plugin(&self) -> anyhow::Result<PathBuf> {
        tools::built_library(PANDA_PLUGIN_LIB, "RRR_PANDA_PLUGIN")
    }

    /// An IDE disk (see [`Emulator::machine_args`]).
    fn root_device(&self) -> &'static str {
        "/dev/sda"
    }

    /// PANDA's QEMU 2.9 cannot load a q35 snapshot into a machine that has run (its ICH9 LPC
    /// asserts), which both its recording (from a snapshot) and its replay do: the i440FX.
    fn chipset(&self) -> &'static str {
        "pc"
    }

    /// PANDA's own record/replay needs no icount; it records from a snapshot of the disk's
    /// qcow2 (`-record-from`) into `<name>-rr-snp` + `<name>-rr-nondet.log`, and replays them
    /// with `-replay <name>`. The tracer plugin comes in by name (`-panda`), from the
    /// `PANDA_DIR` that [`Emulator::load_plugin`] sets.
    ///
    /// The disk is IDE: PANDA records what its IDE controller writes into guest memory, but not
    /// what virtio-blk writes (its used ring is written behind the log's back, so a replay reads
    /// another ring index in `vring_interrupt` and diverges a few million instructions in).
    fn machine_args(&self, c: &mut Command, boot: &Boot, disk: &Path, mode: &Mode, monitor: &Path) {
        c.args(["-net", "none"])
            .arg("-monitor")
            .arg(format!("unix:{},server,nowait", monitor.display()))
            .args(["-drive", &format!("file={},if=none,id=img", disk.display())])
            .args(["-device", "ide-hd,drive=img,bus=ide.0"]);
        match mode {
            Mode::Boot { .. } => {}
            Mode::Record { rrfile } => {
                // Paused (`-S`) until [`Emulator::begin_recording`]: see the module's doc.
                c.arg("-S")
                    .arg("-record-from")
                    .arg(format!("{READY_SNAPSHOT}:{}", rrfile.display()));
            }
            Mode::Replay {
                rrfile,
                plugin,
                gdb,
            } => {
                c.arg("-replay").arg(rrfile);
                if let Some((_, args)) = plugin {
                    c.arg("-panda").arg(format!("{PANDA_PLUGIN_NAME}:{args}"));
                }
                if let Some(port) = gdb {
                    // The checkpoint plugin keeps the states reverse execution goes back to.
                    c.args(["-S", "-gdb", &format!("tcp:127.0.0.1:{port}")])
                        .arg("-panda")
                        .arg(format!("checkpoint:space={}", boot.memory));
                }
            }
        }
    }

    /// Stops the machine where its vCPU is halted (idle, waiting for an interrupt), which the
    /// guest is once /init waits for its go line. Saved in the middle of kernel code (as when
    /// `savevm` comes while /init still writes the ready marker), a snapshot makes recordings
    /// that gdb cannot step back into: PANDA's checkpoint restore then spins at instruction 0
    /// (`detect_infinite_loops`).
    fn settle_for_snapshot(&self, vm: &mut Vm) -> anyhow::Result<()> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            vm.monitor("stop")?;
            let cpus = vm.monitor("info cpus")?;
            if cpus.contains("(halted)") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the machine did not go idle within {} s of /init's ready marker, so PANDA \
                     has no quiet moment to take the ready snapshot at; its vCPU: {cpus}",
                    SETTLE_TIMEOUT.as_secs()
                );
            }
            vm.monitor("cont")?;
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `-record-from` under `-S`: PANDA loads the ready snapshot and writes the recording's
    /// start into a stopped machine, then rrr runs it (see the module's doc).
    fn begin_recording(&self, vm: &mut Vm) -> anyhow::Result<()> {
        let deadline = Instant::now() + RECORD_START_TIMEOUT;
        loop {
            match vm.next_line(deadline) {
                Ok(Some(line)) if line.contains(RECORDING_BEGUN) => break,
                Ok(Some(_)) => {}
                Ok(None) => bail!(
                    "PANDA did not begin recording within {} s of its start (it never said \
                     `{RECORDING_BEGUN}`): the recording hung at its start, before the stimulus \
                     ran; record again, and if it repeats, report it with the console log",
                    RECORD_START_TIMEOUT.as_secs()
                ),
                Err(machine::Ended) => {
                    let exit = vm.wait(Duration::from_secs(10))?;
                    bail!(
                        "PANDA exited before it began recording ({}); it said:\n{}",
                        exit.status,
                        exit.stderr.trim_end()
                    );
                }
            }
        }
        vm.monitor("cont")?;
        Ok(())
    }

    /// PANDA exits at the end of a run; its replay checks itself against its log.
    fn at_end(&self, _mode: &Mode) -> AtEnd {
        AtEnd::Exits
    }

    /// A panic reboots at once, which ends PANDA's run.
    fn panic_timeout(&self) -> i32 {
        -1
    }

    /// The name prefix of PANDA's `<name>-rr-snp` and `<name>-rr-nondet.log`.
    fn replay_log(&self) -> &'static str {
        "panda"
    }

    /// PANDA replays from its own `<name>-rr-snp`: nothing to do.
    fn finish_recording(&self, _disk: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    /// PANDA finds `-panda rrr_trace` in `$PANDA_DIR`: a private one holding exactly this
    /// build's plugin.
    fn load_plugin(&self, cmd: &mut Command, plugin: &Path, scratch: &Path) -> anyhow::Result<()> {
        cmd.env("PANDA_DIR", panda_dir_with_plugin(scratch, plugin)?);
        Ok(())
    }

    /// PANDA does not replay the console; it checks every input against its log (and aborts
    /// at the first mismatch) and says whether the replay reached the log's end.
    fn verdict(&self, replayed: &RunEnd, _recorded: &RunEnd) -> Verdict {
        if let Some(check) = replayed
            .console
            .lines()
            .find(|l| l.contains(REPLAY_MISMATCH))
        {
            return Verdict::Diverged(format!("PANDA: {}", check.trim()));
        }
        if replayed.console.contains(REPLAY_DONE) {
            Verdict::Complete
        } else {
            Verdict::Short
        }
    }

    fn replay_check(&self, _replayed: &RunEnd) -> String {
        "reached the end of its log, every input checked against it".to_owned()
    }

    /// PANDA's replay under gdb waits at its start (`-S`).
    fn hold_for_gdb(&self, _vm: &mut Vm) -> anyhow::Result<String> {
        Ok("the recording's start".to_owned())
    }

    /// PANDA stops at an instruction count, which is the trace's clock.
    fn gdb_to(
        &self,
        at: u64,
        _locate: &mut dyn FnMut(u64) -> anyhow::Result<Located>,
    ) -> anyhow::Result<GdbTo> {
        Ok(GdbTo {
            commands: vec![
                format!("maint packet qPandaCmd:rrbreakpoint:{at}"),
                "continue".to_owned(),
            ],
            place: format!("instruction {at}"),
        })
    }

    /// (`ATA_PIIX` also needs `ATA_SFF` and `ATA_BMDMA`, which are on by default under `ATA`.)
    fn drivers(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("ATA", "the PANDA machine's root disk is IDE (PIIX)"),
            ("ATA_PIIX", "the PANDA machine's root disk is IDE (PIIX)"),
            ("SCSI", "an IDE disk is a SCSI disk (/dev/sda)"),
            ("BLK_DEV_SD", "an IDE disk is a SCSI disk (/dev/sda)"),
        ]
    }
}

/// The variable naming the PANDA binary to use when it is not (or not the one) on PATH.
const PANDA_VAR: &str = "RRR_PANDA";

/// The PANDA binary: `$RRR_PANDA` if set (an error if that is no file), else
/// `panda-system-x86_64` from PATH, else none.
fn locate() -> anyhow::Result<Option<PathBuf>> {
    match std::env::var_os(PANDA_VAR) {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                bail!(
                    "{PANDA_VAR}={} is not a file: set it to PANDA's panda-system-x86_64 (in a \
                     PANDA build, x86_64-softmmu/panda-system-x86_64), or unset it to use the \
                     one in PATH",
                    p.display()
                );
            }
            Ok(Some(p))
        }
        _ => Ok(tools::find(PANDA)),
    }
}

/// The PANDA plugin as cargo builds it.
const PANDA_PLUGIN_LIB: &str = "libpanda_rrr_trace.so";
/// The PANDA plugin's name (`-panda rrr_trace`); PANDA loads it from `panda_rrr_trace.so`.
const PANDA_PLUGIN_NAME: &str = "rrr_trace";
/// Where, under `$PANDA_DIR`, PANDA looks for plugins first.
const PANDA_DIR_PLUGINS: &str = "x86_64-softmmu/panda/plugins";

/// Checks PANDA once per process; its identity is its version line plus its binary's size and
/// modification time (every PANDA build calls itself QEMU 2.9.1).
fn require_panda() -> anyhow::Result<String> {
    static CHECKED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(id) = CHECKED.get() {
        return Ok(id.clone());
    }
    let Some(panda) = locate()? else {
        bail!(
            "`{PANDA}` not found in PATH: the PANDA engine needs PANDA (https://github.com/panda-re/panda), \
             which no package registry has; use rrr's Docker image (README: Docker), or build PANDA \
             and put its x86_64-softmmu directory in PATH or its binary in {PANDA_VAR}; or use the \
             default engine, `--engine qemu`"
        );
    };
    let text = tools::version_output(&panda, "--version")?;
    let Some(line) = text.lines().find(|l| l.contains("version")) else {
        bail!(
            "{} --version printed no version: is it PANDA's panda-system-x86_64?",
            panda.display()
        );
    };
    let meta = std::fs::metadata(&panda)?;
    let mtime = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let id = format!("{} size={} mtime={mtime}", line.trim(), meta.len());
    Ok(CHECKED.get_or_init(|| id).clone())
}

/// A `$PANDA_DIR` in which PANDA finds exactly this build's `rrr_trace` plugin, under `dir`
/// (PANDA resolves every other plugin next to its binary, as usual). Returns the directory to
/// pass as `PANDA_DIR`.
fn panda_dir_with_plugin(dir: &Path, plugin: &Path) -> anyhow::Result<PathBuf> {
    let plugins = dir.join(PANDA_DIR_PLUGINS);
    std::fs::create_dir_all(&plugins)?;
    let link = plugins.join(format!("panda_{PANDA_PLUGIN_NAME}.so"));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(plugin, &link)
        .with_context(|| format!("linking {} to {}", link.display(), plugin.display()))?;
    Ok(dir.to_owned())
}

/// Where PANDA looks for plugins of the binary at `panda`: `<its dir>/panda/plugins` in a
/// build tree, else the install location.
fn plugin_dir_of(panda: &Path) -> PathBuf {
    let beside = panda
        .parent()
        .map(|d| d.join("panda/plugins"))
        .filter(|d| d.is_dir());
    beside.unwrap_or_else(|| PathBuf::from("/usr/local/lib/panda/x86_64"))
}

/// Copies the PANDA plugin into `to` (default: the plugin directory of the PANDA in PATH),
/// so that `panda-system-x86_64 -replay REC -panda rrr_trace:profile=P,out=T` works by hand
/// (rrr's own replays do not need it: they point PANDA at the plugin of the running rrr).
/// Returns the installed file.
pub fn install_plugin(to: Option<PathBuf>) -> crate::Result<PathBuf> {
    let plugin = Panda.plugin()?;
    let dir = match to {
        Some(d) => d,
        None => {
            let panda = locate()?.with_context(|| {
                format!(
                    "`{PANDA}` not found in PATH nor in {PANDA_VAR}: pass the plugin directory \
                     with --to"
                )
            })?;
            plugin_dir_of(&panda)
        }
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating {} (pass another with --to)", dir.display()))?;
    let dest = dir.join(format!("panda_{PANDA_PLUGIN_NAME}.so"));
    let tmp = dir.join(format!(
        ".panda_{PANDA_PLUGIN_NAME}.so.{}",
        std::process::id()
    ));
    std::fs::copy(&plugin, &tmp)
        .with_context(|| format!("copying {} to {}", plugin.display(), dir.display()))?;
    std::fs::rename(&tmp, &dest)?;
    Ok(dest)
}

/// How to replay by hand with the installed plugin.
pub fn manual_replay_hint() -> String {
    format!(
        "{PANDA} ... -replay REC -panda {PANDA_PLUGIN_NAME}:profile=P.rrrprof,out=trace.pftrace"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_dir_is_the_build_trees_when_there_is_one() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("x86_64-softmmu");
        std::fs::create_dir_all(bin.join("panda/plugins")).unwrap();
        assert_eq!(plugin_dir_of(&bin.join(PANDA)), bin.join("panda/plugins"));
        assert_eq!(
            plugin_dir_of(Path::new("/usr/local/bin/panda-system-x86_64")),
            PathBuf::from("/usr/local/lib/panda/x86_64")
        );
    }
}
