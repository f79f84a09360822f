//! `rrr trace` and `rrr replay`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::choices::EngineArg;
use anyhow::bail;
use rrr_orchestrator::story::{trace_and_explain, Story};
use rrr_orchestrator::trace::{replay, GdbReplay, Traced};
use rrr_orchestrator::Recording;
use rrr_orchestrator::{parse_size, parse_threads, Limits};
use rrr_trace::{Threads, Window};

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
    /// The engine to replay with: a recording replays only on the engine that made it, so
    /// this only checks that it is the one expected.
    #[arg(long, value_enum)]
    pub engine: Option<EngineArg>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// What a trace may hold.
#[derive(clap::Args, Clone, Debug)]
pub struct LimitArgs {
    /// The largest trace to write (512M, 2G...; 0: no limit). Over it, the trace keeps the
    /// end of the recording (where a crash is) and as much before it as fits.
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = parse_size)]
    pub max_size: u64,
    /// Only this part of the replay: trace times FROM..TO, as the UI shows them (either end
    /// may be left out).
    #[arg(long, value_name = "FROM..TO")]
    pub window: Option<Window>,
    /// Only the last N instructions of the recording.
    #[arg(long, value_name = "N")]
    pub last: Option<u64>,
    /// Only these threads: `stimulus` (its processes, forks and threads, and the interrupts
    /// taken while they run), `all`, or pids (`123,456`).
    #[arg(long, value_name = "stimulus|all|PID,...", default_value = "all", value_parser = parse_threads)]
    pub threads: Threads,
    /// Only the kernel functions that match: a name glob (`ext4_*`) or a source path
    /// (`fs/ext4/`, `mm/slub.c`). Repeatable.
    #[arg(long = "only", value_name = "PATTERN")]
    pub only: Vec<String>,
    /// Not the kernel functions that match (their callees still show). Repeatable.
    #[arg(long = "skip", value_name = "PATTERN")]
    pub skip: Vec<String>,
    /// Only kernel calls this deep below the kernel's entry (0: `do_syscall_64` and the
    /// interrupt entries alone).
    #[arg(long, value_name = "N")]
    pub max_depth: Option<u32>,
}

impl LimitArgs {
    /// As the library takes them.
    pub fn to_limits(&self) -> Limits {
        Limits {
            max_size: self.max_size,
            window: self.window.unwrap_or(Window::ALL),
            last: self.last,
            threads: self.threads.clone(),
            only: self.only.clone(),
            skip: self.skip.clone(),
            max_depth: self.max_depth,
        }
    }
}

/// Runs `rrr trace`.
pub fn run(args: TraceArgs) -> anyhow::Result<()> {
    let rec = Recording::open(&args.recording)?;
    if let Some(engine) = args
        .engine
        .map(rrr_orchestrator::Engine::from)
        .filter(|e| *e != rec.engine)
    {
        bail!(
            "{} was recorded with the {} engine and replays only on it, not on {engine}: \
             record again with `--engine {engine}`",
            rec.dir.display(),
            rec.engine
        );
    }
    let (t, story) = trace_and_explain(
        &rec,
        &args.output,
        &args.limits.to_limits(),
        Duration::from_secs(args.timeout),
    )?;
    report(&args.output, &t);
    tell(story.as_ref());
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
    /// The gdb stub's port on 127.0.0.1 (default: a free one; the printed command has it).
    #[arg(long, requires = "gdb")]
    pub port: Option<u16>,
    /// Take gdb to this trace time (a slice's start in the trace, in instructions): the
    /// printed gdb command runs the replay there.
    #[arg(long, requires = "gdb", value_name = "TS")]
    pub at: Option<u64>,
}

/// Runs `rrr replay`: the recording replayed without the tracer (checks it still replays, and
/// is the baseline the tracer's cost is measured against).
pub fn run_bare(args: ReplayArgs) -> anyhow::Result<()> {
    let rec = Recording::open(&args.recording)?;
    if args.gdb {
        return replay_gdb(&rec, args.port, args.at);
    }
    let t = replay(&rec, Duration::from_secs(args.timeout))?;
    let idle = t.idle.map_or(String::new(), |i| {
        format!(
            " (skipped {} of QEMU's waits for the guest's timers)",
            i.skips
        )
    });
    eprintln!(
        "rrr: replayed {} in {:.2} s{idle}, {}",
        rec.dir.display(),
        t.elapsed.as_secs_f64(),
        t.check
    );
    Ok(())
}

/// Prints where the trace is and how to open it.
pub fn report(out: &Path, t: &Traced) {
    let shown = out.canonicalize().unwrap_or_else(|_| out.to_owned());
    eprintln!(
        "rrr: trace written: {} ({} events, {:.1} MB, replayed in {:.1} s; the replay {})",
        shown.display(),
        t.events,
        t.bytes as f64 / 1e6,
        t.elapsed.as_secs_f64(),
        t.check
    );
    if let Some(k) = &t.kept {
        let share = if k.whole_events > 0 {
            100.0 * t.events as f64 / k.whole_events as f64
        } else {
            100.0
        };
        eprintln!(
            "rrr: {k} ({share:.0}% of the events); for another part: --window FROM..TO; for all \
             of it: --max-size 0 (then `rrr serve --rpc` opens it)"
        );
    }
    if t.bytes > rrr_orchestrator::BROWSER_REACH {
        eprintln!(
            "rrr: {:.1} GB is more than ui.perfetto.dev opens in a browser: `rrr serve {} --rpc` \
             opens it with the native trace processor (trace_processor_shell, from Perfetto's \
             releases: https://github.com/google/perfetto/releases; it is on no package \
             registry), or trace less (--max-size, --window, --last)",
            t.bytes as f64 / 1e9,
            out.display()
        );
    } else {
        eprintln!(
            "rrr: open it in ui.perfetto.dev: `rrr serve {} --open` (or Open trace file there)",
            out.display()
        );
    }
    if let Some((title, at)) = &t.crash {
        match at {
            Some(ts) => {
                eprintln!("rrr: crash \"{title}\" at trace time {ts} (the 'crash' track)");
                eprintln!(
                    "rrr: to go there with gdb: rrr replay {} --gdb --at {ts}",
                    t.recording.display()
                );
            }
            None => eprintln!(
                "rrr: crash \"{title}\": the trace has no call of a function that starts a \
                 report ({}), so it is not marked; the report is at the trace's end",
                osi_profile::REPORTING_FUNCTIONS.join(", ")
            ),
        }
    }
}

/// Replays `rec` paused at its start (see `Emulator::hold_for_gdb`) under a gdb
/// stub until the emulator exits (gdb's `kill`, or the end of the recording); with `at`, the
/// printed gdb command first runs it to that trace time. gdb can go back (`reverse-stepi`,
/// `reverse-continue`): QEMU replays from the recording's start snapshot, PANDA runs its
/// checkpoint plugin alongside.
fn replay_gdb(rec: &Recording, port: Option<u16>, at: Option<u64>) -> anyhow::Result<()> {
    let mut replay = GdbReplay::start(rec, port, at)?;
    println!("{}", replay.command);
    eprintln!("rrr: {}", replay.note);
    Ok(replay.wait()?)
}

/// Ends with the crash's story, if it was told.
pub fn tell(story: Option<&Story>) {
    if let Some(story) = story {
        eprintln!(
            "rrr: the crash's story (`rrr explain` tells it again, --format json for scripts):"
        );
        eprint!("{}", story.text());
    }
}
