//! Crash test with a real process: a child appends batches (one sample per series per
//! batch, some out of order) with frequent background flushes and partition compactions,
//! and reports each acknowledged batch; the parent kills it with SIGKILL at a random moment,
//! reopens the store and checks that every acknowledged batch is there, and that every batch
//! is all-or-nothing across its series. `STRATA_CRASH_CYCLES` (default 10) and
//! `STRATA_CRASH_SEED` as for the key-value crash test.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata_tsdb::{FsyncPolicy, Labels, MatchOp, Matcher, Options, Tsdb};

const CHILD_ENV: &str = "STRATA_TSDB_CRASH_CHILD_DIR";
const SERIES: u64 = 8;

fn options() -> Options {
    let mut o = Options {
        partition_ms: 20_000,
        wal_fsync: FsyncPolicy::Never, // a process crash loses nothing the OS was given
        flush_max_samples: 400,
        flush_span_ms: 10_000,
        max_chunk_samples: 16,
        ..Options::default()
    };
    o.kv.write_buffer_size = 64 * 1024;
    o
}

fn labels(s: u64) -> Labels {
    Labels::from_pairs([("__name__", "crash"), ("s", &s.to_string())]).expect("labels")
}

/// Batch `n` has timestamp `n * 1000` in every series, except that every 7th batch is
/// written 5 s in the past (out of order, at a time no other batch uses).
fn batch_time(n: u64) -> i64 {
    if n % 7 == 6 {
        n as i64 * 1000 - 5_500
    } else {
        n as i64 * 1000
    }
}

fn read_all(db: &Tsdb) -> Vec<(Labels, Vec<(i64, f64)>)> {
    db.querier(i64::MIN, i64::MAX)
        .select(&[Matcher::new(MatchOp::Equal, "__name__", "crash").expect("matcher")])
        .expect("select")
        .into_iter()
        .map(|s| (s.labels, s.samples))
        .collect()
}

#[test]
fn child_appender() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // Only runs as the child of the test below.
    };
    let db = Tsdb::open(&dir, options()).expect("child open");
    let start = read_all(&db)
        .iter()
        .flat_map(|(_, s)| s.iter().map(|(_, v)| *v as u64 + 1))
        .max()
        .unwrap_or(0);
    for n in start.. {
        let mut app = db.appender();
        for s in 0..SERIES {
            app.add(labels(s), batch_time(n), n as f64);
        }
        app.commit().expect("child commit");
        println!("ack {n}");
    }
}

fn verify(dir: &Path, acked: Option<u64>) -> u64 {
    let db = Tsdb::open(dir, options()).expect("reopen after SIGKILL");
    let all = read_all(&db);
    let mut batches: Option<Vec<u64>> = None;
    for (l, samples) in &all {
        let mut ns: Vec<u64> = samples.iter().map(|(_, v)| *v as u64).collect();
        for (t, v) in samples {
            assert_eq!(
                *t,
                batch_time(*v as u64),
                "{l}: sample {v} at the wrong time"
            );
        }
        ns.sort_unstable();
        match &batches {
            None => batches = Some(ns),
            Some(b) => assert_eq!(
                b, &ns,
                "{l} holds other batches than its siblings: partial batch"
            ),
        }
    }
    let batches = batches.unwrap_or_default();
    if !batches.is_empty() {
        assert_eq!(all.len() as u64, SERIES, "a series is missing");
    }
    // Batches are contiguous from 0.
    for (i, n) in batches.iter().enumerate() {
        assert_eq!(*n, i as u64, "batch {i} missing");
    }
    let next = batches.len() as u64;
    if let Some(a) = acked {
        assert!(next > a, "acknowledged batch {a} lost (have {next})");
    }
    db.close().expect("close");
    next
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_batch() {
    let cycles: u64 = std::env::var("STRATA_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = std::env::var("STRATA_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(0x2545_f491_4f6c_dd1du64, |s| s | 1);
    let mut last = 0;
    for cycle in 0..cycles {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run_for = Duration::from_millis(50 + rng % 400);
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_appender",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("ack ") {
                    last = n.trim().parse::<u64>().ok();
                }
            }
            last
        });
        let started = Instant::now();
        while started.elapsed() < run_for {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        let acked = reader.join().expect("reader thread");
        let next = verify(dir.path(), acked);
        assert!(next >= last, "cycle {cycle}: went backwards");
        last = next;
    }
    assert!(last > 0, "the child never acknowledged a batch");
}
