//! `info(v, [data-label-selector])` (experimental in Prometheus 3): adds the data labels of
//! info series (`target_info` unless the selector names others) to the series of `v` they
//! share their identifying labels (`instance`, `job`) with.

use std::collections::{BTreeSet, HashMap};

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{Call, Expr};

use super::arg;
use crate::engine::eval::{offset_ms, Evaluator};
use crate::engine::{Grid, StepSeries};
use crate::error::{eval_err, Error, Result};
use crate::labels::{Labels, METRIC_NAME};

/// The labels that join a series to its info series.
const IDENTIFYING: [&str; 2] = ["instance", "job"];

/// The info metric read when the selector names none.
const TARGET_INFO: &str = "target_info";

/// What pins the info series in time: the `@` (ms, `None` for the evaluation time) and
/// offset of the first vector selector of `v`, with the offsets of the subqueries around
/// it up to the first that has an `@`. Info labels then describe `v`'s samples as of the
/// time those samples were read.
fn reference_time(ev: &Evaluator<'_>, e: &Expr) -> Option<(Option<i64>, i64)> {
    match e {
        Expr::VectorSelector(vs) => Some((ev.at_ms(&vs.at), offset_ms(&vs.offset))),
        Expr::MatrixSelector(ms) => Some((ev.at_ms(&ms.vs.at), offset_ms(&ms.vs.offset))),
        Expr::Subquery(sq) => {
            let (at, off) = reference_time(ev, &sq.expr)?;
            if at.is_some() {
                return Some((at, off));
            }
            Some((ev.at_ms(&sq.at), off + offset_ms(&sq.offset)))
        }
        Expr::Paren(p) => reference_time(ev, &p.expr),
        Expr::Unary(u) => reference_time(ev, &u.expr),
        Expr::Binary(b) => reference_time(ev, &b.lhs).or_else(|| reference_time(ev, &b.rhs)),
        Expr::Aggregate(a) => reference_time(ev, &a.expr)
            .or_else(|| a.param.as_ref().and_then(|p| reference_time(ev, p))),
        Expr::Call(c) => c.args.args.iter().find_map(|a| reference_time(ev, a)),
        _ => None,
    }
}

fn is_positive(m: &Matcher) -> bool {
    matches!(m.op, MatchOp::Equal | MatchOp::Re(_))
}

/// Evaluates `info(v, [selector])` at every step.
pub fn call(ev: &mut Evaluator<'_>, c: &Call, grid: Grid) -> Result<Vec<StepSeries>> {
    let v_expr = arg(c, 0)?;
    let (at, off) = reference_time(ev, v_expr).unwrap_or((None, 0));
    let base = ev.eval_vector(v_expr, grid)?;
    let n = grid.len();

    // Matchers of the selector by label name; `__name__` ones choose the info metrics.
    let mut data_matchers: HashMap<String, Vec<Matcher>> = HashMap::new();
    let mut name_matchers: Vec<Matcher> = Vec::new();
    if let Some(sel) = c.args.args.get(1) {
        let Expr::VectorSelector(vs) = sel.as_ref() else {
            return eval_err("the second argument of info() must be a label selector");
        };
        let mut ms = vs.matchers.matchers.clone();
        if let Some(name) = &vs.name {
            ms.push(Matcher::new(MatchOp::Equal, METRIC_NAME, name));
        }
        for m in ms {
            if m.name == METRIC_NAME {
                name_matchers.push(m);
            } else {
                data_matchers.entry(m.name.clone()).or_default().push(m);
            }
        }
    }
    // Which metrics count as info metrics: with only negative name matchers, any `*_info`.
    if !name_matchers.iter().any(is_positive) {
        let positive = if name_matchers.is_empty() {
            Matcher::new(MatchOp::Equal, METRIC_NAME, TARGET_INFO)
        } else {
            match regex::Regex::new("^(?s:.+_info)$") {
                Ok(re) => Matcher::new(MatchOp::Re(re), METRIC_NAME, ".+_info"),
                Err(e) => return Err(Error::Eval(e.to_string())),
            }
        };
        name_matchers.insert(0, positive);
    }
    let is_info_name = |l: &Labels| {
        let name = l.name().unwrap_or("");
        name_matchers.iter().all(|m| m.is_match(name))
    };
    // Info series themselves are passed through, not enriched.
    let ignored: Vec<bool> = base.iter().map(|s| is_info_name(&s.labels)).collect();

    // Identifying label values of the series to enrich; info series are read only for them.
    let mut wanted: HashMap<&str, BTreeSet<String>> = HashMap::new();
    for (s, _) in base.iter().zip(&ignored).filter(|(_, ig)| !**ig) {
        for l in IDENTIFYING {
            if let Some(v) = s.labels.get(l) {
                wanted.entry(l).or_default().insert(v.to_string());
            }
        }
    }
    let mut info = Vec::new();
    if !wanted.is_empty() {
        let mut matchers = name_matchers.clone();
        matchers.extend(data_matchers.values().flatten().cloned());
        let times: Vec<i64> = (0..n).map(|i| at.unwrap_or(grid.ts(i)) - off).collect();
        if let (Some(&mint), Some(&maxt)) = (times.iter().min(), times.iter().max()) {
            let lookback = ev.opts.lookback_delta_ms;
            let series: Vec<_> = ev
                .select_matchers(&matchers, mint - lookback + 1, maxt)?
                .into_iter()
                .filter(|s| {
                    wanted
                        .iter()
                        .all(|(l, vals)| s.labels.get(l).is_some_and(|v| vals.contains(v)))
                })
                .collect();
            // The values are the info samples' timestamps: the newest info series wins.
            info = ev.sample_at(series, &times, true)?;
        }
    }

    // The join key of a series for an info metric: that name plus the identifying labels.
    let key = |name: &str, l: &Labels| {
        let mut k = vec![name.to_string()];
        for id in IDENTIFYING {
            k.push(l.get(id).map(|v| format!("={v}")).unwrap_or_default());
        }
        k
    };
    let info_names: BTreeSet<String> = info
        .iter()
        .map(|s| s.labels.name().unwrap_or("").to_string())
        .collect();
    let drop_unmatched = data_matchers.values().flatten().any(|m| !m.is_match(""));

    let mut out: Vec<StepSeries> = Vec::new();
    let mut out_index: HashMap<Labels, usize> = HashMap::new();
    for i in 0..n {
        if i % 1024 == 0 {
            ev.check()?;
        }
        let mut by_key: HashMap<Vec<String>, usize> = HashMap::new();
        for (j, s) in info.iter().enumerate() {
            let Some(t) = s.vals[i] else { continue };
            let k = key(s.labels.name().unwrap_or(""), &s.labels);
            match by_key.get(&k) {
                Some(&o) => {
                    let ot = info[o].vals[i].unwrap_or(f64::NAN);
                    if ot == t {
                        return eval_err(format!(
                            "found duplicate series for info metric: existing {} @ {}, new {} @ {}",
                            info[o].labels.prom_string(),
                            (ot * 1000.0).round() as i64,
                            s.labels.prom_string(),
                            (t * 1000.0).round() as i64
                        ));
                    }
                    if t > ot {
                        by_key.insert(k, j);
                    }
                }
                None => {
                    by_key.insert(k, j);
                }
            }
        }
        for (s, ignore) in base.iter().zip(&ignored) {
            let Some(val) = s.vals[i] else { continue };
            let mut labels = s.labels.clone();
            if !*ignore {
                let mut added = Labels::new();
                let mut matched = false;
                for name in &info_names {
                    let Some(&j) = by_key.get(&key(name, &s.labels)) else {
                        continue;
                    };
                    matched = true;
                    for (l, v) in info[j].labels.iter() {
                        if l == METRIC_NAME
                            || (!data_matchers.is_empty() && !data_matchers.contains_key(l))
                        {
                            continue;
                        }
                        if added.get(l).is_some_and(|x| x != v) {
                            return eval_err(format!("conflicting label: {l}"));
                        }
                        if s.labels.get(l).is_none() {
                            added.set(l, v);
                        }
                    }
                }
                if !matched && drop_unmatched {
                    continue;
                }
                for (l, v) in added.iter() {
                    labels.set(l, v);
                }
            }
            let idx = *out_index.entry(labels.clone()).or_insert_with(|| {
                out.push(StepSeries {
                    labels,
                    drop_name: s.drop_name,
                    vals: vec![None; n],
                });
                out.len() - 1
            });
            if out[idx].vals[i].is_some() {
                return eval_err("vector cannot contain metrics with the same labelset");
            }
            out[idx].vals[i] = Some(val);
        }
    }
    Ok(out)
}
