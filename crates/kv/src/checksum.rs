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
    #[cfg(target_arch = "x86_64")]
    if fold::available() {
        return fold::crc32c_extend(crc, data);
    }
    crc32c::crc32c_append(crc, data)
}

/// CRC32C by carry-less multiplication, 256 bytes a step, for CPUs with 512-bit
/// `VPCLMULQDQ` (AVX-512): a data block (4 KiB, verified on every read from a file) in
/// about a quarter of the time the `crc32c` crate's three interleaved `crc32` streams
/// take, which a scan spent ~8% of its time in.
///
/// Four 512-bit accumulators (16 lanes of 128 bits) each take the next 16 bytes of every
/// 256: a lane of bits `a` (bit `i` the coefficient of `x^(127-i)`, as the reflected CRC
/// reads bytes) is moved `D` bits on by multiplying its two 64-bit halves by
/// `x^(64+D-1) mod P` and `x^(D-1) mod P` (bit-reversed into 64 bits; the `-1` makes
/// up for the product of two bit-reversed numbers landing one bit low) and added to
/// the data `D` bits on, which keeps the whole congruent mod P to the message read so
/// far. The lanes are folded into one, whose 16 bytes the `crc32` instruction then
/// reads as if they were the message, followed by the bytes after the last full step.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod fold {
    use std::arch::x86_64::*;

    /// The CRC32C polynomial without its `x^32` term, bit `d` the coefficient of `x^d`.
    const POLY: u32 = 0x1EDC_6F41;

    /// `x^n mod P`, bit-reversed into 64 bits: bit `63 - d` the coefficient of `x^d`.
    const fn xpow(n: u32) -> u64 {
        let mut r: u32 = 1;
        let mut i = 0;
        while i < n {
            let carry = r & 0x8000_0000 != 0;
            r <<= 1;
            if carry {
                r ^= POLY;
            }
            i += 1;
        }
        (r as u64).reverse_bits()
    }

    /// The pair moving a 128-bit lane `d` bits on: for its low half (the earlier bytes,
    /// `x^64` above its high half) and its high half.
    const fn pair(d: u32) -> (u64, u64) {
        (xpow(64 + d - 1), xpow(d - 1))
    }

    const K2048: (u64, u64) = pair(2048);
    const K512: (u64, u64) = pair(512);
    const K128: (u64, u64) = pair(128);

    /// Bytes a step of the main loop reads; shorter inputs take the caller's path.
    pub(super) const STEP: usize = 256;

    pub(super) fn available() -> bool {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("vpclmulqdq")
            && std::is_x86_feature_detected!("pclmulqdq")
            && std::is_x86_feature_detected!("sse4.2")
    }

    /// REQUIRES: [`available`] (checked by the caller).
    pub(super) fn crc32c_extend(crc: u32, data: &[u8]) -> u32 {
        // SAFETY: the caller checked `available()`: the CPU has every feature `extend`
        // is compiled for. `extend` reads nothing but `data`, through loads whose
        // bounds it checks (see there).
        unsafe { extend(crc, data) }
    }

    #[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.2")]
    fn load(chunk: &[u8]) -> __m512i {
        match <&[u8; 64]>::try_from(chunk) {
            // SAFETY: `bytes` is 64 readable bytes; the load has no alignment
            // requirement.
            Ok(bytes) => unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) },
            Err(_) => _mm512_setzero_si512(),
        }
    }

    #[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.2")]
    fn constant((lo, hi): (u64, u64)) -> __m512i {
        let (lo, hi) = (lo as i64, hi as i64);
        _mm512_set_epi64(hi, lo, hi, lo, hi, lo, hi, lo)
    }

    /// `acc` moved on by the distance of `k` (see [`pair`]), plus `next`.
    #[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.2")]
    fn fold(acc: __m512i, k: __m512i, next: __m512i) -> __m512i {
        let lo = _mm512_clmulepi64_epi128::<0x00>(acc, k);
        let hi = _mm512_clmulepi64_epi128::<0x11>(acc, k);
        _mm512_ternarylogic_epi64::<0x96>(lo, hi, next)
    }

    #[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.2")]
    fn fold128(acc: __m128i, k: __m128i, next: __m128i) -> __m128i {
        let lo = _mm_clmulepi64_si128::<0x00>(acc, k);
        let hi = _mm_clmulepi64_si128::<0x11>(acc, k);
        _mm_xor_si128(_mm_xor_si128(lo, hi), next)
    }

    #[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.2")]
    fn extend(crc: u32, data: &[u8]) -> u32 {
        let steps = data.len() / STEP;
        if steps == 0 {
            return super::sse42::crc32c_extend(crc, data);
        }
        let (body, tail) = data.split_at(steps * STEP);
        let mut chunks = body.chunks_exact(64);
        // The register (the inverted CRC so far) is added to the first 4 bytes.
        // Zero-extended: a cast would leave the upper 384 bits unspecified.
        let seed = _mm512_zextsi128_si512(_mm_cvtsi32_si128(!crc as i32));
        let mut acc = [_mm512_setzero_si512(); 4];
        for (i, a) in acc.iter_mut().enumerate() {
            *a = load(chunks.next().unwrap_or(&[]));
            if i == 0 {
                *a = _mm512_xor_si512(*a, seed);
            }
        }
        let k2048 = constant(K2048);
        for _ in 1..steps {
            for a in acc.iter_mut() {
                *a = fold(*a, k2048, load(chunks.next().unwrap_or(&[])));
            }
        }
        let k512 = constant(K512);
        let x = fold(acc[0], k512, acc[1]);
        let x = fold(x, k512, acc[2]);
        let x = fold(x, k512, acc[3]);
        // Four lanes into one, earliest first.
        let k128 = _mm_set_epi64x(K128.1 as i64, K128.0 as i64);
        let mut lane = _mm512_extracti32x4_epi32::<0>(x);
        lane = fold128(lane, k128, _mm512_extracti32x4_epi32::<1>(x));
        lane = fold128(lane, k128, _mm512_extracti32x4_epi32::<2>(x));
        lane = fold128(lane, k128, _mm512_extracti32x4_epi32::<3>(x));
        let lo = _mm_cvtsi128_si64(lane) as u64;
        let hi = _mm_extract_epi64::<1>(lane) as u64;
        let c = _mm_crc32_u64(_mm_crc32_u64(0, lo), hi) as u32;
        // `c` is the register; the tail's function takes and returns inverted CRCs.
        super::sse42::crc32c_extend(!c, tail)
    }
}

/// Inputs up to this many bytes take the plain SSE4.2 loop below; longer ones the folding
/// path where the CPU has 512-bit VPCLMULQDQ, else the `crc32c` crate, whose three
/// interleaved streams are faster on kilobytes but cost a fixed ~100 instructions per call,
/// more than the whole loop on a WAL record header (three CRCs of 5, ~130 and 9 bytes per
/// write).
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

    /// The folding path (CPUs with 512-bit VPCLMULQDQ), against the crate: lengths
    /// around every multiple of its 256-byte step, a 4 KiB block with its trailer byte,
    /// any alignment and any seed.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn folded_crc_matches_the_crate() {
        let data: Vec<u8> = (0..9000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        // Whichever path this CPU takes, the dispatcher agrees with the crate.
        for len in [257usize, 511, 512, 4096, 4097, 8999] {
            assert_eq!(
                crc32c(&data[..len]),
                crc32c::crc32c(&data[..len]),
                "len {len}"
            );
        }
        assert_eq!(crc32c(&[0u8; 4096]), crc32c::crc32c(&[0u8; 4096]));
        assert_eq!(crc32c(&[0xffu8; 512]), crc32c::crc32c(&[0xffu8; 512]));
        if !fold::available() {
            eprintln!("no 512-bit VPCLMULQDQ on this CPU: the folding path is not tested");
            return;
        }
        let mut lens: Vec<usize> = (0..=5)
            .flat_map(|s| [s * 256, s * 256 + 1, s * 256 + 17, s * 256 + 255])
            .collect();
        lens.extend([4096, 4097, 4101, 8192 + 5, 8999]);
        for start in [0usize, 1, 3, 8] {
            for &len in &lens {
                let d = &data[start..(start + len).min(data.len())];
                for seed in [0u32, 1, 0xdead_beef, crc32c::crc32c(&data[..start])] {
                    assert_eq!(
                        fold::crc32c_extend(seed, d),
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
