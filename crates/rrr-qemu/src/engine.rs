//! The plugin's registration, its state, and its callbacks.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use osi_profile::Profile;
use qemu_plugin::install::{Args, Info, Value};
use qemu_plugin::sys::{qemu_plugin_scoreboard_new, qemu_plugin_tb, qemu_plugin_u64};
use qemu_plugin::{
    CallbackFlags, HasCallbacks, PluginId, PluginOp, Register, TranslationBlock, VCPUIndex,
};
use rrr_trace::{Hook, Hooks, OsLayout, Pipeline, PipelineConfig};

use crate::guest::QemuGuest;

/// The plugin, as QEMU's plugin loader sees it. Its state lives in [`STATE`], which the
/// per-instruction callbacks reach without the loader's lock.
pub struct RrrTrace;

/// Everything the callbacks share.
struct State {
    profile: Arc<Profile>,
    hooks: Hooks,
    pipeline: Option<Pipeline>,
    guest: Option<QemuGuest>,
    /// Per-vCPU count of instructions executed (incremented inline at each block's start).
    clock: Clock,
    /// Last timestamp handed out (the trace's clock never goes back).
    last_ts: u64,
}

/// A scoreboard entry; the pointer is QEMU's and lives as long as the plugin.
#[derive(Clone, Copy)]
struct Clock(qemu_plugin_u64);

// SAFETY: the scoreboard is owned by QEMU for the plugin's lifetime and only used under STATE.
unsafe impl Send for Clock {}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn state() -> MutexGuard<'static, Option<State>> {
    // A panic in a callback aborts QEMU, so the lock is never seen poisoned.
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Prints a plugin error where the user sees it and stops QEMU (a half-configured tracer must
/// not produce a trace that looks complete).
fn fail(msg: &str) -> ! {
    eprintln!("rrr_qemu: error: {msg}");
    std::process::exit(2)
}

fn path_arg(args: &Args, key: &str) -> PathBuf {
    match args.parsed.get(key) {
        Some(Value::String(s)) => PathBuf::from(s),
        Some(Value::Integer(i)) => PathBuf::from(i.to_string()),
        _ => fail(&format!(
            "missing plugin argument `{key}=PATH` (usage: -plugin librrr_qemu.so,profile=P.rrrprof,trace=OUT.pftrace)"
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
        let profile_path = path_arg(args, "profile");
        let trace_path = path_arg(args, "trace");
        let profile = Profile::open(&profile_path).unwrap_or_else(|e| fail(&e.to_string()));
        let profile = Arc::new(profile);
        let layout = OsLayout::from_profile(&profile);
        let pipeline = Pipeline::create(
            &trace_path,
            profile.clone(),
            layout,
            PipelineConfig::default(),
        )
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", trace_path.display())));
        // SAFETY: a scoreboard of one u64 per vCPU, freed by QEMU with the plugin.
        let score = unsafe { qemu_plugin_scoreboard_new(8) };
        *state() = Some(State {
            hooks: Hooks::new(&profile),
            profile,
            pipeline: Some(pipeline),
            guest: None,
            clock: Clock(qemu_plugin_u64 { score, offset: 0 }),
            last_ts: 0,
        });
        qemu_plugin::qemu_plugin_register_vcpu_init_cb(id, Some(on_vcpu_init))?;
        qemu_plugin::qemu_plugin_register_vcpu_tb_trans_cb(id, Some(on_translate))?;
        qemu_plugin::qemu_plugin_register_atexit_cb(id, |_| finish())?;
        Ok(())
    }
}

impl HasCallbacks for RrrTrace {}

extern "C" fn on_vcpu_init(_id: PluginId, _vcpu: VCPUIndex) {
    let mut guard = state();
    let Some(st) = guard.as_mut() else { return };
    if st.guest.is_none() {
        st.guest = Some(QemuGuest::new().unwrap_or_else(|e| fail(&e)));
    }
}

extern "C" fn on_translate(_id: PluginId, tb: *mut qemu_plugin_tb) {
    let tb = TranslationBlock::from(tb);
    let guard = state();
    let Some(st) = guard.as_ref() else { return };
    let n = tb.size() as u64;
    let clock = st.clock;
    for (idx, insn) in tb.instructions().enumerate() {
        let pc = insn.vaddr();
        if !st.hooks.covers(pc) {
            continue;
        }
        // Instructions of this block executed before this one: the inline add at the block's
        // start already counted all `n`.
        let back = n - idx as u64;
        let (enter, ret) = st
            .hooks
            .at(&st.profile, pc, insn.size(), |b| insn.read_data(b));
        for hook in [enter, ret].into_iter().flatten() {
            let cb = move |vcpu: VCPUIndex| on_hook(vcpu, hook, pc, back);
            insn.register_execute_callback_flags(cb, CallbackFlags::QEMU_PLUGIN_CB_R_REGS);
        }
    }
    drop(guard);
    qemu_plugin::qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(
        tb,
        PluginOp::QEMU_PLUGIN_INLINE_ADD_U64,
        clock.0,
        n,
    );
}

fn on_hook(vcpu: VCPUIndex, hook: Hook, pc: u64, back: u64) {
    let mut guard = state();
    let Some(st) = guard.as_mut() else { return };
    let (Some(pipeline), Some(guest)) = (st.pipeline.as_mut(), st.guest.as_mut()) else {
        return;
    };
    let now = qemu_plugin::qemu_plugin_scoreboard_sum(st.clock.0).saturating_sub(back);
    st.last_ts = st.last_ts.max(now);
    let obs = pipeline.observer();
    match hook {
        Hook::Enter(func) => obs.on_enter(vcpu, guest, func, st.last_ts),
        Hook::Return => obs.on_return(vcpu, guest, pc, st.last_ts),
    }
}

/// Writes the end of the trace (QEMU is exiting: the guest powered off or replay ended).
fn finish() {
    let Some(pipeline) = state().as_mut().and_then(|st| st.pipeline.take()) else {
        return;
    };
    match pipeline.finish() {
        Ok(s) => eprintln!(
            "rrr_qemu: {} events, {} bytes, {} dropped",
            s.events, s.bytes, s.dropped
        ),
        Err(e) => eprintln!("rrr_qemu: error: finishing the trace: {e}"),
    }
}
