//! Decimal chunks (encodings 2 and 3) and timestamp columns over arbitrary bytes.
//!
//! The first byte picks the decoder: `decimal::decode`, `decode_column`, or
//! `decode_with_column` against a column of the claimed length. Oracle: whatever decodes
//! re-encodes (at zstd level 1) to bytes that decode to bit-identical samples.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_tsdb::chunk::decimal::{self, ColumnRef};

fn bits(s: &[(i64, f64)]) -> Vec<(i64, u64)> {
    s.iter().map(|&(t, v)| (t, v.to_bits())).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    match mode % 3 {
        0 => {
            if let Some(b) = bytes.first_mut() {
                *b = 2;
            }
            if let Ok(samples) = decimal::decode(&bytes) {
                let again = decimal::encode(&samples, 1).expect("re-encode");
                let back = decimal::decode(&again).expect("re-decode");
                assert_eq!(bits(&back), bits(&samples));
            }
        }
        1 => {
            if let Some(b) = bytes.first_mut() {
                *b = decimal::COLUMN_V1;
            }
            if let Ok(ts) = decimal::decode_column(&bytes) {
                let again = decimal::encode_column(&ts, 1).expect("re-encode");
                assert_eq!(decimal::decode_column(&again).expect("re-decode"), ts);
            }
        }
        _ => {
            if let Some(b) = bytes.first_mut() {
                *b = 3;
            }
            let Ok(col) = decimal::column_of(&bytes) else {
                return;
            };
            // A column of the claimed length (bounded: columns come from real bytes).
            let n = decimal::num_samples(&bytes).unwrap_or(0).min(1 << 16);
            let ts: Vec<i64> = (0..n as i64).map(|i| i * 15_000 + (i % 3)).collect();
            if let Ok(samples) = decimal::decode_with_column(&bytes, &ts) {
                let again = decimal::encode_with_column(&samples, col, 1).expect("re-encode");
                assert_eq!(decimal::column_of(&again).expect("column"), col);
                let back = decimal::decode_with_column(&again, &ts).expect("re-decode");
                assert_eq!(bits(&back), bits(&samples));
                let _: ColumnRef = col;
            }
        }
    }
});
