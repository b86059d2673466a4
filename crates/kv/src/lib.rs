//! `strata-kv`: Strata's embeddable ordered key-value engine, a log-structured merge tree
//! in the tradition of LevelDB and RocksDB, and a second engine, [`bitcask`], a
//! hash-indexed append-only log for few keys with many updates. Both implement
//! [`engine::KvEngine`].
//!
//! Writes go to a write-ahead log ([`wal`]) and a sorted in-memory table ([`memtable`]); full
//! memtables are frozen and flushed by a background thread into immutable sorted tables
//! ([`sstable`]); the set of live tables is recorded in the [`manifest`]. Reads merge the
//! memtables and tables, newest first. All I/O goes through [`fs::FileSystem`].
//!
//! ```
//! use strata_kv::{Db, Options, WriteBatch, WriteOptions};
//! # let dir = tempfile::tempdir().unwrap();
//! let db = Db::open(dir.path(), Options::default())?;
//! db.put(b"user/1", b"ada")?;
//! let mut batch = WriteBatch::new();
//! batch.put(b"user/2", b"grace").delete(b"user/1");
//! db.write(batch, WriteOptions { sync: true })?;
//! assert_eq!(db.get(b"user/2")?, Some(b"grace".to_vec()));
//! let users: Vec<_> = db.prefix(b"user/").collect::<Result<_, _>>()?;
//! assert_eq!(users.len(), 1);
//! db.close()?;
//! # Ok::<(), strata_kv::Error>(())
//! ```
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![warn(missing_docs)]

pub mod batch;
pub mod bitcask;
pub mod cache;
pub mod checksum;
pub mod coding;
pub mod compaction;
pub mod db;
pub mod db_iter;
pub mod engine;
pub mod error;
pub mod filename;
pub mod fs;
pub mod iterator;
pub mod key;
pub mod manifest;
pub mod memtable;
pub mod merge;
pub mod options;
mod prefetch;
pub mod range_del;
pub mod sstable;
pub mod table_cache;
pub mod version;
pub mod wal;

pub use batch::WriteBatch;
pub use db::{Db, DbStats, Snapshot};
pub use db_iter::{DbIterator, Scan};
pub use engine::{open_engine, EngineKind, KvEngine};
pub use error::{Error, Result};
pub use options::{
    CompactionOptions, CompressionType, Options, ReadOptions, TableOptions, WalRecoveryMode,
    WriteOptions,
};
