//! Model-based property test of the Bitcask engine: random puts, deletes, batches, reads,
//! key listings, iterations, merges (explicit and in the background), reopens and crashes
//! against a `BTreeMap`; the engine must always agree with the model.

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use strata_kv::bitcask::{Bitcask, BitcaskOptions, MergeTrigger};
use strata_kv::fs::{CrashMode, MemFs};
use strata_kv::{WriteBatch, WriteOptions};

#[derive(Debug, Clone)]
enum Op {
    Put(u16, Vec<u8>),
    Delete(u16),
    Batch(Vec<(u16, Option<Vec<u8>>)>),
    Get(u16),
    Keys,
    Iter,
    Merge,
    Flush,
    /// Give the background merge thread a chance to run.
    Pause,
    Reopen,
    Crash,
}

fn key(k: u16) -> Vec<u8> {
    format!("k{:03}", k % 150).into_bytes()
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..40),
        1 => proptest::collection::vec(any::<u8>(), 200..900),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (any::<u16>(), value()).prop_map(|(k, v)| Op::Put(k, v)),
        10 => any::<u16>().prop_map(Op::Delete),
        6 => proptest::collection::vec((any::<u16>(), proptest::option::of(value())), 1..12)
            .prop_map(Op::Batch),
        15 => any::<u16>().prop_map(Op::Get),
        2 => Just(Op::Keys),
        2 => Just(Op::Iter),
        2 => Just(Op::Merge),
        1 => Just(Op::Flush),
        2 => Just(Op::Pause),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

fn options(fs: &MemFs) -> BitcaskOptions {
    BitcaskOptions {
        fs: Arc::new(fs.clone()),
        max_file_size: 4096,
        merge_trigger: MergeTrigger {
            auto: true,
            min_dead_ratio: 0.3,
            min_dead_bytes: 2048,
        },
        merge_check_interval: Duration::from_millis(1),
        ..BitcaskOptions::default()
    }
}

fn check_all(db: &Bitcask, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    let got: BTreeMap<_, _> = db.iter().collect::<Result<_, _>>().expect("iter");
    assert_eq!(&got, model);
    let keys: BTreeSet<_> = db.keys().into_iter().collect();
    assert_eq!(keys, model.keys().cloned().collect::<BTreeSet<_>>());
    assert_eq!(db.stats().keys, model.len() as u64);
}

fn run(ops: Vec<Op>) {
    let fs = MemFs::new();
    let dir = Path::new("/bc");
    let mut db = Some(Bitcask::open(dir, options(&fs)).expect("open"));
    let mut model = BTreeMap::new();
    for op in ops {
        let d = db.as_ref().expect("open store");
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
                let sync = entries.len() % 2 == 0;
                d.write(b, WriteOptions { sync }).expect("write");
                for (k, v) in entries {
                    match v {
                        Some(v) => model.insert(key(k), v),
                        None => model.remove(&key(k)),
                    };
                }
            }
            Op::Get(k) => assert_eq!(d.get(key(k)).expect("get"), model.get(&key(k)).cloned()),
            Op::Keys | Op::Iter => check_all(d, &model),
            Op::Merge => {
                d.merge().expect("merge");
                let s = d.stats();
                assert_eq!(s.tombstones, 0, "a full merge drops every tombstone");
                check_all(d, &model);
            }
            Op::Flush => d.flush().expect("flush"),
            Op::Pause => std::thread::sleep(Duration::from_millis(3)),
            Op::Reopen => {
                db.take().expect("db").close().expect("close");
                db = Some(Bitcask::open(dir, options(&fs)).expect("reopen"));
            }
            Op::Crash => {
                db.take().expect("db").abandon();
                fs.crash(CrashMode::KeepAll);
                db = Some(Bitcask::open(dir, options(&fs)).expect("reopen after crash"));
            }
        }
    }
    let d = db.take().expect("db");
    check_all(&d, &model);
    assert!(d.stats().last_merge_error.is_none());
    d.close().expect("close");
    let d = Bitcask::open(dir, options(&fs)).expect("final reopen");
    check_all(&d, &model);
    d.merge().expect("final merge");
    check_all(&d, &model);
    d.close().expect("close");
    let d = Bitcask::open(dir, options(&fs)).expect("reopen after merge");
    check_all(&d, &model);
    let r = d.recovery_report();
    assert!(r.bad_hints.is_empty() && r.skipped.is_empty() && r.torn_tail.is_none());
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x4249_5443),
        ..ProptestConfig::default()
    })]

    #[test]
    fn bitcask_agrees_with_btreemap(ops in proptest::collection::vec(op(), 1..400)) {
        run(ops);
    }
}
