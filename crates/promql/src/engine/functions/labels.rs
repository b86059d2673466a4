//! Label manipulation: `label_replace`, `label_join`, and `absent`/`absent_over_time`, which
//! build labels from the selector's equality matchers.

use promql_parser::label::MatchOp;
use promql_parser::parser::{Call, Expr};

use super::{arg, unwrap_paren};
use crate::engine::eval::Evaluator;
use crate::engine::{EvalValue, Grid, StepSeries};
use crate::error::{eval_err, Result};
use crate::labels::{Labels, METRIC_NAME};

fn string_arg(ev: &mut Evaluator<'_>, c: &Call, i: usize, grid: Grid) -> Result<String> {
    match ev.eval(arg(c, i)?, grid)? {
        EvalValue::String(s) => Ok(s),
        _ => eval_err(format!(
            "argument {} of {} must be a string",
            i + 1,
            c.func.name
        )),
    }
}

/// `label_replace` and `label_join`.
pub fn call(ev: &mut Evaluator<'_>, c: &Call, grid: Grid) -> Result<Vec<StepSeries>> {
    let mut v = ev.eval_vector(arg(c, 0)?, grid)?;
    let dst = string_arg(ev, c, 1, grid)?;
    if ev.invalid_label_name(&dst).is_some() {
        return eval_err(format!(
            "invalid destination label name in {}(): {dst}",
            c.func.name
        ));
    }
    if c.func.name == "label_replace" {
        let repl = string_arg(ev, c, 2, grid)?;
        let src = string_arg(ev, c, 3, grid)?;
        let re_s = string_arg(ev, c, 4, grid)?;
        let re = match regex::Regex::new(&format!("^(?s:{re_s})$")) {
            Ok(r) => r,
            Err(_) => {
                return eval_err(format!(
                    "invalid regular expression in label_replace(): {re_s}"
                ))
            }
        };
        for s in &mut v {
            let val = s.labels.get(&src).unwrap_or("").to_string();
            if let Some(caps) = re.captures(&val) {
                let mut out = String::new();
                caps.expand(&repl, &mut out);
                s.labels.set(&dst, &out);
                if dst == METRIC_NAME {
                    s.drop_name = false;
                }
            }
        }
    } else {
        let sep = string_arg(ev, c, 2, grid)?;
        let mut srcs = Vec::new();
        for i in 3..c.args.args.len() {
            srcs.push(string_arg(ev, c, i, grid)?);
        }
        for s in &mut v {
            let joined: Vec<&str> = srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect();
            let joined = joined.join(&sep);
            s.labels.set(&dst, &joined);
            if dst == METRIC_NAME {
                s.drop_name = false;
            }
        }
    }
    Ok(v)
}

/// `absent(v)` / `absent_over_time(m)`: 1 where the argument is empty.
pub fn absent(ev: &mut Evaluator<'_>, c: &Call, grid: Grid) -> Result<Vec<StepSeries>> {
    let a = arg(c, 0)?;
    let n = grid.len();
    let mut present = vec![false; n];
    if c.func.name == "absent" {
        for s in ev.eval_vector(a, grid)? {
            for (i, v) in s.vals.iter().enumerate() {
                present[i] |= v.is_some();
            }
        }
    } else {
        let ra = ev.eval_matrix(a, grid)?;
        for s in &ra.series {
            for (i, p) in present.iter_mut().enumerate() {
                *p |= !ra.window(s, i).is_empty();
            }
        }
    }
    let vs = match unwrap_paren(a) {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.vs),
        _ => None,
    };
    let mut labels = Labels::new();
    if let Some(vs) = vs {
        // A label with several matchers (of any kind) is left out, as in Prometheus.
        let ms = &vs.matchers.matchers;
        for m in ms {
            if m.name == METRIC_NAME || m.op != MatchOp::Equal {
                continue;
            }
            if ms.iter().filter(|x| x.name == m.name).count() == 1 {
                labels.set(&m.name, &m.value);
            }
        }
    }
    let vals: Vec<Option<f64>> = present
        .iter()
        .map(|p| if *p { None } else { Some(1.0) })
        .collect();
    if vals.iter().all(Option::is_none) {
        return Ok(Vec::new());
    }
    Ok(vec![StepSeries {
        labels,
        drop_name: false,
        vals,
    }])
}
