//! The errors of the time-series store.

use crate::chunk::ChunkError;
use crate::labels::LabelError;
use crate::matcher::MatcherError;
use crate::postings::SeriesRef;

/// Errors of [`crate::Tsdb`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key-value engine underneath failed (I/O, corruption of its files, read-only mode).
    #[error(transparent)]
    Kv(#[from] strata_kv::Error),
    /// A label set given by the caller is invalid.
    #[error(transparent)]
    Label(#[from] LabelError),
    /// A matcher given by the caller is invalid.
    #[error(transparent)]
    Matcher(#[from] MatcherError),
    /// Stored bytes failed to decode. `location` names the file (WAL segment) or the
    /// key-value key that holds them.
    #[error("corruption in {location} at offset {offset}: {reason}")]
    Corruption {
        /// The WAL segment or the key (escaped) of the bad value.
        location: String,
        /// Byte offset in it.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A stored chunk failed to decode.
    #[error("corrupt chunk of series {series} at key {key}: {source}")]
    Chunk {
        /// The key (escaped) of the chunk.
        key: String,
        /// The series' reference in its partition.
        series: SeriesRef,
        /// The decoder's error.
        #[source]
        source: ChunkError,
    },
    /// The caller passed something the store cannot accept.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A write to the WAL or a flush failed earlier; the store refuses writes until it is
    /// reopened (reads keep working), because it can no longer tell what is durable.
    #[error("tsdb is read-only after an error: {0}")]
    ReadOnly(String),
    /// The store has been closed.
    #[error("tsdb is closed")]
    Closed,
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Escapes a key for an error message.
pub(crate) fn show_key(key: &[u8]) -> String {
    key.iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect()
}
