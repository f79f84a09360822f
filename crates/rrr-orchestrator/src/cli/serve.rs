//! `rrr serve`.

use std::path::PathBuf;

use rrr_orchestrator::serve::{open_in_browser, serve_rpc, TraceServer, UI_ORIGIN};

/// Arguments of `rrr serve`.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// The trace to serve.
    pub trace: PathBuf,
    /// Port on 127.0.0.1 (the Perfetto UI allows 9001 without asking).
    #[arg(long, default_value_t = 9001)]
    pub port: u16,
    /// Open the UI in the browser (xdg-open).
    #[arg(long)]
    pub open: bool,
    /// Run `trace_processor_shell` as an RPC server instead, for traces too big for the
    /// browser's memory (it must be on PATH).
    #[arg(long)]
    pub rpc: bool,
}

/// Runs `rrr serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    if args.rpc {
        return Ok(serve_rpc(&args.trace, args.port, args.open)?);
    }
    let server = TraceServer::bind(&args.trace, args.port)?;
    let url = server.url();
    println!("{url}");
    eprintln!(
        "rrr: serving {} on http://127.0.0.1:{} (only to {UI_ORIGIN}); Ctrl-C stops",
        args.trace.display(),
        server.port()
    );
    if args.open {
        open_in_browser(&url);
    }
    server.serve_forever();
    Ok(())
}
