//! Expression dispatch, selectors and subqueries.

use std::collections::HashMap;
use std::collections::HashSet;
use std::time::{Instant, SystemTime};

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{AtModifier, Expr, Offset, VectorSelector};

use super::{CancelHandle, EngineOptions, EvalValue, Grid, RangeArg, StepSeries, WindowCursor};

/// What one window of a range function costs, in bytes of chunks a store decodes in the
/// same time (the store shares decoding between threads from 256 KiB on; the engine shares
/// range functions from 32Ki windows on).
const WINDOW_WEIGHT: usize = 8;

/// A range function's work on one series: writes the value of each step (`vals` starts
/// all `None`, one per window end) and says whether it wrote any.
pub(crate) type FillFn<'a> = dyn Fn(&MatrixSeries, &[i64], &mut [Option<f64>]) -> bool + Sync + 'a;
use crate::error::{eval_err, Error, Result};
use crate::labels::METRIC_NAME;
use crate::queryable::{Queryable, Reduced, Series};
use crate::value::{is_stale, MatrixSeries};

/// State of one query evaluation: storage, limits, and collected annotations.
pub struct Evaluator<'a> {
    q: &'a dyn Queryable,
    /// Engine options (lookback, limits).
    pub opts: &'a EngineOptions,
    /// The outer query's grid (`start()`/`end()` refer to it).
    pub query: Grid,
    deadline: Instant,
    cancel: CancelHandle,
    samples: usize,
    /// Per-step slots held (see [`EngineOptions::max_step_slots`]).
    slots: usize,
    /// Warning annotations.
    pub warnings: Vec<String>,
    /// Info annotations.
    pub infos: Vec<String>,
    /// String literals of the query that Prometheus decodes to invalid UTF-8 (see
    /// [`crate::engine::literals`]).
    pub invalid_utf8: HashMap<String, Vec<u8>>,
}

/// A query's deadline and cancellation, checkable from any thread.
#[derive(Debug, Clone)]
pub(crate) struct Checker {
    deadline: Instant,
    cancel: CancelHandle,
}

impl Checker {
    /// Fails if the query ran out of time or was cancelled.
    pub(crate) fn check(&self) -> Result<()> {
        if self.cancel.is_canceled() {
            return Err(Error::Canceled);
        }
        if Instant::now() > self.deadline {
            return Err(Error::Timeout);
        }
        Ok(())
    }
}

/// Milliseconds of a `SystemTime` (negative before the epoch).
fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// Number of samples a value holds.
fn points(v: &EvalValue) -> usize {
    match v {
        EvalValue::Scalar(s) => s.len(),
        EvalValue::String(_) => 0,
        EvalValue::Vector(vs) => vs
            .iter()
            .map(|s| s.vals.iter().filter(|x| x.is_some()).count())
            .sum(),
        EvalValue::Matrix(m) => m.series.iter().map(|s| s.samples.len()).sum(),
    }
}

/// Offset in ms (negative offsets look into the future).
pub(crate) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

impl<'a> Evaluator<'a> {
    /// A fresh evaluation of a query over `query`.
    pub fn new(
        q: &'a dyn Queryable,
        opts: &'a EngineOptions,
        query: Grid,
        deadline: Instant,
        cancel: CancelHandle,
    ) -> Self {
        Evaluator {
            q,
            opts,
            query,
            deadline,
            cancel,
            samples: 0,
            slots: 0,
            warnings: Vec::new(),
            infos: Vec::new(),
            invalid_utf8: HashMap::new(),
        }
    }

    /// `None` if `name` is a valid label name (non-empty valid UTF-8), else the name
    /// quoted as Prometheus shows it.
    pub fn invalid_label_name(&self, name: &str) -> Option<String> {
        if name.is_empty() {
            return Some("\"\"".into());
        }
        self.invalid_utf8
            .get(name)
            .map(|b| crate::engine::literals::go_quote(b))
    }

    /// Fails if the query ran out of time or was cancelled.
    pub fn check(&self) -> Result<()> {
        self.checker().check()
    }

    /// The query's deadline and cancellation, for worker threads.
    pub(crate) fn checker(&self) -> Checker {
        Checker {
            deadline: self.deadline,
            cancel: self.cancel.clone(),
        }
    }

    /// Accounts `n` more samples held; fails past the limit.
    pub fn account(&mut self, n: usize) -> Result<()> {
        self.samples = self.samples.saturating_add(n);
        if self.samples > self.opts.max_samples {
            return Err(Error::TooManySamples);
        }
        Ok(())
    }

    /// Accounts `n` more per-step slots held; fails past the limit.
    pub fn account_slots(&mut self, n: usize) -> Result<()> {
        self.slots = self.slots.saturating_add(n);
        if self.slots > self.opts.max_step_slots {
            return Err(Error::TooManyStepSlots);
        }
        Ok(())
    }

    /// Adds a warning annotation.
    pub fn warn(&mut self, msg: String) {
        if !self.warnings.contains(&msg) {
            self.warnings.push(msg);
        }
    }

    /// Adds an info annotation.
    pub fn info(&mut self, msg: String) {
        if !self.infos.contains(&msg) {
            self.infos.push(msg);
        }
    }

    /// The time an `@` modifier pins evaluation to, if any.
    pub(crate) fn at_ms(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(AtModifier::Start) => Some(self.query.start),
            Some(AtModifier::End) => Some(self.query.end),
            Some(AtModifier::At(t)) => Some(system_time_ms(t)),
        }
    }

    /// The time each step of `grid` evaluates a selector or subquery at: the step, or the
    /// `@` time, minus the offset.
    fn step_times(&self, at: &Option<AtModifier>, offset: &Option<Offset>, grid: Grid) -> Vec<i64> {
        let off = offset_ms(offset);
        let at = self.at_ms(at);
        (0..grid.len())
            .map(|i| at.unwrap_or(grid.ts(i)) - off)
            .collect()
    }

    /// Evaluates `expr` at every step of `grid`.
    ///
    /// Sample accounting tracks what is held at once, as Prometheus: while a node is
    /// evaluated its inputs count; once it has its result, the inputs are released and the
    /// result's points count instead.
    pub fn eval(&mut self, expr: &Expr, grid: Grid) -> Result<EvalValue> {
        self.check()?;
        // Every column is `grid.len()` long; one longer than the whole budget cannot be
        // held, whatever it contains.
        if grid.len() > self.opts.max_samples {
            return Err(Error::TooManySamples);
        }
        let (held, held_slots) = (self.samples, self.slots);
        let v = self.eval_node(expr, grid)?;
        self.samples = held;
        self.slots = held_slots;
        self.account(points(&v))?;
        if let EvalValue::Vector(vs) = &v {
            self.account_slots(vs.len().saturating_mul(grid.len()))?;
        }
        Ok(v)
    }

    fn eval_node(&mut self, expr: &Expr, grid: Grid) -> Result<EvalValue> {
        match expr {
            Expr::NumberLiteral(n) => Ok(EvalValue::Scalar(vec![n.val; grid.len()])),
            Expr::StringLiteral(s) => Ok(EvalValue::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, grid),
            Expr::Unary(u) => match self.eval(&u.expr, grid)? {
                EvalValue::Scalar(v) => Ok(EvalValue::Scalar(v.into_iter().map(|x| -x).collect())),
                EvalValue::Vector(mut vs) => {
                    for s in &mut vs {
                        s.drop_name = true;
                        for v in s.vals.iter_mut().flatten() {
                            *v = -*v;
                        }
                    }
                    Ok(EvalValue::Vector(vs))
                }
                _ => eval_err(
                    "unary expression only allowed on expressions of type scalar or instant vector",
                ),
            },
            Expr::VectorSelector(vs) => {
                Ok(EvalValue::Vector(self.vector_selector(vs, grid, false)?))
            }
            Expr::MatrixSelector(ms) => {
                let r = ms.range.as_millis() as i64;
                Ok(EvalValue::Matrix(self.range_selector(&ms.vs, r, grid)?))
            }
            Expr::Subquery(sq) => {
                let range = sq.range.as_millis() as i64;
                let step = sq
                    .step
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(self.opts.default_subquery_step_ms);
                if step <= 0 {
                    return eval_err("zero or negative subquery step");
                }
                let ends = self.step_times(&sq.at, &sq.offset, grid);
                let (Some(&min_end), Some(&max_end)) = (ends.iter().min(), ends.iter().max())
                else {
                    return Ok(EvalValue::Matrix(RangeArg {
                        series: Vec::new(),
                        ends,
                        range,
                    }));
                };
                // Inner steps are aligned to multiples of the subquery step, as Prometheus.
                let lo = min_end - range;
                let mut start = lo.div_euclid(step) * step;
                if start <= lo {
                    start += step;
                }
                let inner = Grid {
                    start,
                    end: max_end,
                    step,
                };
                let v = self.eval(&sq.expr, inner)?;
                let series = match v {
                    EvalValue::Vector(vs) => super::finish_vector(vs, inner.len())?
                        .into_iter()
                        .map(|s| MatrixSeries {
                            labels: s.labels,
                            samples: s
                                .vals
                                .iter()
                                .enumerate()
                                .filter_map(|(i, v)| {
                                    v.map(|v| crate::value::Sample { t: inner.ts(i), v })
                                })
                                .collect(),
                        })
                        .collect(),
                    EvalValue::Scalar(vs) => vec![MatrixSeries {
                        labels: Default::default(),
                        samples: vs
                            .iter()
                            .enumerate()
                            .map(|(i, v)| crate::value::Sample {
                                t: inner.ts(i),
                                v: *v,
                            })
                            .collect(),
                    }],
                    _ => return eval_err("subquery is only allowed on instant vector"),
                };
                let n: usize = series.iter().map(|s: &MatrixSeries| s.samples.len()).sum();
                self.account(n)?;
                Ok(EvalValue::Matrix(RangeArg {
                    series,
                    ends,
                    range,
                }))
            }
            Expr::Call(c) => super::functions::call(self, c, grid),
            Expr::Aggregate(a) => super::aggregate::eval(self, a, grid),
            Expr::Binary(b) => super::binary::eval(self, b, grid),
            Expr::Extension(_) => eval_err("extension expressions are not supported"),
        }
    }

    /// Evaluates `expr`, which must produce an instant vector.
    pub fn eval_vector(&mut self, expr: &Expr, grid: Grid) -> Result<Vec<StepSeries>> {
        match self.eval(expr, grid)? {
            EvalValue::Vector(v) => Ok(v),
            _ => eval_err("expected instant vector"),
        }
    }

    /// Evaluates `expr`, which must produce a scalar.
    pub fn eval_scalar(&mut self, expr: &Expr, grid: Grid) -> Result<Vec<f64>> {
        match self.eval(expr, grid)? {
            EvalValue::Scalar(v) => Ok(v),
            _ => eval_err("expected scalar"),
        }
    }

    /// Evaluates `expr`, which must produce a range vector.
    pub fn eval_matrix(&mut self, expr: &Expr, grid: Grid) -> Result<RangeArg> {
        match self.eval(expr, grid)? {
            EvalValue::Matrix(m) => Ok(m),
            _ => eval_err("expected range vector"),
        }
    }

    /// Selects the series matching all `matchers` with samples in `[mint, maxt]`, sorted by
    /// labels, stale markers kept; the samples count against the limit.
    pub(crate) fn select_matchers(
        &mut self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Series>> {
        let mut out = self.q.select(matchers, mint, maxt)?;
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        let n: usize = out.iter().map(|s| s.samples.len()).sum();
        self.account(n)?;
        self.check()?;
        Ok(out)
    }

    /// Selects the series of `vs` with samples in `[mint, maxt]`, stale markers kept.
    fn select(&mut self, vs: &VectorSelector, mint: i64, maxt: i64) -> Result<Vec<Series>> {
        let mut base: Vec<Matcher> = vs.matchers.matchers.clone();
        if let Some(n) = &vs.name {
            base.push(Matcher::new(MatchOp::Equal, METRIC_NAME, n));
        }
        let mut out = if vs.matchers.or_matchers.is_empty() {
            self.q.select(&base, mint, maxt)?
        } else {
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            for group in &vs.matchers.or_matchers {
                let mut ms = base.clone();
                ms.extend(group.iter().cloned());
                for s in self.q.select(&ms, mint, maxt)? {
                    if seen.insert(s.labels.clone()) {
                        out.push(s);
                    }
                }
            }
            out
        };
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        let n: usize = out.iter().map(|s| s.samples.len()).sum();
        self.account(n)?;
        self.check()?;
        Ok(out)
    }

    /// An instant vector selector at every step: the latest sample in
    /// `(t - lookback, t]`, none if that sample is a staleness marker. With `timestamps`,
    /// the value is the sample's timestamp in seconds (for `timestamp()`).
    pub fn vector_selector(
        &mut self,
        vs: &VectorSelector,
        grid: Grid,
        timestamps: bool,
    ) -> Result<Vec<StepSeries>> {
        let times = self.step_times(&vs.at, &vs.offset, grid);
        let (Some(&mint), Some(&maxt)) = (times.iter().min(), times.iter().max()) else {
            return Ok(Vec::new());
        };
        let lookback = self.opts.lookback_delta_ms;
        let series = self.select(vs, mint - lookback + 1, maxt)?;
        self.sample_at(series, &times, timestamps)
    }

    /// The value of each series at each of `times`: its latest sample within the lookback
    /// delta, none if that is a staleness marker (or its timestamp in seconds, with
    /// `timestamps`).
    pub(crate) fn sample_at(
        &mut self,
        series: Vec<Series>,
        times: &[i64],
        timestamps: bool,
    ) -> Result<Vec<StepSeries>> {
        let n = times.len();
        let lookback = self.opts.lookback_delta_ms;
        // Checked before the columns are allocated.
        self.account_slots(series.len().saturating_mul(n))?;
        let mut out = Vec::with_capacity(series.len());
        for (k, s) in series.into_iter().enumerate() {
            if k % 256 == 255 {
                self.check()?;
            }
            let mut vals = vec![None; n];
            let mut any = false;
            // The window of a step is `(t - lookback, t]`: its last sample is the answer.
            let mut cursor = WindowCursor::default();
            for (i, &t) in times.iter().enumerate() {
                let hi = cursor.window(&s.samples, t, lookback).end;
                if hi == 0 {
                    continue;
                }
                let smp = s.samples[hi - 1];
                if smp.t <= t - lookback || is_stale(smp.v) {
                    continue;
                }
                vals[i] = Some(if timestamps {
                    smp.t as f64 / 1000.0
                } else {
                    smp.v
                });
                any = true;
            }
            if any {
                out.push(StepSeries {
                    labels: s.labels,
                    drop_name: false,
                    vals,
                });
            }
        }
        Ok(out)
    }

    /// A range selector at every step: samples in `(t - range, t]`, stale markers dropped.
    pub fn range_selector(
        &mut self,
        vs: &VectorSelector,
        range: i64,
        grid: Grid,
    ) -> Result<RangeArg> {
        let ends = self.step_times(&vs.at, &vs.offset, grid);
        let (Some(&mint), Some(&maxt)) = (ends.iter().min(), ends.iter().max()) else {
            return Ok(RangeArg {
                series: Vec::new(),
                ends,
                range,
            });
        };
        let series = self
            .select(vs, mint - range + 1, maxt)?
            .into_iter()
            .map(|s| {
                // In place: most series hold no stale marker, and this costs no copy.
                let mut samples = s.samples;
                samples.retain(|x| !is_stale(x.v));
                MatrixSeries {
                    labels: s.labels,
                    samples,
                }
            })
            .collect();
        Ok(RangeArg {
            series,
            ends,
            range,
        })
    }

    /// [`Evaluator::range_selector`] with `fill` applied to each series where the store
    /// reads it ([`Queryable::select_reduce`]): the same series and values as selecting
    /// the range vector and then filling each series, without holding every series'
    /// samples at once, and with the samples still in cache when `fill` reads them.
    /// `None` (nothing selected) for selectors with `or` groups, whose series are
    /// deduplicated across several selects.
    pub(crate) fn range_selector_reduce(
        &mut self,
        vs: &VectorSelector,
        range: i64,
        grid: Grid,
        drop_name: bool,
        fill: &FillFn<'_>,
    ) -> Result<Option<Vec<StepSeries>>> {
        if !vs.matchers.or_matchers.is_empty() {
            return Ok(None);
        }
        let ends = self.step_times(&vs.at, &vs.offset, grid);
        let (Some(&mint), Some(&maxt)) = (ends.iter().min(), ends.iter().max()) else {
            return Ok(Some(Vec::new()));
        };
        let mut base: Vec<Matcher> = vs.matchers.matchers.clone();
        if let Some(n) = &vs.name {
            base.push(Matcher::new(MatchOp::Equal, METRIC_NAME, n));
        }
        let checker = self.checker();
        let reduce = |s: Series| -> Result<Reduced> {
            checker.check()?;
            let held = s.samples.len();
            let mut samples = s.samples;
            samples.retain(|x| !is_stale(x.v));
            let ms = MatrixSeries {
                labels: s.labels,
                samples,
            };
            let mut vals = vec![None; ends.len()];
            let any = fill(&ms, &ends, &mut vals);
            Ok(Reduced {
                labels: ms.labels,
                samples: held,
                vals: any.then_some(vals),
            })
        };
        let weight = ends.len().saturating_mul(WINDOW_WEIGHT);
        let out = self
            .q
            .select_reduce(&base, mint - range + 1, maxt, weight, &reduce)?;
        // The samples count as if the range vector had been selected whole.
        let n: usize = out.iter().map(|r| r.samples).sum();
        self.account(n)?;
        self.check()?;
        let mut out: Vec<StepSeries> = out
            .into_iter()
            .filter_map(|r| {
                r.vals.map(|vals| StepSeries {
                    labels: r.labels,
                    drop_name,
                    vals,
                })
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(Some(out))
    }
}
