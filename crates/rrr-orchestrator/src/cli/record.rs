//! `rrr record`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use rrr_orchestrator::engine::Engine;
use rrr_orchestrator::kernel::Kernel;
use rrr_orchestrator::record::record;
use rrr_orchestrator::rootfs;

/// Arguments of `rrr record`.
#[derive(clap::Args, Clone, Debug)]
pub struct RecordArgs {
    /// The kernel's cache directory (what `rrr kernel` prints).
    #[arg(long)]
    pub kernel: PathBuf,
    /// The static stimulus binary (`rrr stimulus` builds it); its rootfs is built if needed.
    #[arg(long)]
    pub stimulus: PathBuf,
    /// The recording directory to create.
    #[arg(short, long, default_value = "rrr-recording")]
    pub output: PathBuf,
    /// Stop recording after this many seconds of guest run.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// The emulator that records (and later replays) it.
    #[arg(long, value_enum, default_value_t, env = "RRR_ENGINE")]
    pub engine: Engine,
}

/// Runs `rrr record`.
pub fn run(args: RecordArgs) -> anyhow::Result<()> {
    let kernel = Kernel {
        dir: args.kernel.clone(),
    };
    if !kernel.bzimage().is_file() {
        bail!(
            "{} has no bzImage: pass the directory `rrr kernel` prints",
            args.kernel.display()
        );
    }
    let rootfs = rootfs::build(&args.stimulus)?;
    let rec = record(
        args.engine,
        &kernel,
        &args.stimulus,
        &rootfs,
        &args.output,
        Duration::from_secs(args.timeout),
    )?;
    println!("{}", rec.dir.display());
    eprintln!(
        "rrr: recorded ({}); serial log: {}",
        rec.outcome,
        rec.serial_log().display()
    );
    Ok(())
}
