//! The TSDB write-ahead log: record decoding, and replay of a hostile segment by
//! `Tsdb::open`.
//!
//! Input: a mode byte, then
//! * bit 0 clear: the rest split at `SEP` into record payloads, framed by a genuine
//!   `LogWriter` (so every record reaches `decode_record` past the checksums);
//! * bit 0 set: the rest is the whole segment file (bit 1: reseal its checksums first).
//!
//! A small store is created and abandoned with one committed batch, its last WAL segment
//! replaced by the input, and the store reopened.
//!
//! Oracles: a record that decodes re-encodes to something that decodes to the same record
//! (bit-exact values); the store opens or fails with an error, never panics; once open,
//! every sample a query returns is one the segment's records wrote for that label set (the
//! replay invents nothing); the store takes a new commit; and reopening it answers the same.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use strata_fuzz::{put_file, reseal_log, split};
use strata_kv::fs::{FileSystem, MemFs};
use strata_kv::wal::LogWriter;
use strata_tsdb::wal::{self, Record};
use strata_tsdb::{FsyncPolicy, Labels, MatchOp, Matcher, Options, Series, Tsdb};

fn options(fs: &Arc<MemFs>) -> Options {
    let mut o = Options {
        wal_fsync: FsyncPolicy::Always,
        background: false,
        ..Options::default()
    };
    o.kv.fs = fs.clone();
    o
}

/// Every series with every sample, as comparable bits.
fn everything(db: &Tsdb) -> Option<Vec<(Labels, Vec<(i64, u64)>)>> {
    let all = Matcher::new(MatchOp::RegexMatch, "__name__", ".*").ok()?;
    let got: Vec<Series> = db.querier(i64::MIN, i64::MAX).select(&[all]).ok()?;
    Some(
        got.into_iter()
            .map(|s| {
                let samples = s.samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
                (s.labels, samples)
            })
            .collect(),
    )
}

fn check_round_trip(rec: &Record) {
    let again = match rec {
        Record::Series(list) => {
            let refs: Vec<_> = list.iter().map(|(r, l)| (*r, l)).collect();
            wal::encode_series(&refs)
        }
        Record::Samples(s) => wal::encode_samples(s),
    };
    let Ok(back) = wal::decode_record(&again, "again", 0) else {
        panic!("a decoded record does not decode after re-encoding: {rec:?}");
    };
    match (rec, &back) {
        (Record::Series(a), Record::Series(b)) => assert_eq!(a, b),
        (Record::Samples(a), Record::Samples(b)) => {
            let bits = |s: &[wal::RefSample]| -> Vec<(u64, i64, u64)> {
                s.iter().map(|x| (x.r, x.t, x.v.to_bits())).collect()
            };
            assert_eq!(bits(a), bits(b));
        }
        _ => panic!("record type changed in a round trip"),
    }
}

/// The files of a small store, abandoned with one committed batch in its WAL.
fn template() -> &'static [(PathBuf, Vec<u8>)] {
    static FILES: OnceLock<Vec<(PathBuf, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(|| {
        let fs = Arc::new(MemFs::new());
        let db = Tsdb::open(Path::new("/t"), options(&fs)).expect("create");
        let mut app = db.appender();
        app.add(
            Labels::from_pairs([("__name__", "seed"), ("job", "a")]).expect("labels"),
            1000,
            1.5,
        );
        app.commit().expect("commit");
        db.abandon();
        fs.paths()
            .into_iter()
            .map(|p| {
                let data = fs.read_file(&p).expect("read");
                (p, data)
            })
            .collect()
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    // A fresh copy of the template store (made once: opening a store is the slow part).
    let fs = Arc::new(MemFs::new());
    let dir = Path::new("/t");
    let wal_dir = dir.join("wal");
    for (p, data) in template() {
        if let Some(parent) = p.parent() {
            fs.create_dir_all(parent).expect("mkdir");
        }
        put_file(&fs, p, data);
    }
    let segs = wal::list_segments(fs.as_ref(), &wal_dir).expect("segments");
    let last = *segs.last().expect("a WAL segment");
    let path = wal_dir.join(wal::segment_name(last));

    if mode & 1 == 0 {
        for part in split(rest) {
            if let Ok(rec) = wal::decode_record(part, "fuzz", 0) {
                check_round_trip(&rec);
            }
        }
        let file = fs.create(&path).expect("create segment");
        let mut w = LogWriter::new(file, "fuzz", wal::TSDB_WAL_MAGIC).expect("writer");
        for part in split(rest) {
            w.add_record(part).expect("add record");
        }
        w.sync().expect("sync");
    } else {
        let mut data = rest.to_vec();
        if mode & 2 != 0 {
            reseal_log(&mut data);
        }
        put_file(&fs, &path, &data);
    }

    // What the segments say: for each label set, every (t, value bits) written for it.
    let mut written: HashMap<Labels, HashSet<(i64, u64)>> = HashMap::new();
    let mut refs: HashMap<u64, Vec<Labels>> = HashMap::new();
    let segs = wal::list_segments(fs.as_ref(), &wal_dir).expect("segments");
    let replayed = wal::replay(fs.as_ref(), &wal_dir, &segs, |_, rec| {
        check_round_trip(&rec);
        match rec {
            Record::Series(list) => {
                for (r, l) in list {
                    refs.entry(r).or_default().push(l);
                }
            }
            Record::Samples(list) => {
                for s in list {
                    for l in refs.get(&s.r).into_iter().flatten() {
                        written
                            .entry(l.clone())
                            .or_default()
                            .insert((s.t, s.v.to_bits()));
                    }
                }
            }
        }
        Ok(())
    });

    let Ok(db) = Tsdb::open(dir, options(&fs)) else {
        return;
    };
    assert!(
        replayed.is_ok(),
        "the store opened over a WAL that replay refuses"
    );
    let Some(before) = everything(&db) else {
        db.abandon();
        return;
    };
    for (labels, samples) in &before {
        let known = written.get(labels);
        for s in samples {
            assert!(
                known.is_some_and(|k| k.contains(s)),
                "replay returned {labels} {s:?}, which the WAL never wrote"
            );
        }
    }
    // The store still takes writes (a fresh series, at a time no record can hide).
    let mut app = db.appender();
    app.add(
        Labels::from_pairs([("__name__", "after"), ("n", "1")]).expect("labels"),
        0,
        2.0,
    );
    let committed = app.commit().is_ok();
    let Some(after_commit) = everything(&db) else {
        db.abandon();
        return;
    };
    db.abandon();
    // Reopening replays the same segments (now followed by the new one).
    if let Ok(db) = Tsdb::open(dir, options(&fs)) {
        if committed {
            assert_eq!(
                everything(&db),
                Some(after_commit),
                "a reopen answers otherwise"
            );
        }
        db.abandon();
    }
});
