//! Write batches: several updates applied atomically.
//!
//! A batch is kept in its WAL encoding so that committing it is one append:
//!
//! ```text
//! sequence: fixed64 | count: fixed32 | entry*
//! entry := kind: u8 (1 = put, 0 = delete, 2 = range delete)
//!          | key: varint len ++ bytes | [value / range end: varint len ++ bytes]
//! ```
//!
//! The sequence number is that of the first entry; entry `i` gets `sequence + i`. It is
//! filled in at commit.

use crate::coding::{put_length_prefixed, Decoder};
use crate::error::{Error, Result};
use crate::key::ValueKind;

const HEADER_LEN: usize = 12;

const TAG_DELETE: u8 = 0;
const TAG_PUT: u8 = 1;
const TAG_DELETE_RANGE: u8 = 2;
/// Bytes a new batch allocates: the header and one entry of a short key and a value of up
/// to about 200 bytes.
const INITIAL_CAPACITY: usize = 256;
/// Longest varint encoding of a length (a u64).
const MAX_VARINT_LEN: usize = 10;

/// An ordered list of puts and deletes committed atomically by [`crate::Db::write`]:
/// after a crash either all of them are visible or none is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    rep: Vec<u8>,
    count: u32,
}

impl Default for WriteBatch {
    fn default() -> Self {
        Self::new()
    }
}

/// One decoded batch entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchEntry<'a> {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// Delete `key`.
    Delete {
        /// The key.
        key: &'a [u8],
    },
    /// Delete every key in `[start, end)`.
    DeleteRange {
        /// First key deleted.
        start: &'a [u8],
        /// First key kept (exclusive end).
        end: &'a [u8],
    },
}

impl<'a> BatchEntry<'a> {
    /// For puts and deletes: the point entry (kind, key, value) it makes in the memtable.
    pub fn as_point(&self) -> Option<(ValueKind, &'a [u8], &'a [u8])> {
        match *self {
            BatchEntry::Put { key, value } => Some((ValueKind::Value, key, value)),
            BatchEntry::Delete { key } => Some((ValueKind::Deletion, key, &[])),
            BatchEntry::DeleteRange { .. } => None,
        }
    }
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        // Room for a typical single-entry batch up front: a header-sized buffer was
        // zero-allocated, then reallocated by the first put (two allocator calls a write).
        let mut rep = Vec::with_capacity(INITIAL_CAPACITY);
        rep.resize(HEADER_LEN, 0);
        WriteBatch { rep, count: 0 }
    }

    /// Adds a put of `key` -> `value`.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> &mut Self {
        let (key, value) = (key.as_ref(), value.as_ref());
        // One growth of the buffer for the whole entry, not one per field.
        self.rep
            .reserve(1 + 2 * MAX_VARINT_LEN + key.len() + value.len());
        self.rep.push(TAG_PUT);
        put_length_prefixed(&mut self.rep, key);
        put_length_prefixed(&mut self.rep, value);
        self.bump();
        self
    }

    /// Adds a delete of `key`.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> &mut Self {
        let key = key.as_ref();
        self.rep.reserve(1 + MAX_VARINT_LEN + key.len());
        self.rep.push(TAG_DELETE);
        put_length_prefixed(&mut self.rep, key);
        self.bump();
        self
    }

    /// Adds a delete of every key in `[start, end)`: one entry, whatever the number of
    /// keys. An empty range (`start >= end`) deletes nothing.
    pub fn delete_range(&mut self, start: impl AsRef<[u8]>, end: impl AsRef<[u8]>) -> &mut Self {
        self.rep.push(TAG_DELETE_RANGE);
        put_length_prefixed(&mut self.rep, start.as_ref());
        put_length_prefixed(&mut self.rep, end.as_ref());
        self.bump();
        self
    }

    fn bump(&mut self) {
        self.count += 1;
        self.rep[8..12].copy_from_slice(&self.count.to_le_bytes());
    }

    /// Number of updates.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True if the batch holds no update.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Removes all updates.
    pub fn clear(&mut self) {
        self.rep.clear();
        self.rep.resize(HEADER_LEN, 0);
        self.count = 0;
    }

    /// Size of the encoding in bytes.
    pub fn encoded_size(&self) -> usize {
        self.rep.len()
    }

    /// The sequence number of the first entry (0 until committed).
    pub fn sequence(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.rep[..8]);
        u64::from_le_bytes(b)
    }

    pub(crate) fn set_sequence(&mut self, seq: u64) {
        self.rep[..8].copy_from_slice(&seq.to_le_bytes());
    }

    /// The encoding (the WAL record payload).
    pub fn encoded(&self) -> &[u8] {
        &self.rep
    }

    /// Parses a batch from its encoding, validating every entry. `file`/`offset` name the
    /// WAL record for the error.
    pub fn decode(data: &[u8], file: &str, offset: u64) -> Result<WriteBatch> {
        let bad = |reason: &str| Error::corruption(file, offset, format!("write batch: {reason}"));
        if data.len() < HEADER_LEN {
            return Err(bad("shorter than its header"));
        }
        let mut d = Decoder::new(data);
        d.fixed64();
        let count = d.fixed32().ok_or_else(|| bad("no count"))?;
        let mut seen = 0u32;
        while !d.is_empty() {
            let tag = d.u8().ok_or_else(|| bad("truncated entry"))?;
            if !matches!(tag, TAG_PUT | TAG_DELETE | TAG_DELETE_RANGE) {
                return Err(bad(&format!("unknown entry kind {tag}")));
            }
            d.length_prefixed().ok_or_else(|| bad("truncated key"))?;
            if tag != TAG_DELETE {
                d.length_prefixed().ok_or_else(|| bad("truncated value"))?;
            }
            seen = seen.checked_add(1).ok_or_else(|| bad("too many entries"))?;
        }
        if seen != count {
            return Err(bad(&format!("header says {count} entries, found {seen}")));
        }
        Ok(WriteBatch {
            rep: data.to_vec(),
            count,
        })
    }

    /// The entries in order.
    pub fn iter(&self) -> BatchIter<'_> {
        BatchIter {
            d: Decoder::new(&self.rep[HEADER_LEN..]),
        }
    }
}

/// Iterator over the entries of a [`WriteBatch`].
#[derive(Debug)]
pub struct BatchIter<'a> {
    d: Decoder<'a>,
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = BatchEntry<'a>;
    fn next(&mut self) -> Option<BatchEntry<'a>> {
        // The encoding was built by us or validated by `decode`, so `None` only means the end.
        let tag = self.d.u8()?;
        let key = self.d.length_prefixed()?;
        match tag {
            TAG_PUT => Some(BatchEntry::Put {
                key,
                value: self.d.length_prefixed()?,
            }),
            TAG_DELETE => Some(BatchEntry::Delete { key }),
            TAG_DELETE_RANGE => Some(BatchEntry::DeleteRange {
                start: key,
                end: self.d.length_prefixed()?,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode() {
        let mut b = WriteBatch::new();
        b.put(b"k1", b"v1")
            .delete(b"k2")
            .put(b"", b"")
            .delete_range(b"a", b"c");
        b.set_sequence(42);
        let d = WriteBatch::decode(b.encoded(), "x.log", 0).unwrap();
        assert_eq!(d.sequence(), 42);
        assert_eq!(d.len(), 4);
        let e: Vec<_> = d.iter().collect();
        assert_eq!(
            e[0],
            BatchEntry::Put {
                key: b"k1",
                value: b"v1"
            }
        );
        assert_eq!(e[1], BatchEntry::Delete { key: b"k2" });
        assert_eq!(
            e[2].as_point(),
            Some((ValueKind::Value, &b""[..], &b""[..]))
        );
        assert_eq!(
            e[3],
            BatchEntry::DeleteRange {
                start: b"a",
                end: b"c"
            }
        );
        // Every truncation is detected.
        for i in 0..b.encoded().len() {
            assert!(WriteBatch::decode(&b.encoded()[..i], "x.log", 7).is_err());
        }
    }
}
