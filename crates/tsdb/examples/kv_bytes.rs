//! Where a time-series data directory's bytes go, by key class (docs/format/tsdb-keys.md):
//! entries, raw key and value bytes, and each class alone in 4 KiB zstd-3 blocks (what the
//! key-value store's blocks would cost holding that class only). For chunk records the
//! last column counts the keys and the 8-byte end times without the chunk bytes: their
//! overhead, which in the store sits raw in blocks whose chunk bytes do not compress.
//! The last line: the chunk records' blocks compressed as the store decides (only when
//! zstd saves 1/8) against compressed whenever smaller.
//!
//! `cargo run --release -p strata-tsdb --example kv_bytes -- DIR` (DIR as for
//! `strata bench tsdb --db DIR`; the store must not be open elsewhere).

use std::collections::BTreeMap;

type Error = Box<dyn std::error::Error>;

#[derive(Default)]
struct Class {
    entries: usize,
    key_bytes: usize,
    value_bytes: usize,
    block: Vec<u8>,
    compressed: usize,
}

/// Block size of the store's tables (`TableOptions::block_size`).
const BLOCK: usize = 4096;

fn zstd3(b: &[u8]) -> Result<usize, Error> {
    Ok(zstd::bulk::compress(b, 3)?.len())
}

fn main() -> Result<(), Error> {
    let dir = std::env::args().nth(1).ok_or("usage: kv_bytes DATA_DIR")?;
    let opts = strata_tsdb::Options::default().kv;
    let db = strata_kv::Db::open(format!("{dir}/kv"), opts)?;
    let mut classes: BTreeMap<String, Class> = BTreeMap::new();
    // Chunk-record blocks as written (key, end time, chunk): raw, zstd, and what the
    // store's 1/8 rule keeps.
    let (mut block, mut raw, mut always, mut rule) = (Vec::new(), 0, 0, 0);
    let mut samples = 0u64;
    for item in db.prefix(b"") {
        let (k, v) = item?;
        let name = match (k.first(), k.get(9)) {
            (Some(b'P'), Some(&c)) => format!("P{}", c as char),
            (Some(&c), _) => (c as char).to_string(),
            _ => "?".into(),
        };
        let c = classes.entry(name.clone()).or_default();
        c.entries += 1;
        c.key_bytes += k.len();
        c.value_bytes += v.len();
        c.block.extend_from_slice(&k);
        if name == "Pc" {
            c.block.extend_from_slice(v.get(..8).unwrap_or(&v));
            let chunk = v.get(8..).unwrap_or(&[]);
            samples += match chunk {
                // XOR: a big-endian u16 count.
                [1, hi, lo, ..] => u64::from(u16::from_be_bytes([*hi, *lo])),
                _ => strata_tsdb::chunk::decimal::num_samples(chunk).map_or(0, |n| n as u64),
            };
            block.extend_from_slice(&k);
            block.extend_from_slice(&v);
            if block.len() >= BLOCK {
                let z = zstd3(&block)?;
                raw += block.len();
                always += z.min(block.len());
                rule += if z < block.len() - block.len() / 8 {
                    z
                } else {
                    block.len()
                };
                block.clear();
            }
        } else {
            c.block.extend_from_slice(&v);
        }
        if c.block.len() >= BLOCK {
            c.compressed += zstd3(&c.block)?;
            c.block.clear();
        }
    }
    let per = |b: usize| b as f64 / samples.max(1) as f64;
    println!("{samples} samples in chunks");
    println!("class  entries  key bytes  value bytes  zstd-3 alone  B/sample");
    for (name, c) in &mut classes {
        if !c.block.is_empty() {
            c.compressed += zstd3(&c.block)?;
        }
        println!(
            "{name:5} {:8} {:10} {:12} {:13} {:9.4}",
            c.entries,
            c.key_bytes,
            c.value_bytes,
            c.compressed,
            per(c.compressed)
        );
    }
    println!(
        "chunk-record blocks: raw {raw} ({:.4} B/sample), compressed when zstd saves 1/8 \
         {rule} ({:.4}), whenever smaller {always} ({:.4})",
        per(raw),
        per(rule),
        per(always)
    );
    Ok(())
}
