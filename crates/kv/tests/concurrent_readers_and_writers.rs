//! Many writers and readers at once, with flushes going on underneath: every read sees a
//! value that was written, per-key values never go backwards, scans stay sorted, and
//! nothing deadlocks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_kv::{Db, Options, WriteBatch, WriteOptions};

const WRITERS: u64 = 4;
const READERS: u64 = 4;
const KEYS_PER_WRITER: u64 = 200;

fn parse(v: &[u8]) -> (u64, u64) {
    let s = std::str::from_utf8(v).expect("utf8 value");
    let (w, n) = s.split_once(':').expect("value format");
    (
        w.parse().expect("writer"),
        n.split('|').next().expect("n").parse().expect("counter"),
    )
}

#[test]
fn readers_and_writers_run_concurrently_without_anomalies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options {
        write_buffer_size: 64 * 1024,
        ..Options::default()
    };
    opts.table.block_size = 1024;
    let db = Arc::new(Db::open(dir.path(), opts).expect("open"));
    let stop = Arc::new(AtomicBool::new(false));
    // Highest counter each writer has had acknowledged.
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let deadline = Instant::now() + Duration::from_secs(3);

    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let (db, stop, acked) = (db.clone(), stop.clone(), acked.clone());
        handles.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut b = WriteBatch::new();
                // Two keys per batch: they must always be seen with the same counter.
                let k = n % KEYS_PER_WRITER;
                let v = format!("{w}:{n}|{}", "p".repeat((n % 64) as usize));
                b.put(format!("w{w}/k{k:04}/a"), &v)
                    .put(format!("w{w}/k{k:04}/b"), &v);
                db.write(
                    b,
                    WriteOptions {
                        sync: n.is_multiple_of(50),
                    },
                )
                .expect("write");
                acked[w as usize].store(n, Ordering::Release);
            }
            n
        }));
    }
    let mut readers = Vec::new();
    for r in 0..READERS {
        let (db, stop) = (db.clone(), stop.clone());
        readers.push(std::thread::spawn(move || {
            let mut reads = 0u64;
            let mut last_seen = vec![0u64; (WRITERS * KEYS_PER_WRITER) as usize];
            let mut i = r;
            while !stop.load(Ordering::Relaxed) {
                i = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let w = (i >> 33) % WRITERS;
                let k = (i >> 17) % KEYS_PER_WRITER;
                if let Some(v) = db.get(format!("w{w}/k{k:04}/a")).expect("get") {
                    let (vw, vn) = parse(&v);
                    assert_eq!(vw, w);
                    assert_eq!(vn % KEYS_PER_WRITER, k, "value written for another key");
                    let slot = &mut last_seen[(w * KEYS_PER_WRITER + k) as usize];
                    assert!(vn >= *slot, "value went backwards: {vn} < {slot}");
                    *slot = vn;
                }
                if reads.is_multiple_of(200) {
                    let mut prev: Option<Vec<u8>> = None;
                    let mut pending_a: Option<(Vec<u8>, Vec<u8>)> = None;
                    for item in db.prefix(format!("w{w}/")) {
                        let (key, val) = item.expect("scan");
                        if let Some(p) = &prev {
                            assert!(p < &key, "scan out of order");
                        }
                        // A batch is atomic: "a" and "b" of a key carry the same value in
                        // one consistent scan.
                        if key.ends_with(b"/a") {
                            pending_a = Some((key.clone(), val));
                        } else if let Some((ka, va)) = pending_a.take() {
                            assert_eq!(&ka[..ka.len() - 1], &key[..key.len() - 1]);
                            assert_eq!(va, val, "batch seen half-applied in a scan");
                        }
                        prev = Some(key);
                    }
                }
                reads += 1;
            }
            reads
        }));
    }
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let written: u64 = handles.into_iter().map(|h| h.join().expect("writer")).sum();
    let reads: u64 = readers.into_iter().map(|h| h.join().expect("reader")).sum();
    assert!(
        written > 100 && reads > 100,
        "too little work: {written} writes, {reads} reads"
    );
    let stats = db.stats();
    assert!(stats.flushes > 0, "expected flushes underneath: {stats:?}");

    // Every writer's last acknowledged value is there, also after a reopen.
    let check = |db: &Db| {
        for w in 0..WRITERS {
            let n = acked[w as usize].load(Ordering::Acquire);
            let k = n % KEYS_PER_WRITER;
            let v = db
                .get(format!("w{w}/k{k:04}/b"))
                .expect("get")
                .expect("present");
            assert_eq!(parse(&v), (w, n));
        }
    };
    check(&db);
    Arc::try_unwrap(db)
        .ok()
        .expect("sole owner")
        .close()
        .expect("close");
    let db = Db::open(dir.path(), Options::default()).expect("reopen");
    check(&db);
}
