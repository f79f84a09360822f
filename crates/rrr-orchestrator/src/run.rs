//! `rrr run`: the whole chain for one stimulus: kernel, stimulus, rootfs, snapshot, recording
//! (each cached), then a traced replay.

use std::path::PathBuf;
use std::time::Duration;

use crate::cache::{self, Key};
use crate::kernel::{self, KernelArgs};
use crate::record::{self, Recording};
use crate::{rootfs, stimulus, trace};

/// Arguments of `rrr run`.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// The reproducer's C source.
    #[arg(long)]
    pub stimulus: PathBuf,
    /// Kernel source tree or tarball (default: the distro's linux-source tarball).
    #[arg(long, default_value = kernel::DISTRO_SOURCE)]
    pub kernel_src: PathBuf,
    /// Base kernel .config (default: tinyconfig plus rrr's fragment).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The trace to write.
    #[arg(short, long, default_value = "trace.pftrace")]
    pub output: PathBuf,
    /// Stop recording after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Record again even if a recording of these inputs is cached.
    #[arg(long)]
    pub rerecord: bool,
}

/// Runs `rrr run`.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let kernel = kernel::build(&KernelArgs {
        src: args.kernel_src.clone(),
        config: args.config.clone(),
        fragments: vec![],
        jobs: None,
    })?;
    let stim = stimulus::build(&args.stimulus)?;
    let disk = rootfs::build(&stim)?;
    let mut key = Key::default();
    key.add("kernel", kernel.dir.to_string_lossy().as_bytes())
        .add("timeout", &args.timeout.to_le_bytes())
        .add_file("rootfs", &disk)?;
    let dir = cache::root()?.join("recordings").join(key.hex());
    let _lock = cache::lock(&dir)?;
    let rec = match Recording::open(&dir) {
        Ok(rec) if !args.rerecord => rec,
        _ => record::record(
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
