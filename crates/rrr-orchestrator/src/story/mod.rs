//! The story of a crash about memory: from the recording's report and a watch of the memory it
//! names ([`crate::watch`]), the bad access, the object, who allocated and freed it, the writes
//! after its last free, the reproducer's call behind each (its syscall and the stimulus's
//! source line), and how the threads interleaved. Text for people, JSON for scripts (its
//! schema: `docs/story.schema.json`).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use rrr_trace::watch::{Event, Kind};
use serde::{Deserialize, Serialize};

use crate::limits::Limits;
use crate::recording::{Outcome, Recording};
use crate::trace::Traced;
use crate::watch::{self, Aside, Findings, Target};
use refcount::{explain_refcount, refcount_warning};
use source::Source;

mod refcount;
mod source;
mod text;

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
    let telling = Telling::of(rec);
    let story = if let Ok(w) = watch::resolve(rec, &Target::FromReport) {
        let found = watch::watch(rec, w, None, &whole, false, timeout)?;
        telling.story(&found.findings, About::Memory)
    } else if let Some(warning) = refcount_warning(&telling.log) {
        explain_refcount(rec, &telling, &warning, timeout)?
    } else {
        telling.untold()
    };
    story.save(&kept)?;
    Ok(story)
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
    let story = Telling::of(rec).story(&found.findings, About::Memory);
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

/// The report's slab cache: `... which belongs to the cache kmalloc-4k of size 4096`.
fn cache_of(log: &str) -> Option<String> {
    log.lines().find_map(|l| {
        let rest = l.split_once("belongs to the cache ")?.1;
        Some(rest.split_whitespace().next()?.to_owned())
    })
}

/// What a story is about.
enum About<'a> {
    /// The memory a sanitizer's report names.
    Memory,
    /// A `refcount_t` the kernel warned about (`warning`): its `changes` in order (see
    /// [`refcount::changes`]), the one that took it below one by index.
    Refcount {
        warning: &'a str,
        changes: Vec<&'a Event>,
        below_one: Option<usize>,
    },
}

/// What a story is told from besides a watch's events, read once: the recording, its
/// console log and the stimulus's source.
struct Telling<'a> {
    rec: &'a Recording,
    log: String,
    source: Option<Source>,
}

impl<'a> Telling<'a> {
    fn of(rec: &'a Recording) -> Telling<'a> {
        Telling {
            rec,
            log: std::fs::read_to_string(rec.serial_log()).unwrap_or_default(),
            source: Source::of(rec),
        }
    }

    /// The report's title, as syzbot gives it.
    fn title(&self) -> String {
        match &self.rec.outcome {
            Outcome::Crashed { line } => crate::crash::report(&self.log, line).title,
            other => other.to_string(),
        }
    }

    /// The story of what a watch `found`, about `about`.
    fn story(&self, found: &Findings, about: About<'_>) -> Story {
        let mut notes = Vec::new();
        if self.source.is_none() {
            notes.push(
                "the stimulus's source or DWARF is not there: no reproducer lines".to_owned(),
            );
        }
        let title = self.title();
        let cache = cache_of(&self.log);
        Story::from_events(found, &title, self.source.as_ref(), cache, notes, about)
    }

    /// The story of a report rrr cannot follow yet: its title, and a note saying so.
    fn untold(&self) -> Story {
        let title = self.title();
        Story {
            version: STORY_VERSION,
            notes: vec![format!(
                "rrr follows the memory of KASAN reports and the refcount of refcount_t \
                 warnings; `{title}` is neither: the trace holds the crash (its `crash` track)"
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
}

impl Story {
    fn from_events(
        found: &Findings,
        title: &str,
        source: Option<&Source>,
        cache: Option<String>,
        mut notes: Vec<String>,
        about: About<'_>,
    ) -> Story {
        let step = |e: &Event| step_of(found, source, e);
        let program: Vec<&Event> = found
            .events
            .iter()
            .filter(|e| found.aside(e).is_none())
            .collect();
        // The access the sanitizer reported, or the program's last one: where the frees,
        // the writes after them and the threads are counted up to.
        let bad = program
            .iter()
            .find(|e| matches!(e.kind, Kind::BadRead | Kind::BadWrite))
            .or_else(|| program.iter().rev().find(|e| e.kind.is_access()))
            .copied();
        // The bad access the story tells: for a refcount, the change that took it below one.
        let told = match &about {
            About::Memory => bad,
            About::Refcount {
                changes, below_one, ..
            } => below_one.map(|i| changes[i]),
        };
        let memory = matches!(about, About::Memory);
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
        let writes_after_free: Vec<&Event> = match last_free.filter(|_| memory) {
            Some(freed) => program
                .iter()
                .filter(|e| e.kind == Kind::Write && e.ts > freed && e.ts < bad_ts)
                .copied()
                .collect(),
            None => Vec::new(),
        };
        if bad.is_none() && memory {
            notes.push(format!(
                "no access to {} in the replay: the report's address was never touched",
                found.watch.range
            ));
        }
        // A refcount not in an object (one on the stack, say) has no allocation: its life
        // starts at its first store.
        if allocation.is_none() && memory {
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
        let mut threads = interleaving(
            allocation.map(|e| e.tid),
            frees.iter().map(|e| e.tid).collect(),
            bad.map(|e| e.tid),
        );
        let mut title = title.to_owned();
        let refcount = match about {
            About::Memory => None,
            About::Refcount {
                warning,
                changes,
                below_one,
            } => {
                let mut tids: Vec<i32> = changes.iter().map(|c| c.tid).collect();
                tids.dedup();
                let changed: Vec<String> = tids.iter().map(|t| format!("tid {t}")).collect();
                threads.summary = format!("changed by {}", changed.join(", "));
                // syzbot's title for it: the function that used the refcount.
                let user = told.and_then(|e| {
                    let stack = kernel_stack(&e.stack);
                    stack.into_iter().find(|f| !f.contains("refcount"))
                });
                if let Some(f) = user {
                    title = format!("refcount bug in {f}");
                }
                Some(Refcount {
                    addr: format!("{:#x}", found.watch.range.addr),
                    warning: warning.to_owned(),
                    changes: changes.into_iter().map(step).collect(),
                    below_one,
                })
            }
        };
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
            title,
            watched: format!("{} ({})", found.watch.range, found.watch.source),
            bad_access: told.map(step),
            object,
            allocation: allocation.map(step),
            frees: frees.into_iter().map(step).collect(),
            writes_after_free: writes_after_free.into_iter().map(step).collect(),
            threads,
            refcount,
            left_out,
            notes,
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
    use super::source::syscall;
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
            About::Memory,
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
        let text = include_str!("../../../../docs/story.schema.json");
        jsonschema::validator_for(&serde_json::from_str(text).unwrap()).unwrap()
    }

    /// The story of a memory report titled `title` whose watch found nothing.
    fn told_of_nothing(title: &str) -> Story {
        Story::from_events(&watched(vec![]), title, None, None, vec![], About::Memory)
    }

    #[test]
    fn stories_follow_their_schema() {
        let schema = schema();
        let told = [
            told_of_nothing("KASAN: wild"),
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
                About::Memory,
            ),
        ];
        for story in told {
            let json = serde_json::to_value(&story).unwrap();
            let errors: Vec<String> = schema.iter_errors(&json).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{errors:?}\n{json:#}");
        }
        // The schema says something: a story without its title does not pass.
        let mut json = serde_json::to_value(told_of_nothing("t")).unwrap();
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
        let story = told_of_nothing("KASAN: wild");
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
