//! Time functions: `time`, `timestamp`, `minute`, `hour`, `day_of_*`, `days_in_month`,
//! `month`, `year`.

use chrono::{DateTime, Datelike, Timelike};
use promql_parser::parser::{Call, Expr};

use super::{map_values, unwrap_paren};
use crate::engine::eval::Evaluator;
use crate::engine::{EvalValue, Grid, StepSeries};
use crate::error::Result;
use crate::labels::Labels;

fn date_part(name: &str, secs: f64) -> f64 {
    if secs.is_nan() || secs.is_infinite() {
        return f64::NAN;
    }
    let Some(t) = DateTime::from_timestamp(secs as i64, 0) else {
        return f64::NAN;
    };
    f64::from(match name {
        "minute" => t.minute(),
        "hour" => t.hour(),
        "day_of_month" => t.day(),
        "day_of_week" => t.weekday().num_days_from_sunday(),
        "day_of_year" => t.ordinal(),
        "month" => t.month(),
        "year" => return f64::from(t.year()),
        _ => {
            // days_in_month
            let (y, m) = (t.year(), t.month());
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            match (
                chrono::NaiveDate::from_ymd_opt(y, m, 1),
                chrono::NaiveDate::from_ymd_opt(ny, nm, 1),
            ) {
                (Some(a), Some(b)) => (b - a).num_days() as u32,
                _ => return f64::NAN,
            }
        }
    })
}

/// Evaluates `c` if it is one of this module's functions.
pub fn call(ev: &mut Evaluator<'_>, c: &Call, grid: Grid) -> Result<Option<EvalValue>> {
    let name = c.func.name;
    match name {
        "time" => Ok(Some(EvalValue::Scalar(
            (0..grid.len())
                .map(|i| grid.ts(i) as f64 / 1000.0)
                .collect(),
        ))),
        "timestamp" => {
            let a = super::arg(c, 0)?;
            let mut v = match unwrap_paren(a) {
                Expr::VectorSelector(vs) => ev.vector_selector(vs, grid, true)?,
                _ => {
                    let v = ev.eval_vector(a, grid)?;
                    map_values(v, |_, i| grid.ts(i) as f64 / 1000.0)
                }
            };
            v.iter_mut().for_each(|s| s.drop_name = true);
            Ok(Some(EvalValue::Vector(v)))
        }
        "minute" | "hour" | "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month"
        | "month" | "year" => {
            let v = match c.args.args.first() {
                Some(a) => ev.eval_vector(a, grid)?,
                None => vec![StepSeries {
                    labels: Labels::new(),
                    drop_name: false,
                    vals: (0..grid.len())
                        .map(|i| Some(grid.ts(i) as f64 / 1000.0))
                        .collect(),
                }],
            };
            Ok(Some(EvalValue::Vector(map_values(v, |x, _| {
                date_part(name, x)
            }))))
        }
        _ => Ok(None),
    }
}
