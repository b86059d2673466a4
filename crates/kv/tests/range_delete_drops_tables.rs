//! `delete_range`: cheap for huge ranges, exact at the edges, respectful of snapshots, and
//! durable across reopen; whole tables inside the range are dropped without rewriting.

mod common;

use std::path::Path;
use std::time::Instant;
use strata_kv::fs::MemFs;
use strata_kv::{Db, Options};

fn options(fs: &MemFs) -> Options {
    let mut o = common::small_options(fs);
    o.write_buffer_size = 32 * 1024;
    o.compaction.disable_auto = true; // keep many tables, so that whole ones can be dropped
    o
}

fn table_bytes(fs: &MemFs) -> u64 {
    fs.paths()
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        // A table can go between the listing and the look-up (deleted in the background).
        .filter_map(|p| fs.file_len(p).ok())
        .sum()
}

/// "Days" of data: day d holds keys `day{d:03}/...`, written in day order like a TSDB.
fn fill_days(db: &Db, days: u32, per_day: u32) {
    for d in 0..days {
        for i in 0..per_day {
            db.put(format!("day{d:03}/{i:06}"), vec![b'v'; 200])
                .expect("put");
        }
        db.flush().expect("flush");
    }
}

#[test]
fn whole_tables_are_dropped_at_once_and_their_space_freed() {
    let dir = Path::new("/db");
    let fs = MemFs::new();
    let db = Db::open(dir, options(&fs)).expect("open");
    fill_days(&db, 10, 500);
    let before = table_bytes(&fs);
    let files_before = db.stats().files_per_level[0];
    let t = Instant::now();
    // Days 0..=6 go; day 7 onward stays.
    db.delete_range("day000/", "day007/").expect("delete_range");
    let took = t.elapsed();
    let after = table_bytes(&fs);
    assert!(
        after * 10 < before * 4,
        "space not freed at once: {before} -> {after} bytes ({files_before} tables before)"
    );
    assert!(db.stats().files_per_level[0] < files_before);
    eprintln!("dropped {} bytes of tables in {took:?}", before - after);
    assert_eq!(db.get("day006/000499").expect("get"), None);
    assert_eq!(db.get("day000/000000").expect("get"), None);
    assert_eq!(db.get("day007/000000").expect("get"), Some(vec![b'v'; 200]));
    assert_eq!(db.prefix("day00").count(), 3 * 500);
    assert_eq!(db.scan_rev::<&[u8]>(..).count(), 3 * 500);
}

#[test]
fn partial_tables_snapshots_and_reopen() {
    let dir = Path::new("/db");
    let fs = MemFs::new();
    let db = Db::open(dir, options(&fs)).expect("open");
    fill_days(&db, 4, 500);
    // Some recent writes still in the memtable, inside and outside the range.
    db.put("day001/999999", "memtable").expect("put");
    db.put("day003/999999", "memtable").expect("put");
    let snap = db.snapshot();
    // A range that starts and ends inside tables: nothing can be dropped whole.
    db.delete_range("day001/000100", "day002/000200")
        .expect("delete_range");
    db.put("day001/000150", "rewritten after the delete")
        .expect("put");

    let check = |db: &Db| {
        assert_eq!(db.get("day001/000099").expect("get"), Some(vec![b'v'; 200]));
        assert_eq!(db.get("day001/000100").expect("get"), None);
        assert_eq!(
            db.get("day001/000150").expect("get"),
            Some(b"rewritten after the delete".to_vec())
        );
        assert_eq!(db.get("day001/999999").expect("get"), None);
        assert_eq!(db.get("day002/000199").expect("get"), None);
        assert_eq!(db.get("day002/000200").expect("get"), Some(vec![b'v'; 200]));
        let n = db.scan::<&[u8]>(..).count();
        // 2001 written + 1 rewritten - (400 of day 1 + 1 memtable key + 200 of day 2).
        assert_eq!(n, 2002 - 601 + 1, "scan count");
        let rev = db.scan_rev::<&[u8]>(..).count();
        assert_eq!(rev, n, "reverse scan count");
    };
    check(&db);
    // The snapshot predates the delete: it still sees everything.
    assert_eq!(
        snap.get("day001/000100").expect("get"),
        Some(vec![b'v'; 200])
    );
    assert_eq!(snap.scan::<&[u8]>(..).count(), 2002);
    // Compaction keeps what the snapshot sees...
    db.compact_range::<&[u8]>(..).expect("compact");
    assert_eq!(
        snap.get("day002/000000").expect("get"),
        Some(vec![b'v'; 200])
    );
    check(&db);
    drop(snap);
    // ...and drops it once the snapshot is gone.
    let before = table_bytes(&fs);
    db.compact_range::<&[u8]>(..).expect("compact");
    let after = table_bytes(&fs);
    assert!(
        after < before,
        "compaction freed nothing: {before} -> {after}"
    );
    check(&db);
    db.close().expect("close");
    let db = Db::open(dir, options(&fs)).expect("reopen");
    check(&db);
}

#[test]
fn range_delete_survives_a_crash_before_flush() {
    let dir = Path::new("/db");
    let fs = MemFs::new();
    let db = Db::open(dir, options(&fs)).expect("open");
    fill_days(&db, 2, 300);
    db.delete_range("day000/000010", "day001/000010")
        .expect("delete_range");
    db.abandon();
    fs.crash(strata_kv::fs::CrashMode::KeepAll);
    let db = Db::open(dir, options(&fs)).expect("reopen");
    assert_eq!(db.get("day000/000009").expect("get"), Some(vec![b'v'; 200]));
    assert_eq!(db.get("day000/000010").expect("get"), None);
    assert_eq!(db.get("day001/000009").expect("get"), None);
    assert_eq!(db.scan::<&[u8]>(..).count(), 600 - 300);
}
