//! The log format shared by the write-ahead log and the manifest.
//!
//! A log file is a 16-byte header (a magic number telling WAL segments and manifests apart,
//! the format version, and a checksum of both) followed by framed records:
//!
//! ```text
//! payload crc: u32 LE | length: u32 LE | type: u8 (1 = FULL) | header crc: u32 LE | payload
//! ```
//!
//! The payload CRC covers the length, the type and the payload; the header CRC covers the
//! first 9 header bytes. The header CRC lets the reader tell a write cut short by a crash
//! (*torn*: a short header, a verified header whose payload runs past the end, or zeros to
//! the end) from a complete record damaged on the medium (*corrupt*). [`LogWriter`] appends
//! records; [`LogReader`] returns them in order and applies a [`TailPolicy`] to damage at
//! the end: the WAL tolerates both kinds by default ([`crate::WalRecoveryMode`]), the
//! manifest only torn tails. Damage followed by valid records is always
//! [`crate::Error::Corruption`]. The format is specified in `docs/format/wal.md`.

mod format;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use format::{
    encode_file_header, LOG_FORMAT_VERSION, LOG_HEADER_SIZE, MANIFEST_MAGIC, MAX_RECORD_SIZE,
    RECORD_HEADER_SIZE, RECORD_TYPE_FULL, WAL_MAGIC,
};
pub use reader::{LogReader, TailDamage, TailDamageKind, TailPolicy};
pub use writer::LogWriter;
