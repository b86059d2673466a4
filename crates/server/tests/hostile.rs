//! Hostile input over real TCP on loopback: thousands of malformed requests (bad snappy,
//! snappy declaring gigabytes, protobuf with huge lengths or deep nesting, a million labels,
//! invalid UTF-8, invalid PromQL, queries past the sample limit, very slow bodies). Each
//! gets a 4xx/503 quickly, the server stays up, its memory stays bounded, and what was
//! stored before is unchanged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use strata_server::prompb::{Label, Sample, TimeSeries, WriteRequest};
use strata_server::{router, AppState, Config};
use strata_tsdb::Tsdb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

async fn raw(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> (u16, Duration) {
    let began = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write head");
    // The server may answer (and close) before reading a body it refuses.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, began.elapsed())
}

fn post(path: &str, ctype: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: strata\r\nContent-Type: {ctype}\r\nContent-Encoding: snappy\r\n"
    )
}

fn snappy(b: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(b).expect("snappy")
}

fn write_body(series: Vec<TimeSeries>) -> Vec<u8> {
    snappy(
        &WriteRequest {
            timeseries: series,
            metadata: vec![],
        }
        .encode_to_vec(),
    )
}

fn ts(labels: Vec<(String, String)>, samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: labels
            .into_iter()
            .map(|(name, value)| Label { name, value })
            .collect(),
        samples: samples
            .iter()
            .map(|&(timestamp, value)| Sample { value, timestamp })
            .collect(),
        ..TimeSeries::default()
    }
}

use strata_testkit::XorShift as Rng;

async fn get_body(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: strata\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_quickly_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.limits.max_body_bytes = 16 << 20;
    config.limits.max_decompressed_bytes = 32 << 20;
    config.limits.max_query_samples = 1000;
    config.limits.write_timeout = Duration::from_secs(1);
    let mut opts = config.tsdb_options();
    opts.background = false;
    let tsdb = Tsdb::open(dir.path(), opts).expect("open");
    let state = Arc::new(AppState::new(tsdb, config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(Arc::clone(&state));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    // Data stored before the storm.
    let samples: Vec<(i64, f64)> = (0..2000).map(|i| (i * 1000, i as f64)).collect();
    let good = write_body(vec![ts(
        vec![("__name__".into(), "keep".into()), ("k".into(), "v".into())],
        &samples,
    )]);
    let (code, _) = raw(
        addr,
        &post("/api/v1/write", "application/x-protobuf"),
        &good,
    )
    .await;
    assert_eq!(code, 204);
    // 499 samples (1501..=1999): under the query sample limit of 1000.
    let probe = "/api/v1/query?query=sum(sum_over_time(keep%5B500s%5D))&time=2000";
    let before = get_body(addr, probe).await;
    assert!(before.contains("\"873250\""), "{before}");
    let rss_before = rss_bytes();

    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut million = Vec::with_capacity(1_000_000);
    for i in 0..1_000_000u32 {
        million.push((format!("l{i}"), "v".to_string()));
    }
    let million_labels = write_body(vec![ts(million, &[(1, 1.0)])]);
    assert!(
        million_labels.len() < 16 << 20,
        "the million-label request fits the body limit"
    );
    let mut deep = vec![0x4bu8; 200_000]; // start-group of field 9, nested 200k deep
    deep.extend([0u8; 4]);
    let deep = snappy(&deep);
    let huge_len = snappy(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]);
    let bad_utf8 = {
        let mut b = WriteRequest {
            timeseries: vec![ts(vec![("__name__".into(), "x".into())], &[(1, 1.0)])],
            metadata: vec![],
        }
        .encode_to_vec();
        let at = b.iter().position(|&c| c == b'x').expect("value byte");
        b[at] = 0xff;
        snappy(&b)
    };
    let gigabytes: Vec<u8> = vec![0x80, 0x80, 0x80, 0x80, 0x0f, 0x00]; // declares 4 GiB

    let mut codes = std::collections::BTreeMap::<u16, u32>::new();
    let mut slowest = Duration::ZERO;
    let n = 2400;
    for i in 0..n {
        let (code, took) = match i % 12 {
            0 => {
                let len = 1 + (rng.next() % 3000) as usize;
                raw(
                    addr,
                    &post("/api/v1/write", "application/x-protobuf"),
                    &rng.bytes(len),
                )
                .await
            }
            1 => {
                raw(
                    addr,
                    &post("/api/v1/write", "application/x-protobuf"),
                    &gigabytes,
                )
                .await
            }
            2 => {
                raw(
                    addr,
                    &post("/api/v1/write", "application/x-protobuf"),
                    &huge_len,
                )
                .await
            }
            3 => {
                raw(
                    addr,
                    &post("/api/v1/write", "application/x-protobuf"),
                    &deep,
                )
                .await
            }
            4 => {
                raw(
                    addr,
                    &post("/api/v1/write", "application/x-protobuf"),
                    &bad_utf8,
                )
                .await
            }
            5 if i % 240 == 5 => {
                raw(
                    addr,
                    &post("/api/v1/write", "application/x-protobuf"),
                    &million_labels,
                )
                .await
            }
            5 | 6 => {
                // Random bytes inside valid snappy: arbitrary protobuf.
                let len = 1 + (rng.next() % 500) as usize;
                let body = snappy(&rng.bytes(len));
                raw(
                    addr,
                    &post("/api/v1/write", "application/x-protobuf"),
                    &body,
                )
                .await
            }
            7 => raw(addr, &post("/api/v1/write", "text/plain"), b"hello").await,
            8 => {
                let q = ["sum(", "rate(x[5m]", "{}", "x{y=~\"(\"}", "1 +", "\u{0}"][i / 12 % 6];
                let body = format!("query={}", q.replace('+', "%2B"));
                raw(
                    addr,
                    &post("/api/v1/query", "application/x-www-form-urlencoded")
                        .replace("Content-Encoding: snappy\r\n", ""),
                    body.as_bytes(),
                )
                .await
            }
            9 => {
                // Past the query sample limit (1000) and past the resolution limit.
                let body: &[u8] = if i % 24 == 9 {
                    b"query=sum_over_time(keep[1h])&time=2000"
                } else {
                    b"query=keep&start=0&end=100000&step=0.001"
                };
                let path = if i % 24 == 9 {
                    "/api/v1/query"
                } else {
                    "/api/v1/query_range"
                };
                raw(
                    addr,
                    &post(path, "application/x-www-form-urlencoded")
                        .replace("Content-Encoding: snappy\r\n", ""),
                    body,
                )
                .await
            }
            10 => {
                // A first line that cannot parse (no measurement), then random bytes.
                let len = (rng.next() % 2000) as usize;
                let mut body = b",=\n".to_vec();
                body.extend(rng.bytes(len));
                raw(
                    addr,
                    &post("/api/v2/write", "text/plain")
                        .replace("Content-Encoding: snappy\r\n", ""),
                    &body,
                )
                .await
            }
            _ if i % 120 == 11 => {
                // Body bigger than the limit.
                raw(
                    addr,
                    &post("/api/v1/write", "application/x-protobuf"),
                    &vec![7u8; (16 << 20) + 1],
                )
                .await
            }
            _ => {
                // Remote read with garbage.
                let len = (rng.next() % 300) as usize;
                raw(
                    addr,
                    &post("/api/v1/read", "application/x-protobuf"),
                    &rng.bytes(len),
                )
                .await
            }
        };
        // Random bytes in valid snappy (cases 5, 6) are sometimes a valid, empty request.
        let empty_ok = matches!(i % 12, 5 | 6) && code == 204;
        assert!(
            (400..500).contains(&code) || code == 503 || empty_ok,
            "request {i} (case {}) answered {code}",
            i % 12
        );
        slowest = slowest.max(took);
        *codes.entry(code).or_default() += 1;
    }

    // A very slow body: 1 byte every 300 ms; the write deadline (1 s) cuts it off.
    let began = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{}Content-Length: 1000\r\n\r\n",
        post("/api/v1/write", "application/x-protobuf")
    );
    s.write_all(head.as_bytes()).await.expect("head");
    let mut answer = Vec::new();
    for _ in 0..20 {
        if s.write_all(&[0u8]).await.is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => {}
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "slow body got {answer:?}"
    );
    assert!(began.elapsed() < Duration::from_secs(4));

    let rss_after = rss_bytes();
    let after = get_body(addr, probe).await;
    assert_eq!(before, after, "stored data changed");
    assert!(
        slowest < Duration::from_secs(5),
        "slowest answer took {slowest:?}"
    );
    let growth = rss_after.saturating_sub(rss_before);
    assert!(growth < 400 << 20, "memory grew by {} MiB", growth >> 20);
    eprintln!(
        "{n} hostile requests: {codes:?}; slowest {slowest:?}; RSS {} -> {} MiB",
        rss_before >> 20,
        rss_after >> 20
    );
}
