//! The operations both storage engines provide, so that benchmarks and the command line
//! can take `--engine lsm|bitcask` and drive either through one interface.

use crate::batch::WriteBatch;
use crate::bitcask::{Bitcask, BitcaskOptions};
use crate::db::Db;
use crate::error::Result;
use crate::options::{Options, WriteOptions};
use std::path::Path;
use std::sync::Arc;

/// A key-value engine: point writes, atomic batches, point reads, iteration in an
/// engine-defined order, and durability control.
pub trait KvEngine: Send + Sync {
    /// The engine's name (`"lsm"` or `"bitcask"`).
    fn engine_name(&self) -> &'static str;
    /// Sets `key` to `value`.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()>;
    /// The value of `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Deletes `key`.
    fn delete(&self, key: &[u8]) -> Result<()>;
    /// Applies `batch` atomically.
    fn write(&self, batch: WriteBatch, opts: WriteOptions) -> Result<()>;
    /// Calls `f` on every live entry (the LSM in key order, Bitcask in unspecified order)
    /// until it returns `false`.
    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()>;
    /// Every live key (the LSM in key order, Bitcask in unspecified order).
    fn keys(&self) -> Result<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        self.for_each(&mut |k, _| {
            keys.push(k.to_vec());
            true
        })?;
        Ok(keys)
    }
    /// Makes every acknowledged write durable (LSM: memtable flushed; Bitcask: fsync).
    fn flush(&self) -> Result<()>;
    /// Reclaims space now (LSM: full compaction; Bitcask: merge of every file).
    fn compact(&self) -> Result<()>;
    /// Engine statistics as `(name, value)` pairs, for reports.
    fn stats_pairs(&self) -> Vec<(String, String)>;
    /// Flushes, stops background work and releases the directory.
    fn close_engine(self: Box<Self>) -> Result<()>;
}

/// Which engine to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// The LSM tree ([`Db`]).
    #[default]
    Lsm,
    /// The hash-indexed log ([`Bitcask`]).
    Bitcask,
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lsm" => Ok(EngineKind::Lsm),
            "bitcask" => Ok(EngineKind::Bitcask),
            _ => Err(format!("unknown engine {s:?} (lsm, bitcask)")),
        }
    }
}

/// Opens the engine `kind` in `dir` with default options on the filesystem of `opts`.
pub fn open_engine(kind: EngineKind, dir: &Path, opts: Options) -> Result<Box<dyn KvEngine>> {
    Ok(match kind {
        EngineKind::Lsm => Box::new(Db::open(dir, opts)?),
        EngineKind::Bitcask => Box::new(Bitcask::open(
            dir,
            BitcaskOptions {
                fs: opts.fs,
                create_if_missing: opts.create_if_missing,
                ..BitcaskOptions::default()
            },
        )?),
    })
}

impl KvEngine for Db {
    fn engine_name(&self) -> &'static str {
        "lsm"
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        Db::put(self, key, value)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Db::get(self, key)
    }
    fn delete(&self, key: &[u8]) -> Result<()> {
        Db::delete(self, key)
    }
    fn write(&self, batch: WriteBatch, opts: WriteOptions) -> Result<()> {
        Db::write(self, batch, opts)
    }
    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        for item in self.scan::<&[u8]>(..) {
            let (k, v) = item?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }
    fn flush(&self) -> Result<()> {
        Db::flush(self)
    }
    fn compact(&self) -> Result<()> {
        self.compact_range::<&[u8]>(..)
    }
    fn stats_pairs(&self) -> Vec<(String, String)> {
        let s = self.stats();
        vec![
            ("files_per_level".into(), format!("{:?}", s.files_per_level)),
            ("table_bytes".into(), s.table_bytes().to_string()),
            ("memory_bytes".into(), s.memory_bytes().to_string()),
            (
                "write_amplification".into(),
                format!("{:.2}", s.write_amplification()),
            ),
        ]
    }
    fn close_engine(self: Box<Self>) -> Result<()> {
        Db::close(*self)
    }
}

impl KvEngine for Bitcask {
    fn engine_name(&self) -> &'static str {
        "bitcask"
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        Bitcask::put(self, key, value)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Bitcask::get(self, key)
    }
    fn delete(&self, key: &[u8]) -> Result<()> {
        Bitcask::delete(self, key)
    }
    fn write(&self, batch: WriteBatch, opts: WriteOptions) -> Result<()> {
        Bitcask::write(self, batch, opts)
    }
    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        for item in self.iter() {
            let (k, v) = item?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }
    fn keys(&self) -> Result<Vec<Vec<u8>>> {
        Ok(Bitcask::keys(self))
    }
    fn flush(&self) -> Result<()> {
        Bitcask::flush(self)
    }
    fn compact(&self) -> Result<()> {
        self.merge()
    }
    fn stats_pairs(&self) -> Vec<(String, String)> {
        let s = self.stats();
        vec![
            ("keys".into(), s.keys.to_string()),
            ("files".into(), s.files.to_string()),
            ("disk_bytes".into(), s.disk_bytes.to_string()),
            ("live_bytes".into(), s.live_bytes.to_string()),
            ("dead_bytes".into(), s.dead_bytes.to_string()),
            ("merges".into(), s.merges.to_string()),
            (
                "keydir_memory_bytes".into(),
                s.keydir_memory_bytes.to_string(),
            ),
            (
                "keydir_bytes_per_key".into(),
                format!("{:.1}", s.keydir_bytes_per_key),
            ),
        ]
    }
    fn close_engine(self: Box<Self>) -> Result<()> {
        Bitcask::close(*self)
    }
}

/// Shares an engine between threads.
pub type SharedEngine = Arc<dyn KvEngine>;
