//! `rrr rootfs`.

use std::path::PathBuf;

use rrr_orchestrator::rootfs::build;

/// Arguments of `rrr rootfs`.
#[derive(clap::Args, Clone, Debug)]
pub struct RootfsArgs {
    /// The static stimulus binary (`rrr stimulus` builds it).
    #[arg(long)]
    pub stimulus: PathBuf,
}

/// Runs `rrr rootfs`.
pub fn run(args: RootfsArgs) -> anyhow::Result<()> {
    println!("{}", build(&args.stimulus)?.display());
    Ok(())
}
