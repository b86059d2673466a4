//! The TSDB write-ahead log: what the head holds that is not yet in `strata-kv`.
//!
//! Segments `wal/NNNNNNNN.log` use `strata-kv`'s log framing (file header with magic and
//! version, per-record CRCs) with the magic [`TSDB_WAL_MAGIC`]. Two record types
//! (docs/format/tsdb-wal.md):
//!
//! * **series** (`1`): `count` then `(ref, labels)` pairs: logged once when a series is
//!   created, and again for every live series at the start of a segment opened by a flush
//!   (the checkpoint), so older segments can be deleted;
//! * **samples** (`2`): `count` then `(ref, t, v)` triples, refs and timestamps
//!   delta-encoded against the previous triple: one record per committed batch.
//!
//! A flush persists the head to `strata-kv` and records the last segment it covers, so a
//! restart replays only samples of later segments.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_kv::coding::{put_varint64, Decoder};
use strata_kv::fs::FileSystem;
use strata_kv::wal::{LogReader, LogWriter, TailPolicy};

use crate::error::{Error, Result};
use crate::labels::Labels;
use crate::postings::SeriesRef;

/// Magic of TSDB WAL segments: "STRATATW".
pub const TSDB_WAL_MAGIC: u64 = u64::from_le_bytes(*b"STRATATW");

const REC_SERIES: u8 = 1;
const REC_SAMPLES: u8 = 2;
/// A series record compressed with zstd: checkpoints repeat every live series' labels,
/// which compress about tenfold.
const REC_SERIES_ZSTD: u8 = 3;

/// Series records larger than this are compressed.
const COMPRESS_SERIES_OVER: usize = 4096;

/// Most bytes a compressed series record may expand to, relative to its stored size (far
/// above what zstd achieves on labels; bounds a hostile record's allocation).
const MAX_EXPANSION: usize = 256;

/// One sample of a series known by its reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefSample {
    /// The series.
    pub r: SeriesRef,
    /// Timestamp in milliseconds.
    pub t: i64,
    /// Value (any bits).
    pub v: f64,
}

/// A decoded WAL record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// New (or checkpointed) series.
    Series(Vec<(SeriesRef, Labels)>),
    /// A committed batch of samples.
    Samples(Vec<RefSample>),
}

/// Encodes a series record (compressed if large).
pub fn encode_series(series: &[(SeriesRef, &Labels)]) -> Vec<u8> {
    let plain = encode_series_plain(series);
    if plain.len() <= COMPRESS_SERIES_OVER {
        return plain;
    }
    match zstd::bulk::compress(&plain[1..], 1) {
        Ok(z) if z.len() + 12 < plain.len() => {
            let mut out = Vec::with_capacity(z.len() + 12);
            out.push(REC_SERIES_ZSTD);
            put_varint64(&mut out, (plain.len() - 1) as u64);
            out.extend_from_slice(&z);
            out
        }
        _ => plain,
    }
}

fn encode_series_plain(series: &[(SeriesRef, &Labels)]) -> Vec<u8> {
    let mut out = vec![REC_SERIES];
    put_varint64(&mut out, series.len() as u64);
    let mut enc = Vec::new();
    for (r, labels) in series {
        put_varint64(&mut out, *r);
        enc.clear();
        labels.encode_into(&mut enc);
        put_varint64(&mut out, enc.len() as u64);
        out.extend_from_slice(&enc);
    }
    out
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Encodes a samples record.
pub fn encode_samples(samples: &[RefSample]) -> Vec<u8> {
    let mut enc = SamplesEncoder::new(Vec::new(), samples.len());
    for s in samples {
        enc.push(s.r, s.t, s.v);
    }
    enc.finish()
}

/// Encodes a samples record of a known number of samples, one at a time, into a buffer
/// the caller may reuse.
pub struct SamplesEncoder {
    out: Vec<u8>,
    prev_r: u64,
    prev_t: i64,
    // Invariant: exactly `count` samples are pushed before `finish`.
    left: usize,
}

impl SamplesEncoder {
    /// Starts a record of `count` samples in `buf` (cleared first).
    pub fn new(mut buf: Vec<u8>, count: usize) -> Self {
        buf.clear();
        buf.reserve(2 + count * 12);
        buf.push(REC_SAMPLES);
        put_varint64(&mut buf, count as u64);
        SamplesEncoder {
            out: buf,
            prev_r: 0,
            prev_t: 0,
            left: count,
        }
    }

    /// Appends one sample.
    pub fn push(&mut self, r: SeriesRef, t: i64, v: f64) {
        debug_assert!(self.left > 0, "more samples than announced");
        self.left = self.left.saturating_sub(1);
        put_varint64(&mut self.out, zigzag(r.wrapping_sub(self.prev_r) as i64));
        put_varint64(&mut self.out, zigzag(t.wrapping_sub(self.prev_t)));
        self.out.extend_from_slice(&v.to_bits().to_le_bytes());
        self.prev_r = r;
        self.prev_t = t;
    }

    /// The encoded record.
    pub fn finish(self) -> Vec<u8> {
        debug_assert_eq!(self.left, 0, "fewer samples than announced");
        self.out
    }
}

/// Decodes a record; errors name `file` and the record's `offset`.
pub fn decode_record(payload: &[u8], file: &str, offset: u64) -> Result<Record> {
    let bad = |at: usize, reason: &str| Error::Corruption {
        location: file.to_string(),
        offset: offset + at as u64,
        reason: format!("WAL record: {reason}"),
    };
    if payload.first() == Some(&REC_SERIES_ZSTD) {
        let mut d = Decoder::new(&payload[1..]);
        let raw_len = d
            .varint64()
            .ok_or_else(|| bad(1, "bad compressed length"))?;
        if raw_len > (payload.len() * MAX_EXPANSION) as u64 {
            return Err(bad(1, "implausible compressed length"));
        }
        let start = 1 + d.position();
        let body = zstd::bulk::decompress(&payload[start..], raw_len as usize)
            .map_err(|e| bad(start, &format!("zstd: {e}")))?;
        if body.len() as u64 != raw_len {
            return Err(bad(start, "decompressed length differs from the header"));
        }
        let mut plain = Vec::with_capacity(body.len() + 1);
        plain.push(REC_SERIES);
        plain.extend_from_slice(&body);
        return match decode_record(&plain, file, offset) {
            Ok(r) => Ok(r),
            // Offsets inside the decompressed body mean nothing in the file: name the record.
            Err(Error::Corruption { reason, .. }) => Err(bad(0, &format!("compressed {reason}"))),
            Err(e) => Err(e),
        };
    }
    let mut d = Decoder::new(payload);
    let kind = d.u8().ok_or_else(|| bad(0, "empty record"))?;
    let n = d.varint64().ok_or_else(|| bad(1, "bad count"))?;
    // Every entry takes at least 2 bytes: bound what we allocate by what we read.
    if n > payload.len() as u64 {
        return Err(bad(1, "count larger than the record"));
    }
    match kind {
        REC_SERIES => {
            let mut out = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let at = d.position();
                let r = d
                    .varint64()
                    .ok_or_else(|| bad(at, "truncated series ref"))?;
                let enc = d
                    .length_prefixed()
                    .ok_or_else(|| bad(at, "truncated labels"))?;
                let labels =
                    Labels::decode(enc).map_err(|e| bad(at, &format!("bad labels: {e}")))?;
                out.push((r, labels));
            }
            if !d.is_empty() {
                return Err(bad(d.position(), "trailing bytes"));
            }
            Ok(Record::Series(out))
        }
        REC_SAMPLES => {
            let mut out = Vec::with_capacity(n as usize);
            let (mut pr, mut pt) = (0u64, 0i64);
            for _ in 0..n {
                let at = d.position();
                let dr = d.varint64().ok_or_else(|| bad(at, "truncated sample"))?;
                let dt = d.varint64().ok_or_else(|| bad(at, "truncated sample"))?;
                let v = d.fixed64().ok_or_else(|| bad(at, "truncated sample"))?;
                let r = pr.wrapping_add(unzigzag(dr) as u64);
                let t = pt.wrapping_add(unzigzag(dt));
                out.push(RefSample {
                    r,
                    t,
                    v: f64::from_bits(v),
                });
                pr = r;
                pt = t;
            }
            if !d.is_empty() {
                return Err(bad(d.position(), "trailing bytes"));
            }
            Ok(Record::Samples(out))
        }
        other => Err(bad(0, &format!("unknown record type {other}"))),
    }
}

/// When the WAL is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before every commit returns: an acknowledged batch survives a machine crash.
    Always,
    /// Every so many milliseconds, in the background: a machine crash loses at most that
    /// window; a process crash loses nothing acknowledged.
    IntervalMs(u64),
    /// Never (the OS decides): a process crash loses nothing acknowledged.
    Never,
}

/// The segment file name of number `n`.
pub fn segment_name(n: u64) -> String {
    format!("{n:08}.log")
}

/// The segment numbers in `dir`, ascending.
pub fn list_segments(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<u64>> {
    let names = fs.list_dir(dir).map_err(|e| {
        Error::Kv(strata_kv::Error::Io {
            context: format!("listing WAL directory {}", dir.display()),
            source: e,
        })
    })?;
    let mut segs: Vec<u64> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".log")?.parse().ok())
        .collect();
    segs.sort_unstable();
    Ok(segs)
}

/// Reads every record of the segments `segs` of `dir` in order, calling `f(segment,
/// record)`. A damaged tail of the last segment (a crash mid-write) is dropped; earlier
/// segments may end torn (a crash, then a restart that opened a new segment) but a corrupt
/// complete record there is an error.
pub fn replay(
    fs: &dyn FileSystem,
    dir: &Path,
    segs: &[u64],
    mut f: impl FnMut(u64, Record) -> Result<()>,
) -> Result<()> {
    for (i, &seg) in segs.iter().enumerate() {
        let policy = if i + 1 == segs.len() {
            TailPolicy::TolerateTornOrCorrupt
        } else {
            TailPolicy::TolerateTornOnly
        };
        let path = dir.join(segment_name(seg));
        let mut reader = LogReader::open_with_policy(fs, &path, TSDB_WAL_MAGIC, policy)?;
        let name = path.display().to_string();
        while let Some(payload) = reader.next_record()? {
            let rec = decode_record(&payload, &name, reader.last_record_offset())?;
            f(seg, rec)?;
        }
        if let Some(damage) = reader.tail_damage() {
            tracing::warn!(file = %name, ?damage, "dropped a damaged WAL tail");
        }
    }
    Ok(())
}

/// The open WAL: one segment being appended to.
pub struct Wal {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    writer: LogWriter,
    segment: u64,
    /// Records appended since the last sync.
    dirty: bool,
    /// Set after a failed write or sync: nothing later may be acknowledged.
    failed: Option<String>,
    /// The failure was a full disk during an append: the segment may end in a partial
    /// record, but everything before it is intact, so a new segment can take over once
    /// space returns. A failed fsync is never recoverable.
    recoverable: bool,
    /// Fsyncs done and the microseconds they took (kept across segments).
    syncs: u64,
    sync_micros: u64,
    /// See [`Wal::take_buffer`].
    scratch: Vec<u8>,
}

/// Whether `e` says the disk (or quota) is full.
pub fn is_no_space(e: &Error) -> bool {
    match e {
        Error::Kv(strata_kv::Error::Io { source, .. }) => {
            matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) || matches!(source.raw_os_error(), Some(28) | Some(122))
        }
        _ => false,
    }
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("segment", &self.segment)
            .finish()
    }
}

impl Wal {
    /// Starts segment `segment` in `dir` (created if missing).
    pub fn create(fs: Arc<dyn FileSystem>, dir: &Path, segment: u64) -> Result<Wal> {
        let io = |context: String| move |e| Error::Kv(strata_kv::Error::Io { context, source: e });
        fs.create_dir_all(dir)
            .map_err(io(format!("creating {}", dir.display())))?;
        let path = dir.join(segment_name(segment));
        let file = fs
            .create(&path)
            .map_err(io(format!("creating {}", path.display())))?;
        let mut writer = LogWriter::new(file, path.display().to_string(), TSDB_WAL_MAGIC)?;
        writer.sync()?;
        fs.sync_dir(dir)
            .map_err(io(format!("syncing {}", dir.display())))?;
        Ok(Wal {
            fs,
            dir: dir.to_path_buf(),
            writer,
            segment,
            dirty: false,
            failed: None,
            recoverable: false,
            syncs: 0,
            sync_micros: 0,
            scratch: Vec::new(),
        })
    }

    /// The current segment number.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// The error that stopped the WAL, if any.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    fn check(&self) -> Result<()> {
        match &self.failed {
            Some(why) => Err(Error::ReadOnly(why.clone())),
            None => Ok(()),
        }
    }

    fn track<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            self.failed = Some(e.to_string());
            self.recoverable = false;
        }
        r
    }

    /// After a full disk: start a new segment if there is room again.
    fn try_resume(&mut self) -> Result<()> {
        if self.failed.is_none() || !self.recoverable {
            return Ok(());
        }
        let next = Wal::create(Arc::clone(&self.fs), &self.dir, self.segment + 1)?;
        tracing::info!(
            segment = next.segment,
            "space is back: WAL resumed in a new segment"
        );
        *self = next;
        Ok(())
    }

    /// Whether the WAL stopped on a full disk (and may resume).
    pub fn is_recoverable(&self) -> bool {
        self.failed.is_some() && self.recoverable
    }

    /// Appends one record and hands it to the OS; with `sync`, also makes it durable.
    /// After a full disk the next call starts a new segment, if it can.
    pub fn log(&mut self, payload: &[u8], sync: bool) -> Result<()> {
        self.try_resume()?;
        self.check()?;
        let r = self
            .writer
            .add_record(payload)
            .and_then(|()| self.writer.flush())
            .map_err(Error::from);
        if let Err(e) = &r {
            if is_no_space(e) {
                self.failed = Some(e.to_string());
                self.recoverable = true;
                return r;
            }
        }
        self.track(r)?;
        self.dirty = true;
        if sync {
            self.sync()?;
        }
        Ok(())
    }

    /// Makes everything logged durable.
    pub fn sync(&mut self) -> Result<()> {
        self.check()?;
        if !self.dirty {
            return Ok(());
        }
        let began = std::time::Instant::now();
        let r = self.writer.sync().map_err(Error::from);
        self.syncs += 1;
        self.sync_micros += began.elapsed().as_micros() as u64;
        self.track(r)?;
        self.dirty = false;
        Ok(())
    }

    /// A scratch buffer for encoding a record (reused across commits).
    pub fn take_buffer(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.scratch)
    }

    /// Gives back the buffer of [`Wal::take_buffer`] (kept unless it grew very large).
    pub fn give_buffer(&mut self, buf: Vec<u8>) {
        if buf.capacity() <= 4 << 20 {
            self.scratch = buf;
        }
    }

    /// Fsyncs done so far and their total duration in microseconds.
    pub fn sync_stats(&self) -> (u64, u64) {
        (self.syncs, self.sync_micros)
    }

    /// Closes the current segment (synced) and starts the next one. Returns the number of
    /// the segment closed.
    pub fn rotate(&mut self) -> Result<u64> {
        self.check()?;
        let r = self.writer.sync().map_err(Error::from);
        self.track(r)?;
        let next = Wal::create(Arc::clone(&self.fs), &self.dir, self.segment + 1);
        let mut next = self.track(next)?;
        (next.syncs, next.sync_micros) = (self.syncs, self.sync_micros);
        let closed = self.segment;
        *self = next;
        Ok(closed)
    }

    /// Deletes segments numbered `<= upto`.
    pub fn remove_upto(&self, upto: u64) -> Result<()> {
        for seg in list_segments(self.fs.as_ref(), &self.dir)? {
            if seg <= upto && seg != self.segment {
                let path = self.dir.join(segment_name(seg));
                self.fs.remove_file(&path).map_err(|e| {
                    Error::Kv(strata_kv::Error::Io {
                        context: format!("removing {}", path.display()),
                        source: e,
                    })
                })?;
            }
        }
        Ok(())
    }

    /// Bytes in all segments.
    pub fn disk_bytes(&self) -> u64 {
        let Ok(segs) = list_segments(self.fs.as_ref(), &self.dir) else {
            return 0;
        };
        segs.iter()
            .filter_map(|s| self.fs.open(&self.dir.join(segment_name(*s))).ok())
            .map(|f| f.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a")]).unwrap();
        let rec = encode_series(&[(7, &l), (9, &l)]);
        assert_eq!(
            decode_record(&rec, "f", 0).unwrap(),
            Record::Series(vec![(7, l.clone()), (9, l)])
        );
        let samples = vec![
            RefSample {
                r: 5,
                t: 1000,
                v: 1.5,
            },
            RefSample {
                r: 2,
                t: -7,
                v: f64::from_bits(0x7ff0000000000002),
            },
            RefSample {
                r: u64::MAX,
                t: i64::MAX,
                v: -0.0,
            },
        ];
        let Record::Samples(got) = decode_record(&encode_samples(&samples), "f", 0).unwrap() else {
            panic!("wrong record type")
        };
        assert_eq!(got.len(), 3);
        for (a, b) in got.iter().zip(&samples) {
            assert_eq!((a.r, a.t, a.v.to_bits()), (b.r, b.t, b.v.to_bits()));
        }
    }

    #[test]
    fn large_series_records_are_compressed_and_round_trip() {
        let labels: Vec<Labels> = (0..500)
            .map(|i| {
                Labels::from_pairs([
                    ("__name__", "node_cpu_seconds_total"),
                    ("instance", &format!("host-{}:9100", i / 16)),
                    ("mode", &format!("m{}", i % 16)),
                ])
                .unwrap()
            })
            .collect();
        let refs: Vec<(SeriesRef, &Labels)> =
            labels.iter().zip(1u64..).map(|(l, r)| (r, l)).collect();
        let rec = encode_series(&refs);
        assert_eq!(rec[0], REC_SERIES_ZSTD);
        let plain = encode_series_plain(&refs);
        assert!(
            rec.len() * 5 < plain.len(),
            "{} vs {}",
            rec.len(),
            plain.len()
        );
        let want: Vec<(SeriesRef, Labels)> = refs.iter().map(|(r, l)| (*r, (*l).clone())).collect();
        assert_eq!(decode_record(&rec, "f", 0).unwrap(), Record::Series(want));
        // A claimed length far beyond the record is refused before allocating.
        let mut bad = vec![REC_SERIES_ZSTD];
        put_varint64(&mut bad, 1 << 40);
        bad.extend_from_slice(&rec[3..]);
        assert!(decode_record(&bad, "f", 0).is_err());
        // Damage inside the compressed body is an error naming the file.
        let mut torn = rec.clone();
        let mid = torn.len() / 2;
        torn[mid] ^= 0xff;
        if let Err(e) = decode_record(&torn, "wal/00000002.log", 10) {
            assert!(e.to_string().contains("wal/00000002.log"), "{e}");
        }
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        for bad in [&[][..], &[9, 0], &[2, 200, 1], &[1, 1, 1, 5, 0]] {
            let err = decode_record(bad, "wal/00000001.log", 100).unwrap_err();
            assert!(err.to_string().contains("wal/00000001.log"), "{err}");
        }
    }
}
