//! A result cache for range queries, as VictoriaMetrics' rollup result cache and the
//! Thanos/Cortex query frontend: dashboards re-run the same range query every refresh, and
//! PromQL evaluates each step on its own, so the steps of an earlier answer stay exact
//! while the data they read is unchanged. A repeat evaluates only the steps the entry lacks
//! (typically the recent tail) and merges series by label set.
//!
//! Correctness rests on two rules:
//! - Steps newer than `now - offset` are never kept (their data is still arriving).
//! - An entry remembers the store's [`strata_tsdb::Tsdb::data_generation`] when it was
//!   computed; the store bumps it when a sample at or before the cache boundary is
//!   appended, when data is deleted and when retention drops a partition. A changed
//!   generation drops the entry. Ordinary ingest (recent samples) leaves it alone.
//!
//! Only queries whose steps read nothing newer than the step itself and nothing but the
//! step are cached: no `@` modifier, no negative offset, no `start()`/`end()`/`range()`/
//! `step()`. Answers with warnings or infos are not cached (nor merged).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use promql_parser::parser::{AtModifier, Expr, Offset};
use promql_parser::util::{walk_expr, ExprVisitor};
use strata_promql::value::MatrixSeries;
use strata_promql::{Engine, Labels, QueryResult, Queryable, Value};
use strata_tsdb::Tsdb;

/// What identifies an entry: the (normalised) query and the step grid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    query: String,
    step: i64,
    /// `start mod step`: the grid's phase.
    phase: i64,
}

struct Entry {
    /// `data_generation` when computed.
    gen: u64,
    /// First and last step held (on the grid).
    start: i64,
    end: i64,
    series: Arc<Vec<MatrixSeries>>,
    bytes: usize,
    /// Last use (for LRU eviction).
    used: u64,
}

#[derive(Default)]
struct Entries {
    map: HashMap<CacheKey, Entry>,
    bytes: usize,
    tick: u64,
}

/// The cache; shared by all query handlers.
pub struct ResultCache {
    max_bytes: usize,
    offset_ms: i64,
    entries: Mutex<Entries>,
    hits: AtomicU64,
    misses: AtomicU64,
    stores: AtomicU64,
    invalidations: AtomicU64,
}

/// Finds what makes a query's steps depend on more than their own time and older data.
struct Uncacheable(bool);

impl ExprVisitor for Uncacheable {
    type Error = ();

    fn pre_visit(&mut self, e: &Expr) -> Result<bool, ()> {
        let (at, offset) = match e {
            Expr::VectorSelector(vs) => (&vs.at, &vs.offset),
            Expr::MatrixSelector(ms) => (&ms.vs.at, &ms.vs.offset),
            Expr::Subquery(sq) => (&sq.at, &sq.offset),
            Expr::Call(c) => {
                if matches!(c.func.name, "start" | "end" | "range" | "step") {
                    self.0 = true;
                }
                (&None, &None)
            }
            Expr::Extension(_) => {
                self.0 = true;
                (&None, &None)
            }
            _ => (&None, &None),
        };
        // `@` reads data at a fixed time (or the request's start/end); a negative offset
        // reads data newer than the step, which the boundary does not cover.
        let at: &Option<AtModifier> = at;
        let offset: &Option<Offset> = offset;
        if at.is_some() || matches!(offset, Some(Offset::Neg(_))) {
            self.0 = true;
        }
        Ok(!self.0)
    }
}

/// Approximate bytes an entry's series hold.
fn series_bytes(s: &[MatrixSeries]) -> usize {
    s.iter()
        .map(|m| {
            let labels: usize = m.labels.iter().map(|(n, v)| n.len() + v.len() + 48).sum();
            labels + 64 + m.samples.len() * std::mem::size_of::<strata_promql::Sample>()
        })
        .sum()
}

/// The samples of `s` at steps in `[lo, hi]`.
fn window(s: &[strata_promql::Sample], lo: i64, hi: i64) -> &[strata_promql::Sample] {
    let a = s.partition_point(|p| p.t < lo);
    let b = s.partition_point(|p| p.t <= hi);
    &s[a..b.max(a)]
}

/// Series in label order, each with its samples in time order: `parts` are given oldest
/// first and cover disjoint step ranges; each is sorted by labels (as range query answers
/// are).
fn merge(parts: &[&[MatrixSeries]], lo: i64, hi: i64) -> Vec<MatrixSeries> {
    let mut by_labels: BTreeMap<&Labels, Vec<strata_promql::Sample>> = BTreeMap::new();
    for part in parts {
        for s in *part {
            let w = window(&s.samples, lo, hi);
            if !w.is_empty() {
                by_labels.entry(&s.labels).or_default().extend_from_slice(w);
            }
        }
    }
    by_labels
        .into_iter()
        .map(|(l, samples)| MatrixSeries {
            labels: l.clone(),
            samples,
        })
        .collect()
}

/// The matrix of a clean answer (no warnings or infos), else `None`.
fn clean_matrix(r: QueryResult) -> Result<Vec<MatrixSeries>, QueryResult> {
    match r.value {
        Value::Matrix(m) if r.warnings.is_empty() && r.infos.is_empty() => Ok(m),
        _ => Err(r),
    }
}

impl ResultCache {
    /// A cache of at most `max_bytes` (0 disables it) keeping no step newer than
    /// `now - offset_ms`.
    pub fn new(max_bytes: usize, offset_ms: i64) -> Self {
        ResultCache {
            max_bytes,
            offset_ms: offset_ms.max(0),
            entries: Mutex::new(Entries::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stores: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
        }
    }

    /// Whether the cache is on.
    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    /// The key of a range query, or `None` if it must not be cached (or does not parse:
    /// the engine reports that).
    pub fn key(query: &str, start: i64, step: i64) -> Option<CacheKey> {
        let expr = promql_parser::parser::parse(query).ok()?;
        let mut v = Uncacheable(false);
        if walk_expr(&mut v, &expr).is_err() || v.0 {
            return None;
        }
        // The printed AST is the key only if it parses back to the same AST: then two
        // queries printing alike are the same query. Otherwise the exact text is.
        let printed = expr.to_string();
        let query = match promql_parser::parser::parse(&printed) {
            Ok(back) if back == expr => printed,
            _ => query.to_string(),
        };
        Some(CacheKey {
            query,
            step,
            phase: start.rem_euclid(step),
        })
    }

    /// Evaluates the range query `query` (whose key is `key`) over `[start, end]` by
    /// `step`, from cached steps where it can. `now` is the wall clock (ms).
    #[allow(clippy::too_many_arguments)]
    pub fn range_query(
        &self,
        key: CacheKey,
        engine: &Engine,
        q: &dyn Queryable,
        tsdb: &Tsdb,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
        now: i64,
    ) -> strata_promql::Result<QueryResult> {
        let last = start + (end - start) / step * step;
        let boundary = now.saturating_sub(self.offset_ms);
        // Raised before the generation is read: a late write after this bumps it.
        tsdb.watch_writes_before(boundary);
        let gen = tsdb.data_generation();
        let cached = self.lookup(&key, gen, start, last);
        let merged = match &cached {
            Some((es, ee, series)) => {
                let mut parts: Vec<Vec<MatrixSeries>> = Vec::new();
                let mut pieces = Vec::new();
                if start < *es {
                    pieces.push((start, es - step));
                }
                if last > *ee {
                    pieces.push((ee + step, last));
                }
                for (a, b) in pieces {
                    match clean_matrix(engine.range_query(q, query, a, b, step)?) {
                        Ok(m) => parts.push(m),
                        // Warnings of a part may not be those of the whole: no shortcut.
                        Err(_) => return engine.range_query(q, query, start, end, step),
                    }
                }
                let head = if start < *es {
                    parts.remove(0)
                } else {
                    Vec::new()
                };
                let tail = parts.pop().unwrap_or_default();
                merge(&[&head, series, &tail], start, last)
            }
            None => match clean_matrix(engine.range_query(q, query, start, end, step)?) {
                Ok(m) => m,
                Err(r) => return Ok(r),
            },
        };
        self.store(key, gen, tsdb, &merged, start, last.min(boundary), step);
        Ok(QueryResult {
            value: Value::Matrix(merged),
            warnings: Vec::new(),
            infos: Vec::new(),
        })
    }

    /// The entry's steps and series if it is current and overlaps `[start, last]`.
    fn lookup(
        &self,
        key: &CacheKey,
        gen: u64,
        start: i64,
        last: i64,
    ) -> Option<(i64, i64, Arc<Vec<MatrixSeries>>)> {
        let mut g = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        g.tick += 1;
        let tick = g.tick;
        let found = match g.map.get_mut(key) {
            Some(e) if e.gen != gen => {
                self.invalidations.fetch_add(1, Relaxed);
                let e = g.map.remove(key);
                g.bytes -= e.map_or(0, |e| e.bytes);
                None
            }
            Some(e) if e.start <= last && e.end >= start => {
                e.used = tick;
                Some((e.start, e.end, Arc::clone(&e.series)))
            }
            _ => None,
        };
        match found {
            Some(_) => self.hits.fetch_add(1, Relaxed),
            None => self.misses.fetch_add(1, Relaxed),
        };
        found
    }

    /// Keeps the steps `[start, until]` of `series` (on the grid of `start`), computed at
    /// generation `gen`, if the data did not change meanwhile and they fit.
    #[allow(clippy::too_many_arguments)]
    fn store(
        &self,
        key: CacheKey,
        gen: u64,
        tsdb: &Tsdb,
        series: &[MatrixSeries],
        start: i64,
        until: i64,
        step: i64,
    ) {
        if until < start {
            return;
        }
        let end = start + (until - start) / step * step;
        let kept: Vec<MatrixSeries> = series
            .iter()
            .filter_map(|s| {
                let w = window(&s.samples, start, end);
                (!w.is_empty()).then(|| MatrixSeries {
                    labels: s.labels.clone(),
                    samples: w.to_vec(),
                })
            })
            .collect();
        let bytes = series_bytes(&kept) + key.query.len() + 128;
        // One entry may take at most a quarter of the cache.
        if bytes > self.max_bytes / 4 {
            return;
        }
        let mut g = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock, after the answer was computed: a write during the
        // evaluation bumped it, and the answer may hold part of it.
        if tsdb.data_generation() != gen {
            return;
        }
        g.tick += 1;
        let used = g.tick;
        if let Some(old) = g.map.remove(&key) {
            g.bytes -= old.bytes;
        }
        while g.bytes + bytes > self.max_bytes {
            let Some(victim) = g
                .map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = g.map.remove(&victim) {
                g.bytes -= e.bytes;
            }
        }
        g.bytes += bytes;
        g.map.insert(
            key,
            Entry {
                gen,
                start,
                end,
                series: Arc::new(kept),
                bytes,
                used,
            },
        );
        self.stores.fetch_add(1, Relaxed);
    }

    /// Bytes held (estimated) and entries.
    pub fn size(&self) -> (usize, usize) {
        let g = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        (g.bytes, g.map.len())
    }

    /// Hits and misses so far.
    pub fn hits_misses(&self) -> (u64, u64) {
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }

    /// Appends the cache's figures in the Prometheus text format.
    pub fn render(&self, o: &mut String) {
        let (bytes, entries) = self.size();
        for (kind, name, help, v) in [
            (
                "counter",
                "strata_query_cache_hits_total",
                "Range queries answered in part or whole from the result cache.",
                self.hits.load(Relaxed),
            ),
            (
                "counter",
                "strata_query_cache_misses_total",
                "Cacheable range queries with no usable cache entry.",
                self.misses.load(Relaxed),
            ),
            (
                "counter",
                "strata_query_cache_stores_total",
                "Range query results stored in the cache.",
                self.stores.load(Relaxed),
            ),
            (
                "counter",
                "strata_query_cache_invalidations_total",
                "Cache entries dropped because older data changed (late write, delete, retention).",
                self.invalidations.load(Relaxed),
            ),
            (
                "gauge",
                "strata_query_cache_bytes",
                "Estimated bytes held by the result cache.",
                bytes as u64,
            ),
            (
                "gauge",
                "strata_query_cache_entries",
                "Entries in the result cache.",
                entries as u64,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        let _ = writeln!(
            o,
            "# HELP strata_query_cache_max_bytes Result cache size limit.\n# TYPE strata_query_cache_max_bytes gauge\nstrata_query_cache_max_bytes {}",
            self.max_bytes
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_cacheable() {
        for q in [
            "rate(x[5m])",
            "sum by (job) (rate(x[5m] offset 1h))",
            "time() - x",
            "max_over_time(x[10m:1m])",
        ] {
            assert!(ResultCache::key(q, 0, 15_000).is_some(), "{q}");
        }
        for q in [
            "x @ 100",
            "x @ end()",
            "rate(x[5m] @ start())",
            "x offset -5m",
            "sum(x[5m:1m] @ 10)",
            "x + step()",
            "not a query ((",
        ] {
            assert!(ResultCache::key(q, 0, 15_000).is_none(), "{q}");
        }
        let a = ResultCache::key("sum(rate(x[5m]))", 30_000, 15_000);
        let b = ResultCache::key("sum( rate( x[5m] ) )", 0, 15_000);
        assert_eq!(a, b);
        assert_ne!(a, ResultCache::key("sum(rate(x[5m]))", 1_000, 15_000));
    }
}
