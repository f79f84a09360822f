//! `rrr syzbot` against a local fake syzbot (loopback, fixture JSON and text assets): the
//! chosen crash's files land in the cache; a bad id, a bug without a reproducer, malformed
//! JSON and an unreachable syzbot give clear errors; the cache serves offline.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::fake_syzbot::{fixture, FakeSyzbot};

const EXTID: &str = "c6d438f2d77f96cae7c2";
const NOREPRO: &str = "0000000000000000000a";
const MALFORMED: &str = "0000000000000000000b";
const SYZ_ONLY: &str = "0000000000000000000c";

fn routes() -> HashMap<String, Vec<u8>> {
    let mut routes: HashMap<String, Vec<u8>> = HashMap::new();
    routes.insert(
        format!("/bug?extid={EXTID}&json=1"),
        fixture("bug-uaf.json"),
    );
    routes.insert(
        format!("/bug?extid={NOREPRO}&json=1"),
        fixture("bug-norepro.json"),
    );
    routes.insert(
        format!("/bug?extid={SYZ_ONLY}&json=1"),
        fixture("bug-syzonly.json"),
    );
    routes.insert(
        format!("/bug?extid={MALFORMED}&json=1"),
        b"<!doctype html><title>syzbot</title>".to_vec(),
    );
    for (link, file) in [
        ("/text?tag=ReproSyz&x=1488d6a7980000", "repro.syz"),
        ("/text?tag=ReproC&x=16c7a2d0580000", "repro.c"),
        ("/text?tag=KernelConfig&x=7a2f6c0b4e1d3f59", "syzbot.config"),
        ("/text?tag=CrashReport&x=10f3a2d0580000", "kasan-uaf.report"),
    ] {
        routes.insert(link.to_owned(), fixture(file));
    }
    routes
}

fn rrr_syzbot(cache: &Path, url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rrr"))
        .arg("syzbot")
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .env("RRR_SYZBOT_URL", url)
        .output()
        .unwrap()
}

fn rrr_run_syzbot(cache: &Path, url: &str, bug: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rrr"))
        .args(["run", "--syzbot", bug])
        .env("XDG_CACHE_HOME", cache)
        .env("RRR_SYZBOT_URL", url)
        .output()
        .unwrap()
}

fn stdout_ok(out: &Output) -> PathBuf {
    assert!(
        out.status.success(),
        "rrr syzbot failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout.clone()).unwrap().trim())
}

fn stderr(out: &Output) -> String {
    assert!(!out.status.success(), "rrr syzbot should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bug_is_fetched_into_the_cache_and_served_offline() {
    let cache = tempfile::tempdir().unwrap();
    let syzbot = FakeSyzbot::start(routes());
    let url = syzbot.url();
    let link = format!("https://syzkaller.appspot.com/bug?extid={EXTID}");
    let out = rrr_syzbot(cache.path(), &url, &[&link]);
    let dir = stdout_ok(&out);
    assert!(
        dir.starts_with(cache.path().join("rrr/syzbot/crashes")),
        "{}",
        dir.display()
    );
    // The first crash has only a syz reproducer: the one with a C reproducer is chosen.
    assert_eq!(
        std::fs::read(dir.join("repro.c")).unwrap(),
        fixture("repro.c")
    );
    assert_eq!(
        std::fs::read(dir.join("repro.syz")).unwrap(),
        fixture("repro.syz")
    );
    assert_eq!(
        std::fs::read(dir.join("kernel.config")).unwrap(),
        fixture("syzbot.config")
    );
    assert_eq!(
        std::fs::read(dir.join("report.txt")).unwrap(),
        fixture("kasan-uaf.report")
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    for want in [
        "KASAN: slab-use-after-free Read in hci_send_acl",
        "crash     #1 of 2",
        "6da99b0d2a4b5f3a2c1e0d9f8e7d6c5b4a392817",
        "gcc (Debian 12.2.0-14)",
    ] {
        assert!(summary.contains(want), "{want} in:\n{summary}");
    }
    // --crash 0 picks the syz-only crash (its files are not served: the download fails
    // clearly and leaves no half entry).
    let out = rrr_syzbot(cache.path(), &url, &[EXTID, "--crash", "0"]);
    let e = stderr(&out);
    assert!(
        e.contains("syzbot answered 404") && e.contains("KernelConfig"),
        "{e}"
    );

    // syzbot goes away: the cached bug and files still serve, with a warning.
    drop(syzbot);
    let out = rrr_syzbot(cache.path(), &url, &[EXTID]);
    assert_eq!(stdout_ok(&out), dir);
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning.contains("cannot reach syzbot") && warning.contains("cached"),
        "{warning}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(cache.path().join("rrr/syzbot/crashes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no half entries: {leftovers:?}");
}

#[test]
fn bad_ids_missing_reproducers_and_bad_answers_are_clear_errors() {
    let cache = tempfile::tempdir().unwrap();
    let syzbot = FakeSyzbot::start(routes());
    let url = syzbot.url();

    let e = stderr(&rrr_syzbot(cache.path(), &url, &["ffffffffffffffffffff"]));
    assert!(
        e.contains("syzbot has no bug `ffffffffffffffffffff`") && e.contains("404"),
        "{e}"
    );

    let e = stderr(&rrr_syzbot(cache.path(), &url, &["not-a-bug"]));
    assert!(
        e.contains("is not a syzbot bug") && e.contains("extid"),
        "{e}"
    );

    let e = stderr(&rrr_syzbot(cache.path(), &url, &[NOREPRO]));
    assert!(
        e.contains("INFO: task hung in rtnl_lock") && e.contains("no reproducer"),
        "{e}"
    );

    let e = stderr(&rrr_syzbot(cache.path(), &url, &[MALFORMED]));
    assert!(
        e.contains("not the bug JSON") && e.contains("<!doctype html>"),
        "{e}"
    );

    // A bug with a syz reproducer only is fetched; `rrr run` goes for syz-prog2c of its
    // syzkaller commit, which does not exist (tests/syz_repro.rs converts one that does).
    let dir = stdout_ok(&rrr_syzbot(cache.path(), &url, &[SYZ_ONLY]));
    assert!(dir.join("repro.syz").is_file() && !dir.join("repro.c").exists());
    let e = stderr(&rrr_run_syzbot(cache.path(), &url, SYZ_ONLY));
    assert!(
        e.contains("only a syz reproducer")
            && e.contains("cannot fetch commit b5c1f2e3d4a5968778695a4b3c2d1e0f9a8b7c6d"),
        "{e}"
    );
    let e = stderr(&rrr_run_syzbot(cache.path(), &url, "ffffffffffffffffffff"));
    assert!(e.contains("syzbot has no bug"), "{e}");

    drop(syzbot);
    let e = stderr(&rrr_syzbot(cache.path(), &url, &[EXTID]));
    assert!(
        e.contains("cannot reach syzbot") && e.contains("not in the cache"),
        "{e}"
    );
}

#[test]
fn kernel_explain_lists_the_reduction_of_a_syzbot_config() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/syzbot");
    let out = Command::new(env!("CARGO_BIN_EXE_rrr"))
        .args(["kernel", "--explain", "--config"])
        .arg(dir.join("syzbot.config"))
        .arg("--report")
        .arg(dir.join("lockdep-deadlock.report"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "CONFIG_KCOV=n  # coverage",
        "CONFIG_KASAN=n  # KASAN checks every memory access",
        "CONFIG_RANDOMIZE_BASE=n",
        "CONFIG_PROVE_LOCKING  # kept: the crash is a lockdep report (`WARNING: possible circular locking dependency detected`)",
    ] {
        assert!(text.contains(want), "{want} in:\n{text}");
    }
    assert!(!text.contains("CONFIG_PROVE_LOCKING=n"), "{text}");
}
