//! rrr's QEMU TCG plugin (`librrr_qemu.so`): during a replay it hooks the entry of every
//! traced function and every `ret` of the kernel and of the stimulus, and hands each event,
//! with the running vCPU as a [`rrr_trace::Guest`], to the trace core.
//!
//! Load it with `-plugin librrr_qemu.so,profile=P.rrrprof,out=OUT.pftrace` (and `,crash=F`
//! to mark the crash report in file F, see [`rrr_trace::CrashReport`]). Timestamps are
//! guest instructions executed (counted inline per translation block), which record/replay
//! makes identical on every replay.

mod engine;
mod guest;

qemu_plugin::register!(engine::RrrTrace);
