//! The head: the recent samples of active series, in memory, and their inverted index.
//!
//! Each [`MemSeries`] appends in-order samples to an open Gorilla chunk
//! ([`XorAppender`]); a chunk is closed when it holds [`crate::Options::max_chunk_samples`]
//! samples or the next sample falls in another time partition, so no chunk spans two
//! partitions. A sample at or before the series' last timestamp (out of order, or a
//! duplicate timestamp) goes to a sorted per-series buffer where the last write for a
//! timestamp wins; queries merge it over the chunks, and a flush persists it as its own
//! chunk that outranks older data.
//!
//! A series' labels, ref and label hash are immutable and live beside its mutex
//! ([`HeadSeries`]), so finding a series by labels never locks one. The maps from label
//! hash and from ref to series are sharded, each shard behind its own lock, so concurrent
//! writers rarely meet on a lock.
//!
//! A flush (see `db.rs`) persists the closed chunks and removes them; series that received
//! nothing for two flushes leave the head, so series churn does not grow memory.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use crate::chunk::{XorAppender, XorChunk};
use crate::labels::Labels;
use crate::postings::{MemPostings, SeriesRef};

/// A closed chunk waiting to be persisted.
#[derive(Debug, Clone)]
pub(crate) struct HeadChunk {
    pub part: i64,
    pub mint: i64,
    pub maxt: i64,
    /// Holds out-of-order samples: outranks in-order chunks of the same flush.
    pub ooo: bool,
    pub chunk: XorChunk,
}

/// The chunk being appended to.
#[derive(Debug)]
pub(crate) struct OpenChunk {
    pub part: i64,
    pub mint: i64,
    pub maxt: i64,
    pub app: XorAppender,
}

/// Where a sample went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Appended {
    InOrder,
    OutOfOrder,
}

/// The mutable state of one series in the head.
#[derive(Debug)]
pub(crate) struct MemSeries {
    pub closed: Vec<HeadChunk>,
    pub open: Option<OpenChunk>,
    /// The last in-order timestamp (`i64::MIN` before the first sample).
    pub last_t: i64,
    /// Out-of-order and duplicate samples, newest write per timestamp.
    pub ooo: BTreeMap<i64, f64>,
    /// Samples appended since the last flush.
    pub dirty: bool,
    /// Flushes in a row that found the series without new samples.
    pub idle_flushes: u32,
    /// Partitions where the series' labels and postings are already persisted.
    pub persisted_parts: Vec<i64>,
}

impl MemSeries {
    pub fn new() -> Self {
        MemSeries {
            closed: Vec::new(),
            open: None,
            last_t: i64::MIN,
            ooo: BTreeMap::new(),
            dirty: false,
            idle_flushes: 0,
            persisted_parts: Vec::new(),
        }
    }

    /// Appends a sample: in order into the open chunk, otherwise into the out-of-order
    /// buffer.
    pub fn append(&mut self, t: i64, v: f64, part_ms: i64, max_samples: usize) -> Appended {
        self.dirty = true;
        if t <= self.last_t {
            self.ooo.insert(t, v);
            return Appended::OutOfOrder;
        }
        let part = t.div_euclid(part_ms);
        if let Some(open) = &self.open {
            if open.part != part || open.app.chunk().num_samples() >= max_samples {
                self.close_open();
            }
        }
        let open = self.open.get_or_insert_with(|| OpenChunk {
            part,
            mint: t,
            maxt: t,
            app: XorAppender::new(),
        });
        if open.app.append(t, v).is_err() {
            // Full at the encoding's hard limit: start another chunk.
            self.close_open();
            let mut app = XorAppender::new();
            // A fresh appender always has room.
            let _ = app.append(t, v);
            self.open = Some(OpenChunk {
                part,
                mint: t,
                maxt: t,
                app,
            });
        } else {
            open.maxt = t;
        }
        self.last_t = t;
        Appended::InOrder
    }

    /// Moves the open chunk (if any) to the closed list.
    pub fn close_open(&mut self) {
        if let Some(open) = self.open.take() {
            if open.app.chunk().num_samples() > 0 {
                self.closed.push(HeadChunk {
                    part: open.part,
                    mint: open.mint,
                    maxt: open.maxt,
                    ooo: false,
                    chunk: open.app.into_chunk(),
                });
            }
        }
    }

    /// Moves the out-of-order buffer to closed chunks, one per partition.
    pub fn close_ooo(&mut self, part_ms: i64) {
        let ooo = std::mem::take(&mut self.ooo);
        let mut cur: Option<(i64, i64, i64, XorAppender)> = None;
        for (t, v) in ooo {
            let part = t.div_euclid(part_ms);
            if let Some((p, ..)) = &cur {
                if *p != part {
                    self.push_ooo(cur.take());
                }
            }
            let c = cur.get_or_insert_with(|| (part, t, t, XorAppender::new()));
            if c.3.append(t, v).is_err() {
                let mint = t;
                self.push_ooo(cur.take());
                let mut app = XorAppender::new();
                let _ = app.append(t, v);
                cur = Some((part, mint, t, app));
            }
            if let Some(c) = &mut cur {
                c.2 = t;
            }
        }
        self.push_ooo(cur);
    }

    fn push_ooo(&mut self, c: Option<(i64, i64, i64, XorAppender)>) {
        if let Some((part, mint, maxt, app)) = c {
            self.closed.push(HeadChunk {
                part,
                mint,
                maxt,
                ooo: true,
                chunk: app.into_chunk(),
            });
        }
    }

    /// Samples held (closed, open and out-of-order).
    pub fn num_samples(&self) -> usize {
        self.closed
            .iter()
            .map(|c| c.chunk.num_samples())
            .sum::<usize>()
            + self
                .open
                .as_ref()
                .map_or(0, |o| o.app.chunk().num_samples())
            + self.ooo.len()
    }

    /// Approximate heap bytes of the series' samples and state (labels not included).
    fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .closed
                .iter()
                .map(|c| c.chunk.bytes().len() + std::mem::size_of::<HeadChunk>())
                .sum::<usize>()
            + self
                .open
                .as_ref()
                .map_or(0, |o| o.app.chunk().bytes().len() + 64)
            + self.ooo.len() * 40
            + self.persisted_parts.len() * 8
    }
}

/// A series of the head: immutable identity beside its locked state.
#[derive(Debug)]
pub(crate) struct HeadSeries {
    pub r: SeriesRef,
    pub labels: Labels,
    /// `labels.encode()`: one contiguous run of bytes to compare a lookup key with (the
    /// labels' strings are each a heap object of their own, a cache miss apiece).
    key: Box<[u8]>,
    /// `labels.stable_hash()`.
    pub hash: u64,
    /// No label holds a 0x00 byte: `key` is each string followed by the two-byte
    /// separator, nothing escaped ([`Head::find_wire`] relies on it).
    plain: bool,
    /// Set (under the commit lock) when the series leaves the head.
    retired: AtomicBool,
    state: Mutex<MemSeries>,
}

impl HeadSeries {
    /// `labels.encode()`.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Whether the series has left the head. Stable while the commit lock is held.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Relaxed)
    }
}

/// A locked series: its state, and its labels beside it.
pub(crate) struct SeriesGuard<'a> {
    pub labels: &'a Labels,
    state: MutexGuard<'a, MemSeries>,
}

impl SeriesGuard<'_> {
    /// Approximate heap bytes of the series.
    pub fn memory_bytes(&self) -> usize {
        self.state.state_bytes()
            + self
                .labels
                .iter()
                .map(|l| 2 * (l.name.len() + l.value.len()) + 56)
                .sum::<usize>()
    }
}

impl Deref for SeriesGuard<'_> {
    type Target = MemSeries;
    fn deref(&self) -> &MemSeries {
        &self.state
    }
}

impl DerefMut for SeriesGuard<'_> {
    fn deref_mut(&mut self) -> &mut MemSeries {
        &mut self.state
    }
}

/// Locks a series, ignoring poisoning: a panic elsewhere leaves a series whose fields are
/// each valid.
pub(crate) fn lock(s: &HeadSeries) -> SeriesGuard<'_> {
    SeriesGuard {
        labels: &s.labels,
        state: s.state.lock().unwrap_or_else(PoisonError::into_inner),
    }
}

/// A hasher for `u64` keys: a 128-bit multiply folded to 64 bits, which spreads
/// sequential refs and keeps already random label hashes random. Not for untrusted keys
/// chosen to collide, which refs (assigned here) and XXH3 label hashes are not.
#[derive(Default)]
pub(crate) struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        let m = u128::from(self.0) * 0x9E37_79B9_7F4A_7C15_u128;
        (m as u64) ^ ((m >> 64) as u64)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8)) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type U64Map<V> = HashMap<u64, V, BuildHasherDefault<U64Hasher>>;

const SHARDS: usize = 64;

fn shard_of(key: u64) -> usize {
    // Refs are sequential and label hashes random: the low bits spread both.
    (key as usize) % SHARDS
}

/// Series of one hash shard: the first series of each label hash, and any others with the
/// same hash (collisions, compared by labels).
#[derive(Debug, Default)]
struct HashShard {
    first: U64Map<Arc<HeadSeries>>,
    collisions: U64Map<Vec<Arc<HeadSeries>>>,
}

impl HashShard {
    fn find(&self, hash: u64, eq: impl Fn(&HeadSeries) -> bool) -> Option<&Arc<HeadSeries>> {
        let s = self.first.get(&hash)?;
        if eq(s) {
            return Some(s);
        }
        self.collisions.get(&hash)?.iter().find(|s| eq(s))
    }

    fn insert(&mut self, s: Arc<HeadSeries>) {
        match self.first.entry(s.hash) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(s);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collisions.entry(s.hash).or_default().push(s);
            }
        }
    }

    fn remove(&mut self, hash: u64, r: SeriesRef) {
        if self.first.get(&hash).is_some_and(|s| s.r == r) {
            self.first.remove(&hash);
            if let Some(list) = self.collisions.get_mut(&hash) {
                if let Some(next) = list.pop() {
                    self.first.insert(hash, next);
                }
                if list.is_empty() {
                    self.collisions.remove(&hash);
                }
            }
        } else if let Some(list) = self.collisions.get_mut(&hash) {
            list.retain(|s| s.r != r);
            if list.is_empty() {
                self.collisions.remove(&hash);
            }
        }
    }
}

/// Whether `pairs`, taken as they are, are the labels of `s`: the same count, and the
/// strings one after another, each followed by the separator, are `s.key`.
///
/// Exact for a `plain` series without looking for 0x00 in the pairs: its key holds 0x00
/// only as the first byte of its separators, so each string of the pairs ends where one
/// of the series' strings ends; as many strings as the series has end at all of them.
fn plain_key_is(s: &HeadSeries, pairs: &[(&[u8], &[u8])]) -> bool {
    if !s.plain || s.labels.len() != pairs.len() {
        return false;
    }
    let key = &*s.key;
    let mut at = 0;
    for &(name, value) in pairs {
        for part in [name, value] {
            let end = at + part.len();
            match key.get(at..end + 2) {
                Some(k) if k[part.len()..] == SEPARATOR && same_bytes(&k[..part.len()], part) => {}
                _ => return false,
            }
            at = end + 2;
        }
    }
    at == key.len()
}

/// `a == b` for slices of equal length, short ones (label strings) compared as two
/// overlapping words instead of by a call to `memcmp`.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n > 16 {
        a == b
    } else if n >= 8 {
        word8(a, 0) == word8(b, 0) && word8(a, n - 8) == word8(b, n - 8)
    } else if n >= 4 {
        word4(a, 0) == word4(b, 0) && word4(a, n - 4) == word4(b, n - 4)
    } else if n > 0 {
        // First, middle and last cover one to three bytes.
        a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1]
    } else {
        true
    }
}

/// Eight bytes of `s` from `at` (`at + 8 <= s.len()`).
#[inline(always)]
fn word8(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[at..at + 8]);
    u64::from_ne_bytes(w)
}

/// Four bytes of `s` from `at` (`at + 4 <= s.len()`).
#[inline(always)]
fn word4(s: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&s[at..at + 4]);
    u32::from_ne_bytes(w)
}

/// The two bytes after each string of a `plain` series' key.
const SEPARATOR: [u8; 2] = crate::labels::SEPARATOR;

/// The series of the head and their index.
//
// Lock order: a ref shard, then a hash shard. Series are created and removed only under
// the commit lock (or while opening), so a lookup under the commit lock sees every series.
#[derive(Debug)]
pub(crate) struct Head {
    by_ref: Box<[RwLock<U64Map<Arc<HeadSeries>>>]>,
    by_hash: Box<[RwLock<HashShard>]>,
    /// A cache: series by the hash of the bytes their labels last came as (a remote-write
    /// series' label fields), to find a series again without encoding its labels.
    /// Entries are checked against the series' labels on use ([`Head::find_wire`]);
    /// retired series leave it with their last removal.
    by_wire: Box<[RwLock<U64Map<Arc<HeadSeries>>>]>,
    count: AtomicUsize,
    pub postings: MemPostings,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            by_ref: (0..SHARDS).map(|_| RwLock::default()).collect(),
            by_hash: (0..SHARDS).map(|_| RwLock::default()).collect(),
            by_wire: (0..SHARDS).map(|_| RwLock::default()).collect(),
            count: AtomicUsize::new(0),
            postings: MemPostings::default(),
        }
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl Head {
    pub fn get(&self, r: SeriesRef) -> Option<Arc<HeadSeries>> {
        read(&self.by_ref[shard_of(r)]).get(&r).cloned()
    }

    /// The series with exactly these labels (`hash` is their stable hash).
    pub fn find(&self, labels: &Labels, hash: u64) -> Option<Arc<HeadSeries>> {
        read(&self.by_hash[shard_of(hash)])
            .find(hash, |s| s.labels == *labels)
            .cloned()
    }

    /// The series whose labels encode ([`Labels::encode`]) to exactly `key` (`hash` is
    /// the stable hash of those labels).
    pub fn find_encoded(&self, key: &[u8], hash: u64) -> Option<Arc<HeadSeries>> {
        read(&self.by_hash[shard_of(hash)])
            .find(hash, |s| *s.key == *key)
            .cloned()
    }

    /// The series cached under `wire_hash` ([`Head::remember_wire`]) if its labels are
    /// exactly `pairs` (checked: a hash is never enough) and it is still in the head.
    pub fn find_wire(&self, wire_hash: u64, pairs: &[(&[u8], &[u8])]) -> Option<Arc<HeadSeries>> {
        let shard = read(&self.by_wire[shard_of(wire_hash)]);
        let s = shard.get(&wire_hash)?;
        (plain_key_is(s, pairs) && !s.is_retired()).then(|| Arc::clone(s))
    }

    /// Caches `s` under `wire_hash`, the hash of bytes its labels came as; replaces what
    /// was cached there. Series with 0x00 in a label are not cached.
    pub fn remember_wire(&self, wire_hash: u64, s: &Arc<HeadSeries>) {
        if !s.plain {
            return;
        }
        let shard = &self.by_wire[shard_of(wire_hash)];
        write(shard).insert(wire_hash, Arc::clone(s));
        // Retired since it was found: `remove` may have swept this shard before the
        // insert. Either it did after (and the entry is gone), or this load sees the
        // flag it set before sweeping (both SeqCst).
        if s.retired.load(SeqCst) {
            let mut m = write(shard);
            if m.get(&wire_hash).is_some_and(|c| Arc::ptr_eq(c, s)) {
                m.remove(&wire_hash);
            }
        }
    }

    /// Approximate heap bytes of the wire cache (a hash map slot of a key and a pointer
    /// per entry, at most 8/7 of them empty).
    pub fn wire_cache_bytes(&self) -> usize {
        self.by_wire.iter().map(|m| read(m).capacity() * 17).sum()
    }

    /// Adds a series under `r`; a series with the same ref is kept (WAL replay sees
    /// checkpointed series again).
    pub fn insert(&self, r: SeriesRef, labels: Labels, hash: u64) -> Arc<HeadSeries> {
        let mut refs = write(&self.by_ref[shard_of(r)]);
        if let Some(s) = refs.get(&r) {
            return Arc::clone(s);
        }
        self.postings.add(r, &labels);
        let key = labels.encode().into_boxed_slice();
        let s = Arc::new(HeadSeries {
            r,
            // No escape: the key is the strings and a separator after each.
            plain: key.len()
                == labels
                    .iter()
                    .map(|l| l.name.len() + l.value.len() + 4)
                    .sum::<usize>(),
            key,
            labels,
            hash,
            retired: AtomicBool::new(false),
            state: Mutex::new(MemSeries::new()),
        });
        refs.insert(r, Arc::clone(&s));
        write(&self.by_hash[shard_of(hash)]).insert(Arc::clone(&s));
        self.count.fetch_add(1, Relaxed);
        s
    }

    /// Removes series (already persisted and idle, or never logged).
    pub fn remove(&self, gone: &[Arc<HeadSeries>]) {
        if gone.is_empty() {
            return;
        }
        for s in gone {
            let mut refs = write(&self.by_ref[shard_of(s.r)]);
            if refs.remove(&s.r).is_some() {
                write(&self.by_hash[shard_of(s.hash)]).remove(s.hash, s.r);
                s.retired.store(true, SeqCst);
                self.count.fetch_sub(1, Relaxed);
            }
        }
        // The wire cache does not know its entries' hashes by series: sweep it (removals
        // come with flushes, which visit every series anyway).
        for shard in self.by_wire.iter() {
            write(shard).retain(|_, s| !s.retired.load(SeqCst));
        }
        self.postings
            .delete_with_labels(gone.iter().map(|s| (s.r, &s.labels)));
    }

    /// Every series, in ref order.
    pub fn all(&self) -> Vec<Arc<HeadSeries>> {
        let mut v: Vec<Arc<HeadSeries>> = Vec::with_capacity(self.num_series());
        for shard in self.by_ref.iter() {
            v.extend(read(shard).values().cloned());
        }
        v.sort_unstable_by_key(|s| s.r);
        v
    }

    pub fn num_series(&self) -> usize {
        self.count.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(v: &str) -> Labels {
        Labels::from_pairs([("__name__", "m"), ("a", v)]).expect("valid")
    }

    #[test]
    fn colliding_hashes_are_told_apart_by_labels() {
        let head = Head::default();
        // Three series forced onto one hash.
        let (a, b, c) = (labels("a"), labels("b"), labels("c"));
        head.insert(1, a.clone(), 7);
        head.insert(2, b.clone(), 7);
        head.insert(3, c.clone(), 7);
        assert_eq!(head.find(&a, 7).map(|s| s.r), Some(1));
        assert_eq!(head.find(&b, 7).map(|s| s.r), Some(2));
        assert_eq!(head.find(&c, 7).map(|s| s.r), Some(3));
        assert!(head.find(&labels("d"), 7).is_none());
        assert_eq!(head.find_encoded(&b.encode(), 7).map(|s| s.r), Some(2));
        assert!(head.find_encoded(&labels("d").encode(), 7).is_none());
        let first = head.get(1).expect("present");
        head.remove(std::slice::from_ref(&first));
        assert!(first.is_retired());
        assert!(head.find(&a, 7).is_none());
        assert_eq!(head.find(&b, 7).map(|s| s.r), Some(2));
        assert_eq!(head.find(&c, 7).map(|s| s.r), Some(3));
        let third = head.get(3).expect("present");
        head.remove(&[third]);
        assert_eq!(head.find(&b, 7).map(|s| s.r), Some(2));
        assert!(head.find(&c, 7).is_none());
        assert_eq!(head.num_series(), 1);
        assert_eq!(head.all().len(), 1);
    }

    #[test]
    fn same_bytes_is_slice_equality() {
        let data: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37)).collect();
        for n in 0..=20 {
            for at in 0..4 {
                let a = &data[at..at + n];
                let copy = a.to_vec();
                assert!(same_bytes(a, &copy));
                for i in 0..n {
                    let mut b = a.to_vec();
                    b[i] ^= 0x40;
                    assert!(!same_bytes(a, &b), "n {n} differs at {i}");
                }
                assert!(!same_bytes(a, &data[at..at + n + 1]));
            }
        }
    }

    fn pairs<'a>(p: &[(&'a str, &'a str)]) -> Vec<(&'a [u8], &'a [u8])> {
        p.iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect()
    }

    #[test]
    fn wire_cache_finds_only_the_exact_labels() {
        let head = Head::default();
        let abc = Labels::from_pairs([("a", "b"), ("c", "d"), ("e", "f")]).expect("valid");
        let s = head.insert(1, abc.clone(), abc.stable_hash());
        head.remember_wire(42, &s);
        let exact = pairs(&[("a", "b"), ("c", "d"), ("e", "f")]);
        assert_eq!(head.find_wire(42, &exact).map(|s| s.r), Some(1));
        // Another hash, or other labels under the same hash: not found.
        assert!(head.find_wire(43, &exact).is_none());
        for other in [
            pairs(&[("a", "b"), ("c", "d")]),
            pairs(&[("a", "b"), ("c", "d"), ("e", "g")]),
            pairs(&[("a", "b"), ("c", "d"), ("e", "f"), ("g", "h")]),
            pairs(&[("a", "b"), ("c", "d"), ("e", "")]),
            // Strings holding the separator, spanning several of the series' strings.
            pairs(&[("a\0\u{1}b\0\u{1}c", "d"), ("e", "f")]),
            pairs(&[("a", "b\0\u{1}c"), ("d", "e"), ("\0\u{1}f", "")]),
        ] {
            assert!(head.find_wire(42, &other).is_none(), "{other:?}");
        }
        // A retired series leaves the cache.
        head.remove(std::slice::from_ref(&s));
        assert!(head.find_wire(42, &exact).is_none());
        assert!(read(&head.by_wire[shard_of(42)]).is_empty());
        // Remembered after it was retired: dropped at once.
        head.remember_wire(42, &s);
        assert!(read(&head.by_wire[shard_of(42)]).is_empty());
        // A series with 0x00 in a label is never cached (its key is escaped).
        let nul = Labels::from_pairs([("a", "x\0y")]).expect("valid");
        let n = head.insert(2, nul.clone(), nul.stable_hash());
        head.remember_wire(7, &n);
        assert!(head.find_wire(7, &pairs(&[("a", "x\0y")])).is_none());
    }
}
