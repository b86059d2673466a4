//! The merging iterator: one sorted view over many sorted sources, by a binary heap of the
//! sources' cursors (a min-heap going forward, a max-heap going backward).

use crate::error::Result;
use crate::iterator::InternalIterator;
use crate::key::{compare_bytes, compare_internal, trailer, user_key, TRAILER_LEN};
use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Forward,
    Reverse,
}

/// Merges children into one [`InternalIterator`]. On equal keys the child listed first
/// wins; callers list newer sources first.
///
/// The children are of one type `I`: boxed cursors of any kind by default, or an enum of
/// the few kinds a reader merges, which lets the hot path (compare, step) be inlined
/// instead of called through a vtable.
pub struct MergingIterator<I: InternalIterator = Box<dyn InternalIterator>> {
    children: Vec<I>,
    /// Per child, [`Rank`] of its current key (meaningful while it is in the heap).
    /// Almost all comparisons are decided by these numbers, without asking a child for
    /// its key (a call through the source, level, table and block cursors) or comparing
    /// bytes.
    rank: Vec<Rank>,
    /// Indexes of the valid children, heap-ordered for `direction`; the top is current.
    heap: Vec<usize>,
    direction: Direction,
    /// Slot in `heap` (1 or 2) of the child that comes first after the top, or 0 if not
    /// known. It stays right while only the top moves and stays on top: the rest of the
    /// heap is untouched. A scan mostly reads runs of one child (a full compaction leaves
    /// most keys in one level; a sequential load leaves tables of disjoint ranges), and
    /// then a step is one comparison against this child instead of a sift through the heap.
    runner_up: usize,
    /// See [`MergingIterator::sources_by_age`].
    by_age: bool,
}

impl<I: InternalIterator> MergingIterator<I> {
    /// Merges `children` (newest source first).
    pub fn new(children: Vec<I>) -> Self {
        MergingIterator {
            heap: Vec::with_capacity(children.len()),
            rank: vec![Rank::default(); children.len()],
            children,
            direction: Direction::Forward,
            runner_up: 0,
            by_age: false,
        }
    }

    /// Declares that, for any user key, every version in a child is newer (has a larger
    /// sequence number) than every version in the children after it: the memtables,
    /// L0 tables and levels of one read view, newest first (point reads rely on it too).
    /// A seek then stops searching at the first child whose entry has the sought user
    /// key: each later child's first entry at or after the target is after that entry
    /// (an older version, or a larger user key), so it gets that entry's key as a lower
    /// bound ([`InternalIterator::seek_lazily`]) and is searched only if the merge reaches
    /// it. A point seek that finds its key reads no source older than the one holding it.
    pub fn sources_by_age(mut self) -> Self {
        self.by_age = true;
        self
    }

    /// Records the rank of child `c`'s current key, after it moved. REQUIRES: valid.
    #[inline(always)]
    fn load(&mut self, c: usize) {
        self.rank[c] = Rank::of(self.children[c].key());
    }

    /// True if child `a` should come out before child `b`.
    #[inline(always)]
    fn before(&self, a: usize, b: usize) -> bool {
        let (ra, rb) = (&self.rank[a], &self.rank[b]);
        let forward = self.direction == Direction::Forward;
        if ra.prefix != rb.prefix {
            return (ra.prefix < rb.prefix) == forward;
        }
        // Versions of one user key (an overwritten key in two sources) tie on the prefix
        // and are decided here, unless both user keys run past the prefix.
        if ra.tie < Rank::LONG || rb.tie < Rank::LONG {
            if ra.tie == rb.tie {
                return a < b;
            }
            return (ra.tie < rb.tie) == forward;
        }
        self.before_by_keys(a, b)
    }

    /// [`MergingIterator::before`] for keys whose user keys share their first 16 bytes
    /// and are both longer.
    #[inline(never)]
    fn before_by_keys(&self, a: usize, b: usize) -> bool {
        let ord = compare_internal(self.children[a].key(), self.children[b].key());
        match (ord, self.direction) {
            (Ordering::Equal, _) => a < b,
            (Ordering::Less, Direction::Forward) | (Ordering::Greater, Direction::Reverse) => true,
            _ => false,
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        let Some(&moving) = self.heap.get(i) else {
            return;
        };
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            if l >= n {
                break;
            }
            // The child of `i` that comes first.
            let mut c = l;
            if r < n && self.before(self.heap[r], self.heap[l]) {
                c = r;
            }
            if !self.before(self.heap[c], moving) {
                break;
            }
            self.heap[i] = self.heap[c];
            i = c;
        }
        self.heap[i] = moving;
    }

    fn rebuild(&mut self, direction: Direction) {
        self.direction = direction;
        self.runner_up = 0;
        // Refilled in place: a seek allocates nothing once the heap has grown.
        self.heap.clear();
        for i in 0..self.children.len() {
            if self.children[i].valid() {
                self.load(i);
                self.heap.push(i);
            }
        }
        for i in (0..self.heap.len() / 2).rev() {
            self.sift_down(i);
        }
    }

    /// After the top child moved: restore the heap.
    #[inline]
    fn fix_top(&mut self) {
        let top = self.heap[0];
        if !self.children[top].valid() {
            self.runner_up = 0;
            let last = self.heap.len() - 1;
            self.heap.swap(0, last);
            self.heap.pop();
            if !self.heap.is_empty() {
                self.sift_down(0);
            }
            return;
        }
        let n = self.heap.len();
        if n == 1 {
            return;
        }
        self.load(top);
        let mut slot = self.runner_up;
        if slot == 0 {
            slot = if n > 2 && self.before(self.heap[2], self.heap[1]) {
                2
            } else {
                1
            };
            self.runner_up = slot;
        }
        if self.before(top, self.heap[slot]) {
            // The top still comes first: the heap is unchanged.
            return;
        }
        // The runner-up comes before every child (the top included): it becomes the top,
        // and the old top sinks from the runner-up's slot, below which it belongs.
        self.runner_up = 0;
        self.heap.swap(0, slot);
        self.sift_down(slot);
    }

    fn current(&self) -> usize {
        self.heap[0]
    }

    /// The top child's value is the merge's: make it readable (see
    /// [`InternalIterator::prepare_value`]); the other children stay lazy.
    #[inline]
    fn prepare_top(&mut self) -> Result<()> {
        let Some(&top) = self.heap.first() else {
            return Ok(());
        };
        if self.children[top].is_bound() {
            return self.settle_bounds();
        }
        let r = self.children[top].prepare_value();
        if r.is_err() {
            self.fail();
        }
        r
    }

    /// While the top child only holds a lower bound of its key (see
    /// [`InternalIterator::is_bound`]): position it, and let it sink to where its real key
    /// belongs. Children below the top keep their bounds: every key above them in the heap
    /// is at most their bound, so at most their real key.
    #[inline(never)]
    fn settle_bounds(&mut self) -> Result<()> {
        while let Some(&top) = self.heap.first() {
            let bound = self.children[top].is_bound();
            let r = self.children[top].prepare_value();
            if r.is_err() {
                self.fail();
                return r;
            }
            if !bound {
                return Ok(());
            }
            // The key moved forward, as after a step of the top.
            self.fix_top();
        }
        Ok(())
    }

    /// Invalid after an error, as every cursor.
    fn fail(&mut self) {
        self.heap.clear();
        self.runner_up = 0;
    }
}

impl<I: InternalIterator> InternalIterator for MergingIterator<I> {
    #[inline]
    fn valid(&self) -> bool {
        !self.heap.is_empty()
    }

    fn seek_to_first(&mut self) -> Result<()> {
        for c in &mut self.children {
            c.seek_to_first()?;
        }
        self.rebuild(Direction::Forward);
        self.prepare_top()
    }

    fn seek_to_last(&mut self) -> Result<()> {
        for c in &mut self.children {
            c.seek_to_last()?;
        }
        self.rebuild(Direction::Reverse);
        self.prepare_top()
    }

    fn seek(&mut self, target: &[u8]) -> Result<()> {
        let n = self.children.len();
        let mut i = 0;
        while i < n {
            let c = &mut self.children[i];
            c.seek(target)?;
            i += 1;
            if self.by_age
                && c.valid()
                && !c.is_bound()
                && compare_bytes(user_key(c.key()), user_key(target)) == Ordering::Equal
            {
                // Ties between equal keys go to the earlier child: the bound of a later
                // one may be this very key.
                let (found, older) = self.children.split_at_mut(i);
                let key = found[i - 1].key();
                for c in older {
                    c.seek_lazily(key)?;
                }
                break;
            }
        }
        self.rebuild(Direction::Forward);
        self.prepare_top()
    }

    fn next(&mut self) -> Result<()> {
        let cur = self.current();
        if self.direction == Direction::Reverse {
            // Every other child must move to its first entry after the current key.
            let key = self.children[cur].key().to_vec();
            for (i, c) in self.children.iter_mut().enumerate() {
                if i == cur {
                    continue;
                }
                c.seek(&key)?;
                // A bound equal to `key` stands for an entry after it.
                if c.valid() && !c.is_bound() && compare_internal(c.key(), &key) == Ordering::Equal
                {
                    c.next()?;
                }
            }
            self.children[cur].next()?;
            self.rebuild(Direction::Forward);
            return self.prepare_top();
        }
        self.children[cur].next()?;
        self.fix_top();
        // A child that just moved is settled; only a new top may be lazy.
        if self.heap.first().is_some_and(|&top| top != cur) {
            self.prepare_top()?;
        }
        Ok(())
    }

    fn prev(&mut self) -> Result<()> {
        let cur = self.current();
        if self.direction == Direction::Forward {
            // Every other child must move to its last entry before the current key.
            let key = self.children[cur].key().to_vec();
            for (i, c) in self.children.iter_mut().enumerate() {
                if i == cur {
                    continue;
                }
                c.seek(&key)?;
                if c.valid() {
                    c.prev()?;
                } else {
                    c.seek_to_last()?;
                }
            }
            self.children[cur].prev()?;
            self.rebuild(Direction::Reverse);
            return self.prepare_top();
        }
        self.children[cur].prev()?;
        self.fix_top();
        if self.heap.first().is_some_and(|&top| top != cur) {
            self.prepare_top()?;
        }
        Ok(())
    }

    #[inline(always)]
    fn key(&self) -> &[u8] {
        self.children[self.current()].key()
    }

    #[inline]
    fn value(&self) -> &[u8] {
        self.children[self.current()].value()
    }
}

/// What the merge compares first of a child's key (see [`Rank::of`]).
///
/// Halves of 64 bits rather than `u128`s: a rank is stored by the step that moved its
/// child and read back at once by the comparison that follows; a 16-byte load of what was
/// stored as two 8-byte halves cannot be forwarded from the store buffer and waits for the
/// stores to retire (on the scan's hottest path, ~15% of a step was that stall).
#[derive(Debug, Clone, Copy, Default)]
struct Rank {
    /// [`key_prefix`] of the key: high and low halves.
    prefix: (u64, u64),
    /// The user key's length (capped at 17), then the complemented trailer (larger
    /// sequence numbers first): for keys of equal prefixes of which at least one has a
    /// user key of at most 16 bytes, this orders them as [`compare_internal`] does. The
    /// shorter user key is then a prefix of the longer one (the prefix pads with zeros),
    /// so it comes first; of equal lengths, the user keys are equal and the trailers
    /// decide.
    tie: (u64, u64),
}

impl Rank {
    /// `tie` at and above this: a user key longer than the prefix.
    const LONG: (u64, u64) = (17, 0);

    #[inline(always)]
    fn of(ikey: &[u8]) -> Rank {
        // As `user_key` and `trailer`: a key shorter than a trailer has an empty user key
        // and trailer 0.
        let ulen = ikey.len().saturating_sub(TRAILER_LEN).min(17) as u64;
        let prefix = key_prefix(ikey);
        Rank {
            prefix: ((prefix >> 64) as u64, prefix as u64),
            tie: (ulen, !trailer(ikey)),
        }
    }
}

/// The first 16 bytes of `ikey`'s user key, zero-padded, as a big-endian number: if the
/// prefixes of two keys differ, they order the keys as [`compare_internal`] does (the first
/// differing byte is a byte of both user keys, or a padding zero of the one that is a
/// prefix of the other, the smaller). Equal prefixes decide nothing.
#[inline(always)]
fn key_prefix(ikey: &[u8]) -> u128 {
    // As `user_key`: a key shorter than a trailer has an empty user key.
    let ulen = ikey.len().saturating_sub(TRAILER_LEN);
    if ulen >= 16 {
        return ikey
            .first_chunk::<16>()
            .map_or(0, |c| u128::from_be_bytes(*c));
    }
    if ulen == 0 {
        return 0;
    }
    match ikey.first_chunk::<16>() {
        // The bytes after the user key (its trailer) are masked off.
        Some(c) => u128::from_be_bytes(*c) & (u128::MAX << (8 * (16 - ulen))),
        None => {
            let mut b = [0u8; 16];
            b[..ulen].copy_from_slice(&ikey[..ulen]);
            u128::from_be_bytes(b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{internal_key, seek_key, ValueKind};
    use crate::memtable::Memtable;
    use proptest::prelude::*;
    use std::sync::Arc;

    #[test]
    fn merges_in_order_both_ways_with_direction_switches() {
        let tables: Vec<Arc<Memtable>> = (0..4).map(|_| Arc::new(Memtable::new())).collect();
        let mut all = Vec::new();
        let mut seq = 0;
        for i in 0..200u32 {
            seq += 1;
            let k = format!("k{:03}", (i * 7919) % 150);
            tables[(i % 4) as usize].add(seq, ValueKind::Value, k.as_bytes(), b"v");
            all.push(internal_key(k.as_bytes(), seq, ValueKind::Value));
        }
        all.sort_by(|a, b| compare_internal(a, b));
        let mut m = MergingIterator::new(
            tables
                .iter()
                .map(|t| Box::new(t.iter()) as Box<dyn InternalIterator>)
                .collect(),
        );
        m.seek_to_first().unwrap();
        let mut got = Vec::new();
        while m.valid() {
            got.push(m.key().to_vec());
            m.next().unwrap();
        }
        assert_eq!(got, all);
        m.seek_to_last().unwrap();
        let mut back = Vec::new();
        while m.valid() {
            back.push(m.key().to_vec());
            m.prev().unwrap();
        }
        back.reverse();
        assert_eq!(back, all);
        // Zig-zag: next then prev returns to the same entry, everywhere.
        m.seek_to_first().unwrap();
        for i in 0..all.len() - 1 {
            assert_eq!(m.key(), &all[i][..]);
            m.next().unwrap();
            assert_eq!(m.key(), &all[i + 1][..]);
            m.prev().unwrap();
            assert_eq!(m.key(), &all[i][..]);
            m.next().unwrap();
        }
    }

    /// A cursor move in the merge model tests ([`walk_matches_model`]).
    #[derive(Debug, Clone)]
    enum Move {
        First,
        Last,
        Seek(u16),
        Next,
        Prev,
    }

    /// Applies `moves` to a merge over `tables` and checks each position against `all`
    /// (every entry, sorted); a seek goes to `target(t)`.
    fn walk_matches_model(
        tables: &[Arc<Memtable>],
        all: &[Vec<u8>],
        moves: &[Move],
        target: impl Fn(u16) -> Vec<u8>,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let mut m = MergingIterator::new(tables.iter().map(|t| t.iter()).collect());
        let mut at: Option<usize> = None;
        for mv in moves {
            at = match *mv {
                Move::First => {
                    m.seek_to_first().unwrap();
                    (!all.is_empty()).then_some(0)
                }
                Move::Last => {
                    m.seek_to_last().unwrap();
                    all.len().checked_sub(1)
                }
                Move::Seek(t) => {
                    let target = target(t);
                    m.seek(&target).unwrap();
                    let i = all.partition_point(|k| compare_internal(k, &target) == Ordering::Less);
                    (i < all.len()).then_some(i)
                }
                Move::Next | Move::Prev if at.is_none() => continue,
                Move::Next => {
                    m.next().unwrap();
                    at.map(|i| i + 1).filter(|&i| i < all.len())
                }
                Move::Prev => {
                    m.prev().unwrap();
                    at.and_then(|i| i.checked_sub(1))
                }
            };
            match at {
                Some(i) => {
                    prop_assert!(m.valid());
                    prop_assert_eq!(m.key(), &all[i][..]);
                }
                None => prop_assert!(!m.valid()),
            }
        }
        Ok(())
    }

    /// A user key over a tiny alphabet (zero bytes, which the prefix pads with, and 0xff),
    /// up to 24 bytes: keys that share 16-byte prefixes, are prefixes of one another or
    /// differ only past the prefix or in padding-like zero bytes are common.
    fn tricky_user_key() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(proptest::sample::select(vec![0u8, 1, 0xff]), 0..24)
    }

    proptest! {
        /// Unequal prefixes order keys as `compare_internal` does.
        #[test]
        fn key_prefix_agrees_with_compare_internal(
            a in tricky_user_key(), b in tricky_user_key(), sa in 0u64..4, sb in 0u64..4,
        ) {
            let (ka, kb) = (
                internal_key(&a, sa, ValueKind::Value),
                internal_key(&b, sb, ValueKind::Value),
            );
            let (pa, pb) = (key_prefix(&ka), key_prefix(&kb));
            if pa != pb {
                prop_assert_eq!(pa.cmp(&pb), compare_internal(&ka, &kb));
            }
            // Keys too short for a trailer: empty user keys, as `user_key` says.
            prop_assert_eq!(key_prefix(&a[..a.len().min(7)]), 0);
        }

        /// Equal prefixes: the ranks order keys as `compare_internal` does unless both
        /// user keys are longer than the prefix (then the merge compares the keys).
        #[test]
        fn rank_agrees_with_compare_internal(
            a in tricky_user_key(), b in tricky_user_key(),
            sa in prop_oneof![0u64..4, Just(u64::MAX >> 8)], sb in 0u64..4,
            da in any::<bool>(), db in any::<bool>(), cut in 0usize..8,
        ) {
            let kind = |d: bool| if d { ValueKind::Deletion } else { ValueKind::Value };
            let (ka, kb) = (internal_key(&a, sa, kind(da)), internal_key(&b, sb, kind(db)));
            let (ra, rb) = (Rank::of(&ka), Rank::of(&kb));
            if ra.prefix == rb.prefix && (ra.tie < Rank::LONG || rb.tie < Rank::LONG) {
                prop_assert_eq!(ra.tie.cmp(&rb.tie), compare_internal(&ka, &kb));
            }
            prop_assert_eq!(ra.tie >= Rank::LONG, a.len() > 16);
            // A key too short for a trailer ranks as `compare_internal` treats it: an empty
            // user key with trailer 0.
            let short = &ka[..ka.len().min(cut)];
            let r = Rank::of(short);
            if r.prefix == rb.prefix && rb.tie < Rank::LONG {
                prop_assert_eq!(r.tie.cmp(&rb.tie), compare_internal(short, &kb));
            }
        }

        /// The merge over children holding such keys (prefix ties, decided by the full
        /// keys) walks them in order both ways, with direction changes and seeks.
        #[test]
        fn tricky_keys_match_a_sorted_model(
            n_children in 1usize..5,
            entries in proptest::collection::vec((0usize..5, tricky_user_key()), 1..80),
            moves in proptest::collection::vec(proptest::prop_oneof![
                1 => Just(Move::First),
                1 => Just(Move::Last),
                2 => any::<u16>().prop_map(Move::Seek),
                8 => Just(Move::Next),
                8 => Just(Move::Prev),
            ], 1..200),
        ) {
            let tables: Vec<Arc<Memtable>> =
                (0..n_children).map(|_| Arc::new(Memtable::new())).collect();
            let mut all = Vec::new();
            for (seq, (child, k)) in entries.iter().enumerate() {
                let seq = seq as u64 + 1;
                tables[child % n_children].add(seq, ValueKind::Value, k, b"v");
                all.push(internal_key(k, seq, ValueKind::Value));
            }
            all.sort_by(|a, b| compare_internal(a, b));
            walk_matches_model(&tables, &all, &moves, |t| {
                // The user key of an entry, or a shortened one.
                let k = &entries[t as usize % entries.len()].1;
                seek_key(&k[..k.len() - (t as usize / 7) % (k.len() + 1)], u64::MAX >> 8)
            })?;
        }
    }

    proptest! {
        /// Children that hold runs of consecutive keys (one child dominant, as after a
        /// full compaction or a sequential load, where the top stays on top for many
        /// steps and the runner-up check alone decides) or alternate key by key: the
        /// merge walks them in order both ways, with direction changes and seeks.
        #[test]
        fn runs_and_direction_changes_match_a_sorted_model(
            n_children in 1usize..5,
            runs in proptest::collection::vec((0usize..5, 1usize..40), 1..30),
            moves in proptest::collection::vec(proptest::prop_oneof![
                1 => Just(Move::First),
                1 => Just(Move::Last),
                2 => any::<u16>().prop_map(Move::Seek),
                8 => Just(Move::Next),
                8 => Just(Move::Prev),
            ], 1..200),
        ) {
            let tables: Vec<Arc<Memtable>> =
                (0..n_children).map(|_| Arc::new(Memtable::new())).collect();
            let mut all = Vec::new();
            let mut seq = 0u64;
            for (child, len) in runs {
                let child = child % n_children;
                for _ in 0..len {
                    seq += 1;
                    // Some user keys repeat with other sequence numbers (in any child).
                    let k = format!("k{:05}", seq / 3 * 3 + seq % 2);
                    tables[child].add(seq, ValueKind::Value, k.as_bytes(), &[child as u8]);
                    all.push(internal_key(k.as_bytes(), seq, ValueKind::Value));
                }
            }
            all.sort_by(|a, b| compare_internal(a, b));
            walk_matches_model(&tables, &all, &moves, |t| {
                seek_key(format!("k{:05}", t % 2000).as_bytes(), u64::MAX >> 8)
            })?;
        }
    }
}
