//! XOR chunk round trip: arbitrary `(t, v)` sequences appended, decoded bit-exactly, also
//! after resuming the appender half-way (as after a restart).
//!
//! Input: 16 bytes per sample (timestamp, value bits, little-endian); a leading byte picks
//! where to resume. Timestamps are unordered, equal or extreme on purpose: the chunk must
//! store whatever it is given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_tsdb::chunk::{Chunk, XorAppender};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let samples: Vec<(i64, u64)> = rest
        .chunks_exact(16)
        .map(|c| {
            let mut t = [0u8; 8];
            let mut v = [0u8; 8];
            t.copy_from_slice(&c[..8]);
            v.copy_from_slice(&c[8..]);
            (i64::from_le_bytes(t), u64::from_le_bytes(v))
        })
        .collect();
    let cut = usize::from(cut).min(samples.len());
    let mut app = XorAppender::new();
    for &(t, v) in &samples[..cut] {
        app.append(t, f64::from_bits(v)).expect("append");
    }
    let mut app = XorAppender::resume(app.into_chunk()).expect("resume");
    for &(t, v) in &samples[cut..] {
        app.append(t, f64::from_bits(v)).expect("append");
    }
    let chunk = Chunk::from_bytes(app.chunk().bytes().to_vec()).expect("valid chunk");
    let got: Vec<(i64, u64)> = chunk
        .iter()
        .map(|r| r.map(|(t, v)| (t, v.to_bits())))
        .collect::<Result<_, _>>()
        .expect("decodes");
    assert_eq!(got, samples);
});
