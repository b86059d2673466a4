//! Aggregation operators (`sum`, `avg`, ..., `topk`, `count_values`, `limitk`, ...) with
//! `by`/`without`.

use std::collections::HashMap;

use promql_parser::parser::token::*;
use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::eval::Evaluator;
use super::{EvalValue, Grid, StepSeries};
use crate::error::{eval_err, Result};
use crate::labels::{Labels, METRIC_NAME};

/// Kahan-Neumaier compensated summation step, as Prometheus' `kahanSumInc`.
#[inline]
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Mean with overflow-safe fallback to an incremental mean, as Prometheus' `avg`.
pub(crate) fn mean(vals: &[f64]) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    let mut incremental = false;
    let mut m = 0.0;
    for (i, &v) in vals.iter().enumerate() {
        let count = (i + 1) as f64;
        if i == 0 {
            sum = v;
            continue;
        }
        if !incremental {
            let (ns, nc) = kahan_inc(v, sum, c);
            if !ns.is_infinite() {
                sum = ns;
                c = nc;
                continue;
            }
            incremental = true;
            m = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        let (nm, nc) = kahan_inc(v / count, q * m, q * c);
        m = nm;
        c = nc;
    }
    if incremental {
        m + c
    } else {
        (sum + c) / vals.len() as f64
    }
}

/// Variance as Prometheus computes it (Welford).
pub(crate) fn variance(vals: &[f64]) -> f64 {
    let (mut mean, mut acc) = (0.0, 0.0);
    for (i, &v) in vals.iter().enumerate() {
        let n = (i + 1) as f64;
        let d = v - mean;
        mean += d / n;
        acc += d * (v - mean);
    }
    acc / vals.len() as f64
}

/// The φ-quantile of `vals` (sorted in place), as Prometheus' `quantile`.
pub(crate) fn quantile(q: f64, vals: &mut [f64]) -> f64 {
    if vals.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    vals.sort_by(|a, b| {
        if a.is_nan() {
            std::cmp::Ordering::Less
        } else if b.is_nan() {
            std::cmp::Ordering::Greater
        } else {
            a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal)
        }
    });
    let n = vals.len() as f64;
    let rank = q * (n - 1.0);
    let lo = rank.floor().max(0.0);
    let hi = (lo + 1.0).min(n - 1.0);
    let w = rank - rank.floor();
    vals[lo as usize] * (1.0 - w) + vals[hi as usize] * w
}

/// Formats a float as Go's `strconv.FormatFloat(f, 'f', -1, 64)`.
pub(crate) fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Formats a float as Go's `%g`/`%v` (shortest digits; exponent form below 1e-4 or from
/// 1e6 on, with a signed two-digit exponent), as Prometheus' messages do.
pub(crate) fn format_go_g(v: f64) -> String {
    if !v.is_finite() {
        return format_float(v);
    }
    let e = format!("{v:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((e.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        format!("{v}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    }
}

/// Go's `math.Max`/`math.Min` over the parameter's steps: NaN if any step is NaN.
fn param_range(p: &[f64]) -> (f64, f64) {
    if p.iter().any(|x| x.is_nan()) {
        return (f64::NAN, f64::NAN);
    }
    let min = p.iter().copied().fold(f64::INFINITY, f64::min);
    let max = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

fn group_labels(l: &Labels, m: &Option<LabelModifier>) -> Labels {
    match m {
        Some(LabelModifier::Include(ls)) => l.keep(&ls.labels),
        Some(LabelModifier::Exclude(ls)) => {
            let mut d = l.drop(&ls.labels);
            d.remove(METRIC_NAME);
            d
        }
        None => Labels::new(),
    }
}

/// The labels [`group_labels`] keeps, as bytes into `key` (cleared first): each name and
/// value followed by 0xff, a byte no string holds, so equal keys are equal label sets.
fn group_key(l: &Labels, m: &Option<LabelModifier>, key: &mut Vec<u8>) {
    key.clear();
    for (k, v) in l.iter() {
        let kept = match m {
            Some(LabelModifier::Include(ls)) => ls.labels.iter().any(|n| n == k),
            Some(LabelModifier::Exclude(ls)) => {
                k != METRIC_NAME && !ls.labels.iter().any(|n| n == k)
            }
            None => false,
        };
        if kept {
            key.extend_from_slice(k.as_bytes());
            key.push(0xff);
            key.extend_from_slice(v.as_bytes());
            key.push(0xff);
        }
    }
}

/// Evaluates an aggregation at every step.
pub fn eval(ev: &mut Evaluator<'_>, a: &AggregateExpr, grid: Grid) -> Result<EvalValue> {
    let op = a.op.id();
    let n = grid.len();
    let mut param_s: Vec<f64> = Vec::new();
    let mut param_str = String::new();
    if let Some(p) = &a.param {
        match ev.eval(p, grid)? {
            EvalValue::Scalar(v) => param_s = v,
            EvalValue::String(s) => param_str = s,
            _ => return eval_err("aggregation parameter must be a scalar or string"),
        }
    }
    let input = ev.eval_vector(&a.expr, grid)?;
    // Group of each input series.
    let mut group_of = Vec::with_capacity(input.len());
    let mut groups: Vec<Labels> = Vec::new();
    // Groups are found by their labels' bytes, built in one reused buffer: a series of a
    // known group costs no allocation.
    let mut gindex: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut key = Vec::new();
    for s in &input {
        group_key(&s.labels, &a.modifier, &mut key);
        let id = match gindex.get(key.as_slice()) {
            Some(&id) => id,
            None => {
                groups.push(group_labels(&s.labels, &a.modifier));
                gindex.insert(key.clone(), groups.len() - 1);
                groups.len() - 1
            }
        };
        group_of.push(id);
    }
    let ng = groups.len();
    match op {
        T_TOPK | T_BOTTOMK | T_LIMITK | T_LIMIT_RATIO => {
            return select_k(ev, op, input, &group_of, ng, &param_s, n);
        }
        T_COUNT_VALUES => {
            if let Some(q) = ev.invalid_label_name(&param_str) {
                return eval_err(format!("invalid label name {q}"));
            }
            let mut out: Vec<StepSeries> = Vec::new();
            let mut index: HashMap<Labels, usize> = HashMap::new();
            for (s, &g) in input.iter().zip(&group_of) {
                for i in 0..n {
                    let Some(v) = s.vals[i] else { continue };
                    let mut l = groups[g].clone();
                    l.set(&param_str, &format_float(v));
                    let idx = *index.entry(l.clone()).or_insert_with(|| {
                        out.push(StepSeries {
                            labels: l,
                            drop_name: false,
                            vals: vec![None; n],
                        });
                        out.len() - 1
                    });
                    let slot = &mut out[idx].vals[i];
                    *slot = Some(slot.unwrap_or(0.0) + 1.0);
                }
            }
            return Ok(EvalValue::Vector(out));
        }
        _ => {}
    }
    let mut out: Vec<StepSeries> = groups
        .iter()
        .map(|g| StepSeries {
            labels: g.clone(),
            drop_name: false,
            vals: vec![None; n],
        })
        .collect();
    for (s, &g) in input.iter().zip(&group_of) {
        if s.drop_name {
            out[g].drop_name = true;
        }
    }
    if matches!(op, T_SUM | T_COUNT | T_GROUP | T_MIN | T_MAX) {
        // Series after series into one accumulator per group and step: the same
        // operations in the same (input) order per group and step as the step-major loop
        // below, without striding through every series' column at every step.
        // The output columns are the accumulators; a sum's compensation terms live aside.
        let mut comp: Vec<f64> = if op == T_SUM {
            vec![0.0; ng * n]
        } else {
            Vec::new()
        };
        for (k, (s, &g)) in input.iter().zip(&group_of).enumerate() {
            if k % 256 == 0 {
                ev.check()?;
            }
            let row = &mut out[g].vals;
            if op == T_SUM {
                // The common case on its own: no per-step dispatch or index arithmetic.
                let crow = &mut comp[g * n..(g + 1) * n];
                for ((slot, c), v) in row.iter_mut().zip(crow.iter_mut()).zip(&s.vals) {
                    if let Some(v) = *v {
                        let a = slot.get_or_insert(0.0);
                        (*a, *c) = kahan_inc(v, *a, *c);
                    }
                }
                continue;
            }
            for (i, (slot, v)) in row.iter_mut().zip(&s.vals).enumerate() {
                let Some(v) = *v else { continue };
                let a = slot.get_or_insert(if matches!(op, T_MIN | T_MAX) {
                    f64::NAN
                } else {
                    0.0
                });
                match op {
                    T_SUM => {
                        let c = &mut comp[g * n + i];
                        (*a, *c) = kahan_inc(v, *a, *c);
                    }
                    T_COUNT => *a += 1.0,
                    T_GROUP => *a = 1.0,
                    T_MIN => {
                        if *a > v || a.is_nan() {
                            *a = v;
                        }
                    }
                    _ => {
                        if *a < v || a.is_nan() {
                            *a = v;
                        }
                    }
                }
            }
        }
        if op == T_SUM {
            for (g, o) in out.iter_mut().enumerate() {
                for (dst, c) in o.vals.iter_mut().zip(&comp[g * n..(g + 1) * n]) {
                    if let Some(a) = dst {
                        *a += c;
                    }
                }
            }
        }
        return Ok(EvalValue::Vector(out));
    }
    let mut members: Vec<Vec<f64>> = vec![Vec::new(); ng];
    for i in 0..n {
        if i % 1024 == 0 {
            ev.check()?;
        }
        members.iter_mut().for_each(Vec::clear);
        for (s, &g) in input.iter().zip(&group_of) {
            if let Some(v) = s.vals[i] {
                members[g].push(v);
            }
        }
        for (g, vals) in members.iter_mut().enumerate() {
            if vals.is_empty() {
                continue;
            }
            let r = match op {
                T_SUM => {
                    let (s, c) = vals
                        .iter()
                        .fold((0.0, 0.0), |(s, c), &v| kahan_inc(v, s, c));
                    s + c
                }
                T_AVG => mean(vals),
                T_COUNT => vals.len() as f64,
                T_GROUP => 1.0,
                T_MIN => vals
                    .iter()
                    .fold(f64::NAN, |m, &v| if m > v || m.is_nan() { v } else { m }),
                T_MAX => vals
                    .iter()
                    .fold(f64::NAN, |m, &v| if m < v || m.is_nan() { v } else { m }),
                T_STDVAR => variance(vals),
                T_STDDEV => variance(vals).sqrt(),
                T_QUANTILE => quantile(param_s.get(i).copied().unwrap_or(f64::NAN), vals),
                _ => return eval_err(format!("unsupported aggregation {}", a.op)),
            };
            out[g].vals[i] = Some(r);
        }
    }
    if op == T_QUANTILE {
        // One warning per kind of bad value over the whole range, as Prometheus.
        let (min, max) = param_range(&param_s);
        let mut bad = Vec::new();
        if param_s.iter().any(|q| q.is_nan()) {
            bad.push(f64::NAN);
        }
        if max > 1.0 {
            bad.push(max);
        }
        if min < 0.0 {
            bad.push(min);
        }
        for q in bad {
            ev.warn(format!(
                "PromQL warning: quantile value should be between 0 and 1, got {}",
                format_go_g(q)
            ));
        }
    }
    Ok(EvalValue::Vector(out))
}

/// `topk`, `bottomk`, `limitk` and `limit_ratio`: which input series each group keeps at
/// each step. The output keeps input series whole (labels untouched), ordered by group and,
/// within a group, by rank at the first step where the series is kept.
fn select_k(
    ev: &mut Evaluator<'_>,
    op: TokenId,
    input: Vec<StepSeries>,
    group_of: &[usize],
    ng: usize,
    param: &[f64],
    n: usize,
) -> Result<EvalValue> {
    // Parameter checks over the whole range, before any series is looked at, as Prometheus.
    let (min, max) = param_range(param);
    if op == T_LIMIT_RATIO {
        if min == 0.0 && max == 0.0 {
            return Ok(EvalValue::Vector(Vec::new()));
        }
        if min.is_nan() {
            return eval_err("Ratio value is NaN");
        }
        if max > 1.0 {
            ev.warn(format!(
                "PromQL warning: ratio value should be between -1 and 1, got {}, capping to 1",
                format_go_g(max)
            ));
        }
        if min < -1.0 {
            ev.warn(format!(
                "PromQL warning: ratio value should be between -1 and 1, got {}, capping to -1",
                format_go_g(min)
            ));
        }
    } else {
        if max < 1.0 {
            return Ok(EvalValue::Vector(Vec::new()));
        }
        if min.is_nan() {
            return eval_err("Parameter value is NaN");
        }
        // ±2^63, the bounds of Go's int64.
        const INT64_BOUND: f64 = 9_223_372_036_854_775_808.0;
        if min <= -INT64_BOUND {
            return eval_err(format!(
                "Scalar value {} underflows int64",
                format_go_g(min)
            ));
        }
        if max >= INT64_BOUND {
            return eval_err(format!("Scalar value {} overflows int64", format_go_g(max)));
        }
    }
    let mut keep: Vec<Vec<bool>> = vec![vec![false; n]; input.len()];
    let mut order: Vec<usize> = Vec::new();
    for i in 0..n {
        if i % 1024 == 0 {
            ev.check()?;
        }
        let p = param.get(i).copied().unwrap_or(f64::NAN);
        let mut per_group: Vec<Vec<usize>> = vec![Vec::new(); ng];
        for (j, s) in input.iter().enumerate() {
            if s.vals[i].is_some() {
                per_group[group_of[j]].push(j);
            }
        }
        for members in per_group {
            let chosen: Vec<usize> = match op {
                T_LIMIT_RATIO => {
                    let r = p.clamp(-1.0, 1.0);
                    members
                        .into_iter()
                        .filter(|&j| {
                            let off = ratio_offset(&input[j].labels);
                            if r >= 0.0 {
                                off < r
                            } else {
                                off >= 1.0 + r
                            }
                        })
                        .collect()
                }
                _ => {
                    let k = if p < 1.0 { 0 } else { p as usize };
                    if op == T_LIMITK {
                        members.into_iter().take(k).collect()
                    } else {
                        let val = |j: usize| input[j].vals[i].unwrap_or(f64::NAN);
                        let mut m = members;
                        // Stable sort: ties keep input order; NaN always sorts last.
                        m.sort_by(|&x, &y| {
                            let (a, b) = (val(x), val(y));
                            match (a.is_nan(), b.is_nan()) {
                                (true, true) => std::cmp::Ordering::Equal,
                                (true, false) => std::cmp::Ordering::Greater,
                                (false, true) => std::cmp::Ordering::Less,
                                _ if op == T_TOPK => {
                                    b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal)
                                }
                                _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
                            }
                        });
                        m.truncate(k);
                        m
                    }
                }
            };
            for j in chosen {
                if !keep[j].iter().any(|x| *x) {
                    order.push(j);
                }
                keep[j][i] = true;
            }
        }
    }
    let mut input: Vec<Option<StepSeries>> = input.into_iter().map(Some).collect();
    let mut out = Vec::new();
    for j in order {
        if let Some(mut s) = input[j].take() {
            for (i, v) in s.vals.iter_mut().enumerate() {
                if !keep[j][i] {
                    *v = None;
                }
            }
            out.push(s);
        }
    }
    Ok(EvalValue::Vector(out))
}

/// Where a series falls in `[0, 1]` for `limit_ratio`: Prometheus' `Labels.Hash()` (XXH64
/// of `name 0xff value 0xff ...`) over the largest u64, so the same series are picked as by
/// Prometheus, on every run and every step.
pub(crate) fn ratio_offset(l: &Labels) -> f64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    for (k, v) in l.iter() {
        h.update(k.as_bytes());
        h.update(&[0xff]);
        h.update(v.as_bytes());
        h.update(&[0xff]);
    }
    h.digest() as f64 / u64::MAX as f64
}
