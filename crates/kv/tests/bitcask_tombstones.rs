//! Deleted keys take no keydir memory, yet their tombstone records must keep shadowing
//! older records through merges that do not cover every file, and through reopens.

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
    assert_eq!(s.tombstones, 0, "a deleted key is not kept in memory");
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

#[test]
fn deletes_free_keydir_memory() {
    let fs = MemFs::new();
    let dir = Path::new("/bc");
    let db = Bitcask::open(dir, opts(&fs, false)).expect("open");
    for i in 0..20_000 {
        db.put(format!("key-{i:06}"), b"v").expect("put");
    }
    let full = db.stats();
    for i in 0..20_000 {
        db.delete(format!("key-{i:06}")).expect("delete");
    }
    let s = db.stats();
    assert_eq!((s.keys, s.tombstones), (0, 0));
    assert!(s.keydir_memory_bytes <= full.keydir_memory_bytes);
    // Reopen: recovery holds the tombstones while it runs, then gives their room back.
    db.close().expect("close");
    let db = Bitcask::open(dir, opts(&fs, false)).expect("reopen");
    let s = db.stats();
    assert_eq!((s.keys, s.tombstones), (0, 0));
    assert!(
        s.keydir_memory_bytes < full.keydir_memory_bytes / 4,
        "{} vs {}",
        s.keydir_memory_bytes,
        full.keydir_memory_bytes
    );
}
