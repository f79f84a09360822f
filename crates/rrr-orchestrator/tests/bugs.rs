//! Real syzbot bugs: reproducers from the public syzkaller reproducer corpus, each run on rrr's
//! crash-test kernel with the bug's small upstream fix reverted by a patch kept beside it in
//! `tests/bugs/NAME/` (Debian's 6.1 source has the fixes). `rrr run --patch --compare` records
//! the reproducer on the kernel without the patch (the fixed one: no crash) and with it (the
//! bug: its KASAN report). Both kernels differ from the cached crash-test kernel by one patch,
//! so each is a short rebuild through the compiler cache.

use std::path::{Path, PathBuf};
use std::process::Command;

fn rrr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rrr"))
}

/// The reproducer and the fix's revert of the bug `name`.
fn bug(name: &str) -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/bugs")
        .join(name);
    (dir.join("repro.c"), dir.join("fix-reverted.patch"))
}

/// `rrr run --compare` of the bug `name` with `attempts`: rrr's two verdict lines (without the
/// revert, with it).
fn compare(name: &str, attempts: u32) -> (String, String) {
    let (repro, revert) = bug(name);
    let out = rrr()
        .args(["run", "--stimulus"])
        .arg(&repro)
        .args(["--fragment", "crash-test", "--patch"])
        .arg(&revert)
        .args(["--compare", "--timeout", "60", "--attempts"])
        .arg(attempts.to_string())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "rrr run --compare failed:\n{said}");
    let verdict: Vec<&str> = said
        .split("rrr: verdict:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no verdict: {said}"))
        .lines()
        .map(str::trim)
        .collect();
    assert_eq!(verdict.len(), 2, "{said}");
    (verdict[0].to_owned(), verdict[1].to_owned())
}

/// CVE-2022-0185: `fsconfig()` on debugfs (a filesystem on the legacy mount API) appends its
/// options to a one-page buffer; with the length check's `PAGE_SIZE - 2 - size` wrapped
/// around, KASAN reports the write past the page.
#[test]
fn legacy_parse_param_overflows_its_page_only_with_the_fix_reverted() {
    let (without, with) = compare("legacy_parse_param", 2);
    assert_eq!(
        without,
        "without the patches: no crash in 2 attempts (the last ended status=0)"
    );
    assert_eq!(
        with,
        "with fix-reverted.patch: KASAN: slab-out-of-bounds Write in legacy_parse_param, at \
         attempt 1"
    );
}
