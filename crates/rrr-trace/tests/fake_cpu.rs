//! Drives the whole core (observer, channel, writer) with a fake CPU and reads the trace back
//! with the prost types.

mod support;

use rrr_trace::{Backpressure, Observer, OsLayout, Pipeline, PipelineConfig, Reg};
use support::{id, scenario, slices, FakeCpu, Slice, GS0, K, KA, TASK_A};

fn run(config: PipelineConfig) -> (Vec<u8>, rrr_trace::TraceSummary) {
    run_with(config, scenario)
}

fn run_with(
    config: PipelineConfig,
    drive: impl FnOnce(&mut Observer),
) -> (Vec<u8>, rrr_trace::TraceSummary) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pftrace");
    let profile = support::profile();
    let layout = OsLayout::from_profile(&profile);
    let mut pipe = Pipeline::create(&path, profile, layout, config).unwrap();
    drive(pipe.observer());
    let summary = pipe.finish().unwrap();
    (std::fs::read(&path).unwrap(), summary)
}

fn s(track: &str, ts: u64, dur: u64, depth: usize, name: &str, args: &[(&str, &str)]) -> Slice {
    Slice {
        track: track.into(),
        ts,
        dur,
        depth,
        name: name.into(),
        args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        flows_out: vec![],
        flows_in: vec![],
    }
}

#[test]
fn scenario_gives_exact_slice_tree() {
    let (bytes, summary) = run(PipelineConfig {
        batch_len: 3,
        ..Default::default()
    });
    let got = slices(&bytes);
    let a = "stimulus 100";
    let b = "stimulus 101";
    let irq = "IRQ cpu0";
    let mut want = vec![
        s(
            irq,
            150,
            5,
            0,
            "tail_target",
            &[("x", "0"), ("return", "0")],
        ),
        s(irq, 160, 10, 0, "common_interrupt", &[("irq", "33")]),
        s(
            irq,
            175,
            1,
            0,
            "set_mode",
            &[
                ("m", "\"MODE_B\""),
                ("on", "true"),
                ("delta", "-5"),
                ("c", "255"),
                ("s7", "-7"),
                ("return", "true"),
            ],
        ),
        s(a, 100, 0, 0, "started_before", &[("return", "42")]),
        s(
            a,
            110,
            170,
            0,
            "main",
            &[("argc", "1"), ("argv", "0x7ffc1000")],
        ),
        s(
            a,
            120,
            150,
            1,
            "do_syscall_64",
            &[
                (
                    "regs",
                    &format!("(struct pt_regs *){:#x}", support::KA + 0x3f60),
                ),
                ("nr", "257"),
            ],
        ),
        s(
            a,
            130,
            50,
            2,
            "do_sys_openat2",
            &[
                ("dfd", "-100"),
                ("filename", "\"/tmp/rrr-test\""),
                (
                    "how",
                    &format!("(struct open_how *){:#x}", support::KA + 0x3e80),
                ),
                ("return", "3"),
            ],
        ),
        s(a, 140, 40, 3, "tail_target", &[("x", "7"), ("return", "3")]),
        s(
            a,
            190,
            70,
            2,
            "ksys_write",
            &[
                ("fd", "3"),
                ("buf", "\"hello\""),
                ("count", "5"),
                ("return", "5"),
            ],
        ),
        s(a, 200, 50, 3, "schedule", &[]),
        s(a, 210, 0, 4, "sched_out", &[]),
        s(a, 280, 0, 1, "tail_target", &[("x", "9")]),
        s(b, 100, 110, 0, "schedule", &[]),
        s(
            b,
            220,
            10,
            0,
            "ksys_write",
            &[
                ("fd", "4"),
                ("buf", "\"world\""),
                ("count", "5"),
                ("return", "5"),
            ],
        ),
        s(b, 250, 0, 0, "sched_out", &[]),
    ];
    // Flows: A's switch-out at 210 ends at B's next call; B's at 250 at A's next call.
    want[10].flows_out = vec![1];
    want[13].flows_in = vec![1];
    want[14].flows_out = vec![2];
    want[11].flows_in = vec![2];
    want.sort_by(|a, b| (&a.track, a.ts, a.depth).cmp(&(&b.track, b.ts, b.depth)));
    assert_eq!(got, want);
    assert_eq!(summary.dropped, 0);
    assert_eq!(
        summary.events as usize,
        2 * want.len() - 2 /* instants */
    );
    assert_eq!(summary.bytes as usize, bytes.len());
}

#[test]
fn replaying_the_same_events_gives_identical_bytes() {
    let (a, _) = run(PipelineConfig::default());
    let (b, _) = run(PipelineConfig {
        batch_len: 1,
        queue_batches: 1,
        ..Default::default()
    });
    assert_eq!(a, b);
}

/// An output whose first write blocks until the test lets it go: the writer thread is
/// provably stuck while the engine produces.
struct Gate {
    file: std::fs::File,
    entered: Option<std::sync::mpsc::Sender<()>>,
    release: std::sync::mpsc::Receiver<()>,
}

impl std::io::Write for Gate {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Some(entered) = self.entered.take() {
            entered.send(()).unwrap();
            self.release.recv().unwrap();
        }
        self.file.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[test]
fn drop_mode_counts_losses_in_the_trace_stats() {
    // A one-batch queue behind a writer stuck in its first write: batches are dropped.
    let config = PipelineConfig {
        batch_len: 1,
        queue_batches: 1,
        backpressure: Backpressure::Drop,
        flush_interval: std::time::Duration::from_millis(1),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pftrace");
    let profile = support::profile();
    let layout = OsLayout::from_profile(&profile);
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let gate = Gate {
        file: std::fs::File::create(&path).unwrap(),
        entered: Some(entered_tx),
        release: release_rx,
    };
    let mut pipe = Pipeline::start(gate, profile, layout, config);
    scenario(pipe.observer());
    pipe.observer().flush();
    entered.recv().unwrap();
    for _ in 0..20 {
        scenario(pipe.observer());
    }
    release.send(()).unwrap();
    let summary = pipe.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    use prost::Message;
    let trace = rrr_perfetto::proto::Trace::decode(&bytes[..]).unwrap();
    let reported: u64 = trace
        .packet
        .iter()
        .filter_map(|p| match &p.data {
            Some(rrr_perfetto::proto::trace_packet::Data::TraceStats(s)) => {
                Some(s.buffer_stats[0].trace_writer_packet_loss())
            }
            _ => None,
        })
        .sum();
    assert!(
        summary.dropped > 0,
        "nothing was dropped; the test did not exercise drop mode"
    );
    assert_eq!(reported, summary.dropped);
}

#[test]
fn an_interrupt_from_user_mode_ends_with_its_handlers_return_and_power_off_ends_all() {
    let (bytes, _) = run_with(PipelineConfig::default(), |obs| {
        let p = support::profile();
        let mut c = on_task_a();
        let mut at = |obs: &mut Observer, sp: u64, func: Option<&str>, ts: u64| {
            c.set(Reg::RSP, sp);
            match func {
                Some(name) => obs.on_enter(0, &mut c, id(&p, name), ts),
                None => obs.on_return(0, &mut c, K + 0x10, rrr_trace::Returns::Rax, ts),
            }
        };
        at(obs, 0x7ffc_0ff8, Some("main"), 10);
        // Kernel code seen on the user stack (an entry stub) is not a call.
        at(obs, 0x7ffc_0ff0, Some("tail_target"), 15);
        // The interrupt's handler is called where a syscall's handler would be.
        at(obs, KA + 0x3f58, Some("common_interrupt"), 20);
        at(obs, KA + 0x3f00, Some("schedule"), 25);
        at(obs, KA + 0x3f00, None, 30);
        at(obs, KA + 0x3f58, None, 35);
        // Back in user space unseen; the next syscall is the thread's again.
        at(obs, KA + 0x3f58, Some("do_syscall_64"), 40);
        at(obs, KA + 0x3f58, None, 50);
        // Powering off ends the trace: nothing after it is recorded.
        at(obs, KA + 0x3f00, Some("kernel_power_off"), 60);
        at(obs, KA + 0x3e00, Some("schedule"), 70);
        at(obs, KA + 0x3f00, None, 80);
    });
    let got: Vec<_> = slices(&bytes)
        .into_iter()
        .map(|s| (s.track, s.ts, s.dur, s.depth, s.name))
        .collect();
    let want = [
        ("IRQ cpu0", 20, 15, 0, "common_interrupt"),
        ("IRQ cpu0", 25, 5, 1, "schedule"),
        ("stimulus 100", 10, 50, 0, "main"),
        ("stimulus 100", 40, 10, 1, "do_syscall_64"),
        ("stimulus 100", 60, 0, 1, "kernel_power_off"),
    ]
    .map(|(t, ts, d, depth, n)| (t.to_string(), ts, d, depth, n.to_string()));
    assert_eq!(got, want);
}

#[test]
fn a_thread_switched_out_inside_an_interrupt_is_current_again_when_switched_back() {
    let (bytes, _) = run_with(PipelineConfig::default(), |obs| {
        let p = support::profile();
        let mut c = on_task_a();
        support::task(&mut c, support::TASK_B, 10, 10, "rcu_sched", support::KB);
        c.set(Reg::RSP, 0x7ffc_0ff8);
        obs.on_enter(0, &mut c, id(&p, "main"), 10);
        // A timer interrupt from user mode; leaving it, A schedules B in.
        c.set(Reg::RSP, KA + 0x3f58);
        obs.on_enter(0, &mut c, id(&p, "common_interrupt"), 20);
        c.set(Reg::RSP, KA + 0x3f00);
        obs.on_enter(0, &mut c, id(&p, "schedule"), 25);
        c.set(Reg::RSP, support::KB + 0x3f00)
            .set(Reg(5), TASK_A)
            .set(Reg(4), support::TASK_B);
        obs.on_enter(0, &mut c, id(&p, "__switch_to"), 30);
        c.poke_u64(GS0 + 0x100, support::TASK_B);
        c.set(Reg::RSP, support::KB + 0x3e00).set(Reg(5), 3);
        obs.on_enter(0, &mut c, id(&p, "tail_target"), 40);
        // B schedules A back in, still inside A's interrupt handler.
        c.set(Reg::RSP, KA + 0x3e00)
            .set(Reg(5), support::TASK_B)
            .set(Reg(4), TASK_A);
        obs.on_enter(0, &mut c, id(&p, "__switch_to"), 50);
        c.poke_u64(GS0 + 0x100, TASK_A);
        c.set(Reg::RSP, KA + 0x3f58);
        obs.on_return(0, &mut c, K + 0x10, rrr_trace::Returns::Rax, 60);
        // Back in A's user code.
        c.set(Reg::RSP, 0x7ffc_0f00);
        obs.on_enter(0, &mut c, id(&p, "main"), 70);
    });
    let mut got: Vec<(String, u64, String)> = slices(&bytes)
        .into_iter()
        .filter(|s| s.name == "main")
        .map(|s| (s.track, s.ts, s.name))
        .collect();
    got.sort();
    let a = "stimulus 100".to_string();
    assert_eq!(
        got,
        [(a.clone(), 10, "main".into()), (a, 70, "main".into())],
        "user code after the interrupt is the interrupted thread's, not the last one switched out"
    );
}

#[test]
fn a_thread_whose_task_cannot_be_read_is_named_by_its_whole_stack_base() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pftrace");
    let profile = support::profile();
    // No per-CPU `current_task`: no task can be read.
    let layout = OsLayout {
        current_task: None,
        ..OsLayout::from_profile(&profile)
    };
    let mut pipe = Pipeline::create(&path, profile, layout, PipelineConfig::default()).unwrap();
    scenario(pipe.observer());
    pipe.finish().unwrap();
    let tracks: std::collections::BTreeSet<String> = slices(&std::fs::read(&path).unwrap())
        .into_iter()
        .map(|s| s.track)
        .filter(|t| t.starts_with("stack-"))
        .collect();
    let want: std::collections::BTreeSet<String> = [support::KA, support::KB]
        .iter()
        .map(|k| format!("stack-{k:x} -1"))
        .collect();
    assert_eq!(tracks, want);
}

#[test]
fn structs_returned_in_two_registers_or_in_memory_are_decoded_whole() {
    let (bytes, _) = run_with(PipelineConfig::default(), |obs| {
        let p = support::profile();
        let mut c = on_task_a();
        let ret = |obs: &mut Observer, c: &mut FakeCpu, pc: u64, ts: u64| {
            let returns = rrr_trace::Returns::at(obs.profile(), pc);
            obs.on_return(0, c, pc, returns, ts);
        };
        // current_time: a 16-byte struct in rax:rdx.
        c.set(Reg::RSP, KA + 0x3f00);
        obs.on_enter(0, &mut c, id(&p, "current_time"), 10);
        c.set(Reg::RAX, 0x6b0c_af10).set(Reg::RDX, 0x29a3_29da);
        ret(obs, &mut c, K + 0xb10, 20);
        // build_open_how: 24 bytes in memory, rax holds its address.
        c.poke_u64(0xffff_8880_0000_1000, 0x8241);
        c.poke_u64(0xffff_8880_0000_1008, 0o644);
        obs.on_enter(0, &mut c, id(&p, "build_open_how"), 30);
        c.set(Reg::RAX, 0xffff_8880_0000_1000);
        ret(obs, &mut c, K + 0xc10, 40);
    });
    let got: Vec<(String, Vec<(String, String)>)> = slices(&bytes)
        .into_iter()
        .map(|s| (s.name, s.args))
        .collect();
    let ret = |v: &str| vec![("return".to_owned(), v.to_owned())];
    assert_eq!(
        got,
        [
            ("current_time".to_owned(), ret("[1795993360, 698558938]")),
            ("build_open_how".to_owned(), ret("[33345, 420]")),
        ]
    );
}

#[test]
fn a_thread_that_renames_itself_is_named_anew_from_that_moment() {
    // One-record batches too: the rename's entry is sent, with its argument words, before the
    // observer reads the new name.
    for batch_len in [PipelineConfig::default().batch_len, 1] {
        let config = PipelineConfig {
            batch_len,
            ..PipelineConfig::default()
        };
        let (bytes, _) = run_with(config, |obs| {
            let p = support::profile();
            let mut c = on_task_a();
            c.poke_str(0x7ffc_5000, "rrr-renamed-thread");
            c.set(Reg::RSP, KA + 0x3f00).set(Reg(5), 3);
            obs.on_enter(0, &mut c, id(&p, "tail_target"), 10);
            // prctl(PR_SET_NAME): the kernel copies 15 bytes of the name.
            c.set(Reg::RSP, KA + 0x3e00)
                .set(Reg(5), TASK_A)
                .set(Reg(4), 0x7ffc_5000)
                .set(Reg(1), 0);
            obs.on_enter(0, &mut c, id(&p, "__set_task_comm"), 20);
            c.set(Reg::RSP, KA + 0x3d00).set(Reg(5), 4);
            obs.on_enter(0, &mut c, id(&p, "tail_target"), 30);
        });
        let tracks: Vec<(String, String)> = slices(&bytes)
            .into_iter()
            .map(|s| (s.name, s.track))
            .collect();
        let renamed = "rrr-renamed-thr 100";
        assert!(
            tracks.contains(&("tail_target".into(), renamed.into()))
                && tracks.iter().all(|(_, t)| t == renamed),
            "batches of {batch_len}: one thread track, named anew (Perfetto keeps a thread's \
             last name): {tracks:?}"
        );
    }
}

#[test]
fn a_switchs_calls_are_the_previous_threads_until_current_names_the_next() {
    let (bytes, _) = run_with(PipelineConfig::default(), |obs| {
        let p = support::profile();
        let mut c = on_task_a();
        support::task(&mut c, support::TASK_B, 101, 100, "stimulus", support::KB);
        c.set(Reg::RSP, KA + 0x3f00).set(Reg(5), 3);
        obs.on_enter(0, &mut c, id(&p, "tail_target"), 10);
        // __switch_to_asm has moved to B's stack; current_task is still A until
        // __switch_to writes it: its entry and its first calls (saving A's segments) are A's.
        c.set(Reg::RSP, support::KB + 0x3f00)
            .set(Reg(5), TASK_A)
            .set(Reg(4), support::TASK_B);
        obs.on_enter(0, &mut c, id(&p, "__switch_to"), 20);
        c.set(Reg::RSP, support::KB + 0x3e00).set(Reg(5), 4);
        obs.on_enter(0, &mut c, id(&p, "tail_target"), 30);
        c.set(Reg::RAX, 0);
        obs.on_return(0, &mut c, K + 0x510, rrr_trace::Returns::Rax, 35);
        // current_task is B: the rest of __switch_to is B's, B's first resume on its own
        // track; its return ends it there.
        c.poke_u64(GS0 + 0x100, support::TASK_B);
        c.set(Reg::RSP, support::KB + 0x3d00).set(Reg(5), 5);
        obs.on_enter(0, &mut c, id(&p, "tail_target"), 40);
        obs.on_return(0, &mut c, K + 0x510, rrr_trace::Returns::Rax, 45);
        c.set(Reg::RSP, support::KB + 0x3f00).set(Reg::RAX, TASK_A);
        obs.on_return(0, &mut c, K + 0xe10, rrr_trace::Returns::Rax, 50);
    });
    let got: Vec<(String, u64, u64, usize, String)> = slices(&bytes)
        .into_iter()
        .map(|s| (s.track, s.ts, s.dur, s.depth, s.name))
        .collect();
    let (a, b) = ("stimulus 100", "stimulus 101");
    let want = [
        (a, 10, 40, 0, "tail_target"),
        (a, 20, 20, 1, "__switch_to"),
        (a, 30, 5, 2, "tail_target"),
        (a, 40, 0, 1, "sched_out"),
        (b, 40, 10, 0, "__switch_to"),
        (b, 40, 5, 1, "tail_target"),
    ]
    .map(|(t, ts, dur, d, n)| (t.to_owned(), ts, dur, d, n.to_owned()));
    assert_eq!(got, want);

    // The same when the trace begins inside the switch (no thread seen on this CPU yet).
    let (bytes, _) = run_with(PipelineConfig::default(), |obs| {
        let p = support::profile();
        let mut c = on_task_a();
        support::task(&mut c, support::TASK_B, 101, 100, "stimulus", support::KB);
        c.set(Reg::RSP, support::KB + 0x3f00)
            .set(Reg(5), TASK_A)
            .set(Reg(4), support::TASK_B);
        obs.on_enter(0, &mut c, id(&p, "__switch_to"), 20);
        c.poke_u64(GS0 + 0x100, support::TASK_B);
        c.set(Reg::RSP, support::KB + 0x3d00).set(Reg(5), 5);
        obs.on_enter(0, &mut c, id(&p, "tail_target"), 40);
    });
    let got: Vec<(String, u64, String)> = slices(&bytes)
        .into_iter()
        .map(|s| (s.track, s.ts, s.name))
        .collect();
    let want = [
        (a, 20, "__switch_to"),
        (b, 40, "__switch_to"),
        (b, 40, "tail_target"),
    ]
    .map(|(t, ts, n)| (t.to_owned(), ts, n.to_owned()));
    assert_eq!(got, want);
}

/// A CPU running task A (pid 100, `stimulus`, stack KA), in the kernel or in user mode (the
/// per-CPU base swapped into KERNEL_GS_BASE).
fn on_task_a() -> FakeCpu {
    let mut c = FakeCpu::default();
    c.set(Reg::GS_BASE, GS0);
    c.set(Reg::KERNEL_GS_BASE, GS0);
    c.poke_u64(GS0 + 0x100, TASK_A);
    support::task(&mut c, TASK_A, 100, 100, "stimulus", KA);
    c
}

#[test]
fn a_parameter_a_clone_is_not_passed_is_read_where_its_call_site_says() {
    let (bytes, _) = run_with(PipelineConfig::default(), |obs| {
        let p = support::profile();
        let mut c = on_task_a();
        let clone = id(&p, "pmd_offset.isra.0");
        c.set(Reg(4), 0x7f00).set(Reg(3), 0xffff_8880_0059_9000);
        c.set(Reg(6), KA + 0x3f80);
        c.poke_u64(KA + 0x3f80 - 104, 0xffff_8880_0066_6000);
        // Three calls, each returning to another call site.
        for (ts, ret) in [(10, 0x1110), (20, 0x1120), (30, 0x1130)] {
            c.set(Reg::RSP, KA + 0x3f00);
            c.poke_u64(KA + 0x3f00, K + ret);
            obs.on_enter(0, &mut c, clone, ts);
            obs.on_return(0, &mut c, K + 0x1010, rrr_trace::Returns::Rax, ts + 5);
        }
    });
    let got: Vec<(u64, Vec<(String, String)>)> = slices(&bytes)
        .into_iter()
        .map(|s| {
            (
                s.ts,
                s.args.into_iter().filter(|(k, _)| k != "return").collect(),
            )
        })
        .collect();
    let args = |pud: Option<&str>| {
        let mut a = vec![("address".to_owned(), "32512".to_owned())];
        a.extend(pud.map(|v| ("pud".to_owned(), v.to_owned())));
        a
    };
    assert_eq!(
        got,
        [
            (10, args(Some("0xffff888000599000"))),
            (20, args(Some("0xffff888000666000"))),
            (30, args(None)),
        ]
    );
}

#[test]
fn an_irq_stack_across_two_thread_size_blocks_is_one_irq_track() {
    // The IRQ stack is only page-aligned (the per-CPU area's `irq_stack_backing_store`, or
    // its vmap): here it spans [IRQ0 + 0x2000, IRQ0 + 0x6000), half in each 16 KiB block.
    let low = support::IRQ0 + 0x2000;
    let (bytes, _) = run_with(PipelineConfig::default(), |obs| {
        let p = support::profile();
        let mut c = on_task_a();
        c.poke_u64(GS0 + 0x108, low + 0x4000 - 8);
        let mut at = |obs: &mut Observer, sp: u64, func: Option<&str>, ts: u64| {
            c.set(Reg::RSP, sp).set(Reg(5), 1);
            match func {
                Some(name) => obs.on_enter(0, &mut c, id(&p, name), ts),
                None => obs.on_return(0, &mut c, K + 0x10, rrr_trace::Returns::Rax, ts),
            }
        };
        at(obs, KA + 0x3f00, Some("tail_target"), 10);
        at(obs, KA + 0x3e00, Some("common_interrupt"), 20);
        // The handler's work on the IRQ stack: near its top, then deep (a softirq), in the
        // lower block.
        at(obs, low + 0x3f00, Some("schedule"), 30);
        at(obs, low + 0x0100, Some("tail_target"), 40);
        at(obs, low + 0x0100, None, 50);
        at(obs, low + 0x3f00, None, 60);
        at(obs, KA + 0x3e00, None, 70);
        at(obs, KA + 0x3f00, None, 80);
    });
    let got: Vec<(String, u64, usize, String)> = slices(&bytes)
        .into_iter()
        .map(|s| (s.track, s.ts, s.depth, s.name))
        .collect();
    let want = [
        ("IRQ cpu0", 20, 0, "common_interrupt"),
        ("IRQ cpu0", 30, 1, "schedule"),
        ("IRQ cpu0", 40, 2, "tail_target"),
        ("stimulus 100", 10, 0, "tail_target"),
    ]
    .map(|(t, ts, d, n)| (t.to_owned(), ts, d, n.to_owned()));
    assert_eq!(got, want, "no track of a stack nobody owns");
}

/// The watch's events of a syscall made with the user stack holding `stack` (address, word),
/// and the trace's bytes.
fn syscall_watched(stack: &[(u64, u64)]) -> (Vec<rrr_trace::watch::Event>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let accesses = dir.path().join("accesses");
    let range = rrr_trace::watch::Range {
        addr: 0xffff_8880_0012_3400,
        len: 8,
    };
    let config = PipelineConfig {
        options: rrr_trace::TraceOptions {
            watch: Some(range),
            accesses: Some(accesses.clone()),
            ..Default::default()
        },
        accesses: Some(std::sync::Arc::new(
            std::fs::File::create(&accesses).unwrap(),
        )),
        ..Default::default()
    };
    let (bytes, _) = run_with(config, |obs| {
        let p = support::profile();
        let mut c = on_task_a();
        let regs = KA + 0x3f60;
        c.set(Reg::RSP, KA + 0x3f58)
            .set(Reg(5), regs)
            .set(Reg(4), 257);
        c.poke_u64(regs + 19 * 8, 0x7ffc_1000);
        for &(addr, word) in stack {
            c.poke_u64(addr, word);
        }
        obs.on_enter(0, &mut c, id(&p, "do_syscall_64"), 10);
        // In KASAN's check: not marked in the trace, whose reader wants interned names.
        let access = rrr_trace::record::Access {
            cpu: 0,
            pc: K + 0xf10,
            addr: range.addr,
            size: 8,
            write: true,
            value: 7,
        };
        obs.on_access(&mut c, access, 20);
    });
    let text = std::fs::read_to_string(&accesses).unwrap();
    let events = text
        .lines()
        .filter_map(rrr_trace::watch::Event::parse)
        .collect();
    (events, bytes)
}

/// A syscall's entry notes where in the program it was made (a return address into the
/// program's own code at the user stack pointer the kernel saved in `regs`, or a few words
/// above it), and the watch's events during the syscall say so; the call's slice keeps its own
/// arguments only.
#[test]
fn a_syscalls_call_site_in_the_program_goes_with_its_watch_events() {
    // `syscall()`, which pushes nothing: its return address into main is at the pointer.
    let (events, bytes) = syscall_watched(&[(0x7ffc_1000, 0x40_1034)]);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].site, 0x40_1034);
    assert_eq!(events[0].by, Some(rrr_trace::watch::By::Sanitizer));
    let call = slices(&bytes)
        .into_iter()
        .find(|s| s.name == "do_syscall_64")
        .unwrap();
    let names: Vec<&str> = call.args.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["regs", "nr"]);
    // glibc's cancellable `close`, which saved the descriptor below its return address.
    let (events, _) = syscall_watched(&[(0x7ffc_1000, 3), (0x7ffc_1018, 0x40_1080)]);
    assert_eq!(events[0].site, 0x40_1080);
    // No word in the program's code (a wrapper of a libc without the program's DWARF, or one
    // that saved more): the word at the pointer, as it is.
    let (events, _) = syscall_watched(&[(0x7ffc_1000, 0x40_1234)]);
    assert_eq!(events[0].site, 0x40_1234);
}
