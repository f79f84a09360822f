//! `rrr explain`.

use std::path::PathBuf;
use std::time::Duration;

use rrr_orchestrator::story::explain;
use rrr_orchestrator::{ErrorKind, Recording};

/// Arguments of `rrr explain`.
#[derive(clap::Args, Clone, Debug)]
pub struct ExplainArgs {
    /// The recording directory (`rrr record` or `rrr run` makes it).
    pub recording: PathBuf,
    /// How to tell it: text (for people) or json (for scripts; its schema is
    /// docs/story.schema.json).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Give up on a replay that runs longer than this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
}

/// How `rrr explain` tells the story.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// For people.
    Text,
    /// For scripts.
    Json,
}

/// What `rrr explain` exits with when the recording has no crash to explain, for scripts.
pub const NO_CRASH: u8 = 3;

/// Runs `rrr explain`.
pub fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let rec = Recording::open(&args.recording)?;
    let story = match explain(&rec, Duration::from_secs(args.timeout)) {
        Ok(story) => story,
        Err(e) if e.kind() == ErrorKind::BadInput && e.to_string().contains("no crash report") => {
            return Err(super::Exit(NO_CRASH, e.to_string()).into());
        }
        Err(e) => return Err(e.into()),
    };
    match args.format {
        Format::Text => print!("{}", story.text()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&story)?),
    }
    Ok(())
}
