//! CRC32C checksums as stored on disk.
//!
//! Stored checksums are *masked* (rotated and offset, as LevelDB does) because computing the
//! CRC of data that itself embeds CRCs is otherwise weak.

const MASK_DELTA: u32 = 0xa282_ead8;

/// CRC32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_extend(0, data)
}

/// CRC32C of the concatenation of `a` and `b`.
pub fn crc32c_extend(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if data.len() <= SHORT_INPUT && std::is_x86_feature_detected!("sse4.2") {
        return sse42::crc32c_extend(crc, data);
    }
    // `crc-fast` picks the widest carry-less multiplication the CPU has (512-bit
    // VPCLMULQDQ folds a 4 KiB data block ~4x faster than three interleaved `crc32`
    // streams: block checksums were ~8% of a scan). Its state is the CRC register.
    let mut digest =
        crc_fast::Digest::new_with_init_state(crc_fast::CrcAlgorithm::Crc32Iscsi, u64::from(!crc));
    digest.update(data);
    digest.finalize() as u32
}

/// Inputs up to this many bytes take the plain SSE4.2 loop below; longer ones `crc-fast`,
/// whose folding is faster on kilobytes but costs a fixed overhead per call, more than the
/// whole loop on a WAL record header (three CRCs of 5, ~130 and 9 bytes per write).
#[cfg(target_arch = "x86_64")]
const SHORT_INPUT: usize = 256;

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod sse42 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};

    /// REQUIRES: the CPU supports SSE4.2 (checked by the caller).
    pub(super) fn crc32c_extend(crc: u32, data: &[u8]) -> u32 {
        // SAFETY: the only caller checked `is_x86_feature_detected!("sse4.2")`, which is all
        // `extend` requires; it reads nothing but `data` through safe slice accesses.
        unsafe { extend(crc, data) }
    }

    #[target_feature(enable = "sse4.2")]
    fn extend(crc: u32, data: &[u8]) -> u32 {
        let mut c = u64::from(!crc);
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            c = _mm_crc32_u64(c, u64::from_le_bytes(b));
        }
        // The instruction keeps the CRC in the low 32 bits.
        let mut c = c as u32;
        for &b in words.remainder() {
            c = _mm_crc32_u8(c, b);
        }
        !c
    }
}

/// The form a CRC takes on disk.
pub fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Inverse of [`mask`].
pub fn unmask(masked: u32) -> u32 {
    masked.wrapping_sub(MASK_DELTA).rotate_left(15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_roundtrip() {
        let c = crc32c(b"hello");
        assert_ne!(mask(c), c);
        assert_eq!(unmask(mask(c)), c);
        assert_eq!(crc32c_extend(crc32c(b"hel"), b"lo"), c);
    }

    /// Long inputs (`crc-fast`, through its state), against the `crc32c` crate: lengths
    /// around multiples of 256 bytes, a 4 KiB block with its trailer byte, any alignment
    /// and any seed (the extension of an earlier CRC).
    #[test]
    fn long_inputs_match_the_crate_with_any_seed() {
        let data: Vec<u8> = (0..9000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert_eq!(crc32c(&[0u8; 4096]), crc32c::crc32c(&[0u8; 4096]));
        assert_eq!(crc32c(&[0xffu8; 512]), crc32c::crc32c(&[0xffu8; 512]));
        let mut lens: Vec<usize> = (0..=5)
            .flat_map(|s| [s * 256, s * 256 + 1, s * 256 + 17, s * 256 + 255])
            .collect();
        lens.extend([4096, 4097, 4101, 8192 + 5, 8999]);
        for start in [0usize, 1, 3, 8] {
            for &len in &lens {
                let d = &data[start..(start + len).min(data.len())];
                for seed in [0u32, 1, 0xdead_beef, crc32c::crc32c(&data[..start])] {
                    assert_eq!(
                        crc32c_extend(seed, d),
                        crc32c::crc32c_append(seed, d),
                        "start {start} len {} seed {seed:#x}",
                        d.len()
                    );
                }
            }
        }
    }

    #[test]
    fn short_inputs_match_the_crate_at_every_length_and_alignment() {
        let data: Vec<u8> = (0..700u32).map(|i| (i * 131 + 7) as u8).collect();
        // RFC 3720's test vector: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        for start in 0..9 {
            for len in 0..600 {
                let d = &data[start..start + len];
                assert_eq!(crc32c(d), crc32c::crc32c(d), "start {start} len {len}");
                let seed = crc32c::crc32c(&data[..start]);
                assert_eq!(
                    crc32c_extend(seed, d),
                    crc32c::crc32c_append(seed, d),
                    "extend: start {start} len {len}"
                );
            }
        }
    }
}
