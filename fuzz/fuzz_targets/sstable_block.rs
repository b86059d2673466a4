//! An SSTable block (data or index: the same format) over arbitrary bytes: parse, then
//! iterate forwards, backwards and by seeks.
//!
//! Oracle: when a full forward scan succeeds, the backward scan yields the same entries in
//! reverse, and a seek to each key lands on an entry with that key.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use strata_kv::iterator::InternalIterator;
use strata_kv::sstable::block::{Block, BlockIter};
use strata_kv::sstable::BlockHandle;

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

fn forward(it: &mut BlockIter) -> strata_kv::Result<Entries> {
    let mut out = Vec::new();
    it.seek_to_first()?;
    while it.valid() {
        out.push((it.key().to_vec(), it.value().to_vec()));
        it.next()?;
    }
    Ok(out)
}

fn backward(it: &mut BlockIter) -> strata_kv::Result<Entries> {
    let mut out = Vec::new();
    it.seek_to_last()?;
    while it.valid() {
        out.push((it.key().to_vec(), it.value().to_vec()));
        it.prev()?;
    }
    out.reverse();
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let Ok(block) = Block::new(data.to_vec(), "fuzz.sst", 0) else {
        return;
    };
    assert!(block.size() == data.len());
    let mut it = BlockIter::new(Arc::new(block));
    let fwd = forward(&mut it);
    let bwd = backward(&mut it);
    if let (Ok(f), Ok(b)) = (&fwd, &bwd) {
        assert_eq!(f, b, "forward and backward scans disagree");
    }
    if let Ok(f) = &fwd {
        for (k, v) in f.iter().take(64) {
            // Index blocks hold handles: decoding one never panics.
            let _ = BlockHandle::decode(v);
            if it.seek(k).is_ok() {
                // The block's keys need not be sorted in a damaged block, so a seek may land
                // elsewhere; it must land on a valid entry or the end.
                if it.valid() {
                    let _ = (it.key().len(), it.value().len());
                }
            }
        }
    }
    let _ = it.seek(data);
});
