//! `rrr watch`: replays a recording with every guest load and store checked against a range
//! of memory, and lists each access that touched it, with the allocation and frees of the
//! object holding it (see [`rrr_trace::watch`]).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use object::{Object, ObjectSymbol};
use rrr_trace::watch::{By, Event, Kind, Range};
use rrr_trace::TraceOptions;

use crate::limits::Limits;
use crate::recording::{Outcome, Recording};
use crate::trace::{self, Traced};

/// What to watch, as the user named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `ADDR[:LEN]`: an address in hex or a kernel symbol (`symbol+off`), LEN bytes (8).
    Spec(String),
    /// The address and size of the bad access in the recording's KASAN report.
    FromReport,
}

/// The memory a watch covers and where it came from.
#[derive(Clone, Debug)]
pub struct Watch {
    /// The range.
    pub range: Range,
    /// The object holding it, if known (a KASAN report names it).
    pub object: Option<Range>,
    /// Where the range came from, in words.
    pub source: String,
}

/// What a watch replay found.
#[derive(Debug)]
pub struct Watched {
    /// The events.
    pub findings: Findings,
    /// The replay (and its trace, with `-o`).
    pub traced: Traced,
}

/// The events a watch found.
#[derive(Clone, Debug)]
pub struct Findings {
    /// What was watched.
    pub watch: Watch,
    /// Every event, in trace-time order.
    pub events: Vec<Event>,
    /// Where each event's instruction is: `function (file:line)` from the kernel's DWARF
    /// (inlined functions by their own name), by pc.
    pub places: HashMap<u64, String>,
    /// The functions each event's instruction is inlined in, innermost first, by pc.
    pub inlined: HashMap<u64, Vec<String>>,
}

/// Why an event is left out of the program's story (and of `rrr watch`'s list, unless asked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aside {
    /// The sanitizer's own access (its shadow checks, metadata, report).
    Sanitizer,
    /// The allocator's own access (its freelist pointer in a free object, zeroing).
    Allocator,
    /// An access to, or a free of, the memory before the object's allocation: an earlier
    /// life of the memory (another object there).
    EarlierLife,
}

impl Aside {
    /// In words.
    pub fn describe(self) -> &'static str {
        match self {
            Aside::Sanitizer => "the sanitizer's own",
            Aside::Allocator => "the allocator's own",
            Aside::EarlierLife => "before the object's allocation",
        }
    }
}

impl Findings {
    /// When the object's life that the story is about starts: its last allocation before
    /// the first bad access the sanitizer reported; `None` without a report (a watch of an
    /// address has no one life to tell: every allocation there is listed) or if the replay
    /// never allocated it.
    pub fn life_from(&self) -> Option<u64> {
        let bad = self
            .events
            .iter()
            .find(|e| matches!(e.kind, Kind::BadRead | Kind::BadWrite))?;
        self.allocated_before(bad.ts)
    }

    /// The last allocation of the memory at or before `ts`.
    pub fn allocated_before(&self, ts: u64) -> Option<u64> {
        self.events
            .iter()
            .filter(|e| e.kind == Kind::Alloc && e.ts <= ts)
            .map(|e| e.ts)
            .next_back()
    }

    /// Why `e` is left out of the program's story, if it is.
    pub fn aside(&self, e: &Event) -> Option<Aside> {
        match e.by {
            Some(By::Sanitizer) => return Some(Aside::Sanitizer),
            Some(By::Allocator) => return Some(Aside::Allocator),
            None => {}
        }
        let before = self.life_from().is_some_and(|from| e.ts < from);
        (before && matches!(e.kind, Kind::Read | Kind::Write | Kind::Free))
            .then_some(Aside::EarlierLife)
    }
}

/// Resolves `target` for the recording `rec`.
pub fn resolve(rec: &Recording, target: &Target) -> crate::Result<Watch> {
    match target {
        Target::FromReport => Ok(from_report(rec)?),
        Target::Spec(spec) => {
            let (what, len) = match spec.rsplit_once(':') {
                Some((what, len)) => (
                    what,
                    len.parse::<u64>()
                        .ok()
                        .filter(|&l| l > 0)
                        .with_context(|| {
                            format!("{spec}: the length after `:` is a number of bytes (e.g. :8)")
                        })?,
                ),
                None => (spec.as_str(), 8),
            };
            let addr = match parse_hex(what) {
                Some(addr) => addr,
                None => symbol_address(&rec.kernel.vmlinux(), what)?,
            };
            Ok(Watch {
                range: Range { addr, len },
                object: None,
                source: spec.clone(),
            })
        }
    }
}

/// `0xffff...` or `ffff...` (hex digits only, at least 8 of them without `0x`).
fn parse_hex(s: &str) -> Option<u64> {
    let digits = match s.strip_prefix("0x") {
        Some(d) => d,
        None if s.len() >= 8 => s,
        None => return None,
    };
    u64::from_str_radix(digits, 16).ok()
}

/// The address of `symbol[+off]` in `vmlinux` (`off` in hex with `0x`, or decimal).
fn symbol_address(vmlinux: &Path, spec: &str) -> anyhow::Result<u64> {
    let (name, off) = match spec.split_once('+') {
        Some((name, off)) => {
            let off = parse_hex(off)
                .or_else(|| off.parse().ok())
                .with_context(|| format!("{spec}: the offset after `+` is a number"))?;
            (name, off)
        }
        None => (spec, 0),
    };
    let file =
        std::fs::File::open(vmlinux).with_context(|| format!("opening {}", vmlinux.display()))?;
    // SAFETY: the kernel cache's vmlinux is not modified while rrr runs.
    let map = unsafe { memmap2::Mmap::map(&file) }?;
    let elf =
        object::File::parse(&*map).with_context(|| format!("reading {}", vmlinux.display()))?;
    let mut close = Vec::new();
    for sym in elf.symbols() {
        let Ok(n) = sym.name() else { continue };
        if n == name {
            return Ok(sym.address().wrapping_add(off));
        }
        if close.len() < 8 && n.contains(name) {
            close.push(n.to_owned());
        }
    }
    if close.is_empty() {
        crate::fail!(
            BadInput,
            "no symbol {name:?} in {} (give an address in hex, or a kernel symbol)",
            vmlinux.display()
        );
    }
    crate::fail!(
        BadInput,
        "no symbol {name:?} in {}; symbols with that in their name: {}",
        vmlinux.display(),
        close.join(", ")
    )
}

/// The bad access of the recording's KASAN report: `Write of size 4 at addr ffff... by
/// task ...`, and the object `The buggy address belongs to the object at ffff... which
/// belongs to the cache kmalloc-1k of size 1024`.
fn from_report(rec: &Recording) -> anyhow::Result<Watch> {
    let Outcome::Crashed { line } = &rec.outcome else {
        crate::fail!(
            BadInput,
            "{} did not end at a crash, so it has no report to take the address from: give \
             ADDR[:LEN]",
            rec.dir.display()
        );
    };
    let log = std::fs::read_to_string(rec.serial_log())
        .with_context(|| format!("reading {}", rec.serial_log().display()))?;
    parse_kasan(&log).with_context(|| {
        format!(
            "the recording's crash ({line}) has no KASAN access line (`Read/Write of size N at \
             addr ADDR`): give ADDR[:LEN]"
        )
    })
}

/// The watch a KASAN report in `log` names.
fn parse_kasan(log: &str) -> Option<Watch> {
    let access = log.lines().find_map(|l| {
        let l = l.trim();
        let at = l.find(" of size ")?;
        let rest = &l[at + " of size ".len()..];
        let (size, rest) = rest.split_once(" at addr ")?;
        let addr = rest.split_whitespace().next()?;
        Some((
            l[..at].rsplit(' ').next()?.to_owned(),
            size.parse::<u64>().ok()?,
            parse_hex(addr)?,
            l.to_owned(),
        ))
    })?;
    let (_, size, addr, text) = access;
    let object = log.lines().zip(log.lines().skip(1)).find_map(|(a, b)| {
        let start = a
            .split_once("belongs to the object at ")?
            .1
            .split_whitespace()
            .next()?;
        let size = b.split_once(" of size ")?.1.split_whitespace().next()?;
        Some(Range {
            addr: parse_hex(start)?,
            len: size.parse().ok()?,
        })
    });
    Some(Watch {
        range: Range { addr, len: size },
        object,
        source: format!(
            "the KASAN report: {}",
            text.trim_start_matches(|c: char| c == '['
                || c == ' '
                || c.is_ascii_digit()
                || c == '.'
                || c == ']')
                .trim()
        ),
    })
}

/// Replays `rec` watching `watch`; with `out`, also writes the trace of the replay (within
/// `limits`, as `rrr trace` does) with the events marked in it (the sanitizer's and the
/// allocator's own accesses only if `mark_own`). The watch's events are all of the replay's,
/// whatever the trace keeps.
pub fn watch(
    rec: &Recording,
    watch: Watch,
    out: Option<&Path>,
    limits: &Limits,
    mark_own: bool,
    timeout: Duration,
) -> crate::Result<Watched> {
    // A missing emulator is said first, before anything is prepared for it.
    rec.engine.emulator().require()?;
    let dir = rec.scratch_dir("watch")?;
    let accesses = dir.path().join("accesses");
    let options = TraceOptions {
        watch: Some(watch.range),
        object: watch.object,
        accesses: Some(accesses.clone()),
        watch_own: mark_own,
        ..TraceOptions::default()
    };
    let traced = match out {
        Some(out) => trace::trace_with(rec, out, limits, options, timeout)?,
        // The tracer runs for the call stacks; its trace is not kept, so not cut either.
        None => {
            let whole = Limits {
                max_size: 0,
                ..Limits::default()
            };
            trace::trace_with(rec, Path::new("/dev/null"), &whole, options, timeout)?
        }
    };
    let text = std::fs::read_to_string(&accesses)
        .with_context(|| format!("reading the watch's events in {}", accesses.display()))?;
    let mut events: Vec<Event> = text.lines().filter_map(Event::parse).collect();
    events.sort_by_key(|e| e.ts);
    let (places, inlined) = places(&rec.kernel.vmlinux(), events.iter().map(|e| e.pc));
    Ok(Watched {
        findings: Findings {
            watch,
            events,
            places,
            inlined,
        },
        traced,
    })
}

/// `function (file:line)` of each of `pcs` in `vmlinux`, from its DWARF, and the functions
/// it is inlined in (innermost first); a pc it does not know is left out.
fn places(
    vmlinux: &Path,
    pcs: impl Iterator<Item = u64>,
) -> (HashMap<u64, String>, HashMap<u64, Vec<String>>) {
    let loader = match addr2line::Loader::new(vmlinux) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("reading the DWARF of {}: {e}", vmlinux.display());
            return Default::default();
        }
    };
    let mut places = HashMap::new();
    let mut inlined = HashMap::new();
    for pc in pcs {
        if places.contains_key(&pc) {
            continue;
        }
        // Innermost first: each inlined function's name and where in it the pc is (for an
        // outer one, the line of the inlined call).
        let mut frames = Vec::new();
        if let Ok(mut found) = loader.find_frames(pc) {
            while let Ok(Some(frame)) = found.next() {
                let name = frame
                    .function
                    .and_then(|f| f.demangle().ok().map(|n| n.into_owned()));
                let line = frame.location.and_then(file_line);
                frames.push((name, line));
            }
        }
        // The place is the first frame that is not the sanitizer's instrumentation inlined
        // into the code (`instrument_atomic_read_write`, the instrumented atomics): KASAN
        // names the function the check is in too.
        let shown = frames
            .iter()
            .position(|(name, line)| !is_instrumentation(name.as_deref(), line.as_deref()))
            .unwrap_or(0);
        let (name, line) = match frames.get(shown) {
            Some((name, line)) => (name.clone(), line.clone()),
            None => (
                None,
                loader.find_location(pc).ok().flatten().and_then(file_line),
            ),
        };
        let place = match (name, line) {
            (Some(f), Some(l)) => format!("{f} ({l})"),
            (Some(f), None) => f,
            (None, Some(l)) => l,
            (None, None) => continue,
        };
        let names = frames.into_iter().filter_map(|(name, _)| name).collect();
        places.insert(pc, place);
        inlined.insert(pc, names);
    }
    (places, inlined)
}

/// Whether an inlined frame (function `name`, at `line`) is the sanitizer's instrumentation:
/// `include/linux/instrumented.h`'s checks, the instrumented atomics' wrappers
/// (`include/linux/atomic/`), or a KASAN, KCSAN or KMSAN helper.
fn is_instrumentation(name: Option<&str>, line: Option<&str>) -> bool {
    let name = name.unwrap_or_default();
    let line = line.unwrap_or_default();
    name.starts_with("instrument_")
        || ["kasan", "kcsan", "kmsan"].iter().any(|s| name.contains(s))
        || line.starts_with("include/linux/instrumented.h")
        || line.starts_with("include/linux/atomic/")
}

/// `file:line` of a DWARF location, the file as the tree names it.
fn file_line(l: addr2line::Location<'_>) -> Option<String> {
    Some(format!("{}:{}", source_path(l.file?), l.line?))
}

/// A kernel source path as the tree names it (`mm/slub.c`): the build directory's prefix
/// (`.../src/`) removed.
fn source_path(path: &str) -> &str {
    match path.find("/src/") {
        Some(i) if path.starts_with('/') => &path[i + "/src/".len()..],
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kasan_report_names_the_access_and_its_object() {
        let log = "[   12.3] BUG: KASAN: slab-use-after-free in lkdtm_WRITE_AFTER_FREE+0x8c/0xd0\n\
                   [   12.3] Write of size 4 at addr ffff888005d0c600 by task stimulus/71\n\
                   [   12.4] The buggy address belongs to the object at ffff888005d0c400\n\
                   [   12.4]  which belongs to the cache kmalloc-1k of size 1024\n";
        let w = parse_kasan(log).unwrap();
        assert_eq!(
            w.range,
            Range {
                addr: 0xffff888005d0c600,
                len: 4
            }
        );
        assert_eq!(
            w.object,
            Some(Range {
                addr: 0xffff888005d0c400,
                len: 1024
            })
        );
        assert!(w.source.contains("Write of size 4"), "{}", w.source);
        assert!(parse_kasan("no report").is_none());
    }

    #[test]
    fn addresses_are_hex() {
        assert_eq!(parse_hex("0x10"), Some(16));
        assert_eq!(parse_hex("ffff888005d0c600"), Some(0xffff888005d0c600));
        assert_eq!(parse_hex("init_task"), None);
    }
}
