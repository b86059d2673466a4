//! Decimal chunks (encodings 2 and 3) and timestamp columns over arbitrary bytes.
//!
//! The first byte picks the decoder: `decimal::decode`, `decode_column`,
//! `decode_with_column` against a column of the claimed length, or the bit-packed value
//! stream (`pack::Unpacker`, for a count taken from the next two bytes). Oracle: whatever
//! decodes re-encodes (at zstd level 1) to bytes that decode to bit-identical samples
//! (values, for the packed stream).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_tsdb::chunk::decimal::{self, ColumnRef};
use strata_tsdb::chunk::pack;

fn bits(s: &[(i64, f64)]) -> Vec<(i64, u64)> {
    s.iter().map(|&(t, v)| (t, v.to_bits())).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    match mode % 4 {
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
        3 => {
            let Some((count, stream)) = rest.split_at_checked(2) else {
                return;
            };
            let total = usize::from(u16::from_le_bytes([count[0], count[1]]));
            let mut u = pack::Unpacker::new(stream, total, 0);
            let mut values = Vec::with_capacity(total);
            for _ in 0..total {
                match u.next_value() {
                    Ok(v) => values.push(v),
                    Err(_) => return,
                }
            }
            assert!(u.finished());
            let mut again = Vec::new();
            pack::put_packed(&mut again, &values);
            let mut u = pack::Unpacker::new(&again, total, 0);
            for &v in &values {
                assert_eq!(u.next_value().expect("re-decode"), v);
            }
            assert_eq!(u.position(), again.len());
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
