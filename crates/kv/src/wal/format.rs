//! Byte layout of a log file: the file header and the record framing.
//!
//! ```text
//! file   := header record*
//! header := magic: u64 LE | version: u32 LE | masked_crc32c(magic ++ version): u32 LE   (16 bytes)
//! record := masked_crc32c(length ++ type ++ payload): u32 LE | length: u32 LE | type: u8 | payload
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

/// Size of a record header: masked CRC (4) + length (4) + type (1).
pub const RECORD_HEADER_SIZE: usize = 9;

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

/// The checksum stored in a record header: CRC32C over the length bytes, the type byte and
/// the payload, masked.
pub(crate) fn record_crc(len_and_type: &[u8], payload: &[u8]) -> u32 {
    mask(crc32c_extend(crc32c(len_and_type), payload))
}

/// Encodes the 9-byte header of a FULL record carrying `payload` (whose length must not
/// exceed [`MAX_RECORD_SIZE`]; the writer checks).
pub(crate) fn encode_record_header(payload: &[u8]) -> [u8; RECORD_HEADER_SIZE] {
    let mut h = [0u8; RECORD_HEADER_SIZE];
    h[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[8] = RECORD_TYPE_FULL;
    let crc = record_crc(&h[4..9], payload);
    h[..4].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Outcome of parsing the record that starts at some offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordParse {
    /// A complete, checksum-valid record; the payload is `data[payload.0..payload.1]`.
    Valid {
        /// Payload start and end offsets in the buffer.
        payload: (usize, usize),
    },
    /// The record (or its header) runs past the end of the data.
    Incomplete(String),
    /// The header is implausible or the checksum fails.
    Bad(String),
}

/// Parses the record at `pos` of `data`. Cheap checks (type, length bound) come before the
/// CRC, so scanning garbage costs little.
pub(crate) fn parse_record(data: &[u8], pos: usize) -> RecordParse {
    let rest = data.get(pos..).unwrap_or(&[]);
    if rest.len() < RECORD_HEADER_SIZE {
        return RecordParse::Incomplete(format!(
            "truncated record header ({} of {RECORD_HEADER_SIZE} bytes)",
            rest.len()
        ));
    }
    let stored = get_fixed32(rest).unwrap_or(0);
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
    if record_crc(&rest[4..9], payload) != stored {
        return RecordParse::Bad("record checksum mismatch".to_string());
    }
    let start = pos + RECORD_HEADER_SIZE;
    RecordParse::Valid {
        payload: (start, start + length),
    }
}

/// First offset in `from..` where a plausible (type FULL, length > 0), complete and
/// checksum-valid record starts, if any.
pub(crate) fn find_valid_record(data: &[u8], from: usize) -> Option<usize> {
    let last = data.len().checked_sub(RECORD_HEADER_SIZE)?;
    (from..=last).find(|&p| {
        // Cheap plausibility checks first; the CRC only for candidates that pass.
        if data[p + 8] != RECORD_TYPE_FULL {
            return false;
        }
        let length = get_fixed32(&data[p + 4..]).unwrap_or(0) as usize;
        if length == 0 || length > MAX_RECORD_SIZE || length > last - p {
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
            RecordParse::Valid { payload: (12, 15) }
        );
        assert!(matches!(parse_record(&data, 0), RecordParse::Bad(_)));
        assert!(matches!(
            parse_record(&data[..14], 3),
            RecordParse::Incomplete(_)
        ));
        assert_eq!(find_valid_record(&data, 0), Some(3));
        assert_eq!(find_valid_record(&data, 4), None);
        assert_eq!(find_valid_record(&data[..5], 0), None);
    }
}
