//! Restart time with a million active series (a benchmark, not run by default):
//!
//! ```sh
//! cargo test --release -p strata-tsdb --test restart_with_1m_series -- --ignored --nocapture
//! ```
//!
//! `STRATA_RESTART_SERIES` (default 1,000,000) and `STRATA_RESTART_SCRAPES` (default 8) set
//! the size. Two restarts are timed: after a crash (everything is replayed from the WAL:
//! series records and every sample) and after a graceful close (flushed; the WAL holds the
//! checkpoint of the live series).

use std::time::Instant;

use strata_tsdb::{Labels, MatchOp, Matcher, Options, Tsdb};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
            l.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn series(i: usize) -> Labels {
    Labels::from_pairs([
        ("__name__", format!("node_metric_{}_total", i % 200)),
        ("instance", format!("host-{}:9100", i / 200)),
        ("job", "node".to_string()),
        ("mode", format!("m{}", i % 8)),
    ])
    .expect("valid labels")
}

#[test]
#[ignore]
fn restart_with_a_million_active_series() {
    let n = env("STRATA_RESTART_SERIES", 1_000_000);
    let scrapes = env("STRATA_RESTART_SCRAPES", 8);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("db");
    let labels: Vec<Labels> = (0..n).map(series).collect();
    let t0 = 1_700_000_000_000i64;

    let db = Tsdb::open(&dir, Options::default()).expect("open");
    let start = Instant::now();
    for s in 0..scrapes {
        let t = t0 + s as i64 * 15_000;
        for chunk in labels.chunks(10_000) {
            let mut app = db.appender();
            for (i, l) in chunk.iter().enumerate() {
                app.add(l.clone(), t, (s * 10 + i % 7) as f64);
            }
            app.commit().expect("commit");
        }
    }
    let ingest = start.elapsed().as_secs_f64();
    println!(
        "ingested {} series x {scrapes} samples in {ingest:.1} s ({:.0} samples/s)",
        n,
        (n * scrapes) as f64 / ingest
    );
    db.abandon();

    let check = |db: &Tsdb| {
        assert_eq!(db.head_series(), n);
        let m = [
            Matcher::new(MatchOp::Equal, "instance", "host-3:9100").expect("matcher"),
            Matcher::new(MatchOp::Equal, "__name__", "node_metric_5_total").expect("matcher"),
        ];
        let got = db.querier(i64::MIN, i64::MAX).select(&m).expect("select");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].samples.len(), scrapes);
    };

    let start = Instant::now();
    let db = Tsdb::open(&dir, Options::default()).expect("reopen after crash");
    let crash = start.elapsed().as_secs_f64();
    check(&db);
    println!(
        "restart after a crash (WAL replay of {n} series, {} samples): {crash:.2} s",
        n * scrapes
    );
    let start = Instant::now();
    db.close().expect("close");
    println!(
        "graceful close (flush): {:.2} s",
        start.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    let db = Tsdb::open(&dir, Options::default()).expect("reopen after close");
    let graceful = start.elapsed().as_secs_f64();
    check(&db);
    println!("restart after a graceful close (checkpoint of {n} series): {graceful:.2} s");
    println!("peak RSS {:.0} MiB", peak_rss_mib());
    db.close().expect("close");
}
