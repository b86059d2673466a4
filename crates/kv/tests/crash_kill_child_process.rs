//! Crash test with a real process: a child writes batches and reports each acknowledged one;
//! the parent kills it with SIGKILL at a random moment (often during a flush), reopens the
//! database and checks that every acknowledged batch is there, whole, and that no batch is
//! partially visible. `STRATA_CRASH_CYCLES` sets the number of cycles (default 12),
//! `STRATA_CRASH_SEED` the seed of the kill moments.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use strata_kv::{Db, Options, WriteBatch, WriteOptions};

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
    let cycles: u64 = std::env::var("STRATA_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    // STRATA_CRASH_SEED varies the kill moments between runs (scripts/torture.sh).
    let mut rng = std::env::var("STRATA_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(0x9e37_79b9_7f4a_7c15u64, |s| s | 1);
    let mut last_next = 0;
    for cycle in 0..cycles {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run_for = Duration::from_millis(30 + rng % 300);
        let mut child = Command::new(&exe)
            .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
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
        assert!(next >= last_next, "cycle {cycle}: went backwards");
        last_next = next;
    }
    assert!(last_next > 0, "the child never acknowledged a write");
}
