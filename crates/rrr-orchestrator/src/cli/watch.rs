//! `rrr watch`.

use std::path::PathBuf;
use std::time::Duration;

use rrr_orchestrator::watch::{resolve, watch, Aside, Findings, Target};
use rrr_orchestrator::Recording;
use rrr_trace::watch::{Event, Kind};

use super::trace::{report, LimitArgs};

/// Arguments of `rrr watch`.
#[derive(clap::Args, Clone, Debug)]
pub struct WatchArgs {
    /// The recording directory (`rrr record` makes it).
    pub recording: PathBuf,
    /// The memory: `ADDR[:LEN]`, ADDR in hex or a kernel symbol (`symbol+off`), LEN in bytes
    /// (default 8).
    #[arg(
        required_unless_present = "from_report",
        conflicts_with = "from_report"
    )]
    pub memory: Option<String>,
    /// Watch the bad access of the recording's KASAN report (its address and size).
    #[arg(long)]
    pub from_report: bool,
    /// Also write the trace of the replay, with each event an instant on its thread and on a
    /// `watch` track.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// How to list the events: text (for people), tsv or json (for scripts).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Give up on a replay that runs longer than this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    /// What the `-o` trace may hold (the watch's list is never cut).
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Also list (and mark in the trace) the sanitizer's and the allocator's own accesses, and
    /// those before the object's allocation (the memory's earlier lives).
    #[arg(long)]
    pub all: bool,
}

/// How `rrr watch` lists its events.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One event a line, its call stack on the following lines.
    Text,
    /// Tab-separated: kind ts cpu pid tid comm addr size value pc stack (`;`-separated) by
    /// (empty for the program's own).
    Tsv,
    /// A JSON array of events.
    Json,
}

/// Runs `rrr watch`.
pub fn run(args: WatchArgs) -> anyhow::Result<()> {
    let rec = Recording::open(&args.recording)?;
    let target = match args.memory {
        Some(spec) => Target::Spec(spec),
        None => Target::FromReport,
    };
    let w = resolve(&rec, &target)?;
    eprintln!(
        "rrr: watching {} ({}){}",
        w.range,
        w.source,
        if rrr_trace::guest::is_kernel_address(w.range.addr) {
            ""
        } else {
            "; a user-space address: the accesses of every process that maps it"
        }
    );
    let found = watch(
        &rec,
        w,
        args.output.as_deref(),
        &args.limits.to_limits(),
        args.all,
        Duration::from_secs(args.timeout),
    )?;
    print(&found.findings, args.format, args.all);
    if let Some(out) = &args.output {
        report(out, &found.traced);
    }
    Ok(())
}

/// Prints the events as `format` says: the program's, or with `all` every one.
fn print(found: &Findings, format: Format, all: bool) {
    let listed: Vec<&Event> = found
        .events
        .iter()
        .filter(|e| all || found.aside(e).is_none())
        .collect();
    match format {
        Format::Tsv => {
            println!("kind\tts\tcpu\tpid\ttid\tcomm\taddr\tsize\tvalue\tpc\tstack\tby");
            for e in listed {
                println!("{}", e.to_line());
            }
        }
        Format::Json => {
            let events: Vec<serde_json::Value> = listed.iter().map(|e| json(e, found)).collect();
            println!("{}", serde_json::Value::Array(events));
        }
        Format::Text => {
            if !listed.iter().any(|e| e.kind.is_access()) {
                println!(
                    "no access to {} by the program in the replay",
                    found.watch.range
                );
            }
            for e in &listed {
                println!("{}", text(e, found));
                for f in e.stack.iter().rev() {
                    println!("    {f}");
                }
            }
            let aside: Vec<Aside> = found.events.iter().filter_map(|e| found.aside(e)).collect();
            if !aside.is_empty() && !all {
                let count = |a| aside.iter().filter(|&&b| b == a).count();
                let parts: Vec<String> = [Aside::Sanitizer, Aside::Allocator, Aside::EarlierLife]
                    .into_iter()
                    .filter(|&a| count(a) > 0)
                    .map(|a| format!("{} {}", count(a), a.describe()))
                    .collect();
                println!("not listed: {} (--all lists them)", parts.join(", "));
            }
        }
    }
}

/// An event as a line for people.
fn text(e: &Event, found: &Findings) -> String {
    let at = match found.places.get(&e.pc) {
        Some(place) => format!("{place}, pc {:#x}", e.pc),
        None => format!("pc {:#x}", e.pc),
    };
    let who = if e.tid == 0 {
        "interrupt/unknown thread".to_owned()
    } else {
        format!("{} pid {} tid {}", e.comm, e.pid, e.tid)
    };
    let cpu = if e.cpu >= 0 {
        format!(" cpu {}", e.cpu)
    } else {
        String::new()
    };
    let line = match e.kind {
        Kind::Read | Kind::Write => format!(
            "{:>12} {:<5} {} bytes at {:#x} = {:#x}{cpu}  {who}\n{:>12} in {at}",
            e.ts,
            e.kind.name(),
            e.size,
            e.addr,
            e.value,
            ""
        ),
        Kind::Alloc => format!(
            "{:>12} alloc {:#x} ({}){cpu}  {who}",
            e.ts,
            e.addr,
            if e.size > 0 {
                format!("{} bytes", e.size)
            } else {
                "size not known".to_owned()
            }
        ),
        Kind::Free => format!("{:>12} free  {:#x}  {who}", e.ts, e.addr),
        Kind::BadRead | Kind::BadWrite => format!(
            "{:>12} {} of {} bytes at {:#x} reported by the sanitizer{cpu}  {who}\n{:>12} by {at}",
            e.ts,
            if e.kind == Kind::BadWrite {
                "bad write"
            } else {
                "bad read"
            },
            e.size,
            e.addr,
            ""
        ),
    };
    match found.aside(e) {
        Some(a) => format!("{line}  [{}]", a.describe()),
        None => line,
    }
}

/// An event as JSON.
fn json(e: &Event, found: &Findings) -> serde_json::Value {
    serde_json::json!({
        "kind": e.kind.name(),
        "ts": e.ts,
        "cpu": e.cpu,
        "pid": e.pid,
        "tid": e.tid,
        "comm": e.comm,
        "addr": format!("{:#x}", e.addr),
        "size": e.size,
        "value": format!("{:#x}", e.value),
        "pc": format!("{:#x}", e.pc),
        "place": found.places.get(&e.pc),
        "stack": e.stack,
        "aside": found.aside(e).map(Aside::describe),
    })
}
