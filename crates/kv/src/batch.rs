//! Write batches: several updates applied atomically.
//!
//! A batch is kept in its WAL encoding so that committing it is one append:
//!
//! ```text
//! sequence: fixed64 | count: fixed32 | entry*
//! entry := kind: u8 (1 = put, 0 = delete) | key: varint len ++ bytes | [value: varint len ++ bytes]
//! ```
//!
//! The sequence number is that of the first entry; entry `i` gets `sequence + i`. It is
//! filled in at commit.

use crate::coding::{put_length_prefixed, Decoder};
use crate::error::{Error, Result};
use crate::key::ValueKind;

const HEADER_LEN: usize = 12;

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
pub struct BatchEntry<'a> {
    /// Put or delete.
    pub kind: ValueKind,
    /// The key.
    pub key: &'a [u8],
    /// The value (empty for deletes).
    pub value: &'a [u8],
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch {
            rep: vec![0; HEADER_LEN],
            count: 0,
        }
    }

    /// Adds a put of `key` -> `value`.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> &mut Self {
        self.rep.push(ValueKind::Value as u8);
        put_length_prefixed(&mut self.rep, key.as_ref());
        put_length_prefixed(&mut self.rep, value.as_ref());
        self.bump();
        self
    }

    /// Adds a delete of `key`.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> &mut Self {
        self.rep.push(ValueKind::Deletion as u8);
        put_length_prefixed(&mut self.rep, key.as_ref());
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
            let kind = d
                .u8()
                .and_then(ValueKind::from_u8)
                .ok_or_else(|| bad("unknown entry kind"))?;
            d.length_prefixed().ok_or_else(|| bad("truncated key"))?;
            if kind == ValueKind::Value {
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
        let kind = ValueKind::from_u8(self.d.u8()?)?;
        let key = self.d.length_prefixed()?;
        let value = match kind {
            ValueKind::Value => self.d.length_prefixed()?,
            ValueKind::Deletion => &[],
        };
        Some(BatchEntry { kind, key, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode() {
        let mut b = WriteBatch::new();
        b.put(b"k1", b"v1").delete(b"k2").put(b"", b"");
        b.set_sequence(42);
        let d = WriteBatch::decode(b.encoded(), "x.log", 0).unwrap();
        assert_eq!(d.sequence(), 42);
        assert_eq!(d.len(), 3);
        let e: Vec<_> = d.iter().collect();
        assert_eq!(e[0].key, b"k1");
        assert_eq!(e[1].kind, ValueKind::Deletion);
        assert_eq!(e[2].value, b"");
        // Every truncation is detected.
        for i in 0..b.encoded().len() {
            assert!(WriteBatch::decode(&b.encoded()[..i], "x.log", 7).is_err());
        }
    }
}
