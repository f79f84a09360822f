//! The interposed libc functions (see the crate's documentation): each finds the next
//! definition (libc's) with `dlsym(RTLD_NEXT)` and, but for the pacing, calls it unchanged.

use std::cell::Cell;
use std::ffi::c_int;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::pace::{is_vcpu_thread, Mode, Pacer};

/// The run's pacing.
static PACER: Pacer = Pacer::new();

/// Run when the library is loaded, before QEMU's `main`.
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

extern "C" fn init() {
    let mode = std::env::var("RRR_SKIP_IDLE").ok();
    PACER.set_mode(Mode::from_env(mode.as_deref()));
    if std::env::var_os("RRR_SKIP_IDLE_REPORT").is_some() {
        // SAFETY: registers a function with no arguments, run once at exit.
        unsafe { libc::atexit(write_report) };
    }
}

/// Writes the totals to `RRR_SKIP_IDLE_REPORT` (at exit).
extern "C" fn write_report() {
    if let Some(path) = std::env::var_os("RRR_SKIP_IDLE_REPORT") {
        let _ = std::fs::write(path, PACER.report().to_string());
    }
}

/// The next definition of the libc function `name` (NUL-terminated), looked up once into
/// `slot`; aborts if there is none (no libc to call is no way to go on).
unsafe fn next(slot: &AtomicUsize, name: &[u8]) -> usize {
    let mut f = slot.load(Ordering::Relaxed);
    if f == 0 {
        f = libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) as usize;
        if f == 0 {
            libc::abort();
        }
        slot.store(f, Ordering::Relaxed);
    }
    f
}

thread_local! {
    /// Whether this thread is the vCPU's: 0 not known yet, 1 yes, 2 no.
    static VCPU: Cell<u8> = const { Cell::new(0) };
}

/// Whether the calling thread is a TCG vCPU's (by its name, set when QEMU started it).
fn on_vcpu_thread() -> bool {
    VCPU.with(|v| {
        if v.get() == 0 {
            let mut name = [0u8; 32];
            // SAFETY: the buffer is as long as the length passed.
            let ok = unsafe {
                libc::pthread_getname_np(libc::pthread_self(), name.as_mut_ptr().cast(), 32)
            } == 0;
            let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            v.set(if ok && is_vcpu_thread(&name[..len]) {
                1
            } else {
                2
            });
        }
        v.get() == 1
    })
}

/// `pthread_cond_wait`, noting when the vCPU thread waits.
///
/// # Safety
/// As libc's: `cond` and `mutex` are initialised, `mutex` is held.
#[no_mangle]
pub unsafe extern "C" fn pthread_cond_wait(
    cond: *mut libc::pthread_cond_t,
    mutex: *mut libc::pthread_mutex_t,
) -> c_int {
    static REAL: AtomicUsize = AtomicUsize::new(0);
    type F = unsafe extern "C" fn(*mut libc::pthread_cond_t, *mut libc::pthread_mutex_t) -> c_int;
    let real: F = std::mem::transmute(next(&REAL, b"pthread_cond_wait\0"));
    if !on_vcpu_thread() {
        return real(cond, mutex);
    }
    PACER.vcpu_waits();
    let r = real(cond, mutex);
    PACER.vcpu_runs();
    r
}

/// `ppoll`, not sleeping for a timer while the vCPU waits.
///
/// # Safety
/// As libc's: `fds` holds `nfds` entries, `timeout` and `sigmask` are null or valid.
#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut libc::pollfd,
    nfds: libc::nfds_t,
    timeout: *const libc::timespec,
    sigmask: *const libc::sigset_t,
) -> c_int {
    static REAL: AtomicUsize = AtomicUsize::new(0);
    type F = unsafe extern "C" fn(
        *mut libc::pollfd,
        libc::nfds_t,
        *const libc::timespec,
        *const libc::sigset_t,
    ) -> c_int;
    let real: F = std::mem::transmute(next(&REAL, b"ppoll\0"));
    let timeout_ns = timeout.as_ref().map(nanos);
    if let (Some(ns), Some(poll_ns)) = (timeout_ns, PACER.skip_poll_ns(timeout_ns, host_now_ns)) {
        let poll = timespec(poll_ns);
        let ready = real(fds, nfds, &poll, sigmask);
        if ready == 0 && PACER.vcpu_waiting() {
            PACER.skipped(ns);
        }
        return ready;
    }
    real(fds, nfds, timeout, sigmask)
}

/// libc's `clock_gettime`.
type ClockGettime = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> c_int;

/// libc's `clock_gettime`, looked up once.
fn real_clock_gettime() -> ClockGettime {
    static REAL: AtomicUsize = AtomicUsize::new(0);
    // SAFETY: the symbol is libc's `clock_gettime`, of this type.
    unsafe { std::mem::transmute(next(&REAL, b"clock_gettime\0")) }
}

/// `t` in nanoseconds.
fn nanos(t: &libc::timespec) -> i64 {
    t.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec)
}

/// `ns` nanoseconds (not negative) as a `timespec`.
fn timespec(ns: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ns / 1_000_000_000,
        tv_nsec: ns % 1_000_000_000,
    }
}

/// The host's monotonic clock, in nanoseconds (not the one QEMU sees).
fn host_now_ns() -> i64 {
    let mut t = timespec(0);
    // SAFETY: `t` is a valid timespec.
    unsafe { real_clock_gettime()(libc::CLOCK_MONOTONIC, &mut t) };
    nanos(&t)
}

/// `clock_gettime`, `CLOCK_MONOTONIC` ahead by the waits a recording skipped.
///
/// # Safety
/// As libc's: `tp` points to a `timespec`.
#[no_mangle]
pub unsafe extern "C" fn clock_gettime(clock: libc::clockid_t, tp: *mut libc::timespec) -> c_int {
    let r = real_clock_gettime()(clock, tp);
    let offset = PACER.monotonic_offset_ns();
    if r == 0 && clock == libc::CLOCK_MONOTONIC && offset != 0 {
        *tp = timespec(nanos(&*tp) + offset);
    }
    r
}
