//! A real kernel: `rrr kernel` builds Debian's linux-source-6.1 as a small traceable kernel
//! (cached under the XDG cache, so only the first run pays), and the profile's kernelinfo
//! values agree with what gdb reads from the same vmlinux.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn rrr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rrr"))
}

fn kernel() -> PathBuf {
    let out = rrr().arg("kernel").output().unwrap();
    assert!(
        out.status.success(),
        "rrr kernel failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn gdb(vmlinux: &Path, exprs: &[&str]) -> Vec<u64> {
    let mut cmd = Command::new("gdb");
    cmd.args(["-batch", "-nx"]);
    for e in exprs {
        cmd.arg("-ex")
            .arg(format!("printf \"%llu\\n\", (unsigned long long)({e})"));
    }
    let out = cmd
        .arg(vmlinux)
        .output()
        .expect("running gdb (scripts/setup installs it)");
    let text = String::from_utf8(out.stdout).unwrap();
    let vals: Vec<u64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert_eq!(
        vals.len(),
        exprs.len(),
        "gdb said:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    vals
}

#[test]
fn kernelinfo_matches_gdb_on_a_real_kernel() {
    let dir = kernel();
    let vmlinux = dir.join("vmlinux");
    assert!(dir.join("bzImage").is_file() && dir.join("vmlinux.rrrprof").is_file());

    let tmp = tempfile::tempdir().unwrap();
    let ki = tmp.path().join("kernelinfo.conf");
    let st = rrr()
        .arg("profile")
        .arg(&vmlinux)
        .arg("-o")
        .arg(tmp.path().join("p"))
        .arg("--kernelinfo")
        .arg(&ki)
        .status()
        .unwrap();
    assert!(st.success());
    let text = std::fs::read_to_string(&ki).unwrap();
    let conf: HashMap<&str, u64> = text
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .filter_map(|(k, v)| {
            Some((
                k,
                v.parse::<u64>()
                    .ok()
                    .or(v.parse::<i64>().ok().map(|i| i as u64))?,
            ))
        })
        .collect();
    let checks: &[(&str, &str)] = &[
        ("task.pid_offset", "&((struct task_struct*)0)->pid"),
        ("task.tgid_offset", "&((struct task_struct*)0)->tgid"),
        ("task.comm_offset", "&((struct task_struct*)0)->comm"),
        ("task.comm_size", "sizeof(((struct task_struct*)0)->comm)"),
        ("task.stack_offset", "&((struct task_struct*)0)->stack"),
        ("task.mm_offset", "&((struct task_struct*)0)->mm"),
        ("task.tasks_offset", "&((struct task_struct*)0)->tasks"),
        (
            "task.group_leader_offset",
            "&((struct task_struct*)0)->group_leader",
        ),
        (
            "task.real_parent_offset",
            "&((struct task_struct*)0)->real_parent",
        ),
        ("task.cred_offset", "&((struct task_struct*)0)->cred"),
        ("task.files_offset", "&((struct task_struct*)0)->files"),
        ("task.size", "sizeof(struct task_struct)"),
        ("cred.euid_offset", "&((struct cred*)0)->euid"),
        ("mm.pgd_offset", "&((struct mm_struct*)0)->pgd"),
        (
            "vma.vm_file_offset",
            "&((struct vm_area_struct*)0)->vm_file",
        ),
        (
            "fs.f_path_dentry_offset",
            "&((struct file*)0)->f_path.dentry",
        ),
        ("fs.fdt_offset", "&((struct files_struct*)0)->fdt"),
        ("qstr.name_offset", "&((struct qstr*)0)->name"),
        ("path.d_iname_offset", "&((struct dentry*)0)->d_iname"),
        ("task.init_addr", "&init_task"),
        ("task.per_cpu_offsets_addr", "&__per_cpu_offset"),
        ("task.current_task_addr", "&current_task"),
    ];
    let want = gdb(&vmlinux, &checks.iter().map(|c| c.1).collect::<Vec<_>>());
    for ((key, expr), want) in checks.iter().zip(want) {
        assert_eq!(conf.get(key), Some(&want), "{key} vs gdb's {expr}\n{text}");
    }
    assert!(text.contains("version.a = 6\nversion.b = 1\n"), "{text}");

    // The kernel's open path is in the listing with its types and ABI registers.
    let out = rrr()
        .arg("profile")
        .arg(&vmlinux)
        .arg("--tsv")
        .output()
        .unwrap();
    let tsv = String::from_utf8(out.stdout).unwrap();
    assert!(
        tsv.lines().any(|l| l.ends_with("\tdo_sys_openat2\tlong int\tint dfd@rdi;const char * filename@rsi;struct open_how * how@rdx")),
        "do_sys_openat2 missing or different"
    );
}

#[test]
fn a_tree_that_does_not_build_shows_makes_output() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("Makefile"),
        "tinyconfig:\n\t@echo 'no kernel here' >&2; exit 2\n",
    )
    .unwrap();
    let out = rrr()
        .arg("kernel")
        .arg("--src")
        .arg(tmp.path())
        .env("XDG_CACHE_HOME", tmp.path().join("cache"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("make tinyconfig failed") && err.contains("no kernel here"),
        "{err}"
    );
    // Nothing half-built is left in the cache.
    let kernels = tmp.path().join("cache/rrr/kernels");
    let left: Vec<_> = std::fs::read_dir(&kernels)
        .map(|d| d.count())
        .into_iter()
        .collect();
    assert!(left.iter().all(|&n| n == 0), "{left:?}");
}

#[test]
fn a_missing_source_says_what_to_pass() {
    let out = rrr()
        .args(["kernel", "--src", "/nonexistent/linux"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--src DIR|TARBALL"), "{err}");
}
