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
use crate::options::TraceOptions;
use crate::record::{Args, ThreadIdent};
use crate::writer::subscriber::{At, Call, FlowStep, Happened, Mark, Subscriber};

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
    /// The sanitizer reported a bad load there (`kasan_report`'s arguments: KASAN's checked
    /// functions report before the access, and may not make it).
    BadRead,
    /// The sanitizer reported a bad store there.
    BadWrite,
}

impl Kind {
    /// Its name in the watch file and the trace.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Alloc => "alloc",
            Kind::Free => "free",
            Kind::BadRead => "bad-read",
            Kind::BadWrite => "bad-write",
        }
    }

    /// Whether it is a load or a store the program made (not an allocation, a free, or a
    /// report).
    pub fn is_access(self) -> bool {
        matches!(self, Kind::Read | Kind::Write)
    }
}

/// Whose an access is, when it is not the program's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    /// The sanitizer's: its shadow checks, its metadata, its report (whatever runs under
    /// `kasan_*`, `__asan_*`, `kmsan_*`, or a reporting function).
    Sanitizer,
    /// The allocator's bookkeeping (SLUB's freelist pointer inside free objects, zeroing),
    /// under an allocation or a free.
    Allocator,
}

impl By {
    /// Its name in the watch file.
    pub fn name(self) -> &'static str {
        match self {
            By::Sanitizer => "sanitizer",
            By::Allocator => "allocator",
        }
    }
}

impl FromStr for By {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "sanitizer" => Ok(By::Sanitizer),
            "allocator" => Ok(By::Allocator),
            _ => Err(()),
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
            "bad-read" => Kind::BadRead,
            "bad-write" => Kind::BadWrite,
            _ => return Err(()),
        })
    }
}

/// One line of the watch file: tab-separated `kind ts cpu pid tid comm addr size value pc
/// stack by site`, the stack's functions outermost first, `;`-separated, `by` empty for the
/// program's own, `site` where in the program the thread's syscall was made (0: not known). An allocation's `addr` and `value` are the object's start, its `size` the
/// size asked for (0: not known); a free's are the pointer freed; their `cpu` is the one their
/// thread was last switched to (-1: not known) and `pc` the function's entry. A bad access's are the report's address, size and instruction.
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
    /// Whose the access is, if not the program's.
    pub by: Option<By>,
    /// Where in the program the thread's syscall was made (0: not known).
    pub site: u64,
}

impl Event {
    /// The event's line (without its newline).
    pub fn to_line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{:#x}\t{}\t{:#x}\t{:#x}\t{}\t{}\t{:#x}",
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
            self.stack.join(";"),
            self.by.map_or("", By::name),
            self.site,
        )
    }

    /// Parses a line written by [`Event::to_line`].
    pub fn parse(line: &str) -> Option<Event> {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 13 {
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
            by: match f[11] {
                "" => None,
                by => Some(by.parse().ok()?),
            },
            site: hex(f[12])?,
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
    /// The sanitizer reports a bad access (`kasan_report(addr, size, is_write, ip)`): the
    /// argument words of each.
    Report {
        addr: u8,
        size: u8,
        write: u8,
        ip: u8,
    },
}

/// Whose code a function is, when not the program's: the sanitizer's (KASAN, KMSAN, KFENCE
/// and the reporting functions, [`osi_profile::REPORTING_FUNCTIONS`]) or the slab
/// allocator's internals.
fn owner(name: &str) -> Option<By> {
    let base = name.split('.').next().unwrap_or(name);
    let sanitizer = ["kasan", "kmsan", "kfence", "__asan_", "__msan_"];
    if sanitizer.iter().any(|s| base.contains(s))
        || osi_profile::REPORTING_FUNCTIONS.contains(&base)
    {
        return Some(By::Sanitizer);
    }
    let slab = [
        "___slab_",
        "__slab_",
        "slab_",
        "freelist_",
        "get_freepointer",
        "set_freepointer",
        "__kmem_cache_",
        "kmem_cache_alloc",
        "kmem_cache_free",
        "memcg_slab_",
    ];
    slab.iter()
        .any(|s| base.starts_with(s))
        .then_some(By::Allocator)
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

/// `kasan_report`'s role: its argument words `addr`, `size`, `is_write`, `ip` (the kernel's
/// signature since 5.x); none if they are not all there.
fn report_role(f: &osi_profile::FunctionRef<'_>) -> Role {
    let mut word = 0usize;
    let mut at = HashMap::new();
    for p in f.params() {
        at.insert(p.name().to_owned(), word as u8);
        word += words_for(p.location());
    }
    match (
        at.get("addr"),
        at.get("size"),
        at.get("is_write"),
        at.get("ip"),
    ) {
        (Some(&addr), Some(&size), Some(&write), Some(&ip)) => Role::Report {
            addr,
            size,
            write,
            ip,
        },
        _ => Role::None,
    }
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
            } else if f.name().split('.').next() == Some("kasan_report") {
                report_role(&f)
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
    /// allocation is matched by start, whatever size the allocator was asked for, and
    /// whether the range is inside it or past its end.
    object: Option<Range>,
    roles: Vec<Role>,
    /// Per function: whose code it is, if not the program's.
    owners: Vec<Option<By>>,
    /// Sizes asked for by allocator calls still open, by (track, stack slot).
    asked: HashMap<(usize, u64), u64>,
    /// Objects allocated over the range: start and size (0: not known).
    objects: Vec<(u64, u64)>,
    /// The trace marks the sanitizer's and the allocator's own accesses too.
    mark_own: bool,
    /// The flow that links the object's allocation to its frees and the bad access, once
    /// the allocation is seen (its key for the writer), and how many flows were started.
    flow: Option<u64>,
    flows: u64,
    out: Box<dyn Write + Send>,
    /// Events written.
    pub events: u64,
}

impl Watcher {
    /// The watch `options` ask for (their `watch`, `object` and `watch_own`), if any, writing
    /// its events to `out`.
    pub fn from_options(
        options: &TraceOptions,
        profile: &Profile,
        out: Box<dyn Write + Send>,
    ) -> Option<Watcher> {
        let range = options.watch?;
        Some(Watcher::new(
            range,
            options.object,
            options.watch_own,
            profile,
            out,
        ))
    }

    /// Watches `range` (inside `object`, if known), writing the watch file to `out`; the
    /// sanitizer's and the allocator's own accesses are marked in the trace if `mark_own`
    /// (the watch file lists them all, saying whose they are).
    pub fn new(
        range: Range,
        object: Option<Range>,
        mark_own: bool,
        profile: &Profile,
        out: Box<dyn Write + Send>,
    ) -> Watcher {
        Watcher {
            range,
            object,
            roles: roles(profile),
            owners: profile.functions().map(|f| owner(f.name())).collect(),
            asked: HashMap::new(),
            objects: Vec::new(),
            mark_own,
            flow: None,
            flows: 0,
            out,
            events: 0,
        }
    }

    /// Whether `func` allocates, frees or reports (the writer tells the watcher about its
    /// calls).
    #[inline(always)]
    pub fn cares(&self, func: u32) -> bool {
        !matches!(self.roles.get(func as usize), None | Some(Role::None))
    }

    /// Whether `size` bytes at `addr` are the watched memory or the object holding it.
    fn concerns(&self, addr: u64, size: u64) -> bool {
        self.range.touches(addr, size) || self.object.is_some_and(|o| o.touches(addr, size))
    }

    /// `func` is called on track `track` with its return address at `slot`.
    pub fn on_enter(&mut self, at: &At<'_>, call: Call, args: &Args) -> Option<Event> {
        let Call { track, slot, func } = call;
        let stack = at.stack;
        let word =
            |i: u8| (i < args.len && args.missing & (1 << i) == 0).then(|| args.words[i as usize]);
        match *self.roles.get(func as usize)? {
            Role::Alloc { size } => {
                if let Some(size) = size.and_then(word) {
                    self.asked.insert((track, slot), size);
                }
                None
            }
            Role::Free { ptr } => {
                let ptr = word(ptr)?;
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
                self.emit(at, Kind::Free, Some(func), ptr, size, ptr, entry, None)
            }
            Role::Report {
                addr,
                size,
                write,
                ip,
            } => {
                let (addr, size) = (word(addr)?, word(size)?);
                if !self.concerns(addr, size.max(1)) {
                    return None;
                }
                let kind = match word(write) {
                    Some(w) if w & 0xff != 0 => Kind::BadWrite,
                    _ => Kind::BadRead,
                };
                let ip = word(ip).unwrap_or(0);
                self.emit(at, kind, None, addr, size, 0, ip, None)
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
        // The report's object, if this is it: the range may be past its end.
        let named = self.object.filter(|o| o.addr == value).map(|o| o.len);
        if named.is_none() {
            // Size not known: only an object that starts at the range.
            let extent = asked.unwrap_or(1).max(1);
            if !self.range.touches(value, extent) {
                return None;
            }
        }
        let size = asked.or(named).unwrap_or(0);
        self.objects.push((value, size));
        let entry = at.profile.function(func).map_or(0, |f| f.entry());
        self.emit(at, Kind::Alloc, Some(func), value, size, value, entry, None)
    }

    /// Whether a function of the calls open in `stack` has a role `is` accepts.
    fn called_by(&self, stack: &[u32], is: impl Fn(Role) -> bool) -> bool {
        stack
            .iter()
            .any(|&f| self.roles.get(f as usize).is_some_and(|&r| is(r)))
    }

    /// Whose an access by the instruction at `pc` under the calls `stack` is: the
    /// sanitizer's if any of them (or the function holding `pc`) is the sanitizer's, else the
    /// allocator's if any is an allocation, a free, or the slab allocator's.
    fn whose(&self, profile: &Profile, stack: &[u32], pc: u64) -> Option<By> {
        let here = profile.function_containing(pc);
        let funcs = || stack.iter().copied().chain(here);
        let owner = |f: u32| self.owners.get(f as usize).copied().flatten();
        if funcs().any(|f| owner(f) == Some(By::Sanitizer)) {
            return Some(By::Sanitizer);
        }
        let allocates = |f: u32| {
            let role = self.roles.get(f as usize);
            matches!(role, Some(Role::Alloc { .. } | Role::Free { .. }))
        };
        funcs()
            .any(|f| allocates(f) || owner(f) == Some(By::Allocator))
            .then_some(By::Allocator)
    }

    /// A load or store of `size` bytes at `addr` by the instruction at `pc`; the caller has
    /// checked that it touches the range.
    pub fn on_access(&mut self, at: &At<'_>, access: &crate::record::Access) -> Option<Event> {
        let kind = if access.write {
            Kind::Write
        } else {
            Kind::Read
        };
        let by = self.whose(at.profile, at.stack, access.pc);
        self.emit(
            at,
            kind,
            None,
            access.addr,
            u64::from(access.size),
            access.value,
            access.pc,
            by,
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
        by: Option<By>,
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
            by,
            site: at.syscall_site.unwrap_or(0),
        };
        if let Err(e) = writeln!(self.out, "{}", event.to_line()) {
            tracing::error!("writing the watch file: {e}");
        }
        self.events += 1;
        Some(event)
    }

    /// Where the event goes in the flow from the object's allocation through its frees to
    /// the bad access.
    fn flow_step(&mut self, e: &Event) -> Option<FlowStep> {
        let of_object = self.object.is_none_or(|o| o.touches(e.addr, e.size.max(1)));
        match e.kind {
            Kind::Alloc if of_object => {
                // A new life of the object: a new flow.
                let key = self.flows;
                self.flows += 1;
                self.flow = Some(key);
                Some(FlowStep::Start(key))
            }
            Kind::Free => self.flow.map(FlowStep::Step),
            Kind::BadRead | Kind::BadWrite => self.flow.take().map(FlowStep::End),
            _ => None,
        }
    }
}

impl Subscriber for Watcher {
    fn cares(&self, func: u32) -> bool {
        Watcher::cares(self, func)
    }

    /// Each event goes to the watch file; the trace marks it on its thread and on a
    /// `watch` track (the sanitizer's and the allocator's own accesses only if asked),
    /// the allocation, the frees and the bad access linked by a flow.
    fn on(&mut self, happened: &Happened<'_>, at: &At<'_>) -> Option<Mark> {
        let e = match *happened {
            Happened::Call(call, args) => self.on_enter(at, call, args),
            Happened::Return(call, value) => self.on_return(at, call, value),
            Happened::Access(access) => self.on_access(at, access),
        }?;
        if e.by.is_some() && !self.mark_own {
            return None;
        }
        let mut args = vec![
            ("addr", format!("{:#x}", e.addr)),
            ("value", format!("{:#x}", e.value)),
            ("pc", format!("{:#x}", e.pc)),
        ];
        if let Some(by) = e.by {
            args.push(("by", by.name().to_owned()));
        }
        Some(Mark {
            name: format!("{} {}", e.kind.name(), e.size),
            args,
            track: format!("watch {}", self.range),
            inside_call: false,
            always_on_thread: false,
            crash: false,
            keep_part: matches!(
                e.kind,
                Kind::Alloc | Kind::Free | Kind::BadRead | Kind::BadWrite
            ) && e.by.is_none(),
            flow: self.flow_step(&e),
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
            by: Some(By::Sanitizer),
            site: 0x401234,
        };
        assert_eq!(Event::parse(&e.to_line()), Some(e.clone()));
        let e = Event { by: None, ..e };
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

    use crate::record::{Batch, Record, TrackKey};
    use crate::writer::subscriber::Who;
    use osi_profile::{Class, Function, Location, Param, ProfileData, TypeDesc};

    /// A kernel with an allocator, a free, KASAN's report and its metadata, and the program.
    fn kernel() -> Profile {
        let ty = |c: &str, class: Class| TypeDesc {
            c_type: c.into(),
            class,
        };
        let param = |name: &str, c: &str, reg: u16| Param {
            name: name.into(),
            ty: ty(c, Class::Unsigned(8)),
            loc: Location::Reg(reg),
        };
        let f = |name: &str, entry: u64, params: Vec<Param>, ret: &str| Function {
            name: name.into(),
            entry,
            size: 0x100,
            file: None,
            line: 0,
            ret: ty(ret, Class::Pointer),
            params,
            flags: 0,
        };
        let mut d = ProfileData {
            functions: vec![
                f("do_syscall_64", 0xffff_ffff_8100_0000, vec![], "void"),
                f("legacy_parse_param", 0xffff_ffff_8100_1000, vec![], "int"),
                f(
                    "kmalloc_trace",
                    0xffff_ffff_8100_2000,
                    vec![
                        param("s", "struct kmem_cache *", 5),
                        param("size", "size_t", 4),
                    ],
                    "void *",
                ),
                f(
                    "kfree",
                    0xffff_ffff_8100_3000,
                    vec![param("x", "const void *", 5)],
                    "void",
                ),
                f(
                    "kasan_report",
                    0xffff_ffff_8100_4000,
                    vec![
                        param("addr", "unsigned long", 5),
                        param("size", "size_t", 4),
                        param("is_write", "bool", 1),
                        param("ip", "unsigned long", 2),
                    ],
                    "bool",
                ),
                f("kasan_set_track", 0xffff_ffff_8100_5000, vec![], "void"),
                f("memcpy", 0xffff_ffff_8100_6000, vec![], "void *"),
            ],
            ..Default::default()
        };
        d.finish();
        Profile::from_bytes(&d.to_bytes()).unwrap()
    }

    /// What a watcher makes of `happened`, each at its time under its stack (function ids).
    enum Step {
        Call(u32, &'static [u64], &'static [u32]),
        Return(u32, u64, &'static [u32]),
        Access(u64, u64, &'static [u32]),
    }

    fn watch(range: Range, object: Option<Range>, steps: &[Step]) -> Vec<(Event, Option<Mark>)> {
        let profile = kernel();
        let id = |n: &str| profile.function_by_name(n).unwrap();
        assert_eq!(id("kmalloc_trace"), 2);
        let mut w = Watcher::new(range, object, false, &profile, Box::new(std::io::sink()));
        let ident = ThreadIdent {
            tid: 40,
            pid: 38,
            comm: *b"stimulus\0\0\0\0\0\0\0\0",
            kernel: false,
        };
        let mut out = Vec::new();
        for (ts, step) in steps.iter().enumerate() {
            let at = |stack| At {
                profile: &profile,
                ts: ts as u64,
                who: Who {
                    ident: Some(&ident),
                    cpu: Some(0),
                },
                stack,
                written: true,
                syscall_site: None,
            };
            let call = |func| Call {
                track: 0,
                slot: 0x1000,
                func,
            };
            let (event, mark) = match *step {
                Step::Call(func, words, stack) => {
                    let mut args = Args {
                        len: words.len() as u8,
                        ..Args::default()
                    };
                    args.words[..words.len()].copy_from_slice(words);
                    let at = at(stack);
                    let e = w.on_enter(&at, call(func), &args);
                    (e, None)
                }
                Step::Return(func, value, stack) => {
                    let at = at(stack);
                    (w.on_return(&at, call(func), value), None)
                }
                Step::Access(addr, pc, stack) => {
                    let at = at(stack);
                    let access = crate::record::Access {
                        cpu: 0,
                        pc,
                        addr,
                        size: 1,
                        write: true,
                        value: 0,
                    };
                    let mark = w.on(&Happened::Access(&access), &at);
                    let e = w.on_access(&at, &access);
                    (e, mark)
                }
            };
            if let Some(e) = event {
                out.push((e, mark));
            }
        }
        out
    }

    const OBJECT: u64 = 0xffff_8880_0087_6000;

    #[test]
    fn the_reported_object_s_allocation_is_found_though_the_access_is_past_its_end() {
        let past_end = Range {
            addr: OBJECT + 4096,
            len: 1,
        };
        let object = Range {
            addr: OBJECT,
            len: 4096,
        };
        let got = watch(
            past_end,
            Some(object),
            &[
                Step::Call(2, &[0, 4096], &[0, 1]),
                Step::Return(2, OBJECT, &[0, 1]),
                // KASAN's checked memcpy reports the write, then does not make it.
                Step::Call(4, &[OBJECT + 4096, 1, 1, 0xffff_ffff_8100_1080], &[0, 1, 6]),
                Step::Call(3, &[OBJECT], &[0]),
            ],
        );
        let kinds: Vec<Kind> = got.iter().map(|(e, _)| e.kind).collect();
        assert_eq!(kinds, [Kind::Alloc, Kind::BadWrite, Kind::Free]);
        let (alloc, bad) = (&got[0].0, &got[1].0);
        assert_eq!((alloc.addr, alloc.size), (OBJECT, 4096));
        assert_eq!(
            alloc.stack.last().map(String::as_str),
            Some("kmalloc_trace")
        );
        assert_eq!(
            (bad.addr, bad.size, bad.pc),
            (OBJECT + 4096, 1, 0xffff_ffff_8100_1080)
        );
        assert_eq!(bad.stack, ["do_syscall_64", "legacy_parse_param", "memcpy"]);
    }

    #[test]
    fn the_sanitizer_s_and_the_allocator_s_accesses_are_theirs_and_not_marked() {
        let range = Range {
            addr: OBJECT,
            len: 8,
        };
        let got = watch(
            range,
            None,
            &[
                // KASAN's metadata, written under the allocator.
                Step::Access(OBJECT, 0xffff_ffff_8100_5010, &[0, 1, 2]),
                // The allocator itself, and KASAN's report reading the memory.
                Step::Access(OBJECT, 0xffff_ffff_8100_2010, &[0, 1]),
                Step::Access(OBJECT, 0xffff_ffff_8100_6010, &[0, 1, 4, 6]),
                // The program.
                Step::Access(OBJECT, 0xffff_ffff_8100_1010, &[0, 1]),
            ],
        );
        let by: Vec<Option<By>> = got.iter().map(|(e, _)| e.by).collect();
        assert_eq!(
            by,
            [
                Some(By::Sanitizer),
                Some(By::Allocator),
                Some(By::Sanitizer),
                None
            ]
        );
        let marked: Vec<bool> = got.iter().map(|(_, m)| m.is_some()).collect();
        assert_eq!(marked, [false, false, false, true]);
    }

    #[test]
    fn flows_link_an_allocation_its_frees_and_the_bad_access() {
        let profile = kernel();
        let mut w = Watcher::new(
            Range {
                addr: OBJECT,
                len: 8,
            },
            None,
            false,
            &profile,
            Box::new(std::io::sink()),
        );
        let e = |kind, addr| Event {
            kind,
            ts: 0,
            cpu: 0,
            pid: 1,
            tid: 1,
            comm: String::new(),
            addr,
            size: 8,
            value: 0,
            pc: 0,
            stack: Vec::new(),
            by: None,
            site: 0,
        };
        let steps: Vec<Option<FlowStep>> = [
            e(Kind::Free, OBJECT),
            e(Kind::Alloc, OBJECT),
            e(Kind::Write, OBJECT),
            e(Kind::Free, OBJECT),
            e(Kind::BadWrite, OBJECT),
            e(Kind::BadWrite, OBJECT),
            e(Kind::Alloc, OBJECT),
        ]
        .iter()
        .map(|e| w.flow_step(e))
        .collect();
        use FlowStep::*;
        assert_eq!(
            steps,
            [
                None,
                Some(Start(0)),
                None,
                Some(Step(0)),
                Some(End(0)),
                None,
                Some(Start(1))
            ]
        );
    }

    /// A shared buffer: the watch file a writer test reads back.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_allocation_says_the_cpu_its_thread_was_switched_to() {
        let profile = std::sync::Arc::new(kernel());
        let kmalloc = profile.function_by_name("kmalloc_trace").unwrap();
        let options = crate::options::TraceOptions {
            watch: Some(Range {
                addr: OBJECT,
                len: 8,
            }),
            ..Default::default()
        };
        let file = Shared::default();
        let mut w = crate::writer::TraceWriter::with_options(
            std::io::sink(),
            profile,
            &options,
            None,
            Some(Box::new(file.clone())),
        );
        let (idle, t) = (
            TrackKey::Thread(0xffff_c900_0000_0000),
            TrackKey::Thread(0xffff_c900_0001_0000),
        );
        let sp = 0xffff_c900_0001_3f00;
        let mut batch = Batch::with_capacity(8);
        batch.words = vec![0xffff_8880_0010_0000, 64];
        batch.records = vec![
            Record::Thread {
                ts: 1,
                track: t,
                ident: crate::testing::ident(38, 40, "stimulus"),
            },
            Record::Switch {
                ts: 2,
                cpu: 1,
                from: idle,
                to: t,
            },
            Record::Enter {
                ts: 3,
                track: t,
                sp,
                func: kmalloc,
                args: crate::record::ArgsRef {
                    len: 2,
                    ..Default::default()
                },
            },
            Record::Return {
                ts: 4,
                track: t,
                sp,
                pc: 0xffff_ffff_8100_2080,
                value: [OBJECT, 0],
            },
        ];
        w.write_batch(&batch).unwrap();
        w.finish().unwrap();
        let text = String::from_utf8(file.0.lock().unwrap().clone()).unwrap();
        let events: Vec<Event> = text.lines().filter_map(Event::parse).collect();
        assert_eq!(events.len(), 1, "{text}");
        assert_eq!(
            (events[0].kind, events[0].cpu, events[0].tid),
            (Kind::Alloc, 1, 40)
        );
    }
}
