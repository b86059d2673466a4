//! `Db::checkpoint`: a consistent, openable copy made while writes go on, sharing the
//! immutable tables by hard link.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use strata_kv::{Db, Options};

fn options() -> Options {
    let mut o = Options {
        write_buffer_size: 64 * 1024,
        ..Options::default()
    };
    o.table.block_size = 1024;
    o
}

#[test]
fn checkpoint_during_writes_holds_everything_acknowledged_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Db::open(dir.path().join("db"), options()).expect("open"));
    for i in 0..5000u64 {
        db.put(format!("k{i:08}"), format!("v{i}")).expect("put");
    }
    db.flush().expect("flush");
    db.delete_range("k00000000", "k00000100")
        .expect("delete_range");

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(5000));
    let writer = {
        let (db, stop, acked) = (db.clone(), stop.clone(), acked.clone());
        std::thread::spawn(move || {
            let mut i = acked.load(Ordering::Relaxed);
            while !stop.load(Ordering::Relaxed) && i < 60_000 {
                db.put(format!("k{i:08}"), format!("v{i}")).expect("put");
                i += 1;
                acked.store(i, Ordering::Release);
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    let before = acked.load(Ordering::Acquire);
    let target = dir.path().join("backup");
    db.checkpoint(&target).expect("checkpoint");
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    assert!(
        db.checkpoint(&target).is_err(),
        "a second checkpoint into the same place"
    );

    // Tables are shared, not copied: compare before either database writes new files
    // (both go on numbering new files from the same counter).
    let db_dir = dir.path().join("db");
    let mut shared = 0;
    for e in std::fs::read_dir(&target)
        .expect("ls")
        .filter_map(|e| e.ok())
    {
        if !e.file_name().to_string_lossy().ends_with(".sst") {
            continue;
        }
        let orig = db_dir.join(e.file_name());
        if let (Ok(a), Ok(b)) = (std::fs::metadata(&orig), std::fs::metadata(e.path())) {
            assert_eq!(a.ino(), b.ino(), "table copied instead of hard-linked");
            shared += 1;
        }
    }
    assert!(shared > 0, "no table shared with the checkpoint");

    let copy = Db::open(&target, options()).expect("open checkpoint");
    for i in 100..before {
        assert_eq!(
            copy.get(format!("k{i:08}")).expect("get"),
            Some(format!("v{i}").into_bytes()),
            "key {i} acknowledged before the checkpoint is missing"
        );
    }
    assert_eq!(
        copy.get("k00000050").expect("get"),
        None,
        "range delete kept"
    );
    // Keys form a prefix of what was written: nothing after a gap.
    let n = copy.scan::<&[u8]>(..).count() as u64;
    assert!(n >= before - 100);
    assert_eq!(copy.get(format!("k{:08}", 100 + n)).expect("get"), None);

    // Both live on independently.
    copy.put("only-in-copy", "x").expect("put");
    assert_eq!(db.get("only-in-copy").expect("get"), None);
}
