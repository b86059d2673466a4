//! Both engines through the shared `KvEngine` trait: the same operations give the same
//! answers (iteration order aside).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use strata_kv::fs::MemFs;
use strata_kv::{open_engine, EngineKind, KvEngine, Options, WriteBatch, WriteOptions};

fn exercise(engine: &dyn KvEngine) {
    engine.put(b"a", b"1").expect("put");
    engine.put(b"b", b"2").expect("put");
    engine.delete(b"a").expect("delete");
    let mut b = WriteBatch::new();
    b.put(b"c", b"3").put(b"d", b"4").delete(b"b");
    engine.write(b, WriteOptions { sync: true }).expect("write");
    assert_eq!(engine.get(b"a").expect("get"), None);
    assert_eq!(engine.get(b"c").expect("get"), Some(b"3".to_vec()));
    let keys: BTreeSet<_> = engine.keys().expect("keys").into_iter().collect();
    assert_eq!(keys, [b"c".to_vec(), b"d".to_vec()].into_iter().collect());
    let mut n = 0;
    engine
        .for_each(&mut |_, v| {
            assert!(v == b"3" || v == b"4");
            n += 1;
            true
        })
        .expect("for_each");
    assert_eq!(n, 2);
    engine.flush().expect("flush");
    engine.compact().expect("compact");
    assert_eq!(engine.get(b"d").expect("get"), Some(b"4".to_vec()));
    assert!(!engine.stats_pairs().is_empty());
}

#[test]
fn both_engines_behave_alike_through_the_trait() {
    for kind in ["lsm", "bitcask"] {
        let kind: EngineKind = kind.parse().expect("engine kind");
        let fs = MemFs::new();
        let opts = Options {
            fs: Arc::new(fs.clone()),
            ..Options::default()
        };
        let dir = Path::new("/e");
        let e = open_engine(kind, dir, opts.clone()).expect("open");
        exercise(e.as_ref());
        e.close_engine().expect("close");
        let e = open_engine(kind, dir, opts).expect("reopen");
        assert_eq!(e.get(b"c").expect("get"), Some(b"3".to_vec()), "{kind:?}");
        assert_eq!(e.get(b"b").expect("get"), None, "{kind:?}");
        e.close_engine().expect("close");
    }
    assert!("btree".parse::<EngineKind>().is_err());
}
