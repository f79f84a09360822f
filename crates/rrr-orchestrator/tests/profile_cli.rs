//! `rrr profile` end to end on a binary compiled here: file, TSV, kernelinfo, bad input.

use std::process::Command;

fn rrr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rrr"))
}

fn compile(dir: &std::path::Path) -> std::path::PathBuf {
    let src = dir.join("p.c");
    std::fs::write(&src, "__attribute__((noinline)) int add(int a, const char *s) { return a + s[0]; }\nint main(int c, char **v) { return add(c, v[0]); }\n").unwrap();
    let bin = dir.join("p");
    assert!(Command::new("gcc")
        .args(["-O2", "-g", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .unwrap()
        .success());
    bin
}

#[test]
fn writes_a_profile_a_listing_and_kernelinfo() {
    let dir = tempfile::tempdir().unwrap();
    let bin = compile(dir.path());
    let out = rrr()
        .arg("profile")
        .arg(&bin)
        .arg("--tsv")
        .output()
        .unwrap();
    assert!(out.status.success());
    let tsv = String::from_utf8(out.stdout).unwrap();
    assert!(
        tsv.lines()
            .any(|l| l.ends_with("\tadd\tint\tint a@rdi;const char * s@rsi")),
        "{tsv}"
    );

    let prof = dir.path().join("p.rrrprof");
    let ki = dir.path().join("kernelinfo.conf");
    let st = rrr()
        .arg("profile")
        .arg(&bin)
        .arg("-o")
        .arg(&prof)
        .args(["--kernelinfo"])
        .arg(&ki)
        .args(["--group", "tiny"])
        .status()
        .unwrap();
    assert!(st.success());
    let p = osi_profile::Profile::open(&prof).unwrap();
    assert!(p.function_by_name("add").is_some());
    let text = std::fs::read_to_string(&ki).unwrap();
    assert!(text.starts_with("[tiny]\n"), "{text}");
    // A user binary has no task_struct: the keys are there, as comments saying so.
    assert!(
        text.contains("# task.pid_offset: not in this kernel's DWARF"),
        "{text}"
    );
    // No temp files are left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.iter().all(|n| !n.to_string_lossy().contains(".tmp")),
        "{left:?}"
    );
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bzImage");
    std::fs::write(&f, b"MZ not an elf").unwrap();
    let out = rrr().arg("profile").arg(&f).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("rrr: error:") && err.contains("not an ELF file") && err.contains("vmlinux"),
        "{err}"
    );
}
