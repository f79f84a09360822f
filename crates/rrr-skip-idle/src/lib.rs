//! Skips the guest's idle time in stock QEMU's icount record/replay (`librrr_skip_idle.so`,
//! put in QEMU's `LD_PRELOAD` by rrr).
//!
//! With icount `sleep=on` (the only setting QEMU 10 can record with: with `sleep=off` its
//! record/replay never delivers a disk's completions), a halted vCPU waits in real time for
//! the next virtual timer: QEMU's main loop sleeps in `ppoll` until the icount warp timer
//! expires. A sleepy reproducer's recording, and every replay of it, take the guest's idle
//! time in wall time.
//!
//! This library interposes three libc functions:
//! - `pthread_cond_wait`: notes when the vCPU thread (named `ALL CPUs/TCG` under icount,
//!   which QEMU does with `-name ...,debug-threads=on`) waits, halted;
//! - `ppoll`: while it does, the main loop's wait for its next timer does not sleep: it polls
//!   its descriptors once without waiting and, if none is ready, returns as if the timeout
//!   had passed;
//! - `clock_gettime`: in a recording, `CLOCK_MONOTONIC` runs ahead by every skipped wait, so
//!   the timer the guest waits for is due at once and the warp QEMU records is the time
//!   skipped. A replay reads its clocks from the log: there the loop only stops sleeping.
//!
//! What the guest sees is what QEMU records, and a replay follows the log, whatever the host's
//! clock: recordings stay deterministic, and replay the same with or without this library.
//! `RRR_SKIP_IDLE` says how (`record` or `replay`; anything else passes every call through),
//! and at exit the totals go to the file `RRR_SKIP_IDLE_REPORT` names, if set.
#![deny(missing_docs)]

pub mod pace;
// Not in the unit tests' binary: it would interpose its own libc calls.
#[cfg(not(test))]
mod preload;
