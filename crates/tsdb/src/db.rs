//! [`Tsdb`]: the time-series store: the head, its WAL, flushes to time partitions in
//! `strata-kv`, retention and deletion.
//!
//! Write path: [`Appender::commit`] resolves each label set to a series (creating it in
//! the head and logging it once), logs the batch's samples in one WAL record (fsynced per
//! [`FsyncPolicy`]), then appends them to the series' open chunks. A flush (every
//! [`Options::flush_span_ms`] of data, [`Options::flush_max_samples`] samples, on close, or
//! on demand) cuts every series' chunks, rotates the WAL (the new segment starts with a
//! checkpoint of the live series), writes the chunks, the series' labels and postings of
//! partitions new to them in `strata-kv` with a mark of the last WAL segment covered, and
//! only then deletes the covered segments. Retention then drops whole expired partitions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU64,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use strata_kv::{Db, WriteBatch, WriteOptions};

use crate::chunk::{decimal, Chunk, XorAppender};
use crate::error::{show_key, Error, Result};
use crate::head::{self, Appended, Head, HeadSeries};
use crate::index::PartitionIndex;
use crate::keys;
use crate::labels::{self, LabelError, LabelLimits, Labels};
use crate::matcher::Matcher;
use crate::postings::{self, PostingsIndex, SeriesRef, ALL_POSTINGS_KEY};
use crate::querier::Querier;
use crate::wal::{self, FsyncPolicy, Wal};

/// One day in milliseconds.
pub const DAY_MS: i64 = 24 * 3600 * 1000;

/// Configuration of a [`Tsdb`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Data older than the newest sample minus this is dropped, a whole partition at a
    /// time, and samples older than the oldest kept partition are rejected. Default 15 days.
    pub retention_ms: i64,
    /// Also drop the oldest partitions while the key-value store is larger than this.
    pub max_bytes: Option<u64>,
    /// Width of a time partition. Fixed when the store is created (later values are
    /// ignored). Default one day.
    pub partition_ms: i64,
    /// When the WAL is fsynced. Default every 1000 ms.
    pub wal_fsync: FsyncPolicy,
    /// A head chunk is closed after this many samples. Default 240.
    pub max_chunk_samples: usize,
    /// Flush when the head's unpersisted data spans this much time. Default 2 hours.
    pub flush_span_ms: i64,
    /// Flush when the head holds this many unpersisted samples. Default 20 million.
    pub flush_max_samples: u64,
    /// Run flushes, WAL syncs and retention on a background thread. Without it they
    /// happen only when called (tests).
    pub background: bool,
    /// Bounds on label sets built by [`Appender::add_pairs`].
    pub label_limits: LabelLimits,
    /// Most series in the head (the cardinality limit): samples that would create a series
    /// beyond it are rejected and counted in [`CommitStats::series_limited`].
    pub max_series: Option<usize>,
    /// Options of the key-value store (its `fs` is also used for the WAL).
    pub kv: strata_kv::Options,
}

impl Default for Options {
    fn default() -> Self {
        let mut kv = strata_kv::Options::default();
        kv.table.compression = strata_kv::CompressionType::Zstd;
        // Chunk records are zstd payloads already: a block rarely shrinks by 1/8, but zstd
        // still takes the keys and frame headers (5.9% of the tables measured).
        kv.table.min_compression_saving_permille = 4;
        Options {
            retention_ms: 15 * DAY_MS,
            max_bytes: None,
            partition_ms: DAY_MS,
            wal_fsync: FsyncPolicy::IntervalMs(1000),
            max_chunk_samples: 240,
            flush_span_ms: 2 * 3600 * 1000,
            flush_max_samples: 20_000_000,
            background: true,
            label_limits: LabelLimits::default(),
            max_series: None,
            kv,
        }
    }
}

/// What a commit did with its samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Samples stored (in order or not).
    pub appended: u64,
    /// Of those, samples at or before their series' last timestamp.
    pub out_of_order: u64,
    /// Samples rejected as older than retention.
    pub too_old: u64,
    /// Series created by the commit.
    pub new_series: u64,
    /// Samples rejected because their series would pass [`Options::max_series`].
    pub series_limited: u64,
}

/// Figures of a [`Tsdb`], like Prometheus' `/api/v1/status/tsdb`.
#[derive(Debug, Clone, Default)]
pub struct TsdbStats {
    /// Series in the head (active).
    pub head_series: u64,
    /// Samples in the head not yet persisted.
    pub head_samples: u64,
    /// Chunks in the head (open and closed).
    pub head_chunks: u64,
    /// Approximate bytes of memory held by head series.
    pub head_memory_bytes: u64,
    /// Time partitions on disk.
    pub partitions: u64,
    /// Samples persisted in partitions.
    pub persisted_samples: u64,
    /// Chunks persisted in partitions.
    pub persisted_chunks: u64,
    /// Bytes of persisted chunks (before the key-value store's block compression).
    pub persisted_chunk_bytes: u64,
    /// Series entries in partition indexes (a series counts once per partition).
    pub partition_series: u64,
    /// Bytes on disk: key-value tables and WAL segments.
    pub disk_bytes: u64,
    /// Bytes of WAL segments.
    pub wal_bytes: u64,
    /// `disk_bytes` of the key-value tables divided by `persisted_samples`.
    pub bytes_per_sample: f64,
    /// Oldest and newest sample timestamps held (ms), if any.
    pub min_time: Option<i64>,
    /// See `min_time`.
    pub max_time: Option<i64>,
    /// Samples appended since open.
    pub samples_appended: u64,
    /// Out-of-order (or duplicate-timestamp) samples appended since open.
    pub out_of_order_samples: u64,
    /// Samples rejected as too old since open.
    pub too_old_samples: u64,
    /// Flushes since open.
    pub flushes: u64,
    /// Head series per metric name, largest first (top 10).
    pub series_count_by_metric_name: Vec<(String, u64)>,
    /// Distinct values per label name in the head, largest first (top 10).
    pub label_value_count_by_label_name: Vec<(String, u64)>,
    /// Head series per label pair `name=value`, largest first (top 10).
    pub series_count_by_label_value_pair: Vec<(String, u64)>,
    /// Bytes of label values per label name in the head, largest first (top 10).
    pub memory_in_bytes_by_label_name: Vec<(String, u64)>,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    appended: AtomicU64,
    ooo: AtomicU64,
    too_old: AtomicU64,
    flushes: AtomicU64,
    head_samples: AtomicU64,
    pub(crate) compactions: AtomicU64,
}

/// Counters of a [`Tsdb`], cheap to read (no walk over the head), for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TsdbCounters {
    /// Samples appended since open.
    pub samples_appended: u64,
    /// Of those, out of order or with a duplicate timestamp.
    pub out_of_order_samples: u64,
    /// Samples rejected as older than retention.
    pub too_old_samples: u64,
    /// Head flushes since open.
    pub flushes: u64,
    /// Partitions compacted since open.
    pub compactions: u64,
    /// WAL fsyncs since open, and their total time in microseconds.
    pub wal_fsyncs: u64,
    /// See `wal_fsyncs`.
    pub wal_fsync_micros: u64,
    /// Series in the head.
    pub head_series: u64,
    /// Samples held by the head, not yet persisted.
    pub head_samples: u64,
    /// Time partitions on disk.
    pub partitions: u64,
}

pub(crate) struct Inner {
    pub opts: Options,
    pub part_ms: i64,
    pub kv: Db,
    pub head: Head,
    /// The WAL; its lock also serializes commits with the start of a flush.
    wal: Mutex<Wal>,
    pub(crate) flush_lock: Mutex<()>,
    next_ref: AtomicU64,
    pub(crate) next_seq: AtomicU64,
    /// Newest sample timestamp ever seen.
    pub max_t: AtomicI64,
    /// Oldest timestamp of unpersisted head data.
    head_min_t: AtomicI64,
    /// Samples before this are rejected.
    min_valid_t: AtomicI64,
    /// Appends of samples at or before this time bump `data_gen` (a result cache's
    /// boundary: see [`Tsdb::data_generation`]).
    watch_t: AtomicI64,
    /// Changes when data at or before `watch_t` changes.
    data_gen: AtomicU64,
    pub partitions: RwLock<BTreeSet<i64>>,
    /// The chunk bounds of partitions, in memory.
    pub(crate) bounds: crate::bounds::BoundsCache,
    pub(crate) counters: Counters,
    failed: Mutex<Option<String>>,
    closed: AtomicBool,
    /// Tells the background thread to stop.
    stopping: AtomicBool,
    wake: (Mutex<bool>, Condvar),
    wal_dir: PathBuf,
}

/// The series of an appender's run of samples: found in the head when added, or to be
/// created (its labels and their hash).
enum SeriesKey {
    Found(Arc<HeadSeries>),
    New(Labels, u64),
}

/// A run of an appender's samples of one series: `samples[previous end..end]`.
struct Pending {
    key: SeriesKey,
    end: usize,
}

/// The series of a WAL replay by ref: an array over the span of refs seen (refs are
/// handed out in sequence, so it is dense), read in order as samples records name
/// consecutive series, where a hash map would miss the cache on every sample. Refs far
/// outside the span go to a map.
#[derive(Default)]
struct ReplayIndex {
    base: SeriesRef,
    dense: Vec<Option<Arc<HeadSeries>>>,
    sparse: HashMap<SeriesRef, Arc<HeadSeries>>,
}

impl ReplayIndex {
    fn put(&mut self, s: Arc<HeadSeries>) {
        if self.dense.is_empty() && self.sparse.is_empty() {
            self.base = s.r;
        }
        // The array may span at most twice the series seen, plus a million slots.
        let room = 2 * (self.dense.len() + self.sparse.len()) as u64 + (1 << 20);
        match s.r.checked_sub(self.base) {
            Some(i) if i < room => {
                let i = i as usize;
                if i >= self.dense.len() {
                    self.dense.resize(i + 1, None);
                }
                self.dense[i] = Some(s);
            }
            _ => {
                self.sparse.insert(s.r, s);
            }
        }
    }

    fn get(&self, r: SeriesRef) -> Option<&Arc<HeadSeries>> {
        let slot = r
            .checked_sub(self.base)
            .and_then(|i| self.dense.get(usize::try_from(i).ok()?))
            .and_then(Option::as_ref);
        slot.or_else(|| self.sparse.get(&r))
    }
}

pub(crate) fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The time-series store. Cheap to share across threads (`&Tsdb` is enough for appending
/// and querying); closing flushes the head.
pub struct Tsdb {
    inner: Arc<Inner>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Tsdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tsdb")
            .field("dir", &self.inner.wal_dir.parent())
            .finish()
    }
}

fn read_u64(kv: &Db, key: &[u8]) -> Result<Option<u64>> {
    Ok(match kv.get(key)? {
        None => None,
        Some(v) => Some(
            strata_kv::coding::get_fixed64(&v).ok_or_else(|| Error::Corruption {
                location: format!("key {}", show_key(key)),
                offset: 0,
                reason: format!("meta value of {} bytes, expected 8", v.len()),
            })?,
        ),
    })
}

fn fixed64(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

impl Tsdb {
    /// Opens (creating if needed) the store in `dir`: `dir/kv` holds the key-value store,
    /// `dir/wal` the WAL, which is replayed into the head.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Tsdb> {
        let dir = dir.as_ref();
        if opts.partition_ms <= 0 || opts.retention_ms <= 0 || opts.max_chunk_samples == 0 {
            return Err(Error::InvalidArgument(
                "partition_ms, retention_ms and max_chunk_samples must be positive".into(),
            ));
        }
        let fs = Arc::clone(&opts.kv.fs);
        let kv = Db::open(dir.join("kv"), opts.kv.clone())?;

        if let Some(v) = read_u64(&kv, keys::META_FORMAT)? {
            if v == 1 {
                // Version 1 lacks chunk bounds, which version 2 only adds: its partitions
                // have no bounds mark, so readers check their chunks. Marked version 2
                // now, since a version-1 binary would leave bounds stale.
                kv.put(keys::META_FORMAT, fixed64(u64::from(keys::FORMAT_VERSION)))?;
            } else if v != u64::from(keys::FORMAT_VERSION) {
                return Err(Error::Kv(strata_kv::Error::UnsupportedVersion {
                    file: dir.join("kv").display().to_string(),
                    version: v as u32,
                }));
            }
        } else {
            kv.put(keys::META_FORMAT, fixed64(u64::from(keys::FORMAT_VERSION)))?;
        }
        let part_ms = match read_u64(&kv, b"Mpartition_ms")? {
            Some(v) if v > 0 && v <= i64::MAX as u64 => v as i64,
            Some(v) => {
                return Err(Error::Corruption {
                    location: "key Mpartition_ms".into(),
                    offset: 0,
                    reason: format!("partition width {v}"),
                })
            }
            None => {
                kv.write(
                    {
                        let mut b = WriteBatch::new();
                        b.put(b"Mpartition_ms", fixed64(opts.partition_ms as u64));
                        b
                    },
                    WriteOptions { sync: true },
                )?;
                opts.partition_ms
            }
        };
        let next_ref = read_u64(&kv, keys::META_NEXT_REF)?.unwrap_or(1);
        let wal_persisted = read_u64(&kv, keys::META_WAL_PERSISTED)?.unwrap_or(0);
        let next_seq = read_u64(&kv, keys::META_NEXT_SEQ)?.unwrap_or(1);
        let max_t = read_u64(&kv, keys::META_MAX_TIME)?.map_or(i64::MIN, |v| v as i64);
        let partitions = list_partitions(&kv)?;

        // Replay the WAL into a fresh head.
        let wal_dir = dir.join("wal");
        fs.create_dir_all(&wal_dir).map_err(|e| {
            Error::Kv(strata_kv::Error::Io {
                context: format!("creating {}", wal_dir.display()),
                source: e,
            })
        })?;
        let segs = wal::list_segments(fs.as_ref(), &wal_dir)?;
        let head = Head::default();
        let mut max_ref = next_ref.saturating_sub(1);
        let mut max_seen = max_t;
        let mut head_min = i64::MAX;
        let mut replayed = 0u64;
        let mut unknown = 0u64;
        let mut by_ref = ReplayIndex::default();
        wal::replay(fs.as_ref(), &wal_dir, &segs, |seg, rec| {
            match rec {
                wal::Record::Series(list) => {
                    for (r, labels) in list {
                        max_ref = max_ref.max(r);
                        let h = labels.stable_hash();
                        by_ref.put(head.insert(r, labels, h));
                    }
                }
                wal::Record::Samples(samples) if seg > wal_persisted => {
                    for s in samples {
                        let Some(series) = by_ref.get(s.r) else {
                            unknown += 1;
                            continue;
                        };
                        head::lock(series).append(s.t, s.v, part_ms, opts.max_chunk_samples);
                        max_seen = max_seen.max(s.t);
                        head_min = head_min.min(s.t);
                        replayed += 1;
                    }
                }
                wal::Record::Samples(_) => {}
            }
            Ok(())
        })?;
        if unknown > 0 {
            tracing::warn!(unknown, "WAL samples of unknown series skipped");
        }
        // References are handed out one by one from 1: one at or past 2^63 comes from a
        // damaged or hostile WAL, and must not wrap around onto live series.
        if max_ref >= 1 << 63 {
            return Err(Error::Corruption {
                location: wal_dir.display().to_string(),
                offset: 0,
                reason: format!("series reference {max_ref} is beyond any the store hands out"),
            });
        }
        let next_segment = segs.last().map_or(1, |s| s + 1);
        let wal = Wal::create(Arc::clone(&fs), &wal_dir, next_segment)?;
        tracing::info!(
            dir = %dir.display(),
            series = head.num_series(),
            samples = replayed,
            partitions = partitions.len(),
            "tsdb opened"
        );

        let inner = Arc::new(Inner {
            part_ms,
            kv,
            head,
            wal: Mutex::new(wal),
            flush_lock: Mutex::new(()),
            next_ref: AtomicU64::new(max_ref + 1),
            next_seq: AtomicU64::new(next_seq),
            max_t: AtomicI64::new(max_seen),
            head_min_t: AtomicI64::new(head_min),
            min_valid_t: AtomicI64::new(i64::MIN),
            watch_t: AtomicI64::new(i64::MIN),
            data_gen: AtomicU64::new(0),
            partitions: RwLock::new(partitions),
            bounds: Default::default(),
            counters: Counters::default(),
            failed: Mutex::new(None),
            closed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            wake: (Mutex::new(false), Condvar::new()),
            wal_dir,
            opts,
        });
        inner.counters.head_samples.store(replayed, Relaxed);
        inner.apply_retention()?;
        let worker = if inner.opts.background {
            let bg = Arc::clone(&inner);
            Some(
                std::thread::Builder::new()
                    .name("strata-tsdb".into())
                    .spawn(move || bg.background())
                    .map_err(|e| {
                        Error::Kv(strata_kv::Error::Io {
                            context: "starting the tsdb background thread".into(),
                            source: e,
                        })
                    })?,
            )
        } else {
            None
        };
        Ok(Tsdb {
            inner,
            worker: Mutex::new(worker),
        })
    }

    /// A new appender: add samples, then commit them as one batch.
    pub fn appender(&self) -> Appender<'_> {
        Appender {
            db: self,
            pending: Vec::new(),
            samples: Vec::new(),
        }
    }

    /// [`Tsdb::appender`] with room for runs of `series` series and `samples` samples: a
    /// caller that knows its batch (a decoded remote-write request) spares the vectors'
    /// growth, a copy of everything added so far at each doubling.
    pub fn appender_with_capacity(&self, series: usize, samples: usize) -> Appender<'_> {
        Appender {
            db: self,
            pending: Vec::with_capacity(series),
            samples: Vec::with_capacity(samples),
        }
    }

    /// A querier over `[mint, maxt]` (inclusive, ms).
    pub fn querier(&self, mint: i64, maxt: i64) -> Querier {
        Querier::new(Arc::clone(&self.inner), mint, maxt)
    }

    /// Counters for monitoring, without walking the head.
    pub fn counters(&self) -> TsdbCounters {
        let i = &self.inner;
        let (wal_fsyncs, wal_fsync_micros) = guard(&i.wal).sync_stats();
        TsdbCounters {
            samples_appended: i.counters.appended.load(Relaxed),
            out_of_order_samples: i.counters.ooo.load(Relaxed),
            too_old_samples: i.counters.too_old.load(Relaxed),
            flushes: i.counters.flushes.load(Relaxed),
            compactions: i.counters.compactions.load(Relaxed),
            wal_fsyncs,
            wal_fsync_micros,
            head_series: i.head.num_series() as u64,
            head_samples: i.counters.head_samples.load(Relaxed),
            partitions: i
                .partitions
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .len() as u64,
        }
    }

    /// Series in the head (active series).
    pub fn head_series(&self) -> usize {
        self.inner.head.num_series()
    }

    /// The options in effect (with the stored partition width).
    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    /// Persists the head now.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    /// Flushes the head, then compacts every partition written since its last compaction
    /// (including the newest: new data then starts small chunks again).
    pub fn compact(&self) -> Result<crate::compact::CompactStats> {
        self.inner.flush()?;
        self.inner.compact_partitions(i64::MAX)
    }

    /// Drops expired partitions now (also done after each flush).
    pub fn apply_retention(&self) -> Result<()> {
        self.inner.apply_retention()
    }

    /// Deletes the samples in `[mint, maxt]` of the series selected by `matchers`. The head
    /// is flushed first; samples appended while the deletion runs may survive it.
    pub fn delete_series(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<u64> {
        self.inner.flush()?;
        let r = self.inner.delete_series(matchers, mint, maxt);
        // After the deletion (even a failed one, which may have deleted part): a result
        // computed while it ran is then stale.
        self.inner.data_gen.fetch_add(1, SeqCst);
        r
    }

    /// A counter for result caches: it changes (after the data is visible) whenever
    /// samples at or before the boundary set by [`Tsdb::watch_writes_before`] are
    /// appended, when data is deleted, and when retention drops a partition. Appends of
    /// newer samples leave it alone. A result computed from data at or before the boundary
    /// is still exact while this reads the same as before it was computed.
    pub fn data_generation(&self) -> u64 {
        self.inner.data_gen.load(SeqCst)
    }

    /// Raises the boundary of [`Tsdb::data_generation`] to `t` (it never goes down).
    pub fn watch_writes_before(&self, t: i64) {
        self.inner.watch_t.fetch_max(t, SeqCst);
    }

    /// Writes a consistent copy of the store to `target` (which must not exist): the head
    /// is flushed, then the key-value store is checkpointed (tables hard-linked where the
    /// filesystem allows). The copy opens as a store of its own.
    pub fn snapshot(&self, target: impl AsRef<Path>) -> Result<()> {
        let target = target.as_ref();
        self.inner.flush()?;
        let _one = guard(&self.inner.flush_lock);
        self.inner.kv.checkpoint(target.join("kv"))?;
        Ok(())
    }

    /// Figures about the store.
    pub fn stats(&self) -> Result<TsdbStats> {
        self.inner.stats()
    }

    /// Reads the inverted index (postings keys and lists) of the newest partitions, newest
    /// first, until about `max_bytes` of keys and values are read, and returns that number.
    /// Their blocks come into the key-value store's block cache, and their chunk bounds
    /// into memory (not counted in `max_bytes`), so that the first
    /// metadata queries and selectors after a restart do not each wait for their blocks to
    /// be read, checked and decompressed (as RocksDB and LevelDB warm their table caches
    /// on open). Meant for a background thread after open: it reads one snapshot and
    /// blocks no writer nor reader.
    pub fn warm_index(&self, max_bytes: usize) -> Result<usize> {
        let parts: Vec<i64> = self
            .inner
            .partitions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
            .copied()
            .collect();
        let gen = self.inner.bounds.generation();
        let snap = self.inner.kv.snapshot();
        let mut read = 0;
        for part in parts {
            // The chunk bounds in memory first: the first series query then reads none.
            if snap.get(keys::sub_prefix(part, keys::BOUNDED))?.is_some() {
                self.inner.bounds.get_or_load(&snap, part, gen)?;
            }
            let prefix = keys::sub_prefix(part, keys::POSTINGS);
            let mut it = snap.iter();
            it.seek(&prefix)?;
            while it.valid() && it.key().starts_with(&prefix) {
                read += it.key().len() + it.value().len();
                if read >= max_bytes {
                    return Ok(read);
                }
                it.next()?;
            }
        }
        Ok(read)
    }

    /// The key-value store underneath (for its own figures).
    pub fn kv(&self) -> &Db {
        &self.inner.kv
    }

    /// Flushes the head, stops the background thread and closes the store.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<()> {
        if self.inner.stopping.swap(true, Relaxed) {
            return Ok(());
        }
        self.inner.notify();
        if let Some(h) = guard(&self.worker).take() {
            let _ = h.join();
        }
        let flushed = if guard(&self.inner.failed).is_none() {
            self.inner.flush()
        } else {
            Ok(())
        };
        let synced = guard(&self.inner.wal).sync();
        self.inner.closed.store(true, Relaxed);
        flushed.and(synced)
    }

    /// Stops without flushing or syncing, as a killed process would (for recovery tests):
    /// the next open must recover everything from the WAL.
    pub fn abandon(self) {
        self.inner.stopping.store(true, Relaxed);
        self.inner.closed.store(true, Relaxed);
        self.inner.notify();
        if let Some(h) = guard(&self.worker).take() {
            let _ = h.join();
        }
        let inner = Arc::clone(&self.inner);
        drop(self); // `stopping` is set: Drop does nothing.
        if let Ok(inner) = Arc::try_unwrap(inner) {
            inner.kv.abandon();
        }
    }
}

impl Drop for Tsdb {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "closing the tsdb failed");
        }
    }
}

/// Collects samples and commits them as one batch (one WAL record).
///
/// Series are looked up in the head as samples are added (by label hash, then by comparing
/// labels, never by hash alone); a series added by labels it does not yet have is created
/// at commit. Samples are kept in one buffer, in runs per series.
pub struct Appender<'a> {
    db: &'a Tsdb,
    pending: Vec<Pending>,
    samples: Vec<(i64, f64)>,
}

impl Appender<'_> {
    /// Finds the series of `labels`: `Ok(None)` if it is the last run's, `Ok(Some)` if
    /// it is in the head, `Err(hash)` if it is not (yet).
    fn resolve(&self, labels: &Labels) -> std::result::Result<Option<SeriesKey>, u64> {
        let pairs = labels
            .iter()
            .map(|l| (l.name.as_bytes(), l.value.as_bytes()));
        labels::with_encoded(pairs, |key, h| {
            // Consecutive samples of one series extend its run: compared by hash first,
            // then exactly.
            let same = self.pending.last().is_some_and(|p| match &p.key {
                SeriesKey::Found(s) => s.hash == h && s.key() == key,
                SeriesKey::New(l, lh) => *lh == h && l == labels,
            });
            if same {
                return Ok(None);
            }
            match self.db.inner.head.find_encoded(key, h) {
                Some(s) => Ok(Some(SeriesKey::Found(s))),
                None => Err(h),
            }
        })
    }

    fn push_run(&mut self, key: SeriesKey) {
        self.pending.push(Pending {
            key,
            end: self.samples.len(),
        });
    }

    fn push_sample(&mut self, t: i64, v: f64) {
        self.samples.push((t, v));
        if let Some(p) = self.pending.last_mut() {
            p.end = self.samples.len();
        }
    }

    /// Adds one sample.
    pub fn add(&mut self, labels: Labels, t: i64, v: f64) {
        match self.resolve(&labels) {
            Ok(None) => {}
            Ok(Some(key)) => self.push_run(key),
            Err(h) => self.push_run(SeriesKey::New(labels, h)),
        }
        self.push_sample(t, v);
    }

    /// Adds one sample of the series with these labels, borrowed: a series already in the
    /// head is found without copying them.
    pub fn append(&mut self, labels: &Labels, t: i64, v: f64) {
        match self.resolve(labels) {
            Ok(None) => {}
            Ok(Some(key)) => self.push_run(key),
            Err(h) => self.push_run(SeriesKey::New(labels.clone(), h)),
        }
        self.push_sample(t, v);
    }

    /// Adds samples of one series.
    pub fn add_series(&mut self, labels: Labels, samples: &[(i64, f64)]) {
        let key = match self.resolve(&labels) {
            Ok(key) => key,
            Err(h) => Some(SeriesKey::New(labels, h)),
        };
        self.samples.extend_from_slice(samples);
        match key {
            Some(key) => self.push_run(key),
            // The last run is this series': it extends to the new end.
            None => {
                if let Some(p) = self.pending.last_mut() {
                    p.end = self.samples.len();
                }
            }
        }
    }

    /// Adds samples of the series with these `(name, value)` pairs, borrowed (say, straight
    /// from a decoded request). Pairs that are exactly a head series' labels, in name order
    /// as Prometheus sends them, find it by hash and comparison, with no label set built;
    /// other pairs are validated, sorted and checked against `limits` as
    /// [`Labels::from_pairs_with_limits`] does.
    pub fn add_series_pairs(
        &mut self,
        pairs: &[(&str, &str)],
        samples: impl IntoIterator<Item = (i64, f64)>,
        limits: &LabelLimits,
    ) -> std::result::Result<(), LabelError> {
        let within_limits = pairs.len() <= limits.max_labels
            && pairs
                .iter()
                .all(|(n, v)| n.len() <= limits.max_name_len && v.len() <= limits.max_value_len);
        // Pairs that encode to a head series' key are that series' labels (names valid,
        // sorted and unique, values non-empty), whatever their hash.
        let found = if within_limits {
            let bytes = pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
            labels::with_encoded(bytes, |key, h| self.db.inner.head.find_encoded(key, h))
        } else {
            None
        };
        let key = match found {
            Some(s) => SeriesKey::Found(s),
            None => {
                let labels = Labels::from_pairs_with_limits(pairs.iter().copied(), limits)?;
                let h = labels.stable_hash();
                SeriesKey::New(labels, h)
            }
        };
        self.samples.extend(samples);
        self.push_run(key);
        Ok(())
    }

    /// Adds samples of the head series whose labels are exactly these `(name, value)` byte
    /// pairs, in name order, and returns `true`; returns `false`, adding nothing, if no
    /// head series has them. The bytes need not be checked first (say, as UTF-8): a head
    /// series' labels were checked when it was created, and equal bytes are equally valid.
    ///
    /// `wire`, if not empty, are the bytes the pairs were decoded from (a remote-write
    /// series' label fields): a series found is remembered by their hash, and found again
    /// next time by that hash and a comparison of the pairs with its labels, without
    /// encoding and hashing the pairs. Any bytes are safe (the comparison decides);
    /// bytes that decode to the pairs make the shortcut hit.
    pub fn add_known_series(
        &mut self,
        pairs: &[(&[u8], &[u8])],
        wire: &[u8],
        samples: impl IntoIterator<Item = (i64, f64)>,
        limits: &LabelLimits,
    ) -> bool {
        // Series created before the limits were lowered are not found: the caller's
        // general path applies the limits to them.
        let within_limits = pairs.len() <= limits.max_labels
            && pairs
                .iter()
                .all(|(n, v)| n.len() <= limits.max_name_len && v.len() <= limits.max_value_len);
        if !within_limits {
            return false;
        }
        let head = &self.db.inner.head;
        let wire_hash = (!wire.is_empty()).then(|| xxhash_rust::xxh3::xxh3_64(wire));
        if let Some(s) = wire_hash.and_then(|h| head.find_wire(h, pairs)) {
            self.samples.extend(samples);
            self.push_run(SeriesKey::Found(s));
            return true;
        }
        let found = labels::with_encoded(pairs.iter().copied(), |key, h| head.find_encoded(key, h));
        if let (Some(s), Some(h)) = (&found, wire_hash) {
            head.remember_wire(h, s);
        }
        match found {
            Some(s) => {
                self.samples.extend(samples);
                self.push_run(SeriesKey::Found(s));
                true
            }
            None => false,
        }
    }

    /// Adds one sample of the series with these label pairs, checked against
    /// [`Options::label_limits`].
    pub fn add_pairs<N: Into<String>, V: Into<String>>(
        &mut self,
        pairs: impl IntoIterator<Item = (N, V)>,
        t: i64,
        v: f64,
    ) -> Result<()> {
        let labels = Labels::from_pairs_with_limits(pairs, &self.db.inner.opts.label_limits)?;
        self.add(labels, t, v);
        Ok(())
    }

    /// Samples added so far.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Logs the batch and applies it to the head. When this returns `Ok` the samples are
    /// as durable as [`Options::wal_fsync`] promises.
    pub fn commit(self) -> Result<CommitStats> {
        self.db.inner.commit(self.pending, &self.samples)
    }
}

impl Inner {
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.closed.load(Relaxed) {
            return Err(Error::Closed);
        }
        if let Some(why) = guard(&self.failed).as_ref() {
            return Err(Error::ReadOnly(why.clone()));
        }
        Ok(())
    }

    fn fail(&self, e: &Error) {
        let mut f = guard(&self.failed);
        if f.is_none() {
            tracing::error!(error = %e, "tsdb is now read-only");
            *f = Some(e.to_string());
        }
    }

    fn notify(&self) {
        *guard(&self.wake.0) = true;
        self.wake.1.notify_all();
    }

    fn commit(&self, pending: Vec<Pending>, samples: &[(i64, f64)]) -> Result<CommitStats> {
        let mut stats = CommitStats::default();
        if pending.is_empty() {
            return Ok(stats);
        }
        // Series were looked up when added, without the commit lock: concurrent commits
        // do that in parallel; only creating series and logging are serialized.
        let mut wal = guard(&self.wal);
        self.check_writable()?;
        let min_valid = self.min_valid_t.load(Relaxed);
        let mut new_series: Vec<Arc<HeadSeries>> = Vec::new();
        let mut targets: Vec<(Arc<HeadSeries>, std::ops::Range<usize>)> =
            Vec::with_capacity(pending.len());
        let mut start = 0;
        for p in pending {
            let range = start..p.end;
            start = p.end;
            let found = match p.key {
                // A series found before the lock may have left the head since (a flush
                // retires idle series under this lock): look again then.
                SeriesKey::Found(s) if !s.is_retired() => Ok(s),
                SeriesKey::Found(s) => match self.head.find(&s.labels, s.hash) {
                    Some(s) => Ok(s),
                    None => Err((s.labels.clone(), s.hash)),
                },
                SeriesKey::New(labels, h) => self.head.find(&labels, h).ok_or((labels, h)),
            };
            let series = match found {
                Ok(s) => s,
                Err(_)
                    if self
                        .opts
                        .max_series
                        .is_some_and(|max| self.head.num_series() >= max) =>
                {
                    stats.series_limited += range.len() as u64;
                    continue;
                }
                Err((labels, h)) => {
                    let r = self.next_ref.fetch_add(1, Relaxed);
                    let s = self.head.insert(r, labels, h);
                    new_series.push(Arc::clone(&s));
                    s
                }
            };
            targets.push((series, range));
        }
        stats.new_series = new_series.len() as u64;
        let sync = self.opts.wal_fsync == FsyncPolicy::Always;
        let appended: usize = targets
            .iter()
            .map(|(_, range)| {
                samples[range.clone()]
                    .iter()
                    .filter(|(t, _)| *t >= min_valid)
                    .count()
            })
            .sum();
        stats.too_old =
            targets.iter().map(|(_, r)| r.len()).sum::<usize>() as u64 - appended as u64;
        let logged = (|| {
            if !new_series.is_empty() {
                let refs: Vec<(SeriesRef, &Labels)> =
                    new_series.iter().map(|s| (s.r, &s.labels)).collect();
                wal.log(&wal::encode_series(&refs), false)?;
            }
            if appended > 0 {
                let mut enc = wal::SamplesEncoder::new(wal.take_buffer(), appended);
                for (series, range) in &targets {
                    for &(t, v) in &samples[range.clone()] {
                        if t >= min_valid {
                            enc.push(series.r, t, v);
                        }
                    }
                }
                let buf = enc.finish();
                let r = wal.log(&buf, sync);
                wal.give_buffer(buf);
                r?;
            } else if sync {
                wal.sync()?;
            }
            Ok(())
        })();
        if let Err(e) = logged {
            // A full disk stops only this commit (the WAL resumes when space returns);
            // anything else makes durability unknowable: read-only until reopened.
            if !wal.is_recoverable() {
                self.fail(&e);
            }
            // The series record may not have reached the log: a later commit must log
            // these series again, so they leave the head (they hold no samples yet).
            self.head.remove(&new_series);
            return Err(e);
        }
        let (mut max_t, mut min_t) = (i64::MIN, i64::MAX);
        for (series, range) in &targets {
            let mut s = head::lock(series);
            for &(t, v) in &samples[range.clone()] {
                if t < min_valid {
                    continue;
                }
                if s.append(t, v, self.part_ms, self.opts.max_chunk_samples) == Appended::OutOfOrder
                {
                    stats.out_of_order += 1;
                }
                max_t = max_t.max(t);
                min_t = min_t.min(t);
            }
        }
        drop(wal);
        // One load per batch: a late sample (at or before the watched boundary) changes
        // results a cache may hold. Checked after the samples are visible.
        if min_t <= self.watch_t.load(SeqCst) {
            self.data_gen.fetch_add(1, SeqCst);
        }
        stats.appended = appended as u64;
        self.max_t.fetch_max(max_t, Relaxed);
        self.head_min_t.fetch_min(min_t, Relaxed);
        self.counters.appended.fetch_add(stats.appended, Relaxed);
        self.counters.ooo.fetch_add(stats.out_of_order, Relaxed);
        self.counters.too_old.fetch_add(stats.too_old, Relaxed);
        let held = self
            .counters
            .head_samples
            .fetch_add(stats.appended, Relaxed)
            + stats.appended;
        if self.opts.background && self.flush_due(held) {
            self.notify();
        }
        Ok(stats)
    }

    fn flush_due(&self, held: u64) -> bool {
        let span = self
            .max_t
            .load(Relaxed)
            .saturating_sub(self.head_min_t.load(Relaxed));
        held >= self.opts.flush_max_samples || (held > 0 && span >= self.opts.flush_span_ms)
    }

    fn background(self: Arc<Self>) {
        let tick = match self.opts.wal_fsync {
            FsyncPolicy::IntervalMs(ms) => Duration::from_millis(ms.max(1)),
            _ => Duration::from_secs(1),
        };
        let mut last_sync = Instant::now();
        loop {
            {
                let woken = guard(&self.wake.0);
                let (mut woken, _) = self
                    .wake
                    .1
                    .wait_timeout_while(woken, tick, |w| !*w)
                    .unwrap_or_else(PoisonError::into_inner);
                *woken = false;
            }
            if self.stopping.load(Relaxed) {
                return;
            }
            if guard(&self.failed).is_some() {
                continue;
            }
            if last_sync.elapsed() >= tick {
                last_sync = Instant::now();
                if let Err(e) = guard(&self.wal).sync() {
                    self.fail(&e);
                    continue;
                }
            }
            if self.flush_due(self.counters.head_samples.load(Relaxed)) {
                if let Err(e) = self.flush() {
                    tracing::error!(error = %e, "background flush failed");
                    continue;
                }
                // Partitions before the one of the oldest unpersisted sample and before
                // the newest one no longer receive in-order data.
                let newest = self.max_t.load(Relaxed).div_euclid(self.part_ms);
                let unpersisted = self.head_min_t.load(Relaxed).div_euclid(self.part_ms);
                if let Err(e) = self.compact_partitions(newest.min(unpersisted)) {
                    tracing::error!(error = %e, "background compaction failed");
                }
            }
        }
    }

    /// Persists everything the head holds (see the module docs).
    pub(crate) fn flush(&self) -> Result<()> {
        let _one = guard(&self.flush_lock);
        let seq = self.next_seq.fetch_add(1, Relaxed);
        // 1. Under the commit lock: cut chunks, retire idle series, rotate the WAL.
        let mut work: Vec<(Arc<HeadSeries>, usize)> = Vec::new();
        let covered_segment;
        {
            let mut wal = guard(&self.wal);
            self.check_writable()?;
            let mut gone = Vec::new();
            let mut live: Vec<Arc<HeadSeries>> = Vec::new();
            for series in self.head.all() {
                let mut s = head::lock(&series);
                s.close_open();
                s.close_ooo(self.part_ms);
                if !s.dirty && s.closed.is_empty() {
                    s.idle_flushes += 1;
                    if s.idle_flushes >= 2 {
                        drop(s);
                        gone.push(series);
                        continue;
                    }
                } else {
                    s.idle_flushes = 0;
                }
                s.dirty = false;
                live.push(Arc::clone(&series));
                if !s.closed.is_empty() {
                    let n = s.closed.len();
                    drop(s);
                    work.push((series, n));
                }
            }
            self.head.remove(&gone);
            let rotated = wal.rotate().and_then(|closed| {
                for part in live.chunks(10_000) {
                    let refs: Vec<(SeriesRef, &Labels)> =
                        part.iter().map(|s| (s.r, &s.labels)).collect();
                    wal.log(&wal::encode_series(&refs), false)?;
                }
                wal.sync()?;
                Ok(closed)
            });
            covered_segment = match rotated {
                Ok(c) => c,
                Err(e) => {
                    self.fail(&e);
                    return Err(e);
                }
            };
            self.counters.head_samples.store(0, Relaxed);
            self.head_min_t.store(i64::MAX, Relaxed);
        }

        // 2. Without blocking commits: write the cut chunks to the key-value store.
        let res = self.persist(&work, seq, covered_segment);
        if let Err(e) = res {
            self.fail(&e);
            return Err(e);
        }
        // 3. Drop what is now persisted, then the WAL segments that held it.
        for (series, n) in &work {
            head::lock(series).closed.drain(..*n);
        }
        guard(&self.wal).remove_upto(covered_segment)?;
        self.counters.flushes.fetch_add(1, Relaxed);
        self.apply_retention()
    }

    fn persist(
        &self,
        work: &[(Arc<HeadSeries>, usize)],
        seq: u64,
        covered_segment: u64,
    ) -> Result<()> {
        #[derive(Default)]
        struct PartStats {
            samples: i64,
            chunks: i64,
            bytes: i64,
            series: i64,
        }
        let mut batch = WriteBatch::new();
        let mut postings: BTreeMap<i64, Lists> = BTreeMap::new();
        let mut pstats: BTreeMap<i64, PartStats> = BTreeMap::new();
        let mut value = Vec::new();
        // Partitions this flush creates: all their chunks get bounds, so they are marked.
        let known_parts = self
            .partitions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut bounds: Vec<(i64, Vec<(i64, i64)>)> = Vec::new();
        // The bounds written, per partition, for the in-memory copies.
        let mut added = crate::bounds::Added::new();
        for (series, n) in work {
            let (r, labels) = (series.r, &series.labels);
            let (chunks, known) = {
                let s = head::lock(series);
                (s.closed[..*n].to_vec(), s.persisted_parts.clone())
            };
            let mut new_parts = Vec::new();
            bounds.clear();
            for c in &chunks {
                match bounds.iter_mut().find(|(p, _)| *p == c.part) {
                    Some((_, b)) => b.push((c.mint, c.maxt)),
                    None => bounds.push((c.part, vec![(c.mint, c.maxt)])),
                }
                let prio = seq * 2 + u64::from(c.ooo);
                value.clear();
                keys::put_i64(&mut value, c.maxt);
                value.extend_from_slice(c.chunk.bytes());
                batch.put(keys::chunk_key(c.part, r, c.mint, prio), &value);
                let st = pstats.entry(c.part).or_default();
                st.samples += c.chunk.num_samples() as i64;
                st.chunks += 1;
                st.bytes += c.chunk.bytes().len() as i64;
                if !known.contains(&c.part) && !new_parts.contains(&c.part) {
                    new_parts.push(c.part);
                    st.series += 1;
                    batch.put(keys::series_key(c.part, r), labels.encode());
                    add_to_lists(postings.entry(c.part).or_default(), r, labels);
                }
            }
            for (part, b) in &bounds {
                batch.put(keys::bounds_key(*part, r, seq), keys::encode_bounds(b));
                added.entry(*part).or_default().push((r, b.clone()));
            }
            if !new_parts.is_empty() {
                head::lock(series).persisted_parts.extend(new_parts);
            }
            if batch.encoded_size() > 8 << 20 {
                self.kv
                    .write(std::mem::take(&mut batch), WriteOptions { sync: false })?;
            }
        }
        for (part, lists) in &postings {
            for ((name, val), refs) in lists {
                let mut refs = refs.clone();
                refs.sort_unstable();
                refs.dedup();
                batch.put(
                    keys::postings_key(*part, name, val, seq),
                    keys::encode_postings(&refs),
                );
            }
        }
        for (part, st) in &pstats {
            if !known_parts.contains(part) {
                batch.put(keys::sub_prefix(*part, keys::BOUNDED), []);
            }
            batch.put(
                keys::stats_key(*part, seq),
                keys::encode_stats(&[st.samples, st.chunks, st.bytes, st.series]),
            );
        }
        batch.put(keys::META_NEXT_REF, fixed64(self.next_ref.load(Relaxed)));
        batch.put(keys::META_NEXT_SEQ, fixed64(seq + 1));
        batch.put(keys::META_WAL_PERSISTED, fixed64(covered_segment));
        batch.put(
            keys::META_MAX_TIME,
            fixed64(self.max_t.load(Relaxed) as u64),
        );
        self.kv.write(batch, WriteOptions { sync: true })?;
        // Before the head drops the chunks (a reader whose snapshot has them and whose
        // bounds do not found them in the head).
        for list in added.values_mut() {
            list.sort_unstable_by_key(|(r, _)| *r);
        }
        self.bounds.add(&added);
        let mut parts = self
            .partitions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        parts.extend(pstats.keys());
        Ok(())
    }

    /// Drops partitions past retention (by time, then by size).
    pub(crate) fn apply_retention(&self) -> Result<()> {
        let max_t = self.max_t.load(Relaxed);
        if max_t == i64::MIN {
            return Ok(());
        }
        let cutoff = max_t.saturating_sub(self.opts.retention_ms);
        let oldest_kept = cutoff.div_euclid(self.part_ms);
        self.min_valid_t
            .store(oldest_kept.saturating_mul(self.part_ms), Relaxed);
        let mut drop_parts: Vec<i64> = {
            let parts = self
                .partitions
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            parts.range(..oldest_kept).copied().collect()
        };
        if let Some(max) = self.opts.max_bytes {
            let parts: Vec<i64> = self
                .partitions
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .copied()
                .collect();
            let mut size = self.kv.stats().table_bytes();
            let mut i = drop_parts.len();
            // Keep at least the newest partition.
            while size > max && i + 1 < parts.len() {
                let p = parts[i];
                drop_parts.push(p);
                size = size.saturating_sub(self.partition_bytes(p));
                i += 1;
            }
            if let Some(&newest_dropped) = drop_parts.last() {
                let bound = (newest_dropped + 1).saturating_mul(self.part_ms);
                self.min_valid_t.fetch_max(bound, Relaxed);
            }
        }
        for p in drop_parts {
            let start = keys::partition_prefix(p);
            let end = keys::prefix_end(&start);
            self.kv.delete_range(&start, &end)?;
            self.kv.compact_range(start.as_slice()..end.as_slice())?;
            self.partitions
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&p);
            self.bounds.invalidate(p);
            tracing::info!(partition = p, "dropped an expired partition");
            self.data_gen.fetch_add(1, SeqCst);
        }
        Ok(())
    }

    /// Approximate bytes of a partition (from its stats fragments).
    fn partition_bytes(&self, part: i64) -> u64 {
        self.partition_stats(&self.kv.snapshot(), part)
            .map(|s| s[2].max(0) as u64)
            .unwrap_or(0)
    }

    /// Sum of a partition's stats fragments: samples, chunks, chunk bytes, series.
    pub(crate) fn partition_stats(
        &self,
        snap: &strata_kv::Snapshot,
        part: i64,
    ) -> Result<[i64; 4]> {
        let mut sum = [0i64; 4];
        for item in snap.prefix(keys::sub_prefix(part, keys::STATS)) {
            let (k, v) = item?;
            let vals = keys::decode_stats(&v).ok_or_else(|| Error::Corruption {
                location: format!("key {}", show_key(&k)),
                offset: 0,
                reason: "malformed stats fragment".into(),
            })?;
            for (s, v) in sum.iter_mut().zip(vals) {
                *s += v;
            }
        }
        Ok(sum)
    }

    fn delete_series(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<u64> {
        let _one = guard(&self.flush_lock);
        self.check_writable()?;
        // A head series may lose its labels and postings in a partition: let the next
        // flush write them again if it has data there (rewriting them is harmless).
        for r in postings::select(&self.head.postings, matchers) {
            if let Some(s) = self.head.get(r) {
                head::lock(&s).persisted_parts.clear();
            }
        }
        let snap = self.kv.snapshot();
        let mut columns = Columns::new(&snap);
        let parts = self.partitions_overlapping(mint, maxt);
        let mut deleted_total = 0u64;
        for part in parts {
            let seq = self.next_seq.fetch_add(1, Relaxed);
            let idx = PartitionIndex::new(&snap, part);
            let refs = postings::select(&idx, matchers);
            idx.take_error()?;
            let mut batch = WriteBatch::new();
            let mut removed: Lists = BTreeMap::new();
            let (mut d_samples, mut d_chunks, mut d_bytes, mut d_series) = (0i64, 0i64, 0i64, 0i64);
            for r in refs {
                let Some(labels) = idx.labels(r)? else {
                    continue;
                };
                let mut remaining = 0;
                for item in snap.prefix(keys::chunk_series_prefix(part, r)) {
                    let (k, v) = item?;
                    let (_, cmint, prio) = parse_chunk(&k)?;
                    let (cmaxt, chunk) = decode_chunk_value(&k, r, &v, &mut columns)?;
                    if cmaxt < mint || cmint > maxt {
                        remaining += 1;
                        continue;
                    }
                    let samples: Vec<(i64, f64)> = chunk
                        .iter()
                        .collect::<std::result::Result<_, _>>()
                        .map_err(|e| chunk_error(&k, r, e))?;
                    let kept: Vec<(i64, f64)> = samples
                        .iter()
                        .copied()
                        .filter(|(t, _)| *t < mint || *t > maxt)
                        .collect();
                    let gone = (samples.len() - kept.len()) as i64;
                    if gone == 0 {
                        remaining += 1;
                        continue;
                    }
                    deleted_total += gone as u64;
                    d_samples -= gone;
                    d_bytes -= chunk.bytes().len() as i64;
                    batch.delete(&k);
                    if kept.is_empty() {
                        d_chunks -= 1;
                        continue;
                    }
                    let mut app = XorAppender::new();
                    for (t, v) in &kept {
                        app.append(*t, *v).map_err(|e| chunk_error(&k, r, e))?;
                    }
                    let bytes = app.chunk().bytes();
                    d_bytes += bytes.len() as i64;
                    let mut value = Vec::with_capacity(8 + bytes.len());
                    keys::put_i64(&mut value, kept[kept.len() - 1].0);
                    value.extend_from_slice(bytes);
                    batch.put(keys::chunk_key(part, r, kept[0].0, prio), value);
                    remaining += 1;
                }
                if remaining == 0 {
                    d_series -= 1;
                    batch.delete(keys::series_key(part, r));
                    add_to_lists(&mut removed, r, &labels);
                }
            }
            for ((name, val), mut dead) in removed {
                dead.sort_unstable();
                let prefix = keys::postings_prefix(part, &name, &val);
                let current = idx.postings(&name, &val).unwrap_or_default();
                idx.take_error()?;
                for item in snap.prefix(&prefix) {
                    let (k, _) = item?;
                    batch.delete(k);
                }
                let left = postings::subtract(&current, &dead);
                if !left.is_empty() {
                    batch.put(
                        keys::postings_key(part, &name, &val, seq),
                        keys::encode_postings(&left),
                    );
                }
            }
            if d_samples != 0 || d_series != 0 {
                // Chunks changed and their bounds did not: readers check the chunks of
                // this partition until its next compaction writes bounds again.
                batch.delete(keys::sub_prefix(part, keys::BOUNDED));
                batch.put(
                    keys::stats_key(part, seq),
                    keys::encode_stats(&[d_samples, d_chunks, d_bytes, d_series]),
                );
            }
            batch.put(keys::META_NEXT_SEQ, fixed64(seq + 1));
            self.kv.write(batch, WriteOptions { sync: true })?;
            self.bounds.invalidate(part);
        }
        Ok(deleted_total)
    }

    /// Partitions holding data of `[mint, maxt]`, ascending.
    pub(crate) fn partitions_overlapping(&self, mint: i64, maxt: i64) -> Vec<i64> {
        if mint > maxt {
            return Vec::new();
        }
        let lo = mint.div_euclid(self.part_ms);
        let hi = maxt.div_euclid(self.part_ms);
        self.partitions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .range(lo..=hi)
            .copied()
            .collect()
    }

    fn stats(&self) -> Result<TsdbStats> {
        let mut st = TsdbStats::default();
        let mut by_name: HashMap<String, u64> = HashMap::new();
        let mut by_pair: HashMap<(String, String), u64> = HashMap::new();
        let mut min_t = i64::MAX;
        st.head_memory_bytes += self.head.wire_cache_bytes() as u64;
        for series in self.head.all() {
            let s = head::lock(&series);
            st.head_series += 1;
            st.head_samples += s.num_samples() as u64;
            st.head_chunks += (s.closed.len() + usize::from(s.open.is_some())) as u64;
            st.head_memory_bytes += s.memory_bytes() as u64;
            if let Some(c) = s.closed.first() {
                min_t = min_t.min(c.mint);
            }
            if let Some(o) = &s.open {
                min_t = min_t.min(o.mint);
            }
            if let Some((t, _)) = s.ooo.first_key_value() {
                min_t = min_t.min(*t);
            }
            if let Some(name) = s.labels.metric_name() {
                *by_name.entry(name.to_string()).or_default() += 1;
            }
            for l in s.labels {
                *by_pair
                    .entry((l.name.clone(), l.value.clone()))
                    .or_default() += 1;
            }
        }
        let mut values_per_name: HashMap<String, u64> = HashMap::new();
        let mut bytes_per_name: HashMap<String, u64> = HashMap::new();
        for ((n, v), count) in &by_pair {
            *values_per_name.entry(n.clone()).or_default() += 1;
            *bytes_per_name.entry(n.clone()).or_default() += v.len() as u64 * count;
        }
        st.series_count_by_metric_name = top(by_name);
        st.label_value_count_by_label_name = top(values_per_name);
        st.memory_in_bytes_by_label_name = top(bytes_per_name);
        st.series_count_by_label_value_pair = top(by_pair
            .into_iter()
            .map(|((n, v), c)| (format!("{n}={v}"), c)));

        let parts: Vec<i64> = self
            .partitions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect();
        st.partitions = parts.len() as u64;
        let snap = self.kv.snapshot();
        for p in &parts {
            let [samples, chunks, bytes, series] = self.partition_stats(&snap, *p)?;
            st.persisted_samples += samples.max(0) as u64;
            st.persisted_chunks += chunks.max(0) as u64;
            st.persisted_chunk_bytes += bytes.max(0) as u64;
            st.partition_series += series.max(0) as u64;
        }
        if let Some(p) = parts.first() {
            min_t = min_t.min(p.saturating_mul(self.part_ms));
        }
        let max_t = self.max_t.load(Relaxed);
        if max_t != i64::MIN {
            st.max_time = Some(max_t);
            st.min_time = Some(min_t.min(max_t));
        }
        let table_bytes = self.kv.stats().table_bytes();
        st.wal_bytes = guard(&self.wal).disk_bytes();
        st.disk_bytes = table_bytes + st.wal_bytes;
        if st.persisted_samples > 0 {
            st.bytes_per_sample = table_bytes as f64 / st.persisted_samples as f64;
        }
        st.samples_appended = self.counters.appended.load(Relaxed);
        st.out_of_order_samples = self.counters.ooo.load(Relaxed);
        st.too_old_samples = self.counters.too_old.load(Relaxed);
        st.flushes = self.counters.flushes.load(Relaxed);
        Ok(st)
    }
}

/// Postings lists being built: `(name, value)` (and the all-series key) -> refs.
pub(crate) type Lists = BTreeMap<(String, String), Vec<SeriesRef>>;

/// Adds `r` to the lists of each of its label pairs and to the all-series list.
pub(crate) fn add_to_lists(lists: &mut Lists, r: SeriesRef, labels: &Labels) {
    let (an, av) = ALL_POSTINGS_KEY;
    lists
        .entry((an.to_string(), av.to_string()))
        .or_default()
        .push(r);
    for l in labels {
        lists
            .entry((l.name.clone(), l.value.clone()))
            .or_default()
            .push(r);
    }
}

fn top(counts: impl IntoIterator<Item = (String, u64)>) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(10);
    v
}

/// The partitions present in `kv`, found by hopping from one partition prefix to the next.
fn list_partitions(kv: &Db) -> Result<BTreeSet<i64>> {
    let mut out = BTreeSet::new();
    let mut it = kv.iter();
    it.seek(&[keys::PARTITION])?;
    while it.valid() {
        let Some(p) = keys::partition_of_key(it.key()) else {
            break;
        };
        out.insert(p);
        it.seek(&keys::prefix_end(&keys::partition_prefix(p)))?;
    }
    Ok(out)
}

pub(crate) fn chunk_error(key: &[u8], r: SeriesRef, e: crate::chunk::ChunkError) -> Error {
    Error::Chunk {
        key: show_key(key),
        series: r,
        source: e,
    }
}

pub(crate) fn parse_chunk(key: &[u8]) -> Result<(SeriesRef, i64, u64)> {
    keys::parse_chunk_key(key).ok_or_else(|| Error::Corruption {
        location: format!("key {}", show_key(key)),
        offset: 0,
        reason: "malformed chunk key".into(),
    })
}

/// Splits a chunk value into its maxt and chunk, reading the timestamp column of a
/// [`crate::chunk::Encoding::DecimalColumn`] chunk through `columns`.
pub(crate) fn decode_chunk_value(
    key: &[u8],
    r: SeriesRef,
    v: &[u8],
    columns: &mut Columns<'_>,
) -> Result<(i64, Chunk)> {
    let maxt = keys::get_i64(v).ok_or_else(|| Error::Corruption {
        location: format!("key {}", show_key(key)),
        offset: 0,
        reason: "chunk value shorter than its header".into(),
    })?;
    let bytes = &v[8..];
    if bytes.first() != Some(&(crate::chunk::Encoding::DecimalColumn as u8)) {
        let chunk = Chunk::from_bytes(bytes.to_vec()).map_err(|e| chunk_error(key, r, e))?;
        return Ok((maxt, chunk));
    }
    let col = decimal::column_of(bytes).map_err(|e| chunk_error(key, r, e))?;
    let part = keys::partition_of_key(key).ok_or_else(|| Error::Corruption {
        location: format!("key {}", show_key(key)),
        offset: 0,
        reason: "chunk key without a partition".into(),
    })?;
    let ts = columns.get(part, col, key)?;
    let samples = decimal::decode_with_column(bytes, &ts).map_err(|e| chunk_error(key, r, e))?;
    Ok((
        maxt,
        Chunk::Decimal {
            bytes: bytes.to_vec(),
            samples,
        },
    ))
}

/// The timestamp columns of compacted partitions, each read once per reader (many series
/// share one).
pub(crate) struct Columns<'a> {
    snap: &'a strata_kv::Snapshot,
    cache: HashMap<(i64, decimal::ColumnRef), Arc<[i64]>>,
}

impl<'a> Columns<'a> {
    pub(crate) fn new(snap: &'a strata_kv::Snapshot) -> Self {
        Columns {
            snap,
            cache: HashMap::new(),
        }
    }

    pub(crate) fn get(
        &mut self,
        part: i64,
        col: decimal::ColumnRef,
        chunk_key: &[u8],
    ) -> Result<Arc<[i64]>> {
        if let Some(ts) = self.cache.get(&(part, col)) {
            return Ok(ts.clone());
        }
        let key = keys::column_key(part, col);
        let bad = |reason: String| Error::Corruption {
            location: format!("key {}", show_key(&key)),
            offset: 0,
            reason,
        };
        let v = self.snap.get(&key)?.ok_or_else(|| {
            bad(format!(
                "timestamp column of chunk {} is missing",
                show_key(chunk_key)
            ))
        })?;
        let ts: Arc<[i64]> = decimal::decode_column(&v)
            .map_err(|e| bad(e.to_string()))?
            .into();
        self.cache.insert((part, col), ts.clone());
        Ok(ts)
    }
}
