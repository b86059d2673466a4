//! Crash torture of the real server: `strata serve` takes remote writes from several
//! threads (and flush/compaction requests) and is SIGKILLed at a random moment, again and
//! again; after every restart each acknowledged (204) request is read back whole, with its
//! values, no request is visible in part, and the server takes new writes.
//!
//! The server runs with its default WAL policy (`--wal-fsync 1s`): a 204 means the request's
//! WAL record was handed to the OS, so it survives the death of the process (the page cache
//! stays), which is exactly what a SIGKILL tests. A request is one `Appender` commit, i.e.
//! one samples record in the WAL: all of it or none of it survives.
//!
//! `STRATA_CRASH_CYCLES` (default 8) sets the number of kills, `STRATA_CRASH_SEED` the seed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use prost::Message;
use strata_server::prompb;

/// Writer threads.
const WRITERS: u64 = 3;
/// Series per writer; every request writes all of them.
const SERIES: u64 = 4;
/// Samples per series per request.
const PER_SERIES: u64 = 3;

use strata_testkit::SplitMix as Rng;

/// The timestamp of sample `j` of request `i` (every request owns its own timestamps).
fn ts(base: i64, i: u64, j: u64) -> i64 {
    base + (i * PER_SERIES + j) as i64
}

/// The value of sample `j` of series `k` in request `i` of writer `w` (exact in an f64).
fn value(w: u64, i: u64, k: u64, j: u64) -> f64 {
    (((w * 1_000_000 + i) * SERIES + k) * PER_SERIES + j) as f64 + 0.25
}

fn write_request(base: i64, w: u64, i: u64) -> Vec<u8> {
    let timeseries = (0..SERIES)
        .map(|k| prompb::TimeSeries {
            labels: vec![
                label("__name__", "torture"),
                label("series", &k.to_string()),
                label("writer", &w.to_string()),
            ],
            samples: (0..PER_SERIES)
                .map(|j| prompb::Sample {
                    value: value(w, i, k, j),
                    timestamp: ts(base, i, j),
                })
                .collect(),
            ..prompb::TimeSeries::default()
        })
        .collect();
    let raw = prompb::WriteRequest {
        timeseries,
        metadata: Vec::new(),
    }
    .encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy compresses")
}

fn label(name: &str, value: &str) -> prompb::Label {
    prompb::Label {
        name: name.into(),
        value: value.into(),
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// What a writer knows about its requests.
#[derive(Default)]
struct Log {
    /// Requests sent so far (ids `0..sent`).
    sent: u64,
    /// Ids answered 204.
    acked: Vec<u64>,
}

/// Outcome of one POST: `Some(status)` or `None` if the connection failed.
fn post(agent: &ureq::Agent, url: &str, body: &[u8]) -> Option<u16> {
    let resp = agent
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .send(body)
        .ok()?;
    Some(resp.status().as_u16())
}

/// Sends request `log.sent` of writer `w`; returns false when the server is gone.
fn send_one(agent: &ureq::Agent, addr: &str, base: i64, w: u64, log: &Mutex<Log>) -> bool {
    let i = {
        let mut l = log.lock().expect("log lock");
        l.sent += 1;
        l.sent - 1
    };
    let body = write_request(base, w, i);
    match post(agent, &format!("http://{addr}/api/v1/write"), &body) {
        Some(204) => {
            log.lock().expect("log lock").acked.push(i);
            true
        }
        Some(other) => panic!("writer {w} request {i}: HTTP {other} from a live server"),
        None => false,
    }
}

struct Server {
    child: Child,
    addr: String,
}

fn start(data: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env_remove("STRATA_WAL_FSYNC")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strata serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let keep = Arc::clone(&lines);
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("serving on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send(addr);
            }
            keep.lock().expect("stderr lock").push(line);
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(a) => a,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server did not start:\n{}",
                lines.lock().expect("stderr lock").join("\n")
            );
        }
    };
    Server { child, addr }
}

impl Server {
    /// SIGKILL, and wait for the process to be gone.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }
}

/// Every sample of writer `w` in the store: `(series, t) -> value`.
fn read_back(agent: &ureq::Agent, addr: &str, base: i64, w: u64) -> HashMap<(u64, i64), f64> {
    let req = prompb::ReadRequest {
        queries: vec![prompb::Query {
            start_timestamp_ms: base - 1_000_000,
            end_timestamp_ms: base + 1_000_000_000,
            matchers: vec![
                prompb::LabelMatcher {
                    r#type: 0,
                    name: "__name__".into(),
                    value: "torture".into(),
                },
                prompb::LabelMatcher {
                    r#type: 0,
                    name: "writer".into(),
                    value: w.to_string(),
                },
            ],
        }],
        accepted_response_types: vec![prompb::RESPONSE_SAMPLES],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy");
    let mut resp = agent
        .post(&format!("http://{addr}/api/v1/read"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .send(&body[..])
        .expect("remote read");
    assert_eq!(resp.status().as_u16(), 200, "remote read status");
    let raw = resp
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .expect("read body");
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&raw)
        .expect("snappy answer");
    let got = prompb::ReadResponse::decode(raw.as_slice()).expect("protobuf answer");
    let mut out = HashMap::new();
    for s in got.results.iter().flat_map(|r| &r.timeseries) {
        let get = |n: &str| {
            s.labels
                .iter()
                .find(|l| l.name == n)
                .map(|l| l.value.clone())
        };
        assert_eq!(s.labels.len(), 3, "unexpected labels {:?}", s.labels);
        assert_eq!(get("writer"), Some(w.to_string()));
        let k: u64 = get("series")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("unexpected labels {:?}", s.labels));
        assert!(k < SERIES, "unexpected series {k}");
        for smp in &s.samples {
            assert!(
                out.insert((k, smp.timestamp), smp.value).is_none(),
                "duplicate sample"
            );
        }
    }
    out
}

/// Checks the store against the writers' logs; returns the number of samples checked.
fn verify(agent: &ureq::Agent, addr: &str, base: i64, logs: &[Arc<Mutex<Log>>]) -> usize {
    let mut total = 0;
    for (w, log) in logs.iter().enumerate() {
        let w = w as u64;
        let got = read_back(agent, addr, base, w);
        let log = log.lock().expect("log lock");
        let mut acked = vec![false; log.sent as usize];
        for &i in &log.acked {
            acked[i as usize] = true;
        }
        let mut seen = 0;
        for i in 0..log.sent {
            let mut present = 0;
            for k in 0..SERIES {
                for j in 0..PER_SERIES {
                    if let Some(v) = got.get(&(k, ts(base, i, j))) {
                        assert_eq!(
                            v.to_bits(),
                            value(w, i, k, j).to_bits(),
                            "writer {w} request {i} series {k} sample {j}: wrong value"
                        );
                        present += 1;
                    }
                }
            }
            let whole = (SERIES * PER_SERIES) as usize;
            if acked[i as usize] {
                assert_eq!(
                    present,
                    whole,
                    "writer {w}: acknowledged request {i} lost {} of its {whole} samples",
                    whole - present
                );
            } else {
                assert!(
                    present == 0 || present == whole,
                    "writer {w}: request {i} is visible in part ({present} of {whole} samples)"
                );
            }
            seen += present;
        }
        assert_eq!(
            seen,
            got.len(),
            "writer {w}: the store holds samples that were never sent"
        );
        total += seen;
    }
    total
}

#[test]
fn acknowledged_remote_writes_survive_sigkill_of_the_server() {
    let cycles: u64 = std::env::var("STRATA_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("STRATA_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_7057);
    eprintln!("server crash torture: {cycles} cycles, STRATA_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    // An hour ago, well inside the default retention, in whole seconds.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    let base = (now_ms - 3_600_000) / 1000 * 1000;
    // The last writer is the probe: one synchronous request after every start.
    let logs: Vec<Arc<Mutex<Log>>> = (0..=WRITERS).map(|_| Arc::default()).collect();
    let client = agent();
    let began = Instant::now();
    let mut kills_during_admin = 0;
    for cycle in 0..cycles {
        let mut server = start(&data);
        let addr = server.addr.clone();
        let checked = verify(&client, &addr, base, &logs);
        assert!(
            send_one(&client, &addr, base, WRITERS, &logs[WRITERS as usize]),
            "cycle {cycle}: the restarted server refused a write"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for w in 0..WRITERS {
            let (stop, log, addr) = (
                Arc::clone(&stop),
                Arc::clone(&logs[w as usize]),
                addr.clone(),
            );
            handles.push(thread::spawn(move || {
                let agent = agent();
                while !stop.load(Ordering::Relaxed) && send_one(&agent, &addr, base, w, &log) {}
            }));
        }
        // Flushes and compactions while the writers write.
        let admin_seed = rng.next();
        {
            let (stop, addr) = (Arc::clone(&stop), addr.clone());
            handles.push(thread::spawn(move || {
                let mut rng = Rng(admin_seed);
                let agent = agent();
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(20 + rng.below(150)));
                    let what = if rng.below(3) == 0 {
                        "compact"
                    } else {
                        "flush"
                    };
                    let url = format!("http://{addr}/api/v1/admin/tsdb/{what}");
                    if agent.post(&url).send_empty().is_err() {
                        break;
                    }
                }
            }));
        }
        // Kill at a random moment; every other cycle right after a flush or compaction
        // request went out, so the kill lands inside it.
        thread::sleep(Duration::from_millis(150 + rng.below(1200)));
        if rng.below(2) == 0 {
            kills_during_admin += 1;
            let what = if rng.below(2) == 0 {
                "compact"
            } else {
                "flush"
            };
            let url = format!("http://{addr}/api/v1/admin/tsdb/{what}");
            handles.push(thread::spawn(move || {
                let _ = agent().post(&url).send_empty();
            }));
            thread::sleep(Duration::from_millis(rng.below(40)));
        }
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().expect("client thread");
        }
        let (sent, acked) = logs.iter().fold((0, 0), |(s, a), l| {
            let l = l.lock().expect("log lock");
            (s + l.sent, a + l.acked.len())
        });
        eprintln!(
            "cycle {cycle}: {checked} samples checked at start; killed; {sent} requests sent, {acked} acknowledged so far"
        );
    }
    // The last restart: everything acknowledged is there, and writing goes on.
    let mut server = start(&data);
    let checked = verify(&client, &server.addr, base, &logs);
    assert!(
        send_one(
            &client,
            &server.addr,
            base,
            WRITERS,
            &logs[WRITERS as usize]
        ),
        "the restarted server refused a write"
    );
    let after = verify(&client, &server.addr, base, &logs);
    assert_eq!(after, checked + (SERIES * PER_SERIES) as usize);
    server.kill();
    let acked: usize = logs
        .iter()
        .map(|l| l.lock().expect("log lock").acked.len())
        .sum();
    assert!(acked > cycles as usize, "too few writes were acknowledged");
    eprintln!(
        "server crash torture: {cycles} kills ({kills_during_admin} during a flush or compaction request), \
         {acked} acknowledged requests, {after} samples verified, data lost: 0, {:.1} s",
        began.elapsed().as_secs_f64()
    );
}
