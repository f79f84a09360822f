//! Watching a range of guest memory over a whole replay: every load and store that touches
//! it, and the allocation and frees of the object that holds it, each with its thread and call
//! stack. The writer hands the watcher what it sees; the watcher writes one line per event to
//! the watch file (all of the replay: a trace's window or thread filter never cuts it) and
//! tells the writer what to mark in the trace.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::str::FromStr;

use osi_profile::Profile;

use crate::decode::words_for;
use crate::record::{Args, ThreadIdent};
use crate::writer::subscriber::{At, Call, Happened, Mark, Subscriber};

/// Bytes of guest memory: `ADDR:LEN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Range {
    /// The first byte.
    pub addr: u64,
    /// How many bytes (at least 1).
    pub len: u64,
}

impl Range {
    /// Whether `size` bytes at `addr` overlap the range.
    #[inline(always)]
    pub fn touches(&self, addr: u64, size: u64) -> bool {
        addr < self.addr.wrapping_add(self.len) && self.addr < addr.wrapping_add(size)
    }
}

impl fmt::Display for Range {
    /// `0xADDR:LEN`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}:{}", self.addr, self.len)
    }
}

/// What happened to the watched memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A load.
    Read,
    /// A store.
    Write,
    /// The object holding the range was allocated (the allocator returned).
    Alloc,
    /// The object holding the range is being freed (the free function was called).
    Free,
}

impl Kind {
    /// Its name in the watch file and the trace.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Alloc => "alloc",
            Kind::Free => "free",
        }
    }
}

impl FromStr for Kind {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "read" => Kind::Read,
            "write" => Kind::Write,
            "alloc" => Kind::Alloc,
            "free" => Kind::Free,
            _ => return Err(()),
        })
    }
}

/// One line of the watch file: tab-separated `kind ts cpu pid tid comm addr size value pc
/// stack`, the stack's functions outermost first, `;`-separated. An allocation's `addr` and
/// `value` are the object's start, its `size` the size asked for (0: not known); a free's are
/// the pointer freed; their `cpu` is -1 and `pc` the function's entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: Kind,
    /// Trace time.
    pub ts: u64,
    /// The CPU (-1: not known).
    pub cpu: i64,
    /// Process id (0: not known).
    pub pid: i32,
    /// Thread id (0: not known; an interrupt's events are on no thread).
    pub tid: i32,
    /// The thread's name.
    pub comm: String,
    /// The address accessed (or the object's start).
    pub addr: u64,
    /// Bytes accessed (or the object's size).
    pub size: u64,
    /// The value loaded or stored.
    pub value: u64,
    /// The instruction.
    pub pc: u64,
    /// The call stack, outermost first.
    pub stack: Vec<String>,
}

impl Event {
    /// The event's line (without its newline).
    pub fn to_line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{:#x}\t{}\t{:#x}\t{:#x}\t{}",
            self.kind.name(),
            self.ts,
            self.cpu,
            self.pid,
            self.tid,
            self.comm.replace(['\t', '\n'], " "),
            self.addr,
            self.size,
            self.value,
            self.pc,
            self.stack.join(";")
        )
    }

    /// Parses a line written by [`Event::to_line`].
    pub fn parse(line: &str) -> Option<Event> {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 11 {
            return None;
        }
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        Some(Event {
            kind: f[0].parse().ok()?,
            ts: f[1].parse().ok()?,
            cpu: f[2].parse().ok()?,
            pid: f[3].parse().ok()?,
            tid: f[4].parse().ok()?,
            comm: f[5].to_owned(),
            addr: hex(f[6])?,
            size: f[7].parse().ok()?,
            value: hex(f[8])?,
            pc: hex(f[9])?,
            stack: f[10]
                .split(';')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }
}

/// What a function does to objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    None,
    /// Returns a new object; the size asked for is argument word `size` (if it has one).
    Alloc {
        size: Option<u8>,
    },
    /// Frees the object argument word `ptr` points to.
    Free {
        ptr: u8,
    },
}

/// An allocator, by its name: the kmalloc family, kmem_cache_alloc*, vmalloc and kvmalloc,
/// krealloc, kmemdup (the profile's functions with such names that return a pointer, other
/// than a cache).
fn is_allocator(name: &str) -> bool {
    let base = name.split('.').next().unwrap_or(name);
    (base.contains("kmalloc")
        || base.starts_with("kmem_cache_alloc")
        || base.contains("vmalloc")
        || base.contains("vzalloc")
        || base.starts_with("krealloc")
        || base.starts_with("kmemdup")
        || base.starts_with("kzalloc"))
        && !base.contains("free")
}

/// A free function, by its name: kfree*, kvfree*, vfree, kmem_cache_free (not its bulk form).
fn is_free(name: &str) -> bool {
    let base = name.split('.').next().unwrap_or(name);
    base.starts_with("kfree")
        || base.starts_with("kvfree")
        || base == "vfree"
        || base == "kmem_cache_free"
        || base == "__kmem_cache_free"
}

/// The roles of a profile's functions.
fn roles(profile: &Profile) -> Vec<Role> {
    profile
        .functions()
        .map(|f| {
            if f.is_user() {
                return Role::None;
            }
            // Argument word of each parameter.
            let mut word = 0usize;
            let mut size = None;
            let mut ptr = None;
            for p in f.params() {
                let ty = p.c_type();
                if p.name() == "size" && size.is_none() {
                    size = Some(word as u8);
                }
                if ptr.is_none() && ty.ends_with('*') && !ty.contains("kmem_cache") {
                    ptr = Some(word as u8);
                }
                word += words_for(p.location());
            }
            let ret = f.ret_type();
            if is_allocator(f.name()) && ret.ends_with('*') && !ret.contains("kmem_cache") {
                Role::Alloc { size }
            } else if is_free(f.name()) {
                ptr.map_or(Role::None, |ptr| Role::Free { ptr })
            } else {
                Role::None
            }
        })
        .collect()
}

/// The watch: the range, the allocations seen, and the watch file.
pub(crate) struct Watcher {
    range: Range,
    /// The object holding the range, if the user knows it (a KASAN report names it): its
    /// allocation is matched by start, whatever size the allocator was asked for.
    object: Option<Range>,
    roles: Vec<Role>,
    /// Sizes asked for by allocator calls still open, by (track, stack slot).
    asked: HashMap<(usize, u64), u64>,
    /// Objects allocated over the range: start and size (0: not known).
    objects: Vec<(u64, u64)>,
    out: Box<dyn Write + Send>,
    /// Events written.
    pub events: u64,
}

impl Watcher {
    /// Watches `range` (inside `object`, if known), writing the watch file to `out`.
    pub fn new(
        range: Range,
        object: Option<Range>,
        profile: &Profile,
        out: Box<dyn Write + Send>,
    ) -> Watcher {
        Watcher {
            range,
            object,
            roles: roles(profile),
            asked: HashMap::new(),
            objects: Vec::new(),
            out,
            events: 0,
        }
    }

    /// Whether `func` allocates or frees (the writer tells the watcher about its calls).
    #[inline(always)]
    pub fn cares(&self, func: u32) -> bool {
        !matches!(self.roles.get(func as usize), None | Some(Role::None))
    }

    /// `func` is called on track `track` with its return address at `slot`.
    pub fn on_enter(&mut self, at: &At<'_>, call: Call, args: &Args) -> Option<Event> {
        let Call { track, slot, func } = call;
        let stack = at.stack;
        let word =
            |i: u8| (i < args.len && args.missing & (1 << i) == 0).then(|| args.words[i as usize]);
        match self.roles.get(func as usize)? {
            Role::Alloc { size } => {
                if let Some(size) = size.and_then(word) {
                    self.asked.insert((track, slot), size);
                }
                None
            }
            Role::Free { ptr } => {
                let ptr = word(*ptr)?;
                // A free called by another reports through the outer call (same pointer).
                if self.called_by(stack, |r| matches!(r, Role::Free { .. })) {
                    return None;
                }
                let size = match self.objects.iter().find(|&&(start, _)| start == ptr) {
                    Some(&(_, size)) => size,
                    None if self.object.is_some_and(|o| o.addr == ptr) => 0,
                    None => return None,
                };
                let entry = at.profile.function(func).map_or(0, |f| f.entry());
                self.emit(at, Kind::Free, Some(func), ptr, size, ptr, entry)
            }
            Role::None => None,
        }
    }

    /// `func`, called on track `track` at `slot`, returned `value`; `stack` holds its callers.
    pub fn on_return(&mut self, at: &At<'_>, call: Call, value: u64) -> Option<Event> {
        let Call { track, slot, func } = call;
        let stack = at.stack;
        let Some(Role::Alloc { .. }) = self.roles.get(func as usize) else {
            return None;
        };
        let asked = self.asked.remove(&(track, slot));
        // An allocator called by another reports through the outer call (same pointer).
        if self.called_by(stack, |r| matches!(r, Role::Alloc { .. })) {
            return None;
        }
        // The report's object, if this is it.
        let named = self.object.filter(|o| o.addr == value).map(|o| o.len);
        // Size not known: only an object that starts at the range.
        let extent = named.or(asked).unwrap_or(1).max(1);
        if !self.range.touches(value, extent) {
            return None;
        }
        let size = asked.or(named).unwrap_or(0);
        self.objects.push((value, size));
        let entry = at.profile.function(func).map_or(0, |f| f.entry());
        self.emit(at, Kind::Alloc, Some(func), value, size, value, entry)
    }

    /// Whether a function of the calls open in `stack` has a role `is` accepts.
    fn called_by(&self, stack: &[u32], is: impl Fn(Role) -> bool) -> bool {
        stack
            .iter()
            .any(|&f| self.roles.get(f as usize).is_some_and(|&r| is(r)))
    }

    /// A load or store of `size` bytes at `addr` by the instruction at `pc`; the caller has
    /// checked that it touches the range.
    pub fn on_access(&mut self, at: &At<'_>, access: &crate::record::Access) -> Option<Event> {
        let kind = if access.write {
            Kind::Write
        } else {
            Kind::Read
        };
        self.emit(
            at,
            kind,
            None,
            access.addr,
            u64::from(access.size),
            access.value,
            access.pc,
        )
    }

    /// Writes an event's line and returns it.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        at: &At<'_>,
        kind: Kind,
        top: Option<u32>,
        addr: u64,
        size: u64,
        value: u64,
        pc: u64,
    ) -> Option<Event> {
        let (ts, who) = (at.ts, at.who);
        let name = |id: u32| at.profile.function(id).map_or("?", |f| f.name()).to_owned();
        let event = Event {
            kind,
            ts,
            cpu: who.cpu.map_or(-1, i64::from),
            pid: who.ident.map_or(0, |i| i.pid),
            tid: who.ident.map_or(0, |i| i.tid),
            comm: who.ident.map_or_else(String::new, ThreadIdent::comm_str),
            addr,
            size,
            value,
            pc,
            stack: at.stack.iter().copied().chain(top).map(name).collect(),
        };
        if let Err(e) = writeln!(self.out, "{}", event.to_line()) {
            tracing::error!("writing the watch file: {e}");
        }
        self.events += 1;
        Some(event)
    }
}

impl Subscriber for Watcher {
    fn cares(&self, func: u32) -> bool {
        Watcher::cares(self, func)
    }

    /// Each event goes to the watch file; the trace marks it on its thread and on a
    /// `watch` track.
    fn on(&mut self, happened: &Happened<'_>, at: &At<'_>) -> Option<Mark> {
        let e = match *happened {
            Happened::Call(call, args) => self.on_enter(at, call, args),
            Happened::Return(call, value) => self.on_return(at, call, value),
            Happened::Access(access) => self.on_access(at, access),
        }?;
        Some(Mark {
            name: format!("{} {}", e.kind.name(), e.size),
            args: vec![
                ("addr", format!("{:#x}", e.addr)),
                ("value", format!("{:#x}", e.value)),
                ("pc", format!("{:#x}", e.pc)),
            ],
            track: format!("watch {}", self.range),
            inside_call: false,
            always_on_thread: false,
            crash: false,
        })
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_print_and_overlap() {
        let r = Range {
            addr: 0xffff888000001000,
            len: 8,
        };
        assert_eq!(r.to_string(), "0xffff888000001000:8");
        assert!(r.touches(0xffff888000001007, 1));
        assert!(r.touches(0xffff888000000ffc, 8));
        assert!(!r.touches(0xffff888000001008, 4));
        assert!(!r.touches(0xffff888000000ff8, 8));
    }

    #[test]
    fn events_round_trip_through_their_line() {
        let e = Event {
            kind: Kind::Write,
            ts: 42,
            cpu: 0,
            pid: 7,
            tid: 8,
            comm: "stimulus".into(),
            addr: 0xffff888000001000,
            size: 4,
            value: 0xabcdef0,
            pc: 0xffffffff81000000,
            stack: vec!["do_syscall_64".into(), "lkdtm_WRITE_AFTER_FREE".into()],
        };
        assert_eq!(Event::parse(&e.to_line()), Some(e));
    }

    #[test]
    fn allocators_and_frees_are_known_by_name() {
        for a in [
            "__kmalloc",
            "kmalloc_trace",
            "__kmalloc_cache_noprof",
            "kmem_cache_alloc_lru",
            "__vmalloc_node_range",
            "kvmalloc_node",
            "krealloc",
        ] {
            assert!(is_allocator(a), "{a}");
        }
        assert!(!is_allocator("kfree"));
        for f in [
            "kfree",
            "kvfree",
            "vfree",
            "kmem_cache_free",
            "kfree_sensitive",
        ] {
            assert!(is_free(f), "{f}");
        }
        assert!(!is_free("kmem_cache_free_bulk"));
    }
}
