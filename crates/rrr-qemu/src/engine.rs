//! The plugin's registration, its state, and its callbacks: a thin adapter that hands QEMU's
//! translation and execution events to the core's [`Tracer`].

use std::ffi::c_void;
use std::path::PathBuf;

use qemu_plugin::install::{Args, Info, Value};
use qemu_plugin::sys::{
    qemu_plugin_num_vcpus, qemu_plugin_register_vcpu_insn_exec_cb, qemu_plugin_scoreboard_find,
    qemu_plugin_scoreboard_new, qemu_plugin_tb, qemu_plugin_tb_get_insn, qemu_plugin_u64,
};
use qemu_plugin::{
    CallbackFlags, HasCallbacks, MemRW, MemValue, MemoryInfo, PluginId, PluginOp, Register,
    TranslationBlock, VCPUIndex,
};
use rrr_trace::hooks::MAX_RET_LEN;
use rrr_trace::record::Access;
use rrr_trace::{contained, Hook, HookWord, TraceOptions, Tracer, SUMMARY_PREFIX};

use crate::guest::QemuGuest;

/// The plugin, as QEMU's plugin loader sees it. Its state lives in [`STATE`], which the
/// per-instruction callbacks reach without the loader's lock.
pub struct RrrTrace;

/// Everything the callbacks share.
struct State {
    tracer: Tracer,
    guest: Option<QemuGuest>,
    /// Per-vCPU count of instructions executed (incremented inline at each block's start).
    clock: Clock,
}

/// The trace clock: a scoreboard of one instruction count per vCPU, which QEMU's inline ops
/// increment, and where each vCPU's count is.
struct Clock {
    score: qemu_plugin_u64,
    /// Each vCPU's entry, looked up once per vCPU (`qemu_plugin_u64_sum` looks every entry up
    /// again at each call, 11 ns of each event in a looping trace's profile). QEMU moves the
    /// entries only when it grows the scoreboard for a new vCPU, before that vCPU's init
    /// callback, where they are looked up again.
    entries: Vec<*const u64>,
}

// SAFETY: the scoreboard is owned by QEMU for the plugin's lifetime, and its entries are only
// read under STATE's lock.
unsafe impl Send for Clock {}

impl Clock {
    /// Finds every vCPU's entry again (a vCPU was added).
    fn locate(&mut self) {
        // SAFETY: called from a vCPU's init callback, after QEMU sized the scoreboard for it.
        let vcpus = unsafe { qemu_plugin_num_vcpus() }.max(1) as u32;
        self.entries = (0..vcpus)
            .map(|i| {
                // SAFETY: `i` is a vCPU of this machine; the entry is a u64 at the offset.
                unsafe {
                    qemu_plugin_scoreboard_find(self.score.score, i)
                        .cast::<u8>()
                        .add(self.score.offset)
                        .cast::<u64>()
                        .cast_const()
                }
            })
            .collect();
    }

    /// Guest instructions executed so far, on all vCPUs, up to the start of the running block.
    fn now(&self) -> u64 {
        // SAFETY: the entries are live (see `entries`); only the vCPUs' inline ops write them.
        self.entries
            .iter()
            .map(|&e| unsafe { e.read_volatile() })
            .sum()
    }
}

/// A lock whose release is a plain store (the standard mutex's release is an atomic swap,
/// which on x86 waits for every store before it: the record just written, 54 ns of each event
/// in a looping trace's profile). Only the vCPU thread takes it, except at exit.
static STATE: spin::Mutex<Option<State>> = spin::Mutex::new(None);

fn state() -> spin::MutexGuard<'static, Option<State>> {
    STATE.lock()
}

/// Prints a plugin error where the user sees it and stops QEMU (a half-configured tracer must
/// not produce a trace that looks complete).
fn fail(msg: &str) -> ! {
    eprintln!("{SUMMARY_PREFIX}error: {msg}");
    std::process::exit(2)
}

fn path_arg(args: &Args, key: &str) -> PathBuf {
    match args.parsed.get(key) {
        Some(Value::String(s)) => PathBuf::from(s),
        Some(Value::Integer(i)) => PathBuf::from(i.to_string()),
        _ => fail(&format!(
            "missing plugin argument `{key}=PATH` (usage: -plugin librrr_qemu.so,profile=P.rrrprof,out=OUT.pftrace)"
        )),
    }
}

impl Register for RrrTrace {
    fn register_default(
        &mut self,
        id: PluginId,
        args: &Args,
        _info: &Info,
    ) -> qemu_plugin::Result<()> {
        let profile = path_arg(args, "profile");
        // `locate=TS,located=OUT`: find trace time TS for a debugger instead of tracing.
        let tracer = match args.parsed.get("locate") {
            Some(Value::Integer(at)) => {
                let at = u64::try_from(*at)
                    .unwrap_or_else(|_| fail("`locate=` takes a trace time (>= 0)"));
                Tracer::open_locating(&profile, at, &path_arg(args, "located"))
            }
            Some(_) => fail("`locate=` takes a trace time (an instruction count)"),
            None => {
                let options = TraceOptions::from_args(|name| match args.parsed.get(name)? {
                    Value::String(s) => Some(s.clone()),
                    Value::Integer(i) => Some(i.to_string()),
                    _ => None,
                })
                .unwrap_or_else(|e| fail(&e.to_string()));
                Tracer::open(&profile, &path_arg(args, "out"), &options)
            }
        }
        .unwrap_or_else(|e| fail(&e.to_string()));
        // SAFETY: a scoreboard of one u64 per vCPU, freed by QEMU with the plugin.
        let score = unsafe { qemu_plugin_scoreboard_new(8) };
        *state() = Some(State {
            tracer,
            guest: None,
            clock: Clock {
                score: qemu_plugin_u64 { score, offset: 0 },
                entries: Vec::new(),
            },
        });
        qemu_plugin::qemu_plugin_register_vcpu_init_cb(id, Some(on_vcpu_init))?;
        qemu_plugin::qemu_plugin_register_vcpu_tb_trans_cb(id, Some(on_translate))?;
        qemu_plugin::qemu_plugin_register_atexit_cb(id, |_| finish())?;
        Ok(())
    }
}

impl HasCallbacks for RrrTrace {}

extern "C" fn on_vcpu_init(_id: PluginId, _vcpu: VCPUIndex) {
    let needs_guest = state().as_ref().is_some_and(|st| st.guest.is_none());
    // Looked up without the lock: a failure exits QEMU, whose exit handler takes the lock.
    let guest = needs_guest.then(|| QemuGuest::new().unwrap_or_else(|e| fail(&e)));
    let mut guard = state();
    let Some(st) = guard.as_mut() else { return };
    if guest.is_some() {
        st.guest = guest;
    }
    st.clock.locate();
}

extern "C" fn on_translate(_id: PluginId, raw_tb: *mut qemu_plugin_tb) {
    let tb = TranslationBlock::from(raw_tb);
    let n = tb.size() as u64;
    let clock = {
        let guard = state();
        let Some(st) = guard.as_ref() else { return };
        let watched = st.tracer.watched();
        let hooked = contained(|| {
            for (idx, insn) in tb.instructions().enumerate() {
                let pc = insn.vaddr();
                // Instructions of this block executed before this one: the inline add at the
                // block's start already counted all `n`.
                let back = n - idx as u64;
                if let Some(range) = watched {
                    // Every load and store is checked here, without the state's lock; only
                    // those that touch the range go further.
                    let cb = move |vcpu: VCPUIndex, info: MemoryInfo<'_>, addr: u64| {
                        let size = 1u64 << info.size_shift();
                        if range.touches(addr, size) {
                            on_access(vcpu, &info, pc, addr, size, back);
                        }
                    };
                    insn.register_memory_access_callback_flags(
                        cb,
                        MemRW::QEMU_PLUGIN_MEM_RW,
                        CallbackFlags::QEMU_PLUGIN_CB_R_REGS,
                    );
                }
                if !st.tracer.covers(pc) {
                    continue;
                }
                let mut code = [0u8; MAX_RET_LEN];
                let len = insn.read_data(&mut code);
                for hook in st.tracer.hooks_at(pc, &code[..len]).into_iter().flatten() {
                    match HookWord::pack(hook, pc, back) {
                        // SAFETY: `raw` is this block's instruction `idx`, during its
                        // translation; the userdata is a plain word, not a pointer.
                        Some(word) => unsafe {
                            let raw = qemu_plugin_tb_get_insn(raw_tb, idx);
                            qemu_plugin_register_vcpu_insn_exec_cb(
                                raw,
                                Some(on_hook_word),
                                CallbackFlags::QEMU_PLUGIN_CB_R_REGS,
                                word.0 as *mut c_void,
                            );
                        },
                        None => insn.register_execute_callback_flags(
                            move |vcpu: VCPUIndex| on_hook(vcpu, hook, pc, back),
                            CallbackFlags::QEMU_PLUGIN_CB_R_REGS,
                        ),
                    }
                }
            }
        });
        if hooked.is_none() {
            return;
        }
        st.clock.score
    };
    qemu_plugin::qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(
        tb,
        PluginOp::QEMU_PLUGIN_INLINE_ADD_U64,
        clock,
        n,
    );
}

/// A hooked instruction is about to execute; `word` is its [`HookWord`].
extern "C" fn on_hook_word(vcpu: VCPUIndex, word: *mut c_void) {
    let (hook, pc, back) = HookWord(word as u64).unpack();
    on_hook(vcpu, hook, pc, back);
}

#[inline(always)]
fn on_hook(vcpu: VCPUIndex, hook: Hook, pc: u64, back: u64) {
    let mut guard = state();
    let Some(st) = guard.as_mut() else { return };
    let Some(guest) = st.guest.as_mut() else {
        return;
    };
    let now = st.clock.now().saturating_sub(back);
    st.tracer.guarded(|t| t.on_hook(vcpu, guest, hook, pc, now));
}

/// The instruction at `pc` loads or stores `size` bytes at `addr`, which touch the watched
/// memory.
fn on_access(vcpu: VCPUIndex, info: &MemoryInfo<'_>, pc: u64, addr: u64, size: u64, back: u64) {
    let value = match info.value() {
        MemValue::U8(v) => u64::from(v),
        MemValue::U16(v) => u64::from(v),
        MemValue::U32(v) => u64::from(v),
        MemValue::U64(v) => v,
        // The low 64 bits of a vector access.
        MemValue::U128(v) => v as u64,
    };
    let access = Access {
        pc,
        addr,
        value,
        size: size as u8,
        write: info.is_store(),
        cpu: vcpu,
    };
    let mut guard = state();
    let Some(st) = guard.as_mut() else { return };
    let Some(guest) = st.guest.as_mut() else {
        return;
    };
    let now = st.clock.now().saturating_sub(back);
    st.tracer.guarded(|t| t.on_access(guest, access, now));
}

/// Writes the end of the trace (QEMU is exiting: the guest powered off or replay ended).
fn finish() {
    let Some(mut st) = state().take() else { return };
    match st.tracer.finish() {
        Some(Ok(s)) => eprintln!("{SUMMARY_PREFIX}{s}"),
        Some(Err(e)) => eprintln!("{SUMMARY_PREFIX}error: {e}"),
        None => {}
    }
}
