//! Prefetch hints. A prefetch never reads or writes memory in the language's sense and
//! never faults, whatever the address, so these are safe to call with any pointer.

/// A hint to bring the cache line of `p` closer.
#[inline(always)]
pub fn prefetch<T>(p: &T) {
    prefetch_ptr(p as *const T as *const u8)
}

/// Prefetch hints for every cache line of `*p`.
#[inline(always)]
pub fn prefetch_lines<T>(p: &T) {
    let base = p as *const T as *const u8;
    for off in (0..std::mem::size_of::<T>()).step_by(64) {
        prefetch_ptr(base.wrapping_add(off));
    }
}

/// A prefetch hint for any address (it need not be valid: a prefetch never faults).
#[inline(always)]
pub fn prefetch_ptr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is a hint that never faults and accesses no memory in the
    // abstract machine, whatever the address; SSE is part of the x86-64 baseline.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
