//! `Labels::decode` over arbitrary bytes (the series key encoding stored in strata-kv).
//!
//! Oracle: the encoding is canonical, so an accepted label set re-encodes to exactly the
//! input bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_tsdb::labels::Labels;

fuzz_target!(|data: &[u8]| {
    let Ok(labels) = Labels::decode(data) else {
        return;
    };
    assert_eq!(labels.encode(), data, "decode/encode is not the identity");
    let _ = (
        labels.to_string(),
        labels.stable_hash(),
        labels.metric_name(),
    );
});
