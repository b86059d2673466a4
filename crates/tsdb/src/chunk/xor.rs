//! The XOR chunk: Gorilla compression of float samples (Pelkonen et al., "Gorilla: A Fast,
//! Scalable, In-Memory Time Series Database", VLDB 2015), as in Prometheus'
//! `tsdb/chunkenc/xor.go`.
//!
//! Timestamps (`i64` milliseconds) are stored as delta-of-deltas in variable-width buckets,
//! values (`f64`) as the XOR with the previous value, of which only the meaningful bits are
//! written. A regular scrape costs one bit per timestamp and a repeated value one bit per
//! value. Values round-trip bit-exactly: every NaN payload (such as Prometheus' stale marker
//! `0x7ff0000000000002`), both infinities and `-0.0` come back with the same bits.
//!
//! The chunk stores timestamps in append order, whatever they are: decreasing, equal, or
//! jumping across the whole `i64` range (deltas are computed with wrapping arithmetic, which
//! the decoder undoes exactly). Keeping samples ordered is the head's job.
//!
//! Byte layout: `docs/format/chunk.md`.

use super::bstream::{BitReader, BitWriter};
use super::{ChunkError, Encoding, Result};

/// Bytes before the bit stream: the encoding byte and the big-endian `u16` sample count.
pub const HEADER_SIZE: usize = 3;

/// The most samples a chunk can hold (the header counts them in a `u16`). The head cuts
/// chunks far earlier (Prometheus: 120 samples).
pub const MAX_SAMPLES: usize = u16::MAX as usize;

/// Leading-zero count meaning "no XOR window yet" (before the first non-zero XOR).
const NO_WINDOW: u8 = 0xff;

/// The delta-of-delta buckets after the `0` (dod == 0) case: control-bit prefix, its length,
/// and the width of the two's-complement dod that follows. A dod that fits none is written
/// in full after the prefix `1111`.
const DOD_BUCKETS: [(u64, u32, u32); 3] = [(0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)];

/// An immutable view of encoded XOR chunk bytes.
///
/// Invariant: `bytes` holds at least the [`HEADER_SIZE`]-byte header and starts with
/// [`Encoding::Xor`]. The sample data is only checked while iterating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XorChunk {
    bytes: Vec<u8>,
}

impl Default for XorChunk {
    fn default() -> Self {
        Self::new()
    }
}

impl XorChunk {
    /// An empty chunk.
    pub fn new() -> Self {
        XorChunk {
            bytes: vec![Encoding::Xor as u8, 0, 0],
        }
    }

    /// Wraps stored bytes after checking the header: the encoding byte, and that an empty
    /// chunk carries no sample data.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        if bytes.len() < HEADER_SIZE {
            return Err(ChunkError::corrupt(
                bytes.len(),
                format!(
                    "chunk of {} bytes is shorter than its {HEADER_SIZE}-byte header",
                    bytes.len()
                ),
            ));
        }
        if bytes[0] != Encoding::Xor as u8 {
            return Err(ChunkError::UnknownEncoding(bytes[0]));
        }
        let chunk = XorChunk { bytes };
        if chunk.num_samples() == 0 && chunk.bytes.len() > HEADER_SIZE {
            return Err(ChunkError::corrupt(
                HEADER_SIZE,
                "chunk counts no samples but has sample data",
            ));
        }
        Ok(chunk)
    }

    /// The encoded bytes, header included: what is stored.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Consumes the chunk, returning its bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Number of samples, from the header.
    pub fn num_samples(&self) -> usize {
        usize::from(u16::from_be_bytes([self.bytes[1], self.bytes[2]]))
    }

    /// The samples in append order. Corrupt or truncated data yields one
    /// `Err(ChunkError::Corrupt)`, after which the iterator ends; it never panics.
    pub fn iter(&self) -> XorIterator<'_> {
        XorIterator {
            reader: BitReader::new(&self.bytes[HEADER_SIZE..]),
            total: self.num_samples(),
            read: 0,
            t: 0,
            delta: 0,
            v: 0,
            leading: NO_WINDOW,
            trailing: 0,
            done: false,
        }
    }

    fn set_num_samples(&mut self, n: u16) {
        self.bytes[1..HEADER_SIZE].copy_from_slice(&n.to_be_bytes());
    }
}

impl<'a> IntoIterator for &'a XorChunk {
    type Item = Result<(i64, f64)>;
    type IntoIter = XorIterator<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Appends samples to a [`XorChunk`] it owns.
///
/// The appender keeps the encoder state (last timestamp, last delta, last value, XOR window)
/// so that each append writes only the new sample's bits. The chunk it holds is always
/// complete and readable ([`XorAppender::chunk`]).
#[derive(Debug, Clone)]
pub struct XorAppender {
    chunk: XorChunk,
    /// Unused low bits of the chunk's last byte.
    free: u8,
    t: i64,
    delta: i64,
    v: u64,
    leading: u8,
    trailing: u8,
}

impl Default for XorAppender {
    fn default() -> Self {
        Self::new()
    }
}

impl XorAppender {
    /// An appender over a new, empty chunk.
    pub fn new() -> Self {
        XorAppender {
            chunk: XorChunk::new(),
            free: 0,
            t: 0,
            delta: 0,
            v: 0,
            leading: NO_WINDOW,
            trailing: 0,
        }
    }

    /// Continues appending to an existing chunk (e.g. one recovered after a restart). Decodes
    /// the whole chunk to rebuild the encoder state, so fails if it is corrupt.
    pub fn resume(chunk: XorChunk) -> Result<Self> {
        let mut it = chunk.iter();
        for sample in &mut it {
            sample?;
        }
        let free = it.reader.remaining_bits() as u8; // < 8: checked by the iterator's end.
        Ok(XorAppender {
            free,
            t: it.t,
            delta: it.delta,
            v: it.v,
            leading: it.leading,
            trailing: it.trailing,
            chunk,
        })
    }

    /// The chunk so far.
    pub fn chunk(&self) -> &XorChunk {
        &self.chunk
    }

    /// Consumes the appender, returning the chunk.
    pub fn into_chunk(self) -> XorChunk {
        self.chunk
    }

    /// Appends one sample. Any timestamp is accepted (ordering is the caller's job); fails
    /// only with [`ChunkError::Full`] once the chunk holds [`MAX_SAMPLES`].
    pub fn append(&mut self, t: i64, v: f64) -> Result<()> {
        let n = self.chunk.num_samples();
        if n >= MAX_SAMPLES {
            return Err(ChunkError::Full { max: MAX_SAMPLES });
        }
        let v = v.to_bits();
        let mut w = BitWriter::new(&mut self.chunk.bytes, &mut self.free);
        match n {
            0 => {
                write_varint_signed(&mut w, t);
                w.write_bits(v, 64);
            }
            1 => {
                let delta = t.wrapping_sub(self.t);
                write_varint_signed(&mut w, delta);
                write_xor(&mut w, v, self.v, &mut self.leading, &mut self.trailing);
                self.delta = delta;
            }
            _ => {
                let delta = t.wrapping_sub(self.t);
                write_dod(&mut w, delta.wrapping_sub(self.delta));
                write_xor(&mut w, v, self.v, &mut self.leading, &mut self.trailing);
                self.delta = delta;
            }
        }
        self.t = t;
        self.v = v;
        // n < MAX_SAMPLES == u16::MAX, so n + 1 fits.
        self.chunk.set_num_samples((n + 1) as u16);
        Ok(())
    }
}

/// Encodes `samples` as Prometheus' own XOR chunk data (`chunkenc.XORChunk.Bytes()`: a
/// 2-byte big-endian count, then the bit stream), for clients that read Prometheus chunks
/// (remote read). It differs from [`XorChunk`] only in the missing encoding byte and in
/// `Δ1`, an unsigned varint there. At most [`MAX_SAMPLES`] samples are written.
pub fn encode_prometheus(samples: &[(i64, f64)]) -> Vec<u8> {
    let samples = &samples[..samples.len().min(MAX_SAMPLES)];
    let mut bytes = (samples.len() as u16).to_be_bytes().to_vec();
    let mut free = 0u8;
    let mut w = BitWriter::new(&mut bytes, &mut free);
    let (mut pt, mut pdelta, mut pv) = (0i64, 0i64, 0u64);
    let (mut leading, mut trailing) = (NO_WINDOW, 0u8);
    for (i, &(t, v)) in samples.iter().enumerate() {
        let v = v.to_bits();
        match i {
            0 => {
                write_varint_signed(&mut w, t);
                w.write_bits(v, 64);
            }
            1 => {
                let delta = t.wrapping_sub(pt);
                let mut u = delta as u64;
                while u >= 0x80 {
                    w.write_byte((u as u8) | 0x80);
                    u >>= 7;
                }
                w.write_byte(u as u8);
                write_xor(&mut w, v, pv, &mut leading, &mut trailing);
                pdelta = delta;
            }
            _ => {
                let delta = t.wrapping_sub(pt);
                write_dod(&mut w, delta.wrapping_sub(pdelta));
                write_xor(&mut w, v, pv, &mut leading, &mut trailing);
                pdelta = delta;
            }
        }
        pt = t;
        pv = v;
    }
    bytes
}

/// True if `x` fits the `nbits`-bit bucket: `-(2^(nbits-1) - 1) <= x <= 2^(nbits-1)`, the
/// range Prometheus uses (one more positive value than two's complement, one fewer negative).
#[inline(always)]
fn fits_bucket(x: i64, nbits: u32) -> bool {
    let half = 1i64 << (nbits - 1);
    -(half - 1) <= x && x <= half
}

#[inline]
fn write_dod(w: &mut BitWriter<'_>, dod: i64) {
    if dod == 0 {
        w.write_bit(false);
        return;
    }
    // The first bucket (the jitter of a regular scrape) checked first, as one range.
    if fits_bucket(dod, 14) {
        w.write_bits((0b10 << 14) | (dod as u64 & 0x3fff), 16);
        return;
    }
    for (prefix, prefix_len, nbits) in DOD_BUCKETS {
        if fits_bucket(dod, nbits) {
            // Prefix and the low nbits of the two's complement, in one write.
            let field = (prefix << nbits) | (dod as u64 & ((1u64 << nbits) - 1));
            w.write_bits(field, prefix_len + nbits);
            return;
        }
    }
    w.write_bits(0b1111, 4);
    w.write_bits(dod as u64, 64);
}

#[inline]
fn write_xor(w: &mut BitWriter<'_>, v: u64, prev: u64, leading: &mut u8, trailing: &mut u8) {
    let x = v ^ prev;
    if x == 0 {
        w.write_bit(false);
        return;
    }
    // The leading-zero field has 5 bits; a longer run is written as 31 leading zeros
    // followed by meaningful bits that start with zeros.
    let lz = (x.leading_zeros() as u8).min(31);
    let tz = x.trailing_zeros() as u8;
    if *leading != NO_WINDOW && lz >= *leading && tz >= *trailing {
        // The meaningful bits fit the previous window: reuse it. Control bits `10` and
        // the bits in one write when they fit a word.
        let sig = u32::from(64 - *leading - *trailing);
        let bits = x >> *trailing;
        if sig <= 62 {
            w.write_bits((0b10 << sig) | bits, sig + 2);
        } else {
            w.write_bits(0b10, 2);
            w.write_bits(bits, sig);
        }
        return;
    }
    *leading = lz;
    *trailing = tz;
    let sig = 64 - lz - tz; // 1..=64
                            // Control bits `11`, 5 bits of leading zeros, 6 of meaningful bits (64 written as 0).
    let head = (0b11 << 11) | (u64::from(lz) << 6) | u64::from(sig & 63);
    let sig = u32::from(sig);
    if sig <= 51 {
        w.write_bits((head << sig) | (x >> tz), 13 + sig);
    } else {
        w.write_bits(head, 13);
        w.write_bits(x >> tz, sig);
    }
}

fn write_varint_signed(w: &mut BitWriter<'_>, x: i64) {
    let mut u = ((x << 1) ^ (x >> 63)) as u64; // zigzag
    while u >= 0x80 {
        w.write_byte((u as u8) | 0x80);
        u >>= 7;
    }
    w.write_byte(u as u8);
}

/// Iterates the samples of a [`XorChunk`]; see [`XorChunk::iter`].
#[derive(Debug, Clone)]
pub struct XorIterator<'a> {
    reader: BitReader<'a>,
    total: usize,
    read: usize,
    t: i64,
    delta: i64,
    v: u64,
    leading: u8,
    trailing: u8,
    done: bool,
}

impl XorIterator<'_> {
    fn corrupt(&self, reason: impl Into<String>) -> ChunkError {
        ChunkError::corrupt(HEADER_SIZE + self.reader.bit_position() / 8, reason)
    }

    fn bits(&mut self, nbits: u32, what: &str) -> Result<u64> {
        match self.reader.read_bits(nbits) {
            Some(b) => Ok(b),
            None => Err(self.corrupt(format!(
                "truncated {what} of sample {} of {}",
                self.read, self.total
            ))),
        }
    }

    fn varint_signed(&mut self, what: &str) -> Result<i64> {
        let mut u: u64 = 0;
        for i in 0..10 {
            let b = self.bits(8, what)?;
            if i == 9 && b > 1 {
                return Err(self.corrupt(format!("{what} varint overflows 64 bits")));
            }
            u |= (b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(((u >> 1) as i64) ^ -((u & 1) as i64));
            }
        }
        Err(self.corrupt(format!("{what} varint longer than 10 bytes")))
    }

    fn dod(&mut self) -> Result<i64> {
        // Up to four control bits: the number of leading ones picks the bucket.
        let mut ones = 0;
        while ones < 4 && self.bits(1, "timestamp control bits")? == 1 {
            ones += 1;
        }
        let nbits = match ones {
            0 => return Ok(0),
            4 => return Ok(self.bits(64, "timestamp delta-of-delta")? as i64),
            k => DOD_BUCKETS[k - 1].2,
        };
        let bits = self.bits(nbits, "timestamp delta-of-delta")?;
        // Undo the bucket's two's complement (see `fits_bucket` for the range).
        let x = bits as i64;
        Ok(if x > 1i64 << (nbits - 1) {
            x - (1i64 << nbits)
        } else {
            x
        })
    }

    fn xor(&mut self) -> Result<()> {
        if self.bits(1, "value control bit")? == 0 {
            return Ok(()); // same value
        }
        if self.bits(1, "value control bit")? == 1 {
            let leading = self.bits(5, "leading-zero count")? as u8;
            let sig = match self.bits(6, "meaningful-bit count")? as u8 {
                0 => 64,
                n => n,
            };
            if u32::from(leading) + u32::from(sig) > 64 {
                return Err(self.corrupt(format!(
                    "{leading} leading zeros and {sig} meaningful bits exceed 64"
                )));
            }
            self.leading = leading;
            self.trailing = 64 - leading - sig;
        } else if self.leading == NO_WINDOW {
            return Err(self.corrupt("value reuses an XOR window before one was set"));
        }
        let sig = 64 - u32::from(self.leading) - u32::from(self.trailing);
        let bits = self.bits(sig, "value XOR")?;
        // sig >= 1, so trailing <= 63 and the shift is in range.
        self.v ^= bits << self.trailing;
        Ok(())
    }

    fn next_sample(&mut self) -> Result<(i64, f64)> {
        match self.read {
            0 => {
                self.t = self.varint_signed("first timestamp")?;
                self.v = self.bits(64, "first value")?;
            }
            1 => {
                self.delta = self.varint_signed("timestamp delta")?;
                self.t = self.t.wrapping_add(self.delta);
                self.xor()?;
            }
            _ => {
                let dod = self.dod()?;
                self.delta = self.delta.wrapping_add(dod);
                self.t = self.t.wrapping_add(self.delta);
                self.xor()?;
            }
        }
        self.read += 1;
        Ok((self.t, f64::from_bits(self.v)))
    }

    /// After the last sample only the zero padding of the last byte may remain.
    fn check_end(&mut self) -> Result<()> {
        let left = self.reader.remaining_bits();
        if left >= 8 {
            return Err(self.corrupt(format!(
                "{} bytes after the last of {} samples",
                left / 8,
                self.total
            )));
        }
        if self.reader.clone().read_bits(left as u32) != Some(0) {
            return Err(self.corrupt("non-zero padding after the last sample"));
        }
        Ok(())
    }
}

impl Iterator for XorIterator<'_> {
    type Item = Result<(i64, f64)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.read == self.total {
            self.done = true;
            return self.check_end().err().map(Err);
        }
        let r = self.next_sample();
        if r.is_err() {
            self.done = true;
        }
        Some(r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            (0, Some(0))
        } else {
            (0, Some(self.total - self.read + 1))
        }
    }
}

impl std::iter::FusedIterator for XorIterator<'_> {}

#[cfg(test)]
mod tests;
