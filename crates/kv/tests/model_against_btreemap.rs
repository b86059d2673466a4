//! Model-based property test: random sequences of writes, reads, scans, flushes, reopens
//! and crashes against a `BTreeMap`; the engine must always agree with the model.

mod common;

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use strata_kv::fs::{CrashMode, MemFs};
use strata_kv::{Db, WriteBatch, WriteOptions};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Clone)]
enum Op {
    Put(u16, Vec<u8>),
    Delete(u16),
    Batch(Vec<(u16, Option<Vec<u8>>)>),
    Get(u16),
    Scan(u16, u16),
    ScanRev(u16, u16),
    Prefix(u8),
    Flush,
    Reopen,
    Crash,
    /// Take a snapshot (and remember the model as of now).
    Snapshot,
    /// Read a key through snapshot i (mod count).
    SnapshotGet(usize, u16),
    /// Scan everything through snapshot i.
    SnapshotScan(usize),
    /// Drop snapshot i.
    DropSnapshot(usize),
    /// Manual compaction of a key range.
    CompactRange(u16, u16),
    /// Manual compaction of everything.
    CompactAll,
    /// Range delete between two keys.
    DeleteRange(u16, u16),
    /// Moves a cursor (`Db::iter`, or snapshot i's if there is one) both ways.
    Cursor(Option<usize>, Vec<Move>),
}

/// One move of a cursor.
#[derive(Debug, Clone)]
enum Move {
    First,
    Last,
    Seek(u16),
    SeekForPrev(u16),
    Next,
    Prev,
}

fn cursor_move() -> impl Strategy<Value = Move> {
    prop_oneof![
        1 => Just(Move::First),
        1 => Just(Move::Last),
        2 => any::<u16>().prop_map(Move::Seek),
        2 => any::<u16>().prop_map(Move::SeekForPrev),
        6 => Just(Move::Next),
        6 => Just(Move::Prev),
    ]
}

/// Applies `moves` to `it` and to a position in `model`; they must agree after each.
fn check_cursor(mut it: strata_kv::DbIterator, model: &Model, moves: &[Move]) {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let mut at: Option<Vec<u8>> = None;
    for m in moves {
        let next = |b| model.range::<Vec<u8>, _>((b, Unbounded)).next();
        let prev = |b| model.range::<Vec<u8>, _>((Unbounded, b)).next_back();
        let want = match m {
            Move::First => {
                it.seek_to_first().expect("seek_to_first");
                model.iter().next()
            }
            Move::Last => {
                it.seek_to_last().expect("seek_to_last");
                model.iter().next_back()
            }
            Move::Seek(k) => {
                it.seek(&key(*k)).expect("seek");
                next(Included(&key(*k)))
            }
            Move::SeekForPrev(k) => {
                it.seek_for_prev(&key(*k)).expect("seek_for_prev");
                prev(Included(&key(*k)))
            }
            Move::Next | Move::Prev if at.is_none() => continue,
            Move::Next => {
                it.next().expect("next");
                next(Excluded(at.as_ref().expect("positioned")))
            }
            Move::Prev => {
                it.prev().expect("prev");
                prev(Excluded(at.as_ref().expect("positioned")))
            }
        };
        match want {
            Some((k, v)) => {
                assert!(it.valid(), "{m:?}: cursor invalid, model at {k:?}");
                assert_eq!((it.key(), it.value()), (&k[..], &v[..]), "{m:?}");
            }
            None => assert!(!it.valid(), "{m:?}: cursor at {:?}", it.key()),
        }
        at = want.map(|(k, _)| k.clone());
    }
}

fn key(k: u16) -> Vec<u8> {
    // Few distinct keys so that overwrites and deletes of live keys are common; the
    // two-byte prefix makes prefix scans meaningful.
    format!("k{:02}/{:03}", k % 7, k % 300).into_bytes()
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..40),
        1 => proptest::collection::vec(any::<u8>(), 200..1500),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (any::<u16>(), value()).prop_map(|(k, v)| Op::Put(k, v)),
        8 => any::<u16>().prop_map(Op::Delete),
        6 => proptest::collection::vec((any::<u16>(), proptest::option::of(value())), 1..12)
            .prop_map(Op::Batch),
        15 => any::<u16>().prop_map(Op::Get),
        3 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Op::Scan(a, b)),
        3 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Op::ScanRev(a, b)),
        2 => any::<u8>().prop_map(Op::Prefix),
        2 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        2 => Just(Op::Snapshot),
        4 => (any::<usize>(), any::<u16>()).prop_map(|(i, k)| Op::SnapshotGet(i, k)),
        1 => any::<usize>().prop_map(Op::SnapshotScan),
        1 => any::<usize>().prop_map(Op::DropSnapshot),
        1 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Op::CompactRange(a, b)),
        1 => Just(Op::CompactAll),
        3 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Op::DeleteRange(a, b)),
        3 => (
            proptest::option::weighted(0.3, any::<usize>()),
            proptest::collection::vec(cursor_move(), 1..40)
        )
            .prop_map(|(s, m)| Op::Cursor(s, m)),
    ]
}

fn check_scan(db: &Db, model: &BTreeMap<Vec<u8>, Vec<u8>>, a: u16, b: u16, rev: bool) {
    let (lo, hi) = {
        let (x, y) = (key(a), key(b));
        if x <= y {
            (x, y)
        } else {
            (y, x)
        }
    };
    let got: Vec<_> = if rev {
        db.scan_rev(lo.clone()..hi.clone())
    } else {
        db.scan(lo.clone()..hi.clone())
    }
    .collect::<Result<_, _>>()
    .expect("scan");
    let mut want: Vec<_> = model
        .range(lo..hi)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if rev {
        want.reverse();
    }
    assert_eq!(got, want);
}

fn run(ops: Vec<Op>) {
    let fs = MemFs::new();
    let dir = Path::new("/db");
    let opts = common::small_options(&fs);
    let mut db = Some(Db::open(dir, opts.clone()).expect("open"));
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    // Live snapshots and the model as of each.
    let mut snaps: Vec<(strata_kv::Snapshot, Model)> = Vec::new();
    for op in ops {
        let d = db.as_ref().expect("open db");
        match op {
            Op::Put(k, v) => {
                d.put(key(k), &v).expect("put");
                model.insert(key(k), v);
            }
            Op::Delete(k) => {
                d.delete(key(k)).expect("delete");
                model.remove(&key(k));
            }
            Op::Batch(entries) => {
                let mut b = WriteBatch::new();
                for (k, v) in &entries {
                    match v {
                        Some(v) => b.put(key(*k), v),
                        None => b.delete(key(*k)),
                    };
                }
                d.write(
                    b,
                    WriteOptions {
                        sync: entries.len() % 2 == 0,
                    },
                )
                .expect("write");
                for (k, v) in entries {
                    match v {
                        Some(v) => model.insert(key(k), v),
                        None => model.remove(&key(k)),
                    };
                }
            }
            Op::Get(k) => assert_eq!(d.get(key(k)).expect("get"), model.get(&key(k)).cloned()),
            Op::Scan(a, b) => check_scan(d, &model, a, b, false),
            Op::ScanRev(a, b) => check_scan(d, &model, a, b, true),
            Op::Prefix(p) => {
                let prefix = format!("k{:02}/", p % 7).into_bytes();
                let got: Vec<_> = d.prefix(&prefix).collect::<Result<_, _>>().expect("prefix");
                let want: Vec<_> = model
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(got, want);
            }
            Op::Flush => d.flush().expect("flush"),
            Op::Snapshot => snaps.push((d.snapshot(), model.clone())),
            Op::SnapshotGet(i, k) if !snaps.is_empty() => {
                let (snap, m) = &snaps[i % snaps.len()];
                assert_eq!(
                    snap.get(key(k)).expect("snapshot get"),
                    m.get(&key(k)).cloned()
                );
            }
            Op::SnapshotScan(i) if !snaps.is_empty() => {
                let (snap, m) = &snaps[i % snaps.len()];
                let got: Vec<_> = snap
                    .scan::<&[u8]>(..)
                    .collect::<Result<_, _>>()
                    .expect("scan");
                let want: Vec<_> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                assert_eq!(got, want, "snapshot scan");
            }
            Op::DropSnapshot(i) if !snaps.is_empty() => {
                let n = snaps.len();
                snaps.remove(i % n);
            }
            Op::SnapshotGet(..) | Op::SnapshotScan(_) | Op::DropSnapshot(_) => {}
            Op::Cursor(Some(i), moves) if !snaps.is_empty() => {
                let (snap, m) = &snaps[i % snaps.len()];
                check_cursor(snap.iter(), m, &moves);
            }
            Op::Cursor(_, moves) => check_cursor(d.iter(), &model, &moves),
            Op::CompactRange(a, b) => {
                let (x, y) = (key(a), key(b));
                let (lo, hi) = if x <= y { (x, y) } else { (y, x) };
                d.compact_range(lo..hi).expect("compact_range");
            }
            Op::CompactAll => d.compact_range::<&[u8]>(..).expect("compact all"),
            Op::DeleteRange(a, b) => {
                let (x, y) = (key(a), key(b));
                let (lo, hi) = if x <= y { (x, y) } else { (y, x) };
                d.delete_range(&lo, &hi).expect("delete_range");
                model.retain(|k, _| !(*k >= lo && *k < hi));
            }
            Op::Reopen => {
                // Snapshots do not survive a reopen.
                snaps.clear();
                db.take().expect("db").close().expect("close");
                db = Some(Db::open(dir, opts.clone()).expect("reopen"));
            }
            Op::Crash => {
                // Killed process: the OS keeps what was written; nothing was flushed.
                snaps.clear();
                db.take().expect("db").abandon();
                fs.crash(CrashMode::KeepAll);
                db = Some(Db::open(dir, opts.clone()).expect("reopen after crash"));
            }
        }
    }
    // Every snapshot still sees its own past.
    for (snap, m) in &snaps {
        let got: Vec<_> = snap
            .scan::<&[u8]>(..)
            .collect::<Result<_, _>>()
            .expect("scan");
        let want: Vec<_> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(got, want, "snapshot at the end");
    }
    snaps.clear();
    // A final full comparison, both directions, after one more reopen.
    db.take().expect("db").close().expect("close");
    let d = Db::open(dir, opts).expect("reopen");
    let all: Vec<_> = d.scan::<&[u8]>(..).collect::<Result<_, _>>().expect("scan");
    let want: Vec<_> = model.into_iter().collect();
    assert_eq!(all, want);
    let mut rev: Vec<_> = d
        .scan_rev::<&[u8]>(..)
        .collect::<Result<_, _>>()
        .expect("scan");
    rev.reverse();
    assert_eq!(rev, want);
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES=N runs longer (see docs/RELIABILITY.md).
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5747_4154),
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_agrees_with_btreemap(ops in proptest::collection::vec(op(), 1..400)) {
        run(ops);
    }
}
