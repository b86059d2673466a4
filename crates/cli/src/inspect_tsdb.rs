//! `strata inspect tsdb|tsdb-wal|chunks`: the time-series store's files, read directly
//! (docs/format/tsdb-keys.md, tsdb-wal.md, chunk.md), without replaying the WAL into a head.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use strata_kv::fs::PosixFs;
use strata_kv::wal::{LogReader, TailPolicy};
use strata_kv::Db;
use strata_tsdb::chunk::{decimal, Chunk, Encoding};
use strata_tsdb::keys;
use strata_tsdb::wal::{self, Record, TSDB_WAL_MAGIC};
use strata_tsdb::{Labels, Matcher, SeriesRef};

use crate::escape;

/// Formats milliseconds since the epoch as RFC 3339 (UTC), or the raw number if out of range.
fn time(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => format!("{ms}ms"),
    }
}

fn bytes_per_sample(bytes: u64, samples: u64) -> String {
    if samples == 0 {
        "-".into()
    } else {
        format!("{:.3}", bytes as f64 / samples as f64)
    }
}

/// Opens the key-value store of a data directory (recovering its own WAL if needed; the
/// directory must not be in use: its lock refuses a second process).
fn open_kv(dir: &Path) -> Result<Db> {
    let kv_dir = dir.join("kv");
    if !kv_dir.is_dir() {
        bail!(
            "{} is not a Strata data directory (no kv/ inside)",
            dir.display()
        );
    }
    let opts = strata_kv::Options {
        create_if_missing: false,
        ..strata_kv::Options::default()
    };
    Db::open(&kv_dir, opts).with_context(|| format!("opening {}", kv_dir.display()))
}

fn meta_u64(kv: &Db, key: &[u8]) -> Result<Option<u64>> {
    match kv.get(key)? {
        None => Ok(None),
        Some(v) => {
            let b: [u8; 8] = v.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!("meta key {} holds {} bytes, not 8", escape(key), v.len())
            })?;
            Ok(Some(u64::from_le_bytes(b)))
        }
    }
}

/// The partitions present, found by hopping from one partition prefix to the next.
fn partitions(kv: &Db) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    let mut it = kv.iter();
    it.seek(&[keys::PARTITION])?;
    while it.valid() {
        let Some(p) = keys::partition_of_key(it.key()) else {
            break;
        };
        out.push(p);
        it.seek(&keys::prefix_end(&keys::partition_prefix(p)))?;
    }
    Ok(out)
}

/// What one partition holds, counted from its keys.
#[derive(Debug, Default)]
struct PartitionSummary {
    series: u64,
    chunks: u64,
    samples: u64,
    chunk_bytes: u64,
    xor_chunks: u64,
    decimal_chunks: u64,
    /// Timestamp columns and their bytes (counted in `chunk_bytes` too).
    columns: u64,
    column_bytes: u64,
    mint: Option<i64>,
    maxt: Option<i64>,
    postings_fragments: u64,
    /// The sum of the stats fragments: samples, chunks, chunk bytes, series.
    stats: [i64; 4],
    compacted_seq: Option<u64>,
    newest_stats_seq: u64,
    /// Chunk bounds keys, and whether the partition is marked as having them all.
    bounds: u64,
    bounded: bool,
}

/// A problem found by `--verify`; the key names where.
struct Problems<'a> {
    out: &'a mut dyn Write,
    count: u64,
}

impl Problems<'_> {
    fn report(&mut self, key: &[u8], what: impl std::fmt::Display) -> Result<()> {
        self.count += 1;
        writeln!(self.out, "PROBLEM key {}: {what}", escape(key))?;
        Ok(())
    }
}

/// Checks one chunk entry and returns (encoding, samples); with `decode`, every sample is
/// decoded and the key's time range, the order of timestamps and the partition checked.
fn check_chunk(
    kv: &Db,
    key: &[u8],
    value: &[u8],
    part: i64,
    partition_ms: i64,
    decode: bool,
    problems: &mut Problems<'_>,
) -> Result<Option<(Encoding, u64, i64, i64)>> {
    let Some((_r, mint, _rank)) = keys::parse_chunk_key(key) else {
        problems.report(key, "malformed chunk key")?;
        return Ok(None);
    };
    let Some(maxt) = keys::get_i64(value) else {
        problems.report(key, "chunk value shorter than its 8-byte maxt")?;
        return Ok(None);
    };
    let bytes = &value[8..];
    if !decode {
        let enc = bytes.first().and_then(|&b| Encoding::from_u8(b));
        let n = match enc {
            Some(Encoding::Xor) => bytes
                .get(1..3)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) as u64),
            Some(Encoding::Decimal | Encoding::DecimalColumn) => {
                decimal::num_samples(bytes).ok().map(|n| n as u64)
            }
            _ => None,
        };
        return match (enc, n) {
            (Some(e), Some(n)) => Ok(Some((e, n, mint, maxt))),
            _ => {
                problems.report(key, "unreadable chunk header")?;
                Ok(None)
            }
        };
    }
    let chunk = match Chunk::from_bytes_with_column(bytes.to_vec(), |col| {
        let ck = keys::column_key(part, col);
        let v = kv
            .get(&ck)?
            .with_context(|| format!("timestamp column {} is missing", escape(&ck)))?;
        let ts = decimal::decode_column(&v)
            .with_context(|| format!("timestamp column {}", escape(&ck)))?;
        anyhow::Ok(std::sync::Arc::from(ts))
    }) {
        Ok(c) => c,
        Err(e) => {
            problems.report(key, format_args!("chunk: {e:#}"))?;
            return Ok(None);
        }
    };
    let (mut n, mut first, mut last) = (0u64, None, i64::MIN);
    for s in chunk.iter() {
        let (t, _) = match s {
            Ok(s) => s,
            Err(e) => {
                problems.report(key, format_args!("chunk sample {n}: {e}"))?;
                return Ok(None);
            }
        };
        if n > 0 && t <= last {
            problems.report(key, format_args!("sample {n} at {t} not after {last}"))?;
        }
        if t.div_euclid(partition_ms) != part {
            problems.report(key, format_args!("sample at {t} outside partition {part}"))?;
        }
        first.get_or_insert(t);
        last = t;
        n += 1;
    }
    if n != chunk.num_samples() as u64 || n == 0 {
        problems.report(
            key,
            format_args!("header says {} samples, {n} decoded", chunk.num_samples()),
        )?;
    }
    if first != Some(mint) || last != maxt {
        problems.report(
            key,
            format_args!(
                "key range {mint}..={maxt}, samples {}..={last}",
                first.unwrap_or(i64::MIN)
            ),
        )?;
    }
    Ok(Some((chunk.encoding(), n, mint, maxt)))
}

/// Scans one partition; with `verify`, checks every chunk, that every chunk's series has
/// labels, that postings and labels agree, and that the stats fragments add up.
fn scan_partition(
    kv: &Db,
    part: i64,
    partition_ms: i64,
    verify: bool,
    problems: &mut Problems<'_>,
) -> Result<PartitionSummary> {
    let mut s = PartitionSummary::default();
    let mut chunk_refs = BTreeSet::new();
    let mut labels_of: BTreeMap<SeriesRef, Labels> = BTreeMap::new();
    let mut postings: HashMap<(String, String), BTreeSet<SeriesRef>> = HashMap::new();
    let compact_mark = keys::sub_prefix(part, b'k');
    for item in kv.prefix(keys::partition_prefix(part)) {
        let (k, v) = item?;
        match k.get(9) {
            Some(&keys::CHUNK) => {
                if let Some((enc, n, mint, maxt)) =
                    check_chunk(kv, &k, &v, part, partition_ms, verify, problems)?
                {
                    s.chunks += 1;
                    s.samples += n;
                    s.chunk_bytes += v.len() as u64 - 8;
                    match enc {
                        Encoding::Xor => s.xor_chunks += 1,
                        _ => s.decimal_chunks += 1,
                    }
                    s.mint = Some(s.mint.map_or(mint, |m| m.min(mint)));
                    s.maxt = Some(s.maxt.map_or(maxt, |m| m.max(maxt)));
                    if let Some((r, _, _)) = keys::parse_chunk_key(&k) {
                        chunk_refs.insert(r);
                    }
                }
            }
            Some(&keys::SERIES) => {
                s.series += 1;
                match (keys::parse_series_key(&k), Labels::decode(&v)) {
                    (Some(r), Ok(l)) => {
                        labels_of.insert(r, l);
                    }
                    (None, _) => problems.report(&k, "malformed series key")?,
                    (_, Err(e)) => problems.report(&k, format_args!("labels: {e}"))?,
                }
            }
            Some(&keys::POSTINGS) => {
                s.postings_fragments += 1;
                if verify {
                    match (keys::parse_postings_key(&k), keys::decode_postings(&v)) {
                        (Some(pair), Ok(refs)) => postings.entry(pair).or_default().extend(refs),
                        (None, _) => problems.report(&k, "malformed postings key")?,
                        (_, Err(at)) => {
                            problems.report(&k, format_args!("postings list bad at byte {at}"))?
                        }
                    }
                }
            }
            Some(&keys::COLUMN) => {
                s.columns += 1;
                s.column_bytes += v.len() as u64;
                s.chunk_bytes += v.len() as u64;
                if verify {
                    if let Err(e) = decimal::decode_column(&v) {
                        problems.report(&k, format_args!("timestamp column: {e}"))?;
                    }
                }
            }
            Some(&keys::STATS) => match keys::decode_stats(&v) {
                Some(d) => {
                    for (a, b) in s.stats.iter_mut().zip(d) {
                        *a += b;
                    }
                    if let Some(seq) = k.get(10..).and_then(keys::get_u64) {
                        s.newest_stats_seq = s.newest_stats_seq.max(seq);
                    }
                }
                None => problems.report(&k, "malformed stats fragment")?,
            },
            Some(&keys::BOUNDS) => {
                s.bounds += 1;
                if keys::parse_bounds_key(&k).is_none() {
                    problems.report(&k, "malformed chunk bounds key")?;
                } else if keys::bounds_overlap(&v, i64::MIN, i64::MIN).is_err() {
                    problems.report(&k, "malformed chunk bounds")?;
                }
            }
            Some(&keys::BOUNDED) if k.len() == 10 => s.bounded = true,
            _ if k == compact_mark => {
                s.compacted_seq = v.as_slice().try_into().ok().map(u64::from_le_bytes);
            }
            _ => problems.report(&k, "unknown partition key")?,
        }
    }
    if verify {
        let pkey = keys::partition_prefix(part);
        for r in chunk_refs.iter().filter(|r| !labels_of.contains_key(r)) {
            problems.report(
                &pkey,
                format_args!("chunks of series ref {r} without labels"),
            )?;
        }
        let all = postings
            .remove(&(String::new(), String::new()))
            .unwrap_or_default();
        for (r, l) in &labels_of {
            if !all.contains(r) {
                problems.report(
                    &pkey,
                    format_args!("series {r} {l} missing from the all-series list"),
                )?;
            }
            for lab in l.iter() {
                let listed = postings
                    .get(&(lab.name.to_string(), lab.value.to_string()))
                    .is_some_and(|p| p.contains(r));
                if !listed {
                    problems.report(
                        &pkey,
                        format_args!(
                            "series {r} {l} missing from postings {}={:?}",
                            lab.name, lab.value
                        ),
                    )?;
                }
            }
        }
        let counted = [
            s.samples as i64,
            s.chunks as i64,
            s.chunk_bytes as i64,
            s.series as i64,
        ];
        if counted != s.stats {
            problems.report(
                &pkey,
                format_args!(
                    "stats fragments say samples/chunks/bytes/series {:?}, keys hold {counted:?}",
                    s.stats
                ),
            )?;
        }
    }
    Ok(s)
}

/// `strata inspect tsdb DIR`: the store's meta keys, its partitions, its WAL; `verify`
/// decodes everything.
pub fn data_dir(out: &mut dyn Write, dir: &Path, verify: bool) -> Result<()> {
    let kv = open_kv(dir)?;
    let format = meta_u64(&kv, keys::META_FORMAT)?;
    let partition_ms = meta_u64(&kv, b"Mpartition_ms")?.unwrap_or(strata_tsdb::DAY_MS as u64);
    let partition_ms = i64::try_from(partition_ms)
        .ok()
        .filter(|&p| p > 0)
        .context("meta key Mpartition_ms holds no valid width")?;
    writeln!(out, "data dir         {}", dir.display())?;
    writeln!(
        out,
        "format           {}",
        format.map_or("(none: empty store)".into(), |f| f.to_string())
    )?;
    writeln!(out, "partition width  {partition_ms} ms")?;
    for (name, key) in [
        ("next series ref", keys::META_NEXT_REF),
        ("next flush seq", keys::META_NEXT_SEQ),
        ("wal persisted", keys::META_WAL_PERSISTED),
    ] {
        if let Some(v) = meta_u64(&kv, key)? {
            writeln!(out, "{name:<16} {v}")?;
        }
    }
    if let Some(t) = meta_u64(&kv, keys::META_MAX_TIME)? {
        writeln!(out, "max time         {}", time(t as i64))?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:>10} {:<24} {:>8} {:>9} {:>12} {:>12} {:>8} {:>13} {:>12} {:>9} {:>14}",
        "partition",
        "start",
        "series",
        "chunks",
        "samples",
        "bytes",
        "B/sample",
        "xor/dec",
        "ts-columns",
        "compacted",
        "bounds"
    )?;
    let mut problems = Problems { out, count: 0 };
    let mut total = PartitionSummary::default();
    let mut rows = Vec::new();
    for part in partitions(&kv)? {
        let s = scan_partition(&kv, part, partition_ms, verify, &mut problems)?;
        total.series += s.series;
        total.chunks += s.chunks;
        total.samples += s.samples;
        total.chunk_bytes += s.chunk_bytes;
        total.xor_chunks += s.xor_chunks;
        total.decimal_chunks += s.decimal_chunks;
        total.columns += s.columns;
        total.column_bytes += s.column_bytes;
        rows.push((part, s));
    }
    let problem_count = problems.count;
    let out = problems.out;
    for (part, s) in &rows {
        let compacted = match s.compacted_seq {
            Some(seq) if seq >= s.newest_stats_seq => "yes",
            Some(_) => "dirty",
            None => "no",
        };
        writeln!(
            out,
            "{part:>10} {:<24} {:>8} {:>9} {:>12} {:>12} {:>8} {:>13} {:>12} {:>9} {:>14}",
            time(part.saturating_mul(partition_ms)),
            s.series,
            s.chunks,
            s.samples,
            s.chunk_bytes,
            bytes_per_sample(s.chunk_bytes, s.samples),
            format!("{}/{}", s.xor_chunks, s.decimal_chunks),
            format!("{} ({} B)", s.columns, s.column_bytes),
            compacted,
            format!(
                "{} ({})",
                if s.bounded { "all" } else { "partial" },
                s.bounds
            )
        )?;
    }
    writeln!(
        out,
        "{:>10} {:<24} {:>8} {:>9} {:>12} {:>12} {:>8} {:>13} {:>12}",
        "total",
        "",
        total.series,
        total.chunks,
        total.samples,
        total.chunk_bytes,
        bytes_per_sample(total.chunk_bytes, total.samples),
        format!("{}/{}", total.xor_chunks, total.decimal_chunks),
        format!("{} ({} B)", total.columns, total.column_bytes),
    )?;
    writeln!(out)?;
    let wal_dir = dir.join("wal");
    if wal_dir.is_dir() {
        let persisted = meta_u64(&kv, keys::META_WAL_PERSISTED)?.unwrap_or(0);
        wal_summary(out, &wal_dir, persisted)?;
    }
    writeln!(out)?;
    writeln!(out, "key-value store ({}):", dir.join("kv").display())?;
    crate::report::print_stats(&mut &mut *out, &kv.stats())?;
    kv.close()?;
    if verify {
        if problem_count > 0 {
            bail!("{problem_count} problems found in {}", dir.display());
        }
        writeln!(
            out,
            "verified         {} chunks, {} samples decoded; labels, postings and stats agree",
            total.chunks, total.samples
        )?;
    }
    Ok(())
}

/// Counts of one WAL segment.
#[derive(Debug, Default)]
struct SegmentSummary {
    records: u64,
    series: u64,
    samples: u64,
    mint: Option<i64>,
    maxt: Option<i64>,
    damage: Option<String>,
}

fn read_segment(
    path: &Path,
    policy: TailPolicy,
    mut each: impl FnMut(u64, &Record) -> Result<()>,
) -> Result<SegmentSummary> {
    let fs = PosixFs;
    let mut r = LogReader::open_with_policy(&fs, path, TSDB_WAL_MAGIC, policy)
        .with_context(|| format!("opening {}", path.display()))?;
    let name = path.display().to_string();
    let mut s = SegmentSummary::default();
    while let Some(payload) = r.next_record()? {
        let offset = r.last_record_offset();
        let rec = wal::decode_record(&payload, &name, offset)?;
        s.records += 1;
        match &rec {
            Record::Series(v) => s.series += v.len() as u64,
            Record::Samples(v) => {
                s.samples += v.len() as u64;
                for x in v {
                    s.mint = Some(s.mint.map_or(x.t, |m| m.min(x.t)));
                    s.maxt = Some(s.maxt.map_or(x.t, |m| m.max(x.t)));
                }
            }
        }
        each(offset, &rec)?;
    }
    s.damage = r
        .tail_damage()
        .map(|t| format!("damaged tail at offset {}: {}", t.offset, t.reason));
    Ok(s)
}

fn range(mint: Option<i64>, maxt: Option<i64>) -> String {
    match (mint, maxt) {
        (Some(a), Some(b)) => format!("{} .. {}", time(a), time(b)),
        _ => "-".into(),
    }
}

fn wal_summary(out: &mut dyn Write, wal_dir: &Path, persisted: u64) -> Result<()> {
    let segs = wal::list_segments(&PosixFs, wal_dir)?;
    writeln!(out, "WAL ({}): {} segments", wal_dir.display(), segs.len())?;
    for (i, seg) in segs.iter().enumerate() {
        let path = wal_dir.join(wal::segment_name(*seg));
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let policy = if i + 1 == segs.len() {
            TailPolicy::TolerateTornOrCorrupt
        } else {
            TailPolicy::TolerateTornOnly
        };
        let s = read_segment(&path, policy, |_, _| Ok(()))?;
        writeln!(
            out,
            "  {} {:>10} bytes {:>7} records {:>8} series {:>10} samples  {}{}{}",
            wal::segment_name(*seg),
            size,
            s.records,
            s.series,
            s.samples,
            range(s.mint, s.maxt),
            if *seg <= persisted {
                "  (persisted)"
            } else {
                ""
            },
            s.damage.map(|d| format!("  {d}")).unwrap_or_default()
        )?;
    }
    Ok(())
}

/// `strata inspect tsdb-wal PATH`: a segment's records, or every segment of a WAL directory.
pub fn wal_file(out: &mut dyn Write, path: &Path, summary: bool) -> Result<()> {
    if path.is_dir() {
        return wal_summary(out, path, 0);
    }
    let s = read_segment(path, TailPolicy::TolerateTornOrCorrupt, |offset, rec| {
        if summary {
            return Ok(());
        }
        match rec {
            Record::Series(v) => {
                writeln!(out, "record @{offset}: series, {} entries", v.len())?;
                for (r, l) in v {
                    writeln!(out, "  ref {r} {l}")?;
                }
            }
            Record::Samples(v) => {
                writeln!(out, "record @{offset}: samples, {} entries", v.len())?;
                for x in v {
                    writeln!(out, "  ref {} t {} ({}) v {}", x.r, x.t, time(x.t), x.v)?;
                }
            }
        }
        Ok(())
    })?;
    writeln!(
        out,
        "{} records: {} series, {} samples, times {}; all checksums OK",
        s.records,
        s.series,
        s.samples,
        range(s.mint, s.maxt)
    )?;
    if let Some(d) = s.damage {
        writeln!(out, "{d} (replay cuts the segment here)")?;
        bail!("{}: {d}", path.display());
    }
    Ok(())
}

/// `strata inspect chunks DIR --match SEL`: the persisted chunks of the matching series.
pub fn chunks(
    out: &mut dyn Write,
    dir: &Path,
    matchers: &[Matcher],
    start: i64,
    end: i64,
    samples: bool,
) -> Result<()> {
    let kv = open_kv(dir)?;
    let partition_ms = meta_u64(&kv, b"Mpartition_ms")?.unwrap_or(strata_tsdb::DAY_MS as u64);
    let partition_ms = i64::try_from(partition_ms)
        .ok()
        .filter(|&p| p > 0)
        .context("meta key Mpartition_ms holds no valid width")?;
    let mut problems = Problems { out, count: 0 };
    let (mut n_chunks, mut n_samples, mut n_bytes) = (0u64, 0u64, 0u64);
    for part in partitions(&kv)? {
        if part < start.div_euclid(partition_ms) || part > end.div_euclid(partition_ms) {
            continue;
        }
        let mut selected = Vec::new();
        for item in kv.prefix(keys::sub_prefix(part, keys::SERIES)) {
            let (k, v) = item?;
            let (Some(r), Ok(l)) = (keys::parse_series_key(&k), Labels::decode(&v)) else {
                problems.report(&k, "unreadable series entry")?;
                continue;
            };
            if matchers.iter().all(|m| m.matches(l.get(m.name()))) {
                selected.push((l, r));
            }
        }
        selected.sort();
        for (l, r) in selected {
            for item in kv.prefix(keys::chunk_series_prefix(part, r)) {
                let (k, v) = item?;
                let Some((_, mint, rank)) = keys::parse_chunk_key(&k) else {
                    problems.report(&k, "malformed chunk key")?;
                    continue;
                };
                let maxt = keys::get_i64(&v).unwrap_or(i64::MIN);
                if maxt < start || mint > end {
                    continue;
                }
                let Some((enc, n, _, _)) =
                    check_chunk(&kv, &k, &v, part, partition_ms, true, &mut problems)?
                else {
                    continue;
                };
                let size = v.len() as u64 - 8;
                (n_chunks, n_samples, n_bytes) = (n_chunks + 1, n_samples + n, n_bytes + size);
                writeln!(
                    problems.out,
                    "{l} ref {r} partition {part} rank {rank}: {enc:?} {n} samples {size} bytes ({} B/sample) {}",
                    bytes_per_sample(size, n),
                    range(Some(mint), Some(maxt))
                )?;
                if samples {
                    let chunk = Chunk::from_bytes_with_column(v[8..].to_vec(), |col| {
                        let ck = keys::column_key(part, col);
                        let v = kv.get(&ck)?.context("timestamp column missing")?;
                        anyhow::Ok(std::sync::Arc::from(decimal::decode_column(&v)?))
                    })?;
                    for s in chunk.iter() {
                        let (t, v) = s?;
                        writeln!(problems.out, "  {t} {v}")?;
                    }
                }
            }
        }
    }
    let problem_count = problems.count;
    let out = problems.out;
    writeln!(
        out,
        "{n_chunks} chunks, {n_samples} samples, {n_bytes} bytes ({} B/sample); samples still in the head are in the WAL (strata inspect tsdb-wal)",
        bytes_per_sample(n_bytes, n_samples)
    )?;
    kv.close()?;
    if problem_count > 0 {
        bail!("{problem_count} problems found");
    }
    Ok(())
}
