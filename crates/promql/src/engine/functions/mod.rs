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

/// Windows (series × steps) of a range vector above which a function's evaluation is
/// shared between threads (below, starting threads costs more than it saves).
const PARALLEL_WINDOWS: usize = 32 * 1024;

/// Threads that share one large evaluation: the machine's cores, at most 8.
fn eval_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8)
}

/// [`over_window_ranges`] for functions that need nothing of the evaluator, on several
/// threads when there are many windows (see [`par_over_series`]). `prepare` runs once per
/// series (e.g. to find its counter resets) and `f` gets its result with every non-empty
/// window.
pub(crate) fn par_over_window_ranges<S>(
    ev: &mut Evaluator<'_>,
    ra: RangeArg,
    drop_name: bool,
    prepare: impl Fn(&MatrixSeries) -> S + Sync,
    f: impl Fn(&S, &MatrixSeries, std::ops::Range<usize>, usize) -> Option<f64> + Sync,
) -> Result<Vec<StepSeries>> {
    let (ends, range) = (ra.ends.clone(), ra.range);
    par_over_series(ev, ra, drop_name, |s, vals| {
        let st = prepare(s);
        let mut any = false;
        let mut cursor = WindowCursor::default();
        for (i, (slot, &end)) in vals.iter_mut().zip(&ends).enumerate() {
            let r = cursor.window(&s.samples, end, range);
            if r.is_empty() {
                continue;
            }
            *slot = f(&st, s, r, i);
            any |= slot.is_some();
        }
        any
    })
}

/// Evaluates a range vector series by series, on several threads when there are many
/// windows: `fill(series, vals)` writes the value of each step (`vals` starts all `None`)
/// and says whether it wrote any. Consumes `ra`: the labels move into the result instead
/// of being copied. The result is in series order, series without a value left out.
pub(crate) fn par_over_series(
    ev: &mut Evaluator<'_>,
    mut ra: RangeArg,
    drop_name: bool,
    fill: impl Fn(&MatrixSeries, &mut [Option<f64>]) -> bool + Sync,
) -> Result<Vec<StepSeries>> {
    let checker = ev.checker();
    let n = ra.ends.len();
    let run = |share: &mut [MatrixSeries]| -> Result<Vec<StepSeries>> {
        let mut out = Vec::with_capacity(share.len());
        for (k, s) in share.iter_mut().enumerate() {
            if k % 64 == 0 {
                checker.check()?;
            }
            let mut vals = vec![None; n];
            if fill(s, &mut vals) {
                out.push(StepSeries {
                    labels: std::mem::take(&mut s.labels),
                    drop_name,
                    vals,
                });
            }
        }
        Ok(out)
    };
    let windows = ra.series.len().saturating_mul(n);
    let threads = if windows >= PARALLEL_WINDOWS {
        eval_threads().min(ra.series.len())
    } else {
        1
    };
    if threads <= 1 {
        return run(&mut ra.series);
    }
    // Contiguous shares, so the output keeps the series' order.
    let per = ra.series.len().div_ceil(threads);
    let results: Vec<Result<Vec<StepSeries>>> = std::thread::scope(|scope| {
        let run = &run;
        let handles: Vec<_> = ra
            .series
            .chunks_mut(per)
            .map(|share| scope.spawn(move || run(share)))
            .collect();
        handles
            .into_iter()
            // A panic in a worker is re-raised here, as if it had happened on this thread.
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut out = Vec::new();
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

/// A range function of `e` (a range vector expression) series by series: `fill` as in
/// [`par_over_series`], given the window ends. A range selector's series are filled where
/// the store reads them ([`Evaluator::range_selector_reduce`]); other range vectors are
/// evaluated whole first.
pub(crate) fn over_range_vector(
    ev: &mut Evaluator<'_>,
    e: &Expr,
    grid: Grid,
    drop_name: bool,
    fill: &super::eval::FillFn<'_>,
) -> Result<Vec<StepSeries>> {
    if let Expr::MatrixSelector(ms) = unwrap_paren(e) {
        let range = ms.range.as_millis() as i64;
        // As `eval` checks before any node.
        ev.check()?;
        if grid.len() > ev.opts.max_samples {
            return Err(crate::error::Error::TooManySamples);
        }
        if let Some(out) = ev.range_selector_reduce(&ms.vs, range, grid, drop_name, fill)? {
            return Ok(out);
        }
    }
    let ra = ev.eval_matrix(e, grid)?;
    let ends = ra.ends.clone();
    par_over_series(ev, ra, drop_name, |s, vals| fill(s, &ends, vals))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineOptions;
    use crate::queryable::MemStore;

    /// Series with counter resets, gaps and a stale-free mix of sample spacings.
    fn range_arg(series: usize, steps: usize) -> RangeArg {
        let series = (0..series)
            .map(|k| MatrixSeries {
                labels: Labels::from_pairs([("k", format!("{k:04}"))]),
                samples: (0..steps as i64 * 4)
                    .filter(|i| (i + k as i64) % 11 != 0)
                    .map(|i| Sample {
                        t: i * 15_000 + (k as i64 % 7) * 1000,
                        v: ((i * (k as i64 + 1)) % 97) as f64 * 0.5,
                    })
                    .collect(),
            })
            .collect();
        RangeArg {
            series,
            ends: (0..steps as i64).map(|i| i * 60_000).collect(),
            range: 300_000,
        }
    }

    #[test]
    fn shared_between_threads_gives_what_one_thread_gives() {
        let store = MemStore::new();
        let opts = EngineOptions::default();
        let grid = Grid {
            start: 0,
            end: 0,
            step: 1,
        };
        let mut ev = Evaluator::new(
            &store,
            &opts,
            grid,
            std::time::Instant::now() + std::time::Duration::from_secs(60),
            Default::default(),
        );
        // Far above the threshold, so the work is shared.
        let ra = range_arg(300, 200);
        assert!(ra.series.len() * ra.ends.len() >= PARALLEL_WINDOWS);
        let f = |s: &MatrixSeries, r: std::ops::Range<usize>, i: usize| {
            let w = &s.samples[r];
            (w.len() > 1 && !i.is_multiple_of(5)).then(|| w[w.len() - 1].v - w[0].v + i as f64)
        };
        let one = over_window_ranges(&mut ev, &ra, true, |_, _, s, r, i| f(s, r, i)).unwrap();
        let many =
            par_over_window_ranges(&mut ev, ra, true, |_| (), |_, s, r, i| f(s, r, i)).unwrap();
        assert!(one.len() > 250);
        assert_eq!(one, many);
    }
}
