//! The PromQL evaluator.
//!
//! Design: range-first. [`eval::Evaluator::eval`] evaluates an expression for every step of a
//! [`Grid`] at once and returns one dense column of values per series. A selector selects
//! its series once for the whole range and slides the lookback (or range) window over the
//! samples; an instant query is a range query with one step.

pub mod aggregate;
pub mod binary;
pub mod eval;
pub mod functions;
pub mod literals;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::labels::{Labels, METRIC_NAME};
use crate::queryable::Queryable;
use crate::value::{MatrixSeries, Sample, Value, VectorElement};

/// Limits and defaults of an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for the latest sample (default 5m).
    pub lookback_delta_ms: i64,
    /// Most samples a query may hold (default 50,000,000, as Prometheus).
    pub max_samples: usize,
    /// Longest a query may run (default 2 minutes).
    pub timeout: Duration,
    /// Step of subqueries without an explicit step (default 1m).
    pub default_subquery_step_ms: i64,
    /// Most per-step slots (series × steps, filled or not) the instant vectors of a query
    /// may hold at once (default 200,000,000, about 3.2 GB). Instant vectors are dense
    /// per-step columns, so a range query over many short-lived series costs memory for
    /// every step, beyond the points `max_samples` counts as Prometheus does.
    pub max_step_slots: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta_ms: 5 * 60 * 1000,
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            default_subquery_step_ms: 60_000,
            max_step_slots: 200_000_000,
        }
    }
}

/// The outcome of a successful query: a value plus Prometheus-style annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// The result.
    pub value: Value,
    /// Warnings (results may be wrong or incomplete).
    pub warnings: Vec<String>,
    /// Infos (results are fine but the query may not do what was meant).
    pub infos: Vec<String>,
}

/// Evaluates PromQL against a [`Queryable`]. Cheap to clone; stateless between queries.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    opts: EngineOptions,
}

/// The evaluation steps of a (sub)query: `start, start+step, ..., <= end` (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// First step.
    pub start: i64,
    /// Last step (inclusive bound).
    pub end: i64,
    /// Interval between steps (> 0).
    pub step: i64,
}

impl Grid {
    /// Number of steps.
    pub fn len(&self) -> usize {
        if self.end < self.start {
            0
        } else {
            ((self.end - self.start) / self.step) as usize + 1
        }
    }
    /// True if there is no step.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Timestamp of step `i`.
    pub fn ts(&self, i: usize) -> i64 {
        self.start + self.step * i as i64
    }
}

/// One series of an instant vector over all steps of a grid. `vals[i]` is `None` where the
/// series has no value at step `i`. `drop_name` records Prometheus' delayed `__name__`
/// removal: the name is removed at the end of the query (or where a label is changed).
#[derive(Debug, Clone, PartialEq)]
pub struct StepSeries {
    /// The labels (still including `__name__` when `drop_name` is set).
    pub labels: Labels,
    /// Remove `__name__` when the query finishes.
    pub drop_name: bool,
    /// One optional value per step.
    pub vals: Vec<Option<f64>>,
}

/// A range vector over all steps: series' samples (stale markers removed) and, per step,
/// the window `(end - range, end]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeArg {
    /// The series.
    pub series: Vec<MatrixSeries>,
    /// Window end per step.
    pub ends: Vec<i64>,
    /// Window length (ms).
    pub range: i64,
}

impl RangeArg {
    /// The samples of `s` in the window of step `i`.
    pub fn window<'a>(&self, s: &'a MatrixSeries, i: usize) -> &'a [Sample] {
        let end = self.ends[i];
        let lo = s.samples.partition_point(|x| x.t <= end - self.range);
        let hi = s.samples.partition_point(|x| x.t <= end);
        &s.samples[lo..hi.max(lo)]
    }
}

/// Finds the windows `(end - range, end]` of one series step after step. Window ends never
/// decrease along a grid (they are all equal under `@`), so both edges only move forward:
/// a whole series costs `O(samples + steps)` instead of two binary searches per step. An
/// end smaller than the previous one starts over from the first sample.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WindowCursor {
    lo: usize,
    hi: usize,
    end: Option<i64>,
}

impl WindowCursor {
    /// The index range of the samples of `samples` (sorted by time) in `(end - range, end]`.
    #[inline]
    pub(crate) fn window(
        &mut self,
        samples: &[Sample],
        end: i64,
        range: i64,
    ) -> std::ops::Range<usize> {
        if self.end.is_some_and(|e| end < e) {
            *self = WindowCursor::default();
        }
        self.end = Some(end);
        let start = end.saturating_sub(range);
        self.lo = forward(samples, self.lo, start);
        self.hi = forward(samples, self.hi.max(self.lo), end);
        self.lo..self.hi
    }
}

/// The first index at or after `from` whose sample is after `t` (`samples` sorted by
/// time): a few steps linearly, then by binary search.
#[inline(always)]
fn forward(samples: &[Sample], from: usize, t: i64) -> usize {
    let rest = samples.get(from..).unwrap_or_default();
    for (k, x) in rest.iter().take(8).enumerate() {
        if x.t > t {
            return from + k;
        }
    }
    if rest.len() <= 8 {
        return samples.len();
    }
    from + 8 + rest[8..].partition_point(|x| x.t <= t)
}

/// An intermediate value over all steps.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalValue {
    /// One scalar per step.
    Scalar(Vec<f64>),
    /// A string (same at every step).
    String(String),
    /// An instant vector at every step.
    Vector(Vec<StepSeries>),
    /// A range vector at every step.
    Matrix(RangeArg),
}

/// Cancels a running query from another thread.
#[derive(Debug, Clone, Default)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    /// Requests cancellation; the query fails with [`Error::Canceled`] at its next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub(crate) fn is_canceled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// True if the order of the final instant vector is meaningful: it comes from `sort*`,
/// `topk`/`bottomk`, possibly through operations that keep element order (parentheses,
/// unary minus, operations with a scalar, element-wise functions, the left side of a
/// vector-vector operation). Other results are sorted by labels.
fn keeps_order(expr: &promql_parser::parser::Expr) -> bool {
    use promql_parser::parser::token::{T_BOTTOMK, T_TOPK};
    use promql_parser::parser::value::ValueType;
    use promql_parser::parser::{Expr, VectorMatchCardinality};
    match expr {
        Expr::Paren(p) => keeps_order(&p.expr),
        Expr::Unary(u) => keeps_order(&u.expr),
        Expr::Call(c) => match c.func.name {
            "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc" => true,
            "abs" | "ceil" | "floor" | "exp" | "ln" | "log2" | "log10" | "sqrt" | "sgn" | "sin"
            | "cos" | "tan" | "asin" | "acos" | "atan" | "sinh" | "cosh" | "tanh" | "asinh"
            | "acosh" | "atanh" | "deg" | "rad" | "round" | "clamp" | "clamp_min" | "clamp_max"
            | "label_replace" | "label_join" | "minute" | "hour" | "day_of_month"
            | "day_of_week" | "day_of_year" | "days_in_month" | "month" | "year" => {
                c.args.args.first().is_some_and(|a| keeps_order(a))
            }
            _ => false,
        },
        Expr::Aggregate(a) => matches!(a.op.id(), T_TOPK | T_BOTTOMK),
        Expr::Binary(b) => {
            let (l, r) = (b.lhs.value_type(), b.rhs.value_type());
            if r == ValueType::Scalar {
                keeps_order(&b.lhs)
            } else if l == ValueType::Scalar {
                keeps_order(&b.rhs)
            } else {
                let group_right = b
                    .modifier
                    .as_ref()
                    .is_some_and(|m| matches!(m.card, VectorMatchCardinality::OneToMany(_)));
                !group_right && keeps_order(&b.lhs)
            }
        }
        _ => false,
    }
}

impl Engine {
    /// An engine with `opts`.
    pub fn new(opts: EngineOptions) -> Self {
        Engine { opts }
    }

    /// The engine's options.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `query` at one instant `t` (ms).
    pub fn instant_query(&self, q: &dyn Queryable, query: &str, t: i64) -> Result<QueryResult> {
        self.query(
            q,
            query,
            Grid {
                start: t,
                end: t,
                step: 1,
            },
            true,
            &CancelHandle::default(),
        )
    }

    /// Evaluates `query` at every step of `[start, end]` (ms); the result is a matrix
    /// sorted by labels (or a scalar/string error for string queries, as Prometheus).
    pub fn range_query(
        &self,
        q: &dyn Queryable,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<QueryResult> {
        if step <= 0 {
            return Err(Error::Eval(
                "zero or negative query resolution step widths are not accepted".into(),
            ));
        }
        self.query(
            q,
            query,
            Grid { start, end, step },
            false,
            &CancelHandle::default(),
        )
    }

    /// Evaluates `query` over `grid`; `instant` selects the instant-query result shape.
    pub fn query(
        &self,
        q: &dyn Queryable,
        query: &str,
        grid: Grid,
        instant: bool,
        cancel: &CancelHandle,
    ) -> Result<QueryResult> {
        let expr = promql_parser::parser::parse(query).map_err(Error::Parse)?;
        let mut ev = eval::Evaluator::new(
            q,
            &self.opts,
            grid,
            Instant::now() + self.opts.timeout,
            cancel.clone(),
        );
        ev.invalid_utf8 = literals::invalid_utf8_literals(query);
        let out = ev.eval(&expr, grid)?;
        let value = match out {
            EvalValue::String(s) => {
                if !instant {
                    return Err(Error::Eval(
                        "invalid expression type \"string\" for range query, must be Scalar or instant Vector".into(),
                    ));
                }
                Value::String(s)
            }
            EvalValue::Scalar(v) => {
                if instant {
                    Value::Scalar {
                        t: grid.start,
                        v: v.first().copied().unwrap_or(f64::NAN),
                    }
                } else {
                    Value::Matrix(vec![MatrixSeries {
                        labels: Labels::new(),
                        samples: v
                            .iter()
                            .enumerate()
                            .map(|(i, v)| Sample {
                                t: grid.ts(i),
                                v: *v,
                            })
                            .collect(),
                    }])
                }
            }
            EvalValue::Matrix(m) => {
                if !instant {
                    return Err(Error::Eval(
                        "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector".into(),
                    ));
                }
                let mut out = Vec::new();
                for s in &m.series {
                    let w = m.window(s, 0);
                    if !w.is_empty() {
                        out.push(MatrixSeries {
                            labels: s.labels.clone(),
                            samples: w.to_vec(),
                        });
                    }
                }
                out.sort_by(|a, b| a.labels.cmp(&b.labels));
                Value::Matrix(out)
            }
            EvalValue::Vector(series) => {
                let merged = finish_vector(series, grid.len())?;
                if instant {
                    let mut out: Vec<VectorElement> = merged
                        .into_iter()
                        .filter_map(|s| {
                            s.vals[0].map(|v| VectorElement {
                                labels: s.labels,
                                t: grid.start,
                                v,
                            })
                        })
                        .collect();
                    if !keeps_order(&expr) {
                        out.sort_by(|a, b| a.labels.cmp(&b.labels));
                    }
                    Value::Vector(out)
                } else {
                    let mut out: Vec<MatrixSeries> = merged
                        .into_iter()
                        .map(|s| MatrixSeries {
                            labels: s.labels,
                            samples: s
                                .vals
                                .iter()
                                .enumerate()
                                .filter_map(|(i, v)| v.map(|v| Sample { t: grid.ts(i), v }))
                                .collect(),
                        })
                        .filter(|s| !s.samples.is_empty())
                        .collect();
                    out.sort_by(|a, b| a.labels.cmp(&b.labels));
                    Value::Matrix(out)
                }
            }
        };
        let mut warnings = ev.warnings;
        let mut infos = ev.infos;
        warnings.dedup();
        infos.sort();
        infos.dedup();
        Ok(QueryResult {
            value,
            warnings,
            infos,
        })
    }
}

/// Applies delayed `__name__` removal and merges series that end up with the same labels;
/// two values at the same step for one label set is Prometheus' duplicate-labelset error.
pub(crate) fn finish_vector(series: Vec<StepSeries>, n: usize) -> Result<Vec<StepSeries>> {
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut out: Vec<StepSeries> = Vec::new();
    for mut s in series {
        if s.drop_name {
            s.labels.remove(METRIC_NAME);
            s.drop_name = false;
        }
        match index.get(&s.labels) {
            None => {
                index.insert(s.labels.clone(), out.len());
                out.push(s);
            }
            Some(&j) => {
                let dst = &mut out[j];
                for i in 0..n {
                    if let Some(v) = s.vals[i] {
                        if dst.vals[i].is_some() {
                            return Err(Error::Eval(
                                "vector cannot contain metrics with the same labelset".into(),
                            ));
                        }
                        dst.vals[i] = Some(v);
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_cursor_agrees_with_binary_search() {
        let series = MatrixSeries {
            labels: Labels::new(),
            samples: (0..300)
                .map(|i| Sample {
                    t: i * 10 + i % 3,
                    v: i as f64,
                })
                .collect(),
        };
        for range in [0, 1, 10, 55, 1000, 5000] {
            // Ascending ends with steps of every size, then a few going back.
            let mut ends: Vec<i64> = (-50..3200).step_by(7).collect();
            ends.extend((0..40).map(|i| (i * 997) % 3100 - 20));
            ends.extend([100, 100, 99, 3500, 3500]);
            for step in [1, 13, 400] {
                let ends: Vec<i64> = ends.iter().step_by(step).copied().collect();
                let ra = RangeArg {
                    series: vec![series.clone()],
                    ends: ends.clone(),
                    range,
                };
                let mut c = WindowCursor::default();
                for (i, &end) in ends.iter().enumerate() {
                    let got = &series.samples[c.window(&series.samples, end, range)];
                    assert_eq!(got, ra.window(&series, i), "end {end} range {range}");
                }
            }
        }
    }
}
