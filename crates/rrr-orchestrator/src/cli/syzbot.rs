//! `rrr syzbot`.

use rrr_orchestrator::syzbot::{fetch, summary, BugSpec, DEFAULT_URL};

/// Which syzbot bug, and where to ask.
#[derive(clap::Args, Clone, Debug)]
pub struct SyzbotArgs {
    /// The bug: its extid (`c6d438f2d77f96cae7c2`, from the `extid=` of its URL, or of the
    /// `syzbot+<extid>@` reporter address), its 40-digit id, or its URL.
    pub bug: String,
    /// Use this crash of the bug (index in syzbot's list) instead of the newest one with a C
    /// reproducer.
    #[arg(long)]
    pub crash: Option<usize>,
    /// The syzbot dashboard to ask (a mirror, or a local server in tests).
    #[arg(long, env = "RRR_SYZBOT_URL", default_value = DEFAULT_URL)]
    pub syzbot_url: String,
}

/// Runs `rrr syzbot`.
pub fn run(args: SyzbotArgs) -> anyhow::Result<()> {
    let f = fetch(&BugSpec {
        bug: args.bug,
        crash: args.crash,
        syzbot_url: args.syzbot_url,
    })?;
    eprintln!("{}", summary(&f));
    println!("{}", f.dir.display());
    Ok(())
}
