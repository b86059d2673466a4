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

fn wal_segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

/// The WAL thread allocates space ahead of the live segment's records (it reads as zeros):
/// after a kill the zeros are the end of the log and every write comes back, including
/// across memtable switches (a segment followed by another never ends in zeros, or the
/// reopen would refuse it). Strict recovery gets no space ahead, and a clean close cuts it.
#[test]
fn space_ahead_of_unsynced_writes_reads_as_the_end_of_the_log() {
    use strata_kv::WalRecoveryMode;
    for mode in [WalRecoveryMode::TolerateTail, WalRecoveryMode::Strict] {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = || Options {
            wal_recovery: mode,
            // Several switches: about 6 MiB of WAL below.
            write_buffer_size: 1 << 20,
            ..Options::default()
        };
        const N: u32 = 25_000;
        let db = Db::open(dir.path(), opts()).expect("open");
        for i in 0..N {
            db.put(key(i), value(i)).expect("put");
        }
        // The live segment (the largest: the one after it, if any, was created ahead and
        // holds a header): its records are far fewer than the space the WAL thread gets
        // ahead of them (asked for by the first write).
        let largest = || {
            wal_segments(dir.path())
                .into_iter()
                .max_by_key(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
                .expect("a segment")
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let grown = || std::fs::metadata(largest()).map_or(0, |m| m.len()) >= 4 << 20;
        while mode == WalRecoveryMode::TolerateTail && !grown() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let segments = wal_segments(dir.path());
        let bytes = std::fs::read(largest()).expect("read");
        if mode == WalRecoveryMode::TolerateTail {
            assert!(bytes.len() >= 4 << 20, "live WAL of {} bytes", bytes.len());
            assert!(bytes[bytes.len() - (1 << 20)..].iter().all(|&b| b == 0));
        } else {
            assert!(bytes.len() < 2 << 20, "live WAL of {} bytes", bytes.len());
        }
        assert!(db.stats().flushes >= 1 || segments.len() > 1);
        db.abandon();
        let db = Db::open(dir.path(), opts()).expect("reopen after a kill");
        for i in (0..N).step_by(97).chain([N - 1]) {
            assert_eq!(db.get(key(i)).expect("get"), Some(value(i)), "key {i}");
        }
        assert_eq!(db.scan::<&[u8]>(..).count(), N as usize);
        // Writes into a fresh segment, then a clean close: no zeros left behind.
        for i in N..N + 100 {
            db.put(key(i), value(i)).expect("put");
        }
        db.close().expect("close");
        for seg in wal_segments(dir.path()) {
            let len = std::fs::metadata(&seg).expect("metadata").len();
            assert!(
                len < 1 << 20,
                "{} of {len} bytes after close",
                seg.display()
            );
        }
        let db = Db::open(dir.path(), opts()).expect("reopen after close");
        assert_eq!(db.scan::<&[u8]>(..).count(), N as usize + 100);
        db.close().expect("close");
    }
}
