//! Point seeks as `seekrandom` does them (a new iterator per seek, one `seek`, one entry
//! read) against a `BTreeMap`, on a database whose keys are spread over the memtable, L0
//! tables and deeper levels, with overwrites, deletes, a range delete and a snapshot: the
//! fast paths of a seek (inline seek key, the block's interval scan, the table handle's
//! cached table, lazy level cursors) must land where the model says, for keys present
//! and absent.

mod common;

use std::collections::BTreeMap;
use std::ops::Bound::{Included, Unbounded};
use std::path::Path;
use std::sync::Arc;
use strata_kv::fs::{MemFs, PosixFs};
use strata_kv::{Db, Options};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Key `i`; odd `i` are never written, so seeks for them fall between keys.
fn key(i: u32) -> Vec<u8> {
    format!("key{i:07}").into_bytes()
}

/// A fixed-seed generator (xorshift), so that a failure repeats.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % u64::from(n)) as u32
    }
}

/// Seeks a fresh cursor of `iter` to every even and odd key in `0..n` (and past the end)
/// and compares the entry found with the model's first entry at or after the key; then,
/// from every seventh seek, steps a few entries forward or back (the cursors of sources
/// the seek left lazy must settle where the model says).
fn check_point_seeks(iter: impl Fn() -> strata_kv::DbIterator, model: &Model, n: u32) {
    let keys: Vec<&Vec<u8>> = model.keys().collect();
    for i in 0..=n {
        let k = key(i);
        let mut it = iter();
        it.seek(&k).expect("seek");
        match model.range::<Vec<u8>, _>((Included(&k), Unbounded)).next() {
            Some((mk, mv)) => {
                assert!(it.valid(), "seek {i}: cursor invalid, model at {mk:?}");
                assert_eq!((it.key(), it.value()), (&mk[..], &mv[..]), "seek {i}");
            }
            None => assert!(!it.valid(), "seek {i}: cursor at {:?}", it.key()),
        }
        if i % 7 != 0 || !it.valid() {
            continue;
        }
        let mut at = keys.partition_point(|mk| **mk < k);
        // Forward first or backward first, then the other way past the start.
        let steps: &[bool] = if i % 2 == 0 {
            &[true, true, false, false, false]
        } else {
            &[false, false, true, true, true]
        };
        for (s, &forward) in steps.iter().enumerate() {
            if forward {
                it.next().expect("next");
                at += 1;
            } else {
                it.prev().expect("prev");
                match at.checked_sub(1) {
                    Some(a) => at = a,
                    None => {
                        assert!(!it.valid(), "seek {i}, step {s}");
                        break;
                    }
                }
            }
            match keys.get(at) {
                Some(mk) => {
                    assert!(it.valid(), "seek {i}, step {s}: model at {mk:?}");
                    assert_eq!(
                        (it.key(), it.value()),
                        (&mk[..], &model[*mk][..]),
                        "seek {i}, step {s}"
                    );
                }
                None => {
                    assert!(!it.valid(), "seek {i}, step {s}");
                    break;
                }
            }
        }
    }
}

#[test]
fn point_seeks_agree_with_btreemap_across_levels() {
    let fs = MemFs::new();
    let db = Db::open(Path::new("/db"), common::small_options(&fs)).expect("open");
    seeks_agree_with_btreemap(&db);
    assert_eq!(db.stats().table_cache.mapped_tables, 0);
}

/// The same on disk, tables read through a memory mapping (`Options::mmap_reads`): blocks
/// sliced from the mapping, checksummed, cached as copies.
#[test]
fn point_seeks_and_gets_agree_with_btreemap_through_mapped_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options {
        fs: Arc::new(PosixFs),
        write_buffer_size: 16 * 1024,
        mmap_reads: true,
        // A few blocks: hits, misses and evictions of the copies.
        block_cache_size: 16 * 1024,
        ..Options::default()
    };
    opts.table.block_size = 512;
    let db = Db::open(dir.path().join("db"), opts).expect("open");
    seeks_agree_with_btreemap(&db);
    // The reads above went through mappings, not the fallback to reads.
    assert!(db.stats().table_cache.mapped_tables > 0);
}

fn seeks_agree_with_btreemap(db: &Db) {
    let mut model = Model::new();
    let mut rng = Rng(0x5eed_5eed);
    const N: u32 = 4000;
    let write = |db: &Db, model: &mut Model, rng: &mut Rng, round: u32| {
        for _ in 0..1500 {
            let i = rng.below(N / 2) * 2;
            if rng.below(8) == 0 {
                db.delete(key(i)).expect("delete");
                model.remove(&key(i));
            } else {
                let v = format!("v{round}-{i}-{}", "x".repeat(rng.below(60) as usize));
                db.put(key(i), v.as_bytes()).expect("put");
                model.insert(key(i), v.into_bytes());
            }
        }
    };
    // Older data pushed down the levels, newer data in L0 tables, the newest in the
    // memtable.
    write(db, &mut model, &mut rng, 0);
    db.compact_range::<&[u8]>(..).expect("compact");
    write(db, &mut model, &mut rng, 1);
    db.flush().expect("flush");
    let snapshot = db.snapshot();
    let at_snapshot = model.clone();
    write(db, &mut model, &mut rng, 2);
    db.flush().expect("flush");
    let (lo, hi) = (key(1000), key(1300));
    db.delete_range(&lo, &hi).expect("delete_range");
    model.retain(|k, _| !(*k >= lo && *k < hi));
    write(db, &mut model, &mut rng, 3);

    check_point_seeks(|| db.iter(), &model, N);
    check_point_seeks(|| snapshot.iter(), &at_snapshot, N);
    drop(snapshot);
    // Everything in tables, then everything in one level.
    db.flush().expect("flush");
    check_point_seeks(|| db.iter(), &model, N);
    db.compact_range::<&[u8]>(..).expect("compact");
    check_point_seeks(|| db.iter(), &model, N);
    for i in 0..=N {
        let got = db.get(key(i)).expect("get");
        assert_eq!(got.as_ref(), model.get(&key(i)), "get {i}");
    }
}
