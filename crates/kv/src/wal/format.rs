//! Byte layout of a log file: the file header and the record framing.
//!
//! ```text
//! file   := header record*
//! header := magic: u64 LE | version: u32 LE | masked_crc32c(magic ++ version): u32 LE   (16 bytes)
//! record := payload_crc: u32 LE | length: u32 LE | type: u8 | header_crc: u32 LE | payload
//!
//! payload_crc := masked_crc32c(length ++ type ++ payload)
//! header_crc  := masked_crc32c(payload_crc ++ length ++ type)        (record bytes 0..9)
//! ```

use crate::checksum::{crc32c, crc32c_extend, mask, unmask};
use crate::coding::{get_fixed32, get_fixed64};

/// Magic number at the start of every write-ahead-log segment (`"STRATAWL"` as bytes).
pub const WAL_MAGIC: u64 = u64::from_le_bytes(*b"STRATAWL");

/// Magic number at the start of every manifest (`"STRATAMF"` as bytes).
pub const MANIFEST_MAGIC: u64 = u64::from_le_bytes(*b"STRATAMF");

/// Version of the log format written by this build.
pub const LOG_FORMAT_VERSION: u32 = 1;

/// Size of the file header: magic (8) + version (4) + masked CRC (4).
pub const LOG_HEADER_SIZE: usize = 16;

/// Size of a record header: payload CRC (4) + length (4) + type (1) + header CRC (4).
pub const RECORD_HEADER_SIZE: usize = 13;

/// Largest payload a record may carry (1 GiB).
pub const MAX_RECORD_SIZE: usize = 1 << 30;

/// Record type: the record holds a whole payload. Other values are reserved for a future
/// fragmentation scheme (first / middle / last) and are rejected today.
pub const RECORD_TYPE_FULL: u8 = 1;

/// Encodes the file header for `magic`.
pub fn encode_file_header(magic: u64) -> [u8; LOG_HEADER_SIZE] {
    let mut h = [0u8; LOG_HEADER_SIZE];
    h[..8].copy_from_slice(&magic.to_le_bytes());
    h[8..12].copy_from_slice(&LOG_FORMAT_VERSION.to_le_bytes());
    let crc = mask(crc32c(&h[..12]));
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What the first [`LOG_HEADER_SIZE`] bytes of a file say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    /// A valid header with the expected magic and a known version.
    Valid,
    /// The magic differs from the expected one.
    WrongMagic(u64),
    /// The magic matches but the header checksum does not.
    BadCrc,
    /// A checksum-valid header with a version this build does not know.
    UnknownVersion(u32),
}

/// Checks a complete header (`h` must hold at least [`LOG_HEADER_SIZE`] bytes; shorter input
/// is reported as a wrong magic / bad checksum, never a panic).
pub(crate) fn check_file_header(h: &[u8], magic: u64) -> HeaderCheck {
    let found = get_fixed64(h).unwrap_or(0);
    if found != magic {
        return HeaderCheck::WrongMagic(found);
    }
    let (Some(version), Some(stored)) = (
        h.get(8..).and_then(get_fixed32),
        h.get(12..).and_then(get_fixed32),
    ) else {
        return HeaderCheck::BadCrc;
    };
    if unmask(stored) != crc32c(&h[..12]) {
        return HeaderCheck::BadCrc;
    }
    if version != LOG_FORMAT_VERSION {
        return HeaderCheck::UnknownVersion(version);
    }
    HeaderCheck::Valid
}

/// The payload checksum stored in a record header: CRC32C over the length bytes, the type
/// byte and the payload, masked.
pub(crate) fn record_crc(len_and_type: &[u8], payload: &[u8]) -> u32 {
    mask(crc32c_extend(crc32c(len_and_type), payload))
}

/// The header checksum stored at bytes 9..13 of a record header: CRC32C over bytes 0..9
/// (payload checksum, length, type), masked.
pub(crate) fn header_crc(first_nine: &[u8]) -> u32 {
    mask(crc32c(first_nine))
}

/// Encodes a record header with explicit field values (any length, any type): computes the
/// header checksum over them. The writer uses [`encode_record_header`]; this exists so that
/// tests can build deliberately invalid records with a valid header checksum.
pub(crate) fn encode_raw_record_header(
    payload_crc: u32,
    length: u32,
    rtype: u8,
) -> [u8; RECORD_HEADER_SIZE] {
    let mut h = [0u8; RECORD_HEADER_SIZE];
    h[..4].copy_from_slice(&payload_crc.to_le_bytes());
    h[4..8].copy_from_slice(&length.to_le_bytes());
    h[8] = rtype;
    let hcrc = header_crc(&h[..9]);
    h[9..13].copy_from_slice(&hcrc.to_le_bytes());
    h
}

/// Encodes the 13-byte header of a FULL record carrying `payload` (whose length must not
/// exceed [`MAX_RECORD_SIZE`]; the writer checks).
pub(crate) fn encode_record_header(payload: &[u8]) -> [u8; RECORD_HEADER_SIZE] {
    let length = payload.len() as u32;
    let mut len_and_type = [0u8; 5];
    len_and_type[..4].copy_from_slice(&length.to_le_bytes());
    len_and_type[4] = RECORD_TYPE_FULL;
    encode_raw_record_header(record_crc(&len_and_type, payload), length, RECORD_TYPE_FULL)
}

/// Outcome of parsing the record that starts at some offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordParse {
    /// A complete, checksum-valid record; the payload is `data[payload.0..payload.1]`.
    Valid {
        /// Payload start and end offsets in the buffer.
        payload: (usize, usize),
    },
    /// Looks like a write cut short: fewer than [`RECORD_HEADER_SIZE`] bytes left, a
    /// checksum-valid header whose payload runs past the end of the data, or nothing but
    /// zero bytes up to the end.
    Incomplete(String),
    /// A complete record that is damaged: header checksum mismatch, unknown type, length
    /// above the maximum, or payload checksum mismatch.
    Bad(String),
}

/// Parses the record at `pos` of `data` and classifies any damage (see [`RecordParse`]).
pub(crate) fn parse_record(data: &[u8], pos: usize) -> RecordParse {
    let rest = data.get(pos..).unwrap_or(&[]);
    if rest.len() < RECORD_HEADER_SIZE {
        return RecordParse::Incomplete(format!(
            "truncated record header ({} of {RECORD_HEADER_SIZE} bytes)",
            rest.len()
        ));
    }
    let stored_header_crc = get_fixed32(&rest[9..]).unwrap_or(0);
    if header_crc(&rest[..9]) != stored_header_crc {
        if rest.iter().all(|&b| b == 0) {
            return RecordParse::Incomplete(format!(
                "zero-filled tail ({} bytes of zeros up to the end of the file)",
                rest.len()
            ));
        }
        return RecordParse::Bad("record header checksum mismatch".to_string());
    }
    let stored_payload_crc = get_fixed32(rest).unwrap_or(0);
    let length = get_fixed32(&rest[4..]).unwrap_or(0) as usize;
    let rtype = rest[8];
    if rtype != RECORD_TYPE_FULL {
        return RecordParse::Bad(format!("unknown record type {rtype}"));
    }
    if length > MAX_RECORD_SIZE {
        return RecordParse::Bad(format!(
            "record length {length} exceeds the maximum {MAX_RECORD_SIZE}"
        ));
    }
    let avail = rest.len() - RECORD_HEADER_SIZE;
    if length > avail {
        return RecordParse::Incomplete(format!(
            "record of {length} bytes runs past the end of the file ({avail} bytes left)"
        ));
    }
    let payload = &rest[RECORD_HEADER_SIZE..RECORD_HEADER_SIZE + length];
    if record_crc(&rest[4..9], payload) != stored_payload_crc {
        return RecordParse::Bad("record payload checksum mismatch".to_string());
    }
    let start = pos + RECORD_HEADER_SIZE;
    RecordParse::Valid {
        payload: (start, start + length),
    }
}

/// First offset in `from..` where a complete record with a valid header checksum, type
/// FULL, a length within bounds and a valid payload checksum starts, if any. Empty records
/// count: the header checksum makes a chance match as unlikely for them as for any other.
pub(crate) fn find_valid_record(data: &[u8], from: usize) -> Option<usize> {
    let last = data.len().checked_sub(RECORD_HEADER_SIZE)?;
    (from..=last).find(|&p| {
        // Cheapest rejections first: the type byte, then the 9-byte header checksum; the
        // payload checksum only for the rare candidate whose header verifies.
        if data[p + 8] != RECORD_TYPE_FULL {
            return false;
        }
        let stored = get_fixed32(&data[p + 9..]).unwrap_or(0);
        if header_crc(&data[p..p + 9]) != stored {
            return false;
        }
        let length = get_fixed32(&data[p + 4..]).unwrap_or(0) as usize;
        if length > MAX_RECORD_SIZE || length > last - p {
            return false;
        }
        matches!(parse_record(data, p), RecordParse::Valid { .. })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics_differ_and_header_checks() {
        assert_ne!(WAL_MAGIC, MANIFEST_MAGIC);
        let h = encode_file_header(WAL_MAGIC);
        assert_eq!(&h[..8], b"STRATAWL");
        assert_eq!(check_file_header(&h, WAL_MAGIC), HeaderCheck::Valid);
        assert_eq!(
            check_file_header(&h, MANIFEST_MAGIC),
            HeaderCheck::WrongMagic(WAL_MAGIC)
        );
        let mut bad = h;
        bad[13] ^= 1;
        assert_eq!(check_file_header(&bad, WAL_MAGIC), HeaderCheck::BadCrc);
        let mut v2 = h;
        v2[8] = 2;
        let crc = mask(crc32c(&v2[..12]));
        v2[12..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            check_file_header(&v2, WAL_MAGIC),
            HeaderCheck::UnknownVersion(2)
        );
        assert_eq!(
            check_file_header(&h[..5], WAL_MAGIC),
            HeaderCheck::WrongMagic(0)
        );
    }

    #[test]
    fn record_parse_and_scan() {
        let mut data = vec![0u8; 3];
        data.extend_from_slice(&encode_record_header(b"abc"));
        data.extend_from_slice(b"abc");
        assert_eq!(
            parse_record(&data, 3),
            RecordParse::Valid { payload: (16, 19) }
        );
        assert!(matches!(parse_record(&data, 0), RecordParse::Bad(_)));
        // Short header; complete header with a short payload.
        assert!(matches!(
            parse_record(&data[..14], 3),
            RecordParse::Incomplete(_)
        ));
        assert!(matches!(
            parse_record(&data[..18], 3),
            RecordParse::Incomplete(_)
        ));
        assert_eq!(find_valid_record(&data, 0), Some(3));
        assert_eq!(find_valid_record(&data, 4), None);
        assert_eq!(find_valid_record(&data[..5], 0), None);
    }

    #[test]
    fn damage_classification() {
        let mut data = encode_record_header(b"hello").to_vec();
        data.extend_from_slice(b"hello");
        // Every single flipped byte of a complete record is Bad, never Incomplete.
        for i in 0..data.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = data.clone();
                bad[i] ^= flip;
                assert!(
                    matches!(parse_record(&bad, 0), RecordParse::Bad(_)),
                    "byte {i} ^ {flip:#x}: {:?}",
                    parse_record(&bad, 0)
                );
            }
        }
        // Every cut is Incomplete.
        for cut in 0..data.len() {
            assert!(matches!(
                parse_record(&data[..cut], 0),
                RecordParse::Incomplete(_)
            ));
        }
        // Zeros to the end are Incomplete, zeros followed by anything are Bad.
        assert!(matches!(
            parse_record(&[0; 100], 0),
            RecordParse::Incomplete(_)
        ));
        let mut z = vec![0u8; 100];
        z[99] = 1;
        assert!(matches!(parse_record(&z, 0), RecordParse::Bad(_)));
        // A verified header with an unknown type or an oversized length is Bad.
        let h = encode_raw_record_header(0, 0, 2);
        assert!(matches!(parse_record(&h, 0), RecordParse::Bad(r) if r.contains("type 2")));
        let h = encode_raw_record_header(0, MAX_RECORD_SIZE as u32 + 1, RECORD_TYPE_FULL);
        assert!(matches!(parse_record(&h, 0), RecordParse::Bad(r) if r.contains("exceeds")));
        // An empty record is found by the scan.
        let mut e = vec![7u8; 5];
        e.extend_from_slice(&encode_record_header(b""));
        assert_eq!(find_valid_record(&e, 0), Some(5));
    }
}
