//! Perfetto's own trace processor reads what the writer writes: slices, depths, arguments,
//! thread and process names, flows, no import errors; and a trace cut short by `kill -9`.

mod support;
#[path = "support/tp.rs"]
mod tp;

use std::time::Duration;

use std::sync::Arc;

use prost::Message;
use rrr_perfetto::proto;
use rrr_trace::record::Batch;
use rrr_trace::{
    ArgsRef, OsLayout, Pipeline, PipelineConfig, Record, ThreadIdent, TraceWriter, TrackKey,
};

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
            "debug.how (struct open_how *)|0xffffc90000013e80",
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

/// A thread with a long run of events becomes the sequence's default track and its events
/// leave their track out; short runs elsewhere name theirs. Either way every slice must land on
/// its own thread, at its depth, in the trace processor and in the prost decoding.
#[test]
fn slices_on_the_default_track_and_on_named_tracks_land_on_their_threads() {
    let profile = support::profile();
    let func = support::id(&profile, "ksys_write");
    let (a, b) = (support::KA, support::KB);
    let mut records = Vec::new();
    let mut ts = 1000;
    for (tid, stack) in [(100, a), (101, b)] {
        let mut comm = [0u8; 16];
        comm[..8].copy_from_slice(b"stimulus");
        let ident = ThreadIdent {
            tid,
            pid: 100,
            comm,
            kernel: false,
        };
        records.push(Record::Thread {
            ts,
            track: TrackKey::Thread(stack),
            ident,
        });
    }
    // (tid, begin, dur, depth) of every slice, from the records themselves.
    let mut want = Vec::new();
    let mut open: std::collections::HashMap<u64, Vec<u64>> = Default::default();
    let mut step = |stack: u64, enters: usize, returns: usize, records: &mut Vec<Record>| {
        let frames = open.entry(stack).or_default();
        for _ in 0..enters {
            ts += 3;
            let sp = stack + 0x3f00 - (frames.len() as u64 + 1) * 0x40;
            records.push(Record::Enter {
                ts,
                track: TrackKey::Thread(stack),
                sp,
                func,
                args: ArgsRef::default(),
            });
            frames.push(ts);
        }
        for _ in 0..returns {
            ts += 5;
            let sp = stack + 0x3f00 - frames.len() as u64 * 0x40;
            records.push(Record::Return {
                ts,
                track: TrackKey::Thread(stack),
                sp,
                pc: 0,
                value: [0, 0],
            });
            let begin = frames.pop().unwrap();
            let tid = if stack == a { 100 } else { 101 };
            want.push(format!("{tid}|{begin}|{}|{}", ts - begin, frames.len()));
        }
    };
    step(a, 10, 0, &mut records); // A becomes the default track
    step(b, 3, 3, &mut records); // B names its track
    step(a, 0, 10, &mut records); // back on the default
    step(b, 12, 12, &mut records); // B becomes the default
    step(a, 2, 2, &mut records); // A names its track
    want.sort();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("defaults.pftrace");
    let file = std::fs::File::create(&path).unwrap();
    let mut writer = TraceWriter::new(file, Arc::clone(&profile));
    let mut batch = Batch::with_capacity(records.len());
    batch.records = records;
    writer.write_batch(&batch).unwrap();
    writer.finish().unwrap();

    let bytes = std::fs::read(&path).unwrap();
    let events: Vec<proto::TrackEvent> = proto::Trace::decode(&bytes[..])
        .unwrap()
        .packet
        .into_iter()
        .filter_map(|p| match p.data {
            Some(proto::trace_packet::Data::TrackEvent(e)) => Some(e),
            _ => None,
        })
        .collect();
    let named = events.iter().filter(|e| e.track_uuid.is_some()).count();
    assert!(
        named > 0 && named < events.len(),
        "both kinds of events are written: {named} of {} name their track",
        events.len()
    );
    assert_eq!(support::slices(&bytes).len(), want.len());

    let r = tp::query(
        &path,
        &[
            "select t.tid, s.ts, s.dur, s.depth from slice s join thread_track tt \
             on s.track_id = tt.id join thread t using (utid)",
            ERRORS,
        ],
    );
    let mut got = tp::lines(&r[0]);
    got.sort();
    assert_eq!(got, want);
    assert_eq!(tp::lines(&r[1]), Vec::<String>::new());
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

/// A looping reproducer wraps the pid space: a pid that comes back belongs to another task, in
/// another process. Each is its own thread, in its own process, with its own name.
#[test]
fn a_reused_pid_is_another_thread_in_another_process() {
    let profile = support::profile();
    let func = support::id(&profile, "ksys_write");
    let mut records = Vec::new();
    let mut ts = 1000;
    for (stack, name) in [(support::KA, b"first\0\0\0"), (support::KB, b"second\0\0")] {
        let mut comm = [0u8; 16];
        comm[..8].copy_from_slice(name);
        let track = TrackKey::Thread(stack);
        let ident = ThreadIdent {
            tid: 300,
            pid: 300,
            comm,
            kernel: false,
        };
        let sp = stack + 0x3f00;
        records.push(Record::Thread { ts, track, ident });
        records.push(Record::Enter {
            ts: ts + 10,
            track,
            sp,
            func,
            args: ArgsRef::default(),
        });
        records.push(Record::Return {
            ts: ts + 20,
            track,
            sp,
            pc: 0,
            value: [0, 0],
        });
        ts += 30;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reused.pftrace");
    let mut writer = TraceWriter::new(std::fs::File::create(&path).unwrap(), profile);
    let mut batch = Batch::with_capacity(records.len());
    batch.records = records;
    writer.write_batch(&batch).unwrap();
    writer.finish().unwrap();
    let r = tp::query(
        &path,
        &[
            "select t.name, p.name, s.ts from slice s join thread_track tt on s.track_id = tt.id \
             join thread t using (utid) join process p using (upid) order by s.ts",
            "select count(distinct utid), count(distinct upid) from thread where tid = 300",
        ],
    );
    assert_eq!(
        tp::lines(&r[0]),
        vec!["first|first|1010", "second|second|1040"]
    );
    assert_eq!(tp::lines(&r[1]), vec!["2|2"]);
}

/// exec renames the process (`__set_task_comm` on its main thread): the thread and its process
/// carry the program's name from then on (Perfetto keeps one name per thread and process).
/// Calls on one thread of the test profile: stack KA, pid and tid 300.
struct OnThread {
    profile: Arc<osi_profile::Profile>,
    track: TrackKey,
}

impl OnThread {
    fn new() -> Self {
        OnThread {
            profile: support::profile(),
            track: TrackKey::Thread(support::KA),
        }
    }

    /// The thread is `name` from `ts` on.
    fn named(&self, ts: u64, name: &str) -> Record {
        let mut comm = [0u8; 16];
        comm[..name.len()].copy_from_slice(name.as_bytes());
        let ident = ThreadIdent {
            tid: 300,
            pid: 300,
            comm,
            kernel: false,
        };
        Record::Thread {
            ts,
            track: self.track,
            ident,
        }
    }

    /// A call of `func` at stack slot KA + `slot`.
    fn enter(&self, ts: u64, slot: u64, func: &str) -> Record {
        Record::Enter {
            ts,
            track: self.track,
            sp: support::KA + slot,
            func: support::id(&self.profile, func),
            args: ArgsRef::default(),
        }
    }

    /// The return from the call at stack slot KA + `slot`.
    fn ret(&self, ts: u64, slot: u64) -> Record {
        Record::Return {
            ts,
            track: self.track,
            sp: support::KA + slot,
            pc: 0,
            value: [0, 0],
        }
    }

    /// Writes `records` to `path` with a writer `setup` prepared.
    fn write(
        &self,
        path: &std::path::Path,
        records: &[Record],
        setup: impl FnOnce(&mut TraceWriter<std::fs::File>),
    ) -> rrr_trace::TraceSummary {
        let file = std::fs::File::create(path).unwrap();
        let mut writer = TraceWriter::new(file, self.profile.clone());
        setup(&mut writer);
        let mut batch = Batch::with_capacity(records.len());
        batch.records = records.to_vec();
        writer.write_batch(&batch).unwrap();
        writer.finish().unwrap()
    }
}

/// exec renames the process (`__set_task_comm` on its main thread): the thread and its process
/// carry the program's name from then on (Perfetto keeps one name per thread and process).
#[test]
fn an_exec_renames_the_thread_and_its_process() {
    let t = OnThread::new();
    let records = [
        t.named(1000, "sh"),
        t.enter(1010, 0x3f00, "ksys_write"),
        t.ret(1020, 0x3f00),
        t.named(2000, "stimulus"),
        t.enter(2010, 0x3f00, "ksys_write"),
        t.ret(2020, 0x3f00),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exec.pftrace");
    t.write(&path, &records, |_| {});
    let r = tp::query(
        &path,
        &[
            "select t.name, p.name, count(*) from slice s join thread_track tt \
             on s.track_id = tt.id join thread t using (utid) join process p using (upid) \
             group by utid",
            "select count(*) from process where pid = 300",
        ],
    );
    assert_eq!(tp::lines(&r[0]), vec!["stimulus|stimulus|2"]);
    assert_eq!(tp::lines(&r[1]), vec!["1"]);
}

/// The crash a recording ended at is an instant at the first call of a reporting function, on
/// its thread and on a top-level `crash` track, with the report, and whether the calls open
/// then are the report's call trace.
#[test]
fn a_crash_is_marked_where_the_kernel_starts_reporting_it() {
    let t = OnThread::new();
    let records = [
        t.named(1000, "stimulus"),
        t.enter(1010, 0x3f00, "do_syscall_64"),
        t.enter(1020, 0x3e00, "ksys_write"),
        t.enter(1030, 0x3d00, "kasan_report"),
        t.ret(1040, 0x3d00),
        // A second report is not marked again.
        t.enter(1050, 0x3d00, "kasan_report"),
        t.ret(1060, 0x3d00),
        t.ret(1070, 0x3e00),
        t.ret(1080, 0x3f00),
    ];
    let report = |frames: &[&str]| rrr_trace::CrashReport {
        title: "KASAN: use-after-free in ksys_write".into(),
        text: "BUG: KASAN: use-after-free in ksys_write+0x1/0x2\nCall Trace:\n".into(),
        frames: frames.iter().map(|f| f.to_string()).collect(),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.pftrace");
    let summary = t.write(&path, &records, |w| {
        w.mark_crash(report(&[
            "dump_stack_lvl",
            "kasan_report",
            "ksys_write",
            "do_syscall_64",
            "entry_SYSCALL_64_after_hwframe",
        ]))
    });
    assert_eq!(summary.crash_at, Some(1030));
    let instants = "select coalesce(t.name, tr.name), s.ts, \
         extract_arg(s.arg_set_id, 'debug.reported_by'), extract_arg(s.arg_set_id, 'debug.stack'), \
         extract_arg(s.arg_set_id, 'debug.report') from slice s join track tr on s.track_id = tr.id \
         left join thread_track tt on s.track_id = tt.id left join thread t using (utid) \
         where s.name = 'KASAN: use-after-free in ksys_write' order by t.name is null";
    let r = tp::query(&path, &[instants]);
    let agrees = "kasan_report|the calls open here are the report's call trace|\
                  BUG: KASAN: use-after-free in ksys_write+0x1/0x2";
    assert_eq!(
        tp::lines(&r[0])
            .iter()
            .map(|l| l.split("\nCall Trace:").next().unwrap().to_owned())
            .collect::<Vec<_>>(),
        vec![
            format!("stimulus|1030|{agrees}"),
            format!("crash|1030|{agrees}")
        ]
    );

    // A report whose call trace the open calls do not show says so.
    let path = dir.path().join("differs.pftrace");
    t.write(&path, &records, |w| {
        w.mark_crash(report(&["kasan_report", "do_sys_openat2", "do_syscall_64"]))
    });
    let r = tp::query(
        &path,
        &["select extract_arg(arg_set_id, 'debug.stack') from slice where dur = 0 limit 1"],
    );
    assert_eq!(
        tp::lines(&r[0]),
        vec!["differs from the report's call trace: not open here: do_sys_openat2"]
    );
}

/// A window writes only its part of the replay: calls open at its start begin there, calls
/// open at its end end there, and nothing outside it is written.
#[test]
fn a_window_holds_its_part_with_the_calls_open_at_its_ends() {
    let t = OnThread::new();
    let records = [
        t.named(1000, "stimulus"),
        t.enter(1010, 0x3f00, "do_syscall_64"),
        t.enter(1020, 0x3e00, "ksys_write"),
        t.ret(1030, 0x3e00),
        t.enter(1040, 0x3e00, "do_sys_openat2"),
        // The window: 1050..1100.
        t.enter(1060, 0x3d00, "schedule"),
        t.ret(1070, 0x3d00),
        t.ret(1080, 0x3e00),
        t.enter(1090, 0x3e00, "ksys_write"),
        // After it.
        t.ret(1110, 0x3e00),
        t.ret(1120, 0x3f00),
        t.enter(1130, 0x3f00, "do_syscall_64"),
        t.ret(1140, 0x3f00),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("window.pftrace");
    t.write(&path, &records, |w| {
        w.set_window("1050..1100".parse().unwrap())
    });
    let r = tp::query(
        &path,
        &[
            "select s.name, s.ts, s.dur, s.depth, t.name from slice s join thread_track tt \
           on s.track_id = tt.id join thread t using (utid) order by s.ts, s.depth",
        ],
    );
    assert_eq!(
        tp::lines(&r[0]),
        vec![
            "do_syscall_64|1050|50|0|stimulus",
            "do_sys_openat2|1050|30|1|stimulus",
            "schedule|1060|10|2|stimulus",
            "ksys_write|1090|10|1|stimulus",
        ]
    );
}

/// A depth limit writes the kernel's calls no deeper than it below the entry; the deeper
/// ones still run on the shadow stack, so the written ones end where they did, also when a
/// window starts while the deep calls are open.
#[test]
fn a_depth_limit_keeps_the_shallow_calls() {
    let t = OnThread::new();
    let records = [
        t.named(1000, "stimulus"),
        t.enter(1010, 0x3f00, "do_syscall_64"),
        t.enter(1020, 0x3e00, "ksys_write"),
        t.enter(1030, 0x3d00, "schedule"),
        t.enter(1040, 0x3c00, "do_sys_openat2"),
        t.ret(1050, 0x3c00),
        t.ret(1060, 0x3d00),
        t.enter(1070, 0x3d00, "schedule"),
        // Unwinds schedule (hidden) and ksys_write.
        t.ret(1080, 0x3f00),
    ];
    let dir = tempfile::tempdir().unwrap();
    let slices = |window: Option<&str>| {
        let path = dir.path().join("depth.pftrace");
        t.write(&path, &records, |w| {
            w.set_focus(rrr_trace::Threads::All, Some(1));
            if let Some(window) = window {
                w.set_window(window.parse().unwrap());
            }
        });
        let q = "select s.name, s.ts, s.dur, s.depth from slice s order by s.ts, s.depth";
        tp::lines(&tp::query(&path, &[q])[0])
    };
    assert_eq!(
        slices(None),
        vec!["do_syscall_64|1010|70|0", "ksys_write|1020|60|1"]
    );
    assert_eq!(
        slices(Some("1045..1075")),
        vec!["do_syscall_64|1045|30|0", "ksys_write|1045|30|1"]
    );
}

/// A size budget keeps the end in one pass: the trace is within the budget, ends where the
/// whole one does, holds exactly the whole trace's slices after where it starts, and the
/// calls open there (a syscall open since the start, on a thread renamed long before) start
/// there, on their thread and process, by name.
#[test]
fn a_budget_keeps_the_end_with_the_calls_open_where_it_starts() {
    let profile = support::profile();
    let id = |name| support::id(&profile, name);
    let thread = |stack: u64, pid: i32, name: &str| {
        let mut comm = [0u8; 16];
        comm[..name.len()].copy_from_slice(name.as_bytes());
        let ident = ThreadIdent {
            tid: pid,
            pid,
            comm,
            kernel: false,
        };
        (TrackKey::Thread(stack), ident)
    };
    let (a, stimulus) = thread(support::KA, 300, "stimulus");
    let (b, worker) = thread(support::KB, 400, "worker");
    let (_, renamed) = thread(support::KB, 400, "worker2");
    let enter = |ts, track, sp, func| Record::Enter {
        ts,
        track,
        sp,
        func,
        args: ArgsRef::default(),
    };
    let ret = |ts, track, sp| Record::Return {
        ts,
        track,
        sp,
        pc: 0,
        value: [0, 0],
    };
    let mut records = vec![
        Record::Thread {
            ts: 1000,
            track: a,
            ident: stimulus,
        },
        Record::Thread {
            ts: 1001,
            track: b,
            ident: worker,
        },
        enter(1002, a, support::KA + 0x3f00, id("do_syscall_64")),
        Record::Thread {
            ts: 1003,
            track: b,
            ident: renamed,
        },
    ];
    let mut ts = 1010;
    for _ in 0..150_000 {
        for (track, base) in [(a, support::KA), (b, support::KB)] {
            records.push(enter(ts, track, base + 0x3e00, id("ksys_write")));
            records.push(enter(ts + 1, track, base + 0x3d00, id("schedule")));
            records.push(ret(ts + 2, track, base + 0x3d00));
            records.push(ret(ts + 3, track, base + 0x3e00));
            ts += 4;
        }
    }
    // The writer dies (without finishing) before `dies_at` records, if given.
    let write_until = |path: &std::path::Path,
                       budget: Option<rrr_trace::ring::Budget>,
                       dies_at: Option<usize>| {
        let file = std::fs::File::create(path).unwrap();
        let mut writer = TraceWriter::new(file, profile.clone());
        if let Some(b) = budget {
            writer.set_budget(b);
        }
        let end = dies_at.unwrap_or(records.len());
        for chunk in records[..end].chunks(4096) {
            let mut batch = Batch::with_capacity(chunk.len());
            batch.records = chunk.to_vec();
            writer.write_batch(&batch).unwrap();
        }
        dies_at.is_none().then(|| writer.finish().unwrap())
    };
    let write = |path: &std::path::Path, budget| write_until(path, budget, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.pftrace");
    let whole_summary = write(&whole, None);
    assert!(whole_summary.bytes > 6 << 20, "{whole_summary:?}");
    let cut = dir.path().join("cut.pftrace");
    let parts = dir.path().join("parts");
    let budget = 3 << 20;
    let summary = write(
        &cut,
        Some(rrr_trace::ring::Budget {
            bytes: budget,
            parts: parts.clone(),
        }),
    );
    let size = std::fs::metadata(&cut).unwrap().len();
    assert!(size <= budget && size > budget / 2, "{size} for {budget}");
    assert_eq!(summary.bytes, size);
    assert!(!parts.exists(), "the segments are removed");
    let kept = summary.cut.expect("the budget cut the trace");
    // Each segment describes again the tracks it uses: a few bytes more than the whole trace.
    let extra = kept.whole_bytes - whole_summary.bytes;
    assert!(extra < whole_summary.bytes / 1000, "{extra} bytes more");
    assert_eq!(kept.whole_events, whole_summary.events);
    let from = kept.from;
    assert!(from > 1010 && from < ts, "{kept:?}");

    let after = format!("select count(*), max(ts + dur) from slice where ts > {from} and dur >= 0");
    let open = format!(
        "select s.name, s.depth, t.name, p.name from slice s join thread_track tt \
         on s.track_id = tt.id join thread t using (utid) join process p using (upid) \
         where s.ts = {from} order by t.name, s.depth"
    );
    let w = tp::query(&whole, &[&after]);
    let r = tp::query(
        &cut,
        &[
            &after,
            &open,
            "select distinct t.name from thread t join thread_track tt using (utid) \
             order by 1",
            "select count(*) from slice where dur < 0",
            ERRORS,
        ],
    );
    assert_eq!(
        tp::lines(&r[0]),
        tp::lines(&w[0]),
        "the slices after the cut"
    );
    let open = tp::lines(&r[1]);
    assert_eq!(
        open.first().map(String::as_str),
        Some("do_syscall_64|0|stimulus|stimulus"),
        "{open:?}"
    );
    assert_eq!(
        tp::lines(&r[2]),
        vec!["stimulus", "worker2"],
        "names given before the cut"
    );
    assert_eq!(tp::lines(&r[3]), vec!["0"]);
    assert_eq!(tp::lines(&r[4]), Vec::<String>::new(), "no import errors");

    // A writer that dies leaves segments that make a trace that opens.
    let died = dir.path().join("died.pftrace");
    let budget = rrr_trace::ring::Budget {
        bytes: budget,
        parts: parts.clone(),
    };
    assert!(write_until(&died, Some(budget), Some(records.len() * 2 / 3)).is_none());
    let mut out = std::fs::File::create(&died).unwrap();
    rrr_trace::ring::salvage(&parts, &mut out).unwrap();
    assert!(!parts.exists());
    let r = tp::query(
        &died,
        &[
            "select count(*) > 1000, min(ts) > 1010 from slice where name = 'schedule'",
            "select count(*) from slice where name = 'do_syscall_64'",
            ERRORS,
        ],
    );
    assert_eq!(
        tp::lines(&r[0]),
        vec!["1|1"],
        "the end it had, not the start"
    );
    assert_eq!(
        tp::lines(&r[1]),
        vec!["1"],
        "the open call, where it starts"
    );
    assert_eq!(tp::lines(&r[2]), Vec::<String>::new(), "no import errors");
}

/// A call made before tracing began, which returns inside a window, is drawn from the
/// window's start, not from the trace's first event: a window (or a kept part of a budget)
/// never opens on an empty timeline.
#[test]
fn a_call_from_before_the_trace_is_drawn_from_the_windows_start() {
    let t = OnThread::new();
    // A return above every frame seen, in `started_before` (at K + 0x800).
    let before = Record::Return {
        ts: 1080,
        track: t.track,
        sp: support::KA + 0x3f80,
        pc: support::K + 0x810,
        value: [0, 0],
    };
    let records = [
        t.named(1000, "stimulus"),
        t.enter(1010, 0x3e00, "ksys_write"),
        t.ret(1020, 0x3e00),
        // The window: 1050..1100.
        t.enter(1060, 0x3e00, "ksys_write"),
        t.ret(1070, 0x3e00),
        before,
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("window.pftrace");
    t.write(&path, &records, |w| {
        w.set_window("1050..1100".parse().unwrap())
    });
    let r = tp::query(
        &path,
        &["select s.name, s.ts, s.dur, s.depth from slice s order by s.ts, s.depth"],
    );
    assert_eq!(
        tp::lines(&r[0]),
        vec!["started_before|1050|30|0", "ksys_write|1060|10|1"]
    );
}
