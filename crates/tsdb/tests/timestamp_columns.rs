//! Compaction stores the timestamps that series scraped together share once per partition
//! (a timestamp column); chunks hold values only. Queries, recompaction, deletes and
//! reopening must all see the same samples.

use std::collections::BTreeMap;
use std::path::Path;

use strata_tsdb::{keys, Labels, MatchOp, Matcher, Options, Tsdb};

// 01:00 UTC: every sample below falls in one day partition.
const T0: i64 = 1_699_920_000_000 + 3_600_000;

type Model = BTreeMap<Labels, BTreeMap<i64, u64>>;

fn opts() -> Options {
    Options {
        background: false,
        ..Options::default()
    }
}

fn check(db: &Tsdb, model: &Model) {
    let all = [Matcher::new(MatchOp::RegexMatch, "__name__", ".+").unwrap()];
    let got: Model = db
        .querier(i64::MIN, i64::MAX)
        .select(&all)
        .unwrap()
        .into_iter()
        .map(|s| {
            let samples = s.iter().map(|(t, v)| (t, v.to_bits())).collect();
            (s.labels, samples)
        })
        .collect();
    assert_eq!(&got, model);
}

/// The timestamp columns in the store (the store must be closed).
fn columns(dir: &Path) -> usize {
    let kv = strata_kv::Db::open(
        dir.join("kv"),
        strata_kv::Options {
            create_if_missing: false,
            ..strata_kv::Options::default()
        },
    )
    .unwrap();
    let n = kv
        .prefix([keys::PARTITION])
        .filter(|e| e.as_ref().unwrap().0.get(9) == Some(&keys::COLUMN))
        .count();
    kv.close().unwrap();
    n
}

#[test]
fn series_scraped_together_share_one_column_through_recompaction_and_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let mut model = Model::new();
    let db = Tsdb::open(&dir, opts()).unwrap();
    let mut app = db.appender();
    // 20 series of one target: the same (jittered) instants; one series of its own.
    for i in 0..500i64 {
        let t = T0 + i * 15_000 + (i * 7 % 5);
        for s in 0..20 {
            let l = Labels::from_pairs([("__name__", "m"), ("s", &s.to_string())]).unwrap();
            let v = ((i * s) as f64 * 0.25 + 1.0).round() / 100.0;
            app.add(l.clone(), t, v);
            model.entry(l).or_default().insert(t, v.to_bits());
        }
        let l = Labels::from_pairs([("__name__", "other")]).unwrap();
        app.add(l.clone(), t + 1_000, i as f64);
        model
            .entry(l)
            .or_default()
            .insert(t + 1_000, (i as f64).to_bits());
    }
    app.commit().unwrap();
    db.compact().unwrap();
    check(&db, &model);
    let st = db.stats().unwrap();
    assert!(
        st.bytes_per_sample < 0.5,
        "shared timestamps: {} bytes/sample",
        st.bytes_per_sample
    );
    db.close().unwrap();
    assert_eq!(columns(&dir), 2);

    // An out-of-order write makes the partition dirty: recompaction rewrites every chunk
    // and drops the old columns.
    let db = Tsdb::open(&dir, opts()).unwrap();
    check(&db, &model);
    let l = Labels::from_pairs([("__name__", "m"), ("s", "3")]).unwrap();
    let mut app = db.appender();
    app.add(l.clone(), T0 + 7, 42.0);
    app.commit().unwrap();
    model
        .entry(l)
        .or_default()
        .insert(T0 + 7, 42.0f64.to_bits());
    db.compact().unwrap();
    check(&db, &model);
    db.close().unwrap();
    assert_eq!(columns(&dir), 3, "series 3 has its own timestamps now");

    // A delete rewrites the chunks it cuts without the column.
    let db = Tsdb::open(&dir, opts()).unwrap();
    let del = [Matcher::new(MatchOp::Equal, "s", "5").unwrap()];
    let (lo, hi) = (T0 + 100 * 15_000, T0 + 200 * 15_000);
    db.delete_series(&del, lo, hi).unwrap();
    let l = Labels::from_pairs([("__name__", "m"), ("s", "5")]).unwrap();
    model.get_mut(&l).unwrap().retain(|t, _| *t < lo || *t > hi);
    check(&db, &model);
    db.compact().unwrap();
    check(&db, &model);
    db.close().unwrap();
    let db = Tsdb::open(&dir, opts()).unwrap();
    check(&db, &model);
    db.close().unwrap();
}
