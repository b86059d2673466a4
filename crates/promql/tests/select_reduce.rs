//! Range functions over a selector run where the store reads each series
//! (`Queryable::select_reduce`): a store that reduces its series in another order (as one
//! that decodes on several threads) gives the same answers, and the sample limit still
//! counts every selected sample.

use promql_parser::label::Matcher;
use strata_promql::{
    Engine, EngineOptions, Error, Labels, MemStore, Queryable, ReduceFn, Reduced, Sample, Series,
};

/// Reduces its series last to first.
struct Reversed(MemStore);

impl Queryable for Reversed {
    fn select(&self, m: &[Matcher], mint: i64, maxt: i64) -> strata_promql::Result<Vec<Series>> {
        self.0.select(m, mint, maxt)
    }
    fn select_reduce(
        &self,
        m: &[Matcher],
        mint: i64,
        maxt: i64,
        _weight: usize,
        f: &ReduceFn<'_>,
    ) -> strata_promql::Result<Vec<Reduced>> {
        self.0
            .select(m, mint, maxt)?
            .into_iter()
            .rev()
            .map(f)
            .collect()
    }
    fn label_names(&self) -> strata_promql::Result<Vec<String>> {
        self.0.label_names()
    }
    fn label_values(&self, name: &str) -> strata_promql::Result<Vec<String>> {
        self.0.label_values(name)
    }
}

fn store() -> MemStore {
    let mut s = MemStore::new();
    for name in ["a_total", "g"] {
        for i in 0..20 {
            let l = Labels::from_pairs([
                ("__name__", name.to_string()),
                ("i", i.to_string()),
                ("job", format!("j{}", i % 3)),
            ]);
            let samples: Vec<Sample> = (0..=360)
                // Gaps, resets and a stale marker now and then.
                .filter(|k| (k + i) % 13 != 0)
                .map(|k| Sample {
                    t: k * 10_000 + i * 100,
                    v: if k == 200 && i % 4 == 0 {
                        f64::from_bits(0x7ff0_0000_0000_0002)
                    } else {
                        ((k * (i + 1)) % 89) as f64 * 1.5
                    },
                })
                .collect();
            s.append(l, &samples);
        }
    }
    s
}

#[test]
fn reduced_in_any_order_answers_as_selected_whole() {
    let mem = store();
    let rev = Reversed(mem.clone());
    for q in [
        "rate(a_total[5m])",
        "sum by (job) (rate(a_total[1m]))",
        "increase(a_total{job=~\"j1|j2\"}[2m] offset 1m)",
        "delta(g[3m])",
        "rate((a_total[5m]))",
        "rate(a_total[5m] @ 1000)",
        "rate(missing_total[5m])",
        // Not a selector: the general path, for comparison.
        "rate(a_total[5m:30s])",
    ] {
        let a = Engine::default().range_query(&mem, q, 0, 3_600_000, 15_000);
        let b = Engine::default().range_query(&rev, q, 0, 3_600_000, 15_000);
        let (Ok(a), Ok(b)) = (a, b) else {
            panic!("{q}: failed");
        };
        assert_eq!(a, b, "{q}");
    }
}

#[test]
fn the_sample_limit_counts_the_reduced_series_samples() {
    let mem = store();
    let limited = |max_samples| {
        Engine::new(EngineOptions {
            max_samples,
            ..Default::default()
        })
        .range_query(&mem, "rate(a_total[5m])", 0, 3_600_000, 60_000)
    };
    // 20 series of about 333 samples each.
    assert!(matches!(limited(5_000), Err(Error::TooManySamples)));
    assert!(limited(10_000).is_ok());
}
