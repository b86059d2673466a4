//! Regression tests for races between flushes, compactions, range deletes and power loss,
//! forced with filesystem "gates" that hold one operation until the test releases it.

mod common;

use std::path::Path;
use strata_kv::fs::{CrashMode, MemFs};
use strata_kv::options::WriteOptions;
use strata_kv::{Db, WriteBatch};

fn opts(fs: &MemFs) -> strata_kv::Options {
    let mut o = common::small_options(fs);
    o.compaction.disable_auto = true;
    o
}

/// compact_range(lo..) picks L0 tables by `largest >= lo` only (no transitive overlap), so
/// a newer L0 table moves to L1 while an older, overlapping L0 table stays above it.
#[test]
fn unbounded_compact_range_keeps_newer_l0_data_on_top() {
    let fs = MemFs::new();
    let db = Db::open(Path::new("/db"), opts(&fs)).unwrap();
    // Older table X: keys a, b(old), c  -> range [a, c]
    db.put("a", "1").unwrap();
    db.put("b", "old").unwrap();
    db.put("c", "1").unwrap();
    db.flush().unwrap();
    // Newer table C: keys b(new), z -> range [b, z]
    db.put("b", "new").unwrap();
    db.put("z", "1").unwrap();
    db.flush().unwrap();
    assert_eq!(db.get("b").unwrap().as_deref(), Some(&b"new"[..]));
    // Only C has largest >= "m".
    db.compact_range("m"..).unwrap();
    eprintln!("files per level: {:?}", db.stats().files_per_level);
    assert_eq!(
        db.get("b").unwrap().as_deref(),
        Some(&b"new"[..]),
        "stale value resurrected"
    );
}

#[path = "common/hookfs.rs"]
mod hookfs;

fn hook_opts(fs: &hookfs::HookFs) -> strata_kv::Options {
    let mut o = common::small_options(&fs.inner);
    o.fs = std::sync::Arc::new(fs.clone());
    o.compaction.disable_auto = true;
    o
}

/// drop_tables_in_range checks `compacting` under `state`, releases it for the manifest
/// append, then installs. A compaction that picks the same table in that window later
/// appends an edit deleting a file that is no longer live: the manifest is poisoned.
#[test]
fn range_delete_racing_compaction_keeps_manifest_consistent() {
    let fs = hookfs::HookFs::default();
    let dir = Path::new("/db");
    let db = std::sync::Arc::new(Db::open(dir, hook_opts(&fs)).unwrap());
    // L1: T = [k1, k2] and U = [u1, u2].
    db.put("k1", "v").unwrap();
    db.put("k2", "v").unwrap();
    db.compact_range::<&str>(..).unwrap();
    db.put("u1", "v").unwrap();
    db.put("u2", "v").unwrap();
    db.flush().unwrap();
    db.compact_range("t"..="v").unwrap();
    assert_eq!(
        db.stats().files_per_level[1],
        2,
        "{:?}",
        db.stats().files_per_level
    );

    // M1: rewrites U in place; blocked creating its output, then fails.
    fs.sst_create.arm(true);
    let m1 = {
        let db = db.clone();
        std::thread::spawn(move || db.compact_range("t"..="v"))
    };
    fs.sst_create.wait_blocked();
    // M2: wants T and U; U is busy, so it waits on bg_cv.
    let m2 = {
        let db = db.clone();
        std::thread::spawn(move || db.compact_range("a"..="z"))
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    // D: delete_range drops T (not busy); blocked in the manifest sync.
    fs.manifest_sync.arm(false);
    let d = {
        let db = db.clone();
        std::thread::spawn(move || db.delete_range("k", "l"))
    };
    fs.manifest_sync.wait_blocked();
    // M1 fails -> U free -> M2 picks T and U (T is still in the version).
    fs.sst_create.release();
    let r1 = m1.join().unwrap();
    eprintln!("M1: {r1:?}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    fs.manifest_sync.release();
    let rd = d.join().unwrap();
    let r2 = m2.join().unwrap();
    eprintln!("D: {rd:?}\nM2: {r2:?}");
    let db = std::sync::Arc::try_unwrap(db).ok().unwrap();
    db.close().unwrap();
    let reopened = Db::open(dir, hook_opts(&fs));
    assert!(
        reopened.is_ok(),
        "database no longer opens: {:?}",
        reopened.err()
    );
    assert!(r2.is_ok(), "manual compaction failed: {r2:?}");
}

/// switch_memtable only flushes (never syncs) the old WAL segment. A later sync write to
/// the new segment makes it durable while the old one's tail is not: after a power loss
/// recovery sees "damaged tail followed by records in a later segment" and refuses to open
/// (and acknowledged writes before the synced one would be lost anyway).
#[test]
fn synced_write_after_memtable_switch_survives_power_loss() {
    let fs = hookfs::HookFs::default();
    let dir = Path::new("/db");
    let db = Db::open(dir, hook_opts(&fs)).unwrap();
    // Keep the flush thread from writing the frozen memtable (and deleting its WAL).
    fs.sst_create.arm(false);
    let mut i = 0;
    while db.stats().immutable_memtables == 0 {
        db.put(format!("key{i:06}"), vec![b'x'; 100]).unwrap();
        i += 1;
    }
    fs.sst_create.wait_blocked();
    let mut b = WriteBatch::new();
    b.put("synced", "yes");
    db.write(b, WriteOptions { sync: true }).unwrap();
    let files = common::snapshot_files(&fs.inner, CrashMode::DropUnsynced);
    fs.sst_create.release();
    db.abandon();
    let fs2 = common::restore_files(dir, &files);
    let db2 = Db::open(dir, opts(&fs2));
    let db2 = match db2 {
        Ok(db) => db,
        Err(e) => panic!("cannot reopen after power loss: {e:?}"),
    };
    assert_eq!(db2.get("synced").unwrap().as_deref(), Some(&b"yes"[..]));
    assert!(
        db2.get("key000000").unwrap().is_some(),
        "writes before a synced write lost"
    );
}

/// Only input tables are marked busy. An automatic L0->L1 compaction takes all L0 tables,
/// whose key ranges may leave gaps; a manual compaction of an L0 table flushed later into
/// such a gap runs concurrently, and both install L1 tables with overlapping ranges.
#[test]
fn compactions_into_one_level_never_overlap() {
    let fs = hookfs::HookFs::default();
    let dir = Path::new("/db");
    let mut o = hook_opts(&fs);
    o.compaction.disable_auto = false;
    o.compaction.l0_trigger = 2;
    o.compaction.background_threads = 1;
    let db = std::sync::Arc::new(Db::open(dir, o).unwrap());
    db.put("a", "1").unwrap();
    db.put("c", "1").unwrap();
    db.flush().unwrap(); // L0: A = [a, c]
                         // Let B's flush through, block the automatic compaction's first output.
    fs.sst_create.arm_after(1, false);
    // B overlaps A ("b"), so that {A, B} is merged, not moved down as disjoint tables are.
    db.put("b", "1").unwrap();
    db.put("g", "1").unwrap();
    db.put("h", "1").unwrap();
    db.flush().unwrap(); // L0: B = [b, h] -> auto compaction of {A, B} starts
    fs.sst_create.wait_blocked();
    db.put("d", "1").unwrap();
    db.put("e", "1").unwrap();
    db.flush().unwrap(); // L0: X = [d, e], in the gap
                         // X -> L1 would overlap what {A, B} -> L1 (still running) writes: it must wait for it
                         // rather than run alongside.
    let manual = {
        let db = db.clone();
        std::thread::spawn(move || db.compact_range("d"..="e"))
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    fs.sst_create.release();
    manual.join().unwrap().unwrap();
    // Wait for the automatic compaction to install.
    for _ in 0..200 {
        if db.stats().files_per_level[0] == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    eprintln!("files per level: {:?}", db.stats().files_per_level);
    for k in ["a", "b", "c", "d", "e", "g", "h"] {
        assert_eq!(
            db.get(k).unwrap().as_deref(),
            Some(&b"1"[..]),
            "key {k} lost"
        );
    }
    let keys: Vec<_> = db.scan::<&str>(..).map(|r| r.unwrap().0).collect();
    assert_eq!(keys.len(), 7, "{keys:?}");
}

/// A reader that drops the last handle of tables a compaction replaced does not unlink
/// them itself (on a real disk that frees their cached pages: ~15 ms per 64 MiB table,
/// a stall of the read): the deletion thread does, soon after.
#[test]
fn obsolete_tables_are_deleted_off_the_reader_thread() {
    let fs = hookfs::HookFs::default();
    let db = Db::open(Path::new("/db"), hook_opts(&fs)).unwrap();
    for i in 0..2000u32 {
        db.put(format!("k{i:05}"), format!("v{i}")).unwrap();
    }
    db.flush().unwrap();
    let mut it = db.iter();
    it.seek_to_first().unwrap();
    for i in 0..2000u32 {
        db.put(format!("k{i:05}"), format!("w{i}")).unwrap();
    }
    db.compact_range::<&[u8]>(..).unwrap();
    let sst_removals = |fs: &hookfs::HookFs| {
        let r = fs.removed.lock().unwrap();
        r.iter()
            .filter(|(p, _)| p.ends_with(".sst"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let held = sst_removals(&fs).len();
    // The reader holds the replaced tables; dropping it makes them obsolete.
    std::thread::Builder::new()
        .name("reader".into())
        .spawn(move || {
            assert!(it.valid());
            drop(it);
        })
        .unwrap()
        .join()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sst_removals(&fs).len() == held {
        assert!(std::time::Instant::now() < deadline, "tables never deleted");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let removed = sst_removals(&fs);
    assert!(
        removed.iter().all(|(_, thread)| thread != "reader"),
        "{removed:?}"
    );
    assert!(
        removed[held..]
            .iter()
            .all(|(_, thread)| thread == "strata-delete"),
        "{removed:?}"
    );
    assert_eq!(db.get("k00007").unwrap().as_deref(), Some(&b"w7"[..]));
    db.close().unwrap();
}
