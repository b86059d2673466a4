//! Running test scripts against the engine over a [`MemStore`].

use std::path::Path;

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{Expr, Offset, VectorSelector};

use super::parse::{parse_script, Command, EvalCmd, Expect, Matcher as MsgMatcher, Point};
use crate::engine::{Engine, QueryResult};
use crate::error::{Error, Result};
use crate::labels::{Labels, METRIC_NAME};
use crate::queryable::{matches, MemStore};
use crate::value::{stale_nan, Sample, Value};

/// The outcome of one `eval`.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalOutcome {
    /// Result and expectations matched.
    Passed,
    /// Mismatch (the message says what differed).
    Failed(String),
    /// Not run (the message says why: native-histogram samples).
    Skipped(String),
}

/// Per-file counts and details.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileReport {
    /// File name.
    pub name: String,
    /// Evals that passed.
    pub passed: usize,
    /// Evals that failed.
    pub failed: usize,
    /// Evals skipped.
    pub skipped: usize,
    /// `line: message` of each failure.
    pub failures: Vec<String>,
    /// `line: reason` of each skip.
    pub skips: Vec<String>,
}

/// Runs a script file.
pub fn run_file(path: &Path) -> Result<FileReport> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Script {
        file: path.display().to_string(),
        line: 0,
        msg: e.to_string(),
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    run_script(&name, &text)
}

/// Almost-equal as Prometheus' test framework (relative epsilon 1e-6; NaN equals NaN).
pub fn almost_equal(a: f64, b: f64) -> bool {
    const EPS: f64 = 1e-6;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || sum < f64::MIN_POSITIVE {
        return diff < EPS * f64::MIN_POSITIVE;
    }
    diff / sum.min(f64::MAX) < EPS
}

/// Native-histogram samples the runner cannot load: series labels and sample times (ms).
type HistSeries = Vec<(Labels, Vec<i64>)>;

/// Lookback of the default engine (ms).
const LOOKBACK_MS: i64 = 5 * 60 * 1000;

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
        None => 0,
    }
}

/// Collects each selector's matcher sets (one per `or` alternative) with a conservative
/// window `[lo, hi]` of sample times it can read, given the outer window.
fn collect_selectors(expr: &Expr, lo: i64, hi: i64, out: &mut Vec<(Vec<Matcher>, i64, i64)>) {
    match expr {
        Expr::Aggregate(a) => {
            collect_selectors(&a.expr, lo, hi, out);
            if let Some(p) = &a.param {
                collect_selectors(p, lo, hi, out);
            }
        }
        Expr::Unary(u) => collect_selectors(&u.expr, lo, hi, out),
        Expr::Binary(b) => {
            collect_selectors(&b.lhs, lo, hi, out);
            collect_selectors(&b.rhs, lo, hi, out);
        }
        Expr::Paren(p) => collect_selectors(&p.expr, lo, hi, out),
        Expr::Call(c) => {
            for x in &c.args.args {
                collect_selectors(x, lo, hi, out);
            }
        }
        Expr::Subquery(sq) => {
            let (lo, hi) = if sq.at.is_some() {
                (i64::MIN / 4, i64::MAX / 4)
            } else {
                let off = offset_ms(&sq.offset);
                (lo - off - sq.range.as_millis() as i64, hi - off)
            };
            collect_selectors(&sq.expr, lo, hi, out);
        }
        Expr::VectorSelector(vs) => push_selector(vs, lo - LOOKBACK_MS, hi, out),
        Expr::MatrixSelector(ms) => {
            push_selector(&ms.vs, lo - ms.range.as_millis() as i64, hi, out)
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn push_selector(vs: &VectorSelector, lo: i64, hi: i64, out: &mut Vec<(Vec<Matcher>, i64, i64)>) {
    let (lo, hi) = if vs.at.is_some() {
        (i64::MIN / 4, i64::MAX / 4)
    } else {
        let off = offset_ms(&vs.offset);
        (lo - off, hi - off)
    };
    let mut base = vs.matchers.matchers.clone();
    if let Some(n) = &vs.name {
        base.push(Matcher::new(MatchOp::Equal, METRIC_NAME, n));
    }
    if vs.matchers.or_matchers.is_empty() {
        out.push((base, lo, hi));
    } else {
        for group in &vs.matchers.or_matchers {
            let mut ms = base.clone();
            ms.extend(group.iter().cloned());
            out.push((ms, lo, hi));
        }
    }
}

/// The first native-histogram series whose histogram samples a selector of the eval reads.
fn selected_histogram<'a>(e: &EvalCmd, hist: &'a HistSeries) -> Option<&'a Labels> {
    if hist.is_empty() {
        return None;
    }
    let expr = promql_parser::parser::parse(&e.query).ok()?;
    let end = if e.range { e.end } else { e.start };
    let mut sel = Vec::new();
    collect_selectors(&expr, e.start, end, &mut sel);
    hist.iter()
        .find(|(h, ts)| {
            sel.iter()
                .any(|(ms, lo, hi)| matches(h, ms) && ts.iter().any(|t| (*lo..=*hi).contains(t)))
        })
        .map(|(h, _)| h)
}

/// Runs a script given as text.
pub fn run_script(name: &str, text: &str) -> Result<FileReport> {
    let cmds = parse_script(text).map_err(|e| match e {
        Error::Script { line, msg, .. } => Error::Script {
            file: name.to_string(),
            line,
            msg,
        },
        e => e,
    })?;
    let mut store = MemStore::new();
    let engine = Engine::default();
    // Labels of the series holding native-histogram samples (including the NHCB series
    // `load_with_nhcb` derives from classic `_bucket` series), which the store lacks.
    let mut hist_series: HistSeries = Vec::new();
    let mut rep = FileReport {
        name: name.to_string(),
        ..Default::default()
    };
    for cmd in cmds {
        match cmd {
            Command::Clear => {
                store.clear();
                hist_series.clear();
            }
            Command::Load {
                interval,
                series,
                with_nhcb,
                ..
            } => {
                for s in series {
                    if with_nhcb {
                        if let Some(base) = s.labels.name().and_then(|n| n.strip_suffix("_bucket"))
                        {
                            let mut l = s.labels.clone();
                            l.remove("le");
                            l.set(METRIC_NAME, base);
                            let ts = (0..s.points.len() as i64).map(|k| interval * k);
                            match hist_series.iter_mut().find(|(x, _)| *x == l) {
                                Some((_, v)) => v.extend(ts),
                                None => hist_series.push((l, ts.collect())),
                            }
                        }
                    }
                    let mut hist_ts = Vec::new();
                    let mut samples = Vec::new();
                    for (k, p) in s.points.iter().enumerate() {
                        let t = interval * k as i64;
                        match p {
                            Point::Value(v) => samples.push(Sample { t, v: *v }),
                            Point::Stale => samples.push(Sample { t, v: stale_nan() }),
                            Point::Omitted => {}
                            Point::Histogram => hist_ts.push(t),
                        }
                    }
                    if !hist_ts.is_empty() {
                        match hist_series.iter_mut().find(|(x, _)| *x == s.labels) {
                            Some((_, v)) => v.extend(hist_ts),
                            None => hist_series.push((s.labels.clone(), hist_ts)),
                        }
                    }
                    store.append(s.labels, &samples);
                }
            }
            Command::Eval(e) => {
                let hist = selected_histogram(&e, &hist_series);
                let outcome = if e.has_histograms {
                    EvalOutcome::Skipped("expects native-histogram samples {{...}}".into())
                } else if let Some(h) = hist {
                    EvalOutcome::Skipped(format!("selects {h}, which has native-histogram samples"))
                } else {
                    run_eval(&engine, &store, &e)
                };
                match outcome {
                    EvalOutcome::Passed => rep.passed += 1,
                    EvalOutcome::Failed(m) => {
                        rep.failed += 1;
                        rep.failures
                            .push(format!("line {}: {}: {m}", e.line, e.query));
                    }
                    EvalOutcome::Skipped(m) => {
                        rep.skipped += 1;
                        rep.skips.push(format!("line {}: {m}", e.line));
                    }
                }
            }
        }
    }
    Ok(rep)
}

fn msg_matches(m: &Option<MsgMatcher>, text: &str) -> bool {
    match m {
        None => true,
        Some(MsgMatcher::Msg(s)) => text == s,
        Some(MsgMatcher::Regex(r)) => regex::Regex::new(r)
            .map(|re| re.is_match(text))
            .unwrap_or(false),
    }
}

fn check_annotations(
    kind: &str,
    expects: &[&Option<MsgMatcher>],
    no: bool,
    got: &[String],
) -> Option<String> {
    if no && !got.is_empty() {
        return Some(format!("unexpected {kind} annotations: {got:?}"));
    }
    for m in expects {
        if !got.iter().any(|g| msg_matches(m, g)) {
            return Some(format!("expected {kind} annotation {m:?}, got {got:?}"));
        }
    }
    if !expects.is_empty() {
        for g in got {
            if !expects.iter().any(|m| msg_matches(m, g)) {
                return Some(format!("unexpected {kind} annotation {g:?}"));
            }
        }
    }
    None
}

/// The message matchers of one kind of `expect` line of an eval.
fn expects<'a>(
    e: &'a EvalCmd,
    pick: impl Fn(&'a Expect) -> Option<&'a Option<MsgMatcher>>,
) -> Vec<&'a Option<MsgMatcher>> {
    e.expects.iter().filter_map(pick).collect()
}

/// Runs one eval and checks it.
pub fn run_eval(engine: &Engine, store: &MemStore, e: &EvalCmd) -> EvalOutcome {
    let res = if e.range {
        engine.range_query(store, &e.query, e.start, e.end, e.step)
    } else {
        engine.instant_query(store, &e.query, e.start)
    };
    let fail = expects(e, |x| match x {
        Expect::Fail(m) => Some(m),
        _ => None,
    });
    let res = match res {
        Err(err) => {
            let text = match &err {
                Error::Parse(m) => m.clone(),
                other => other.to_string(),
            };
            if fail.is_empty() {
                return EvalOutcome::Failed(format!("unexpected error: {err}"));
            }
            for m in &fail {
                if !msg_matches(m, &text) {
                    return EvalOutcome::Failed(format!("error {text:?} does not match {m:?}"));
                }
            }
            return EvalOutcome::Passed;
        }
        Ok(r) => r,
    };
    if !fail.is_empty() {
        return EvalOutcome::Failed(format!("expected error, got {:?}", short(&res.value)));
    }
    let warns = expects(e, |x| match x {
        Expect::Warn(m) => Some(m),
        _ => None,
    });
    let infos = expects(e, |x| match x {
        Expect::Info(m) => Some(m),
        _ => None,
    });
    if let Some(m) = check_annotations(
        "warn",
        &warns,
        e.expects.contains(&Expect::NoWarn),
        &res.warnings,
    ) {
        return EvalOutcome::Failed(m);
    }
    if let Some(m) = check_annotations(
        "info",
        &infos,
        e.expects.contains(&Expect::NoInfo),
        &res.infos,
    ) {
        return EvalOutcome::Failed(m);
    }
    match compare(e, &res) {
        None => EvalOutcome::Passed,
        Some(m) => EvalOutcome::Failed(m),
    }
}

fn short(v: &Value) -> String {
    let s = format!("{v:?}");
    if s.len() > 300 {
        format!("{}...", &s[..300])
    } else {
        s
    }
}

fn fmt_points(p: &[Point]) -> String {
    p.iter()
        .map(|x| match x {
            Point::Value(v) => format!("{v}"),
            Point::Stale => "stale".into(),
            Point::Omitted => "_".into(),
            Point::Histogram => "{{}}".into(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn compare(e: &EvalCmd, res: &QueryResult) -> Option<String> {
    let ordered = e.expects.contains(&Expect::Ordered);
    match &res.value {
        Value::String(s) => {
            for x in &e.expects {
                if let Expect::String(want) = x {
                    return (want != s).then(|| format!("expected string {want:?}, got {s:?}"));
                }
            }
            Some(format!("unexpected string result {s:?}"))
        }
        Value::Scalar { v, .. } => match e.scalar {
            Some(want) if almost_equal(want, *v) => None,
            Some(want) => Some(format!("expected scalar {want}, got {v}")),
            None => Some(format!("unexpected scalar result {v}")),
        },
        Value::Vector(got) => {
            if e.scalar.is_some() {
                return Some("expected scalar, got vector".into());
            }
            if got.len() != e.series.len() {
                return Some(format!(
                    "expected {} series, got {}: {}",
                    e.series.len(),
                    got.len(),
                    got.iter()
                        .map(|g| format!("{} {}", g.labels, g.v))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            for (k, want) in e.series.iter().enumerate() {
                let Some(pos) = got.iter().position(|g| g.labels == want.labels) else {
                    return Some(format!("missing series {}", want.labels));
                };
                if ordered && pos != k {
                    return Some(format!(
                        "series {} at position {pos}, expected {k}",
                        want.labels
                    ));
                }
                let g = &got[pos];
                match want.points.as_slice() {
                    [Point::Value(w)] if almost_equal(*w, g.v) => {}
                    p => {
                        return Some(format!(
                            "{}: expected {}, got {}",
                            want.labels,
                            fmt_points(p),
                            g.v
                        ))
                    }
                }
            }
            None
        }
        Value::Matrix(got) => {
            // As Prometheus' runner: order is asserted on instant vectors only, and a
            // matrix must always come sorted by labels.
            if ordered {
                return Some("expected ordered result, but query returned a matrix".into());
            }
            if let Some(w) = got.windows(2).find(|w| w[0].labels > w[1].labels) {
                return Some(format!(
                    "matrix results should always be sorted by labels, but {} comes before {}",
                    w[0].labels, w[1].labels
                ));
            }
            if got.len() != e.series.len() {
                return Some(format!(
                    "expected {} series, got {}: {}",
                    e.series.len(),
                    got.len(),
                    got.iter()
                        .map(|g| g.labels.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            let (start, step) = if e.range {
                (e.start, e.step)
            } else {
                match e.expects.iter().find_map(|x| {
                    if let Expect::RangeVector { start, step, .. } = x {
                        Some((*start, *step))
                    } else {
                        None
                    }
                }) {
                    Some(x) => x,
                    None => return Some("got a range vector without 'expect range vector'".into()),
                }
            };
            for want in &e.series {
                let Some(g) = got.iter().find(|g| g.labels == want.labels) else {
                    return Some(format!("missing series {}", want.labels));
                };
                let mut expected: Vec<(i64, f64)> = Vec::new();
                for (k, p) in want.points.iter().enumerate() {
                    let t = start + step * k as i64;
                    match p {
                        Point::Value(v) => expected.push((t, *v)),
                        Point::Stale => expected.push((t, stale_nan())),
                        _ => {}
                    }
                }
                let ok = expected.len() == g.samples.len()
                    && expected
                        .iter()
                        .zip(&g.samples)
                        .all(|((t, v), s)| *t == s.t && almost_equal(*v, s.v));
                if !ok {
                    let got_s: Vec<String> = g
                        .samples
                        .iter()
                        .map(|s| format!("{}@{}", s.v, s.t / 1000))
                        .collect();
                    return Some(format!(
                        "{}: expected {}, got {}",
                        want.labels,
                        fmt_points(&want.points),
                        got_s.join(" ")
                    ));
                }
            }
            None
        }
    }
}

/// Labels with the metric name removed (for callers comparing without names).
pub fn without_name(l: &Labels) -> Labels {
    let mut l = l.clone();
    l.remove(METRIC_NAME);
    l
}
