//! Range tombstones: `delete_range(start..end)` as one entry instead of one tombstone per
//! key.
//!
//! A range tombstone `[start, end) @ seq` hides every version of every key in the range
//! with a sequence number below `seq`. It lives in the memtable that received it, then (from
//! the flush on) in the [`crate::version::Version`] and the manifest, until no table holds
//! data older than it in its range; compaction drops the data it covers. Tables entirely
//! inside a deleted range are dropped from the manifest at once, without rewriting.

use crate::coding::{put_length_prefixed, put_varint64, Decoder};

/// One range tombstone: keys in `[start, end)` with a sequence number below `seq` are
/// deleted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RangeTombstone {
    /// First deleted key.
    pub start: Vec<u8>,
    /// First key after the range (exclusive).
    pub end: Vec<u8>,
    /// Sequence number of the delete.
    pub seq: u64,
}

impl RangeTombstone {
    /// True if `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.start.as_slice() <= key && key < self.end.as_slice()
    }

    /// True if the range intersects the inclusive key range `[lo, hi]`.
    pub fn overlaps(&self, lo: &[u8], hi: &[u8]) -> bool {
        self.start.as_slice() <= hi && lo < self.end.as_slice()
    }

    /// Appends the encoding `start | end | seq` (length-prefixed keys, varint seq).
    pub fn encode_to(&self, dst: &mut Vec<u8>) {
        put_length_prefixed(dst, &self.start);
        put_length_prefixed(dst, &self.end);
        put_varint64(dst, self.seq);
    }

    /// Decodes what [`RangeTombstone::encode_to`] wrote.
    pub fn decode_from(d: &mut Decoder<'_>) -> Option<RangeTombstone> {
        let start = d.length_prefixed()?.to_vec();
        let end = d.length_prefixed()?.to_vec();
        let seq = d.varint64()?;
        Some(RangeTombstone { start, end, seq })
    }
}

/// A set of range tombstones answering "which is the newest tombstone visible at `read_seq`
/// that covers `key`?". Sorted by start key; a lookup stops at the first start past the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeTombstoneSet {
    tombstones: Vec<RangeTombstone>,
}

impl RangeTombstoneSet {
    /// A set of `tombstones` (any order).
    pub fn new(mut tombstones: Vec<RangeTombstone>) -> Self {
        tombstones.sort();
        tombstones.dedup();
        RangeTombstoneSet { tombstones }
    }

    /// True if the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.tombstones.is_empty()
    }

    /// Number of tombstones.
    pub fn len(&self) -> usize {
        self.tombstones.len()
    }

    /// The tombstones, sorted by start key.
    pub fn iter(&self) -> impl Iterator<Item = &RangeTombstone> {
        self.tombstones.iter()
    }

    /// The largest sequence number `<= read_seq` of a tombstone covering `key` (0 if none).
    /// A version of `key` with a smaller sequence number is deleted for that reader.
    pub fn covering_seq(&self, key: &[u8], read_seq: u64) -> u64 {
        let mut best = 0;
        for t in &self.tombstones {
            if t.start.as_slice() > key {
                break;
            }
            if t.seq <= read_seq && t.seq > best && key < t.end.as_slice() {
                best = t.seq;
            }
        }
        best
    }

    /// A copy with `more` added.
    pub fn with(&self, more: impl IntoIterator<Item = RangeTombstone>) -> Self {
        let mut v = self.tombstones.clone();
        v.extend(more);
        RangeTombstoneSet::new(v)
    }

    /// A copy without the tombstones in `gone`.
    pub fn without(&self, gone: &[RangeTombstone]) -> Self {
        RangeTombstoneSet {
            tombstones: self
                .tombstones
                .iter()
                .filter(|t| !gone.contains(t))
                .cloned()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str, e: &str, seq: u64) -> RangeTombstone {
        RangeTombstone {
            start: s.into(),
            end: e.into(),
            seq,
        }
    }

    #[test]
    fn covering_seq_respects_bounds_and_read_seq() {
        let set = RangeTombstoneSet::new(vec![t("b", "d", 5), t("a", "c", 9), t("x", "z", 3)]);
        assert_eq!(set.covering_seq(b"a", 100), 9);
        assert_eq!(set.covering_seq(b"b", 100), 9);
        assert_eq!(set.covering_seq(b"c", 100), 5, "end is exclusive");
        assert_eq!(
            set.covering_seq(b"b", 6),
            5,
            "tombstones newer than the reader are ignored"
        );
        assert_eq!(set.covering_seq(b"d", 100), 0);
        assert_eq!(set.covering_seq(b"y", 2), 0);
        let mut buf = Vec::new();
        t("k", "m", 7).encode_to(&mut buf);
        assert_eq!(
            RangeTombstone::decode_from(&mut Decoder::new(&buf)),
            Some(t("k", "m", 7))
        );
        assert_eq!(set.without(&[t("a", "c", 9)]).covering_seq(b"a", 100), 0);
    }
}
