//! Cache-line prefetch hints, for reads whose addresses are known well before the data is
//! needed: a scan's next memtable values and next cached blocks, which sit scattered in
//! memory (each a likely miss to DRAM) where waiting for them one at a time dominated.

/// Asks the CPU to bring in every cache line of `s` (callers cut `s` to what they will
/// read first: the hardware prefetcher follows a reader that streams on).
#[inline(always)]
pub(crate) fn prefetch_slice(s: &[u8]) {
    let p = s.as_ptr();
    // One hint per 64-byte line touched by `s`: from the line of its first byte to the
    // line of its last.
    let lines_end = ((p as usize & 63) + s.len()).div_ceil(64) * 64;
    let mut off = 0;
    while off < lines_end {
        prefetch_read(p.wrapping_add(off));
        off += 64;
    }
}

/// A hint to load the cache line at `p` for reading; it reads nothing observable.
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn prefetch_read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it never faults, whatever the address (it need not
    // even be mapped), and changes no memory. SSE, which provides it, is part of the
    // x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slices of any length at any alignment, empty ones, and addresses outside any
    /// allocation: hints only, nothing faults or changes.
    #[test]
    fn hints_never_fault_or_write() {
        let buf: Vec<u8> = (0..6000u32).map(|i| i as u8).collect();
        for start in 0..70 {
            for n in [0usize, 1, 63, 64, 65, 100, 255, 256, 257, 5000] {
                prefetch_slice(&buf[start..start + n]);
            }
        }
        prefetch_read(std::ptr::null());
        prefetch_read(usize::MAX as *const u8);
        assert!(buf.iter().enumerate().all(|(i, &b)| b == i as u8));
    }
}
