//! Crash test with a real process: a child appends batches (one sample per series per
//! batch, some out of order) with frequent background flushes and partition compactions,
//! and reports each acknowledged batch; the parent kills it with SIGKILL at a random moment,
//! reopens the store and checks that every acknowledged batch is there, and that every batch
//! is all-or-nothing across its series. `STRATA_CRASH_CYCLES` (default 10) and
//! `STRATA_CRASH_SEED` as for the key-value crash test.

use std::path::Path;

use strata_testkit::KillLoop;
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
    let dir = tempfile::tempdir().expect("tempdir");
    KillLoop {
        child_test: "child_appender",
        child_env: CHILD_ENV,
        cycles: 10,
        seed: 0x2545_f491_4f6c_dd1d,
        min_ms: 50,
        spread_ms: 400,
    }
    .run(dir.path(), |acked| verify(dir.path(), acked));
}
