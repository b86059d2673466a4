//! The LSM database: write path (group commit into WAL + memtable), background flush, reads
//! and recovery.
//!
//! Threads and locks:
//! - Writers queue up in `queue`; the writer at the front is the *leader*: it takes the
//!   batches of everybody queued behind it, appends them to the WAL with one write (and one
//!   fsync if any of them asked for it), inserts them into the memtable and wakes them.
//!   Only the leader touches `wal` and switches memtables.
//! - One background thread flushes frozen memtables into L0 tables and records them in the
//!   manifest; another (the WAL thread) syncs the live WAL segment in the background,
//!   allocates space ahead of its records and creates the next segment ahead.
//! - Readers take a consistent [`SuperVersion`] (memtables + table set) under `state` for a
//!   moment, then read without any lock. Sequence numbers make the view exact: a reader
//!   sees only entries with a sequence number `<= visible_seq` at the time it started.
//!
//! Lock order: `manifest` -> `state` -> `wal`; `queue` is never held with another lock.

use crate::batch::WriteBatch;
use crate::cache::{BlockCache, BlockCacheStats};
use crate::compaction::job::{self, JobContext};
use crate::compaction::{picker, BusySet, Compaction, CompactionReason};
use crate::db_iter::{DbIterator, Scan, Source};
use crate::error::{Error, IoContext, Result};
use crate::filename::{self, FileType};
use crate::fs::{BackgroundAllocate, BackgroundSync, DeferredRemoveFs, FileLock, FileSystem};
use crate::key::{ValueKind, MAX_SEQUENCE};
use crate::manifest::{self, FileMeta, ManifestState, ManifestWriter, VersionEdit};
use crate::memtable::Memtable;
use crate::options::{Options, WalRecoveryMode, WriteOptions};
use crate::range_del::RangeTombstoneSet;
use crate::sstable::TableBuilder;
use crate::table_cache::{TableCache, TableCacheStats};
use crate::version::{TableHandle, Version, NUM_LEVELS};
use crate::wal::{LogReader, LogWriter, TailDamageKind, RECORD_HEADER_SIZE, WAL_MAGIC};
use std::collections::{BTreeMap, VecDeque};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest group of batches (in bytes) one leader commits at once.
const MAX_GROUP_BYTES: usize = 1 << 20;

/// Unsynced WAL bytes after which the WAL thread syncs the segment in the background:
/// the fsync at a memtable switch, which the writers wait for, then finds at most about
/// this much left to write (it used to find the whole segment, tens of milliseconds).
const WAL_BYTES_PER_SYNC: u64 = 8 << 20;

/// Zeros written ahead of synced WAL writes at a time (see [`LogWriter::preallocate`]): a
/// synced write into them costs one fdatasync of data alone (measured ~30% faster on ext4
/// than one that also grows the file); once per this many bytes one pays for the growth.
const WAL_PREALLOCATE_CHUNK: u64 = 1 << 20;

/// Bytes of the live WAL segment the WAL thread keeps allocated and loaded into the page
/// cache ahead of its records (see [`BackgroundAllocate`]), asked for again whenever fewer
/// than [`WAL_FILL_LOW`] are left: the writers' `write(2)` then neither allocates disk
/// blocks (whose delayed allocation in writeback blocked it for milliseconds behind the
/// inode lock) nor page-cache pages (a first touch of memory the VM host has not backed yet
/// costs ~8 µs: 1 write in 30 paid it, which made the 5M-key fills' P99).
const WAL_FILL_AHEAD: u64 = 8 << 20;
const WAL_FILL_LOW: u64 = 6 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The engine's state is only mutated in small sections that cannot panic half-way, so
    // a poisoned lock (a panic elsewhere while holding it) still guards consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds to a counter only the write leader changes: leaders follow one another through the
/// queue lock, so a plain load and store suffice (a locked read-modify-write costs some
/// twenty cycles, several times per write).
fn leader_add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(g).unwrap_or_else(|e| e.into_inner())
}

/// The memtables and tables a reader reads, captured together.
pub(crate) struct SuperVersion {
    pub(crate) mem: Arc<Memtable>,
    /// Frozen memtables, newest first.
    pub(crate) imm: Vec<Arc<Memtable>>,
    pub(crate) version: Arc<Version>,
    /// Range deletes of the frozen memtables and the version (the active memtable's are
    /// added by each reader, since it still receives them).
    pub(crate) frozen_range_tombstones: RangeTombstoneSet,
    /// The database to wake when reads use up a table's read allowance; `None` when
    /// read-triggered compaction is off (reads then charge nothing).
    read_trigger: Option<Weak<DbInner>>,
}

impl SuperVersion {
    pub(crate) fn new(mem: Arc<Memtable>, imm: Vec<Arc<Memtable>>, version: Arc<Version>) -> Self {
        let frozen_range_tombstones = version
            .range_tombstones
            .with(imm.iter().flat_map(|m| m.range_tombstones()));
        SuperVersion {
            mem,
            imm,
            version,
            frozen_range_tombstones,
            read_trigger: None,
        }
    }

    /// True if reads through it charge tables for read-triggered compaction.
    pub(crate) fn charges_reads(&self) -> bool {
        self.read_trigger.is_some()
    }

    /// A scan's sample at `key` (see [`Version::charge_sampled_read`]).
    pub(crate) fn sample_read(&self, key: &[u8]) {
        if let Some(db) = &self.read_trigger {
            if self
                .version
                .charge_sampled_read(key, crate::compaction::SCAN_SAMPLE_CHARGE)
            {
                if let Some(db) = db.upgrade() {
                    db.wake_compaction();
                }
            }
        }
    }

    /// Every range delete a reader must apply.
    pub(crate) fn range_tombstones(&self) -> RangeTombstoneSet {
        let active = self.mem.range_tombstones();
        if active.is_empty() {
            self.frozen_range_tombstones.clone()
        } else {
            self.frozen_range_tombstones.with(active)
        }
    }
}

impl SuperVersion {
    /// Cursors over every source, newest first.
    pub(crate) fn iterators(&self) -> Vec<Source> {
        // Sized exactly: a source is a few hundred bytes and an iterator is created per
        // seek (`seekrandom`), where spare slots cost a larger allocation to fill.
        let levels = &self.version.levels;
        let deeper = levels.iter().skip(1).filter(|l| !l.is_empty()).count();
        let n = 1 + self.imm.len() + levels.first().map_or(0, Vec::len) + deeper;
        let mut v = Vec::with_capacity(n);
        v.push(Source::Mem(self.mem.iter()));
        v.extend(self.imm.iter().map(|m| Source::Mem(m.iter())));
        v.extend(self.version.level_iterators().map(Source::Level));
        v
    }
}

struct Frozen {
    mem: Arc<Memtable>,
    /// WAL segment holding the memtable's writes.
    wal: u64,
}

/// How hard writers must back off for compaction to keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WritePressure {
    None,
    /// Each write group is delayed by [`SLOWDOWN_DELAY`].
    Slowdown,
    /// Writers wait until compaction catches up.
    Stop,
}

/// Delay of a write group while compaction is behind (as LevelDB's 1 ms per write).
const SLOWDOWN_DELAY: Duration = Duration::from_millis(1);

struct State {
    /// Derived from `version`; see [`State::install_version`].
    pressure: WritePressure,
    mem: Arc<Memtable>,
    mem_wal: u64,
    /// Oldest first.
    imm: VecDeque<Frozen>,
    version: Arc<Version>,
    super_version: Arc<SuperVersion>,
    manifest_state: ManifestState,
    next_file_number: u64,
    /// Last sequence number handed out.
    last_seq: u64,
    bg_error: Option<Error>,
    /// `bg_error` is a full disk (during a WAL append, a flush or a compaction): writes
    /// resume once [`DbInner::resume`] gets past it. A failed fsync is never recoverable.
    bg_error_recoverable: bool,
    closing: bool,
    /// Closing without finishing queued flushes (a simulated crash).
    abandoned: bool,
    /// Tables and output ranges of running compactions.
    busy: BusySet,
    /// Background compactions running now.
    bg_compactions: usize,
    /// A manual compaction is running or waiting: background compactions pick nothing
    /// until it is done, as it works from a view of which level is deepest.
    manual_compaction: bool,
    /// Per level: the largest user key of the last compaction, to go round-robin.
    cursors: Vec<Vec<u8>>,
    /// A background sync of the WAL segment asked for by a writer, for the WAL thread.
    wal_syncer: Option<Box<dyn BackgroundSync>>,
    /// Space ahead of the live WAL segment's records asked for by a writer, for the WAL
    /// thread.
    wal_fill: Option<FillJob>,
    /// The active memtable is half full: the WAL thread should create the next WAL
    /// segment. Asked once per memtable (`next_wal_asked`).
    prepare_wal: bool,
    next_wal_asked: bool,
    /// The database itself, for super versions whose reads charge tables (`None`: read-
    /// triggered compaction off).
    read_trigger: Option<Weak<DbInner>>,
}

/// A WAL segment's background allocator, shared by the leader and the WAL thread.
struct SegmentAllocator {
    handle: Box<dyn BackgroundAllocate>,
    /// Set (under this lock) when the segment stops being the live one, before its zeros
    /// are cut off; allocations happen under it, so none can grow the segment afterwards
    /// (zeros at the end of a segment followed by another would read as mid-log damage).
    retired: Mutex<bool>,
}

impl SegmentAllocator {
    fn new(handle: Box<dyn BackgroundAllocate>) -> Arc<SegmentAllocator> {
        Arc::new(SegmentAllocator {
            handle,
            retired: Mutex::new(false),
        })
    }

    /// Allocates and loads `from..to` unless the segment was retired; false if it was, or
    /// if allocating failed (then the segment is retired: only speed is lost).
    fn fill(&self, from: u64, to: u64) -> bool {
        {
            let mut retired = lock(&self.retired);
            if *retired {
                return false;
            }
            if let Err(e) = self.handle.allocate(from, to) {
                tracing::debug!(error = %e, "allocating WAL space ahead failed");
                *retired = true;
                return false;
            }
        }
        // Outside the lock: loading takes a while, changes nothing, and loads nothing of a
        // range cut off meanwhile.
        if let Err(e) = self.handle.load(from, to) {
            tracing::debug!(error = %e, "loading WAL space ahead failed");
        }
        true
    }

    fn retire(&self) {
        *lock(&self.retired) = true;
    }
}

/// Space `from..to` of a live segment for the WAL thread to allocate and load.
struct FillJob {
    alloc: Arc<SegmentAllocator>,
    from: u64,
    to: u64,
}

/// A WAL segment created ahead of the memtable switch that will write into it.
struct PreparedSegment {
    number: u64,
    writer: LogWriter,
}

impl State {
    fn new_file_number(&mut self) -> u64 {
        let n = self.next_file_number;
        self.next_file_number += 1;
        n
    }

    /// Makes `version` current and recomputes what depends on it.
    fn install_version(&mut self, version: Version, opts: &Options) {
        if self.read_trigger.is_some() {
            version.init_read_allowances();
        }
        self.version = Arc::new(version);
        self.pressure = write_pressure(&self.version, opts);
        self.refresh_super_version();
    }

    fn refresh_super_version(&mut self) {
        let mut sv = SuperVersion::new(
            self.mem.clone(),
            self.imm.iter().rev().map(|f| f.mem.clone()).collect(),
            self.version.clone(),
        );
        sv.read_trigger = self.read_trigger.clone();
        self.super_version = Arc::new(sv);
    }

    fn check_writable(&self) -> Result<()> {
        if let Some(e) = &self.bg_error {
            if self.bg_error_recoverable {
                return Err(Error::NoSpace(e.to_string()));
            }
            return Err(Error::ReadOnly(e.to_string()));
        }
        if self.closing {
            return Err(Error::Closed);
        }
        Ok(())
    }
}

struct WalState {
    writer: LogWriter,
    /// The live segment's file number.
    number: u64,
    /// Segment length from which the next background sync is asked for.
    next_background_sync: u64,
    /// Offset up to which the segment is zero-filled ahead of the records (0: not at all).
    preallocated: u64,
    /// The segment's background allocator, once space ahead was asked for.
    alloc: Option<Arc<SegmentAllocator>>,
    /// Offset up to which space ahead was asked for (`u64::MAX`: never ask, under strict
    /// recovery or without an allocator).
    fill_asked: u64,
    /// The next segment, created ahead by the WAL thread (header written, directory entry
    /// synced) so that a memtable switch does not wait for that;
    /// see [`DbInner::prepare_next_wal`].
    next: Option<PreparedSegment>,
}

impl WalState {
    /// Leader only: asks for space ahead of the records once fewer than [`WAL_FILL_LOW`]
    /// bytes are left (one comparison otherwise).
    fn fill_job(&mut self) -> Option<FillJob> {
        let len = self.writer.len();
        if self.fill_asked >= len.saturating_add(WAL_FILL_LOW) {
            return None;
        }
        let alloc = match &self.alloc {
            Some(a) => a.clone(),
            None => match self.writer.background_allocator() {
                Some(h) => self.alloc.insert(SegmentAllocator::new(h)).clone(),
                None => {
                    self.fill_asked = u64::MAX;
                    return None;
                }
            },
        };
        let from = self.fill_asked.max(len);
        let to = len + WAL_FILL_AHEAD;
        self.fill_asked = to;
        Some(FillJob { alloc, from, to })
    }

    /// Leader only: the segment stops being the live one; no allocation ahead of it from
    /// now on. True if it may have grown past its records.
    fn retire(&mut self) -> bool {
        let grown = self.preallocated > 0 || self.alloc.is_some();
        if let Some(a) = self.alloc.take() {
            a.retire();
        }
        grown
    }
}

enum Request {
    Write {
        batch: WriteBatch,
        sync: bool,
    },
    /// Freeze the memtable so that the flush thread writes it out.
    Flush,
    /// Get past a full disk (see [`Db::resume`]).
    Resume,
}

struct Pending {
    request: Mutex<Request>,
    result: Mutex<Option<Result<u64>>>,
}

/// What a leader carries out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LeadKind {
    Write,
    Flush,
    Resume,
}

/// The writers' queue.
#[derive(Default)]
struct Queue {
    /// A leader is at work (its own request is not in `waiting` when it came alone).
    leader: bool,
    /// Writers waiting to lead or to be served, oldest first.
    waiting: VecDeque<Arc<Pending>>,
}

#[derive(Default)]
struct Counters {
    user_bytes_written: AtomicU64,
    wal_bytes_written: AtomicU64,
    wal_syncs: AtomicU64,
    wal_background_syncs: AtomicU64,
    wal_segments_ahead: AtomicU64,
    write_groups: AtomicU64,
    writes: AtomicU64,
    flushes: AtomicU64,
    flush_bytes_written: AtomicU64,
    stalls: AtomicU64,
    stall_micros: AtomicU64,
    slowdowns: AtomicU64,
    compactions: AtomicU64,
    read_triggered_compactions: AtomicU64,
    trivial_moves: AtomicU64,
    compaction_bytes_read: AtomicU64,
    compaction_bytes_written: AtomicU64,
    compaction_entries_dropped: AtomicU64,
    compaction_micros: AtomicU64,
    compactions_running: AtomicU64,
}

/// Counts a compaction as running (and its time) from creation to drop, whatever the exit.
struct RunningCompaction<'a> {
    counters: &'a Counters,
    started: Instant,
}

impl<'a> RunningCompaction<'a> {
    fn new(counters: &'a Counters, started: Instant) -> Self {
        counters.compactions_running.fetch_add(1, Ordering::Relaxed);
        RunningCompaction { counters, started }
    }
}

impl Drop for RunningCompaction<'_> {
    fn drop(&mut self) {
        let c = self.counters;
        c.compactions_running.fetch_sub(1, Ordering::Relaxed);
        c.compaction_micros
            .fetch_add(self.started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

/// Background compactions paused for a manual compaction, while alive.
struct ExclusiveManual<'a> {
    inner: &'a DbInner,
}

impl<'a> ExclusiveManual<'a> {
    /// Stops background compactions from starting and waits for running ones to finish.
    fn start(inner: &'a DbInner) -> Self {
        let mut st = lock(&inner.state);
        st.manual_compaction = true;
        while st.bg_compactions > 0 {
            st = wait(&inner.bg_cv, st);
        }
        ExclusiveManual { inner }
    }
}

impl Drop for ExclusiveManual<'_> {
    fn drop(&mut self) {
        lock(&self.inner.state).manual_compaction = false;
        self.inner.bg_cv.notify_all();
    }
}

struct DbInner {
    dir: PathBuf,
    opts: Options,
    fs: Arc<dyn FileSystem>,
    state: Mutex<State>,
    /// Signalled when a flush finishes, a memtable is frozen, an error is recorded or the
    /// database closes.
    bg_cv: Condvar,
    queue: Mutex<Queue>,
    queue_cv: Condvar,
    wal: Mutex<WalState>,
    manifest: Mutex<ManifestWriter>,
    /// Held by a manual compaction from start to end: one at a time.
    manual: Mutex<()>,
    /// Readers see sequence numbers up to this one.
    visible_seq: AtomicU64,
    /// Live snapshots: sequence number -> how many.
    snapshots: Mutex<BTreeMap<u64, usize>>,
    /// Open tables (bounded) and, inside, the block cache.
    tables: Arc<TableCache>,
    block_cache: Arc<BlockCache>,
    /// `fs` for table handles: an obsolete table is unlinked on a background thread, not by
    /// the reader that happens to drop its last handle.
    table_fs: Arc<DeferredRemoveFs>,
    /// Set on close so that running compactions stop early.
    shutting_down: AtomicBool,
    /// Mirrors `State::bg_error_recoverable`, so that writers check it without the lock.
    recoverable_error: AtomicBool,
    counters: Counters,
    /// Released by close and abandon themselves (see [`DbInner::release_dir_lock`]).
    dir_lock: Mutex<Option<Box<dyn FileLock>>>,
}

impl DbInner {
    /// At close: a reader waking compaction may hold the last `Arc<DbInner>` for a moment
    /// after the `Db` is gone, and a reopen must not find the directory still locked. A
    /// live [`Snapshot`] keeps it locked (it still reads the files) until it is dropped.
    fn release_dir_lock(&self) {
        if lock(&self.snapshots).is_empty() {
            lock(&self.dir_lock).take();
        }
    }
}

/// An open LSM database. `Send + Sync`: share it between threads with `Arc`.
///
/// Durability: a write returns after it is in the WAL (handed to the OS) and the memtable;
/// with [`WriteOptions::sync`] also after an fsync of the WAL. Writes are atomic per
/// [`WriteBatch`], also across crashes.
pub struct Db {
    inner: Arc<DbInner>,
    /// The flush, WAL and compaction threads; empty once closed.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Figures about an open database.
#[derive(Debug, Clone, Default)]
pub struct DbStats {
    /// Approximate bytes in the active memtable.
    pub memtable_bytes: u64,
    /// Frozen memtables waiting to be flushed.
    pub immutable_memtables: u64,
    /// Approximate bytes in frozen memtables.
    pub immutable_bytes: u64,
    /// Tables per level.
    pub files_per_level: Vec<usize>,
    /// Table bytes per level.
    pub bytes_per_level: Vec<u64>,
    /// Last sequence number visible to readers.
    pub last_sequence: u64,
    /// Bytes of keys and values written by users.
    pub user_bytes_written: u64,
    /// Bytes appended to the WAL.
    pub wal_bytes_written: u64,
    /// WAL fsyncs writers waited for (synced writes, memtable switches).
    pub wal_syncs: u64,
    /// WAL fsyncs done in the background (every few MiB of unsynced writes).
    pub wal_background_syncs: u64,
    /// WAL segments the WAL thread created ahead and handed to the next memtable switch
    /// (a switch that finds none creates its own, waiting for the file and its fsyncs).
    pub wal_segments_ahead: u64,
    /// Write batches committed.
    pub writes: u64,
    /// Leader commits (a group holds one or more batches).
    pub write_groups: u64,
    /// Memtables flushed.
    pub flushes: u64,
    /// Bytes of tables written by flushes.
    pub flush_bytes_written: u64,
    /// Times a writer had to wait (memtables full, or L0 / compaction debt at the hard
    /// limit).
    pub stalls: u64,
    /// Write groups delayed because L0 or compaction debt passed the soft limit.
    pub slowdowns: u64,
    /// Microseconds writers spent waiting or delayed.
    pub stall_micros: u64,
    /// Compactions run (including trivial moves).
    pub compactions: u64,
    /// Compactions of those started because reads used up a table's read allowance
    /// ([`crate::compaction::CompactionReason::ReadTriggered`]).
    pub read_triggered_compactions: u64,
    /// Tables moved down a level without rewriting.
    pub trivial_moves: u64,
    /// Bytes of tables read by compactions.
    pub compaction_bytes_read: u64,
    /// Bytes of tables written by compactions.
    pub compaction_bytes_written: u64,
    /// Entries compaction dropped (shadowed versions, obsolete tombstones).
    pub compaction_entries_dropped: u64,
    /// Wall-clock microseconds spent in finished compactions (summed over threads).
    pub compaction_micros: u64,
    /// Compactions running now.
    pub compactions_running: u64,
    /// Estimated bytes compaction still has to rewrite.
    pub pending_compaction_bytes: u64,
    /// Compaction score per level (>= 1 means the level needs compaction).
    pub level_scores: Vec<f64>,
    /// Live snapshots.
    pub snapshots: u64,
    /// Bloom filter checks by point reads (over the tables currently open).
    pub bloom_checked: u64,
    /// Bloom filter checks that ruled a table out (no block read).
    pub bloom_useful: u64,
    /// Bloom filter checks that let a read through to a table without the key.
    pub bloom_false_positives: u64,
    /// Bytes read from table files (over the tables currently open).
    pub table_bytes_read: u64,
    /// Block cache hits, misses and size.
    pub block_cache: BlockCacheStats,
    /// Open tables and the memory their indexes and filters take.
    pub table_cache: TableCacheStats,
    /// The background error that made the database read-only, if any.
    pub background_error: Option<String>,
}

impl DbStats {
    /// Write amplification so far: bytes written to the WAL, by flushes and by compactions
    /// per byte the user wrote.
    pub fn write_amplification(&self) -> f64 {
        if self.user_bytes_written == 0 {
            return 0.0;
        }
        (self.wal_bytes_written + self.flush_bytes_written + self.compaction_bytes_written) as f64
            / self.user_bytes_written as f64
    }

    /// Bytes of all live tables.
    pub fn table_bytes(&self) -> u64 {
        self.bytes_per_level.iter().sum()
    }

    /// Memory the engine holds: memtables, cached blocks, open tables' indexes and filters.
    pub fn memory_bytes(&self) -> u64 {
        self.memtable_bytes
            + self.immutable_bytes
            + self.block_cache.usage_bytes
            + self.table_cache.memory_bytes
    }
}

fn path_name(p: &Path) -> String {
    p.display().to_string()
}

impl Db {
    /// Opens (or, with `create_if_missing`, creates) the database in `dir` and recovers it:
    /// the manifest gives the live tables, the WAL segments newer than the manifest's log
    /// number are replayed and flushed to a table, and files nobody references are removed.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Db> {
        let dir = dir.as_ref().to_path_buf();
        let fs = opts.fs.clone();
        if opts.write_buffer_size == 0 || opts.max_write_buffers < 2 {
            return Err(Error::InvalidArgument(
                "write_buffer_size must be > 0 and max_write_buffers >= 2".into(),
            ));
        }
        if opts.create_if_missing {
            fs.create_dir_all(&dir)
                .context(|| format!("creating {}", dir.display()))?;
        }
        let file_lock = crate::fs::lock_directory(fs.as_ref(), &dir)?;

        let current = filename::current_path(&dir);
        if fs.exists(&current) {
            if opts.error_if_exists {
                return Err(Error::InvalidArgument(format!(
                    "database {} already exists",
                    dir.display()
                )));
            }
        } else if opts.create_if_missing {
            tracing::info!(dir = %dir.display(), "creating new database");
            let state = ManifestState {
                log_number: 0,
                next_file_number: 2,
                last_sequence: 0,
                ..Default::default()
            };
            ManifestWriter::create(fs.as_ref(), &dir, 1, &state.snapshot_edit())?;
            manifest::set_current(fs.as_ref(), &dir, 1)?;
        } else {
            return Err(Error::InvalidArgument(format!(
                "database {} does not exist (create_if_missing is off)",
                dir.display()
            )));
        }

        let (old_manifest, mut mstate) = manifest::recover(fs.as_ref(), &dir)?;
        let mut version = Version::default();
        let block_cache = Arc::new(BlockCache::new(opts.block_cache_size));
        let table_fs = Arc::new(DeferredRemoveFs::new(fs.clone()));
        let tables = Arc::new(
            TableCache::new(
                fs.clone(),
                dir.clone(),
                opts.max_open_files,
                Some(block_cache.clone()),
            )
            .with_mmap_reads(opts.mmap_reads),
        );
        for (level, files) in mstate.levels.iter().enumerate() {
            for meta in files.values() {
                let handle = open_table(&tables, &table_fs, &dir, meta.clone())?;
                version.levels[level].push(Arc::new(handle));
            }
            version.sort_level(level);
        }

        // Replay WAL segments the manifest does not cover, oldest first.
        let names = fs
            .list_dir(&dir)
            .context(|| format!("listing {}", dir.display()))?;
        let mut wals: Vec<u64> = names
            .iter()
            .filter_map(|n| match filename::parse_file_name(n) {
                Some(FileType::Wal(n)) if n >= mstate.log_number => Some(n),
                _ => None,
            })
            .collect();
        wals.sort_unstable();
        let mut next_file_number = mstate
            .next_file_number
            .max(wals.last().map_or(0, |n| n + 1));
        let mut last_seq = mstate.last_sequence;
        let mut mem = Arc::new(Memtable::new());
        let mut recovered_tables = Vec::new();
        let mut recovered_tombstones = Vec::new();
        let mut damaged_tail: Option<(PathBuf, u64)> = None;
        for &number in &wals {
            let path = filename::wal_path(&dir, number);
            let name = path_name(&path);
            let mut reader = LogReader::open(fs.as_ref(), &path, WAL_MAGIC, opts.wal_recovery)?;
            while let Some(record) = reader.next_record()? {
                let offset = reader.last_record_offset();
                if let Some((p, off)) = &damaged_tail {
                    return Err(Error::corruption(
                        path_name(p),
                        *off,
                        format!("damaged record followed by valid records in later segment {name}"),
                    ));
                }
                let batch = WriteBatch::decode(&record, &name, offset)?;
                let end = batch.sequence().saturating_add(batch.len() as u64);
                if end > MAX_SEQUENCE {
                    return Err(Error::corruption(&name, offset, "sequence number overflow"));
                }
                mem.apply_batch(&batch);
                last_seq = last_seq.max(end.saturating_sub(1));
                if mem.approximate_size() >= opts.write_buffer_size {
                    let number = next_file_number;
                    next_file_number += 1;
                    recovered_tombstones.extend(mem.range_tombstones());
                    recovered_tables.extend(write_table(
                        fs.as_ref(),
                        &dir,
                        &opts,
                        &mem,
                        number,
                        &[],
                    )?);
                    mem = Arc::new(Memtable::new());
                }
            }
            if let Some(t) = reader.tail_damage() {
                if t.offset == 0 && t.kind == TailDamageKind::Torn {
                    // A torn header: the segment was created but never written (records
                    // are appended only after its header is synced), e.g. created ahead
                    // and overtaken by a switch whose segment got synced writes before
                    // the crash. Nothing was lost in it, wherever it stands.
                    tracing::info!(file = %name, reason = %t.reason,
                        "WAL segment never written (torn header): replayed as empty");
                } else {
                    tracing::warn!(file = %name, offset = t.offset, reason = %t.reason,
                        "WAL tail damaged (torn write at crash?): cut off at last good record");
                    damaged_tail = Some((path.clone(), t.offset));
                }
            }
        }
        if !mem.is_empty() {
            let number = next_file_number;
            next_file_number += 1;
            recovered_tombstones.extend(mem.range_tombstones());
            recovered_tables.extend(write_table(fs.as_ref(), &dir, &opts, &mem, number, &[])?);
        }
        if !recovered_tables.is_empty() {
            tracing::info!(
                tables = recovered_tables.len(),
                "flushed recovered WAL data"
            );
        }

        // Start fresh: a new WAL segment and a new manifest holding a snapshot of the state.
        let wal_number = next_file_number;
        let manifest_number = next_file_number + 1;
        next_file_number += 2;
        let wal_path = filename::wal_path(&dir, wal_number);
        let wal_file = fs
            .create(&wal_path)
            .context(|| format!("creating {}", wal_path.display()))?;
        let mut writer = LogWriter::new(wal_file, path_name(&wal_path), WAL_MAGIC)?;
        // A complete header on disk: a crash (or a checkpoint) before the first write then
        // finds an empty log, not a torn one.
        writer.flush()?;
        for meta in &recovered_tables {
            version = version.with_table(
                0,
                Arc::new(open_table(&tables, &table_fs, &dir, meta.clone())?),
            );
        }
        let edit = VersionEdit {
            log_number: Some(wal_number),
            next_file_number: Some(next_file_number),
            last_sequence: Some(last_seq),
            new_files: recovered_tables.iter().map(|m| (0, m.clone())).collect(),
            deleted_files: Vec::new(),
            new_range_tombstones: recovered_tombstones,
            deleted_range_tombstones: Vec::new(),
        };
        mstate.apply(&edit, "recovery", 0)?;
        version.range_tombstones =
            RangeTombstoneSet::new(mstate.range_tombstones.iter().cloned().collect());
        let manifest_writer =
            ManifestWriter::create(fs.as_ref(), &dir, manifest_number, &mstate.snapshot_edit())?;
        manifest::set_current(fs.as_ref(), &dir, manifest_number)?;
        if old_manifest != manifest_number {
            remove_quietly(fs.as_ref(), &filename::manifest_path(&dir, old_manifest));
        }
        remove_obsolete_files(fs.as_ref(), &dir, &mstate, wal_number, manifest_number);

        let charges_reads = opts.compaction.read_triggered && !opts.compaction.disable_auto;
        if charges_reads {
            version.init_read_allowances();
        }
        let version = Arc::new(version);
        let mem = Arc::new(Memtable::new());
        let super_version = Arc::new(SuperVersion::new(mem.clone(), Vec::new(), version.clone()));
        let inner = Arc::new(DbInner {
            dir,
            fs,
            state: Mutex::new(State {
                pressure: write_pressure(&version, &opts),
                mem,
                mem_wal: wal_number,
                imm: VecDeque::new(),
                version,
                super_version,
                manifest_state: mstate,
                next_file_number,
                last_seq,
                bg_error: None,
                bg_error_recoverable: false,
                closing: false,
                abandoned: false,
                busy: BusySet::default(),
                bg_compactions: 0,
                manual_compaction: false,
                cursors: vec![Vec::new(); NUM_LEVELS],
                wal_syncer: None,
                wal_fill: None,
                prepare_wal: false,
                next_wal_asked: false,
                read_trigger: None,
            }),
            bg_cv: Condvar::new(),
            queue: Mutex::new(Queue::default()),
            queue_cv: Condvar::new(),
            wal: Mutex::new(WalState {
                writer,
                number: wal_number,
                next_background_sync: WAL_BYTES_PER_SYNC,
                preallocated: 0,
                alloc: None,
                fill_asked: fill_start(&opts),
                next: None,
            }),
            manifest: Mutex::new(manifest_writer),
            manual: Mutex::new(()),
            visible_seq: AtomicU64::new(last_seq),
            snapshots: Mutex::new(BTreeMap::new()),
            tables,
            block_cache,
            table_fs,
            shutting_down: AtomicBool::new(false),
            recoverable_error: AtomicBool::new(false),
            counters: Counters::default(),
            dir_lock: Mutex::new(Some(file_lock)),
            opts,
        });
        if charges_reads {
            // Reads charge tables and wake this database's compaction threads.
            let mut st = lock(&inner.state);
            st.read_trigger = Some(Arc::downgrade(&inner));
            st.refresh_super_version();
        }
        inner
            .table_fs
            .start("strata-delete")
            .context(|| "spawning file deletion thread".to_string())?;
        let mut threads = Vec::new();
        let bg = inner.clone();
        threads.push(
            std::thread::Builder::new()
                .name("strata-flush".into())
                .spawn(move || bg.flush_loop())
                .context(|| "spawning flush thread".to_string())?,
        );
        let bg = inner.clone();
        threads.push(
            std::thread::Builder::new()
                .name("strata-wal".into())
                .spawn(move || bg.wal_loop())
                .context(|| "spawning WAL thread".to_string())?,
        );
        for i in 0..inner.opts.compaction.background_threads {
            let bg = inner.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("strata-compact-{i}"))
                    .spawn(move || bg.compaction_loop())
                    .context(|| "spawning compaction thread".to_string())?,
            );
        }
        Ok(Db {
            inner,
            threads: Mutex::new(threads),
        })
    }

    /// Sets `key` to `value`.
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let mut b = WriteBatch::new();
        b.put(key, value);
        self.write(b, WriteOptions::default())
    }

    /// Deletes `key` (writes a tombstone).
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<()> {
        let mut b = WriteBatch::new();
        b.delete(key);
        self.write(b, WriteOptions::default())
    }

    /// Applies `batch` atomically. Concurrent callers are committed together (group
    /// commit): one WAL write and at most one fsync per group.
    pub fn write(&self, batch: WriteBatch, opts: WriteOptions) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.inner
            .submit(Request::Write {
                batch,
                sync: opts.sync,
            })
            .map(|_| ())
    }

    /// Deletes every key in `[start, end)` with one range tombstone, whatever the number of
    /// keys. Tables lying entirely inside the range (and older than the delete) are dropped
    /// from the manifest at once, without rewriting, and their files deleted as soon as no
    /// reader uses them (those no reader holds before this returns); the rest of the deleted data is hidden from readers and removed by
    /// compaction. Live snapshots older than the delete keep seeing the data.
    pub fn delete_range(&self, start: impl AsRef<[u8]>, end: impl AsRef<[u8]>) -> Result<()> {
        let (start, end) = (start.as_ref(), end.as_ref());
        if start >= end {
            return Ok(());
        }
        let mut b = WriteBatch::new();
        b.delete_range(start, end);
        let seq = self.inner.submit(Request::Write {
            batch: b,
            sync: false,
        })?;
        self.inner.drop_tables_in_range(start, end, seq)?;
        // The dropped tables no reader holds are gone when this returns.
        self.inner.table_fs.wait_idle();
        Ok(())
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        let (sv, seq) = self.inner.read_point();
        self.inner.get_at(&sv, key.as_ref(), seq)
    }

    /// A cursor over the whole database at the current sequence number, not yet
    /// positioned: call `seek`, `seek_to_first` or `seek_to_last`.
    pub fn iter(&self) -> DbIterator {
        let (sv, seq) = self.inner.read_point();
        DbIterator::new(sv, seq)
    }

    /// The entries with keys in `range`, ascending. The view is consistent: writes made
    /// after this call are not seen.
    pub fn scan<K: AsRef<[u8]>>(&self, range: impl RangeBounds<K>) -> Scan {
        Scan::new(self.iter(), &range, false)
    }

    /// The entries with keys in `range`, descending.
    pub fn scan_rev<K: AsRef<[u8]>>(&self, range: impl RangeBounds<K>) -> Scan {
        Scan::new(self.iter(), &range, true)
    }

    /// The entries whose keys start with `prefix`, ascending.
    pub fn prefix(&self, prefix: impl AsRef<[u8]>) -> Scan {
        Scan::prefix(self.iter(), prefix.as_ref())
    }

    /// A consistent read view of the database as of now: reads through it ignore every
    /// later write, and compaction keeps the versions it needs until it is dropped.
    ///
    /// The snapshot is owned (it can be kept in a struct or sent to another thread); keep
    /// it shorter-lived than the `Db`: it holds the database's resources, including its
    /// directory lock, until dropped.
    pub fn snapshot(&self) -> Snapshot {
        let mut snaps = lock(&self.inner.snapshots);
        let seq = self.inner.visible_seq.load(Ordering::Acquire);
        *snaps.entry(seq).or_insert(0) += 1;
        Snapshot {
            inner: self.inner.clone(),
            seq,
        }
    }

    /// Compacts every table holding keys in `range` down the levels, dropping overwritten
    /// versions and tombstones no snapshot needs. Flushes the memtable first. When it
    /// returns, the replaced tables that no reader holds are deleted.
    ///
    /// Exclusive, as RocksDB's default `exclusive_manual_compaction`: it waits for running
    /// background compactions and none starts until it is done (flushes go on), so that
    /// none moves data below the level it compacts down to, where its tombstones would
    /// then have to stay.
    pub fn compact_range<K: AsRef<[u8]>>(&self, range: impl RangeBounds<K>) -> Result<()> {
        self.flush()?;
        let _one_at_a_time = lock(&self.inner.manual);
        let _exclusive = ExclusiveManual::start(&self.inner);
        let lo: &[u8] = match range.start_bound() {
            std::ops::Bound::Included(k) | std::ops::Bound::Excluded(k) => k.as_ref(),
            std::ops::Bound::Unbounded => &[],
        };
        let hi: Option<&[u8]> = match range.end_bound() {
            std::ops::Bound::Included(k) | std::ops::Bound::Excluded(k) => Some(k.as_ref()),
            std::ops::Bound::Unbounded => None,
        };
        let inner = &self.inner;
        let overlapping = |v: &Version, level: usize| -> Vec<Arc<TableHandle>> {
            // Unbounded above: up to the level's largest key, through `overlapping` so that
            // L0's overlapping tables are taken together.
            let top = v.levels[level].iter().map(|t| t.largest_user_key()).max();
            match hi.or(top) {
                Some(hi) if lo <= hi => v.overlapping(level, lo, hi),
                _ => Vec::new(),
            }
        };
        let deepest = {
            let st = lock(&inner.state);
            (0..NUM_LEVELS)
                .rev()
                .find(|&l| !overlapping(&st.version, l).is_empty())
        };
        let Some(deepest) = deepest else {
            return Ok(());
        };
        // Push everything down to the deepest level holding data in the range (L0 into L1
        // at least), then rewrite that level in place, so that tombstones and versions no
        // snapshot needs are dropped everywhere in the range.
        let mut steps: Vec<(usize, bool)> = (0..deepest).map(|l| (l, false)).collect();
        if deepest == 0 {
            steps.push((0, false));
        } else {
            steps.push((deepest, true));
        }
        for (level, in_place) in steps {
            let (c, version) = {
                let mut st = lock(&inner.state);
                loop {
                    st.check_writable()?;
                    let inputs = overlapping(&st.version, level);
                    if inputs.is_empty() {
                        break (None, st.version.clone());
                    }
                    let picked = if in_place {
                        picker::rewrite_in_place(level, inputs, &st.busy)
                    } else {
                        picker::compaction_for(
                            &st.version,
                            level,
                            inputs,
                            &st.busy,
                            CompactionReason::Manual,
                        )
                    };
                    if let Some(c) = picked {
                        st.busy.add(&c);
                        break (Some(c), st.version.clone());
                    }
                    // Its tables are being compacted in the background: wait for that.
                    st = wait(&inner.bg_cv, st);
                }
            };
            let Some(c) = c else { continue };
            let result = inner.run_compaction(&c, &version);
            {
                let mut st = lock(&inner.state);
                st.busy.remove(&c);
            }
            inner.bg_cv.notify_all();
            result?;
        }
        // The replaced tables no reader holds are gone when this returns.
        inner.table_fs.wait_idle();
        Ok(())
    }

    /// Makes a consistent copy of the database in `target` (a new directory), for backups:
    /// tables are hard-linked (they are immutable; copied where links are impossible), a
    /// fresh manifest describes them, and the WAL segments still needed are copied. Writes
    /// may go on meanwhile; the copy holds every write acknowledged before the call and
    /// opens like any database.
    pub fn checkpoint(&self, target: impl AsRef<Path>) -> Result<()> {
        let target = target.as_ref();
        let inner = &self.inner;
        let fs = inner.fs.as_ref();
        if fs.exists(&filename::current_path(target)) {
            return Err(Error::InvalidArgument(format!(
                "checkpoint target {} already holds a database",
                target.display()
            )));
        }
        fs.create_dir_all(target)
            .context(|| format!("creating {}", target.display()))?;
        // Holding the manifest lock freezes the table set and the WAL segments needed with
        // it (a flush deletes segments only after its edit, which waits for the lock).
        let manifest = lock(&inner.manifest);
        let (mut state, version, last_seq) = {
            let st = lock(&inner.state);
            (st.manifest_state.clone(), st.version.clone(), st.last_seq)
        };
        for t in version.all_tables() {
            let from = filename::table_path(&inner.dir, t.meta.number);
            let to = filename::table_path(target, t.meta.number);
            fs.link(&from, &to)
                .context(|| format!("linking {} to {}", from.display(), to.display()))?;
        }
        // The live segment up to its last record (every write acknowledged so far): not the
        // space allocated ahead, which would read as a torn tail before the records of a
        // later segment if a switch came during the copy, nor later segments.
        let (live, live_len) = {
            let wal = lock(&inner.wal);
            (wal.number, wal.writer.len())
        };
        let names = fs
            .list_dir(&inner.dir)
            .context(|| format!("listing {}", inner.dir.display()))?;
        for name in names {
            if let Some(FileType::Wal(n)) = filename::parse_file_name(&name) {
                if n >= state.log_number && n <= live {
                    let from = inner.dir.join(&name);
                    let read = if n == live {
                        // Capped at the file: after a failed append, `len` counts bytes
                        // that never reached it (a torn tail, as after a crash).
                        fs.open(&from)
                            .and_then(|f| f.read_at(0, live_len.min(f.len()) as usize))
                    } else {
                        fs.read_file(&from)
                    };
                    let data = match read {
                        Ok(data) => data,
                        // Only a stale segment created ahead and never written to can
                        // vanish here (removed without the manifest lock); live segments go
                        // only after a flush's edit.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e).context(|| format!("reading {}", from.display())),
                    };
                    let to = target.join(&name);
                    let mut w = fs
                        .create(&to)
                        .context(|| format!("creating {}", to.display()))?;
                    w.append(&data)
                        .and_then(|()| w.sync())
                        .context(|| format!("writing {}", to.display()))?;
                }
            }
        }
        state.last_sequence = state.last_sequence.max(last_seq);
        let number = state.next_file_number;
        state.next_file_number += 1;
        drop(manifest);
        ManifestWriter::create(fs, target, number, &state.snapshot_edit())?;
        manifest::set_current(fs, target, number)?;
        tracing::info!(target = %target.display(), tables = version.all_tables().count(), "checkpoint written");
        Ok(())
    }

    /// Writes the memtable out to a table and waits until it is durable in the manifest.
    pub fn flush(&self) -> Result<()> {
        self.inner.submit(Request::Flush)?;
        self.inner.wait_for_flushes()
    }

    /// Gets the database writable again after a full disk ([`Error::NoSpace`]), as
    /// RocksDB's `Resume()`: rolls to a new manifest if an edit was cut short, starts a
    /// new WAL segment if an append was (the old one may end in a partial record), and
    /// flushes every memtable, retrying the flush that failed. Returns `Ok` once writes
    /// are accepted again, [`Error::NoSpace`] while the disk is still full, and
    /// [`Error::ReadOnly`] after an error that is not recoverable (a failed fsync).
    ///
    /// Writes and flushes call this themselves, so calling it is never required: the
    /// first write after space returns resumes.
    pub fn resume(&self) -> Result<()> {
        self.inner.submit(Request::Resume).map(|_| ())
    }

    /// Flushes the memtable, stops the background thread and releases the directory.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    /// Stops background work and releases the directory *without* flushing the memtable,
    /// as if the process had been killed right after its last acknowledged write: the next
    /// open must recover everything from the WAL. For recovery tests and tools.
    pub fn abandon(self) {
        let threads = std::mem::take(&mut *lock(&self.threads));
        {
            let mut st = lock(&self.inner.state);
            st.closing = true;
            st.abandoned = true;
        }
        self.inner.shutting_down.store(true, Ordering::Release);
        self.inner.bg_cv.notify_all();
        for t in threads {
            let _ = t.join();
        }
        self.inner.table_fs.stop();
        self.inner.release_dir_lock();
    }

    fn shutdown(&self) -> Result<()> {
        let threads = std::mem::take(&mut *lock(&self.threads));
        if threads.is_empty() {
            return Ok(());
        }
        let flushed = self.flush();
        lock(&self.inner.state).closing = true;
        self.inner.shutting_down.store(true, Ordering::Release);
        self.inner.bg_cv.notify_all();
        for t in threads {
            if t.join().is_err() {
                tracing::error!("background thread panicked");
            }
        }
        // Tables made obsolete so far are deleted before close returns.
        self.inner.table_fs.stop();
        // A segment created ahead and never written: not left behind (it would replay as
        // empty, and wait for the next flush to be deleted).
        let unused = lock(&self.inner.wal).next.take();
        if let Some(p) = unused {
            remove_quietly(
                self.inner.fs.as_ref(),
                &filename::wal_path(&self.inner.dir, p.number),
            );
        }
        // Nor zeros after the live segment's records (a reopen would read them as a torn
        // tail and warn).
        {
            let mut wal = lock(&self.inner.wal);
            if wal.retire() && !wal.writer.has_failed() {
                if let Err(e) = wal.writer.trim().and_then(|()| wal.writer.sync()) {
                    tracing::warn!(error = %e, "cutting the WAL's space ahead at close failed");
                }
            }
        }
        self.inner.release_dir_lock();
        match flushed {
            Err(Error::ReadOnly(_)) | Err(Error::NoSpace(_)) | Err(Error::Closed) | Ok(()) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Figures about the database.
    pub fn stats(&self) -> DbStats {
        let c = &self.inner.counters;
        let st = lock(&self.inner.state);
        let table_cache = self.inner.tables.stats();
        DbStats {
            memtable_bytes: st.mem.approximate_size() as u64,
            immutable_memtables: st.imm.len() as u64,
            immutable_bytes: st.imm.iter().map(|f| f.mem.approximate_size() as u64).sum(),
            files_per_level: st.version.files_per_level(),
            bytes_per_level: st.version.bytes_per_level(),
            last_sequence: self.inner.visible_seq.load(Ordering::Acquire),
            user_bytes_written: c.user_bytes_written.load(Ordering::Relaxed),
            wal_bytes_written: c.wal_bytes_written.load(Ordering::Relaxed),
            wal_syncs: c.wal_syncs.load(Ordering::Relaxed),
            wal_background_syncs: c.wal_background_syncs.load(Ordering::Relaxed),
            wal_segments_ahead: c.wal_segments_ahead.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            write_groups: c.write_groups.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            flush_bytes_written: c.flush_bytes_written.load(Ordering::Relaxed),
            stalls: c.stalls.load(Ordering::Relaxed),
            slowdowns: c.slowdowns.load(Ordering::Relaxed),
            stall_micros: c.stall_micros.load(Ordering::Relaxed),
            compactions: c.compactions.load(Ordering::Relaxed),
            read_triggered_compactions: c.read_triggered_compactions.load(Ordering::Relaxed),
            trivial_moves: c.trivial_moves.load(Ordering::Relaxed),
            compaction_bytes_read: c.compaction_bytes_read.load(Ordering::Relaxed),
            compaction_bytes_written: c.compaction_bytes_written.load(Ordering::Relaxed),
            compaction_entries_dropped: c.compaction_entries_dropped.load(Ordering::Relaxed),
            compaction_micros: c.compaction_micros.load(Ordering::Relaxed),
            compactions_running: c.compactions_running.load(Ordering::Relaxed),
            pending_compaction_bytes: picker::pending_compaction_bytes(
                &st.version,
                &self.inner.opts.compaction,
            ),
            level_scores: picker::level_scores(&st.version, &self.inner.opts.compaction),
            snapshots: lock(&self.inner.snapshots)
                .values()
                .map(|&n| n as u64)
                .sum(),
            bloom_checked: table_cache.bloom_checked,
            bloom_useful: table_cache.bloom_useful,
            bloom_false_positives: table_cache.bloom_false_positives,
            table_bytes_read: table_cache.bytes_read,
            block_cache: self.inner.block_cache.stats(),
            table_cache,
            background_error: st.bg_error.as_ref().map(|e| e.to_string()),
        }
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "closing database on drop failed");
        }
    }
}

/// [`WalState::fill_asked`] of a new segment: space ahead reads as a torn tail after a
/// crash, which strict recovery would refuse.
fn fill_start(opts: &Options) -> u64 {
    match opts.wal_recovery {
        WalRecoveryMode::TolerateTail => 0,
        WalRecoveryMode::Strict => u64::MAX,
    }
}

fn write_pressure(v: &Version, opts: &Options) -> WritePressure {
    let c = &opts.compaction;
    if c.disable_auto {
        return WritePressure::None;
    }
    let l0 = v.levels[0].len();
    let debt = picker::pending_compaction_bytes(v, c);
    if l0 >= c.l0_stop_trigger || debt >= c.hard_pending_bytes {
        WritePressure::Stop
    } else if l0 >= c.l0_slowdown_trigger || debt >= c.soft_pending_bytes {
        WritePressure::Slowdown
    } else {
        WritePressure::None
    }
}

fn remove_quietly(fs: &dyn FileSystem, path: &Path) {
    if let Err(e) = fs.remove_file(path) {
        tracing::warn!(file = %path.display(), error = %e, "could not remove obsolete file");
    }
}

/// Removes WAL segments older than `wal_number`, manifests other than `manifest_number`,
/// tables the manifest does not list (left by a flush cut short) and temporary files.
fn remove_obsolete_files(
    fs: &dyn FileSystem,
    dir: &Path,
    state: &ManifestState,
    wal_number: u64,
    manifest_number: u64,
) {
    let Ok(names) = fs.list_dir(dir) else { return };
    for name in names {
        let obsolete = match filename::parse_file_name(&name) {
            Some(FileType::Wal(n)) => n < wal_number,
            Some(FileType::Manifest(n)) => n != manifest_number,
            Some(FileType::Table(n)) => !state.levels.iter().any(|l| l.contains_key(&n)),
            Some(FileType::Temp) => true,
            _ => false,
        };
        if obsolete {
            tracing::debug!(file = %name, "removing obsolete file");
            remove_quietly(fs, &dir.join(&name));
        }
    }
}

/// A handle of table `meta`, opened (and so validated) through the table cache.
fn open_table(
    tables: &Arc<TableCache>,
    fs: &Arc<DeferredRemoveFs>,
    dir: &Path,
    meta: FileMeta,
) -> Result<TableHandle> {
    tables.get(meta.number, meta.file_size)?;
    let path = filename::table_path(dir, meta.number);
    Ok(TableHandle::new(meta, tables.clone(), fs.clone(), path))
}

/// Writes `mem`'s entries out as table `number` (synced, directory synced) and returns its
/// metadata; `None` if the memtable holds no entry (only range deletes, which go to the
/// manifest).
/// Versions shadowed by a newer one that every reader sees instead are left out (as
/// compaction does; tombstones stay, since older data may lie in deeper tables).
fn write_table(
    fs: &dyn FileSystem,
    dir: &Path,
    opts: &Options,
    mem: &Memtable,
    number: u64,
    snapshots: &[u64],
) -> Result<Option<FileMeta>> {
    if !mem.has_entries() {
        return Ok(None);
    }
    let path = filename::table_path(dir, number);
    let result = (|| {
        let file = fs
            .create(&path)
            .context(|| format!("creating table {}", path.display()))?;
        let mut builder = TableBuilder::new(file, path_name(&path), &opts.table);
        let mut last: Option<(Vec<u8>, usize)> = None;
        mem.for_each(|k, v| {
            let p = crate::key::parse_internal_key(k)
                .ok_or_else(|| Error::InvalidArgument("malformed key in memtable".into()))?;
            let s = job::stripe(p.seq, snapshots);
            if let Some((prev_key, prev_stripe)) = &mut last {
                if prev_key.as_slice() == p.user_key {
                    if *prev_stripe == s {
                        return Ok(());
                    }
                    *prev_stripe = s;
                    return builder.add(k, v);
                }
            }
            last = Some((p.user_key.to_vec(), s));
            builder.add(k, v)
        })?;
        let props = builder.finish()?;
        fs.sync_dir(dir)
            .context(|| format!("syncing directory {}", dir.display()))?;
        Ok(Some(FileMeta::from_properties(number, props)))
    })();
    if result.is_err() {
        // Never leave a half-written table behind; it is not in the manifest anyway.
        let _ = fs.remove_file(&path);
    }
    result
}

impl DbInner {
    fn super_version(&self) -> Arc<SuperVersion> {
        lock(&self.state).super_version.clone()
    }

    /// The sources and the sequence number to read them at, taken together: everything up
    /// to that number is in those sources (a flush or compaction after this moment cannot
    /// take a version away from this reader).
    fn read_point(&self) -> (Arc<SuperVersion>, u64) {
        let st = lock(&self.state);
        (
            st.super_version.clone(),
            self.visible_seq.load(Ordering::Acquire),
        )
    }

    fn get_at(&self, sv: &SuperVersion, key: &[u8], seq: u64) -> Result<Option<Vec<u8>>> {
        let tombstones = sv.range_tombstones();
        let found = match sv.mem.get(key, seq) {
            Some(hit) => Some(hit),
            None => match sv.imm.iter().find_map(|m| m.get(key, seq)) {
                Some(hit) => Some(hit),
                None => {
                    let (hit, ran_out) =
                        sv.version
                            .get_charging(key, seq, sv.read_trigger.is_some())?;
                    if ran_out {
                        self.wake_compaction();
                    }
                    hit
                }
            },
        };
        let Some(found) = found else { return Ok(None) };
        if found.kind != ValueKind::Value || tombstones.covering_seq(key, seq) > found.seq {
            return Ok(None);
        }
        Ok(Some(found.value))
    }

    /// Carries out a request, as leader or through another leader. For a write: the
    /// sequence number of its first entry.
    ///
    /// A lone writer (nobody leading, nobody queued), the common case, leads at once with
    /// its request on its own stack: no shared `Pending` to allocate, no group to build.
    fn submit(&self, mut request: Request) -> Result<u64> {
        {
            let mut q = lock(&self.queue);
            if q.leader || !q.waiting.is_empty() {
                drop(q);
                return self.submit_queued(request);
            }
            q.leader = true;
        }
        let result = match &mut request {
            Request::Write { batch, sync } => {
                let sync = *sync;
                self.lead(LeadKind::Write, &mut [batch], sync)
                    .map(|()| batch.sequence())
            }
            Request::Flush => self.lead(LeadKind::Flush, &mut [], false).map(|()| 0),
            Request::Resume => self.lead(LeadKind::Resume, &mut [], false).map(|()| 0),
        };
        self.hand_over_lead();
        result
    }

    /// Ends a leader's turn: the writer now at the front of the queue (if any) leads next.
    fn hand_over_lead(&self) {
        let mut q = lock(&self.queue);
        q.leader = false;
        // A wake-up costs a system call even with nobody waiting: only when needed.
        let wake = !q.waiting.is_empty();
        drop(q);
        if wake {
            self.queue_cv.notify_all();
        }
    }

    /// [`Self::submit`] behind another leader: queue up, and either find our request done
    /// by a later leader or reach the front and lead a group.
    fn submit_queued(&self, request: Request) -> Result<u64> {
        let me = Arc::new(Pending {
            request: Mutex::new(request),
            result: Mutex::new(None),
        });
        let mut q = lock(&self.queue);
        q.waiting.push_back(me.clone());
        loop {
            if let Some(r) = lock(&me.result).take() {
                return r;
            }
            if !q.leader && q.waiting.front().is_some_and(|f| Arc::ptr_eq(f, &me)) {
                break;
            }
            q = wait(&self.queue_cv, q);
        }
        // We lead: take a group of writes from the front (a flush or resume request goes
        // alone).
        q.leader = true;
        let kind = match &*lock(&me.request) {
            Request::Write { .. } => LeadKind::Write,
            Request::Flush => LeadKind::Flush,
            Request::Resume => LeadKind::Resume,
        };
        let mut group = Vec::new();
        if let Some(first) = q.waiting.pop_front() {
            group.push(first);
        }
        if kind == LeadKind::Write {
            let mut bytes = 0;
            while let Some(p) = q.waiting.front() {
                match &*lock(&p.request) {
                    Request::Write { batch, .. } if bytes < MAX_GROUP_BYTES => {
                        bytes += batch.encoded_size();
                    }
                    _ => break,
                }
                if let Some(p) = q.waiting.pop_front() {
                    group.push(p);
                }
            }
        }
        drop(q);
        let result = {
            let mut guards: Vec<MutexGuard<'_, Request>> =
                group.iter().map(|p| lock(&p.request)).collect();
            let mut sync = false;
            let mut batches: Vec<&mut WriteBatch> = guards
                .iter_mut()
                .filter_map(|g| match &mut **g {
                    Request::Write { batch, sync: s } => {
                        sync |= *s;
                        Some(batch)
                    }
                    _ => None,
                })
                .collect();
            self.lead(kind, &mut batches, sync)
        };
        for p in &group {
            *lock(&p.result) = Some(match &result {
                Ok(()) => Ok(match &*lock(&p.request) {
                    Request::Write { batch, .. } => batch.sequence(),
                    Request::Flush | Request::Resume => 0,
                }),
                Err(e) => Err(e.duplicate()),
            });
        }
        // The gathered writers wait on the same condition variable as the queue.
        let mut q = lock(&self.queue);
        q.leader = false;
        let wake = group.len() > 1 || !q.waiting.is_empty();
        drop(q);
        if wake {
            self.queue_cv.notify_all();
        }
        let mine = lock(&me.result).take();
        mine.unwrap_or(Ok(0))
    }

    /// REQUIRES: leader. Carries out one request, or one group of writes.
    fn lead(&self, kind: LeadKind, batches: &mut [&mut WriteBatch], sync: bool) -> Result<()> {
        // After a full disk, every leader tries to resume first (cheap otherwise).
        if kind == LeadKind::Resume || self.recoverable_error.load(Ordering::Acquire) {
            self.resume()?;
        }
        match kind {
            LeadKind::Resume => Ok(()),
            LeadKind::Flush => self.freeze_memtable(),
            LeadKind::Write => self.commit_group(batches, sync),
        }
    }

    /// Leader only: appends the group's batches to the WAL, then to the memtable.
    fn commit_group(&self, group: &mut [&mut WriteBatch], sync: bool) -> Result<()> {
        let total: u64 = group.iter().map(|b| b.len() as u64).sum();
        let (first_seq, mem) = self.make_room_and_assign(total)?;

        let mut seq = first_seq;
        let mut user_bytes = 0u64;
        let wal_result = (|| {
            let mut wal = lock(&self.wal);
            let mut syncer = None;
            let before = wal.writer.len();
            let fill = wal.fill_job();
            // Zeros ahead of synced writes, unless recovery is strict (a zero tail left by a
            // crash would then refuse to open instead of reading as a torn tail).
            if sync && self.opts.wal_recovery == WalRecoveryMode::TolerateTail {
                let mut need = before;
                for batch in group.iter() {
                    need += (batch.encoded_size() + RECORD_HEADER_SIZE) as u64;
                }
                if need > wal.preallocated {
                    let until = need + WAL_PREALLOCATE_CHUNK;
                    match wal.writer.preallocate(until) {
                        Ok(()) => wal.preallocated = until,
                        // Only costs speed: stop trying for this segment.
                        Err(e) => {
                            tracing::debug!(error = %e, "WAL preallocation failed");
                            wal.preallocated = u64::MAX;
                        }
                    }
                }
            }
            for batch in group.iter_mut() {
                batch.set_sequence(seq);
                seq += batch.len() as u64;
                user_bytes += batch.encoded_size() as u64;
                wal.writer.add_record(batch.encoded())?;
            }
            wal.writer.flush()?;
            if sync {
                // A failed fsync may have dropped acknowledged pages: never recoverable,
                // whatever its error code.
                wal.writer.sync().map_err(|e| {
                    if e.is_no_space() {
                        Error::Io {
                            context: format!("WAL fsync failed: {e}"),
                            source: std::io::Error::other("fsync"),
                        }
                    } else {
                        e
                    }
                })?;
                self.counters.wal_syncs.fetch_add(1, Ordering::Relaxed);
            } else if wal.writer.len() >= wal.next_background_sync {
                wal.next_background_sync = wal.writer.len() + WAL_BYTES_PER_SYNC;
                syncer = wal.writer.background_syncer();
            }
            leader_add(&self.counters.wal_bytes_written, wal.writer.len() - before);
            Ok((syncer, fill))
        })();
        match wal_result {
            Ok((None, None)) => {}
            Ok((syncer, fill)) => {
                let mut st = lock(&self.state);
                if syncer.is_some() {
                    st.wal_syncer = syncer;
                }
                if let Some(mut f) = fill {
                    // A job not yet taken covers the start of this one.
                    if let Some(old) = st.wal_fill.take() {
                        if Arc::ptr_eq(&old.alloc, &f.alloc) {
                            f.from = f.from.min(old.from);
                        }
                    }
                    st.wal_fill = Some(f);
                }
                drop(st);
                self.bg_cv.notify_all();
            }
            Err(e) => {
                // The WAL may now hold part of the group. After a failed fsync we can no
                // longer promise what is durable: read-only (reads continue; reopening
                // recovers). A full disk only stops writes until `resume` moves to a new
                // segment.
                self.set_bg_error(&e);
                if e.is_no_space() {
                    return Err(Error::NoSpace(e.to_string()));
                }
                return Err(e);
            }
        }
        for batch in group.iter() {
            mem.apply_batch(batch);
        }
        self.visible_seq
            .store(first_seq + total - 1, Ordering::Release);
        let c = &self.counters;
        leader_add(&c.user_bytes_written, user_bytes);
        leader_add(&c.writes, group.len() as u64);
        leader_add(&c.write_groups, 1);
        Ok(())
    }

    /// Leader only: waits while memtables are full, freezes the memtable if it is over its
    /// size, then hands out `count` sequence numbers.
    fn make_room_and_assign(&self, count: u64) -> Result<(u64, Arc<Memtable>)> {
        let mut st = lock(&self.state);
        let mut stall_start: Option<Instant> = None;
        let mut delayed = false;
        loop {
            st.check_writable()?;
            match st.pressure {
                WritePressure::Stop => {
                    // Compaction is too far behind: wait for it (readers are unaffected).
                    if stall_start.is_none() {
                        stall_start = Some(Instant::now());
                        self.counters.stalls.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            l0 = st.version.levels[0].len(),
                            "write stop: waiting for compaction"
                        );
                    }
                    st = wait(&self.bg_cv, st);
                    continue;
                }
                WritePressure::Slowdown if !delayed => {
                    // Slow writers down rather than fail them, giving compaction the disk.
                    delayed = true;
                    self.counters.slowdowns.fetch_add(1, Ordering::Relaxed);
                    drop(st);
                    let t = Instant::now();
                    std::thread::sleep(SLOWDOWN_DELAY);
                    self.counters
                        .stall_micros
                        .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                    st = lock(&self.state);
                    continue;
                }
                _ => {}
            }
            let size = st.mem.approximate_size();
            if size < self.opts.write_buffer_size {
                if !st.next_wal_asked && size >= self.opts.write_buffer_size / 2 {
                    st.next_wal_asked = true;
                    st.prepare_wal = true;
                    self.bg_cv.notify_all();
                }
                break;
            }
            if st.imm.len() + 1 >= self.opts.max_write_buffers {
                if stall_start.is_none() {
                    stall_start = Some(Instant::now());
                    self.counters.stalls.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(frozen = st.imm.len(), "write stall: waiting for flush");
                }
                st = wait(&self.bg_cv, st);
                continue;
            }
            // The switch does I/O (fsyncs): not under the lock readers take.
            drop(st);
            self.switch_memtable()?;
            st = lock(&self.state);
        }
        if let Some(t) = stall_start {
            self.counters
                .stall_micros
                .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        if st.last_seq + count > MAX_SEQUENCE {
            return Err(Error::InvalidArgument("sequence numbers exhausted".into()));
        }
        let first = st.last_seq + 1;
        st.last_seq += count;
        Ok((first, st.mem.clone()))
    }

    /// Leader only: freezes the memtable (if it holds anything) for the flush thread.
    fn freeze_memtable(&self) -> Result<()> {
        let empty = {
            let st = lock(&self.state);
            st.check_writable()?;
            st.mem.is_empty()
        };
        if !empty {
            self.switch_memtable()?;
        }
        Ok(())
    }

    /// REQUIRES: leader (only the leader writes the WAL and switches memtables), `state`
    /// not held. Syncs the current WAL segment, starts a new one and a new memtable, and
    /// queues the old memtable for flushing.
    fn switch_memtable(&self) -> Result<()> {
        self.switch_memtable_inner(true)
    }

    /// [`Self::switch_memtable`]; without `sync_old` the old segment is not synced (it
    /// failed: its memtable is flushed before anything is written to the new one).
    fn switch_memtable_inner(&self, sync_old: bool) -> Result<()> {
        let current = lock(&self.state).mem_wal;
        // A segment prepared ahead, if the WAL thread got to it (and numbered after the
        // current one: segments are replayed in number order).
        let prepared = lock(&self.wal).next.take();
        let prepared = match prepared {
            Some(p) if p.number > current => Some(p),
            Some(p) => {
                remove_quietly(self.fs.as_ref(), &filename::wal_path(&self.dir, p.number));
                None
            }
            None => None,
        };
        let number = match &prepared {
            Some(p) => p.number,
            None => lock(&self.state).new_file_number(),
        };
        let path = filename::wal_path(&self.dir, number);
        let result = (|| {
            let writer = match prepared {
                Some(p) => p.writer,
                None => self.create_wal_segment(&path)?,
            };
            let mut wal = lock(&self.wal);
            // Prepared while this switch made its own segment: numbered before it, unusable.
            let stale = wal.next.take_if(|p| p.number < number);
            // No space is allocated ahead of the old segment from here on.
            let grown = wal.retire();
            // The old segment must be durable before anything in the new one is: a synced
            // write there must never stand after a hole in the log (recovery would refuse
            // the damaged segment, or lose the writes before the synced one).
            if sync_old {
                // Zeros after the last record would read as a torn tail, which recovery
                // refuses before a later segment: cut them (the fsync covers the size).
                if grown {
                    wal.writer.trim()?;
                }
                wal.writer.sync()?;
                self.counters.wal_syncs.fetch_add(1, Ordering::Relaxed);
            }
            wal.writer = writer;
            wal.number = number;
            wal.next_background_sync = WAL_BYTES_PER_SYNC;
            wal.preallocated = 0;
            // Space ahead is asked for by the first write into it.
            wal.fill_asked = fill_start(&self.opts);
            drop(wal);
            if let Some(p) = stale {
                remove_quietly(self.fs.as_ref(), &filename::wal_path(&self.dir, p.number));
            }
            Ok(())
        })();
        let mut st = lock(&self.state);
        if let Err(e) = result {
            let _ = self.fs.remove_file(&path);
            self.set_bg_error_locked(&mut st, &e);
            return Err(e);
        }
        let old = std::mem::replace(&mut st.mem, Arc::new(Memtable::new()));
        let old_wal = std::mem::replace(&mut st.mem_wal, number);
        st.next_wal_asked = false;
        st.imm.push_back(Frozen {
            mem: old,
            wal: old_wal,
        });
        st.refresh_super_version();
        self.bg_cv.notify_all();
        Ok(())
    }

    /// A new WAL segment at `path`: header durable, directory entry durable (later synced
    /// writes into the segment rely on it). A segment may outlive a crash without ever
    /// having been written (one created ahead, or one a racing switch made unused); with a
    /// synced header it replays as empty wherever it stands, where a torn header before a
    /// later segment's records would make recovery refuse the database.
    fn create_wal_segment(&self, path: &Path) -> Result<LogWriter> {
        let file = self
            .fs
            .create(path)
            .context(|| format!("creating WAL segment {}", path.display()))?;
        let mut writer = LogWriter::new(file, path_name(path), WAL_MAGIC)?;
        writer.sync()?;
        self.fs
            .sync_dir(&self.dir)
            .context(|| format!("syncing directory {}", self.dir.display()))?;
        Ok(writer)
    }

    /// WAL thread: creates WAL segment `number` ahead of the memtable switch that will
    /// write into it (the switch otherwise waited ~5 ms for the file and the directory
    /// fsync). Until then the segment holds only its header, which recovery replays as
    /// empty. A failure only costs the switch
    /// that time: it creates the segment itself.
    fn prepare_next_wal(&self, number: u64) {
        let path = filename::wal_path(&self.dir, number);
        match self.create_wal_segment(&path) {
            Ok(writer) => {
                // No space ahead yet: if the switch comes first and makes its own segment,
                // this one is left unused until the next switch deletes it, and zeros in it
                // would read as damage before the later segment's records.
                // A switch that came first made its own segment, numbered after this one:
                // replayed in number order, this one can never be written.
                let mut wal = lock(&self.wal);
                if wal.next.is_none() && number > wal.number {
                    wal.next = Some(PreparedSegment { number, writer });
                    self.counters
                        .wal_segments_ahead
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
                drop(wal);
                remove_quietly(self.fs.as_ref(), &path);
            }
            Err(e) => {
                tracing::debug!(error = %e, "creating the next WAL segment ahead failed");
                remove_quietly(self.fs.as_ref(), &path);
            }
        }
    }

    fn set_bg_error(&self, e: &Error) {
        let mut st = lock(&self.state);
        self.set_bg_error_locked(&mut st, e);
    }

    fn set_bg_error_locked(&self, st: &mut State, e: &Error) {
        let no_space = e.is_no_space();
        if st.bg_error.is_none() {
            if no_space {
                tracing::error!(error = %e, "disk full: writes stop until space returns");
            } else {
                tracing::error!(error = %e, "background error: database is now read-only");
            }
            st.bg_error = Some(e.duplicate());
            st.bg_error_recoverable = no_space;
        } else if st.bg_error_recoverable && !no_space {
            // A worse error after a full disk: read-only for good.
            tracing::error!(error = %e, "background error: database is now read-only");
            st.bg_error = Some(e.duplicate());
            st.bg_error_recoverable = false;
        }
        self.recoverable_error
            .store(st.bg_error_recoverable, Ordering::Release);
        self.bg_cv.notify_all();
    }

    /// REQUIRES: leader. Gets past a recoverable (full disk) background error; see
    /// [`Db::resume`].
    fn resume(&self) -> Result<()> {
        {
            let st = lock(&self.state);
            if st.closing {
                return Err(Error::Closed);
            }
            match &st.bg_error {
                None => return Ok(()),
                Some(e) if !st.bg_error_recoverable => return Err(Error::ReadOnly(e.to_string())),
                Some(_) => {}
            }
        }
        let no_space = |e: Error| {
            if e.is_no_space() {
                Error::NoSpace(e.to_string())
            } else {
                e
            }
        };
        // An edit cut short: a new manifest (a snapshot of the current state) takes over.
        {
            let mut manifest = lock(&self.manifest);
            if manifest.has_failed() {
                self.roll_manifest(&mut manifest, &VersionEdit::default())
                    .map_err(no_space)?;
            }
        }
        // An append cut short: the memtable (which holds every acknowledged write of that
        // segment) is frozen, and a new segment takes the next writes. The old segment is
        // deleted once the flush below has written its memtable out.
        if lock(&self.wal).writer.has_failed() {
            self.switch_memtable_inner(false).map_err(no_space)?;
        }
        {
            let mut st = lock(&self.state);
            st.bg_error = None;
            st.bg_error_recoverable = false;
            self.recoverable_error.store(false, Ordering::Release);
        }
        self.bg_cv.notify_all();
        // Retry the flushes (and with them anything a failed flush left behind).
        match self.wait_for_flushes() {
            Ok(()) => {
                tracing::info!("space is back: the database takes writes again");
                Ok(())
            }
            Err(e) => {
                let st = lock(&self.state);
                match &st.bg_error {
                    Some(bg) if st.bg_error_recoverable => Err(Error::NoSpace(bg.to_string())),
                    _ => Err(e),
                }
            }
        }
    }

    /// Waits until every memtable frozen so far has been flushed.
    fn wait_for_flushes(&self) -> Result<()> {
        let mut st = lock(&self.state);
        loop {
            if st.bg_error.is_some() {
                return st.check_writable();
            }
            if st.imm.is_empty() {
                return Ok(());
            }
            st = wait(&self.bg_cv, st);
        }
    }

    fn flush_loop(&self) {
        loop {
            let (mem, number) = {
                let mut st = lock(&self.state);
                loop {
                    if st.abandoned {
                        return;
                    }
                    if st.bg_error.is_none() {
                        if let Some(f) = st.imm.front() {
                            let mem = f.mem.clone();
                            break (mem, st.new_file_number());
                        }
                    }
                    if st.closing {
                        return;
                    }
                    st = wait(&self.bg_cv, st);
                }
            };
            if let Err(e) = self.flush_one(&mem, number) {
                self.set_bg_error(&e);
            }
        }
    }

    /// The WAL thread: the live segment's background syncs and space ahead, and the next
    /// segment. Its own thread, not the flush thread's, because a flush takes seconds and
    /// the writers need these within milliseconds.
    fn wal_loop(&self) {
        enum Work {
            Fill(FillJob),
            Sync(Box<dyn BackgroundSync>),
            Prepare(u64),
        }
        loop {
            let work = {
                let mut st = lock(&self.state);
                loop {
                    if st.abandoned {
                        return;
                    }
                    if st.bg_error.is_none() {
                        // First: quick, and the writers run into the space soon.
                        if let Some(f) = st.wal_fill.take() {
                            break Work::Fill(f);
                        }
                        // A switch may be about to wait for it.
                        if let Some(s) = st.wal_syncer.take() {
                            break Work::Sync(s);
                        }
                        // Due before the memtable fills up.
                        if st.prepare_wal && !st.closing {
                            st.prepare_wal = false;
                            break Work::Prepare(st.new_file_number());
                        }
                    }
                    if st.closing {
                        return;
                    }
                    st = wait(&self.bg_cv, st);
                }
            };
            match work {
                Work::Fill(f) => {
                    f.alloc.fill(f.from, f.to);
                }
                Work::Prepare(number) => self.prepare_next_wal(number),
                // A failed fsync may have dropped pages of acknowledged writes: never
                // recoverable, whatever its error code (as in the write path).
                Work::Sync(s) => {
                    let r = s.sync().map_err(|e| Error::Io {
                        context: format!("background sync of the WAL failed: {e}"),
                        source: std::io::Error::other("fsync"),
                    });
                    self.counters
                        .wal_background_syncs
                        .fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = r {
                        self.set_bg_error(&e);
                    }
                }
            }
        }
    }

    /// Writes the oldest frozen memtable to table `number`, records it in the manifest,
    /// installs the new version and deletes the WAL segments no longer needed.
    fn flush_one(&self, mem: &Arc<Memtable>, number: u64) -> Result<()> {
        let started = Instant::now();
        let snapshots = self.snapshot_list();
        let meta = write_table(
            self.fs.as_ref(),
            &self.dir,
            &self.opts,
            mem,
            number,
            &snapshots,
        )?;
        let handle = match &meta {
            Some(m) => Some(Arc::new(open_table(
                &self.tables,
                &self.table_fs,
                &self.dir,
                m.clone(),
            )?)),
            None => None,
        };
        let tombstones = mem.range_tombstones();

        let mut manifest = lock(&self.manifest);
        let edit = {
            let st = lock(&self.state);
            let log_number = st.imm.get(1).map_or(st.mem_wal, |f| f.wal);
            VersionEdit {
                log_number: Some(log_number),
                next_file_number: Some(st.next_file_number),
                last_sequence: Some(
                    self.visible_seq
                        .load(Ordering::Acquire)
                        .max(mem.largest_seq()),
                ),
                new_files: meta.iter().map(|m| (0, m.clone())).collect(),
                deleted_files: Vec::new(),
                new_range_tombstones: tombstones.clone(),
                deleted_range_tombstones: Vec::new(),
            }
        };
        self.append_manifest(&mut manifest, &edit)?;
        let log_number = edit.log_number.unwrap_or(0);
        let bytes = meta.as_ref().map_or(0, |m| m.file_size);
        {
            let mut st = lock(&self.state);
            // Counted before the table becomes visible, so that stats never show the new
            // L0 table with the flush not yet counted.
            self.counters.flushes.fetch_add(1, Ordering::Relaxed);
            self.counters
                .flush_bytes_written
                .fetch_add(bytes, Ordering::Relaxed);
            st.manifest_state.apply(&edit, "flush", 0)?;
            let mut v = st.version.with_range_tombstones(&tombstones, &[]);
            if let Some(h) = handle {
                v = v.with_table(0, h);
            }
            st.imm.pop_front();
            st.install_version(v, &self.opts);
        }
        drop(manifest);
        self.bg_cv.notify_all();
        tracing::debug!(
            table = number,
            bytes,
            range_deletes = tombstones.len(),
            ms = started.elapsed().as_millis() as u64,
            "flushed memtable"
        );

        if let Ok(names) = self.fs.list_dir(&self.dir) {
            for name in names {
                if let Some(FileType::Wal(n)) = filename::parse_file_name(&name) {
                    if n < log_number {
                        remove_quietly(self.fs.as_ref(), &self.dir.join(&name));
                    }
                }
            }
        }
        Ok(())
    }

    /// Wakes the compaction threads: reads used up a table's read allowance. Under the
    /// state lock, so that a thread between its pick and its wait does not miss it.
    fn wake_compaction(&self) {
        drop(lock(&self.state));
        self.bg_cv.notify_all();
    }

    fn compaction_loop(&self) {
        loop {
            let (c, version) = {
                let mut st = lock(&self.state);
                loop {
                    if st.closing {
                        return;
                    }
                    if st.bg_error.is_none()
                        && !self.opts.compaction.disable_auto
                        && !st.manual_compaction
                    {
                        // A read-triggered compaction waits for pending flushes: the
                        // table a flush adds to L0 may make a size-based compaction of
                        // L0 due, which would rewrite the same L1 tables again.
                        let picked = picker::pick(
                            &st.version,
                            &self.opts.compaction,
                            &st.busy,
                            &st.cursors,
                            st.imm.is_empty(),
                        );
                        if let Some(c) = picked {
                            st.busy.add(&c);
                            st.bg_compactions += 1;
                            break (c, st.version.clone());
                        }
                    }
                    st = wait(&self.bg_cv, st);
                }
            };
            let result = self.run_compaction(&c, &version);
            lock(&self.state).busy.remove(&c);
            // Before it counts as finished: a manual compaction waiting for it expects the
            // tables it replaced to go once no reader holds them.
            drop(c);
            drop(version);
            lock(&self.state).bg_compactions -= 1;
            self.bg_cv.notify_all();
            match result {
                Ok(()) | Err(Error::Closed) => {}
                Err(e) => self.set_bg_error(&e),
            }
        }
    }

    /// Drops, without rewriting, every table that lies inside `[start, end)`, holds only
    /// data older than the range delete at `seq`, is not being compacted and holds nothing
    /// a live snapshot can see.
    fn drop_tables_in_range(&self, start: &[u8], end: &[u8], seq: u64) -> Result<()> {
        let snapshots = self.snapshot_list();
        let mut manifest = lock(&self.manifest);
        let (edit, numbers, dropped) = {
            let mut st = lock(&self.state);
            let mut deleted = Vec::new();
            let mut dropped = Vec::new();
            for (level, files) in st.version.levels.iter().enumerate() {
                for t in files {
                    let inside = start <= t.smallest_user_key() && t.largest_user_key() < end;
                    let seen_by_snapshot = snapshots
                        .iter()
                        .any(|&s| t.meta.smallest_seq <= s && s < seq);
                    if inside
                        && t.meta.largest_seq < seq
                        && !seen_by_snapshot
                        && !st.busy.holds_table(t.meta.number)
                    {
                        deleted.push((level as u32, t.meta.number));
                        dropped.push(t.clone());
                    }
                }
            }
            if deleted.is_empty() {
                return Ok(());
            }
            let numbers: Vec<u64> = deleted.iter().map(|(_, n)| *n).collect();
            // No compaction may pick them while the edit is being written.
            st.busy.hold_tables(&numbers);
            let edit = VersionEdit {
                next_file_number: Some(st.next_file_number),
                deleted_files: deleted,
                ..VersionEdit::default()
            };
            (edit, numbers, dropped)
        };
        let appended = self.append_manifest(&mut manifest, &edit);
        let mut st = lock(&self.state);
        st.busy.release_tables(&numbers);
        appended?;
        st.manifest_state.apply(&edit, "delete_range", 0)?;
        for t in &dropped {
            t.mark_obsolete();
        }
        let bytes: u64 = dropped.iter().map(|t| t.meta.file_size).sum();
        let v = st.version.apply(&numbers, Vec::new());
        st.install_version(v, &self.opts);
        drop(st);
        drop(manifest);
        self.bg_cv.notify_all();
        tracing::debug!(
            tables = dropped.len(),
            bytes,
            "range delete dropped whole tables"
        );
        Ok(())
    }

    fn snapshot_list(&self) -> Vec<u64> {
        lock(&self.snapshots).keys().copied().collect()
    }

    /// Runs one compaction picked from `version` and installs its result. REQUIRES: it is
    /// marked in `busy`.
    fn run_compaction(&self, c: &Compaction, version: &Version) -> Result<()> {
        let started = Instant::now();
        // Counted for background and manual compactions alike, and undone on any exit.
        let _running = RunningCompaction::new(&self.counters, started);
        let (deleted, added, output) = if c.is_trivial_move() {
            self.counters.trivial_moves.fetch_add(1, Ordering::Relaxed);
            (
                c.inputs.iter().map(|t| (c.level, t.meta.number)).collect(),
                c.inputs
                    .iter()
                    .map(|t| (c.output_level, t.clone()))
                    .collect(),
                job::JobOutput::default(),
            )
        } else {
            let new_file_number = || lock(&self.state).new_file_number();
            let ctx = JobContext {
                fs: self.fs.as_ref(),
                dir: &self.dir,
                table_options: &self.opts.table,
                target_file_size: self.opts.compaction.target_file_size,
                snapshots: self.snapshot_list(),
                version,
                new_file_number: &new_file_number,
                abort: &self.shutting_down,
            };
            let output = job::run(c, &ctx)?;
            let mut added = Vec::new();
            for meta in &output.outputs {
                added.push((
                    c.output_level,
                    Arc::new(open_table(
                        &self.tables,
                        &self.table_fs,
                        &self.dir,
                        meta.clone(),
                    )?),
                ));
            }
            let deleted = c
                .inputs
                .iter()
                .map(|t| (c.level, t.meta.number))
                .chain(
                    c.output_level_inputs
                        .iter()
                        .map(|t| (c.output_level, t.meta.number)),
                )
                .collect();
            (deleted, added, output)
        };
        self.install_compaction(c, deleted, added)?;
        let cn = &self.counters;
        cn.compactions.fetch_add(1, Ordering::Relaxed);
        if c.reason == CompactionReason::ReadTriggered {
            cn.read_triggered_compactions
                .fetch_add(1, Ordering::Relaxed);
        }
        cn.compaction_bytes_read
            .fetch_add(output.bytes_read, Ordering::Relaxed);
        cn.compaction_bytes_written
            .fetch_add(output.bytes_written, Ordering::Relaxed);
        cn.compaction_entries_dropped
            .fetch_add(output.entries_dropped, Ordering::Relaxed);
        tracing::debug!(level = c.level, reason = ?c.reason, inputs = c.inputs.len() + c.output_level_inputs.len(),
            outputs = output.outputs.len(), read = output.bytes_read, written = output.bytes_written,
            dropped = output.entries_dropped, ms = started.elapsed().as_millis() as u64,
            trivial_move = c.is_trivial_move(), "compaction done");
        Ok(())
    }

    /// Records a compaction's result in the manifest and installs the new version; the
    /// replaced tables are deleted once no reader holds them.
    fn install_compaction(
        &self,
        c: &Compaction,
        deleted: Vec<(usize, u64)>,
        added: Vec<(usize, Arc<TableHandle>)>,
    ) -> Result<()> {
        let mut manifest = lock(&self.manifest);
        let edit = {
            let st = lock(&self.state);
            let numbers: Vec<u64> = deleted.iter().map(|(_, n)| *n).collect();
            let after = st.version.apply(&numbers, added.clone());
            VersionEdit {
                log_number: None,
                next_file_number: Some(st.next_file_number),
                last_sequence: None,
                new_files: added
                    .iter()
                    .map(|(l, t)| (*l as u32, t.meta.clone()))
                    .collect(),
                deleted_files: deleted.iter().map(|(l, n)| (*l as u32, *n)).collect(),
                new_range_tombstones: Vec::new(),
                deleted_range_tombstones: after.obsolete_range_tombstones(),
            }
        };
        if let Err(e) = self.append_manifest(&mut manifest, &edit) {
            // The outputs are not part of the database; a moved table stays where it was.
            if !c.is_trivial_move() {
                for (_, t) in &added {
                    t.mark_obsolete();
                }
            }
            return Err(e);
        }
        let mut st = lock(&self.state);
        st.manifest_state.apply(&edit, "compaction", 0)?;
        let numbers: Vec<u64> = deleted.iter().map(|(_, n)| *n).collect();
        if !c.is_trivial_move() {
            for t in c.inputs.iter().chain(&c.output_level_inputs) {
                t.mark_obsolete();
            }
        }
        if let Some(last) = c.inputs.iter().map(|t| t.largest_user_key()).max() {
            st.cursors[c.level] = last.to_vec();
        }
        let v = st
            .version
            .apply(&numbers, added)
            .with_range_tombstones(&[], &edit.deleted_range_tombstones);
        st.install_version(v, &self.opts);
        Ok(())
    }

    /// REQUIRES: `manifest` held. Appends `edit`, or starts a new manifest if this one is
    /// over its size limit.
    fn append_manifest(&self, manifest: &mut ManifestWriter, edit: &VersionEdit) -> Result<()> {
        // Never write an edit that does not apply: the manifest would no longer open.
        lock(&self.state)
            .manifest_state
            .check(edit, "pending edit", 0)?;
        if manifest.size() >= self.opts.max_manifest_size {
            self.roll_manifest(manifest, edit)
        } else {
            manifest.append(edit)
        }
    }

    /// REQUIRES: `manifest` held. Starts a new manifest with a snapshot that includes
    /// `edit`, switches CURRENT to it and removes the old one.
    fn roll_manifest(&self, manifest: &mut ManifestWriter, edit: &VersionEdit) -> Result<()> {
        let (number, snapshot) = {
            let mut st = lock(&self.state);
            let mut s = st.manifest_state.clone();
            s.apply(edit, "flush", 0)?;
            let number = st.new_file_number();
            s.next_file_number = st.next_file_number;
            (number, s.snapshot_edit())
        };
        let new = ManifestWriter::create(self.fs.as_ref(), &self.dir, number, &snapshot)?;
        manifest::set_current(self.fs.as_ref(), &self.dir, number)?;
        let old = std::mem::replace(manifest, new);
        remove_quietly(
            self.fs.as_ref(),
            &filename::manifest_path(&self.dir, old.number()),
        );
        Ok(())
    }
}

/// A consistent, read-only view of a [`Db`] at one sequence number (see [`Db::snapshot`]).
/// Compaction keeps every version a live snapshot can see; drop snapshots you no longer
/// need.
pub struct Snapshot {
    inner: Arc<DbInner>,
    seq: u64,
}

impl Snapshot {
    /// The sequence number the snapshot reads at.
    pub fn sequence(&self) -> u64 {
        self.seq
    }

    /// The value of `key` as of the snapshot.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        self.inner
            .get_at(&self.inner.super_version(), key.as_ref(), self.seq)
    }

    /// A cursor over the snapshot (see [`Db::iter`]).
    pub fn iter(&self) -> DbIterator {
        DbIterator::new(self.inner.super_version(), self.seq)
    }

    /// Entries in `range` as of the snapshot, ascending.
    pub fn scan<K: AsRef<[u8]>>(&self, range: impl RangeBounds<K>) -> Scan {
        Scan::new(self.iter(), &range, false)
    }

    /// Entries in `range` as of the snapshot, descending.
    pub fn scan_rev<K: AsRef<[u8]>>(&self, range: impl RangeBounds<K>) -> Scan {
        Scan::new(self.iter(), &range, true)
    }

    /// Entries whose keys start with `prefix` as of the snapshot.
    pub fn prefix(&self, prefix: impl AsRef<[u8]>) -> Scan {
        Scan::prefix(self.iter(), prefix.as_ref())
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut snaps = lock(&self.inner.snapshots);
        if let Some(n) = snaps.get_mut(&self.seq) {
            *n -= 1;
            if *n == 0 {
                snaps.remove(&self.seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The WAL thread creates the next segment ahead of the memtable switch, racing it: the
    //! switch may find nothing prepared yet and make its own segment. Whatever the order, a
    //! crash must not leave a segment that reads as damage before a later segment's
    //! synced records (recovery refuses such a database).
    use super::*;
    use crate::fs::{CrashMode, MemFs};

    fn open(fs: &MemFs) -> Db {
        let o = Options {
            fs: Arc::new(fs.clone()),
            ..Options::default()
        };
        Db::open(Path::new("/db"), o).expect("open")
    }

    fn put_synced(db: &Db, k: &[u8], v: &[u8]) {
        let mut b = WriteBatch::new();
        b.put(k, v);
        db.write(b, WriteOptions { sync: true })
            .expect("synced put");
    }

    fn wal(n: u64) -> PathBuf {
        filename::wal_path(Path::new("/db"), n)
    }

    fn live_wal(db: &Db) -> u64 {
        lock(&db.inner.wal).number
    }

    #[test]
    fn a_segment_prepared_after_a_switch_made_its_own_is_removed() {
        let fs = MemFs::new();
        let db = open(&fs);
        put_synced(&db, b"a", b"1");
        // The WAL thread takes a number for the next segment; a switch comes first and
        // makes its own (numbered after it); then the prepared segment is created.
        let ahead = lock(&db.inner.state).new_file_number();
        db.flush().expect("flush");
        assert!(live_wal(&db) > ahead);
        db.inner.prepare_next_wal(ahead);
        assert!(lock(&db.inner.wal).next.is_none());
        assert!(!fs.exists(&wal(ahead)), "unusable segment left behind");
        put_synced(&db, b"b", b"2");
        db.abandon();
        fs.crash(CrashMode::DropUnsynced);
        let db = open(&fs);
        assert_eq!(db.get(b"a").expect("get"), Some(b"1".to_vec()));
        assert_eq!(db.get(b"b").expect("get"), Some(b"2".to_vec()));
        db.close().expect("close");
    }

    #[test]
    fn close_releases_the_directory_while_a_reader_still_holds_the_engine() {
        let fs = MemFs::new();
        let db = open(&fs);
        db.put(b"k", b"v").expect("put");
        // What a scan's sampled read holds while it wakes compaction.
        let held = Arc::clone(&db.inner);
        db.close().expect("close");
        let again = open(&fs);
        assert_eq!(again.get(b"k").expect("get"), Some(b"v".to_vec()));
        drop(held);
        // A snapshot still reads the files: the directory stays locked until it goes.
        let snap = again.snapshot();
        again.close().expect("close");
        let o = Options {
            fs: Arc::new(fs.clone()),
            ..Options::default()
        };
        assert!(
            Db::open(Path::new("/db"), o).is_err(),
            "opened under a live snapshot"
        );
        assert_eq!(snap.get(b"k").expect("get"), Some(b"v".to_vec()));
        drop(snap);
        let db = open(&fs);
        let held = Arc::clone(&db.inner);
        db.abandon();
        open(&fs).close().expect("close");
        drop(held);
    }

    #[test]
    fn a_segment_created_but_never_written_before_later_records_is_empty() {
        // Created by the WAL thread after a switch overtook it, and a crash before its
        // header was synced: 0 bytes (or part of a header) before a later segment's records;
        // or a crash after it, before the unused segment was deleted: a whole header.
        for torn in [0usize, 7, crate::wal::LOG_HEADER_SIZE] {
            let fs = MemFs::new();
            let db = open(&fs);
            put_synced(&db, b"k", b"v");
            let live = live_wal(&db);
            db.abandon();
            fs.crash(CrashMode::DropUnsynced);
            fs.rename(&wal(live), &wal(live + 100)).expect("rename");
            let header = crate::wal::encode_file_header(WAL_MAGIC);
            let mut f = fs.create(&wal(live + 50)).expect("create");
            f.append(&header[..torn]).expect("append");
            f.sync().expect("sync");
            drop(f);
            let db = open(&fs);
            assert_eq!(db.get(b"k").expect("get"), Some(b"v".to_vec()));
            db.close().expect("close");
        }
    }

    #[test]
    fn a_new_segment_header_survives_a_crash() {
        let fs = MemFs::new();
        let db = open(&fs);
        let ahead = lock(&db.inner.state).new_file_number();
        db.inner.prepare_next_wal(ahead);
        assert!(lock(&db.inner.wal).next.is_some());
        db.abandon();
        fs.crash(CrashMode::DropUnsynced);
        let len = fs.file_len(&wal(ahead)).expect("prepared segment");
        assert_eq!(len, crate::wal::LOG_HEADER_SIZE as u64);
        open(&fs).close().expect("close");
    }
}
