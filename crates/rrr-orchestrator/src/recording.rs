//! A recording on disk, owned by one type (like rr's `TraceStream`): its directory and every
//! file in it (the disk with the snapshot the replay starts from, the engine's record/replay
//! log, the recorded console, the versioned manifest, the tracer's profile, and the scratch
//! files of replays).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::kernel::Kernel;

/// The manifest's file name.
const MANIFEST: &str = "recording.json";
/// The manifest of recordings made before it was versioned (`key=value` lines).
const OLD_MANIFEST: &str = "recording.txt";
/// Bumped when the manifest's fields change. 2: `instructions`, `attempt`.
const MANIFEST_VERSION: u32 = 2;
/// The oldest manifest version this rrr still opens (version 1 lacks `instructions`).
const OLDEST_MANIFEST_VERSION: u32 = 1;

/// How a recorded run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// The stimulus exited with this status and the machine powered off.
    Ended {
        /// The stimulus's exit status.
        status: i32,
    },
    /// The kernel printed a crash report starting with this line.
    Crashed {
        /// The report's first line.
        line: String,
    },
    /// Stopped after the timeout.
    TimedOut {
        /// The timeout, in seconds.
        seconds: u64,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Ended { status } => write!(f, "ended status={status}"),
            Outcome::Crashed { line } => write!(f, "crashed {line}"),
            Outcome::TimedOut { seconds } => write!(f, "timeout {seconds}"),
        }
    }
}

/// Which attempt a recording is (see [`crate::record::Attempts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    /// Its number: the stimulus saw it as `RRR_ATTEMPT`.
    pub number: u32,
    /// Of how many attempts at most.
    pub of: u32,
    /// How much later than the first attempt its go line was typed, in milliseconds.
    pub go_delay_ms: u64,
}

/// What `recording.json` holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    /// [`MANIFEST_VERSION`] when written.
    version: u32,
    /// The emulator that recorded it (and alone can replay it).
    engine: Engine,
    /// The kernel's cache directory.
    kernel: PathBuf,
    /// The stimulus binary.
    stimulus: PathBuf,
    /// How the run ended.
    outcome: Outcome,
    /// The record/replay instruction count at the recording's end (QEMU), where every replay
    /// must end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instructions: Option<u64>,
    /// Which attempt it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attempt: Option<Attempt>,
    /// The guest's idle time the recording did not wait out, in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idle_skipped_ns: Option<u64>,
}

/// A recording directory.
#[derive(Debug)]
pub struct Recording {
    /// Its directory.
    pub dir: PathBuf,
    /// The kernel it ran.
    pub kernel: Kernel,
    /// The stimulus binary (traced as user code).
    pub stimulus: PathBuf,
    /// How the run ended.
    pub outcome: Outcome,
    /// The emulator that recorded it (and alone can replay it).
    pub engine: Engine,
    /// The record/replay instruction count at its end, where every replay must end (QEMU;
    /// recordings made before rrr kept it have none).
    pub instructions: Option<u64>,
    /// Which attempt it is (recordings made before rrr retried have none).
    pub attempt: Option<Attempt>,
    /// The guest's idle time the recording did not wait out (QEMU with its pacing library,
    /// see [`crate::idle`]), so more of the guest's time than `--timeout` in wall time.
    pub idle_skipped: Option<Duration>,
}

impl Recording {
    /// Whether `dir` holds a recording (of this rrr or an older one), which may be replaced.
    pub fn is_recording(dir: &Path) -> bool {
        dir.join(MANIFEST).is_file() || dir.join(OLD_MANIFEST).is_file()
    }

    /// The disk (holds the snapshot the replay starts from).
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }

    /// The record/replay log (QEMU's file, or the name prefix of PANDA's files).
    pub fn rrfile(&self) -> PathBuf {
        self.dir.join(self.engine.emulator().replay_log())
    }

    /// The console output of the recorded run.
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }

    /// What the recording says of the crash, for a fix's check: `KASAN: use-after-free in f,
    /// at attempt 2`, or `no crash in 10 attempts (the last ended status=0)`.
    pub fn verdict(&self) -> String {
        let attempts = self.attempt.map_or(1, |a| a.of);
        match &self.outcome {
            Outcome::Crashed { line } => {
                let console = std::fs::read_to_string(self.serial_log()).unwrap_or_default();
                let title = crate::crash::report(&console, line).title;
                match self.attempt {
                    Some(a) => format!("{title}, at attempt {}", a.number),
                    None => title,
                }
            }
            other => format!(
                "no crash in {attempts} attempt{} (the last {other})",
                if attempts == 1 { "" } else { "s" }
            ),
        }
    }

    /// Where the console of a replay that diverged is kept.
    pub fn diverged_serial_log(&self) -> PathBuf {
        self.dir.join("diverged-serial.log")
    }

    /// The tracer's profile: the kernel's (built once per kernel by `rrr kernel`) merged with
    /// the stimulus's functions, as user code. Made on first use, kept here (made again when
    /// the DWARF reader changed).
    pub fn profile(&self) -> anyhow::Result<PathBuf> {
        let path = self.dir.join("trace.rrrprof");
        if osi_profile::Profile::open(&path).is_ok_and(|p| p.is_current()) {
            return Ok(path);
        }
        let mut data = self.kernel.current_profile()?.to_data();
        let bar = crate::report::progress("profiling the stimulus");
        let user = osi_profile::Options {
            user: true,
            ..Default::default()
        };
        data.merge(osi_profile::read(&self.stimulus, &user)?);
        osi_profile::write(&data, &path)?;
        bar.finish_and_clear();
        Ok(path)
    }

    /// A private copy of the disk for one replay (an emulator locks the disk it opens: so one
    /// recording can be replayed by several runs at once, and stays as recorded). Removed when
    /// dropped.
    pub fn scratch_disk(&self) -> anyhow::Result<tempfile::NamedTempFile> {
        remove_stale_scratch(&self.dir);
        let disk = tempfile::Builder::new()
            .prefix(&format!(".replay-{}-", std::process::id()))
            .suffix(".qcow2")
            .tempfile_in(&self.dir)?;
        std::fs::copy(self.disk(), disk.path())
            .with_context(|| format!("copying {}", self.disk().display()))?;
        Ok(disk)
    }

    /// A private directory for one replay's own files (`what`: plugin, locate), removed when
    /// dropped.
    pub fn scratch_dir(&self, what: &str) -> anyhow::Result<tempfile::TempDir> {
        remove_stale_scratch(&self.dir);
        Ok(tempfile::Builder::new()
            .prefix(&format!(".{what}-{}-", std::process::id()))
            .tempdir_in(&self.dir)?)
    }

    /// Opens the recording in `dir`, checking its manifest.
    pub fn open(dir: &Path) -> crate::Result<Recording> {
        let path = dir.join(MANIFEST);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(_) if dir.join(OLD_MANIFEST).is_file() => crate::fail!(
                BadInput,
                "{} was recorded by an older rrr (its manifest is {OLD_MANIFEST}); record it \
                 again with `rrr record`",
                dir.display()
            ),
            Err(_) => crate::fail!(
                BadInput,
                "{} is not a recording (no {MANIFEST}); make one with `rrr record`",
                dir.display()
            ),
        };
        let version = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("version")?.as_u64());
        if version.is_some_and(|v| {
            !(OLDEST_MANIFEST_VERSION as u64..=MANIFEST_VERSION as u64).contains(&v)
        }) {
            crate::fail!(
                BadInput,
                "{}: manifest version {} is not this rrr's ({MANIFEST_VERSION}); record it again \
                 with this rrr",
                path.display(),
                version.unwrap_or_default()
            );
        }
        let m: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid recording manifest", path.display()))?;
        Ok(Recording {
            dir: dir.to_owned(),
            kernel: Kernel { dir: m.kernel },
            stimulus: m.stimulus,
            outcome: m.outcome,
            engine: m.engine,
            instructions: m.instructions,
            attempt: m.attempt,
            idle_skipped: m.idle_skipped_ns.map(Duration::from_nanos),
        })
    }

    /// Writes the manifest (the recording is complete).
    pub fn write_manifest(&self) -> anyhow::Result<()> {
        let m = Manifest {
            version: MANIFEST_VERSION,
            engine: self.engine,
            kernel: self.kernel.dir.clone(),
            stimulus: self.stimulus.clone(),
            outcome: self.outcome.clone(),
            instructions: self.instructions,
            attempt: self.attempt,
            idle_skipped_ns: self.idle_skipped.map(|d| d.as_nanos() as u64),
        };
        let path = self.dir.join(MANIFEST);
        let text = serde_json::to_string_pretty(&m).expect("a manifest serialises");
        std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

/// Removes the scratch files and directories of rrr runs that are gone (killed before they
/// could: a disk copy is as big as the recording's disk). Scratch names carry their run's pid
/// (`.replay-PID-...`, `.WHAT-PID-...`); those of a live process are left alone.
fn remove_stale_scratch(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(scratch_pid) else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => tracing::debug!("removed {}, left by a run that is gone", path.display()),
            Err(e) => tracing::debug!("removing {}: {e}", path.display()),
        }
    }
}

/// The pid in a scratch name: `.WORD-PID-REST`.
fn scratch_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (word, rest) = rest.split_once('-')?;
    let (pid, _) = rest.split_once('-')?;
    if word.is_empty() || !word.chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(dir: &Path) -> Recording {
        Recording {
            dir: dir.to_owned(),
            kernel: Kernel { dir: "/k".into() },
            stimulus: "/s".into(),
            outcome: Outcome::Crashed {
                line: "BUG: x".into(),
            },
            engine: Engine::Panda,
            instructions: Some(1_223_096_088),
            attempt: Some(Attempt {
                number: 3,
                of: 5,
                go_delay_ms: 74,
            }),
            idle_skipped: Some(Duration::from_millis(4912)),
        }
    }

    #[test]
    fn scratch_left_by_runs_that_are_gone_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        // Above any pid_max: no such process.
        let gone = dir.path().join(".replay-99999999-abc.qcow2");
        let gone_dir = dir.path().join(".trace-99999999-xyz");
        let ours = dir
            .path()
            .join(format!(".replay-{}-def.qcow2", std::process::id()));
        let kept = dir.path().join("disk.qcow2");
        for f in [&gone, &ours, &kept] {
            std::fs::write(f, "x").unwrap();
        }
        std::fs::create_dir(&gone_dir).unwrap();
        remove_stale_scratch(dir.path());
        assert!(!gone.exists() && !gone_dir.exists());
        assert!(ours.exists() && kept.exists());
        assert_eq!(scratch_pid(".replay-12-x"), Some(12));
        assert_eq!(scratch_pid(".replay-abc"), None);
        assert_eq!(scratch_pid("replay-12-x"), None);
    }

    #[test]
    fn the_manifest_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let rec = recording(dir.path());
        rec.write_manifest().unwrap();
        let back = Recording::open(dir.path()).unwrap();
        assert_eq!(
            (
                back.kernel.dir,
                back.stimulus,
                back.outcome,
                back.engine,
                back.instructions,
                back.attempt,
                back.idle_skipped
            ),
            (
                rec.kernel.dir,
                rec.stimulus,
                rec.outcome,
                rec.engine,
                rec.instructions,
                rec.attempt,
                rec.idle_skipped
            )
        );
    }

    fn open(text: &str) -> anyhow::Result<Recording> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST), text).unwrap();
        Ok(Recording::open(dir.path())?)
    }

    fn refused(text: &str) -> String {
        format!("{:#}", open(text).unwrap_err())
    }

    #[test]
    fn a_manifest_with_what_rrr_does_not_know_is_refused_with_file_and_line() {
        let good = r#"{
  "version": 1,
  "engine": "qemu",
  "kernel": "/k",
  "stimulus": "/s",
  "outcome": { "ended": { "status": 0 } }
}"#;
        assert_eq!(open(good).unwrap().outcome, Outcome::Ended { status: 0 });
        let counted = good.replace(
            "\"version\": 1",
            "\"version\": 2,\n  \"instructions\": 1223096088",
        );
        assert_eq!(open(&counted).unwrap().instructions, Some(1_223_096_088));
        assert_eq!(open(good).unwrap().instructions, None);
        for (bad, says) in [
            (good.replace("\"qemu\"", "\"foo\""), "unknown variant `foo`"),
            (
                good.replace("\"ended\"", "\"exploded\""),
                "unknown variant `exploded`",
            ),
            (
                good.replace("\"kernel\"", "\"engine\": \"qemu\",\n  \"kernel\""),
                "duplicate field `engine`",
            ),
            (
                good.replace("\"kernel\"", "\"colour\": 1,\n  \"kernel\""),
                "unknown field `colour`",
            ),
        ] {
            let err = refused(&bad);
            assert!(
                err.contains(MANIFEST) && err.contains(says) && err.contains("line "),
                "{err}"
            );
        }
        let err = refused(&good.replace("\"version\": 1", "\"version\": 7"));
        assert!(err.contains("manifest version 7"), "{err}");
    }

    #[test]
    fn an_old_recording_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(OLD_MANIFEST), "kernel=/k\n").unwrap();
        let err = format!("{:#}", Recording::open(dir.path()).unwrap_err());
        assert!(
            err.contains("older rrr") && err.contains("record it again"),
            "{err}"
        );
        assert!(Recording::is_recording(dir.path()));
    }
}
