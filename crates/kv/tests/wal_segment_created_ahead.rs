//! The flush thread creates the next WAL segment while the memtable is half full, so that
//! the memtable switch does not wait for the file and the directory fsync. The segment
//! holds only its header until the switch: a crash before then recovers everything from
//! the live segment, a clean close leaves it behind, and later switches write into it.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use strata_kv::fs::{CrashMode, MemFs};
use strata_kv::Db;

fn key(i: u32) -> String {
    format!("key{i:08}")
}

fn logs(fs: &MemFs) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs
        .paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// Writes 60% of a memtable and waits for the segment created ahead.
fn half_full(fs: &MemFs) -> (Db, strata_kv::Options, PathBuf) {
    let mut o = common::small_options(fs);
    o.write_buffer_size = 256 * 1024;
    let db = Db::open(Path::new("/db"), o.clone()).expect("open");
    for i in 0..N {
        db.put(key(i), vec![b'v'; 100]).expect("put");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    // Handed over, not only created: a switch before that makes its own segment.
    while db.stats().wal_segments_ahead == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let l = logs(fs);
    assert_eq!(l.len(), 2, "{l:?}");
    assert_eq!(db.stats().flushes, 0);
    (db, o, l[1].clone())
}

const N: u32 = 1000;

#[test]
fn a_crash_with_the_next_segment_created_ahead_loses_nothing_acknowledged() {
    // The live segment's unsynced tail may go in a machine crash, and the new segment be
    // empty or torn in its header: the database opens (nothing was acknowledged as
    // durable); after a process crash every write is back.
    for (keep_all, mode) in [
        (true, CrashMode::KeepAll),
        (false, CrashMode::DropUnsynced),
        (false, CrashMode::TearUnsynced(7)),
        (false, CrashMode::TearUnsynced(12345)),
    ] {
        let fs = MemFs::new();
        let (db, o, _) = half_full(&fs);
        db.abandon();
        fs.crash(mode);
        let db = Db::open(Path::new("/db"), o).expect("reopen after crash");
        let n = db.scan::<&[u8]>(..).count();
        if keep_all {
            assert_eq!(n, N as usize);
        }
        db.close().expect("close");
    }
}

#[test]
fn writes_go_on_into_the_segment_created_ahead() {
    let fs = MemFs::new();
    let (db, o, ahead) = half_full(&fs);
    for i in N..2 * N {
        db.put(key(i), vec![b'w'; 100]).expect("put");
    }
    let stats = db.stats();
    assert!(stats.flushes + stats.immutable_memtables >= 1, "{stats:?}");
    // The switch wrote into the segment created ahead (a 16-byte header until then).
    assert!(fs.file_len(&ahead).expect("segment") > 16 * 1024);
    // As if the process were killed: the writes after the switch come back from the
    // prepared segment.
    db.abandon();
    let db = Db::open(Path::new("/db"), o.clone()).expect("reopen");
    assert_eq!(db.scan::<&[u8]>(..).count(), 2 * N as usize);
    assert_eq!(db.get(key(2 * N - 1)).expect("get"), Some(vec![b'w'; 100]));
    db.close().expect("close");
    // A clean close removes a segment created ahead and never written to.
    let db = Db::open(Path::new("/db"), o).expect("reopen");
    db.close().expect("close");
    assert!(logs(&fs).len() <= 1, "{:?}", logs(&fs));
}
