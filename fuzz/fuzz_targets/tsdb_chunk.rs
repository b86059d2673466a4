//! TSDB chunk decoding over arbitrary bytes: `Chunk::from_bytes` (dispatch on the
//! encoding byte), `XorChunk::from_bytes`, full iteration, and resuming an appender.
//! (Decimal chunks have their own target, `tsdb_decimal`.)
//!
//! Oracle: a chunk that decodes completely re-encodes (through `XorAppender`) to a chunk
//! that decodes to bit-identical samples, and resuming appends after them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_tsdb::chunk::{Chunk, Encoding, XorAppender, XorChunk};

fn bits(s: &[(i64, f64)]) -> Vec<(i64, u64)> {
    s.iter().map(|&(t, v)| (t, v.to_bits())).collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(chunk) = Chunk::from_bytes(data.to_vec()) else {
        return;
    };
    assert_eq!(chunk.bytes(), data);
    if chunk.encoding() != Encoding::Xor {
        return;
    }
    let mut samples = Vec::new();
    let mut failed = false;
    let mut items = 0usize;
    for item in chunk.iter() {
        items += 1;
        assert!(
            items <= chunk.num_samples() + 1,
            "iterator ran past its count"
        );
        match item {
            Ok(s) => samples.push(s),
            Err(_) => failed = true,
        }
    }
    let Ok(xor) = XorChunk::from_bytes(data.to_vec()) else {
        panic!("Chunk accepted what XorChunk refuses");
    };
    let resumed = XorAppender::resume(xor);
    if failed {
        assert!(
            resumed.is_err(),
            "resume accepted a chunk that fails to decode"
        );
        return;
    }
    assert_eq!(samples.len(), chunk.num_samples());
    let mut app = XorAppender::new();
    for &(t, v) in &samples {
        app.append(t, v).expect("append");
    }
    let again: Vec<_> = app
        .chunk()
        .iter()
        .collect::<Result<_, _>>()
        .expect("re-decode");
    assert_eq!(bits(&again), bits(&samples), "re-encoding changed samples");
    let mut app = resumed.expect("resume a chunk that decodes");
    if app.append(i64::MIN, f64::NAN).is_ok() {
        let more: Vec<_> = app
            .chunk()
            .iter()
            .collect::<Result<_, _>>()
            .expect("decode");
        assert_eq!(bits(&more[..samples.len()]), bits(&samples));
        assert_eq!(more.len(), samples.len() + 1);
    }
});
