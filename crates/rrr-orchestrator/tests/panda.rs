//! The PANDA engine. With `panda-system-x86_64` in `RRR_PANDA` or on PATH: the small real kernel and a real
//! stimulus recorded by PANDA and replayed under the `rrr_trace` plugin, the trace checked
//! with Perfetto's trace processor, gdb and `rrr watch` on its replays; a real syzbot
//! use-after-free recorded by PANDA and its story told. Without it (CI: PANDA is in no package registry), what
//! must hold anyway: the missing emulator is reported with what to do, the plugin installs
//! where PANDA loads it, and recordings refuse the other engine.

#[path = "../../rrr-trace/tests/support/tp.rs"]
mod tp;

#[path = "support/cli.rs"]
mod cli;

#[path = "support/watch.rs"]
mod watch;

#[path = "support/story.rs"]
mod story;

use std::path::Path;

use cli::{example, fails, gdb_session, manifest, ok, rrr, write_manifest};

/// How many fresh ready snapshots the PANDA test records from.
const SNAPSHOTS: usize = 5;

/// Whether rrr is to find PANDA: `RRR_PANDA` names it (the test then fails if it is not
/// there, never skips: `scripts/test` sets it to the PANDA for tests), or it is on PATH.
fn panda_given() -> bool {
    std::env::var_os("RRR_PANDA").is_some_and(|p| !p.is_empty())
        || std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join("panda-system-x86_64").is_file())
}

#[test]
fn the_plugin_installs_under_pandas_name() {
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("plugins");
    let path = ok(rrr().args(["install-panda-plugin", "--to"]).arg(&to));
    assert_eq!(Path::new(&path), to.join("panda_rrr_trace.so"));
    let so = std::fs::read(&path).unwrap();
    assert_eq!(&so[..4], b"\x7fELF");
    for symbol in [
        &b"init_plugin"[..],
        b"uninit_plugin",
        b"rr_get_guest_instr_count",
    ] {
        assert!(
            so.windows(symbol.len()).any(|w| w == symbol),
            "PANDA's entry points and API are linked: {}",
            String::from_utf8_lossy(symbol)
        );
    }
}

#[test]
fn a_recording_replays_only_on_its_engine() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    std::fs::create_dir(&rec).unwrap();
    write_manifest(&rec, "panda");
    let err = fails(rrr().arg("trace").arg(&rec).args(["--engine", "qemu"]));
    assert!(
        err.contains("recorded with the panda engine") && err.contains("--engine qemu"),
        "{err}"
    );
    write_manifest(&rec, "bochs");
    let err = fails(rrr().arg("trace").arg(&rec));
    assert!(
        err.contains("unknown variant `bochs`") && err.contains("recording.json"),
        "{err}"
    );
}

#[test]
fn a_real_kernel_run_is_recorded_and_traced_by_panda() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = ok(rrr().arg("kernel"));
    let stimulus = ok(rrr().arg("stimulus").arg(example("open-write-read.c")));
    let rec = dir.path().join("rec-missing-panda");
    let record = || {
        let mut c = rrr();
        c.args(["record", "--engine", "panda", "--kernel", &kernel])
            .args(["--stimulus", &stimulus, "-o"])
            .arg(&rec);
        c
    };
    if !panda_given() {
        let err = fails(&mut record());
        assert!(
            err.contains("panda-system-x86_64") && err.contains("--engine qemu"),
            "{err}"
        );
        // Straight to stderr, past the test harness's capture: a skip must show in CI's log.
        std::io::Write::write_all(
            &mut std::io::stderr(),
            b"SKIPPED the PANDA recording and replay: panda-system-x86_64 is neither in \
              RRR_PANDA nor on PATH (only its error message was checked)\n",
        )
        .unwrap();
        return;
    }
    // Each fresh ready snapshot (its own cache directory, sharing only the kernel and the
    // stimulus): PANDA records from it, to the stimulus's end, and gdb steps back in its
    // recording.
    let main_cache = ok(rrr().args(["cache", "path"]));
    let vmlinux = Path::new(&kernel).join("vmlinux");
    for i in 0..SNAPSHOTS {
        let cache = dir.path().join(format!("cache-{i}"));
        std::fs::create_dir_all(cache.join("rrr")).unwrap();
        for shared in ["kernels", "stimuli"] {
            std::os::unix::fs::symlink(
                Path::new(&main_cache).join(shared),
                cache.join("rrr").join(shared),
            )
            .unwrap();
        }
        let rec = dir.path().join(format!("rec-{i}"));
        let out = rrr()
            .env("XDG_CACHE_HOME", &cache)
            .args(["record", "--engine", "panda", "--kernel", &kernel])
            .args(["--stimulus", &stimulus, "-o"])
            .arg(&rec)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "snapshot {i}: {said}");
        let m = manifest(&rec);
        assert!(
            m["engine"] == "panda" && m["outcome"]["ended"]["status"] == 0,
            "snapshot {i}: {m}\n{said}"
        );
        // `rrr replay --gdb`: the replay waits for gdb (the guest halted, waiting for the
        // console's input); gdb runs to the first timer interrupt, steps forward and back
        // again, continues to the next timer interrupt and back to the first.
        let g = gdb_session(
            &rec,
            None,
            &vmlinux,
            &[
                "break sysvec_apic_timer_interrupt",
                "continue",
                "p jiffies",
                "stepi",
                "stepi",
                "stepi",
                "p/x $pc",
                "reverse-stepi",
                "reverse-stepi",
                "p/x $pc",
                "stepi",
                "stepi",
                "p/x $pc",
                "continue",
                "p jiffies",
                "reverse-continue",
                "p jiffies",
            ],
        );
        let (said, v) = (&g.said, g.values());
        assert_eq!(v.len(), 6, "snapshot {i}: {said}{}", g.stderr);
        assert_ne!(v[2], v[1], "snapshot {i}: reverse-stepi went back: {said}");
        assert_eq!(
            v[3], v[1],
            "snapshot {i}: and forward again to the same place: {said}"
        );
        assert_ne!(v[4], v[0], "snapshot {i}: the next tick: {said}");
        assert_eq!(
            v[5], v[0],
            "snapshot {i}: reverse-continue went back to the first tick: {said}"
        );
    }
    let rec = dir.path().join("rec-0");

    let trace = dir.path().join("t.pftrace");
    ok(rrr().arg("trace").arg(&rec).arg("-o").arg(&trace));
    let on_stimulus = "from slice s join thread_track tt on s.track_id = tt.id \
        join thread t using (utid) join process p using (upid) \
        where t.name = 'stimulus' and p.name = 'stimulus'";
    let r = tp::query(
        &trace,
        &[
            &format!(
                "select count(*) {on_stimulus} and s.name = 'do_sys_openat2' \
                 and extract_arg(s.arg_set_id, 'debug.filename') = '/tmp/rrr-example.txt'"
            ),
            &format!(
                "select extract_arg(s.arg_set_id, 'debug.return') {on_stimulus} \
                 and s.name = 'ksys_write' and extract_arg(s.arg_set_id, 'debug.fd') > 2"
            ),
            "select count(*) from slice where dur < 0",
            "select name, idx, value from stats where value > 0 and severity in ('error', 'data_loss')",
            &format!(
                "select s.ts {on_stimulus} and s.name = 'ksys_write' \
                 and extract_arg(s.arg_set_id, 'debug.fd') > 2"
            ),
            tp::UNNAMED_THREADS,
        ],
    );
    assert_eq!(
        tp::lines(&r[0]),
        vec!["2"],
        "both threads' opens, with filename"
    );
    assert_eq!(tp::lines(&r[1]), vec!["15"], "one write of 15 bytes");
    assert_eq!(tp::lines(&r[2]), vec!["0"]);
    assert_eq!(tp::lines(&r[3]), Vec::<String>::new(), "no import errors");
    assert_eq!(tp::lines(&r[5]), Vec::<String>::new(), "unnamed threads");

    // `rrr replay --gdb --at TS`: PANDA stops at instruction TS, the write the trace shows
    // there; gdb can step back from it into its caller.
    let write_ts: u64 = tp::lines(&r[4])[0].parse().unwrap();
    let g = gdb_session(
        &rec,
        Some(write_ts),
        &vmlinux,
        &[
            "info symbol $pc",
            "p count",
            "reverse-stepi",
            "info symbol $pc",
        ],
    );
    let said = &g.said;
    assert!(
        g.printed
            .contains(&format!("maint packet qPandaCmd:rrbreakpoint:{write_ts}")),
        "PANDA stops at the instruction count: {:?}",
        g.printed
    );
    let symbols: Vec<&str> = said
        .lines()
        .filter(|l| l.contains(" in section "))
        .collect();
    assert!(
        symbols.len() == 2
            && symbols[0].starts_with("ksys_write in section")
            && !symbols[1].starts_with("ksys_write")
            && said.contains("= 15"),
        "gdb stops at the entry of the stimulus's write of 15 bytes, and steps back out of \
         it:\n{said}\n{}",
        g.stderr
    );

    // A size budget on PANDA: a quarter of the whole trace, the end kept, in one replay.
    let whole = std::fs::metadata(&trace).unwrap().len();
    let cut = dir.path().join("cut.pftrace");
    let budget = whole / 4;
    let out = rrr()
        .arg("trace")
        .arg(&rec)
        .arg("-o")
        .arg(&cut)
        .args(["--max-size", &budget.to_string()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("the trace keeps the end"),
        "{said}"
    );
    let size = std::fs::metadata(&cut).unwrap().len();
    assert!(
        size <= budget && size > budget / 2,
        "{size} bytes for {budget}"
    );
    let last = "select max(ts + dur) from slice";
    let r = tp::query(
        &cut,
        &[
            last,
            "select count(*) from slice where dur < 0",
            "select name, idx, value from stats where value > 0 and severity in ('error', 'data_loss')",
        ],
    );
    let whole_end = tp::query(&trace, &[last]);
    assert_eq!(
        tp::lines(&r[0]),
        tp::lines(&whole_end[0]),
        "the end is kept"
    );
    assert_eq!(tp::lines(&r[1]), vec!["0"]);
    assert_eq!(tp::lines(&r[2]), Vec::<String>::new(), "no import errors");

    // `rrr watch` on PANDA (its memory callbacks): the writer's file, from open to free.
    watch::a_files_lifetime(&rec, &trace, &vmlinux);
}

/// A real syzbot use-after-free (`tests/bugs/seccomp_listener`, its fix reverted) recorded by
/// PANDA, on the KASAN crash-test kernel: `rrr run` ends with the same story as on QEMU (the
/// filter allocated and freed by the reproducer's seccomp in one thread, the listener's close
/// in the main thread), and the trace's flows link the three.
#[test]
fn a_real_use_after_free_s_story_is_told_from_a_panda_recording() {
    if !panda_given() {
        std::io::Write::write_all(
            &mut std::io::stderr(),
            b"SKIPPED the PANDA story of a real use-after-free: panda-system-x86_64 is neither \
              in RRR_PANDA nor on PATH\n",
        )
        .unwrap();
        return;
    }
    let bug = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bugs");
    let repro = bug.join("seccomp_listener/repro.c");
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    let said = story::ok_said(
        rrr()
            .args(["run", "--engine", "panda", "--stimulus"])
            .arg(&repro)
            .args(["--fragment", "crash-test", "--fragment"])
            .arg(bug.join("bugs.config"))
            .arg("--patch")
            .arg(bug.join("seccomp_listener/fix-reverted.patch"))
            .args(["--timeout", "120", "--attempts", "2", "-o"])
            .arg(&trace),
    );
    assert!(
        said.contains("verdict: KASAN: use-after-free Write in mutex_lock"),
        "{said}"
    );
    let rec = story::recording_of(&said);
    assert_eq!(manifest(Path::new(&rec))["engine"], "panda");
    let story = story::explained(&rec);
    let stack = |step: &serde_json::Value| -> Vec<String> {
        step["stack"].as_array().unwrap()[..2]
            .iter()
            .map(|f| f.as_str().unwrap().to_owned())
            .collect()
    };
    let (alloc, free, bad) = (
        &story["allocation"],
        &story["frees"][0],
        &story["bad_access"],
    );
    assert_eq!(stack(alloc), ["kmalloc_trace", "do_seccomp"], "{story:#}");
    assert_eq!(stack(free), ["kfree", "do_seccomp"], "{story:#}");
    assert_eq!(story["threads"]["free_and_access_race"], true, "{story:#}");
    let source = std::fs::read_to_string(&repro).unwrap();
    let line = |text: &str| source.lines().position(|l| l.contains(text)).unwrap() as u64 + 1;
    let seccomp = line("syscall(__NR_seccomp, 1, 9,");
    let close = line("for (fd = 3; fd < 30; fd++)") + 1;
    for (step, syscall, line) in [
        (alloc, "seccomp", seccomp),
        (free, "seccomp", seccomp),
        (bad, "close", close),
    ] {
        let call = &step["call"];
        assert_eq!(
            (&call["syscall"], call["line"].as_u64(), &call["exact"]),
            (
                &serde_json::json!(syscall),
                Some(line),
                &serde_json::json!(true)
            ),
            "{story:#}"
        );
    }
    let r = tp::query(
        &trace,
        &[
            "select so.name, si.name from flow f join slice so on so.id = f.slice_out \
           join slice si on si.id = f.slice_in \
           where so.name like 'alloc%' or so.name like 'free%' order by so.ts",
        ],
    );
    assert_eq!(
        tp::lines(&r[0]),
        ["alloc 160|free 160", "free 160|bad-write 8"]
    );
}
