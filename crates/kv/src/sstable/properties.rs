//! Table properties: statistics and key range recorded by the builder.
//!
//! Encoded as a sequence of fields `tag varint | len varint | payload (len bytes)`. Integer
//! fields carry one varint as payload; key fields carry the raw bytes. Because every field
//! is length-prefixed, a reader skips tags it does not know, so new properties can be added
//! without a format version bump. Missing fields decode as zero / empty.

use crate::coding::{put_length_prefixed, put_varint64, Decoder};
use crate::error::{Error, Result};
use crate::options::CompressionType;

const TAG_NUM_ENTRIES: u64 = 1;
const TAG_NUM_DELETIONS: u64 = 2;
const TAG_NUM_DATA_BLOCKS: u64 = 3;
const TAG_RAW_KEY_BYTES: u64 = 4;
const TAG_RAW_VALUE_BYTES: u64 = 5;
const TAG_DATA_BYTES: u64 = 6;
const TAG_INDEX_BYTES: u64 = 7;
const TAG_FILTER_BYTES: u64 = 8;
const TAG_SMALLEST_KEY: u64 = 9;
const TAG_LARGEST_KEY: u64 = 10;
const TAG_SMALLEST_SEQ: u64 = 11;
const TAG_LARGEST_SEQ: u64 = 12;
const TAG_COMPRESSION: u64 = 13;

/// What a table contains, recorded when it was built.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties {
    /// Entries (values and tombstones).
    pub num_entries: u64,
    /// Tombstones among them.
    pub num_deletions: u64,
    /// Data blocks.
    pub num_data_blocks: u64,
    /// Sum of internal key lengths.
    pub raw_key_bytes: u64,
    /// Sum of value lengths.
    pub raw_value_bytes: u64,
    /// Bytes of data blocks on disk, trailers included.
    pub data_bytes: u64,
    /// Bytes of the index block on disk, trailer included.
    pub index_bytes: u64,
    /// Bytes of the filter block on disk, trailer included (0 without a filter).
    pub filter_bytes: u64,
    /// Size of the whole file (not stored: filled in by the builder and the reader).
    pub file_size: u64,
    /// Smallest internal key (empty if the table is empty).
    pub smallest_key: Vec<u8>,
    /// Largest internal key (empty if the table is empty).
    pub largest_key: Vec<u8>,
    /// Smallest sequence number of any entry.
    pub smallest_seq: u64,
    /// Largest sequence number of any entry.
    pub largest_seq: u64,
    /// Compression the table was written with (individual blocks may be stored raw).
    pub compression: CompressionType,
}

impl Properties {
    /// The properties block contents.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let int = |out: &mut Vec<u8>, tag: u64, v: u64| {
            put_varint64(out, tag);
            let mut payload = Vec::with_capacity(10);
            put_varint64(&mut payload, v);
            put_length_prefixed(out, &payload);
        };
        int(&mut out, TAG_NUM_ENTRIES, self.num_entries);
        int(&mut out, TAG_NUM_DELETIONS, self.num_deletions);
        int(&mut out, TAG_NUM_DATA_BLOCKS, self.num_data_blocks);
        int(&mut out, TAG_RAW_KEY_BYTES, self.raw_key_bytes);
        int(&mut out, TAG_RAW_VALUE_BYTES, self.raw_value_bytes);
        int(&mut out, TAG_DATA_BYTES, self.data_bytes);
        int(&mut out, TAG_INDEX_BYTES, self.index_bytes);
        int(&mut out, TAG_FILTER_BYTES, self.filter_bytes);
        int(&mut out, TAG_SMALLEST_SEQ, self.smallest_seq);
        int(&mut out, TAG_LARGEST_SEQ, self.largest_seq);
        int(&mut out, TAG_COMPRESSION, self.compression as u64);
        put_varint64(&mut out, TAG_SMALLEST_KEY);
        put_length_prefixed(&mut out, &self.smallest_key);
        put_varint64(&mut out, TAG_LARGEST_KEY);
        put_length_prefixed(&mut out, &self.largest_key);
        out
    }

    /// Decodes a properties block read from `file` at `offset` (used in errors). Unknown
    /// tags are skipped; malformed fields are corruption.
    pub fn decode(data: &[u8], file: &str, offset: u64) -> Result<Properties> {
        let corrupt = |reason: String| {
            Error::corruption(file, offset, format!("bad properties block: {reason}"))
        };
        let mut p = Properties::default();
        let mut d = Decoder::new(data);
        while !d.is_empty() {
            let at = d.position();
            let (Some(tag), Some(payload)) = (d.varint64(), d.length_prefixed()) else {
                return Err(corrupt(format!("truncated field at byte {at}")));
            };
            let int = || -> Result<u64> {
                let mut pd = Decoder::new(payload);
                match pd.varint64() {
                    Some(v) if pd.is_empty() => Ok(v),
                    _ => Err(corrupt(format!("bad integer in field {tag} at byte {at}"))),
                }
            };
            match tag {
                TAG_NUM_ENTRIES => p.num_entries = int()?,
                TAG_NUM_DELETIONS => p.num_deletions = int()?,
                TAG_NUM_DATA_BLOCKS => p.num_data_blocks = int()?,
                TAG_RAW_KEY_BYTES => p.raw_key_bytes = int()?,
                TAG_RAW_VALUE_BYTES => p.raw_value_bytes = int()?,
                TAG_DATA_BYTES => p.data_bytes = int()?,
                TAG_INDEX_BYTES => p.index_bytes = int()?,
                TAG_FILTER_BYTES => p.filter_bytes = int()?,
                TAG_SMALLEST_SEQ => p.smallest_seq = int()?,
                TAG_LARGEST_SEQ => p.largest_seq = int()?,
                TAG_COMPRESSION => {
                    let v = int()?;
                    p.compression = u8::try_from(v)
                        .ok()
                        .and_then(CompressionType::from_u8)
                        .ok_or_else(|| corrupt(format!("unknown compression {v}")))?;
                }
                TAG_SMALLEST_KEY => p.smallest_key = payload.to_vec(),
                TAG_LARGEST_KEY => p.largest_key = payload.to_vec(),
                _ => {} // A property added by a newer writer.
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn properties_roundtrip_and_unknown_tags() {
        let p = Properties {
            num_entries: 5,
            num_deletions: 1,
            num_data_blocks: 2,
            raw_key_bytes: 100,
            raw_value_bytes: 200,
            data_bytes: 300,
            index_bytes: 40,
            filter_bytes: 12,
            file_size: 0,
            smallest_key: b"a\0\0\0\0\0\0\0\0".to_vec(),
            largest_key: b"z\x01\0\0\0\0\0\0\0".to_vec(),
            smallest_seq: 3,
            largest_seq: u64::MAX >> 8,
            compression: CompressionType::Zstd,
        };
        let mut enc = p.encode();
        assert_eq!(Properties::decode(&enc, "t", 0).unwrap(), p);
        // A field from the future is skipped.
        put_varint64(&mut enc, 99);
        put_length_prefixed(&mut enc, b"whatever");
        assert_eq!(Properties::decode(&enc, "t", 0).unwrap(), p);
        // Truncation is corruption.
        enc.pop();
        let e = Properties::decode(&enc, "t.sst", 9).unwrap_err();
        assert!(e.is_corruption() && e.to_string().contains("t.sst"));
    }
}
