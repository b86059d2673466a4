//! The Bitcask engine on the real file system: the sync thread fdatasyncs the active file
//! while writes go on and across roll-overs; everything reads back after a reopen.

use strata_kv::bitcask::{Bitcask, BitcaskOptions};

#[test]
fn writes_across_background_syncs_and_roll_overs_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = || BitcaskOptions {
        max_file_size: 12 << 20,
        ..BitcaskOptions::default()
    };
    let value = |i: u32| format!("{i:08}").repeat(128).into_bytes();
    let db = Bitcask::open(dir.path(), opts()).expect("open");
    // 30 MiB: several 8 MiB background syncs, two roll-overs.
    for i in 0..30_000u32 {
        db.put(format!("key-{i:06}"), value(i)).expect("put");
    }
    for i in (0..30_000u32).step_by(3) {
        db.delete(format!("key-{i:06}")).expect("delete");
    }
    let s = db.stats();
    assert!(s.files >= 3, "{s:?}");
    assert!(s.background_error.is_none(), "{s:?}");
    db.close().expect("close");
    let db = Bitcask::open(dir.path(), opts()).expect("reopen");
    assert_eq!(db.stats().keys, 20_000);
    for i in 0..30_000u32 {
        let want = (!i.is_multiple_of(3)).then(|| value(i));
        assert_eq!(db.get(format!("key-{i:06}")).expect("get"), want, "{i}");
    }
    db.close().expect("close");
}
