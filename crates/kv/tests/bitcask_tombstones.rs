//! Tombstones must keep shadowing older records through merges that do not cover every
//! file, and through reopens; and once a later write supersedes them they are dead bytes a
//! merge reclaims, so a store that deletes and re-inserts the same keys stays bounded.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_kv::bitcask::{Bitcask, BitcaskOptions, MergeTrigger};
use strata_kv::fs::{CrashMode, MemFs};

fn opts(fs: &MemFs, auto: bool) -> BitcaskOptions {
    BitcaskOptions {
        fs: Arc::new(fs.clone()),
        max_file_size: 4096,
        merge_trigger: MergeTrigger {
            auto,
            min_dead_ratio: 0.6,
            min_dead_bytes: u64::MAX,
        },
        merge_check_interval: Duration::from_millis(1),
        ..BitcaskOptions::default()
    }
}

#[test]
fn a_partial_merge_keeps_the_tombstone_that_shadows_an_unmerged_put() {
    let fs = MemFs::new();
    let dir = Path::new("/bc");
    let db = Bitcask::open(dir, opts(&fs, false)).expect("open");
    let v = vec![7u8; 100];
    // File A: the put of "k" and live filler (A stays below the merge threshold).
    db.put(b"k", &v).expect("put");
    for i in 0..60 {
        db.put(format!("live-{i:03}"), &v).expect("put");
    }
    // File B (and on): the delete of "k", then filler overwritten at once, so that B is
    // mostly dead and merged without A.
    for i in 0..60 {
        if i == 30 {
            db.delete(b"k").expect("delete");
        }
        db.put(format!("tmp-{i:03}"), &v).expect("put");
    }
    for i in 0..60 {
        db.put(format!("tmp-{i:03}"), b"x").expect("overwrite");
    }
    assert_eq!(db.get(b"k").expect("get"), None);
    let s = db.stats();
    assert_eq!(s.tombstones, 1);
    assert_eq!(s.keys, 120);
    db.close().expect("close");

    // Reopen with automatic merges: the mostly dead files are merged, the file of the put
    // is not.
    let db = Bitcask::open(dir, opts(&fs, true)).expect("reopen");
    let t = Instant::now();
    while db.stats().merges == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "no merge ran");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(db.get(b"k").expect("get"), None);
    db.abandon();
    fs.crash(CrashMode::KeepAll);

    let db = Bitcask::open(dir, opts(&fs, false)).expect("reopen after the merge");
    assert_eq!(db.get(b"k").expect("get"), None, "the old put came back");
    assert_eq!(db.stats().keys, 120);
    // A full merge drops the tombstone and the put; nothing comes back.
    db.merge().expect("merge");
    db.close().expect("close");
    let db = Bitcask::open(dir, opts(&fs, false)).expect("reopen after the full merge");
    assert_eq!(db.get(b"k").expect("get"), None);
    assert_eq!(db.stats().keys, 120);
    assert_eq!(db.stats().tombstones, 0);
}

/// Put and delete the same keys over and over next to a file that stays live (so no
/// automatic merge covers every file): the disk stays bounded. (With tombstones left out
/// of the keydir, a re-put could not mark the older tombstone dead, partial merges copied
/// every tombstone forward, and the store grew without bound.)
#[test]
fn delete_and_reinsert_churn_stays_bounded() {
    let fs = MemFs::new();
    let mut o = opts(&fs, true);
    o.merge_trigger.min_dead_ratio = 0.5;
    let db = Bitcask::open(Path::new("/bc"), o).expect("open");
    let v = vec![7u8; 100];
    for i in 0..30 {
        db.put(format!("anchor-{i:03}"), &v).expect("put");
    }
    let mut worst = 0;
    for round in 0..400 {
        for i in 0..20 {
            db.put(format!("k{i:03}"), &v).expect("put");
        }
        for i in 0..20 {
            db.delete(format!("k{i:03}")).expect("delete");
        }
        if round % 50 == 49 {
            // Let the merge thread catch up.
            let t = Instant::now();
            while db.stats().dead_bytes > 16 << 10 && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let s = db.stats();
            assert_eq!(s.keys, 30);
            worst = worst.max(s.live_bytes);
        }
    }
    // 30 anchors and 20 tombstones are ~4 KiB of records; 400 rounds wrote ~1.8 MiB.
    assert!(worst < 64 << 10, "live bytes grew to {worst}");
    assert_eq!(db.stats().tombstones, 20);
    // A full merge drops the tombstones and their entries.
    db.merge().expect("merge");
    let s = db.stats();
    assert_eq!((s.keys, s.tombstones), (30, 0));
    db.close().expect("close");
    let db = Bitcask::open(Path::new("/bc"), opts(&fs, false)).expect("reopen");
    let s = db.stats();
    assert_eq!((s.keys, s.tombstones), (30, 0));
    for i in 0..20 {
        assert_eq!(db.get(format!("k{i:03}")).expect("get"), None);
    }
}
