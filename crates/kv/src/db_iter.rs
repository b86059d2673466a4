//! The user-facing iterators: a merged view of all sources that shows, for each user key,
//! only its newest version visible at the iterator's sequence number, and hides deleted
//! keys.

use crate::db::SuperVersion;
use crate::error::Result;
use crate::iterator::{InternalIterator, KeyBuf};
use crate::key::{compare_bytes, pack_trailer, parse_internal_key, seek_key, user_key, ValueKind};
use crate::memtable::MemtableIterator;
use crate::merge::MergingIterator;
use crate::range_del::RangeTombstoneSet;
use crate::version::LevelIterator;
use std::cmp::Ordering;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// The merged cursor is at the entry that was yielded.
    Forward,
    /// The merged cursor is just before all entries of the yielded key.
    Reverse,
}

/// One source a [`DbIterator`] merges: a memtable, or one L0 table or deeper level. An
/// enum rather than a boxed trait object, so that the merge's per-entry calls are direct.
// Sources live side by side in the merge's Vec, one of each per iterator: their size
// matters less than reaching a table cursor without another pointer.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Source {
    Mem(MemtableIterator),
    Level(LevelIterator),
}

macro_rules! on_source {
    ($self:expr, $it:ident => $e:expr) => {
        match $self {
            Source::Mem($it) => $e,
            Source::Level($it) => $e,
        }
    };
}

impl InternalIterator for Source {
    #[inline]
    fn valid(&self) -> bool {
        on_source!(self, it => it.valid())
    }
    fn seek_to_first(&mut self) -> Result<()> {
        on_source!(self, it => it.seek_to_first())
    }
    fn seek_to_last(&mut self) -> Result<()> {
        on_source!(self, it => it.seek_to_last())
    }
    fn seek(&mut self, target: &[u8]) -> Result<()> {
        on_source!(self, it => it.seek(target))
    }
    fn seek_lazily(&mut self, bound: &[u8]) -> Result<()> {
        on_source!(self, it => it.seek_lazily(bound))
    }
    #[inline]
    fn next(&mut self) -> Result<()> {
        on_source!(self, it => it.next())
    }
    #[inline]
    fn prev(&mut self) -> Result<()> {
        on_source!(self, it => it.prev())
    }
    #[inline(always)]
    fn key(&self) -> &[u8] {
        on_source!(self, it => it.key())
    }
    #[inline]
    fn value(&self) -> &[u8] {
        on_source!(self, it => it.value())
    }
    #[inline]
    fn prepare_value(&mut self) -> Result<()> {
        match self {
            Source::Mem(_) => Ok(()),
            Source::Level(it) => it.prepare_value(),
        }
    }
    #[inline(always)]
    fn is_bound(&self) -> bool {
        match self {
            Source::Mem(_) => false,
            Source::Level(it) => it.is_bound(),
        }
    }
}

/// A cursor over user keys and values at a fixed sequence number, in either direction.
///
/// It holds the memtables and tables it reads, so it keeps seeing the same data while
/// flushes go on.
pub struct DbIterator {
    /// Keeps the memtables and tables (and so their files) alive while the cursor lives.
    sources: Arc<SuperVersion>,
    /// Range deletes to apply (those newer than `seq` are ignored by lookups).
    tombstones: RangeTombstoneSet,
    merged: MergingIterator<Source>,
    seq: u64,
    direction: Direction,
    valid: bool,
    /// The current user key (a copy: forward, the next step compares against it).
    key: KeyBuf,
    /// The current value, going backward only (the merged cursor has moved past its
    /// entry); going forward the value is read in place from the merged cursor.
    value: Vec<u8>,
    /// Bytes (keys and values) to return before the next read sample (read-triggered
    /// compaction); never reached when reads charge nothing.
    sample_in: i64,
}

/// Bytes until a scan's next read sample: jittered around
/// [`crate::compaction::READ_SAMPLE_BYTES`] so that scans do not sample in step.
fn next_sample_in() -> i64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: AtomicU64 = AtomicU64::new(0);
    // splitmix64 of a counter.
    let mut z = SEED
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let period = crate::compaction::READ_SAMPLE_BYTES;
    period / 2 + (z % period as u64) as i64
}

fn corrupt_key(ikey: &[u8]) -> crate::Error {
    crate::Error::corruption(
        "<iterator>",
        0,
        format!("malformed internal key of {} bytes", ikey.len()),
    )
}

impl DbIterator {
    pub(crate) fn new(sources: Arc<SuperVersion>, seq: u64) -> Self {
        DbIterator {
            sample_in: if sources.charges_reads() {
                next_sample_in()
            } else {
                i64::MAX
            },
            merged: MergingIterator::new(sources.iterators()).sources_by_age(),
            tombstones: sources.range_tombstones(),
            sources,
            seq,
            direction: Direction::Forward,
            valid: false,
            key: KeyBuf::default(),
            value: Vec::new(),
        }
    }

    /// True if positioned at an entry.
    #[inline]
    pub fn valid(&self) -> bool {
        self.valid
    }

    /// The current key. REQUIRES: `valid()`.
    #[inline]
    pub fn key(&self) -> &[u8] {
        self.key.as_slice()
    }

    /// The current value. REQUIRES: `valid()`.
    #[inline]
    pub fn value(&self) -> &[u8] {
        match self.direction {
            Direction::Forward if self.valid => self.merged.value(),
            _ => &self.value,
        }
    }

    /// Positions at the smallest key.
    pub fn seek_to_first(&mut self) -> Result<()> {
        self.direction = Direction::Forward;
        self.merged.seek_to_first()?;
        self.find_next(false)
    }

    /// Positions at the largest key.
    pub fn seek_to_last(&mut self) -> Result<()> {
        self.direction = Direction::Reverse;
        self.merged.seek_to_last()?;
        self.find_prev()
    }

    /// Positions at the first key `>= target`.
    pub fn seek(&mut self, target: &[u8]) -> Result<()> {
        self.direction = Direction::Forward;
        // Built in a key buffer (inline for short keys): a point seek allocates nothing
        // for it. `self.key` is rewritten by `find_next` anyway.
        let mut ikey = std::mem::take(&mut self.key);
        ikey.clear();
        ikey.keep_and_append(0, target);
        ikey.keep_and_append(
            target.len(),
            &pack_trailer(self.seq, ValueKind::FOR_SEEK).to_le_bytes(),
        );
        let r = self.merged.seek(ikey.as_slice());
        self.key = ikey;
        self.valid = false;
        r?;
        self.find_next(false)
    }

    /// Positions at the last key `<= target`.
    pub fn seek_for_prev(&mut self, target: &[u8]) -> Result<()> {
        // Land after every version of `target`, then walk back.
        self.direction = Direction::Reverse;
        self.merged.seek(&seek_key(target, 0))?;
        // seek_key(target, 0) sorts before target's seq-0 deletion; step over it if present.
        while self.merged.valid() && user_key(self.merged.key()) <= target {
            self.merged.next()?;
        }
        if self.merged.valid() {
            self.merged.prev()?;
        } else {
            self.merged.seek_to_last()?;
        }
        self.find_prev()
    }

    /// Moves to the next key. REQUIRES: `valid()`.
    // A cursor, not an `Iterator`: it also moves backwards and seeks (see `Scan` for the
    // `Iterator` form).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<()> {
        if self.direction == Direction::Reverse {
            // The cursor is before the current key's entries: bring it past them.
            self.direction = Direction::Forward;
            if self.merged.valid() {
                self.merged.next()?;
            } else {
                self.merged.seek_to_first()?;
            }
        } else {
            // The cursor is at the current entry.
            self.merged.next()?;
        }
        // `self.key` is the current key: skip its other versions.
        self.find_next(true)?;
        self.count_read();
        Ok(())
    }

    /// Moves to the previous key. REQUIRES: `valid()`.
    pub fn prev(&mut self) -> Result<()> {
        if self.direction == Direction::Forward {
            // Bring the cursor before every entry of the current key.
            self.direction = Direction::Reverse;
            loop {
                self.merged.prev()?;
                if !self.merged.valid()
                    || compare_bytes(user_key(self.merged.key()), self.key.as_slice())
                        == Ordering::Less
                {
                    break;
                }
            }
        }
        self.find_prev()?;
        self.count_read();
        Ok(())
    }

    /// Counts the entry returned towards the next read sample.
    #[inline]
    fn count_read(&mut self) {
        if self.valid {
            self.sample_in -= (self.key.len() + self.value().len()) as i64;
            if self.sample_in < 0 {
                self.sample_read();
            }
        }
    }

    #[cold]
    fn sample_read(&mut self) {
        self.sample_in = next_sample_in();
        self.sources.sample_read(self.key.as_slice());
    }

    /// A version covered by a range delete visible to this iterator counts as deleted.
    #[inline]
    fn effective_kind(&self, user_key: &[u8], seq: u64, kind: ValueKind) -> ValueKind {
        if kind == ValueKind::Value
            && !self.tombstones.is_empty()
            && self.tombstones.covering_seq(user_key, self.seq) > seq
        {
            ValueKind::Deletion
        } else {
            kind
        }
    }

    /// Forward: positions at the newest visible version of the first user key at or after
    /// the cursor that is not deleted, and, if `skipping`, is greater than `self.key`.
    fn find_next(&mut self, mut skipping: bool) -> Result<()> {
        while self.merged.valid() {
            let ikey = self.merged.key();
            let p = parse_internal_key(ikey).ok_or_else(|| corrupt_key(ikey))?;
            let hidden = p.seq > self.seq
                || (skipping
                    && compare_bytes(p.user_key, self.key.as_slice()) != Ordering::Greater);
            if !hidden {
                let kind = self.effective_kind(p.user_key, p.seq, p.kind);
                self.key.set_padded(ikey, p.user_key.len());
                match kind {
                    // Hide the older versions of the deleted key too.
                    ValueKind::Deletion => skipping = true,
                    ValueKind::Value => {
                        self.valid = true;
                        return Ok(());
                    }
                }
            }
            self.merged.next()?;
        }
        self.valid = false;
        Ok(())
    }

    /// Backward: walks entries (oldest version first within a key) and stops once it has
    /// the newest visible version of a key and the cursor has moved before that key.
    fn find_prev(&mut self) -> Result<()> {
        let mut have_value = false;
        while self.merged.valid() {
            let ikey = self.merged.key();
            let p = parse_internal_key(ikey).ok_or_else(|| corrupt_key(ikey))?;
            if p.seq <= self.seq {
                if have_value && compare_bytes(p.user_key, self.key.as_slice()) == Ordering::Less {
                    break;
                }
                match self.effective_kind(p.user_key, p.seq, p.kind) {
                    ValueKind::Deletion => have_value = false,
                    ValueKind::Value => {
                        self.key.set_padded(ikey, p.user_key.len());
                        self.value.clear();
                        self.value.extend_from_slice(self.merged.value());
                        have_value = true;
                    }
                }
            }
            self.merged.prev()?;
        }
        self.valid = have_value;
        Ok(())
    }
}

/// An iterator over `(key, value)` pairs in a key range, ascending or descending
/// (see [`crate::Db::scan`]). It stops at the first error, which it yields.
pub struct Scan {
    it: DbIterator,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    reverse: bool,
    started: bool,
    done: bool,
}

fn owned(b: Bound<&impl AsRef<[u8]>>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The smallest key greater than every key starting with `prefix` (None if there is none).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last < 0xff {
            p.push(last + 1);
            return Some(p);
        }
    }
    None
}

impl Scan {
    pub(crate) fn new<K: AsRef<[u8]>>(
        it: DbIterator,
        range: &impl RangeBounds<K>,
        reverse: bool,
    ) -> Scan {
        Scan {
            it,
            lower: owned(range.start_bound()),
            upper: owned(range.end_bound()),
            reverse,
            started: false,
            done: false,
        }
    }

    pub(crate) fn prefix(it: DbIterator, prefix: &[u8]) -> Scan {
        Scan {
            it,
            lower: Bound::Included(prefix.to_vec()),
            upper: prefix_successor(prefix).map_or(Bound::Unbounded, Bound::Excluded),
            reverse: false,
            started: false,
            done: false,
        }
    }

    fn position(&mut self) -> Result<()> {
        if self.reverse {
            match &self.upper {
                Bound::Unbounded => self.it.seek_to_last(),
                Bound::Included(k) | Bound::Excluded(k) => {
                    let k = k.clone();
                    self.it.seek_for_prev(&k)
                }
            }
        } else {
            match &self.lower {
                Bound::Unbounded => self.it.seek_to_first(),
                Bound::Included(k) | Bound::Excluded(k) => {
                    let k = k.clone();
                    self.it.seek(&k)
                }
            }
        }
    }

    fn step(&mut self) -> Result<()> {
        if self.reverse {
            self.it.prev()
        } else {
            self.it.next()
        }
    }

    fn above_lower(&self, k: &[u8]) -> bool {
        match &self.lower {
            Bound::Included(l) => k >= l.as_slice(),
            Bound::Excluded(l) => k > l.as_slice(),
            Bound::Unbounded => true,
        }
    }

    fn below_upper(&self, k: &[u8]) -> bool {
        match &self.upper {
            Bound::Included(u) => k <= u.as_slice(),
            Bound::Excluded(u) => k < u.as_slice(),
            Bound::Unbounded => true,
        }
    }

    fn advance(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        if self.started {
            self.step()?;
        } else {
            self.started = true;
            self.position()?;
        }
        // Positioning lands inside the range except on an excluded bound, which we step over.
        while self.it.valid() {
            let k = self.it.key();
            let (inside_near, inside_far) = if self.reverse {
                (self.below_upper(k), self.above_lower(k))
            } else {
                (self.above_lower(k), self.below_upper(k))
            };
            if !inside_far {
                return Ok(None);
            }
            if inside_near {
                break;
            }
            self.step()?;
        }
        if !self.it.valid() {
            return Ok(None);
        }
        Ok(Some((self.it.key().to_vec(), self.it.value().to_vec())))
    }
}

impl Iterator for Scan {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.advance() {
            Ok(Some(kv)) => Some(Ok(kv)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memtable::Memtable;

    fn collect(it: &mut DbIterator, forward: bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while it.valid() {
            out.push(it.key().to_vec());
            if forward {
                it.next().unwrap()
            } else {
                it.prev().unwrap()
            }
        }
        out
    }

    #[test]
    fn hides_deletes_shadowed_and_future_versions() {
        let new = Arc::new(Memtable::new());
        let old = Arc::new(Memtable::new());
        old.add(1, ValueKind::Value, b"a", b"a1");
        old.add(2, ValueKind::Value, b"b", b"b2");
        old.add(3, ValueKind::Value, b"c", b"c3");
        new.add(4, ValueKind::Deletion, b"b", b"");
        new.add(5, ValueKind::Value, b"c", b"c5");
        new.add(6, ValueKind::Value, b"d", b"d6");
        new.add(9, ValueKind::Value, b"e", b"future");
        let sources = Arc::new(SuperVersion::new(
            new.clone(),
            vec![old.clone()],
            Arc::new(crate::version::Version::default()),
        ));
        let mk = |seq| DbIterator::new(sources.clone(), seq);
        let mut it = mk(6);
        it.seek_to_first().unwrap();
        assert_eq!(
            collect(&mut it, true),
            vec![b"a".to_vec(), b"c".to_vec(), b"d".to_vec()]
        );
        it.seek_to_last().unwrap();
        assert_eq!(
            collect(&mut it, false),
            vec![b"d".to_vec(), b"c".to_vec(), b"a".to_vec()]
        );
        it.seek(b"c").unwrap();
        assert_eq!(it.value(), b"c5");
        it.prev().unwrap();
        assert_eq!(it.key(), b"a");
        it.next().unwrap();
        assert_eq!(it.key(), b"c");
        it.seek_for_prev(b"bz").unwrap();
        assert_eq!(it.key(), b"a");
        // At sequence 3 "b" is alive and "c" has its old value.
        let mut it = mk(3);
        it.seek_to_last().unwrap();
        assert_eq!(it.value(), b"c3");
        it.prev().unwrap();
        assert_eq!(it.key(), b"b");
    }

    #[test]
    fn prefix_successor_handles_ff() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
    }
}
