//! The story of a `refcount_t` warning: the refcount's changes, in order.

use std::path::Path;
use std::time::Duration;

use rrr_trace::watch::{Event, Kind};

use super::{About, Story, Telling};
use crate::limits::Limits;
use crate::recording::Recording;
use crate::watch::{self, Findings};

/// The kernel's `refcount_t:` warning line in `log`, if it has one.
pub(super) fn refcount_warning(log: &str) -> Option<String> {
    log.lines().find_map(|l| {
        let at = l.find("refcount_t: ")?;
        Some(l[at..].trim().to_owned())
    })
}

/// The story of a `refcount_t` warning: a first replay, hooking only
/// `refcount_warn_saturate`, notes the refcount it warned about (its first argument); a
/// second watches it.
pub(super) fn explain_refcount(
    rec: &Recording,
    telling: &Telling<'_>,
    warning: &str,
    timeout: Duration,
) -> crate::Result<Story> {
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
        let mut story = telling.untold();
        story.notes = vec![format!(
            "the kernel warned `{warning}`, but the replay has no call of {WARNS} to take the \
             refcount from"
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
    let (changes, below_one) = changes(&found.findings, call.ts);
    let about = About::Refcount {
        warning,
        changes,
        below_one,
    };
    Ok(telling.story(&found.findings, about))
}

/// A refcount's changes (see [`Refcount`]), up to the warning at `warned_at` and the
/// saturation the warning writes, and the one that took it below one, by index.
pub(super) fn changes(found: &Findings, warned_at: u64) -> (Vec<&Event>, Option<usize>) {
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
    (changes, below_one)
}
