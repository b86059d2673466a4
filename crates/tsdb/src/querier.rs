//! Reading: [`Querier`] selects series by matchers over a time range, merging the head and
//! every partition of the range.
//!
//! A label set may have data in several places: the head, several partitions, even two
//! references in one partition (a series that left the head and came back). Samples are
//! merged per label set; where two sources hold the same timestamp the newer write wins:
//! every source has a rank (a persisted chunk's flush sequence, doubled, plus one for
//! out-of-order chunks; head data above all persisted data).

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::chunk::{decimal, Chunk, Encoding};
use crate::db::{parse_chunk, Columns, Inner};
use crate::error::{Error, Result};
use crate::head;
use crate::index::PartitionIndex;
use crate::keys;
use crate::labels::Labels;
use crate::matcher::Matcher;
use crate::postings::{self, PostingsIndex};

/// One selected series: its labels and its samples in the querier's range, by time.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The series' labels.
    pub labels: Labels,
    /// `(timestamp_ms, value)` ascending, one per timestamp.
    pub samples: Vec<(i64, f64)>,
}

impl Series {
    /// The samples.
    pub fn iter(&self) -> impl Iterator<Item = (i64, f64)> + '_ {
        self.samples.iter().copied()
    }
}

/// Samples of one source, with its rank.
pub(crate) type Ranked = (u64, Vec<(i64, f64)>);

/// Ranks of head data: above every persisted chunk (whose ranks are `2 * seq + 1` at most).
const HEAD_RANK: u64 = 1 << 62;

/// Reads the store over `[mint, maxt]`.
pub struct Querier {
    inner: Arc<Inner>,
    mint: i64,
    maxt: i64,
}

impl std::fmt::Debug for Querier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Querier")
            .field("mint", &self.mint)
            .field("maxt", &self.maxt)
            .finish()
    }
}

impl Querier {
    pub(crate) fn new(inner: Arc<Inner>, mint: i64, maxt: i64) -> Self {
        Querier { inner, mint, maxt }
    }

    /// The series selected by `matchers` that have samples in the range, sorted by labels.
    ///
    /// Two phases: the index and the chunks' bytes are read from one snapshot (and the head)
    /// on this thread, then chunks are decoded and merged per label set, on several threads
    /// when there is much to decode.
    pub fn select(&self, matchers: &[Matcher]) -> Result<Vec<Series>> {
        self.select_sharing_above(matchers, 0, PARALLEL_DECODE_BYTES, &|s| s)
    }

    /// [`Querier::select`] with `f` applied to each series on the thread that decoded it
    /// (a caller's conversion to its own types then shares the decoding threads).
    pub fn select_map<T: Send>(
        &self,
        matchers: &[Matcher],
        f: impl Fn(Series) -> T + Sync,
    ) -> Result<Vec<T>> {
        self.select_sharing_above(matchers, 0, PARALLEL_DECODE_BYTES, &f)
    }

    /// [`Querier::select_map`] for an `f` that does work of its own on each series (a
    /// query engine's range function): `weight` is that work, in bytes of chunks decoded in
    /// the same time, and counts with the chunks' bytes towards sharing the series between
    /// threads.
    pub fn select_map_weighted<T: Send>(
        &self,
        matchers: &[Matcher],
        weight: usize,
        f: impl Fn(Series) -> T + Sync,
    ) -> Result<Vec<T>> {
        self.select_sharing_above(matchers, weight, PARALLEL_DECODE_BYTES, &f)
    }

    /// [`Querier::select_map`], decoding on several threads once the chunks read plus
    /// `weight` per series come to `parallel_bytes`.
    fn select_sharing_above<T: Send>(
        &self,
        matchers: &[Matcher],
        weight: usize,
        parallel_bytes: usize,
        f: &(impl Fn(Series) -> T + Sync),
    ) -> Result<Vec<T>> {
        let (mint, maxt) = (self.mint, self.maxt);
        if mint > maxt {
            return Ok(Vec::new());
        }
        // Each place's series with their encoded labels, which order as the labels do:
        // sorted and merged per label set below by comparing one run of bytes each.
        // The labels stay encoded until the decoding threads decode them with the chunks:
        // this thread, which all series pass through, allocates one buffer per series.
        let mut found: Vec<(Vec<u8>, LabelsAt, Vec<Source>)> = Vec::new();
        let mut stored_bytes = 0usize;

        // The head first, then a snapshot of the store: data that a concurrent flush moves
        // from the head to the store is then seen at least once.
        for r in postings::select(&self.inner.head.postings, matchers) {
            let Some(series) = self.inner.head.get(r) else {
                continue;
            };
            let s = head::lock(&series);
            let mut sources = Vec::new();
            for (i, c) in s.closed.iter().enumerate() {
                if c.maxt >= mint && c.mint <= maxt {
                    sources.push(Source::Decoded(
                        HEAD_RANK + i as u64,
                        decode_in_range(&c.chunk, mint, maxt),
                    ));
                }
            }
            let n = s.closed.len() as u64;
            if let Some(o) = &s.open {
                if o.maxt >= mint && o.mint <= maxt {
                    sources.push(Source::Decoded(
                        HEAD_RANK + n,
                        decode_in_range(o.app.chunk(), mint, maxt),
                    ));
                }
            }
            let ooo: Vec<(i64, f64)> = s.ooo.range(mint..=maxt).map(|(t, v)| (*t, *v)).collect();
            if !ooo.is_empty() {
                sources.push(Source::Decoded(HEAD_RANK + n + 1, ooo));
            }
            if !sources.is_empty() {
                found.push((series.key().to_vec(), LabelsAt::Head, sources));
            }
        }

        let snap = self.inner.kv.snapshot();
        let mut it = Cursor::new(&snap, 0);
        let mut columns = Columns::new(&snap);
        for part in self.inner.partitions_overlapping(mint, maxt) {
            for (r, key) in selected(&snap, &self.inner.head, part, matchers)? {
                let mut sources = Vec::new();
                for_each_chunk(&mut it, part, r, maxt, |key, value| {
                    let (_, _, rank) = parse_chunk(key)?;
                    let cmaxt = keys::get_i64(value).ok_or_else(|| short_chunk_value(key))?;
                    if cmaxt >= mint {
                        stored_bytes += value.len();
                        // A compacted chunk's shared timestamps, read here (the snapshot
                        // lives on this thread) and decoded with the values later.
                        let column = if value.get(8) == Some(&(Encoding::DecimalColumn as u8)) {
                            let col = decimal::column_of(&value[8..])
                                .map_err(|e| crate::db::chunk_error(key, r, e))?;
                            Some(columns.get(part, col, key)?)
                        } else {
                            None
                        };
                        sources.push(Source::Stored {
                            rank,
                            series: r,
                            key: key.to_vec(),
                            value: value.to_vec(),
                            column,
                        });
                    }
                    Ok(true)
                })?;
                if !sources.is_empty() {
                    found.push((key, LabelsAt::Stored(part, r), sources));
                }
            }
        }

        // Stable: a label set's sources stay in the order they were found.
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut groups: Vec<Group> = Vec::with_capacity(found.len());
        for (key, at, sources) in found {
            match groups.last_mut() {
                Some(g) if g.0 == key => g.2.extend(sources),
                _ => groups.push((key, at, sources)),
            }
        }
        let work = stored_bytes.saturating_add(groups.len().saturating_mul(weight));
        let threads = if work >= parallel_bytes {
            decode_threads().min(groups.len())
        } else {
            1
        };
        if threads <= 1 {
            return finish_series(groups, mint, maxt, f);
        }
        // Contiguous shares of the label-ordered groups, so the output stays sorted.
        let per = groups.len().div_ceil(threads);
        let mut shares: Vec<Vec<Group>> = Vec::with_capacity(threads);
        let mut rest = groups.into_iter();
        loop {
            let share: Vec<_> = rest.by_ref().take(per).collect();
            if share.is_empty() {
                break;
            }
            shares.push(share);
        }
        let results: Vec<Result<Vec<T>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = shares
                .into_iter()
                .map(|share| scope.spawn(move || finish_series(share, mint, maxt, f)))
                .collect();
            handles
                .into_iter()
                // A panic in a decoding thread is re-raised here, as if it had
                // happened on this thread.
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let mut out = Vec::new();
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    /// The label sets of the series selected by `matchers` that hold a chunk overlapping the
    /// range (chunk granularity, as Prometheus answers `/api/v1/series`), sorted.
    ///
    /// A persisted series' labels come from the head when it is there (refs are never
    /// reused, so a ref has one label set everywhere), not from its series key. Whether it
    /// has a chunk in the range is read from its chunks' bounds (a few bytes per flush)
    /// where the partition has them all, else from its chunk keys; either cursor steps from
    /// series to series (selected refs are sorted and often neighbours) instead of seeking
    /// every level of the LSM tree for each.
    pub fn series(&self, matchers: &[Matcher]) -> Result<Vec<Labels>> {
        let mut out = Vec::new();
        self.for_each_series(matchers, |l| out.push(l.clone()))?;
        Ok(out)
    }

    /// [`Querier::series`]' label sets, sorted, given to `f` one by one without copying
    /// them. Returns how many there were.
    pub fn for_each_series(&self, matchers: &[Matcher], f: impl FnMut(&Labels)) -> Result<usize> {
        Ok(self
            .for_each_series_within(matchers, usize::MAX, f)?
            .unwrap_or(0))
    }

    /// [`Querier::for_each_series`] if the head and the partitions select at most
    /// `max_refs` series in all and every partition's chunk bounds are in memory (no
    /// key-value seek per series); `None` otherwise, before `f` sees any. Lets a server
    /// answer small series queries where it is, without a hand-off to a thread that may
    /// block.
    pub fn for_each_series_within(
        &self,
        matchers: &[Matcher],
        max_refs: usize,
        mut f: impl FnMut(&Labels),
    ) -> Result<Option<usize>> {
        let (mint, maxt) = (self.mint, self.maxt);
        if mint > maxt {
            return Ok(Some(0));
        }
        let bounded_only = max_refs != usize::MAX;
        let head = &self.inner.head;
        // Found series, sorted and deduplicated by their encoded labels (which order as the
        // labels do; comparing one run of bytes is cheaper than comparing strings).
        let mut found: Vec<Found> = Vec::new();
        // Head series already answered: their persisted refs need no check.
        let mut done: Vec<postings::SeriesRef> = Vec::new();
        let head_refs = postings::select(&head.postings, matchers);
        let Some(mut budget) = max_refs.checked_sub(head_refs.len()) else {
            return Ok(None);
        };
        for r in head_refs {
            if let Some(s) = head.get(r) {
                let g = head::lock(&s);
                let overlaps = g.closed.iter().any(|c| c.mint <= maxt && c.maxt >= mint)
                    || g.open
                        .as_ref()
                        .is_some_and(|o| o.mint <= maxt && o.maxt >= mint)
                    || g.ooo.range(mint..=maxt).next().is_some();
                drop(g);
                if overlaps {
                    found.push(Found::Head(s));
                    done.push(r);
                }
            }
        }
        // Read before the snapshot (bounds read from it are kept only if nothing changed).
        let gen = self.inner.bounds.generation();
        let snap = self.inner.kv.snapshot();
        let mut chunks = Cursor::new(&snap, LABEL_STEPS);
        let mut labels = Cursor::new(&snap, LABEL_STEPS);
        for part in self.inner.partitions_overlapping(mint, maxt) {
            let bounded = snap.get(keys::sub_prefix(part, keys::BOUNDED))?.is_some();
            // The partition's bounds in memory: one binary search per series, no seek.
            let held = if bounded {
                self.inner.bounds.get_or_load(&snap, part, gen)?
            } else {
                None
            };
            if bounded_only && held.is_none() {
                return Ok(None);
            }
            let idx = PartitionIndex::new(&snap, part);
            let refs = postings::select(&idx, matchers);
            idx.take_error()?;
            budget = match budget.checked_sub(refs.len()) {
                Some(b) => b,
                None => return Ok(None),
            };
            let mut pos = 0;
            let mut prev = 0;
            for r in refs {
                // A series' bounds are one or a few keys: step to a near ref, seek to a far one.
                chunks.steps = if !bounded || r - prev <= NEAR_REFS {
                    LABEL_STEPS
                } else {
                    0
                };
                prev = r;
                pos = postings::seek(&done, pos, r);
                if done.get(pos) == Some(&r) {
                    continue;
                }
                let mut overlaps = false;
                if let Some(b) = &held {
                    overlaps = b.overlaps(r, mint, maxt).unwrap_or(false);
                } else if bounded {
                    let prefix = keys::bounds_series_prefix(part, r);
                    chunks.seek(&prefix)?;
                    while !overlaps && chunks.it.valid() && chunks.it.key().starts_with(&prefix) {
                        let (k, v) = (chunks.it.key(), chunks.it.value());
                        overlaps = keys::bounds_overlap(v, mint, maxt).map_err(|at| {
                            Error::Corruption {
                                location: format!("key {}", crate::error::show_key(k)),
                                offset: at as u64,
                                reason: "malformed chunk bounds".to_string(),
                            }
                        })?;
                        chunks.next()?;
                    }
                } else {
                    for_each_chunk(&mut chunks, part, r, maxt, |k, v| {
                        let cmaxt = keys::get_i64(v).ok_or_else(|| short_chunk_value(k))?;
                        overlaps = cmaxt >= mint;
                        Ok(!overlaps)
                    })?;
                }
                if !overlaps {
                    continue;
                }
                if let Some(s) = head.get(r) {
                    found.push(Found::Head(s));
                    continue;
                }
                if let Some(decoded) = labels.series_labels(part, r)? {
                    found.push(Found::Stored(labels.it.value().to_vec(), decoded));
                }
            }
        }
        found.sort_unstable_by(|a, b| a.key().cmp(b.key()));
        found.dedup_by(|a, b| a.key() == b.key());
        for x in &found {
            f(match x {
                Found::Head(s) => &s.labels,
                Found::Stored(_, l) => l,
            });
        }
        Ok(Some(found.len()))
    }

    /// Label names of the series selected by `matchers` (all series if empty), sorted.
    pub fn label_names(&self, matchers: &[Matcher]) -> Result<Vec<String>> {
        if !matchers.is_empty() {
            let names: BTreeSet<String> = self
                .series(matchers)?
                .iter()
                .flat_map(|l| l.iter().map(|l| l.name.clone()))
                .collect();
            return Ok(names.into_iter().collect());
        }
        let mut names: BTreeSet<String> = self
            .inner
            .head
            .postings
            .label_names()
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect();
        let snap = self.inner.kv.snapshot();
        for part in self.inner.partitions_overlapping(self.mint, self.maxt) {
            names.extend(PartitionIndex::new(&snap, part).label_names()?);
        }
        Ok(names.into_iter().collect())
    }

    /// Values of label `name` among the series selected by `matchers` (all if empty), sorted.
    pub fn label_values(&self, name: &str, matchers: &[Matcher]) -> Result<Vec<String>> {
        if name.is_empty() {
            return Err(Error::InvalidArgument("empty label name".into()));
        }
        if !matchers.is_empty() {
            let values: BTreeSet<String> = self
                .series(matchers)?
                .iter()
                .filter_map(|l| l.get(name).map(str::to_string))
                .collect();
            return Ok(values.into_iter().collect());
        }
        Ok(self
            .label_values_within(name, usize::MAX)?
            .unwrap_or_default())
    }

    /// The values of label `name` among all series (as [`Querier::label_values`] without
    /// matchers), if reading them takes at most `max_keys` index keys; `None` otherwise
    /// (after reading no more than that). Lets a server answer small metadata queries
    /// where it is, and send the others to a thread that may block.
    pub fn label_values_within(&self, name: &str, max_keys: usize) -> Result<Option<Vec<String>>> {
        if name.is_empty() {
            return Err(Error::InvalidArgument("empty label name".into()));
        }
        // Each source is sorted and unique; most often one or two hold the same values.
        let mut values = self.inner.head.postings.label_values(name);
        let Some(mut budget) = max_keys.checked_sub(values.len()) else {
            return Ok(None);
        };
        let snap = self.inner.kv.snapshot();
        for part in self.inner.partitions_overlapping(self.mint, self.maxt) {
            match PartitionIndex::new(&snap, part).label_values_within(name, &mut budget)? {
                Some(more) => values = union_sorted(values, more),
                None => return Ok(None),
            }
        }
        Ok(Some(values))
    }

    /// Number of series the partitions of the range and the head hold for `matchers`
    /// (each place counted; a cheap upper bound for query limits).
    pub fn count_upper_bound(&self, matchers: &[Matcher]) -> Result<usize> {
        let mut n = postings::select(&self.inner.head.postings, matchers).len();
        let snap = self.inner.kv.snapshot();
        for part in self.inner.partitions_overlapping(self.mint, self.maxt) {
            let idx = PartitionIndex::new(&snap, part);
            n += postings::select(&idx, matchers).len();
            idx.take_error()?;
            let _ = idx.all_postings();
        }
        Ok(n)
    }
}

/// The sorted union of two sorted, duplicate-free lists. The common cases cost no
/// allocation: one side empty, or both equal (the head and a partition of the same hours).
fn union_sorted(a: Vec<String>, b: Vec<String>) -> Vec<String> {
    if b.is_empty() || a == b {
        return a;
    }
    if a.is_empty() {
        return b;
    }
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match x.cmp(y) {
                std::cmp::Ordering::Less => a.next(),
                std::cmp::Ordering::Greater => b.next(),
                std::cmp::Ordering::Equal => {
                    b.next();
                    a.next()
                }
            },
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        out.extend(next);
    }
    out
}

/// A series found by [`Querier::series`]: a head series, or stored labels with their
/// encoding.
enum Found {
    Head(Arc<head::HeadSeries>),
    Stored(Vec<u8>, Labels),
}

impl Found {
    /// The encoded labels ([`Labels::encode`]).
    fn key(&self) -> &[u8] {
        match self {
            Found::Head(s) => s.key(),
            Found::Stored(k, _) => k,
        }
    }
}

/// The series of partition `part` selected by `matchers`, with their encoded labels
/// ([`Labels::encode`]; deleted series left out). A series still in the head takes its labels from there (refs are never
/// reused); the others are read through one cursor moving forward over the partition's
/// series keys (refs come sorted), not one lookup each.
fn selected(
    snap: &strata_kv::Snapshot,
    head: &head::Head,
    part: i64,
    matchers: &[Matcher],
) -> Result<Vec<(crate::postings::SeriesRef, Vec<u8>)>> {
    let idx = PartitionIndex::new(snap, part);
    let refs = postings::select(&idx, matchers);
    idx.take_error()?;
    let mut out = Vec::with_capacity(refs.len());
    let mut it = Cursor::new(snap, LABEL_STEPS);
    for r in refs {
        if let Some(s) = head.get(r) {
            out.push((r, s.key().to_vec()));
            continue;
        }
        if it.at_series(part, r)? {
            out.push((r, it.it.value().to_vec()));
        }
    }
    Ok(out)
}

/// A forward cursor over a snapshot that reaches a nearby key by stepping instead of a
/// full seek (which repositions every level of the LSM tree): selected series often have
/// neighbouring references, so their keys are a few entries apart.
struct Cursor {
    it: strata_kv::DbIterator,
    /// No key lies in `[lower, it.key())` (meaningful while `it` is valid).
    lower: Vec<u8>,
    /// Entries stepped over before seeking instead. Every step copies an entry: worth it
    /// over small values (labels), not over chunks; with none, the cursor still saves the
    /// seek when it already stands on the target (the next series' first chunk).
    steps: usize,
}

/// Entries a [`Cursor`] over series keys steps over before it seeks instead.
const LABEL_STEPS: usize = 8;

/// Refs this close have their chunk bounds a few entries apart: a [`Cursor`] steps to
/// them, and seeks to farther ones (a step costs about a tenth of a seek, measured).
const NEAR_REFS: u64 = 4;

impl Cursor {
    fn new(snap: &strata_kv::Snapshot, steps: usize) -> Self {
        Cursor {
            it: snap.iter(),
            lower: Vec::new(),
            steps,
        }
    }

    /// Positions at the first key `>= target`.
    fn seek(&mut self, target: &[u8]) -> Result<()> {
        if self.it.valid() && self.lower.as_slice() <= target {
            for _ in 0..self.steps {
                if !self.it.valid() || target <= self.it.key() {
                    return Ok(());
                }
                self.next()?;
            }
            if !self.it.valid() || target <= self.it.key() {
                return Ok(());
            }
        }
        self.it.seek(target)?;
        self.lower.clear();
        self.lower.extend_from_slice(target);
        Ok(())
    }

    /// Whether the partition has labels stored for series `r` of `part`; the cursor is left
    /// on their key, so `self.it.value()` is their encoding.
    fn at_series(&mut self, part: i64, r: crate::postings::SeriesRef) -> Result<bool> {
        let key = keys::series_key(part, r);
        self.seek(&key)?;
        Ok(self.it.valid() && self.it.key() == key.as_slice())
    }

    /// The labels stored for series `r` of `part`, `None` if the partition has none; the
    /// cursor is left on their key, so `self.it.value()` is their encoding.
    fn series_labels(
        &mut self,
        part: i64,
        r: crate::postings::SeriesRef,
    ) -> Result<Option<Labels>> {
        let key = keys::series_key(part, r);
        self.seek(&key)?;
        if !self.it.valid() || self.it.key() != key.as_slice() {
            return Ok(None);
        }
        crate::index::decode_labels(&key, self.it.value()).map(Some)
    }

    /// Moves to the next key. REQUIRES: valid.
    fn next(&mut self) -> Result<()> {
        // The smallest key above the current one is the current one followed by a zero.
        self.lower.clear();
        self.lower.extend_from_slice(self.it.key());
        self.lower.push(0);
        self.it.next()?;
        Ok(())
    }
}

/// Visits the chunks of series `r` in `part` that start at or before `maxt`, in key order,
/// through `it` (a cursor of the snapshot, reused from series to series).
fn for_each_chunk(
    it: &mut Cursor,
    part: i64,
    r: crate::postings::SeriesRef,
    maxt: i64,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
) -> Result<()> {
    let (start, end) = chunk_range(part, r, maxt);
    it.seek(&start)?;
    while it.it.valid() && it.it.key() < end.as_slice() {
        if !f(it.it.key(), it.it.value())? {
            break;
        }
        it.next()?;
    }
    Ok(())
}

/// Chunk bytes read by one [`Querier::select`] above which decoding is shared between
/// threads (below, starting threads costs more than it saves).
const PARALLEL_DECODE_BYTES: usize = 256 << 10;

/// Threads that decode the chunks of one large selection: the machine's cores, at most 8.
fn decode_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8)
}

/// Where a label set's encoding was read, to name it if it does not decode.
#[derive(Clone, Copy)]
enum LabelsAt {
    Head,
    Stored(i64, crate::postings::SeriesRef),
}

/// One label set to read: its encoded labels, where they are from, and its sources.
type Group = (Vec<u8>, LabelsAt, Vec<Source>);

/// Samples of one label set from one place, before merging.
enum Source {
    /// Head data, decoded under the series' lock, with its rank.
    Decoded(u64, Vec<(i64, f64)>),
    /// A persisted chunk as read: key and value (`i64be(maxt)` then the chunk bytes).
    Stored {
        rank: u64,
        series: crate::postings::SeriesRef,
        key: Vec<u8>,
        value: Vec<u8>,
        /// The timestamps of an [`Encoding::DecimalColumn`] chunk.
        column: Option<Arc<[i64]>>,
    },
}

/// Decodes and merges the sources of each label set and applies `f`; label sets left
/// without samples in `[mint, maxt]` are dropped.
fn finish_series<T>(
    groups: Vec<Group>,
    mint: i64,
    maxt: i64,
    f: &impl Fn(Series) -> T,
) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(groups.len());
    for (labels, at, sources) in groups {
        let mut ranked: Vec<Ranked> = Vec::with_capacity(sources.len());
        for src in sources {
            ranked.push(match src {
                Source::Decoded(rank, samples) => (rank, samples),
                Source::Stored {
                    rank,
                    series,
                    key,
                    value,
                    column,
                } => (
                    rank,
                    decode_stored(&key, series, value, column.as_deref(), mint, maxt)?,
                ),
            });
        }
        let samples = merge_ranked(ranked);
        if !samples.is_empty() {
            let labels = decode_group_labels(&labels, at)?;
            out.push(f(Series { labels, samples }));
        }
    }
    Ok(out)
}

/// The labels of a group from their encoding.
fn decode_group_labels(encoded: &[u8], at: LabelsAt) -> Result<Labels> {
    match at {
        LabelsAt::Stored(part, r) => {
            crate::index::decode_labels(&keys::series_key(part, r), encoded)
        }
        // Encoded by this process from valid labels.
        LabelsAt::Head => Labels::decode(encoded).map_err(|e| Error::Corruption {
            location: "a head series' labels".to_string(),
            offset: 0,
            reason: e.to_string(),
        }),
    }
}

/// The samples in `[mint, maxt]` of a stored chunk value.
fn decode_stored(
    key: &[u8],
    r: crate::postings::SeriesRef,
    mut value: Vec<u8>,
    column: Option<&[i64]>,
    mint: i64,
    maxt: i64,
) -> Result<Vec<(i64, f64)>> {
    if value.len() < 8 {
        return Err(short_chunk_value(key));
    }
    let in_range = |t: i64| t >= mint && t <= maxt;
    if let (Some(&b), Some(ts)) = (value.get(8), column) {
        if b == Encoding::DecimalColumn as u8 {
            // A column's timestamps increase (checked when it is decoded): the range's
            // samples are an index range, and decoding stops at its end.
            let lo = ts.partition_point(|&t| t < mint);
            let hi = lo + ts[lo..].partition_point(|&t| t <= maxt);
            return decimal::decode_with_column_range(&value[8..], ts, lo..hi)
                .map_err(|e| crate::db::chunk_error(key, r, e));
        }
    }
    // Decimal chunks are decoded straight from the value's bytes, no copy of the chunk.
    let decoded = match value.get(8) {
        Some(&b) if b == Encoding::Decimal as u8 => Some(decimal::decode(&value[8..])),
        _ => None,
    };
    if let Some(samples) = decoded {
        let mut samples = samples.map_err(|e| crate::db::chunk_error(key, r, e))?;
        samples.retain(|&(t, _)| in_range(t));
        return Ok(samples);
    }
    value.drain(..8);
    let chunk = Chunk::from_bytes(value).map_err(|e| crate::db::chunk_error(key, r, e))?;
    let mut samples = Vec::with_capacity(chunk.num_samples());
    for smp in chunk.iter() {
        let (t, v) = smp.map_err(|e| crate::db::chunk_error(key, r, e))?;
        if in_range(t) {
            samples.push((t, v));
        }
    }
    Ok(samples)
}

fn short_chunk_value(key: &[u8]) -> Error {
    Error::Corruption {
        location: format!("key {}", crate::error::show_key(key)),
        offset: 0,
        reason: "chunk value shorter than its header".into(),
    }
}

/// The key range of the chunks of series `r` in `part` that start at or before `maxt`.
fn chunk_range(part: i64, r: crate::postings::SeriesRef, maxt: i64) -> (Vec<u8>, Vec<u8>) {
    let start = keys::chunk_series_prefix(part, r);
    let mut end = start.clone();
    keys::put_i64(&mut end, maxt);
    (start, keys::prefix_end(&end))
}

fn decode_in_range(chunk: &crate::chunk::XorChunk, mint: i64, maxt: i64) -> Vec<(i64, f64)> {
    // Head chunks were encoded by this process: a decode error cannot come from disk.
    chunk
        .iter()
        .map_while(|s| s.ok())
        .filter(|(t, _)| *t >= mint && *t <= maxt)
        .collect()
}

/// Merges ranked sources: ascending time, one sample per timestamp, the highest rank wins.
pub(crate) fn merge_ranked(mut sources: Vec<Ranked>) -> Vec<(i64, f64)> {
    sources.retain(|(_, s)| !s.is_empty());
    match sources.len() {
        0 => return Vec::new(),
        1 => {
            let (_, s) = sources.pop().unwrap_or_default();
            if s.windows(2).all(|w| w[0].0 < w[1].0) {
                return s;
            }
            sources.push((0, s));
        }
        _ => {}
    }
    // Fast path: sources that follow each other in time.
    sources.sort_by_key(|(_, s)| s[0].0);
    let disjoint = sources
        .windows(2)
        .all(|w| w[0].1.last().map(|l| l.0) < w[1].1.first().map(|f| f.0))
        && sources
            .iter()
            .all(|(_, s)| s.windows(2).all(|w| w[0].0 < w[1].0));
    if disjoint {
        return sources.into_iter().flat_map(|(_, s)| s).collect();
    }
    let mut all: Vec<(i64, u64, f64)> = sources
        .into_iter()
        .flat_map(|(rank, s)| s.into_iter().map(move |(t, v)| (t, rank, v)))
        .collect();
    all.sort_by_key(|&(t, rank, _)| (t, rank));
    let mut out: Vec<(i64, f64)> = Vec::with_capacity(all.len());
    for (t, _, v) in all {
        match out.last_mut() {
            Some(last) if last.0 == t => last.1 = v,
            _ => out.push((t, v)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Options, Tsdb};

    #[test]
    fn a_stepping_cursor_lands_where_a_seek_lands() {
        let dir = tempfile::tempdir().unwrap();
        let kv = strata_kv::Db::open(dir.path(), strata_kv::Options::default()).unwrap();
        let key = |i: u64| format!("k{:05}", i * 3).into_bytes();
        for i in 0..400 {
            kv.put(key(i), b"v").unwrap();
        }
        for i in (0..400).step_by(7) {
            kv.delete(key(i)).unwrap();
        }
        let snap = kv.snapshot();
        let mut c = Cursor::new(&snap, 8);
        let mut x: u64 = 1;
        for round in 0..3000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Mostly short hops forward, sometimes long ones, sometimes back.
            let target = match (x >> 33) % 10 {
                0 => (x >> 40) % 1300,
                1..=7 => (round as u64 % 1250) + (x >> 50) % 30,
                _ => (x >> 45) % 1250,
            };
            let t = format!("k{target:05}").into_bytes();
            c.seek(&t).unwrap();
            let mut fresh = snap.iter();
            fresh.seek(&t).unwrap();
            assert_eq!(c.it.valid(), fresh.valid(), "target {target}");
            if fresh.valid() {
                assert_eq!(c.it.key(), fresh.key(), "target {target}");
            }
            if c.it.valid() && (x & 1) == 0 {
                c.next().unwrap();
            }
        }
    }

    #[test]
    fn decoding_on_several_threads_gives_what_one_thread_gives() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            background: false,
            max_chunk_samples: 50,
            ..Options::default()
        };
        let db = Tsdb::open(dir.path(), opts).unwrap();
        let series: Vec<Labels> = (0..40)
            .map(|i| Labels::from_pairs([("__name__", "m"), ("i", &format!("{i:02}"))]).unwrap())
            .collect();
        let mut t = 0;
        // Compacted (decimal) chunks, flushed (XOR) chunks, then head data.
        for round in 0..3 {
            for _ in 0..300 {
                let mut app = db.appender();
                for (i, l) in series.iter().enumerate() {
                    if (i + round) % 7 != 0 {
                        app.add(l.clone(), t, (t / 1000 + i as i64) as f64 * 0.25);
                    }
                }
                app.commit().unwrap();
                t += 15_000;
            }
            match round {
                0 => {
                    db.flush().unwrap();
                    db.compact().unwrap();
                }
                1 => db.flush().unwrap(),
                _ => {}
            }
        }
        let ms = [Matcher::equal("__name__", "m")];
        for (mint, maxt) in [(0, t), (1_000_000, 9_000_000), (4_400_000, 4_600_000)] {
            let q = db.querier(mint, maxt);
            let one = q.select_sharing_above(&ms, 0, usize::MAX, &|s| s).unwrap();
            let many = q.select_sharing_above(&ms, 0, 0, &|s| s).unwrap();
            assert_eq!(one, many);
            assert!(!one.is_empty());
            assert!(one.windows(2).all(|w| w[0].labels < w[1].labels));
            for s in &one {
                assert!(s.samples.iter().all(|&(t, _)| t >= mint && t <= maxt));
                assert!(s.samples.windows(2).all(|w| w[0].0 < w[1].0));
            }
        }
    }

    /// Series answers with the partitions' bounds in memory and with them read from their
    /// keys, through flushes (copies merged), a compaction and a deletion (copies dropped),
    /// with gaps between chunks and series that left the head.
    #[test]
    fn series_from_bounds_in_memory_match_the_bounds_keys() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            background: false,
            partition_ms: 3_600_000,
            ..Options::default()
        };
        let db = Tsdb::open(dir.path(), opts).unwrap();
        let ms = [Matcher::equal("__name__", "m")];
        let ranges = [
            (0, 10_000_000),
            (0, 0),
            (600_000, 700_000),
            (1_250_000, 1_250_000),
            (1_900_000, 2_100_000),
            (3_000_000, 3_700_000),
            (5_000_000, 9_000_000),
        ];
        let check = |what: &str| {
            for &(mint, maxt) in &ranges {
                let q = db.querier(mint, maxt);
                let held = q.series(&ms).unwrap();
                let within = q.for_each_series_within(&ms, 1000, |_| {}).unwrap();
                for part in q.inner.partitions_overlapping(i64::MIN, i64::MAX) {
                    q.inner.bounds.bypass(part);
                }
                let keys = q.series(&ms).unwrap();
                assert_eq!(held, keys, "{what}: [{mint}, {maxt}]");
                // Without bounds in memory, no answer within a budget.
                let parts = q.inner.partitions_overlapping(mint, maxt).len();
                if parts > 0 {
                    assert_eq!(q.for_each_series_within(&ms, 1000, |_| {}).unwrap(), None);
                }
                // A deletion leaves its partition unbounded until its next compaction:
                // read from its chunk keys, never within a budget.
                if what == "deleted" && within.is_none() {
                    assert!(mint < 3_600_000, "[{mint}, {maxt}]");
                } else {
                    assert_eq!(within, Some(held.len()), "{what}: [{mint}, {maxt}]");
                }
                for part in q.inner.partitions_overlapping(i64::MIN, i64::MAX) {
                    q.inner.bounds.invalidate(part);
                }
            }
            // Loaded again: the next flush merges what it writes into these copies.
            db.querier(0, 10_000_000).series(&ms).unwrap();
        };
        // Series i writes in rounds where (round + i) % 3 != 0: gaps, and series that
        // leave the head after two idle flushes.
        for round in 0..8i64 {
            let mut app = db.appender();
            for i in 0..12i64 {
                if (round + i) % 3 == 0 {
                    continue;
                }
                let l = Labels::from_pairs([("__name__", "m"), ("i", &i.to_string())]).unwrap();
                for k in 0..4 {
                    app.add(l.clone(), round * 600_000 + k * 15_000, 1.0);
                }
            }
            app.commit().unwrap();
            db.flush().unwrap();
            check(&format!("round {round}"));
        }
        db.compact().unwrap();
        check("compacted");
        let dead = [Matcher::equal("i", "4")];
        assert!(db.delete_series(&dead, 0, 2_000_000).unwrap() > 0);
        check("deleted");
    }

    /// The values as the first implementation read them: every key parsed whole, values
    /// copied, a set over all sources.
    fn label_values_oracle(q: &Querier, name: &str) -> Vec<String> {
        let mut all: BTreeSet<String> = q
            .inner
            .head
            .postings
            .label_values(name)
            .into_iter()
            .collect();
        let snap = q.inner.kv.snapshot();
        for part in q.inner.partitions_overlapping(q.mint, q.maxt) {
            for item in snap.prefix(keys::postings_name_prefix(part, name)) {
                let (k, _) = item.unwrap();
                let (n, v) = keys::parse_postings_key(&k).unwrap();
                assert_eq!(n, name);
                all.insert(v);
            }
        }
        all.into_iter().collect()
    }

    #[test]
    fn label_values_read_from_keys_match_the_parsed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            background: false,
            partition_ms: 3_600_000,
            ..Options::default()
        };
        let db = Tsdb::open(dir.path(), opts).unwrap();
        assert_eq!(db.warm_index(usize::MAX).unwrap(), 0);
        // Escaped bytes, a value that is a prefix of another, a name that is a prefix of
        // another, non-ASCII.
        let values = ["a", "a\u{0}b", "ab", "b\u{0}", "\u{0}", "é", "zz"];
        let mut t = 0;
        for round in 0..4i64 {
            let mut app = db.appender();
            for (i, v) in values.iter().enumerate() {
                if (i as i64 + round) % 3 == 0 {
                    continue;
                }
                let l = Labels::from_pairs([("__name__", "m"), ("k", *v), ("kk", "x")]).unwrap();
                app.add(l, t, 1.0);
            }
            app.commit().unwrap();
            // Two flushes in the same partition make two fragments of one value.
            db.flush().unwrap();
            t += 1_800_000;
        }
        let mut app = db.appender();
        app.add(
            Labels::from_pairs([("__name__", "m"), ("k", "head-only")]).unwrap(),
            t,
            1.0,
        );
        app.commit().unwrap();
        for (mint, maxt) in [
            (0, t),
            (0, 0),
            (3_600_000, 3_600_000),
            (t, t + 1),
            (t + 10_000_000, t + 20_000_000),
        ] {
            let q = db.querier(mint, maxt);
            for name in ["k", "kk", "__name__", "nope"] {
                let got = q.label_values(name, &[]).unwrap();
                assert_eq!(
                    got,
                    label_values_oracle(&q, name),
                    "{name} in [{mint}, {maxt}]"
                );
                assert!(got.windows(2).all(|w| w[0] < w[1]));
            }
        }
        // Warming reads every partition's postings, or stops at its bound.
        let full = db.warm_index(usize::MAX).unwrap();
        assert!(full > 0);
        let some = db.warm_index(full / 2).unwrap();
        assert!(some >= full / 2 && some < full);
        let q = db.querier(0, t);
        let all = q.label_values("k", &[]).unwrap();
        assert_eq!(
            q.label_values_within("k", usize::MAX).unwrap(),
            Some(all.clone())
        );
        assert_eq!(q.label_values_within("k", 0).unwrap(), None);
        assert_eq!(
            q.label_values_within("k", all.len()).unwrap(),
            None,
            "fragments are keys too"
        );
        assert_eq!(q.label_values_within("k", 100).unwrap(), Some(all));
        assert_eq!(
            union_sorted(
                vec!["a".into(), "c".into()],
                vec!["b".into(), "c".into(), "d".into()]
            ),
            ["a", "b", "c", "d"]
        );
        assert_eq!(union_sorted(vec![], vec!["b".into()]), ["b"]);
    }

    #[test]
    fn newest_rank_wins_and_output_is_sorted() {
        let got = merge_ranked(vec![
            (5, vec![(1, 1.0), (3, 3.0), (5, 5.0)]),
            (9, vec![(3, 30.0), (4, 40.0)]),
            (1, vec![(0, 0.5), (5, 50.0)]),
        ]);
        assert_eq!(
            got,
            vec![(0, 0.5), (1, 1.0), (3, 30.0), (4, 40.0), (5, 5.0)]
        );
        let got = merge_ranked(vec![(1, vec![(5, 1.0)]), (2, vec![(1, 2.0), (2, 2.0)])]);
        assert_eq!(got, vec![(1, 2.0), (2, 2.0), (5, 1.0)]);
    }
}
