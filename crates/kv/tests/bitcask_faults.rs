//! Faults under the Bitcask engine: a full disk (also a short write that leaves part of a
//! record, and at every byte of a roll-over) fails writes with `Error::NoSpace` while reads
//! keep working, and writes resume once space returns, losing nothing acknowledged, also
//! across a crash; a failed fsync is permanent (read-only); EIO on reading one data file
//! fails only the reads that need it.

use std::path::Path;
use std::sync::Arc;

use strata_kv::bitcask::{Bitcask, BitcaskOptions, MergeTrigger};
use strata_kv::fs::{CrashMode, FileSystem, MemFs};
use strata_kv::{Error, WriteBatch, WriteOptions};

fn opts(fs: &MemFs) -> BitcaskOptions {
    BitcaskOptions {
        fs: Arc::new(fs.clone()),
        max_file_size: 4096,
        merge_trigger: MergeTrigger {
            auto: false,
            ..MergeTrigger::default()
        },
        ..BitcaskOptions::default()
    }
}

fn value(i: usize) -> String {
    format!("value-{i:05}-{}", "b".repeat(30))
}

fn put_sync(db: &Bitcask, k: &str, v: &str) -> Result<(), Error> {
    let mut b = WriteBatch::new();
    b.put(k, v);
    db.write(b, WriteOptions { sync: true })
}

fn assert_all(db: &Bitcask, range: std::ops::Range<usize>) {
    for i in range {
        assert_eq!(
            db.get(format!("k{i:05}")).expect("get"),
            Some(value(i).into_bytes()),
            "k{i:05}"
        );
    }
}

fn reopen(dir: &Path, fs: &MemFs) -> Bitcask {
    fs.crash(CrashMode::DropUnsynced);
    Bitcask::open(dir, opts(fs)).expect("reopen")
}

#[test]
fn short_write_on_a_full_disk_fails_then_writes_resume() {
    let dir = Path::new("/bc");
    let fs = MemFs::new();
    let db = Bitcask::open(dir, opts(&fs)).expect("open");
    for i in 0..20 {
        put_sync(&db, &format!("k{i:05}"), &value(i)).expect("put");
    }
    fs.set_space_left(Some(7)); // part of the next record lands: a partial record
    let err = put_sync(&db, "during", &"z".repeat(200)).expect_err("ENOSPC");
    assert!(matches!(err, Error::NoSpace(_)), "{err}");
    // A batch while still full: refused whole.
    let mut b = WriteBatch::new();
    b.put("batch-a", "1");
    b.put("batch-b", "2");
    let err = db
        .write(b, WriteOptions { sync: true })
        .expect_err("still full");
    assert!(matches!(err, Error::NoSpace(_)), "{err}");
    assert!(matches!(db.resume(), Err(Error::NoSpace(_))));
    assert!(db.stats().background_error.is_some());
    assert_all(&db, 0..20);
    assert_eq!(db.get("during").expect("get"), None);
    // Space returns: the next write cuts the partial record off and goes on.
    fs.set_no_space(false);
    for i in 20..200 {
        put_sync(&db, &format!("k{i:05}"), &value(i)).expect("writes resume");
    }
    assert!(db.stats().background_error.is_none());
    assert_all(&db, 0..200);
    for k in ["during", "batch-a", "batch-b"] {
        assert_eq!(db.get(k).expect("get"), None, "{k}");
    }
    db.merge().expect("merge reads every file, the cut one too");
    assert_all(&db, 0..200);
    db.abandon();
    let db = reopen(dir, &fs);
    assert_all(&db, 0..200);
    assert_eq!(db.get("during").expect("get"), None);
    assert!(db.recovery_report().skipped.is_empty());
    db.close().expect("close");
}

/// The disk fills after every possible number of bytes while writes roll over data files:
/// each failed write is refused whole, writes resume once space returns, and a crash at
/// the worst moment, or after the resumed writes, loses nothing acknowledged.
#[test]
fn disk_full_at_every_byte_of_a_roll_over_then_resume_loses_nothing() {
    let dir = Path::new("/bc");
    let mut refused = 0;
    for budget in 0..300u64 {
        let fs = MemFs::new();
        let db = Bitcask::open(dir, opts(&fs)).expect("open");
        // Fill the active file nearly up to max_file_size, so the next writes roll over.
        let mut acked = 0;
        for i in 0..55 {
            put_sync(&db, &format!("k{i:05}"), &value(i)).expect("put");
            acked = i + 1;
        }
        fs.set_space_left(Some(budget));
        let mut failed = Vec::new();
        let first_new = acked;
        for i in first_new..first_new + 6 {
            match put_sync(&db, &format!("k{i:05}"), &value(i)) {
                Ok(()) if failed.is_empty() => acked = i + 1,
                Ok(()) => panic!("a write succeeded after one failed, with no space"),
                Err(e) => {
                    assert!(matches!(e, Error::NoSpace(_)), "budget {budget}: {e}");
                    failed.push(i);
                }
            }
        }
        refused += usize::from(!failed.is_empty());
        assert_all(&db, 0..acked);
        // A crash with the disk still full keeps every acknowledged write.
        let snapshot = MemFs::new();
        for p in fs.paths() {
            let data = fs.read_file(&p).expect("read");
            let mut w = snapshot.create(&p).expect("copy");
            w.append(&data).expect("copy");
            w.sync().expect("copy");
        }
        let copy = Bitcask::open(dir, opts(&snapshot)).expect("reopen a copy taken while full");
        assert_all(&copy, 0..acked);
        copy.close().expect("close copy");
        fs.set_no_space(false);
        for i in acked..acked + 40 {
            put_sync(&db, &format!("k{i:05}"), &value(i)).expect("writes resume");
        }
        assert_all(&db, 0..acked + 40);
        db.abandon();
        let db = reopen(dir, &fs);
        assert_all(&db, 0..acked + 40);
        db.close().expect("close");
    }
    assert!(
        refused > 200,
        "the budgets rarely failed a write ({refused})"
    );
}

#[test]
fn a_failed_fsync_is_permanent() {
    let dir = Path::new("/bc");
    let fs = MemFs::new();
    let db = Bitcask::open(dir, opts(&fs)).expect("open");
    put_sync(&db, "a", "1").expect("put");
    fs.set_fail_sync(true);
    put_sync(&db, "b", "2").expect_err("fsync fails");
    fs.set_fail_sync(false);
    assert!(matches!(db.resume(), Err(Error::ReadOnly(_))));
    assert!(matches!(put_sync(&db, "c", "3"), Err(Error::ReadOnly(_))));
    assert_eq!(db.get("a").expect("reads work"), Some(b"1".to_vec()));
}

#[test]
fn read_error_on_one_data_file_fails_only_reads_that_need_it() {
    let dir = Path::new("/bc");
    let fs = MemFs::new();
    let db = Bitcask::open(dir, opts(&fs)).expect("open");
    for i in 0..300 {
        put_sync(&db, &format!("k{i:05}"), &value(i)).expect("put");
    }
    // k00000 lives in the first data file; the last keys in a later one.
    let mut files: Vec<String> = fs
        .paths()
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.ends_with(".data"))
        .collect();
    files.sort();
    assert!(files.len() > 2, "{files:?}");
    let first = files[0].clone();
    fs.add_read_error(&first);
    let err = db.get("k00000").expect_err("EIO");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert_eq!(
        db.get("k00299").expect("other files"),
        Some(value(299).into_bytes())
    );
    put_sync(&db, "new", "1").expect("writes unaffected");
    fs.clear_read_faults();
    assert_all(&db, 0..300);
}
