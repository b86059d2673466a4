//! The bloom filter block: parsing arbitrary bytes and probing them, and the round trip of
//! arbitrary keys through the builder (no false negatives).
//!
//! Input: keys separated by `SEP`; the first byte also picks bits per key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_fuzz::split;
use strata_kv::sstable::filter::{BloomFilter, BloomFilterBuilder};

fuzz_target!(|data: &[u8]| {
    if let Some(f) = BloomFilter::new(data.to_vec()) {
        assert_eq!(f.size(), data.len());
        let _ = f.may_contain(data);
        let _ = f.may_contain(b"");
    }
    let Some((&bits, rest)) = data.split_first() else {
        return;
    };
    let keys = split(rest);
    let mut b = BloomFilterBuilder::new(u32::from(bits % 40) + 1);
    for k in &keys {
        b.add(k);
    }
    let f = BloomFilter::new(b.finish()).expect("a built filter parses");
    for k in &keys {
        assert!(f.may_contain(k), "false negative for {k:?}");
    }
});
