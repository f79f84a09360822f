//! `rrr run`.

use std::path::PathBuf;
use std::time::Duration;

use super::choices::EngineArg;
use rrr_orchestrator::kernel::{KernelSpec, DISTRO_SOURCE};
use rrr_orchestrator::syzbot::{BugSpec, DEFAULT_URL};
use rrr_orchestrator::{compare, run_chain, RecordSpec, RunSpec, StimulusSource};

use super::kernel::CompilerArgs;
use super::record::{attempt_note, AttemptArgs};
use super::trace::{report, tell, LimitArgs};

/// Arguments of `rrr run`.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// The reproducer's C source.
    #[arg(long, required_unless_present = "syzbot", conflicts_with = "syzbot")]
    pub stimulus: Option<PathBuf>,
    /// A syzbot bug (extid, id or URL) instead: its kernel commit and config (reduced for the
    /// crash) and its C reproducer.
    #[arg(long)]
    pub syzbot: Option<String>,
    /// With --syzbot: this crash of the bug instead of the newest with a C reproducer.
    #[arg(long, requires = "syzbot")]
    pub crash: Option<usize>,
    /// With --syzbot: the dashboard to ask.
    #[arg(long, env = "RRR_SYZBOT_URL", default_value = DEFAULT_URL)]
    pub syzbot_url: String,
    /// Kernel source tree or tarball (default: the distro's linux-source tarball).
    #[arg(long, default_value = DISTRO_SOURCE)]
    pub kernel_src: PathBuf,
    /// Base kernel .config (default: tinyconfig plus rrr's fragment).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Extra kernel config fragments merged last: files, or rrr's by name (`crash-test`).
    #[arg(long = "fragment")]
    pub fragments: Vec<PathBuf>,
    /// A patch to apply to the kernel source before the build (a `git format-patch` mail or a
    /// unified diff, `-p1`); repeat for several, applied in order. With --syzbot, applied to
    /// the bug's commit.
    #[arg(long = "patch", value_name = "FILE")]
    pub patches: Vec<PathBuf>,
    /// Check a fix: record the reproducer on the kernel without the --patch files and with
    /// them, with the same attempts, and print both verdicts side by side (no trace).
    #[arg(long, requires = "patches")]
    pub compare: bool,
    /// The trace to write.
    #[arg(short, long, default_value = "trace.pftrace")]
    pub output: PathBuf,
    /// Stop recording after this many seconds of wall time (a guest that idles lives through
    /// more of its own time: rrr skips its idle waits).
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Record again even if a recording of these inputs is cached.
    #[arg(long)]
    pub rerecord: bool,
    /// The emulator that records and replays.
    #[arg(long, value_enum, default_value_t, env = "RRR_ENGINE")]
    pub engine: EngineArg,
    #[command(flatten)]
    pub attempts: AttemptArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub compiler: CompilerArgs,
    /// Parallel make jobs for the kernel (default: number of cores).
    #[arg(short, long)]
    pub jobs: Option<usize>,
}

/// Runs `rrr run`.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let kernel = KernelSpec {
        config: args.config.clone(),
        fragments: args.fragments.clone(),
        patches: args.patches.clone(),
        compiler: args.compiler.plan(),
        jobs: args.jobs,
        ..KernelSpec::tiny(args.kernel_src.clone())
    };
    let source = match args.syzbot {
        Some(bug) => StimulusSource::Syzbot {
            bug: BugSpec {
                bug,
                crash: args.crash,
                syzbot_url: args.syzbot_url,
            },
            kernel,
        },
        None => StimulusSource::File {
            path: args
                .stimulus
                .expect("clap requires --stimulus without --syzbot"),
            kernel,
        },
    };
    let spec = RunSpec {
        source,
        record: RecordSpec {
            engine: args.engine.into(),
            timeout: Duration::from_secs(args.timeout),
            rerecord: args.rerecord,
            attempts: args.attempts.to_attempts()?,
        },
        limits: args.limits.to_limits(),
        output: args.output,
    };
    if args.compare {
        let [without, with] = compare(&spec)?;
        eprintln!("rrr: verdict:\n  {without}\n  {with}");
        return Ok(());
    }
    let (rec, t, story) = run_chain(&spec)?;
    let note = attempt_note(&rec);
    if !note.is_empty() {
        eprintln!("rrr: the recording is{}", note.replacen(',', "", 1));
    }
    eprintln!("rrr: verdict: {}", rec.verdict());
    report(&spec.output, &t);
    tell(story.as_ref());
    Ok(())
}
