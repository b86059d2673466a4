//! Binary operators: arithmetic, comparison (with and without `bool`), set operators, and
//! vector matching (`on`/`ignoring`, `group_left`/`group_right`).

use std::collections::{HashMap, HashSet};

use promql_parser::parser::token::*;
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::eval::Evaluator;
use super::{EvalValue, Grid, StepSeries};
use crate::error::{eval_err, Error, Result};
use crate::labels::{Labels, METRIC_NAME};

/// Applies an arithmetic operator.
pub(crate) fn arith(op: TokenId, l: f64, r: f64) -> Option<f64> {
    Some(match op {
        T_ADD => l + r,
        T_SUB => l - r,
        T_MUL => l * r,
        T_DIV => l / r,
        T_MOD => l % r,
        T_POW => l.powf(r),
        T_ATAN2 => l.atan2(r),
        _ => return None,
    })
}

/// Applies a comparison operator.
fn compare(op: TokenId, l: f64, r: f64) -> Option<bool> {
    Some(match op {
        T_EQLC => l == r,
        T_NEQ => l != r,
        T_GTR => l > r,
        T_LSS => l < r,
        T_GTE => l >= r,
        T_LTE => l <= r,
        _ => return None,
    })
}

/// Result of `l op r` for a vector element: `None` drops the element.
fn elem(op: TokenId, l: f64, r: f64, return_bool: bool, keep: f64) -> Option<f64> {
    if let Some(c) = compare(op, l, r) {
        if return_bool {
            Some(if c { 1.0 } else { 0.0 })
        } else if c {
            Some(keep)
        } else {
            None
        }
    } else {
        arith(op, l, r)
    }
}

/// The label set two series are matched on.
fn signature(l: &Labels, matching: &Option<LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(ls)) => l.keep(&ls.labels),
        Some(LabelModifier::Exclude(ls)) => {
            let mut d = l.drop(&ls.labels);
            d.remove(METRIC_NAME);
            d
        }
        None => l.without_name(),
    }
}

/// Assigns each series a small id for its signature.
fn sig_ids(
    series: &[StepSeries],
    matching: &Option<LabelModifier>,
    ids: &mut HashMap<Labels, usize>,
) -> Vec<usize> {
    series
        .iter()
        .map(|s| {
            let sig = signature(&s.labels, matching);
            let n = ids.len();
            *ids.entry(sig).or_insert(n)
        })
        .collect()
}

/// Evaluates a binary expression at every step.
pub fn eval(ev: &mut Evaluator<'_>, b: &BinaryExpr, grid: Grid) -> Result<EvalValue> {
    let op = b.op.id();
    let return_bool = b.return_bool();
    let lhs = ev.eval(&b.lhs, grid)?;
    let rhs = ev.eval(&b.rhs, grid)?;
    match (lhs, rhs) {
        (EvalValue::Scalar(l), EvalValue::Scalar(r)) => Ok(EvalValue::Scalar(
            l.iter()
                .zip(&r)
                .map(|(&l, &r)| match compare(op, l, r) {
                    Some(c) => f64::from(u8::from(c)),
                    None => arith(op, l, r).unwrap_or(f64::NAN),
                })
                .collect(),
        )),
        (EvalValue::Vector(mut v), EvalValue::Scalar(s)) => {
            vector_scalar(op, return_bool, &mut v, &s, false);
            Ok(EvalValue::Vector(v))
        }
        (EvalValue::Scalar(s), EvalValue::Vector(mut v)) => {
            vector_scalar(op, return_bool, &mut v, &s, true);
            Ok(EvalValue::Vector(v))
        }
        (EvalValue::Vector(l), EvalValue::Vector(r)) => {
            let matching = b.modifier.as_ref().and_then(|m| m.matching.clone());
            let card = b
                .modifier
                .as_ref()
                .map(|m| m.card.clone())
                .unwrap_or(VectorMatchCardinality::OneToOne);
            match op {
                T_LAND | T_LOR | T_LUNLESS => {
                    Ok(EvalValue::Vector(set_op(op, l, r, &matching, grid.len())))
                }
                _ => {
                    let fill = b
                        .modifier
                        .as_ref()
                        .map(|m| (m.fill_values.lhs, m.fill_values.rhs))
                        .unwrap_or((None, None));
                    Ok(EvalValue::Vector(vector_vector(
                        ev,
                        op,
                        return_bool,
                        l,
                        r,
                        &matching,
                        &card,
                        fill,
                        grid.len(),
                    )?))
                }
            }
        }
        _ => eval_err("binary expression must contain only scalar and instant vector types"),
    }
}

fn vector_scalar(
    op: TokenId,
    return_bool: bool,
    v: &mut Vec<StepSeries>,
    s: &[f64],
    scalar_left: bool,
) {
    let is_cmp = compare(op, 0.0, 0.0).is_some();
    for series in v.iter_mut() {
        if !is_cmp || return_bool {
            series.drop_name = true;
        }
        for (i, slot) in series.vals.iter_mut().enumerate() {
            if let Some(x) = *slot {
                let (l, r) = if scalar_left { (s[i], x) } else { (x, s[i]) };
                *slot = elem(op, l, r, return_bool, x);
            }
        }
    }
    v.retain(|s| s.vals.iter().any(Option::is_some));
}

fn set_op(
    op: TokenId,
    l: Vec<StepSeries>,
    r: Vec<StepSeries>,
    matching: &Option<LabelModifier>,
    n: usize,
) -> Vec<StepSeries> {
    let mut ids = HashMap::new();
    let lsig = sig_ids(&l, matching, &mut ids);
    let rsig = sig_ids(&r, matching, &mut ids);
    let nsig = ids.len();
    let mut out = Vec::new();
    // present[step][sig] for the side we test against.
    let presence = |side: &[StepSeries], sigs: &[usize]| {
        let mut p = vec![vec![false; nsig]; n];
        for (s, &sig) in side.iter().zip(sigs) {
            for (i, v) in s.vals.iter().enumerate() {
                if v.is_some() {
                    p[i][sig] = true;
                }
            }
        }
        p
    };
    match op {
        T_LAND | T_LUNLESS => {
            let rp = presence(&r, &rsig);
            let want = op == T_LAND;
            for (mut s, sig) in l.into_iter().zip(lsig) {
                for (i, v) in s.vals.iter_mut().enumerate() {
                    if rp[i][sig] != want {
                        *v = None;
                    }
                }
                if s.vals.iter().any(Option::is_some) {
                    out.push(s);
                }
            }
        }
        _ => {
            let lp = presence(&l, &lsig);
            out.extend(l);
            for (mut s, sig) in r.into_iter().zip(rsig) {
                for (i, v) in s.vals.iter_mut().enumerate() {
                    if lp[i][sig] {
                        *v = None;
                    }
                }
                if s.vals.iter().any(Option::is_some) {
                    out.push(s);
                }
            }
        }
    }
    out
}

/// The labels of a result of `many op one` (sides after any `group_right` swap), as
/// Prometheus' `resultMetric`: the many side's labels, narrowed to the matching labels
/// for one-to-one matching, plus the `group_x` labels taken from the one side.
fn result_labels(
    many: &Labels,
    one: &Labels,
    matching: &Option<LabelModifier>,
    one_to_one: bool,
    include: &[String],
) -> Labels {
    let mut labels = many.clone();
    if one_to_one {
        match matching {
            Some(LabelModifier::Include(ls)) => labels = labels.keep(&ls.labels),
            Some(LabelModifier::Exclude(ls)) => labels = labels.drop(&ls.labels),
            None => {}
        }
    }
    for name in include {
        labels.set(name, one.get(name).unwrap_or(""));
    }
    labels
}

/// Vector-to-vector arithmetic and comparison with `on`/`ignoring`, `group_left`/
/// `group_right`, and the experimental `fill`/`fill_left`/`fill_right` values that stand
/// in for a missing partner. Fill values apply to the sides as Prometheus evaluates them,
/// after `group_right` swaps them: the right fill replaces a missing "one" series, the
/// left fill a missing "many" series.
#[allow(clippy::too_many_arguments)]
fn vector_vector(
    ev: &mut Evaluator<'_>,
    op: TokenId,
    return_bool: bool,
    l: Vec<StepSeries>,
    r: Vec<StepSeries>,
    matching: &Option<LabelModifier>,
    card: &VectorMatchCardinality,
    fill: (Option<f64>, Option<f64>),
    n: usize,
) -> Result<Vec<StepSeries>> {
    let (fill_lhs, fill_rhs) = fill;
    let swap = matches!(card, VectorMatchCardinality::OneToMany(_));
    let include: Vec<String> = match card {
        VectorMatchCardinality::OneToMany(ls) | VectorMatchCardinality::ManyToOne(ls) => {
            ls.labels.clone()
        }
        _ => Vec::new(),
    };
    let (many, one) = if swap { (r, l) } else { (l, r) };
    let mut ids = HashMap::new();
    let msig = sig_ids(&many, matching, &mut ids);
    let osig = sig_ids(&one, matching, &mut ids);
    let nsig = ids.len();
    let is_cmp = compare(op, 0.0, 0.0).is_some();
    let drop_name = !is_cmp || return_bool;
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);

    let mut out: Vec<StepSeries> = Vec::new();
    // (match group, output series) pairs seen at the current step.
    let mut group_results: HashSet<(usize, usize)> = HashSet::new();
    // Match groups that produced a pair (filtered or not) at the current step.
    let mut matched = vec![false; nsig];
    // Output series of each (many, one) pair, `usize::MAX` standing for a fill value.
    let mut out_index: HashMap<(usize, usize), usize> = HashMap::new();
    let mut by_labels: HashMap<Labels, usize> = HashMap::new();
    let mut one_at = vec![usize::MAX; nsig];
    for i in 0..n {
        if i % 1024 == 0 {
            ev.check()?;
        }
        // Prometheus short-circuits a step where a side is empty (both, with fill values),
        // before any duplicate check.
        let many_any = many.iter().any(|s| s.vals[i].is_some());
        let one_any = one.iter().any(|s| s.vals[i].is_some());
        let no_fill = fill_lhs.is_none() && fill_rhs.is_none();
        if (!many_any && !one_any) || ((!many_any || !one_any) && no_fill) {
            continue;
        }
        one_at.iter_mut().for_each(|x| *x = usize::MAX);
        for (j, s) in one.iter().enumerate() {
            if s.vals[i].is_none() {
                continue;
            }
            let sig = osig[j];
            if one_at[sig] != usize::MAX {
                let side = if swap { "left" } else { "right" };
                // The two series in string order, so the message is the same on every run.
                let mut dupl = [
                    s.labels.prom_string(),
                    one[one_at[sig]].labels.prom_string(),
                ];
                dupl.sort();
                return Err(Error::Eval(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    signature(&s.labels, matching).prom_string(),
                    dupl[0],
                    dupl[1]
                )));
            }
            one_at[sig] = j;
        }
        matched.iter_mut().for_each(|x| *x = false);
        group_results.clear();
        // Pairs: (many index or MAX, one index or MAX, many value, one value, group).
        let mut pairs: Vec<(usize, usize, f64, f64, usize)> = Vec::new();
        for (k, s) in many.iter().enumerate() {
            let Some(mv) = s.vals[i] else { continue };
            let sig = msig[k];
            let j = one_at[sig];
            let ov = match (j, fill_rhs) {
                (usize::MAX, None) => continue,
                (usize::MAX, Some(f)) => f,
                (j, _) => one[j].vals[i].unwrap_or(f64::NAN),
            };
            pairs.push((k, j, mv, ov, sig));
        }
        if let Some(f) = fill_lhs {
            let mut paired = vec![false; nsig];
            for &(_, _, _, _, sig) in &pairs {
                paired[sig] = true;
            }
            for (j, s) in one.iter().enumerate() {
                if let Some(ov) = s.vals[i] {
                    if !paired[osig[j]] {
                        pairs.push((usize::MAX, j, f, ov, osig[j]));
                    }
                }
            }
        }
        for (k, j, mv, ov, sig) in pairs {
            let (lv, rv) = if swap { (ov, mv) } else { (mv, ov) };
            let idx = match out_index.get(&(k, j)) {
                Some(&x) if k != usize::MAX && j != usize::MAX => x,
                _ => {
                    // A fill value stands in with just the matching labels of its partner.
                    let many_l = if k == usize::MAX {
                        signature(&one[j].labels, matching)
                    } else {
                        many[k].labels.clone()
                    };
                    let one_l = if j == usize::MAX {
                        signature(&many_l, matching)
                    } else {
                        one[j].labels.clone()
                    };
                    let labels = result_labels(&many_l, &one_l, matching, one_to_one, &include);
                    let idx = match by_labels.get(&labels) {
                        Some(&x) => x,
                        None => {
                            out.push(StepSeries {
                                labels: labels.clone(),
                                drop_name,
                                vals: vec![None; n],
                            });
                            by_labels.insert(labels, out.len() - 1);
                            out.len() - 1
                        }
                    };
                    out_index.insert((k, j), idx);
                    idx
                }
            };
            // A pair a comparison filters out still counts as a match (Prometheus checks
            // cardinality before filtering).
            if one_to_one {
                if matched[sig] {
                    return eval_err(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                    );
                }
                matched[sig] = true;
            } else if !group_results.insert((sig, idx)) {
                // Within a match group the result labels must differ.
                return eval_err(
                    "multiple matches for labels: grouping labels must ensure unique matches",
                );
            }
            let Some(res) = elem(op, lv, rv, return_bool, lv) else {
                continue;
            };
            if out[idx].vals[i].is_some() {
                return eval_err("vector cannot contain metrics with the same labelset");
            }
            out[idx].vals[i] = Some(res);
        }
    }
    // Pairs filtered out at every step leave empty series behind.
    out.retain(|s| s.vals.iter().any(Option::is_some));
    Ok(out)
}
