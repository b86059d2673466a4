//! Faults injected under the TSDB: a failed WAL fsync, no space for the WAL, a torn WAL
//! tail at a crash, and corrupt bytes in a WAL segment.

use std::path::Path;
use std::sync::Arc;

use strata_kv::fs::{CrashMode, MemFs};
use strata_tsdb::{Error, FsyncPolicy, Labels, Matcher, Options, Tsdb};

fn options(fs: &MemFs) -> Options {
    let mut o = Options {
        wal_fsync: FsyncPolicy::Always,
        background: false,
        ..Options::default()
    };
    o.kv.fs = Arc::new(fs.clone());
    o
}

fn series(i: u32) -> Labels {
    Labels::from_pairs([("__name__", "m"), ("i", &i.to_string())]).unwrap()
}

fn append(db: &Tsdb, i: u32, t: i64) -> Result<(), Error> {
    let mut app = db.appender();
    app.add(series(i), t, t as f64);
    app.commit().map(|_| ())
}

fn count(db: &Tsdb) -> usize {
    db.querier(i64::MIN, i64::MAX)
        .select(&[Matcher::equal("__name__", "m")])
        .unwrap()
        .iter()
        .map(|s| s.samples.len())
        .sum()
}

#[test]
fn failed_fsync_makes_the_store_read_only_and_reopen_recovers_what_was_durable() {
    let fs = MemFs::new();
    let dir = Path::new("/t");
    let db = Tsdb::open(dir, options(&fs)).unwrap();
    for t in 0..10 {
        append(&db, 1, t * 1000).unwrap();
    }
    fs.set_fail_sync(true);
    let err = append(&db, 1, 10_000).unwrap_err();
    assert!(
        !matches!(err, Error::ReadOnly(_)),
        "the failing commit reports the I/O error: {err}"
    );
    fs.set_fail_sync(false);
    // Nothing later is acknowledged, even though fsync works again.
    assert!(matches!(append(&db, 1, 11_000), Err(Error::ReadOnly(_))));
    assert!(matches!(db.flush(), Err(Error::ReadOnly(_))));
    // Reads keep working.
    assert!(count(&db) >= 10);
    db.abandon();
    fs.crash(CrashMode::DropUnsynced);
    let db = Tsdb::open(dir, options(&fs)).unwrap();
    assert_eq!(count(&db), 10, "exactly the acknowledged samples survive");
    append(&db, 1, 12_000).unwrap();
    db.close().unwrap();
}

#[test]
fn no_space_for_the_wal_fails_commits_until_space_returns() {
    let fs = MemFs::new();
    let dir = Path::new("/t");
    let db = Tsdb::open(dir, options(&fs)).unwrap();
    append(&db, 1, 1000).unwrap();
    fs.set_no_space(true);
    for t in [2000, 3000] {
        let err = append(&db, 2, t).unwrap_err().to_string().to_lowercase();
        assert!(err.contains("space") || err.contains("enospc"), "{err}");
    }
    assert_eq!(
        count(&db),
        1,
        "reads keep working, nothing half-written is visible"
    );
    fs.set_no_space(false);
    append(&db, 3, 4000).unwrap(); // resumes in a new segment
    append(&db, 2, 5000).unwrap(); // series 2 failed to be logged before: logged now
    assert_eq!(count(&db), 3);
    db.abandon();
    fs.crash(CrashMode::DropUnsynced);
    let db = Tsdb::open(dir, options(&fs)).unwrap();
    assert_eq!(count(&db), 3, "every acknowledged commit survives a crash");
    append(&db, 2, 2000).unwrap();
    assert_eq!(count(&db), 4);
}

#[test]
fn torn_wal_tail_keeps_every_synced_commit() {
    for seed in 1..20u64 {
        let fs = MemFs::new();
        let dir = Path::new("/t");
        let mut o = options(&fs);
        o.wal_fsync = FsyncPolicy::Never;
        let db = Tsdb::open(dir, o.clone()).unwrap();
        for t in 0..5 {
            append(&db, 1, t * 1000).unwrap();
        }
        db.flush().unwrap(); // durable point: 5 samples persisted
        for t in 5..40 {
            append(&db, (t % 3) as u32, t * 1000).unwrap();
        }
        db.abandon();
        fs.crash(CrashMode::TearUnsynced(seed));
        let db = Tsdb::open(dir, o).unwrap();
        let n = count(&db);
        assert!((5..=40).contains(&n), "seed {seed}: {n} samples");
        // What survived is a prefix of the commits: timestamps 0..n-1.
        let ts: Vec<i64> = db
            .querier(i64::MIN, i64::MAX)
            .select(&[Matcher::equal("__name__", "m")])
            .unwrap()
            .iter()
            .flat_map(|s| s.samples.iter().map(|(t, _)| *t))
            .collect();
        let mut ts = ts;
        ts.sort_unstable();
        assert_eq!(
            ts,
            (0..n as i64).map(|t| t * 1000).collect::<Vec<_>>(),
            "seed {seed}"
        );
    }
}

#[test]
fn corrupt_wal_record_before_the_tail_is_an_error_naming_the_segment() {
    let fs = MemFs::new();
    let dir = Path::new("/t");
    let db = Tsdb::open(dir, options(&fs)).unwrap();
    for t in 0..20 {
        append(&db, 1, t * 1000).unwrap();
    }
    db.abandon();
    let seg = Path::new("/t/wal/00000001.log");
    // A byte inside the first samples record, well before the end.
    fs.corrupt_byte(seg, 40).unwrap();
    let err = Tsdb::open(dir, options(&fs)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("00000001.log"), "{msg}");
}

#[test]
fn series_lists_only_series_with_data_in_the_range() {
    let fs = MemFs::new();
    let db = Tsdb::open(Path::new("/t"), options(&fs)).unwrap();
    append(&db, 1, 1_000).unwrap();
    append(&db, 2, 50_000).unwrap();
    let m = [Matcher::equal("__name__", "m")];
    for flushed in [false, true] {
        let got = db.querier(40_000, 60_000).series(&m).unwrap();
        assert_eq!(got, vec![series(2)], "flushed: {flushed}");
        let got = db.querier(0, 60_000).series(&m).unwrap();
        assert_eq!(got.len(), 2);
        assert!(db.querier(60_001, 70_000).series(&m).unwrap().is_empty());
        db.flush().unwrap();
    }
}
