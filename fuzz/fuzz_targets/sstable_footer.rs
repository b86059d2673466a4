//! The SSTable footer and properties block decoders over arbitrary bytes.
//!
//! Input: 8 bytes of claimed file length, then the footer / properties bytes. Oracle: an
//! accepted footer re-encodes to exactly its bytes and lies inside the file; accepted
//! properties survive a re-encode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_kv::sstable::format::{Footer, FOOTER_LEN};
use strata_kv::sstable::Properties;

fuzz_target!(|data: &[u8]| {
    let Some((len, buf)) = data.split_first_chunk::<8>() else {
        return;
    };
    let file_len = u64::from_le_bytes(*len);
    if let Ok(f) = Footer::decode(buf, "fuzz.sst", file_len) {
        assert_eq!(f.encode(), buf, "footer does not re-encode to its bytes");
        let footer_at = file_len - FOOTER_LEN as u64;
        for h in [f.index, f.properties] {
            assert!(h.end_with_trailer().is_some_and(|e| e <= footer_at));
        }
    }
    if let Ok(p) = Properties::decode(buf, "fuzz.sst", 0) {
        let again = Properties::decode(&p.encode(), "fuzz.sst", 0).expect("re-decode");
        assert_eq!(p, again);
    }
});
