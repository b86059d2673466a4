//! Writers racing each other and flush requests through the write queue: a lone writer
//! leads at once, queued ones are committed in groups by whoever leads; every acknowledged
//! write is readable, in the WAL after a reopen, and sequence numbers are never reused.

use std::sync::Arc;
use strata_kv::{Db, Options, WriteBatch, WriteOptions};

const WRITERS: u64 = 6;
const WRITES: u64 = 400;

#[test]
fn concurrent_writers_and_flushes_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        write_buffer_size: 32 * 1024,
        ..Options::default()
    };
    let db = Arc::new(Db::open(dir.path(), opts.clone()).expect("open"));
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let db = db.clone();
        handles.push(std::thread::spawn(move || {
            for i in 0..WRITES {
                let key = format!("w{w}-{i:05}");
                if i % 3 == 0 {
                    // Two entries in one batch, sometimes synced.
                    let mut b = WriteBatch::new();
                    b.put(&key, format!("{w}:{i}"));
                    b.put(format!("{key}-b"), "b");
                    let sync = i % 30 == 0;
                    db.write(b, WriteOptions { sync }).expect("write");
                } else {
                    db.put(&key, format!("{w}:{i}")).expect("put");
                }
                if w == 0 && i % 50 == 0 {
                    db.flush().expect("flush");
                }
            }
        }));
    }
    for h in handles {
        h.join().expect("writer");
    }
    let expected = WRITERS * WRITES + WRITERS * WRITES.div_ceil(3);
    let check = |db: &Db| {
        for w in 0..WRITERS {
            for i in 0..WRITES {
                let key = format!("w{w}-{i:05}");
                let v = db.get(&key).expect("get");
                assert_eq!(v.as_deref(), Some(format!("{w}:{i}").as_bytes()), "{key}");
            }
        }
        let mut it = db.iter();
        it.seek_to_first().expect("seek");
        let mut n = 0u64;
        while it.valid() {
            n += 1;
            it.next().expect("next");
        }
        assert_eq!(n, expected);
    };
    check(&db);
    // Every entry took its own sequence number.
    assert_eq!(db.stats().last_sequence, expected);
    let db = Arc::try_unwrap(db).ok().expect("sole owner");
    db.close().expect("close");
    let db = Db::open(dir.path(), opts).expect("reopen");
    check(&db);
}
