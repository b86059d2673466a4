//! Bitcask: an append-only log with an in-memory hash index (Sheehy & Smith, 2010), for
//! workloads with a bounded number of keys and frequent updates.
//!
//! * **Data files** (`NNNNNN.data`) hold checksummed records appended by a single writer;
//!   the active file rolls over at [`BitcaskOptions::max_file_size`]; older files are
//!   immutable. Deletes are tombstone records; a [`WriteBatch`] is one checksummed group,
//!   recovered whole or not at all.
//! * The **keydir** ([`keydir`]) maps every key to the file, offset, size and sequence
//!   number of its latest record: a `get` is one hash lookup and one positioned read
//!   (checksum and key verified). 56 to 112 bytes per key for keys of up to 22 bytes,
//!   which are stored inline (see [`keydir`] and [`BitcaskStats::keydir_bytes_per_key`]);
//!   a deleted key keeps its entry (the tombstone) until a merge of every immutable file.
//! * **Merge** ([`merge`]) rewrites immutable files keeping only the latest records, writes
//!   a **hint file** beside each output, and swaps them in atomically; it runs in a
//!   background thread when files pass the [`MergeTrigger`] thresholds, or on
//!   [`Bitcask::merge`]. Reads go on during a merge and never miss a live key.
//! * **Recovery** ([`recovery`]) rebuilds the keydir from hint files where present, else by
//!   scanning data files; a torn tail of the last written file is cut off, damage elsewhere
//!   is `Error::Corruption` naming the file and offset (or skipped and reported).
//!
//! Ordering rule: every record carries a sequence number (Bitcask's timestamp); for each
//! key the record with the highest sequence number wins, whatever file holds it. File ids
//! only name files (merge outputs take fresh ids).
//!
//! Concurrency: one writer at a time (a mutex; a `LOCK` file across processes), any number
//! of concurrent readers. `Bitcask` is `Send + Sync`.
//!
//! ```
//! use strata_kv::bitcask::{Bitcask, BitcaskOptions};
//! use strata_kv::{WriteBatch, WriteOptions};
//! # let dir = tempfile::tempdir().unwrap();
//! let db = Bitcask::open(dir.path(), BitcaskOptions::default())?;
//! db.put(b"sensor/1", b"21.5")?;
//! let mut batch = WriteBatch::new();
//! batch.put(b"sensor/2", b"19.0").delete(b"sensor/1");
//! db.write(batch, WriteOptions { sync: true })?;
//! assert_eq!(db.get(b"sensor/2")?, Some(b"19.0".to_vec()));
//! assert_eq!(db.keys().len(), 1);
//! db.merge()?;
//! db.close()?;
//! # Ok::<(), strata_kv::Error>(())
//! ```

pub mod datafile;
mod fill;
pub mod format;
pub mod keydir;
pub mod merge;
pub mod options;
pub mod recovery;

pub use datafile::SkippedRange;
pub use options::{BitcaskOptions, CorruptionPolicy, MergeTrigger, SyncPolicy};
pub use recovery::RecoveryReport;

use crate::batch::{BatchEntry, WriteBatch};
use crate::error::{Error, IoContext, Result};
use crate::fs::{FileLock, FileSystem, WritableFile};
use crate::options::WriteOptions;
use datafile::DataFile;
use fill::{writeback_until, FileAllocator, FillJob, Filler, FILL_AHEAD, FILL_LOW};
use format::{
    data_path, decode_record, encode_batch_header, encode_file_header, encode_record, DATA_MAGIC,
    FILE_HEADER_SIZE, KIND_WRITER, MAX_RECORD_SIZE, RECORD_HEADER_SIZE,
};
use keydir::{Key, Keydir, KeydirEntry, TablePrep};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a write spins for the keydir's write lock before it sleeps on it.
const WRITE_SPIN: Duration = Duration::from_micros(50);

/// Keydir updates that writes left behind when they found the keydir lock taken (by the
/// merge thread's lookups, mostly): they are applied by the next holder of the write lock,
/// which every write-lock acquisition drains first, and lookups consult them first (under
/// the keydir's read lock, so that no drain runs meanwhile).
///
/// Why: during a merge, the writes that waited for the lock, even spinning, took 2.5 to
/// 8 µs instead of 1.5: with one write in 70 slowed for the whole merge, the P99 of a
/// 5M-key overwrite was 3.6 µs.
///
/// Invariants: a pending update is newer than the keydir's entry of its key (nothing is
/// applied to the keydir before the pending updates are), and names the active file
/// (`roll` takes the write lock, so the updates are drained before a file is sealed).
#[derive(Default)]
struct Pending {
    ops: Mutex<Vec<PendingOp>>,
    /// `ops.len()`, read without the lock.
    len: AtomicUsize,
}

enum PendingOp {
    /// Bytes of a file counted dead at once (a batch header).
    Dead(u32, u64),
    /// A record, to count and apply.
    Record(Key, KeydirEntry),
}

/// Updates left pending at most; a write that would go past waits for the lock.
const PENDING_MAX: usize = 1024;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Figures about an open Bitcask store.
#[derive(Debug, Clone, Default)]
pub struct BitcaskStats {
    /// Live keys.
    pub keys: u64,
    /// Tombstones still in the keydir (dropped by a merge of every immutable file).
    pub tombstones: u64,
    /// Data files.
    pub files: u64,
    /// Bytes of data files on disk (headers included; hint files excluded).
    pub disk_bytes: u64,
    /// Record bytes that are the latest of their key.
    pub live_bytes: u64,
    /// Record bytes a merge would reclaim.
    pub dead_bytes: u64,
    /// Merges run.
    pub merges: u64,
    /// Bytes read by merges.
    pub merge_bytes_read: u64,
    /// Bytes written by merges (data and hint files).
    pub merge_bytes_written: u64,
    /// The last merge error, if the last merge failed.
    pub last_merge_error: Option<String>,
    /// Write batches (single puts and deletes included) committed.
    pub writes: u64,
    /// Bytes appended to data files by writes.
    pub bytes_written: u64,
    /// Point reads served.
    pub reads: u64,
    /// Bytes read by point reads.
    pub bytes_read: u64,
    /// fsyncs of the active file.
    pub syncs: u64,
    /// Estimated heap bytes of the keydir.
    pub keydir_memory_bytes: u64,
    /// `keydir_memory_bytes` / keydir entries (0 when empty).
    pub keydir_bytes_per_key: f64,
    /// The write error that made the store read-only, if any.
    pub background_error: Option<String>,
}

struct Writer {
    active: Option<Box<dyn WritableFile>>,
    active_id: u32,
    active_len: u64,
    next_seq: u64,
    dirty: bool,
    last_sync: Instant,
    closed: bool,
    /// An append to the active file failed on a full disk after this many good bytes: the
    /// file may end in a partial record, so nothing more is appended to it.
    torn_from: Option<u64>,
    /// The encoding buffer, kept between writes (spares an allocation per write).
    buf: Vec<u8>,
    /// The active file's allocator, once space ahead was asked for (see [`fill`]).
    alloc: Option<Arc<FileAllocator>>,
    /// Offset of the active file up to which space ahead was asked for (`u64::MAX`: never
    /// ask, the file system has no allocator).
    fill_asked: u64,
}

#[derive(Default)]
struct Counters {
    writes: AtomicU64,
    bytes_written: AtomicU64,
    reads: AtomicU64,
    bytes_read: AtomicU64,
    syncs: AtomicU64,
    merges: AtomicU64,
    merge_bytes_read: AtomicU64,
    merge_bytes_written: AtomicU64,
}

/// A merge commit file kept until every file it replaced is gone.
struct PendingCommit {
    path: PathBuf,
    inputs: Vec<Weak<DataFile>>,
}

pub(crate) struct Inner {
    dir: PathBuf,
    opts: BitcaskOptions,
    fs: Arc<dyn FileSystem>,
    index: RwLock<Keydir>,
    /// Keydir updates not applied yet (see [`Pending`]).
    pending: Pending,
    /// Set while a write waits for the keydir's write lock: the merge thread, which takes
    /// the lock once per record it scans, holds off until the write has it (see
    /// [`Inner::read_index_yielding`]).
    write_waiting: AtomicBool,
    writer: Mutex<Writer>,
    next_file_id: AtomicU32,
    merge_lock: Mutex<()>,
    pending_commits: Mutex<Vec<PendingCommit>>,
    shutting_down: AtomicBool,
    bg_mutex: Mutex<()>,
    bg_cv: Condvar,
    read_only: Mutex<Option<String>>,
    /// Set while writes fail on a full disk (recoverable, unlike `read_only`).
    no_space: Mutex<Option<String>>,
    last_merge_error: Mutex<Option<String>>,
    /// The fill thread's mailbox (see [`fill`]).
    filler: Filler,
    /// The keydir thread's mailbox (see [`TablePrep`]).
    tables: Arc<TablePrep>,
    counters: Counters,
    _lock: Box<dyn FileLock>,
}

/// An open Bitcask store. `Send + Sync`: share it between threads with `Arc`.
///
/// Durability: a write returns once its records are handed to the OS (they survive a
/// crash of the process); with [`WriteOptions::sync`] or [`SyncPolicy::Always`] also after
/// an fsync. A [`WriteBatch`] is atomic, also across crashes.
pub struct Bitcask {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
    fill_thread: Mutex<Option<JoinHandle<()>>>,
    keydir_thread: Mutex<Option<JoinHandle<()>>>,
    report: RecoveryReport,
}

impl Inner {
    fn read_index(&self) -> RwLockReadGuard<'_, Keydir> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The keydir's write lock, pending updates applied.
    fn write_index(&self) -> RwLockWriteGuard<'_, Keydir> {
        let mut g = self.index.write().unwrap_or_else(|e| e.into_inner());
        self.drain_pending(&mut g);
        g
    }

    /// REQUIRES: the keydir write lock. Applies the pending updates, oldest first.
    fn drain_pending(&self, idx: &mut Keydir) {
        if self.pending.len.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut ops = lock(&self.pending.ops);
        for op in ops.drain(..) {
            match op {
                PendingOp::Dead(id, n) => idx.add_bytes(id, n, true),
                PendingOp::Record(k, e) => {
                    idx.add_bytes(e.file_id, e.size() as u64, false);
                    idx.apply(k.as_slice(), e);
                }
            }
        }
        self.pending.len.store(0, Ordering::Release);
    }

    /// REQUIRES: the keydir read (or write) lock. The pending update of `key`, if any.
    fn pending_entry(&self, key: &[u8]) -> Option<KeydirEntry> {
        if self.pending.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        lock(&self.pending.ops)
            .iter()
            .rev()
            .find_map(|op| match op {
                PendingOp::Record(k, e) if k.as_slice() == key => Some(*e),
                _ => None,
            })
    }

    /// The keydir's read lock with no update pending (for answers about the whole
    /// keydir: keys, iteration, stats).
    fn read_index_settled(&self) -> RwLockReadGuard<'_, Keydir> {
        if self.pending.len.load(Ordering::Acquire) > 0 {
            drop(self.write_index());
        }
        self.read_index()
    }

    /// Leaves a write's keydir updates pending; false if there is no room (then the
    /// write takes the lock).
    fn defer(
        &self,
        batch: Option<u32>,
        keys: &[(&[u8], Option<&[u8]>)],
        placed: &[KeydirEntry],
    ) -> bool {
        let mut ops = lock(&self.pending.ops);
        if ops.len() + keys.len() + 1 > PENDING_MAX {
            return false;
        }
        if let Some(id) = batch {
            ops.push(PendingOp::Dead(id, RECORD_HEADER_SIZE as u64));
        }
        for ((k, _), e) in keys.iter().zip(placed) {
            ops.push(PendingOp::Record(Key::new(k), *e));
        }
        self.pending.len.store(ops.len(), Ordering::Release);
        true
    }

    /// The keydir's write lock for a write, ahead of the merge thread.
    ///
    /// Why: a merge looks every record it scans up in the keydir, one read lock each, and
    /// holds it most of the time. A write that found it held waited in the lock's queue,
    /// asleep, while the merge thread took it again and again: one write in ~100 took 20 to
    /// 50 µs during a merge.
    fn write_index_for_write(&self) -> RwLockWriteGuard<'_, Keydir> {
        if let Ok(mut g) = self.index.try_write() {
            self.drain_pending(&mut g);
            return g;
        }
        self.write_waiting.store(true, Ordering::Release);
        // The merge takes the lock for a few µs at most and not again while the flag is
        // up: spin that long rather than sleep in the lock's queue (a wake-up costs tens
        // of µs).
        let deadline = Instant::now() + WRITE_SPIN;
        let g = loop {
            if let Ok(mut g) = self.index.try_write() {
                self.drain_pending(&mut g);
                break g;
            }
            if Instant::now() >= deadline {
                break self.write_index();
            }
            for _ in 0..16 {
                std::hint::spin_loop();
            }
        };
        self.write_waiting.store(false, Ordering::Release);
        g
    }

    /// Waits while a write waits for the keydir's write lock (the merge thread's manners).
    fn yield_to_write(&self) {
        let mut spins = 0u32;
        while self.write_waiting.load(Ordering::Acquire) {
            if spins < 64 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// The keydir's read lock for the merge thread: after any write waiting for it.
    pub(crate) fn read_index_yielding(&self) -> RwLockReadGuard<'_, Keydir> {
        self.yield_to_write();
        // The updates writes left pending because of this thread's lookups are applied by
        // it, not by the next write.
        if self.pending.len.load(Ordering::Acquire) > 0 {
            drop(self.write_index());
        }
        self.read_index()
    }

    /// The keydir's write lock for the merge thread: after any write waiting for it.
    pub(crate) fn write_index_yielding(&self) -> RwLockWriteGuard<'_, Keydir> {
        self.yield_to_write();
        self.write_index()
    }

    fn path_name(&self, id: u32) -> String {
        data_path(&self.dir, id).display().to_string()
    }

    fn set_read_only(&self, e: &Error) -> Error {
        let msg = e.to_string();
        tracing::error!(error = %msg, "write failed: store is read-only until reopened");
        lock(&self.read_only).get_or_insert(msg);
        e.duplicate()
    }

    /// A write failed: on a full disk writes stop until space returns (`torn_from`: the
    /// good length of the active file, if the failed append may have left part of a record
    /// behind); anything else makes the store read-only.
    fn fail_write(&self, w: &mut Writer, e: &Error, torn_from: Option<u64>) -> Error {
        if !e.is_no_space() || lock(&self.read_only).is_some() {
            return self.set_read_only(e);
        }
        let msg = e.to_string();
        tracing::error!(error = %msg, "disk full: writes stop until space returns");
        if w.torn_from.is_none() {
            w.torn_from = torn_from;
        }
        *lock(&self.no_space) = Some(msg.clone());
        Error::NoSpace(msg)
    }

    /// REQUIRES: `w` is the writer, locked. After a full disk: cuts a partial record off the
    /// active file (rewriting its good prefix in place, as recovery does), seals it and starts
    /// a new active file. Fails with [`Error::NoSpace`] while there is still no room.
    fn resume_locked(&self, w: &mut Writer) -> Result<()> {
        if let Some(msg) = lock(&self.read_only).clone() {
            return Err(Error::ReadOnly(msg));
        }
        if lock(&self.no_space).is_none() {
            return Ok(());
        }
        if let Some(good) = w.torn_from {
            if let Some(a) = w.alloc.take() {
                a.retire();
            }
            w.active = None;
            let id = w.active_id;
            let cut = DataFile::open(&self.fs, &self.dir, id)
                .and_then(|df| recovery::cut_tail(&self.fs, &self.dir, df, good));
            match cut {
                Ok(df) => {
                    self.write_index().files.insert(id, Arc::new(df));
                    w.torn_from = None;
                }
                Err(e) => return Err(self.fail_write(w, &e, None)),
            }
        }
        self.roll(w)?;
        *lock(&self.no_space) = None;
        tracing::info!(
            file = w.active_id,
            "space is back: writes resume in a new data file"
        );
        Ok(())
    }

    fn sync_active(&self, w: &mut Writer) -> Result<()> {
        if let Some(f) = w.active.as_mut() {
            let r = f
                .sync()
                .context(|| format!("syncing {}", self.path_name(w.active_id)));
            if let Err(e) = r {
                return Err(self.set_read_only(&e));
            }
            self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        }
        w.dirty = false;
        w.last_sync = Instant::now();
        Ok(())
    }

    /// Closes the active file (synced) and starts a new one.
    fn roll(&self, w: &mut Writer) -> Result<()> {
        if w.active.is_some() {
            self.trim_active(w)?;
            self.sync_active(w)?;
            // The file is immutable from now on: reopen it so that its read handle knows its
            // final length (a handle may fix the length when it is opened), for merges.
            let sealed = DataFile::open(&self.fs, &self.dir, w.active_id)
                .map_err(|e| self.set_read_only(&e))?;
            self.write_index()
                .files
                .insert(w.active_id, Arc::new(sealed));
        }
        let id = self.next_file_id.fetch_add(1, Ordering::SeqCst);
        let path = data_path(&self.dir, id);
        let r = (|| {
            let mut f = self
                .fs
                .create(&path)
                .context(|| format!("creating {}", path.display()))?;
            f.append(&encode_file_header(DATA_MAGIC, KIND_WRITER, id))
                .and_then(|_| f.flush())
                .context(|| format!("writing {}", path.display()))?;
            self.fs
                .sync_dir(&self.dir)
                .context(|| format!("syncing {}", self.dir.display()))?;
            let df = DataFile::open(&self.fs, &self.dir, id)?;
            Ok((f, df))
        })();
        let (f, df) = match r {
            Ok(x) => x,
            Err(e) => {
                // A file cut short before its header is complete must not stay behind an
                // older one (recovery accepts that only of the newest file).
                let _ = self.fs.remove_file(&path);
                return Err(self.fail_write(w, &e, None));
            }
        };
        {
            let mut idx = self.write_index();
            idx.files.insert(id, Arc::new(df));
            idx.stats.entry(id).or_default();
        }
        w.active = Some(f);
        w.active_id = id;
        w.active_len = FILE_HEADER_SIZE as u64;
        w.dirty = false;
        w.fill_asked = 0;
        Ok(())
    }

    /// Stops filling space ahead of the active file and cuts the zeros filled so far off
    /// (not synced: the sync that seals or closes the file follows).
    fn trim_active(&self, w: &mut Writer) -> Result<()> {
        if let Some(a) = w.alloc.take() {
            a.retire();
            if let Some(f) = w.active.as_mut() {
                let r = f
                    .trim()
                    .context(|| format!("trimming {}", self.path_name(w.active_id)));
                if let Err(e) = r {
                    return Err(self.set_read_only(&e));
                }
            }
        }
        Ok(())
    }

    /// Space ahead of the active file for the fill thread, if it is time to ask for it.
    fn fill_job(&self, w: &mut Writer) -> Option<FillJob> {
        if w.active_len.saturating_add(FILL_LOW) <= w.fill_asked {
            return None;
        }
        let from = w.fill_asked.max(w.active_len);
        // Not past the size at which the file rolls over.
        let to = (w.active_len + FILL_AHEAD).min(self.opts.max_file_size.max(w.active_len));
        w.fill_asked = to;
        if to <= from {
            return None;
        }
        let alloc = match &w.alloc {
            Some(a) => a.clone(),
            None => match w.active.as_ref().and_then(|f| f.background_allocator()) {
                Some(h) => w.alloc.insert(FileAllocator::new(h)).clone(),
                None => {
                    w.fill_asked = u64::MAX;
                    return None;
                }
            },
        };
        Some(FillJob {
            alloc,
            from,
            to,
            write_back: writeback_until(w.active_len),
        })
    }

    /// Appends `entries` (key, value or `None` for a delete) as one atomic group.
    fn write_entries(&self, entries: &[(&[u8], Option<&[u8]>)], sync: bool) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut body = 0u64;
        for (k, v) in entries {
            let n = RECORD_HEADER_SIZE as u64 + k.len() as u64 + v.map_or(0, |v| v.len() as u64);
            if n > MAX_RECORD_SIZE {
                return Err(Error::InvalidArgument(format!(
                    "record of {n} bytes is larger than the limit of {MAX_RECORD_SIZE}"
                )));
            }
            body += n;
        }
        let batch = entries.len() > 1;
        if batch && body > u32::MAX as u64 {
            return Err(Error::InvalidArgument("batch larger than 4 GiB".into()));
        }
        let mut w = lock(&self.writer);
        if w.closed {
            return Err(Error::Closed);
        }
        if let Some(msg) = lock(&self.read_only).clone() {
            return Err(Error::ReadOnly(msg));
        }
        if lock(&self.no_space).is_some() {
            self.resume_locked(&mut w)?;
        }
        let total = body + if batch { RECORD_HEADER_SIZE as u64 } else { 0 };
        if w.active.is_none()
            || (w.active_len > FILE_HEADER_SIZE as u64
                && w.active_len + total > self.opts.max_file_size)
        {
            self.roll(&mut w)?;
        }
        let seq0 = w.next_seq;
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        buf.reserve(total as usize);
        if batch {
            encode_batch_header(&mut buf, seq0, entries.len() as u32, body as u32);
        }
        let mut placed = Vec::with_capacity(entries.len());
        for (i, (k, v)) in entries.iter().enumerate() {
            let off = w.active_len + buf.len() as u64;
            let seq = seq0 + i as u64;
            let size = encode_record(&mut buf, seq, k, *v);
            placed.push(KeydirEntry::new(
                w.active_id,
                off,
                size as u32,
                seq,
                v.is_none(),
            ));
        }
        let id = w.active_id;
        let r = match w.active.as_mut() {
            Some(f) => f
                .append(&buf)
                .and_then(|_| f.flush())
                .context(|| format!("appending to {}", self.path_name(id))),
            None => Err(Error::Closed),
        };
        if let Err(e) = r {
            let good = w.active_len;
            return Err(self.fail_write(&mut w, &e, Some(good)));
        }
        w.active_len += buf.len() as u64;
        w.next_seq += entries.len() as u64;
        w.dirty = true;
        if let Some(job) = self.fill_job(&mut w) {
            self.filler.post(job);
        }
        let appended = buf.len() as u64;
        // Keep a small buffer for the next write; let a large batch's go.
        if buf.capacity() <= 64 << 10 {
            w.buf = buf;
        }
        let must_sync = sync
            || match self.opts.sync {
                SyncPolicy::None => false,
                SyncPolicy::Always => true,
                SyncPolicy::Interval(d) => w.last_sync.elapsed() >= d,
            };
        if must_sync {
            self.sync_active(&mut w)?;
        }
        let lock_taken = match self.index.try_write() {
            Ok(mut idx) => {
                self.drain_pending(&mut idx);
                Some(idx)
            }
            Err(_) => None,
        };
        let idx = match lock_taken {
            Some(idx) => Some(idx),
            None if self.defer(batch.then_some(id), entries, &placed) => None,
            None => Some(self.write_index_for_write()),
        };
        if let Some(mut idx) = idx {
            if batch {
                idx.add_bytes(id, RECORD_HEADER_SIZE as u64, true);
            }
            for ((k, _), e) in entries.iter().zip(placed) {
                idx.add_bytes(id, e.size() as u64, false);
                idx.apply(k, e);
            }
        }
        drop(w);
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_written
            .fetch_add(appended, Ordering::Relaxed);
        Ok(())
    }

    /// Reads the value a keydir entry points to, verifying the record.
    fn read_value(&self, key: &[u8], e: &KeydirEntry, file: &DataFile) -> Result<Vec<u8>> {
        let raw = file
            .file
            .read_at(e.offset, e.size() as usize)
            .context(|| format!("reading {} at {}", file.name(), e.offset))?;
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_read
            .fetch_add(raw.len() as u64, Ordering::Relaxed);
        let rec = decode_record(&raw, self.opts.verify_on_read)
            .map_err(|r| Error::corruption(file.name(), e.offset, r))?;
        if rec.key != key || rec.seq != e.seq {
            return Err(Error::corruption(
                file.name(),
                e.offset,
                "record does not hold the key the keydir expects",
            ));
        }
        rec.value
            .map(|v| v.to_vec())
            .ok_or_else(|| Error::corruption(file.name(), e.offset, "unexpected tombstone"))
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let (e, file) = {
            let idx = self.read_index();
            let Some(e) = self
                .pending_entry(key)
                .or_else(|| idx.map.get(key).copied())
            else {
                return Ok(None);
            };
            if e.is_tombstone() {
                return Ok(None);
            }
            let file = idx.files.get(&e.file_id).cloned().ok_or_else(|| {
                Error::corruption(
                    self.path_name(e.file_id),
                    e.offset,
                    "keydir names a missing file",
                )
            })?;
            (e, file)
        };
        self.read_value(key, &e, &file).map(Some)
    }

    /// Syncs the active file if the interval policy asks for it.
    fn interval_sync(&self) {
        if let SyncPolicy::Interval(d) = self.opts.sync {
            let mut w = lock(&self.writer);
            if w.dirty && !w.closed && w.last_sync.elapsed() >= d {
                if let Err(e) = self.sync_active(&mut w) {
                    tracing::error!(error = %e, "interval sync failed");
                }
            }
        }
    }

    /// Removes merge commit files once every file they replaced is deleted.
    fn cleanup_commits(&self) {
        let mut pending = lock(&self.pending_commits);
        if pending
            .iter()
            .all(|p| p.inputs.iter().any(|w| w.strong_count() > 0))
        {
            return;
        }
        // Deleted files' directory entries must be durable before the commit goes.
        if let Err(e) = self.fs.sync_dir(&self.dir) {
            tracing::warn!(error = %e, "could not sync the directory");
            return;
        }
        pending.retain(|p| {
            if p.inputs.iter().any(|w| w.strong_count() > 0) {
                return true;
            }
            if let Err(e) = self.fs.remove_file(&p.path) {
                tracing::warn!(file = %p.path.display(), error = %e, "could not remove merge commit");
            }
            false
        });
    }

    fn background(self: Arc<Self>) {
        let mut tick = self.opts.merge_check_interval;
        if let SyncPolicy::Interval(d) = self.opts.sync {
            tick = tick.min(d);
        }
        let tick = tick.max(Duration::from_millis(1));
        loop {
            {
                let g = lock(&self.bg_mutex);
                if self.shutting_down.load(Ordering::Acquire) {
                    break;
                }
                let _ = self.bg_cv.wait_timeout(g, tick);
            }
            if self.shutting_down.load(Ordering::Acquire) {
                break;
            }
            self.interval_sync();
            if self.opts.merge_trigger.auto {
                let r = merge::run(&self, false);
                self.note_merge(&r);
            }
            self.cleanup_commits();
        }
    }

    fn note_merge(&self, r: &Result<bool>) {
        match r {
            Ok(_) => *lock(&self.last_merge_error) = None,
            Err(e) => {
                tracing::error!(error = %e, "merge failed");
                *lock(&self.last_merge_error) = Some(e.to_string());
            }
        }
    }
}

impl Bitcask {
    /// Opens (or, with `create_if_missing`, creates) the store in `dir`: takes the `LOCK`
    /// file, finishes an interrupted merge, rebuilds the keydir (hint files, else scans),
    /// starts a new active file and the background thread.
    pub fn open(dir: impl AsRef<Path>, opts: BitcaskOptions) -> Result<Bitcask> {
        let dir = dir.as_ref().to_path_buf();
        let fs = opts.fs.clone();
        if opts.max_file_size < (FILE_HEADER_SIZE + RECORD_HEADER_SIZE) as u64 {
            return Err(Error::InvalidArgument("max_file_size is too small".into()));
        }
        if !fs.exists(&dir) {
            if !opts.create_if_missing {
                return Err(Error::InvalidArgument(format!(
                    "{} does not exist (create_if_missing is off)",
                    dir.display()
                )));
            }
            fs.create_dir_all(&dir)
                .context(|| format!("creating {}", dir.display()))?;
        }
        let file_lock = crate::fs::lock_directory(fs.as_ref(), &dir)?;
        let mut rec = recovery::recover(&dir, &opts)?;
        let tables = Arc::new(TablePrep::default());
        rec.keydir.map.set_preparer(tables.clone());
        tracing::info!(dir = %dir.display(), keys = rec.keydir.live_keys(),
            from_hints = rec.report.files_from_hints, scanned = rec.report.files_scanned,
            "bitcask opened");
        let inner = Arc::new(Inner {
            dir,
            fs,
            index: RwLock::new(rec.keydir),
            pending: Pending::default(),
            write_waiting: AtomicBool::new(false),
            writer: Mutex::new(Writer {
                active: None,
                active_id: 0,
                active_len: 0,
                next_seq: rec.next_seq,
                dirty: false,
                last_sync: Instant::now(),
                closed: false,
                torn_from: None,
                buf: Vec::new(),
                alloc: None,
                fill_asked: 0,
            }),
            next_file_id: AtomicU32::new(rec.next_file_id),
            merge_lock: Mutex::new(()),
            pending_commits: Mutex::new(Vec::new()),
            shutting_down: AtomicBool::new(false),
            bg_mutex: Mutex::new(()),
            bg_cv: Condvar::new(),
            read_only: Mutex::new(None),
            no_space: Mutex::new(None),
            last_merge_error: Mutex::new(None),
            filler: Filler::default(),
            tables,
            counters: Counters::default(),
            opts,
            _lock: file_lock,
        });
        {
            let mut w = lock(&inner.writer);
            inner.roll(&mut w)?;
        }
        let bg = inner.clone();
        let thread = std::thread::Builder::new()
            .name("bitcask-merge".into())
            .spawn(move || bg.background())
            .context(|| "spawning the merge thread".to_string())?;
        let fl = inner.clone();
        let fill_thread = std::thread::Builder::new()
            .name("bitcask-fill".into())
            .spawn(move || fl.filler.run());
        let tables = inner.tables.clone();
        let keydir_thread = std::thread::Builder::new()
            .name("bitcask-keydir".into())
            .spawn(move || tables.run());
        let db = Bitcask {
            inner,
            thread: Mutex::new(Some(thread)),
            fill_thread: Mutex::new(None),
            keydir_thread: Mutex::new(None),
            report: rec.report,
        };
        // Dropping `db` on an error stops the merge thread (and a fill thread that started).
        *lock(&db.fill_thread) =
            Some(fill_thread.context(|| "spawning the fill thread".to_string())?);
        *lock(&db.keydir_thread) =
            Some(keydir_thread.context(|| "spawning the keydir thread".to_string())?);
        Ok(db)
    }

    /// Gets the store writable again after a full disk ([`Error::NoSpace`]): a partial
    /// record the failed write left in the active file is cut off and a new active file
    /// started. Writes do this themselves once space returns, so calling it is optional.
    /// [`Error::NoSpace`] while there is still no room; [`Error::ReadOnly`] after an error
    /// that is not recoverable (a failed fsync).
    pub fn resume(&self) -> Result<()> {
        let mut w = lock(&self.inner.writer);
        if w.closed {
            return Err(Error::Closed);
        }
        self.inner.resume_locked(&mut w)
    }

    /// Sets `key` to `value`.
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        self.inner
            .write_entries(&[(key.as_ref(), Some(value.as_ref()))], false)
    }

    /// Deletes `key` (appends a tombstone).
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<()> {
        self.inner.write_entries(&[(key.as_ref(), None)], false)
    }

    /// Applies `batch` atomically: after a crash either all of it is visible or none.
    /// `DeleteRange` entries are refused with `Error::InvalidArgument` (a hash index has no
    /// order to delete a range by).
    pub fn write(&self, batch: WriteBatch, opts: WriteOptions) -> Result<()> {
        let mut entries = Vec::with_capacity(batch.len());
        for e in batch.iter() {
            match e {
                BatchEntry::Put { key, value } => entries.push((key, Some(value))),
                BatchEntry::Delete { key } => entries.push((key, None)),
                BatchEntry::DeleteRange { .. } => {
                    return Err(Error::InvalidArgument(
                        "the Bitcask engine does not support range deletes".into(),
                    ))
                }
            }
        }
        self.inner.write_entries(&entries, opts.sync)
    }

    /// The value of `key`, if any: one keydir lookup and one positioned read.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        self.inner.get(key.as_ref())
    }

    /// True if `key` has a value (no disk read).
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> bool {
        let idx = self.inner.read_index();
        let key = key.as_ref();
        self.inner
            .pending_entry(key)
            .or_else(|| idx.map.get(key).copied())
            .is_some_and(|e| !e.is_tombstone())
    }

    /// The live keys, in unspecified order (a copy taken under the read lock).
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.inner
            .read_index_settled()
            .map
            .iter()
            .filter(|(_, e)| !e.is_tombstone())
            .map(|(k, _)| k.as_slice().to_vec())
            .collect()
    }

    /// The live entries, in unspecified order, as of this call: the iterator holds the
    /// keydir entries and the files they point to, so later writes and merges do not
    /// change what it returns. Values are read lazily.
    pub fn iter(&self) -> BitcaskIter {
        let idx = self.inner.read_index_settled();
        let entries = idx
            .map
            .iter()
            .filter(|(_, e)| !e.is_tombstone())
            .map(|(k, e)| (k.as_slice().to_vec(), *e))
            .collect::<Vec<_>>();
        BitcaskIter {
            inner: self.inner.clone(),
            files: idx.files.clone(),
            entries: entries.into_iter(),
        }
    }

    /// Merges every immutable data file now (the active file is closed first, so everything
    /// written so far is merged), dropping overwritten records and, since the merge covers
    /// every older file, tombstones. Returns when the merged files are live.
    pub fn merge(&self) -> Result<()> {
        {
            let mut w = lock(&self.inner.writer);
            if w.closed {
                return Err(Error::Closed);
            }
            if lock(&self.inner.no_space).is_some() {
                self.inner.resume_locked(&mut w)?;
            }
            if w.active_len > FILE_HEADER_SIZE as u64 {
                self.inner.roll(&mut w)?;
            }
        }
        let r = merge::run(&self.inner, true);
        self.inner.note_merge(&r);
        self.inner.cleanup_commits();
        r.map(|_| ())
    }

    /// Hands buffered writes to the OS and fsyncs the active file.
    pub fn flush(&self) -> Result<()> {
        let mut w = lock(&self.inner.writer);
        if w.closed {
            return Err(Error::Closed);
        }
        self.inner.sync_active(&mut w)
    }

    /// Stops the merge thread (an ongoing merge is abandoned), syncs the active file and
    /// releases the directory.
    pub fn close(self) -> Result<()> {
        self.shutdown(true)
    }

    /// Stops the merge thread and releases the directory *without* syncing, as if the
    /// process had been killed after its last acknowledged write (which the OS still has).
    /// For recovery tests and tools.
    pub fn abandon(self) {
        let _ = self.shutdown(false);
    }

    fn shutdown(&self, sync: bool) -> Result<()> {
        let Some(t) = lock(&self.thread).take() else {
            return Ok(());
        };
        {
            let _g = lock(&self.inner.bg_mutex);
            self.inner.shutting_down.store(true, Ordering::Release);
        }
        self.inner.bg_cv.notify_all();
        if t.join().is_err() {
            tracing::error!("bitcask merge thread panicked");
        }
        self.inner.filler.stop();
        if let Some(t) = lock(&self.fill_thread).take() {
            if t.join().is_err() {
                tracing::error!("bitcask fill thread panicked");
            }
        }
        self.inner.tables.stop();
        if let Some(t) = lock(&self.keydir_thread).take() {
            if t.join().is_err() {
                tracing::error!("bitcask keydir thread panicked");
            }
        }
        let mut w = lock(&self.inner.writer);
        let r = if sync && lock(&self.inner.read_only).is_none() {
            self.inner
                .trim_active(&mut w)
                .and_then(|_| self.inner.sync_active(&mut w))
        } else {
            Ok(())
        };
        w.closed = true;
        w.active = None;
        drop(w);
        self.inner.cleanup_commits();
        r
    }

    /// Figures about the store.
    pub fn stats(&self) -> BitcaskStats {
        let c = &self.inner.counters;
        let idx = self.inner.read_index_settled();
        let (mut live, mut dead) = (0, 0);
        for s in idx.stats.values() {
            live += s.live();
            dead += s.dead;
        }
        let disk_bytes = idx
            .stats
            .values()
            .map(|s| s.total + FILE_HEADER_SIZE as u64)
            .sum();
        let mem = idx.memory_bytes();
        BitcaskStats {
            keys: idx.live_keys(),
            tombstones: idx.tombstones,
            files: idx.files.len() as u64,
            disk_bytes,
            live_bytes: live,
            dead_bytes: dead,
            merges: c.merges.load(Ordering::Relaxed),
            merge_bytes_read: c.merge_bytes_read.load(Ordering::Relaxed),
            merge_bytes_written: c.merge_bytes_written.load(Ordering::Relaxed),
            last_merge_error: lock(&self.inner.last_merge_error).clone(),
            writes: c.writes.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            reads: c.reads.load(Ordering::Relaxed),
            bytes_read: c.bytes_read.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            keydir_memory_bytes: mem,
            keydir_bytes_per_key: if idx.map.is_empty() {
                0.0
            } else {
                mem as f64 / idx.map.len() as f64
            },
            background_error: lock(&self.inner.read_only)
                .clone()
                .or_else(|| lock(&self.inner.no_space).clone()),
        }
    }

    /// What recovery found when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The directory of the store.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }
}

impl Drop for Bitcask {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown(true) {
            tracing::error!(error = %e, "closing bitcask on drop failed");
        }
    }
}

/// Iterator over the live entries of a [`Bitcask`] as of [`Bitcask::iter`], in
/// unspecified order.
pub struct BitcaskIter {
    inner: Arc<Inner>,
    files: BTreeMap<u32, Arc<DataFile>>,
    entries: std::vec::IntoIter<(Vec<u8>, KeydirEntry)>,
}

impl Iterator for BitcaskIter {
    type Item = Result<(Vec<u8>, Vec<u8>)>;
    fn next(&mut self) -> Option<Self::Item> {
        let (k, e) = self.entries.next()?;
        let Some(file) = self.files.get(&e.file_id) else {
            return Some(Err(Error::corruption(
                self.inner.path_name(e.file_id),
                e.offset,
                "keydir names a missing file",
            )));
        };
        Some(self.inner.read_value(&k, &e, file).map(|v| (k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The merge thread's keydir locks wait while a write waits for the write lock, and
    /// go on once it has it.
    #[test]
    fn merge_locks_yield_to_a_waiting_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Bitcask::open(dir.path(), BitcaskOptions::default()).expect("open");
        let inner = db.inner.clone();
        inner.write_waiting.store(true, Ordering::Release);
        let done = Arc::new(AtomicBool::new(false));
        let t = {
            let (inner, done) = (inner.clone(), done.clone());
            std::thread::spawn(move || {
                drop(inner.read_index_yielding());
                drop(inner.write_index_yielding());
                done.store(true, Ordering::Release);
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !done.load(Ordering::Acquire),
            "the merge lock did not yield"
        );
        // A write takes the lock (uncontended: no flag left behind), then lets go.
        drop(inner.write_index_for_write());
        assert!(inner.write_waiting.load(Ordering::Acquire));
        inner.write_waiting.store(false, Ordering::Release);
        t.join().expect("merge side");
        assert!(done.load(Ordering::Acquire));
        // Contended: the write sets the flag while it waits and clears it once it has the
        // lock.
        let r = inner.read_index();
        let t = {
            let inner = inner.clone();
            std::thread::spawn(move || drop(inner.write_index_for_write()))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !inner.write_waiting.load(Ordering::Acquire) {
            assert!(
                Instant::now() < deadline,
                "a waiting write did not set the flag"
            );
            std::thread::yield_now();
        }
        drop(r);
        t.join().expect("write side");
        assert!(!inner.write_waiting.load(Ordering::Acquire));
        db.close().expect("close");
    }

    /// Holds the keydir's read lock in a thread of its own (as the merge's lookups do)
    /// until the returned sender is dropped.
    fn hold_read_lock(inner: &Arc<Inner>) -> (std::sync::mpsc::Sender<()>, JoinHandle<()>) {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
        let inner = inner.clone();
        let t = std::thread::spawn(move || {
            let _g = inner.read_index();
            held_tx.send(()).expect("send");
            let _ = rx.recv();
        });
        held_rx.recv().expect("lock held");
        (tx, t)
    }

    /// Writes that find the keydir lock taken leave their updates pending and return:
    /// reads see them at once, and they are applied before anything else changes the
    /// keydir: a merge right after (whose roll seals the file they name) neither loses nor
    /// misplaces them. A write with no room left waits for the lock.
    #[test]
    fn writes_pending_behind_a_held_keydir_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = BitcaskOptions {
            merge_trigger: MergeTrigger {
                auto: false,
                ..MergeTrigger::default()
            },
            ..BitcaskOptions::default()
        };
        let db = Arc::new(Bitcask::open(dir.path(), opts).expect("open"));
        let key = |i: usize| format!("key{i:05}").into_bytes();
        let long = |i: usize| format!("a-key-longer-than-inline-{i:05}").into_bytes();
        for i in 0..100 {
            db.put(key(i), b"old").expect("put");
        }
        let (release, holder) = hold_read_lock(&db.inner);
        for i in 0..50 {
            db.put(key(i), format!("new{i}")).expect("put");
            db.put(long(i), b"long").expect("put");
        }
        db.delete(key(60)).expect("delete");
        let mut b = WriteBatch::new();
        b.put(key(61), b"batched").delete(key(62));
        db.write(b, WriteOptions::default()).expect("batch");
        let pending = db.inner.pending.len.load(Ordering::Acquire);
        assert_eq!(pending, 100 + 1 + 3, "the writes did not defer");
        let check = |db: &Bitcask| {
            for i in 0..50 {
                assert_eq!(
                    db.get(key(i)).expect("get"),
                    Some(format!("new{i}").into_bytes())
                );
                assert_eq!(db.get(long(i)).expect("get"), Some(b"long".to_vec()));
            }
            assert_eq!(db.get(key(55)).expect("get"), Some(b"old".to_vec()));
            assert_eq!(db.get(key(60)).expect("get"), None);
            assert!(!db.contains_key(key(60)) && db.contains_key(key(61)));
            assert_eq!(db.get(key(61)).expect("get"), Some(b"batched".to_vec()));
            assert_eq!(db.get(key(62)).expect("get"), None);
        };
        check(&db);
        drop(release);
        holder.join().expect("holder");
        // Still pending (nothing took the write lock since): the merge's roll applies them
        // before it seals their file.
        assert_eq!(db.inner.pending.len.load(Ordering::Acquire), pending);
        db.merge().expect("merge");
        assert_eq!(db.inner.pending.len.load(Ordering::Acquire), 0);
        check(&db);
        // No room: the write waits for the lock.
        let (release, holder) = hold_read_lock(&db.inner);
        let writer = {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..PENDING_MAX {
                    db.put(key(1000 + i), b"more").expect("put");
                }
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(!writer.is_finished(), "a write went past PENDING_MAX");
        assert_eq!(
            db.inner.pending.len.load(Ordering::Acquire),
            PENDING_MAX - 1
        );
        drop(release);
        holder.join().expect("holder");
        writer.join().expect("writer");
        check(&db);
        let st = db.stats();
        assert_eq!(st.keys, 100 + 50 - 2 + PENDING_MAX as u64);
        assert_eq!(db.keys().len() as u64, st.keys);
        drop(db);
        let db = Bitcask::open(dir.path(), BitcaskOptions::default()).expect("reopen");
        check(&db);
    }
}
