//! `strata bench kv ...`: a benchmark of the key-value engines compatible with LevelDB's and
//! RocksDB's `db_bench`: the same flag names (`--num`, `--value_size`, `--benchmarks=...`),
//! the same key and value generation, the same benchmark semantics and the same report line,
//! so that figures can be compared side by side.
//!
//! `--engine lsm` (the default) measures the LSM tree ([`Db`]); `--engine bitcask` the
//! hash-indexed log ([`Bitcask`]), on which `readseq` is a full pass in unspecified order
//! and the benchmarks that need key order (`readreverse`, `seekrandom`) are skipped.

use anyhow::{bail, Context, Result};
use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Subcommand, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};
use strata_kv::bitcask::format::{self as bitcask_format, BitcaskFile};
use strata_kv::bitcask::{Bitcask, BitcaskOptions};
use strata_kv::filename::parse_file_name;
use strata_kv::{CompressionType, Db, Options, WriteBatch, WriteOptions};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Benchmark the key-value engine, db_bench style (flags spelled as in db_bench).
    Kv(KvBenchArgs),
    /// Benchmark the time-series store: ingest, bytes per sample, memory per series.
    Tsdb(crate::bench_tsdb::TsdbBenchArgs),
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.command {
        BenchCommand::Kv(a) => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            run_kv(&a, &mut out).map(|_| ())
        }
        BenchCommand::Tsdb(a) => crate::bench_tsdb::run_tsdb(&a, &mut std::io::stdout().lock()),
    }
}

/// The storage engine being measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// The log-structured merge tree of `strata-kv`.
    Lsm,
    /// The hash-indexed log of `strata-kv` (Bitcask): no key order.
    Bitcask,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Lsm => "lsm",
            Engine::Bitcask => "bitcask",
        }
    }
}

/// The default `--benchmarks`, in db_bench's order.
pub const DEFAULT_BENCHMARKS: &str =
    "fillseq,fillsync,fillrandom,overwrite,readrandom,readseq,readreverse,seekrandom,deleterandom";

#[derive(Debug, Clone, Args)]
pub struct KvBenchArgs {
    /// Comma-separated benchmarks, run in order: fillseq, fillrandom, overwrite, readrandom,
    /// readseq, readreverse, seekrandom, deleterandom, fillsync.
    #[arg(long, default_value = DEFAULT_BENCHMARKS)]
    pub benchmarks: String,
    /// Number of key/value pairs to place in the database.
    #[arg(long, default_value_t = 1_000_000)]
    pub num: u64,
    /// Number of read operations (default: --num).
    #[arg(long)]
    pub reads: Option<u64>,
    /// Size of each key in bytes (the key number in decimal, zero-padded).
    #[arg(long = "key_size", default_value_t = 16)]
    pub key_size: usize,
    /// Size of each value in bytes.
    #[arg(long = "value_size", default_value_t = 100)]
    pub value_size: usize,
    /// Entries per write batch.
    #[arg(long = "batch_size", default_value_t = 1)]
    pub batch_size: u64,
    /// Values compress to about this fraction of their size.
    #[arg(long = "compression_ratio", default_value_t = 0.5)]
    pub compression_ratio: f64,
    /// Compression of table blocks: none, lz4 or zstd.
    #[arg(long = "compression_type", default_value = "lz4")]
    pub compression_type: CompressionType,
    /// Bloom filter bits per key (0: no filter).
    #[arg(long = "bloom_bits", default_value_t = 10)]
    pub bloom_bits: u32,
    /// Block cache bytes (-1: the engine's default, 32 MiB).
    #[arg(long = "cache_size", default_value_t = -1, allow_negative_numbers = true)]
    pub cache_size: i64,
    /// Memtable bytes before it is frozen and flushed.
    #[arg(long = "write_buffer_size", default_value_t = 64 << 20)]
    pub write_buffer_size: usize,
    /// fsync on every write (lsm: the WAL; bitcask: the active data file).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false",
          action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub sync: bool,
    /// Threads running each benchmark concurrently (each does the full work, as db_bench).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Use the database already in --db instead of a fresh one (fill benchmarks are skipped).
    #[arg(long = "use_existing_db", num_args = 0..=1, default_missing_value = "true",
          default_value = "false", action = ArgAction::Set,
          value_parser = BoolishValueParser::new())]
    pub use_existing_db: bool,
    /// Database directory (default: a fresh directory under the system temporary directory,
    /// removed at the end).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Print the per-operation latency distribution of each benchmark.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false",
          action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub histogram: bool,
    /// Seed of the random number generators.
    #[arg(long, default_value_t = 301)]
    pub seed: u64,
    /// Storage engine (bitcask: readseq is unordered, readreverse and seekrandom are skipped).
    #[arg(long, value_enum, default_value = "lsm")]
    pub engine: Engine,
    /// lsm: read tables through a memory mapping (`Options::mmap_reads`), as LevelDB does.
    #[arg(long = "mmap_reads", num_args = 0..=1, default_missing_value = "true",
          default_value = "false", action = ArgAction::Set,
          value_parser = BoolishValueParser::new())]
    pub mmap_reads: bool,
    /// lsm: read-triggered compaction (`CompactionOptions::read_triggered`, on by default).
    #[arg(long = "read_compaction", num_args = 0..=1, default_missing_value = "true",
          default_value = "true", action = ArgAction::Set,
          value_parser = BoolishValueParser::new())]
    pub read_compaction: bool,
}

impl Default for KvBenchArgs {
    fn default() -> Self {
        KvBenchArgs {
            benchmarks: DEFAULT_BENCHMARKS.to_string(),
            num: 1_000_000,
            reads: None,
            key_size: 16,
            value_size: 100,
            batch_size: 1,
            compression_ratio: 0.5,
            compression_type: CompressionType::Lz4,
            bloom_bits: 10,
            cache_size: -1,
            write_buffer_size: 64 << 20,
            sync: false,
            threads: 1,
            use_existing_db: false,
            db: None,
            histogram: false,
            seed: 301,
            engine: Engine::Lsm,
            mmap_reads: false,
            read_compaction: true,
        }
    }
}

/// The benchmarks known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Benchmark {
    FillSeq,
    FillRandom,
    Overwrite,
    ReadRandom,
    ReadSeq,
    ReadReverse,
    SeekRandom,
    DeleteRandom,
    FillSync,
}

impl Benchmark {
    const ALL: [Benchmark; 9] = [
        Benchmark::FillSeq,
        Benchmark::FillRandom,
        Benchmark::Overwrite,
        Benchmark::ReadRandom,
        Benchmark::ReadSeq,
        Benchmark::ReadReverse,
        Benchmark::SeekRandom,
        Benchmark::DeleteRandom,
        Benchmark::FillSync,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Benchmark::FillSeq => "fillseq",
            Benchmark::FillRandom => "fillrandom",
            Benchmark::Overwrite => "overwrite",
            Benchmark::ReadRandom => "readrandom",
            Benchmark::ReadSeq => "readseq",
            Benchmark::ReadReverse => "readreverse",
            Benchmark::SeekRandom => "seekrandom",
            Benchmark::DeleteRandom => "deleterandom",
            Benchmark::FillSync => "fillsync",
        }
    }

    /// Needs an engine that keeps keys in order (skipped on Bitcask).
    fn needs_order(self) -> bool {
        matches!(self, Benchmark::ReadReverse | Benchmark::SeekRandom)
    }

    /// Needs a fresh, empty database (db_bench's `fresh_db`).
    fn fresh_db(self) -> bool {
        matches!(
            self,
            Benchmark::FillSeq | Benchmark::FillRandom | Benchmark::FillSync
        )
    }
}

/// Parses a `--benchmarks` list; unknown names are an error.
pub fn parse_benchmarks(list: &str) -> Result<Vec<Benchmark>> {
    let mut v = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match Benchmark::ALL.iter().find(|b| b.name() == name) {
            Some(b) => v.push(*b),
            None => bail!(
                "unknown benchmark {name:?} (known: {})",
                Benchmark::ALL.map(Benchmark::name).join(", ")
            ),
        }
    }
    Ok(v)
}

/// The outcome of one benchmark, all threads merged (the CLI prints it; tests inspect it).
#[derive(Debug, Clone)]
#[cfg_attr(not(test), allow(dead_code))]
pub struct BenchResult {
    pub name: &'static str,
    /// Operations done (entries for writes and scans, lookups for reads and seeks).
    pub ops: u64,
    /// Key and value bytes written or read.
    pub bytes: u64,
    /// Lookups or seeks that found their key (read benchmarks).
    pub found: u64,
    /// Wall time from the first thread's start to the last thread's end.
    pub elapsed: Duration,
    /// Skipped (because of --use_existing_db, or because the engine keeps no key order).
    pub skipped: bool,
}

// ---------------------------------------------------------------------------------------
// Random numbers, keys and values.

/// SplitMix64: tiny, fast and of good statistical quality; enough for picking keys.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Hash the seed so that nearby seeds give unrelated streams.
        let mut r = Rng(seed);
        Rng(r.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (`0` when `n == 0`).
    pub fn uniform(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Writes key number `k` into `buf` in decimal, zero-padded to the buffer's length (db_bench's
/// `%016d` for 16-byte keys). Digits that do not fit are dropped from the left; the caller
/// makes sure keys are unique (`num <= 10^key_size`).
pub fn fill_key(buf: &mut [u8], mut k: u64) {
    for b in buf.iter_mut().rev() {
        *b = b'0' + (k % 10) as u8;
        k /= 10;
    }
}

/// db_bench's `RandomGenerator`: a pool of about 1 MiB made of 100-byte pieces that each
/// compress to about `ratio` of their size (`CompressibleString`: `100 * ratio` random
/// printable bytes repeated); values are consecutive slices of the pool.
pub struct ValuePool {
    data: Vec<u8>,
}

impl ValuePool {
    pub fn new(seed: u64, ratio: f64, value_size: usize) -> ValuePool {
        const PIECE: usize = 100;
        let size = (1 << 20).max(value_size * 2);
        let mut rng = Rng::new(seed);
        let raw_len = ((PIECE as f64 * ratio) as usize).max(1);
        let mut data = Vec::with_capacity(size + PIECE);
        let mut raw = vec![0u8; raw_len];
        while data.len() < size {
            for b in raw.iter_mut() {
                *b = b' ' + rng.uniform(95) as u8;
            }
            data.extend(raw.iter().cycle().take(PIECE));
        }
        ValuePool { data }
    }

    pub fn generator(&self) -> ValueGen<'_> {
        ValueGen { pool: self, pos: 0 }
    }
}

/// A cursor over a [`ValuePool`] (one per thread).
pub struct ValueGen<'a> {
    pool: &'a ValuePool,
    pos: usize,
}

impl ValueGen<'_> {
    pub fn generate(&mut self, len: usize) -> &[u8] {
        if self.pos + len > self.pool.data.len() {
            self.pos = 0;
        }
        self.pos += len;
        &self.pool.data[self.pos - len..self.pos]
    }
}

// ---------------------------------------------------------------------------------------
// Latency histogram.

/// Sub-buckets per power of two: values are kept to within 1/128 (< 0.8%).
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;

/// A log-linear histogram of nanosecond latencies (HdrHistogram's layout, hand-written).
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: f64,
    sum_sq: f64,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; ((64 - SUB_BITS as usize) + 1) << SUB_BITS],
            count: 0,
            sum: 0.0,
            sum_sq: 0.0,
            min: u64::MAX,
            max: 0,
        }
    }
}

impl Histogram {
    fn index(v: u64) -> usize {
        if v < SUB {
            v as usize
        } else {
            let msb = 63 - v.leading_zeros();
            let shift = msb - SUB_BITS;
            let mantissa = ((v >> shift) & (SUB - 1)) as usize;
            ((shift as usize + 1) << SUB_BITS) + mantissa
        }
    }

    /// The smallest value of bucket `i` and the bucket's width.
    fn bucket(i: usize) -> (u64, u64) {
        if (i as u64) < SUB {
            (i as u64, 1)
        } else {
            let shift = (i >> SUB_BITS) as u32 - 1;
            let mantissa = (i as u64) & (SUB - 1);
            ((SUB + mantissa) << shift, 1 << shift)
        }
    }

    pub fn record(&mut self, nanos: u64) {
        self.counts[Self::index(nanos)] += 1;
        self.count += 1;
        let x = nanos as f64;
        self.sum += x;
        self.sum_sq += x * x;
        self.min = self.min.min(nanos);
        self.max = self.max.max(nanos);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    fn std_dev(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let n = self.count as f64;
        ((self.sum_sq / n) - (self.sum / n).powi(2)).max(0.0).sqrt()
    }

    /// The value at percentile `p` (0..=100), in nanoseconds, to within a bucket.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((p / 100.0 * self.count as f64).ceil() as u64).clamp(1, self.count);
        if rank == self.count {
            return self.max as f64;
        }
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, width) = Self::bucket(i);
                let mid = lo as f64 + (width as f64 - 1.0) / 2.0;
                return mid.clamp(self.min as f64, self.max as f64);
            }
        }
        self.max as f64
    }

    /// db_bench / RocksDB style summary, in microseconds.
    pub fn report(&self) -> String {
        let us = |ns: f64| ns / 1000.0;
        let min = if self.count == 0 { 0 } else { self.min };
        format!(
            "Microseconds per op:\n\
             Count: {}  Average: {:.4}  StdDev: {:.2}\n\
             Min: {:.3}  Median: {:.4}  Max: {:.3}\n\
             Percentiles: P50: {:.2} P75: {:.2} P99: {:.2} P99.9: {:.2} P99.99: {:.2}\n",
            self.count,
            us(self.mean()),
            us(self.std_dev()),
            us(min as f64),
            us(self.percentile(50.0)),
            us(self.max as f64),
            us(self.percentile(50.0)),
            us(self.percentile(75.0)),
            us(self.percentile(99.0)),
            us(self.percentile(99.9)),
            us(self.percentile(99.99)),
        )
    }
}

// ---------------------------------------------------------------------------------------
// Per-thread accounting.

struct ThreadStats {
    done: u64,
    bytes: u64,
    found: u64,
    start: Instant,
    finish: Instant,
    hist: Option<Histogram>,
    /// The thread's scheduler figures at start and finish (with `STRATA_BENCH_SCHED`).
    sched: Option<(SchedStat, SchedStat)>,
}

impl ThreadStats {
    fn new(histogram: bool) -> ThreadStats {
        let now = Instant::now();
        ThreadStats {
            done: 0,
            bytes: 0,
            found: 0,
            start: now,
            finish: now,
            hist: histogram.then(Histogram::default),
            sched: None,
        }
    }

    /// Starts timing one operation (only with --histogram).
    #[inline]
    fn op_start(&self) -> Option<Instant> {
        self.hist.as_ref().map(|_| Instant::now())
    }

    #[inline]
    fn op_done(&mut self, t: Option<Instant>, ops: u64) {
        self.done += ops;
        if let (Some(h), Some(t)) = (self.hist.as_mut(), t) {
            h.record(t.elapsed().as_nanos() as u64);
        }
    }

    /// [`ThreadStats::op_done`] for back-to-back operations: the finish of one is the start
    /// of the next, so an operation costs one clock read, as in db_bench (its
    /// `FinishedSingleOp` times from the previous operation's finish). For scan steps of
    /// ~100 ns a second clock read would be a tenth of what is measured.
    #[inline]
    fn op_next(&mut self, t: Option<Instant>) -> Option<Instant> {
        self.done += 1;
        let (Some(h), Some(t)) = (self.hist.as_mut(), t) else {
            return None;
        };
        let now = Instant::now();
        h.record(now.duration_since(t).as_nanos() as u64);
        Some(now)
    }
}

/// The open database of a run: either engine.
enum BenchDb {
    Lsm(Db),
    Bitcask(Bitcask),
}

impl BenchDb {
    #[inline]
    fn write(&self, batch: WriteBatch, opts: WriteOptions) -> strata_kv::Result<()> {
        match self {
            BenchDb::Lsm(db) => db.write(batch, opts),
            BenchDb::Bitcask(db) => db.write(batch, opts),
        }
    }

    #[inline]
    fn get(&self, key: &[u8]) -> strata_kv::Result<Option<Vec<u8>>> {
        match self {
            BenchDb::Lsm(db) => db.get(key),
            BenchDb::Bitcask(db) => db.get(key),
        }
    }

    fn close(self) -> Result<()> {
        match self {
            BenchDb::Lsm(db) => db.close(),
            BenchDb::Bitcask(db) => db.close(),
        }
        .context("closing database")
    }
}

/// What one thread of a benchmark needs.
struct Ctx<'a> {
    db: &'a BenchDb,
    cfg: &'a KvBenchArgs,
    pool: &'a ValuePool,
    /// Operations (entries or lookups) this thread does.
    num: u64,
    reads: u64,
    sync: bool,
    rng: Rng,
}

/// Writes `ctx.num` entries in batches of `--batch_size`, timing each batch; `add` puts
/// entry `i` (its key buffer given) into the batch.
fn write_batches(
    ctx: &mut Ctx<'_>,
    st: &mut ThreadStats,
    mut add: impl FnMut(&mut Ctx<'_>, &mut ThreadStats, &mut WriteBatch, &mut Vec<u8>, u64),
) -> Result<()> {
    let mut key = vec![0u8; ctx.cfg.key_size];
    let per_batch = ctx.cfg.batch_size.max(1);
    let opts = WriteOptions { sync: ctx.sync };
    let mut i = 0;
    while i < ctx.num {
        let n = per_batch.min(ctx.num - i);
        let mut batch = WriteBatch::new();
        for j in 0..n {
            add(ctx, st, &mut batch, &mut key, i + j);
        }
        let t = st.op_start();
        ctx.db.write(batch, opts)?;
        st.op_done(t, n);
        i += n;
    }
    Ok(())
}

fn do_write(ctx: &mut Ctx<'_>, st: &mut ThreadStats, seq: bool) -> Result<()> {
    let mut gen = ctx.pool.generator();
    write_batches(ctx, st, |ctx, st, batch, key, i| {
        let k = if seq { i } else { ctx.rng.uniform(ctx.cfg.num) };
        fill_key(key, k);
        batch.put(&key, gen.generate(ctx.cfg.value_size));
        st.bytes += (ctx.cfg.key_size + ctx.cfg.value_size) as u64;
    })
}

fn do_delete(ctx: &mut Ctx<'_>, st: &mut ThreadStats) -> Result<()> {
    write_batches(ctx, st, |ctx, _, batch, key, _| {
        fill_key(key, ctx.rng.uniform(ctx.cfg.num));
        batch.delete(&key);
    })
}

// Not inlined: profilers can collect just the benchmark loop (`--toggle-collect`).
#[inline(never)]
fn read_random(ctx: &mut Ctx<'_>, st: &mut ThreadStats) -> Result<()> {
    let mut key = vec![0u8; ctx.cfg.key_size];
    for _ in 0..ctx.reads {
        fill_key(&mut key, ctx.rng.uniform(ctx.cfg.num));
        let t = st.op_start();
        let v = ctx.db.get(&key)?;
        st.op_done(t, 1);
        if let Some(v) = v {
            st.found += 1;
            st.bytes += (key.len() + v.len()) as u64;
        }
    }
    Ok(())
}

#[inline(never)]
fn seek_random(db: &Db, ctx: &mut Ctx<'_>, st: &mut ThreadStats) -> Result<()> {
    let mut key = vec![0u8; ctx.cfg.key_size];
    for _ in 0..ctx.reads {
        fill_key(&mut key, ctx.rng.uniform(ctx.cfg.num));
        let t = st.op_start();
        // As LevelDB's db_bench: a new iterator per seek.
        let mut it = db.iter();
        it.seek(&key)?;
        let hit = it.valid() && it.key() == key.as_slice();
        if hit {
            st.bytes += (it.key().len() + it.value().len()) as u64;
        }
        drop(it);
        st.op_done(t, 1);
        st.found += u64::from(hit);
    }
    Ok(())
}

fn read_sequential(db: &Db, ctx: &mut Ctx<'_>, st: &mut ThreadStats, reverse: bool) -> Result<()> {
    let mut it = db.iter();
    let t = st.op_start();
    if reverse {
        it.seek_to_last()?;
    } else {
        it.seek_to_first()?;
    }
    let mut t = t;
    let mut i = 0;
    while i < ctx.reads && it.valid() {
        st.bytes += (it.key().len() + it.value().len()) as u64;
        t = st.op_next(t);
        i += 1;
        if reverse {
            it.prev()?;
        } else {
            it.next()?;
        }
    }
    st.found = i;
    Ok(())
}

/// Bitcask's `readseq`: one pass over every live entry in the keydir's (unspecified)
/// order, values read as the pass goes; the first operation includes taking the snapshot.
fn read_unordered(db: &Bitcask, ctx: &mut Ctx<'_>, st: &mut ThreadStats) -> Result<()> {
    let mut t = st.op_start();
    let mut it = db.iter();
    let mut i = 0;
    while i < ctx.reads {
        let Some(item) = it.next() else {
            break;
        };
        let (k, v) = item?;
        st.bytes += (k.len() + v.len()) as u64;
        t = st.op_next(t);
        i += 1;
    }
    st.found = i;
    Ok(())
}

fn run_thread(bench: Benchmark, mut ctx: Ctx<'_>, st: &mut ThreadStats) -> Result<()> {
    let db = ctx.db;
    match (bench, db) {
        (Benchmark::FillSeq, _) => do_write(&mut ctx, st, true),
        (Benchmark::FillRandom | Benchmark::Overwrite | Benchmark::FillSync, _) => {
            do_write(&mut ctx, st, false)
        }
        (Benchmark::ReadRandom, _) => read_random(&mut ctx, st),
        (Benchmark::SeekRandom, BenchDb::Lsm(db)) => seek_random(db, &mut ctx, st),
        (Benchmark::ReadSeq, BenchDb::Lsm(db)) => read_sequential(db, &mut ctx, st, false),
        (Benchmark::ReadSeq, BenchDb::Bitcask(db)) => read_unordered(db, &mut ctx, st),
        (Benchmark::ReadReverse, BenchDb::Lsm(db)) => read_sequential(db, &mut ctx, st, true),
        (Benchmark::SeekRandom | Benchmark::ReadReverse, BenchDb::Bitcask(_)) => {
            bail!("{} needs an ordered engine", bench.name())
        }
        (Benchmark::DeleteRandom, _) => do_delete(&mut ctx, st),
    }
}

// ---------------------------------------------------------------------------------------
// Scheduler figures (`STRATA_BENCH_SCHED=1`): where a benchmark thread's wall time went
// (on CPU, waiting for one, blocked) and what the background threads did meanwhile.

/// `/proc/thread-self/schedstat`: nanoseconds on CPU and waiting on a run queue.
#[derive(Debug, Clone, Copy, Default)]
struct SchedStat {
    run_ns: u64,
    wait_ns: u64,
}

impl SchedStat {
    fn parse(text: &str) -> SchedStat {
        let mut f = text
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        SchedStat {
            run_ns: f.next().unwrap_or(0),
            wait_ns: f.next().unwrap_or(0),
        }
    }

    fn this_thread() -> SchedStat {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .map(|t| SchedStat::parse(&t))
            .unwrap_or_default()
    }
}

/// CPU time of the engine's background threads (by thread-name prefix) and its
/// compaction counters, at one instant.
struct BackgroundSnapshot {
    at: Instant,
    cpu_ns: Vec<(String, u64)>,
    compaction_micros: u64,
    compaction_bytes_written: u64,
    running: u64,
    read_triggered: u64,
    files_per_level: Vec<usize>,
    pending_mib: f64,
}

impl BackgroundSnapshot {
    fn take(db: &BenchDb) -> BackgroundSnapshot {
        let mut cpu_ns: Vec<(String, u64)> = Vec::new();
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for t in tasks.flatten() {
                let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                let Some(name) = comm.trim().strip_prefix("strata-") else {
                    continue;
                };
                let name = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
                let ns = std::fs::read_to_string(t.path().join("schedstat"))
                    .map(|s| SchedStat::parse(&s).run_ns)
                    .unwrap_or(0);
                match cpu_ns.iter_mut().find(|(n, _)| n == name) {
                    Some(e) => e.1 += ns,
                    None => cpu_ns.push((name.to_string(), ns)),
                }
            }
        }
        let mut snap = BackgroundSnapshot {
            at: Instant::now(),
            cpu_ns,
            compaction_micros: 0,
            compaction_bytes_written: 0,
            running: 0,
            read_triggered: 0,
            files_per_level: Vec::new(),
            pending_mib: 0.0,
        };
        if let BenchDb::Lsm(d) = db {
            let s = d.stats();
            snap.compaction_micros = s.compaction_micros;
            snap.compaction_bytes_written = s.compaction_bytes_written;
            snap.running = s.compactions_running;
            snap.read_triggered = s.read_triggered_compactions;
            snap.files_per_level = s.files_per_level;
            snap.pending_mib = mib(s.pending_compaction_bytes);
        }
        snap
    }
}

fn print_sched(
    stats: &[ThreadStats],
    before: &BackgroundSnapshot,
    after: &BackgroundSnapshot,
    out: &mut dyn Write,
) -> Result<()> {
    let ms = |ns: u64| ns as f64 / 1e6;
    let (mut wall, mut run, mut wait) = (0u64, 0u64, 0u64);
    for s in stats {
        if let Some((a, b)) = s.sched {
            wall += s.finish.duration_since(s.start).as_nanos() as u64;
            run += b.run_ns.saturating_sub(a.run_ns);
            wait += b.wait_ns.saturating_sub(a.wait_ns);
        }
    }
    let mut bg = String::new();
    for (name, ns) in &after.cpu_ns {
        let was = before
            .cpu_ns
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |e| e.1);
        bg.push_str(&format!(" {name} {:.0}", ms(ns.saturating_sub(was))));
    }
    writeln!(
        out,
        "sched        : bench threads wall {:.1} ms, on CPU {:.1}, run-queue wait {:.1}, blocked {:.1}; background CPU ms:{bg}; over {:.0} ms: compactions running {} -> {}, {:.0} ms of compaction finished ({} read-triggered compactions done), {:.1} MiB written; tables per level {:?} -> {:?}, pending {:.0} -> {:.0} MiB",
        ms(wall),
        ms(run),
        ms(wait),
        ms(wall.saturating_sub(run + wait)),
        after.at.duration_since(before.at).as_secs_f64() * 1e3,
        before.running,
        after.running,
        after.compaction_micros.saturating_sub(before.compaction_micros) as f64 / 1e3,
        after.read_triggered.saturating_sub(before.read_triggered),
        mib(after.compaction_bytes_written.saturating_sub(before.compaction_bytes_written)),
        before.files_per_level,
        after.files_per_level,
        before.pending_mib,
        after.pending_mib,
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The driver.

/// True if `name` is a file of the LSM engine.
fn lsm_owns(name: &str) -> bool {
    parse_file_name(name).is_some()
}

/// True if `name` is a file of the Bitcask engine: `NNNNNN.data`, `.hint`, `.merge`, their
/// `.tmp` forms, and `LOCK` (docs/format/bitcask.md). Other `*.tmp` files are not its own.
fn bitcask_owns(name: &str) -> bool {
    match bitcask_format::parse_file_name(name) {
        Some(BitcaskFile::Temp) => name
            .strip_suffix(".tmp")
            .and_then(bitcask_format::parse_file_name)
            .is_some_and(|f| {
                matches!(
                    f,
                    BitcaskFile::Data(_) | BitcaskFile::Hint(_) | BitcaskFile::Merge(_)
                )
            }),
        Some(_) => true,
        None => false,
    }
}

/// True if `dir` holds a Bitcask data file.
fn bitcask_exists(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            matches!(
                e.file_name()
                    .to_str()
                    .and_then(bitcask_format::parse_file_name),
                Some(BitcaskFile::Data(_))
            )
        })
    })
}

/// Removes the engine's files from `dir` (and `dir` if it is then empty), like LevelDB's
/// `DestroyDB`: files the engine does not own are left alone.
fn destroy_db(dir: &Path, engine: Engine) -> Result<()> {
    let owns = match engine {
        Engine::Lsm => lsm_owns,
        Engine::Bitcask => bitcask_owns,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_str().is_some_and(owns) {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    let _ = std::fs::remove_dir(dir); // fails, harmlessly, if other files remain
    Ok(())
}

fn open_db(cfg: &KvBenchArgs, dir: &Path, create: bool) -> Result<BenchDb> {
    if cfg.engine == Engine::Bitcask {
        let opts = BitcaskOptions {
            create_if_missing: create,
            ..BitcaskOptions::default()
        };
        return Bitcask::open(dir, opts)
            .map(BenchDb::Bitcask)
            .with_context(|| format!("opening bitcask store {}", dir.display()));
    }
    let mut opts = Options {
        create_if_missing: create,
        write_buffer_size: cfg.write_buffer_size,
        mmap_reads: cfg.mmap_reads,
        ..Options::default()
    };
    opts.table.compression = cfg.compression_type;
    opts.table.bloom_bits_per_key = cfg.bloom_bits;
    opts.compaction.read_triggered = cfg.read_compaction;
    if let Ok(bytes) = usize::try_from(cfg.cache_size) {
        opts.block_cache_size = bytes;
    }
    Db::open(dir, opts)
        .map(BenchDb::Lsm)
        .with_context(|| format!("opening database {}", dir.display()))
}

/// Sum of the sizes of the files under `dir`.
fn dir_size(dir: &Path) -> (u64, u64) {
    let (mut bytes, mut files) = (0, 0);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => {
                    let (b, f) = dir_size(&e.path());
                    bytes += b;
                    files += f;
                }
                Ok(m) => {
                    bytes += m.len();
                    files += 1;
                }
                Err(_) => {}
            }
        }
    }
    (bytes, files)
}

/// Peak resident set size of this process in bytes (`VmHWM`), where the OS tells it.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Removes a temporary database directory when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn make_temp_dir() -> Result<TempDir> {
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for attempt in 0..100u32 {
        let dir = base.join(format!(
            "strata-bench-{}-{nanos:x}-{attempt}",
            std::process::id()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(TempDir(dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("creating {}", dir.display()));
            }
        }
    }
    bail!(
        "could not create a temporary directory under {}",
        base.display()
    )
}

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

fn print_environment() {
    eprintln!("Strata:     version {}", env!("CARGO_PKG_VERSION"));
    if let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") {
        let field = |name: &str| {
            cpuinfo
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim().to_string())
        };
        let cpus = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        if let Some(model) = field("model name") {
            eprintln!("CPU:        {cpus} * {model}");
        }
        if let Some(cache) = field("cache size") {
            eprintln!("CPUCache:   {cache}");
        }
    }
}

fn print_header(cfg: &KvBenchArgs, out: &mut dyn Write) -> Result<()> {
    let num = cfg.num as f64;
    writeln!(out, "Keys:       {} bytes each", cfg.key_size)?;
    writeln!(
        out,
        "Values:     {} bytes each ({} bytes after compression)",
        cfg.value_size,
        (cfg.value_size as f64 * cfg.compression_ratio + 0.5) as u64
    )?;
    writeln!(out, "Entries:    {}", cfg.num)?;
    writeln!(
        out,
        "RawSize:    {:.1} MB (estimated)",
        (cfg.key_size + cfg.value_size) as f64 * num / 1048576.0
    )?;
    match cfg.engine {
        Engine::Lsm => {
            writeln!(
                out,
                "FileSize:   {:.1} MB (estimated)",
                (cfg.key_size as f64 + cfg.value_size as f64 * cfg.compression_ratio) * num
                    / 1048576.0
            )?;
            let compression = match cfg.compression_type {
                CompressionType::None => "None",
                CompressionType::Lz4 => "LZ4",
                CompressionType::Zstd => "ZSTD",
            };
            writeln!(out, "Compression: {compression}")?;
            writeln!(
                out,
                "Engine:     lsm (write_buffer_size {} bytes, bloom_bits {}, threads {}, batch_size {}{}{}{})",
                cfg.write_buffer_size,
                cfg.bloom_bits,
                cfg.threads,
                cfg.batch_size,
                if cfg.sync { ", sync" } else { "" },
                if cfg.mmap_reads { ", mmap reads" } else { "" },
                if cfg.read_compaction { "" } else { ", no read-triggered compaction" }
            )?;
        }
        Engine::Bitcask => {
            // Values are stored as written: the file size is the raw size.
            writeln!(
                out,
                "FileSize:   {:.1} MB (estimated)",
                (cfg.key_size + cfg.value_size) as f64 * num / 1048576.0
            )?;
            writeln!(out, "Compression: None (bitcask stores values as written)")?;
            writeln!(
                out,
                "Engine:     bitcask (threads {}, batch_size {}{}; --write_buffer_size, \
                 --compression_type, --bloom_bits and --cache_size are ignored)",
                cfg.threads,
                cfg.batch_size,
                if cfg.sync { ", sync" } else { "" }
            )?;
        }
    }
    if cfg!(debug_assertions) {
        writeln!(
            out,
            "WARNING: Optimization is disabled: benchmarks unnecessarily slow"
        )?;
    }
    writeln!(out, "------------------------------------------------")?;
    Ok(())
}

fn print_stats(db: &BenchDb, dir: &Path, out: &mut dyn Write) -> Result<()> {
    match db {
        BenchDb::Lsm(db) => print_lsm_stats(db, out)?,
        BenchDb::Bitcask(db) => {
            writeln!(out, "------------------------------------------------")?;
            writeln!(out, "Engine stats (since the database was last opened):")?;
            let mut table = Vec::new();
            crate::kv::print_bitcask_stats(&mut table, &db.stats())?;
            for line in String::from_utf8_lossy(&table).lines() {
                writeln!(out, "  {line}")?;
            }
        }
    }
    let (bytes, files) = dir_size(dir);
    writeln!(
        out,
        "DB size on disk: {:.1} MiB in {files} files ({})",
        mib(bytes),
        dir.display()
    )?;
    Ok(())
}

fn print_lsm_stats(db: &Db, out: &mut dyn Write) -> Result<()> {
    let s = db.stats();
    writeln!(out, "------------------------------------------------")?;
    writeln!(out, "Engine stats (since the database was last opened):")?;
    let mut table = Vec::new();
    crate::report::print_stats(&mut table, &s)?;
    for line in String::from_utf8_lossy(&table).lines() {
        writeln!(out, "  {line}")?;
    }
    writeln!(
        out,
        "  writes/group             {} writes in {} groups ({:.2} per group), {} WAL syncs (+{} in the background), {} flushes",
        s.writes,
        s.write_groups,
        if s.write_groups == 0 {
            0.0
        } else {
            s.writes as f64 / s.write_groups as f64
        },
        s.wal_syncs,
        s.wal_background_syncs,
        s.flushes
    )?;
    Ok(())
}

fn validate(cfg: &KvBenchArgs) -> Result<Vec<Benchmark>> {
    let benches = parse_benchmarks(&cfg.benchmarks)?;
    if cfg.key_size == 0 {
        bail!("--key_size must be at least 1");
    }
    if cfg.key_size < 20 && cfg.num > 10u64.pow(cfg.key_size as u32) {
        bail!(
            "--key_size={} cannot hold {} distinct decimal keys",
            cfg.key_size,
            cfg.num
        );
    }
    if cfg.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if !(cfg.compression_ratio > 0.0 && cfg.compression_ratio <= 1.0) {
        bail!("--compression_ratio must be in (0, 1]");
    }
    Ok(benches)
}

/// Runs `strata bench kv`, printing the report to `out`; returns one result per benchmark.
pub fn run_kv(cfg: &KvBenchArgs, out: &mut dyn Write) -> Result<Vec<BenchResult>> {
    let benches = validate(cfg)?;
    let (dir, _temp) = match &cfg.db {
        Some(d) => (d.clone(), None),
        None => {
            if cfg.use_existing_db {
                bail!("--use_existing_db needs --db DIR");
            }
            let t = make_temp_dir()?;
            (t.0.clone(), Some(t))
        }
    };
    print_environment();
    print_header(cfg, out)?;
    out.flush()?;

    if cfg.engine == Engine::Bitcask && dir.join("CURRENT").exists() {
        bail!(
            "{} holds an LSM database (CURRENT); use another --db for --engine bitcask",
            dir.display()
        );
    }
    if cfg.use_existing_db {
        let exists = match cfg.engine {
            Engine::Lsm => dir.join("CURRENT").exists(),
            Engine::Bitcask => bitcask_exists(&dir),
        };
        if !exists {
            bail!("no database in {} (--use_existing_db)", dir.display());
        }
    } else {
        destroy_db(&dir, cfg.engine)?;
    }
    let mut db = Some(open_db(cfg, &dir, !cfg.use_existing_db)?);
    let pool = ValuePool::new(cfg.seed, cfg.compression_ratio, cfg.value_size);
    let mut seed_counter = 0u64;
    let mut results = Vec::new();

    for bench in benches {
        let name = bench.name();
        if bench.needs_order() && cfg.engine == Engine::Bitcask {
            writeln!(out, "{name:<12} : skipped (bitcask keeps no key order)")?;
            results.push(BenchResult {
                name,
                ops: 0,
                bytes: 0,
                found: 0,
                elapsed: Duration::ZERO,
                skipped: true,
            });
            continue;
        }
        if bench.fresh_db() {
            if cfg.use_existing_db {
                writeln!(out, "{name:<12} : skipped (--use_existing_db is true)")?;
                results.push(BenchResult {
                    name,
                    ops: 0,
                    bytes: 0,
                    found: 0,
                    elapsed: Duration::ZERO,
                    skipped: true,
                });
                continue;
            }
            if let Some(d) = db.take() {
                d.close()?;
            }
            destroy_db(&dir, cfg.engine)?;
            db = Some(open_db(cfg, &dir, true)?);
        }
        let Some(dbr) = db.as_ref() else {
            bail!("database not open");
        };
        let (num, sync) = match bench {
            Benchmark::FillSync => (cfg.num / 1000, true),
            _ => (cfg.num, cfg.sync),
        };
        let reads = cfg.reads.unwrap_or(cfg.num);
        let sched = std::env::var_os("STRATA_BENCH_SCHED").is_some();

        let barrier = Barrier::new(cfg.threads);
        let bg_before = sched.then(|| BackgroundSnapshot::take(dbr));
        // STRATA_BENCH_BG_COMPACT=1: a thread of this process compacts the whole database
        // over and over while the benchmark runs, to tell the cost of a compaction running
        // next to readers from that of the tables a pending compaction leaves them.
        let bg_compact = std::env::var_os("STRATA_BENCH_BG_COMPACT").is_some();
        let bench_done = std::sync::atomic::AtomicUsize::new(0);
        let outcomes: Vec<Result<ThreadStats>> = std::thread::scope(|s| {
            if let (true, BenchDb::Lsm(d)) = (bg_compact, dbr) {
                let bench_done = &bench_done;
                s.spawn(move || {
                    while bench_done.load(std::sync::atomic::Ordering::Acquire) < cfg.threads {
                        if let Err(e) = d.compact_range::<&[u8]>(..) {
                            eprintln!("background compaction: {e}");
                            break;
                        }
                    }
                });
            }
            let bench_done = &bench_done;
            let handles: Vec<_> = (0..cfg.threads)
                .map(|_| {
                    seed_counter += 1;
                    let ctx = Ctx {
                        db: dbr,
                        cfg,
                        pool: &pool,
                        num,
                        reads,
                        sync,
                        rng: Rng::new(cfg.seed ^ Rng::new(seed_counter).next_u64()),
                    };
                    let barrier = &barrier;
                    // Named, so that profiles can tell the benchmark from the engine's threads.
                    std::thread::Builder::new()
                        .name(format!("bench-{name}"))
                        .spawn_scoped(s, move || {
                            barrier.wait();
                            let before = sched.then(SchedStat::this_thread);
                            let mut st = ThreadStats::new(cfg.histogram);
                            let r = run_thread(bench, ctx, &mut st);
                            st.finish = Instant::now();
                            st.sched = before.zip(sched.then(SchedStat::this_thread));
                            bench_done.fetch_add(1, std::sync::atomic::Ordering::Release);
                            r.map(|()| st)
                        })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h.map(|h| h.join()) {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Err(anyhow::anyhow!("benchmark thread panicked")),
                    Err(e) => Err(anyhow::anyhow!("spawning a benchmark thread: {e}")),
                })
                .collect()
        });
        let stats = outcomes
            .into_iter()
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("benchmark {name}"))?;

        // Merge as db_bench: per-op time is the threads' summed time over all ops; rates use
        // the wall time from the first start to the last finish.
        let start = stats.iter().map(|s| s.start).min();
        let finish = stats.iter().map(|s| s.finish).max();
        let wall = match (start, finish) {
            (Some(a), Some(b)) => b.duration_since(a),
            _ => Duration::ZERO,
        };
        let thread_secs: f64 = stats
            .iter()
            .map(|s| s.finish.duration_since(s.start).as_secs_f64())
            .sum();
        let done: u64 = stats.iter().map(|s| s.done).sum();
        let bytes: u64 = stats.iter().map(|s| s.bytes).sum();
        let found: u64 = stats.iter().map(|s| s.found).sum();
        let mut hist: Option<Histogram> = None;
        for s in &stats {
            if let Some(h) = &s.hist {
                hist.get_or_insert_with(Histogram::default).merge(h);
            }
        }

        let ops = done.max(1);
        let secs = wall.as_secs_f64().max(1e-9);
        let micros_per_op = thread_secs * 1e6 / ops as f64;
        let ops_per_sec = ops as f64 / secs;
        let mut extra = String::new();
        if bytes > 0 {
            extra = format!("{:>6.1} MB/s", bytes as f64 / 1048576.0 / secs);
        }
        let message = match bench {
            Benchmark::ReadRandom | Benchmark::SeekRandom => {
                format!("({found} of {} found)", reads * cfg.threads as u64)
            }
            Benchmark::ReadSeq if cfg.engine == Engine::Bitcask => "(unordered)".to_string(),
            _ => String::new(),
        };
        if !message.is_empty() {
            if !extra.is_empty() {
                extra.push(' ');
            }
            extra.push_str(&message);
        }
        writeln!(
            out,
            "{:<12} : {:>11.3} micros/op {} ops/sec;{}{}",
            name,
            micros_per_op,
            ops_per_sec as u64,
            if extra.is_empty() { "" } else { " " },
            extra
        )?;
        if let Some(h) = &hist {
            writeln!(out, "{}", h.report())?;
        }
        if let Some(b) = bg_before {
            print_sched(&stats, &b, &BackgroundSnapshot::take(dbr), out)?;
        }
        out.flush()?;
        results.push(BenchResult {
            name,
            ops: done,
            bytes,
            found,
            elapsed: wall,
            skipped: false,
        });
    }

    if let Some(d) = db.take() {
        print_stats(&d, &dir, out)?;
        d.close()?;
        let (bytes, files) = dir_size(&dir);
        writeln!(
            out,
            "DB size after close: {:.1} MiB in {files} files",
            mib(bytes)
        )?;
    }
    match peak_rss() {
        Some(b) => writeln!(out, "Peak RSS: {:.1} MiB", mib(b))?,
        None => writeln!(out, "Peak RSS: unknown")?,
    }
    out.flush()?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_zero_padded_decimal() {
        let mut k = [0u8; 16];
        fill_key(&mut k, 42);
        assert_eq!(&k, b"0000000000000042");
        let mut k = [0u8; 4];
        fill_key(&mut k, 9999);
        assert_eq!(&k, b"9999");
        let mut k = [0u8; 20];
        fill_key(&mut k, u64::MAX);
        assert_eq!(&k, b"18446744073709551615");
    }

    #[test]
    fn value_pool_repeats_pieces_per_ratio() {
        let pool = ValuePool::new(7, 0.25, 100);
        assert!(pool.data.len() >= 1 << 20);
        assert!(pool.data.iter().all(|b| (b' '..=b'~').contains(b)));
        // Each 100-byte piece is 25 random bytes repeated.
        for piece in pool.data.chunks_exact(100).take(50) {
            assert!((25..100).all(|i| piece[i] == piece[i - 25]));
            let mut distinct = piece[..25].to_vec();
            distinct.sort_unstable();
            distinct.dedup();
            assert!(distinct.len() > 10, "raw bytes look random");
        }
        let mut g = pool.generator();
        let a = g.generate(100).to_vec();
        let b = g.generate(100).to_vec();
        assert_eq!(a.len(), 100);
        assert_ne!(a, b);
        let big = ValuePool::new(1, 0.5, 3 << 20);
        assert_eq!(big.generator().generate(3 << 20).len(), 3 << 20);
    }

    #[test]
    fn rng_uniform_in_range_and_seeded() {
        let mut a = Rng::new(1);
        let mut b = Rng::new(1);
        let mut c = Rng::new(2);
        let xs: Vec<u64> = (0..1000).map(|_| a.uniform(10)).collect();
        assert!(xs.iter().all(|&x| x < 10));
        assert!((0..10).all(|d| xs.contains(&d)));
        assert_eq!(b.uniform(10), xs[0]);
        assert_ne!(
            (0..8).map(|_| c.next_u64()).collect::<Vec<_>>(),
            (0..8).map(|_| Rng::new(1).next_u64()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn histogram_percentiles() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        assert_eq!(h.count, 10_000);
        let p50 = h.percentile(50.0);
        assert!((p50 / 5_000_000.0 - 1.0).abs() < 0.01, "{p50}");
        let p99 = h.percentile(99.0);
        assert!((p99 / 9_900_000.0 - 1.0).abs() < 0.01, "{p99}");
        assert_eq!(h.percentile(100.0), 10_000_000.0);
        for v in [0u64, 1, 127, 128, 255, 256, 1 << 40, u64::MAX] {
            let (lo, w) = Histogram::bucket(Histogram::index(v));
            assert!(lo <= v && v - lo < w, "{v}");
        }
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: KvBenchArgs,
    }

    #[test]
    fn unknown_benchmark_and_engine_are_errors() {
        use clap::Parser;
        assert!(parse_benchmarks("fillseq,nope").is_err());
        assert_eq!(
            parse_benchmarks("fillseq,readrandom").unwrap(),
            vec![Benchmark::FillSeq, Benchmark::ReadRandom]
        );
        assert!(Cli::try_parse_from(["t", "--engine", "btree"]).is_err());
        assert_eq!(
            Cli::try_parse_from(["t", "--engine", "bitcask"])
                .unwrap()
                .args
                .engine,
            Engine::Bitcask
        );
        assert_eq!(Cli::try_parse_from(["t"]).unwrap().args.engine, Engine::Lsm);
    }

    fn run_small(benchmarks: &str, threads: usize, dir: &Path) -> (Vec<BenchResult>, String) {
        run_small_on(Engine::Lsm, benchmarks, threads, dir)
    }

    fn run_small_on(
        engine: Engine,
        benchmarks: &str,
        threads: usize,
        dir: &Path,
    ) -> (Vec<BenchResult>, String) {
        let cfg = KvBenchArgs {
            benchmarks: benchmarks.to_string(),
            num: 2000,
            threads,
            histogram: true,
            db: Some(dir.to_path_buf()),
            write_buffer_size: 64 << 10, // a few flushes
            engine,
            ..KvBenchArgs::default()
        };
        let mut out = Vec::new();
        let results = run_kv(&cfg, &mut out).unwrap();
        (results, String::from_utf8(out).unwrap())
    }

    #[test]
    fn all_benchmarks_run() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let all = "fillseq,readrandom,readseq,readreverse,seekrandom,overwrite,deleterandom,\
                   fillrandom,fillsync";
        let (r, out) = run_small(all, 1, &dir);
        assert_eq!(r.len(), 9);
        let by = |n: &str| r.iter().find(|x| x.name == n).unwrap().clone();
        assert_eq!(by("fillseq").ops, 2000);
        assert_eq!(by("fillseq").bytes, 2000 * (16 + 100));
        assert!(by("fillseq").elapsed > Duration::ZERO);
        assert_eq!(by("deleterandom").bytes, 0);
        assert_eq!(by("readrandom").found, 2000, "all keys found after fillseq");
        assert_eq!(by("readseq").ops, 2000);
        assert_eq!(by("readreverse").ops, 2000);
        assert_eq!(by("seekrandom").found, 2000);
        assert_eq!(by("deleterandom").ops, 2000);
        assert_eq!(by("fillsync").ops, 2);
        assert!(out.contains("readrandom   : "), "{out}");
        assert!(out.contains("(2000 of 2000 found)"), "{out}");
        assert!(out.contains("P99.9:"), "{out}");
        assert!(out.contains("write amplification"), "{out}");
        assert!(out.contains("Peak RSS"), "{out}");

        // Reuse the database: fills are skipped, reads see fillsync's 2 entries.
        let cfg = KvBenchArgs {
            benchmarks: "fillseq,readseq".into(),
            num: 2000,
            use_existing_db: true,
            db: Some(dir.clone()),
            ..KvBenchArgs::default()
        };
        let mut out = Vec::new();
        let r = run_kv(&cfg, &mut out).unwrap();
        assert!(r[0].skipped);
        assert_eq!(r[1].ops, 2);
    }

    #[test]
    fn all_benchmarks_run_on_bitcask() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let all = "fillseq,readrandom,readseq,readreverse,seekrandom,overwrite,deleterandom,\
                   fillrandom,fillsync";
        let (r, out) = run_small_on(Engine::Bitcask, all, 1, &dir);
        assert_eq!(r.len(), 9);
        let by = |n: &str| r.iter().find(|x| x.name == n).unwrap().clone();
        assert_eq!(by("fillseq").ops, 2000);
        assert_eq!(by("fillseq").bytes, 2000 * (16 + 100));
        assert!(!by("fillseq").skipped);
        assert_eq!(by("readrandom").ops, 2000);
        assert_eq!(by("readrandom").found, 2000, "all keys found after fillseq");
        assert_eq!(by("readseq").ops, 2000, "a full pass over every entry");
        assert_eq!(by("readseq").bytes, 2000 * (16 + 100));
        for name in ["readreverse", "seekrandom"] {
            assert!(by(name).skipped, "{name}");
            assert_eq!(by(name).ops, 0, "{name}");
            assert!(
                out.contains(&format!(
                    "{name:<12} : skipped (bitcask keeps no key order)"
                )),
                "{out}"
            );
        }
        assert_eq!(by("overwrite").ops, 2000);
        assert_eq!(by("deleterandom").ops, 2000);
        assert_eq!(by("deleterandom").bytes, 0);
        assert_eq!(by("fillrandom").ops, 2000);
        assert_eq!(by("fillsync").ops, 2);
        assert!(out.contains("Engine:     bitcask ("), "{out}");
        assert!(out.contains("--write_buffer_size"), "{out}");
        assert!(out.contains("(2000 of 2000 found)"), "{out}");
        assert!(out.contains("(unordered)"), "{out}");
        assert!(out.contains("P99.9:"), "{out}");
        assert!(out.contains("keydir"), "{out}");
        assert!(out.contains("bytes per key"), "{out}");
        assert!(out.contains("DB size on disk"), "{out}");
        assert!(out.contains("Peak RSS"), "{out}");
        assert!(!out.contains("write amplification"), "{out}");

        // Reuse the store: fills are skipped, a pass sees fillsync's 2 entries.
        let cfg = KvBenchArgs {
            benchmarks: "fillseq,readseq".into(),
            num: 2000,
            use_existing_db: true,
            db: Some(dir.clone()),
            engine: Engine::Bitcask,
            ..KvBenchArgs::default()
        };
        let mut out = Vec::new();
        let r = run_kv(&cfg, &mut out).unwrap();
        assert!(r[0].skipped);
        assert_eq!(r[1].ops, 2);

        // An LSM database is not reused (or destroyed) as a Bitcask store, and vice versa
        // the store is no LSM database.
        let lsm = tmp.path().join("lsm");
        run_small("fillseq", 1, &lsm);
        let cfg = KvBenchArgs {
            benchmarks: "fillseq".into(),
            num: 10,
            db: Some(lsm.clone()),
            engine: Engine::Bitcask,
            ..KvBenchArgs::default()
        };
        let err = run_kv(&cfg, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("holds an LSM database"), "{err}");
        assert!(lsm.join("CURRENT").exists());
        let cfg = KvBenchArgs {
            benchmarks: "readseq".into(),
            num: 10,
            use_existing_db: true,
            db: Some(dir.clone()),
            engine: Engine::Lsm,
            ..KvBenchArgs::default()
        };
        let err = run_kv(&cfg, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("no database"), "{err}");
    }

    #[test]
    fn destroy_removes_only_engine_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let bitcask = [
            "000001.data",
            "000002.data",
            "000002.hint",
            "000003.merge",
            "000004.data.tmp",
            "000004.hint.tmp",
            "LOCK",
        ];
        let foreign = ["notes.txt", "x.tmp", "1.data.bak", "CURRENT", "000005.log"];
        for name in bitcask.iter().chain(&foreign) {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        destroy_db(dir, Engine::Bitcask).unwrap();
        for name in bitcask {
            assert!(!dir.join(name).exists(), "{name} removed");
        }
        for name in foreign {
            assert!(dir.join(name).exists(), "{name} kept");
        }
        // The LSM's destroy leaves Bitcask's files alone (and vice versa, above).
        std::fs::write(dir.join("000009.data"), b"x").unwrap();
        destroy_db(dir, Engine::Lsm).unwrap();
        assert!(dir.join("000009.data").exists());
        assert!(dir.join("notes.txt").exists());
        assert!(!dir.join("CURRENT").exists());
        assert!(!dir.join("000005.log").exists());
    }

    #[test]
    fn threads_share_the_database() {
        let tmp = tempfile::tempdir().unwrap();
        let (r, _) = run_small("fillseq,readrandom,readseq", 2, tmp.path());
        assert_eq!(r[0].ops, 4000);
        assert_eq!(r[1].ops, 4000);
        assert_eq!(r[1].found, 4000);
        assert_eq!(r[2].ops, 4000, "each thread scans the 2000 entries");

        let tmp = tempfile::tempdir().unwrap();
        let (r, _) = run_small_on(Engine::Bitcask, "fillseq,readrandom,readseq", 2, tmp.path());
        assert_eq!(r[0].ops, 4000);
        assert_eq!(r[1].found, 4000);
        assert_eq!(r[2].ops, 4000, "each thread passes over the 2000 entries");
    }
}
