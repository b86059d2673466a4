//! Tests of the log format: round trips, torn tails, corruption, fuzzing.
#![allow(clippy::unwrap_used)] // Tests may panic on unexpected errors.

use super::*;
use crate::checksum::{crc32c, mask};
use crate::error::Error;
use crate::fs::{CrashMode, FileSystem, MemFs};
use crate::options::WalRecoveryMode::{Strict, TolerateTail};
use format::encode_raw_record_header;
use proptest::prelude::*;
use std::path::Path;

const NAME: &str = "/db/000007.log";

use strata_testkit::XorShift as Rng;

/// Writes `records` as a log through a MemFs file; returns the bytes and each record's
/// (start offset, end offset).
fn build_log(magic: u64, records: &[Vec<u8>]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let fs = MemFs::new();
    let path = Path::new(NAME);
    let mut w = LogWriter::new(fs.create(path).unwrap(), NAME, magic).unwrap();
    assert_eq!(w.len(), LOG_HEADER_SIZE as u64);
    let mut spans = Vec::new();
    for r in records {
        let start = w.len() as usize;
        w.add_record(r).unwrap();
        spans.push((start, w.len() as usize));
    }
    w.flush().unwrap();
    w.sync().unwrap();
    (fs.read_file(path).unwrap(), spans)
}

/// Reads every record under `policy` (a [`TailPolicy`] or a [`crate::WalRecoveryMode`]);
/// the error if reading fails.
fn read_all(
    data: Vec<u8>,
    magic: u64,
    policy: impl Into<TailPolicy>,
) -> Result<(Vec<Vec<u8>>, Option<TailDamage>), Error> {
    let policy = policy.into();
    let mut r = LogReader::from_bytes_with_policy(data, NAME, magic, policy)?;
    assert_eq!(r.policy(), policy);
    let mut out = Vec::new();
    while let Some(rec) = r.next_record()? {
        out.push(rec);
    }
    // The end is sticky.
    assert!(matches!(r.next_record(), Ok(None)));
    Ok((out, r.tail_damage().cloned()))
}

fn sample_records(rng: &mut Rng, sizes: &[usize]) -> Vec<Vec<u8>> {
    sizes.iter().map(|&n| rng.bytes(n)).collect()
}

fn assert_corruption_at(err: &Error, offset: u64) {
    match err {
        Error::Corruption {
            file, offset: o, ..
        } => {
            assert_eq!(file, NAME, "{err}");
            assert_eq!(*o, offset, "{err}");
            assert!(err.to_string().contains(NAME));
        }
        other => panic!("expected corruption at {offset}, got {other:?}"),
    }
}

#[test]
fn roundtrip_many_records_of_random_sizes() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let records: Vec<Vec<u8>> = (0..200)
        .map(|i| {
            let n = match i % 4 {
                0 => rng.below(10),
                1 => rng.below(1000),
                _ => rng.below(100 * 1024),
            } as usize;
            rng.bytes(n)
        })
        .collect();
    let (data, spans) = build_log(WAL_MAGIC, &records);
    let fs = MemFs::new();
    let path = Path::new(NAME);
    fs.create(path).unwrap().append(&data).unwrap();
    for mode in [TolerateTail, Strict] {
        let mut r = LogReader::open(&fs, path, WAL_MAGIC, mode).unwrap();
        for (rec, (start, end)) in records.iter().zip(&spans) {
            assert_eq!(r.next_record().unwrap().as_ref(), Some(rec));
            assert_eq!(r.last_record_offset(), *start as u64);
            assert_eq!(r.end_of_records(), *end as u64);
        }
        assert_eq!(r.next_record().unwrap(), None);
        assert!(r.tail_damage().is_none());
    }
}

#[test]
fn empty_log_and_empty_records() {
    let (data, _) = build_log(WAL_MAGIC, &[]);
    assert_eq!(data.len(), LOG_HEADER_SIZE);
    assert_eq!(read_all(data, WAL_MAGIC, Strict).unwrap(), (vec![], None));
    let recs = vec![vec![], vec![1], vec![]];
    let (data, _) = build_log(MANIFEST_MAGIC, &recs);
    assert_eq!(read_all(data, MANIFEST_MAGIC, Strict).unwrap().0, recs);
}

#[test]
fn every_prefix_yields_exactly_the_complete_records() {
    let mut rng = Rng(7);
    let records = sample_records(&mut rng, &[5, 0, 1, 300, 17, 2000, 9, 64]);
    let (data, spans) = build_log(WAL_MAGIC, &records);
    let boundaries: Vec<usize> = std::iter::once(LOG_HEADER_SIZE)
        .chain(spans.iter().map(|s| s.1))
        .collect();
    for cut in 0..=data.len() {
        let prefix = data[..cut].to_vec();
        let complete = spans.iter().filter(|s| s.1 <= cut).count();
        let clean = boundaries.contains(&cut);

        // Both tolerant policies drop a cut-off record, and call it torn.
        for policy in [
            TailPolicy::TolerateTornOrCorrupt,
            TailPolicy::TolerateTornOnly,
        ] {
            let (got, tail) = read_all(prefix.clone(), WAL_MAGIC, policy)
                .unwrap_or_else(|e| panic!("cut {cut} {policy:?}: {e}"));
            assert_eq!(got, records[..complete], "cut {cut}");
            assert_eq!(tail.is_some(), !clean, "cut {cut}: {tail:?}");
            if let Some(t) = tail {
                let expected = if cut < LOG_HEADER_SIZE {
                    0
                } else {
                    boundaries[complete]
                };
                assert_eq!(t.offset, expected as u64, "cut {cut}");
                assert_eq!(t.kind, TailDamageKind::Torn, "cut {cut}: {t:?}");
            }
        }

        match read_all(prefix, WAL_MAGIC, Strict) {
            Ok((got, None)) => {
                assert!(clean, "cut {cut} should fail in strict mode");
                assert_eq!(got, records[..complete]);
            }
            Ok((_, Some(t))) => panic!("strict mode tolerated {t:?}"),
            Err(e) => {
                assert!(!clean, "cut {cut}: unexpected {e}");
                let at = if cut < LOG_HEADER_SIZE {
                    0
                } else {
                    boundaries[complete]
                };
                assert_corruption_at(&e, at as u64);
            }
        }
    }
}

#[test]
fn flipped_byte_in_last_record_is_tolerated_only_by_tolerate_torn_or_corrupt() {
    let mut rng = Rng(11);
    // The last record is empty in the second log: a flip can only hit its header.
    for sizes in [&[40usize, 3, 100, 250][..], &[40, 7, 0]] {
        let records = sample_records(&mut rng, sizes);
        let (data, spans) = build_log(WAL_MAGIC, &records);
        let (start, end) = *spans.last().unwrap();
        for i in start..end {
            for flip in [0x01u8, 0x40, 0xff] {
                let mut bad = data.clone();
                bad[i] ^= flip;
                let (got, tail) = read_all(bad.clone(), WAL_MAGIC, TolerateTail).unwrap();
                assert_eq!(got, records[..records.len() - 1], "byte {i}");
                let tail = tail.unwrap();
                assert_eq!(tail.offset, start as u64, "byte {i}");
                assert_eq!(tail.kind, TailDamageKind::Corrupt, "byte {i}: {tail:?}");
                for policy in [TailPolicy::TolerateTornOnly, TailPolicy::Strict] {
                    let err = read_all(bad.clone(), WAL_MAGIC, policy).unwrap_err();
                    assert_corruption_at(&err, start as u64);
                }
            }
        }
    }
}

#[test]
fn tolerate_torn_only_reads_records_before_the_damage() {
    let mut rng = Rng(12);
    let records = sample_records(&mut rng, &[40, 3, 100, 250]);
    let (data, spans) = build_log(WAL_MAGIC, &records);
    let (start, end) = *spans.last().unwrap();
    // A flip: the complete records come first, then the error (which is sticky).
    let mut bad = data.clone();
    bad[end - 1] ^= 0x20;
    let mut r =
        LogReader::from_bytes_with_policy(bad, NAME, WAL_MAGIC, TailPolicy::TolerateTornOnly)
            .unwrap();
    for rec in &records[..records.len() - 1] {
        assert_eq!(r.next_record().unwrap().as_ref(), Some(rec));
    }
    let err = r.next_record().unwrap_err();
    assert_corruption_at(&err, start as u64);
    assert!(err.to_string().contains("not a torn write"), "{err}");
    assert_corruption_at(&r.next_record().unwrap_err(), start as u64);
    // A cut anywhere inside the last record is tolerated and reported as torn.
    for cut in start + 1..end {
        let (got, tail) = read_all(
            data[..cut].to_vec(),
            WAL_MAGIC,
            TailPolicy::TolerateTornOnly,
        )
        .unwrap();
        assert_eq!(got, records[..records.len() - 1], "cut {cut}");
        let tail = tail.unwrap();
        assert_eq!(
            (tail.offset, tail.kind),
            (start as u64, TailDamageKind::Torn)
        );
    }
}

#[test]
fn policy_from_recovery_mode() {
    assert_eq!(
        TailPolicy::from(TolerateTail),
        TailPolicy::TolerateTornOrCorrupt
    );
    assert_eq!(TailPolicy::from(Strict), TailPolicy::Strict);
    let (data, _) = build_log(WAL_MAGIC, &[b"x".to_vec()]);
    let r = LogReader::from_bytes(data, NAME, WAL_MAGIC, TolerateTail).unwrap();
    assert_eq!(r.policy(), TailPolicy::TolerateTornOrCorrupt);
}

#[test]
fn flipped_byte_in_earlier_record_is_corruption_under_every_policy() {
    let mut rng = Rng(13);
    let records = sample_records(&mut rng, &[40, 0, 3, 100, 25]);
    let (data, spans) = build_log(WAL_MAGIC, &records);
    for (k, &(start, end)) in spans[..spans.len() - 1].iter().enumerate() {
        for i in start..end {
            for flip in [0x01u8, 0x40, 0xff] {
                let mut bad = data.clone();
                bad[i] ^= flip;
                for policy in [
                    TailPolicy::TolerateTornOrCorrupt,
                    TailPolicy::TolerateTornOnly,
                    TailPolicy::Strict,
                ] {
                    let mut r =
                        LogReader::from_bytes_with_policy(bad.clone(), NAME, WAL_MAGIC, policy)
                            .unwrap();
                    for rec in &records[..k] {
                        assert_eq!(r.next_record().unwrap().as_ref(), Some(rec));
                    }
                    let err = r.next_record().unwrap_err();
                    assert_corruption_at(&err, start as u64);
                    // The error is sticky.
                    assert_corruption_at(&r.next_record().unwrap_err(), start as u64);
                }
            }
        }
    }
}

#[test]
fn garbage_or_zeros_after_valid_records_is_a_tail() {
    let mut rng = Rng(17);
    let records = sample_records(&mut rng, &[10, 20, 30]);
    let (data, spans) = build_log(WAL_MAGIC, &records);
    let end = spans.last().unwrap().1;
    use TailDamageKind::{Corrupt, Torn};
    let tails: Vec<(Vec<u8>, TailDamageKind)> = vec![
        (vec![0; 1], Torn),
        (vec![0; 8], Torn),
        (vec![0; 12], Torn),
        (vec![0; 13], Torn),
        (vec![0; 100], Torn),
        (vec![0; 64 * 1024], Torn),
        // Fewer bytes than a record header: torn, whatever they are.
        (rng.bytes(3), Torn),
        (rng.bytes(12), Torn),
        (rng.bytes(1000), Corrupt),
        (rng.bytes(100_000), Corrupt),
        (vec![RECORD_TYPE_FULL; 5000], Corrupt),
    ];
    for (tail, kind) in tails {
        let mut bad = data.clone();
        bad.extend_from_slice(&tail);
        let (got, damage) = read_all(bad.clone(), WAL_MAGIC, TolerateTail).unwrap();
        assert_eq!(got, records);
        let damage = damage.unwrap();
        assert_eq!(
            (damage.offset, damage.kind),
            (end as u64, kind),
            "{damage:?}"
        );
        match read_all(bad.clone(), WAL_MAGIC, TailPolicy::TolerateTornOnly) {
            Ok((got, Some(d))) if kind == Torn => {
                assert_eq!(got, records);
                assert_eq!(d.offset, end as u64);
            }
            Err(e) if kind == Corrupt => assert_corruption_at(&e, end as u64),
            other => panic!("{kind:?} tail of {} bytes: {other:?}", tail.len()),
        }
        assert_corruption_at(&read_all(bad, WAL_MAGIC, Strict).unwrap_err(), end as u64);
    }
}

#[test]
fn zeros_in_the_middle_followed_by_records_is_corruption() {
    let mut rng = Rng(19);
    let records = sample_records(&mut rng, &[10, 20]);
    let (data, spans) = build_log(WAL_MAGIC, &records);
    let mut bad = data[..spans[0].1].to_vec();
    bad.extend_from_slice(&[0; 4096]);
    bad.extend_from_slice(&data[spans[1].0..]);
    for policy in [
        TailPolicy::TolerateTornOrCorrupt,
        TailPolicy::TolerateTornOnly,
        TailPolicy::Strict,
    ] {
        assert_corruption_at(
            &read_all(bad.clone(), WAL_MAGIC, policy).unwrap_err(),
            spans[0].1 as u64,
        );
    }
}

#[test]
fn header_problems() {
    let (data, _) = build_log(WAL_MAGIC, &[b"x".to_vec()]);
    // Wrong magic: a WAL read as a manifest.
    for mode in [TolerateTail, Strict] {
        assert_corruption_at(
            &read_all(data.clone(), MANIFEST_MAGIC, mode).unwrap_err(),
            0,
        );
    }
    // Bad header checksum.
    let mut bad = data.clone();
    bad[14] ^= 0x10;
    for mode in [TolerateTail, Strict] {
        assert_corruption_at(&read_all(bad.clone(), WAL_MAGIC, mode).unwrap_err(), 0);
    }
    // Unknown version with a valid checksum.
    let mut v2 = data.clone();
    v2[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = mask(crc32c(&v2[..12]));
    v2[12..16].copy_from_slice(&crc.to_le_bytes());
    match read_all(v2, WAL_MAGIC, TolerateTail) {
        Err(Error::UnsupportedVersion { file, version }) => {
            assert_eq!((file.as_str(), version), (NAME, 2));
        }
        other => panic!("{other:?}"),
    }
    // A short file that is not a prefix of our header is corruption, not a torn header.
    for mode in [TolerateTail, Strict] {
        assert_corruption_at(
            &read_all(b"garbage".to_vec(), WAL_MAGIC, mode).unwrap_err(),
            0,
        );
    }
    // A preallocated file that never got its header: empty log in TolerateTail.
    let (got, tail) = read_all(vec![0; 4096], WAL_MAGIC, TolerateTail).unwrap();
    assert!(got.is_empty());
    assert_eq!(tail.map(|t| t.offset), Some(0));
    assert_corruption_at(&read_all(vec![0; 4096], WAL_MAGIC, Strict).unwrap_err(), 0);
    // An empty file.
    assert_eq!(
        read_all(vec![], WAL_MAGIC, TolerateTail).unwrap().0,
        Vec::<Vec<u8>>::new()
    );
    assert_corruption_at(&read_all(vec![], WAL_MAGIC, Strict).unwrap_err(), 0);
}

#[test]
fn oversized_records() {
    // The writer refuses them (the allocation is zeroed lazily, so this is cheap).
    let fs = MemFs::new();
    let mut w = LogWriter::new(fs.create(Path::new(NAME)).unwrap(), NAME, WAL_MAGIC).unwrap();
    let huge = vec![0u8; MAX_RECORD_SIZE + 1];
    assert!(matches!(
        w.add_record(&huge),
        Err(Error::InvalidArgument(_))
    ));
    drop(huge);
    assert!(!w.has_failed());
    w.add_record(b"fine").unwrap();
    // The reader rejects a declared length above the maximum.
    let mut data = encode_file_header(WAL_MAGIC).to_vec();
    let start = data.len();
    data.extend_from_slice(&encode_raw_record_header(
        0,
        (MAX_RECORD_SIZE as u32) + 1,
        RECORD_TYPE_FULL,
    ));
    data.extend_from_slice(&[7; 64]);
    for policy in [TailPolicy::Strict, TailPolicy::TolerateTornOnly] {
        let err = read_all(data.clone(), WAL_MAGIC, policy).unwrap_err();
        assert_corruption_at(&err, start as u64);
        assert!(err.to_string().contains("exceeds"), "{err}");
    }
    let (_, tail) = read_all(data, WAL_MAGIC, TolerateTail).unwrap();
    assert_eq!(tail.map(|t| t.kind), Some(TailDamageKind::Corrupt));
}

#[test]
fn writer_refuses_work_after_a_failed_write() {
    let fs = MemFs::new();
    let path = Path::new(NAME);
    let mut w = LogWriter::new(fs.create(path).unwrap(), NAME, WAL_MAGIC).unwrap();
    w.add_record(b"first").unwrap();
    fs.set_space_left(Some(12));
    let err = w.add_record(&[5; 100]).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(w.has_failed());
    fs.set_no_space(false);
    assert!(w.add_record(b"later").is_err());
    assert!(w.sync().is_err());
    // What landed is a log with a torn tail.
    let (got, tail) = read_all(
        fs.read_file(path).unwrap(),
        WAL_MAGIC,
        TailPolicy::TolerateTornOnly,
    )
    .unwrap();
    assert_eq!(got, vec![b"first".to_vec()]);
    assert_eq!(tail.map(|t| t.kind), Some(TailDamageKind::Torn));
}

#[test]
fn crash_keeps_synced_records_and_a_prefix_of_the_rest() {
    let mut rng = Rng(23);
    let records = sample_records(&mut rng, &[100, 2000, 5, 700, 3000, 1, 64, 900]);
    for seed in 1..60u64 {
        let fs = MemFs::new();
        let path = Path::new(NAME);
        let mut w = LogWriter::new(fs.create(path).unwrap(), NAME, WAL_MAGIC).unwrap();
        // Group commit: three records, one flush, one sync.
        for r in &records[..3] {
            w.add_record(r).unwrap();
        }
        w.flush().unwrap();
        w.sync().unwrap();
        for r in &records[3..] {
            w.add_record(r).unwrap();
        }
        w.flush().unwrap();
        fs.crash(CrashMode::TearUnsynced(seed));
        // A crash only tears: even the torn-only policy accepts what is left.
        let mut r = LogReader::open_with_policy(&fs, path, WAL_MAGIC, TailPolicy::TolerateTornOnly)
            .unwrap();
        let mut got = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            got.push(rec);
        }
        assert!(got.len() >= 3, "seed {seed}");
        assert_eq!(got, records[..got.len()], "seed {seed}");
    }
}

#[test]
fn torn_header_after_crash_is_an_empty_log() {
    for seed in 1..40u64 {
        let fs = MemFs::new();
        let path = Path::new(NAME);
        let mut w = LogWriter::new(fs.create(path).unwrap(), NAME, WAL_MAGIC).unwrap();
        w.add_record(b"never synced").unwrap();
        fs.crash(CrashMode::TearUnsynced(seed));
        let (got, _) = read_all(
            fs.read_file(path).unwrap(),
            WAL_MAGIC,
            TailPolicy::TolerateTornOnly,
        )
        .unwrap();
        assert!(got.len() <= 1);
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        with_header in any::<bool>(),
        policy in prop::sample::select(vec![
            TailPolicy::TolerateTornOrCorrupt,
            TailPolicy::TolerateTornOnly,
            TailPolicy::Strict,
        ]),
    ) {
        let mut data = if with_header { encode_file_header(WAL_MAGIC).to_vec() } else { vec![] };
        data.extend_from_slice(&body);
        if let Ok(mut r) = LogReader::from_bytes_with_policy(data, NAME, WAL_MAGIC, policy) {
            for _ in 0..10_000 {
                match r.next_record() {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn mutated_logs_never_panic_and_never_invent_records(
        sizes in proptest::collection::vec(0usize..300, 1..8),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut rng = Rng(29);
        let records: Vec<Vec<u8>> = sizes.iter().map(|&n| rng.bytes(n)).collect();
        let (mut data, _) = build_log(WAL_MAGIC, &records);
        for (i, b) in &edits {
            let i = i.index(data.len());
            data[i] = *b;
        }
        data.truncate(cut.index(data.len() + 1));
        if let Ok((got, _)) = read_all(data, WAL_MAGIC, TolerateTail) {
            // Whatever is returned is a prefix of what was written (records never merge or
            // appear out of nowhere, barring a CRC collision).
            prop_assert!(got.len() <= records.len());
            prop_assert_eq!(&got[..], &records[..got.len()]);
        }
    }
}
