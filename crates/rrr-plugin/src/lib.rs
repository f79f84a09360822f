//! rrr's PANDA plugin `rrr_trace` (`panda_rrr_trace.so`): during a PANDA replay it hooks the
//! entry of every traced function and every `ret` of the kernel and of the stimulus, and hands
//! each event, with the running vCPU as a [`rrr_trace::Guest`], to the trace core.
//!
//! Load it with `-panda rrr_trace:profile=P.rrrprof,out=OUT.pftrace` (and `,crash=F` to mark
//! the crash report in file F). PANDA asks at each
//! instruction's translation whether it wants a callback ([`rrr_trace::Tracer::plan`]) and
//! calls back with the pc before it executes ([`rrr_trace::Tracer::on_exec`]). Timestamps are
//! guest instructions executed since the recording began, which PANDA's replay makes
//! identical on every replay.

mod guest;

use std::path::Path;
use std::sync::{Mutex, MutexGuard, OnceLock};

use panda::prelude::*;
use rrr_trace::record::Access;
use rrr_trace::watch::Range;
use rrr_trace::{contained, TraceOptions, Tracer, SUMMARY_PREFIX};

use crate::guest::PandaGuest;

/// The plugin's arguments (`-panda rrr_trace:profile=...,out=...`).
#[derive(PandaArgs)]
#[name = "rrr_trace"]
struct Args {
    #[arg(required, about = "the kernel + stimulus profile (rrr trace makes it)")]
    profile: String,
    #[arg(required, about = "the Perfetto trace to write")]
    out: String,
    #[arg(
        default = "",
        about = "how to trace, beyond the profile and the output: a JSON file rrr writes \
                 (TraceOptions); without it, everything is traced"
    )]
    options: String,
}

static TRACER: Mutex<Option<Tracer>> = Mutex::new(None);

fn tracer() -> MutexGuard<'static, Option<Tracer>> {
    // Callbacks contain their panics, so the lock is never left poisoned by one that matters.
    TRACER.lock().unwrap_or_else(|e| e.into_inner())
}

#[panda::init]
fn init(_: &mut PluginHandle) -> bool {
    let args = Args::from_panda_args();
    let options = TraceOptions::from_args(|name| (name == "options").then(|| args.options.clone()))
        .map_err(|e| e.to_string());
    let opened = options.and_then(|o| {
        Tracer::open(Path::new(&args.profile), Path::new(&args.out), &o).map_err(|e| e.to_string())
    });
    match opened {
        Ok(t) => {
            if let Some(range) = t.watched() {
                let _ = WATCHED.set(range);
                // PANDA calls the memory callbacks only once asked to (it then takes its slow
                // memory path): only under a watch.
                // SAFETY: called from the plugin's init, as PANDA allows.
                unsafe { panda::sys::panda_enable_memcb() };
            }
            *tracer() = Some(t);
            true
        }
        Err(e) => {
            // PANDA stops when a plugin's init fails: no trace that looks complete is left.
            eprintln!("{SUMMARY_PREFIX}error: {e}");
            false
        }
    }
}

#[panda::insn_translate]
fn on_translate(cpu: &mut CPUState, pc: target_ptr_t) -> bool {
    let mut guard = tracer();
    let Some(t) = guard.as_mut() else {
        return false;
    };
    contained(|| t.plan(&mut PandaGuest::new(cpu), pc)).unwrap_or(false)
}

#[panda::insn_exec]
fn on_exec(cpu: &mut CPUState, pc: target_ptr_t) {
    let mut guard = tracer();
    let Some(t) = guard.as_mut() else { return };
    // PANDA counts an instruction before its callback runs: the ones before it are one less.
    let now = panda::rr::rr_get_guest_instr_count().saturating_sub(1);
    let index = u32::try_from(cpu.cpu_index).unwrap_or(0);
    t.guarded(|t| t.on_exec(index, &mut PandaGuest::new(cpu), pc, now));
}

/// The memory watched, if any (read without the tracer's lock by every memory callback).
static WATCHED: OnceLock<Range> = OnceLock::new();

#[panda::virt_mem_after_read]
fn on_read(cpu: &mut CPUState, pc: target_ptr_t, addr: target_ptr_t, size: usize, buf: *mut u8) {
    on_memory(cpu, pc, addr, size, buf, false);
}

#[panda::virt_mem_after_write]
fn on_write(cpu: &mut CPUState, pc: target_ptr_t, addr: target_ptr_t, size: usize, buf: *mut u8) {
    on_memory(cpu, pc, addr, size, buf, true);
}

/// The instruction at `pc` loaded or stored `size` bytes at `addr` (`buf` holds them).
fn on_memory(
    cpu: &mut CPUState,
    pc: target_ptr_t,
    addr: target_ptr_t,
    size: usize,
    buf: *mut u8,
    write: bool,
) {
    let Some(range) = WATCHED.get() else { return };
    if buf.is_null() || !range.touches(addr, size as u64) {
        return;
    }
    let mut word = [0u8; 8];
    let n = size.min(8);
    // SAFETY: PANDA passes `size` bytes at `buf`, valid during the callback.
    word[..n].copy_from_slice(unsafe { std::slice::from_raw_parts(buf, n) });
    let index = u32::try_from(cpu.cpu_index).unwrap_or(0);
    let access = Access {
        pc,
        addr,
        value: u64::from_le_bytes(word),
        size: size.min(u8::MAX as usize) as u8,
        write,
        cpu: index,
    };
    let mut guard = tracer();
    let Some(t) = guard.as_mut() else { return };
    // The instruction making the access has been counted (as at `insn_exec`).
    let now = panda::rr::rr_get_guest_instr_count().saturating_sub(1);
    t.guarded(|t| t.on_access(&mut PandaGuest::new(cpu), access, now));
}

#[panda::uninit]
fn uninit(_: &mut PluginHandle) {
    let Some(mut t) = tracer().take() else { return };
    match t.finish() {
        Some(Ok(s)) => eprintln!("{SUMMARY_PREFIX}{s}"),
        Some(Err(e)) => eprintln!("{SUMMARY_PREFIX}error: {e}"),
        None => {}
    }
}
