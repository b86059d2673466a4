//! The store against a model (a map from label set to a map from timestamp to value
//! bits), through random appends (in order, out of order, duplicates, NaN and stale
//! markers), flushes across partition boundaries, deletes, retention, reopen and crash.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use strata_kv::fs::{CrashMode, MemFs};
use strata_tsdb::{FsyncPolicy, LabelLimits, Labels, MatchOp, Matcher, Options, Tsdb};

const PART_MS: i64 = 1_000;
const RETENTION_MS: i64 = 4_000;

type Model = BTreeMap<Labels, BTreeMap<i64, u64>>;

fn universe() -> Vec<Labels> {
    let mut v = Vec::new();
    for name in ["a", "b"] {
        for job in ["x", "y", "z"] {
            v.push(Labels::from_pairs([("__name__", name), ("job", job)]).unwrap());
        }
    }
    v.push(Labels::from_pairs([("__name__", "a"), ("job", "x"), ("env", "p")]).unwrap());
    v.push(Labels::from_pairs([("__name__", "c"), ("env", "q")]).unwrap());
    v
}

fn matcher_sets() -> Vec<Vec<Matcher>> {
    let m = |op, n: &str, v: &str| Matcher::new(op, n, v).unwrap();
    vec![
        vec![m(MatchOp::Equal, "__name__", "a")],
        vec![m(MatchOp::Equal, "job", "x")],
        vec![m(MatchOp::RegexMatch, "__name__", "a|c")],
        vec![
            m(MatchOp::NotEqual, "job", "y"),
            m(MatchOp::RegexMatch, "__name__", ".+"),
        ],
        vec![
            m(MatchOp::Equal, "env", ""),
            m(MatchOp::Equal, "__name__", "a"),
        ],
        vec![
            m(MatchOp::RegexNoMatch, "job", "x|y"),
            m(MatchOp::RegexMatch, "__name__", ".*"),
        ],
        vec![m(MatchOp::RegexMatch, "job", "")],
        vec![
            m(MatchOp::Equal, "__name__", "b"),
            m(MatchOp::RegexMatch, "job", "y|z"),
        ],
    ]
}

fn value(i: u8, x: f64) -> f64 {
    match i % 8 {
        0 => f64::NAN,
        1 => f64::from_bits(0x7ff0_0000_0000_0002), // Prometheus' stale marker
        2 => f64::INFINITY,
        3 => -0.0,
        4 => f64::NEG_INFINITY,
        _ => x,
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// (series, time offset from the cursor, value kind, value)
    Append(Vec<(usize, i64, u8, f64)>),
    /// Scrapes of every series at the same instants (the cursor, then every `step`), as a
    /// Prometheus target is scraped: compaction stores such timestamps once.
    Scrape(u8, i64, f64),
    Advance(i64),
    Flush,
    Compact,
    Reopen,
    Crash,
    Delete(usize, i64, i64),
    Check(usize, i64, i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(
            (0usize..8, -2_500i64..300, any::<u8>(), -1e6f64..1e6),
            1..20
        )
        .prop_map(Op::Append),
        3 => (1u8..40, 1i64..40, -1e3f64..1e3).prop_map(|(n, step, x)| Op::Scrape(n, step, x)),
        3 => (0i64..700).prop_map(Op::Advance),
        2 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => (0usize..8, -3_000i64..500, 0i64..2_000).prop_map(|(m, a, l)| Op::Delete(m, a, l)),
        3 => (0usize..8, -5_000i64..500, 0i64..6_000).prop_map(|(m, a, l)| Op::Check(m, a, l)),
    ]
}

fn options(fs: &MemFs) -> Options {
    let mut o = Options {
        retention_ms: RETENTION_MS,
        partition_ms: PART_MS,
        wal_fsync: FsyncPolicy::Always,
        max_chunk_samples: 7,
        background: false,
        ..Options::default()
    };
    o.kv.fs = Arc::new(fs.clone());
    o.kv.write_buffer_size = 16 << 10;
    o
}

fn matches(labels: &Labels, ms: &[Matcher]) -> bool {
    ms.iter().all(|m| m.matches(labels.get(m.name())))
}

struct State {
    model: Model,
    max_t: i64,
    min_valid: i64,
}

impl State {
    /// What `apply_retention` does to the model (flush, open).
    fn retention(&mut self) {
        if self.max_t == i64::MIN {
            return;
        }
        let oldest_kept = (self.max_t - RETENTION_MS).div_euclid(PART_MS);
        self.min_valid = oldest_kept * PART_MS;
    }

    fn expected(&self, ms: &[Matcher], mint: i64, maxt: i64) -> Vec<(Labels, Vec<(i64, u64)>)> {
        if mint.max(self.min_valid) > maxt {
            return Vec::new();
        }
        self.model
            .iter()
            .filter(|(l, _)| matches(l, ms))
            .map(|(l, s)| {
                (
                    l.clone(),
                    s.range(mint.max(self.min_valid)..=maxt)
                        .map(|(t, v)| (*t, *v))
                        .collect::<Vec<_>>(),
                )
            })
            .filter(|(_, s)| !s.is_empty())
            .collect()
    }
}

fn check(db: &Tsdb, st: &State, ms: &[Matcher], mint: i64, maxt: i64) {
    // Data older than the retention bound may linger until the next flush: check above it.
    let lo = mint.max(st.min_valid);
    let got: Vec<(Labels, Vec<(i64, u64)>)> = db
        .querier(lo, maxt)
        .select(ms)
        .expect("select")
        .into_iter()
        .map(|s| {
            let samples = s.iter().map(|(t, v)| (t, v.to_bits())).collect();
            (s.labels, samples)
        })
        .collect();
    let want = st.expected(ms, lo, maxt);
    assert_eq!(got, want, "select {ms:?} over [{lo}, {maxt}]");
}

/// Commits `samples` (series index, t, v) and records in the model what the store must keep.
fn append(d: &Tsdb, st: &mut State, series: &[Labels], samples: Vec<(usize, i64, f64)>) {
    let mut app = d.appender();
    for &(s, t, v) in &samples {
        // Each way of adding a sample must land in the same series.
        match (t + s as i64).rem_euclid(4) {
            0 => app.add(series[s].clone(), t, v),
            1 => app.append(&series[s], t, v),
            way => {
                let mut pairs: Vec<(&str, &str)> = series[s]
                    .iter()
                    .map(|l| (l.name.as_str(), l.value.as_str()))
                    .collect();
                if way == 3 {
                    // Out of order, with an empty value: the slow path.
                    pairs.reverse();
                    pairs.push(("zz_empty", ""));
                }
                app.add_series_pairs(&pairs, [(t, v)], &LabelLimits::default())
                    .expect("valid pairs");
            }
        }
    }
    let stats = app.commit().expect("commit");
    let mut too_old = 0;
    for (s, t, v) in samples {
        if t < st.min_valid {
            too_old += 1;
            continue;
        }
        st.model
            .entry(series[s].clone())
            .or_default()
            .insert(t, v.to_bits());
        st.max_t = st.max_t.max(t);
    }
    assert_eq!(stats.too_old, too_old);
}

fn run(ops: Vec<Op>) {
    let fs = MemFs::new();
    let dir = Path::new("/tsdb");
    let series = universe();
    let msets = matcher_sets();
    let mut db = Some(Tsdb::open(dir, options(&fs)).expect("open"));
    let mut st = State {
        model: Model::new(),
        max_t: i64::MIN,
        min_valid: i64::MIN,
    };
    let mut cursor = 10_000i64;
    for op in ops {
        let d = db.as_ref().expect("db");
        match op {
            Op::Append(samples) => {
                let samples = samples
                    .into_iter()
                    .map(|(s, dt, kind, x)| (s, cursor + dt, value(kind, x)))
                    .collect();
                append(d, &mut st, &series, samples);
            }
            Op::Scrape(n, step, x) => {
                let mut samples = Vec::new();
                for i in 0..i64::from(n) {
                    for s in 0..series.len() {
                        // Mostly decimals; the odd special value.
                        let v = if (i + s as i64) % 17 == 0 {
                            value(s as u8, x)
                        } else {
                            ((x + (i * s as i64) as f64) * 100.0).round() / 100.0
                        };
                        samples.push((s, cursor + i * step, v));
                    }
                }
                cursor += i64::from(n) * step;
                append(d, &mut st, &series, samples);
            }
            Op::Advance(dt) => cursor += dt,
            Op::Flush => {
                d.flush().expect("flush");
                st.retention();
            }
            Op::Compact => {
                d.compact().expect("compact");
                st.retention(); // compact flushes first
            }
            Op::Reopen => {
                db.take().expect("db").close().expect("close");
                db = Some(Tsdb::open(dir, options(&fs)).expect("reopen"));
                st.retention();
            }
            Op::Crash => {
                db.take().expect("db").abandon();
                fs.crash(CrashMode::DropUnsynced);
                db = Some(Tsdb::open(dir, options(&fs)).expect("open after crash"));
                st.retention();
            }
            Op::Delete(m, a, len) => {
                let (mint, maxt) = (cursor + a, cursor + a + len);
                d.delete_series(&msets[m], mint, maxt).expect("delete");
                st.retention(); // delete flushes first
                for (l, s) in st.model.iter_mut() {
                    if matches(l, &msets[m]) {
                        let doomed: Vec<i64> = s.range(mint..=maxt).map(|(t, _)| *t).collect();
                        for t in doomed {
                            s.remove(&t);
                        }
                    }
                }
            }
            Op::Check(m, a, len) => {
                check(d, &st, &msets[m], cursor + a, cursor + a + len);
            }
        }
    }
    let d = db.as_ref().expect("db");
    for ms in &msets {
        check(d, &st, ms, i64::MIN, i64::MAX);
    }
    // Once flushed, nothing older than retention is left.
    d.flush().expect("flush");
    st.retention();
    let all = [Matcher::new(MatchOp::RegexMatch, "__name__", ".+").unwrap()];
    for s in d.querier(i64::MIN, i64::MAX).select(&all).expect("select") {
        assert!(s.samples.iter().all(|(t, _)| *t >= st.min_valid), "{s:?}");
    }
    db.take().expect("db").close().expect("close");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64),
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x7453_4442),
        ..ProptestConfig::default()
    })]

    #[test]
    fn tsdb_agrees_with_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
