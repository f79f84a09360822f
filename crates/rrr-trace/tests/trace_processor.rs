//! Perfetto's own trace processor reads what the writer writes: slices, depths, arguments,
//! thread and process names, flows, no import errors; and a trace cut short by `kill -9`.

mod support;
#[path = "support/tp.rs"]
mod tp;

use std::time::Duration;

use rrr_trace::{OsLayout, Pipeline, PipelineConfig};

fn write_scenario(path: &std::path::Path) {
    let profile = support::profile();
    let layout = OsLayout::from_profile(&profile);
    let mut pipe = Pipeline::create(path, profile, layout, PipelineConfig::default()).unwrap();
    support::scenario(pipe.observer());
    pipe.finish().unwrap();
}

const ERRORS: &str = "select name, idx, value from stats where value > 0 and severity in ('error', 'data_loss') order by name";

#[test]
fn trace_processor_reads_the_exact_slices_args_and_flows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scenario.pftrace");
    write_scenario(&path);
    let r = tp::query(&path, &[
        "select t.tid, t.name, s.ts, s.dur, s.depth, s.name from slice s \
         join thread_track tt on s.track_id = tt.id join thread t using (utid) order by t.tid, s.ts, s.depth",
        "select a.key, a.display_value from slice s join args a using (arg_set_id) \
         where s.name = 'do_sys_openat2' order by a.key",
        "select a.key, a.display_value from slice s join args a using (arg_set_id) \
         where s.name = 'set_mode' and a.key like 'debug.%' order by a.key",
        "select p.pid, p.name, t.tid from thread t join process p using (upid) where t.tid in (100, 101) order by t.tid",
        "select so.name, so.ts, si.name, si.ts from flow f join slice so on f.slice_out = so.id \
         join slice si on f.slice_in = si.id order by so.ts",
        "select t.name, s.name, s.ts, s.dur from slice s join track t on s.track_id = t.id \
         where t.name like 'IRQ%' order by s.ts",
        "select count(*) from slice where dur < 0",
        ERRORS,
        "select name, category from slice where category is not null",
    ]);
    assert_eq!(
        tp::lines(&r[0]),
        vec![
            "100|stimulus|100|0|0|started_before",
            "100|stimulus|110|170|0|main",
            "100|stimulus|120|150|1|do_syscall_64",
            "100|stimulus|130|50|2|do_sys_openat2",
            "100|stimulus|140|40|3|tail_target",
            "100|stimulus|190|70|2|ksys_write",
            "100|stimulus|200|50|3|schedule",
            "100|stimulus|210|0|4|sched_out",
            "100|stimulus|280|0|1|tail_target",
            "101|stimulus|100|110|0|schedule",
            "101|stimulus|220|10|0|ksys_write",
            "101|stimulus|250|0|0|sched_out",
        ]
    );
    assert_eq!(
        tp::lines(&r[1]),
        vec![
            "debug.dfd|-100",
            "debug.filename|/tmp/rrr-test",
            "debug.how.struct open_how|0xffffc90000013e80",
            "debug.return|3",
        ]
    );
    assert_eq!(
        tp::lines(&r[2]),
        vec![
            "debug.c|255",
            "debug.delta|-5",
            "debug.m|MODE_B",
            "debug.on|true",
            "debug.return|true",
            "debug.s7|-7",
        ]
    );
    assert_eq!(
        tp::lines(&r[3]),
        vec!["100|stimulus|100", "100|stimulus|101"]
    );
    assert_eq!(
        tp::lines(&r[4]),
        vec![
            "sched_out|210|ksys_write|220",
            "sched_out|250|tail_target|280"
        ]
    );
    assert_eq!(
        tp::lines(&r[5]),
        vec![
            "IRQ cpu0|tail_target|150|5",
            "IRQ cpu0|common_interrupt|160|10",
            "IRQ cpu0|set_mode|175|1"
        ]
    );
    assert_eq!(tp::lines(&r[6]), vec!["0"]);
    assert_eq!(tp::lines(&r[7]), Vec::<String>::new());
    assert_eq!(tp::lines(&r[8]), vec!["main|user"], "user calls are marked");
}

/// Not a test: the child process of `a_trace_killed_mid_write_still_opens`, which writes
/// scenarios forever, flushing often, until killed.
#[test]
#[ignore = "helper process, run by a_trace_killed_mid_write_still_opens"]
fn kill_child_writes_forever() {
    let Ok(path) = std::env::var("RRR_KILL_CHILD_TRACE") else {
        return;
    };
    let profile = support::profile();
    let layout = OsLayout::from_profile(&profile);
    let config = PipelineConfig {
        flush_interval: Duration::from_millis(5),
        ..Default::default()
    };
    let mut pipe = Pipeline::create(path.as_ref(), profile, layout, config).unwrap();
    loop {
        support::scenario(pipe.observer());
        pipe.observer().flush();
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn a_trace_killed_mid_write_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed.pftrace");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_child_writes_forever",
            "--ignored",
            "--nocapture",
        ])
        .env("RRR_KILL_CHILD_TRACE", &path)
        .spawn()
        .unwrap();
    // Wait until the trace has grown past several flushes, then SIGKILL.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&path).map_or(0, |m| m.len()) < 256 << 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "the child wrote nothing"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let r = tp::query(
        &path,
        &[
            "select count(*) from slice where name = 'do_sys_openat2' and dur >= 0",
            "select count(distinct tid) from thread where tid in (100, 101)",
            ERRORS,
        ],
    );
    let n = r[0][0][0].as_i64().unwrap();
    assert!(n > 10, "only {n} complete slices survived the kill");
    assert_eq!(tp::lines(&r[1]), vec!["2"]);
    // A cut-off last packet is the one tolerated loss; anything else is a bug.
    for row in tp::lines(&r[2]) {
        assert!(
            row.starts_with("proto_tokenizer") || row.contains("truncat"),
            "unexpected error stat: {row}"
        );
    }
}
