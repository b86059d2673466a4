//! `sort`, `sort_desc`, `sort_by_label`, `sort_by_label_desc`. Order is meaningful only for
//! instant queries; it is decided by the first step.

use promql_parser::parser::Call;

use super::arg;
use crate::engine::eval::Evaluator;
use crate::engine::{Grid, StepSeries};
use crate::error::Result;

/// Evaluates a sort function.
pub fn call(ev: &mut Evaluator<'_>, c: &Call, grid: Grid) -> Result<Vec<StepSeries>> {
    let mut v = ev.eval_vector(arg(c, 0)?, grid)?;
    let name = c.func.name;
    // Range results (and subquery steps) are always ordered by labels.
    if grid.len() > 1 {
        ev.warn(
            "PromQL warning: sort is ineffective for range queries since results are always ordered by labels".into(),
        );
    }
    if name.starts_with("sort_by_label") {
        let mut names = Vec::new();
        for a in &c.args.args[1..] {
            if let crate::engine::EvalValue::String(s) = ev.eval(a, grid)? {
                names.push(s);
            }
        }
        v.sort_by(|a, b| {
            for n in &names {
                let o = natural_cmp(a.labels.get(n).unwrap_or(""), b.labels.get(n).unwrap_or(""));
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            a.labels.cmp(&b.labels)
        });
        if name == "sort_by_label_desc" {
            v.reverse();
        }
    } else {
        let desc = name == "sort_desc";
        let key = |s: &StepSeries| s.vals.first().copied().flatten().unwrap_or(f64::NAN);
        // NaN sorts last in both directions, as Prometheus.
        v.sort_by(|a, b| {
            let (x, y) = (key(a), key(b));
            match (x.is_nan(), y.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ if desc => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
                _ => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
            }
        });
    }
    Ok(v)
}

/// Natural ("version") order: digit runs compare numerically.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let (na, nb) = (
                a[si..i].trim_start_matches('0'),
                b[sj..j].trim_start_matches('0'),
            );
            let o = na.len().cmp(&nb.len()).then(na.cmp(nb));
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        } else {
            if ab[i] != bb[j] {
                return ab[i].cmp(&bb[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j))
}
