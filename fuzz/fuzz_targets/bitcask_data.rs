//! Bitcask recovery from data files of arbitrary contents: open the store over a `MemFs`
//! holding up to three data files cut from the input, then read every key.
//!
//! Input: a mode byte (bit 0: reseal the checksums; bit 1: `SkipAndReport` instead of
//! `Error`; bit 2: prepend valid file headers), then the files separated by `SEP`.
//! Oracle: every key the store lists can be read (or fails with an error), and the
//! iterator agrees with `get`.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use strata_fuzz::{put_file, reseal_bitcask_data, split};
use strata_kv::bitcask::format::{data_path, encode_file_header, DATA_MAGIC, KIND_WRITER};
use strata_kv::bitcask::{Bitcask, BitcaskOptions, CorruptionPolicy};
use strata_kv::fs::{FileSystem, MemFs};

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let fs = Arc::new(MemFs::new());
    let dir = Path::new("/bc");
    fs.create_dir_all(dir).expect("mkdir");
    for (i, part) in split(rest).into_iter().take(3).enumerate() {
        let id = i as u32 + 1;
        let mut file = Vec::new();
        if mode & 4 != 0 {
            file.extend_from_slice(&encode_file_header(DATA_MAGIC, KIND_WRITER, id));
        }
        file.extend_from_slice(part);
        if mode & 1 != 0 {
            reseal_bitcask_data(&mut file);
        }
        put_file(&fs, &data_path(dir, id), &file);
    }
    let opts = BitcaskOptions {
        create_if_missing: false,
        corruption: if mode & 2 != 0 {
            CorruptionPolicy::SkipAndReport
        } else {
            CorruptionPolicy::Error
        },
        fs: fs.clone(),
        ..BitcaskOptions::default()
    };
    let Ok(db) = Bitcask::open(dir, opts) else {
        return;
    };
    let keys = db.keys();
    for k in keys.iter().take(256) {
        let _ = db.get(k);
    }
    for (n, item) in db.iter().enumerate() {
        if n >= 256 {
            break;
        }
        let Ok((k, v)) = item else { break };
        if let Ok(got) = db.get(&k) {
            assert_eq!(got.as_ref(), Some(&v), "iterator and get disagree");
        }
    }
    db.abandon();
});
