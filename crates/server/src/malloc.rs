//! glibc malloc settings for a query server.
//!
//! A range query decodes tens of MB of samples into many small vectors and frees them
//! when it answers. With glibc's defaults the freed top of each thread's heap goes back to
//! the kernel (`madvise`/trim) at once, and the next query faults every page in again: on
//! `sum by (job) (rate(...[5m]))` over 1.5M samples that was ~6,400 page faults and a third
//! of the CPU time per query. Keeping up to [`TRIM_THRESHOLD`] of freed memory per heap
//! (as a garbage-collected peer keeps its heap) makes repeats fault-free.

/// Freed memory at the top of a heap kept for reuse before it is given back.
pub const TRIM_THRESHOLD: i32 = 128 << 20;
/// Allocations from this size on are mapped on their own (and unmapped when freed); below,
/// they come from the heaps. glibc's dynamic threshold stops adapting once the trim
/// threshold is set, so this is its own upper bound.
pub const MMAP_THRESHOLD: i32 = 32 << 20;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod sys {
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }

    pub fn tune(trim: i32, mmap: i32) -> bool {
        // SAFETY: `mallopt` only sets allocator parameters; it takes the allocator's own
        // lock and is safe to call at any time from any thread.
        unsafe { mallopt(M_TRIM_THRESHOLD, trim) == 1 && mallopt(M_MMAP_THRESHOLD, mmap) == 1 }
    }
}

/// Applies [`TRIM_THRESHOLD`] and [`MMAP_THRESHOLD`] where the allocator is glibc's;
/// whether they were applied.
pub fn tune() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        sys::tune(TRIM_THRESHOLD, MMAP_THRESHOLD)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_settings() {
        let applied = super::tune();
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(applied);
        }
        // The allocator still works, large and small.
        let big = vec![1u8; 40 << 20];
        let small: Vec<u64> = (0..1000).collect();
        assert_eq!(big[big.len() - 1] as u64 + small[999], 1000);
    }
}
