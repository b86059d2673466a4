//! Memory held by memtables is bounded by `write_buffer_size x max_write_buffers`: a
//! writer that fills the active memtable while the frozen ones are still being flushed
//! waits rather than starting another, so at most `max_write_buffers - 1` memtables are
//! ever frozen at once (one, by default, as RocksDB's `max_write_buffer_number = 2`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use strata_kv::{Db, Options};

#[test]
fn default_keeps_one_active_and_at_most_one_frozen_memtable() {
    assert_eq!(Options::default().max_write_buffers, 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        write_buffer_size: 16 * 1024,
        ..Options::default()
    };
    let db = Arc::new(Db::open(dir.path(), opts).expect("open"));
    let done = Arc::new(AtomicBool::new(false));
    let most_frozen = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (db, done, most) = (db.clone(), done.clone(), most_frozen.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let s = db.stats();
                most.fetch_max(s.immutable_memtables, Ordering::Relaxed);
                // Never more than one memtable's worth (plus the entry that filled it)
                // frozen on top of the active one.
                assert!(s.immutable_bytes <= 2 * 16 * 1024, "{s:?}");
            }
        })
    };
    let value = vec![b'v'; 200];
    for i in 0..6_000u32 {
        db.put(format!("key{i:08}"), &value).expect("put");
    }
    done.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher");
    assert!(most_frozen.load(Ordering::Relaxed) <= 1);
    let s = db.stats();
    assert!(s.flushes > 10, "{s:?}");
    for i in (0..6_000u32).step_by(97) {
        assert_eq!(
            db.get(format!("key{i:08}")).expect("get").as_deref(),
            Some(&value[..])
        );
    }
}
