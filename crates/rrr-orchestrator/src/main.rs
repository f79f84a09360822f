//! `rrr`: record a kernel reproducer once, replay it under a tracer into a Perfetto trace.

mod cache;
mod kernel;
mod profile;
mod progress;

use clap::{Parser, Subcommand};

/// rrr: deterministic record/replay tracing of Linux kernel bugs.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the tracer's profile of a vmlinux (or a static binary) from its DWARF.
    Profile(profile::ProfileArgs),
    /// Build a traceable kernel (cached): prints the cache directory.
    Kernel(kernel::KernelArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RRR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Profile(args) => profile::run(args),
        Command::Kernel(args) => kernel::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rrr: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
