//! Restart time of the Bitcask engine on 1M keys, with hint files and without (scanning
//! the data files). A benchmark, not a timed test:
//!
//! ```sh
//! cargo test --release -p strata-kv --test bitcask_restart -- --ignored --nocapture
//! ```
//! `BITCASK_BENCH_KEYS` changes the number of keys.

use std::time::Instant;
use strata_kv::bitcask::{Bitcask, BitcaskOptions};
use strata_kv::{WriteBatch, WriteOptions};

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn restart_time_with_and_without_hint_files() {
    let n: u64 = std::env::var("BITCASK_BENCH_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = BitcaskOptions {
        max_file_size: 64 << 20,
        ..BitcaskOptions::default()
    };
    let t = Instant::now();
    let db = Bitcask::open(dir.path(), opts.clone()).expect("open");
    let value = vec![b'v'; 100];
    for chunk in 0..n.div_ceil(1000) {
        let mut b = WriteBatch::new();
        for k in chunk * 1000..((chunk + 1) * 1000).min(n) {
            b.put(format!("key{k:012}"), &value);
        }
        db.write(b, WriteOptions::default()).expect("write");
    }
    // Overwrite a tenth so that there are dead records to merge away.
    for k in (0..n).step_by(10) {
        db.put(format!("key{k:012}"), b"updated").expect("put");
    }
    let load = t.elapsed();
    let t = Instant::now();
    db.merge().expect("merge");
    let merge = t.elapsed();
    let s = db.stats();
    db.close().expect("close");
    println!(
        "bitcask restart: {n} keys, 100-byte values; load {load:.2?}, merge {merge:.2?}; \
         {} data files, {} MiB on disk; keydir {:.1} MiB = {:.1} bytes/key",
        s.files,
        s.disk_bytes >> 20,
        s.keydir_memory_bytes as f64 / (1 << 20) as f64,
        s.keydir_bytes_per_key
    );

    // Each variant is opened three times; the best time is reported (the first open also
    // pays for page faults of the freshly freed keydir memory, the page cache, etc.).
    let time_open = |expect_hints: bool| {
        let mut best = std::time::Duration::MAX;
        let mut report = None;
        for _ in 0..3 {
            let t = Instant::now();
            let db = Bitcask::open(dir.path(), opts.clone()).expect("reopen");
            best = best.min(t.elapsed());
            assert_eq!(db.stats().keys, n);
            let r = db.recovery_report().clone();
            assert_eq!(r.files_from_hints > 0, expect_hints);
            report = Some(r);
            db.close().expect("close");
        }
        (best, report.expect("report"))
    };
    let (with_hints, r) = time_open(true);
    for e in std::fs::read_dir(dir.path()).expect("ls") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "hint") {
            std::fs::remove_file(p).expect("rm hint");
        }
    }
    let (without, r2) = time_open(false);
    println!(
        "bitcask restart: with hint files {with_hints:.2?} ({} files from hints), \
         without (scan) {without:.2?} ({} files scanned); speed-up {:.1}x",
        r.files_from_hints,
        r2.files_scanned,
        without.as_secs_f64() / with_hints.as_secs_f64()
    );
}
