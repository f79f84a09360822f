//! `rrr record`: boot once and snapshot at the ready marker (cached per kernel and disk), then
//! record the stimulus's run from that snapshot until it ends, the kernel reports a crash, or
//! a timeout, into a [`Recording`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cache::{self, Key, Staging};
use crate::engine::{Engine, Mode};
use crate::kernel::Kernel;
use crate::machine::{self, AtEnd, Vm};
use crate::recording::{Attempt, Outcome, Recording};
use crate::rootfs;

/// Serial-console lines that start a kernel crash report.
const CRASH_MARKERS: &[&str] = &[
    "Kernel panic",
    "BUG: ",
    "WARNING: ",
    "general protection fault",
    "Oops: ",
    "kernel BUG at",
    "KASAN: ",
    "UBSAN: ",
    "KFENCE: ",
];
/// How long the rest of a crash report gets to reach the console before recording stops, if
/// its last line never comes (a report cut short).
const REPORT_GRACE: Duration = Duration::from_secs(3);
/// How many guest instructions run after a crash report's last line before recording stops:
/// what the kernel does right after its report, and no more (a looping reproducer would run
/// on for billions, most of its trace after the crash).
const GRACE_INSTRUCTIONS: u64 = 2_000_000;

/// True for the console line that ends a crash report: a panic's `---[ end Kernel panic`, an
/// oops's or a WARNING's `---[ end trace`, and the rule of `=` that closes KASAN's, UBSAN's
/// and KFENCE's reports (the one before their first line comes before the crash marker).
fn ends_report(line: &str) -> bool {
    let line = line.trim();
    // Past printk's `[    3.000000] ` time stamp, if any.
    let text = match line.strip_prefix('[').and_then(|l| l.split_once("] ")) {
        Some((_, text)) => text.trim(),
        None => line,
    };
    text.contains("---[ end Kernel panic")
        || text.contains("---[ end trace")
        || (text.len() >= 20 && text.bytes().all(|b| b == b'='))
}

/// After a crash report's last line: lets the guest run [`GRACE_INSTRUCTIONS`] more (as the
/// emulator counts them, polled on its monitor), up to `deadline`; at once where the emulator
/// cannot say its count while recording (PANDA).
fn run_grace(vm: &mut Vm, deadline: Instant) {
    let Some(end) = vm.instructions().map(|n| n + GRACE_INSTRUCTIONS) else {
        return;
    };
    while Instant::now() < deadline {
        match vm.instructions() {
            Some(n) if n < end => std::thread::sleep(Duration::from_millis(1)),
            _ => return,
        }
    }
}

/// The qcow2 with the machine booted to the ready marker (snapshot [`machine::READY_SNAPSHOT`]),
/// cached per kernel, disk and emulator build (`emulator` identifies it).
pub(crate) fn ready_disk(
    engine: Engine,
    kernel: &Kernel,
    rootfs: &Path,
    emulator: &str,
) -> anyhow::Result<PathBuf> {
    let mut key = Key::default();
    key.add("recipe", machine::RECIPE.as_bytes())
        .add("cmdline", engine.cmdline().as_bytes());
    engine
        .add_to_key(&mut key, emulator)
        .add_file("bzImage", &kernel.bzimage())?
        .add_file("rootfs", rootfs)?;
    cache::file_entry(cache::Kind::Snapshots, &key, "ready.qcow2", |dir| {
        let staged = dir.join("ready.qcow2");
        std::fs::copy(rootfs, &staged)?;
        let bar = crate::report::progress("booting the machine to the snapshot point");
        let monitor = machine::monitor_path();
        let scratch_log = dir.join("boot-replay.bin");
        let mode = Mode::Boot {
            scratch_log: &scratch_log,
        };
        let cmd = engine.command(&kernel.boot(), &staged, &mode, &monitor);
        let mut vm = Vm::spawn(cmd, &dir.join("boot.log"), &monitor, engine.at_end(&mode))?;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            match vm.next_line(deadline) {
                Ok(Some(l)) if l.trim() == rootfs::READY => break,
                Ok(Some(l)) => bar.set_message(format!("booting: {}", l.trim())),
                Ok(None) | Err(machine::Ended) => {
                    let stderr = vm.quit()?.stderr;
                    let log = std::fs::read_to_string(dir.join("boot.log")).unwrap_or_default();
                    crate::fail!(Recording,
                        "the machine did not reach /init's ready marker; QEMU said:\n{}\nthe console's last lines:\n{}",
                        stderr.trim_end(),
                        crate::tools::last_lines(&log, 30)
                    );
                }
            }
        }
        bar.set_message("saving the snapshot");
        engine.emulator().settle_for_snapshot(&mut vm)?;
        save_snapshot(&mut vm, machine::READY_SNAPSHOT)?;
        let exit = vm.quit()?;
        machine::check_exit(
            engine.emulator().binary(),
            exit.status,
            &exit.stderr,
            "saving the snapshot",
        )?;
        let _ = std::fs::remove_file(&scratch_log);
        bar.finish_and_clear();
        Ok(())
    })
}

/// What QEMU answers `savevm` while record/replay has events in flight.
const SNAPSHOT_NOT_NOW: &str = "does not allow making snapshot right now";

/// Saves the snapshot `name` from the monitor. QEMU under record/replay refuses while it has
/// events in flight ([`SNAPSHOT_NOT_NOW`]); the guest idles at the ready marker, so asking
/// again soon succeeds.
fn save_snapshot(vm: &mut Vm, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = vm.monitor(&format!("savevm {name}"))?;
        if out.is_empty() {
            return Ok(());
        }
        if !out.contains(SNAPSHOT_NOT_NOW) || Instant::now() >= deadline {
            crate::fail!(Recording, "the emulator could not save the snapshot: {out}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many times to record, each attempt from the ready snapshot (no reboot), until one
/// crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempts {
    /// The first attempt's number (the stimulus's `RRR_ATTEMPT`; its go delay follows).
    pub first: u32,
    /// At most this many attempts.
    pub count: u32,
    /// Fail (keeping the last recording) if no attempt crashed.
    pub until_crash: bool,
}

impl Default for Attempts {
    fn default() -> Self {
        Attempts {
            first: 1,
            count: 1,
            until_crash: false,
        }
    }
}

/// How much later than the first attempt an attempt types its go line: the recorded run's
/// timing (QEMU's `shift=auto` follows host time; PANDA's timers do) differs per attempt.
pub(crate) fn go_delay(attempt: u32) -> Duration {
    Duration::from_millis(u64::from(attempt.saturating_sub(1)) * 37 % 1000)
}

/// Records `stimulus` (inside `rootfs`) on `kernel` with `engine` into the new directory `out`:
/// up to `attempts.count` times, keeping the first recording that crashed, or the last.
pub fn record(
    engine: Engine,
    kernel: &Kernel,
    stimulus: &Path,
    rootfs: &Path,
    out: &Path,
    timeout: Duration,
    attempts: Attempts,
) -> crate::Result<Recording> {
    let emulator = engine.emulator().require()?;
    let ready = ready_disk(engine, kernel, rootfs, &emulator)?;
    let stimulus = stimulus
        .canonicalize()
        .with_context(|| format!("{} not found", stimulus.display()))?;
    if out.exists() && !Recording::is_recording(out) {
        crate::fail!(
            BadInput,
            "{} exists and is not a recording: pick another --output",
            out.display()
        );
    }
    let count = attempts.count.max(1);
    let last = attempts.first + count - 1;
    for number in attempts.first..=last {
        let attempt = Attempt {
            number,
            of: count,
            go_delay_ms: go_delay(number).as_millis() as u64,
        };
        let stage = Staging::new(out)?;
        let mut rec = record_attempt(engine, kernel, &stimulus, &ready, &stage, timeout, attempt)?;
        let crashed = matches!(rec.outcome, Outcome::Crashed { .. });
        if crashed || number == last {
            rec.dir = stage.commit()?;
            if !crashed && attempts.until_crash {
                crate::fail!(
                    Recording,
                    "no attempt crashed ({count} attempt{} from the ready snapshot; the last \
                     {}): the last recording is kept in {}; try more --attempts or a longer \
                     --timeout",
                    if count == 1 { "" } else { "s" },
                    rec.outcome,
                    rec.dir.display()
                );
            }
            return Ok(rec);
        }
        crate::report::info(&format!(
            "attempt {number} ({} of {count}): {}, no crash; recording again from the ready \
             snapshot",
            number - attempts.first + 1,
            rec.outcome
        ));
    }
    unreachable!("the last attempt returns")
}

/// Records one attempt into `stage`.
fn record_attempt(
    engine: Engine,
    kernel: &Kernel,
    stimulus: &Path,
    ready: &Path,
    stage: &Staging,
    timeout: Duration,
    attempt: Attempt,
) -> anyhow::Result<Recording> {
    let mut rec = Recording {
        dir: stage.dir.clone(),
        kernel: Kernel {
            dir: kernel.dir.clone(),
        },
        stimulus: stimulus.to_owned(),
        outcome: Outcome::TimedOut {
            seconds: timeout.as_secs(),
        },
        engine,
        instructions: None,
        attempt: Some(attempt),
        idle_skipped: None,
    };
    std::fs::copy(ready, rec.disk())?;
    let monitor = machine::monitor_path();
    let rrfile = rec.rrfile();
    let mode = Mode::Record { rrfile: &rrfile };
    let cmd = engine.command(&kernel.boot(), &rec.disk(), &mode, &monitor);
    let bar = crate::report::progress("recording the stimulus");
    let at_end = engine.at_end(&mode);
    let mut vm = Vm::spawn(cmd, &rec.serial_log(), &monitor, at_end)?;
    engine.emulator().begin_recording(&mut vm)?;
    std::thread::sleep(Duration::from_millis(attempt.go_delay_ms));
    vm.send(&format!("go {}\n", attempt.number))?;
    let mut deadline = Instant::now() + timeout;
    let mut crashed: Option<String> = None;
    let mut ended = None;
    let exited = loop {
        match vm.next_line(deadline) {
            Ok(Some(line)) => {
                bar.set_message(format!("recording: {}", line.trim()));
                if let Some(s) = line.trim().strip_prefix(rootfs::END) {
                    ended = Some(s.trim().parse().unwrap_or(-1));
                    if at_end == AtEnd::Pauses {
                        break false;
                    }
                    vm.send(rootfs::POWER_OFF)?;
                } else if crashed.is_some() && ends_report(&line) {
                    run_grace(&mut vm, deadline);
                    break false;
                } else if crashed.is_none() && CRASH_MARKERS.iter().any(|m| line.contains(m)) {
                    crashed = Some(line.trim().to_owned());
                    deadline = Instant::now() + REPORT_GRACE;
                }
            }
            Ok(None) => break false,
            Err(machine::Ended) => break true,
        }
    };
    let exit = if exited {
        vm.wait(Duration::from_secs(30))?
    } else {
        vm.quit()?
    };
    bar.finish_and_clear();
    if exited && !exit.status.success() {
        machine::check_exit(
            engine.emulator().binary(),
            exit.status,
            &exit.stderr,
            "recording",
        )?;
    }
    // A run that ended by itself (a guest power-off or reboot rrr did not ask for) paused a
    // few instructions after its end, how many depending on timing: no count to prove.
    if !exited {
        rec.instructions = exit.instructions;
    }
    rec.idle_skipped = exit.idle.map(|i| i.skipped);
    rec.outcome = match (crashed, ended) {
        (Some(line), _) => Outcome::Crashed { line },
        (None, Some(status)) => Outcome::Ended { status },
        (None, None) if exited => crate::fail!(
            Recording,
            "the machine stopped before the stimulus ended and without a crash report; see {}",
            rec.serial_log().display()
        ),
        (None, None) => Outcome::TimedOut {
            seconds: timeout.as_secs(),
        },
    };
    engine.emulator().finish_recording(&rec.disk())?;
    rec.write_manifest()?;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::ends_report;

    #[test]
    fn a_crash_reports_last_line_is_recognised() {
        for last in [
            "[   75.123456] ==================================================================",
            "[    3.000000] ---[ end trace 0000000000000000 ]---",
            "---[ end Kernel panic - not syncing: Fatal exception ]---",
        ] {
            assert!(ends_report(last), "{last}");
        }
        for not_last in [
            "[   75.123456] BUG: KASAN: slab-out-of-bounds in legacy_parse_param+0x224/0x270",
            "[   75.123456] The buggy address belongs to the object at ffff888004c5a000",
            "[   75.123456] ====",
            "x = 1 == 2",
        ] {
            assert!(!ends_report(not_last), "{not_last}");
        }
    }
}
