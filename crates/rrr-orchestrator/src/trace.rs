//! `rrr trace`: replays a recording under the tracer plugin into a Perfetto trace.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use rrr_trace::locate::Located;
use rrr_trace::ring::{Budget, Cut};
use rrr_trace::{TraceOptions, TraceSummary, Window};

use crate::crash;
use crate::engine::{self, Mode, RunEnd, Verdict};
use crate::idle::IdleSkipped;
use crate::limits::{Limits, Sizes};
use crate::machine::{self, AtEnd, Vm};
use crate::recording::{Outcome, Recording};

/// What a replay produced.
#[derive(Debug)]
pub struct Traced {
    /// Events written, as the plugin reported them.
    pub events: u64,
    /// Size of the trace in bytes.
    pub bytes: u64,
    /// Wall time of the replay.
    pub elapsed: Duration,
    /// The idle waits the replay did not sleep through (QEMU with its pacing library).
    pub idle: Option<IdleSkipped>,
    /// What the replay proved, in words (e.g. that it ended where the recording ended).
    pub check: String,
    /// The crash the recording ended at, if it did: its title, and the trace time where the
    /// kernel started reporting it (none if the trace has no call of a reporting function).
    pub crash: Option<(String, Option<u64>)>,
    /// The recording traced.
    pub recording: PathBuf,
    /// What the trace kept, when limits cut it to a window.
    pub kept: Option<Kept>,
    /// What the tracer's size budget cut, as its summary said.
    cut: Option<Cut>,
    /// The calls the tracer was asked to note (`TraceOptions::note_calls`).
    pub calls: Vec<rrr_trace::NotedCall>,
}

/// A replay ready to start: the command and what it needs while it runs.
struct ReplaySetup {
    cmd: Command,
    /// The replay's own copy of the disk ([`Recording::scratch_disk`]).
    _disk: tempfile::NamedTempFile,
    /// Where the engine keeps what loading the plugin needs, removed when dropped.
    _plugin_dir: Option<tempfile::TempDir>,
    /// Where the emulator's stdout (the guest's console) goes.
    serial: PathBuf,
    monitor: PathBuf,
    /// What the emulator does at the replay's end.
    at_end: AtEnd,
}

/// The replay of `rec` on its engine, with the tracer (its plugin arguments) or a gdb stub.
fn replay_command(
    rec: &Recording,
    tracer: Option<String>,
    gdb: Option<u16>,
) -> anyhow::Result<ReplaySetup> {
    let emu = rec.engine.emulator();
    let plugin = match &tracer {
        Some(_) => Some(emu.plugin()?),
        None => None,
    };
    let rrfile = rec.rrfile();
    let mode = Mode::Replay {
        rrfile: &rrfile,
        plugin: plugin.as_deref().zip(tracer),
        gdb,
    };
    let monitor = machine::monitor_path();
    let at_end = rec.engine.at_end(&mode);
    let disk = rec.scratch_disk()?;
    let serial = disk.path().with_extension("serial.log");
    let mut cmd = rec
        .engine
        .command(&rec.kernel.boot(), disk.path(), &mode, &monitor);
    let plugin_dir = match &plugin {
        Some(plugin) => {
            let dir = rec.scratch_dir("plugin")?;
            emu.load_plugin(&mut cmd, plugin, dir.path())?;
            Some(dir)
        }
        None => None,
    };
    Ok(ReplaySetup {
        cmd,
        _disk: disk,
        _plugin_dir: plugin_dir,
        serial,
        monitor,
        at_end,
    })
}

/// Replays `rec` without the tracer: checks that it replays, and how long it takes.
pub fn replay(rec: &Recording, timeout: Duration) -> crate::Result<Traced> {
    Ok(replay_once(rec, None, timeout)?.0)
}

/// Replays `rec` under the tracer into the trace `out`, within `limits`, in one pass: over the
/// size budget, the tracer keeps the recording's end (where a crash is) and as much before it
/// as fits (the shadow stacks still run from the start: calls open where the trace starts are
/// slices that start there). `--last` takes a first pass that finds the end.
pub fn trace(
    rec: &Recording,
    out: &Path,
    limits: &Limits,
    timeout: Duration,
) -> crate::Result<Traced> {
    Ok(trace_with(
        rec,
        out,
        limits,
        TraceOptions::default(),
        timeout,
    )?)
}

/// [`trace`], with the tracer's other options (a watch) taken from `extra`.
pub(crate) fn trace_with(
    rec: &Recording,
    out: &Path,
    limits: &Limits,
    extra: TraceOptions,
    timeout: Duration,
) -> anyhow::Result<Traced> {
    // A missing emulator is said first, before anything is prepared for it.
    rec.engine.emulator().require()?;
    let dir = rec.scratch_dir("trace")?;
    let budget = (limits.max_size > 0).then(|| Budget {
        bytes: limits.max_size,
        parts: dir.path().join("parts"),
    });
    let mut options = TraceOptions {
        crash: crash_file(rec, dir.path())?,
        window: limits.window,
        threads: limits.threads.clone(),
        max_depth: limits.max_depth,
        budget,
        ..extra
    };
    let mut profile = rec.profile()?;
    if limits.filters_functions() {
        let filtered = dir.path().join("focus.rrrprof");
        limits.filter_profile(&profile, &filtered)?;
        profile = filtered;
    }
    let mut first = None;
    if let Some(n) = limits.last {
        // The end is where a whole pass ends.
        let measure = TraceOptions {
            budget: None,
            ..options.clone()
        };
        let (pass, summary) = replay_once(rec, Some((out, &measure, &profile)), timeout)?;
        match Sizes(summary.sizes).last(limits.window, n) {
            Some(window) => options.window = window,
            None => return Ok(pass),
        }
        first = Some(pass);
    }
    let (mut traced, _) = replay_once(rec, Some((out, &options, &profile)), timeout)?;
    let whole_bytes;
    let whole_events;
    let mut why = Vec::new();
    if let Some(pass) = &first {
        whole_bytes = pass.bytes;
        whole_events = pass.events;
        traced.elapsed += pass.elapsed;
        why.push(format!(
            "the last {} instructions (--last)",
            limits.last.unwrap_or_default()
        ));
    } else {
        whole_bytes = traced.cut.as_ref().map_or(0, |c| c.whole_bytes);
        whole_events = traced.cut.as_ref().map_or(0, |c| c.whole_events);
    }
    let gaps = traced
        .cut
        .as_ref()
        .map(|c| c.gaps.clone())
        .unwrap_or_default();
    let window = match &traced.cut {
        Some(cut) => {
            why.push(format!(
                "the whole {} would be {:.1} MB, over the {:.0} MiB budget (--max-size)",
                if limits.window.is_all() && first.is_none() {
                    "trace"
                } else {
                    "window"
                },
                cut.whole_bytes as f64 / 1e6,
                limits.max_size as f64 / (1u64 << 20) as f64
            ));
            Window {
                from: cut.from,
                to: options.window.to,
            }
        }
        None if first.is_some() => options.window,
        None => return Ok(traced),
    };
    let mut why = why.join("; ");
    if limits.max_size > 0 && traced.bytes > limits.max_size && traced.crash.is_some() {
        why.push_str(
            "; it starts before the kernel starts reporting the crash, so that the crash is \
             in it, which takes it over the budget",
        );
    }
    traced.kept = Some(Kept {
        window,
        gaps,
        whole_bytes,
        whole_events,
        why,
    });
    Ok(traced)
}

/// The crash report file for the tracer (`crash=`), written in `dir`, if `rec` ended at a
/// crash.
fn crash_file(rec: &Recording, dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let Outcome::Crashed { line } = &rec.outcome else {
        return Ok(None);
    };
    let recorded = std::fs::read_to_string(rec.serial_log()).unwrap_or_default();
    let file = dir.join("crash-report");
    std::fs::write(&file, crash::report(&recorded, line).to_file_text())?;
    Ok(Some(file))
}

/// What a trace cut to a window kept.
#[derive(Debug)]
pub struct Kept {
    /// The part of the replay written.
    pub window: Window,
    /// The parts of it a size budget dropped between parts it kept (the moments of the
    /// crash's story).
    pub gaps: Vec<rrr_trace::ring::Gap>,
    /// The size of the trace of the whole replay (or of the window asked for).
    pub whole_bytes: u64,
    /// Its events.
    pub whole_events: u64,
    /// Why it was cut, in words.
    pub why: String,
}

impl std::fmt::Display for Kept {
    /// Why the trace was cut and what it keeps, in words.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the trace keeps the end, trace times {}",
            self.why, self.window
        )?;
        if !self.gaps.is_empty() {
            let gaps: Vec<String> = self
                .gaps
                .iter()
                .map(|g| format!("{}..{}", g.from, g.to))
                .collect();
            write!(
                f,
                " but for {} (the parts of the crash's story before them are kept)",
                gaps.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Replays `rec`, with the tracer writing `out` as `options` say with `profile` (then with
/// the tracer's results), or bare.
fn replay_once(
    rec: &Recording,
    traced: Option<(&Path, &TraceOptions, &Path)>,
    timeout: Duration,
) -> anyhow::Result<(Traced, TraceSummary)> {
    let emu = rec.engine.emulator();
    emu.require()?;
    let output = traced.map(|(out, _, _)| out);
    let recorded = std::fs::read_to_string(rec.serial_log()).unwrap_or_default();
    // The tracer's options go to it in a file, its results come back in another.
    let scratch = traced.map(|_| rec.scratch_dir("tracer")).transpose()?;
    let results = scratch.as_ref().map(|s| s.path().join("results.json"));
    let tracer = match (traced, &scratch) {
        (Some((out, options, profile)), Some(scratch)) => {
            let file = scratch.path().join("options.json");
            TraceOptions {
                results: results.clone(),
                ..options.clone()
            }
            .save(&file)
            .with_context(|| format!("writing {}", file.display()))?;
            Some(engine::tracer_args(profile, out, &file))
        }
        _ => None,
    };
    let setup = replay_command(rec, tracer, None)?;
    let serial = setup.serial.clone();
    let what = if output.is_some() {
        "replaying under the tracer"
    } else {
        "replaying"
    };
    let bar = crate::report::progress(what);
    let start = Instant::now();
    let mut vm = Vm::spawn(setup.cmd, &serial, &setup.monitor, setup.at_end)?;
    let deadline = start + timeout;
    while let Ok(Some(line)) = vm.next_line(deadline) {
        bar.set_message(format!("{what}: {}", line.trim()));
    }
    let timed_out = Instant::now() >= deadline;
    let exit = if timed_out {
        vm.quit()?
    } else {
        vm.wait(Duration::from_secs(60))?
    };
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    if let Some((
        out,
        TraceOptions {
            budget: Some(b), ..
        },
        _,
    )) = traced
    {
        if b.parts.exists() {
            // The tracer did not finish its trace (the emulator died): its segments make it.
            let mut file = std::fs::File::create(out)?;
            rrr_trace::ring::salvage(&b.parts, &mut file)
                .with_context(|| format!("writing what the tracer left to {}", out.display()))?;
        }
    }
    let kept = output.map_or(String::new(), |o| {
        format!("; the trace so far is in {}", o.display())
    });
    let replayed = std::fs::read_to_string(&serial).unwrap_or_default();
    let _ = std::fs::remove_file(&serial);
    if timed_out {
        crate::fail!(
            ReplayDiverged,
            "the replay ran longer than {} s and was stopped{kept}",
            timeout.as_secs()
        );
    }
    let stderr = &exit.stderr;
    let said = |out: &str| format!("{}{}", tail(out, 20), stderr.trim_end());
    let replay_end = RunEnd {
        console: &replayed,
        instructions: exit.instructions,
    };
    let recording_end = RunEnd {
        console: &recorded,
        instructions: rec.instructions,
    };
    let verdict = emu.verdict(&replay_end, &recording_end);
    if let Verdict::Diverged(why) = &verdict {
        let kept_log = rec.diverged_serial_log();
        std::fs::write(&kept_log, &replayed)?;
        crate::fail!(
            ReplayDiverged,
            "the replay diverged from the recording ({why}; the replay's console is in {}, the \
             recording's in {}){kept}; {} said:\n{}",
            kept_log.display(),
            rec.serial_log().display(),
            emu.binary(),
            said(&replayed)
        );
    }
    if !exit.status.success() {
        let meaning = machine::failure_meaning(stderr);
        crate::fail!(
            ReplayDiverged,
            "the replay failed ({}){meaning}{kept}; {} said:\n{}",
            exit.status,
            emu.binary(),
            said(&replayed)
        );
    }
    if let Verdict::Short = verdict {
        crate::fail!(
            ReplayDiverged,
            "the replay stopped before the end of the recording{kept}; {} said:\n{}",
            emu.binary(),
            said(&replayed)
        );
    }
    let summary = match (output, &results) {
        (Some(out), Some(results)) => TraceSummary::load(results).with_context(|| {
            format!(
                "the tracer left no results ({}), so it did not finish {}; {} said:\n{}",
                results.display(),
                out.display(),
                emu.binary(),
                said(&replayed)
            )
        })?,
        _ => TraceSummary::default(),
    };
    let bytes = output
        .and_then(|o| std::fs::metadata(o).ok())
        .map_or(0, |m| m.len());
    let traced = Traced {
        events: summary.events,
        bytes,
        elapsed,
        idle: exit.idle,
        check: emu.replay_check(&replay_end),
        crash: match &rec.outcome {
            Outcome::Crashed { line } if output.is_some() => {
                Some((crash::report(&recorded, line).title, summary.crash_at))
            }
            _ => None,
        },
        recording: rec.dir.clone(),
        kept: None,
        cut: summary.cut.clone(),
        calls: summary.calls.clone(),
    };
    Ok((traced, summary))
}

/// The last `n` lines of `text` without PANDA's progress lines, ending in a newline.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains(" instrs. ")).collect();
    let mut tail = crate::tools::last_lines(&lines.join("\n"), n);
    if !tail.is_empty() {
        tail.push('\n');
    }
    tail
}

/// A free port on 127.0.0.1 (bound, then released for QEMU).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A replay waiting for gdb (see [`replay_gdb`]).
pub struct GdbReplay {
    /// The gdb command that attaches to it (and runs it to the trace time asked for).
    pub command: String,
    /// Where it waits and what gdb can do there, in words.
    pub note: String,
    vm: Vm,
    serial: PathBuf,
    emulator: &'static dyn engine::Emulator,
    /// What the replay needs while it runs (see [`ReplaySetup`]).
    _disk: tempfile::NamedTempFile,
    _plugin_dir: Option<tempfile::TempDir>,
}

impl GdbReplay {
    /// Starts `rec`'s replay under a gdb stub on `port` (none or 0: a free one), paused at
    /// its start; the command runs it to trace time `at`, if given.
    pub fn start(rec: &Recording, port: Option<u16>, at: Option<u64>) -> crate::Result<Self> {
        let emu = rec.engine.emulator();
        emu.require()?;
        let to = at
            .map(|at| emu.gdb_to(at, &mut |at| locate(rec, at)))
            .transpose()?;
        let port = match port {
            Some(0) | None => free_port()?,
            Some(port) => port,
        };
        let ReplaySetup {
            cmd,
            _disk,
            _plugin_dir,
            serial,
            monitor,
            at_end,
        } = replay_command(rec, None, Some(port))?;
        let mut vm = Vm::spawn(cmd, &serial, &monitor, at_end)?;
        let held = emu.hold_for_gdb(&mut vm)?;
        let mut command = format!("gdb -ex 'target remote 127.0.0.1:{port}'");
        for ex in to.iter().flat_map(|t| &t.commands) {
            command.push_str(&format!(" -ex '{ex}'"));
        }
        command.push_str(&format!(" {}", rec.kernel.vmlinux().display()));
        let start = match &to {
            Some(t) => format!("; the command runs it to {}", t.place),
            None => String::new(),
        };
        let note = format!(
            "the replay waits for gdb on 127.0.0.1:{port}, paused at {held}{start}. Run the \
             command above. Breakpoints, `continue` and stepping run forward through the \
             recorded execution, the same on every replay; `reverse-stepi` and \
             `reverse-continue` go back; `kill` ends it."
        );
        Ok(GdbReplay {
            command,
            note,
            vm,
            serial,
            emulator: emu,
            _disk,
            _plugin_dir,
        })
    }

    /// Waits until the emulator exits (gdb's `kill`, or the end of the recording).
    pub fn wait(&mut self) -> crate::Result<()> {
        let exit = self.vm.wait(Duration::from_secs(u32::MAX as u64))?;
        Ok(self.end(exit)?)
    }

    /// Ends the replay now.
    pub fn stop(&mut self) -> crate::Result<()> {
        let exit = self.vm.quit()?;
        Ok(self.end(exit)?)
    }

    fn end(&mut self, exit: machine::Exit) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(&self.serial);
        if !exit.status.success() && exit.status.code().is_some() {
            let meaning = machine::failure_meaning(&exit.stderr);
            crate::fail!(
                ReplayDiverged,
                "the replay failed ({}){meaning}; {} said:\n{}",
                exit.status,
                self.emulator.binary(),
                exit.stderr.trim_end()
            );
        }
        Ok(())
    }
}

/// Replays `rec` (a QEMU recording) under the locating tracer until it finds trace time `at`.
fn locate(rec: &Recording, at: u64) -> anyhow::Result<Located> {
    let profile = rec.profile()?;
    let dir = rec.scratch_dir("locate")?;
    let out = dir.path().join("located");
    let args = engine::locator_args(&profile, at, &out);
    let setup = replay_command(rec, Some(args), None)?;
    let bar = crate::report::progress(format!("finding trace time {at} in the replay"));
    let mut vm = Vm::spawn(setup.cmd, &setup.serial, &setup.monitor, setup.at_end)?;
    let exited = loop {
        if out.exists() {
            break false;
        }
        if vm.next_line(Instant::now() + Duration::from_millis(100)) == Err(machine::Ended) {
            break true;
        }
    };
    let stderr = if exited {
        vm.wait(Duration::from_secs(60))?
    } else {
        vm.quit()?
    }
    .stderr;
    let _ = std::fs::remove_file(&setup.serial);
    bar.finish_and_clear();
    match std::fs::read_to_string(&out) {
        Ok(line) => Ok(line.trim().parse()?),
        Err(_) => {
            crate::fail!(BadInput,
            "the replay ended before trace time {at} (no traced call or return at or after it); \
             {} said:\n{}",
            rec.engine.emulator().binary(),
            tail(&stderr, 10)
        )
        }
    }
}
