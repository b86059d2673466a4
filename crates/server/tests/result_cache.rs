//! The range query result cache against the uncached engine: random overlapping range
//! queries, answered with and without the cache, must be byte-identical while late writes,
//! recent writes, deletes and flushes interleave.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use strata_server::{router, AppState, Config};
use strata_tsdb::{Labels, MatchOp, Matcher, Tsdb};
use tower::ServiceExt;

const MIN: i64 = 60_000;

fn state(dir: &std::path::Path, cache_bytes: usize) -> Arc<AppState> {
    let config = Config {
        data_dir: dir.to_path_buf(),
        query_cache_bytes: cache_bytes,
        query_cache_offset_ms: 30 * MIN,
        ..Config::default()
    };
    let mut opts = config.tsdb_options();
    opts.background = false;
    let tsdb = Tsdb::open(dir, opts).unwrap();
    Arc::new(AppState::new(tsdb, config))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

use strata_testkit::XorShift as Rng;

fn labels(name: &str, job: &str, inst: u32) -> Labels {
    Labels::from_pairs([
        ("__name__", name.to_string()),
        ("job", job.to_string()),
        ("instance", format!("i{inst}")),
    ])
    .unwrap()
}

/// Samples of every series at `ts` (counters rise by a seeded amount, gauges wander).
fn write(st: &AppState, rng: &mut Rng, ts: &[i64]) {
    let mut app = st.tsdb.appender();
    for &t in ts {
        for inst in 0..4 {
            let job = if inst % 2 == 0 { "api" } else { "db" };
            let v = (t / 15_000) as f64 * (inst + 1) as f64 + rng.below(3) as f64;
            app.add(labels("req_total", job, inst), t, v);
            app.add(labels("temp", job, inst), t, rng.below(1000) as f64 / 10.0);
        }
    }
    app.commit().unwrap();
}

/// Scrape times every 15 s from a minute three hours ago up to `gap` ms before now.
fn scrape_times(gap: i64) -> (i64, Vec<i64>) {
    let t_now = now();
    let t0 = (t_now - 3 * 60 * MIN) / MIN * MIN;
    let ts = (0..)
        .map(|i| t0 + i * 15_000)
        .take_while(|t| *t < t_now - gap)
        .collect();
    (t0, ts)
}

fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

async fn range(
    app: &axum::Router,
    q: &str,
    start: i64,
    end: i64,
    step: i64,
    cache: bool,
) -> String {
    let mut uri = format!(
        "/api/v1/query_range?query={}&start={}&end={}&step={}",
        form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>(),
        secs(start),
        secs(end),
        secs(step),
    );
    if !cache {
        uri.push_str("&nocache=1");
    }
    let resp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(status, StatusCode::OK, "{q}: {body}");
    body
}

const QUERIES: &[&str] = &[
    "rate(req_total[5m])",
    "sum by (job) (rate(req_total[5m]))",
    "temp",
    "avg_over_time(temp[10m])",
    "max_over_time(temp[10m:1m])",
    "temp offset 10m",
    "time() - temp",
    "topk(2, temp)",
    "count(temp > 50)",
    "absent(nothing)",
    "increase(req_total{job=\"db\"}[3m]) / 2",
    "1 + 2",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_equal_uncached_under_late_writes_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), 64 << 20);
    let app = router(Arc::clone(&st));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (t0, ts) = scrape_times(10 * MIN);
    write(&st, &mut rng, &ts);
    let steps = [7_000, 15_000, 60_000];
    let (mut late, mut recent, mut deletes) = (0, 0, 0);
    let mut prev = (QUERIES[0], steps[0], 0);
    for i in 0..400 {
        match rng.below(20) {
            0..=1 => {
                // A late write: an old timestamp, inside cached steps.
                let t = t0 + rng.below(150) as i64 * MIN + rng.below(60_000) as i64;
                write(&st, &mut rng, &[t]);
                late += 1;
            }
            2..=3 => {
                let t = now() - rng.below(5 * MIN as u64) as i64;
                write(&st, &mut rng, &[t]);
                recent += 1;
            }
            4 => {
                let job = if rng.below(2) == 0 { "api" } else { "db" };
                let m = Matcher::new(MatchOp::Equal, "job", job).unwrap();
                let from = t0 + rng.below(180) as i64 * MIN;
                st.tsdb.delete_series(&[m], from, from + 5 * MIN).unwrap();
                deletes += 1;
            }
            5 => st.tsdb.flush().unwrap(),
            _ => {
                // Half the time the previous query again (a dashboard refresh), on a
                // window that overlaps or slides; starts on a few grids.
                if rng.below(2) == 0 {
                    prev = (
                        QUERIES[rng.below(QUERIES.len() as u64) as usize],
                        steps[rng.below(steps.len() as u64) as usize],
                        rng.below(3) as i64 * 1_000,
                    );
                }
                let (q, step, phase) = prev;
                let start = t0 + phase + rng.below(200) as i64 * step;
                let end = (start + rng.below(400) as i64 * step + rng.below(step as u64) as i64)
                    .min(now() + MIN)
                    .max(start);
                let cached = range(&app, q, start, end, step, true).await;
                let fresh = range(&app, q, start, end, step, false).await;
                assert_eq!(
                    cached, fresh,
                    "iteration {i}: {q} [{start}, {end}] by {step}"
                );
            }
        }
    }
    let (hits, misses) = st.result_cache.hits_misses();
    assert!(late > 0 && recent > 0 && deletes > 0);
    eprintln!("hits {hits}, misses {misses}, late {late}, recent {recent}, deletes {deletes}");
    assert!(hits > 50, "hits {hits}, misses {misses}");
    assert!(misses > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_writes_keep_old_steps_and_late_writes_drop_them() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), 64 << 20);
    let app = router(Arc::clone(&st));
    let mut rng = Rng(7);
    let (t0, ts) = scrape_times(0);
    write(&st, &mut rng, &ts);
    let q = "sum by (job) (rate(req_total[5m]))";
    let (start, end) = (t0 + 10 * MIN, t0 + 120 * MIN);
    range(&app, q, start, end, 15_000, true).await;
    assert_eq!(st.result_cache.hits_misses(), (0, 1));
    // Recent samples (newer than now - offset) leave the entry alone.
    for _ in 0..5 {
        let t = now() - rng.below(10 * MIN as u64) as i64;
        write(&st, &mut rng, &[t]);
        let got = range(&app, q, start, end, 15_000, true).await;
        assert_eq!(got, range(&app, q, start, end, 15_000, false).await);
    }
    assert_eq!(st.result_cache.hits_misses(), (5, 1));
    // A sliding window reuses the cached steps.
    range(&app, q, start + 15 * MIN, end + 30 * MIN, 15_000, true).await;
    assert_eq!(st.result_cache.hits_misses(), (6, 1));
    // A late sample inside the cached steps drops them, and shows in the next answer.
    let mut app_ = st.tsdb.appender();
    app_.add(labels("req_total", "api", 0), t0 + 60 * MIN + 1, 1e9);
    app_.commit().unwrap();
    let got = range(&app, q, start, end, 15_000, true).await;
    assert_eq!(st.result_cache.hits_misses(), (6, 2));
    assert_eq!(got, range(&app, q, start, end, 15_000, false).await);
    // A query over recent steps only is never stored.
    let (b0, n0) = st.result_cache.size();
    range(&app, q, now() - 10 * MIN, now(), 15_000, true).await;
    assert_eq!(st.result_cache.size(), (b0, n0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_bound_holds() {
    let dir = tempfile::tempdir().unwrap();
    let max = 40_000;
    let st = state(dir.path(), max);
    let app = router(Arc::clone(&st));
    let mut rng = Rng(11);
    let (t0, ts) = scrape_times(0);
    write(&st, &mut rng, &ts);
    let mut stored = 0;
    for i in 0..60 {
        let q = format!("temp * {i}");
        range(&app, &q, t0, t0 + 30 * MIN, 60_000, true).await;
        let (bytes, n) = st.result_cache.size();
        assert!(bytes <= max, "{bytes} > {max}");
        stored = stored.max(n);
    }
    assert!(stored > 1, "nothing cached");
    // An answer larger than the cache allows (a quarter) is not stored.
    let (b0, n0) = st.result_cache.size();
    range(&app, "temp", t0, t0 + 120 * MIN, 15_000, true).await;
    assert_eq!(st.result_cache.size(), (b0, n0));
    // `--query-cache-bytes 0` turns it off.
    let dir2 = tempfile::tempdir().unwrap();
    let off = state(dir2.path(), 0);
    let app2 = router(Arc::clone(&off));
    range(&app2, "temp", t0, t0 + 30 * MIN, 60_000, true).await;
    assert_eq!(off.result_cache.hits_misses(), (0, 0));
    assert_eq!(off.result_cache.size(), (0, 0));
}
