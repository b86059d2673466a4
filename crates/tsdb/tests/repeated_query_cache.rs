//! The key-value store caches a block a scan reads only on its second read (a one-off
//! scan does not fill the block cache). A query repeated over the same range, as
//! dashboards do, must still end up served by the cache: its second run fills it, later
//! runs read no table file.

use strata_tsdb::{Labels, MatchOp, Matcher, Options, Tsdb};

// 01:00 UTC: every sample below falls in one day partition.
const T0: i64 = 1_699_920_000_000 + 3_600_000;

#[test]
fn a_repeated_range_query_is_cached_from_its_second_run() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Tsdb::open(
        tmp.path().join("db"),
        Options {
            background: false,
            ..Options::default()
        },
    )
    .unwrap();
    let mut app = db.appender();
    for s in 0..200 {
        let l = Labels::from_pairs([("__name__", "m"), ("s", &s.to_string())]).unwrap();
        for i in 0..2000i64 {
            app.add(l.clone(), T0 + i * 15_000, (i * s) as f64 * 0.37);
        }
    }
    app.commit().unwrap();
    db.compact().unwrap();
    db.kv().flush().unwrap();

    let all = [Matcher::new(MatchOp::Equal, "__name__", "m").unwrap()];
    let query = || {
        let got = db
            .querier(T0, T0 + 2000 * 15_000)
            .select(&all)
            .unwrap()
            .iter()
            .map(|s| s.iter().count())
            .sum::<usize>();
        assert_eq!(got, 200 * 2000);
        let st = db.kv().stats();
        (
            st.table_bytes_read,
            st.block_cache.inserts,
            st.block_cache.hits,
        )
    };
    let (read0, inserts0, _) = {
        let st = db.kv().stats();
        (
            st.table_bytes_read,
            st.block_cache.inserts,
            st.block_cache.hits,
        )
    };
    let (read1, inserts1, _) = query();
    let (read2, inserts2, hits2) = query();
    let (read3, inserts3, hits3) = query();
    assert!(
        read1 - read0 > 256 << 10,
        "the query reads tables: {}",
        read1 - read0
    );
    // The first run caches few blocks; the second fills the cache.
    assert!(
        inserts2 - inserts1 > 4 * (inserts1 - inserts0),
        "{inserts0} {inserts1} {inserts2}"
    );
    // The third run reads no table file and inserts nothing.
    assert_eq!(read3, read2);
    assert_eq!(inserts3, inserts2);
    assert!(hits3 > hits2);
}
