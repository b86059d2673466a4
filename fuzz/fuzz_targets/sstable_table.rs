//! A whole SSTable file over arbitrary bytes: open, scan forwards and backwards, verify,
//! and look up every key found.
//!
//! Input: a mode byte (bit 0: reseal every checksum first), then the file. Oracle: when
//! both scans succeed they agree; when `verify` accepts the table (sorted, consistent with
//! its index, filter and properties), a lookup of every entry finds exactly that entry.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use strata_fuzz::{put_file, reseal_table};
use strata_kv::fs::{FileSystem, MemFs};
use strata_kv::iterator::InternalIterator;
use strata_kv::key::parse_internal_key;
use strata_kv::sstable::Table;

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

fn forward(it: &mut dyn InternalIterator) -> strata_kv::Result<Entries> {
    let mut out = Vec::new();
    it.seek_to_first()?;
    while it.valid() && out.len() < 100_000 {
        out.push((it.key().to_vec(), it.value().to_vec()));
        it.next()?;
    }
    Ok(out)
}

fn backward(it: &mut dyn InternalIterator) -> strata_kv::Result<Entries> {
    let mut out = Vec::new();
    it.seek_to_last()?;
    while it.valid() && out.len() < 100_000 {
        out.push((it.key().to_vec(), it.value().to_vec()));
        it.prev()?;
    }
    out.reverse();
    Ok(out)
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let mut data = rest.to_vec();
    if mode & 1 == 1 {
        reseal_table(&mut data);
    }
    let fs = MemFs::new();
    let path = Path::new("000001.sst");
    put_file(&fs, path, &data);
    let Ok(file) = fs.open(path) else { return };
    let Ok(table) = Table::open(file, "000001.sst") else {
        return;
    };
    let table = Arc::new(table);
    let fwd = forward(&mut table.iter());
    let bwd = backward(&mut table.iter());
    if let (Ok(f), Ok(b)) = (&fwd, &bwd) {
        assert_eq!(f, b, "forward and backward scans disagree");
    }
    let verified = table.verify();
    if let (Ok(n), Ok(f)) = (&verified, &fwd) {
        assert_eq!(
            *n as usize,
            f.len(),
            "verify counted another number of entries"
        );
        for (k, v) in f {
            let p = parse_internal_key(k).expect("verify accepted a bad internal key");
            let got = table
                .get(p.user_key, p.seq)
                .expect("lookup in a verified table");
            let l = got.expect("verified entry not found");
            assert_eq!((l.kind, l.seq, &l.value), (p.kind, p.seq, v));
        }
    } else if let Ok(f) = &fwd {
        for (k, _) in f.iter().take(32) {
            if let Some(p) = parse_internal_key(k) {
                let _ = table.get(p.user_key, p.seq);
                let _ = table.may_contain(p.user_key);
            }
        }
    }
    let mut it = table.iter();
    let _ = it.seek(rest.get(..rest.len().min(24)).unwrap_or_default());
});
