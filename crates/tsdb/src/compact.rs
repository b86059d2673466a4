//! Partition compaction: once a partition stops receiving in-order data, its many small
//! Gorilla chunks (one per flush, plus out-of-order ones) are rewritten as one chunk per
//! label set and up to [`MAX_COMPACTED_SAMPLES`] samples, merged (the newest write of a
//! timestamp wins), in whichever encoding is smaller: [`crate::chunk::decimal`] (decimal
//! conversion + delta + zstd) or Gorilla XOR. Series that came back to the head under a
//! new reference are folded into their oldest reference, and the postings fragments into
//! one list per label pair.
//!
//! Crash safety: each batch replaces whole series (old chunks deleted, the new one written,
//! atomically); the last batch replaces postings and stats and marks the partition
//! compacted. A crash in between leaves a partition that reads the same and is compacted
//! again.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use strata_kv::{WriteBatch, WriteOptions};

use crate::chunk::decimal::{self, ColumnRef};
use crate::chunk::XorAppender;
use crate::db::{
    add_to_lists, chunk_error, decode_chunk_value, guard, parse_chunk, Columns, Inner, Lists,
};
use crate::error::{show_key, Error, Result};
use crate::keys;
use crate::labels::Labels;
use crate::postings::SeriesRef;
use crate::querier::merge_ranked;

/// Most samples in one compacted chunk: a day of 15 s scrapes fits in one.
pub const MAX_COMPACTED_SAMPLES: usize = 8192;

/// zstd level of compacted chunks: compaction runs once per partition, so spend CPU.
/// 11 rather than 9: chunks ~0.2% smaller on `bench tsdb` (sparse value streams) for a
/// few percent more encoding instructions; 13 gained 0.03% more for ~15% more.
const ZSTD_LEVEL: i32 = 11;

/// Chunks this short keep their timestamps inline: a column's key and frame would cost
/// more than sharing saves.
const MIN_COLUMN_SAMPLES: usize = 16;

/// Most timestamps one partition compaction keeps in memory to find shared columns
/// (32 MiB); later series keep their timestamps inline.
const MAX_COLUMN_TIMESTAMPS: usize = 4 << 20;

/// A column for one chunk's timestamps.
enum Column {
    /// Written earlier by this compaction.
    Existing(ColumnRef),
    /// Not written yet; the hash of its timestamps.
    New(ColumnRef, u64),
}

/// The timestamp columns one partition compaction writes: series scraped together (every
/// series of one target, in Prometheus) share their timestamps, so they are stored once
/// per partition and the chunks hold values only.
struct ColumnWriter {
    part: i64,
    seq: u64,
    by_hash: HashMap<u64, (ColumnRef, Arc<[i64]>)>,
    held: usize,
}

impl ColumnWriter {
    fn new(part: i64, seq: u64) -> Self {
        ColumnWriter {
            part,
            seq,
            by_hash: HashMap::new(),
            held: 0,
        }
    }

    /// The column holding exactly `ts`: an existing one (`Existing`), or a new one
    /// (`New`, to be written and [`ColumnWriter::add`]ed if used) if there is room; `None` if
    /// the timestamps stay inline.
    fn column_for(&self, ts: &[i64]) -> Option<Column> {
        if ts.len() < MIN_COLUMN_SAMPLES {
            return None;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ts.hash(&mut h);
        let hash = h.finish();
        if let Some((col, held)) = self.by_hash.get(&hash) {
            // A hash collision keeps its timestamps inline rather than share wrong ones.
            return (**held == *ts).then_some(Column::Existing(*col));
        }
        if self.held + ts.len() > MAX_COLUMN_TIMESTAMPS {
            return None;
        }
        let col = ColumnRef {
            seq: self.seq,
            index: self.by_hash.len() as u64,
        };
        Some(Column::New(col, hash))
    }

    /// Records the new column `col` with `hash` (from [`ColumnWriter::column_for`]).
    fn add(&mut self, col: ColumnRef, hash: u64, ts: &[i64]) {
        self.held += ts.len();
        self.by_hash.insert(hash, (col, ts.into()));
    }
}

/// The Gorilla encoding of `samples`, if it can hold them.
fn xor_encoding(samples: &[(i64, f64)]) -> Option<Vec<u8>> {
    let mut app = XorAppender::new();
    for &(t, v) in samples {
        app.append(t, v).ok()?;
    }
    Some(app.into_chunk().into_bytes())
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Partitions rewritten.
    pub partitions: u64,
    /// Series written.
    pub series: u64,
    /// Chunks before and after.
    pub chunks_before: u64,
    /// See `chunks_before`.
    pub chunks_after: u64,
    /// Chunk bytes before and after.
    pub bytes_before: u64,
    /// See `bytes_before`.
    pub bytes_after: u64,
}

/// Meta key of a partition: the sequence of its last compaction.
fn compacted_key(part: i64) -> Vec<u8> {
    keys::sub_prefix(part, b'k')
}

/// The smaller encoding of `samples`.
fn best_encoding(samples: &[(i64, f64)]) -> Result<Vec<u8>> {
    let dec = decimal::encode(samples, ZSTD_LEVEL).map_err(|e| chunk_error(b"", 0, e))?;
    if dec.len() <= samples.len() {
        // Under a byte per sample: Gorilla cannot beat it.
        return Ok(dec);
    }
    Ok(match xor_encoding(samples) {
        Some(xor) if xor.len() < dec.len() => xor,
        _ => dec,
    })
}

/// Encodes one compacted chunk: values only against a shared timestamp column when
/// possible (writing the column into `batch` the first time), else [`best_encoding`].
/// Returns the chunk and the bytes it added (column included).
fn encode_compacted(
    samples: &[(i64, f64)],
    columns: &mut ColumnWriter,
    batch: &mut WriteBatch,
) -> Result<(Vec<u8>, u64)> {
    let ts: Vec<i64> = samples.iter().map(|s| s.0).collect();
    let Some(column) = columns.column_for(&ts) else {
        let b = best_encoding(samples)?;
        let n = b.len() as u64;
        return Ok((b, n));
    };
    let col = match column {
        Column::Existing(c) | Column::New(c, _) => c,
    };
    let shared = decimal::encode_with_column(samples, col, ZSTD_LEVEL)
        .map_err(|e| chunk_error(b"", 0, e))?;
    let mut added = shared.len() as u64;
    if shared.len() > samples.len() {
        // Values that do not compress (random floats): Gorilla may still win, timestamps
        // included.
        if let Some(xor) = xor_encoding(samples).filter(|x| x.len() < shared.len()) {
            let n = xor.len() as u64;
            return Ok((xor, n));
        }
    }
    if let Column::New(col, hash) = column {
        let bytes = decimal::encode_column(&ts, ZSTD_LEVEL).map_err(|e| chunk_error(b"", 0, e))?;
        added += bytes.len() as u64;
        batch.put(keys::column_key(columns.part, col), &bytes);
        columns.add(col, hash, &ts);
    }
    Ok((shared, added))
}

impl Inner {
    /// Whether `part` received writes since its last compaction.
    fn is_dirty(&self, snap: &strata_kv::Snapshot, part: i64) -> Result<bool> {
        let key = compacted_key(part);
        let done = match snap.get(&key)? {
            Some(v) => strata_kv::coding::get_fixed64(&v).ok_or_else(|| Error::Corruption {
                location: format!("key {}", show_key(&key)),
                offset: 0,
                reason: "malformed compaction mark".into(),
            })?,
            None => 0,
        };
        let mut it = snap.iter();
        let prefix = keys::sub_prefix(part, keys::STATS);
        it.seek_for_prev(&keys::prefix_end(&prefix))?;
        if !it.valid() || !it.key().starts_with(&prefix) {
            return Ok(false);
        }
        let last = keys::get_u64(&it.key()[prefix.len()..]).unwrap_or(0);
        Ok(last > done)
    }

    /// Compacts dirty partitions: those before `before` (exclusive).
    pub(crate) fn compact_partitions(&self, before: i64) -> Result<CompactStats> {
        let _one = guard(&self.flush_lock);
        self.check_writable()?;
        let mut total = CompactStats::default();
        let parts: Vec<i64> = self.partitions_overlapping(i64::MIN, i64::MAX);
        for part in parts.into_iter().filter(|p| *p < before) {
            let snap = self.kv.snapshot();
            if !self.is_dirty(&snap, part)? {
                continue;
            }
            let st = self.compact_partition(&snap, part)?;
            tracing::info!(
                partition = part,
                series = st.series,
                chunks_before = st.chunks_before,
                chunks_after = st.chunks_after,
                bytes_before = st.bytes_before,
                bytes_after = st.bytes_after,
                "compacted a partition"
            );
            total.partitions += 1;
            self.counters.compactions.fetch_add(1, Relaxed);
            total.series += st.series;
            total.chunks_before += st.chunks_before;
            total.chunks_after += st.chunks_after;
            total.bytes_before += st.bytes_before;
            total.bytes_after += st.bytes_after;
        }
        Ok(total)
    }

    fn compact_partition(&self, snap: &strata_kv::Snapshot, part: i64) -> Result<CompactStats> {
        let seq = self.next_seq.fetch_add(1, Relaxed);
        let mut st = CompactStats::default();
        // Label set -> its references, oldest first.
        let mut groups: BTreeMap<Labels, Vec<SeriesRef>> = BTreeMap::new();
        for item in snap.prefix(keys::sub_prefix(part, keys::SERIES)) {
            let (k, v) = item?;
            let bad = |reason: String| Error::Corruption {
                location: format!("key {}", show_key(&k)),
                offset: 0,
                reason,
            };
            let r = keys::parse_series_key(&k).ok_or_else(|| bad("malformed series key".into()))?;
            let labels = Labels::decode(&v).map_err(|e| bad(e.to_string()))?;
            groups.entry(labels).or_default().push(r);
        }
        let mut batch = WriteBatch::new();
        let mut lists: Lists = BTreeMap::new();
        let mut samples_total = 0i64;
        let mut columns = Columns::new(snap);
        let mut new_columns = ColumnWriter::new(part, seq);
        for (labels, mut refs) in groups {
            refs.sort_unstable();
            let keep = refs[0];
            let mut sources = Vec::new();
            for &r in &refs {
                for item in snap.prefix(keys::chunk_series_prefix(part, r)) {
                    let (k, v) = item?;
                    let (_, _, rank) = parse_chunk(&k)?;
                    let (_, chunk) = decode_chunk_value(&k, r, &v, &mut columns)?;
                    st.chunks_before += 1;
                    st.bytes_before += chunk.bytes().len() as u64;
                    let samples = chunk
                        .iter()
                        .collect::<std::result::Result<Vec<_>, _>>()
                        .map_err(|e| chunk_error(&k, r, e))?;
                    sources.push((rank, samples));
                    batch.delete(&k);
                }
                if r != keep {
                    batch.delete(keys::series_key(part, r));
                }
            }
            let merged = merge_ranked(sources);
            if merged.is_empty() {
                batch.delete(keys::series_key(part, keep));
                continue;
            }
            st.series += 1;
            samples_total += merged.len() as i64;
            let mut value = Vec::new();
            let mut bounds = Vec::new();
            for piece in merged.chunks(MAX_COMPACTED_SAMPLES) {
                let (bytes, added) = encode_compacted(piece, &mut new_columns, &mut batch)?;
                value.clear();
                keys::put_i64(&mut value, piece[piece.len() - 1].0);
                value.extend_from_slice(&bytes);
                batch.put(keys::chunk_key(part, keep, piece[0].0, seq * 2), &value);
                bounds.push((piece[0].0, piece[piece.len() - 1].0));
                st.chunks_after += 1;
                st.bytes_after += added;
            }
            batch.put(
                keys::bounds_key(part, keep, seq),
                keys::encode_bounds(&bounds),
            );
            add_to_lists(&mut lists, keep, &labels);
            if batch.encoded_size() > 8 << 20 {
                self.kv
                    .write(std::mem::take(&mut batch), WriteOptions { sync: false })?;
            }
        }
        // Every chunk was rewritten: the columns of earlier compactions are unused now.
        for sub in [keys::POSTINGS, keys::STATS, keys::COLUMN, keys::BOUNDS] {
            for item in snap.prefix(keys::sub_prefix(part, sub)) {
                let (k, _) = item?;
                batch.delete(k);
            }
        }
        for ((name, value), mut refs) in lists {
            refs.sort_unstable();
            batch.put(
                keys::postings_key(part, &name, &value, seq),
                keys::encode_postings(&refs),
            );
        }
        batch.put(
            keys::stats_key(part, seq),
            keys::encode_stats(&[
                samples_total,
                st.chunks_after as i64,
                st.bytes_after as i64,
                st.series as i64,
            ]),
        );
        batch.put(compacted_key(part), seq.to_le_bytes());
        // Every chunk was rewritten with its bounds.
        batch.put(keys::sub_prefix(part, keys::BOUNDED), []);
        batch.put(keys::META_NEXT_SEQ, (seq + 1).to_le_bytes());
        self.kv.write(batch, WriteOptions { sync: true })?;
        self.bounds.invalidate(part);
        // References folded away lost their labels and postings here: head series must
        // write theirs again with their next data in this partition.
        for series in self.head.all() {
            crate::head::lock(&series)
                .persisted_parts
                .retain(|p| *p != part);
        }
        Ok(st)
    }
}
