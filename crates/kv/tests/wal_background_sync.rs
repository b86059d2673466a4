//! On the real file system the WAL segment is synced in the background every few MiB of
//! unsynced writes (so that the fsync at a memtable switch finds little left to write);
//! this changes nothing of what a reopen recovers.

use std::time::{Duration, Instant};
use strata_kv::{Db, Options};

fn key(i: u32) -> String {
    format!("key{i:08}")
}

fn value(i: u32) -> Vec<u8> {
    let mut v = format!("value{i:08}").into_bytes();
    v.resize(200, b'x');
    v
}

#[test]
fn background_wal_syncs_run_and_recovery_sees_every_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A memtable large enough that the whole test stays in one WAL segment.
    let opts = || Options {
        write_buffer_size: 256 << 20,
        ..Options::default()
    };
    const N: u32 = 60_000; // about 13 MiB of WAL
    let db = Db::open(dir.path(), opts()).expect("open");
    for i in 0..N {
        db.put(key(i), value(i)).expect("put");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while db.stats().wal_background_syncs == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = db.stats();
    assert!(stats.wal_background_syncs >= 1, "{stats:?}");
    assert_eq!(stats.flushes, 0, "{stats:?}");
    assert!(stats.background_error.is_none(), "{stats:?}");
    // As if the process were killed: everything comes back from the WAL.
    db.abandon();
    let db = Db::open(dir.path(), opts()).expect("reopen");
    for i in (0..N).step_by(101).chain([N - 1]) {
        assert_eq!(db.get(key(i)).expect("get"), Some(value(i)), "key {i}");
    }
    assert_eq!(db.scan::<&[u8]>(..).count(), N as usize);
    db.close().expect("close");
}

fn live_wal_len(dir: &std::path::Path) -> u64 {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    let last = logs.last().expect("a WAL segment");
    std::fs::metadata(last).expect("metadata").len()
}

/// Synced writes zero-fill the live segment ahead of them (their fdatasync then commits no
/// file-size change); after a kill the zeros read as the end of the log and every synced
/// write comes back, again and again. Strict recovery gets no zeros (it would refuse them).
#[test]
fn synced_writes_preallocate_and_recovery_reads_past_nothing() {
    use strata_kv::{WalRecoveryMode, WriteBatch, WriteOptions};
    for mode in [WalRecoveryMode::TolerateTail, WalRecoveryMode::Strict] {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = || Options {
            wal_recovery: mode,
            ..Options::default()
        };
        let mut n = 0u32;
        for round in 0..3 {
            let db = Db::open(dir.path(), opts()).expect("open");
            for _ in 0..200 {
                let mut b = WriteBatch::new();
                b.put(key(n), value(n));
                db.write(b, WriteOptions { sync: true }).expect("write");
                n += 1;
            }
            let len = live_wal_len(dir.path());
            if mode == WalRecoveryMode::TolerateTail {
                assert!(len >= 1 << 20, "round {round}: live WAL of {len} bytes");
            } else {
                assert!(len < 100_000, "round {round}: live WAL of {len} bytes");
            }
            db.abandon();
            let db = Db::open(dir.path(), opts()).expect("reopen");
            for i in 0..n {
                assert_eq!(db.get(key(i)).expect("get"), Some(value(i)), "key {i}");
            }
            db.abandon();
        }
        // A clean close leaves no zeros behind.
        let db = Db::open(dir.path(), opts()).expect("open");
        let mut b = WriteBatch::new();
        b.put(key(n), value(n));
        db.write(b, WriteOptions { sync: true }).expect("write");
        db.close().expect("close");
        assert!(live_wal_len(dir.path()) < 1 << 10);
    }
}
