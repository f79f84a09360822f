//! `rrr cache path|list|gc` on a cache laid out as rrr lays it out.

use std::path::Path;
use std::process::Command;

fn rrr(cache: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rrr"))
        .arg("cache")
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn list_and_gc_handle_entries_and_unfinished_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rrr");
    let kernel = root.join("kernels/0123456789abcdef");
    std::fs::create_dir_all(&kernel).unwrap();
    std::fs::write(kernel.join("bzImage"), vec![0u8; 3 << 20]).unwrap();
    // A staging directory of a process that no longer exists (a killed run).
    let stale = root.join("stimuli/fedcba9876543210.tmp-4000000");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("stimulus"), b"half").unwrap();
    // One of this (live) process: a run in progress; gc must leave it.
    let live = root.join(format!("rootfs/aaaa.tmp-{}", std::process::id()));
    std::fs::create_dir_all(&live).unwrap();

    let (path, _) = rrr(tmp.path(), &["path"]);
    assert_eq!(path.trim(), root.display().to_string());

    let (list, summary) = rrr(tmp.path(), &["list"]);
    assert!(
        list.contains("kernels") && list.contains("3.0 MiB"),
        "{list}"
    );
    let stale_line = list.lines().find(|l| l.contains("tmp-4000000")).unwrap();
    assert!(stale_line.contains("unfinished"), "{list}");
    assert!(summary.contains("3 entries"), "{summary}");

    let (_, gc) = rrr(tmp.path(), &["gc"]);
    assert!(gc.contains("removed 1 entries"), "{gc}");
    assert!(!stale.exists() && kernel.exists() && live.exists());

    rrr(tmp.path(), &["gc", "--older-than", "1"]);
    assert!(kernel.exists(), "a fresh entry is kept");
    let (_, gc) = rrr(tmp.path(), &["gc", "--all"]);
    assert!(
        gc.contains("removed 1 entries") && gc.contains("3.0 MiB"),
        "{gc}"
    );
    assert!(!kernel.exists() && live.exists());
}
