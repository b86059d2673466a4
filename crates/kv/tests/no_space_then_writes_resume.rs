//! A full disk is a recoverable error (as RocksDB's no-space background error with
//! auto-resume): while there is no space, writes fail with `Error::NoSpace` and reads keep
//! working; once space returns, the next write (or `Db::resume`) starts a new WAL segment
//! or manifest if one was cut short, retries the failed flush, and succeeds. Nothing
//! acknowledged is lost, also across a crash at any of these moments. A failed fsync stays
//! permanent (`faults_make_the_db_read_only`).

mod common;

use std::path::Path;
use strata_kv::fs::{CrashMode, MemFs};
use strata_kv::{Db, Error, Options, WriteBatch, WriteOptions};

fn put_sync(db: &Db, k: &str, v: &str) -> Result<(), Error> {
    let mut b = WriteBatch::new();
    b.put(k, v);
    db.write(b, WriteOptions { sync: true })
}

fn value(i: usize) -> String {
    format!("value-{i:05}-{}", "v".repeat(40))
}

/// Every key `k{i}` for `i` in `range` has its value.
fn assert_all(db: &Db, range: std::ops::Range<usize>) {
    for i in range {
        assert_eq!(
            db.get(format!("k{i:05}")).expect("get"),
            Some(value(i).into_bytes()),
            "k{i:05}"
        );
    }
}

/// Crashes `fs` (dropping what was not synced), reopens, and checks `range`.
fn reopen_and_check(dir: &Path, fs: &MemFs, range: std::ops::Range<usize>) -> Db {
    fs.crash(CrashMode::DropUnsynced);
    let db = Db::open(dir, common::small_options(fs)).expect("reopen");
    assert_all(&db, range);
    db
}

#[test]
fn wal_append_on_a_full_disk_fails_then_writes_resume_when_space_returns() {
    let dir = Path::new("/db");
    let fs = MemFs::new();
    let db = Db::open(dir, common::small_options(&fs)).expect("open");
    for i in 0..50 {
        put_sync(&db, &format!("k{i:05}"), &value(i)).expect("put");
    }
    fs.set_space_left(Some(10)); // the next record is cut short: a partial record on disk
    let err = put_sync(&db, "during", &"z".repeat(100)).expect_err("ENOSPC");
    assert!(matches!(err, Error::NoSpace(_)), "{err}");
    assert!(err.to_string().contains("resume"), "{err}");
    // Still full: writes keep failing with the same clear error, reads keep working.
    for _ in 0..3 {
        let err = put_sync(&db, "still", "x").expect_err("still full");
        assert!(matches!(err, Error::NoSpace(_)), "{err}");
    }
    assert!(matches!(db.resume(), Err(Error::NoSpace(_))));
    assert_all(&db, 0..50);
    assert_eq!(db.get("during").expect("get"), None);
    assert!(db.stats().background_error.is_some());
    // Space returns: the next write resumes by itself.
    fs.set_no_space(false);
    for i in 50..100 {
        put_sync(&db, &format!("k{i:05}"), &value(i)).expect("writes resume");
    }
    assert!(db.stats().background_error.is_none());
    assert_all(&db, 0..100);
    assert_eq!(db.get("during").expect("get"), None);
    assert_eq!(db.get("still").expect("get"), None);
    db.abandon();
    let db = reopen_and_check(dir, &fs, 0..100);
    assert_eq!(db.get("during").expect("get"), None);
    db.close().expect("close");
}

#[test]
fn flush_on_a_full_disk_fails_then_is_retried_when_space_returns() {
    let dir = Path::new("/db");
    let fs = MemFs::new();
    let db = Db::open(dir, common::small_options(&fs)).expect("open");
    for i in 0..100 {
        put_sync(&db, &format!("k{i:05}"), &value(i)).expect("put");
    }
    fs.set_no_space(true);
    let err = db.flush().expect_err("flush on a full disk fails");
    assert!(err.is_no_space(), "{err}");
    let err = put_sync(&db, "x", "y").expect_err("writes refused while full");
    assert!(matches!(err, Error::NoSpace(_)), "{err}");
    assert_all(&db, 0..100);
    fs.set_no_space(false);
    db.resume().expect("resume once space returns");
    db.flush().expect("the flush succeeds now");
    assert!(db.stats().files_per_level.iter().sum::<usize>() > 0);
    for i in 100..150 {
        put_sync(&db, &format!("k{i:05}"), &value(i)).expect("put");
    }
    assert_eq!(db.get("x").expect("get"), None);
    db.abandon();
    reopen_and_check(dir, &fs, 0..150).close().expect("close");
}

#[test]
fn compaction_on_a_full_disk_fails_then_runs_when_space_returns() {
    let dir = Path::new("/db");
    let fs = MemFs::new();
    let db = Db::open(dir, common::small_options(&fs)).expect("open");
    for _ in 0..4 {
        for i in 0..200 {
            put_sync(&db, &format!("k{i:05}"), &value(i)).expect("put");
        }
        db.flush().expect("flush");
    }
    fs.set_no_space(true);
    let err = db
        .compact_range::<&[u8]>(..)
        .expect_err("compaction on a full disk fails");
    assert!(err.is_no_space(), "{err}");
    assert_all(&db, 0..200);
    fs.set_no_space(false);
    db.compact_range::<&[u8]>(..)
        .expect("compaction once space returns");
    put_sync(&db, "after", "1").expect("writes resume");
    assert_all(&db, 0..200);
    db.abandon();
    let db = reopen_and_check(dir, &fs, 0..200);
    assert_eq!(db.get("after").expect("get"), Some(b"1".to_vec()));
}

/// The disk fills at every byte offset of a flush (table, directory, manifest edit): the
/// flush fails, writes resume once space returns, and a crash at that moment or after the
/// resumed writes loses nothing acknowledged.
#[test]
fn disk_full_at_every_point_of_a_flush_then_resume_loses_nothing() {
    let dir = Path::new("/db");
    let mut failures = 0;
    for budget in (0..6_000).step_by(97) {
        let fs = MemFs::new();
        let db = Db::open(dir, common::small_options(&fs)).expect("open");
        for i in 0..60 {
            put_sync(&db, &format!("k{i:05}"), &value(i)).expect("put");
        }
        fs.set_space_left(Some(budget));
        let flushed = db.flush();
        // A crash right now (the disk still full) recovers every acknowledged write.
        let files = common::snapshot_files(&fs, CrashMode::DropUnsynced);
        let copy = common::restore_files(dir, &files);
        let reopened = Db::open(dir, common::small_options(&copy)).expect("reopen after crash");
        assert_all(&reopened, 0..60);
        reopened.close().expect("close");
        if flushed.is_err() {
            failures += 1;
            assert!(
                flushed.as_ref().is_err_and(|e| e.is_no_space()),
                "{flushed:?}"
            );
            assert_all(&db, 0..60);
        }
        fs.set_no_space(false);
        for i in 60..80 {
            put_sync(&db, &format!("k{i:05}"), &value(i)).expect("writes resume");
        }
        db.flush().expect("flush after space returns");
        assert_all(&db, 0..80);
        db.abandon();
        let db = reopen_and_check(dir, &fs, 0..80);
        put_sync(&db, "k99999", "x").expect("writable after reopen");
        db.close().expect("close");
    }
    assert!(
        failures > 10,
        "the budgets never failed a flush ({failures})"
    );
}

#[test]
fn a_failed_fsync_is_not_resumed() {
    let dir = Path::new("/db");
    let fs = MemFs::new();
    let db = Db::open(dir, common::small_options(&fs)).expect("open");
    put_sync(&db, "a", "1").expect("put");
    fs.set_fail_sync(true);
    put_sync(&db, "b", "2").expect_err("fsync fails");
    fs.set_fail_sync(false);
    assert!(matches!(db.resume(), Err(Error::ReadOnly(_))));
    assert!(matches!(put_sync(&db, "c", "3"), Err(Error::ReadOnly(_))));
    assert_eq!(db.get("a").expect("get"), Some(b"1".to_vec()));
}

#[test]
fn resume_without_an_error_is_a_no_op() {
    let fs = MemFs::new();
    let db = Db::open(
        Path::new("/db"),
        Options {
            fs: std::sync::Arc::new(fs.clone()),
            ..Options::default()
        },
    )
    .expect("open");
    db.resume().expect("nothing to resume");
    db.put("a", "1").expect("put");
    assert_eq!(db.get("a").expect("get"), Some(b"1".to_vec()));
}
