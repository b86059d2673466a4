//! Crash test with a real process: a child writes batches and reports each acknowledged one;
//! the parent kills it with SIGKILL at a random moment (often during a flush), reopens the
//! database and checks that every acknowledged batch is there, whole, and that no batch is
//! partially visible. `STRATA_CRASH_CYCLES` sets the number of cycles (default 12),
//! `STRATA_CRASH_SEED` the seed of the kill moments.

use std::path::Path;
use strata_kv::{Db, Options, WriteBatch, WriteOptions};
use strata_testkit::KillLoop;

const CHILD_ENV: &str = "STRATA_CRASH_CHILD_DIR";
const KEYS_PER_BATCH: u64 = 5;

fn options() -> Options {
    let mut o = Options {
        write_buffer_size: 32 * 1024,
        ..Options::default()
    };
    o.table.block_size = 1024;
    o
}

fn batch_key(n: u64, j: u64) -> String {
    format!("batch{n:08}/{j}")
}

/// The child's role: write batches forever, printing `ack N` after batch N is acknowledged.
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // Only runs as the child of the test below.
    };
    let db = Db::open(&dir, options()).expect("child open");
    let start: u64 = db
        .get("next")
        .expect("get next")
        .map(|v| String::from_utf8_lossy(&v).parse().expect("number"))
        .unwrap_or(0);
    for n in start.. {
        let mut b = WriteBatch::new();
        for j in 0..KEYS_PER_BATCH {
            b.put(
                batch_key(n, j),
                format!("{n}:{j}:{}", "x".repeat((n % 200) as usize)),
            );
        }
        b.put("next", (n + 1).to_string());
        db.write(
            b,
            WriteOptions {
                sync: n.is_multiple_of(3),
            },
        )
        .expect("child write");
        println!("ack {n}");
    }
}

fn verify(dir: &Path, acked: Option<u64>) -> u64 {
    let db = Db::open(dir, options()).expect("reopen after SIGKILL");
    let next: u64 = db
        .get("next")
        .expect("get")
        .map(|v| String::from_utf8_lossy(&v).parse().expect("number"))
        .unwrap_or(0);
    if let Some(a) = acked {
        assert!(next > a, "acknowledged batch {a} lost (next = {next})");
    }
    // Every batch below `next` is whole; nothing at or above it exists.
    let mut count = 0u64;
    for item in db.scan("batch".."batci") {
        let (k, v) = item.expect("scan");
        let k = String::from_utf8(k).expect("utf8");
        let n: u64 = k[5..13].parse().expect("batch number");
        assert!(
            n < next,
            "batch {n} visible but next = {next}: partial batch"
        );
        assert!(String::from_utf8_lossy(&v).starts_with(&format!("{n}:")));
        count += 1;
    }
    assert_eq!(
        count,
        next * KEYS_PER_BATCH,
        "some batch is partially visible"
    );
    db.close().expect("close");
    next
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    KillLoop {
        child_test: "child_writer",
        child_env: CHILD_ENV,
        cycles: 12,
        seed: 0x9e37_79b9_7f4a_7c15,
        min_ms: 30,
        spread_ms: 300,
    }
    .run(dir.path(), |acked| verify(dir.path(), acked));
}
