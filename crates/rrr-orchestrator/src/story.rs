//! The story of a crash about memory: from the recording's report and a watch of the memory it
//! names ([`crate::watch`]), the bad access, the object, who allocated and freed it, the writes
//! after its last free, the reproducer's call behind each (its syscall and the stimulus's
//! source line), and how the threads interleaved. Text for people, JSON for scripts (its
//! schema: `docs/story.schema.json`).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use osi_profile::Profile;
use rrr_trace::watch::{Event, Kind};
use serde::{Deserialize, Serialize};

use crate::limits::Limits;
use crate::recording::{Outcome, Recording};
use crate::trace::Traced;
use crate::watch::{self, Aside, Findings, Target};

/// The file in a recording's directory that keeps its story once told.
const STORY_FILE: &str = "story.json";

/// The story of `rec`'s crash (told once, then kept in the recording's directory): a replay
/// watching the memory its report names.
pub fn explain(rec: &Recording, timeout: Duration) -> crate::Result<Story> {
    if !matches!(rec.outcome, Outcome::Crashed { .. }) {
        crate::fail!(
            BadInput,
            "{} has no crash report ({}): nothing to explain",
            rec.dir.display(),
            rec.outcome
        );
    }
    let kept = rec.dir.join(STORY_FILE);
    if let Some(story) = Story::load(&kept) {
        return Ok(story);
    }
    let whole = Limits {
        max_size: 0,
        ..Limits::default()
    };
    let log = std::fs::read_to_string(rec.serial_log()).unwrap_or_default();
    let story = if let Ok(w) = watch::resolve(rec, &Target::FromReport) {
        let found = watch::watch(rec, w, None, &whole, false, timeout)?;
        Story::tell(rec, &found.findings)
    } else if let Some(warning) = refcount_warning(&log) {
        explain_refcount(rec, &warning, timeout)?
    } else {
        Story::untold(rec, &log)
    };
    story.save(&kept)?;
    Ok(story)
}

/// The kernel's `refcount_t:` warning line in `log`, if it has one.
fn refcount_warning(log: &str) -> Option<String> {
    log.lines().find_map(|l| {
        let at = l.find("refcount_t: ")?;
        Some(l[at..].trim().to_owned())
    })
}

/// The story of a `refcount_t` warning: a first replay, hooking only
/// `refcount_warn_saturate`, notes the refcount it warned about (its first argument); a
/// second watches it.
fn explain_refcount(rec: &Recording, warning: &str, timeout: Duration) -> crate::Result<Story> {
    const WARNS: &str = "refcount_warn_saturate";
    let only = Limits {
        max_size: 0,
        only: vec![WARNS.to_owned()],
        ..Limits::default()
    };
    let options = rrr_trace::TraceOptions {
        note_calls: vec![WARNS.to_owned()],
        ..Default::default()
    };
    let noted =
        crate::trace::trace_with(rec, Path::new("/dev/null"), &only, options, timeout)?.calls;
    let Some(call) = noted.iter().find(|c| !c.args.is_empty()) else {
        let mut story = Story::untold(rec, "");
        story.notes = vec![format!(
            "the kernel warned `{warning}`, but the replay has no call of {WARNS} to take the              refcount from"
        )];
        return Ok(story);
    };
    let addr = call.args[0];
    let w = watch::Watch {
        range: rrr_trace::watch::Range { addr, len: 4 },
        object: None,
        source: format!("the refcount {WARNS} warned about, its first argument"),
    };
    let whole = Limits {
        max_size: 0,
        ..Limits::default()
    };
    let found = watch::watch(rec, w, None, &whole, false, timeout)?;
    let mut story = Story::tell(rec, &found.findings);
    story.refcount = Some(refcount_story(
        &found.findings,
        Source::of(rec).as_ref(),
        warning,
        call.ts,
    ));
    // A refcount's story is its changes; what a memory report's story has is not asked.
    story.bad_access = story
        .refcount
        .as_ref()
        .and_then(|r| r.below_one.map(|i| r.changes[i].clone()));
    story.writes_after_free.clear();
    story.notes.retain(|n| !n.contains("never touched"));
    if let Some(r) = &story.refcount {
        if story.allocation.is_none() {
            // Not an object's refcount (one on the stack, say): its life starts at its first
            // store.
            story
                .notes
                .retain(|n| !n.contains("allocation is not in the replay"));
        }
        let mut tids: Vec<i32> = r.changes.iter().map(|c| c.thread.tid).collect();
        tids.dedup();
        let changed: Vec<String> = tids.iter().map(|t| format!("tid {t}")).collect();
        story.threads.summary = format!("changed by {}", changed.join(", "));
        // syzbot's title for it: the function that used the refcount.
        let user = r.below_one.and_then(|i| {
            let stack = &r.changes[i].stack;
            stack.iter().find(|f| !f.contains("refcount")).cloned()
        });
        if let Some(f) = user {
            story.title = format!("refcount bug in {f}");
        }
    }
    Ok(story)
}

/// A refcount's changes (see [`Refcount`]), up to the warning at `warned_at` and the
/// saturation the warning writes.
fn refcount_story(
    found: &Findings,
    source: Option<&Source>,
    warning: &str,
    warned_at: u64,
) -> Refcount {
    let is_op = |e: &Event| {
        let refcount = |f: &String| f.starts_with("refcount_") || f.starts_with("__refcount_");
        e.stack.iter().any(refcount)
            || found
                .inlined
                .get(&e.pc)
                .is_some_and(|chain| chain.iter().any(|f| f.contains("refcount")))
    };
    let writes: Vec<&Event> = found
        .events
        .iter()
        .filter(|e| e.kind == Kind::Write && found.aside(e).is_none())
        .collect();
    let first_op = writes.iter().find(|e| is_op(e)).map(|e| e.ts);
    let start = match (found.allocated_before(warned_at), first_op) {
        (Some(alloc), Some(op)) if alloc <= op => alloc,
        (_, Some(op)) => writes
            .iter()
            .filter(|e| e.ts < op && e.size == 4 && e.addr == found.watch.range.addr)
            .map(|e| e.ts)
            .next_back()
            .unwrap_or(op),
        (Some(alloc), None) => alloc,
        (None, None) => u64::MAX,
    };
    let warns = |e: &Event| {
        e.stack
            .iter()
            .any(|f| f.starts_with("refcount_warn_saturate"))
    };
    let changes: Vec<&Event> = writes
        .into_iter()
        .filter(|e| e.ts >= start && (e.ts == start || is_op(e)))
        .filter(|e| e.ts <= warned_at || warns(e))
        .collect();
    let below_one = changes.iter().position(|e| (e.value as u32 as i32) < 1);
    Refcount {
        addr: format!("{:#x}", found.watch.range.addr),
        warning: warning.to_owned(),
        changes: changes
            .into_iter()
            .map(|e| step_of(found, source, e))
            .collect(),
        below_one,
    }
}

/// One event as a step of the story.
fn step_of(found: &Findings, source: Option<&Source>, e: &Event) -> Step {
    Step {
        what: e.kind.name().to_owned(),
        ts: e.ts,
        thread: Thread {
            pid: e.pid,
            tid: e.tid,
            comm: e.comm.clone(),
        },
        cpu: u32::try_from(e.cpu).ok(),
        addr: format!("{:#x}", e.addr),
        size: e.size,
        value: e.kind.is_access().then(|| format!("{:#x}", e.value)),
        pc: format!("{:#x}", e.pc),
        place: found.places.get(&e.pc).cloned(),
        stack: kernel_stack(&e.stack),
        call: source.and_then(|s| s.call(&e.stack, e.site)),
    }
}

/// Traces `rec` into `out` within `limits`; when it ended at a report about memory (a KASAN
/// report names the access), the same replay watches that memory and the story is told too
/// (and kept, as [`explain`] keeps it). Another crash's story is told after the trace (a
/// `refcount_t` warning's takes two more replays: the refcount is known only once warned
/// about).
pub fn trace_and_explain(
    rec: &Recording,
    out: &Path,
    limits: &Limits,
    timeout: Duration,
) -> crate::Result<(Traced, Option<Story>)> {
    let about_memory = matches!(rec.outcome, Outcome::Crashed { .. })
        .then(|| watch::resolve(rec, &Target::FromReport).ok())
        .flatten();
    let Some(w) = about_memory else {
        let traced = crate::trace::trace(rec, out, limits, timeout)?;
        let story = match rec.outcome {
            Outcome::Crashed { .. } => Some(explain(rec, timeout)?),
            _ => None,
        };
        return Ok((traced, story));
    };
    let found = watch::watch(rec, w, Some(out), limits, false, timeout)?;
    let story = Story::tell(rec, &found.findings);
    if let Err(e) = story.save(&rec.dir.join(STORY_FILE)) {
        tracing::warn!("keeping the story in {}: {e}", rec.dir.display());
    }
    Ok((found.traced, Some(story)))
}

/// The version of the story's JSON (its `version`).
pub const STORY_VERSION: u32 = 1;

/// The story of a crash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Story {
    /// [`STORY_VERSION`].
    pub version: u32,
    /// The report's title, as syzbot gives it (`KASAN: slab-out-of-bounds Write in
    /// legacy_parse_param`).
    pub title: String,
    /// The memory watched and where it came from.
    pub watched: String,
    /// The bad access: the one the sanitizer reported, or the last access the program made.
    pub bad_access: Option<Step>,
    /// The object holding the memory.
    pub object: Option<Object>,
    /// Its allocation (the one its life in the story starts with).
    pub allocation: Option<Step>,
    /// Its frees after the allocation, in order.
    pub frees: Vec<Step>,
    /// The program's writes to it between its last free and the bad access.
    pub writes_after_free: Vec<Step>,
    /// Which threads did what.
    pub threads: Threads,
    /// For a `refcount_t` warning: the refcount's changes.
    pub refcount: Option<Refcount>,
    /// Events left out: the sanitizer's and the allocator's own accesses, and those before the
    /// object's allocation (the memory's earlier lives).
    pub left_out: LeftOut,
    /// What the story could not tell, in words.
    pub notes: Vec<String>,
}

/// One step of the story: what happened, when, where, by whom, from which call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// `alloc`, `free`, `read`, `write`, `bad-read`, `bad-write`.
    pub what: String,
    /// Trace time (guest instructions; the trace's timeline).
    pub ts: u64,
    /// The thread.
    pub thread: Thread,
    /// The CPU, if known.
    pub cpu: Option<u32>,
    /// The address (an allocation's or a free's: the object's start).
    pub addr: String,
    /// Bytes: accessed, or asked of the allocator (0: not known).
    pub size: u64,
    /// The value loaded or stored (accesses).
    pub value: Option<String>,
    /// The instruction, and its `function (file:line)` if the kernel's DWARF knows it.
    pub pc: String,
    /// See [`Step::pc`].
    pub place: Option<String>,
    /// The kernel's calls open, innermost first (as a kernel stack trace lists them).
    pub stack: Vec<String>,
    /// The reproducer's call behind it.
    pub call: Option<ReproCall>,
}

/// The story of a `refcount_t` the kernel warned about: every change of its value in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refcount {
    /// Its address (`refcount_warn_saturate`'s first argument).
    pub addr: String,
    /// The kernel's warning (`refcount_t: decrement hit 0; leaking memory.`).
    pub warning: String,
    /// Its changes, from its life's start (its object's allocation, or the first plain store
    /// before its first refcount operation): each a write, its value the new count.
    pub changes: Vec<Step>,
    /// The change that took it below one, by index in `changes`.
    pub below_one: Option<usize>,
}

/// A thread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thread {
    /// Process id (0: not known).
    pub pid: i32,
    /// Thread id (0: not known, or an interrupt).
    pub tid: i32,
    /// Its name.
    pub comm: String,
}

/// The reproducer's call that made a step happen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReproCall {
    /// The syscall, if the stack tells it.
    pub syscall: Option<String>,
    /// The stimulus's innermost function with source.
    pub function: String,
    /// Its source file (the stimulus's copy, next to its binary).
    pub file: Option<String>,
    /// The line of the call.
    pub line: Option<u32>,
    /// That line's text.
    pub source: Option<String>,
    /// The line is the call's own (from the call's return address in the program, read at
    /// the syscall's entry), not the first line of the function that names the syscall.
    pub exact: bool,
}

/// The object the memory belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// Its start.
    pub addr: String,
    /// Its size (the report's, else the size asked for).
    pub size: u64,
    /// The slab cache, if the report names it.
    pub cache: Option<String>,
    /// The size the allocation asked for, if known.
    pub asked: Option<u64>,
    /// The bad access's offset from the object's start (past its end for an out-of-bounds
    /// access when it is at least the size).
    pub offset: Option<i64>,
}

/// Which threads did what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Threads {
    /// The thread ids that allocated, freed and made the bad access.
    pub allocated_by: Option<i32>,
    /// See [`Threads::allocated_by`].
    pub freed_by: Vec<i32>,
    /// See [`Threads::allocated_by`].
    pub accessed_by: Option<i32>,
    /// A free and the bad access were in different threads: the race to look at.
    pub free_and_access_race: bool,
    /// In words.
    pub summary: String,
}

/// How many events the story leaves out, by why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftOut {
    /// The sanitizer's own accesses.
    pub sanitizer: usize,
    /// The allocator's own accesses.
    pub allocator: usize,
    /// Accesses and frees before the object's allocation.
    pub earlier_life: usize,
}

/// The stimulus's functions with source, to name the reproducer's calls.
struct Source {
    profile: Profile,
    /// The stimulus's DWARF, for a call site's line.
    dwarf: Option<addr2line::Loader>,
    /// The stimulus's source text, by line (1-based: index 0 is line 1).
    lines: Vec<String>,
    file: String,
}

impl Source {
    /// The recording's stimulus: its profile and its source (next to its binary).
    fn of(rec: &Recording) -> Option<Source> {
        let profile = Profile::open(&rec.profile().ok()?).ok()?;
        let file = rec.stimulus.with_file_name("stimulus.c");
        let text = std::fs::read_to_string(&file).ok()?;
        Some(Source {
            profile,
            dwarf: addr2line::Loader::new(&rec.stimulus).ok(),
            lines: text.lines().map(str::to_owned).collect(),
            file: file.display().to_string(),
        })
    }

    /// The declaration line of the stimulus's function `name`, and where the next function
    /// starts (its body lies between), if it has source.
    fn span(&self, name: &str) -> Option<(u32, u32)> {
        let f = self
            .profile
            .function(self.profile.function_by_name(name)?)?;
        if !f.is_user() || !f.file().ends_with("stimulus.c") || f.line() == 0 {
            return None;
        }
        let next = self
            .profile
            .functions()
            .filter(|g| g.is_user() && g.file().ends_with("stimulus.c") && g.line() > f.line())
            .map(|g| g.line())
            .min()
            .unwrap_or(self.lines.len() as u32 + 1);
        Some((f.line(), next))
    }

    /// The reproducer's call at `site` (a return address in the stimulus), if its DWARF puts
    /// it in the stimulus's source.
    fn call_at(&self, site: u64, syscall: Option<String>) -> Option<ReproCall> {
        let dwarf = self.dwarf.as_ref()?;
        // The call instruction is before the return address.
        let at = site.checked_sub(1)?;
        let location = dwarf.find_location(at).ok()??;
        if !location.file?.ends_with("stimulus.c") {
            return None;
        }
        let line = location.line?;
        let function = dwarf.find_frames(at).ok().and_then(|mut frames| {
            let mut outer = None;
            while let Ok(Some(f)) = frames.next() {
                outer = f
                    .function
                    .and_then(|f| f.demangle().ok().map(|n| n.into_owned()));
            }
            outer
        })?;
        Some(ReproCall {
            syscall,
            function,
            file: Some(self.file.clone()),
            line: Some(line),
            source: self
                .lines
                .get(line as usize - 1)
                .map(|l| l.trim().to_owned()),
            exact: true,
        })
    }

    /// The reproducer's call behind a kernel event with `stack` (outermost first), made at
    /// `site` in the program if known.
    fn call(&self, stack: &[String], site: u64) -> Option<ReproCall> {
        if site != 0 {
            if let Some(call) = self.call_at(site, syscall(stack)) {
                return Some(call);
            }
        }
        let (function, (from, to)) = stack
            .iter()
            .rev()
            .find_map(|f| Some((f.clone(), self.span(f)?)))?;
        let syscall = syscall(stack);
        let mentions = |l: &&(usize, &String)| {
            syscall.as_deref().is_some_and(|s| {
                let text = l.1.as_str();
                text.contains(&format!("__NR_{s}"))
                    || text.contains(&format!("SYS_{s}"))
                    || text.contains(&format!("{s}("))
            })
        };
        let body = self
            .lines
            .iter()
            .enumerate()
            .take(to.saturating_sub(1) as usize)
            .skip(from.saturating_sub(1) as usize)
            .collect::<Vec<_>>();
        let line = body
            .iter()
            .find(mentions)
            .map_or(from, |(i, _)| *i as u32 + 1);
        Some(ReproCall {
            syscall,
            function,
            file: Some(self.file.clone()),
            line: Some(line),
            source: self
                .lines
                .get(line as usize - 1)
                .map(|l| l.trim().to_owned()),
            exact: false,
        })
    }
}

/// The syscall a stack (outermost first) is in: its kernel entry's name (`__x64_sys_bpf`),
/// else the libc wrapper the program called (`__libc_close`).
fn syscall(stack: &[String]) -> Option<String> {
    let entry = ["__x64_sys_", "__ia32_sys_", "__do_sys_", "__se_sys_"];
    let from_kernel = stack.iter().find_map(|f| {
        let base = f.split('.').next().unwrap_or(f);
        entry
            .iter()
            .find_map(|p| base.strip_prefix(p))
            .map(str::to_owned)
    });
    from_kernel.or_else(|| {
        // The innermost user frame before the kernel's entry, a libc wrapper.
        let entry = stack.iter().position(|f| f == "do_syscall_64")?;
        let wrapper = stack[..entry].last()?;
        let name = wrapper
            .trim_start_matches("__libc_")
            .trim_start_matches('_');
        (name != "syscall" && !name.is_empty()).then(|| name.to_owned())
    })
}

/// The report's slab cache: `... which belongs to the cache kmalloc-4k of size 4096`.
fn cache_of(log: &str) -> Option<String> {
    log.lines().find_map(|l| {
        let rest = l.split_once("belongs to the cache ")?.1;
        Some(rest.split_whitespace().next()?.to_owned())
    })
}

impl Story {
    /// The story of `rec`'s crash, from what a watch of its report's memory found.
    pub fn tell(rec: &Recording, found: &Findings) -> Story {
        let source = Source::of(rec);
        let mut notes = Vec::new();
        if source.is_none() {
            notes.push(
                "the stimulus's source or DWARF is not there: no reproducer lines".to_owned(),
            );
        }
        let log = std::fs::read_to_string(rec.serial_log()).unwrap_or_default();
        let title = match &rec.outcome {
            Outcome::Crashed { line } => crate::crash::report(&log, line).title,
            other => other.to_string(),
        };
        Story::from_events(found, &title, source.as_ref(), cache_of(&log), notes)
    }

    fn from_events(
        found: &Findings,
        title: &str,
        source: Option<&Source>,
        cache: Option<String>,
        mut notes: Vec<String>,
    ) -> Story {
        let step = |e: &Event| step_of(found, source, e);
        let program: Vec<&Event> = found
            .events
            .iter()
            .filter(|e| found.aside(e).is_none())
            .collect();
        let bad = program
            .iter()
            .find(|e| matches!(e.kind, Kind::BadRead | Kind::BadWrite))
            .or_else(|| program.iter().rev().find(|e| e.kind.is_access()))
            .copied();
        let bad_ts = bad.map_or(u64::MAX, |e| e.ts);
        let life_from = found.life_from().or_else(|| found.allocated_before(bad_ts));
        let allocation = life_from.and_then(|ts| {
            program
                .iter()
                .find(|e| e.kind == Kind::Alloc && e.ts == ts)
                .copied()
        });
        let frees: Vec<&Event> = program
            .iter()
            .filter(|e| e.kind == Kind::Free && e.ts <= bad_ts)
            .copied()
            .collect();
        let last_free = frees.last().map(|e| e.ts);
        let writes_after_free: Vec<&Event> = match last_free {
            Some(freed) => program
                .iter()
                .filter(|e| e.kind == Kind::Write && e.ts > freed && e.ts < bad_ts)
                .copied()
                .collect(),
            None => Vec::new(),
        };
        if bad.is_none() {
            notes.push(format!(
                "no access to {} in the replay: the report's address was never touched",
                found.watch.range
            ));
        }
        if allocation.is_none() {
            notes.push(
                "the object's allocation is not in the replay (made before the recording \
                 started, or by an allocator rrr does not know)"
                    .to_owned(),
            );
        }
        let object = found.watch.object.map(|o| Object {
            addr: format!("{:#x}", o.addr),
            size: o.len,
            cache,
            asked: allocation.map(|a| a.size).filter(|&s| s > 0),
            offset: bad.map(|b| b.addr.wrapping_sub(o.addr) as i64),
        });
        let threads = interleaving(
            allocation.map(|e| e.tid),
            frees.iter().map(|e| e.tid).collect(),
            bad.map(|e| e.tid),
        );
        let mut left_out = LeftOut::default();
        for e in &found.events {
            match found.aside(e) {
                Some(Aside::Sanitizer) => left_out.sanitizer += 1,
                Some(Aside::Allocator) => left_out.allocator += 1,
                Some(Aside::EarlierLife) => left_out.earlier_life += 1,
                None => {}
            }
        }
        Story {
            version: STORY_VERSION,
            title: title.to_owned(),
            watched: format!("{} ({})", found.watch.range, found.watch.source),
            bad_access: bad.map(step),
            object,
            allocation: allocation.map(step),
            frees: frees.into_iter().map(step).collect(),
            writes_after_free: writes_after_free.into_iter().map(step).collect(),
            threads,
            refcount: None,
            left_out,
            notes,
        }
    }

    /// The story of a report rrr cannot follow yet: its title, and a note saying so.
    fn untold(rec: &Recording, log: &str) -> Story {
        let title = match &rec.outcome {
            Outcome::Crashed { line } => crate::crash::report(log, line).title,
            other => other.to_string(),
        };
        Story {
            version: STORY_VERSION,
            notes: vec![format!(
                "rrr follows the memory of KASAN reports and the refcount of refcount_t                  warnings; `{title}` is neither: the trace holds the crash (its `crash` track)"
            )],
            title,
            watched: String::new(),
            bad_access: None,
            object: None,
            allocation: None,
            frees: Vec::new(),
            writes_after_free: Vec::new(),
            threads: interleaving(None, Vec::new(), None),
            refcount: None,
            left_out: LeftOut::default(),
        }
    }

    /// Writes the story as JSON to `path`.
    pub fn save(&self, path: &Path) -> crate::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Reads what [`Story::save`] wrote, if it is this rrr's version.
    pub fn load(path: &Path) -> Option<Story> {
        let story: Story = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        (story.version == STORY_VERSION).then_some(story)
    }

    /// The story for people.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}", self.title);
        let _ = writeln!(s, "watched: {}", self.watched);
        if let Some(b) = self.bad_access.as_ref().filter(|_| self.refcount.is_none()) {
            let what = match b.what.as_str() {
                "bad-write" => "bad write (reported by the sanitizer)",
                "bad-read" => "bad read (reported by the sanitizer)",
                other => other,
            };
            let _ = writeln!(
                s,
                "\nthe bad access: {what} of {} bytes at {}",
                b.size, b.addr
            );
            step_text(&mut s, b);
        }
        if let Some(o) = &self.object {
            let _ = write!(s, "\nthe object: {} bytes at {}", o.size, o.addr);
            if let Some(cache) = &o.cache {
                let _ = write!(s, " (cache {cache})");
            }
            if let Some(asked) = o.asked {
                let _ = write!(s, ", {asked} bytes asked for");
            }
            if let Some(off) = o.offset {
                let past = off - o.size as i64;
                if off >= o.size as i64 {
                    let _ = write!(
                        s,
                        "; the access is at offset {off}, {past} bytes past its end"
                    );
                } else if off < 0 {
                    let _ = write!(s, "; the access is {} bytes before its start", -off);
                } else {
                    let _ = write!(s, "; the access is at offset {off}");
                }
            }
            let _ = writeln!(s);
        }
        match &self.allocation {
            Some(a) => {
                let _ = writeln!(s, "\nallocated ({} bytes asked for):", a.size);
                step_text(&mut s, a);
            }
            None if self.refcount.is_none() && !self.watched.is_empty() => {
                let _ = writeln!(s, "\nallocated: not in the replay");
            }
            None => {}
        }
        for f in &self.frees {
            let _ = writeln!(s, "\nfreed:");
            step_text(&mut s, f);
        }
        for w in &self.writes_after_free {
            let _ = writeln!(
                s,
                "\nwritten after the last free: {} bytes = {}",
                w.size,
                w.value.as_deref().unwrap_or("?")
            );
            step_text(&mut s, w);
        }
        if let Some(r) = &self.refcount {
            let _ = writeln!(s, "\nthe refcount at {}: {}", r.addr, r.warning);
            for (i, c) in r.changes.iter().enumerate() {
                let value = c.value.as_deref().unwrap_or("?");
                let count = u64::from_str_radix(value.trim_start_matches("0x"), 16)
                    .map_or(value.to_owned(), |v| (v as u32 as i32).to_string());
                let below = if r.below_one == Some(i) {
                    "  <- below one"
                } else {
                    ""
                };
                let _ = writeln!(s, "\n{}. set to {count}{below}", i + 1);
                step_text(&mut s, c);
            }
        }
        let _ = writeln!(s, "\nthreads: {}", self.threads.summary);
        let l = &self.left_out;
        if l.sanitizer + l.allocator + l.earlier_life > 0 {
            let _ = writeln!(
                s,
                "left out: {} accesses by the sanitizer, {} by the allocator, {} before the \
                 object's allocation (`rrr watch ... --all` lists them)",
                l.sanitizer, l.allocator, l.earlier_life
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}

/// A step's lines in the text.
fn step_text(s: &mut String, step: &Step) {
    let t = &step.thread;
    let cpu = step.cpu.map_or(String::new(), |c| format!(" cpu {c}"));
    let _ = writeln!(
        s,
        "  at {} by {} (pid {} tid {}){cpu}",
        step.ts, t.comm, t.pid, t.tid
    );
    if let Some(place) = &step.place {
        let _ = writeln!(s, "  in {place}");
    }
    if let Some(c) = &step.call {
        let syscall = c.syscall.as_deref().unwrap_or("a syscall");
        match (&c.file, c.line) {
            (Some(file), Some(line)) => {
                let name = Path::new(file)
                    .file_name()
                    .map_or(file.clone(), |n| n.to_string_lossy().into_owned());
                let guess = if c.exact {
                    ""
                } else {
                    " (the function's first line naming it)"
                };
                let _ = writeln!(
                    s,
                    "  from the reproducer's {syscall} in {} ({name}:{line}{guess}): {}",
                    c.function,
                    c.source.as_deref().unwrap_or("")
                );
            }
            _ => {
                let _ = writeln!(s, "  from the reproducer's {syscall} in {}", c.function);
            }
        }
    }
    for f in &step.stack {
        let _ = writeln!(s, "    {f}");
    }
}

/// The kernel's calls of a stack (outermost first), innermost first.
fn kernel_stack(stack: &[String]) -> Vec<String> {
    let entry = stack
        .iter()
        .position(|f| f == "do_syscall_64" || f.starts_with("asm_") || f.contains("irq"))
        .unwrap_or(0);
    stack[entry..].iter().rev().cloned().collect()
}

/// Which threads allocated, freed and made the bad access, and whether a free and the access
/// were in different threads.
fn interleaving(alloc: Option<i32>, frees: Vec<i32>, access: Option<i32>) -> Threads {
    let race = access.is_some_and(|a| frees.iter().any(|&f| f != a));
    let who = |t: Option<i32>| t.map_or("?".to_owned(), |t| format!("tid {t}"));
    let mut summary = format!("allocated by {}", who(alloc));
    if !frees.is_empty() {
        let tids: Vec<String> = frees.iter().map(|&t| format!("tid {t}")).collect();
        let _ = write!(summary, ", freed by {}", tids.join(", "));
    }
    let _ = write!(summary, ", bad access by {}", who(access));
    if race {
        summary.push_str(": the free and the bad access are in different threads (a race)");
    } else if !frees.is_empty() {
        summary.push_str(": the free and the bad access are in the same thread");
    }
    Threads {
        allocated_by: alloc,
        freed_by: frees,
        accessed_by: access,
        free_and_access_race: race,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::Watch;
    use rrr_trace::watch::{By, Range};

    fn event(kind: Kind, ts: u64, tid: i32, addr: u64, stack: &[&str]) -> Event {
        Event {
            kind,
            ts,
            cpu: 0,
            pid: 38,
            tid,
            comm: "stimulus".into(),
            addr,
            size: if kind == Kind::Alloc { 64 } else { 8 },
            value: 0x41,
            pc: 0xffffffff81000000 + ts,
            stack: stack.iter().map(|s| s.to_string()).collect(),
            by: None,
            site: 0,
        }
    }

    const OBJ: u64 = 0xffff888000876000;

    fn watched(events: Vec<Event>) -> Findings {
        Findings {
            watch: Watch {
                range: Range {
                    addr: OBJ + 8,
                    len: 8,
                },
                object: Some(Range { addr: OBJ, len: 64 }),
                source: "the KASAN report".into(),
            },
            events,
            places: Default::default(),
            inlined: Default::default(),
        }
    }

    /// A use-after-free across threads: thread 40 frees, thread 41 writes and then KASAN
    /// reports thread 41's read; an earlier life's access and KASAN's own are left out.
    #[test]
    fn a_use_after_free_across_threads_is_told() {
        let sys = |name: &'static str| vec!["main", "syscall", "do_syscall_64", name];
        let alloc_stack = sys("__x64_sys_bpf");
        let mut own = event(Kind::Write, 3, 39, OBJ, &["kasan_set_track"]);
        own.by = Some(By::Sanitizer);
        let events = vec![
            event(
                Kind::Write,
                1,
                30,
                OBJ + 8,
                &["do_syscall_64", "clear_page"],
            ),
            event(
                Kind::Alloc,
                2,
                39,
                OBJ,
                &[alloc_stack, vec!["kmalloc"]].concat(),
            ),
            own,
            event(
                Kind::Free,
                5,
                40,
                OBJ,
                &["__libc_close", "do_syscall_64", "kfree"],
            ),
            event(Kind::Write, 6, 41, OBJ + 8, &sys("__x64_sys_ioctl")),
            event(Kind::BadRead, 7, 41, OBJ + 8, &sys("__x64_sys_ioctl")),
        ];
        let story = Story::from_events(
            &watched(events),
            "KASAN: use-after-free",
            None,
            Some("kmalloc-64".into()),
            vec![],
        );
        let a = story.allocation.as_ref().unwrap();
        assert_eq!((a.ts, a.thread.tid, a.size), (2, 39, 64));
        assert_eq!(a.stack.first().map(String::as_str), Some("kmalloc"));
        assert_eq!(story.frees.len(), 1);
        assert_eq!(story.frees[0].thread.tid, 40);
        assert_eq!(story.writes_after_free.len(), 1);
        let bad = story.bad_access.as_ref().unwrap();
        assert_eq!((bad.what.as_str(), bad.thread.tid), ("bad-read", 41));
        assert!(story.threads.free_and_access_race);
        assert_eq!(story.object.as_ref().unwrap().offset, Some(8));
        assert_eq!(
            story.left_out,
            LeftOut {
                sanitizer: 1,
                allocator: 0,
                earlier_life: 1
            }
        );
        assert!(
            story.text().contains("different threads"),
            "{}",
            story.text()
        );
        // The JSON reads back.
        let json = serde_json::to_string(&story).unwrap();
        assert_eq!(serde_json::from_str::<Story>(&json).unwrap(), story);
    }

    /// The story's JSON schema (docs/story.schema.json), compiled.
    pub(crate) fn schema() -> jsonschema::Validator {
        let text = include_str!("../../../docs/story.schema.json");
        jsonschema::validator_for(&serde_json::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn stories_follow_their_schema() {
        let schema = schema();
        let told = [
            Story::from_events(&watched(vec![]), "KASAN: wild", None, None, vec![]),
            Story::from_events(
                &watched(vec![
                    event(Kind::Alloc, 2, 39, OBJ, &["do_syscall_64", "kmalloc"]),
                    event(Kind::Free, 5, 40, OBJ, &["do_syscall_64", "kfree"]),
                    event(Kind::Write, 6, 41, OBJ + 8, &["do_syscall_64", "f"]),
                ]),
                "KASAN: use-after-free",
                None,
                Some("kmalloc-64".into()),
                vec!["a note".into()],
            ),
        ];
        for story in told {
            let json = serde_json::to_value(&story).unwrap();
            let errors: Vec<String> = schema.iter_errors(&json).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{errors:?}\n{json:#}");
        }
        // The schema says something: a story without its title does not pass.
        let mut json = serde_json::to_value(Story::from_events(
            &watched(vec![]),
            "t",
            None,
            None,
            vec![],
        ))
        .unwrap();
        json.as_object_mut().unwrap().remove("title");
        assert!(!schema.is_valid(&json));
    }

    #[test]
    fn syscalls_are_named_by_the_kernel_entry_or_the_libc_wrapper() {
        let s = |v: &[&str]| syscall(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            s(&[
                "main",
                "syscall",
                "do_syscall_64",
                "x64_sys_call",
                "__x64_sys_fsconfig"
            ])
            .as_deref(),
            Some("fsconfig")
        );
        assert_eq!(
            s(&[
                "close_fds",
                "__libc_close",
                "do_syscall_64",
                "syscall_exit_to_user_mode"
            ])
            .as_deref(),
            Some("close")
        );
        assert_eq!(
            s(&["main", "syscall", "do_syscall_64", "task_work_run"]),
            None
        );
    }

    #[test]
    fn nothing_touched_is_said() {
        let story = Story::from_events(&watched(vec![]), "KASAN: wild", None, None, vec![]);
        assert!(story.bad_access.is_none());
        assert!(
            story.notes.iter().any(|n| n.contains("never touched")),
            "{:?}",
            story.notes
        );
        assert!(story
            .notes
            .iter()
            .any(|n| n.contains("allocation is not in the replay")));
    }
}
