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

use crate::error::Result;
use crate::iterator::InternalIterator;
use crate::key::{
    self, compare_internal, internal_key, pack_trailer, Lookup, ValueKind, TRAILER_LEN,
};
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

/// The B-tree and the arena of its values, under one lock.
#[derive(Debug, Default)]
struct Entries {
    map: BTreeMap<MemKey, ValueRef>,
    arena: ValueArena,
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
        self.size.fetch_add(
            user_key.len() + TRAILER_LEN + value.len() + ENTRY_OVERHEAD,
            AtomicOrdering::Relaxed,
        );
        self.largest_seq.fetch_max(seq, AtomicOrdering::Relaxed);
        let v = map.arena.push(value);
        map.map.insert(MemKey::from_parts(user_key, seq, kind), v);
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
        let (k, v) = map
            .map
            .range((Bound::Included(&target), Bound::Unbounded))
            .next()?;
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
        self.read_map().map.len()
    }

    /// True if the memtable holds point entries (puts or deletes).
    pub fn has_entries(&self) -> bool {
        !self.read_map().map.is_empty()
    }

    /// True if nothing was inserted (no entry, no range delete).
    pub fn is_empty(&self) -> bool {
        self.read_map().map.is_empty()
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
        for (k, v) in map.map.iter() {
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
/// `data[key_start..value_start]`, its value `data[value_start..end]`.
#[derive(Debug, Clone, Copy)]
struct Span {
    key_start: usize,
    value_start: usize,
    end: usize,
}

impl Span {
    /// Appends `k` and `v` to `data` and returns where they lie.
    fn push(data: &mut Vec<u8>, k: &[u8], v: &[u8]) -> Span {
        let key_start = data.len();
        data.extend_from_slice(k);
        let value_start = data.len();
        data.extend_from_slice(v);
        Span {
            key_start,
            value_start,
            end: data.len(),
        }
    }
}

/// An [`InternalIterator`] over a memtable. Entries inserted while it runs may or may not
/// be seen; the DB iterator hides them by sequence number.
///
/// Each refill copies a batch of entries into one buffer the iterator keeps (so a scan
/// allocates nothing per entry) and steps through it without taking the lock.
pub struct MemtableIterator {
    mem: Arc<Memtable>,
    /// Keys and values of the copied entries, back to back, in key order.
    data: Vec<u8>,
    spans: Vec<Span>,
    idx: usize,
    valid: bool,
    /// Entries the next refill copies.
    batch: usize,
}

impl MemtableIterator {
    fn fill_forward(&mut self, from: Bound<&MemKey>) {
        self.data.clear();
        self.spans.clear();
        let map = self.mem.read_map();
        for (k, v) in map.map.range((from, Bound::Unbounded)).take(self.batch) {
            let v = map.arena.get(*v);
            self.spans.push(Span::push(&mut self.data, k.as_slice(), v));
        }
        drop(map);
        self.idx = 0;
        self.valid = !self.spans.is_empty();
    }

    fn fill_backward(&mut self, to: Bound<&MemKey>) {
        self.data.clear();
        self.spans.clear();
        let map = self.mem.read_map();
        // Copied last key first; the spans are then put back in key order (the bytes
        // need not be).
        for (k, v) in map.map.range((Bound::Unbounded, to)).rev().take(self.batch) {
            let v = map.arena.get(*v);
            self.spans.push(Span::push(&mut self.data, k.as_slice(), v));
        }
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
        &self.data[s.key_start..s.value_start]
    }
    #[inline]
    fn value(&self) -> &[u8] {
        let s = self.span();
        &self.data[s.value_start..s.end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
