//! Bitcask crash recovery and corruption: every prefix of the active file recovers exactly
//! the complete records and batches; a torn unsynced tail keeps every synced write; damage
//! elsewhere is a `Corruption` naming file and offset (or skipped and reported); a bad hint
//! file falls back to scanning; a second open is refused by the LOCK file.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use strata_kv::batch::BatchEntry;
use strata_kv::bitcask::{format, Bitcask, BitcaskOptions, CorruptionPolicy, MergeTrigger};
use strata_kv::fs::{CrashMode, FileSystem, MemFs};
use strata_kv::{Error, WriteBatch, WriteOptions};

const BATCHES: usize = 12;

/// Batch `i` writes keys `b{i}-{j}`, overwrites `last` and deletes an older key, so the
/// state after `n` batches is unique for each `n`. Batch 0 mod 3 is a single put.
fn batch(i: usize) -> WriteBatch {
    let mut b = WriteBatch::new();
    if i.is_multiple_of(3) {
        b.put("last", format!("{i}"));
        return b;
    }
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
                BatchEntry::DeleteRange { .. } => unreachable!(),
            }
        }
    }
    m
}

fn contents(db: &Bitcask) -> BTreeMap<Vec<u8>, Vec<u8>> {
    db.iter().collect::<Result<_, _>>().expect("iter")
}

fn opts(fs: &MemFs) -> BitcaskOptions {
    BitcaskOptions {
        fs: Arc::new(fs.clone()),
        merge_trigger: MergeTrigger {
            auto: false,
            ..MergeTrigger::default()
        },
        ..BitcaskOptions::default()
    }
}

fn data_files(fs: &MemFs) -> Vec<PathBuf> {
    fs.paths()
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".data"))
        .collect()
}

#[test]
fn every_prefix_of_the_active_file_recovers_exactly_the_complete_batches() {
    let dir = Path::new("/bc");
    let fs = MemFs::new();
    let db = Bitcask::open(dir, opts(&fs)).expect("open");
    let active = data_files(&fs).pop().expect("active file");
    let mut ends = Vec::new();
    for i in 0..BATCHES {
        db.write(batch(i), WriteOptions::default()).expect("write");
        ends.push(fs.file_len(&active).expect("len"));
    }
    db.abandon();
    let files = common::snapshot_files(&fs, CrashMode::KeepAll);
    let full = fs.file_len(&active).expect("len");
    for cut in 0..=full {
        let fs = common::restore_files(dir, &files);
        fs.truncate(&active, cut).expect("truncate");
        let db = Bitcask::open(dir, opts(&fs)).unwrap_or_else(|e| panic!("open at {cut}: {e}"));
        let n = ends.iter().filter(|&&e| e <= cut).count();
        assert_eq!(contents(&db), expected_after(n), "prefix of {cut} bytes");
        let torn = db.recovery_report().torn_tail.is_some();
        assert_eq!(torn, !(cut == 24 || ends.contains(&cut)), "torn at {cut}");
        // The tail was cut off for good: more writes and a reopen keep everything.
        db.put("after", "crash").expect("put");
        db.close().expect("close");
        let db = Bitcask::open(dir, opts(&fs)).expect("reopen");
        let mut want = expected_after(n);
        want.insert(b"after".to_vec(), b"crash".to_vec());
        assert_eq!(contents(&db), want, "after reopen, prefix {cut}");
        assert!(db.recovery_report().torn_tail.is_none());
    }
}

#[test]
fn torn_unsynced_tail_keeps_every_synced_write() {
    for seed in 1..40u64 {
        let dir = Path::new("/bc");
        let fs = MemFs::new();
        let mut o = opts(&fs);
        o.max_file_size = 600;
        let db = Bitcask::open(dir, o.clone()).expect("open");
        let mut last_synced = 0;
        for i in 0..BATCHES {
            let sync = (i + seed as usize).is_multiple_of(4);
            db.write(batch(i), WriteOptions { sync }).expect("write");
            if sync {
                last_synced = i + 1;
            }
        }
        db.abandon();
        fs.crash(CrashMode::TearUnsynced(seed));
        let db = Bitcask::open(dir, o).expect("open after tear");
        let got = contents(&db);
        let n = (last_synced..=BATCHES)
            .find(|&n| expected_after(n) == got)
            .unwrap_or_else(|| panic!("seed {seed}: state is not a prefix >= {last_synced}"));
        assert!(n >= last_synced);
    }
}

/// A store with several immutable files; returns the fs and the model.
fn several_files() -> (MemFs, BTreeMap<Vec<u8>, Vec<u8>>) {
    let fs = MemFs::new();
    let mut o = opts(&fs);
    o.max_file_size = 1024;
    let db = Bitcask::open("/bc", o).expect("open");
    let mut m = BTreeMap::new();
    for i in 0..200 {
        let (k, v) = (format!("key{:03}", i % 60), format!("value {i}"));
        db.put(&k, &v).expect("put");
        m.insert(k.into_bytes(), v.into_bytes());
    }
    db.close().expect("close");
    (fs, m)
}

#[test]
fn flipped_byte_in_an_older_file_is_corruption_naming_file_and_offset() {
    let (fs, _) = several_files();
    let files = data_files(&fs);
    assert!(files.len() > 3);
    let victim = &files[1];
    // The second record of the file: header 24 bytes, records of 21 + 6 + 9 or 10 bytes.
    fs.corrupt_byte(victim, 24 + 40).expect("corrupt");
    let o = opts(&fs);
    match Bitcask::open("/bc", o.clone()) {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!(Path::new(&file), victim.as_path());
            assert!((24..=24 + 40).contains(&offset), "offset {offset}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a corrupt store"),
    }
    // The same damage in the last file the writer used, followed by good records, is no
    // torn tail either.
    let (fs, _) = several_files();
    let last = data_files(&fs).pop().expect("last");
    fs.corrupt_byte(&last, 24 + 5).expect("corrupt");
    let err = Bitcask::open("/bc", opts(&fs)).err().expect("corruption");
    assert!(err.is_corruption(), "{err}");
}

#[test]
fn skip_and_report_skips_the_damage_and_keeps_the_rest() {
    let (fs, model) = several_files();
    let files = data_files(&fs);
    let victim = files[1].clone();
    fs.corrupt_byte(&victim, 24 + 40).expect("corrupt");
    let mut o = opts(&fs);
    o.corruption = CorruptionPolicy::SkipAndReport;
    let db = Bitcask::open("/bc", o).expect("open with skip");
    let skipped = &db.recovery_report().skipped;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(Path::new(&skipped[0].file), victim.as_path());
    assert!(skipped[0].len > 0 && skipped[0].len < 100);
    // Every key whose latest record is elsewhere is intact.
    let got = contents(&db);
    let same = model
        .iter()
        .filter(|(k, v)| got.get(*k) == Some(*v))
        .count();
    assert!(same >= model.len() - 2, "{same} of {}", model.len());
}

#[test]
fn corrupt_value_on_read_is_reported_not_returned() {
    let (fs, model) = several_files();
    let db = Bitcask::open("/bc", opts(&fs)).expect("open");
    for f in data_files(&fs) {
        for off in (24..fs.file_len(&f).expect("len")).step_by(7) {
            fs.flip_on_read(&f, off);
        }
    }
    let mut errors = 0;
    for (k, v) in &model {
        match db.get(k) {
            Ok(Some(got)) => assert_eq!(&got, v),
            Ok(None) => panic!("lost {k:?}"),
            Err(e) => {
                assert!(e.is_corruption(), "{e}");
                assert!(e.to_string().contains(".data"));
                errors += 1;
            }
        }
    }
    assert!(errors > 0);
}

#[test]
fn bad_hint_file_falls_back_to_scanning() {
    let (fs, model) = several_files();
    let db = Bitcask::open("/bc", opts(&fs)).expect("open");
    db.merge().expect("merge");
    db.close().expect("close");
    let hints: Vec<_> = fs
        .paths()
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".hint"))
        .collect();
    assert!(!hints.is_empty());
    // A clean reopen uses the hints.
    let db = Bitcask::open("/bc", opts(&fs)).expect("open");
    assert_eq!(db.recovery_report().files_from_hints, hints.len());
    assert_eq!(contents(&db), model);
    db.close().expect("close");
    // A flipped byte, then a truncated hint file.
    fs.corrupt_byte(&hints[0], 30).expect("corrupt");
    if let Some(h) = hints.get(1) {
        let len = fs.file_len(h).expect("len");
        fs.truncate(h, len - 3).expect("truncate");
    }
    let db = Bitcask::open("/bc", opts(&fs)).expect("open with bad hints");
    let r = db.recovery_report().clone();
    assert_eq!(r.bad_hints.len(), hints.len().min(2), "{r:?}");
    assert!(r.files_scanned >= r.bad_hints.len());
    assert_eq!(contents(&db), model);
    db.close().expect("close");
}

#[test]
fn second_open_is_refused_by_the_lock_file() {
    let fs = MemFs::new();
    let db = Bitcask::open("/bc", opts(&fs)).expect("open");
    match Bitcask::open("/bc", opts(&fs)) {
        Err(Error::Locked(_)) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("second open succeeded"),
    }
    db.close().expect("close");
    Bitcask::open("/bc", opts(&fs))
        .expect("open after close")
        .close()
        .expect("close");

    let dir = tempfile::tempdir().expect("tempdir");
    let db = Bitcask::open(dir.path(), BitcaskOptions::default()).expect("open on disk");
    assert!(matches!(
        Bitcask::open(dir.path(), BitcaskOptions::default()),
        Err(Error::Locked(_))
    ));
    db.close().expect("close");
}

#[test]
fn range_deletes_are_refused_and_write_nothing() {
    let fs = MemFs::new();
    let db = Bitcask::open("/bc", opts(&fs)).expect("open");
    let mut b = WriteBatch::new();
    b.put("a", "1").delete_range("a", "z");
    assert!(matches!(
        db.write(b, WriteOptions::default()),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(db.get("a").expect("get"), None);
}

#[test]
fn interrupted_merge_is_finished_or_ignored_on_open() {
    // A crash right after the merge commit: the replaced files are still there.
    let (fs, model) = several_files();
    let db = Bitcask::open("/bc", opts(&fs)).expect("open");
    for k in model.keys().take(20) {
        db.delete(k).expect("delete");
    }
    let mut want = model.clone();
    let gone: Vec<_> = want.keys().take(20).cloned().collect();
    for k in gone {
        want.remove(&k);
    }
    let saved: Vec<_> = fs
        .paths()
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".data"))
        .map(|p| (p.clone(), fs.read_file(p).expect("read")))
        .collect();
    db.merge().expect("merge");
    db.abandon();
    // Put the replaced files back, as if deleting them had not happened yet: with the
    // merge commit still there (recovery finishes the merge), and without it (a crash
    // before the commit: inputs and outputs coexist as harmless duplicates).
    let ids: Vec<u32> = saved
        .iter()
        .map(|(p, _)| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            name.trim_end_matches(".data").parse().expect("id")
        })
        .collect();
    for keep_commit in [true, false] {
        let fs2 = common::restore_files(
            Path::new("/bc"),
            &common::snapshot_files(&fs, CrashMode::KeepAll),
        );
        for (p, data) in &saved {
            if !fs2.exists(p) {
                let mut w = fs2.create(p).expect("create");
                w.append(data).expect("append");
                w.sync().expect("sync");
            }
        }
        if keep_commit {
            let p = format::merge_path(Path::new("/bc"), 999);
            let mut w = fs2.create(&p).expect("create");
            w.append(&format::encode_merge_commit(999, &ids))
                .expect("append");
            w.sync().expect("sync");
        }
        let db = Bitcask::open("/bc", opts(&fs2)).expect("open");
        assert_eq!(contents(&db), want, "keep_commit={keep_commit}");
        if keep_commit {
            assert_eq!(db.recovery_report().merges_finished, 1);
            for (p, _) in &saved {
                assert!(!fs2.exists(p), "{} should be gone", p.display());
            }
        }
        db.merge().expect("merge");
        assert_eq!(contents(&db), want);
        db.close().expect("close");
    }
}

#[test]
fn a_process_crash_then_a_power_loss_keeps_what_the_first_recovery_kept() {
    // The process dies with writes in the page cache only; the next open recovers them and
    // goes on in a new file, whose synced writes then outlive a power loss. The file
    // recovery kept must be durable by then, or it would be torn before them.
    let fs = MemFs::new();
    let dir = Path::new("/bc");
    let db = Bitcask::open(dir, opts(&fs)).expect("open");
    for i in 0..20 {
        db.write(batch(i), WriteOptions::default()).expect("write");
    }
    // A process crash: the bytes stay, unsynced (MemFs's crash would count them synced).
    db.abandon();
    let db = Bitcask::open(dir, opts(&fs)).expect("reopen after the process crash");
    for i in 20..25 {
        db.write(batch(i), WriteOptions { sync: true })
            .expect("synced write");
    }
    db.abandon();
    fs.crash(CrashMode::DropUnsynced);
    let db = Bitcask::open(dir, opts(&fs)).expect("reopen after the power loss");
    assert_eq!(contents(&db), expected_after(25));
    db.close().expect("close");
}
