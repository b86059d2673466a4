//! Patched frame-of-reference bit packing of integer streams (the value deltas of a
//! decimal chunk, `FLAG_PACK`).
//!
//! Varints waste the top bits of every byte and zstd's byte-wise Huffman coding cannot
//! win them back when a value spans bytes (a counter growing by 150k-250k a scrape takes
//! three varint bytes, 21 bits, for 17 bits of information). Here values go in blocks of
//! [`BLOCK`]: each block stores its minimum and a bit width `w`, then every value minus
//! the minimum in `w` bits; the few values that do not fit (a traffic burst) are patched
//! in afterwards as exceptions carrying their high bits. The encoder picks the `w` that
//! minimises the block's size.
//!
//! Block layout (docs/format/chunk.md): zig-zag varint `base`, `u8` width (0..=64), the
//! `ceil(len * w / 8)` bytes of packed low bits (least significant bit first), varint
//! exception count, then per exception the varint index delta within the block (the
//! first from 0, then strictly increasing) and the varint of the high bits
//! `(x - base) >> w` (non-zero).

use strata_kv::coding::put_varint64;

use super::{ChunkError, Result};

/// Values per block: an exception's index fits one varint byte.
pub const BLOCK: usize = 128;

fn zz(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzz(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends `xs` packed in blocks.
pub fn put_packed(out: &mut Vec<u8>, xs: &[i64]) {
    for block in xs.chunks(BLOCK) {
        put_block(out, block);
    }
}

fn put_block(out: &mut Vec<u8>, xs: &[i64]) {
    let base = xs.iter().copied().min().unwrap_or(0);
    let us: Vec<u64> = xs.iter().map(|&x| x.wrapping_sub(base) as u64).collect();
    // Values by bit length; a width `w` costs len*w bits plus, per value longer than `w`,
    // an index byte and the varint of its high bits. Only widths that are some value's
    // bit length (or 0) are tried: few distinct lengths occur.
    let mut count = [0usize; 65];
    for &u in &us {
        count[64 - u.leading_zeros() as usize] += 1;
    }
    let present: Vec<(usize, usize)> = (0..=64)
        .filter(|&b| count[b] > 0)
        .map(|b| (b, count[b]))
        .collect();
    let cost = |w: usize| -> usize {
        let mut bits = xs.len() * w;
        for &(b, c) in present.iter().filter(|(b, _)| *b > w) {
            bits += c * 8 * (1 + (b - w).div_ceil(7));
        }
        bits
    };
    let w = std::iter::once(0)
        .chain(present.iter().map(|&(b, _)| b))
        .min_by_key(|&w| (cost(w), w))
        .unwrap_or(64);
    put_varint64(out, zz(base));
    out.push(w as u8);
    let mask = if w == 64 { u64::MAX } else { (1u64 << w) - 1 };
    let mut acc: u128 = 0;
    let mut nbits = 0usize;
    for &u in &us {
        acc |= u128::from(u & mask) << nbits;
        nbits += w;
        while nbits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            nbits -= 8;
        }
    }
    if nbits > 0 {
        out.push(acc as u8);
    }
    let high = |u: u64| if w == 64 { 0 } else { u >> w };
    let nex = us.iter().filter(|&&u| high(u) != 0).count();
    put_varint64(out, nex as u64);
    let mut prev = 0usize;
    for (i, &u) in us.iter().enumerate() {
        if high(u) != 0 {
            put_varint64(out, (i - prev) as u64);
            put_varint64(out, high(u));
            prev = i;
        }
    }
}

/// The size [`put_packed`] would write for `xs`, without writing it.
pub fn packed_len(xs: &[i64]) -> usize {
    let mut out = Vec::new();
    let mut total = 0;
    for block in xs.chunks(BLOCK) {
        out.clear();
        put_block(&mut out, block);
        total += out.len();
    }
    total
}

/// Reads a [`put_packed`] stream of `total` values from `buf`, one block at a time.
pub struct Unpacker<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Values not yet unpacked into `block`.
    left: usize,
    block: [i64; BLOCK],
    len: usize,
    next: usize,
    at: usize,
}

impl<'a> Unpacker<'a> {
    /// A reader of `total` values at the start of `buf`; `at` is the offset errors name.
    pub fn new(buf: &'a [u8], total: usize, at: usize) -> Self {
        Unpacker {
            buf,
            pos: 0,
            left: total,
            block: [0; BLOCK],
            len: 0,
            next: 0,
            at,
        }
    }

    /// Bytes of `buf` read so far (whole blocks).
    pub fn position(&self) -> usize {
        self.pos
    }

    fn corrupt(&self, reason: &str) -> ChunkError {
        ChunkError::corrupt(self.at, format!("packed values: {reason}"))
    }

    fn varint(&mut self) -> Result<u64> {
        let (v, n) = strata_kv::coding::get_varint64(self.buf.get(self.pos..).unwrap_or_default())
            .ok_or_else(|| self.corrupt("truncated varint"))?;
        self.pos += n;
        Ok(v)
    }

    /// The next value; an error past the stream's `total` or on malformed bytes.
    #[inline]
    pub fn next_value(&mut self) -> Result<i64> {
        if self.next == self.len {
            self.fill()?;
        }
        let v = self.block[self.next];
        self.next += 1;
        Ok(v)
    }

    fn fill(&mut self) -> Result<()> {
        let len = self.left.min(BLOCK);
        if len == 0 {
            return Err(self.corrupt("more values read than stored"));
        }
        let base = unzz(self.varint()?);
        let w = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.corrupt("truncated width"))? as usize;
        self.pos += 1;
        if w > 64 {
            return Err(self.corrupt("width over 64 bits"));
        }
        let nbytes = (len * w).div_ceil(8);
        let packed = self
            .buf
            .get(self.pos..self.pos + nbytes)
            .ok_or_else(|| self.corrupt("truncated block"))?;
        self.pos += nbytes;
        let mask = if w == 64 { u64::MAX } else { (1u64 << w) - 1 };
        let mut us = [0u64; BLOCK];
        if w > 0 {
            let mut acc: u128 = 0;
            let mut nbits = 0usize;
            let mut bytes = packed.iter();
            for u in us.iter_mut().take(len) {
                while nbits < w {
                    // `packed` holds exactly the bits of `len` values.
                    acc |= u128::from(*bytes.next().unwrap_or(&0)) << nbits;
                    nbits += 8;
                }
                *u = (acc as u64) & mask;
                acc >>= w;
                nbits -= w;
            }
        }
        let nex = self.varint()?;
        if nex > len as u64 {
            return Err(self.corrupt("more exceptions than values"));
        }
        let mut idx = 0usize;
        for k in 0..nex {
            let di = self.varint()?;
            if k > 0 && di == 0 {
                return Err(self.corrupt("exception indices out of order"));
            }
            idx = idx.saturating_add(usize::try_from(di).unwrap_or(usize::MAX));
            let high = self.varint()?;
            let fits = w < 64 && high != 0 && (high << w) >> w == high;
            match us.get_mut(idx) {
                Some(u) if idx < len && fits => *u |= high << w,
                _ => return Err(self.corrupt("bad exception")),
            }
        }
        for (x, &u) in self.block.iter_mut().zip(&us[..len]) {
            *x = base.wrapping_add(u as i64);
        }
        self.left -= len;
        self.len = len;
        self.next = 0;
        Ok(())
    }

    /// Checks that every block was read (the caller read all `total` values): the stream
    /// ends at [`Unpacker::position`].
    pub fn finished(&self) -> bool {
        self.left == 0 && self.next == self.len
    }
}

/// Writes which of `len` integers are non-zero (`set`, increasing indices below `len`) as
/// Rice-coded gaps: varint count, `u8` parameter `k` (0..=31), then per index the number
/// of zeros since the previous one, `g`, as `g >> k` one bits, a zero bit and the low `k`
/// bits of `g`, least significant bit first, the last byte padded with zeros. Sparse
/// bitmaps (an idle counter moves one scrape in twenty) cost ~log2(1/p) + 1.5 bits per
/// set index instead of a bit per integer.
pub fn put_gaps(out: &mut Vec<u8>, set: &[usize]) {
    let gaps: Vec<u64> = set
        .iter()
        .scan(0usize, |next, &i| {
            let g = i - *next;
            *next = i + 1;
            Some(g as u64)
        })
        .collect();
    // The best k is near log2 of the mean gap: try its neighbours.
    let bits = |k: u32| -> u64 { gaps.iter().map(|g| (g >> k) + 1 + u64::from(k)).sum() };
    let mean = gaps.iter().sum::<u64>() / (gaps.len() as u64).max(1);
    let guess = 63 - (mean | 1).leading_zeros();
    let k = (guess.saturating_sub(1)..=(guess + 1).min(31))
        .min_by_key(|&k| (bits(k), k))
        .unwrap_or(0);
    put_varint64(out, gaps.len() as u64);
    out.push(k as u8);
    let mut acc = 0u64;
    let mut nbits = 0u32;
    let mut push = |out: &mut Vec<u8>, bit: bool| {
        acc |= u64::from(bit) << nbits;
        nbits += 1;
        if nbits == 8 {
            out.push(acc as u8);
            (acc, nbits) = (0, 0);
        }
    };
    for &g in &gaps {
        for _ in 0..g >> k {
            push(out, true);
        }
        push(out, false);
        for b in 0..k {
            push(out, (g >> b) & 1 == 1);
        }
    }
    if nbits > 0 {
        out.push(acc as u8);
    }
}

/// Reads [`put_gaps`]' bytes at the start of `buf` back into a bitmap of `len` bits
/// (`ceil(len / 8)` bytes, bit `i % 8` of byte `i / 8`), returning it and the bytes read.
pub fn get_gaps(buf: &[u8], len: usize, at: usize) -> Result<(Vec<u8>, usize)> {
    let bad = |r: &str| ChunkError::corrupt(at, format!("zero gaps: {r}"));
    let (count, mut pos) =
        strata_kv::coding::get_varint64(buf).ok_or_else(|| bad("truncated count"))?;
    if count > len as u64 {
        return Err(bad("more set bits than integers"));
    }
    let k = u32::from(*buf.get(pos).ok_or_else(|| bad("truncated parameter"))?);
    pos += 1;
    if k > 31 {
        return Err(bad("parameter over 31"));
    }
    let mut bitmap = vec![0u8; len.div_ceil(8)];
    let stream = buf.get(pos..).unwrap_or_default();
    let mut bit = 0usize;
    let mut read = || -> Result<bool> {
        let byte = stream.get(bit / 8).ok_or_else(|| bad("truncated stream"))?;
        let b = byte >> (bit % 8) & 1 == 1;
        bit += 1;
        Ok(b)
    };
    let mut next = 0usize;
    for _ in 0..count {
        let mut q = 0usize;
        while read()? {
            q += 1;
            if q > len {
                return Err(bad("gap past the end"));
            }
        }
        let mut low = 0usize;
        for b in 0..k {
            low |= usize::from(read()?) << b;
        }
        let i = (q << k)
            .checked_add(low)
            .and_then(|g| g.checked_add(next))
            .filter(|&i| i < len)
            .ok_or_else(|| bad("gap past the end"))?;
        bitmap[i / 8] |= 1 << (i % 8);
        next = i + 1;
    }
    Ok((bitmap, pos + bit.div_ceil(8)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(xs: &[i64]) -> usize {
        let mut out = Vec::new();
        put_packed(&mut out, xs);
        assert_eq!(packed_len(xs), out.len());
        out.extend_from_slice(b"tail");
        let mut u = Unpacker::new(&out, xs.len(), 0);
        for (i, &x) in xs.iter().enumerate() {
            assert_eq!(u.next_value().unwrap(), x, "value {i}");
        }
        assert!(u.finished());
        assert_eq!(&out[u.position()..], b"tail");
        assert!(u.next_value().is_err());
        out.len() - 4
    }

    #[test]
    fn extremes_and_outliers_round_trip() {
        round_trip(&[]);
        round_trip(&[0]);
        round_trip(&[i64::MIN, i64::MAX, 0, -1, 1]);
        round_trip(&[i64::MAX; 300]);
        // Steady increments with the odd burst: narrow width plus exceptions.
        let xs: Vec<i64> = (0..1000)
            .map(|i| 150_000 + (i * 7919 % 100_000) + if i % 50 == 0 { 40_000_000 } else { 0 })
            .collect();
        let n = round_trip(&xs);
        assert!(n < 1000 * 18 / 8 + 200, "{n} bytes");
    }

    fn gaps_round_trip(len: usize, set: &[usize]) -> usize {
        let mut out = Vec::new();
        put_gaps(&mut out, set);
        let n = out.len();
        out.push(0xee);
        let (bitmap, used) = get_gaps(&out, len, 0).unwrap();
        assert_eq!(used, n);
        let got: Vec<usize> = (0..len)
            .filter(|i| bitmap[i / 8] >> (i % 8) & 1 == 1)
            .collect();
        assert_eq!(got, set);
        n
    }

    #[test]
    fn gaps_round_trip_and_beat_a_bitmap_when_sparse() {
        gaps_round_trip(0, &[]);
        gaps_round_trip(1, &[0]);
        gaps_round_trip(9, &[0, 1, 2, 8]);
        let all: Vec<usize> = (0..1000).collect();
        gaps_round_trip(1000, &all);
        let sparse: Vec<usize> = (0..720).filter(|i| i * 7919 % 20 == 0).collect();
        let n = gaps_round_trip(720, &sparse);
        assert!(n < 720 / 8 / 2, "{n} bytes");
        for bad in [&[][..], &[5], &[2, 40], &[1, 0, 0xff, 0xff], &[3, 0]] {
            assert!(get_gaps(bad, 4, 0).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &[][..],
            &[0],
            &[0, 65],
            &[0, 8],
            &[0, 0, 1, 200, 1],
            &[0, 0, 1, 0, 0],
        ] {
            let mut u = Unpacker::new(bad, 3, 0);
            assert!((0..3).any(|_| u.next_value().is_err()), "{bad:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0xbac4),
            ..ProptestConfig::default()
        })]

        #[test]
        fn any_values_round_trip(
            xs in proptest::collection::vec(
                prop_oneof![any::<i64>(), -100i64..100, 0i64..3, Just(i64::MIN), Just(i64::MAX)],
                0..700,
            )
        ) {
            round_trip(&xs);
        }

        #[test]
        fn any_gaps_round_trip(bits in proptest::collection::vec(any::<bool>(), 0..600)) {
            let set: Vec<usize> = (0..bits.len()).filter(|&i| bits[i]).collect();
            gaps_round_trip(bits.len(), &set);
        }

        #[test]
        fn arbitrary_gap_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..100),
            len in 0usize..300,
        ) {
            let _ = get_gaps(&bytes, len, 0);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            total in 0usize..400,
        ) {
            let mut u = Unpacker::new(&bytes, total, 0);
            for _ in 0..total {
                if u.next_value().is_err() {
                    break;
                }
            }
        }
    }
}
