//! The table cache: a bounded set of open tables, keyed by file number.
//!
//! Opening a table reads and verifies its footer, index, filter and properties, and holds
//! a file handle; the table cache keeps at most `max_open_files` tables open (evicting the
//! least valuable when full; [`quick_cache`]'s CLOCK-Pro–like policy, one unit of weight
//! per table) and hands them out as `Arc<Table>`. A reader keeps its `Arc` as long as it
//! needs: eviction only drops the cache's reference, so the table stays open and readable
//! until the last reader lets go.
//!
//! Concurrent misses for the same table are collapsed: one caller opens the table while
//! the others wait for it (if that open fails, the next waiter tries itself).

use crate::cache::BlockCache;
use crate::error::{Error, IoContext, Result};
use crate::filename::table_path;
use crate::fs::FileSystem;
use crate::sstable::Table;
use quick_cache::sync::Cache;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counters of a [`TableCache`], as returned by [`TableCache::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCacheStats {
    /// Tables currently open in the cache.
    pub open_tables: u64,
    /// [`TableCache::get`] calls that found the table open.
    pub hits: u64,
    /// [`TableCache::get`] calls that opened the table (successfully or not).
    pub misses: u64,
    /// Sum of [`Table::memory_usage`] over the open tables.
    pub memory_bytes: u64,
    /// Bloom filter checks by point reads, over the open tables.
    pub bloom_checked: u64,
    /// Of those, the checks that ruled the table out (no block read).
    pub bloom_useful: u64,
    /// Checks that let a read through to a table without the key.
    pub bloom_false_positives: u64,
    /// Bytes read from table files (blocks not found in the block cache), over the open
    /// tables.
    pub bytes_read: u64,
    /// Open tables read through a memory mapping (`Options::mmap_reads`).
    pub mapped_tables: u64,
}

/// A bounded cache of open tables of one database directory.
pub struct TableCache {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    max_open_files: usize,
    block_cache: Option<Arc<BlockCache>>,
    /// Open tables with [`FileSystem::open_mapped`] (see `Options::mmap_reads`).
    mmap_reads: bool,
    tables: Cache<u64, Arc<Table>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for TableCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableCache")
            .field("dir", &self.dir)
            .field("max_open_files", &self.max_open_files)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl TableCache {
    /// A cache of at most `max_open_files` open tables (at least 1) of directory `dir`
    /// on `fs`. Tables are opened with `block_cache`.
    pub fn new(
        fs: Arc<dyn FileSystem>,
        dir: PathBuf,
        max_open_files: usize,
        block_cache: Option<Arc<BlockCache>>,
    ) -> Self {
        let max_open_files = max_open_files.max(1);
        TableCache {
            fs,
            dir,
            max_open_files,
            block_cache,
            mmap_reads: false,
            tables: Cache::new(max_open_files),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The open table number `number`, opening it if it is not open.
    ///
    /// `file_size` is the size the manifest records; a file of another size is
    /// [`Error::Corruption`]. A missing or unreadable file is [`Error::Io`] naming its
    /// path. Failed opens are not cached: the next call tries again.
    pub fn get(&self, number: u64, file_size: u64) -> Result<Arc<Table>> {
        let mut opened = false;
        let table = self.tables.get_or_insert_with(&number, || {
            opened = true;
            self.misses.fetch_add(1, Ordering::Relaxed);
            self.open(number, file_size).map(Arc::new)
        })?;
        if !opened {
            self.hits.fetch_add(1, Ordering::Relaxed);
            // The cache is keyed by number only; a size mismatch on a hit means the caller
            // and the manifest disagree, which is as corrupt as a wrong file.
            if table.properties().file_size != file_size {
                return Err(size_mismatch(
                    table.file_name(),
                    table.properties().file_size,
                    file_size,
                ));
            }
        }
        Ok(table)
    }

    /// Tables opened from now on are read through a memory mapping where the filesystem
    /// has one (see `Options::mmap_reads`).
    pub fn with_mmap_reads(mut self, mmap_reads: bool) -> Self {
        self.mmap_reads = mmap_reads;
        self
    }

    fn open(&self, number: u64, file_size: u64) -> Result<Table> {
        let path = table_path(&self.dir, number);
        let name = path.display().to_string();
        let file = if self.mmap_reads {
            self.fs.open_mapped(&path)
        } else {
            self.fs.open(&path)
        }
        .context(|| format!("opening table {name}"))?;
        let len = file.len();
        if len != file_size {
            return Err(size_mismatch(&name, len, file_size));
        }
        Table::open_with_cache(file, name, self.block_cache.clone())
    }

    /// Drops the cache's reference to table `number` (call when the table is deleted).
    /// Readers holding an `Arc<Table>` keep it open until they drop it.
    pub fn evict(&self, number: u64) {
        self.tables.remove(&number);
    }

    /// The block cache tables are opened with.
    pub fn block_cache(&self) -> Option<&Arc<BlockCache>> {
        self.block_cache.as_ref()
    }

    /// The most tables kept open at once.
    pub fn max_open_files(&self) -> usize {
        self.max_open_files
    }

    /// A snapshot of the counters. `memory_bytes` walks the open tables.
    pub fn stats(&self) -> TableCacheStats {
        let mut st = TableCacheStats {
            open_tables: self.tables.len() as u64,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            ..TableCacheStats::default()
        };
        for (_, t) in self.tables.iter() {
            st.memory_bytes += t.memory_usage() as u64;
            let (checked, useful) = t.filter_stats();
            st.bloom_checked += checked;
            st.bloom_useful += useful;
            st.bloom_false_positives += t.filter_false_positives();
            st.bytes_read += t.bytes_read();
            st.mapped_tables += u64::from(t.is_mapped());
        }
        st
    }
}

fn size_mismatch(name: &str, actual: u64, expected: u64) -> Error {
    Error::corruption(
        name,
        actual.min(expected),
        format!("table is {actual} bytes, manifest says {expected}"),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::fs::MemFs;
    use crate::iterator::InternalIterator;
    use crate::key::{internal_key, ValueKind};
    use crate::options::TableOptions;
    use crate::sstable::TableBuilder;
    use std::path::Path;

    /// Writes table `number` with `n` keys `k{i}` -> `v{number}-{i}`; returns its size.
    fn write(fs: &MemFs, number: u64, n: u32) -> u64 {
        let path = table_path(Path::new("/db"), number);
        let mut b = TableBuilder::new(
            fs.create(&path).unwrap(),
            path.display().to_string(),
            &TableOptions::default(),
        );
        for i in 0..n {
            b.add(
                &internal_key(format!("k{i:05}").as_bytes(), 1, ValueKind::Value),
                format!("v{number}-{i}").as_bytes(),
            )
            .unwrap();
        }
        b.finish().unwrap().file_size
    }

    fn cache(fs: &MemFs, max_open: usize) -> TableCache {
        TableCache::new(
            Arc::new(fs.clone()),
            PathBuf::from("/db"),
            max_open,
            Some(Arc::new(BlockCache::new(1 << 20))),
        )
    }

    #[test]
    fn hits_and_misses() {
        let fs = MemFs::new();
        let size = write(&fs, 7, 100);
        let tc = cache(&fs, 10);
        let t1 = tc.get(7, size).unwrap();
        let t2 = tc.get(7, size).unwrap();
        assert!(Arc::ptr_eq(&t1, &t2));
        assert_eq!(
            t1.get(b"k00042", 5).unwrap().map(|l| (l.kind, l.value)),
            Some((ValueKind::Value, b"v7-42".to_vec()))
        );
        assert!(t1.cache_id().is_some());
        let s = tc.stats();
        assert_eq!((s.open_tables, s.hits, s.misses), (1, 1, 1));
        assert_eq!(s.memory_bytes, t1.memory_usage() as u64);
        assert!(s.memory_bytes > 0);
        tc.evict(7);
        assert_eq!(tc.stats().open_tables, 0);
        let t3 = tc.get(7, size).unwrap();
        assert!(!Arc::ptr_eq(&t1, &t3));
        // A reopened table gets a fresh block cache id.
        assert_ne!(t1.cache_id(), t3.cache_id());
        assert_eq!(tc.stats().misses, 2);
    }

    #[test]
    fn open_tables_are_bounded() {
        let fs = MemFs::new();
        let sizes: Vec<u64> = (1..=40).map(|n| write(&fs, n, 20)).collect();
        let tc = cache(&fs, 4);
        for round in 0..3 {
            for (i, size) in sizes.iter().enumerate() {
                let n = i as u64 + 1;
                let t = tc.get(n, *size).unwrap();
                assert_eq!(
                    t.get(b"k00003", 5).unwrap().map(|l| (l.kind, l.value)),
                    Some((ValueKind::Value, format!("v{n}-3").into_bytes())),
                    "round {round} table {n}"
                );
                let open = tc.stats().open_tables;
                assert!((1..=4).contains(&open), "{open} tables open");
            }
        }
        let s = tc.stats();
        assert_eq!(s.hits + s.misses, 120);
        assert!(s.misses >= 40, "{s:?}");
    }

    #[test]
    fn evicted_table_stays_readable() {
        let fs = MemFs::new();
        let size = write(&fs, 3, 500);
        let tc = cache(&fs, 1);
        let t = tc.get(3, size).unwrap();
        tc.evict(3);
        // Push it out by other means too, and delete the file: the open handle still reads.
        let other = write(&fs, 4, 10);
        tc.get(4, other).unwrap();
        fs.remove_file(&table_path(Path::new("/db"), 3)).unwrap();
        let mut it = t.iter();
        let mut n = 0;
        it.seek_to_first().unwrap();
        while it.valid() {
            n += 1;
            it.next().unwrap();
        }
        assert_eq!(n, 500);
        assert_eq!(
            t.get(b"k00499", 5).unwrap().map(|l| (l.kind, l.value)),
            Some((ValueKind::Value, b"v3-499".to_vec()))
        );
        // The cache itself no longer finds it.
        let e = tc.get(3, size).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
    }

    #[test]
    fn wrong_size_is_corruption() {
        let fs = MemFs::new();
        let size = write(&fs, 9, 50);
        let tc = cache(&fs, 10);
        let e = tc.get(9, size + 1).unwrap_err();
        assert!(e.is_corruption(), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("000009.sst"), "{msg}");
        assert!(
            msg.contains(&format!(
                "table is {size} bytes, manifest says {}",
                size + 1
            )),
            "{msg}"
        );
        // Not cached: the right size still opens, and then a wrong size on a hit is
        // corruption too.
        tc.get(9, size).unwrap();
        assert!(tc.get(9, size - 1).unwrap_err().is_corruption());
        assert_eq!(tc.stats().open_tables, 1);
    }

    #[test]
    fn missing_file_is_io_error() {
        let fs = MemFs::new();
        let tc = cache(&fs, 10);
        let e = tc.get(123, 1000).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("000123.sst"), "{e}");
        assert_eq!(tc.stats().open_tables, 0);
        // Once it exists it opens.
        let size = write(&fs, 123, 5);
        tc.get(123, size).unwrap();
    }

    #[test]
    fn concurrent_gets() {
        let fs = MemFs::new();
        let sizes: Vec<u64> = (1..=8).map(|n| write(&fs, n, 50)).collect();
        let tc = cache(&fs, 3);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (tc, sizes) = (&tc, &sizes);
                s.spawn(move || {
                    for i in 0..500u64 {
                        let n = (i * 3 + t) % 8 + 1;
                        let table = tc.get(n, sizes[n as usize - 1]).unwrap();
                        let k = format!("k{:05}", i % 50);
                        assert_eq!(
                            table
                                .get(k.as_bytes(), 5)
                                .unwrap()
                                .map(|l| (l.kind, l.value)),
                            Some((ValueKind::Value, format!("v{n}-{}", i % 50).into_bytes()))
                        );
                    }
                });
            }
        });
        let s = tc.stats();
        assert_eq!(s.hits + s.misses, 2000);
        assert!(s.open_tables <= 3);
    }
}
