//! The index block of an SSTable: a valid table whose index block is replaced by arbitrary
//! bytes (with a valid checksum and footer), opened, scanned and searched.
//!
//! The data blocks stay genuine, so the oracle is strong: whatever a damaged index makes
//! the reader miss, every entry it does return is one the table really holds, with its
//! value.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use strata_fuzz::fixtures::index_base;
use strata_fuzz::put_file;
use strata_kv::checksum::{crc32c, crc32c_extend, mask};
use strata_kv::fs::{FileSystem, MemFs};
use strata_kv::iterator::InternalIterator;
use strata_kv::key::{internal_key, parse_internal_key};
use strata_kv::sstable::format::Footer;
use strata_kv::sstable::{BlockHandle, Table};

fuzz_target!(|index: &[u8]| {
    let base = index_base();
    let mut file = base.prefix.clone();
    let index_h = BlockHandle {
        offset: file.len() as u64,
        size: index.len() as u64,
    };
    file.extend_from_slice(index);
    file.push(0);
    file.extend_from_slice(&mask(crc32c_extend(crc32c(index), &[0])).to_le_bytes());
    let props_h = BlockHandle {
        offset: file.len() as u64,
        size: (base.props.len() - 5) as u64,
    };
    file.extend_from_slice(&base.props);
    file.extend_from_slice(
        &Footer {
            filter: base.filter,
            index: index_h,
            properties: props_h,
        }
        .encode(),
    );
    let fs = MemFs::new();
    let path = Path::new("000001.sst");
    put_file(&fs, path, &file);
    let Ok(table) = Table::open(fs.open(path).expect("open"), "000001.sst") else {
        return;
    };
    let table = Arc::new(table);
    let check = |k: &[u8], v: &[u8]| {
        assert_eq!(
            base.entries.get(k).map(Vec::as_slice),
            Some(v),
            "the reader returned an entry the table does not hold"
        );
    };
    let mut it = table.iter();
    if it.seek_to_first().is_ok() {
        let mut n = 0;
        while it.valid() && n < 1000 {
            check(it.key(), it.value());
            if it.next().is_err() {
                break;
            }
            n += 1;
        }
    }
    if it.seek_to_last().is_ok() {
        let mut n = 0;
        while it.valid() && n < 1000 {
            check(it.key(), it.value());
            if it.prev().is_err() {
                break;
            }
            n += 1;
        }
    }
    for k in base.entries.keys().step_by(17) {
        let p = parse_internal_key(k).expect("base key");
        if let Ok(Some(l)) = table.get(p.user_key, p.seq) {
            let ik = internal_key(p.user_key, l.seq, l.kind);
            check(&ik, &l.value);
        }
    }
    let _ = table.verify();
});
