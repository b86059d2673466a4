//! Crash recovery: for every prefix length of the WAL (a crash can cut the file anywhere),
//! reopening yields exactly the batches whose records are complete in that prefix, each
//! batch all or nothing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use strata_kv::batch::BatchEntry;
use strata_kv::fs::{CrashMode, FileSystem, MemFs};
use strata_kv::wal::{LogReader, WAL_MAGIC};
use strata_kv::{Db, Options, WalRecoveryMode, WriteBatch, WriteOptions};

const BATCHES: usize = 12;

/// Batch `i` writes keys `b{i}-{j}` and overwrites the shared key `last` with `i`, so the
/// state after `n` batches is unique for each `n`.
fn batch(i: usize) -> WriteBatch {
    let mut b = WriteBatch::new();
    for j in 0..(i % 4 + 1) {
        b.put(
            format!("b{i:02}-{j}"),
            format!("value {i} {j} {}", "x".repeat(i * 7)),
        );
    }
    b.put("last", format!("{i}"));
    if i > 2 {
        b.delete(format!("b{:02}-0", i - 2));
    }
    if i > 5 {
        // Keys b{i-5}-1 and b{i-5}-2 (if written) go in one range delete.
        b.delete_range(format!("b{:02}-1", i - 5), format!("b{:02}-3", i - 5));
    }
    b
}

fn expected_after(n: usize) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = BTreeMap::new();
    for i in 0..n {
        for e in batch(i).iter() {
            match e {
                BatchEntry::Put { key, value } => {
                    m.insert(key.to_vec(), value.to_vec());
                }
                BatchEntry::Delete { key } => {
                    m.remove(key);
                }
                BatchEntry::DeleteRange { start, end } => {
                    m.retain(|k: &Vec<u8>, _| !(k.as_slice() >= start && k.as_slice() < end));
                }
            }
        }
    }
    m
}

fn contents(db: &Db) -> BTreeMap<Vec<u8>, Vec<u8>> {
    db.scan::<&[u8]>(..)
        .collect::<Result<_, _>>()
        .expect("scan")
}

fn opts(fs: &MemFs, mode: WalRecoveryMode) -> Options {
    let mut o = common::small_options(fs);
    o.write_buffer_size = 1 << 20;
    o.wal_recovery = mode;
    o
}

#[test]
fn every_wal_prefix_recovers_exactly_the_complete_batches() {
    let dir = Path::new("/db");
    let fs = MemFs::new();
    let db = Db::open(dir, opts(&fs, WalRecoveryMode::TolerateTail)).expect("open");
    for i in 0..BATCHES {
        db.write(batch(i), WriteOptions::default()).expect("write");
    }
    db.abandon();
    let files = common::snapshot_files(&fs, CrashMode::KeepAll);
    let wal = common::find_file(&fs, ".log").expect("a WAL segment");
    let wal_bytes = fs.read_file(&wal).expect("read wal");

    // Where each record ends.
    let mut ends = Vec::new();
    let mut r = LogReader::open(&fs, &wal, WAL_MAGIC, WalRecoveryMode::Strict).expect("reader");
    let mut starts = Vec::new();
    while r.next_record().expect("record").is_some() {
        starts.push(r.last_record_offset());
    }
    assert_eq!(starts.len(), BATCHES);
    ends.extend(starts.iter().skip(1).copied());
    ends.push(wal_bytes.len() as u64);

    for len in 0..=wal_bytes.len() {
        let fs = common::restore_files(dir, &files);
        fs.truncate(&wal, len as u64).expect("truncate");
        let complete = ends.iter().filter(|&&e| e <= len as u64).count();
        let db = Db::open(dir, opts(&fs, WalRecoveryMode::TolerateTail))
            .unwrap_or_else(|e| panic!("open with WAL cut at {len}: {e}"));
        assert_eq!(contents(&db), expected_after(complete), "WAL cut at {len}");
        // Reopening again (after recovery rewrote the state) changes nothing.
        db.close().expect("close");
        let db = Db::open(dir, opts(&fs, WalRecoveryMode::TolerateTail)).expect("reopen");
        assert_eq!(
            contents(&db),
            expected_after(complete),
            "second open, cut at {len}"
        );
        db.close().expect("close");

        // Strict refuses a cut inside a record (or the header), accepts a cut on a boundary.
        let fs = common::restore_files(dir, &files);
        fs.truncate(&wal, len as u64).expect("truncate");
        let on_boundary =
            len as u64 == *starts.first().expect("records") || ends.contains(&(len as u64));
        let strict = Db::open(dir, opts(&fs, WalRecoveryMode::Strict));
        match strict {
            Ok(db) => {
                assert!(
                    on_boundary,
                    "strict accepted a WAL cut inside a record at {len}"
                );
                assert_eq!(contents(&db), expected_after(complete));
            }
            Err(e) => assert!(!on_boundary, "strict refused a clean cut at {len}: {e}"),
        }
    }
}

#[test]
fn torn_unsynced_tail_keeps_every_synced_batch() {
    let dir = Path::new("/db");
    for seed in 1..40u64 {
        let fs = MemFs::new();
        let db = Db::open(dir, opts(&fs, WalRecoveryMode::TolerateTail)).expect("open");
        let synced = (seed % 7) as usize + 1;
        for i in 0..BATCHES {
            db.write(batch(i), WriteOptions { sync: i < synced })
                .expect("write");
        }
        db.abandon();
        fs.crash(CrashMode::TearUnsynced(seed));
        let db = Db::open(dir, opts(&fs, WalRecoveryMode::TolerateTail)).expect("reopen");
        let got = contents(&db);
        let n = (0..=BATCHES)
            .find(|&n| expected_after(n) == got)
            .unwrap_or_else(|| panic!("seed {seed}: state is not a prefix of the batches"));
        assert!(
            n >= synced,
            "seed {seed}: lost synced batches ({n} < {synced})"
        );
    }
}
