//! Test support: a fake CPU, a small kernel-like profile, a scripted scenario, and a reader
//! that rebuilds slices from a written trace with the prost types.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use osi_profile::{
    flags, CallSiteValue, Class, EnumType, Function, Location, Param, Profile, ProfileData,
    TypeDesc,
};
use prost::Message;
use rrr_perfetto::proto;
use rrr_trace::{Guest, Observer, Reg};

/// Registers and paged memory: a page is mapped (zero-filled) once anything is written to it.
#[derive(Default)]
pub struct FakeCpu {
    pub regs: HashMap<u16, u64>,
    pub pages: HashMap<u64, Box<[u8; 4096]>>,
}

impl FakeCpu {
    pub fn set(&mut self, r: Reg, v: u64) -> &mut Self {
        self.regs.insert(r.0, v);
        self
    }
    pub fn poke(&mut self, addr: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            let a = addr + i as u64;
            self.pages
                .entry(a >> 12)
                .or_insert_with(|| Box::new([0; 4096]))[(a & 4095) as usize] = *b;
        }
    }
    pub fn poke_u64(&mut self, addr: u64, v: u64) {
        self.poke(addr, &v.to_le_bytes());
    }
    pub fn poke_str(&mut self, addr: u64, s: &str) {
        self.poke(addr, s.as_bytes());
        self.poke(addr + s.len() as u64, &[0]);
    }
}

impl Guest for FakeCpu {
    fn reg(&mut self, reg: Reg) -> u64 {
        self.regs.get(&reg.0).copied().unwrap_or(0)
    }
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> bool {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = addr.wrapping_add(i as u64);
            match self.pages.get(&(a >> 12)) {
                Some(page) => *b = page[(a & 4095) as usize],
                None => return false,
            }
        }
        true
    }
}

fn ty(c: &str, class: Class) -> TypeDesc {
    TypeDesc {
        c_type: c.into(),
        class,
    }
}

fn param(name: &str, c: &str, class: Class, loc: Location) -> Param {
    Param {
        name: name.into(),
        ty: ty(c, class),
        loc,
    }
}

fn func(name: &str, entry: u64, ret: TypeDesc, params: Vec<Param>, fl: u16) -> Function {
    Function {
        name: name.into(),
        entry,
        size: 0x100,
        file: None,
        line: 0,
        ret,
        params,
        flags: fl,
    }
}

const RDI: Location = Location::Reg(5);
const RSI: Location = Location::Reg(4);
const RDX: Location = Location::Reg(1);
const RCX: Location = Location::Reg(2);
pub const K: u64 = 0xffff_ffff_8100_0000;

/// The test kernel's functions and OS facts.
pub fn profile() -> Arc<Profile> {
    let mut d = ProfileData::default();
    d.enums.push(EnumType {
        values: vec![(0, "MODE_A".into()), (2, "MODE_B".into())],
    });
    d.functions = vec![
        func(
            "main",
            0x40_1000,
            ty("int", Class::Signed(4)),
            vec![
                param("argc", "int", Class::Signed(4), RDI),
                param("argv", "char **", Class::Pointer, RSI),
            ],
            flags::USER,
        ),
        func(
            "do_syscall_64",
            K + 0x100,
            TypeDesc::void(),
            vec![
                param(
                    "regs",
                    "struct pt_regs *",
                    Class::StructPtr("struct pt_regs".into()),
                    RDI,
                ),
                param("nr", "int", Class::Signed(4), RSI),
            ],
            0,
        ),
        func(
            "do_sys_openat2",
            K + 0x200,
            ty("long", Class::Signed(8)),
            vec![
                param("dfd", "int", Class::Signed(4), RDI),
                param("filename", "const char *", Class::CharPtr, RSI),
                param(
                    "how",
                    "struct open_how *",
                    Class::StructPtr("struct open_how".into()),
                    RDX,
                ),
            ],
            0,
        ),
        func(
            "ksys_write",
            K + 0x300,
            ty("ssize_t", Class::Signed(8)),
            vec![
                param("fd", "unsigned int", Class::Unsigned(4), RDI),
                param("buf", "const char *", Class::CharPtr, RSI),
                param("count", "size_t", Class::Unsigned(8), RDX),
            ],
            0,
        ),
        func(
            "set_mode",
            K + 0x400,
            ty("_Bool", Class::Bool),
            vec![
                param("m", "enum mode", Class::Enum(0), RDI),
                param("on", "_Bool", Class::Bool, RSI),
                param("delta", "short", Class::Signed(2), RDX),
                param("c", "unsigned char", Class::Unsigned(1), RCX),
                param("gone", "int", Class::Signed(4), Location::None),
                param("s7", "long", Class::Signed(8), Location::Stack(8)),
            ],
            0,
        ),
        func(
            "tail_target",
            K + 0x500,
            ty("int", Class::Signed(4)),
            vec![param("x", "int", Class::Signed(4), RDI)],
            0,
        ),
        func(
            "common_interrupt",
            K + 0x600,
            TypeDesc::void(),
            vec![param("irq", "unsigned int", Class::Unsigned(4), RDI)],
            0,
        ),
        func("schedule", K + 0x700, TypeDesc::void(), vec![], 0),
        func(
            "__switch_to",
            K + 0xe00,
            ty(
                "struct task_struct *",
                Class::StructPtr("struct task_struct".into()),
            ),
            vec![
                param(
                    "prev_p",
                    "struct task_struct *",
                    Class::StructPtr("struct task_struct".into()),
                    RDI,
                ),
                param(
                    "next_p",
                    "struct task_struct *",
                    Class::StructPtr("struct task_struct".into()),
                    RSI,
                ),
            ],
            0,
        ),
        func(
            "__set_task_comm",
            K + 0xd00,
            TypeDesc::void(),
            vec![
                param(
                    "tsk",
                    "struct task_struct *",
                    Class::StructPtr("struct task_struct".into()),
                    RDI,
                ),
                param("buf", "const char *", Class::CharPtr, RSI),
                param("exec", "_Bool", Class::Bool, RDX),
            ],
            0,
        ),
        func(
            "current_time",
            K + 0xb00,
            ty("struct timespec64", Class::StructByValue(16)),
            vec![],
            0,
        ),
        func(
            "build_open_how",
            K + 0xc00,
            ty("struct open_how", Class::StructByValue(24)),
            vec![],
            0,
        ),
        func("kernel_power_off", K + 0xa00, TypeDesc::void(), vec![], 0),
        func(
            "started_before",
            K + 0x800,
            ty("int", Class::Signed(4)),
            vec![],
            0,
        ),
        func(
            "kasan_check",
            K + 0x900,
            TypeDesc::void(),
            vec![],
            flags::DENIED,
        ),
        func("kasan_report", K + 0xf00, TypeDesc::void(), vec![], 0),
        // A `.isra` clone that is not passed `pud`: its call sites say where it is.
        func(
            "pmd_offset.isra.0",
            K + 0x1000,
            ty("pmd_t *", Class::Pointer),
            vec![
                param("address", "unsigned long", Class::Unsigned(8), RSI),
                param("pud", "pud_t *", Class::Pointer, Location::CallSite),
            ],
            flags::CLONE,
        ),
    ];
    // Its calls returning to K + 0x1110 have `pud` in rbx; to K + 0x1120, in the caller's
    // frame (rbp - 104); K + 0x1130's call site does not say.
    let site = |at: u64, loc| CallSiteValue {
        return_pc: K + at,
        callee: K + 0x1000,
        param: 1,
        loc,
    };
    d.call_sites = vec![
        site(0x1110, Location::Reg(3)),
        site(0x1120, Location::Memory(6, -104)),
        site(0x1130, Location::None),
    ];
    for (k, v) in [
        ("thread_size", 0x4000),
        ("percpu.current_task", 0x100),
        ("percpu.hardirq_stack_ptr", 0x108),
        ("task_struct.pid", 0x10),
        ("task_struct.tgid", 0x14),
        ("task_struct.comm", 0x20),
        ("task_struct.stack", 0x30),
        ("task_struct.mm", 0x38),
        ("task_struct.thread", 0x40),
        ("thread_struct.sp", 0x8),
    ] {
        d.facts.insert(k.into(), v);
    }
    d.finish();
    Arc::new(Profile::from_bytes(&d.to_bytes()).unwrap())
}

pub const GS0: u64 = 0xffff_8880_7fc0_0000;
pub const IRQ0: u64 = 0xffff_c900_0000_4000;
pub const KA: u64 = 0xffff_c900_0001_0000;
pub const KB: u64 = 0xffff_c900_0002_0000;
pub const TASK_A: u64 = 0xffff_8880_0010_0000;
pub const TASK_B: u64 = 0xffff_8880_0011_0000;

/// Writes a task struct at `at` for the test profile's layout.
pub fn task(cpu: &mut FakeCpu, at: u64, pid: i32, tgid: i32, comm: &str, stack: u64) {
    cpu.poke(at + 0x10, &pid.to_le_bytes());
    cpu.poke(at + 0x14, &tgid.to_le_bytes());
    let mut c = [0u8; 16];
    c[..comm.len()].copy_from_slice(comm.as_bytes());
    cpu.poke(at + 0x20, &c);
    cpu.poke_u64(at + 0x30, stack);
    cpu.poke_u64(at + 0x38, 0xffff_8880_0020_0000);
    // Where a switched-out task's stack was left (`thread.sp`): below the tests' frames.
    cpu.poke_u64(at + 0x48, stack + 0x3000);
}

/// The id of a function of the test profile.
pub fn id(p: &Profile, name: &str) -> u32 {
    p.function_by_name(name).unwrap()
}

/// What a scenario drives: the observer itself, or an engine-shaped adapter over a tracer.
pub trait Drive {
    /// CPU 0 is about to run the first instruction of `func`.
    fn enter(&mut self, c: &mut FakeCpu, func: u32, ts: u64);
    /// CPU 0 is about to run the `ret` at `pc`.
    fn ret(&mut self, c: &mut FakeCpu, pc: u64, ts: u64);
}

impl Drive for Observer {
    fn enter(&mut self, c: &mut FakeCpu, func: u32, ts: u64) {
        self.on_enter(0, c, func, ts);
    }
    fn ret(&mut self, c: &mut FakeCpu, pc: u64, ts: u64) {
        let returns = rrr_trace::Returns::at(self.profile(), pc);
        self.on_return(0, c, pc, returns, ts);
    }
}

/// Drives the observer through two threads of one process, an interrupt, a tail call, a
/// context switch and back, a return from before the trace started and calls left open.
pub fn scenario<D: Drive + ?Sized>(obs: &mut D) {
    let p = Arc::new(profile());
    let p = &**p;
    let mut c = FakeCpu::default();
    c.set(Reg::GS_BASE, GS0);
    c.poke_u64(GS0 + 0x100, TASK_A);
    c.poke_u64(GS0 + 0x108, IRQ0 + 0x4000 - 8);
    task(&mut c, TASK_A, 100, 100, "stimulus", KA);
    task(&mut c, TASK_B, 101, 100, "stimulus", KB);
    c.poke_str(0x7ffc_2000, "/tmp/rrr-test");
    c.poke_str(0x7ffc_3000, "hello");
    c.poke_str(0x7ffc_4000, "world");
    c.poke_u64(IRQ0 + 0x3f00 + 8, (-7i64) as u64);

    let ret = |obs: &mut D, c: &mut FakeCpu, sp: u64, pc: u64, v: u64, ts: u64| {
        c.set(Reg::RSP, sp).set(Reg::RAX, v);
        obs.ret(c, pc, ts);
    };
    // t=100: a function entered before the trace returns.
    ret(obs, &mut c, KA + 0x3f00, K + 0x810, 42, 100);
    // t=110: user main.
    c.set(Reg::RSP, 0x7ffc_0ff8)
        .set(Reg(5), 1)
        .set(Reg(4), 0x7ffc_1000);
    obs.enter(&mut c, id(p, "main"), 110);
    c.set(Reg::RSP, KA + 0x3f58)
        .set(Reg(5), KA + 0x3f60)
        .set(Reg(4), 257);
    obs.enter(&mut c, id(p, "do_syscall_64"), 120);
    c.set(Reg::RSP, KA + 0x3f00)
        .set(Reg(5), (-100i64) as u64)
        .set(Reg(4), 0x7ffc_2000)
        .set(Reg(1), KA + 0x3e80);
    obs.enter(&mut c, id(p, "do_sys_openat2"), 130);
    c.set(Reg(5), 7);
    obs.enter(&mut c, id(p, "tail_target"), 140);
    // t=150: an interrupt arrives; its handler runs below the interrupted frame. The entry
    // stub's helpers on the CPU entry area's stack are the CPU's, not the thread's.
    c.set(Reg::RSP, 0xfffffe00_00004f00).set(Reg(5), 0);
    obs.enter(&mut c, id(p, "tail_target"), 150);
    ret(obs, &mut c, 0xfffffe00_00004f00, K + 0x510, 0, 155);
    c.set(Reg::RSP, KA + 0x3d00).set(Reg(5), 33);
    obs.enter(&mut c, id(p, "common_interrupt"), 160);
    ret(obs, &mut c, KA + 0x3d00, K + 0x610, 0, 170);
    // ...and on the IRQ stack.
    c.set(Reg::RSP, IRQ0 + 0x3f00)
        .set(Reg(5), 2)
        .set(Reg(4), 1)
        .set(Reg(1), 0xfffb)
        .set(Reg(2), 0x1ff);
    obs.enter(&mut c, id(p, "set_mode"), 175);
    ret(obs, &mut c, IRQ0 + 0x3f00, K + 0x410, 1, 176);
    // t=180: the tail call returns for both.
    ret(obs, &mut c, KA + 0x3f00, K + 0x510, 3, 180);
    c.set(Reg::RSP, KA + 0x3f00)
        .set(Reg(5), 3)
        .set(Reg(4), 0x7ffc_3000)
        .set(Reg(1), 5);
    obs.enter(&mut c, id(p, "ksys_write"), 190);
    c.set(Reg::RSP, KA + 0x3e00);
    obs.enter(&mut c, id(p, "schedule"), 200);
    // t=210: switch to B, which returns from a schedule() entered before the trace.
    c.poke_u64(GS0 + 0x100, TASK_B);
    ret(obs, &mut c, KB + 0x3e00, K + 0x710, 0, 210);
    c.set(Reg::RSP, KB + 0x3f00)
        .set(Reg(5), 4)
        .set(Reg(4), 0x7ffc_4000)
        .set(Reg(1), 5);
    obs.enter(&mut c, id(p, "ksys_write"), 220);
    ret(obs, &mut c, KB + 0x3f00, K + 0x310, 5, 230);
    // A denied function's return is not a call from before the trace.
    ret(obs, &mut c, KB + 0x3f80, K + 0x910, 0, 240);
    // t=250: back to A.
    c.poke_u64(GS0 + 0x100, TASK_A);
    ret(obs, &mut c, KA + 0x3e00, K + 0x710, 0, 250);
    ret(obs, &mut c, KA + 0x3f00, K + 0x310, 5, 260);
    ret(obs, &mut c, KA + 0x3f58, K + 0x110, 0, 270);
    // t=280: a call still open when the trace ends (as is main).
    c.set(Reg::RSP, KA + 0x3f58).set(Reg(5), 9);
    obs.enter(&mut c, id(p, "tail_target"), 280);
}

/// A slice rebuilt from the trace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slice {
    pub track: String,
    pub ts: u64,
    pub dur: u64,
    pub depth: usize,
    pub name: String,
    pub args: Vec<(String, String)>,
    pub flows_out: Vec<u64>,
    pub flows_in: Vec<u64>,
}

fn ann_value(a: &proto::DebugAnnotation) -> String {
    use proto::debug_annotation::Value as V;
    if !a.array_values.is_empty() {
        let items: Vec<String> = a.array_values.iter().map(ann_value).collect();
        return format!("[{}]", items.join(", "));
    }
    match &a.value {
        Some(V::IntValue(i)) => i.to_string(),
        Some(V::UintValue(u)) => u.to_string(),
        Some(V::BoolValue(b)) => b.to_string(),
        Some(V::StringValue(s)) => format!("{s:?}"),
        Some(V::PointerValue(p)) => format!("{p:#x}"),
        Some(other) => format!("{other:?}"),
        None => "?".into(),
    }
}

/// An argument as (name, value); a pointer to a struct, named `name (struct foo *)`, shows
/// as (`name`, `(struct foo *)0x...`).
fn arg(name: &str, a: &proto::DebugAnnotation) -> (String, String) {
    let value = ann_value(a);
    match name.split_once(' ') {
        Some((name, ty)) => (name.to_owned(), format!("{ty}{value}")),
        None => (name.to_owned(), value),
    }
}

/// Rebuilds every slice (instants have dur 0) from a trace file's bytes, checking that
/// interning and the incremental clock are used consistently.
pub fn slices(bytes: &[u8]) -> Vec<Slice> {
    let trace = proto::Trace::decode(bytes).expect("the trace decodes");
    let mut event_names: HashMap<u64, String> = HashMap::new();
    let mut ann_names: HashMap<u64, String> = HashMap::new();
    let mut track_names: HashMap<u64, String> = HashMap::new();
    let mut open: HashMap<u64, Vec<Slice>> = HashMap::new();
    let mut done = Vec::new();
    let mut clock = 0u64;
    let mut incremental = false;
    let mut default_track = None;
    for p in trace.packet {
        assert!(p.optional_trusted_packet_sequence_id.is_some());
        if let Some(d) = &p.interned_data {
            for n in &d.event_names {
                event_names.insert(n.iid(), n.name().into());
            }
            for n in &d.debug_annotation_names {
                ann_names.insert(n.iid(), n.name().into());
            }
        }
        if let Some(defaults) = &p.trace_packet_defaults {
            incremental = defaults.timestamp_clock_id == Some(64);
            default_track = defaults
                .track_event_defaults
                .as_ref()
                .and_then(|d| d.track_uuid);
        }
        use proto::trace_packet::Data;
        match &p.data {
            Some(Data::ClockSnapshot(s)) => clock = s.clocks[0].timestamp(),
            Some(Data::TrackDescriptor(t)) => {
                let name = match (&t.thread, &t.static_or_dynamic_name) {
                    (Some(th), _) => format!("{} {}", th.thread_name(), th.tid()),
                    (None, Some(proto::track_descriptor::StaticOrDynamicName::Name(n))) => {
                        n.clone()
                    }
                    _ => continue,
                };
                track_names.insert(t.uuid(), name);
            }
            Some(Data::TrackEvent(e)) => {
                let ts = if p.timestamp_clock_id == Some(6) {
                    p.timestamp()
                } else {
                    assert!(incremental);
                    clock += p.timestamp();
                    clock
                };
                let uuid = e
                    .track_uuid
                    .or(default_track)
                    .expect("an event names its track or has a default one");
                let stack = open.entry(uuid).or_default();
                let name = match e.name_field {
                    Some(proto::track_event::NameField::NameIid(iid)) => event_names[&iid].clone(),
                    _ => String::new(),
                };
                let args: Vec<(String, String)> = e
                    .debug_annotations
                    .iter()
                    .map(|a| {
                        let Some(proto::debug_annotation::NameField::NameIid(iid)) = a.name_field
                        else {
                            panic!("annotation without interned name")
                        };
                        arg(&ann_names[&iid], a)
                    })
                    .collect();
                let s = Slice {
                    track: uuid.to_string(),
                    ts,
                    dur: 0,
                    depth: stack.len(),
                    name,
                    args,
                    flows_out: e.flow_ids.clone(),
                    flows_in: e.terminating_flow_ids.clone(),
                };
                match e.r#type() {
                    proto::track_event::Type::SliceBegin => stack.push(s),
                    proto::track_event::Type::SliceEnd => {
                        let mut b = stack.pop().expect("an end matches a begin");
                        b.dur = ts - b.ts;
                        b.args.extend(s.args);
                        done.push(b);
                    }
                    proto::track_event::Type::Instant => done.push(s),
                    t => panic!("unexpected {t:?}"),
                }
            }
            _ => {}
        }
    }
    for (_, v) in open {
        assert!(v.is_empty(), "open slices left: {v:?}");
    }
    for s in &mut done {
        s.track = track_names[&s.track.parse::<u64>().unwrap()].clone();
    }
    done.sort_by(|a, b| (&a.track, a.ts, a.depth).cmp(&(&b.track, b.ts, b.depth)));
    done
}
