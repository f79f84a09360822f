//! The `rrr` command line: clap's structs, turned into the library's plain values before
//! the work starts (like samply's `*Props`), and what each command prints.

mod cache;
mod choices;
mod explain;
mod kernel;
mod panda;
mod profile;
mod record;
mod reporter;
mod rootfs;
mod run;
mod serve;
mod stimulus;
mod syzbot;
mod trace;
mod watch;

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
    /// Compile a reproducer as a static binary with DWARF (cached): prints its path.
    Stimulus(stimulus::StimulusArgs),
    /// Build the disk that boots straight to a stimulus (cached): prints its path.
    Rootfs(rootfs::RootfsArgs),
    /// Record a stimulus's run on a kernel, from a snapshot taken at /init's ready marker.
    Record(record::RecordArgs),
    /// Replay a recording under the tracer into a Perfetto trace.
    Trace(trace::TraceArgs),
    /// Replay a recording without the tracer.
    Replay(trace::ReplayArgs),
    /// Every access to a piece of kernel memory over a replay, with the allocation and frees
    /// of its object, each with its thread and call stack.
    Watch(watch::WatchArgs),
    /// The story of a recording's crash: the bad access, the object, who allocated and freed
    /// it, from which of the reproducer's calls, in which threads.
    Explain(explain::ExplainArgs),
    /// Everything: build the kernel, stimulus and disk, record, trace.
    Run(run::RunArgs),
    /// Fetch a syzbot bug's config, reproducers and crash report (cached): prints the directory.
    Syzbot(syzbot::SyzbotArgs),
    /// Show or clean the cache.
    Cache(cache::CacheArgs),
    /// Serve a trace to ui.perfetto.dev from 127.0.0.1.
    Serve(serve::ServeArgs),
    /// Copy the PANDA plugin (panda_rrr_trace.so) where PANDA finds it, for replays by hand.
    InstallPandaPlugin(panda::InstallArgs),
}

/// A command's end with its own exit code (for scripts) and what to say.
#[derive(Debug)]
pub struct Exit(pub u8, pub String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Exit {}

/// Parses the command line and runs the command.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    reporter::install();
    match cli.command {
        Command::Profile(args) => profile::run(args),
        Command::Kernel(args) => kernel::run(args),
        Command::Stimulus(args) => stimulus::run(args),
        Command::Rootfs(args) => rootfs::run(args),
        Command::Record(args) => record::run(args),
        Command::Trace(args) => trace::run(args),
        Command::Replay(args) => trace::run_bare(args),
        Command::Watch(args) => watch::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Run(args) => run::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Cache(args) => cache::run(args),
        Command::Syzbot(args) => syzbot::run(args),
        Command::InstallPandaPlugin(args) => panda::run(args),
    }
}
