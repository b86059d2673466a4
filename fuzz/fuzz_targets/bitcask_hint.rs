//! Bitcask hint files of arbitrary contents beside a genuine data file: the hint decoders
//! directly, then a store opened from the hint.
//!
//! Input: a mode byte (bit 0: reseal the checksums first; bit 1: prepend a valid file
//! header), then the hint file. The data file is a real merge output in which every key
//! has exactly one record, so the oracle is strong: whatever the hint says, a value the
//! store returns is the true value of that key.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use strata_fuzz::fixtures::hint_base;
use strata_fuzz::{put_file, reseal_hints};
use strata_kv::bitcask::format::{
    check_hint_file, decode_hint_file, encode_file_header, HINT_MAGIC,
};
use strata_kv::bitcask::{Bitcask, BitcaskOptions};
use strata_kv::fs::{FileSystem, MemFs};

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let base = hint_base();
    let mut hint = Vec::new();
    if mode & 2 != 0 {
        hint.extend_from_slice(&encode_file_header(HINT_MAGIC, 0, base.id));
    }
    hint.extend_from_slice(rest);
    if mode & 1 != 0 {
        reseal_hints(&mut hint);
    }
    let checked = check_hint_file(&hint, base.id, base.data_len);
    let mut seen = 0u64;
    let decoded = decode_hint_file(&hint, base.id, base.data_len, |_| seen += 1);
    assert_eq!(checked, decoded);
    if let Ok(n) = decoded {
        assert_eq!(n, seen);
    }

    let fs = Arc::new(MemFs::new());
    for (p, b) in &base.files {
        if let Some(parent) = p.parent() {
            fs.create_dir_all(parent).expect("mkdir");
        }
        put_file(&fs, p, b);
    }
    put_file(&fs, &base.hint, &hint);
    let opts = BitcaskOptions {
        create_if_missing: false,
        fs: fs.clone(),
        ..BitcaskOptions::default()
    };
    let Ok(db) = Bitcask::open("/bc", opts) else {
        return;
    };
    for k in db.keys().iter().take(128) {
        if let Ok(Some(v)) = db.get(k) {
            assert_eq!(
                base.model.get(k),
                Some(&v),
                "the store returned a value the key never had"
            );
        }
    }
    for k in base.model.keys() {
        if let Ok(Some(v)) = db.get(k) {
            assert_eq!(base.model.get(k), Some(&v));
        }
    }
    db.abandon();
});
