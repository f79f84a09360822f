//! Real syzbot bugs: reproducers from the public syzkaller reproducer corpus, each run on rrr's
//! crash-test kernel plus the options the bugs need (`tests/bugs/bugs.config`, one
//! configuration for all), with the bug's small upstream fix reverted by a patch kept beside it
//! in `tests/bugs/NAME/` (Debian's 6.1 source has the fixes). `rrr run --patch --compare`
//! records the reproducer on the kernel without the patch (the fixed one: no crash) and with it
//! (the bug: its KASAN report). Each patched kernel differs from the shared one by one patch, a
//! short rebuild through the compiler cache.

#[path = "../../rrr-trace/tests/support/tp.rs"]
mod tp;

#[path = "support/story.rs"]
mod story;

use std::path::{Path, PathBuf};
use std::process::Command;

fn rrr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rrr"))
}

/// `tests/bugs/`.
fn bugs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bugs")
}

/// The reproducer and the fix's revert of the bug `name`.
fn bug(name: &str) -> (PathBuf, PathBuf) {
    let dir = bugs().join(name);
    (dir.join("repro.c"), dir.join("fix-reverted.patch"))
}

/// `rrr run` of the bug `name` with its fix reverted (two attempts), with `args`.
fn run_bug(name: &str, args: &[&str]) -> std::process::Output {
    let (repro, revert) = bug(name);
    rrr()
        .args(["run", "--stimulus"])
        .arg(&repro)
        .args(["--fragment", "crash-test", "--fragment"])
        .arg(bugs().join("bugs.config"))
        .arg("--patch")
        .arg(&revert)
        .args(["--timeout", "60", "--attempts", "2"])
        .args(args)
        .output()
        .unwrap()
}

/// `rrr run --compare` of the bug `name` (two attempts each): no crash on the fixed kernel (its
/// last attempt `ended`: `ended status=0`, or `timeout 60` for a reproducer that loops), and
/// `title` at the first attempt with the fix reverted. Then the trace of the crash (the same
/// recording, cached): every thread that ran in it is named, none is a bare stack
/// (`stack-…`: an IRQ stack is only page-aligned, and deep interrupt work on it once made one).
/// Returns what the traced `rrr run` said, and its trace (in the directory returned with it).
fn crashes_only_with_the_fix_reverted(
    name: &str,
    ended: &str,
    title: &str,
) -> (String, PathBuf, tempfile::TempDir) {
    let out = run_bug(name, &["--compare"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "rrr run --compare failed:\n{said}");
    let verdict: Vec<&str> = said
        .split("rrr: verdict:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no verdict: {said}"))
        .lines()
        .map(str::trim)
        .collect();
    assert_eq!(
        verdict,
        [
            format!("without the patches: no crash in 2 attempts (the last {ended})"),
            format!("with fix-reverted.patch: {title}, at attempt 1"),
        ],
        "{said}"
    );

    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.pftrace");
    let out = run_bug(name, &["-o", t.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && said.contains(title),
        "rrr run failed:\n{said}"
    );
    let r = tp::query(
        &t,
        &[
            "select count(distinct t.utid) from thread t join thread_track tt using (utid) \
             where exists (select 1 from slice s where s.track_id = tt.id)",
            tp::UNNAMED_THREADS,
        ],
    );
    let threads: u32 = tp::lines(&r[0])[0].parse().unwrap();
    assert!(threads > 5, "{threads} threads with calls in the trace");
    assert_eq!(tp::lines(&r[1]), Vec::<String>::new(), "unnamed threads");
    (said, t, dir)
}

/// CVE-2022-0185: `fsconfig()` on debugfs (a filesystem on the legacy mount API) appends its
/// options to a one-page buffer; with the length check's `PAGE_SIZE - 2 - size` wrapped
/// around, KASAN reports the write past the page.
#[test]
fn legacy_parse_param_overflows_its_page_only_with_the_fix_reverted() {
    crashes_only_with_the_fix_reverted(
        "legacy_parse_param",
        "ended status=0",
        "KASAN: slab-out-of-bounds Write in legacy_parse_param",
    );
}

/// The kernel stack of a step of a story, innermost first.
fn stack_of(step: &serde_json::Value) -> Vec<&str> {
    step["stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect()
}

/// KASAN's own stack of the report's `header` ("Allocated by task"), innermost first, without
/// KASAN's frames and offsets.
fn kasan_stack(log: &str, header: &str) -> Vec<String> {
    let mut lines = log.lines().skip_while(|l| !l.contains(header)).skip(1);
    let mut frames = Vec::new();
    for l in lines.by_ref() {
        let f = l.trim().split('+').next().unwrap_or_default();
        if f.is_empty() {
            break;
        }
        if !f.contains("kasan") {
            frames.push(f.to_owned());
        }
    }
    frames
}

/// The story `rrr run` ends with, on the real overflow: the bad write KASAN reported (which
/// its checked memcpy never made), the page it overflows and its allocation (the frames of
/// KASAN's own "Allocated by task" stack, in the thread it names), the reproducer's line of
/// the fsconfig call behind both, and the two threads; KASAN's own accesses are left out.
/// `rrr explain` tells it again as JSON that follows docs/story.schema.json, and the trace's
/// flow links the allocation to the bad write.
#[test]
fn the_overflow_s_story_names_its_allocation_and_the_reproducer_s_line() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.pftrace");
    let out = run_bug("legacy_parse_param", &["-o", t.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "rrr run failed:\n{said}");
    assert!(said.contains("the crash's story"), "{said}");
    let rec = story::recording_of(&said);
    let story = story::explained(&rec);

    let log = std::fs::read_to_string(Path::new(&rec).join("serial.log")).unwrap();
    let kasan = kasan_stack(&log, "Allocated by task");
    let alloc = &story["allocation"];
    let stack: Vec<&str> = alloc["stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        stack[..2],
        ["kmalloc_trace", "legacy_parse_param"],
        "{story:#}"
    );
    assert_eq!(
        kasan[..2],
        stack[..2],
        "KASAN's allocation stack: {kasan:?}"
    );
    let tid = |s: &serde_json::Value| s["thread"]["tid"].as_i64().unwrap();
    assert!(
        log.contains(&format!("Allocated by task {}:", tid(alloc))),
        "{story:#}"
    );
    assert_eq!(story["object"]["size"], 4096);
    assert_eq!(story["object"]["offset"], 4096);
    let bad = &story["bad_access"];
    assert_eq!(bad["what"], "bad-write");
    assert!(bad["place"]
        .as_str()
        .unwrap()
        .starts_with("legacy_parse_param (fs/fs_context.c:"));
    assert!(log.contains(&format!("by task stimulus/{}", tid(bad))));
    assert_ne!(tid(alloc), tid(bad));
    // The reproducer's lines, the calls' own: the first fsconfig of the reproducer's call 1
    // allocated the page that call 1's options fill; call 2's option overflows it, in the
    // loop that repeats it.
    let repro = std::fs::read_to_string(bug("legacy_parse_param").0).unwrap();
    let lines: Vec<usize> = repro
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("syscall(__NR_fsconfig"))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 4, "two calls, each again in a loop");
    for (step, line) in [(alloc, lines[0]), (bad, lines[3])] {
        let call = &step["call"];
        assert_eq!(call["syscall"], "fsconfig", "{story:#}");
        assert_eq!(
            (call["line"].as_u64(), &call["exact"]),
            (Some(line as u64), &serde_json::json!(true)),
            "{story:#}"
        );
    }
    assert!(
        story["left_out"]["sanitizer"].as_u64().unwrap() >= 1,
        "{story:#}"
    );

    let r = tp::query(
        &t,
        &[
            "select so.name, si.name from flow f join slice so on so.id = f.slice_out \
           join slice si on si.id = f.slice_in where so.name like 'alloc%'",
        ],
    );
    assert_eq!(tp::lines(&r[0]), ["alloc 4096|bad-write 1"]);

    // Under a budget a tenth of the whole trace, the allocation's part is kept with the
    // crash's, a gap between them.
    let steps = [("kmalloc_trace", "alloc 4096")];
    let kept = kept_under_budget(&rec, dir.path(), "4M", "legacy_parse_param", &steps);
    assert_eq!(kept, ["kmalloc_trace"], "the allocation's call");
}

/// `rrr trace REC --max-size BUDGET` into `dir`, a budget that leaves a gap before the crash's
/// part (it must say so): the calls under `parent` that hold a step of the story, as (call,
/// the step's instant), kept in the trace, in trace order. Every slice of it ends, and it
/// imports without errors.
fn kept_under_budget(
    rec: &str,
    dir: &Path,
    budget: &str,
    parent: &str,
    steps: &[(&str, &str)],
) -> Vec<String> {
    let cut = dir.join("cut.pftrace");
    let said = story::ok_said(
        rrr()
            .args(["trace", rec, "--max-size", budget, "-o"])
            .arg(&cut),
    );
    assert!(
        said.contains("the parts of the crash's story before them are kept"),
        "{said}"
    );
    let holding = |(call, step): &(&str, &str)| {
        format!(
            "(s.name = '{call}' and s.ts <= (select ts from slice where name = '{step}' limit 1) \
             and s.ts + s.dur >= (select ts from slice where name = '{step}' limit 1))"
        )
    };
    let holding: Vec<String> = steps.iter().map(holding).collect();
    let r = tp::query(
        &cut,
        &[
            &format!(
                "select s.name from slice s join slice p on s.parent_id = p.id \
                 where p.name = '{parent}' and ({}) order by s.ts",
                holding.join(" or ")
            ),
            "select count(*) from slice where dur < 0",
            "select name, idx, value from stats where value > 0 and severity in ('error', 'data_loss')",
        ],
    );
    assert_eq!(tp::lines(&r[1]), ["0"], "every slice ends");
    assert_eq!(tp::lines(&r[2]), Vec::<String>::new(), "no import errors");
    tp::lines(&r[0])
}

/// A BPF queue map of 0xffffffff entries: with the size's overflow check reverted, `max_entries
/// + 1` wraps to 0 and the first push writes its value past the map's allocation.
#[test]
fn a_queue_maps_first_push_overflows_it_only_with_the_fix_reverted() {
    let (said, _, _) = crashes_only_with_the_fix_reverted(
        "queue_stack_map",
        "ended status=0",
        "KASAN: slab-out-of-bounds Write in queue_stack_map_push_elem",
    );
    // Its story: the map allocated by the reproducer's map-creating bpf(2) and overflowed by
    // its updating one, each the call's own line.
    let story = story::explained(&story::recording_of(&said));
    let repro = std::fs::read_to_string(bug("queue_stack_map").0).unwrap();
    let line = |text: &str| repro.lines().position(|l| l.contains(text)).unwrap() as u64 + 1;
    let (alloc, bad) = (&story["allocation"]["call"], &story["bad_access"]["call"]);
    assert_eq!(
        alloc["line"].as_u64(),
        Some(line("syscall(__NR_bpf, 0,")),
        "{story:#}"
    );
    assert_eq!(
        bad["line"].as_u64(),
        Some(line("syscall(__NR_bpf, 2,")),
        "{story:#}"
    );
    assert_eq!(
        story["allocation"]["stack"][2], "bpf_map_area_alloc",
        "{story:#}"
    );
    assert_eq!(story["bad_access"]["what"], "bad-write", "{story:#}");
}

/// A seccomp filter asked for with both TSYNC and NEW_LISTENER, from a thread of the
/// reproducer while another of its threads has a filter of its own: with the flags'
/// exclusion and the `ret < 0` test reverted, TSYNC's failure (the other thread's id) is taken
/// for success, the listener's file is installed, and the filter it points to freed on the way
/// out; the main thread's `close` of the listener then locks the freed filter's mutex.
#[test]
fn a_seccomp_listener_outlives_its_filter_only_with_the_fix_reverted() {
    let (said, trace, dir) = crashes_only_with_the_fix_reverted(
        "seccomp_listener",
        "timeout 60",
        "KASAN: use-after-free Write in mutex_lock",
    );
    let rec = story::recording_of(&said);
    let story = story::explained(&rec);
    let log = std::fs::read_to_string(Path::new(&rec).join("serial.log")).unwrap();
    let tid = |s: &serde_json::Value| s["thread"]["tid"].as_i64().unwrap();

    // The allocation and the free: KASAN's own stacks (from the allocator's and the free's
    // function out), in the threads KASAN names.
    let alloc = &story["allocation"];
    let frees = story["frees"].as_array().unwrap();
    assert_eq!(frees.len(), 1, "{story:#}");
    let free = &frees[0];
    assert_eq!(
        stack_of(alloc)[..2],
        ["kmalloc_trace", "do_seccomp"],
        "{story:#}"
    );
    assert_eq!(stack_of(free)[..2], ["kfree", "do_seccomp"], "{story:#}");
    let kasan_alloc = kasan_stack(&log, "Allocated by task");
    assert_eq!(kasan_alloc[..2], stack_of(alloc)[..2], "{kasan_alloc:?}");
    let kasan_free = kasan_stack(&log, "Freed by task");
    let from_kfree: Vec<&str> = kasan_free
        .iter()
        .skip_while(|f| *f != "kfree")
        .map(String::as_str)
        .collect();
    assert_eq!(from_kfree[..2], stack_of(free)[..2], "{kasan_free:?}");
    assert!(log.contains(&format!("Allocated by task {}:", tid(alloc))));
    assert!(log.contains(&format!("Freed by task {}:", tid(free))));

    // The bad access: the listener's close in the main thread, another thread than the
    // free's; its place is the function the check is in, not KASAN's inlined check.
    let bad = &story["bad_access"];
    assert!(log.contains(&format!("by task stimulus/{}", tid(bad))));
    assert_ne!(tid(free), tid(bad));
    assert_eq!(story["threads"]["free_and_access_race"], true, "{story:#}");
    let place = bad["place"].as_str().unwrap();
    assert!(
        place.starts_with("__mutex_trylock_fast (kernel/locking/mutex.c:"),
        "{story:#}"
    );
    assert_eq!(
        stack_of(bad)[..3],
        [
            "mutex_lock",
            "seccomp_notify_detach.part.0",
            "seccomp_notify_release"
        ],
        "{story:#}"
    );

    // The reproducer's lines, the calls' own: call 1's seccomp allocated and freed the filter,
    // and close_fds's close (in the child's reset_test, after the calls) made the bad access.
    let repro = std::fs::read_to_string(bug("seccomp_listener").0).unwrap();
    let line = |text: &str| repro.lines().position(|l| l.contains(text)).unwrap() as u64 + 1;
    let seccomp = line("syscall(__NR_seccomp, 1, 9,");
    // close_fds's loop: `for (fd = 3; fd < 30; fd++) close(fd);`.
    let close = line("for (fd = 3; fd < 30; fd++)") + 1;
    assert_eq!(
        repro.lines().nth(close as usize - 1).unwrap().trim(),
        "close(fd);"
    );
    for (step, syscall, line) in [
        (alloc, "seccomp", seccomp),
        (free, "seccomp", seccomp),
        (bad, "close", close),
    ] {
        let call = &step["call"];
        assert_eq!(call["syscall"], syscall, "{story:#}");
        assert_eq!(
            (call["line"].as_u64(), &call["exact"]),
            (Some(line), &serde_json::json!(true)),
            "{story:#}"
        );
    }

    // The trace's arrows: from the allocation to the free, in the seccomp call's thread, and
    // on to the bad write in the main thread.
    let r = tp::query(
        &trace,
        &[
            "select so.name, si.name, so.track_id = si.track_id from flow f \
             join slice so on so.id = f.slice_out join slice si on si.id = f.slice_in \
             where so.name like 'alloc%' or so.name like 'free%' order by so.ts",
        ],
    );
    assert_eq!(
        tp::lines(&r[0]),
        ["alloc 160|free 160|1", "free 160|bad-write 8|0"]
    );

    // Under a budget of about a hundredth of the whole trace, the calls that allocated and
    // freed the filter are kept, though a gap lies between them and the crash's part.
    let steps = [("kmalloc_trace", "alloc 160"), ("kfree", "free 160")];
    let kept = kept_under_budget(&rec, dir.path(), "2M", "do_seccomp", &steps);
    assert_eq!(kept, ["kmalloc_trace", "kfree"]);
}
