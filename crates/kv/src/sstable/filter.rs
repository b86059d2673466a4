//! A bloom filter over the user keys of a whole table ("full filter").
//!
//! ```text
//! filter block: bit array (m bytes, bit i is byte i/8, mask 1 << (i%8)) | k (1 byte)
//! ```
//!
//! Each key is hashed once with XXH3-64; the `k` probe positions are derived by double
//! hashing (Kirsch-Mitzenmacher): `h1 = low 32 bits`, `h2 = high 32 bits`,
//! `bit_i = (h1 + i * h2) mod (8 * m)` for `i` in `0..k`.

use xxhash_rust::xxh3::xxh3_64;

/// Largest number of probes a filter may use.
pub const MAX_PROBES: u32 = 30;

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

    /// Approximate size of the finished filter in bytes.
    pub fn estimated_size(&self) -> usize {
        (self.hashes.len() * self.bits_per_key as usize).max(64) / 8 + 1
    }

    /// The filter block contents.
    pub fn finish(&mut self) -> Vec<u8> {
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
    bits: Vec<u8>,
    k: u32,
}

impl BloomFilter {
    /// Parses a filter block; `None` if it is malformed (no bit array, or `k` outside
    /// `1..=30`).
    pub fn new(mut data: Vec<u8>) -> Option<BloomFilter> {
        let k = data.pop()? as u32;
        if data.is_empty() || !(1..=MAX_PROBES).contains(&k) {
            return None;
        }
        Some(BloomFilter { bits: data, k })
    }

    /// False if `user_key` is certainly not in the table.
    pub fn may_contain(&self, user_key: &[u8]) -> bool {
        let num_bits = self.bits.len() as u64 * 8;
        probe_positions(xxh3_64(user_key), self.k, num_bits).all(|pos| {
            self.bits
                .get((pos / 8) as usize)
                .is_some_and(|b| b & (1 << (pos % 8)) != 0)
        })
    }

    /// Size of the bit array in bytes.
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
        for n in [1usize, 10, 1000, 10_000] {
            let mut b = BloomFilterBuilder::new(10);
            for i in 0..n {
                b.add(format!("key-{i}").as_bytes());
            }
            let f = BloomFilter::new(b.finish()).unwrap();
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
    }
}
