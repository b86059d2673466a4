//! PromQL functions, grouped by what they work on.

pub mod histogram;
pub mod info;
pub mod labels;
pub mod math;
pub mod over_time;
pub mod rate;
pub mod sort;
pub mod time;

use promql_parser::parser::{Call, Expr};

use super::eval::Evaluator;
use super::{EvalValue, Grid, RangeArg, StepSeries, WindowCursor};
use crate::error::{eval_err, Result};
use crate::labels::Labels;
use crate::value::{MatrixSeries, Sample};

/// Strips parentheses.
pub(crate) fn unwrap_paren(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unwrap_paren(&p.expr),
        _ => e,
    }
}

/// The `i`-th argument.
pub(crate) fn arg(c: &Call, i: usize) -> Result<&Expr> {
    match c.args.args.get(i) {
        Some(a) => Ok(a),
        None => eval_err(format!("missing argument {} of {}", i + 1, c.func.name)),
    }
}

/// Applies `f` to every window of a range vector; `drop_name` as Prometheus per function.
pub(crate) fn over_windows(
    ev: &mut Evaluator<'_>,
    ra: &RangeArg,
    drop_name: bool,
    mut f: impl FnMut(&mut Evaluator<'_>, &Labels, &[Sample], usize) -> Option<f64>,
) -> Result<Vec<StepSeries>> {
    over_window_ranges(ev, ra, drop_name, |ev, _, s, r, i| {
        f(ev, &s.labels, &s.samples[r], i)
    })
}

/// Applies `f` to every non-empty window of a range vector, given as the series' index in
/// `ra.series`, the series and the index range of its samples in the window; `drop_name`
/// as Prometheus per function.
pub(crate) fn over_window_ranges(
    ev: &mut Evaluator<'_>,
    ra: &RangeArg,
    drop_name: bool,
    mut f: impl FnMut(
        &mut Evaluator<'_>,
        usize,
        &MatrixSeries,
        std::ops::Range<usize>,
        usize,
    ) -> Option<f64>,
) -> Result<Vec<StepSeries>> {
    let n = ra.ends.len();
    let mut out = Vec::with_capacity(ra.series.len());
    for (k, s) in ra.series.iter().enumerate() {
        if k % 64 == 0 {
            ev.check()?;
        }
        let mut vals = vec![None; n];
        let mut any = false;
        let mut cursor = WindowCursor::default();
        for (i, slot) in vals.iter_mut().enumerate() {
            let r = cursor.window(&s.samples, ra.ends[i], ra.range);
            if r.is_empty() {
                continue;
            }
            *slot = f(ev, k, s, r, i);
            any |= slot.is_some();
        }
        if any {
            out.push(StepSeries {
                labels: s.labels.clone(),
                drop_name,
                vals,
            });
        }
    }
    Ok(out)
}

/// Maps each value of an instant vector, dropping `__name__`.
pub(crate) fn map_values(mut v: Vec<StepSeries>, f: impl Fn(f64, usize) -> f64) -> Vec<StepSeries> {
    for s in &mut v {
        s.drop_name = true;
        for (i, x) in s.vals.iter_mut().enumerate() {
            if let Some(val) = x {
                *val = f(*val, i);
            }
        }
    }
    v
}

/// Go's `math.Max`/`math.Min`: NaN wins, and +0 is larger than -0.
fn go_max_min(x: f64, y: f64, max: bool) -> f64 {
    if x.is_nan() || y.is_nan() {
        return f64::NAN;
    }
    if x == 0.0 && y == 0.0 {
        let neg = if max {
            x.is_sign_negative() && y.is_sign_negative()
        } else {
            x.is_sign_negative() || y.is_sign_negative()
        };
        return if neg { -0.0 } else { 0.0 };
    }
    if max {
        x.max(y)
    } else {
        x.min(y)
    }
}

/// Evaluates a function call at every step.
pub fn call(ev: &mut Evaluator<'_>, c: &Call, grid: Grid) -> Result<EvalValue> {
    let name = c.func.name;
    let n = grid.len();
    if let Some(f) = math::simple(name) {
        let v = ev.eval_vector(arg(c, 0)?, grid)?;
        return Ok(EvalValue::Vector(map_values(v, |x, _| f(x))));
    }
    if let Some(v) = rate::call(ev, c, grid)? {
        return Ok(EvalValue::Vector(v));
    }
    if let Some(v) = over_time::call(ev, c, grid)? {
        return Ok(EvalValue::Vector(v));
    }
    if let Some(v) = time::call(ev, c, grid)? {
        return Ok(v);
    }
    match name {
        "pi" => Ok(EvalValue::Scalar(vec![std::f64::consts::PI; n])),
        // The outer query's parameters: constants, also inside subqueries.
        "start" | "end" | "range" | "step" => {
            let q = ev.query;
            let v = match name {
                "start" => q.start as f64 / 1000.0,
                "end" => q.end as f64 / 1000.0,
                "range" => (q.end - q.start) as f64 / 1000.0,
                _ if q.start == q.end => 0.0,
                _ => q.step as f64 / 1000.0,
            };
            Ok(EvalValue::Scalar(vec![v; n]))
        }
        "max_of" | "min_of" => {
            let a = ev.eval_scalar(arg(c, 0)?, grid)?;
            let b = ev.eval_scalar(arg(c, 1)?, grid)?;
            let max = name == "max_of";
            Ok(EvalValue::Scalar(
                a.iter()
                    .zip(&b)
                    .map(|(&x, &y)| go_max_min(x, y, max))
                    .collect(),
            ))
        }
        "vector" => {
            let s = ev.eval_scalar(arg(c, 0)?, grid)?;
            Ok(EvalValue::Vector(vec![StepSeries {
                labels: Labels::new(),
                drop_name: false,
                vals: s.into_iter().map(Some).collect(),
            }]))
        }
        "scalar" => {
            let v = ev.eval_vector(arg(c, 0)?, grid)?;
            let mut out = vec![f64::NAN; n];
            for (i, o) in out.iter_mut().enumerate() {
                let mut it = v.iter().filter_map(|s| s.vals[i]);
                if let (Some(x), None) = (it.next(), it.next()) {
                    *o = x;
                }
            }
            Ok(EvalValue::Scalar(out))
        }
        "round" | "clamp" | "clamp_min" | "clamp_max" => {
            math::call(ev, c, grid).map(EvalValue::Vector)
        }
        "label_replace" | "label_join" => labels::call(ev, c, grid).map(EvalValue::Vector),
        "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc" => {
            sort::call(ev, c, grid).map(EvalValue::Vector)
        }
        "info" => info::call(ev, c, grid).map(EvalValue::Vector),
        "absent" | "absent_over_time" => labels::absent(ev, c, grid).map(EvalValue::Vector),
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
        | "histogram_stdvar" => {
            // They read native histograms only and skip float samples without a word, as
            // Prometheus does; the store holds floats only.
            ev.eval_vector(arg(c, 0)?, grid)?;
            Ok(EvalValue::Vector(Vec::new()))
        }
        "histogram_quantile" | "histogram_quantiles" | "histogram_fraction" => {
            histogram::call(ev, c, grid).map(EvalValue::Vector)
        }
        _ => eval_err(format!("function {name:?} is not supported yet")),
    }
}
