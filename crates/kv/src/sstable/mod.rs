//! Sorted string tables: immutable files of internal-key-sorted entries.
//!
//! A table is written once, front to back, by a [`TableBuilder`] and then read by
//! positioned reads through a [`Table`]. The layout (see `docs/format/sstable.md`):
//!
//! ```text
//! +---------------------------+
//! | data block 0     | trailer|   entries, prefix-compressed keys, restart points
//! | data block 1     | trailer|
//! | ...                       |
//! | data block n-1   | trailer|
//! | filter block     | trailer|   bloom filter over user keys (absent if disabled)
//! | index block      | trailer|   last internal key of each data block -> BlockHandle
//! | properties block | trailer|   tagged statistics and key range
//! | footer (64 bytes)         |   filter/index/properties handles, version, crc, magic
//! +---------------------------+
//!
//! trailer (5 bytes): compression type u8 | masked crc32c(block bytes ++ type byte) u32 LE
//! ```
//!
//! Every byte of the file is covered by a checksum: each block by its trailer, the footer
//! by its own. Any damage the reader finds is reported as
//! [`Error::Corruption`](crate::Error::Corruption) naming the file and offset.

pub mod block;
mod builder;
pub mod filter;
pub mod format;
mod index;
pub mod properties;
mod reader;

pub use builder::TableBuilder;
pub use format::{BlockHandle, FORMAT_VERSION, TABLE_MAGIC};
pub use properties::Properties;
pub use reader::{Table, TableIterator};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
