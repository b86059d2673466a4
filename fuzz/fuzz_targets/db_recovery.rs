//! Database recovery from a WAL segment of arbitrary contents: a real database is crashed
//! (abandoned) with unflushed writes, its WAL replaced by the input, and reopened.
//!
//! Input: a mode byte (bit 0: reseal the log checksums; bit 1: strict recovery), then the
//! WAL segment. Oracle: the store opens or fails cleanly; once open, scans and gets work
//! and agree.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use strata_fuzz::{put_file, reseal_log};
use strata_kv::filename::{parse_file_name, FileType};
use strata_kv::fs::{FileSystem, MemFs};
use strata_kv::{Db, Options, WalRecoveryMode};

fn options(fs: &Arc<MemFs>, mode: WalRecoveryMode) -> Options {
    Options {
        fs: fs.clone(),
        wal_recovery: mode,
        ..Options::default()
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let fs = Arc::new(MemFs::new());
    let dir = Path::new("/db");
    let db = Db::open(dir, options(&fs, WalRecoveryMode::TolerateTail)).expect("create");
    db.put(b"a", b"1").expect("put");
    db.abandon();
    let wal = fs
        .list_dir(dir)
        .expect("list")
        .into_iter()
        .filter(|n| matches!(parse_file_name(n), Some(FileType::Wal(_))))
        .max()
        .expect("a WAL segment");
    let mut data = rest.to_vec();
    if mode & 1 != 0 {
        reseal_log(&mut data);
    }
    put_file(&fs, &dir.join(wal), &data);
    let recovery = if mode & 2 != 0 {
        WalRecoveryMode::Strict
    } else {
        WalRecoveryMode::TolerateTail
    };
    let Ok(db) = Db::open(dir, options(&fs, recovery)) else {
        return;
    };
    let mut entries = Vec::new();
    for item in db.scan::<&[u8]>(..).take(1000) {
        match item {
            Ok(kv) => entries.push(kv),
            Err(_) => break,
        }
    }
    for (k, v) in entries.iter().take(64) {
        if let Ok(got) = db.get(k) {
            assert_eq!(got.as_ref(), Some(v), "scan and get disagree");
        }
    }
    db.abandon();
});
