//! `rrr stimulus`.

use std::path::PathBuf;

use anyhow::Context;

use rrr_orchestrator::stimulus::build;

/// Arguments of `rrr stimulus`.
#[derive(clap::Args, Clone, Debug)]
pub struct StimulusArgs {
    /// The reproducer's C source.
    pub source: PathBuf,
    /// Also copy the binary here.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// Runs `rrr stimulus`.
pub fn run(args: StimulusArgs) -> anyhow::Result<()> {
    let bin = build(&args.source)?;
    if let Some(out) = &args.output {
        std::fs::copy(&bin, out).with_context(|| format!("writing {}", out.display()))?;
    }
    println!("{}", args.output.as_ref().unwrap_or(&bin).display());
    Ok(())
}
