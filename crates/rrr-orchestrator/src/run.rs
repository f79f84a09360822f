//! The whole chain (`rrr run`) for one stimulus or one syzbot bug: kernel, stimulus, rootfs,
//! snapshot, recording (each cached), then a traced replay.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cache::{self, Key};
use crate::engine::Engine;
use crate::kernel::{self, KernelSpec};
use crate::limits::Limits;
use crate::record;
use crate::recording::Recording;
use crate::story::{self, Story};
use crate::trace::Traced;
use crate::{machine, rootfs, stimulus, syzbot, syzkaller};

/// Where the reproducer comes from.
#[derive(Clone, Debug)]
pub enum StimulusSource {
    /// A C file, run on `kernel` (a kernel spec whose source and config the caller chose).
    File {
        /// The reproducer's C source.
        path: PathBuf,
        /// The kernel to run it on.
        kernel: KernelSpec,
    },
    /// A syzbot bug: its kernel commit and config (reduced for its crash), its reproducer.
    Syzbot {
        /// Which bug and crash, and where to ask.
        bug: syzbot::BugSpec,
        /// The kernel spec to start from (its source tree for the distro fallback, extra
        /// fragments); the bug's commit, config and report replace the rest.
        kernel: KernelSpec,
    },
}

/// How to record, as plain values.
#[derive(Clone, Debug)]
pub struct RecordSpec {
    /// The emulator that records and replays.
    pub engine: Engine,
    /// Stop recording after this long.
    pub timeout: Duration,
    /// Record again even if a recording of these inputs is cached.
    pub rerecord: bool,
    /// How many times to record until the run crashes.
    pub attempts: record::Attempts,
}

/// Everything `rrr run` does, as plain values.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The reproducer and its kernel.
    pub source: StimulusSource,
    /// How to record it.
    pub record: RecordSpec,
    /// What the trace may hold.
    pub limits: Limits,
    /// The trace to write.
    pub output: PathBuf,
}

/// Builds, records (or finds the cached recording) and traces; returns the recording, what
/// the trace holds, and the crash's story when the recording ended at a report about memory
/// (see [`crate::story::trace_and_explain`]).
pub fn run_chain(spec: &RunSpec) -> crate::Result<(Recording, Traced, Option<Story>)> {
    let (kernel_spec, source) = inputs(&spec.source)?;
    // The stimulus first: a reproducer that does not compile fails in seconds, not after a
    // kernel build.
    let stim = stimulus::build(&source)?;
    let kernel = kernel::build(&kernel_spec)?;
    let disk = rootfs::build(&stim)?;
    let rec = cached_recording(&spec.record, &kernel, &stim, &disk)?;
    crate::report::info(&format!(
        "recording {} ({})",
        rec.dir.display(),
        rec.outcome
    ));
    let (t, story) =
        story::trace_and_explain(&rec, &spec.output, &spec.limits, Duration::from_secs(3600))?;
    Ok((rec, t, story))
}

/// The kernel to build and the reproducer's C source, for a file or a syzbot bug.
fn inputs(source: &StimulusSource) -> anyhow::Result<(KernelSpec, PathBuf)> {
    match source {
        StimulusSource::File { path, kernel } => Ok((kernel.clone(), path.clone())),
        StimulusSource::Syzbot { bug, kernel } => Ok(syzbot_inputs(bug, kernel)?),
    }
}

/// One side of a fix's check: which kernel, and what its recording says.
#[derive(Debug)]
pub struct Verdict {
    /// `without the patches`, or `with fix.patch`.
    pub kernel: String,
    /// The recording (the first that crashed, or the last attempt).
    pub recording: Recording,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kernel, self.recording.verdict())
    }
}

/// Does the patch fix it? Records the reproducer on the kernel without `spec`'s patches and
/// with them, with the same attempts (each step cached as `rrr run` caches it); traces
/// neither.
pub fn compare(spec: &RunSpec) -> crate::Result<[Verdict; 2]> {
    let (patched, source) = inputs(&spec.source)?;
    if patched.patches.is_empty() {
        crate::fail!(
            BadInput,
            "--compare checks a fix: give it with --patch FILE"
        );
    }
    let names: Vec<String> = patched
        .patches
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or(p.as_os_str())
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let plain = KernelSpec {
        patches: vec![],
        ..patched.clone()
    };
    let stim = stimulus::build(&source)?;
    let disk = rootfs::build(&stim)?;
    let side = |label: String, kernel: &KernelSpec| -> anyhow::Result<Verdict> {
        let kernel = kernel::build(kernel)?;
        let recording = cached_recording(&spec.record, &kernel, &stim, &disk)?;
        let v = Verdict {
            kernel: label,
            recording,
        };
        crate::report::info(&v.to_string());
        Ok(v)
    };
    let without = side("without the patches".to_owned(), &plain)?;
    let with = side(format!("with {}", names.join(", ")), &patched)?;
    Ok([without, with])
}

/// The recording of `stim` (in `disk`) on `kernel`, from the cache unless `spec.rerecord`.
pub fn cached_recording(
    spec: &RecordSpec,
    kernel: &kernel::Kernel,
    stim: &Path,
    disk: &Path,
) -> crate::Result<Recording> {
    let mut key = Key::default();
    // A recording replays only on the emulator build that made it.
    let emulator = spec.engine.emulator().require()?;
    key.add("kernel", kernel.dir.to_string_lossy().as_bytes());
    spec.engine
        .add_to_key(&mut key, &emulator)
        // The machine it ran on (a recording replays only on the same devices).
        .add("machine", machine::RECIPE.as_bytes())
        .add("cmdline", spec.engine.cmdline().as_bytes())
        .add("timeout", &spec.timeout.as_secs().to_le_bytes())
        .add("attempts", format!("{:?}", spec.attempts).as_bytes())
        .add_file("rootfs", disk)?;
    let dir = cache::Kind::Recordings.dir()?.join(key.hex());
    let _lock = cache::lock(&dir)?;
    match Recording::open(&dir) {
        Ok(rec) if !spec.rerecord => Ok(rec),
        _ => record::record(
            spec.engine,
            kernel,
            stim,
            disk,
            &dir,
            spec.timeout,
            spec.attempts,
        ),
    }
}

/// The kernel (the bug's commit, its config reduced for its crash, on top of `base`) and the
/// C reproducer of a syzbot bug (written from its syz reproducer when it has no C one).
pub fn syzbot_inputs(
    bug: &syzbot::BugSpec,
    base: &KernelSpec,
) -> crate::Result<(KernelSpec, PathBuf)> {
    let f = syzbot::fetch(bug)?;
    let crash = f.crash();
    crate::report::info(&format!(
        "{} (crash #{}: {})",
        f.bug.title, f.index, crash.title
    ));
    if let Some(arch) = crash.architecture.as_deref().filter(|a| *a != "amd64") {
        crate::fail!(
            BadInput,
            "this crash is on {arch}; rrr records x86_64 (amd64) kernels: pick an amd64 crash \
             with --crash"
        );
    }
    let repro = match (f.repro_c(), f.repro_syz()) {
        (Some(c), _) => c,
        (None, Some(syz)) => syz_to_c(&f, &syz)?,
        (None, None) => crate::fail!(
            BadInput,
            "crash #{} of this bug has no reproducer: pick a crash that has one (--crash)",
            f.index
        ),
    };
    let (Some(link), Some(commit)) = (&crash.kernel_source_git, &crash.kernel_source_commit) else {
        crate::fail!(
            BadInput,
            "syzbot gives no kernel tree and commit for this crash"
        );
    };
    let kernel = KernelSpec {
        git: Some(syzbot::clone_url(link)?),
        commit: Some(commit.clone()),
        config: Some(f.config()),
        report: f.report(),
        title: Some(crash.title.clone()),
        ..base.clone()
    };
    Ok((kernel, repro))
}

/// The C program of a crash's syz reproducer, written by syz-prog2c of the crash's syzkaller
/// commit with the crash's options.
fn syz_to_c(f: &syzbot::Fetched, syz: &std::path::Path) -> anyhow::Result<PathBuf> {
    let crash = f.crash();
    let (Some(link), Some(commit)) = (&crash.syzkaller_git, &crash.syzkaller_commit) else {
        crate::fail!(
            BadInput,
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
    crate::report::info(&format!(
        "crash #{} has only a syz reproducer: converting it to C with syz-prog2c of \
         syzkaller {commit:.12} ({})",
        f.index,
        opts.prog2c_args().join(" ")
    ));
    let prog2c = syzkaller::prog2c(&syzbot::clone_url(link)?, commit)?;
    let c = f.dir.join("repro-from-syz.c");
    syzkaller::to_c(&prog2c, syz, &opts, &c)?;
    Ok(c)
}
