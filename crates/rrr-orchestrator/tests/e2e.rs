//! The end-to-end test: a real kernel (Debian's linux-source-6.1, built by `rrr kernel` and
//! cached), a real stimulus, recorded and replayed by the distro's QEMU under rrr's tracer
//! plugin, checked with Perfetto's own trace processor.

#[path = "../../rrr-trace/tests/support/tp.rs"]
mod tp;

#[path = "support/cli.rs"]
mod cli;

#[path = "support/watch.rs"]
mod watch;

#[path = "support/story.rs"]
mod story;

use std::path::{Path, PathBuf};

use cli::{example, fails, gdb_server, gdb_session, manifest, ok, rrr, write_manifest};

const PATH_IN_EXAMPLE: &str = "/tmp/rrr-example.txt";

/// The tests that run emulators run one at a time: on 2 cores, several QEMUs at once (each
/// replay at 100% of a core, plus gdb's reverse steps reloading snapshots) made one reverse
/// step of five hang at the start snapshot's instruction count.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static EMULATORS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    EMULATORS.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_real_kernel_run_is_recorded_and_traced_identically_twice() {
    let _one_at_a_time = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let kernel = ok(rrr().arg("kernel"));
    let stimulus = ok(rrr().arg("stimulus").arg(example("open-write-read.c")));
    let rec = dir.path().join("rec");
    ok(rrr()
        .args(["record", "--kernel", &kernel, "--stimulus", &stimulus, "-o"])
        .arg(&rec));
    let m = manifest(&rec);
    assert!(m["outcome"]["ended"]["status"] == 0, "{m}");
    let serial = std::fs::read_to_string(rec.join("serial.log")).unwrap();
    assert!(serial.contains("rrr example: ok"), "{serial}");

    let (t1, t2) = (dir.path().join("t1.pftrace"), dir.path().join("t2.pftrace"));
    ok(rrr().arg("trace").arg(&rec).arg("-o").arg(&t1));
    ok(rrr().arg("trace").arg(&rec).arg("-o").arg(&t2));
    let (b1, b2) = (std::fs::read(&t1).unwrap(), std::fs::read(&t2).unwrap());
    assert!(
        b1.len() > 1_000_000,
        "a whole run is traced: {} bytes",
        b1.len()
    );
    assert!(
        b1 == b2,
        "two replays of one recording give identical traces"
    );

    let on_stimulus = "from slice s join thread_track tt on s.track_id = tt.id \
        join thread t using (utid) join process p using (upid) \
        where t.name = 'stimulus' and p.name = 'stimulus'";
    let r = tp::query(
        &t1,
        &[
            &format!(
                "select count(*), sum(exists(select 1 from ancestor_slice(s.id) a \
                 where a.name = 'do_syscall_64')) {on_stimulus} and s.name = 'do_sys_openat2' \
                 and extract_arg(s.arg_set_id, 'debug.filename') = '{PATH_IN_EXAMPLE}'"
            ),
            &format!(
                "select extract_arg(s.arg_set_id, 'debug.count'), \
                 extract_arg(s.arg_set_id, 'debug.return') {on_stimulus} \
                 and s.name = 'ksys_write' and extract_arg(s.arg_set_id, 'debug.fd') > 2"
            ),
            &format!(
                "select s.category, t.tid = p.pid, (select name from slice where id = s.parent_id) \
                 {on_stimulus} and s.name = 'main'"
            ),
            &format!("select count(distinct t.tid) {on_stimulus} and s.name = 'do_sys_openat2'"),
            "select count(*) from slice where dur < 0",
            "select count(*) from slice",
            "select name, idx, value from stats where value > 0 and severity in ('error', 'data_loss')",
            &format!(
                "select s.ts {on_stimulus} and s.name = 'do_sys_openat2' \
                 and extract_arg(s.arg_set_id, 'debug.filename') = '{PATH_IN_EXAMPLE}' \
                 order by s.ts desc limit 1"
            ),
            // The thread that renamed itself: its track has the new name, in the stimulus's
            // process, with the rename's slice on it.
            "select count(*), sum(p.name = 'stimulus'), sum(exists(select 1 from slice s \
             join thread_track tt on s.track_id = tt.id where tt.utid = t.utid \
             and s.name = '__set_task_comm' \
             and extract_arg(s.arg_set_id, 'debug.buf') = 'rrr-renamed')) \
             from thread t join process p using (upid) where t.name = 'rrr-renamed'",
            // User code runs only in the stimulus's process, on its threads.
            "select t.name, p.name from slice s join thread_track tt on s.track_id = tt.id \
             join thread t using (utid) join process p using (upid) \
             where s.category = 'user' and p.name != 'stimulus' limit 3",
        ],
    );
    assert_eq!(
        tp::lines(&r[9]),
        Vec::<String>::new(),
        "user code is on the stimulus's threads (an interrupt that switched threads inside \
         its handler does not leave its thread's user code to the other one)"
    );
    assert_eq!(
        tp::lines(&r[8]),
        vec!["1|1|1"],
        "a thread that renamed itself has its new name"
    );
    assert_eq!(
        tp::lines(&r[0]),
        vec!["2|2"],
        "the writer and the reader thread open the file, inside the syscall"
    );
    assert_eq!(tp::lines(&r[1]), vec!["15|15"], "one write of 15 bytes");
    assert_eq!(
        tp::lines(&r[2]),
        vec!["user|1|__libc_start_call_main"],
        "main is user code on the main thread, called by libc"
    );
    assert_eq!(tp::lines(&r[3]), vec!["2"], "two threads opened the file");
    assert_eq!(tp::lines(&r[4]), vec!["0"], "every slice is closed");
    let slices: u64 = tp::lines(&r[5])[0].parse().unwrap();
    assert!(slices > 100_000, "every kernel call is traced: {slices}");
    assert_eq!(tp::lines(&r[6]), Vec::<String>::new(), "no import errors");

    // `rrr replay --gdb`: the replay waits for gdb, which stops in the kernel at the
    // stimulus's opens and reads their arguments, forward and back in time.
    let vmlinux = Path::new(&kernel).join("vmlinux");
    let g = gdb_session(
        &rec,
        None,
        &vmlinux,
        &[
            "break do_sys_openat2",
            "continue",
            "p/x how->flags",
            "continue",
            "p/x how->flags",
            "reverse-continue",
            "p/x how->flags",
            "stepi",
            "p/x $pc",
            "reverse-stepi",
            "p/x $pc",
        ],
    );
    let (said, values) = (&g.said, g.values());
    assert!(
        said.contains("Breakpoint 1, do_sys_openat2") && said.contains(PATH_IN_EXAMPLE),
        "gdb stops at the open with its filename:\n{said}\n{}",
        g.stderr
    );
    assert_eq!(
        values[..3],
        ["0x8241", "0x8000", "0x8241"],
        "the writer's open (O_CREAT | O_WRONLY | O_TRUNC), the reader's (O_RDONLY), and back \
         to the writer's with reverse-continue:\n{said}"
    );
    assert!(
        values.len() == 5 && values[3] != values[4],
        "stepi then reverse-stepi:\n{said}"
    );

    // `rrr replay --gdb --at TS`: gdb runs the replay to the call the trace shows at TS (the
    // reader thread's open, after the writer's).
    let open_ts: u64 = tp::lines(&r[7])[0].parse().unwrap();
    let g = gdb_session(
        &rec,
        Some(open_ts),
        &vmlinux,
        &["info symbol $pc", "p filename", "p/x how->flags"],
    );
    let said = &g.said;
    assert!(
        g.printed
            .iter()
            .any(|a| a.starts_with("ignore $bpnum ") && a != "ignore $bpnum 0"),
        "the open is not do_sys_openat2's first call: {:?}",
        g.printed
    );
    assert!(
        said.contains("do_sys_openat2 in section")
            && said.contains(PATH_IN_EXAMPLE)
            && said.contains("= 0x8000"),
        "gdb stops at the entry of the reader's open (O_RDONLY | O_LARGEFILE, where the \
         writer's has O_CREAT | O_WRONLY | O_TRUNC too):\n{said}\n{}",
        g.stderr
    );
    // Two replays under gdb at once: each picks its own free port.
    let (first, second) = (gdb_server(&rec, None), gdb_server(&rec, None));
    assert_ne!(first.printed[3], second.printed[3], "two ports");
    for server in [first, second] {
        let g = server.run(
            &vmlinux,
            &["break do_sys_openat2", "continue", "p/x how->flags"],
        );
        assert_eq!(g.values(), ["0x8241"], "{}\n{}", g.said, g.stderr);
    }

    let err = fails(
        rrr()
            .args(["replay", "--gdb", "--port", "0", "--at", "999999999999"])
            .arg(&rec),
    );
    assert!(
        err.contains("the replay ended before trace time 999999999999"),
        "{err}"
    );

    // A replay whose console output differs from the recording's is reported, and the trace
    // written so far is kept.
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    for f in [
        "recording.json",
        "replay.bin",
        "disk.qcow2",
        "trace.rrrprof",
    ] {
        std::fs::copy(rec.join(f), bad.join(f)).unwrap();
    }
    std::fs::write(bad.join("serial.log"), format!("{serial}extra line\n")).unwrap();
    let t3 = dir.path().join("t3.pftrace");
    let err = fails(rrr().arg("trace").arg(&bad).arg("-o").arg(&t3));
    assert!(
        err.contains("diverged") && err.contains("t3.pftrace"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&t3).unwrap(),
        b1,
        "the trace is still written"
    );

    // `rrr run` chains it all (from the cache, apart from the recording).
    let t4 = dir.path().join("t4.pftrace");
    let out = rrr()
        .args(["run", "--stimulus"])
        .arg(example("open-write-read.c"))
        .arg("-o")
        .arg(&t4)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("trace written") && err.contains("ui.perfetto.dev"),
        "{err}"
    );
    assert!(std::fs::metadata(&t4).unwrap().len() > 1_000_000);
}

#[test]
fn a_stimulus_that_never_ends_is_recorded_until_the_timeout_and_traced() {
    let _one_at_a_time = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let kernel = ok(rrr().arg("kernel"));
    let stimulus = ok(rrr().arg("stimulus").arg(example("never-ends.c")));
    let rec = dir.path().join("rec");
    ok(rrr()
        .args(["record", "--kernel", &kernel, "--stimulus", &stimulus])
        .args(["--timeout", "4", "-o"])
        .arg(&rec));
    let m = manifest(&rec);
    assert!(m["outcome"]["timed_out"]["seconds"] == 4, "{m}");
    let end = m["instructions"]
        .as_u64()
        .expect("the recording's end count");
    assert!(end > 1_000_000_000, "counted from the machine's boot: {m}");
    let t = dir.path().join("t.pftrace");
    let out = rrr()
        .arg("trace")
        .arg(&rec)
        .arg("-o")
        .arg(&t)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "the replay ended at the recording's end, instruction {end}"
        )),
        "{said}"
    );
    let r = tp::query(
        &t,
        &[
            "select count(*) > 20 from slice s join thread_track tt on s.track_id = tt.id \
           join thread t using (utid) where t.name = 'stimulus' and s.name = 'do_syscall_64'",
        ],
    );
    assert_eq!(tp::lines(&r[0]), vec!["1"]);

    // The stimulus prints nothing, so the console proves nothing: a replay of the recording
    // cut short is still reported as diverged, with the trace written so far kept.
    let cut = dir.path().join("cut");
    std::fs::create_dir(&cut).unwrap();
    for f in ["recording.json", "replay.bin", "disk.qcow2", "serial.log"] {
        std::fs::copy(rec.join(f), cut.join(f)).unwrap();
    }
    assert_eq!(
        std::fs::read(cut.join("serial.log")).unwrap(),
        b"",
        "a silent run"
    );
    let log = std::fs::read(rec.join("replay.bin")).unwrap();
    std::fs::write(cut.join("replay.bin"), &log[..log.len() / 2]).unwrap();
    let t2 = dir.path().join("t2.pftrace");
    let err = fails(rrr().arg("trace").arg(&cut).arg("-o").arg(&t2));
    assert!(
        err.contains("diverged") && err.contains("cut short") && err.contains("t2.pftrace"),
        "{err}"
    );

    // A replay that ends anywhere but at the recording's end count is reported as diverged:
    // here the whole log, against a manifest that says the run went one instruction further.
    std::fs::copy(rec.join("replay.bin"), cut.join("replay.bin")).unwrap();
    let mut m = manifest(&cut);
    m["instructions"] = (end + 1).into();
    std::fs::write(cut.join("recording.json"), m.to_string()).unwrap();
    let err = fails(rrr().arg("replay").arg(&cut));
    assert!(
        err.contains("diverged")
            && err.contains(&format!(
                "ended at instruction {end}, the recording at {}",
                end + 1
            )),
        "{err}"
    );
}

#[test]
fn a_sleepy_stimulus_is_recorded_and_replayed_without_waiting_out_its_sleep() {
    let _one_at_a_time = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let kernel = ok(rrr().arg("kernel"));
    let stimulus = ok(rrr().arg("stimulus").arg(example("sleepy.c")));
    let rec = dir.path().join("rec");
    let said = story::ok_said(
        rrr()
            .args(["record", "--kernel", &kernel, "--stimulus", &stimulus])
            .args(["--timeout", "120", "-o"])
            .arg(&rec),
    );
    let m = manifest(&rec);
    assert!(m["outcome"]["ended"]["status"] == 0, "{m}");
    let end = m["instructions"]
        .as_u64()
        .expect("the recording's end count");
    // The stimulus sleeps five seconds; the pacing library skipped them (and the guest's
    // idle around them), and says so.
    let skipped = m["idle_skipped_ns"].as_u64().expect("idle time skipped");
    assert!(skipped >= 4_000_000_000, "{m}");
    assert!(
        said.contains("s of its own time (before, between and after the stimulus's calls) that rrr did not wait out"),
        "{said}"
    );

    // A replay skips the waits its log holds; one that waits them out (the library off)
    // ends at the same instruction, with the same console.
    let proof =
        format!("ended at the recording's end, instruction {end}, with identical console output");
    let said = story::ok_said(rrr().arg("replay").arg(&rec));
    let skips: u64 = said
        .split_once("(skipped ")
        .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no skipped waits said: {said}"));
    assert!(skips > 100 && said.contains(&proof), "{said}");
    let said = story::ok_said(rrr().arg("replay").arg(&rec).env("RRR_SKIP_IDLE", "off"));
    assert!(!said.contains("skipped") && said.contains(&proof), "{said}");

    // Its trace is the same, byte for byte, however the replay was paced.
    let traces = ["skipped.pftrace", "waited.pftrace"].map(|t| dir.path().join(t));
    for (t, pacing) in traces.iter().zip(["on", "off"]) {
        story::ok_said(
            rrr()
                .arg("trace")
                .arg(&rec)
                .arg("-o")
                .arg(t)
                .env("RRR_SKIP_IDLE", pacing),
        );
    }
    let [a, b] = [&traces[0], &traces[1]].map(|t| std::fs::read(t).unwrap());
    assert!(a == b, "the traces differ");
    let r = tp::query(
        &traces[0],
        &[
            "select count(*) from slice s join thread_track tt on s.track_id = tt.id \
           join thread t using (utid) where t.name = 'stimulus' and s.name = 'do_sys_openat2'",
        ],
    );
    assert_eq!(tp::lines(&r[0]), vec!["5"], "its five opens");
}

/// Records the example stimulus on `kernel` into `dir/rec` and traces it into `dir/t.pftrace`;
/// every thread that ran in it is named (none is a bare stack, `stack-…`).
fn record_and_trace(kernel: &str, dir: &Path) -> (PathBuf, PathBuf) {
    let stimulus = ok(rrr().arg("stimulus").arg(example("open-write-read.c")));
    let rec = dir.join("rec");
    ok(rrr()
        .args(["record", "--kernel", kernel, "--stimulus", &stimulus, "-o"])
        .arg(&rec));
    let t = dir.join("t.pftrace");
    ok(rrr().arg("trace").arg(&rec).arg("-o").arg(&t));
    let r = tp::query(&t, &[tp::UNNAMED_THREADS]);
    assert_eq!(tp::lines(&r[0]), Vec::<String>::new(), "unnamed threads");
    (rec, t)
}

/// Every value of a call as the trace shows it: the arguments named, then the return value's
/// parts (`return`, or `return[0]`, `return[1]` for a struct).
fn trace_values(trace: &Path, ts: u64, args: &[&str]) -> Vec<String> {
    let sql: Vec<String> = args
        .iter()
        .map(|a| {
            format!(
                "select coalesce(cast(a.int_value as text), a.string_value) from slice s \
                 join args a using (arg_set_id) where s.ts = {ts} \
                 and a.key = 'debug.{a}' and s.dur > 0 order by s.depth limit 1"
            )
        })
        .collect();
    let sql: Vec<&str> = sql.iter().map(String::as_str).collect();
    tp::query(trace, &sql)
        .iter()
        .map(|rows| tp::lines(rows).join(","))
        .collect()
}

#[test]
fn the_trace_says_what_gdb_says() {
    let _one_at_a_time = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let kernel = ok(rrr().arg("kernel"));
    let (rec, t) = record_and_trace(&kernel, dir.path());
    let vmlinux = Path::new(&kernel).join("vmlinux");
    let first = |name: &str, cond: &str| -> u64 {
        let r = tp::query(
            &t,
            &[&format!(
                "select s.ts from slice s join thread_track tt on s.track_id = tt.id \
                 join thread th using (utid) where th.name = 'stimulus' and s.name = '{name}' \
                 {cond} order by s.ts limit 1"
            )],
        );
        tp::lines(&r[0])[0].parse().unwrap()
    };
    let gdb_values = |ts: u64, commands: &[&str]| -> Vec<String> {
        let g = gdb_session(&rec, Some(ts), &vmlinux, commands);
        let mut values: Vec<String> = g.values().iter().map(|v| v.to_string()).collect();
        assert!(!values.is_empty(), "{}\n{}", g.said, g.stderr);
        values.iter_mut().for_each(|v| {
            // `0x1234 "text"` (a char *): the text; `{tv_sec = 1, tv_nsec = 2}`: 1,2.
            if v == "true" || v == "false" {
                *v = if v == "true" { "1" } else { "0" }.to_owned();
            } else if let Some(text) = v.split_once(" \"").map(|(_, t)| t.trim_end_matches('"')) {
                *v = text.to_owned();
            } else if v.starts_with('{') {
                // A struct's fields; the trace shows its first 16 bytes (two here).
                *v = v
                    .trim_matches(|c| c == '{' || c == '}')
                    .split(", ")
                    .map(|f| f.split(" = ").nth(1).unwrap_or(f))
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(",");
            }
        });
        values
    };
    // Each call: the trace's values of these arguments (and return value), and gdb's of the
    // same, at the call's entry (`p`) and after it (`finish`).
    let cases: [(&str, &str, &[&str], &[&str]); 8] = [
        // Signed and unsigned integers of several widths, and a return value.
        (
            "ksys_write",
            "and extract_arg(s.arg_set_id, 'debug.fd') > 2",
            &["fd", "count", "return"],
            &["p fd", "p count", "finish"],
        ),
        // An int and a string.
        (
            "do_sys_openat2",
            "",
            &["dfd", "filename"],
            &["p dfd", "p filename"],
        ),
        // A struct returned in rax:rdx.
        ("current_time", "", &["return[0]", "return[1]"], &["finish"]),
        // A struct returned in memory, after parameters that start at rsi.
        (
            "build_open_how",
            "",
            &["flags", "mode", "return[0]", "return[1]"],
            &["p flags", "p mode", "finish"],
        ),
        // An enum, by name.
        (
            "mod_node_page_state",
            "",
            &["item", "delta"],
            &["p item", "p delta"],
        ),
        // A string and a bool (exec names the process after its program).
        (
            "__set_task_comm",
            "",
            &["buf", "exec"],
            &["p buf", "p exec"],
        ),
        // A gcc clone's parameter that is a constant of the debug info.
        ("extract_entropy.constprop.0", "", &["len"], &["p len"]),
        // A `.isra` clone's parameter that its caller does not pass (`pud`): the call site's
        // value, as gdb reads it. Two inlined frames begin at the clone's entry.
        (
            "pmd_offset.isra.0",
            "and extract_arg(s.arg_set_id, 'debug.pud') is not null",
            &["address", "pud"],
            &["frame 2", "p address", "p/d pud"],
        ),
    ];
    for (function, cond, args, commands) in cases {
        let ts = first(function, cond);
        assert_eq!(
            trace_values(&t, ts, args).join(","),
            gdb_values(ts, commands).join(","),
            "{function}: the trace's values, then gdb's"
        );
    }
    // Around a context switch, each call is on the track of the thread the kernel's
    // `current` names there: `__switch_to`'s entry and what it calls before it writes
    // `current_task` (`wrmsrl`) are the previous thread's; the rest of it (a slice without
    // arguments) is the next thread's.
    let in_switch = |cond: &str| {
        format!(
            "select s.ts, th.tid from slice s join thread_track tt on s.track_id = tt.id \
             join thread th using (utid) left join slice p on s.parent_id = p.id \
             where {cond} order by s.ts limit 1 offset 3"
        )
    };
    // (An argument's key names a struct pointer's type: `debug.prev_p (struct task_struct *)`.)
    let has_prev = "exists (select 1 from args a where a.arg_set_id = s.arg_set_id \
                    and a.key like 'debug.prev_p%')";
    let queries = [
        in_switch("s.name = 'wrmsrl' and p.name = '__switch_to'"),
        in_switch(&format!("s.name = '__switch_to' and {has_prev}")),
        in_switch(&format!("s.name = '__switch_to' and not {has_prev}")),
    ];
    let r = tp::query(&t, &queries.iter().map(String::as_str).collect::<Vec<_>>());
    for rows in &r {
        let line = tp::lines(rows)
            .into_iter()
            .next()
            .expect("a call in a switch");
        let (ts, tid) = line.split_once('|').unwrap();
        let current = "p ((struct task_struct *)*(unsigned long *)($gs_base + \
                       (unsigned long)&current_task))->pid";
        assert_eq!(
            gdb_values(ts.parse().unwrap(), &[current]),
            [tid],
            "the thread at trace time {ts}: the trace's, then gdb's current task"
        );
    }
    // A clone whose code returns nothing has no return value in the trace.
    let r = tp::query(
        &t,
        &[
            "select count(*), sum(exists(select 1 from args a where a.arg_set_id = s.arg_set_id \
           and a.key like 'debug.return%')) from slice s where s.name = 'get_file.isra.0'",
        ],
    );
    let (calls, with_return) = tp::lines(&r[0])[0]
        .split_once('|')
        .map(|(a, b)| (a.parse::<u64>().unwrap(), b.to_owned()))
        .unwrap();
    assert!(
        calls > 0 && with_return == "0",
        "get_file.isra.0 returns nothing: {calls} calls, {with_return} with a return value"
    );
}

/// A kernel of syzbot's size class: rrr's tiny kernel with its `crash-test` fragment (SLUB,
/// LKDTM, generic KASAN), built once and cached. It boots in more than 2^31 instructions, which
/// QEMU's record/replay handles only when the ready snapshot carries replay state.
#[test]
fn a_kasan_kernel_is_recorded_from_its_ready_snapshot_traced_and_debugged() {
    let _one_at_a_time = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let kernel = ok(rrr().args(["kernel", "--fragment", "crash-test"]));
    let config = std::fs::read_to_string(Path::new(&kernel).join("config")).unwrap();
    for option in ["CONFIG_KASAN=y", "CONFIG_KASAN_GENERIC=y", "CONFIG_LKDTM=y"] {
        assert!(
            config.lines().any(|l| l == option),
            "{option} in the crash-test kernel"
        );
    }
    let (rec, t) = record_and_trace(&kernel, dir.path());
    let m = manifest(&rec);
    assert!(m["outcome"]["ended"]["status"] == 0, "{m}");
    let r = tp::query(
        &t,
        &[
            "select count(*) from slice s join thread_track tt on s.track_id = tt.id \
             join thread th using (utid) where th.name = 'stimulus' \
             and s.name = 'do_sys_openat2' \
             and extract_arg(s.arg_set_id, 'debug.filename') = '/tmp/rrr-example.txt'",
            "select name, idx, value from stats where value > 0 and severity in ('error', 'data_loss')",
        ],
    );
    assert_eq!(
        tp::lines(&r[0]),
        vec!["2"],
        "the writer's and the reader's opens, with the file name"
    );
    assert_eq!(tp::lines(&r[1]), Vec::<String>::new(), "no import errors");

    // Reverse debugging goes back through the recording's start snapshot.
    let vmlinux = Path::new(&kernel).join("vmlinux");
    let g = gdb_session(
        &rec,
        None,
        &vmlinux,
        &[
            "break do_sys_openat2",
            "continue",
            "stepi",
            "p/x $pc",
            "reverse-stepi",
            "p/x $pc",
        ],
    );
    let values = g.values();
    assert!(
        g.said.contains("Breakpoint 1, do_sys_openat2")
            && values.len() == 2
            && values[0] != values[1],
        "gdb stops at the open, then stepi and reverse-stepi move:\n{}\n{}",
        g.said,
        g.stderr
    );
}

/// Processes whose command line starts with `program` and contains `needle`.
fn processes(program: &str, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.starts_with(program) && cmdline.contains(needle) {
            found.push(cmdline);
        }
    }
    found
}

#[test]
fn a_killed_rrr_takes_its_emulator_with_it() {
    let _one_at_a_time = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let kernel = ok(rrr().arg("kernel"));
    let stimulus = ok(rrr().arg("stimulus").arg(example("never-ends.c")));
    let mut record = rrr()
        .args(["record", "--kernel", &kernel, "--stimulus", &stimulus])
        .args(["--timeout", "600", "-o"])
        .arg(dir.path().join("rec"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The recording's emulator runs on the staged recording's disk, under the temp dir.
    let needle = dir.path().to_str().unwrap();
    let started = std::time::Instant::now();
    while processes("qemu-system-x86_64", needle).is_empty() {
        assert!(
            started.elapsed().as_secs() < 300,
            "the recording never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    record.kill().unwrap();
    record.wait().unwrap();
    let killed = std::time::Instant::now();
    while !processes("qemu-system-x86_64", needle).is_empty() {
        assert!(
            killed.elapsed().as_secs() < 30,
            "the emulator outlived rrr: {:?}",
            processes("qemu-system-x86_64", needle)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn bad_input_gets_errors_that_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let bad_c = dir.path().join("bad.c");
    std::fs::write(&bad_c, "int main(void) { return undefined_thing; }\n").unwrap();
    let err = fails(rrr().arg("stimulus").arg(&bad_c));
    assert!(
        err.contains("does not compile") && err.contains("undefined_thing"),
        "{err}"
    );

    let err = fails(rrr().arg("trace").arg(dir.path()));
    assert!(
        err.contains("is not a recording") && err.contains("rrr record"),
        "{err}"
    );

    let dynamic = dir.path().join("dyn");
    std::fs::copy("/bin/true", &dynamic).unwrap();
    let err = fails(rrr().args(["rootfs", "--stimulus"]).arg(&dynamic));
    assert!(
        err.contains("not a static") && err.contains("rrr stimulus"),
        "{err}"
    );

    write_manifest(dir.path(), "qemu");
    let err = fails(rrr().arg("trace").arg(dir.path()).env("PATH", dir.path()));
    assert!(
        err.contains("qemu-system-x86_64") && err.contains("install qemu-system-x86"),
        "{err}"
    );
    // `rrr watch` says what it needs: a crash to take the address from, its engine.
    let err = fails(rrr().args(["watch", "--from-report"]).arg(dir.path()));
    assert!(
        err.contains("did not end at a crash") && err.contains("ADDR[:LEN]"),
        "{err}"
    );
    write_manifest(dir.path(), "panda");
    let err = fails(
        rrr()
            .arg("watch")
            .arg(dir.path())
            .arg("0xffff888000001000:8")
            .env("PATH", dir.path())
            .env_remove("RRR_PANDA"),
    );
    assert!(
        err.contains("panda-system-x86_64")
            && err.contains("not found")
            && err.contains("RRR_PANDA"),
        "{err}"
    );
    let nowhere = dir.path().join("no-panda");
    let err = fails(
        rrr()
            .arg("watch")
            .arg(dir.path())
            .arg("0xffff888000001000:8")
            .env("RRR_PANDA", &nowhere),
    );
    assert!(
        err.contains(&format!("RRR_PANDA={} is not a file", nowhere.display())),
        "{err}"
    );
}

// From the crash to its cause, on the crash-test kernel (`rrr kernel --fragment crash-test`:
// KASAN and LKDTM, crashing on demand from user space).

/// The crash instants of `trace`: for each, its track's thread (or track name), title,
/// reporting function and stack check, and the names of the slices open at its time on its
/// thread, outermost first.
fn crash_instants(trace: &Path, title: &str) -> (Vec<String>, Vec<String>) {
    let r = tp::query(
        trace,
        &[
            &format!(
                "select coalesce(t.name, tr.name), extract_arg(s.arg_set_id, 'debug.reported_by'), \
                 extract_arg(s.arg_set_id, 'debug.stack'), \
                 instr(extract_arg(s.arg_set_id, 'debug.report'), '{title}') > 0 \
                 or instr(extract_arg(s.arg_set_id, 'debug.report'), 'Call Trace:') > 0 \
                 from slice s join track tr on s.track_id = tr.id \
                 left join thread_track tt on s.track_id = tt.id left join thread t using (utid) \
                 where s.name = '{title}' and s.dur = 0 order by t.name is null"
            ),
            &format!(
                "select a.name from slice s join thread_track tt on s.track_id = tt.id, \
                 ancestor_slice(s.id) a where s.name = '{title}' order by a.depth"
            ),
            "select name, idx, value from stats where value > 0 and severity in ('error', 'data_loss')",
        ],
    );
    assert_eq!(tp::lines(&r[2]), Vec::<String>::new(), "no import errors");
    (tp::lines(&r[0]), tp::lines(&r[1]))
}

/// A `refcount_t` warning's story: LKDTM's REFCOUNT_DEC_ZERO sets a refcount to 2 and
/// decrements it twice; the story, told by `rrr run` at its end and by `rrr explain` as JSON
/// following its schema, lists the three changes (and the saturation the warning writes),
/// the one that went below one, and the stimulus's write line behind each.
#[test]
fn a_refcount_underflow_s_changes_are_told_in_order() {
    let _one_at_a_time = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let said = story::ok_said(
        rrr()
            .args([
                "run",
                "--fragment",
                "crash-test",
                "--timeout",
                "60",
                "--stimulus",
            ])
            .arg(example("refcount-dec-zero.c"))
            .arg("-o")
            .arg(dir.path().join("t.pftrace")),
    );
    assert!(
        said.contains("refcount bug in lkdtm_REFCOUNT_DEC_ZERO"),
        "{said}"
    );
    let story = story::explained(&story::recording_of(&said));
    let r = &story["refcount"];
    let counts: Vec<i32> = r["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let v = c["value"].as_str().unwrap().trim_start_matches("0x");
            u64::from_str_radix(v, 16).unwrap() as u32 as i32
        })
        .collect();
    assert_eq!(counts[..3], [2, 1, 0], "{story:#}");
    assert!(counts[3] < 0, "the warning saturates it: {story:#}");
    assert_eq!(r["below_one"], 2, "{story:#}");
    assert!(
        r["warning"].as_str().unwrap().contains("decrement hit 0"),
        "{story:#}"
    );
    let source = std::fs::read_to_string(example("refcount-dec-zero.c")).unwrap();
    let line = source.lines().position(|l| l.contains("write(fd")).unwrap() + 1;
    for c in r["changes"].as_array().unwrap() {
        assert_eq!(c["call"]["syscall"], "write", "{c}");
        assert_eq!(c["call"]["line"], line, "{c}");
    }
    assert_eq!(r["changes"][1]["stack"][0], "refcount_dec", "{story:#}");
    assert_eq!(story["title"], "refcount bug in lkdtm_REFCOUNT_DEC_ZERO");
}

#[test]
fn a_kasan_use_after_free_is_marked_where_the_kernel_reports_it_and_gdb_goes_there() {
    let _one_at_a_time = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    let said = story::ok_said(
        rrr()
            .args([
                "run",
                "--fragment",
                "crash-test",
                "--timeout",
                "60",
                "--stimulus",
            ])
            .arg(example("kasan-use-after-free.c"))
            .arg("-o")
            .arg(&trace),
    );
    let title = "KASAN: use-after-free Write in lkdtm_WRITE_AFTER_FREE";
    let (instants, open) = crash_instants(&trace, title);
    let agrees = "the calls open here are the report's call trace";
    assert_eq!(
        instants,
        vec![
            format!("stimulus|kasan_report|{agrees}|1"),
            format!("crash|kasan_report|{agrees}|1"),
        ],
        "on the stimulus's thread and the crash track"
    );
    for f in ["ksys_write", "lkdtm_WRITE_AFTER_FREE", "kasan_report"] {
        assert!(open.iter().any(|o| o == f), "{f} is open: {open:?}");
    }
    assert_eq!(open.last().map(String::as_str), Some("kasan_report"));

    // The report's last lines: the crash, its trace time, and the gdb command that goes
    // there; the crash's story follows.
    let story_at = said
        .find("rrr: the crash's story")
        .unwrap_or_else(|| panic!("no story: {said}"));
    let tail: Vec<&str> = said[..story_at].lines().rev().take(2).collect();
    let ts: u64 = tail[1]
        .split(" at trace time ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("the crash's trace time: {said}"));
    assert!(tail[1].contains(&format!("crash \"{title}\"")), "{said}");
    let rec = tail[0]
        .split("rrr replay ")
        .nth(1)
        .and_then(|r| r.split(" --gdb").next())
        .unwrap_or_else(|| panic!("the gdb command: {said}"));
    assert!(tail[0].ends_with(&format!("--gdb --at {ts}")), "{said}");
    assert!(manifest(Path::new(rec))["outcome"]["crashed"]["line"]
        .as_str()
        .is_some_and(|l| l.contains("KASAN: use-after-free")));
    let kernel = ok(rrr().args(["kernel", "--fragment", "crash-test"]));
    let g = gdb_session(
        Path::new(rec),
        Some(ts),
        &Path::new(&kernel).join("vmlinux"),
        &["info symbol $pc"],
    );
    assert!(
        g.said.contains("kasan_report in section"),
        "gdb stops at the entry of the reporting function:\n{}\n{}",
        g.said,
        g.stderr
    );

    // `rrr watch --from-report`: who allocated, freed and wrote the object, in that order.
    let watch_trace = dir.path().join("w.pftrace");
    let events = watch::events(
        rrr()
            .args(["watch", rec, "--from-report", "--format", "json", "-o"])
            .arg(&watch_trace),
    );
    let of = |kind: &str| -> Vec<&serde_json::Value> {
        events.iter().filter(|e| e["kind"] == kind).collect()
    };
    let (allocs, frees, writes) = (of("alloc"), of("free"), of("write"));
    assert_eq!(
        (allocs.len(), frees.len(), writes.len()),
        (1, 1, 1),
        "{events:#?}"
    );
    let (alloc, free, write) = (allocs[0], frees[0], writes[0]);
    let ts = |e: &serde_json::Value| e["ts"].as_u64().unwrap();
    assert!(ts(alloc) < ts(free) && ts(free) < ts(write), "{events:#?}");
    let stack = |e: &serde_json::Value| -> Vec<String> {
        e["stack"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_owned())
            .collect()
    };
    for e in [alloc, free, write] {
        assert_eq!(e["comm"], "stimulus", "{e}");
        assert!(
            stack(e).iter().any(|f| f == "lkdtm_WRITE_AFTER_FREE"),
            "{e}"
        );
    }
    assert_eq!(alloc["size"], 1024, "kmalloc(1024): {alloc}");
    assert!(stack(alloc).last().unwrap().contains("kmalloc"), "{alloc}");
    assert_eq!(
        stack(free).last().map(String::as_str),
        Some("kfree"),
        "{free}"
    );
    assert_eq!(
        alloc["addr"], free["addr"],
        "the object freed is the one allocated"
    );
    assert_eq!(
        (write["value"].as_str(), write["size"].as_u64()),
        (Some("0xabcdef0"), Some(4)),
        "LKDTM's write: {write}"
    );
    assert!(
        write["place"]
            .as_str()
            .is_some_and(|p| p.starts_with("lkdtm_WRITE_AFTER_FREE (drivers/misc/lkdtm/")),
        "{write}"
    );
    let r = tp::query(
        &watch_trace,
        &[
            "select s.name from slice s join track t on s.track_id = t.id \
             where t.name like 'watch %' and s.name not like 'read%' order by s.ts",
            "select count(*) from slice s join thread_track tt on s.track_id = tt.id \
             join thread using (utid) where thread.name = 'stimulus' and s.name = 'write 4' \
             and s.dur = 0",
        ],
    );
    assert_eq!(
        tp::lines(&r[0]),
        ["alloc 1024", "free 1024", "bad-write 4", "write 4"],
        "the watch track: KASAN reports the write, then the write is made"
    );
    assert_eq!(
        tp::lines(&r[1]),
        ["1"],
        "the write on the stimulus's thread"
    );
    // The story: allocated, freed and written by the stimulus's one write(2) to LKDTM, in one
    // thread; as JSON following its schema.
    let story = story::explained(rec);
    let source = std::fs::read_to_string(example("kasan-use-after-free.c")).unwrap();
    let line = source.lines().position(|l| l.contains("write(fd")).unwrap() + 1;
    let (a, f, b) = (
        &story["allocation"],
        &story["frees"][0],
        &story["bad_access"],
    );
    assert_eq!(story["frees"].as_array().unwrap().len(), 1, "{story:#}");
    assert_eq!(a["stack"][1], "lkdtm_WRITE_AFTER_FREE", "{story:#}");
    assert_eq!(f["stack"][0], "kfree", "{story:#}");
    assert_eq!(b["what"], "bad-write", "{story:#}");
    for step in [a, f, b] {
        assert_eq!(step["call"]["syscall"], "write", "{story:#}");
        assert_eq!(step["call"]["line"], line, "{story:#}");
    }
    assert_eq!(story["threads"]["free_and_access_race"], false);
    assert_eq!(story["object"]["offset"], 0x200, "{story:#}");
    assert_eq!(story["title"], title);

    // A trace cut to its end by a budget does not cut the watch's list.
    let cut = watch::events(
        rrr()
            .args(["watch", rec, "--from-report", "--format", "json"])
            .args(["--max-size", "2M", "-o"])
            .arg(dir.path().join("cut.pftrace")),
    );
    assert_eq!(cut, events, "the same events under a 2 MiB budget");
    // And the trace cut to its end still holds the crash, from where its report starts.
    let (instants, _) = crash_instants(&dir.path().join("cut.pftrace"), title);
    assert_eq!(
        instants.len(),
        2,
        "the crash in the cut trace: {instants:?}"
    );
}

#[test]
fn a_watch_lists_the_writes_of_a_files_refcount_and_its_free() {
    let _one_at_a_time = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let kernel = ok(rrr().arg("kernel"));
    let (rec, t) = record_and_trace(&kernel, dir.path());
    watch::a_files_lifetime(&rec, &t, &Path::new(&kernel).join("vmlinux"));
    // A range nothing touches: "no access", and bad symbols name the close ones.
    let none = ok(rrr().args(["watch", rec.to_str().unwrap(), "0x1000:8"]));
    assert!(none.starts_with("no access to 0x1000:8"), "{none}");
    let err = fails(rrr().args(["watch", rec.to_str().unwrap(), "init_tas"]));
    assert!(
        err.contains("no symbol \"init_tas\"") && err.contains("init_task"),
        "{err}"
    );
}

/// A reproducer that loops on after its crash, as syzkaller's do: the recording ends a short
/// grace (2 million guest instructions) after the report's last line, not seconds later with
/// billions more instructions traced after the crash.
#[test]
fn a_looping_reproducers_recording_ends_right_after_its_report() {
    let _one_at_a_time = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pftrace");
    let looping =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crash/looping-use-after-free.c");
    let said = story::ok_said(
        rrr()
            .args(["run", "--fragment", "crash-test", "--timeout", "60"])
            .arg("--stimulus")
            .arg(&looping)
            .arg("-o")
            .arg(&trace),
    );
    assert!(
        said.contains("crashed BUG: KASAN: use-after-free"),
        "{said}"
    );
    let r = tp::query(
        &trace,
        &[
            "select ts + dur from slice where name = 'kasan_report' order by ts limit 1",
            "select max(ts + dur) from slice",
        ],
    );
    let [report_end, end] =
        [&r[0], &r[1]].map(|rows| -> u64 { tp::lines(rows)[0].parse().unwrap() });
    // The grace, and the monitor's polling of the count (under a millisecond of guest time).
    assert!(
        end - report_end < 5_000_000,
        "{} instructions traced after the report ended at {report_end}",
        end - report_end
    );
}

#[test]
fn a_flaky_reproducer_is_recorded_until_it_crashes() {
    let _one_at_a_time = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let kernel = ok(rrr().args(["kernel", "--fragment", "crash-test"]));
    let stimulus = ok(rrr().arg("stimulus").arg(example("warning-on-attempt-3.c")));
    let rec = dir.path().join("rec");
    let said = story::ok_said(
        rrr()
            .args(["record", "--kernel", &kernel, "--stimulus", &stimulus])
            .args(["--attempts", "5", "--timeout", "60", "-o"])
            .arg(&rec),
    );
    assert!(said.contains("attempt 3 (one of 5)"), "{said}");
    assert_eq!(
        said.matches("no crash; recording again").count(),
        2,
        "{said}"
    );
    let m = manifest(&rec);
    assert!(
        m["attempt"]["number"] == 3 && m["attempt"]["of"] == 5,
        "{m}"
    );
    let serial = std::fs::read_to_string(rec.join("serial.log")).unwrap();
    assert!(serial.contains("rrr example: attempt 3"), "{serial}");
    let trace = dir.path().join("t.pftrace");
    ok(rrr().arg("trace").arg(&rec).arg("-o").arg(&trace));
    let (instants, open) = crash_instants(&trace, "WARNING in lkdtm_WARNING");
    assert_eq!(
        instants.first().map(String::as_str),
        Some("stimulus|report_bug|the calls open here are the report's call trace|1"),
        "{instants:?}"
    );
    assert!(open.iter().any(|o| o == "lkdtm_WARNING"), "{open:?}");

    // A run that never crashes, with --until-crash: a clear error, the last recording kept.
    let calm = ok(rrr().arg("stimulus").arg(example("open-write-read.c")));
    let rec = dir.path().join("calm");
    let said = fails(
        rrr()
            .args(["record", "--kernel", &kernel, "--stimulus", &calm])
            .args(["--attempts", "3", "--until-crash", "-o"])
            .arg(&rec),
    );
    assert!(
        said.contains("no attempt crashed (3 attempts")
            && said.contains(&format!("kept in {}", rec.display())),
        "{said}"
    );
    assert!(manifest(&rec)["attempt"]["number"] == 3);
}

/// `select min(ts), max(ts + dur)` of a trace's slices.
fn span(trace: &Path) -> (u64, u64) {
    let r = tp::query(trace, &["select min(ts), max(ts + dur) from slice"]);
    let line = &tp::lines(&r[0])[0];
    let (a, b) = line.split_once('|').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

#[test]
fn a_looping_reproducers_trace_keeps_its_end_within_the_budget() {
    let _one_at_a_time = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let kernel = ok(rrr().arg("kernel"));
    let stimulus = ok(rrr().arg("stimulus").arg(example("fork-loop.c")));
    let rec = dir.path().join("rec");
    ok(rrr()
        .args(["record", "--kernel", &kernel, "--stimulus", &stimulus])
        .args(["--timeout", "2", "-o"])
        .arg(&rec));
    let trace = |name: &str, limits: &[&str]| {
        let t = dir.path().join(name);
        let said = story::ok_said(rrr().arg("trace").arg(&rec).arg("-o").arg(&t).args(limits));
        (t, said)
    };
    let (full, _) = trace("full.pftrace", &["--max-size", "0"]);
    let (start, end) = span(&full);
    let full_size = std::fs::metadata(&full).unwrap().len();
    // Calls made before tracing began are drawn from the start of the part they return in,
    // each older one an instruction earlier (so they nest): a part starts this close to
    // where it says.
    let near = 1000;
    // How many iterations 2 s of recording hold depends on the host's speed (the guest's
    // clock follows it): the budget is a quarter of whatever the whole trace is.
    assert!(full_size > 4 << 20, "a loop makes a big trace: {full_size}");

    // Over the budget: the end is kept, and calls open at the window's start start there.
    let budget = full_size / 4;
    let (cut, said) = trace("cut.pftrace", &["--max-size", &budget.to_string()]);
    let size = std::fs::metadata(&cut).unwrap().len();
    assert!(
        size <= budget && size > budget / 2,
        "{size} bytes for {budget}"
    );
    assert!(
        said.contains("MiB budget (--max-size)") && said.contains("the trace keeps the end"),
        "{said}"
    );
    let (_, cut_end) = span(&cut);
    assert!(
        end - cut_end <= (end - start) / 100,
        "the last slices end within the last 1% of the recording: {cut_end} of {start}..{end}"
    );
    // Where the kept part starts, as rrr says it.
    let from: u64 = said
        .split_once("trace times ")
        .and_then(|(_, rest)| rest.split_once(".."))
        .and_then(|(from, _)| from.parse().ok())
        .unwrap_or_else(|| panic!("no start of the kept part in: {said}"));
    let r = tp::query(
        &cut,
        &[
            &format!(
                "select count(*) > 10, max(depth) > 3 from slice s join thread_track tt \
                 on s.track_id = tt.id where s.ts = {from}"
            ),
            // Nothing before it: calls made before tracing began start with it too.
            &format!("select count(*) from slice where ts < {from} - {near}"),
            "select count(*) from slice where dur < 0",
            "select name, idx, value from stats where value > 0 and severity in ('error', 'data_loss')",
        ],
    );
    assert_eq!(
        tp::lines(&r[0]),
        vec!["1|1"],
        "open calls, nested, on threads"
    );
    assert_eq!(
        tp::lines(&r[1]),
        vec!["0"],
        "nothing else starts before the kept part"
    );
    assert_eq!(tp::lines(&r[2]), vec!["0"]);
    assert_eq!(tp::lines(&r[3]), Vec::<String>::new(), "no import errors");

    // An explicit window, and the last N instructions.
    let (a, b) = (start + (end - start) / 3, start + (end - start) / 2);
    let (w, _) = trace("window.pftrace", &["--window", &format!("{a}..{b}")]);
    let (wa, wb) = span(&w);
    assert!(a - wa.min(a) < near && wb == b, "{wa}..{wb} for {a}..{b}");
    let n = (end - start) / 10;
    let (l, said) = trace("last.pftrace", &["--last", &n.to_string()]);
    let (la, lb) = span(&l);
    assert!(
        (end - n) - la.min(end - n) < near && lb == end,
        "{la}..{lb} for the last {n} of ..{end}: {said}"
    );

    // Focus: the stimulus's threads (its forks included) and their interrupts only; kernel
    // functions by name and by source path; a depth below the kernel's entry.
    let tracks = "select distinct coalesce(t.name, tr.name) from slice s \
         join track tr on s.track_id = tr.id left join thread_track tt on s.track_id = tt.id \
         left join thread t using (utid) order by 1";
    let (st, _) = trace("threads.pftrace", &["--threads", "stimulus"]);
    let r = tp::query(
        &st,
        &[
            tracks,
            "select count(distinct tid) > 3 from thread where name = 'stimulus'",
        ],
    );
    assert_eq!(
        tp::lines(&r[0]),
        vec!["IRQ cpu0", "stimulus"],
        "no kernel threads"
    );
    assert_eq!(tp::lines(&r[1]), vec!["1"], "the forks are kept");
    let (f, _) = trace(
        "focus.pftrace",
        &[
            "--skip",
            "__schedule",
            "--skip",
            "fs/pipe.c",
            "--max-depth",
            "3",
        ],
    );
    let r = tp::query(
        &f,
        &[
            "select count(*) from slice where name in ('__schedule', 'pipe_read', 'pipe_write')",
            "select count(*) > 0 from slice where name = '__switch_to'",
            "select max(depth) from slice where category is null and name != 'sched_out' \
             and not exists (select 1 from ancestor_slice(slice.id) a where a.category = 'user')",
            "select count(*) from slice where dur < 0",
        ],
    );
    assert_eq!(
        tp::lines(&r[0]),
        vec!["0"],
        "skipped by name and by source file"
    );
    assert_eq!(
        tp::lines(&r[1]),
        vec!["1"],
        "a skipped function's callees stay"
    );
    assert_eq!(tp::lines(&r[2]), vec!["3"], "no kernel call deeper than 3");
    assert_eq!(tp::lines(&r[3]), vec!["0"]);
    let (o, _) = trace("only.pftrace", &["--only", "ksys_*"]);
    let r = tp::query(
        &o,
        &[
            "select distinct name from slice where category is null and name != 'sched_out' \
           order by 1",
        ],
    );
    assert_eq!(tp::lines(&r[0]), vec!["ksys_read", "ksys_write"]);
}
