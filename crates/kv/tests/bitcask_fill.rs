//! Space filled ahead of the active data file (on the real file system, the only one with
//! a background allocator): roll-over and close cut the zeros off, a crash leaves them for
//! recovery to cut, and no acknowledged record is lost either way.

use std::collections::BTreeMap;
use std::path::Path;
use strata_kv::bitcask::{Bitcask, BitcaskOptions, MergeTrigger};

fn opts() -> BitcaskOptions {
    BitcaskOptions {
        max_file_size: 1 << 20,
        merge_trigger: MergeTrigger {
            auto: false,
            ..MergeTrigger::default()
        },
        ..BitcaskOptions::default()
    }
}

fn data_file_lens(dir: &Path) -> BTreeMap<String, u64> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry"))
        .filter(|e| e.file_name().to_string_lossy().ends_with(".data"))
        .map(|e| {
            let len = e.metadata().expect("metadata").len();
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .collect()
}

fn value(i: u32) -> Vec<u8> {
    format!("value-{i:08}-").repeat(20).into_bytes()
}

fn write(db: &Bitcask, range: std::ops::Range<u32>) {
    for i in range {
        db.put(format!("key{i:06}"), value(i)).expect("put");
    }
}

fn check(db: &Bitcask, n: u32) {
    assert_eq!(db.keys().len(), n as usize);
    for i in 0..n {
        assert_eq!(
            db.get(format!("key{i:06}")).expect("get"),
            Some(value(i)),
            "key {i}"
        );
    }
}

#[test]
fn rolled_and_closed_files_hold_no_zeros_and_reopen_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Bitcask::open(dir.path(), opts()).expect("open");
    // ~250 B records: several roll-overs of 1 MiB files.
    write(&db, 0..12_000);
    let stats = db.stats();
    assert!(stats.files >= 3, "{stats:?}");
    db.close().expect("close");
    let db = Bitcask::open(dir.path(), opts()).expect("reopen");
    assert!(db.recovery_report().torn_tail.is_none());
    // Every file is as long as its records (the bytes the engine counts): no zeros.
    let on_disk: u64 = data_file_lens(dir.path()).values().sum();
    assert_eq!(on_disk, db.stats().disk_bytes);
    check(&db, 12_000);
    db.close().expect("close");
}

#[test]
fn a_crash_with_space_filled_ahead_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Bitcask::open(dir.path(), opts()).expect("open");
    write(&db, 0..3_000);
    // As if the process were killed: the active file keeps whatever was filled ahead.
    db.abandon();
    let db = Bitcask::open(dir.path(), opts()).expect("reopen after crash");
    if let Some((_, _, bytes)) = &db.recovery_report().torn_tail {
        assert!(*bytes <= 1 << 20, "{:?}", db.recovery_report());
    }
    check(&db, 3_000);
    // The zeros are gone for good: more writes, a clean close, a clean reopen.
    write(&db, 3_000..4_000);
    db.close().expect("close");
    let db = Bitcask::open(dir.path(), opts()).expect("reopen");
    assert!(db.recovery_report().torn_tail.is_none());
    check(&db, 4_000);
    db.close().expect("close");
}
