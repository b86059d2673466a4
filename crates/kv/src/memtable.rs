//! The memtable: a concurrent sorted map of internal keys, where writes land after the WAL.
//!
//! Entries are never removed or changed: a delete is a tombstone entry, an overwrite a newer
//! version. One writer (the group-commit leader) inserts while any number of readers and
//! iterators read.
//!
//! The map is a B-tree behind a reader-writer lock rather than a lock-free skiplist: a
//! lookup in a B-tree touches a handful of nodes whose keys sit side by side, where a
//! skiplist follows a pointer, and misses the cache, at every one of its ~log2(n) steps,
//! which made memtable inserts and lookups the most expensive part of writes and reads.
//! The lock is held for one insert (a batch's inserts) or one lookup, well under a
//! microsecond; iterators copy entries out in small batches and never hold it between
//! calls, and a frozen memtable, which the flush reads, receives no more writes.
//!
//! Keys written in ascending order (sequential loads, a time series' newest samples) skip
//! the B-tree: an entry larger than every entry of the *tail run*, a sorted array, is
//! appended to it with one comparison, where the B-tree insert scanned every node on its
//! right spine (some fifty comparisons). Readers merge the run and the tree, two sorted
//! sets of distinct keys.

use crate::error::Result;
use crate::iterator::InternalIterator;
use crate::key::{
    self, compare_internal, internal_key, pack_trailer, Lookup, ValueKind, TRAILER_LEN,
};
use crate::prefetch::prefetch_slice;
use crate::range_del::RangeTombstone;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, RwLock};

/// Bookkeeping bytes charged per entry on top of key and value (its B-tree slot, its share
/// of a node, the value arena's unused chunk ends).
const ENTRY_OVERHEAD: usize = 64;

/// Internal keys up to this many bytes (user keys up to 22 bytes) are kept inside the
/// B-tree's slot itself: a search compares them without following a pointer to another
/// cache line, and inserting them allocates nothing besides the node.
const INLINE_KEY_LEN: usize = 30;

/// An internal key ordered by [`compare_internal`], stored inline when short.
#[derive(Debug, Clone)]
enum MemKey {
    Inline {
        len: u8,
        bytes: [u8; INLINE_KEY_LEN],
    },
    Heap(Box<[u8]>),
}

impl MemKey {
    /// The internal key of `(user_key, seq, kind)`, built in place.
    fn from_parts(user_key: &[u8], seq: u64, kind: ValueKind) -> MemKey {
        let n = user_key.len();
        if n + TRAILER_LEN <= INLINE_KEY_LEN {
            let mut bytes = [0u8; INLINE_KEY_LEN];
            bytes[..n].copy_from_slice(user_key);
            bytes[n..n + TRAILER_LEN].copy_from_slice(&pack_trailer(seq, kind).to_le_bytes());
            MemKey::Inline {
                len: (n + TRAILER_LEN) as u8,
                bytes,
            }
        } else {
            MemKey::Heap(internal_key(user_key, seq, kind).into_boxed_slice())
        }
    }

    fn new(k: &[u8]) -> MemKey {
        if k.len() <= INLINE_KEY_LEN {
            let mut bytes = [0u8; INLINE_KEY_LEN];
            bytes[..k.len()].copy_from_slice(k);
            MemKey::Inline {
                len: k.len() as u8,
                bytes,
            }
        } else {
            MemKey::Heap(k.into())
        }
    }

    #[inline]
    fn as_slice(&self) -> &[u8] {
        match self {
            MemKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            MemKey::Heap(b) => b,
        }
    }
}

impl PartialEq for MemKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for MemKey {}

impl Ord for MemKey {
    // Inlined into the B-tree's node search (a call per probed key otherwise).
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        compare_internal(self.as_slice(), other.as_slice())
    }
}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Where a value lies in the [`ValueArena`].
#[derive(Debug, Clone, Copy)]
struct ValueRef {
    chunk: u32,
    offset: usize,
    len: usize,
}

/// First chunk of a memtable's value arena; chunks double up to [`ARENA_CHUNK_MAX`].
const ARENA_CHUNK_MIN: usize = 4 << 10;
const ARENA_CHUNK_MAX: usize = 1 << 20;

/// The values of a memtable, appended back to back into a few large chunks: an insert
/// allocates nothing of its own (a `Box` per value cost a `malloc` on every write and a
/// `free` when the memtable went), and values written together sit together.
#[derive(Debug, Default)]
struct ValueArena {
    /// Never reallocated: a chunk is filled up to its capacity, then a new one started.
    chunks: Vec<Vec<u8>>,
}

impl ValueArena {
    fn push(&mut self, v: &[u8]) -> ValueRef {
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= v.len());
        if !fits {
            let next = self
                .chunks
                .last()
                .map_or(ARENA_CHUNK_MIN, |c| (c.capacity() * 2).min(ARENA_CHUNK_MAX));
            self.chunks.push(Vec::with_capacity(next.max(v.len())));
        }
        let chunk = self.chunks.len() - 1;
        let c = &mut self.chunks[chunk];
        let offset = c.len();
        c.extend_from_slice(v);
        ValueRef {
            chunk: u32::try_from(chunk).unwrap_or(u32::MAX),
            offset,
            len: v.len(),
        }
    }

    #[inline]
    fn get(&self, r: ValueRef) -> &[u8] {
        self.chunks
            .get(r.chunk as usize)
            .and_then(|c| c.get(r.offset..r.offset + r.len))
            .unwrap_or_default()
    }
}

/// Entries per chunk of a [`TailRun`]: chunks are never reallocated, so appending never
/// copies the run (a `Vec` doubling would copy megabytes at once, a latency spike).
const RUN_CHUNK_SHIFT: u32 = 10;
const RUN_CHUNK: usize = 1 << RUN_CHUNK_SHIFT;

/// Entries in strictly ascending key order, in fixed-size chunks (all full but the last).
#[derive(Debug, Default)]
struct TailRun {
    chunks: Vec<Vec<(MemKey, ValueRef)>>,
    len: usize,
}

impl TailRun {
    #[inline]
    fn last(&self) -> Option<&MemKey> {
        self.chunks.last().and_then(|c| c.last()).map(|e| &e.0)
    }

    /// REQUIRES: `k` is larger than [`TailRun::last`].
    fn push(&mut self, k: MemKey, v: ValueRef) {
        if self.len & (RUN_CHUNK - 1) == 0 {
            self.chunks.push(Vec::with_capacity(RUN_CHUNK));
        }
        if let Some(c) = self.chunks.last_mut() {
            c.push((k, v));
            self.len += 1;
        }
    }

    #[inline]
    fn at(&self, i: usize) -> (&MemKey, &ValueRef) {
        let e = &self.chunks[i >> RUN_CHUNK_SHIFT][i & (RUN_CHUNK - 1)];
        (&e.0, &e.1)
    }

    /// Number of entries for which `before` holds (a prefix of the run).
    fn partition_point(&self, before: impl Fn(&MemKey) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if before(self.at(mid).0) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Index of the first entry inside `from` as a lower bound.
    fn start_of(&self, from: Bound<&MemKey>) -> usize {
        match from {
            Bound::Unbounded => 0,
            Bound::Included(k) => self.partition_point(|e| e < k),
            Bound::Excluded(k) => self.partition_point(|e| e <= k),
        }
    }

    /// Index one past the last entry inside `to` as an upper bound.
    fn end_of(&self, to: Bound<&MemKey>) -> usize {
        match to {
            Bound::Unbounded => self.len,
            Bound::Included(k) => self.partition_point(|e| e <= k),
            Bound::Excluded(k) => self.partition_point(|e| e < k),
        }
    }
}

/// Two sorted sequences of distinct keys merged into one, ascending (or descending with
/// `rev`, when both inputs are descending).
struct Merged<'a, A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
    rev: bool,
    _keys: std::marker::PhantomData<&'a MemKey>,
}

type Entry<'a> = (&'a MemKey, &'a ValueRef);

impl<'a, A, B> Iterator for Merged<'a, A, B>
where
    A: Iterator<Item = Entry<'a>>,
    B: Iterator<Item = Entry<'a>>,
{
    type Item = Entry<'a>;

    #[inline]
    fn next(&mut self) -> Option<Entry<'a>> {
        let take_a = match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) => (x.0 < y.0) != self.rev,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if take_a {
            self.a.next()
        } else {
            self.b.next()
        }
    }
}

/// The tail run, the B-tree and the arena of their values, under one lock.
#[derive(Debug, Default)]
struct Entries {
    run: TailRun,
    map: BTreeMap<MemKey, ValueRef>,
    arena: ValueArena,
}

impl Entries {
    fn len(&self) -> usize {
        self.run.len + self.map.len()
    }

    fn insert(&mut self, k: MemKey, v: ValueRef) {
        if self.run.last().is_none_or(|last| k > *last) {
            self.run.push(k, v);
        } else {
            self.map.insert(k, v);
        }
    }

    /// Entries from `from` on, ascending.
    fn range_from<'a>(&'a self, from: Bound<&MemKey>) -> impl Iterator<Item = Entry<'a>> + 'a {
        let start = self.run.start_of(from);
        Merged {
            a: (start..self.run.len).map(|i| self.run.at(i)).peekable(),
            b: self.map.range((from, Bound::Unbounded)).peekable(),
            rev: false,
            _keys: std::marker::PhantomData,
        }
    }

    /// Entries up to `to`, descending.
    fn range_to_rev<'a>(&'a self, to: Bound<&MemKey>) -> impl Iterator<Item = Entry<'a>> + 'a {
        let end = self.run.end_of(to);
        Merged {
            a: (0..end).rev().map(|i| self.run.at(i)).peekable(),
            b: self.map.range((Bound::Unbounded, to)).rev().peekable(),
            rev: true,
            _keys: std::marker::PhantomData,
        }
    }
}

/// A sorted in-memory table of internal keys.
#[derive(Debug)]
pub struct Memtable {
    map: RwLock<Entries>,
    /// Range deletes received (few; readers copy them when they start).
    range_tombstones: RwLock<Vec<RangeTombstone>>,
    size: AtomicUsize,
    largest_seq: AtomicU64,
}

impl Default for Memtable {
    fn default() -> Self {
        Self::new()
    }
}

impl Memtable {
    /// An empty memtable.
    pub fn new() -> Self {
        Memtable {
            map: RwLock::new(Entries::default()),
            range_tombstones: RwLock::new(Vec::new()),
            size: AtomicUsize::new(0),
            largest_seq: AtomicU64::new(0),
        }
    }

    /// Inserts one version. Sequence numbers are unique, so this never replaces an entry.
    pub fn add(&self, seq: u64, kind: ValueKind, user_key: &[u8], value: &[u8]) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        self.add_locked(&mut map, seq, kind, user_key, value);
    }

    // REQUIRES: the map's write lock, held by the caller as `map`.
    fn add_locked(
        &self,
        map: &mut Entries,
        seq: u64,
        kind: ValueKind,
        user_key: &[u8],
        value: &[u8],
    ) {
        // The write lock excludes every other writer: plain loads and stores, not locked
        // read-modify-writes (two per entry, some twenty cycles each).
        let size = self.size.load(AtomicOrdering::Relaxed)
            + user_key.len()
            + TRAILER_LEN
            + value.len()
            + ENTRY_OVERHEAD;
        self.size.store(size, AtomicOrdering::Relaxed);
        if seq > self.largest_seq.load(AtomicOrdering::Relaxed) {
            self.largest_seq.store(seq, AtomicOrdering::Relaxed);
        }
        let v = map.arena.push(value);
        map.insert(MemKey::from_parts(user_key, seq, kind), v);
    }

    /// Inserts every entry of a committed batch (its sequence number is set), taking the
    /// lock once for all its point entries.
    pub fn apply_batch(&self, batch: &crate::batch::WriteBatch) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        for (seq, e) in (batch.sequence()..).zip(batch.iter()) {
            match e {
                crate::batch::BatchEntry::DeleteRange { start, end } => {
                    self.add_range_tombstone(seq, start, end)
                }
                other => {
                    if let Some((kind, key, value)) = other.as_point() {
                        self.add_locked(&mut map, seq, kind, key, value);
                    }
                }
            }
        }
    }

    /// Records a delete of `[start, end)` at `seq`.
    pub fn add_range_tombstone(&self, seq: u64, start: &[u8], end: &[u8]) {
        self.size.fetch_add(
            start.len() + end.len() + ENTRY_OVERHEAD,
            AtomicOrdering::Relaxed,
        );
        self.largest_seq.fetch_max(seq, AtomicOrdering::Relaxed);
        let t = RangeTombstone {
            start: start.to_vec(),
            end: end.to_vec(),
            seq,
        };
        self.range_tombstones
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(t);
    }

    /// The range deletes received so far.
    pub fn range_tombstones(&self) -> Vec<RangeTombstone> {
        self.range_tombstones
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The newest version of `user_key` with sequence number `<= seq` (range deletes are
    /// the caller's to apply).
    pub fn get(&self, user_key: &[u8], seq: u64) -> Option<Lookup> {
        let target = MemKey::from_parts(user_key, seq, ValueKind::FOR_SEEK);
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let (k, v) = map.range_from(Bound::Included(&target)).next()?;
        let p = key::parse_internal_key(k.as_slice())?;
        (p.user_key == user_key).then(|| Lookup {
            kind: p.kind,
            seq: p.seq,
            value: map.arena.get(*v).to_vec(),
        })
    }

    /// Approximate memory used, in bytes.
    pub fn approximate_size(&self) -> usize {
        self.size.load(AtomicOrdering::Relaxed)
    }

    /// Number of entries (versions).
    pub fn len(&self) -> usize {
        self.read_map().len()
    }

    /// True if the memtable holds point entries (puts or deletes).
    pub fn has_entries(&self) -> bool {
        self.read_map().len() > 0
    }

    /// True if nothing was inserted (no entry, no range delete).
    pub fn is_empty(&self) -> bool {
        self.read_map().len() == 0
            && self
                .range_tombstones
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }

    /// Largest sequence number inserted (0 if empty).
    pub fn largest_seq(&self) -> u64 {
        self.largest_seq.load(AtomicOrdering::Relaxed)
    }

    /// Calls `f` for every entry in internal-key order (used by flush, on a frozen memtable).
    pub fn for_each<E>(&self, mut f: impl FnMut(&[u8], &[u8]) -> Result<(), E>) -> Result<(), E> {
        let map = self.read_map();
        for (k, v) in map.range_from(Bound::Unbounded) {
            f(k.as_slice(), map.arena.get(*v))?;
        }
        Ok(())
    }

    fn read_map(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    /// An owning cursor over the memtable.
    pub fn iter(self: &Arc<Self>) -> MemtableIterator {
        MemtableIterator {
            mem: self.clone(),
            data: Vec::new(),
            spans: Vec::new(),
            values: Vec::new(),
            idx: 0,
            valid: false,
            batch: ITER_FIRST_BATCH,
        }
    }
}

/// Entries copied out of the B-tree by the first refill after a seek, and the most any
/// refill copies. Iterators own their position without borrowing the map, so each refill
/// copies entries out; a seek usually needs one entry (a point seek, as in
/// `seekrandom`, or a short scan), while a long scan amortises the search over many. So
/// refills start small and double up to the cap as the cursor keeps moving the same way.
const ITER_FIRST_BATCH: usize = 1;
const ITER_MAX_BATCH: usize = 128;

/// Where one copied entry lies in [`MemtableIterator::data`]: its key is
/// `data[key_start..key_end]`, its value `data[value_start..value_end]`.
#[derive(Debug, Clone, Copy)]
struct Span {
    key_start: usize,
    key_end: usize,
    value_start: usize,
    value_end: usize,
}

/// Of a memtable value, the bytes a refill prefetches at most: a long value's first lines
/// (its copy streams through the rest, which the hardware prefetcher follows).
const PREFETCH_VALUE_MAX: usize = 256;

#[inline(always)]
fn prefetch_value(v: &[u8]) {
    prefetch_slice(&v[..v.len().min(PREFETCH_VALUE_MAX)]);
}

/// A refill: copies `entries` into `data` in two passes, the keys (inline in the B-tree's
/// nodes, read in order) while prefetching each value, then the values. The values sit in
/// the arena in write order, so in key order each is a miss to DRAM; prefetched together
/// they overlap (copied one by one, a scan waited for each: ~2/3 of a memtable scan).
fn copy_batch<'a>(
    data: &mut Vec<u8>,
    spans: &mut Vec<Span>,
    values: &mut Vec<ValueRef>,
    entries: impl Iterator<Item = Entry<'a>>,
    arena: &ValueArena,
) {
    data.clear();
    spans.clear();
    values.clear();
    for (k, v) in entries {
        prefetch_value(arena.get(*v));
        let key_start = data.len();
        data.extend_from_slice(k.as_slice());
        spans.push(Span {
            key_start,
            key_end: data.len(),
            value_start: 0,
            value_end: 0,
        });
        values.push(*v);
    }
    // One exact allocation for a point seek's single entry (growing twice otherwise).
    data.reserve(values.iter().map(|v| v.len).sum());
    for (s, v) in spans.iter_mut().zip(values.iter()) {
        s.value_start = data.len();
        data.extend_from_slice(arena.get(*v));
        s.value_end = data.len();
    }
}

/// An [`InternalIterator`] over a memtable. Entries inserted while it runs may or may not
/// be seen; the DB iterator hides them by sequence number.
///
/// Each refill copies a batch of entries into one buffer the iterator keeps (so a scan
/// allocates nothing per entry) and steps through it without taking the lock.
pub struct MemtableIterator {
    mem: Arc<Memtable>,
    /// Keys of the copied entries, then their values.
    data: Vec<u8>,
    spans: Vec<Span>,
    /// Where the values of the entries being copied lie (see `fill_forward`).
    values: Vec<ValueRef>,
    idx: usize,
    valid: bool,
    /// Entries the next refill copies.
    batch: usize,
}

impl MemtableIterator {
    fn fill_forward(&mut self, from: Bound<&MemKey>) {
        let map = self.mem.read_map();
        let entries = map.range_from(from).take(self.batch);
        copy_batch(
            &mut self.data,
            &mut self.spans,
            &mut self.values,
            entries,
            &map.arena,
        );
        drop(map);
        self.idx = 0;
        self.valid = !self.spans.is_empty();
    }

    fn fill_backward(&mut self, to: Bound<&MemKey>) {
        let map = self.mem.read_map();
        // Copied last key first; the spans are then put back in key order (the bytes
        // need not be).
        let entries = map.range_to_rev(to).take(self.batch);
        copy_batch(
            &mut self.data,
            &mut self.spans,
            &mut self.values,
            entries,
            &map.arena,
        );
        drop(map);
        self.spans.reverse();
        self.idx = self.spans.len().saturating_sub(1);
        self.valid = !self.spans.is_empty();
    }

    /// After a seek: the next refill copies little.
    fn reset_batch(&mut self) {
        self.batch = ITER_FIRST_BATCH;
    }

    /// After a refill while moving: the next one copies more.
    fn grow_batch(&mut self) {
        self.batch = (self.batch * 2).min(ITER_MAX_BATCH);
    }

    fn span(&self) -> Span {
        self.spans[self.idx]
    }
}

impl InternalIterator for MemtableIterator {
    #[inline]
    fn valid(&self) -> bool {
        self.valid
    }
    fn seek_to_first(&mut self) -> Result<()> {
        self.reset_batch();
        self.fill_forward(Bound::Unbounded);
        Ok(())
    }
    fn seek_to_last(&mut self) -> Result<()> {
        self.reset_batch();
        self.fill_backward(Bound::Unbounded);
        Ok(())
    }
    fn seek(&mut self, target: &[u8]) -> Result<()> {
        let t = MemKey::new(target);
        self.reset_batch();
        self.fill_forward(Bound::Included(&t));
        Ok(())
    }
    #[inline]
    fn next(&mut self) -> Result<()> {
        if self.idx + 1 < self.spans.len() {
            self.idx += 1;
        } else {
            let cur = MemKey::new(self.key());
            self.grow_batch();
            self.fill_forward(Bound::Excluded(&cur));
        }
        Ok(())
    }
    #[inline]
    fn prev(&mut self) -> Result<()> {
        if self.idx > 0 {
            self.idx -= 1;
        } else {
            let cur = MemKey::new(self.key());
            self.grow_batch();
            self.fill_backward(Bound::Excluded(&cur));
        }
        Ok(())
    }
    #[inline]
    fn key(&self) -> &[u8] {
        let s = self.span();
        &self.data[s.key_start..s.key_end]
    }
    #[inline]
    fn value(&self) -> &[u8] {
        let s = self.span();
        &self.data[s.value_start..s.value_end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::MAX_SEQUENCE;

    #[test]
    fn versions_and_snapshots() {
        let m = Memtable::new();
        m.add(1, ValueKind::Value, b"a", b"a1");
        m.add(2, ValueKind::Value, b"a", b"a2");
        m.add(3, ValueKind::Deletion, b"a", b"");
        m.add(4, ValueKind::Value, b"b", b"b4");
        let v = |x: Option<Lookup>| x.map(|l| (l.kind, l.seq, l.value));
        assert_eq!(
            v(m.get(b"a", 1)),
            Some((ValueKind::Value, 1, b"a1".to_vec()))
        );
        assert_eq!(
            v(m.get(b"a", 2)),
            Some((ValueKind::Value, 2, b"a2".to_vec()))
        );
        assert_eq!(m.get(b"a", 9).map(|x| x.kind), Some(ValueKind::Deletion));
        assert_eq!(m.get(b"b", 3), None);
        assert_eq!(m.get(b"c", 9), None);
        assert_eq!(m.get(b"", 9), None);
    }

    /// Ascending runs (the tail run) interleaved with out-of-order keys (the B-tree), more
    /// than one run chunk: lookups, both iteration directions, seeks and `for_each` see
    /// exactly the entries of a reference map, in internal-key order.
    #[test]
    fn tail_run_and_tree_merge() {
        let m = Arc::new(Memtable::new());
        let mut reference: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut seq = 0u64;
        let mut x = 12345u64;
        let mut add = |k: &[u8], m: &Memtable, r: &mut Vec<(Vec<u8>, Vec<u8>)>| {
            seq += 1;
            let v = format!("v{seq}").into_bytes();
            m.add(seq, ValueKind::Value, k, &v);
            r.push((internal_key(k, seq, ValueKind::Value), v));
        };
        for i in 0..(RUN_CHUNK * 2 + 100) {
            add(format!("k{:06}", i * 2).as_bytes(), &m, &mut reference);
            if i % 7 == 0 {
                // Out of order: an odd key below the tail, an overwrite, a long key.
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let j = (x >> 33) as usize % (i * 2 + 1);
                add(format!("k{:06}", j | 1).as_bytes(), &m, &mut reference);
                add(format!("k{:06}", i * 2).as_bytes(), &m, &mut reference);
                add(
                    format!("k{:06}-a-key-too-long-to-be-inline", j).as_bytes(),
                    &m,
                    &mut reference,
                );
            }
        }
        assert!(m.read_map().run.len > RUN_CHUNK && !m.read_map().map.is_empty());
        reference.sort_by(|a, b| compare_internal(&a.0, &b.0));
        assert_eq!(m.len(), reference.len());

        let mut flushed = Vec::new();
        m.for_each(|k, v| {
            flushed.push((k.to_vec(), v.to_vec()));
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(flushed, reference);

        let mut it = m.iter();
        it.seek_to_first().unwrap();
        let mut fwd = Vec::new();
        while it.valid() {
            fwd.push((it.key().to_vec(), it.value().to_vec()));
            it.next().unwrap();
        }
        assert_eq!(fwd, reference);
        it.seek_to_last().unwrap();
        let mut back = Vec::new();
        while it.valid() {
            back.push((it.key().to_vec(), it.value().to_vec()));
            it.prev().unwrap();
        }
        back.reverse();
        assert_eq!(back, reference);

        for probe in (0..(RUN_CHUNK * 4 + 210)).step_by(3) {
            let uk = format!("k{probe:06}");
            let target = key::seek_key(uk.as_bytes(), MAX_SEQUENCE);
            let want = reference
                .iter()
                .find(|(k, _)| compare_internal(k, &target) != Ordering::Less);
            it.seek(&target).unwrap();
            assert_eq!(it.valid(), want.is_some(), "seek {uk}");
            if let Some((k, v)) = want {
                assert_eq!((it.key(), it.value()), (&k[..], &v[..]), "seek {uk}");
            }
            let got = m.get(uk.as_bytes(), MAX_SEQUENCE).map(|l| l.value);
            let want = want
                .filter(|(k, _)| key::user_key(k) == uk.as_bytes())
                .map(|(_, v)| v.clone());
            assert_eq!(got, want, "get {uk}");
        }
    }

    #[test]
    fn iterator_both_directions_across_refills() {
        let m = Arc::new(Memtable::new());
        let n = ITER_MAX_BATCH * 3 + 5;
        for i in 0..n {
            m.add(
                i as u64 + 1,
                ValueKind::Value,
                format!("k{i:05}").as_bytes(),
                b"v",
            );
        }
        let mut it = m.iter();
        it.seek_to_first().unwrap();
        let mut fwd = Vec::new();
        while it.valid() {
            fwd.push(it.key().to_vec());
            it.next().unwrap();
        }
        assert_eq!(fwd.len(), n);
        it.seek_to_last().unwrap();
        let mut back = Vec::new();
        while it.valid() {
            back.push(it.key().to_vec());
            it.prev().unwrap();
        }
        back.reverse();
        assert_eq!(fwd, back);
        // Zig-zag at a refill boundary: a seek copies ITER_FIRST_BATCH entries, so the
        // next step past them refills forward and the step back refills backward.
        it.seek(&key::seek_key(b"k00000", u64::MAX >> 8)).unwrap();
        for _ in 0..ITER_FIRST_BATCH {
            it.next().unwrap();
        }
        assert_eq!(
            key::user_key(it.key()),
            format!("k{ITER_FIRST_BATCH:05}").as_bytes()
        );
        it.prev().unwrap();
        assert_eq!(
            key::user_key(it.key()),
            format!("k{:05}", ITER_FIRST_BATCH - 1).as_bytes()
        );
    }

    /// A refill prefetches every value and copies them after the keys: values of any
    /// length (empty, under a line, across lines, longer than the prefetched part) come
    /// out whole, in both directions and across refills.
    #[test]
    fn refills_copy_values_of_any_length() {
        let lens = [0usize, 1, 63, 64, 65, 100, 255, 256, 257, 5000];
        let m = Arc::new(Memtable::new());
        let n = ITER_MAX_BATCH * 2 + 9;
        let value = |i: usize| vec![(i % 251) as u8; lens[i % lens.len()]];
        // Keys inserted out of order: the B-tree, not only the tail run.
        for j in 0..n {
            let i = (j * 37) % n;
            m.add(
                j as u64 + 1,
                ValueKind::Value,
                format!("k{i:05}").as_bytes(),
                &value(i),
            );
        }
        let mut it = m.iter();
        it.seek_to_first().unwrap();
        let mut i = 0;
        while it.valid() {
            assert_eq!(key::user_key(it.key()), format!("k{i:05}").as_bytes());
            assert_eq!(it.value(), &value(i)[..]);
            it.next().unwrap();
            i += 1;
        }
        assert_eq!(i, n);
        it.seek_to_last().unwrap();
        while it.valid() {
            i -= 1;
            assert_eq!(key::user_key(it.key()), format!("k{i:05}").as_bytes());
            assert_eq!(it.value(), &value(i)[..]);
            it.prev().unwrap();
        }
        assert_eq!(i, 0);
    }
}
