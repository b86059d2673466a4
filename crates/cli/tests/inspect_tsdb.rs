//! `strata inspect tsdb|tsdb-wal|chunks` on a real data directory, through the binary.

use std::sync::Mutex;

use strata_tsdb::{keys, Labels, Options, Tsdb};

/// Held by each test for its whole run. A child spawned by one test inherits, until it
/// execs, the open `LOCK` file of a store the other test has open in this process (flock
/// is per open file), so the other test's reopen right after a close could find the
/// directory still locked: the tests take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn strata(args: &[&str]) -> (bool, String, String) {
    strata_testkit::run(env!("CARGO_BIN_EXE_strata"), args)
}

// 01:00 UTC, so that every sample falls in one day partition.
const T0: i64 = 1_699_920_000_000 + 3_600_000;

fn series(host: &str) -> Labels {
    Labels::from_pairs([("__name__", "temp"), ("host", host)]).unwrap()
}

/// Two series of 500 samples flushed to the key-value store, then 10 more samples of one
/// of them left only in the WAL (the process "crashes" before the next flush).
fn make_store(dir: &std::path::Path) {
    let opts = Options {
        background: false,
        ..Options::default()
    };
    let db = Tsdb::open(dir, opts.clone()).unwrap();
    let mut app = db.appender();
    for host in ["a", "b"] {
        for i in 0..500 {
            app.add(series(host), T0 + i * 15_000, i as f64 * 0.5);
        }
    }
    app.commit().unwrap();
    db.flush().unwrap();
    let mut app = db.appender();
    for i in 500..510 {
        app.add(series("a"), T0 + i * 15_000, i as f64);
    }
    app.commit().unwrap();
    db.abandon();
}

#[test]
fn inspect_shows_partitions_wal_and_chunks_and_verify_passes() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    make_store(&dir);
    let d = dir.to_str().unwrap();

    let (ok, out, err) = strata(&["inspect", "tsdb", d, "--verify"]);
    assert!(ok, "{out}\n{err}");
    let total = out
        .lines()
        .find(|l| l.trim_start().starts_with("total"))
        .expect("a total row");
    let cols: Vec<&str> = total.split_whitespace().collect();
    // total, series, chunks, samples, bytes, B/sample, xor/dec
    assert_eq!(cols[1], "2", "{total}");
    assert_eq!(cols[3], "1000", "{total}");
    assert!(out.contains("verified"), "{out}");
    assert!(
        out.contains("10 samples"),
        "the WAL segment holds the unflushed samples: {out}"
    );

    let wal_dir = dir.join("wal");
    let (ok, out, err) = strata(&["inspect", "tsdb-wal", wal_dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("10 samples"), "{out}");
    let last = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let (ok, out, err) = strata(&["inspect", "tsdb-wal", last.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("record @"), "{out}");
    assert!(out.contains("v 509"), "{out}");
    // The segment a flush opens starts with a checkpoint of the live series.
    assert!(out.contains("2 series, 10 samples"), "{out}");

    let (ok, out, err) = strata(&[
        "inspect",
        "chunks",
        d,
        "--match",
        r#"temp{host="a"}"#,
        "--samples",
    ]);
    assert!(ok, "{err}");
    assert!(!out.contains(r#"host="b""#), "{out}");
    assert!(out.contains(r#"host="a""#), "{out}");
    assert!(out.contains("500 samples"), "{out}");
    assert!(
        out.contains(&format!("  {} 249.5", T0 + 499 * 15_000)),
        "{out}"
    );
    // Only chunks overlapping the range.
    let (ok, out, _) = strata(&[
        "inspect", "chunks", d, "--match", "temp", "--start", "1000", "--end", "2000",
    ]);
    assert!(ok);
    assert!(out.starts_with("0 chunks"), "{out}");
}

#[test]
fn verify_names_the_key_of_a_chunk_that_disagrees_with_its_key() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    make_store(&dir);
    // A chunk whose value claims a later maxt than its samples reach: a wrong writer.
    {
        let kv = strata_kv::Db::open(
            dir.join("kv"),
            strata_kv::Options {
                create_if_missing: false,
                ..strata_kv::Options::default()
            },
        )
        .unwrap();
        let (k, mut v) = kv
            .prefix([keys::PARTITION])
            .find_map(|e| {
                let (k, v) = e.unwrap();
                (k.get(9) == Some(&keys::CHUNK)).then_some((k, v))
            })
            .unwrap();
        let maxt = keys::get_i64(&v).unwrap();
        let mut fixed = Vec::new();
        keys::put_i64(&mut fixed, maxt + 1);
        v[..8].copy_from_slice(&fixed);
        kv.put(&k, &v).unwrap();
        kv.close().unwrap();
    }
    let (ok, out, err) = strata(&["inspect", "tsdb", dir.to_str().unwrap(), "--verify"]);
    assert!(!ok, "{out}");
    assert!(out.contains("PROBLEM key P"), "{out}");
    assert!(out.contains("key range"), "{out}");
    assert!(err.contains("1 problems found"), "{err}");
    // Without --verify the summary still prints.
    let (ok, out, _) = strata(&["inspect", "tsdb", dir.to_str().unwrap()]);
    assert!(ok, "{out}");
}
