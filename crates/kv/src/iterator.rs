//! The cursor interface shared by every sorted source (memtable, table, merge) and the
//! merging iterator that combines them.

use crate::error::Result;

/// A cursor over entries in internal-key order (see [`crate::key`]).
///
/// After any method returns an error the iterator is invalid. `key` and `value` may only be
/// called while `valid()`.
pub trait InternalIterator: Send {
    /// True if the cursor is positioned at an entry.
    fn valid(&self) -> bool;
    /// Positions at the first entry.
    fn seek_to_first(&mut self) -> Result<()>;
    /// Positions at the last entry.
    fn seek_to_last(&mut self) -> Result<()>;
    /// Positions at the first entry whose internal key is `>= target`.
    fn seek(&mut self, target: &[u8]) -> Result<()>;
    /// As `seek(bound)`, for a caller that knows this cursor holds no entry between its
    /// own target and `bound` (a merge that found the sought user key in a newer source:
    /// see [`MergingIterator::sources_by_age`]). A cursor may stay unpositioned with
    /// `bound` as its key ([`InternalIterator::is_bound`]). Default: `seek(bound)`.
    ///
    /// [`MergingIterator::sources_by_age`]: crate::merge::MergingIterator::sources_by_age
    fn seek_lazily(&mut self, bound: &[u8]) -> Result<()> {
        self.seek(bound)
    }
    /// Moves to the next entry. REQUIRES: `valid()`.
    fn next(&mut self) -> Result<()>;
    /// Moves to the previous entry. REQUIRES: `valid()`.
    fn prev(&mut self) -> Result<()>;
    /// The current internal key, or, while [`InternalIterator::is_bound`], a lower bound
    /// of it.
    fn key(&self) -> &[u8];
    /// The current value. REQUIRES: [`InternalIterator::prepare_value`] since the last move.
    fn value(&self) -> &[u8];
    /// Makes the current entry's value readable. A cursor may be positioned lazily: a
    /// level cursor sought to before its table's first key knows that key from the
    /// manifest and reads no block until its value is wanted (a merge asks only the
    /// cursor on top; the others never pay for a block). Default: nothing to do.
    fn prepare_value(&mut self) -> Result<()> {
        Ok(())
    }
    /// True if the cursor is not positioned yet and [`InternalIterator::key`] is only a
    /// lower bound of its entry. A level cursor whose table's bloom filter rules out the
    /// sought user key `T` knows that its entry is after every entry of `T` and reads
    /// nothing until that matters: a merge settles it ([`InternalIterator::prepare_value`],
    /// which then positions it for real and may move its key forward) only when the
    /// bound reaches the top, so a seek that finds `T` in another source never searches
    /// this one. A bound from [`InternalIterator::seek_lazily`] does not even promise an
    /// entry: `valid()` is true while bound, and settling may leave the cursor invalid.
    /// Only a forward seek leaves a bound; any step settles it first. A bound never
    /// escapes a merge. Default: never.
    #[inline(always)]
    fn is_bound(&self) -> bool {
        false
    }
}

impl<I: InternalIterator + ?Sized> InternalIterator for Box<I> {
    #[inline]
    fn valid(&self) -> bool {
        (**self).valid()
    }
    fn seek_to_first(&mut self) -> Result<()> {
        (**self).seek_to_first()
    }
    fn seek_to_last(&mut self) -> Result<()> {
        (**self).seek_to_last()
    }
    fn seek(&mut self, target: &[u8]) -> Result<()> {
        (**self).seek(target)
    }
    fn seek_lazily(&mut self, bound: &[u8]) -> Result<()> {
        (**self).seek_lazily(bound)
    }
    #[inline]
    fn next(&mut self) -> Result<()> {
        (**self).next()
    }
    #[inline]
    fn prev(&mut self) -> Result<()> {
        (**self).prev()
    }
    #[inline]
    fn key(&self) -> &[u8] {
        (**self).key()
    }
    #[inline]
    fn value(&self) -> &[u8] {
        (**self).value()
    }
    fn prepare_value(&mut self) -> Result<()> {
        (**self).prepare_value()
    }
    #[inline]
    fn is_bound(&self) -> bool {
        (**self).is_bound()
    }
}

/// Bytes of a key a [`KeyBuf`] holds without allocating (RocksDB's `IterKey` keeps 39):
/// internal keys of up to 32-byte user keys.
const KEY_INLINE: usize = 40;

/// A cursor's current key: inline up to [`KEY_INLINE`] bytes, on the heap beyond. A cursor
/// is created for every seek (and a block cursor for every block a scan enters); an inline
/// key spares each of them an allocation.
#[derive(Clone)]
pub(crate) struct KeyBuf {
    len: usize,
    inline: [u8; KEY_INLINE],
    /// Holds the key when `len > KEY_INLINE` (its capacity is kept for reuse).
    heap: Vec<u8>,
}

impl Default for KeyBuf {
    fn default() -> Self {
        KeyBuf {
            len: 0,
            inline: [0; KEY_INLINE],
            heap: Vec::new(),
        }
    }
}

impl std::fmt::Debug for KeyBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("KeyBuf").field(&self.as_slice()).finish()
    }
}

impl KeyBuf {
    /// The key.
    #[inline(always)]
    pub(crate) fn as_slice(&self) -> &[u8] {
        if self.len <= KEY_INLINE {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }

    /// Its length.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Empties it.
    #[inline]
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Replaces the key by `src[..len]`, as [`KeyBuf::keep_and_append_padded`] (a user key
    /// is set from its internal key, whose 8-byte trailer is the padding).
    #[inline(always)]
    pub(crate) fn set_padded(&mut self, src: &[u8], len: usize) {
        self.clear();
        self.keep_and_append_padded(0, src, len);
    }

    /// Keeps the first `shared` bytes (at most the current length) and appends `suffix`.
    #[inline(always)]
    pub(crate) fn keep_and_append(&mut self, shared: usize, suffix: &[u8]) {
        // The per-entry case of a scan: the key stays inline.
        if self.len <= KEY_INLINE && shared <= self.len {
            let new_len = shared + suffix.len();
            if let Some(dst) = self.inline.get_mut(shared..new_len) {
                dst.copy_from_slice(suffix);
                self.len = new_len;
                return;
            }
        }
        self.keep_and_append_slow(shared, suffix);
    }

    /// As `keep_and_append(shared, &src[..len])`, where `src` may hold more bytes after
    /// the suffix: a suffix of up to 16 (32) bytes is then copied as 16 (32) fixed bytes
    /// (a few moves, not a call into `memcpy`); the bytes copied past the key lie beyond
    /// `len` and are never read. REQUIRES: `len <= src.len()`.
    #[inline(always)]
    pub(crate) fn keep_and_append_padded(&mut self, shared: usize, src: &[u8], len: usize) {
        if self.len <= KEY_INLINE
            && shared <= self.len
            && ((len <= 16 && self.copy_fixed::<16>(shared, src, len))
                || (16 < len && len <= 32 && self.copy_fixed::<32>(shared, src, len)))
        {
            return;
        }
        self.keep_and_append(shared, src.get(..len).unwrap_or_default());
    }

    /// Copies `N` bytes of `src` after the first `shared` inline bytes and makes the key
    /// `shared + len` long, if both have room for `N` bytes.
    #[inline(always)]
    fn copy_fixed<const N: usize>(&mut self, shared: usize, src: &[u8], len: usize) -> bool {
        match (
            self.inline.get_mut(shared..shared + N),
            src.first_chunk::<N>(),
        ) {
            (Some(dst), Some(chunk)) => {
                dst.copy_from_slice(chunk);
                self.len = shared + len;
                true
            }
            _ => false,
        }
    }

    /// The inline storage, whose first `len()` bytes are the key, if the key is inline:
    /// a copy of all of it is a fixed-size copy.
    #[inline(always)]
    pub(crate) fn inline_padded(&self) -> Option<&[u8; KEY_INLINE]> {
        (self.len <= KEY_INLINE).then_some(&self.inline)
    }

    #[inline(never)]
    fn keep_and_append_slow(&mut self, shared: usize, suffix: &[u8]) {
        let shared = shared.min(self.len);
        let new_len = shared + suffix.len();
        if new_len <= KEY_INLINE {
            if self.len > KEY_INLINE {
                // Back inline: the kept prefix moves from the heap.
                self.inline[..shared].copy_from_slice(&self.heap[..shared]);
            }
            self.inline[shared..new_len].copy_from_slice(suffix);
        } else {
            if self.len <= KEY_INLINE {
                self.heap.clear();
                self.heap.extend_from_slice(&self.inline[..shared]);
            } else {
                self.heap.truncate(shared);
            }
            self.heap.extend_from_slice(suffix);
        }
        self.len = new_len;
    }
}

#[cfg(test)]
mod key_buf_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any sequence of (keep, append) steps matches the same steps on a `Vec`.
        #[test]
        fn matches_vec(steps in proptest::collection::vec(
            (0usize..80, proptest::collection::vec(any::<u8>(), 0..60)), 0..40)) {
            let mut k = KeyBuf::default();
            let mut v: Vec<u8> = Vec::new();
            for (keep, suffix) in steps {
                k.keep_and_append(keep, &suffix);
                v.truncate(keep);
                v.extend_from_slice(&suffix);
                prop_assert_eq!(k.as_slice(), &v[..]);
                prop_assert_eq!(k.len(), v.len());
            }
            k.set_padded(b"abc", 3);
            prop_assert_eq!(k.as_slice(), b"abc");
        }

        /// The padded append (16 fixed bytes for short suffixes) matches a `Vec` too,
        /// whatever follows the suffix in the source.
        #[test]
        fn padded_matches_vec(steps in proptest::collection::vec(
            (0usize..50, proptest::collection::vec(any::<u8>(), 0..60), 0usize..30), 0..40)) {
            let mut k = KeyBuf::default();
            let mut v: Vec<u8> = Vec::new();
            for (keep, src, len) in steps {
                let keep = keep.min(v.len());
                let len = len.min(src.len());
                k.keep_and_append_padded(keep, &src, len);
                v.truncate(keep);
                v.extend_from_slice(&src[..len]);
                prop_assert_eq!(k.as_slice(), &v[..]);
            }
        }
    }
}
