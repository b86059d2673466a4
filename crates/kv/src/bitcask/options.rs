//! Tuning knobs of the Bitcask engine.

use crate::fs::{FileSystem, PosixFs};
use std::sync::Arc;
use std::time::Duration;

/// When the active data file is fsynced (Bitcask's `sync_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Never by the engine on its own: writes are handed to the OS (they survive a crash of
    /// the process, not of the machine) and synced at roll-over, `flush` and `close`, or
    /// when a write asks for it with [`crate::WriteOptions::sync`]. The default.
    #[default]
    None,
    /// fsync after every write, before it is acknowledged.
    Always,
    /// fsync at most this long after a write: by the next write once the interval has
    /// passed, or by the background thread.
    Interval(Duration),
}

/// What recovery (and merge) does with a record that fails its checksum in a place where a
/// torn write cannot explain it (anywhere but the tail of the last file the writer used).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CorruptionPolicy {
    /// Refuse to open: `Error::Corruption` naming the file and offset. The default.
    #[default]
    Error,
    /// Skip the damaged bytes up to the next valid record, log them and list them in
    /// [`super::RecoveryReport::skipped`]. Whatever the damaged records held is lost.
    SkipAndReport,
}

/// When the background thread merges immutable data files.
///
/// A file is *selected* when its dead bytes are at least `min_dead_ratio` of its record
/// bytes, or at least `min_dead_bytes`; a merge runs when at least one file is selected and
/// rewrites the selected files (an explicit [`super::Bitcask::merge`] rewrites all of them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MergeTrigger {
    /// Merge automatically at all (an explicit `merge` always works).
    pub auto: bool,
    /// Fragmentation (dead bytes / record bytes, 0..=1) that selects a file.
    pub min_dead_ratio: f64,
    /// Dead bytes that select a file whatever its ratio.
    pub min_dead_bytes: u64,
}

impl Default for MergeTrigger {
    fn default() -> Self {
        MergeTrigger {
            auto: true,
            min_dead_ratio: 0.5,
            min_dead_bytes: 128 << 20,
        }
    }
}

/// Options of a Bitcask store.
#[derive(Debug, Clone)]
pub struct BitcaskOptions {
    /// Create the directory if missing.
    pub create_if_missing: bool,
    /// Size at which the active data file is closed and a new one started.
    pub max_file_size: u64,
    /// When writes are fsynced.
    pub sync: SyncPolicy,
    /// When the background thread merges.
    pub merge_trigger: MergeTrigger,
    /// How often the background thread checks the merge trigger (and the sync interval).
    pub merge_check_interval: Duration,
    /// Verify the CRC of every record read by `get` (the key is always compared).
    pub verify_on_read: bool,
    /// What to do with a corrupt record that is not a torn tail.
    pub corruption: CorruptionPolicy,
    /// The filesystem all I/O goes through.
    pub fs: Arc<dyn FileSystem>,
}

impl Default for BitcaskOptions {
    fn default() -> Self {
        BitcaskOptions {
            create_if_missing: true,
            max_file_size: 256 << 20,
            sync: SyncPolicy::None,
            merge_trigger: MergeTrigger::default(),
            merge_check_interval: Duration::from_secs(10),
            verify_on_read: true,
            corruption: CorruptionPolicy::Error,
            fs: Arc::new(PosixFs),
        }
    }
}
