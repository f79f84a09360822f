//! `rrr watch` checks shared by the engines' tests (the crate root has `mod tp` and `mod cli`).

use std::path::Path;

use crate::cli::{ok, rrr};
use crate::tp;

/// Runs `rrr watch ... --format json` and returns its events.
pub fn events(cmd: &mut std::process::Command) -> Vec<serde_json::Value> {
    let out = ok(cmd);
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// On a recording of `examples/open-write-read.c` (`rec`, traced into `trace`): watching the
/// writer's `struct file` (the pointer its open's `alloc_empty_file` returned, as the trace
/// shows it) up to its refcount lists the file's allocation on the stimulus's thread, the
/// refcount's writes from 1 down to 0, and the file's free.
pub fn a_files_lifetime(rec: &Path, trace: &Path, vmlinux: &Path) {
    let r = tp::query(
        trace,
        &[
            "select extract_arg(s.arg_set_id, 'debug.return (struct file *)'), s.ts, \
             s.ts + s.dur from slice s \
             join thread_track tt on s.track_id = tt.id join thread th using (utid) \
             where th.name = 'stimulus' and s.name = 'alloc_empty_file' and exists(select 1 \
             from ancestor_slice(s.id) a where a.name = 'do_sys_openat2') order by s.ts limit 1",
        ],
    );
    let row: Vec<i64> = tp::lines(&r[0])[0]
        .split('|')
        .map(|v| v.parse().unwrap())
        .collect();
    let file = row[0] as u64;
    // When the open allocated it: the same address may have held other objects before
    // (a bio, an anon_vma), allocated by the stimulus too.
    let (opened, allocated) = (row[1] as u64, row[2] as u64);
    // The refcount's offset, as gdb reads it from the kernel's DWARF.
    let gdb = std::process::Command::new("gdb")
        .args(["-q", "-batch", "-ex", "p/d &((struct file *)0)->f_count"])
        .arg(vmlinux)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&gdb.stdout);
    let f_count: u64 = said
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("gdb: {said}"));
    let events = events(rrr().args([
        "watch",
        rec.to_str().unwrap(),
        &format!("{file:#x}:{}", f_count + 8),
        "--format",
        "json",
    ]));
    let addr = |e: &serde_json::Value| {
        u64::from_str_radix(e["addr"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    };
    let alloc = events
        .iter()
        .position(|e| {
            let ts = e["ts"].as_u64().unwrap();
            e["kind"] == "alloc"
                && addr(e) == file
                && e["comm"] == "stimulus"
                && (opened..=allocated).contains(&ts)
        })
        .unwrap_or_else(|| panic!("the open's allocation: {events:#?}"));
    let refcount: Vec<&str> = events[alloc..]
        .iter()
        .take_while(|e| e["kind"] != "free")
        .filter(|e| e["kind"] == "write" && addr(e) == file + f_count && e["size"] == 8)
        .map(|e| e["value"].as_str().unwrap())
        .collect();
    assert_eq!(
        refcount.first().copied(),
        Some("0x1"),
        "the open sets the refcount to 1: {events:#?}"
    );
    assert_eq!(
        refcount.last().copied(),
        Some("0x0"),
        "the close drops it to 0: {events:#?}"
    );
    let free = events[alloc..]
        .iter()
        .find(|e| e["kind"] == "free")
        .unwrap_or_else(|| panic!("the file's free: {events:#?}"));
    assert_eq!(addr(free), file);
    assert!(
        free["stack"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "file_free_rcu" || f == "__fput"),
        "{free}"
    );
}
