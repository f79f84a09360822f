//! `rrr trace`: replays a recording under the tracer plugin into a Perfetto trace.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::machine::{self, Mode, Vm};
use crate::record::Recording;

/// Arguments of `rrr trace`.
#[derive(clap::Args, Clone, Debug)]
pub struct TraceArgs {
    /// The recording directory (`rrr record` makes it).
    pub recording: PathBuf,
    /// The trace to write.
    #[arg(short, long, default_value = "trace.pftrace")]
    pub output: PathBuf,
    /// Give up on a replay that runs longer than this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
}

/// What a replay produced.
#[derive(Debug)]
pub struct Traced {
    /// Events written, as the plugin reported them.
    pub events: u64,
    /// Size of the trace in bytes.
    pub bytes: u64,
    /// Wall time of the replay.
    pub elapsed: Duration,
}

/// The profile the tracer uses: the kernel's plus the stimulus's functions, as user code.
/// Kept in the recording directory.
fn profile(rec: &Recording) -> anyhow::Result<PathBuf> {
    let path = rec.dir.join("trace.rrrprof");
    if path.is_file() {
        return Ok(path);
    }
    let bar = crate::progress::spinner("profiling the kernel and the stimulus".to_owned());
    let mut data = osi_profile::read(&rec.kernel.vmlinux(), &osi_profile::Options::default())?;
    let user = osi_profile::Options {
        user: true,
        ..Default::default()
    };
    data.merge(osi_profile::read(&rec.stimulus, &user)?);
    osi_profile::write(&data, &path)?;
    bar.finish_and_clear();
    Ok(path)
}

/// QEMU's replay of `rec` (with the plugin or gdb stub given), on a private copy of the disk:
/// QEMU locks a disk it writes, so one recording can be replayed by several runs at once and
/// stays as recorded. Returns the command, the copy (removed when dropped), the serial log's
/// path and the monitor's.
fn replay_command(
    rec: &Recording,
    plugin: Option<(&Path, String)>,
    gdb: Option<u16>,
) -> anyhow::Result<(Command, tempfile::NamedTempFile, PathBuf, PathBuf)> {
    let rrfile = rec.rrfile();
    let mode = Mode::Replay {
        rrfile: &rrfile,
        plugin,
        gdb,
    };
    let monitor = machine::monitor_path();
    let disk = tempfile::Builder::new()
        .prefix(".replay-")
        .suffix(".qcow2")
        .tempfile_in(&rec.dir)?;
    std::fs::copy(rec.disk(), disk.path())?;
    let serial = disk.path().with_extension("serial.log");
    let cmd = machine::command(&rec.kernel, disk.path(), &mode, &monitor);
    Ok((cmd, disk, serial, monitor))
}

/// Replays `rec` with the tracer (or bare, with no `output`), writing the trace to `output`.
pub fn replay(rec: &Recording, output: Option<&Path>, timeout: Duration) -> anyhow::Result<Traced> {
    crate::tools::require_qemu()?;
    let plugin = match output {
        Some(out) => Some((
            crate::tools::plugin()?,
            format!(
                "profile={},trace={}",
                profile(rec)?.display(),
                out.display()
            ),
        )),
        None => None,
    };
    let (cmd, _disk, serial, monitor) = replay_command(
        rec,
        plugin.as_ref().map(|(p, a)| (p.as_path(), a.clone())),
        None,
    )?;
    let what = if output.is_some() {
        "replaying under the tracer"
    } else {
        "replaying"
    };
    let bar = crate::progress::spinner(what.to_owned());
    let start = Instant::now();
    let mut vm = Vm::spawn(cmd, &serial, &monitor)?;
    let deadline = start + timeout;
    while let Ok(Some(line)) = vm.next_line(deadline) {
        bar.set_message(format!("{what}: {}", line.trim()));
    }
    let timed_out = Instant::now() >= deadline;
    let (status, stderr) = if timed_out {
        vm.quit()?
    } else {
        vm.wait(Duration::from_secs(60))?
    };
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    if timed_out || !status.success() {
        let _ = std::fs::remove_file(&serial);
    }
    let kept = output.map_or(String::new(), |o| {
        format!("; the trace so far is in {}", o.display())
    });
    if timed_out {
        bail!(
            "the replay ran longer than {} s and was stopped{kept}",
            timeout.as_secs()
        );
    }
    if !status.success() {
        bail!(
            "the replay failed ({status}){kept}; QEMU said:\n{}",
            stderr.trim_end()
        );
    }
    let recorded = std::fs::read_to_string(rec.serial_log()).unwrap_or_default();
    let replayed = std::fs::read_to_string(&serial).unwrap_or_default();
    drop(vm);
    if recorded != replayed {
        let kept_log = rec.dir.join("diverged-serial.log");
        std::fs::rename(&serial, &kept_log)?;
        bail!(
            "the replay diverged from the recording: its console output ({}) differs from the recorded one ({}){kept}",
            kept_log.display(),
            rec.serial_log().display()
        );
    }
    let _ = std::fs::remove_file(&serial);
    let events = stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("rrr_qemu: ")?
                .split_once(" events")?
                .0
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let bytes = output
        .and_then(|o| std::fs::metadata(o).ok())
        .map_or(0, |m| m.len());
    Ok(Traced {
        events,
        bytes,
        elapsed,
    })
}

/// Prints where the trace is and how to open it.
pub fn report(out: &Path, t: &Traced) {
    let shown = out.canonicalize().unwrap_or_else(|_| out.to_owned());
    eprintln!(
        "rrr: trace written: {} ({} events, {:.1} MB, replayed in {:.1} s)",
        shown.display(),
        t.events,
        t.bytes as f64 / 1e6,
        t.elapsed.as_secs_f64()
    );
    eprintln!(
        "rrr: open it in ui.perfetto.dev: `rrr serve {} --open` (or Open trace file there)",
        out.display()
    );
}

/// Runs `rrr trace`.
pub fn run(args: TraceArgs) -> anyhow::Result<()> {
    let rec = Recording::open(&args.recording)?;
    let t = replay(&rec, Some(&args.output), Duration::from_secs(args.timeout))?;
    report(&args.output, &t);
    Ok(())
}

/// Arguments of `rrr replay`.
#[derive(clap::Args, Clone, Debug)]
pub struct ReplayArgs {
    /// The recording directory (`rrr record` makes it).
    pub recording: PathBuf,
    /// Give up on a replay that runs longer than this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    /// Start the replay paused with a gdb stub; prints the gdb command.
    #[arg(long)]
    pub gdb: bool,
    /// The gdb stub's port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 1234, requires = "gdb")]
    pub port: u16,
}

/// A free port on 127.0.0.1 (bound, then released for QEMU).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Replays `rec` paused at its start under a gdb stub until QEMU exits (gdb's `kill`, or the
/// end of the recording). Reverse execution is not offered: QEMU 10.0 never answers gdb's
/// reverse-step packet (`bs`) on these recordings, although they carry the start snapshot.
fn replay_gdb(rec: &Recording, port: u16) -> anyhow::Result<()> {
    crate::tools::require_qemu()?;
    let port = if port == 0 { free_port()? } else { port };
    let (cmd, _disk, serial, monitor) = replay_command(rec, None, Some(port))?;
    let mut vm = Vm::spawn(cmd, &serial, &monitor)?;
    println!(
        "gdb -ex 'target remote 127.0.0.1:{port}' {}",
        rec.kernel.vmlinux().display()
    );
    eprintln!(
        "rrr: the replay waits for gdb on 127.0.0.1:{port}, paused at the recording's start; \
         run the command above. Breakpoints, `continue` and stepping run forward through the \
         recorded execution, the same on every replay; `kill` ends it."
    );
    let (status, stderr) = vm.wait(Duration::from_secs(u32::MAX as u64))?;
    let _ = std::fs::remove_file(&serial);
    if !status.success() && status.code().is_some() {
        bail!(
            "the replay failed ({status}); QEMU said:\n{}",
            stderr.trim_end()
        );
    }
    Ok(())
}

/// Runs `rrr replay`: the recording replayed without the tracer (checks it still replays, and
/// is the baseline the tracer's cost is measured against).
pub fn run_bare(args: ReplayArgs) -> anyhow::Result<()> {
    let rec = Recording::open(&args.recording)?;
    if args.gdb {
        return replay_gdb(&rec, args.port);
    }
    let t = replay(&rec, None, Duration::from_secs(args.timeout))?;
    eprintln!(
        "rrr: replayed {} in {:.2} s, identical console output",
        rec.dir.display(),
        t.elapsed.as_secs_f64()
    );
    Ok(())
}
