//! A bloom filter over the user keys of a whole table ("full filter").
//!
//! Two layouts; the reader tells them apart by the block's last byte:
//!
//! ```text
//! blocked (written since table format 2): lines (64 * L bytes) | k (1 byte) | 0x80
//! legacy  (table format 1):               bit array (m bytes)  | k (1 byte), k in 1..=30
//! ```
//!
//! Each key is hashed once with XXH3-64. Blocked: all `k` probes of a key fall in one
//! 64-byte line (`line = (low32 * L) >> 32`), so a probe costs one cache miss instead of
//! `k` (the filter of a large table is megabytes, far outside the CPU caches: the legacy
//! probes were ~10% of a point read). Bit `j` of the line is the top 9 bits of
//! `h2 * 0x9E3779B9^j` (`h2` = high 32 bits, wrapping), bit `b` being byte `b / 8`, mask
//! `1 << (b % 8)`, as RocksDB's cache-local bloom. Legacy: double hashing
//! (Kirsch-Mitzenmacher) over the whole array: `h1 = low 32 bits`, `h2 = high 32 bits`,
//! `bit_i = (h1 + i * h2) mod (8 * m)` for `i` in `0..k`.

use xxhash_rust::xxh3::xxh3_64;

/// Largest number of probes a filter may use.
pub const MAX_PROBES: u32 = 30;

/// Last byte of a blocked filter block (a legacy block ends with `k <= 30`).
const BLOCKED_TAG: u8 = 0x80;

/// Bytes (and cache line) of one line of a blocked filter.
const LINE_BYTES: usize = 64;

/// Multiplier deriving each next probe's bits in a line (golden ratio, 32-bit).
const LINE_PROBE_MUL: u32 = 0x9E37_79B9;

fn probes_for(bits_per_key: u32) -> u32 {
    // k = round(bits_per_key * ln 2), clamped.
    ((bits_per_key as f64 * std::f64::consts::LN_2).round() as u32).clamp(1, MAX_PROBES)
}

fn probe_positions(hash: u64, k: u32, num_bits: u64) -> impl Iterator<Item = u64> {
    // (h1 + i * h2) mod n, stepped as ((h1 mod n) + i * (h2 mod n)) mod n: one addition
    // and a conditional subtraction per probe instead of a 64-bit division.
    let n = num_bits.max(1);
    let step = (hash >> 32) % n;
    let mut pos = (hash & 0xffff_ffff) % n;
    (0..k).map(move |_| {
        let p = pos;
        pos += step;
        if pos >= n {
            pos -= n;
        }
        p
    })
}

/// The line of a blocked filter of `num_lines` lines that holds `hash`'s bits.
#[inline]
fn line_of(hash: u64, num_lines: usize) -> usize {
    (((hash & 0xffff_ffff) * num_lines as u64) >> 32) as usize
}

/// The `k` bit positions (0..512) of `hash` inside its line.
#[inline]
fn line_bits(hash: u64, k: u32) -> impl Iterator<Item = usize> {
    let mut h = (hash >> 32) as u32;
    (0..k).map(move |_| {
        let b = (h >> 23) as usize;
        h = h.wrapping_mul(LINE_PROBE_MUL);
        b
    })
}

/// Collects key hashes and produces the filter block.
#[derive(Debug)]
pub struct BloomFilterBuilder {
    bits_per_key: u32,
    hashes: Vec<u64>,
}

impl BloomFilterBuilder {
    /// A builder spending `bits_per_key` bits per key (at least 1).
    pub fn new(bits_per_key: u32) -> Self {
        BloomFilterBuilder {
            bits_per_key: bits_per_key.max(1),
            hashes: Vec::new(),
        }
    }

    /// Adds a user key. Adding the same key twice in a row stores it once.
    pub fn add(&mut self, user_key: &[u8]) {
        let h = xxh3_64(user_key);
        if self.hashes.last() != Some(&h) {
            self.hashes.push(h);
        }
    }

    /// Number of hashes stored.
    pub fn num_keys(&self) -> usize {
        self.hashes.len()
    }

    fn num_lines(&self) -> usize {
        (self.hashes.len() * self.bits_per_key as usize)
            .div_ceil(LINE_BYTES * 8)
            .max(1)
    }

    /// Approximate size of the finished filter in bytes.
    pub fn estimated_size(&self) -> usize {
        self.num_lines() * LINE_BYTES + 2
    }

    /// The filter block contents, in the blocked layout.
    pub fn finish(&mut self) -> Vec<u8> {
        let k = probes_for(self.bits_per_key);
        let num_lines = self.num_lines();
        let mut out = vec![0u8; num_lines * LINE_BYTES + 2];
        for &h in &self.hashes {
            let line = line_of(h, num_lines) * LINE_BYTES;
            for b in line_bits(h, k) {
                if let Some(byte) = out.get_mut(line + b / 8) {
                    *byte |= 1 << (b % 8);
                }
            }
        }
        let n = out.len();
        out[n - 2] = k as u8;
        out[n - 1] = BLOCKED_TAG;
        self.hashes.clear();
        out
    }

    /// The filter block contents in the legacy layout (table format 1; written only by
    /// tests that check old tables still read).
    pub fn finish_legacy(&mut self) -> Vec<u8> {
        let k = probes_for(self.bits_per_key);
        let bits = (self.hashes.len() as u64 * self.bits_per_key as u64).max(64);
        let bytes = bits.div_ceil(8) as usize;
        let num_bits = bytes as u64 * 8;
        let mut out = vec![0u8; bytes + 1];
        for &h in &self.hashes {
            for pos in probe_positions(h, k, num_bits) {
                if let Some(b) = out.get_mut((pos / 8) as usize) {
                    *b |= 1 << (pos % 8);
                }
            }
        }
        if let Some(last) = out.last_mut() {
            *last = k as u8;
        }
        self.hashes.clear();
        out
    }
}

/// A decoded filter block.
#[derive(Debug, Clone)]
pub struct BloomFilter {
    /// The bit array; for a blocked filter, lines start at `start` (64-byte aligned in
    /// memory, so that a probe touches one cache line).
    bits: Vec<u8>,
    start: usize,
    /// Lines of a blocked filter; 0 for a legacy one.
    num_lines: usize,
    k: u32,
}

impl BloomFilter {
    /// Parses a filter block; `None` if it is malformed (no bit array, `k` outside
    /// `1..=30`, or a blocked filter that is not whole lines).
    pub fn new(mut data: Vec<u8>) -> Option<BloomFilter> {
        if data.last() == Some(&BLOCKED_TAG) {
            data.pop();
            let k = data.pop()? as u32;
            if data.is_empty()
                || !data.len().is_multiple_of(LINE_BYTES)
                || !(1..=MAX_PROBES).contains(&k)
            {
                return None;
            }
            let num_lines = data.len() / LINE_BYTES;
            // Copied to a 64-byte boundary: one line, one cache line.
            let mut bits = vec![0u8; data.len() + LINE_BYTES - 1];
            let start = bits.as_ptr().align_offset(LINE_BYTES).min(LINE_BYTES - 1);
            bits[start..start + data.len()].copy_from_slice(&data);
            return Some(BloomFilter {
                bits,
                start,
                num_lines,
                k,
            });
        }
        let k = data.pop()? as u32;
        if data.is_empty() || !(1..=MAX_PROBES).contains(&k) {
            return None;
        }
        Some(BloomFilter {
            bits: data,
            start: 0,
            num_lines: 0,
            k,
        })
    }

    /// False if `user_key` is certainly not in the table.
    #[inline]
    pub fn may_contain(&self, user_key: &[u8]) -> bool {
        let h = xxh3_64(user_key);
        if self.num_lines > 0 {
            let at = self.start + line_of(h, self.num_lines) * LINE_BYTES;
            let line: Option<&[u8; LINE_BYTES]> = self
                .bits
                .get(at..at + LINE_BYTES)
                .and_then(|l| l.try_into().ok());
            let Some(line) = line else {
                return true;
            };
            return line_bits(h, self.k).all(|b| line[b / 8] & (1 << (b % 8)) != 0);
        }
        let num_bits = self.bits.len() as u64 * 8;
        probe_positions(h, self.k, num_bits).all(|pos| {
            self.bits
                .get((pos / 8) as usize)
                .is_some_and(|b| b & (1 << (pos % 8)) != 0)
        })
    }

    /// Size of the filter in memory, in bytes.
    pub fn size(&self) -> usize {
        self.bits.len() + 1
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn probes() {
        assert_eq!(probes_for(10), 7);
        assert_eq!(probes_for(1), 1);
        assert_eq!(probes_for(100), 30);
    }

    #[test]
    fn probe_positions_keep_the_double_hashing_formula() {
        // The on-disk filter is defined by (h1 + i * h2) mod n; the stepped form must
        // give the very same bits, or existing tables would read as missing keys.
        let mut h = 0x9E37_79B9_7F4A_7C15u64;
        for n in [64u64, 72, 1000, 8 * 1_250_001, (1 << 33) + 8] {
            for _ in 0..200 {
                h = h
                    .wrapping_mul(0x5851_F42D_4C95_7F2D)
                    .wrapping_add(1442695040888963407);
                let (h1, h2) = (h & 0xffff_ffff, h >> 32);
                let want: Vec<u64> = (0..MAX_PROBES as u64).map(|i| (h1 + i * h2) % n).collect();
                let got: Vec<u64> = probe_positions(h, MAX_PROBES, n).collect();
                assert_eq!(got, want, "hash {h:#x}, {n} bits");
            }
        }
    }

    #[test]
    fn bloom_false_positive_rate() {
        for (n, legacy) in [1usize, 10, 1000, 10_000, 100_000]
            .into_iter()
            .flat_map(|n| [(n, false), (n, true)])
        {
            let mut b = BloomFilterBuilder::new(10);
            for i in 0..n {
                b.add(format!("key-{i}").as_bytes());
            }
            let block = if legacy {
                b.finish_legacy()
            } else {
                b.finish()
            };
            assert_eq!(block.last() == Some(&BLOCKED_TAG), !legacy);
            let f = BloomFilter::new(block).unwrap();
            assert_eq!(f.num_lines == 0, legacy);
            for i in 0..n {
                assert!(
                    f.may_contain(format!("key-{i}").as_bytes()),
                    "false negative"
                );
            }
            let probes = 10_000;
            let fp = (0..probes)
                .filter(|i| f.may_contain(format!("other-{i}").as_bytes()))
                .count();
            let rate = fp as f64 / probes as f64;
            assert!(rate < 0.02, "n={n}: false positive rate {rate}");
        }
    }

    #[test]
    fn malformed_filters() {
        assert!(BloomFilter::new(vec![]).is_none());
        assert!(BloomFilter::new(vec![7]).is_none());
        assert!(BloomFilter::new(vec![0, 0]).is_none());
        assert!(BloomFilter::new(vec![0, 31]).is_none());
        let f = BloomFilter::new(vec![0xff, 3]).unwrap();
        assert!(f.may_contain(b"x"));
        // Blocked: whole 64-byte lines and a valid k before the tag.
        assert!(BloomFilter::new(vec![BLOCKED_TAG]).is_none());
        assert!(BloomFilter::new(vec![7, BLOCKED_TAG]).is_none());
        assert!(
            BloomFilter::new(vec![0; 63].into_iter().chain([7, BLOCKED_TAG]).collect()).is_none()
        );
        assert!(
            BloomFilter::new(vec![0; 64].into_iter().chain([0, BLOCKED_TAG]).collect()).is_none()
        );
        assert!(
            BloomFilter::new(vec![0; 64].into_iter().chain([31, BLOCKED_TAG]).collect()).is_none()
        );
        let f = BloomFilter::new(
            vec![0xff; 128]
                .into_iter()
                .chain([7, BLOCKED_TAG])
                .collect(),
        )
        .unwrap();
        assert!(f.may_contain(b"x"));
        let f =
            BloomFilter::new(vec![0; 128].into_iter().chain([7, BLOCKED_TAG]).collect()).unwrap();
        assert!(!f.may_contain(b"x"));
    }

    #[test]
    fn blocked_probes_stay_in_one_aligned_line() {
        // The in-memory copy starts on a 64-byte boundary whatever the allocation.
        let mut b = BloomFilterBuilder::new(10);
        for i in 0..5000 {
            b.add(format!("k{i}").as_bytes());
        }
        let block = b.finish();
        assert_eq!((block.len() - 2) % LINE_BYTES, 0);
        let f = BloomFilter::new(block.clone()).unwrap();
        assert_eq!(f.bits[f.start..].as_ptr() as usize % LINE_BYTES, 0);
        assert_eq!(
            &f.bits[f.start..f.start + block.len() - 2],
            &block[..block.len() - 2]
        );
        // Each key sets exactly its bits in its own line and nowhere else.
        let h = xxh3_64(b"lonely");
        let mut one = BloomFilterBuilder::new(10);
        for _ in 0..50 {
            one.add(b"lonely");
        }
        let block = one.finish();
        let line = line_of(h, 1);
        assert_eq!(line, 0);
        let set: usize = block[..64].iter().map(|b| b.count_ones() as usize).sum();
        let want: std::collections::BTreeSet<usize> = line_bits(h, 7).collect();
        assert_eq!(set, want.len());
    }
}
