//! `rrr run`: the whole chain for one stimulus or one syzbot bug: kernel, stimulus, rootfs,
//! snapshot, recording (each cached), then a traced replay.

use std::path::PathBuf;
use std::time::Duration;

use crate::cache::{self, Key};
use crate::engine::Engine;
use crate::kernel::{self, KernelArgs};
use crate::record;
use crate::recording::Recording;
use crate::{machine, rootfs, stimulus, syzbot, syzkaller, trace};

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
    #[arg(long, env = "RRR_SYZBOT_URL", default_value = syzbot::DEFAULT_URL)]
    pub syzbot_url: String,
    /// Kernel source tree or tarball (default: the distro's linux-source tarball).
    #[arg(long, default_value = kernel::DISTRO_SOURCE)]
    pub kernel_src: PathBuf,
    /// Base kernel .config (default: tinyconfig plus rrr's fragment).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Extra kernel config fragments merged last: files, or rrr's by name (`crash-test`).
    #[arg(long = "fragment")]
    pub fragments: Vec<PathBuf>,
    /// The trace to write.
    #[arg(short, long, default_value = "trace.pftrace")]
    pub output: PathBuf,
    /// Stop recording after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Record again even if a recording of these inputs is cached.
    #[arg(long)]
    pub rerecord: bool,
    /// The emulator that records and replays.
    #[arg(long, value_enum, default_value_t, env = "RRR_ENGINE")]
    pub engine: Engine,
}

/// Runs `rrr run`.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let (kernel_args, source) = match &args.syzbot {
        Some(bug) => syzbot_inputs(&args, bug)?,
        None => (
            KernelArgs {
                config: args.config.clone(),
                fragments: args.fragments.clone(),
                ..KernelArgs::tiny(args.kernel_src.clone())
            },
            args.stimulus
                .clone()
                .expect("clap requires --stimulus without --syzbot"),
        ),
    };
    // The stimulus first: a reproducer that does not compile fails in seconds, not after a
    // kernel build.
    let stim = stimulus::build(&source)?;
    let kernel = kernel::build(&kernel_args)?;
    let disk = rootfs::build(&stim)?;
    let mut key = Key::default();
    // A recording replays only on the emulator build that made it.
    let emulator = args.engine.emulator().require()?;
    key.add("kernel", kernel.dir.to_string_lossy().as_bytes());
    args.engine
        .add_to_key(&mut key, &emulator)
        // The machine it ran on (a recording replays only on the same devices).
        .add("machine", machine::RECIPE.as_bytes())
        .add("cmdline", args.engine.cmdline().as_bytes())
        .add("timeout", &args.timeout.to_le_bytes())
        .add_file("rootfs", &disk)?;
    let dir = cache::root()?.join("recordings").join(key.hex());
    let _lock = cache::lock(&dir)?;
    let rec = match Recording::open(&dir) {
        Ok(rec) if !args.rerecord => rec,
        _ => record::record(
            args.engine,
            &kernel,
            &stim,
            &disk,
            &dir,
            Duration::from_secs(args.timeout),
        )?,
    };
    eprintln!("rrr: recording {} ({})", rec.dir.display(), rec.outcome);
    let t = trace::replay(&rec, Some(&args.output), Duration::from_secs(3600))?;
    trace::report(&args.output, &t);
    Ok(())
}

/// The kernel (the bug's commit, its config reduced for its crash) and the C reproducer of a
/// syzbot bug (written from its syz reproducer when it has no C one).
fn syzbot_inputs(args: &RunArgs, bug: &str) -> anyhow::Result<(KernelArgs, PathBuf)> {
    let f = syzbot::fetch(&syzbot::BugArgs {
        bug: bug.to_owned(),
        crash: args.crash,
        syzbot_url: args.syzbot_url.clone(),
    })?;
    let crash = f.crash();
    eprintln!("rrr: {} (crash #{}: {})", f.bug.title, f.index, crash.title);
    if let Some(arch) = crash.architecture.as_deref().filter(|a| *a != "amd64") {
        anyhow::bail!(
            "this crash is on {arch}; rrr records x86_64 (amd64) kernels: pick an amd64 crash \
             with --crash"
        );
    }
    let repro = match (f.repro_c(), f.repro_syz()) {
        (Some(c), _) => c,
        (None, Some(syz)) => syz_to_c(&f, &syz)?,
        (None, None) => anyhow::bail!(
            "crash #{} of this bug has no reproducer: pick a crash that has one (--crash)",
            f.index
        ),
    };
    let (Some(link), Some(commit)) = (&crash.kernel_source_git, &crash.kernel_source_commit) else {
        anyhow::bail!("syzbot gives no kernel tree and commit for this crash");
    };
    let kernel = KernelArgs {
        git: Some(syzbot::clone_url(link)?),
        commit: Some(commit.clone()),
        config: Some(f.config()),
        report: f.report(),
        title: Some(crash.title.clone()),
        fragments: args.fragments.clone(),
        ..KernelArgs::tiny(args.kernel_src.clone())
    };
    Ok((kernel, repro))
}

/// The C program of a crash's syz reproducer, written by syz-prog2c of the crash's syzkaller
/// commit with the crash's options.
fn syz_to_c(f: &syzbot::Fetched, syz: &std::path::Path) -> anyhow::Result<PathBuf> {
    let crash = f.crash();
    let (Some(link), Some(commit)) = (&crash.syzkaller_git, &crash.syzkaller_commit) else {
        anyhow::bail!(
            "crash #{} has only a syz reproducer and syzbot names no syzkaller commit to \
             convert it with: pick a crash with a C reproducer (--crash)",
            f.index
        );
    };
    let text = std::fs::read_to_string(syz)?;
    let opts = match crash.repro_opts.as_deref().filter(|o| !o.trim().is_empty()) {
        Some(o) => o.to_owned(),
        // syzbot's programs carry them in a comment line: `#{"threaded":true,...}`.
        None => text
            .lines()
            .find(|l| l.trim_start_matches('#').trim_start().starts_with('{'))
            .unwrap_or("{}")
            .to_owned(),
    };
    let opts = syzkaller::ReproOpts::parse(&opts)?;
    eprintln!(
        "rrr: crash #{} has only a syz reproducer: converting it to C with syz-prog2c of \
         syzkaller {commit:.12} ({})",
        f.index,
        opts.prog2c_args().join(" ")
    );
    let prog2c = syzkaller::prog2c(&syzbot::clone_url(link)?, commit)?;
    let c = f.dir.join("repro-from-syz.c");
    syzkaller::to_c(&prog2c, syz, &opts, &c)?;
    Ok(c)
}
