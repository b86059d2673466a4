//! Tests of version edits, manifest state and manifest recovery.
#![allow(clippy::unwrap_used)] // Tests may panic on unexpected errors.

use super::*;
use crate::fs::{CrashMode, MemFs};
use proptest::prelude::*;
use std::path::PathBuf;

fn meta(number: u64) -> FileMeta {
    FileMeta {
        number,
        file_size: 1000 + number,
        smallest: format!("a{number}").into_bytes(),
        largest: format!("z{number}").into_bytes(),
        smallest_seq: number,
        largest_seq: number * 10,
        num_entries: 100,
        num_deletions: 3,
    }
}

fn db() -> (MemFs, PathBuf) {
    let fs = MemFs::new();
    let dir = PathBuf::from("/db");
    fs.create_dir_all(&dir).unwrap();
    (fs, dir)
}

fn arb_meta() -> impl Strategy<Value = FileMeta> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(any::<u8>(), 0..40),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(number, file_size, smallest, largest, ss, ls, ne, nd)| FileMeta {
                number,
                file_size,
                smallest,
                largest,
                smallest_seq: ss,
                largest_seq: ls,
                num_entries: ne,
                num_deletions: nd,
            },
        )
}

fn arb_edit() -> impl Strategy<Value = VersionEdit> {
    (
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
        proptest::collection::vec((0..MAX_LEVELS as u32, arb_meta()), 0..5),
        proptest::collection::vec((0..MAX_LEVELS as u32, any::<u64>()), 0..5),
        proptest::collection::vec(arb_tombstone(), 0..3),
        proptest::collection::vec(arb_tombstone(), 0..3),
    )
        .prop_map(
            |(
                log_number,
                next_file_number,
                last_sequence,
                new_files,
                deleted_files,
                new_rt,
                del_rt,
            )| {
                VersionEdit {
                    log_number,
                    next_file_number,
                    last_sequence,
                    new_files,
                    deleted_files,
                    new_range_tombstones: new_rt,
                    deleted_range_tombstones: del_rt,
                }
            },
        )
}

fn arb_tombstone() -> impl Strategy<Value = crate::range_del::RangeTombstone> {
    (
        proptest::collection::vec(any::<u8>(), 0..8),
        proptest::collection::vec(any::<u8>(), 0..8),
        any::<u64>(),
    )
        .prop_map(|(start, end, seq)| crate::range_del::RangeTombstone { start, end, seq })
}

proptest! {
    #[test]
    fn edit_encode_decode_roundtrip(edit in arb_edit()) {
        let enc = edit.encode();
        prop_assert_eq!(VersionEdit::decode(&enc, "M", 16).unwrap(), edit.clone());
        // Every strict prefix that cuts a field is corruption, never a panic.
        for cut in 0..enc.len() {
            let _ = VersionEdit::decode(&enc[..cut], "M", 16);
        }
    }

    #[test]
    fn decode_random_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = VersionEdit::decode(&data, "MANIFEST-000001", 42) {
            match e {
                Error::Corruption { file, offset, .. } => {
                    prop_assert_eq!(file.as_str(), "MANIFEST-000001");
                    prop_assert_eq!(offset, 42);
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }

    #[test]
    fn snapshot_rebuilds_state(
        ops in proptest::collection::vec((0..MAX_LEVELS as u32, 1u64..40, any::<bool>()), 0..60),
        counters in (any::<u64>(), any::<u64>(), any::<u64>()),
    ) {
        let mut state = ManifestState::new();
        for (level, number, delete) in ops {
            let mut edit = VersionEdit::default();
            let at = state.levels.iter().position(|l| l.contains_key(&number));
            match (at, delete) {
                (Some(l), true) => edit.deleted_files.push((l as u32, number)),
                (Some(l), false) => {
                    // Move it to another level in one edit.
                    edit.deleted_files.push((l as u32, number));
                    edit.new_files.push((level, meta(number)));
                }
                (None, _) => edit.new_files.push((level, meta(number))),
            }
            state.apply(&edit, "M", 0).unwrap();
        }
        let (log, next, seq) = counters;
        state.apply(&VersionEdit {
            log_number: Some(log),
            next_file_number: Some(next),
            last_sequence: Some(seq),
            ..Default::default()
        }, "M", 0).unwrap();
        let snap = state.snapshot_edit();
        let mut rebuilt = ManifestState::new();
        rebuilt.apply(&snap, "M", 0).unwrap();
        prop_assert_eq!(&rebuilt, &state);
        let decoded = VersionEdit::decode(&snap.encode(), "M", 0).unwrap();
        prop_assert_eq!(decoded, snap);
    }
}

#[test]
fn decode_errors_name_file_and_offset() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![99, 1], "unknown tag 99"),
        (vec![tag::LOG_NUMBER as u8], "truncated log number"),
        (
            vec![tag::LOG_NUMBER as u8, 1, tag::LOG_NUMBER as u8, 2],
            "twice",
        ),
        (vec![tag::DELETED_FILE as u8, 7, 1], "level 7 out of range"),
        (vec![tag::NEW_FILE as u8, 1, 5], "truncated new file"),
        (vec![0x80], "truncated tag"),
    ];
    for (data, needle) in cases {
        let err = VersionEdit::decode(&data, "/db/MANIFEST-000003", 1234).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, Error::Corruption { file, offset: 1234, .. } if file == "/db/MANIFEST-000003"),
            "{msg}"
        );
        assert!(msg.contains(needle), "{msg} should mention {needle}");
    }
    assert_eq!(
        VersionEdit::decode(&[], "M", 0).unwrap(),
        VersionEdit::default()
    );
}

#[test]
fn apply_rejects_inconsistent_edits_and_leaves_state_unchanged() {
    let mut state = ManifestState::new();
    let add = |level, n| VersionEdit {
        new_files: vec![(level, meta(n))],
        ..Default::default()
    };
    state.apply(&add(0, 5), "M", 0).unwrap();
    let before = state.clone();
    let bad_edits = vec![
        // Adding a live file again (same or another level).
        add(0, 5),
        add(3, 5),
        // Deleting a file that is not there / not at that level.
        VersionEdit {
            deleted_files: vec![(1, 5)],
            ..Default::default()
        },
        VersionEdit {
            deleted_files: vec![(0, 6)],
            ..Default::default()
        },
        // Deleting twice, adding twice, level out of range; counters must not change.
        VersionEdit {
            last_sequence: Some(77),
            deleted_files: vec![(0, 5), (0, 5)],
            ..Default::default()
        },
        VersionEdit {
            log_number: Some(9),
            new_files: vec![(1, meta(8)), (2, meta(8))],
            ..Default::default()
        },
        add(MAX_LEVELS as u32, 9),
    ];
    for edit in bad_edits {
        let err = state.apply(&edit, "/db/MANIFEST-000002", 99).unwrap_err();
        assert!(
            matches!(&err, Error::Corruption { file, offset: 99, .. } if file == "/db/MANIFEST-000002"),
            "{err}"
        );
        assert_eq!(state, before, "{edit:?}");
    }
    // A trivial move: delete at level 0 and add at level 1 in one edit.
    let mv = VersionEdit {
        deleted_files: vec![(0, 5)],
        new_files: vec![(1, meta(5))],
        ..Default::default()
    };
    state.apply(&mv, "M", 0).unwrap();
    assert!(state.levels[1].contains_key(&5) && state.levels[0].is_empty());
    assert_eq!(state.num_files(), 1);
}

/// Writes a manifest with a snapshot and some edits, points CURRENT at it; returns the
/// expected final state.
fn write_manifest(fs: &MemFs, dir: &Path, number: u64) -> (ManifestWriter, ManifestState) {
    let mut state = ManifestState::new();
    state.log_number = 3;
    state.next_file_number = 10;
    state.last_sequence = 500;
    state.levels[0].insert(4, meta(4));
    state.levels[2].insert(7, meta(7));
    let mut w = ManifestWriter::create(fs, dir, number, &state.snapshot_edit()).unwrap();
    assert_eq!(w.number(), number);
    let edits = vec![
        VersionEdit {
            log_number: Some(11),
            next_file_number: Some(13),
            last_sequence: Some(900),
            new_files: vec![(0, meta(12))],
            ..Default::default()
        },
        VersionEdit {
            next_file_number: Some(15),
            deleted_files: vec![(0, 4), (0, 12)],
            new_files: vec![(1, meta(14))],
            ..Default::default()
        },
        VersionEdit {
            last_sequence: Some(1200),
            ..Default::default()
        },
    ];
    for e in &edits {
        let before = w.size();
        w.append(e).unwrap();
        assert!(w.size() > before);
        state.apply(e, "expected", 0).unwrap();
    }
    set_current(fs, dir, number).unwrap();
    (w, state)
}

#[test]
fn create_append_set_current_recover() {
    let (fs, dir) = db();
    let (_w, expected) = write_manifest(&fs, &dir, 5);
    assert_eq!(
        fs.read_file(&current_path(&dir)).unwrap(),
        b"MANIFEST-000005\n"
    );
    assert!(!fs.exists(&temp_path(&dir, 5)), "temp file renamed away");
    assert_eq!(read_current(&fs, &dir).unwrap(), 5);
    let (number, state) = recover(&fs, &dir).unwrap();
    assert_eq!(number, 5);
    assert_eq!(state, expected);
    assert_eq!(state.next_file_number, 15);
    assert_eq!(state.last_sequence, 1200);
    assert_eq!(state.log_number, 11);

    // Everything was synced: a crash loses nothing.
    fs.crash(CrashMode::DropUnsynced);
    assert_eq!(recover(&fs, &dir).unwrap(), (5, expected.clone()));

    // Switching to a fresh manifest holding a snapshot gives the same state.
    let w2 = ManifestWriter::create(&fs, &dir, 16, &expected.snapshot_edit()).unwrap();
    drop(w2);
    // Not live before CURRENT names it.
    assert_eq!(recover(&fs, &dir).unwrap().0, 5);
    set_current(&fs, &dir, 16).unwrap();
    assert_eq!(recover(&fs, &dir).unwrap(), (16, expected));
}

#[test]
fn torn_last_edit_is_ignored() {
    let (fs, dir) = db();
    let (_w, expected) = write_manifest(&fs, &dir, 5);
    let path = manifest_path(&dir, 5);
    let len = fs.file_len(&path).unwrap();
    // An edit whose append was cut short by a crash.
    let extra = VersionEdit {
        new_files: vec![(3, meta(20))],
        ..Default::default()
    }
    .encode();
    {
        let mut data = fs.read_file(&path).unwrap();
        let scratch = Path::new("/scratch");
        let mut w = LogWriter::new(fs.create(scratch).unwrap(), "x", MANIFEST_MAGIC).unwrap();
        w.add_record(&extra).unwrap();
        drop(w);
        let rec = fs.read_file(scratch).unwrap();
        let rec = &rec[crate::wal::LOG_HEADER_SIZE..];
        for cut in 1..rec.len() {
            data.truncate(len as usize);
            data.extend_from_slice(&rec[..cut]);
            let mut f = fs.create(&path).unwrap();
            f.append(&data).unwrap();
            assert_eq!(
                recover(&fs, &dir).unwrap(),
                (5, expected.clone()),
                "cut {cut}"
            );
        }
    }
    // Zeros appended (preallocation) are a tail too.
    fs.truncate(&path, len).unwrap();
    let mut data = fs.read_file(&path).unwrap();
    data.extend_from_slice(&[0; 100]);
    fs.create(&path).unwrap().append(&data).unwrap();
    assert_eq!(recover(&fs, &dir).unwrap(), (5, expected));
}

#[test]
fn flipped_byte_in_earlier_edit_is_corruption_naming_the_manifest() {
    let (fs, dir) = db();
    write_manifest(&fs, &dir, 5);
    let path = manifest_path(&dir, 5);
    let name = path.display().to_string();
    // Offsets of the records: walk the log.
    let offsets = record_spans(&fs, &path)
        .iter()
        .map(|s| s.0 as u64)
        .collect::<Vec<_>>();
    assert_eq!(offsets.len(), 4);
    for &off in &offsets[..3] {
        for delta in [0u64, 4, 8, 12] {
            fs.flip_on_read(&path, off + delta);
            let err = recover(&fs, &dir).unwrap_err();
            match &err {
                Error::Corruption { file, offset, .. } => {
                    assert_eq!(file, &name, "{err}");
                    assert_eq!(*offset, off, "{err}");
                }
                other => panic!("expected corruption, got {other:?}"),
            }
            fs.clear_read_faults();
        }
    }
    // A flip in the header is corruption at offset 0.
    fs.flip_on_read(&path, 3);
    assert!(matches!(
        recover(&fs, &dir),
        Err(Error::Corruption { offset: 0, .. })
    ));
    fs.clear_read_faults();
    assert!(recover(&fs, &dir).is_ok());
}

/// (start, end) offsets of every record of the log at `path`.
fn record_spans(fs: &MemFs, path: &Path) -> Vec<(usize, usize)> {
    let mut r = LogReader::open_with_policy(fs, path, MANIFEST_MAGIC, TailPolicy::Strict).unwrap();
    let mut spans = Vec::new();
    while r.next_record().unwrap().is_some() {
        spans.push((r.last_record_offset() as usize, r.end_of_records() as usize));
    }
    spans
}

/// A manifest whose last edit adds a table (the only record of it, as after a flush whose
/// WAL segment was then deleted). Returns the manifest's bytes, the state before and after
/// the last edit, and the spans of its records.
fn manifest_ending_in_a_new_table(
    fs: &MemFs,
    dir: &Path,
) -> (Vec<u8>, ManifestState, ManifestState, Vec<(usize, usize)>) {
    let (mut w, before) = write_manifest(fs, dir, 5);
    let last = VersionEdit {
        log_number: Some(16),
        next_file_number: Some(21),
        new_files: vec![(0, meta(20))],
        ..Default::default()
    };
    w.append(&last).unwrap();
    let mut after = before.clone();
    after.apply(&last, "expected", 0).unwrap();
    assert_eq!(recover(fs, dir).unwrap(), (5, after.clone()));
    let path = manifest_path(dir, 5);
    let spans = record_spans(fs, &path);
    assert_eq!(spans.len(), 5);
    (fs.read_file(&path).unwrap(), before, after, spans)
}

fn replace_file(fs: &MemFs, path: &Path, data: &[u8]) {
    fs.create(path).unwrap().append(data).unwrap();
}

#[test]
fn any_flipped_byte_is_an_error_naming_the_manifest() {
    let (fs, dir) = db();
    let (data, _, _, spans) = manifest_ending_in_a_new_table(&fs, &dir);
    let path = manifest_path(&dir, 5);
    let name = path.display().to_string();
    let last_start = spans.last().unwrap().0;
    for i in 0..data.len() {
        for flip in [0x01u8, 0x40, 0x80, 0xff] {
            let mut bad = data.clone();
            bad[i] ^= flip;
            replace_file(&fs, &path, &bad);
            match recover(&fs, &dir) {
                Err(Error::Corruption { file, offset, .. }) => {
                    assert_eq!(file, name, "byte {i} ^ {flip:#x}");
                    // A flip in the last record is reported at that record.
                    if i >= last_start {
                        assert_eq!(offset, last_start as u64, "byte {i} ^ {flip:#x}");
                    }
                }
                Err(Error::UnsupportedVersion { file, .. }) => {
                    assert_eq!(file, name, "byte {i} ^ {flip:#x}");
                }
                other => panic!("byte {i} ^ {flip:#x}: expected an error, got {other:?}"),
            }
        }
    }
    replace_file(&fs, &path, &data);
    assert!(recover(&fs, &dir).is_ok());
}

#[test]
fn flipped_byte_in_last_edit_names_the_record_and_says_corrupt() {
    let (fs, dir) = db();
    let (data, _, _, spans) = manifest_ending_in_a_new_table(&fs, &dir);
    let path = manifest_path(&dir, 5);
    let (start, end) = *spans.last().unwrap();
    // The length field (a record that seems to run past the end), the header checksum and
    // the payload.
    for i in [start + 4, start + 7, start + 10, end - 1] {
        let mut bad = data.clone();
        bad[i] ^= 0x10;
        replace_file(&fs, &path, &bad);
        let err = recover(&fs, &dir).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("MANIFEST-000005"), "{msg}");
        assert!(msg.contains(&format!("offset {start}")), "{msg}");
        assert!(msg.contains("not a torn write"), "{msg}");
    }
}

#[test]
fn cut_anywhere_in_last_edit_recovers_the_state_before_it() {
    let (fs, dir) = db();
    let (data, before, after, spans) = manifest_ending_in_a_new_table(&fs, &dir);
    assert_ne!(before, after);
    let path = manifest_path(&dir, 5);
    let (start, end) = *spans.last().unwrap();
    for cut in start..end {
        replace_file(&fs, &path, &data[..cut]);
        assert_eq!(
            recover(&fs, &dir).unwrap(),
            (5, before.clone()),
            "cut {cut}"
        );
    }
    replace_file(&fs, &path, &data);
    assert_eq!(recover(&fs, &dir).unwrap(), (5, after));
}

#[test]
fn zero_filled_tail_after_the_last_edit_is_tolerated() {
    let (fs, dir) = db();
    let (data, _, after, _) = manifest_ending_in_a_new_table(&fs, &dir);
    let path = manifest_path(&dir, 5);
    for zeros in [1usize, 12, 13, 14, 100, 4096, 64 * 1024] {
        let mut padded = data.clone();
        padded.resize(data.len() + zeros, 0);
        replace_file(&fs, &path, &padded);
        assert_eq!(
            recover(&fs, &dir).unwrap(),
            (5, after.clone()),
            "{zeros} zeros"
        );
    }
}

#[test]
fn current_errors_are_clear() {
    let (fs, dir) = db();
    // Missing CURRENT.
    let err = read_current(&fs, &dir).unwrap_err();
    assert!(
        matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err}"
    );
    assert!(err.to_string().contains("CURRENT"), "{err}");
    assert!(recover(&fs, &dir).is_err());

    let current = current_path(&dir);
    for bad in [
        &b""[..],
        b"MANIFEST-000005",
        b"MANIFEST-\n",
        b"000005.log\n",
        b"MANIFEST-000005\nMANIFEST-000006\n",
        b"MANIFEST-000005\n\n",
        b"\xff\xfe\n",
        b"MANIFEST-00x005\n",
    ] {
        fs.create(&current).unwrap().append(bad).unwrap();
        let err = read_current(&fs, &dir).unwrap_err();
        assert!(
            matches!(&err, Error::Corruption { file, .. } if file.ends_with("CURRENT")),
            "{bad:?}: {err}"
        );
    }
    // CURRENT naming a manifest that does not exist.
    fs.create(&current)
        .unwrap()
        .append(b"MANIFEST-000042\n")
        .unwrap();
    assert_eq!(read_current(&fs, &dir).unwrap(), 42);
    let err = recover(&fs, &dir).unwrap_err();
    assert!(err.to_string().contains("MANIFEST-000042"), "{err}");
}

#[test]
fn manifest_without_counters_is_corruption() {
    let (fs, dir) = db();
    let partial = VersionEdit {
        log_number: Some(1),
        new_files: vec![(0, meta(3))],
        ..Default::default()
    };
    let mut w = ManifestWriter::create(&fs, &dir, 2, &partial).unwrap();
    set_current(&fs, &dir, 2).unwrap();
    let err = recover(&fs, &dir).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert!(err.to_string().contains("next file number"), "{err}");
    assert!(err.to_string().contains("MANIFEST-000002"), "{err}");
    // Present by the end is enough.
    w.append(&VersionEdit {
        next_file_number: Some(4),
        last_sequence: Some(0),
        ..Default::default()
    })
    .unwrap();
    let (_, state) = recover(&fs, &dir).unwrap();
    assert_eq!((state.log_number, state.next_file_number), (1, 4));
}

#[test]
fn failed_sync_poisons_the_writer_and_set_current_cleans_up() {
    let (fs, dir) = db();
    let (mut w, expected) = write_manifest(&fs, &dir, 5);
    fs.set_fail_sync(true);
    assert!(w.append(&VersionEdit::default()).is_err());
    fs.set_fail_sync(false);
    assert!(
        w.append(&VersionEdit::default()).is_err(),
        "writer refuses after failure"
    );
    // set_current with a failing fsync leaves CURRENT untouched and no temp file.
    fs.set_fail_sync(true);
    assert!(set_current(&fs, &dir, 9).is_err());
    fs.set_fail_sync(false);
    assert!(!fs.exists(&temp_path(&dir, 9)));
    assert_eq!(read_current(&fs, &dir).unwrap(), 5);
    // The unsynced (but complete) edit may or may not survive; an empty edit changes nothing.
    assert_eq!(recover(&fs, &dir).unwrap(), (5, expected));
}
