//! PromQL: parse arbitrary text with promql-parser and evaluate it with strata-promql
//! against a small in-memory store, under tight limits (sample limit, timeout).
//!
//! Input: two bytes choosing the query window, then the query text. Oracle: an instant
//! query and a range query either succeed or return an error; nothing panics, hangs or
//! allocates without bound.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use strata_promql::{Engine, EngineOptions, Labels, MemStore, Sample};

fn store() -> &'static MemStore {
    static STORE: OnceLock<MemStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let mut s = MemStore::new();
        let series: [(&str, &[(&str, &str)]); 5] = [
            ("http_requests_total", &[("job", "api"), ("code", "200")]),
            ("http_requests_total", &[("job", "api"), ("code", "500")]),
            ("http_requests_total", &[("job", "web"), ("code", "200")]),
            ("up", &[("job", "api"), ("instance", "a:9090")]),
            ("rpc_seconds_bucket", &[("le", "0.1")]),
        ];
        for (i, (name, labels)) in series.iter().enumerate() {
            let mut l = Labels::new();
            l.set("__name__", name);
            for (k, v) in labels.iter() {
                l.set(k, v);
            }
            let samples: Vec<Sample> = (0..60)
                .map(|k| Sample {
                    t: k * 15_000,
                    v: match (i, k) {
                        (1, 30) => f64::NAN,
                        (2, 40) => f64::INFINITY,
                        (4, _) => (k % 7) as f64,
                        _ => (k * (i as i64 + 1)) as f64,
                    },
                })
                .collect();
            s.append(l, &samples);
        }
        s
    })
}

fn engine() -> Engine {
    Engine::new(EngineOptions {
        max_samples: 20_000,
        timeout: Duration::from_millis(500),
        ..EngineOptions::default()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&[a, b], text)) = data.split_first_chunk::<2>().map(|(h, t)| (h, t)) else {
        return;
    };
    let Ok(query) = std::str::from_utf8(text) else {
        return;
    };
    if query.len() > 2000 {
        return;
    }
    // The parser alone first: it sees every input, even those the engine would not reach.
    let _ = promql_parser::parser::parse(query);
    let e = engine();
    let st = store();
    let t = i64::from(a) * 5_000;
    let _ = e.instant_query(st, query, t);
    let step = i64::from(b % 16 + 1) * 15_000;
    let _ = e.range_query(st, query, 0, 900_000, step);
});
