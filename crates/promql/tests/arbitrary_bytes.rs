//! Hostile PromQL: random token soup, random text and random mutations of valid queries,
//! parsed and evaluated against a small store under tight limits (sample limit, timeout).
//! Nothing panics; every query either answers or fails with an error. The short,
//! fixed-seed companion of the `promql` cargo-fuzz target (see docs/RELIABILITY.md).

use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use strata_promql::{Engine, EngineOptions, Labels, MemStore, Sample};

/// Runs `test` on `cases` values of `strategy` from this file's fixed seed.
fn check<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value))
where
    S::Value: std::fmt::Debug,
{
    strata_testkit::check(0x17, cases, strategy, test)
}

fn store() -> MemStore {
    let mut s = MemStore::new();
    for (i, (name, job)) in [("m", "a"), ("m", "b"), ("up", "a"), ("h_bucket", "a")]
        .into_iter()
        .enumerate()
    {
        let mut l = Labels::new();
        l.set("__name__", name);
        l.set("job", job);
        l.set("le", &format!("{}", i as f64 / 2.0));
        let samples: Vec<Sample> = (0..40)
            .map(|k| Sample {
                t: k * 15_000,
                v: if k == 20 {
                    f64::NAN
                } else {
                    (k * (i as i64 + 1)) as f64
                },
            })
            .collect();
        s.append(l, &samples);
    }
    s
}

/// Evaluates `query` both ways; true if either answered (so a test can check that its
/// inputs reach the evaluator, not only the parser).
fn run(engine: &Engine, st: &MemStore, query: &str) -> bool {
    let _ = promql_parser::parser::parse(query);
    let instant = engine.instant_query(st, query, 300_000);
    let range = engine.range_query(st, query, 0, 600_000, 30_000);
    instant.is_ok() || range.is_ok()
}

const TOKENS: &[&str] = &[
    "m",
    "up",
    "h_bucket",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    ":",
    "job",
    "=",
    "!=",
    "=~",
    "!~",
    "\"a\"",
    "\".*\"",
    "5m",
    "1s",
    "0s",
    "30s",
    "1y",
    "offset",
    "@",
    "start()",
    "end()",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "==",
    "!=",
    ">",
    "<=",
    "bool",
    "and",
    "or",
    "unless",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "by",
    "without",
    "sum",
    "avg",
    "count",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "stddev",
    "rate",
    "irate",
    "increase",
    "delta",
    "deriv",
    "predict_linear",
    "histogram_quantile",
    "label_replace",
    "label_join",
    "abs",
    "absent",
    "absent_over_time",
    "sort",
    "sort_desc",
    "time",
    "vector",
    "scalar",
    "clamp",
    "round",
    "max_over_time",
    "quantile_over_time",
    "holt_winters",
    "changes",
    "resets",
    "timestamp",
    "0",
    "1",
    "-1",
    "0.5",
    "1e308",
    "NaN",
    "Inf",
    "2",
    "le",
    " ",
];

fn soup() -> impl Strategy<Value = String> {
    vec(prop::sample::select(TOKENS), 1..25).prop_map(|t| t.concat())
}

const VALID: &[&str] = &[
    "rate(m{job=\"a\"}[1m])",
    "sum by (job) (rate(m[2m])) / on(job) group_left up",
    "histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))",
    "max_over_time(deriv(m[2m:15s])[5m:30s]) offset 1m",
    "topk(1, -m) or label_replace(up, \"x\", \"$1\", \"job\", \"(.*)\")",
    "count_values(\"v\", m % 3) > bool 1 unless on() vector(1)",
    "quantile_over_time(0.5, m[10m]) @ 300 + scalar(up)",
];

#[test]
fn random_queries_never_panic() {
    let st = store();
    let engine = Engine::new(EngineOptions {
        max_samples: 5_000,
        timeout: Duration::from_millis(200),
        ..EngineOptions::default()
    });
    let answered = std::cell::Cell::new(0u32);
    let count = |ok: bool| answered.set(answered.get() + u32::from(ok));
    check(600, soup(), |q| count(run(&engine, &st, &q)));
    check(300, "\\PC{0,60}", |q| count(run(&engine, &st, &q)));
    check(
        900,
        (
            prop::sample::select(VALID),
            vec((any::<usize>(), prop::sample::select(TOKENS)), 1..4),
        ),
        |(base, edits)| {
            let mut q = base.to_string();
            for (pos, tok) in edits {
                // Replace one character (on a char boundary) with a token.
                let chars: Vec<(usize, char)> = q.char_indices().collect();
                let (at, c) = chars[pos % chars.len()];
                q.replace_range(at..at + c.len_utf8(), tok);
            }
            count(run(&engine, &st, &q));
        },
    );
    assert!(
        answered.get() > 100,
        "only {} queries evaluated",
        answered.get()
    );
}
