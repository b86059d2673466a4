//! Counter and gauge change functions over range vectors: `rate`, `irate`, `increase`,
//! `delta`, `idelta`, `deriv`, `predict_linear`, `resets`, `changes`.

use promql_parser::parser::{Call, Expr};

use super::{arg, over_range_vector, par_over_series, par_over_window_ranges, unwrap_paren};
use crate::engine::aggregate::kahan_inc;
use crate::engine::eval::Evaluator;
use crate::engine::{Grid, StepSeries};
use crate::engine::{RangeArg, WindowCursor};
use crate::error::Result;
use crate::labels::Labels;
use crate::value::{MatrixSeries, Sample};

#[cfg(test)]
/// Prometheus' `extrapolatedRate` over the window `(start, end]`, whose raw change
/// `result` (last minus first, plus counter resets) the caller computed.
fn extrapolated(
    w: &[Sample],
    result: f64,
    start: i64,
    end: i64,
    range_s: f64,
    counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let first = w[0];
    let last = w[w.len() - 1];
    let mut to_start = (first.t - start) as f64 / 1000.0;
    let mut to_end = (end - last.t) as f64 / 1000.0;
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let avg = sampled / (w.len() - 1) as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if counter {
        let mut to_zero = to_start;
        if result > 0.0 && first.v >= 0.0 {
            to_zero = sampled * (first.v / result);
        }
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= range_s;
    }
    Some(result * factor)
}

/// The indices `j` where `samples[j]` is below `samples[j - 1]` (counter resets).
fn resets_of(samples: &[Sample], out: &mut Vec<usize>) {
    out.clear();
    out.extend((1..samples.len()).filter(|&j| samples[j].v < samples[j - 1].v));
}

/// The change of the window `samples[r]`: last minus first, plus for a counter the value
/// before each reset (`resets` as [`resets_of`] the whole series). The same additions in
/// the same order as Prometheus' loop over the window, which compares the first sample with
/// zero, but only over the resets instead of every sample.
#[inline]
fn raw_change(
    samples: &[Sample],
    r: std::ops::Range<usize>,
    counter: bool,
    resets: &[usize],
) -> f64 {
    let (first, last) = (samples[r.start], samples[r.end - 1]);
    let mut result = last.v - first.v;
    if counter {
        if first.v < 0.0 {
            result += 0.0;
        }
        if resets.is_empty() {
            return result;
        }
        let from = resets.partition_point(|&j| j <= r.start);
        for &j in resets[from..].iter().take_while(|&&j| j < r.end) {
            result += samples[j - 1].v;
        }
    }
    result
}
/// Least-squares fit of `w` with x relative to `intercept_t`, as Prometheus.
pub(crate) fn linear_regression(w: &[Sample], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init = w[0].v;
    let mut const_y = true;
    for (i, s) in w.iter().enumerate() {
        if const_y && i > 0 && s.v != init {
            const_y = false;
        }
        n += 1.0;
        let x = (s.t - intercept_t) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(s.v, sy, cy);
        (sxy, cxy) = kahan_inc(x * s.v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    sx += cx;
    sy += cy;
    sxy += cxy;
    sx2 += cx2;
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn non_counter_info(ev: &mut Evaluator<'_>, l: &Labels) {
    if let Some(name) = l.name() {
        if !["_total", "_sum", "_count", "_bucket"]
            .iter()
            .any(|s| name.ends_with(s))
        {
            ev.info(format!(
                "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {name:?}"
            ));
        }
    }
}

/// Windows gathered by [`change_per_window`] before their extrapolation is computed.
const BATCH: usize = 64;

/// The inputs of [`extrapolated`] for up to [`BATCH`] windows, as columns: the float
/// arithmetic then runs in one branch-free loop over them, which the compiler turns into
/// packed (several windows per instruction) divisions, instead of a chain of dependent
/// scalar divisions per window interleaved with the window search. Packed IEEE
/// operations round as the scalar ones do: the results are bit-identical.
struct Batch {
    len: usize,
    slot: [usize; BATCH],
    /// First sample's time minus the window start (ms).
    to_start: [f64; BATCH],
    /// Window end minus the last sample's time (ms).
    to_end: [f64; BATCH],
    /// Last minus first sample's time (ms).
    sampled: [f64; BATCH],
    /// Samples in the window minus one.
    intervals: [f64; BATCH],
    first_v: [f64; BATCH],
    result: [f64; BATCH],
}

impl Batch {
    fn new() -> Self {
        Batch {
            len: 0,
            slot: [0; BATCH],
            to_start: [0.0; BATCH],
            to_end: [0.0; BATCH],
            sampled: [0.0; BATCH],
            intervals: [0.0; BATCH],
            first_v: [0.0; BATCH],
            result: [0.0; BATCH],
        }
    }

    /// [`extrapolated`] of every gathered window, into `vals`; empties the batch.
    // One index over seven columns: zipping them would hide the loop from vectorisation.
    #[allow(clippy::needless_range_loop)]
    fn flush(&mut self, vals: &mut [Option<f64>], range_s: f64, counter: bool, is_rate: bool) {
        let n = self.len;
        let mut out = [0.0f64; BATCH];
        // The same operations in the same order as `extrapolated`, branches made selects.
        for k in 0..n {
            let result = self.result[k];
            let first_v = self.first_v[k];
            let mut to_start = self.to_start[k] / 1000.0;
            let mut to_end = self.to_end[k] / 1000.0;
            let sampled = self.sampled[k] / 1000.0;
            let avg = sampled / self.intervals[k];
            let threshold = avg * 1.1;
            let half = avg / 2.0;
            to_start = if to_start >= threshold {
                half
            } else {
                to_start
            };
            if counter {
                let zero = sampled * (first_v / result);
                let to_zero = if result > 0.0 && first_v >= 0.0 {
                    zero
                } else {
                    to_start
                };
                to_start = if to_zero < to_start {
                    to_zero
                } else {
                    to_start
                };
            }
            to_end = if to_end >= threshold { half } else { to_end };
            let mut factor = (sampled + to_start + to_end) / sampled;
            if is_rate {
                factor /= range_s;
            }
            out[k] = result * factor;
        }
        for (&slot, &v) in self.slot[..n].iter().zip(&out[..n]) {
            vals[slot] = Some(v);
        }
        self.len = 0;
    }
}

/// `rate`, `increase` or `delta` of each window of `s` ending at `ends`, into `vals`;
/// whether any window has a value.
fn change_per_window(
    s: &MatrixSeries,
    ends: &[i64],
    vals: &mut [Option<f64>],
    range: i64,
    range_s: f64,
    counter: bool,
    is_rate: bool,
) -> bool {
    let mut resets = Vec::new();
    if counter {
        resets_of(&s.samples, &mut resets);
    }
    let mut any = false;
    let mut cursor = WindowCursor::default();
    let mut batch = Batch::new();
    for (i, &end) in ends.iter().enumerate().take(vals.len()) {
        let r = cursor.window(&s.samples, end, range);
        if r.len() < 2 {
            continue;
        }
        let (first, last) = (s.samples[r.start], s.samples[r.end - 1]);
        let k = batch.len;
        batch.slot[k] = i;
        batch.to_start[k] = (first.t - (end - range)) as f64;
        batch.to_end[k] = (end - last.t) as f64;
        batch.sampled[k] = (last.t - first.t) as f64;
        batch.intervals[k] = (r.len() - 1) as f64;
        batch.first_v[k] = first.v;
        batch.result[k] = raw_change(&s.samples, r, counter, &resets);
        batch.len += 1;
        any = true;
        if batch.len == BATCH {
            batch.flush(vals, range_s, counter, is_rate);
        }
    }
    batch.flush(vals, range_s, counter, is_rate);
    any
}

/// [`par_over_window_ranges`] with a function of the window's samples and the step, dropping
/// `__name__`.
fn par_windows(
    ev: &mut Evaluator<'_>,
    ra: RangeArg,
    f: impl Fn(&[Sample], usize) -> Option<f64> + Sync,
) -> Result<Vec<StepSeries>> {
    par_over_window_ranges(ev, ra, true, |_| (), |_, s, r, i| f(&s.samples[r], i))
}

/// Evaluates `c` if it is one of this module's functions.
pub fn call(ev: &mut Evaluator<'_>, c: &Call, grid: Grid) -> Result<Option<Vec<StepSeries>>> {
    let name = c.func.name;
    let m_arg = match name {
        "rate" | "increase" | "delta" | "irate" | "idelta" | "deriv" | "predict_linear"
        | "resets" | "changes" => arg(c, 0)?,
        _ => return Ok(None),
    };
    if let "rate" | "increase" | "delta" = name {
        let range = match unwrap_paren(m_arg) {
            Expr::MatrixSelector(ms) => Some(ms.range.as_millis() as i64),
            _ => None,
        };
        let counter = name != "delta";
        let is_rate = name == "rate";
        // A range selector's range is known before selecting; a subquery's argument goes
        // the general way below.
        if let Some(range) = range {
            let range_s = range as f64 / 1000.0;
            let fill = |s: &MatrixSeries, ends: &[i64], vals: &mut [Option<f64>]| {
                change_per_window(s, ends, vals, range, range_s, counter, is_rate)
            };
            let out = over_range_vector(ev, m_arg, grid, true, &fill)?;
            // Prometheus only remarks on series that produced a result.
            if counter {
                for s in &out {
                    non_counter_info(ev, &s.labels);
                }
            }
            return Ok(Some(out));
        }
    }
    let ra = ev.eval_matrix(m_arg, grid)?;
    let range = ra.range;
    let range_s = range as f64 / 1000.0;
    let ends = ra.ends.clone();
    let out = match name {
        "rate" | "increase" | "delta" => {
            let counter = name != "delta";
            let is_rate = name == "rate";
            let out = par_over_series(ev, ra, true, |s, vals| {
                change_per_window(s, &ends, vals, range, range_s, counter, is_rate)
            })?;
            // Prometheus only remarks on series that produced a result.
            if counter {
                for s in &out {
                    non_counter_info(ev, &s.labels);
                }
            }
            out
        }
        "irate" | "idelta" => par_windows(ev, ra, |w, _| {
            if w.len() < 2 {
                return None;
            }
            let (prev, last) = (w[w.len() - 2], w[w.len() - 1]);
            if name == "idelta" {
                return Some(last.v - prev.v);
            }
            let d = if last.v < prev.v {
                last.v
            } else {
                last.v - prev.v
            };
            let dt = (last.t - prev.t) as f64 / 1000.0;
            if dt == 0.0 {
                return None;
            }
            Some(d / dt)
        })?,
        "deriv" => par_windows(ev, ra, |w, _| {
            if w.len() < 2 {
                return None;
            }
            Some(linear_regression(w, w[0].t).0)
        })?,
        "predict_linear" => {
            let secs = ev.eval_scalar(arg(c, 1)?, grid)?;
            par_windows(ev, ra, |w, i| {
                if w.len() < 2 {
                    return None;
                }
                let (slope, icpt) = linear_regression(w, grid.ts(i));
                Some(slope * secs[i] + icpt)
            })?
        }
        "resets" => par_windows(ev, ra, |w, _| {
            Some(w.windows(2).filter(|p| p[1].v < p[0].v).count() as f64)
        })?,
        _ => par_windows(ev, ra, |w, _| {
            Some(
                w.windows(2)
                    .filter(|p| !(p[1].v == p[0].v || (p[1].v.is_nan() && p[0].v.is_nan())))
                    .count() as f64,
            )
        })?,
    };
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `change_per_window` as it was before batching: one window after the other through
    /// `extrapolated`.
    fn one_by_one(
        s: &MatrixSeries,
        ends: &[i64],
        range: i64,
        counter: bool,
        is_rate: bool,
    ) -> Vec<Option<f64>> {
        let mut resets = Vec::new();
        if counter {
            resets_of(&s.samples, &mut resets);
        }
        let mut cursor = WindowCursor::default();
        ends.iter()
            .map(|&end| {
                let r = cursor.window(&s.samples, end, range);
                if r.len() < 2 {
                    return None;
                }
                let result = raw_change(&s.samples, r.clone(), counter, &resets);
                let w = &s.samples[r];
                extrapolated(
                    w,
                    result,
                    end - range,
                    end,
                    range as f64 / 1000.0,
                    counter,
                    is_rate,
                )
            })
            .collect()
    }

    #[test]
    fn batched_windows_are_bit_identical_to_one_by_one() {
        let mut x: u64 = 7;
        let mut rnd = |m: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % m
        };
        for round in 0..200 {
            // Irregular scrapes, counter resets, negative values, NaN, gaps.
            let mut t = 1_700_000_000_000 + rnd(100_000) as i64;
            let mut v = rnd(1000) as f64 - 200.0;
            let mut samples = Vec::new();
            for _ in 0..rnd(400) {
                t += 1 + rnd(30_000) as i64 + if rnd(40) == 0 { 600_000 } else { 0 };
                v = match rnd(30) {
                    0 => rnd(10) as f64,
                    1 => f64::NAN,
                    2 => -(rnd(100) as f64) / 7.0,
                    _ => v + rnd(1000) as f64 / 3.0,
                };
                samples.push(Sample { t, v });
            }
            let s = MatrixSeries {
                labels: Labels::new(),
                samples,
            };
            let range = [60_000, 300_000, 1_000, 3_600_000][round % 4];
            let step = 1 + rnd(120_000) as i64;
            let first = 1_700_000_000_000 + rnd(200_000) as i64;
            // More windows than a batch holds, some past the data.
            let ends: Vec<i64> = (0..(rnd(500) as i64)).map(|i| first + i * step).collect();
            for (counter, is_rate) in [(true, true), (true, false), (false, false)] {
                let want = one_by_one(&s, &ends, range, counter, is_rate);
                let mut got = vec![None; ends.len()];
                let any = change_per_window(
                    &s,
                    &ends,
                    &mut got,
                    range,
                    range as f64 / 1000.0,
                    counter,
                    is_rate,
                );
                assert_eq!(any, want.iter().any(Option::is_some));
                let bits = |v: &[Option<f64>]| -> Vec<Option<u64>> {
                    v.iter().map(|x| x.map(f64::to_bits)).collect()
                };
                assert_eq!(bits(&got), bits(&want), "round {round}");
            }
        }
    }
}
