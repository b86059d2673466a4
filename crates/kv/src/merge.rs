//! The merging iterator: one sorted view over many sorted sources, by a binary heap of the
//! sources' cursors (a min-heap going forward, a max-heap going backward).

use crate::error::Result;
use crate::iterator::InternalIterator;
use crate::key::compare_internal;
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
    /// Indexes of the valid children, heap-ordered for `direction`; the top is current.
    heap: Vec<usize>,
    direction: Direction,
}

impl<I: InternalIterator> MergingIterator<I> {
    /// Merges `children` (newest source first).
    pub fn new(children: Vec<I>) -> Self {
        MergingIterator {
            heap: Vec::with_capacity(children.len()),
            children,
            direction: Direction::Forward,
        }
    }

    /// True if child `a` should come out before child `b`.
    #[inline]
    fn before(&self, a: usize, b: usize) -> bool {
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
        // The sinking child's key is fetched once, not at every comparison.
        let key = self.children[moving].key();
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
            let ck = self.children[self.heap[c]].key();
            let ord = compare_internal(ck, key);
            let first = match (ord, self.direction) {
                (Ordering::Equal, _) => self.heap[c] < moving,
                (Ordering::Less, Direction::Forward) | (Ordering::Greater, Direction::Reverse) => {
                    true
                }
                _ => false,
            };
            if !first {
                break;
            }
            self.heap[i] = self.heap[c];
            i = c;
        }
        self.heap[i] = moving;
    }

    fn rebuild(&mut self, direction: Direction) {
        self.direction = direction;
        // Refilled in place: a seek allocates nothing once the heap has grown.
        self.heap.clear();
        for i in 0..self.children.len() {
            if self.children[i].valid() {
                self.heap.push(i);
            }
        }
        for i in (0..self.heap.len() / 2).rev() {
            self.sift_down(i);
        }
    }

    /// After the top child moved: restore the heap.
    fn fix_top(&mut self) {
        let top = self.heap[0];
        if self.children[top].valid() {
            self.sift_down(0);
        } else {
            let last = self.heap.len() - 1;
            self.heap.swap(0, last);
            self.heap.pop();
            if !self.heap.is_empty() {
                self.sift_down(0);
            }
        }
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
        let r = self.children[top].prepare_value();
        if r.is_err() {
            // Invalid after an error, as every cursor.
            self.heap.clear();
        }
        r
    }
}

impl<I: InternalIterator> InternalIterator for MergingIterator<I> {
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
        for c in &mut self.children {
            c.seek(target)?;
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
                if c.valid() && compare_internal(c.key(), &key) == Ordering::Equal {
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

    fn key(&self) -> &[u8] {
        self.children[self.current()].key()
    }

    fn value(&self) -> &[u8] {
        self.children[self.current()].value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{internal_key, ValueKind};
    use crate::memtable::Memtable;
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
}
