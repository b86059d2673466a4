//! Chunks: compressed runs of `(timestamp, value)` samples of one series.
//!
//! Every chunk's bytes start with an encoding byte ([`Encoding`]) that names the encoding
//! *and its version*: a change to an encoding's layout gets a new byte, never a reinterpretation
//! of an old one. [`Chunk`] dispatches on it, so callers that store or read chunks do not
//! care which encoding they hold. [`Encoding::Xor`] (Gorilla delta-of-delta timestamps and
//! XOR-ed float values, [`xor`]) is what the head writes; compaction rewrites partitions in
//! [`Encoding::Decimal`] or [`Encoding::DecimalColumn`] ([`decimal`]), the latter reading
//! its timestamps from a column shared by many series. The byte layout is documented in
//! `docs/format/chunk.md`.
//!
//! A chunk does not order samples: it stores any timestamps in the order they were
//! appended. Rejecting out-of-order or duplicate samples is the head's job.

pub mod bstream;
pub mod decimal;
pub mod pack;
pub mod xor;

pub use xor::{XorAppender, XorChunk, XorIterator};

/// Errors of chunk encoding and decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// The bytes are not a well-formed chunk: truncated, or a field out of range.
    #[error("corrupt chunk at byte {offset}: {reason}")]
    Corrupt {
        /// Byte offset in the chunk where the problem was found.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
    /// The encoding byte names no encoding this build understands.
    #[error("unknown chunk encoding {0:#04x}")]
    UnknownEncoding(u8),
    /// The chunk holds the most samples its header can count.
    #[error("chunk is full ({max} samples)")]
    Full {
        /// The limit.
        max: usize,
    },
}

impl ChunkError {
    pub(crate) fn corrupt(offset: usize, reason: impl Into<String>) -> Self {
        ChunkError::Corrupt {
            offset,
            reason: reason.into(),
        }
    }
}

/// Result alias of this module.
pub type Result<T, E = ChunkError> = std::result::Result<T, E>;

/// The encoding byte at offset 0 of every chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Encoding {
    /// Gorilla-style float chunk, version 1 (the same number as Prometheus' `EncXOR`).
    Xor = 1,
    /// Decimal conversion, delta coding and zstd ([`decimal`]), version 1: the encoding of
    /// compacted partitions.
    Decimal = 2,
    /// [`Encoding::Decimal`] without timestamps: they are in a timestamp column shared by
    /// the series of a compacted partition scraped at the same instants
    /// ([`decimal::encode_with_column`]), version 1.
    DecimalColumn = 3,
}

impl Encoding {
    /// The encoding named by `b`, if this build knows it.
    pub fn from_u8(b: u8) -> Option<Encoding> {
        match b {
            1 => Some(Encoding::Xor),
            2 => Some(Encoding::Decimal),
            3 => Some(Encoding::DecimalColumn),
            _ => None,
        }
    }
}

/// A chunk of any encoding.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Chunk {
    /// A [`XorChunk`].
    Xor(XorChunk),
    /// A [`decimal`] chunk (either decimal encoding), decoded when wrapped (it is one zstd
    /// frame).
    Decimal {
        /// The encoded bytes.
        bytes: Vec<u8>,
        /// The decoded samples.
        samples: Vec<(i64, f64)>,
    },
}

impl Chunk {
    /// Wraps stored bytes, dispatching on the encoding byte. Checks the header only; sample
    /// data is checked as it is iterated.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Chunk> {
        let b = *bytes
            .first()
            .ok_or_else(|| ChunkError::corrupt(0, "empty chunk (no encoding byte)"))?;
        match Encoding::from_u8(b) {
            Some(Encoding::Xor) => Ok(Chunk::Xor(XorChunk::from_bytes(bytes)?)),
            Some(Encoding::Decimal) => {
                let samples = decimal::decode(&bytes)?;
                Ok(Chunk::Decimal { bytes, samples })
            }
            Some(Encoding::DecimalColumn) => Err(ChunkError::corrupt(
                0,
                "a decimal-column chunk needs its timestamp column",
            )),
            None => Err(ChunkError::UnknownEncoding(b)),
        }
    }

    /// Like [`Chunk::from_bytes`], with `column` giving the timestamps of a
    /// [`Encoding::DecimalColumn`] chunk (called only for those).
    pub fn from_bytes_with_column<E>(
        bytes: Vec<u8>,
        column: impl FnOnce(decimal::ColumnRef) -> std::result::Result<std::sync::Arc<[i64]>, E>,
    ) -> std::result::Result<Chunk, E>
    where
        E: From<ChunkError>,
    {
        if bytes.first() != Some(&(Encoding::DecimalColumn as u8)) {
            return Ok(Chunk::from_bytes(bytes)?);
        }
        let ts = column(decimal::column_of(&bytes)?)?;
        let samples = decimal::decode_with_column(&bytes, &ts)?;
        Ok(Chunk::Decimal { bytes, samples })
    }

    /// The chunk's encoding.
    pub fn encoding(&self) -> Encoding {
        match self {
            Chunk::Xor(_) => Encoding::Xor,
            Chunk::Decimal { bytes, .. } => match bytes.first() {
                Some(&b) if b == Encoding::DecimalColumn as u8 => Encoding::DecimalColumn,
                _ => Encoding::Decimal,
            },
        }
    }

    /// The encoded bytes, encoding byte included.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Xor(c) => c.bytes(),
            Chunk::Decimal { bytes, .. } => bytes,
        }
    }

    /// Number of samples, from the header.
    pub fn num_samples(&self) -> usize {
        match self {
            Chunk::Xor(c) => c.num_samples(),
            Chunk::Decimal { samples, .. } => samples.len(),
        }
    }

    /// The samples in append order; an `Err` (after which the iterator ends) if the bytes are
    /// corrupt.
    pub fn iter(&self) -> ChunkIter<'_> {
        match self {
            Chunk::Xor(c) => ChunkIter::Xor(c.iter()),
            Chunk::Decimal { samples, .. } => ChunkIter::Decoded(samples.iter()),
        }
    }
}

/// Iterator over a [`Chunk`]'s samples.
#[derive(Debug)]
pub enum ChunkIter<'a> {
    /// Decoding a XOR chunk.
    Xor(XorIterator<'a>),
    /// Over samples decoded up front.
    Decoded(std::slice::Iter<'a, (i64, f64)>),
}

impl Iterator for ChunkIter<'_> {
    type Item = Result<(i64, f64)>;
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            ChunkIter::Xor(it) => it.next(),
            ChunkIter::Decoded(it) => it.next().map(|s| Ok(*s)),
        }
    }
}

impl From<XorChunk> for Chunk {
    fn from(c: XorChunk) -> Self {
        Chunk::Xor(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_dispatches_on_encoding_byte() {
        let mut app = XorAppender::new();
        app.append(1, 2.0).expect("append");
        let chunk = Chunk::from_bytes(app.chunk().bytes().to_vec()).expect("valid");
        assert_eq!(chunk.encoding(), Encoding::Xor);
        assert_eq!(chunk.num_samples(), 1);
        assert_eq!(chunk.bytes()[0], Encoding::Xor as u8);
        let samples: Vec<_> = chunk.iter().collect::<Result<_>>().expect("decodes");
        assert_eq!(samples, vec![(1, 2.0)]);
    }

    #[test]
    fn unknown_encoding_and_empty_bytes_are_errors() {
        assert_eq!(
            Chunk::from_bytes(vec![0x7f, 0, 0]),
            Err(ChunkError::UnknownEncoding(0x7f))
        );
        assert!(matches!(
            Chunk::from_bytes(Vec::new()),
            Err(ChunkError::Corrupt { offset: 0, .. })
        ));
    }
}
