//! Faults injected through the filesystem: a failed fsync or a full disk stops writes with a
//! clear error (never a false acknowledgement), reads keep working, and reopening recovers
//! everything that was acknowledged. (After a full disk writes also resume without a
//! reopen once space returns: `no_space_then_writes_resume`.)

mod common;

use std::path::Path;
use strata_kv::fs::{CrashMode, MemFs};
use strata_kv::{Db, Error, WriteBatch, WriteOptions};

fn put_sync(db: &Db, k: &str, v: &str) -> Result<(), Error> {
    let mut b = WriteBatch::new();
    b.put(k, v);
    db.write(b, WriteOptions { sync: true })
}

#[test]
fn failed_wal_fsync_refuses_later_writes_and_keeps_acknowledged_ones() {
    let dir = Path::new("/db");
    let fs = MemFs::new();
    let db = Db::open(dir, common::small_options(&fs)).expect("open");
    for i in 0..50 {
        put_sync(&db, &format!("k{i:03}"), "durable").expect("put");
    }
    fs.set_fail_sync(true);
    let err = put_sync(&db, "k999", "lost").expect_err("sync must fail");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    fs.set_fail_sync(false);
    // The fsync failure may have dropped dirty pages: nothing after it is acknowledged.
    let err = db
        .put("later", "x")
        .expect_err("read-only after a failed fsync");
    assert!(matches!(err, Error::ReadOnly(_)), "{err}");
    assert_eq!(
        db.get("k007").expect("reads still work"),
        Some(b"durable".to_vec())
    );
    assert!(db.stats().background_error.is_some());
    db.abandon();
    fs.crash(CrashMode::DropUnsynced);
    let db = Db::open(dir, common::small_options(&fs)).expect("reopen");
    for i in 0..50 {
        assert_eq!(
            db.get(format!("k{i:03}")).expect("get"),
            Some(b"durable".to_vec())
        );
    }
    assert_eq!(db.get("later").expect("get"), None);
    db.put("later", "works again")
        .expect("writable after reopen");
}

#[test]
fn full_disk_during_flush_keeps_reads_working_and_loses_nothing() {
    let dir = Path::new("/db");
    let fs = MemFs::new();
    let db = Db::open(dir, common::small_options(&fs)).expect("open");
    for i in 0..100 {
        put_sync(&db, &format!("k{i:03}"), &"v".repeat(100)).expect("put");
    }
    fs.set_no_space(true);
    let err = db.flush().expect_err("flush on a full disk fails");
    // Which error depends on where ENOSPC hits first: the new WAL segment (unless the WAL
    // thread created it ahead, before the disk filled) or the table.
    assert!(
        matches!(
            err,
            Error::ReadOnly(_) | Error::Io { .. } | Error::NoSpace(_)
        ),
        "{err}"
    );
    assert!(
        db.put("x", "y").is_err(),
        "writes refused after a failed flush"
    );
    for i in 0..100 {
        assert_eq!(
            db.get(format!("k{i:03}")).expect("get"),
            Some("v".repeat(100).into_bytes())
        );
    }
    // No half-written table is left to confuse recovery.
    db.abandon();
    fs.set_no_space(false);
    fs.crash(CrashMode::DropUnsynced);
    let db = Db::open(dir, common::small_options(&fs)).expect("reopen once space returns");
    for i in 0..100 {
        assert_eq!(
            db.get(format!("k{i:03}")).expect("get"),
            Some("v".repeat(100).into_bytes())
        );
    }
}

#[test]
fn full_disk_during_wal_append_fails_the_write_not_the_reads() {
    let dir = Path::new("/db");
    let fs = MemFs::new();
    let db = Db::open(dir, common::small_options(&fs)).expect("open");
    put_sync(&db, "before", "1").expect("put");
    fs.set_space_left(Some(10)); // the next record is cut short: a torn tail on disk
    let err = put_sync(&db, "during", &"z".repeat(100)).expect_err("ENOSPC");
    assert!(matches!(err, Error::NoSpace(_)), "{err}");
    assert_eq!(db.get("before").expect("get"), Some(b"1".to_vec()));
    assert_eq!(db.get("during").expect("get"), None);
    db.abandon();
    fs.set_no_space(false);
    let db = Db::open(dir, common::small_options(&fs)).expect("reopen cuts the torn record");
    assert_eq!(db.get("before").expect("get"), Some(b"1".to_vec()));
    assert_eq!(db.get("during").expect("get"), None);
}

#[test]
fn read_error_on_one_table_fails_only_reads_that_need_it() {
    let dir = Path::new("/db");
    let fs = MemFs::new();
    let db = Db::open(dir, common::small_options(&fs)).expect("open");
    db.put("a", "in the first table").expect("put");
    db.flush().expect("flush");
    let first = common::find_file(&fs, ".sst").expect("table");
    db.put("b", "in the second table").expect("put");
    db.flush().expect("flush");
    fs.add_read_error(&first.to_string_lossy());
    let err = db.get("a").expect_err("EIO reading the first table");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert_eq!(
        db.get("b").expect("other table readable"),
        Some(b"in the second table".to_vec())
    );
    fs.clear_read_faults();
    assert_eq!(
        db.get("a").expect("readable again"),
        Some(b"in the first table".to_vec())
    );
}

#[test]
fn db_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Db>();
}
