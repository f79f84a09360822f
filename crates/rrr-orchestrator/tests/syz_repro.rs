//! `rrr run --syzbot` on a crash with only a syz reproducer: syz-prog2c is built with the
//! distro's Go from exactly the crash's syzkaller commit (`make prog2c`, as syzkaller builds
//! it), run with the crash's options, and its C program becomes the stimulus.
//!
//! syzkaller itself cannot be fetched here (no network), so the repository is a small
//! stand-in with syzkaller's layout and interface: `make prog2c` builds
//! `bin/syz-prog2c` from `tools/syz-prog2c` with the real Go toolchain, and the tool takes
//! syz-prog2c's flags. It writes a C program that records the flags it was given. The
//! dashboard is the local fake syzbot.

#[path = "support/git.rs"]
mod git_repo;
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use git_repo::git;
use support::fake_syzbot::{fixture, FakeSyzbot};

const SYZ_ONLY: &str = "0000000000000000000c";

const MAKEFILE: &str = "prog2c:\n\tgo build -o ./bin/syz-prog2c ./tools/syz-prog2c\n";

/// syz-prog2c's flags; the C program it writes prints nothing and says what it was given.
const PROG2C: &str = r##"package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	prog := flag.String("prog", "", "")
	flag.String("os", "", "")
	flag.String("arch", "", "")
	flag.Bool("threaded", false, "")
	flag.Int("repeat", 1, "")
	flag.Int("procs", 1, "")
	flag.Int("slowdown", 1, "")
	flag.String("sandbox", "", "")
	flag.Int("sandbox_arg", 0, "")
	flag.Bool("segv", false, "")
	flag.Bool("tmpdir", false, "")
	flag.Bool("leak", false, "")
	flag.String("enable", "none", "")
	flag.Parse()
	data, err := os.ReadFile(*prog)
	if err != nil {
		fmt.Fprintf(os.Stderr, "failed to read prog file: %v\n", err)
		os.Exit(1)
	}
	calls := 0
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			calls++
		}
	}
	fmt.Printf("// MARKER flags: %s\n// calls: %d\nint main(void) { return 0; }\n",
		strings.Join(os.Args[1:], " "), calls)
}
"##;

/// A stand-in syzkaller repository; returns its URL (as syzbot links it) and two commits:
/// one that builds, then one whose go.mod asks for a Go that does not exist yet.
fn syzkaller_repo(dir: &Path) -> (String, String, String) {
    std::fs::create_dir_all(dir.join("tools/syz-prog2c")).unwrap();
    git(dir, &["init", "-q"]);
    let commit = |go: &str, marker: &str| {
        std::fs::write(dir.join("Makefile"), MAKEFILE).unwrap();
        std::fs::write(
            dir.join("go.mod"),
            format!("module github.com/google/syzkaller\n\ngo {go}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("tools/syz-prog2c/prog2c.go"),
            PROG2C.replace("MARKER", marker),
        )
        .unwrap();
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-qm", marker]);
        git(dir, &["rev-parse", "HEAD"])
    };
    let good = commit("1.18", "first-commit");
    let too_new = commit("9.99", "second-commit");
    let url = format!("file://{}", dir.display());
    (url, good, too_new)
}

fn bug_json(syzkaller_url: &str, commit: &str) -> Vec<u8> {
    let json = String::from_utf8(fixture("bug-syzonly.json")).unwrap();
    json.replace(
        "https://github.com/google/syzkaller/commits/b5c1f2e3d4a5",
        &format!("{syzkaller_url}/commits/{commit}"),
    )
    .replace("b5c1f2e3d4a5968778695a4b3c2d1e0f9a8b7c6d", commit)
    .into_bytes()
}

fn syzbot(json: Vec<u8>) -> FakeSyzbot {
    let mut routes: HashMap<String, Vec<u8>> = HashMap::new();
    routes.insert(format!("/bug?extid={SYZ_ONLY}&json=1"), json);
    for (link, file) in [
        ("/text?tag=ReproSyz&x=1488d6a7980000", "repro.syz"),
        ("/text?tag=KernelConfig&x=7a2f6c0b4e1d3f59", "syzbot.config"),
        ("/text?tag=CrashReport&x=10f3a2d0580000", "kasan-uaf.report"),
    ] {
        routes.insert(link.to_owned(), fixture(file));
    }
    FakeSyzbot::start(routes)
}

fn rrr_run(cache: &Path, url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rrr"))
        .args(["run", "--syzbot", SYZ_ONLY])
        .env("XDG_CACHE_HOME", cache)
        .env("RRR_SYZBOT_URL", url)
        .output()
        .unwrap()
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[test]
fn a_syz_reproducer_becomes_c_through_syz_prog2c_of_the_crash_s_syzkaller() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, good, too_new) = syzkaller_repo(&tmp.path().join("syzkaller"));
    let cache = tmp.path().join("cache");

    let server = syzbot(bug_json(&url, &good));
    let out = rrr_run(&cache, &server.url());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The conversion is done; the run then stops at the kernel, whose commit cannot be
    // fetched here (no network).
    assert!(
        stderr.contains("only a syz reproducer: converting it to C with syz-prog2c")
            && stderr.contains("cannot fetch commit 6da99b0d2a4b"),
        "{stderr}"
    );
    let crashes = cache.join("rrr/syzbot/crashes");
    let crash = std::fs::read_dir(&crashes)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("repro.syz").is_file())
        .expect("the crash is in the cache");
    let c = std::fs::read_to_string(crash.join("repro-from-syz.c")).unwrap();
    // Exactly the crash's commit was built, and given the options of the program's header.
    assert_eq!(
        c.lines().next().unwrap(),
        "// first-commit flags: -os=linux -arch=amd64 -repeat=0 -procs=1 -slowdown=1 \
         -sandbox=none -sandbox_arg=0 -enable=tun,net_dev,close_fds,vhci -threaded -prog="
            .to_owned()
            + &crash.join("repro.syz").display().to_string(),
    );
    assert!(c.contains("// calls: 3"), "{c}");
    // The stimulus was compiled from it before the kernel step.
    assert_eq!(entries(&cache.join("rrr/stimuli")), 1);

    // Built once: a second run converts with the cached syz-prog2c, with the repository gone.
    let built = cache.join("rrr/syzkaller");
    assert_eq!(entries(&built), 1);
    std::fs::remove_dir_all(tmp.path().join("syzkaller")).unwrap();
    let again = String::from_utf8_lossy(&rrr_run(&cache, &server.url()).stderr).into_owned();
    assert!(
        again.contains("cannot fetch commit 6da99b0d2a4b"),
        "{again}"
    );
    assert_eq!(entries(&built), 1);
    drop(server);

    // A syzkaller that needs a newer Go: the error says so and what to do.
    let (url, _, too_new_again) = syzkaller_repo(&tmp.path().join("syzkaller2"));
    assert_eq!(too_new, too_new_again, "fixed dates give fixed commit ids");
    let server = syzbot(bug_json(&url, &too_new));
    let out = rrr_run(&cache, &server.url());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("building syz-prog2c of syzkaller")
            && e.contains("needs Go 9.99")
            && e.contains("--crash"),
        "{e}"
    );
    assert_eq!(entries(&built), 1, "a failed build leaves no entry");
}
