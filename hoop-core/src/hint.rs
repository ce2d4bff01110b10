//! Hints to the CPU that change no result, only when memory is fetched.

/// Asks the CPU to fetch the cache line holding `ptr` now, ready to be
/// written (`prefetchw`; a no-op on other architectures).
///
/// For a store into memory that has gone cold, made just before an atomic
/// read-modify-write: the atomic instruction waits for every earlier store
/// to complete, so the store's cache miss would be paid in full there. A
/// line fetched one step ahead is in the cache by then.
///
/// Any address may be passed, dangling or past an allocation's end: a
/// prefetch reads nothing the program sees and never faults.
#[inline(always)]
#[allow(clippy::inline_always)]
pub fn prefetch_for_write<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only needs SSE, which every x86_64 CPU has,
    // and a prefetch neither dereferences nor faults on any address.
    #[allow(unsafe_code)]
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_ET0 }>(ptr.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

#[cfg(test)]
mod tests {
    use super::prefetch_for_write;

    #[test]
    fn any_address_may_be_prefetched() {
        let v = [1u8; 64];
        prefetch_for_write(v.as_ptr());
        // Past the end, dangling, and null: prefetches never fault.
        prefetch_for_write(v.as_ptr().wrapping_add(4096));
        prefetch_for_write(std::ptr::NonNull::<u64>::dangling().as_ptr());
        prefetch_for_write(std::ptr::null::<u8>());
        assert_eq!(v[0], 1);
    }
}
