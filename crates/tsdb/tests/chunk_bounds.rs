//! Chunk bounds ('P' part 'b' ref seq, marked complete by 'P' part 'B'): the series API
//! answers from them exactly what it answers from the chunks themselves, through flushes,
//! out-of-order writes, series that stop and come back, restarts, compaction and deletes;
//! and a version-1 store (no bounds) opens and answers from its chunks.

use std::path::Path;
use std::sync::Arc;

use strata_kv::fs::MemFs;
use strata_tsdb::keys;
use strata_tsdb::{Labels, Matcher, Options, Tsdb};

const PART_MS: i64 = 100_000;

fn options(fs: &MemFs) -> Options {
    let mut o = Options {
        background: false,
        partition_ms: PART_MS,
        max_chunk_samples: 7,
        retention_ms: i64::MAX / 4,
        ..Options::default()
    };
    o.kv.fs = Arc::new(fs.clone());
    o
}

fn series(i: u64) -> Labels {
    Labels::from_pairs([("__name__", "m"), ("i", &i.to_string())]).unwrap()
}

use strata_testkit::XorShift as Rng;

/// Appends bursts of samples: series 0..40, each with its own gaps, some out of order.
fn write(db: &Tsdb, rng: &mut Rng, from: i64, to: i64) {
    let mut app = db.appender();
    for i in 0..40 {
        // Some series skip this round entirely (they leave and come back).
        if rng.below(5) == 0 {
            continue;
        }
        let step = 1_000 + rng.below(9_000) as i64;
        let mut t = from + rng.below(20_000) as i64;
        while t < to {
            app.add(series(i), t, t as f64);
            t += step;
            // A gap now and then.
            if rng.below(10) == 0 {
                t += 30_000;
            }
        }
        if rng.below(4) == 0 {
            // Out of order: before what was just written.
            app.add(series(i), from + 1 + rng.below(5_000) as i64, 1.0);
        }
    }
    app.commit().unwrap();
}

/// The partitions carrying the complete-bounds mark.
fn marked(db: &Tsdb) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for item in db.kv().prefix([keys::PARTITION]) {
        let (k, _) = item.unwrap();
        if k.len() == 10 && k[9] == keys::BOUNDED {
            out.push(k);
        }
    }
    out
}

fn answers(db: &Tsdb, ranges: &[(i64, i64)]) -> Vec<Vec<Labels>> {
    let m = [Matcher::equal("__name__", "m")];
    ranges
        .iter()
        .map(|&(a, b)| db.querier(a, b).series(&m).unwrap())
        .collect()
}

/// The answers from bounds equal the answers from chunks (marks removed, then restored).
fn check(db: &Tsdb, rng: &mut Rng, stage: &str) -> usize {
    let mut ranges: Vec<(i64, i64)> = (0..300)
        .map(|_| {
            let a = rng.below(5 * PART_MS as u64) as i64 - 1_000;
            (a, a + rng.below(40_000) as i64)
        })
        .collect();
    ranges.push((i64::MIN / 2, i64::MAX / 2));
    let with_bounds = answers(db, &ranges);
    let marks = marked(db);
    for k in &marks {
        db.kv().delete(k).unwrap();
    }
    let from_chunks = answers(db, &ranges);
    for k in &marks {
        db.kv().put(k, b"").unwrap();
    }
    for (i, r) in ranges.iter().enumerate() {
        assert_eq!(with_bounds[i], from_chunks[i], "{stage}: range {r:?}");
    }
    marks.len()
}

#[test]
fn series_from_bounds_equal_series_from_chunks() {
    let fs = MemFs::new();
    let dir = Path::new("/b");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut db = Tsdb::open(dir, options(&fs)).unwrap();
    for round in 0..5 {
        let from = round * PART_MS;
        write(&db, &mut rng, from, from + PART_MS / 2);
        db.flush().unwrap();
        write(&db, &mut rng, from + PART_MS / 2, from + PART_MS + 10_000);
        db.flush().unwrap();
        assert!(
            check(&db, &mut rng, "flushed") > 0,
            "new partitions are marked"
        );
    }
    // Reopened: the head knows no persisted chunk.
    db.close().unwrap();
    db = Tsdb::open(dir, options(&fs)).unwrap();
    check(&db, &mut rng, "reopened");
    // Late data into old partitions, then compaction rewrites every chunk.
    write(&db, &mut rng, 30_000, 60_000);
    db.flush().unwrap();
    check(&db, &mut rng, "late data");
    db.compact().unwrap();
    assert!(check(&db, &mut rng, "compacted") >= 5);
    // A delete rewrites chunks: its partitions answer from chunks until recompacted.
    let before = marked(&db).len();
    db.delete_series(&[Matcher::equal("i", "3")], 120_000, 160_000)
        .unwrap();
    db.delete_series(&[Matcher::equal("i", "5")], 0, i64::MAX / 2)
        .unwrap();
    assert!(marked(&db).len() < before);
    check(&db, &mut rng, "deleted");
    db.compact().unwrap();
    assert_eq!(check(&db, &mut rng, "recompacted"), before);
    db.close().unwrap();
}

#[test]
fn a_version_1_store_opens_and_answers_from_its_chunks() {
    let fs = MemFs::new();
    let dir = Path::new("/v1");
    let mut rng = Rng(7);
    let db = Tsdb::open(dir, options(&fs)).unwrap();
    write(&db, &mut rng, 0, 2 * PART_MS);
    db.flush().unwrap();
    let ranges: Vec<(i64, i64)> = (0..100).map(|i| (i * 2_000, i * 2_000 + 3_000)).collect();
    let expected = answers(&db, &ranges);
    // What version 1 wrote: no bounds, no marks.
    for item in db.kv().prefix([keys::PARTITION]) {
        let (k, _) = item.unwrap();
        if k[9] == keys::BOUNDS || k[9] == keys::BOUNDED {
            db.kv().delete(&k).unwrap();
        }
    }
    db.kv().put(keys::META_FORMAT, 1u64.to_le_bytes()).unwrap();
    db.close().unwrap();

    let db = Tsdb::open(dir, options(&fs)).unwrap();
    assert_eq!(
        db.kv().get(keys::META_FORMAT).unwrap(),
        Some(u64::from(keys::FORMAT_VERSION).to_le_bytes().to_vec())
    );
    assert!(marked(&db).is_empty());
    assert_eq!(answers(&db, &ranges), expected);
    // New data into those partitions does not mark them: their old chunks have no bounds.
    write(&db, &mut rng, 50_000, 60_000);
    db.flush().unwrap();
    assert!(marked(&db).is_empty());
    db.close().unwrap();

    // A version this binary does not know is refused.
    let db = Tsdb::open(dir, options(&fs)).unwrap();
    db.kv().put(keys::META_FORMAT, 3u64.to_le_bytes()).unwrap();
    db.close().unwrap();
    assert!(Tsdb::open(dir, options(&fs)).is_err());
}
