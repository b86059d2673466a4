//! Aggregations over time: `*_over_time`, `double_exponential_smoothing`.

use promql_parser::parser::Call;

use super::{arg, over_windows};
use crate::engine::aggregate::{kahan_inc, mean, quantile};
use crate::engine::eval::Evaluator;
use crate::engine::{Grid, StepSeries};
use crate::error::{Error, Result};

fn values(w: &[crate::value::Sample]) -> Vec<f64> {
    w.iter().map(|s| s.v).collect()
}

/// Evaluates `c` if it is one of this module's functions.
pub fn call(ev: &mut Evaluator<'_>, c: &Call, grid: Grid) -> Result<Option<Vec<StepSeries>>> {
    let name = c.func.name;
    let (m_idx, params): (usize, usize) = match name {
        "avg_over_time"
        | "min_over_time"
        | "max_over_time"
        | "sum_over_time"
        | "count_over_time"
        | "last_over_time"
        | "first_over_time"
        | "present_over_time"
        | "stddev_over_time"
        | "stdvar_over_time"
        | "mad_over_time"
        | "ts_of_last_over_time"
        | "ts_of_first_over_time"
        | "ts_of_max_over_time"
        | "ts_of_min_over_time" => (0, 0),
        "quantile_over_time" => (1, 1),
        "double_exponential_smoothing" | "holt_winters" => (0, 2),
        _ => return Ok(None),
    };
    let mut ps = Vec::new();
    if name == "quantile_over_time" {
        ps.push(ev.eval_scalar(arg(c, 0)?, grid)?);
    } else {
        for k in 0..params {
            ps.push(ev.eval_scalar(arg(c, 1 + k)?, grid)?);
        }
    }
    let ra = ev.eval_matrix(arg(c, m_idx)?, grid)?;
    let keep_name = matches!(name, "last_over_time" | "first_over_time");
    // Prometheus rejects bad smoothing/trend factors as soon as one series has a window to
    // smooth (NaN factors pass the check and yield NaN).
    let mut bad_factor: Option<String> = None;
    let out = over_windows(ev, &ra, !keep_name, |ev, _, w, i| {
        Some(match name {
            "avg_over_time" => mean(&values(w)),
            "sum_over_time" => {
                let (s, c) = w.iter().fold((0.0, 0.0), |(s, c), x| kahan_inc(x.v, s, c));
                s + c
            }
            "count_over_time" => w.len() as f64,
            "present_over_time" => 1.0,
            "last_over_time" => w[w.len() - 1].v,
            "first_over_time" => w[0].v,
            "ts_of_last_over_time" => w[w.len() - 1].t as f64 / 1000.0,
            "ts_of_first_over_time" => w[0].t as f64 / 1000.0,
            "min_over_time" => w
                .iter()
                .fold(f64::NAN, |m, x| if m > x.v || m.is_nan() { x.v } else { m }),
            "max_over_time" => w
                .iter()
                .fold(f64::NAN, |m, x| if m < x.v || m.is_nan() { x.v } else { m }),
            "ts_of_max_over_time" | "ts_of_min_over_time" => {
                let max = name == "ts_of_max_over_time";
                let mut best = w[0];
                for x in &w[1..] {
                    if (max && x.v >= best.v) || (!max && x.v <= best.v) || best.v.is_nan() {
                        best = *x;
                    }
                }
                best.t as f64 / 1000.0
            }
            "stddev_over_time" | "stdvar_over_time" => {
                let (mut cnt, mut m, mut cm, mut acc, mut cacc) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for x in w {
                    cnt += 1.0;
                    let delta = x.v - (m + cm);
                    (m, cm) = kahan_inc(delta / cnt, m, cm);
                    let new_delta = x.v - (m + cm);
                    (acc, cacc) = kahan_inc(delta * new_delta, acc, cacc);
                }
                let var = (acc + cacc) / cnt;
                if name == "stddev_over_time" {
                    var.sqrt()
                } else {
                    var
                }
            }
            "quantile_over_time" => {
                let q = ps[0][i];
                if q.is_nan() || !(0.0..=1.0).contains(&q) {
                    ev.warn(format!(
                        "PromQL warning: quantile value should be between 0 and 1, got {}",
                        crate::engine::aggregate::format_go_g(q)
                    ));
                }
                quantile(q, &mut values(w))
            }
            "mad_over_time" => {
                // A NaN makes the median, and so the deviation, undefined.
                if w.iter().any(|x| x.v.is_nan()) {
                    return Some(f64::NAN);
                }
                let mut v = values(w);
                let med = quantile(0.5, &mut v);
                let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
                quantile(0.5, &mut dev)
            }
            _ => {
                // double_exponential_smoothing(v, sf, tf)
                let (sf, tf) = (ps[0][i], ps[1][i]);
                if sf <= 0.0 || sf >= 1.0 {
                    bad_factor.get_or_insert_with(|| {
                        format!(
                            "invalid smoothing factor. Expected: 0 < sf < 1, got: {}",
                            go_f(sf)
                        )
                    });
                    return None;
                }
                if tf <= 0.0 || tf >= 1.0 {
                    bad_factor.get_or_insert_with(|| {
                        format!(
                            "invalid trend factor. Expected: 0 < tf < 1, got: {}",
                            go_f(tf)
                        )
                    });
                    return None;
                }
                if w.len() < 2 {
                    return None;
                }
                let (mut s0, mut s1) = (0.0, w[0].v);
                let mut b = w[1].v - w[0].v;
                for (k, x) in w.iter().enumerate().skip(1) {
                    if k > 1 {
                        b = tf * (s1 - s0) + (1.0 - tf) * b;
                    }
                    let y = (1.0 - sf) * (s1 + b);
                    s0 = s1;
                    s1 = sf * x.v + y;
                }
                s1
            }
        })
    })?;
    if let Some(msg) = bad_factor {
        return Err(Error::Eval(msg));
    }
    Ok(Some(out))
}

/// Go's `%f`: six decimals, infinities as `+Inf`/`-Inf`.
fn go_f(x: f64) -> String {
    if x.is_infinite() {
        crate::engine::aggregate::format_float(x)
    } else {
        format!("{x:.6}")
    }
}
