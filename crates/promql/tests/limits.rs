//! The sample limit, the timeout and cancellation, over a `MemStore`.

use std::time::Duration;

use promql_parser::label::Matcher;
use strata_promql::engine::{CancelHandle, Grid};
use strata_promql::{Engine, EngineOptions, Error, Labels, MemStore, Queryable, Sample, Series};

/// Three series `m{i="0".."2"}` with samples every 10s over 0..=100s.
fn store() -> MemStore {
    let mut s = MemStore::new();
    for i in 0..3 {
        let mut l = Labels::new();
        l.set("__name__", "m");
        l.set("i", &i.to_string());
        let samples: Vec<Sample> = (0..=10)
            .map(|k| Sample {
                t: k * 10_000,
                v: k as f64,
            })
            .collect();
        s.append(l, &samples);
    }
    s
}

fn engine(max_samples: usize, timeout: Duration) -> Engine {
    Engine::new(EngineOptions {
        max_samples,
        timeout,
        ..EngineOptions::default()
    })
}

#[test]
fn sample_limit_is_enforced() {
    let st = store();
    // 3 series × 11 samples are loaded for the range query.
    let e = engine(32, Duration::from_secs(60));
    let r = e.range_query(&st, "m", 0, 100_000, 10_000);
    assert!(matches!(r, Err(Error::TooManySamples)), "{r:?}");
    let e = engine(33, Duration::from_secs(60));
    let r = e.range_query(&st, "m", 0, 100_000, 10_000).unwrap();
    assert!(r.warnings.is_empty());
    // Instant queries count the samples they load the same way: the window
    // `(0s, 100s]` holds 10 samples of each series.
    let e = engine(29, Duration::from_secs(60));
    let r = e.instant_query(&st, "sum_over_time(m[100s])", 100_000);
    assert!(matches!(r, Err(Error::TooManySamples)), "{r:?}");
    let e = engine(30, Duration::from_secs(60));
    assert!(e
        .instant_query(&st, "sum_over_time(m[100s])", 100_000)
        .is_ok());
}

/// A store that sleeps or cancels a query while selecting.
struct Hook<'a> {
    inner: MemStore,
    sleep: Duration,
    cancel: Option<&'a CancelHandle>,
}

impl Queryable for Hook<'_> {
    fn select(&self, m: &[Matcher], mint: i64, maxt: i64) -> strata_promql::Result<Vec<Series>> {
        std::thread::sleep(self.sleep);
        if let Some(c) = self.cancel {
            c.cancel();
        }
        self.inner.select(m, mint, maxt)
    }
    fn label_names(&self) -> strata_promql::Result<Vec<String>> {
        self.inner.label_names()
    }
    fn label_values(&self, name: &str) -> strata_promql::Result<Vec<String>> {
        self.inner.label_values(name)
    }
}

#[test]
fn timeout_is_enforced() {
    let st = Hook {
        inner: store(),
        sleep: Duration::from_millis(20),
        cancel: None,
    };
    let e = engine(50_000_000, Duration::from_millis(5));
    let r = e.range_query(&st, "sum(rate(m[30s]))", 0, 100_000, 10_000);
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    let e = engine(50_000_000, Duration::from_secs(60));
    assert!(e
        .range_query(&st, "sum(rate(m[30s]))", 0, 100_000, 10_000)
        .is_ok());
}

#[test]
fn cancellation_stops_the_query() {
    let cancel = CancelHandle::default();
    let st = Hook {
        inner: store(),
        sleep: Duration::ZERO,
        cancel: Some(&cancel),
    };
    let e = engine(50_000_000, Duration::from_secs(60));
    let grid = Grid {
        start: 0,
        end: 100_000,
        step: 10_000,
    };
    let r = e.query(&st, "m + m", grid, false, &cancel);
    assert!(matches!(r, Err(Error::Canceled)), "{r:?}");
    // A handle nobody cancels lets the same query finish.
    let st = Hook {
        inner: store(),
        sleep: Duration::ZERO,
        cancel: None,
    };
    let r = e.query(&st, "m + m", grid, false, &CancelHandle::default());
    assert_eq!(r.map(|r| r.warnings.len()).ok(), Some(0));
}

#[test]
fn limit_errors_read_like_prometheus() {
    assert_eq!(
        Error::TooManySamples.to_string(),
        "query processing would load too many samples into memory in query execution"
    );
    assert_eq!(
        Error::Timeout.to_string(),
        "query timed out in query execution"
    );
    assert_eq!(
        Error::Canceled.to_string(),
        "query was canceled in query execution"
    );
}

#[test]
fn sample_limit_counts_subquery_and_intermediate_results() {
    let st = store();
    // Nothing is selected beyond 33 samples, but the subquery holds 3 series × 101
    // inner steps (0s..100s every 1s) of `m` at once.
    let q = "max_over_time(m[100s:1s])";
    let e = engine(300, Duration::from_secs(60));
    let r = e.instant_query(&st, q, 100_000);
    assert!(matches!(r, Err(Error::TooManySamples)), "{r:?}");
    let e = engine(1_000, Duration::from_secs(60));
    assert!(e.instant_query(&st, q, 100_000).is_ok());
    // A grid longer than the whole budget is refused before anything is allocated.
    let e = engine(1_000, Duration::from_secs(60));
    let r = e.range_query(&st, "vector(1)", 0, 10_000_000, 1);
    assert!(matches!(r, Err(Error::TooManySamples)), "{r:?}");
}

/// Many series with many samples, so that one range query runs long enough to be stopped
/// in the middle of an evaluator loop.
fn big_store() -> MemStore {
    let mut s = MemStore::new();
    for i in 0..100 {
        let l = Labels::from_pairs([("__name__", "big_total".to_string()), ("i", i.to_string())]);
        let samples: Vec<Sample> = (0..20_000)
            .map(|k| Sample {
                t: k * 10_000,
                v: k as f64,
            })
            .collect();
        s.append(l, &samples);
    }
    s
}

const BIG_QUERY: &str = "sum(rate(big_total[5m])) + sum(increase(big_total[10m]))";

#[test]
fn cancellation_from_another_thread_stops_a_running_query() {
    let st = big_store();
    let e = engine(50_000_000, Duration::from_secs(600));
    let grid = Grid {
        start: 0,
        end: 200_000_000,
        step: 10_000,
    };
    let cancel = CancelHandle::default();
    let started = std::time::Instant::now();
    let r = std::thread::scope(|s| {
        let c = cancel.clone();
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            c.cancel();
        });
        e.query(&st, BIG_QUERY, grid, false, &cancel)
    });
    assert!(matches!(r, Err(Error::Canceled)), "{r:?}");
    // Stopped promptly, not after finishing the work.
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn timeout_stops_a_running_query() {
    let st = big_store();
    let e = engine(50_000_000, Duration::from_millis(30));
    let r = e.range_query(&st, BIG_QUERY, 0, 200_000_000, 10_000);
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
}

#[test]
fn lookback_delta_is_configurable() {
    let st = store();
    // The last sample is at 100s: visible at 150s with the default 5m lookback, not with 30s.
    let r = Engine::default().instant_query(&st, "m", 150_000).unwrap();
    assert!(matches!(&r.value, strata_promql::Value::Vector(v) if v.len() == 3));
    let e = Engine::new(EngineOptions {
        lookback_delta_ms: 30_000,
        ..EngineOptions::default()
    });
    let r = e.instant_query(&st, "m", 150_000).unwrap();
    assert!(matches!(&r.value, strata_promql::Value::Vector(v) if v.is_empty()));
    // 30s after the sample is already out: the window is left-open.
    let r = e.instant_query(&st, "m", 130_000).unwrap();
    assert!(matches!(&r.value, strata_promql::Value::Vector(v) if v.is_empty()));
    let r = e.instant_query(&st, "m", 129_999).unwrap();
    assert!(matches!(&r.value, strata_promql::Value::Vector(v) if v.len() == 3));
}

#[test]
fn step_slots_bound_memory_of_sparse_range_queries() {
    // 3 series × 11 samples, but a range query at 1s steps holds 3 × 401 slots.
    let st = store();
    let e = Engine::new(EngineOptions {
        max_step_slots: 1_000,
        ..EngineOptions::default()
    });
    let r = e.range_query(&st, "m", 0, 400_000, 1_000);
    assert!(matches!(r, Err(Error::TooManyStepSlots)), "{r:?}");
    assert_eq!(
        Error::TooManyStepSlots.to_string(),
        "query processing would hold too many series × steps in memory in query execution"
    );
    let e = Engine::new(EngineOptions {
        max_step_slots: 1_203,
        ..EngineOptions::default()
    });
    assert!(e.range_query(&st, "m", 0, 400_000, 1_000).is_ok());
}
