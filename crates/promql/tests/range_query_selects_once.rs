//! A range query reads each selector's series once for the whole range, however many
//! steps it has: a counting `Queryable` proves `select` is called once per selector.

use std::cell::RefCell;

use promql_parser::label::Matcher;
use strata_promql::{Engine, Labels, MemStore, Queryable, Sample, Series};

/// Records the time range of every `select`.
struct Counting {
    inner: MemStore,
    calls: RefCell<Vec<(i64, i64)>>,
}

impl Queryable for Counting {
    fn select(&self, m: &[Matcher], mint: i64, maxt: i64) -> strata_promql::Result<Vec<Series>> {
        self.calls.borrow_mut().push((mint, maxt));
        self.inner.select(m, mint, maxt)
    }
    fn label_names(&self) -> strata_promql::Result<Vec<String>> {
        self.inner.label_names()
    }
    fn label_values(&self, name: &str) -> strata_promql::Result<Vec<String>> {
        self.inner.label_values(name)
    }
}

fn store() -> Counting {
    let mut s = MemStore::new();
    for name in ["a_total", "b"] {
        for i in 0..3 {
            let l = Labels::from_pairs([("__name__", name.to_string()), ("i", i.to_string())]);
            let samples: Vec<Sample> = (0..=360)
                .map(|k| Sample {
                    t: k * 10_000,
                    v: k as f64,
                })
                .collect();
            s.append(l, &samples);
        }
    }
    Counting {
        inner: s,
        calls: RefCell::new(Vec::new()),
    }
}

/// Runs `query` from 10m to 60m every 15s (201 steps) and returns the select ranges.
fn selects(query: &str) -> Vec<(i64, i64)> {
    let st = store();
    let r = Engine::default().range_query(&st, query, 600_000, 3_600_000, 15_000);
    assert!(r.is_ok(), "{query}: {r:?}");
    st.calls.into_inner()
}

#[test]
fn instant_selector_is_selected_once_over_range_plus_lookback() {
    // One select covering (start - lookback, end].
    assert_eq!(selects("b"), vec![(300_001, 3_600_000)]);
}

#[test]
fn range_selector_is_selected_once_over_range_plus_window() {
    assert_eq!(selects("rate(a_total[5m])"), vec![(300_001, 3_600_000)]);
}

#[test]
fn each_selector_of_an_expression_is_selected_once() {
    let q = "sum by (i) (rate(a_total[1m])) / on(i) b offset 1m + max_over_time(b[2m] @ 100)";
    assert_eq!(
        selects(q),
        vec![
            (540_001, 3_600_000),
            (240_001, 3_540_000),
            (-19_999, 100_000),
        ]
    );
}

#[test]
fn subqueries_select_once_for_all_outer_steps() {
    // Inner steps every 1m from 6m (the first after 10m - 5m, the window being
    // left-open) to 60m; the inner selector adds its 1m window.
    assert_eq!(
        selects("max_over_time(rate(a_total[1m])[5m:1m])"),
        vec![(300_001, 3_600_000)]
    );
    // Nested: still one select.
    assert_eq!(
        selects("min_over_time(max_over_time(b[2m:30s])[10m:1m])").len(),
        1
    );
}
