//! The Bitcask record decoders over arbitrary bytes: record header, whole record, file
//! header, merge commit file.
//!
//! Oracle: an accepted (checksum-verified) record re-encodes to exactly its bytes; an
//! accepted merge commit re-encodes to exactly its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_kv::bitcask::format::{
    decode_file_header, decode_merge_commit, decode_record, encode_merge_commit, encode_record,
    RecordHeader, DATA_MAGIC,
};

fuzz_target!(|data: &[u8]| {
    if let Some(h) = RecordHeader::decode(data) {
        let _ = (h.record_len(), h.body_len(), h.flags_known());
    }
    let _ = decode_record(data, false);
    if let Ok(r) = decode_record(data, true) {
        let mut again = Vec::new();
        encode_record(&mut again, r.seq, r.key, r.value);
        assert_eq!(again, data, "record does not re-encode to its bytes");
    }
    let _ = decode_file_header(data, DATA_MAGIC, 1);
    if let Ok(ids) = decode_merge_commit(data, 7) {
        assert_eq!(encode_merge_commit(7, &ids), data);
    }
});
