//! The two emulators rrr records and replays with, each in its own module behind one
//! interface, [`Emulator`]: its binary and version check, its machine's command line in each
//! [`Mode`], its record/replay log, how its tracer plugin is loaded, how a replay proves it
//! ran the whole recording, how gdb reaches a trace time, and the kernel drivers its machine
//! needs. Everything else in rrr is the same for both.

mod panda;
mod qemu;

use std::path::Path;
use std::process::Command;

use rrr_trace::locate::Located;

use crate::cache::Key;
use crate::machine::{AtEnd, Vm};

pub use panda::{install_plugin as install_panda_plugin, manual_replay_hint as panda_replay_hint};

/// Which emulator records and replays.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Stock QEMU 10.x: icount record/replay, the TCG plugin librrr_qemu.so.
    #[default]
    Qemu,
    /// PANDA (panda-system-x86_64): its own record/replay, the PANDA plugin rrr_trace.
    Panda,
}

impl std::str::FromStr for Engine {
    type Err = anyhow::Error;

    /// An engine by its name (`qemu`, `panda`), in any case.
    fn from_str(s: &str) -> anyhow::Result<Engine> {
        Engine::ALL
            .into_iter()
            .find(|e| e.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                crate::error::tagged(
                    crate::ErrorKind::BadInput,
                    format!("unknown engine {s:?}: qemu or panda"),
                )
            })
    }
}

/// The kernel a machine boots (see `Kernel::boot`).
pub struct Boot {
    /// Its image (`-kernel`).
    pub bzimage: std::path::PathBuf,
    /// The guest memory it needs (`-m`).
    pub memory: &'static str,
}

/// How the emulator runs.
pub enum Mode<'a> {
    /// A boot to take the ready snapshot. QEMU boots under record/replay into `scratch_log`,
    /// a log nobody replays: a snapshot taken outside record mode carries no replay state,
    /// so a recording from it starts at replay instruction count 0 while the vCPU's count is
    /// the whole boot, and QEMU aborts once that difference passes 2^31 (its 32-bit `diff`
    /// in `replay_advance_current_icount`), as for every KASAN or syzbot kernel. PANDA
    /// boots plainly.
    Boot { scratch_log: &'a Path },
    /// Record from the ready snapshot into `rrfile` (QEMU: the replay log; PANDA: the
    /// recording's name prefix).
    Record { rrfile: &'a Path },
    /// Replay `rrfile`, with the tracer plugin if given (`path`, `args`), or paused at the
    /// start with a gdb stub on this 127.0.0.1 port.
    Replay {
        rrfile: &'a Path,
        plugin: Option<(&'a Path, String)>,
        gdb: Option<u16>,
    },
}

/// What a replay shows of how far it went.
pub enum Verdict {
    /// It replayed the whole recording.
    Complete,
    /// It left the recorded execution (the reason, in the emulator's terms).
    Diverged(String),
    /// It stopped before the end of the recording.
    Short,
}

/// How a run (a recording or a replay) ended, as far as a replay's check needs it.
pub struct RunEnd<'a> {
    /// Its console output.
    pub console: &'a str,
    /// Its record/replay instruction count at the end, where the emulator gives it.
    pub instructions: Option<u64>,
}

/// How gdb gets from a replay's start to a trace time.
pub struct GdbTo {
    /// gdb commands, run after `target remote`.
    pub commands: Vec<String>,
    /// Where they stop, in words.
    pub place: String,
}

/// What differs between the emulators. Each engine's module implements it; the rest of rrr
/// reaches it through [`Engine::emulator`].
pub trait Emulator: Sync {
    /// The executable's name, as messages say it.
    fn binary(&self) -> &'static str;
    /// The executable to run: its name, found in PATH, unless the engine has another way.
    fn program(&self) -> std::path::PathBuf {
        self.binary().into()
    }
    /// Checks that the emulator is usable and returns what identifies its build (part of the
    /// cache keys of snapshots and recordings: they load only in the emulator that made them).
    fn require(&self) -> anyhow::Result<String>;
    /// The tracer plugin built with rrr for this engine.
    fn plugin(&self) -> anyhow::Result<std::path::PathBuf>;
    /// The root disk's device in the guest.
    fn root_device(&self) -> &'static str;
    /// The machine type (`-machine`).
    fn chipset(&self) -> &'static str;
    /// Adds this emulator's machine (disk, monitor, record/replay) in `mode` to `c`.
    fn machine_args(&self, c: &mut Command, boot: &Boot, disk: &Path, mode: &Mode, monitor: &Path);
    /// What the emulator does at the end of a run in `mode` (its command line makes it so).
    /// Where it pauses, rrr ends recordings itself (the guest never powers off or reboots:
    /// QEMU's count at a guest's power-off runs on by a few instructions that depend on
    /// timing, and a replay's end would too).
    fn at_end(&self, mode: &Mode) -> AtEnd;
    /// The kernel's `panic=` (seconds until it reboots after a panic, 0: never, -1: at once).
    fn panic_timeout(&self) -> i32;
    /// Brings a machine booted to the ready marker to the moment its ready snapshot is taken
    /// (PANDA: its vCPU idle, see [`panda`]).
    fn settle_for_snapshot(&self, _vm: &mut Vm) -> anyhow::Result<()> {
        Ok(())
    }
    /// Starts a recording's machine once it has begun recording (PANDA's waits paused; see
    /// [`panda`]); says what went wrong if it never began.
    fn begin_recording(&self, _vm: &mut Vm) -> anyhow::Result<()> {
        Ok(())
    }
    /// The record/replay log's name in a recording directory.
    fn replay_log(&self) -> &'static str;
    /// Readies a finished recording's `disk` for its replays.
    fn finish_recording(&self, disk: &Path) -> anyhow::Result<()>;
    /// Lets a replay command load the tracer plugin `plugin` (PANDA finds plugins by name in
    /// a directory, made under `scratch`, which must outlive the replay).
    fn load_plugin(&self, cmd: &mut Command, plugin: &Path, scratch: &Path) -> anyhow::Result<()>;
    /// How far a replay went (`replayed`) against the recorded run (`recorded`).
    fn verdict(&self, replayed: &RunEnd, recorded: &RunEnd) -> Verdict;
    /// What a complete replay that ended as `replayed` proved, in words.
    fn replay_check(&self, replayed: &RunEnd) -> String;
    /// Readies a replay started for gdb (`Mode::Replay` with a port) for gdb to take over,
    /// paused, and says where it is.
    fn hold_for_gdb(&self, vm: &mut Vm) -> anyhow::Result<String>;
    /// The gdb commands that run a replay to trace time `at`; `locate` replays under the
    /// locating tracer to find which execution of which instruction the trace shows there.
    fn gdb_to(
        &self,
        at: u64,
        locate: &mut dyn FnMut(u64) -> anyhow::Result<Located>,
    ) -> anyhow::Result<GdbTo>;
    /// The kernel options the machine's devices need, each with why.
    fn drivers(&self) -> &'static [(&'static str, &'static str)];
}

impl Engine {
    /// Every engine.
    pub const ALL: [Engine; 2] = [Engine::Qemu, Engine::Panda];

    /// What this engine's emulator does its own way.
    pub fn emulator(self) -> &'static dyn Emulator {
        match self {
            Engine::Qemu => &qemu::Qemu,
            Engine::Panda => &panda::Panda,
        }
    }

    /// What the emulator does at the end of a run in `mode`.
    pub fn at_end(self, mode: &Mode) -> AtEnd {
        self.emulator().at_end(mode)
    }

    /// The name on the command line and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Qemu => "qemu",
            Engine::Panda => "panda",
        }
    }

    /// Adds the emulator build `id` (what [`Emulator::require`] returned) to a cache key:
    /// snapshots and recordings load only in the build that made them. The engine's name goes
    /// in for PANDA only, so that QEMU's keys stay those made before PANDA (their cache
    /// entries remain valid).
    pub(crate) fn add_to_key<'k>(self, key: &'k mut Key, id: &str) -> &'k mut Key {
        if self != Engine::Qemu {
            key.add("engine", self.name().as_bytes());
        }
        if self == Engine::Panda {
            // Its ready snapshot is taken with the vCPU halted (`Emulator::settle_for_snapshot`).
            key.add("ready", b"halted");
        }
        key.add("qemu", id.as_bytes())
    }

    /// The kernel command line: serial console, no KASLR, no speculation mitigations (RSB
    /// stuffing and return thunks confuse call tracking), root on the engine's disk, oopses
    /// panic, and a panic ends the run (it stops there, or reboots, which stops the machine).
    pub fn cmdline(self) -> String {
        let emu = self.emulator();
        format!(
            "console=ttyS0 nokaslr mitigations=off root={} rw rootfstype=ext4 init=/init panic={} oops=panic",
            emu.root_device(),
            emu.panic_timeout()
        )
    }

    /// The command line running `kernel` from `disk` in `mode`, monitor on `monitor`. Both
    /// engines get the same CPU, memory, console and disk; the rest is the emulator's.
    pub fn command(self, boot: &Boot, disk: &Path, mode: &Mode, monitor: &Path) -> Command {
        let emu = self.emulator();
        let mut c = Command::new(emu.program());
        c.args([
            "-machine",
            emu.chipset(),
            "-cpu",
            "qemu64",
            "-smp",
            "1",
            "-m",
        ])
        .arg(boot.memory)
        .args(["-display", "none", "-no-reboot", "-serial", "stdio"])
        .arg("-kernel")
        .arg(&boot.bzimage)
        .arg("-append")
        .arg(self.cmdline());
        emu.machine_args(&mut c, boot, disk, mode, monitor);
        c
    }
}

/// The tracer plugin's arguments, the same on both engines: read `profile`, write the trace
/// to `out`, as the options file `options` says (see [`rrr_trace::TraceOptions::save`]).
pub fn tracer_args(profile: &Path, out: &Path, options: &Path) -> String {
    format!(
        "profile={},out={},options={}",
        profile.display(),
        out.display(),
        options.display()
    )
}

/// The tracer plugin's arguments to locate trace time `at` instead of tracing (see
/// `rrr_trace::locate`): read `profile`, write the answer to `out`.
pub fn locator_args(profile: &Path, at: u64, out: &Path) -> String {
    format!(
        "profile={},locate={at},located={}",
        profile.display(),
        out.display()
    )
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rrr_trace::TraceOptions;

    #[test]
    fn manifests_name_engines_as_the_command_line_does() {
        for e in Engine::ALL {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(json, format!("\"{}\"", e.name()));
            assert_eq!(serde_json::from_str::<Engine>(&json).unwrap(), e);
        }
        assert!(serde_json::from_str::<Engine>("\"kvm\"").is_err());
    }

    #[test]
    fn engines_are_named_as_on_the_command_line() {
        for e in Engine::ALL {
            assert_eq!(e.name().parse::<Engine>().unwrap(), e);
            assert_eq!(e.name().to_uppercase().parse::<Engine>().unwrap(), e);
        }
        let err = "kvm".parse::<Engine>().unwrap_err().to_string();
        assert_eq!(err, "unknown engine \"kvm\": qemu or panda");
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
    fn both_plugins_take_the_same_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("options.json");
        let (p, t) = (Path::new("/r/trace.rrrprof"), Path::new("t.pftrace"));
        let args = tracer_args(p, t, &file);
        assert_eq!(
            args,
            format!(
                "profile=/r/trace.rrrprof,out=t.pftrace,options={}",
                file.display()
            )
        );
        // The plugins read the options back with the core's parser.
        let options = TraceOptions {
            window: "5..".parse().unwrap(),
            max_depth: Some(3),
            ..TraceOptions::default()
        };
        options.save(&file).unwrap();
        let parsed = TraceOptions::from_args(|name| {
            args.split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
        });
        assert_eq!(parsed.unwrap(), options);
    }
}
