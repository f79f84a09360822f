//! `rrr run --syzbot` end to end against a local fake syzbot: the bug's kernel comes from a
//! git repository by commit (here a local one holding the distro's linux-source-6.1), its
//! config is reduced for the crash report, its C reproducer is recorded and traced. Only the
//! dashboard and the git server are local; everything else is real.

#[path = "support/git.rs"]
mod git_repo;
#[path = "support/source.rs"]
mod source;
mod support;
#[path = "../../rrr-trace/tests/support/tp.rs"]
mod tp;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use git_repo::git;
use support::fake_syzbot::{fixture, FakeSyzbot};

const EXTID: &str = "e2e0e2e0e2e0e2e0e2e0";

/// A git repository holding the distro kernel source as one commit, made once per machine in
/// the tests' XDG cache (its work tree is the tests' unpacked source, left as it is); returns
/// the repository and the commit. Its fixed author and date give the same commit everywhere,
/// so the kernel built from it is found in rrr's cache next time.
fn kernel_repo() -> (PathBuf, String) {
    let repo = source::tests_cache().join("linux-6.1.git");
    if !repo.join("rrr-complete").is_file() {
        let tree = source::distro_tree();
        let _ = std::fs::remove_dir_all(&repo);
        std::fs::create_dir_all(&repo).unwrap();
        let dirs = [
            format!("--git-dir={}", repo.display()),
            format!("--work-tree={}", tree.display()),
        ];
        let with = |args: &[&str]| {
            let all: Vec<&str> = dirs
                .iter()
                .map(String::as_str)
                .chain(args.iter().copied())
                .collect();
            git(&tree, &all)
        };
        with(&["init", "-q"]);
        // -f: the packaged tree's .gitignore ignores everything (`/*`).
        with(&["add", "-A", "-f"]);
        with(&["commit", "-qm", "linux-source-6.1"]);
        std::fs::write(repo.join("rrr-complete"), "").unwrap();
    }
    let commit = git(&repo, &["--git-dir=.", "rev-parse", "HEAD"]);
    (repo, commit)
}

fn rrr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rrr"))
}

#[test]
fn a_syzbot_bug_becomes_a_trace() {
    // The bug's config: a small kernel's, as rrr builds it (with its compiler line).
    let out = rrr().arg("kernel").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tiny = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let config = std::fs::read(tiny.join("config")).unwrap();

    let (repo, commit) = kernel_repo();
    let bug = serde_json::json!({
        "version": 1,
        "title": "KASAN: slab-use-after-free Read in hci_send_acl",
        "id": "e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0",
        "status": "open",
        "crashes": [{
            "title": "KASAN: slab-use-after-free Read in hci_send_acl",
            "c-reproducer": "/text?tag=ReproC&x=e2e1",
            "kernel-config": "/text?tag=KernelConfig&x=e2e2",
            "kernel-source-git": format!("file://{}/log/?id={commit}", repo.display()),
            "kernel-source-commit": commit,
            "compiler-description": "gcc (Debian 12.2.0-14) 12.2.0",
            "architecture": "amd64",
            "crash-report-link": "/text?tag=CrashReport&x=e2e3"
        }]
    });
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/open-write-read.c");
    let routes = HashMap::from([
        (
            format!("/bug?extid={EXTID}&json=1"),
            serde_json::to_vec(&bug).unwrap(),
        ),
        (
            "/text?tag=ReproC&x=e2e1".to_owned(),
            std::fs::read(example).unwrap(),
        ),
        ("/text?tag=KernelConfig&x=e2e2".to_owned(), config),
        (
            "/text?tag=CrashReport&x=e2e3".to_owned(),
            fixture("kasan-uaf.report"),
        ),
    ]);
    let syzbot = FakeSyzbot::start(routes);
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &Path| {
        let o = rrr()
            .args([
                "run",
                "--syzbot",
                EXTID,
                "--syzbot-url",
                &syzbot.url(),
                "-o",
            ])
            .arg(out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "rrr run --syzbot failed:\n{err}");
        err
    };
    let t1 = dir.path().join("t1.pftrace");
    let err = run(&t1);
    assert!(
        err.contains("KASAN: slab-use-after-free Read in hci_send_acl"),
        "{err}"
    );

    let r = tp::query(
        &t1,
        &[
            "select count(*) from slice s join thread_track tt on s.track_id = tt.id \
             join thread t using (utid) where t.name = 'stimulus' and s.name = 'do_sys_openat2' \
             and extract_arg(s.arg_set_id, 'debug.filename') = '/tmp/rrr-example.txt'",
            "select name, idx, value from stats where value > 0 and severity in ('error', 'data_loss')",
        ],
    );
    assert_eq!(
        tp::lines(&r[0]),
        vec!["2"],
        "the reproducer's opens are traced"
    );
    assert_eq!(tp::lines(&r[1]), Vec::<String>::new(), "no import errors");

    // A second run of the same bug goes straight to the trace: the cached recording replays
    // to the same bytes.
    let t2 = dir.path().join("t2.pftrace");
    run(&t2);
    assert!(
        std::fs::read(&t1).unwrap() == std::fs::read(&t2).unwrap(),
        "the second run replays the cached recording"
    );
}
