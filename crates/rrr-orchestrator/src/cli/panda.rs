//! `rrr install-panda-plugin`.

use std::path::PathBuf;

use rrr_orchestrator::{install_panda_plugin, panda_replay_hint};

/// Arguments of `rrr install-panda-plugin`.
#[derive(clap::Args, Clone, Debug)]
pub struct InstallArgs {
    /// The directory to copy panda_rrr_trace.so into (default: the plugin directory of the
    /// panda-system-x86_64 in PATH).
    #[arg(long)]
    pub to: Option<PathBuf>,
}

/// Runs `rrr install-panda-plugin`.
pub fn run(args: InstallArgs) -> anyhow::Result<()> {
    let dest = install_panda_plugin(args.to)?;
    println!("{}", dest.display());
    eprintln!(
        "rrr: installed; replay by hand with `{}`",
        panda_replay_hint()
    );
    Ok(())
}
