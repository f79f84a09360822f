//! `rrr record`.

use std::path::PathBuf;
use std::time::Duration;

use super::choices::EngineArg;
use anyhow::bail;
use rrr_orchestrator::kernel::Kernel;
use rrr_orchestrator::record::{record, Attempts};
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
    /// Stop recording after this many seconds of wall time (a guest that idles lives through
    /// more of its own time: rrr skips its idle waits).
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// The emulator that records (and later replays) it.
    #[arg(long, value_enum, default_value_t, env = "RRR_ENGINE")]
    pub engine: EngineArg,
    #[command(flatten)]
    pub attempts: AttemptArgs,
}

/// How often to record a flaky reproducer.
#[derive(clap::Args, Clone, Debug)]
pub struct AttemptArgs {
    /// Record up to N times, each from the ready snapshot with its timing varied, until the
    /// kernel reports a crash; keep the crashing recording (or the last).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub attempts: u32,
    /// Fail if no attempt crashed (the last recording is kept).
    #[arg(long)]
    pub until_crash: bool,
    /// The first attempt's number (the stimulus's RRR_ATTEMPT; a recording's manifest names
    /// its attempt, so `--first-attempt K --attempts 1` runs attempt K again).
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub first_attempt: u32,
}

impl AttemptArgs {
    /// As the library takes them.
    pub fn to_attempts(&self) -> anyhow::Result<Attempts> {
        if self.attempts == 0 || self.first_attempt == 0 {
            bail!("--attempts and --first-attempt count from 1");
        }
        Ok(Attempts {
            first: self.first_attempt,
            count: self.attempts,
            until_crash: self.until_crash,
        })
    }
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
        args.engine.into(),
        &kernel,
        &args.stimulus,
        &rootfs,
        &args.output,
        Duration::from_secs(args.timeout),
        args.attempts.to_attempts()?,
    )?;
    println!("{}", rec.dir.display());
    let idle = rec.idle_skipped.map_or(String::new(), |d| {
        format!(
            ", the guest idled {:.1} s of its own time (before, between and after the \
             stimulus's calls) that rrr did not wait out",
            d.as_secs_f64()
        )
    });
    eprintln!(
        "rrr: recorded ({}{}{idle}); serial log: {}",
        rec.outcome,
        attempt_note(&rec),
        rec.serial_log().display()
    );
    Ok(())
}

/// `, attempt 3 (one of 5)` when the recording is one of several attempts, `, attempt 2`
/// when it is attempt 2 alone (`--first-attempt 2 --attempts 1`).
pub fn attempt_note(rec: &rrr_orchestrator::Recording) -> String {
    match rec.attempt {
        Some(a) if a.of > 1 => format!(", attempt {} (one of {})", a.number, a.of),
        Some(a) if a.number > 1 => format!(", attempt {}", a.number),
        _ => String::new(),
    }
}
