//! The emulated machine as it runs: its snapshots' names, a running VM whose serial console
//! and monitor rrr talks to, and what the emulator's failures mean. Each engine's command
//! line is in [`crate::engine`].

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::idle::{self, IdleSkipped};

/// Name of the snapshot taken at the ready marker.
pub const READY_SNAPSHOT: &str = "rrr-ready";
/// Name of the snapshot a recording starts from (QEMU's `rrsnapshot`).
pub const START_SNAPSHOT: &str = "rrr-start";
/// Bumped when the machine below changes (snapshots of another machine do not load).
/// 3: QEMU takes the ready snapshot while recording (it carries replay state); 4: a QEMU
/// recording's disk keeps only its start snapshot.
pub const RECIPE: &str = "machine-recipe-4";

/// A fresh path for a monitor socket (in the temp dir: socket paths must stay short).
pub fn monitor_path() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("rrr-monitor-{}-{n}.sock", std::process::id()))
}

/// The machine's run is over: the emulator exited (it closed its console), or it paused at
/// its end ([`AtEnd::Pauses`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Ended;

/// What the emulator does when the machine's run ends (the guest powers off or reboots, or a
/// replay reaches the recorded shutdown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtEnd {
    /// It exits.
    Exits,
    /// It pauses (QEMU's `-action shutdown=pause`), so that rrr reads its record/replay
    /// instruction count (`info replay`) before it quits: the count a replay must end at.
    Pauses,
}

/// How often a machine that pauses at its end is asked whether it has.
const STATUS_POLL: Duration = Duration::from_millis(50);

/// How an emulator run ended.
#[derive(Debug)]
pub struct Exit {
    /// The emulator's exit status.
    pub status: ExitStatus,
    /// What it wrote on stderr.
    pub stderr: String,
    /// Its record/replay instruction count when the run ended (machines that pause at their
    /// end: QEMU recordings and replays without gdb).
    pub instructions: Option<u64>,
    /// The guest's idle time it did not wait out (QEMU, with its pacing library).
    pub idle: Option<IdleSkipped>,
}

/// A running QEMU: serial lines arrive on a channel (and in a log file), the monitor is a unix
/// socket.
pub struct Vm {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    serial: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
    monitor: PathBuf,
    at_end: AtEnd,
    /// When to ask a machine that pauses at its end whether it has.
    next_poll: Instant,
    /// It has paused at its end.
    paused: bool,
}

impl Vm {
    /// Starts `cmd`, logging the serial console to `serial_log`, its monitor on `monitor`;
    /// `at_end`: what the command makes the emulator do at the run's end. The emulator gets
    /// SIGTERM if rrr dies (even by SIGKILL): it then ends cleanly, its plugin closing the
    /// trace, instead of recording a stimulus that never ends, or waiting for gdb, forever.
    pub fn spawn(
        mut cmd: Command,
        serial_log: &Path,
        monitor: &Path,
        at_end: AtEnd,
    ) -> anyhow::Result<Vm> {
        tracing::debug!("running {cmd:?}");
        let rrr = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // async-signal-safe system calls.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // rrr died before the request took effect.
                if libc::getppid() != rrr {
                    libc::raise(libc::SIGTERM);
                }
                Ok(())
            });
        }
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {program}"))?;
        let mut log = std::fs::File::create(serial_log)
            .with_context(|| format!("creating {}", serial_log.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        let serial = std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                let text = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_owned();
                let _ = writeln!(log, "{text}");
                if tx.send(text).is_err() {
                    break;
                }
            }
            let _ = log.flush();
        });
        let mut stderr = child.stderr.take().expect("piped");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Ok(Vm {
            stdin: child.stdin.take(),
            child,
            lines,
            serial: Some(serial),
            stderr: Some(stderr),
            monitor: monitor.to_owned(),
            at_end,
            next_poll: Instant::now() + STATUS_POLL,
            paused: false,
        })
    }

    /// The next serial line, waiting until `deadline`. `Ok(None)`: the deadline passed;
    /// `Err`: the run is over (the emulator closed the console, or paused at its end).
    pub fn next_line(&mut self, deadline: Instant) -> Result<Option<String>, Ended> {
        loop {
            if self.paused {
                return Err(Ended);
            }
            let now = Instant::now();
            let until = match self.at_end {
                AtEnd::Exits => deadline,
                AtEnd::Pauses => deadline.min(self.next_poll),
            };
            match self
                .lines
                .recv_timeout(until.saturating_duration_since(now))
            {
                Ok(line) => {
                    if self.at_end == AtEnd::Pauses && Instant::now() >= self.next_poll {
                        self.poll_status();
                    }
                    return Ok(Some(line));
                }
                Err(RecvTimeoutError::Disconnected) => return Err(Ended),
                Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => return Ok(None),
                Err(RecvTimeoutError::Timeout) => self.poll_status(),
            }
        }
    }

    /// Asks a machine that pauses at its end whether it has.
    fn poll_status(&mut self) {
        self.next_poll = Instant::now() + STATUS_POLL;
        match self.monitor("info status") {
            Ok(status) => self.paused = status.contains("(shutdown)"),
            Err(e) => tracing::debug!("monitor info status: {e:#}"),
        }
    }

    /// The record/replay instruction count, from the monitor (`info replay`).
    pub fn instructions(&mut self) -> Option<u64> {
        let said = self.monitor("info replay").ok()?;
        parse_instruction_count(&said)
    }

    /// Types `text` on the serial console.
    pub fn send(&mut self, text: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("QEMU's console is closed")?;
        stdin.write_all(text.as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    /// Runs a monitor command and returns its output (for `quit`, nothing).
    pub fn monitor(&mut self, command: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut sock = loop {
            match UnixStream::connect(&self.monitor) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => return Err(e).context("connecting to QEMU's monitor"),
            }
        };
        let read_prompt = |sock: &mut UnixStream| -> anyhow::Result<String> {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.ends_with(b"(qemu) ") {
                let n = sock.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            Ok(String::from_utf8_lossy(&got).into_owned())
        };
        read_prompt(&mut sock)?;
        sock.write_all(format!("{command}\n").as_bytes())?;
        let out = read_prompt(&mut sock)?;
        // The monitor echoes the line with terminal escapes; keep what follows it.
        let out = out
            .rsplit_once(&format!("{command}\x1b[K\r\n"))
            .map_or(out.as_str(), |(_, o)| o);
        Ok(out.trim_end_matches("(qemu) ").trim().to_owned())
    }

    /// Waits for the run to end and the emulator to exit, up to `timeout`; kills it after
    /// that. A machine that paused at its end is asked its instruction count, then to quit.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<Exit> {
        let mut instructions = None;
        if self.at_end == AtEnd::Pauses {
            let deadline = Instant::now() + timeout;
            while !self.paused && self.child.try_wait()?.is_none() && Instant::now() < deadline {
                std::thread::sleep(STATUS_POLL);
                self.poll_status();
            }
            if self.paused {
                instructions = self.instructions();
                if let Err(e) = self.monitor("quit") {
                    tracing::debug!("monitor quit: {e:#}");
                }
            }
        }
        let exit = self.exit(timeout)?;
        Ok(Exit {
            instructions,
            ..exit
        })
    }

    /// Waits for the emulator to exit, up to `timeout`; kills it after that.
    fn exit(&mut self, timeout: Duration) -> anyhow::Result<Exit> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = self.child.try_wait()? {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                break self.child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The console log is complete once its reader has seen QEMU's stdout close.
        if let Some(h) = self.serial.take() {
            let _ = h.join();
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Ok(Exit {
            status,
            stderr,
            instructions: None,
            idle: idle::take_report(&self.monitor),
        })
    }

    /// Asks QEMU to quit (the guest stops where it is) and waits for it. A machine that
    /// pauses at its end is first stopped and asked its instruction count: the run ends there.
    pub fn quit(&mut self) -> anyhow::Result<Exit> {
        let mut instructions = None;
        if self.at_end == AtEnd::Pauses {
            if let Err(e) = self.monitor("stop") {
                tracing::debug!("monitor stop: {e:#}");
            }
            instructions = self.instructions();
        }
        if let Err(e) = self.monitor("quit") {
            tracing::debug!("monitor quit: {e:#}");
        }
        let exit = self.exit(Duration::from_secs(30))?;
        Ok(Exit {
            instructions,
            ..exit
        })
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.monitor);
        let _ = std::fs::remove_file(idle::report_path(&self.monitor));
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The instruction count in QEMU's `info replay` answer ("Recording execution 'f':
/// instruction count = N").
fn parse_instruction_count(said: &str) -> Option<u64> {
    said.split_once("instruction count = ")?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What the emulator's known failures mean, by the words they print.
const KNOWN_FAILURES: &[(&str, &str)] = &[
    (
        "replay_advance_current_icount: Assertion",
        "the recording could not start from the snapshot: the snapshot's replay state does not \
         match the machine's instruction count (a ready snapshot taken outside record mode, by \
         an older rrr?); remove the cached snapshots with `rrr cache gc --all` and record again",
    ),
    (
        "Unknown savevm section",
        "the snapshot was saved by another machine than this rrr's (an older rrr or emulator \
         build); remove the cached snapshots with `rrr cache gc --all` and record again",
    ),
    (
        "error reading the replay data",
        "the replay diverged from the recording: it ran out of the recording's log before the \
         recorded run's end (the log is cut short, or the replay left the recorded run)",
    ),
    (
        "in the replay log",
        "the replay diverged from the recording: it asked the log for an input the recorded \
         run did not take at that point (another emulator build or machine than the \
         recording's?)",
    ),
];

/// What the emulator's output `stderr` says went wrong, in rrr's words (`": ..."`, to follow
/// a message), or nothing when rrr does not know.
pub fn failure_meaning(stderr: &str) -> String {
    KNOWN_FAILURES
        .iter()
        .find(|(words, _)| stderr.contains(words))
        .map_or(String::new(), |(_, meaning)| format!(": {meaning}"))
}

/// Fails with the emulator's own words if it exited badly, and what they mean when rrr knows.
pub fn check_exit(
    emulator: &str,
    status: ExitStatus,
    stderr: &str,
    what: &str,
) -> anyhow::Result<()> {
    if !status.success() {
        let meaning = failure_meaning(stderr);
        bail!(
            "{emulator} failed while {what} ({status}){meaning}; it said:\n{}",
            stderr.trim_end()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instruction_count_is_read_from_info_replay() {
        let said = "Replaying execution '/r/replay.bin': instruction count = 1223096088";
        assert_eq!(parse_instruction_count(said), Some(1_223_096_088));
        assert_eq!(parse_instruction_count("Record/replay is not active"), None);
        assert_eq!(
            parse_instruction_count("unknown command: 'info replay'"),
            None
        );
    }

    #[test]
    fn known_failures_are_explained() {
        let abort = "qemu-system-x86_64: replay/replay-internal.c:249: \
                     replay_advance_current_icount: Assertion `diff >= 0' failed.";
        assert!(failure_meaning(abort).contains("could not start from the snapshot"));
        assert!(
            failure_meaning("Missing character write event in the replay log").contains("diverged")
        );
        assert!(
            failure_meaning("qemu-system-x86_64: error reading the replay data")
                .contains("ran out of the recording's log")
        );
        assert_eq!(failure_meaning("qemu-system-x86_64: something else"), "");
    }
}
