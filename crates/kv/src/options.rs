//! Tuning knobs of the LSM engine.

use crate::fs::{FileSystem, PosixFs};
use std::sync::Arc;

/// How table blocks are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum CompressionType {
    /// Stored as is.
    None = 0,
    /// LZ4 block format: fast, the default.
    #[default]
    Lz4 = 1,
    /// Zstandard: smaller, slower.
    Zstd = 2,
}

impl CompressionType {
    /// Decodes the on-disk byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(CompressionType::None),
            1 => Some(CompressionType::Lz4),
            2 => Some(CompressionType::Zstd),
            _ => None,
        }
    }
}

impl std::str::FromStr for CompressionType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(CompressionType::None),
            "lz4" => Ok(CompressionType::Lz4),
            "zstd" => Ok(CompressionType::Zstd),
            _ => Err(format!("unknown compression {s:?} (none, lz4, zstd)")),
        }
    }
}

/// What recovery does with a damaged write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WalRecoveryMode {
    /// A torn or corrupt record at the very end of the log (a write cut short by a crash) is
    /// cut off at the last good record and logged. Damage followed by valid records is an
    /// error. The default.
    #[default]
    TolerateTail,
    /// Any damage, even at the tail, is an error: the database will not open until an
    /// operator decides.
    Strict,
}

/// Options of a table being written.
#[derive(Debug, Clone)]
pub struct TableOptions {
    /// Target uncompressed size of a data block.
    pub block_size: usize,
    /// Entries between restart points inside a block.
    pub block_restart_interval: usize,
    /// Compression of each block.
    pub compression: CompressionType,
    /// zstd level when `compression` is zstd.
    pub zstd_level: i32,
    /// A block is stored compressed only if that saves at least this many thousandths
    /// of its size. 125 (1/8) is LevelDB's and RocksDB's rule: a block that barely
    /// shrinks is not worth decompressing on every read from disk. A store whose blocks
    /// are already-compressed payloads (the time-series store's chunks) sets it low: zstd
    /// still saves their keys and headers, a few percent of the table.
    pub min_compression_saving_permille: u16,
    /// Bloom filter bits per key; 0 disables the filter.
    pub bloom_bits_per_key: u32,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            block_size: 4096,
            block_restart_interval: 16,
            compression: CompressionType::Lz4,
            zstd_level: 3,
            min_compression_saving_permille: 125,
            bloom_bits_per_key: 10,
        }
    }
}

/// Options of a database.
#[derive(Debug, Clone)]
pub struct Options {
    /// Create the directory and an empty database if missing.
    pub create_if_missing: bool,
    /// Fail if the database already exists.
    pub error_if_exists: bool,
    /// Memtable size (approximate bytes) at which it is frozen and flushed.
    pub write_buffer_size: usize,
    /// Memtables (active + frozen) allowed before writers wait for a flush.
    pub max_write_buffers: usize,
    /// Options of the tables written.
    pub table: TableOptions,
    /// What recovery does with a damaged WAL tail.
    pub wal_recovery: WalRecoveryMode,
    /// Manifest size at which a fresh one (a snapshot of the current state) is started.
    pub max_manifest_size: u64,
    /// Leveled compaction and write stalls.
    pub compaction: CompactionOptions,
    /// Bytes of uncompressed data blocks kept in memory (0 disables the block cache).
    pub block_cache_size: usize,
    /// Tables kept open at once (each holds a file handle, its index and its filter).
    pub max_open_files: usize,
    /// The filesystem all I/O goes through.
    pub fs: Arc<dyn FileSystem>,
    /// Read tables through a read-only memory mapping (where the filesystem has one:
    /// [`crate::fs::PosixFs`]) rather than one `pread` per data block: no system call,
    /// page-cache lookup or copy per block (blocks are still checksummed; the block cache
    /// gets a copy of a block read twice). A 5M-key `seekrandom` that misses the block
    /// cache takes ~30% less time. Off by default, as RocksDB's `allow_mmap_reads`: a
    /// read error of the disk (EIO) or a table file truncated by another process then
    /// kills the process (SIGBUS) instead of failing the read, and the mapped pages a
    /// process touched count in its RSS (they are the page cache, reclaimable).
    pub mmap_reads: bool,
}

/// Leveled compaction (as LevelDB and RocksDB do it) and the write stalls that keep it
/// from falling behind.
///
/// L0 holds overlapping tables straight from flushes; L1..Ln hold disjoint tables, each
/// level about `level_multiplier` times the previous. A level is compacted into the next
/// when its score (L0: file count / `l0_trigger`; Ln: bytes / target bytes) reaches 1.
#[derive(Debug, Clone)]
pub struct CompactionOptions {
    /// Background compaction threads (besides the flush thread).
    pub background_threads: usize,
    /// L0 file count that starts an L0 -> L1 compaction.
    pub l0_trigger: usize,
    /// L0 file count from which each write group is delayed (writes slowed, not failed).
    pub l0_slowdown_trigger: usize,
    /// L0 file count at which writes wait for compaction.
    pub l0_stop_trigger: usize,
    /// Target size of L1 in bytes (with `dynamic_level_bytes`, the most L1 may target).
    pub level1_max_bytes: u64,
    /// Each level's target is this many times the previous one's.
    pub level_multiplier: u64,
    /// Compaction output tables are cut at about this size.
    pub target_file_size: u64,
    /// Bytes of compaction debt (bytes above level targets) from which writes are delayed.
    pub soft_pending_bytes: u64,
    /// Bytes of compaction debt at which writes wait.
    pub hard_pending_bytes: u64,
    /// Targets of the levels above the deepest non-empty one follow its size (a tenth per
    /// level up, within a tenth of and at most their static targets), so that the deepest
    /// level holds ~90% of the data at any database size (see
    /// [`crate::compaction::picker::level_targets`]). Off: static targets.
    pub dynamic_level_bytes: bool,
    /// Turn automatic compaction off (manual `compact_range` still works).
    pub disable_auto: bool,
    /// Read-triggered compaction (on by default, as in LevelDB and Pebble): point reads
    /// that consult more than one sorted run, and scans sampled about every MiB where
    /// more than one sorted run covers their key, charge the topmost L0 table; once its
    /// allowance ([`crate::compaction::read_allowance`]) is used up, L0 is compacted into
    /// L1 when no size-based compaction is due. Off: tables are compacted by size only.
    pub read_triggered: bool,
}

impl Default for CompactionOptions {
    fn default() -> Self {
        CompactionOptions {
            background_threads: 1,
            l0_trigger: 4,
            l0_slowdown_trigger: 20,
            l0_stop_trigger: 36,
            level1_max_bytes: 256 << 20,
            level_multiplier: 10,
            target_file_size: 64 << 20,
            soft_pending_bytes: 64 << 30,
            hard_pending_bytes: 256 << 30,
            dynamic_level_bytes: true,
            disable_auto: false,
            read_triggered: true,
        }
    }
}

impl CompactionOptions {
    /// Target bytes of `level` (>= 1).
    pub fn max_bytes_for_level(&self, level: usize) -> u64 {
        let mut b = self.level1_max_bytes;
        for _ in 1..level {
            b = b.saturating_mul(self.level_multiplier.max(2));
        }
        b
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            create_if_missing: true,
            error_if_exists: false,
            write_buffer_size: 64 << 20,
            max_write_buffers: 3,
            table: TableOptions::default(),
            wal_recovery: WalRecoveryMode::default(),
            max_manifest_size: 64 << 20,
            compaction: CompactionOptions::default(),
            block_cache_size: 32 << 20,
            max_open_files: 1000,
            fs: Arc::new(PosixFs),
            mmap_reads: false,
        }
    }
}

/// Per-write options.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// fsync the WAL before acknowledging. Without it an acknowledged write survives a crash
    /// of the process but may be lost if the machine crashes.
    pub sync: bool,
}

/// Per-read options.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Verify block checksums on every read (always done for data blocks in this version;
    /// kept for API stability).
    pub verify_checksums: bool,
}
