//! Finding a table's index entry without walking the index block.
//!
//! A seek or point read must find the first index entry `>= target`. A binary search over
//! the index block's restart points touches a different cache line (restart offset, then
//! entry) at each step; for a large table (16 Ki blocks of 4 KiB, an index block of
//! hundreds of KiB that the CPU caches do not hold between reads) that was ~20% of a
//! point read. [`IndexKeys`] keeps, per index entry, 8 bytes of its user key in one
//! contiguous array of `u64`s: the bytes after the prefix that all the table's user keys
//! share, big-endian, zero-padded. The search is then a binary search over integers, and
//! the block search is left with the entries whose 8 bytes equal the target's: almost
//! always one entry, compared once.
//!
//! The numbers order like the keys: for user keys `a <= b` (bytes), `num(a) <= num(b)`,
//! so entries whose number is below the target's sort before it, and those above after
//! it. That holds only if the index keys are sorted, which [`IndexKeys::new`] checks
//! rather than trusts; a table whose index is not (corruption the block checksum missed)
//! gets none, and its seeks search the block as before.

use super::block::{Block, BlockIter};
use crate::error::Result;
use crate::iterator::InternalIterator;
use crate::key::user_key;

/// Per-entry search keys of one index block (see the module documentation).
#[derive(Debug)]
pub struct IndexKeys {
    /// The prefix all the index entries' user keys share.
    common: Box<[u8]>,
    /// Entry `i`'s number (the 8 bytes after `common`); non-decreasing.
    nums: Box<[u64]>,
    /// Coarser copies of `nums`: `upper[0][j] = nums[GROUP * j]`, `upper[k + 1][j] =
    /// upper[k][GROUP * j]`, down to at most `GROUP` numbers in the last. A search counts
    /// within one group of `GROUP` numbers per level, from the top (see
    /// [`IndexKeys::first_not_below`]).
    upper: Vec<Box<[u64]>>,
}

/// Numbers per group. A binary search over `nums` (tens of KiB per table, ~1 MiB over a
/// 5M-key store) waits for a cache miss at each of its last steps, one after the other:
/// ~14% of a `seekrandom` that misses the block cache. Here the top levels stay in the CPU
/// caches across seeks, and a group is 128 bytes (two cache lines, loaded together: the
/// count reads all of them without branching on any).
const GROUP: usize = 16;

/// The 8 bytes of `uk` after its first `skip` bytes, big-endian, zero-padded.
#[inline]
fn num_after(uk: &[u8], skip: usize) -> u64 {
    let rest = uk.get(skip..).unwrap_or_default();
    let mut b = [0u8; 8];
    let n = rest.len().min(8);
    b[..n].copy_from_slice(&rest[..n]);
    u64::from_be_bytes(b)
}

impl IndexKeys {
    /// The search keys of `index` (a block written with restart interval 1), or `None`
    /// if its entries are not one per restart point in non-decreasing user-key order.
    pub fn new(index: &std::sync::Arc<Block>) -> Result<Option<IndexKeys>> {
        let mut it = BlockIter::new(index.clone());
        it.seek_to_last()?;
        let last = user_key(it.key()).to_vec();
        it.seek_to_first()?;
        if !it.valid() {
            return Ok(None);
        }
        // If sorted (checked below), the prefix of the first and the last is everyone's.
        let first = user_key(it.key()).to_vec();
        let common_len = first.iter().zip(&last).take_while(|(a, b)| a == b).count();
        let mut nums = Vec::with_capacity(index.num_restarts());
        let mut prev: Vec<u8> = Vec::new();
        while it.valid() {
            let uk = user_key(it.key());
            if uk < &prev[..] || uk.get(..common_len) != Some(&first[..common_len]) {
                return Ok(None);
            }
            nums.push(num_after(uk, common_len));
            prev.clear();
            prev.extend_from_slice(uk);
            it.next()?;
        }
        if nums.len() != index.num_restarts() {
            return Ok(None);
        }
        Ok(Some(IndexKeys::from_nums(
            first[..common_len].into(),
            nums.into_boxed_slice(),
        )))
    }

    fn from_nums(common: Box<[u8]>, nums: Box<[u64]>) -> IndexKeys {
        let mut upper: Vec<Box<[u64]>> = Vec::new();
        let mut below: &[u64] = &nums;
        while below.len() > GROUP {
            upper.push(below.iter().step_by(GROUP).copied().collect());
            below = upper.last().map_or(&[], |u| u);
        }
        IndexKeys {
            common,
            nums,
            upper,
        }
    }

    /// The range of entries `[lo, hi]` that holds the first entry `>= target` (an
    /// internal key): every entry before `lo` is below `target`, every entry after `hi`
    /// above it. `lo == hi` but for entries sharing the target's 8 bytes; both may be
    /// the number of entries (every entry is below `target`).
    #[inline]
    pub fn narrow(&self, target: &[u8]) -> (usize, usize) {
        let uk = user_key(target);
        let n = self.nums.len();
        let c = self.common.len();
        match uk.get(..c) {
            Some(p) if *p == *self.common => {}
            // Not under the common prefix: before or after all of the entries.
            _ => {
                return if uk < &self.common[..] {
                    (0, 0)
                } else {
                    (n, n)
                }
            }
        }
        let t = num_after(uk, c);
        let lo = self.first_not_below(t);
        let mut hi = lo;
        while hi < n && self.nums[hi] == t {
            hi += 1;
            if hi - lo == 8 {
                hi = lo + self.nums[lo..].partition_point(|&x| x <= t);
                break;
            }
        }
        (lo, hi)
    }

    /// The first `i` with `nums[i] >= t` (`nums.len()` if none), as
    /// `nums.partition_point(|&x| x < t)`.
    #[inline]
    fn first_not_below(&self, t: u64) -> usize {
        // At the top level (at most GROUP numbers) the answer is a count. Given the answer
        // `g` one level up, where x[GROUP * j] is up[j]: x[GROUP * (g - 1)] < t <=
        // x[GROUP * g], so the answer is in (GROUP * (g - 1), GROUP * g], and, the numbers
        // being sorted, it is the start of that range plus the count below t in it.
        let count = |x: &[u64]| x.iter().map(|&v| usize::from(v < t)).sum::<usize>();
        let mut g = self.upper.last().map_or(0, |top| count(top));
        let levels = self.upper.iter().rev().skip(1).map(|u| &u[..]);
        for x in levels.chain(std::iter::once(&self.nums[..])) {
            if self.upper.is_empty() {
                return count(x);
            }
            let start = (GROUP * g).saturating_sub(GROUP - 1);
            let end = (GROUP * g).min(x.len());
            g = start + count(x.get(start..end).unwrap_or_default());
        }
        g
    }

    /// Bytes held.
    pub fn size(&self) -> usize {
        self.common.len()
            + 8 * (self.nums.len() + self.upper.iter().map(|u| u.len()).sum::<usize>())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::key::{compare_internal, internal_key, seek_key, ValueKind};
    use crate::sstable::block::BlockBuilder;
    use std::cmp::Ordering;
    use std::sync::Arc;

    fn index_of(user_keys: &[&[u8]]) -> Arc<Block> {
        let mut b = BlockBuilder::new(1);
        for (i, uk) in user_keys.iter().enumerate() {
            b.add(&internal_key(uk, 100 - i as u64, ValueKind::Value), b"h");
        }
        Arc::new(Block::new(b.finish(), "t", 0).unwrap())
    }

    /// The first entry `>= target`, by brute force.
    fn first_at_or_after(block: &Arc<Block>, target: &[u8]) -> usize {
        let mut it = BlockIter::new(block.clone());
        it.seek_to_first().unwrap();
        let mut i = 0;
        while it.valid() && compare_internal(it.key(), target) == Ordering::Less {
            i += 1;
            it.next().unwrap();
        }
        i
    }

    #[test]
    fn narrow_brackets_the_first_entry_at_or_after_the_target() {
        let owned: Vec<Vec<u8>> = [
            &b"0000000000001000"[..],
            b"0000000000001000", // the same user key, an older version: a tie
            b"0000000000002000",
            b"00000000000020001",
            b"0000000000002001",
            b"00000000000030",
            b"0000000000003000",
            b"0000000099999999",
        ]
        .iter()
        .map(|k| k.to_vec())
        .collect();
        let keys: Vec<&[u8]> = owned.iter().map(|k| &k[..]).collect();
        let block = index_of(&keys);
        let ik = IndexKeys::new(&block).unwrap().unwrap();
        assert_eq!(&*ik.common, b"00000000");
        let mut targets: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"0".to_vec(),
            b"00000".to_vec(),
            b"000001".to_vec(),
            b"1".to_vec(),
            b"0000000000000999".to_vec(),
            b"0000000000002000\0".to_vec(),
            b"00000000000020000".to_vec(),
            b"0000000000003".to_vec(),
            b"0000000100000000".to_vec(),
        ];
        targets.extend(owned.iter().cloned());
        for uk in &targets {
            for seq in [0, 50, 97, 98, 99, 100, 200] {
                let t = seek_key(uk, seq);
                let want = first_at_or_after(&block, &t);
                let (lo, hi) = ik.narrow(&t);
                assert!(
                    lo <= want && want <= hi,
                    "{uk:?}@{seq}: {want} not in [{lo}, {hi}]"
                );
                // A seek given the range lands on the brute-force answer.
                let mut it = BlockIter::new(block.clone());
                it.seek_between(&t, lo, hi).unwrap();
                assert_eq!(it.valid(), want < keys.len());
                if it.valid() {
                    let mut brute = BlockIter::new(block.clone());
                    brute.seek_to_first().unwrap();
                    for _ in 0..want {
                        brute.next().unwrap();
                    }
                    assert_eq!(it.key(), brute.key(), "{uk:?}@{seq}");
                }
            }
        }
    }

    #[test]
    fn unsorted_or_empty_indexes_get_no_keys() {
        let block = index_of(&[b"b", b"a"]);
        assert!(IndexKeys::new(&block).unwrap().is_none());
        let block = Arc::new(Block::new(BlockBuilder::new(1).finish(), "t", 0).unwrap());
        assert!(IndexKeys::new(&block).unwrap().is_none());
        // Several entries per restart point: entry i is not restart i.
        let mut b = BlockBuilder::new(4);
        for k in [&b"a"[..], b"b", b"c"] {
            b.add(&internal_key(k, 1, ValueKind::Value), b"h");
        }
        let block = Arc::new(Block::new(b.finish(), "t", 0).unwrap());
        assert!(IndexKeys::new(&block).unwrap().is_none());
    }

    #[test]
    fn the_grouped_search_matches_a_plain_binary_search() {
        // Lengths around multiples of GROUP, runs of equal numbers, targets between,
        // on and beyond them.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for n in (0..4 * GROUP + 3).chain([GROUP * GROUP, GROUP * GROUP + 1, 5000]) {
            let mut nums: Vec<u64> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x % 40
                })
                .collect();
            nums.sort_unstable();
            let ik = IndexKeys::from_nums(Box::default(), nums.clone().into_boxed_slice());
            for t in 0..42 {
                let want = nums.partition_point(|&v| v < t);
                assert_eq!(ik.first_not_below(t), want, "n {n} t {t}");
            }
        }
    }

    #[test]
    fn long_ties_are_bracketed_by_binary_search() {
        let owned: Vec<Vec<u8>> = (0..40u32)
            .map(|i| format!("p{:02}", i / 20).into_bytes())
            .collect();
        // Sorted internal keys: same user key, decreasing seq (index_of gives that).
        let keys: Vec<&[u8]> = owned.iter().map(|k| &k[..]).collect();
        let block = index_of(&keys);
        let ik = IndexKeys::new(&block).unwrap().unwrap();
        let t = seek_key(b"p00", 0);
        let (lo, hi) = ik.narrow(&t);
        assert_eq!((lo, hi), (0, 20));
        let want = first_at_or_after(&block, &t);
        assert!(lo <= want && want <= hi);
    }
}
