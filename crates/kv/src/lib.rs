//! `strata-kv`: Strata's embeddable ordered key-value engine, a log-structured merge tree
//! in the tradition of LevelDB and RocksDB.
//!
//! Writes go to a write-ahead log ([`wal`]) and a sorted in-memory table ([`memtable`]); full
//! memtables are frozen and flushed by a background thread into immutable sorted tables
//! ([`sstable`]); the set of live tables is recorded in the [`manifest`]. Reads merge the
//! memtables and tables, newest first. All I/O goes through [`fs::FileSystem`].
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![warn(missing_docs)]

pub mod checksum;
pub mod coding;
pub mod error;
pub mod filename;
pub mod fs;
pub mod iterator;
pub mod key;
pub mod manifest;
pub mod options;
pub mod sstable;
pub mod wal;

pub use error::{Error, Result};
pub use options::{
    CompressionType, Options, ReadOptions, TableOptions, WalRecoveryMode, WriteOptions,
};
