//! The block cache: parsed data blocks shared by all open tables, bounded in bytes.
//!
//! Blocks are cached *after* their checksum was verified and they were decompressed and
//! parsed, so a hit costs a hash lookup and an `Arc` clone: no I/O, no CRC, no
//! decompression. A block that fails any check is never inserted.
//!
//! Entries are keyed by `(table id, block offset)`. The table id is not the table's file
//! number but a fresh number handed out by [`BlockCache::next_table_id`] each time a table
//! is opened, so a table file that is reopened (or deleted and recreated with the same
//! name) can never be served blocks cached for another incarnation of it. Blocks of a table
//! that is no longer open are never looked up again and age out of the cache.
//!
//! The cache is a [`quick_cache::sync::Cache`]: sharded, lock-light, with a CLOCK-Pro–like
//! policy (new blocks enter a "cold" queue and are promoted when hit again). Blocks a
//! scan reads from its readahead windows are only admitted on their second read (see
//! [`BlockCache::admit_scanned`]), so a one-off scan leaves the cache as it was. Each shard holds `capacity / shards` bytes; a block
//! larger than its shard's share is not cached (the shard count is chosen so that a shard
//! holds a few dozen blocks of the expected size, so this only affects absurdly small
//! caches).

use crate::sstable::block::Block;
use quick_cache::sync::Cache;
use quick_cache::Weighter;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes charged per cached block on top of its contents: the key, the `Block` struct
/// with its restart array header and file name pointer, the `Arc` counts and the cache's
/// own entry bookkeeping (approximate).
pub const BLOCK_OVERHEAD: usize = 128;

/// Block size assumed when estimating how many blocks the cache will hold (it only steers
/// the number of shards).
const EXPECTED_BLOCK_SIZE: usize = 4096;

/// Weighs a cached block by its size in bytes plus [`BLOCK_OVERHEAD`].
#[derive(Debug, Clone, Copy, Default)]
struct BlockWeighter;

impl Weighter<(u64, u64), Arc<Block>> for BlockWeighter {
    fn weight(&self, _key: &(u64, u64), block: &Arc<Block>) -> u64 {
        (block.charge() + BLOCK_OVERHEAD) as u64
    }
}

/// One bit per hashed `(table id, offset)`, cleared when an eighth of the bits are set:
/// a block counts as seen again for roughly the last `bits / 8` distinct scanned blocks
/// (at least one cache capacity's worth), and a block never read before passes for seen
/// (a false positive, a one-off scan's block cached) with a chance under 1/8. Cleared at
/// half full instead, a long one-off scan would have a quarter of its blocks admitted.
struct Doorkeeper {
    words: Box<[AtomicU64]>,
    /// The number of bits (`words.len() * 64`) is `1 << log2_bits`.
    log2_bits: u32,
    set: AtomicU64,
}

impl Doorkeeper {
    fn new(capacity_bytes: usize) -> Self {
        // Eight bits per block the cache can hold, at least 2^20 (128 KiB): a scan of
        // more blocks than that just sees a few false "seen" answers.
        let bits = (capacity_bytes / EXPECTED_BLOCK_SIZE * 8)
            .max(1 << 20)
            .next_power_of_two();
        Doorkeeper {
            words: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            log2_bits: bits.trailing_zeros(),
            set: AtomicU64::new(0),
        }
    }

    /// Marks the block as seen; whether it already was.
    fn seen_before(&self, table_id: u64, offset: u64) -> bool {
        // Multiply-shift hashing (the top bits of an odd multiple): called for every
        // block a scan reads, it must cost less than a general-purpose hash.
        let h = (table_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ offset)
            .wrapping_mul(0xD6E8_FEB8_6659_FD93);
        let bit = (h >> (64 - self.log2_bits)) as usize;
        let mask = 1u64 << (bit % 64);
        let word = &self.words[bit / 64];
        if word.load(Ordering::Relaxed) & mask != 0 {
            return true;
        }
        if word.fetch_or(mask, Ordering::Relaxed) & mask == 0
            && self.set.fetch_add(1, Ordering::Relaxed) + 1 >= self.words.len() as u64 * 8
        {
            self.set.store(0, Ordering::Relaxed);
            for w in self.words.iter() {
                w.store(0, Ordering::Relaxed);
            }
        }
        false
    }
}

/// Counters of a [`BlockCache`], as returned by [`BlockCache::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockCacheStats {
    /// Lookups that found the block.
    pub hits: u64,
    /// Lookups that did not (with capacity 0, every lookup).
    pub misses: u64,
    /// Blocks handed to [`BlockCache::insert`] while caching is enabled (a block larger
    /// than a shard's share of the capacity is counted but dropped by the cache).
    pub inserts: u64,
    /// Cached blocks replaced by a copy of their own on a hit because they pinned a
    /// mostly unused readahead window ([`Block::pins_sparse_window`]).
    pub detached: u64,
    /// Bytes currently charged to cached blocks (contents plus overhead).
    pub usage_bytes: u64,
    /// The configured capacity in bytes.
    pub capacity_bytes: u64,
}

/// A cache of parsed data blocks keyed by `(table id, block offset)`, bounded in bytes.
/// Shared between tables as `Arc<BlockCache>`.
pub struct BlockCache {
    /// `None` when the capacity is 0: caching disabled.
    cache: Option<Cache<(u64, u64), Arc<Block>, BlockWeighter>>,
    capacity: usize,
    next_id: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    detached: AtomicU64,
    /// Bytes of the readahead windows alive whose blocks may be cached here.
    window_total: Arc<std::sync::atomic::AtomicUsize>,
    /// Scanned blocks seen once and not cached: see [`BlockCache::admit_scanned`].
    doorkeeper: Doorkeeper,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl BlockCache {
    /// A cache holding up to `capacity_bytes` bytes of blocks (contents plus
    /// [`BLOCK_OVERHEAD`] each). A capacity of 0 disables caching: every
    /// [`get`](Self::get) misses and [`insert`](Self::insert) does nothing.
    pub fn new(capacity_bytes: usize) -> Self {
        let cache = (capacity_bytes > 0).then(|| {
            let estimated_items = (capacity_bytes / (EXPECTED_BLOCK_SIZE + BLOCK_OVERHEAD)).max(1);
            Cache::with_weighter(estimated_items, capacity_bytes as u64, BlockWeighter)
        });
        BlockCache {
            cache,
            capacity: capacity_bytes,
            // Id 0 is never handed out, so a zeroed id can be told apart in debugging.
            next_id: AtomicU64::new(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
            detached: AtomicU64::new(0),
            window_total: Arc::default(),
            doorkeeper: Doorkeeper::new(capacity_bytes),
        }
    }

    /// Whether a block a scan read from its readahead window should be cached: only on
    /// its second read within a while (a "doorkeeper", as in TinyLFU). A one-off scan of
    /// a large range then neither pays for filling the cache (fresh memory for every
    /// block: a third of a cold scan's time) nor evicts blocks that point reads keep
    /// hot, while a range that is scanned again (the time-series store repeats queries)
    /// is cached from its second scan on. Point reads are always cached.
    pub fn admit_scanned(&self, table_id: u64, offset: u64) -> bool {
        self.cache.is_some() && self.doorkeeper.seen_before(table_id, offset)
    }

    /// The running total that readahead windows whose blocks may be cached here count
    /// themselves in (see [`BlockCache::insert`]).
    pub fn window_total(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.window_total.clone()
    }

    /// A fresh table id, never returned before by this cache. Each opened table takes one.
    pub fn next_table_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The cached block at `offset` of table `table_id`, if any. Counts a hit or a miss.
    ///
    /// A hit on a block that pins a mostly unused readahead window
    /// ([`Block::pins_sparse_window`]) replaces it with a copy of its own: blocks that
    /// stay hot do not keep the rest of their window in memory.
    pub fn get(&self, table_id: u64, offset: u64) -> Option<Arc<Block>> {
        let block = self.get_ahead(table_id, offset);
        if block.is_none() {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        block
    }

    /// As [`BlockCache::get`] for a block a scan will read next, looked up ahead of time:
    /// a hit counts as one (the scan takes the block instead of a second lookup), a miss
    /// counts nothing (the scan's own read of the block will).
    pub fn get_ahead(&self, table_id: u64, offset: u64) -> Option<Arc<Block>> {
        let c = self.cache.as_ref()?;
        let block = c.get(&(table_id, offset))?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        if block.pins_sparse_window() {
            let copy = Arc::new(block.detached());
            c.insert((table_id, offset), copy.clone());
            self.detached.fetch_add(1, Ordering::Relaxed);
            return Some(copy);
        }
        Some(block)
    }

    /// Caches `block` as the block at `offset` of table `table_id`, evicting others as
    /// needed to stay within the capacity. The block must have passed all checks. A no-op
    /// if caching is disabled.
    ///
    /// A block cut from a shared readahead window is charged its own bytes only, yet keeps
    /// the whole window alive; blocks whose window-mates were evicted without a hit would
    /// pin memory nobody is charged for. So while the windows alive that feed this cache
    /// ([`BlockCache::window_total`]) add up to more than its capacity, such a block is
    /// cached as a copy: the memory cached blocks hold stays under twice the capacity.
    pub fn insert(&self, table_id: u64, offset: u64, block: Arc<Block>) {
        if let Some(c) = &self.cache {
            let block = if block.in_shared_window()
                && self.window_total.load(Ordering::Relaxed) > self.capacity
            {
                self.detached.fetch_add(1, Ordering::Relaxed);
                Arc::new(block.detached())
            } else {
                block
            };
            c.insert((table_id, offset), block);
            self.inserts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The capacity in bytes given at creation.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes currently charged to cached blocks.
    pub fn usage_bytes(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.weight() as usize)
    }

    /// Number of blocks currently cached.
    pub fn len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }

    /// True if no block is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BlockCacheStats {
        BlockCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            inserts: self.inserts.load(Ordering::Relaxed),
            detached: self.detached.load(Ordering::Relaxed),
            usage_bytes: self.usage_bytes() as u64,
            capacity_bytes: self.capacity as u64,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::iterator::InternalIterator;
    use crate::sstable::block::{BlockBuilder, SharedWindow};

    fn block(n: usize, value_len: usize) -> Arc<Block> {
        Arc::new(Block::new(contents(n, value_len), "t", 0).unwrap())
    }

    #[test]
    fn get_insert_and_stats() {
        let c = BlockCache::new(1 << 20);
        let id = c.next_table_id();
        assert_ne!(id, c.next_table_id());
        assert!(c.get(id, 0).is_none());
        let b = block(10, 100);
        c.insert(id, 0, b.clone());
        assert!(Arc::ptr_eq(&c.get(id, 0).unwrap(), &b));
        assert!(c.get(id, 1).is_none());
        assert!(c.get(id + 1, 0).is_none());
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.inserts), (1, 3, 1));
        assert_eq!(s.usage_bytes, (b.size() + BLOCK_OVERHEAD) as u64);
        assert_eq!(s.capacity_bytes, 1 << 20);
        assert_eq!(c.len(), 1);
    }

    /// Contents of a block of `n` entries with `value_len`-byte values.
    fn contents(n: usize, value_len: usize) -> Vec<u8> {
        let mut b = BlockBuilder::new(16);
        for i in 0..n {
            let k = crate::key::internal_key(
                format!("k{i:06}").as_bytes(),
                1,
                crate::key::ValueKind::Value,
            );
            b.add(&k, &vec![b'v'; value_len]);
        }
        b.finish()
    }

    /// `n` blocks laid out as in a file (each followed by a 5-byte stand-in trailer) in
    /// one shared window, each cut from it as a slice; and the window's length.
    fn window_blocks(n: usize) -> (Arc<SharedWindow>, Vec<Arc<Block>>, usize) {
        let mut raw = Vec::new();
        let mut spans = Vec::new();
        for i in 0..n {
            let c = contents(10 + i, 60);
            spans.push((raw.len(), c.len()));
            raw.extend_from_slice(&c);
            raw.extend_from_slice(&[0; 5]);
        }
        let len = raw.len();
        let raw = bytes::Bytes::from(raw);
        let window = SharedWindow::new(len);
        let blocks = spans
            .iter()
            .map(|&(at, n)| {
                let b = Block::new(raw.slice(at..at + n), "w.sst", at as u64).unwrap();
                Arc::new(b.in_window(&window, n + 5))
            })
            .collect();
        (window, blocks, len)
    }

    #[test]
    fn window_blocks_are_charged_their_stored_bytes_and_freed_on_eviction() {
        let (window, blocks, len) = window_blocks(6);
        assert_eq!(window.live_bytes(), len);
        let c = BlockCache::new(256 << 10);
        let id = c.next_table_id();
        // A full cache first: while it fills, quick_cache admits blocks to its hot
        // section, where nothing evicts them until hits promote others.
        let other = block(40, 90);
        for i in 0..100u64 {
            c.insert(id + 1, i, other.clone());
        }
        let before = c.usage_bytes();
        for b in &blocks {
            assert!(!b.pins_sparse_window());
            c.insert(id, b.offset(), b.clone());
        }
        let usage = c.stats().usage_bytes as usize;
        assert!(usage <= 256 << 10);
        // Each new block charged its stored bytes plus overhead (some old ones evicted).
        assert!(usage >= before + len + 6 * BLOCK_OVERHEAD - 2 * (other.size() + BLOCK_OVERHEAD));
        // (No hits here: a block hit once would be promoted and outlive the others.)
        drop(blocks);
        assert_eq!(window.live_bytes(), len, "the cache keeps the blocks");
        // Evicting them all (by inserting others) frees the window.
        for i in 100..20_000u64 {
            if window.live_bytes() == 0 {
                break;
            }
            c.insert(id + 1, i, other.clone());
            // Hits on the newcomers let CLOCK-Pro age out the idle blocks.
            c.get(id + 1, i);
        }
        assert_eq!(c.stats().detached, 0);
        assert_eq!(window.live_bytes(), 0);
        assert_eq!(
            Arc::strong_count(&window),
            1,
            "a block still refers to the window"
        );
    }

    #[test]
    fn a_hit_on_a_block_pinning_a_sparse_window_caches_a_copy() {
        let (window, blocks, _) = window_blocks(6);
        let c = BlockCache::new(1 << 20);
        let id = c.next_table_id();
        let kept = blocks[2].clone();
        let at = kept.offset();
        c.insert(id, at, kept.clone());
        drop(blocks);
        assert!(kept.pins_sparse_window(), "one block of six is live");
        drop(kept);
        let got = c.get(id, at).unwrap();
        assert!(!got.pins_sparse_window());
        assert_eq!(c.stats().detached, 1);
        assert_eq!(c.usage_bytes(), got.size() + BLOCK_OVERHEAD);
        // The window's last block was replaced in the cache and dropped: it is freed.
        assert_eq!(window.live_bytes(), 0);
        assert_eq!(Arc::strong_count(&window), 1);
        // The copy is what the cache serves now, and it reads the same entries.
        assert!(Arc::ptr_eq(&c.get(id, at).unwrap(), &got));
        assert_eq!(c.stats().detached, 1);
        let mut it = crate::sstable::block::BlockIter::new(got);
        it.seek_to_first().unwrap();
        let mut n = 0;
        while it.valid() {
            n += 1;
            it.next().unwrap();
        }
        assert_eq!(n, 12);
    }

    #[test]
    fn capacity_zero_disables() {
        let c = BlockCache::new(0);
        let id = c.next_table_id();
        c.insert(id, 0, block(10, 10));
        assert!(c.get(id, 0).is_none());
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.inserts, s.usage_bytes), (0, 1, 0, 0));
        assert!(c.is_empty());
    }

    #[test]
    fn capacity_is_respected() {
        for capacity in [64 << 10, 1 << 20, 3 << 20] {
            let c = BlockCache::new(capacity);
            let id = c.next_table_id();
            let b = block(40, 90); // ~4 KiB
            let max_block = (b.size() + BLOCK_OVERHEAD) as u64;
            for i in 0..5_000u64 {
                c.insert(id, i * 4096, b.clone());
                let used = c.usage_bytes() as u64;
                assert!(
                    used <= capacity as u64 + max_block,
                    "capacity {capacity}: {used} bytes used after {i} inserts"
                );
            }
            // It does hold a good share of its capacity.
            assert!(
                c.usage_bytes() as u64 >= capacity as u64 / 2,
                "{:?}",
                c.stats()
            );
        }
    }

    #[test]
    fn concurrent_get_and_insert() {
        let c = Arc::new(BlockCache::new(256 << 10));
        let blocks: Vec<Arc<Block>> = (1..=8).map(|i| block(i * 5, 50)).collect();
        let ids: Vec<u64> = (0..4).map(|_| c.next_table_id()).collect();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (c, blocks, ids) = (&c, &blocks, &ids);
                s.spawn(move || {
                    for i in 0..20_000u64 {
                        let id = ids[((i + t) % 4) as usize];
                        let off = (i * 7 + t) % 97;
                        let expect = &blocks[(off % 8) as usize];
                        match c.get(id, off) {
                            Some(b) => assert!(Arc::ptr_eq(&b, expect)),
                            None => c.insert(id, off, expect.clone()),
                        }
                    }
                });
            }
        });
        let s = c.stats();
        assert_eq!(s.hits + s.misses, 80_000);
        assert!(s.hits > 0 && s.inserts > 0, "{s:?}");
        assert!(s.usage_bytes <= 256 << 10);
    }

    #[test]
    fn a_scanned_block_is_admitted_on_its_second_read() {
        let c = BlockCache::new(1 << 20);
        let id = c.next_table_id();
        assert!(!c.admit_scanned(id, 0));
        assert!(!c.admit_scanned(id, 4096));
        assert!(!c.admit_scanned(id + 1, 0), "another table's block");
        assert!(c.admit_scanned(id, 0));
        assert!(c.admit_scanned(id, 4096));
        assert!(c.admit_scanned(id, 0));
        // Without a cache nothing is admitted.
        let off = BlockCache::new(0);
        assert!(!off.admit_scanned(id, 0) && !off.admit_scanned(id, 0));
    }

    #[test]
    fn the_doorkeeper_is_cleared_when_an_eighth_full() {
        let d = Doorkeeper::new(1 << 20);
        let bits = d.words.len() as u64 * 64;
        assert_eq!(bits, 1 << 20, "the minimum size");
        let ones = |d: &Doorkeeper| -> u64 {
            d.words
                .iter()
                .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
                .sum()
        };
        assert!(!d.seen_before(1, 0));
        // Distinct blocks: the bits set never reach an eighth, and reach it many times.
        let mut resets = 0;
        let mut last = 0;
        for off in 1..3 * bits {
            d.seen_before(1, off * 4096);
            let set = d.set.load(Ordering::Relaxed);
            assert!(set < bits / 8, "{set}");
            if set < last {
                resets += 1;
                assert_eq!(ones(&d), 0, "a reset clears every bit");
            }
            last = set;
        }
        assert!(resets >= 12, "{resets}");
        assert_eq!(ones(&d), d.set.load(Ordering::Relaxed));
        // The block seen at the start was forgotten.
        assert!(!d.seen_before(1, 0));
    }
}
