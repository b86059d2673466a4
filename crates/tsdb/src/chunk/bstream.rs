//! Bit streams: a writer that appends bits most-significant first to a byte vector, and a
//! reader that takes them back, reporting truncation instead of panicking.
//!
//! Bits fill each byte from its most significant bit down; the unused low bits of the last
//! byte are zero. This is the layout of Prometheus' `bstream` and of the Gorilla paper.

/// Appends bits to the end of a byte vector it borrows, together with the count of unused
/// low bits in the vector's last byte (kept by the owner between writes).
///
/// Invariant: `*free` is in `0..8`, and the low `*free` bits of the last byte are zero.
/// `*free == 0` means the last byte (if any) is full and the next bit starts a new byte.
#[derive(Debug)]
pub struct BitWriter<'a> {
    buf: &'a mut Vec<u8>,
    free: &'a mut u8,
}

impl<'a> BitWriter<'a> {
    /// Continues writing at the end of `buf`, whose last byte has `*free` unused low bits.
    pub fn new(buf: &'a mut Vec<u8>, free: &'a mut u8) -> Self {
        debug_assert!(*free < 8);
        BitWriter { buf, free }
    }

    /// Appends one bit.
    #[inline]
    pub fn write_bit(&mut self, bit: bool) {
        self.write_bits(u64::from(bit), 1);
    }

    /// Appends the low `nbits` bits of `v`, most significant first. `nbits <= 64`; higher
    /// bits of `v` are ignored.
    ///
    /// Word at a time (this is on the ingest path, once or twice per sample): the bits
    /// that fit go into the free bits of the last byte, the rest is written as the leading
    /// bytes of one big-endian word.
    #[inline]
    pub fn write_bits(&mut self, v: u64, nbits: u32) {
        debug_assert!(nbits <= 64);
        if nbits == 0 {
            return;
        }
        let v = v & low_mask(nbits);
        let free = u32::from(*self.free);
        if nbits <= free {
            if let Some(last) = self.buf.last_mut() {
                *last |= (v << (free - nbits)) as u8;
            }
            *self.free = (free - nbits) as u8;
            return;
        }
        // `rest` (1..=64) bits remain after the last byte's free bits are filled.
        let rest = nbits - free;
        if free > 0 {
            if let Some(last) = self.buf.last_mut() {
                // `v < 2^nbits`: exactly the top `free` bits of the field.
                *last |= (v >> rest) as u8;
            }
        }
        // The low `rest` bits, left-aligned; their bytes are the leading bytes of the word.
        let word = (v << (64 - rest)).to_be_bytes();
        let nbytes = rest.div_ceil(8) as usize;
        // A fixed 8-byte copy and a cut cost less than a copy of variable length.
        let end = self.buf.len() + nbytes;
        self.buf.extend_from_slice(&word);
        self.buf.truncate(end);
        *self.free = (8 * nbytes as u32 - rest) as u8;
    }

    /// Appends the 8 bits of `b`.
    pub fn write_byte(&mut self, b: u8) {
        self.write_bits(u64::from(b), 8);
    }
}

/// A mask of the low `n` bits (`n <= 64`).
fn low_mask(n: u32) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// Reads bits, most significant first, from a byte slice. Every read returns `None` when
/// the slice has too few bits left, and then leaves the position unchanged.
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    buf: &'a [u8],
    /// Position in bits from the start of `buf`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// Starts at the first bit of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        BitReader { buf, pos: 0 }
    }

    /// Bits consumed so far.
    pub fn bit_position(&self) -> usize {
        self.pos
    }

    /// Bits left to read (including the padding bits of the last byte).
    pub fn remaining_bits(&self) -> usize {
        self.buf.len() * 8 - self.pos
    }

    /// Takes one bit.
    pub fn read_bit(&mut self) -> Option<bool> {
        Some(self.read_bits(1)? == 1)
    }

    /// Takes `nbits` bits (`nbits <= 64`) as the low bits of the result.
    pub fn read_bits(&mut self, nbits: u32) -> Option<u64> {
        debug_assert!(nbits <= 64);
        if (nbits as usize) > self.remaining_bits() {
            return None;
        }
        let mut v: u64 = 0;
        let mut left = nbits;
        while left > 0 {
            let byte = *self.buf.get(self.pos / 8)?;
            let used = (self.pos % 8) as u32;
            let avail = 8 - used;
            let take = left.min(avail);
            let bits = (u64::from(byte) >> (avail - take)) & low_mask(take);
            // `take <= 8`, so the shift cannot overflow.
            v = (v << take) | bits;
            self.pos += take as usize;
            left -= take;
        }
        Some(v)
    }

    /// Takes 8 bits.
    pub fn read_byte(&mut self) -> Option<u8> {
        Some(self.read_bits(8)? as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bits_fill_bytes_msb_first() {
        let mut buf = Vec::new();
        let mut free = 0;
        let mut w = BitWriter::new(&mut buf, &mut free);
        w.write_bit(true);
        w.write_bits(0b01, 2);
        w.write_bits(0xabc, 12);
        assert_eq!(buf, vec![0b1011_0101, 0b0111_1000]);
        assert_eq!(free, 1);
        let mut r = BitReader::new(&buf);
        assert_eq!(r.read_bit(), Some(true));
        assert_eq!(r.read_bits(2), Some(0b01));
        assert_eq!(r.read_bits(12), Some(0xabc));
        assert_eq!(r.read_bits(2), None, "only the padding bit is left");
        assert_eq!(r.read_bit(), Some(false));
        assert_eq!(r.read_bit(), None);
    }

    #[test]
    fn writer_resumes_a_partial_byte() {
        let mut buf = vec![0xff];
        let mut free = 0;
        BitWriter::new(&mut buf, &mut free).write_bits(0b101, 3);
        BitWriter::new(&mut buf, &mut free).write_bits(u64::MAX, 64);
        let mut r = BitReader::new(&buf);
        assert_eq!(r.read_byte(), Some(0xff));
        assert_eq!(r.read_bits(3), Some(0b101));
        assert_eq!(r.read_bits(64), Some(u64::MAX));
        assert_eq!(r.remaining_bits(), usize::from(free));
    }

    proptest! {
        #[test]
        fn same_bytes_as_bit_at_a_time(
            start in proptest::collection::vec(any::<u8>(), 0..3),
            start_free in 0u8..8,
            fields in proptest::collection::vec((any::<u64>(), 0u32..=64), 0..64),
        ) {
            // The format is defined bit by bit: the word-at-a-time writer must match it.
            let mut start = start;
            let start_free = if start.is_empty() { 0 } else { start_free };
            if let Some(last) = start.last_mut() {
                *last &= !(low_mask(u32::from(start_free)) as u8);
            }
            let (mut want, mut want_free) = (start.clone(), start_free);
            for &(v, n) in &fields {
                for i in (0..n).rev() {
                    if want_free == 0 {
                        want.push(0);
                        want_free = 8;
                    }
                    want_free -= 1;
                    if (v >> i) & 1 == 1 {
                        *want.last_mut().expect("pushed") |= 1 << want_free;
                    }
                }
            }
            let (mut buf, mut free) = (start, start_free);
            let mut w = BitWriter::new(&mut buf, &mut free);
            for &(v, n) in &fields {
                w.write_bits(v, n);
            }
            prop_assert_eq!(buf, want);
            prop_assert_eq!(free, want_free);
        }

        #[test]
        fn roundtrip(fields in proptest::collection::vec((any::<u64>(), 0u32..=64), 0..64)) {
            let mut buf = Vec::new();
            let mut free = 0;
            let mut w = BitWriter::new(&mut buf, &mut free);
            for &(v, n) in &fields {
                w.write_bits(v, n);
            }
            let total: usize = fields.iter().map(|&(_, n)| n as usize).sum();
            prop_assert_eq!(buf.len(), total.div_ceil(8));
            let mut r = BitReader::new(&buf);
            for &(v, n) in &fields {
                let want = if n == 64 { v } else { v & ((1u64 << n) - 1) };
                prop_assert_eq!(r.read_bits(n), Some(want));
            }
            prop_assert_eq!(r.remaining_bits(), usize::from(free));
        }
    }
}
