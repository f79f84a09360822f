//! The engines' side of the core: a [`Tracer`] driven the way each engine drives it (QEMU:
//! hooks chosen per instruction at translation; PANDA: a plan by pc, looked up at execution)
//! writes the same trace as the observer driven directly.

mod support;

use std::sync::Arc;

use osi_profile::Profile;
use rrr_trace::{Guest, Hook, PipelineConfig, Reg, Tracer};
use support::{id, scenario, slices, Drive, FakeCpu, K, KA};

const PUSH_RBP: u8 = 0x55;
const RET: u8 = 0xc3;

/// A tracer writing into a temp file; `finish` returns the bytes.
struct Run {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    tracer: Tracer,
    profile: Arc<Profile>,
}

impl Run {
    fn new() -> Run {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pftrace");
        let profile = support::profile();
        let file = std::fs::File::create(&path).unwrap();
        let tracer = Tracer::start(profile.clone(), file, PipelineConfig::default());
        Run {
            _dir: dir,
            path,
            tracer,
            profile,
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.tracer.finish().unwrap().unwrap();
        assert!(
            self.tracer.finish().is_none(),
            "a second finish does nothing"
        );
        std::fs::read(&self.path).unwrap()
    }

    fn entry(&self, func: u32) -> u64 {
        self.profile.function(func).unwrap().entry()
    }
}

/// The QEMU engine's shape: ask for the hooks of an instruction's bytes, call each.
struct QemuShaped(Run);

impl Drive for QemuShaped {
    fn enter(&mut self, c: &mut FakeCpu, func: u32, ts: u64) {
        let pc = self.0.entry(func);
        assert!(self.0.tracer.covers(pc));
        let hooks = self.0.tracer.hooks_at(pc, &[PUSH_RBP, 0x48, 0x89]);
        assert_eq!(hooks, [Some(Hook::Enter(func)), None]);
        self.0.tracer.on_hook(0, c, Hook::Enter(func), pc, ts);
    }
    fn ret(&mut self, c: &mut FakeCpu, pc: u64, ts: u64) {
        let hooks = self.0.tracer.hooks_at(pc, &[RET]);
        assert_eq!(hooks, [None, Some(Hook::Return(rrr_trace::Returns::Rax))]);
        self.0
            .tracer
            .on_hook(0, c, Hook::Return(rrr_trace::Returns::Rax), pc, ts);
    }
}

/// The PANDA engine's shape: at translation, plan the pc (reading the code from guest memory);
/// at execution, hand over the pc.
struct PandaShaped(Run);

impl Drive for PandaShaped {
    fn enter(&mut self, c: &mut FakeCpu, func: u32, ts: u64) {
        let pc = self.0.entry(func);
        c.poke(pc, &[PUSH_RBP]);
        assert!(self.0.tracer.plan(c, pc), "a function entry is planned");
        self.0.tracer.on_exec(0, c, pc, ts);
    }
    fn ret(&mut self, c: &mut FakeCpu, pc: u64, ts: u64) {
        c.poke(pc, &[RET]);
        assert!(self.0.tracer.plan(c, pc), "a ret is planned");
        self.0.tracer.on_exec(0, c, pc, ts);
    }
}

fn observer_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pftrace");
    let profile = support::profile();
    let layout = rrr_trace::OsLayout::from_profile(&profile);
    let mut pipe =
        rrr_trace::Pipeline::create(&path, profile, layout, PipelineConfig::default()).unwrap();
    scenario(pipe.observer());
    pipe.finish().unwrap();
    std::fs::read(&path).unwrap()
}

#[test]
fn both_engine_shapes_write_the_observers_trace() {
    let want = observer_bytes();
    assert!(slices(&want).len() > 10);
    let mut q = QemuShaped(Run::new());
    scenario(&mut q);
    assert_eq!(q.0.finish(), want, "QEMU-shaped tracer");
    let mut p = PandaShaped(Run::new());
    scenario(&mut p);
    assert_eq!(p.0.finish(), want, "PANDA-shaped tracer");
}

#[test]
fn plans_only_what_is_traced() {
    let run = Run::new();
    let mut t = run.tracer;
    let mut c = FakeCpu::default();
    let openat = id(&run.profile, "do_sys_openat2");
    let entry = run.profile.function(openat).unwrap().entry();
    c.poke(entry, &[PUSH_RBP, 0x48, 0x89, 0xe5]);
    assert!(t.plan(&mut c, entry));
    // Not an entry and not a ret.
    assert!(!t.plan(&mut c, entry + 1));
    // A `ret imm16` whose bytes end right before an unmapped page.
    let last = K + 0x1_0ffd;
    c.poke(last, &[0xc2, 8, 0]);
    assert!(t.plan(&mut c, last));
    // A truncated one (its immediate unmapped) is not a ret we can know.
    let edge = K + 0x2_0fff;
    c.poke(edge, &[0xc2]);
    assert!(!t.plan(&mut c, edge));
    // User code outside the stimulus (busybox, ld.so) is never traced.
    c.poke(0x40_2000, &[RET]);
    assert!(!t.plan(&mut c, 0x40_2000));
    // A denied function's entry is not hooked; its ret is.
    let kasan = run
        .profile
        .function(id(&run.profile, "kasan_check"))
        .unwrap()
        .entry();
    c.poke(kasan, &[PUSH_RBP]);
    assert!(!t.plan(&mut c, kasan));
}

#[test]
fn execution_follows_the_code_of_the_process_that_runs() {
    // A user pc is planned for the stimulus's `ret`; another process maps other code at the
    // same address and runs it: no return is traced for it. Kernel pcs trust the plan.
    let mut run = Run::new();
    let mut c = FakeCpu::default();
    let main = id(&run.profile, "main");
    let pc = run.entry(main) + 0x10;
    c.set(Reg::RSP, 0x7ffc_0ff0);
    c.poke(pc, &[RET]);
    assert!(run.tracer.plan(&mut c, pc));
    c.poke(pc, &[0x90]);
    run.tracer.on_exec(0, &mut c, pc, 10);
    c.poke(pc, &[RET]);
    run.tracer.on_exec(0, &mut c, pc, 20);
    let got = slices(&run.finish());
    // The only event: main's return, of a call from before the trace (so from its start).
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].name.as_str(), got[0].ts), ("main", 20));
}

#[test]
fn retranslated_kernel_code_replaces_its_plan() {
    let mut run = Run::new();
    let mut c = FakeCpu::default();
    c.set(Reg::RSP, KA + 0x3f00);
    let pc = K + 0x1234;
    c.poke(pc, &[RET]);
    assert!(run.tracer.plan(&mut c, pc));
    // The module that held it is unloaded; something else is loaded there and translated.
    c.poke(pc, &[0x90]);
    assert!(!run.tracer.plan(&mut c, pc));
    run.tracer.on_exec(0, &mut c, pc, 10);
    assert!(slices(&run.finish()).is_empty());
}

#[test]
fn the_clock_never_goes_back() {
    let mut run = Run::new();
    let mut c = FakeCpu::default();
    c.set(Reg::RSP, KA + 0x3f00);
    let f = id(&run.profile, "tail_target");
    run.tracer
        .on_hook(0, &mut c, Hook::Enter(f), K + 0x500, 100);
    run.tracer.on_hook(
        0,
        &mut c,
        Hook::Return(rrr_trace::Returns::Rax),
        K + 0x510,
        90,
    );
    let got = slices(&run.finish());
    assert_eq!((got[0].ts, got[0].dur), (100, 0));
}

/// A guest whose memory reads panic, as a bug in an engine adapter might.
struct Broken(FakeCpu);

impl Guest for Broken {
    fn reg(&mut self, reg: Reg) -> u64 {
        self.0.reg(reg)
    }
    fn read(&mut self, _: u64, _: &mut [u8]) -> bool {
        panic!("broken guest")
    }
}

#[test]
fn a_panic_in_a_hook_ends_the_trace_cleanly() {
    let mut run = Run::new();
    let mut c = FakeCpu::default();
    c.set(Reg::RSP, KA + 0x3f00);
    let f = id(&run.profile, "tail_target");
    let g = id(&run.profile, "do_sys_openat2");
    run.tracer
        .guarded(|t| t.on_hook(0, &mut c, Hook::Enter(f), K + 0x500, 100));
    let mut broken = Broken(FakeCpu::default());
    broken.0.set(Reg::RSP, KA + 0x3e00).set(Reg(4), 0x7ffc_2000);
    run.tracer
        .guarded(|t| t.on_hook(0, &mut broken, Hook::Enter(g), K + 0x200, 110));
    // Later hooks do nothing; the trace written so far decodes with its open call closed.
    run.tracer.guarded(|t| {
        t.on_hook(
            0,
            &mut c,
            Hook::Return(rrr_trace::Returns::Rax),
            K + 0x510,
            120,
        )
    });
    assert!(run.tracer.finish().is_none());
    let got = slices(&std::fs::read(&run.path).unwrap());
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].name.as_str(), got[0].ts), ("tail_target", 100));
}

/// Records the pc of every hook, as the engine sees it, to count executions like gdb does.
struct Executions(Vec<(u64, bool, u64)>, Arc<Profile>);

impl Drive for Executions {
    fn enter(&mut self, _: &mut FakeCpu, func: u32, ts: u64) {
        let pc = self.1.function(func).unwrap().entry();
        self.0.push((pc, true, ts));
    }
    fn ret(&mut self, _: &mut FakeCpu, pc: u64, ts: u64) {
        self.0.push((pc, false, ts));
    }
}

#[test]
fn locating_a_slices_start_gives_the_nth_execution_of_its_entry() {
    let trace = slices(&observer_bytes());
    let mut seen = Executions(Vec::new(), support::profile());
    scenario(&mut seen);
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (i, s) in trace.iter().enumerate().filter(|(_, s)| s.dur > 0) {
        let out = dir.path().join(format!("at-{i}"));
        let mut q = QemuShaped(Run::new());
        q.0.tracer = Tracer::locating(q.0.profile.clone(), s.ts, &out);
        scenario(&mut q);
        let found: rrr_trace::locate::Located = std::fs::read_to_string(&out)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The first hook at or after the slice's start runs at its start (a slice that began
        // before the trace, at its first timestamp, is located at the first hook there).
        assert_eq!(found.ts, s.ts, "{}", s.name);
        let (pc, enter, _) = *seen.0.iter().find(|e| e.2 >= s.ts).unwrap();
        let hit = seen
            .0
            .iter()
            .filter(|e| e.0 == pc && e.1 == enter && e.2 <= found.ts)
            .count() as u64;
        assert_eq!((found.pc, found.hit), (pc, hit), "{}", s.name);
        if enter {
            let func = q.0.profile.function_at_entry(pc).unwrap();
            let name = q.0.profile.function(func).unwrap().name();
            assert_eq!(name, s.name, "a slice's start is its function's entry");
            checked += 1;
        }
    }
    assert!(checked > 5, "{checked} slice starts located");
}
