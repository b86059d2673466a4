//! A flipped byte in a table, the manifest or the WAL is reported as `Corruption` naming the
//! file; never a panic, never a wrong value.

mod common;

use std::path::Path;
use strata_kv::fs::{CrashMode, MemFs};
use strata_kv::{Db, Error, WalRecoveryMode};

fn fill(db: &Db, n: usize) {
    for i in 0..n {
        db.put(
            format!("key{i:05}"),
            format!("value-{i}-{}", "v".repeat(i % 50)),
        )
        .expect("put");
    }
}

fn expect_corruption_naming(err: Error, suffix: &str) {
    match &err {
        Error::Corruption { file, .. } => {
            assert!(
                file.contains(suffix),
                "error names {file}, expected *{suffix}: {err}"
            )
        }
        other => panic!("expected corruption in *{suffix}, got {other}"),
    }
}

#[test]
fn flipped_table_bytes_are_detected_by_reads() {
    let dir = Path::new("/db");
    let fs = MemFs::new();
    let db = Db::open(dir, common::small_options(&fs)).expect("open");
    fill(&db, 300);
    db.flush().expect("flush");
    let sst = common::find_file(&fs, ".sst").expect("table");
    let len = fs.file_len(&sst).expect("len");
    // Flip bytes across the whole table (data blocks, index, filter, properties, footer),
    // reopen, and read everything: each read is right or a Corruption naming the table.
    drop(db);
    let files = common::snapshot_files(&fs, CrashMode::KeepAll);
    let mut detected = 0;
    for offset in (0..len).step_by(37) {
        let fs = common::restore_files(dir, &files);
        fs.corrupt_byte(&sst, offset).expect("corrupt");
        let db = match Db::open(dir, common::small_options(&fs)) {
            Ok(db) => db,
            Err(e) => {
                expect_corruption_naming(e, ".sst");
                detected += 1;
                continue;
            }
        };
        let mut saw_error = false;
        for i in 0..300 {
            match db.get(format!("key{i:05}")) {
                Ok(v) => assert_eq!(
                    v,
                    Some(format!("value-{i}-{}", "v".repeat(i % 50)).into_bytes()),
                    "wrong value after flipping byte {offset}"
                ),
                Err(e) => {
                    expect_corruption_naming(e, ".sst");
                    saw_error = true;
                }
            }
        }
        for item in db.scan::<&[u8]>(..) {
            if let Err(e) = item {
                expect_corruption_naming(e, ".sst");
                saw_error = true;
                break;
            }
        }
        detected += usize::from(saw_error);
        db.abandon();
    }
    assert!(detected > 0);
}

/// Tables read through a memory mapping (`Options::mmap_reads`) checksum every block as
/// read ones do: a byte flipped on disk in a data block is a `Corruption` naming the
/// table, for point reads and scans, never a wrong value.
#[test]
fn flipped_table_bytes_are_detected_through_a_mapping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let options = || {
        let mut o = strata_kv::Options {
            fs: std::sync::Arc::new(strata_kv::fs::PosixFs),
            write_buffer_size: 16 * 1024,
            mmap_reads: true,
            ..strata_kv::Options::default()
        };
        o.table.block_size = 512;
        o
    };
    let db = Db::open(&path, options()).expect("open");
    fill(&db, 300);
    // Settled: reopening starts no compaction that would rewrite the table.
    db.compact_range::<&[u8]>(..).expect("compact");
    drop(db);
    let sst = std::fs::read_dir(&path)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .max_by_key(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .expect("table");
    // Inside the first data blocks (the table starts with them).
    for offset in [10u64, 700, 1500] {
        let mut bytes = std::fs::read(&sst).expect("read");
        bytes[offset as usize] ^= 0x40;
        std::fs::write(&sst, &bytes).expect("write");
        let db = Db::open(&path, options()).expect("open");
        let mut errors = 0;
        for i in 0..300 {
            match db.get(format!("key{i:05}")) {
                Ok(v) => assert_eq!(
                    v,
                    Some(format!("value-{i}-{}", "v".repeat(i % 50)).into_bytes()),
                    "wrong value after flipping byte {offset}"
                ),
                Err(e) => {
                    expect_corruption_naming(e, ".sst");
                    errors += 1;
                }
            }
        }
        assert!(errors > 0, "flip at {offset} not detected by gets");
        // Detected through the mapping, not through the fallback to reads.
        assert!(db.stats().table_cache.mapped_tables > 0);
        let scan_error = db.scan::<&[u8]>(..).find_map(|item| item.err());
        expect_corruption_naming(scan_error.expect("scan detects the flip"), ".sst");
        db.abandon();
        bytes[offset as usize] ^= 0x40;
        std::fs::write(&sst, &bytes).expect("restore");
    }
}

#[test]
fn flipped_manifest_byte_fails_open_naming_the_manifest() {
    let dir = Path::new("/db");
    let fs = MemFs::new();
    let db = Db::open(dir, common::small_options(&fs)).expect("open");
    for _ in 0..3 {
        fill(&db, 100);
        db.flush().expect("flush");
    }
    db.close().expect("close");
    let files = common::snapshot_files(&fs, CrashMode::KeepAll);
    let manifest = fs
        .paths()
        .into_iter()
        .find(|p| p.to_string_lossy().contains("MANIFEST-"))
        .expect("manifest");
    let len = fs.file_len(&manifest).expect("len");
    // Every byte of the snapshot record (all but the torn-tail-tolerant last record) and
    // the header matters; with only one record (a snapshot), damage is a tolerated tail or
    // an error, never silent acceptance of a changed table set.
    for offset in 0..len {
        let fs = common::restore_files(dir, &files);
        fs.corrupt_byte(&manifest, offset).expect("corrupt");
        match Db::open(dir, common::small_options(&fs)) {
            Err(e) => expect_corruption_naming(e, "MANIFEST-"),
            Ok(db) => panic!(
                "opened with a flipped manifest byte at {offset}; stats {:?}",
                db.stats().files_per_level
            ),
        }
    }
}

#[test]
fn flipped_wal_byte_in_an_earlier_record_fails_open_in_both_modes() {
    let dir = Path::new("/db");
    let fs = MemFs::new();
    let mut o = common::small_options(&fs);
    o.write_buffer_size = 1 << 20;
    let db = Db::open(dir, o.clone()).expect("open");
    fill(&db, 20);
    db.abandon();
    let files = common::snapshot_files(&fs, CrashMode::KeepAll);
    let wal = common::find_file(&fs, ".log").expect("wal");
    for mode in [WalRecoveryMode::TolerateTail, WalRecoveryMode::Strict] {
        let fs = common::restore_files(dir, &files);
        fs.corrupt_byte(&wal, 40).expect("corrupt");
        let mut o = common::small_options(&fs);
        o.wal_recovery = mode;
        let err = Db::open(dir, o).err().expect("open must fail");
        expect_corruption_naming(err, ".log");
    }
    // The same flip in the last record is a damaged tail: tolerated (earlier records kept)
    // or refused in strict mode.
    let last = fs.file_len(&wal).expect("len") - 3;
    let fs2 = common::restore_files(dir, &files);
    fs2.corrupt_byte(&wal, last).expect("corrupt");
    let mut o = common::small_options(&fs2);
    o.wal_recovery = WalRecoveryMode::Strict;
    expect_corruption_naming(
        Db::open(dir, o.clone()).err().expect("strict fails"),
        ".log",
    );
    o.wal_recovery = WalRecoveryMode::TolerateTail;
    let db = Db::open(dir, o).expect("tolerant open");
    let want = format!("value-18-{}", "v".repeat(18)).into_bytes();
    assert_eq!(db.get("key00018").expect("get"), Some(want));
    assert_eq!(db.get("key00019").expect("get"), None);
    db.put("after", "recovery")
        .expect("writes work after a cut tail");
}

#[test]
fn second_open_of_a_locked_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path(), strata_kv::Options::default()).expect("open");
    match Db::open(dir.path(), strata_kv::Options::default()) {
        Err(Error::Locked(p)) => assert_eq!(p, dir.path()),
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("second open succeeded"),
    }
    db.close().expect("close");
    Db::open(dir.path(), strata_kv::Options::default())
        .expect("open after close")
        .close()
        .expect("close");
}
