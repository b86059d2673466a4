//! The log format shared by the write-ahead log and the manifest.
//!
//! A log file is a 16-byte header (a magic number telling WAL segments and manifests apart,
//! the format version, and a checksum of both) followed by framed records:
//!
//! ```text
//! masked crc32c: u32 LE | length: u32 LE | type: u8 (1 = FULL) | payload (length bytes)
//! ```
//!
//! The CRC covers the length, the type and the payload, so a corrupt length is detected.
//! [`LogWriter`] appends records; [`LogReader`] returns them in order and applies the
//! recovery rules of [`crate::WalRecoveryMode`]: a damaged record with no valid record after
//! it is a torn tail (a write cut short by a crash), tolerated by default; damage followed
//! by valid records is always [`crate::Error::Corruption`]. The format is specified in
//! `docs/format/wal.md`.

mod format;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use format::{
    encode_file_header, LOG_FORMAT_VERSION, LOG_HEADER_SIZE, MANIFEST_MAGIC, MAX_RECORD_SIZE,
    RECORD_HEADER_SIZE, RECORD_TYPE_FULL, WAL_MAGIC,
};
pub use reader::{LogReader, TailDamage};
pub use writer::LogWriter;
