//! Element-wise math: `abs`, `ceil`, ..., trigonometry, `round`, `clamp*`.

use promql_parser::parser::Call;

use super::{arg, map_values};
use crate::engine::eval::Evaluator;
use crate::engine::{Grid, StepSeries};
use crate::error::Result;

/// Go's `math.Round`: half away from zero.
fn sgn(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x
    }
}

/// A one-argument float function, if `name` is one.
pub fn simple(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sqrt" => f64::sqrt,
        "sgn" => sgn,
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => f64::to_degrees,
        "rad" => f64::to_radians,
        _ => return None,
    })
}

/// `round(v, to_nearest=1)`, `clamp(v, min, max)`, `clamp_min`, `clamp_max`.
pub fn call(ev: &mut Evaluator<'_>, c: &Call, grid: Grid) -> Result<Vec<StepSeries>> {
    let v = ev.eval_vector(arg(c, 0)?, grid)?;
    let p1 = match c.args.args.get(1) {
        Some(e) => ev.eval_scalar(e, grid)?,
        None => vec![1.0; grid.len()],
    };
    Ok(match c.func.name {
        "round" => map_values(v, |x, i| {
            // Prometheus: floor(v * 1/to_nearest + 0.5) / (1/to_nearest).
            let inv = 1.0 / p1[i];
            (x * inv + 0.5).floor() / inv
        }),
        "clamp_min" => map_values(v, |x, i| {
            if x.is_nan() || p1[i].is_nan() {
                f64::NAN
            } else {
                x.max(p1[i])
            }
        }),
        "clamp_max" => map_values(v, |x, i| {
            if x.is_nan() || p1[i].is_nan() {
                f64::NAN
            } else {
                x.min(p1[i])
            }
        }),
        _ => {
            let p2 = ev.eval_scalar(arg(c, 2)?, grid)?;
            let mut out = map_values(v, |x, i| {
                if x.is_nan() || p1[i].is_nan() || p2[i].is_nan() {
                    f64::NAN
                } else {
                    x.max(p1[i]).min(p2[i])
                }
            });
            // clamp with min > max returns an empty vector.
            for s in &mut out {
                for (i, x) in s.vals.iter_mut().enumerate() {
                    if p1[i] > p2[i] {
                        *x = None;
                    }
                }
            }
            out.retain(|s| s.vals.iter().any(Option::is_some));
            out
        }
    })
}
