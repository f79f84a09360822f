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

/// What `rrr` says and prints for `rrr kernel ARGS` with its cache in `cache`.
fn kernel_in(cache: &Path, args: &[&str], env: &[(&str, &str)]) -> PathBuf {
    let out = rrr()
        .arg("kernel")
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rrr kernel {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The number of functions in a kernel's profile (`rrr profile --tsv` lines).
fn function_count(kernel: &Path) -> usize {
    let out = rrr()
        .arg("profile")
        .arg(kernel.join("vmlinux"))
        .arg("--tsv")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// The distro's kernel source with one compiled file changed, as a plain tarball in `dir`.
fn changed_tarball(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("linux")).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg("/usr/src/linux-source-6.1.tar.xz")
        .arg("--strip-components=1")
        .arg("-C")
        .arg(src.join("linux"))
        .status()
        .unwrap();
    assert!(st.success());
    let fork = src.join("linux/kernel/fork.c");
    let mut text = std::fs::read_to_string(&fork).unwrap();
    text.push_str("\n/* rrr: one changed file */\n");
    std::fs::write(&fork, text).unwrap();
    let tarball = dir.join("linux-changed.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&src)
        .arg("linux")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_dir_all(&src).unwrap();
    tarball
}

/// ccache's statistic `name` (`ccache --print-stats`) for the store in `dir`.
fn ccache_stat(dir: &Path, name: &str) -> u64 {
    let out = Command::new("ccache")
        .arg("--print-stats")
        .env("CCACHE_DIR", dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}\t"))?.trim().parse().ok())
        .unwrap_or(0)
}

/// A kernel built from a tree that differs in one file compiles almost nothing: ccache (on
/// by default, its store in rrr's cache) hits for the rest. And a build through distcc, to a
/// real distccd on 127.0.0.1, gives the same kernel.
#[test]
fn a_tree_with_one_changed_file_hits_the_compiler_cache_and_distcc_builds_the_same_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let started = std::time::Instant::now();
    let cold = kernel_in(&cache, &[], &[]);
    eprintln!("cold build: {:.0} s", started.elapsed().as_secs_f64());
    let store = cache.join("rrr/ccache/store");
    assert!(
        ccache_stat(&store, "cache_miss") > 500,
        "the cold build filled the store"
    );
    let tarball = changed_tarball(tmp.path());
    let st = Command::new("ccache")
        .arg("--zero-stats")
        .env("CCACHE_DIR", &store)
        .status()
        .unwrap();
    assert!(st.success());
    let src = tarball.to_string_lossy().into_owned();
    let started = std::time::Instant::now();
    let warm = kernel_in(&cache, &["--src", &src], &[]);
    eprintln!(
        "rebuild with one changed file, through ccache: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert_ne!(cold, warm, "another tree, another cache entry");
    let hits =
        ccache_stat(&store, "direct_cache_hit") + ccache_stat(&store, "preprocessed_cache_hit");
    let misses = ccache_stat(&store, "cache_miss");
    assert!(
        hits * 10 > (hits + misses) * 9,
        "the rebuild hits the compiler cache: {hits} hits, {misses} misses"
    );
    let list = rrr()
        .args(["cache", "list"])
        .env("XDG_CACHE_HOME", &cache)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("ccache"),
        "rrr cache list shows the compiler cache"
    );

    // distcc to a distccd on 127.0.0.1, without ccache: every compile job is the daemon's.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = tmp.path().join("distccd.log");
    let mut daemon = Command::new("distccd")
        .args([
            "--no-detach",
            "--daemon",
            "--allow",
            "127.0.0.1",
            "--listen",
            "127.0.0.1",
        ])
        .args([
            "--port",
            &port.to_string(),
            "--jobs",
            "2",
            "--log-level",
            "info",
        ])
        // Its log on stderr: run as root, it drops to its own user, who cannot write here.
        .arg("--log-stderr")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let fragment = tmp.path().join("distcc.config");
    std::fs::write(&fragment, "# built through distcc\n").unwrap();
    let hosts = format!("127.0.0.1:{port}/2");
    let started = std::time::Instant::now();
    let farm = kernel_in(
        &cache,
        &[
            "--src",
            &src,
            "--no-ccache",
            "--cc-launcher",
            "distcc",
            "--fragment",
            &fragment.to_string_lossy(),
        ],
        &[("DISTCC_HOSTS", &hosts), ("DISTCC_FALLBACK", "0")],
    );
    eprintln!(
        "the same through distcc to 127.0.0.1, without ccache: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    let jobs = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("COMPILE_OK"))
        .count();
    assert!(jobs > 500, "distccd compiled the kernel: {jobs} jobs");
    assert_eq!(function_count(&farm), function_count(&warm));
}
