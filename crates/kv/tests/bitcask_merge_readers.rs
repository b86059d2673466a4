//! Merges while readers and a writer run: no read of a live key ever returns `None`, a
//! wrong value or an older value than one the same reader already saw.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use strata_kv::bitcask::format::FILE_HEADER_SIZE;
use strata_kv::bitcask::{Bitcask, BitcaskOptions, MergeTrigger};
use strata_kv::fs::MemFs;
use strata_kv::{WriteBatch, WriteOptions};

const KEYS: u64 = 500;
const READERS: usize = 4;

fn key(k: u64) -> String {
    format!("key{k:05}")
}

fn value(k: u64, version: u64) -> String {
    format!("{}:{version:08}:{}", key(k), "v".repeat((k % 50) as usize))
}

fn version_of(k: u64, v: &[u8]) -> u64 {
    let s = String::from_utf8(v.to_vec()).expect("utf8");
    let mut parts = s.split(':');
    assert_eq!(parts.next(), Some(key(k).as_str()), "value of another key");
    parts.next().expect("version").parse().expect("number")
}

#[test]
fn merge_while_readers_run_never_misses_a_live_key() {
    let fs = MemFs::new();
    let opts = BitcaskOptions {
        fs: Arc::new(fs.clone()),
        max_file_size: 8 * 1024,
        merge_trigger: MergeTrigger {
            auto: true,
            min_dead_ratio: 0.2,
            min_dead_bytes: 4096,
        },
        merge_check_interval: Duration::from_millis(2),
        ..BitcaskOptions::default()
    };
    let db = Arc::new(Bitcask::open("/bc", opts).expect("open"));
    for k in 0..KEYS {
        db.put(key(k), value(k, 0)).expect("put");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for r in 0..READERS {
        let (db, stop, reads) = (db.clone(), stop.clone(), reads.clone());
        threads.push(std::thread::spawn(move || {
            let mut seen: HashMap<u64, u64> = HashMap::new();
            let mut k = r as u64 * 97;
            while !stop.load(Ordering::Relaxed) {
                k = (k * 31 + 7) % KEYS;
                let v = db
                    .get(key(k))
                    .expect("get")
                    .unwrap_or_else(|| panic!("live key {k} read as missing"));
                let ver = version_of(k, &v);
                let last = seen.entry(k).or_insert(0);
                assert!(ver >= *last, "key {k}: version {ver} after {last}");
                *last = ver;
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // A writer overwrites keys (creating dead bytes) in singles and batches.
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut version = 1;
            while !stop.load(Ordering::Relaxed) {
                let mut b = WriteBatch::new();
                for j in 0..5 {
                    let k = (version * 13 + j * 101) % KEYS;
                    b.put(key(k), value(k, version));
                }
                db.write(b, WriteOptions::default()).expect("write");
                let k = (version * 7) % KEYS;
                db.put(key(k), value(k, version)).expect("put");
                version += 1;
            }
            version
        })
    };
    for _ in 0..30 {
        db.merge().expect("explicit merge");
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("reader");
    }
    writer.join().expect("writer");
    let s = db.stats();
    assert!(s.merges >= 30, "{s:?}");
    assert!(reads.load(Ordering::Relaxed) > 1000);
    assert_eq!(s.keys, KEYS);
    assert!(s.last_merge_error.is_none(), "{s:?}");
    // Merged-away files are gone once no reader holds them.
    let db = Arc::try_unwrap(db).ok().expect("sole owner");
    db.close().expect("close");
    // An active file the writer rolled over to but never wrote holds only its header:
    // recovery drops it, it was never live data.
    let data_files = fs
        .paths()
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".data"))
        .filter(|p| fs.file_len(p).is_ok_and(|n| n > FILE_HEADER_SIZE as u64))
        .count();
    let reopened = Bitcask::open(
        "/bc",
        BitcaskOptions {
            fs: Arc::new(fs.clone()),
            ..BitcaskOptions::default()
        },
    )
    .expect("reopen");
    assert_eq!(reopened.stats().keys, KEYS);
    assert_eq!(reopened.stats().files as usize, data_files + 1);
}

/// The same on the real filesystem, where a read handle's length is fixed when it is
/// opened: merges (background and explicit) and reopens keep every key.
#[test]
fn merges_on_disk_keep_every_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = BitcaskOptions {
        max_file_size: 16 * 1024,
        merge_trigger: MergeTrigger {
            auto: true,
            min_dead_ratio: 0.2,
            min_dead_bytes: 4096,
        },
        merge_check_interval: Duration::from_millis(1),
        ..BitcaskOptions::default()
    };
    let mut model = std::collections::BTreeMap::new();
    for round in 0..4u64 {
        let db = Bitcask::open(dir.path(), opts.clone()).expect("open");
        for i in 0..3000u64 {
            let k = (i * 7 + round) % KEYS;
            if i % 11 == 0 {
                db.delete(key(k)).expect("delete");
                model.remove(&key(k).into_bytes());
            } else {
                db.put(key(k), value(k, round * 10_000 + i)).expect("put");
                model.insert(
                    key(k).into_bytes(),
                    value(k, round * 10_000 + i).into_bytes(),
                );
            }
        }
        if round % 2 == 1 {
            db.merge().expect("merge");
        }
        let got: std::collections::BTreeMap<_, _> =
            db.iter().collect::<Result<_, _>>().expect("iter");
        assert_eq!(got, model, "round {round}");
        assert!(db.stats().last_merge_error.is_none());
        db.close().expect("close");
    }
    let db = Bitcask::open(dir.path(), opts).expect("open");
    let got: std::collections::BTreeMap<_, _> = db.iter().collect::<Result<_, _>>().expect("iter");
    assert_eq!(got, model);
    assert!(db.recovery_report().files_from_hints > 0);
}
