//! The TSDB decoders of stored bytes, fed random bytes and random mutations of valid
//! encodings: chunks and label sets. None panics; each either reports an error or decodes
//! to something that re-encodes consistently. The short, fixed-seed companion of the
//! cargo-fuzz targets in `fuzz/` (see docs/RELIABILITY.md).

use proptest::collection::vec;
use proptest::prelude::*;
use strata_testkit::mutate;
use strata_tsdb::chunk::{Chunk, XorAppender, XorChunk};
use strata_tsdb::labels::Labels;

/// Runs `test` on `cases` values of `strategy` from this file's fixed seed.
fn check<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value))
where
    S::Value: std::fmt::Debug,
{
    strata_testkit::check(0x3c, cases, strategy, test)
}

fn bits(s: &[(i64, f64)]) -> Vec<(i64, u64)> {
    s.iter().map(|&(t, v)| (t, v.to_bits())).collect()
}

/// Decodes `data` as a chunk; a chunk that decodes completely must re-encode to the same
/// samples (bit-exact) and accept appends after resuming.
fn check_chunk(data: &[u8]) {
    let Ok(chunk) = Chunk::from_bytes(data.to_vec()) else {
        return;
    };
    let decoded: Result<Vec<(i64, f64)>, _> = chunk.iter().collect();
    assert!(chunk.iter().count() <= chunk.num_samples() + 1);
    let xor = XorChunk::from_bytes(data.to_vec()).expect("Chunk and XorChunk agree");
    let Ok(samples) = decoded else {
        assert!(XorAppender::resume(xor).is_err());
        return;
    };
    assert_eq!(samples.len(), chunk.num_samples());
    let mut app = XorAppender::new();
    for &(t, v) in &samples {
        app.append(t, v).unwrap();
    }
    let again: Vec<_> = app.chunk().iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(bits(&again), bits(&samples));
    let mut resumed = XorAppender::resume(xor).expect("a chunk that decodes resumes");
    if resumed.append(7, 1.5).is_ok() {
        let more: Vec<_> = resumed.chunk().iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(bits(&more[..samples.len()]), bits(&samples));
        assert_eq!(bits(&more[samples.len()..]), vec![(7, 1.5f64.to_bits())]);
    }
}

fn sample_chunk() -> Vec<u8> {
    let mut app = XorAppender::new();
    let mut v = 10.0;
    for i in 0..60i64 {
        v += (i % 7) as f64 * 0.25;
        app.append(1_000_000 + i * 15_000 + (i % 3) * 7, v).unwrap();
    }
    app.append(i64::MIN, f64::NAN).unwrap();
    app.chunk().bytes().to_vec()
}

#[test]
fn chunks_from_random_bytes() {
    check(1024, vec(any::<u8>(), 0..200), |mut data| {
        check_chunk(&data);
        // The same bytes behind a valid header reach the sample decoder.
        if data.len() >= 3 {
            data[0] = 1;
            check_chunk(&data);
        }
    });
}

#[test]
fn mutated_chunks() {
    let base = sample_chunk();
    check(
        2048,
        (
            vec((any::<usize>(), any::<u8>()), 1..4),
            proptest::option::weighted(0.2, any::<usize>()),
        ),
        |(flips, cut)| check_chunk(&mutate(&base, &flips, cut)),
    );
}

#[test]
fn arbitrary_samples_round_trip_bit_exactly() {
    check(
        512,
        (vec((any::<i64>(), any::<u64>()), 0..50), any::<usize>()),
        |(samples, cut)| {
            let cut = cut % (samples.len() + 1);
            let mut app = XorAppender::new();
            for &(t, v) in &samples[..cut] {
                app.append(t, f64::from_bits(v)).unwrap();
            }
            let mut app = XorAppender::resume(app.into_chunk()).unwrap();
            for &(t, v) in &samples[cut..] {
                app.append(t, f64::from_bits(v)).unwrap();
            }
            let got: Vec<(i64, u64)> = app
                .chunk()
                .iter()
                .map(|r| r.map(|(t, v)| (t, v.to_bits())))
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(got, samples);
        },
    );
}

fn check_labels(data: &[u8]) {
    if let Ok(l) = Labels::decode(data) {
        assert_eq!(l.encode(), data, "label encoding is canonical");
    }
}

#[test]
fn label_sets_from_random_and_mutated_bytes() {
    check(1024, vec(any::<u8>(), 0..80), |data| check_labels(&data));
    check(
        1024,
        vec(
            prop_oneof![
                Just(0u8),
                Just(1),
                Just(0xff),
                Just(b'a'),
                Just(b'_'),
                any::<u8>()
            ],
            0..40,
        ),
        |data| check_labels(&data),
    );
    let base = Labels::from_pairs([
        ("__name__", "up"),
        ("instance", "a\0b:9090"),
        ("job", "node"),
    ])
    .unwrap()
    .encode();
    check(
        2048,
        (
            vec((any::<usize>(), any::<u8>()), 1..4),
            proptest::option::weighted(0.2, any::<usize>()),
        ),
        |(flips, cut)| check_labels(&mutate(&base, &flips, cut)),
    );
}

/// Decodes `data` as a WAL record; a record that decodes re-encodes to bytes that decode
/// to the same record (bit-exact values).
fn check_wal_record(data: &[u8]) {
    use strata_tsdb::wal::{decode_record, encode_samples, encode_series, Record};
    let Ok(rec) = decode_record(data, "wal/00000001.log", 16) else {
        return;
    };
    let again = match &rec {
        Record::Series(list) => {
            encode_series(&list.iter().map(|(r, l)| (*r, l)).collect::<Vec<_>>())
        }
        Record::Samples(s) => encode_samples(s),
    };
    assert!(again.len() <= data.len(), "re-encoding grew the record");
    match (
        &rec,
        decode_record(&again, "again", 0).expect("re-encoded record decodes"),
    ) {
        (Record::Series(a), Record::Series(b)) => assert_eq!(a, &b),
        (Record::Samples(a), Record::Samples(b)) => {
            let key = |s: &[strata_tsdb::wal::RefSample]| -> Vec<(u64, i64, u64)> {
                s.iter().map(|x| (x.r, x.t, x.v.to_bits())).collect()
            };
            assert_eq!(key(a), key(&b));
        }
        _ => panic!("record type changed"),
    }
}

fn sample_wal_records() -> Vec<Vec<u8>> {
    use strata_tsdb::wal::{encode_samples, encode_series, RefSample};
    let a = Labels::from_pairs([("__name__", "up"), ("job", "a")]).unwrap();
    let b = Labels::from_pairs([("__name__", "x"), ("i", "\u{e9}\n")]).unwrap();
    let samples: Vec<RefSample> = (0..20u64)
        .map(|i| RefSample {
            r: 1 + i % 2,
            t: 1_700_000_000_000 + (i as i64) * 15_000 - (i as i64 % 3) * 40_000,
            v: if i == 7 { f64::NAN } else { i as f64 * 0.5 },
        })
        .collect();
    vec![encode_series(&[(1, &a), (2, &b)]), encode_samples(&samples)]
}

#[test]
fn wal_records_from_random_and_mutated_bytes() {
    check(1024, vec(any::<u8>(), 0..120), |mut data| {
        check_wal_record(&data);
        // Behind a valid record type, the bytes reach the entry decoders.
        if !data.is_empty() {
            data[0] = 1 + data[0] % 2;
            check_wal_record(&data);
        }
    });
    for base in sample_wal_records() {
        check(
            1024,
            (
                vec((any::<usize>(), any::<u8>()), 1..4),
                proptest::option::weighted(0.2, any::<usize>()),
            ),
            |(flips, cut)| check_wal_record(&mutate(&base, &flips, cut)),
        );
    }
}

/// Opens a fresh store (in memory) whose only WAL segment is a log of `records`, as a
/// crash would leave it.
fn open_with_wal(records: &[Vec<u8>]) -> strata_tsdb::Result<strata_tsdb::Tsdb> {
    use std::path::Path;
    use std::sync::Arc;
    use strata_kv::fs::{FileSystem, MemFs};
    use strata_kv::wal::LogWriter;
    use strata_tsdb::wal::{segment_name, TSDB_WAL_MAGIC};
    use strata_tsdb::{FsyncPolicy, Options, Tsdb};

    let fs = MemFs::new();
    let opts = || {
        let mut o = Options {
            wal_fsync: FsyncPolicy::Always,
            background: false,
            ..Options::default()
        };
        o.kv.fs = Arc::new(fs.clone());
        o
    };
    let dir = Path::new("/t");
    Tsdb::open(dir, opts()).unwrap().abandon();
    let file = fs.create(&dir.join("wal").join(segment_name(1))).unwrap();
    let mut w = LogWriter::new(file, "seg", TSDB_WAL_MAGIC).unwrap();
    for r in records {
        w.add_record(r).unwrap();
    }
    w.sync().unwrap();
    Tsdb::open(dir, opts())
}

/// A store whose WAL segment is replaced by a log of `records` opens or fails cleanly, and
/// answers only samples its records wrote.
fn check_wal_replay(records: &[Vec<u8>]) {
    use strata_tsdb::{MatchOp, Matcher};

    let Ok(db) = open_with_wal(records) else {
        return;
    };
    let all = Matcher::new(MatchOp::RegexMatch, "__name__", ".*").unwrap();
    let got = db.querier(i64::MIN, i64::MAX).select(&[all]).unwrap();
    let written: Vec<(i64, u64)> = records
        .iter()
        .filter_map(|r| strata_tsdb::wal::decode_record(r, "r", 0).ok())
        .flat_map(|rec| match rec {
            strata_tsdb::wal::Record::Samples(s) => {
                s.iter().map(|x| (x.t, x.v.to_bits())).collect()
            }
            strata_tsdb::wal::Record::Series(_) => Vec::new(),
        })
        .collect();
    for s in &got {
        for &(t, v) in &s.samples {
            assert!(
                written.contains(&(t, v.to_bits())),
                "{} {t} {v} invented",
                s.labels
            );
        }
    }
    let mut app = db.appender();
    app.add(Labels::from_pairs([("__name__", "after")]).unwrap(), 0, 1.0);
    app.commit().unwrap();
    db.abandon();
}

#[test]
fn hostile_wal_segments_replay_or_fail_cleanly() {
    let base = sample_wal_records();
    check(
        96,
        (
            vec((any::<usize>(), any::<u8>()), 0..4),
            any::<usize>(),
            any::<bool>(),
        ),
        |(flips, which, swap)| {
            let mut recs = base.clone();
            let i = which % recs.len();
            if !flips.is_empty() {
                recs[i] = mutate(&recs[i], &flips, None);
            }
            if swap {
                recs.reverse();
            }
            check_wal_replay(&recs);
        },
    );
}

/// Found while writing the `tsdb_wal` fuzz target (by reading the replay; its input is kept
/// in `fuzz/regressions/tsdb_wal/`): a series record with reference 2^64 - 1 overflowed
/// computing the next reference at open (a panic, or in release a wrap to 0 that would hand
/// out references of live series again). Such a WAL is refused as corrupt.
#[test]
fn wal_series_reference_at_the_top_of_the_range_is_refused() {
    use strata_tsdb::wal::{encode_samples, encode_series, RefSample};

    let l = Labels::from_pairs([("__name__", "up")]).unwrap();
    for r in [u64::MAX, u64::MAX - 1, 1 << 63] {
        let records = [
            encode_series(&[(r, &l)]),
            encode_samples(&[RefSample { r, t: 5, v: 1.0 }]),
        ];
        match open_with_wal(&records) {
            Err(e) => assert!(e.to_string().contains("series reference"), "{e}"),
            Ok(_) => panic!("a WAL with series reference {r} was accepted"),
        }
    }
}
