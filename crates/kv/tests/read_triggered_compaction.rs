//! Read-triggered compaction: reads that look past an L0 table charge it, and once its
//! allowance is used up L0 is compacted into L1, leaving reads one sorted run fewer.

mod common;

use std::path::Path;
use std::time::Duration;
use strata_kv::compaction::read_allowance;
use strata_kv::fs::MemFs;
use strata_kv::{CompressionType, Db, DbStats, Options};

fn options(fs: &MemFs, read_triggered: bool) -> Options {
    let mut o = common::small_options(fs);
    // Nothing flushes or compacts by size unless the test asks.
    o.write_buffer_size = 64 << 20;
    o.table.compression = CompressionType::None;
    o.compaction.l0_trigger = 8;
    o.compaction.level1_max_bytes = 256 << 20;
    o.compaction.read_triggered = read_triggered;
    o
}

fn key(k: u32) -> String {
    format!("key{k:08}")
}

/// Sorted runs on disk: each L0 table, and each deeper level holding tables.
fn sorted_runs(s: &DbStats) -> usize {
    s.files_per_level[0] + s.files_per_level[1..].iter().filter(|&&n| n > 0).count()
}

/// `keys` keys in L1, then every `step`-th of them overwritten in one L0 table.
fn l0_over_l1(o: Options, keys: u32, step: u32) -> Db {
    let db = Db::open(Path::new("/db"), o).expect("open");
    for k in 0..keys {
        db.put(key(k), common::noise_value(0, k)).expect("put");
    }
    db.flush().expect("flush");
    db.compact_range::<&[u8]>(..).expect("compact");
    for k in (0..keys).step_by(step as usize) {
        db.put(key(k), common::noise_value(1, k)).expect("put");
    }
    db.flush().expect("flush");
    let s = db.stats();
    assert_eq!(s.files_per_level[0], 1, "{s:?}");
    assert_eq!(sorted_runs(&s), 2, "{s:?}");
    db
}

/// The L0 table's allowance: its bytes and L1's (everything is in L1 and overlaps it).
fn allowance(s: &DbStats) -> i64 {
    assert_eq!(
        s.files_per_level[2..].iter().sum::<usize>(),
        0,
        "all below L0 in L1: {s:?}"
    );
    read_allowance(s.bytes_per_level[0] + s.bytes_per_level[1])
}

fn wait_for(db: &Db, done: impl Fn(&DbStats) -> bool) -> DbStats {
    for _ in 0..1000 {
        let s = db.stats();
        if done(&s) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    db.stats()
}

#[test]
fn point_reads_past_l0_compact_it_after_exactly_its_allowance() {
    let fs = MemFs::new();
    let db = l0_over_l1(options(&fs, true), 20_000, 2);
    let before = db.stats();
    let allowed = allowance(&before);
    assert!(allowed > 100, "{allowed}");
    // Even keys are found in L0 (one run consulted: no charge); odd keys are looked up in
    // L0 (filter) and then in L1: one charge each.
    for k in 0..10_000u32 {
        assert_eq!(
            db.get(key(2 * k)).expect("get"),
            Some(common::noise_value(1, 2 * k))
        );
    }
    for k in 0..allowed as u32 - 1 {
        assert_eq!(
            db.get(key(2 * k + 1)).expect("get"),
            Some(common::noise_value(0, 2 * k + 1))
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    let s = db.stats();
    assert_eq!(s.compactions, before.compactions, "{s:?}");
    assert_eq!(s.files_per_level[0], 1, "{s:?}");
    // The last charge.
    assert_eq!(
        db.get(key(1)).expect("get"),
        Some(common::noise_value(0, 1))
    );
    let s = wait_for(&db, |s| {
        s.files_per_level[0] == 0 && s.compactions_running == 0
    });
    assert_eq!(s.read_triggered_compactions, 1, "{s:?}");
    assert_eq!(s.compactions, before.compactions + 1, "{s:?}");
    assert_eq!(sorted_runs(&s), 1, "{s:?}");
    for k in (0..20_000u32).step_by(97) {
        let round = u32::from(k % 2 == 0);
        assert_eq!(
            db.get(key(k)).expect("get"),
            Some(common::noise_value(round, k))
        );
    }
}

#[test]
fn disabled_reads_compact_nothing() {
    let fs = MemFs::new();
    let db = l0_over_l1(options(&fs, false), 20_000, 2);
    let before = db.stats();
    let allowed = allowance(&before);
    for i in 0..10 * allowed as u32 {
        let k = 2 * (i % 10_000) + 1;
        assert_eq!(
            db.get(key(k)).expect("get"),
            Some(common::noise_value(0, k))
        );
    }
    for _ in 0..20 {
        assert_eq!(db.scan::<&[u8]>(..).count(), 20_000);
    }
    std::thread::sleep(Duration::from_millis(200));
    let s = db.stats();
    assert_eq!(s.compactions, before.compactions, "{s:?}");
    assert_eq!(s.read_triggered_compactions, 0, "{s:?}");
    assert_eq!(sorted_runs(&s), 2, "{s:?}");
}

#[test]
fn scans_over_l0_and_l1_trigger_by_sampling() {
    let fs = MemFs::new();
    let db = l0_over_l1(options(&fs, true), 20_000, 2);
    let before = db.stats();
    let allowed = allowance(&before);
    // ~2.3 MB a scan: about two samples, each charging the L0 table 16 (every key is
    // covered by L0 and L1).
    let per_scan = 2.3 * 16.0;
    let mut scans = 0;
    // Until the compaction starts (nothing else compacts here): scans while it runs, a
    // long time on a loaded machine, were not what triggered it.
    let triggered = |s: &DbStats| s.read_triggered_compactions > 0 || s.compactions_running > 0;
    while !triggered(&db.stats()) && scans < 1000 {
        let n = if scans % 2 == 0 {
            db.scan::<&[u8]>(..).count()
        } else {
            db.scan_rev::<&[u8]>(..).count()
        };
        assert_eq!(n, 20_000);
        scans += 1;
    }
    let s = wait_for(&db, |s| {
        s.files_per_level[0] == 0 && s.compactions_running == 0
    });
    assert_eq!(s.read_triggered_compactions, 1, "{s:?}");
    assert_eq!(sorted_runs(&s), 1, "{s:?}");
    // Sampled: neither the first scan nor many times the expected number.
    let expected = allowed as f64 / per_scan;
    assert!(
        scans > 1 && (scans as f64) < 3.0 * expected + 3.0,
        "{scans} scans for an allowance of {allowed}"
    );
    // Once compacted, scans charge nothing more (one run).
    for _ in 0..20 {
        assert_eq!(db.scan::<&[u8]>(..).count(), 20_000);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(db.stats().compactions, s.compactions);
}

/// A read-mostly database with a trickle of writes: each small flush is read past fewer
/// times than rewriting L1 is worth, so none is compacted by reads (an allowance from the
/// table's own size, as LevelDB's, would compact L1 after every one of these flushes).
#[test]
fn a_trickle_of_flushes_under_reads_does_not_rewrite_l1_each_time() {
    let fs = MemFs::new();
    let o = options(&fs, true);
    let db = Db::open(Path::new("/db"), o).expect("open");
    const KEYS: u32 = 40_000;
    for k in 0..KEYS {
        db.put(key(k), common::noise_value(0, k)).expect("put");
    }
    db.flush().expect("flush");
    db.compact_range::<&[u8]>(..).expect("compact");
    let before = db.stats();
    let l1 = before.bytes_per_level[1];
    assert!(l1 > 4 << 20, "{before:?}");
    let reads_per_flush = 200u32;
    for round in 1..=6u32 {
        // 100 writes spread over the key range, then a flush: a small L0 table.
        for k in (0..KEYS).step_by(400) {
            db.put(key(k + round), common::noise_value(round, k + round))
                .expect("put");
        }
        db.flush().expect("flush");
        let s = db.stats();
        let newest = s.bytes_per_level[0] / s.files_per_level[0] as u64;
        assert!(
            read_allowance(newest) < reads_per_flush as i64,
            "the table alone would be compacted: {s:?}"
        );
        // Keys this flush did not write: each read looks past the new table.
        for i in 0..reads_per_flush {
            let k = i * 199 + 7;
            assert!(db.get(key(k)).expect("get").is_some());
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let s = db.stats();
    assert_eq!(s.read_triggered_compactions, 0, "{s:?}");
    assert_eq!(
        s.compaction_bytes_written, before.compaction_bytes_written,
        "{s:?}"
    );
    assert_eq!(s.files_per_level[0], 6, "{s:?}");
    // Still bounded, not off: enough reads past the newest table do compact.
    let allowed = read_allowance(s.bytes_per_level[0] / 6 + l1);
    for i in 0..allowed as u32 {
        let k = (i * 199 + 7) % KEYS;
        let _ = db.get(key(k)).expect("get");
    }
    let s = wait_for(&db, |s| {
        s.files_per_level[0] == 0 && s.compactions_running == 0
    });
    assert_eq!(s.read_triggered_compactions, 1, "{s:?}");
}
