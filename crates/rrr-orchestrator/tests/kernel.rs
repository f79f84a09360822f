//! A real kernel: `rrr kernel` builds Debian's linux-source-6.1 as a small traceable kernel
//! (cached under the XDG cache, so only the first run pays), and the profile's kernelinfo
//! values agree with what gdb reads from the same vmlinux.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "support/source.rs"]
mod source;

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
    let tree = tmp.path().join("linux");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(
        tree.join("Makefile"),
        "tinyconfig:\n\t@echo 'no kernel here' >&2; exit 2\n",
    )
    .unwrap();
    let err = a_failed_build(tmp.path(), &tree, &[]);
    assert!(
        err.contains("make tinyconfig failed") && err.contains("no kernel here"),
        "{err}"
    );
}

/// `rrr kernel --src TREE ARGS` with its cache in `tmp`, which must fail and leave nothing
/// half-built in the cache, where the build was staged; returns what it said.
fn a_failed_build(tmp: &Path, tree: &Path, args: &[&std::ffi::OsStr]) -> String {
    let out = rrr()
        .arg("kernel")
        .arg("--src")
        .arg(tree)
        .args(args)
        .env("XDG_CACHE_HOME", tmp.join("cache"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let kernels = tmp.join("cache/rrr/kernels");
    let left = std::fs::read_dir(&kernels)
        .expect("the build was staged in the kernels' cache")
        .count();
    assert_eq!(left, 0, "left in {}", kernels.display());
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn a_patch_that_does_not_apply_names_its_hunk_and_leaves_nothing_in_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("linux");
    std::fs::create_dir_all(tree.join("kernel")).unwrap();
    std::fs::write(tree.join("Makefile"), "tinyconfig:\n\ttrue\n").unwrap();
    std::fs::write(tree.join("kernel/fork.c"), "one\ntwo\nthree\n").unwrap();
    let patch = tmp.path().join("fix.patch");
    std::fs::write(
        &patch,
        "--- a/kernel/fork.c\n+++ b/kernel/fork.c\n@@ -1,3 +1,3 @@\n one\n-deux\n+DEUX\n three\n",
    )
    .unwrap();
    let err = a_failed_build(tmp.path(), &tree, &["--patch".as_ref(), patch.as_os_str()]);
    assert!(
        err.contains(&format!("the patch {} does not apply", patch.display()))
            && err.contains("patching file kernel/fork.c")
            && err.contains("Hunk #1 FAILED"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(tree.join("kernel/fork.c")).unwrap(),
        "one\ntwo\nthree\n",
        "the tree is not touched"
    );
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

/// ccache's hits and misses in the store `dir` since its statistics were zeroed.
fn hits_and_misses(dir: &Path) -> (u64, u64) {
    let hits = ccache_stat(dir, "direct_cache_hit") + ccache_stat(dir, "preprocessed_cache_hit");
    (hits, ccache_stat(dir, "cache_miss"))
}

fn zero_stats(dir: &Path) {
    let st = Command::new("ccache")
        .arg("--zero-stats")
        .env("CCACHE_DIR", dir)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A copy of `tree` at `dest` made of hard links (instant, no space): change its files only
/// with `replace`, never in place.
fn link_copy(tree: &Path, dest: &Path) {
    let st = Command::new("cp")
        .arg("-al")
        .arg(tree)
        .arg(dest)
        .status()
        .unwrap();
    assert!(st.success(), "cp -al {} {}", tree.display(), dest.display());
}

/// Appends `line` to the file `path` of a hard-linked copy: the file is written anew and renamed
/// over the link, so the tree it was linked from keeps its own.
fn replace(path: &Path, line: &str) {
    let mut text = std::fs::read_to_string(path).unwrap();
    text.push_str(line);
    let new = path.with_extension("rrr-new");
    std::fs::write(&new, text).unwrap();
    std::fs::rename(&new, path).unwrap();
}

/// A distccd on 127.0.0.1 (a free port, two jobs) logging to its file, in a process group of
/// its own: dropping it ends the daemon and the workers it forked (which would otherwise keep
/// the test's output open).
struct Distccd {
    daemon: std::process::Child,
    port: u16,
}

impl Distccd {
    fn start(log: &Path) -> Self {
        use std::os::unix::process::CommandExt;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let daemon = Command::new("distccd")
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
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .process_group(0)
            .spawn()
            .expect("running distccd (scripts/setup installs distcc)");
        std::thread::sleep(std::time::Duration::from_millis(500));
        Distccd { daemon, port }
    }
}

impl Drop for Distccd {
    fn drop(&mut self) {
        let group = format!("-{}", self.daemon.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.daemon.wait();
    }
}

/// A kernel built from a tree that differs from the default kernel's source in one file
/// compiles only that file: ccache (on by default, its store in rrr's cache; here a copy of the
/// normal store, so no cold build is needed) hits for the rest, although the tree lies outside
/// rrr's cache. Then, with distcc as the compiler launcher behind ccache (`CCACHE_PREFIX`, as
/// the README tells users), a tree with one more changed file sends that file's compile to a
/// real distccd on 127.0.0.1, and gives a kernel with the same functions.
#[test]
fn a_tree_with_one_changed_file_hits_the_compiler_cache_and_its_miss_goes_to_distcc() {
    let tiny = kernel();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    // The normal store, which built `tiny` (no cold build here), copied.
    let normal = source::xdg_cache().join("rrr/ccache/store");
    let store = cache.join("rrr/ccache/store");
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(&normal)
        .arg(&store)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "the default kernel's compiler cache is at {}",
        normal.display()
    );
    zero_stats(&store);

    let one = tmp.path().join("one");
    link_copy(&source::distro_tree(), &one);
    // Code, not a comment: ccache's preprocessor mode hits on a comment-only change.
    replace(
        &one.join("kernel/fork.c"),
        "\nstatic int __maybe_unused rrr_changed_fork = 1;\n",
    );
    let started = std::time::Instant::now();
    let warm = kernel_in(&cache, &["--src", &one.to_string_lossy()], &[]);
    eprintln!(
        "rebuild with one changed file, through ccache: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert_ne!(tiny, warm, "another tree, another cache entry");
    let (hits, misses) = hits_and_misses(&store);
    assert!(
        hits > 500 && hits * 10 > (hits + misses) * 9 && misses >= 1,
        "the rebuild hits the compiler cache but for the changed file: {hits} hits, {misses} misses"
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

    // One more changed file, its compile sent by ccache to distccd on 127.0.0.1.
    let two = tmp.path().join("two");
    link_copy(&one, &two);
    replace(
        &two.join("kernel/exit.c"),
        "\nstatic int __maybe_unused rrr_changed_exit = 1;\n",
    );
    let log = tmp.path().join("distccd.log");
    let daemon = Distccd::start(&log);
    zero_stats(&store);
    let hosts = format!("127.0.0.1:{}/2", daemon.port);
    let started = std::time::Instant::now();
    let farm = kernel_in(
        &cache,
        &["--src", &two.to_string_lossy(), "--cc-launcher", "distcc"],
        &[("DISTCC_HOSTS", &hosts), ("DISTCC_FALLBACK", "0")],
    );
    eprintln!(
        "the same with another changed file, through ccache and distcc to 127.0.0.1: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    drop(daemon);
    let jobs = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("COMPILE_OK"))
        .count();
    let (hits, misses) = hits_and_misses(&store);
    assert!(
        (1..50).contains(&jobs) && misses >= 1 && hits * 10 > (hits + misses) * 9,
        "distccd compiled what ccache missed ({jobs} jobs; {hits} hits, {misses} misses)"
    );
    assert_eq!(function_count(&farm), function_count(&warm));
}
