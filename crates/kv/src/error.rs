//! Typed errors of the storage engines.

use std::io;
use std::path::PathBuf;

/// Result alias used throughout `strata-kv`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
///
/// Corruption always names the file and the byte offset where it was found, so that an
/// operator can inspect (`strata inspect ...`) or restore exactly that file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Data on disk failed a checksum, a magic number, a bounds check or a decode.
    #[error("corruption in {file} at offset {offset}: {reason}")]
    Corruption {
        /// The file (path as the engine knows it) that holds the bad bytes.
        file: String,
        /// Byte offset in that file where the problem starts.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the engine was doing, with the path.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The caller passed something the engine cannot accept.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Another process (or another `Db` in this process) holds the directory's LOCK file.
    #[error("database directory {0} is locked by another process (LOCK file held)")]
    Locked(PathBuf),
    /// The database was closed, or a background error put it into read-only mode.
    ///
    /// After a failed fsync or a failed flush the engine cannot tell what is durable, so it
    /// refuses later writes rather than acknowledging them (reads keep working). Reopening
    /// recovers what was durable.
    #[error("database is read-only after a background error: {0}")]
    ReadOnly(String),
    /// The disk (or quota) is full. The write was not applied; unlike [`Error::ReadOnly`]
    /// this is recoverable: once space returns, the next write (or [`crate::Db::resume`])
    /// starts a new WAL segment, retries the failed flush and takes writes again.
    #[error("no space left for the database (writes resume when space returns): {0}")]
    NoSpace(String),
    /// The database has been closed.
    #[error("database is closed")]
    Closed,
    /// The on-disk data uses a format version this build does not understand.
    #[error("{file}: unsupported format version {version}")]
    UnsupportedVersion {
        /// The file.
        file: String,
        /// The version found.
        version: u32,
    },
}

impl Error {
    /// Builds a [`Error::Corruption`].
    pub fn corruption(file: impl Into<String>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// True if this error reports corrupt data on disk.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }

    /// True if this error says the disk or quota is full (ENOSPC, EDQUOT, or
    /// [`Error::NoSpace`]).
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::NoSpace(_) => true,
            Error::Io { source, .. } => {
                matches!(
                    source.kind(),
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
                ) || matches!(source.raw_os_error(), Some(28) | Some(122))
            }
            _ => false,
        }
    }

    /// A copy suitable for handing to several waiters (io::Error is not `Clone`).
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Corruption {
                file,
                offset,
                reason,
            } => Error::corruption(file.clone(), *offset, reason.clone()),
            Error::Io { context, source } => Error::Io {
                context: context.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Error::InvalidArgument(s) => Error::InvalidArgument(s.clone()),
            Error::Locked(p) => Error::Locked(p.clone()),
            Error::ReadOnly(s) => Error::ReadOnly(s.clone()),
            Error::NoSpace(s) => Error::NoSpace(s.clone()),
            Error::Closed => Error::Closed,
            Error::UnsupportedVersion { file, version } => Error::UnsupportedVersion {
                file: file.clone(),
                version: *version,
            },
        }
    }
}

/// Attaches context (usually the path) to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn context<C: FnOnce() -> String>(self, f: C) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context<C: FnOnce() -> String>(self, f: C) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: f(),
            source,
        })
    }
}
