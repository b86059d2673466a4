//! The storage interface the evaluator reads from, and an in-memory implementation.

use std::collections::BTreeMap;

use promql_parser::label::Matcher;

use crate::error::Result;
use crate::labels::Labels;
use crate::value::Sample;

/// A stored series: labels and its samples in time order (stale markers included).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The series' identity.
    pub labels: Labels,
    /// Samples sorted by timestamp, timestamps unique.
    pub samples: Vec<Sample>,
}

/// What [`Queryable::select_reduce`]'s function makes of one series: its labels, how many
/// samples it had (stale markers included, for the query's sample limit) and its value at
/// each step, if it has any.
#[derive(Debug, Clone, PartialEq)]
pub struct Reduced {
    /// The series' identity.
    pub labels: Labels,
    /// Samples the series had in the range.
    pub samples: usize,
    /// One optional value per step; `None` if no step has one.
    pub vals: Option<Vec<Option<f64>>>,
}

/// A function of one series, run where the series is read.
pub type ReduceFn<'a> = dyn Fn(Series) -> Result<Reduced> + Sync + 'a;

/// Anything PromQL can read series from.
pub trait Queryable {
    /// Series matching all `matchers`, with their samples in `[mint, maxt]` (ms, inclusive).
    /// Series with no sample in the range may be omitted. A matcher on a missing label
    /// sees the empty string, as in Prometheus.
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Series>>;

    /// [`Queryable::select`] with `f` applied to each series as soon as it is read, in any
    /// order, possibly on several threads (a store that decodes series on several threads
    /// runs `f` there, while the samples are in cache, and never holds all of them at
    /// once). `weight` is the work `f` does per series, in bytes of chunks to decode that
    /// take as long: it tells whether sharing the work between threads pays.
    fn select_reduce(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        weight: usize,
        f: &ReduceFn<'_>,
    ) -> Result<Vec<Reduced>> {
        let _ = weight;
        self.select(matchers, mint, maxt)?
            .into_iter()
            .map(f)
            .collect()
    }
    /// All label names in use, sorted.
    fn label_names(&self) -> Result<Vec<String>>;
    /// All values of label `name`, sorted.
    fn label_values(&self, name: &str) -> Result<Vec<String>>;
}

/// An in-memory [`Queryable`] (for tests and the test-script runner).
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    series: BTreeMap<Labels, Vec<Sample>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds samples to a series; a sample at an existing timestamp replaces it.
    pub fn append(&mut self, labels: Labels, samples: &[Sample]) {
        let s = self.series.entry(labels).or_default();
        for smp in samples {
            match s.binary_search_by_key(&smp.t, |x| x.t) {
                Ok(i) => s[i] = *smp,
                Err(i) => s.insert(i, *smp),
            }
        }
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.series.clear();
    }
}

/// True if `labels` satisfies every matcher.
pub fn matches(labels: &Labels, matchers: &[Matcher]) -> bool {
    matchers
        .iter()
        .all(|m| m.is_match(labels.get(&m.name).unwrap_or("")))
}

impl Queryable for MemStore {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Series>> {
        let mut out = Vec::new();
        for (labels, samples) in &self.series {
            if !matches(labels, matchers) {
                continue;
            }
            let lo = samples.partition_point(|s| s.t < mint);
            let hi = samples.partition_point(|s| s.t <= maxt);
            if lo < hi {
                out.push(Series {
                    labels: labels.clone(),
                    samples: samples[lo..hi].to_vec(),
                });
            }
        }
        Ok(out)
    }

    fn label_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .series
            .keys()
            .flat_map(|l| l.iter().map(|(k, _)| k.to_string()))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn label_values(&self, name: &str) -> Result<Vec<String>> {
        let mut vals: Vec<String> = self
            .series
            .keys()
            .filter_map(|l| l.get(name).map(str::to_string))
            .collect();
        vals.sort();
        vals.dedup();
        Ok(vals)
    }
}
