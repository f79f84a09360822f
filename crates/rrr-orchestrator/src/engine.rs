//! The two emulators rrr records and replays with, and what differs between them: the
//! binary, its version check, the tracer plugin and how it is loaded.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::cache::Key;
use crate::tools;

/// The PANDA system emulator.
pub const PANDA: &str = "panda-system-x86_64";

/// Which emulator records and replays.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Engine {
    /// Stock QEMU 10.x: icount record/replay, the TCG plugin librrr_qemu.so.
    #[default]
    Qemu,
    /// PANDA (panda-system-x86_64): its own record/replay, the PANDA plugin rrr_trace.
    Panda,
}

impl Engine {
    /// The name in manifests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Qemu => "qemu",
            Engine::Panda => "panda",
        }
    }

    /// Parses a manifest's name.
    pub fn from_name(name: &str) -> Option<Engine> {
        [Engine::Qemu, Engine::Panda]
            .into_iter()
            .find(|e| e.name() == name)
    }

    /// The emulator's executable.
    pub fn binary(self) -> &'static str {
        match self {
            Engine::Qemu => tools::QEMU,
            Engine::Panda => PANDA,
        }
    }

    /// Checks that the emulator is usable and returns what identifies its build (part of the
    /// cache keys of snapshots and recordings: they load only in the emulator that made them).
    pub fn require(self) -> anyhow::Result<String> {
        match self {
            Engine::Qemu => tools::require_qemu(),
            Engine::Panda => require_panda(),
        }
    }

    /// Adds the emulator build `id` (what [`Engine::require`] returned) to a cache key:
    /// snapshots and recordings load only in the build that made them. The engine's name goes
    /// in for PANDA only, so that QEMU's keys stay those made before PANDA (their cache
    /// entries remain valid).
    pub fn add_to_key<'k>(self, key: &'k mut Key, id: &str) -> &'k mut Key {
        if self != Engine::Qemu {
            key.add("engine", self.name().as_bytes());
        }
        key.add("qemu", id.as_bytes())
    }

    /// The tracer plugin's arguments: read `profile`, write the trace to `out`.
    pub fn tracer_args(self, profile: &Path, out: &Path) -> String {
        let out_key = match self {
            Engine::Qemu => "trace",
            Engine::Panda => "out",
        };
        format!("profile={},{out_key}={}", profile.display(), out.display())
    }

    /// The QEMU tracer plugin's arguments to locate trace time `at` instead of tracing (see
    /// `rrr_trace::locate`): read `profile`, write the answer to `out`.
    pub fn locator_args(profile: &Path, at: u64, out: &Path) -> String {
        format!(
            "profile={},locate={at},located={}",
            profile.display(),
            out.display()
        )
    }

    /// The prefix of the line the tracer plugin ends with (`<prefix>N events, ...`).
    pub fn summary_prefix(self) -> &'static str {
        match self {
            Engine::Qemu => "rrr_qemu: ",
            Engine::Panda => "rrr_trace: ",
        }
    }

    /// The tracer plugin built with rrr for this engine.
    pub fn plugin(self) -> anyhow::Result<PathBuf> {
        match self {
            Engine::Qemu => tools::built_library("librrr_qemu.so", "RRR_QEMU_PLUGIN"),
            Engine::Panda => tools::built_library(PANDA_PLUGIN_LIB, "RRR_PANDA_PLUGIN"),
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The PANDA plugin as cargo builds it.
const PANDA_PLUGIN_LIB: &str = "libpanda_rrr_trace.so";
/// The PANDA plugin's name (`-panda rrr_trace`); PANDA loads it from `panda_rrr_trace.so`.
pub const PANDA_PLUGIN_NAME: &str = "rrr_trace";
/// Where, under `$PANDA_DIR`, PANDA looks for plugins first.
const PANDA_DIR_PLUGINS: &str = "x86_64-softmmu/panda/plugins";

/// Checks PANDA once per process; its identity is its version line plus its binary's size and
/// modification time (every PANDA build calls itself QEMU 2.9.1).
fn require_panda() -> anyhow::Result<String> {
    static CHECKED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(id) = CHECKED.get() {
        return Ok(id.clone());
    }
    let Some(panda) = tools::find(PANDA) else {
        bail!(
            "`{PANDA}` not found in PATH: the PANDA engine needs PANDA (https://github.com/panda-re/panda), \
             which no package registry has; use rrr's Docker image (README: Docker), or build PANDA \
             and put its x86_64-softmmu directory in PATH; or use the default engine, `--engine qemu`"
        );
    };
    let out = Command::new(&panda)
        .arg("--version")
        .output()
        .with_context(|| format!("running {}", panda.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
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
pub fn panda_dir_with_plugin(dir: &Path) -> anyhow::Result<PathBuf> {
    let plugin = Engine::Panda.plugin()?;
    let plugins = dir.join(PANDA_DIR_PLUGINS);
    std::fs::create_dir_all(&plugins)?;
    let link = plugins.join(format!("panda_{PANDA_PLUGIN_NAME}.so"));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&plugin, &link)
        .with_context(|| format!("linking {} to {}", link.display(), plugin.display()))?;
    Ok(dir.to_owned())
}

/// Arguments of `rrr install-panda-plugin`.
#[derive(clap::Args, Clone, Debug)]
pub struct InstallArgs {
    /// The directory to copy panda_rrr_trace.so into (default: the plugin directory of the
    /// panda-system-x86_64 in PATH).
    #[arg(long)]
    pub to: Option<PathBuf>,
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

/// Runs `rrr install-panda-plugin`: copies the plugin where PANDA finds it, so that
/// `panda-system-x86_64 -replay REC -panda rrr_trace:profile=P,out=T` works by hand (rrr's own
/// replays do not need it: they point PANDA at the plugin of the running rrr).
pub fn install(args: InstallArgs) -> anyhow::Result<()> {
    let plugin = Engine::Panda.plugin()?;
    let dir = match args.to {
        Some(d) => d,
        None => {
            let panda = tools::find(PANDA).with_context(|| {
                format!("`{PANDA}` not found in PATH: pass the plugin directory with --to")
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
    println!("{}", dest.display());
    eprintln!(
        "rrr: installed; replay by hand with `{PANDA} ... -replay REC -panda {PANDA_PLUGIN_NAME}:profile=P.rrrprof,out=trace.pftrace`"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for e in [Engine::Qemu, Engine::Panda] {
            assert_eq!(Engine::from_name(e.name()), Some(e));
        }
        assert_eq!(Engine::from_name("kvm"), None);
    }

    #[test]
    fn qemu_keys_are_those_from_before_panda() {
        let key = |engine: Option<Engine>| {
            let mut k = Key::default();
            match engine {
                Some(e) => e.add_to_key(&mut k, "QEMU emulator version 10.0.2"),
                None => k.add("qemu", b"QEMU emulator version 10.0.2"),
            };
            k.hex()
        };
        assert_eq!(key(Some(Engine::Qemu)), key(None));
        assert_ne!(key(Some(Engine::Panda)), key(None));
    }

    #[test]
    fn tracer_args_use_each_plugins_names() {
        let (p, t) = (Path::new("/r/trace.rrrprof"), Path::new("t.pftrace"));
        assert_eq!(
            Engine::Qemu.tracer_args(p, t),
            "profile=/r/trace.rrrprof,trace=t.pftrace"
        );
        assert_eq!(
            Engine::Panda.tracer_args(p, t),
            "profile=/r/trace.rrrprof,out=t.pftrace"
        );
        assert_eq!(
            Engine::locator_args(p, 42, Path::new("l")),
            "profile=/r/trace.rrrprof,locate=42,located=l"
        );
    }

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
