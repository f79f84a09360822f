//! The one memory hint the hot paths use: on a kernel-sized profile, the per-function tables the
//! observer and the writer look up at each event are cache misses, asked for ahead of their use.

/// Hints the CPU to bring the cache line at `p` in (a no-op where there is no such hint).
/// `p` may point anywhere, also past the end of what it was computed from.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
