//! `histogram_quantile` over classic histograms (series with an `le` label).

use std::collections::HashMap;

use promql_parser::parser::Call;

use super::arg;
use crate::engine::aggregate::format_go_g;
use crate::engine::eval::Evaluator;
use crate::engine::{EvalValue, Grid, StepSeries};
use crate::error::{eval_err, Result};
use crate::labels::Labels;

fn parse_le(s: &str) -> Option<f64> {
    match s.trim() {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        t => t.parse().ok(),
    }
}

fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    if a == b {
        return true;
    }
    let sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || sum < f64::MIN_POSITIVE {
        return diff < eps * f64::MIN_POSITIVE;
    }
    diff / sum.min(f64::MAX) < eps
}

/// Sorts, checks for a `+Inf` bucket, coalesces equal bounds and forces monotonicity.
/// `None` when there is no `+Inf` bucket; the flag says whether monotonicity was forced.
fn prepare_buckets(b: &mut [(f64, f64)]) -> Option<(Vec<(f64, f64)>, bool)> {
    b.sort_by(|x, y| x.0.partial_cmp(&y.0).unwrap_or(std::cmp::Ordering::Equal));
    if b.last().is_none_or(|l| l.0 != f64::INFINITY) {
        return None;
    }
    let mut c: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for &(ub, n) in b.iter() {
        match c.last_mut() {
            Some(last) if last.0 == ub => last.1 += n,
            _ => c.push((ub, n)),
        }
    }
    let mut forced = false;
    let mut prev = c[0].1;
    for x in c.iter_mut().skip(1) {
        if x.1 == prev {
            continue;
        }
        if almost_equal(prev, x.1, 1e-12) {
            x.1 = prev;
            continue;
        }
        if x.1 < prev {
            x.1 = prev;
            forced = true;
            continue;
        }
        prev = x.1;
    }
    Some((c, forced))
}

/// Prometheus' `BucketQuantile`; returns the value and whether monotonicity was forced.
fn bucket_quantile(q: f64, b: &mut [(f64, f64)]) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    let Some((c, forced)) = prepare_buckets(b) else {
        return (f64::NAN, false);
    };
    if c.len() < 2 {
        return (f64::NAN, forced);
    }
    let obs = c[c.len() - 1].1;
    if obs == 0.0 || obs.is_nan() {
        return (f64::NAN, forced);
    }
    let mut rank = q * obs;
    let idx = c[..c.len() - 1].partition_point(|x| x.1 < rank);
    if idx == c.len() - 1 {
        return (c[c.len() - 2].0, forced);
    }
    if idx == 0 && c[0].0 <= 0.0 {
        return (c[0].0, forced);
    }
    let end = c[idx].0;
    let mut count = c[idx].1;
    let mut start = 0.0;
    if idx > 0 {
        start = c[idx - 1].0;
        count -= c[idx - 1].1;
        rank -= c[idx - 1].1;
    }
    (start + (end - start) * (rank / count), forced)
}

/// Prometheus' `BucketFraction`: the fraction of observations in `[lower, upper]`,
/// interpolating linearly within finite buckets. The lowest bucket starts at 0 when its
/// upper bound is positive (as for quantiles); a bound inside an infinitely wide bucket
/// (the lowest, below a non-positive bound, or the `+Inf` one) takes none of it.
fn bucket_fraction(lower: f64, upper: f64, b: &mut [(f64, f64)]) -> f64 {
    let Some((c, _)) = prepare_buckets(b) else {
        return f64::NAN;
    };
    let count = c[c.len() - 1].1;
    if count == 0.0 || count.is_nan() || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    for (i, &(ub, n)) in c.iter().enumerate() {
        let lb = if i > 0 {
            c[i - 1].0
        } else if ub > 0.0 {
            0.0
        } else {
            f64::NEG_INFINITY
        };
        let interpolate = |v: f64| {
            if lb == f64::NEG_INFINITY {
                n
            } else if ub == f64::INFINITY {
                rank
            } else {
                rank + (n - rank) * (v - lb) / (ub - lb)
            }
        };
        if !lower_set && lb >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lb >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lb < lower && ub > lower {
            lower_rank = interpolate(lower);
            lower_set = true;
        }
        if !upper_set && lb < upper && ub > upper {
            upper_rank = interpolate(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank = n;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / count
}

/// Prometheus' `FormatOpenMetricsFloat`: Go's shortest `%g`, with `.0` added to integers.
fn openmetrics_float(q: f64) -> String {
    let s = format_go_g(q);
    if !q.is_finite() || s.contains(['e', '.']) {
        s
    } else {
        format!("{s}.0")
    }
}

/// `histogram_quantile(φ, buckets)`, `histogram_quantiles(buckets, "label", φ...)` (one
/// series per φ, labelled with it) and `histogram_fraction(lower, upper, buckets)`.
pub fn call(ev: &mut Evaluator<'_>, c: &Call, grid: Grid) -> Result<Vec<StepSeries>> {
    // Each entry: the φ (or lower bound) per step, and the label to mark its series with.
    let mut params: Vec<(Vec<f64>, Option<String>)> = Vec::new();
    let mut upper = None;
    let v = match c.func.name {
        "histogram_quantile" => {
            params.push((ev.eval_scalar(arg(c, 0)?, grid)?, None));
            ev.eval_vector(arg(c, 1)?, grid)?
        }
        "histogram_fraction" => {
            params.push((ev.eval_scalar(arg(c, 0)?, grid)?, None));
            upper = Some(ev.eval_scalar(arg(c, 1)?, grid)?);
            ev.eval_vector(arg(c, 2)?, grid)?
        }
        "histogram_quantiles" => {
            let v = ev.eval_vector(arg(c, 0)?, grid)?;
            let label = match ev.eval(arg(c, 1)?, grid)? {
                EvalValue::String(s) => s,
                _ => return eval_err("argument 2 of histogram_quantiles must be a string"),
            };
            for k in 2..c.args.args.len() {
                params.push((ev.eval_scalar(arg(c, k)?, grid)?, Some(label.clone())));
            }
            v
        }
        other => return eval_err(format!("{other} over classic buckets is not supported")),
    };
    let fraction = upper.is_some();
    let n = grid.len();
    let mut groups: Vec<(Labels, Vec<(f64, usize)>)> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    // Series equal but for their names may not meet at a step (Prometheus' check).
    let mut seen: HashMap<Labels, usize> = HashMap::new();
    for (j, s) in v.iter().enumerate() {
        let mut without_name = s.labels.clone();
        without_name.remove(crate::labels::METRIC_NAME);
        if let Some(&k) = seen.get(&without_name) {
            if v[k]
                .vals
                .iter()
                .zip(&s.vals)
                .any(|(a, b)| a.is_some() && b.is_some())
            {
                return eval_err("vector cannot contain metrics with the same labelset");
            }
        }
        seen.insert(without_name, j);
        let Some(le) = s.labels.get("le").and_then(parse_le) else {
            ev.warn(format!(
                "PromQL warning: bucket label \"le\" is missing or has a malformed value of {:?} for metric name {:?}",
                s.labels.get("le").unwrap_or(""),
                s.labels.name().unwrap_or("")
            ));
            continue;
        };
        let mut key = s.labels.clone();
        key.remove("le");
        key.remove(crate::labels::METRIC_NAME);
        let g = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push((le, j));
    }
    if !fraction {
        for (q, _) in &params {
            for bad in q.iter().filter(|x| x.is_nan() || **x < 0.0 || **x > 1.0) {
                ev.warn(format!(
                    "PromQL warning: quantile value should be between 0 and 1, got {}",
                    format_go_g(*bad)
                ));
            }
        }
    }
    let mut out: Vec<StepSeries> = Vec::new();
    // Output series by labels: with histogram_quantiles a φ that varies by step labels
    // each step's value differently.
    let mut out_index: HashMap<Labels, usize> = HashMap::new();
    for (q, mark) in &params {
        for (labels, members) in &groups {
            for i in 0..n {
                let mut b: Vec<(f64, f64)> = members
                    .iter()
                    .filter_map(|&(le, j)| v[j].vals[i].map(|c| (le, c)))
                    .collect();
                if b.is_empty() {
                    continue;
                }
                let value = if let Some(upper) = &upper {
                    bucket_fraction(q[i], upper[i], &mut b)
                } else {
                    let (r, forced) = bucket_quantile(q[i], &mut b);
                    if forced {
                        ev.info(format!(
                            "PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {:?}",
                            v[members[0].1].labels.name().unwrap_or("")
                        ));
                    }
                    r
                };
                let mut l = labels.clone();
                if let Some(name) = mark {
                    l.set(name, &openmetrics_float(q[i]));
                }
                let idx = *out_index.entry(l.clone()).or_insert_with(|| {
                    out.push(StepSeries {
                        labels: l,
                        drop_name: false,
                        vals: vec![None; n],
                    });
                    out.len() - 1
                });
                if out[idx].vals[i].is_some() {
                    return eval_err("vector cannot contain metrics with the same labelset");
                }
                out[idx].vals[i] = Some(value);
            }
        }
    }
    Ok(out)
}
