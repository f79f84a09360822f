//! Real syzbot bugs: reproducers from the public syzkaller reproducer corpus, each run on rrr's
//! crash-test kernel plus the options the bugs need (`tests/bugs/bugs.config`, one
//! configuration for all), with the bug's small upstream fix reverted by a patch kept beside it
//! in `tests/bugs/NAME/` (Debian's 6.1 source has the fixes). `rrr run --patch --compare`
//! records the reproducer on the kernel without the patch (the fixed one: no crash) and with it
//! (the bug: its KASAN report). Each patched kernel differs from the shared one by one patch, a
//! short rebuild through the compiler cache.

#[path = "../../rrr-trace/tests/support/tp.rs"]
mod tp;

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

/// `rrr run --compare` of the bug `name` (two attempts each): no crash on the fixed kernel, and
/// `title` at the first attempt with the fix reverted. Then the trace of the crash (the same
/// recording, cached): every thread that ran in it is named, none is a bare stack
/// (`stack-…`: an IRQ stack is only page-aligned, and deep interrupt work on it once made one).
fn crashes_only_with_the_fix_reverted(name: &str, title: &str) {
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
            "without the patches: no crash in 2 attempts (the last ended status=0)".to_owned(),
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
}

/// CVE-2022-0185: `fsconfig()` on debugfs (a filesystem on the legacy mount API) appends its
/// options to a one-page buffer; with the length check's `PAGE_SIZE - 2 - size` wrapped
/// around, KASAN reports the write past the page.
#[test]
fn legacy_parse_param_overflows_its_page_only_with_the_fix_reverted() {
    crashes_only_with_the_fix_reverted(
        "legacy_parse_param",
        "KASAN: slab-out-of-bounds Write in legacy_parse_param",
    );
}

/// A BPF queue map of 0xffffffff entries: with the size's overflow check reverted, `max_entries
/// + 1` wraps to 0 and the first push writes its value past the map's allocation.
#[test]
fn a_queue_maps_first_push_overflows_it_only_with_the_fix_reverted() {
    crashes_only_with_the_fix_reverted(
        "queue_stack_map",
        "KASAN: slab-out-of-bounds Write in queue_stack_map_push_elem",
    );
}
