//! Reading: [`Querier`] selects series by matchers over a time range, merging the head and
//! every partition of the range.
//!
//! A label set may have data in several places: the head, several partitions, even two
//! references in one partition (a series that left the head and came back). Samples are
//! merged per label set; where two sources hold the same timestamp the newer write wins:
//! every source has a rank (a persisted chunk's flush sequence, doubled, plus one for
//! out-of-order chunks; head data above all persisted data).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::db::{decode_chunk_value, parse_chunk, Columns, Inner};
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
    pub fn select(&self, matchers: &[Matcher]) -> Result<Vec<Series>> {
        let (mint, maxt) = (self.mint, self.maxt);
        if mint > maxt {
            return Ok(Vec::new());
        }
        let mut groups: BTreeMap<Labels, Vec<Ranked>> = BTreeMap::new();

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
                    sources.push((HEAD_RANK + i as u64, decode_in_range(&c.chunk, mint, maxt)));
                }
            }
            let n = s.closed.len() as u64;
            if let Some(o) = &s.open {
                if o.maxt >= mint && o.mint <= maxt {
                    sources.push((HEAD_RANK + n, decode_in_range(o.app.chunk(), mint, maxt)));
                }
            }
            let ooo: Vec<(i64, f64)> = s.ooo.range(mint..=maxt).map(|(t, v)| (*t, *v)).collect();
            if !ooo.is_empty() {
                sources.push((HEAD_RANK + n + 1, ooo));
            }
            if !sources.is_empty() {
                groups.entry(s.labels.clone()).or_default().extend(sources);
            }
        }

        let snap = self.inner.kv.snapshot();
        let mut columns = Columns::new(&snap);
        for part in self.inner.partitions_overlapping(mint, maxt) {
            for (r, labels) in selected(&snap, part, matchers)? {
                let mut sources = Vec::new();
                let (start, end) = chunk_range(part, r, maxt);
                for item in snap.scan(start.as_slice()..end.as_slice()) {
                    let (k, v) = item?;
                    let (_, _, rank) = parse_chunk(&k)?;
                    let (cmaxt, chunk) = decode_chunk_value(&k, r, &v, &mut columns)?;
                    if cmaxt < mint {
                        continue;
                    }
                    let mut samples = Vec::with_capacity(chunk.num_samples());
                    for smp in chunk.iter() {
                        let (t, v) = smp.map_err(|e| crate::db::chunk_error(&k, r, e))?;
                        if t >= mint && t <= maxt {
                            samples.push((t, v));
                        }
                    }
                    sources.push((rank, samples));
                }
                if !sources.is_empty() {
                    groups.entry(labels).or_default().extend(sources);
                }
            }
        }

        Ok(groups
            .into_iter()
            .filter_map(|(labels, sources)| {
                let samples = merge_ranked(sources);
                (!samples.is_empty()).then_some(Series { labels, samples })
            })
            .collect())
    }

    /// The label sets of the series selected by `matchers` that hold a chunk overlapping the
    /// range (chunk granularity, as Prometheus answers `/api/v1/series`), sorted.
    pub fn series(&self, matchers: &[Matcher]) -> Result<Vec<Labels>> {
        let (mint, maxt) = (self.mint, self.maxt);
        let mut out = BTreeSet::new();
        if mint > maxt {
            return Ok(Vec::new());
        }
        for r in postings::select(&self.inner.head.postings, matchers) {
            if let Some(s) = self.inner.head.get(r) {
                let s = head::lock(&s);
                let overlaps = s.closed.iter().any(|c| c.mint <= maxt && c.maxt >= mint)
                    || s.open
                        .as_ref()
                        .is_some_and(|o| o.mint <= maxt && o.maxt >= mint)
                    || s.ooo.range(mint..=maxt).next().is_some();
                if overlaps {
                    out.insert(s.labels.clone());
                }
            }
        }
        let snap = self.inner.kv.snapshot();
        for part in self.inner.partitions_overlapping(mint, maxt) {
            for (r, l) in selected(&snap, part, matchers)? {
                if out.contains(&l) {
                    continue;
                }
                let (start, end) = chunk_range(part, r, maxt);
                for item in snap.scan(start.as_slice()..end.as_slice()) {
                    let (k, v) = item?;
                    let cmaxt = keys::get_i64(&v).ok_or_else(|| Error::Corruption {
                        location: format!("key {}", crate::error::show_key(&k)),
                        offset: 0,
                        reason: "chunk value shorter than its header".into(),
                    })?;
                    if cmaxt >= mint {
                        out.insert(l);
                        break;
                    }
                }
            }
        }
        Ok(out.into_iter().collect())
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
        let mut values: BTreeSet<String> = self
            .inner
            .head
            .postings
            .label_values(name)
            .into_iter()
            .collect();
        let snap = self.inner.kv.snapshot();
        for part in self.inner.partitions_overlapping(self.mint, self.maxt) {
            let idx = PartitionIndex::new(&snap, part);
            let lists = idx.values_with_lists(name)?;
            values.extend(lists.into_keys());
        }
        Ok(values.into_iter().collect())
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

/// The series of partition `part` selected by `matchers`, with their labels (deleted ones
/// left out).
fn selected(
    snap: &strata_kv::Snapshot,
    part: i64,
    matchers: &[Matcher],
) -> Result<Vec<(crate::postings::SeriesRef, Labels)>> {
    let idx = PartitionIndex::new(snap, part);
    let refs = postings::select(&idx, matchers);
    idx.take_error()?;
    let mut out = Vec::with_capacity(refs.len());
    for r in refs {
        if let Some(l) = idx.labels(r)? {
            out.push((r, l));
        }
    }
    Ok(out)
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
