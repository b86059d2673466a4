//! Byte layouts of the Bitcask files: file headers, data records, batch headers, hint
//! entries and merge commit files. See `docs/format/bitcask.md`.
//!
//! ```text
//! header  := magic: [u8; 8] | version: u32 | kind: u8 | reserved: [u8; 3] | file_id: u32
//!            | masked_crc32c(bytes 0..20): u32                                   (24 bytes)
//! record  := crc: u32 | seq: u64 | flags: u8 | key_len: u32 | value_len: u32 | key | value
//!            crc = masked_crc32c(record bytes 4..)                      (21-byte header)
//! batch   := record header with flags = BATCH, key_len = entry count, value_len = byte
//!            length of the records that follow (the group); no key, no value
//! hint    := crc: u32 | seq: u64 | flags: u8 | key_len: u32 | record_size: u32
//!            | record_offset: u64 | key          crc = masked_crc32c(entry bytes 4..)
//! footer  := a hint entry with flags = END, seq = entry count, record_offset = data file
//!            length, no key
//! ```
//!
//! All integers are little-endian.

use crate::checksum::{crc32c, mask, unmask};
use crate::coding::{get_fixed32, get_fixed64, put_fixed32, put_fixed64};
use std::path::{Path, PathBuf};

/// Magic of a data file (`"STRBCDAT"`).
pub const DATA_MAGIC: [u8; 8] = *b"STRBCDAT";
/// Magic of a hint file (`"STRBCHNT"`).
pub const HINT_MAGIC: [u8; 8] = *b"STRBCHNT";
/// Magic of a merge commit file (`"STRBCMRG"`).
pub const MERGE_MAGIC: [u8; 8] = *b"STRBCMRG";
/// Format version written by this build (all three file kinds).
pub const FORMAT_VERSION: u32 = 1;
/// Size of every file header.
pub const FILE_HEADER_SIZE: usize = 24;
/// Size of a data record header (and of a batch header).
pub const RECORD_HEADER_SIZE: usize = 21;
/// Size of a hint entry header.
pub const HINT_HEADER_SIZE: usize = 29;
/// Largest record (header + key + value) accepted: keydir sizes are 31-bit.
pub const MAX_RECORD_SIZE: u64 = (1 << 31) - 1;

/// Record flag: the record is a tombstone (no value).
pub const FLAG_TOMBSTONE: u8 = 1;
/// Record flag: the record is a batch header.
pub const FLAG_BATCH: u8 = 2;
/// Hint flag: the entry is the hint file footer.
pub const FLAG_END: u8 = 4;

/// Data file kind byte: written by the writer (the active file, then immutable).
pub const KIND_WRITER: u8 = 0;
/// Data file kind byte: written by a merge.
pub const KIND_MERGE: u8 = 1;

/// `dir/000007.data`
pub fn data_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:06}.data"))
}

/// `dir/000007.hint`
pub fn hint_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:06}.hint"))
}

/// `dir/000007.merge`: the commit record of a merge.
pub fn merge_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:06}.merge"))
}

/// `path` + `.tmp`: written there, renamed into place once synced.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// The files of a Bitcask directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitcaskFile {
    /// A data file.
    Data(u32),
    /// A hint file.
    Hint(u32),
    /// A merge commit file.
    Merge(u32),
    /// A temporary file (removed on open).
    Temp,
    /// The process lock.
    Lock,
}

/// Classifies a file name; `None` for files the engine does not own.
pub fn parse_file_name(name: &str) -> Option<BitcaskFile> {
    if name == "LOCK" {
        return Some(BitcaskFile::Lock);
    }
    if name.ends_with(".tmp") {
        return Some(BitcaskFile::Temp);
    }
    let (stem, ext) = name.rsplit_once('.')?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id: u32 = stem.parse().ok()?;
    match ext {
        "data" => Some(BitcaskFile::Data(id)),
        "hint" => Some(BitcaskFile::Hint(id)),
        "merge" => Some(BitcaskFile::Merge(id)),
        _ => None,
    }
}

/// A decoded file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// [`KIND_WRITER`] or [`KIND_MERGE`] for data files; 0 otherwise.
    pub kind: u8,
    /// The file id (must match the name).
    pub file_id: u32,
}

/// Encodes a file header.
pub fn encode_file_header(magic: [u8; 8], kind: u8, file_id: u32) -> [u8; FILE_HEADER_SIZE] {
    let mut h = [0u8; FILE_HEADER_SIZE];
    h[..8].copy_from_slice(&magic);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12] = kind;
    h[16..20].copy_from_slice(&file_id.to_le_bytes());
    let crc = mask(crc32c(&h[..20]));
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a header was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than [`FILE_HEADER_SIZE`] bytes.
    Short,
    /// Wrong magic, bad checksum, or a file id that does not match.
    Bad(String),
    /// A valid header of an unknown version.
    Version(u32),
}

/// Decodes and checks a file header.
pub fn decode_file_header(
    h: &[u8],
    magic: [u8; 8],
    expect_id: u32,
) -> Result<FileHeader, HeaderError> {
    if h.len() < FILE_HEADER_SIZE {
        return Err(HeaderError::Short);
    }
    if h[..8] != magic {
        return Err(HeaderError::Bad(format!(
            "bad magic {:?}, expected {:?}",
            String::from_utf8_lossy(&h[..8]),
            String::from_utf8_lossy(&magic)
        )));
    }
    let stored = get_fixed32(&h[20..]).unwrap_or(0);
    if unmask(stored) != crc32c(&h[..20]) {
        return Err(HeaderError::Bad("file header checksum mismatch".into()));
    }
    let version = get_fixed32(&h[8..]).unwrap_or(0);
    if version != FORMAT_VERSION {
        return Err(HeaderError::Version(version));
    }
    let file_id = get_fixed32(&h[16..]).unwrap_or(0);
    if file_id != expect_id {
        return Err(HeaderError::Bad(format!(
            "header names file id {file_id}, the file name says {expect_id}"
        )));
    }
    Ok(FileHeader {
        kind: h[12],
        file_id,
    })
}

/// Appends a data record (a put, or a tombstone when `value` is `None`); returns its size.
pub fn encode_record(dst: &mut Vec<u8>, seq: u64, key: &[u8], value: Option<&[u8]>) -> usize {
    let start = dst.len();
    put_fixed32(dst, 0);
    put_fixed64(dst, seq);
    let (flags, v) = match value {
        Some(v) => (0, v),
        None => (FLAG_TOMBSTONE, &[][..]),
    };
    dst.push(flags);
    put_fixed32(dst, key.len() as u32);
    put_fixed32(dst, v.len() as u32);
    dst.extend_from_slice(key);
    dst.extend_from_slice(v);
    let crc = mask(crc32c(&dst[start + 4..]));
    dst[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    dst.len() - start
}

/// Appends a batch header for `count` records taking `group_len` bytes after it.
pub fn encode_batch_header(dst: &mut Vec<u8>, seq: u64, count: u32, group_len: u32) {
    let start = dst.len();
    put_fixed32(dst, 0);
    put_fixed64(dst, seq);
    dst.push(FLAG_BATCH);
    put_fixed32(dst, count);
    put_fixed32(dst, group_len);
    let crc = mask(crc32c(&dst[start + 4..]));
    dst[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The fixed part of a record, decoded without checking the checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Stored (masked) CRC.
    pub crc: u32,
    /// Sequence number (plays the role of Bitcask's timestamp: the highest wins).
    pub seq: u64,
    /// Flags ([`FLAG_TOMBSTONE`], [`FLAG_BATCH`]).
    pub flags: u8,
    /// Key length (for a batch header: the entry count).
    pub key_len: u32,
    /// Value length (for a batch header: the group's byte length).
    pub value_len: u32,
}

impl RecordHeader {
    /// Decodes the first [`RECORD_HEADER_SIZE`] bytes of `b`.
    pub fn decode(b: &[u8]) -> Option<RecordHeader> {
        if b.len() < RECORD_HEADER_SIZE {
            return None;
        }
        Some(RecordHeader {
            crc: get_fixed32(b)?,
            seq: get_fixed64(&b[4..])?,
            flags: b[12],
            key_len: get_fixed32(&b[13..])?,
            value_len: get_fixed32(&b[17..])?,
        })
    }

    /// True for a batch header.
    pub fn is_batch(&self) -> bool {
        self.flags & FLAG_BATCH != 0
    }

    /// True for a tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.flags & FLAG_TOMBSTONE != 0
    }

    /// True if the flags are ones this version writes.
    pub fn flags_known(&self) -> bool {
        matches!(self.flags, 0 | FLAG_TOMBSTONE | FLAG_BATCH)
    }

    /// Bytes of the body that follow the header (0 for a batch header).
    pub fn body_len(&self) -> u64 {
        if self.is_batch() {
            0
        } else {
            self.key_len as u64 + self.value_len as u64
        }
    }

    /// Size of the whole record.
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_SIZE as u64 + self.body_len()
    }
}

/// A record checked against its CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Sequence number.
    pub seq: u64,
    /// Key.
    pub key: &'a [u8],
    /// Value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
}

/// Verifies the checksum of the complete record (or batch header) `b`.
pub fn crc_ok(b: &[u8]) -> bool {
    match get_fixed32(b) {
        Some(stored) if b.len() >= RECORD_HEADER_SIZE => unmask(stored) == crc32c(&b[4..]),
        _ => false,
    }
}

/// Decodes a complete record `b` (exactly one record), checking its CRC if `verify`.
/// Returns why it is bad otherwise.
pub fn decode_record(b: &[u8], verify: bool) -> Result<Record<'_>, String> {
    let h = RecordHeader::decode(b).ok_or("record shorter than its header")?;
    if !h.flags_known() || h.is_batch() {
        return Err(format!("unexpected record flags {:#x}", h.flags));
    }
    if h.is_tombstone() && h.value_len != 0 {
        return Err("tombstone with a value".into());
    }
    if b.len() as u64 != h.record_len() {
        return Err(format!(
            "record length {} does not match its header ({})",
            b.len(),
            h.record_len()
        ));
    }
    if verify && !crc_ok(b) {
        return Err("record checksum mismatch".into());
    }
    let k_end = RECORD_HEADER_SIZE + h.key_len as usize;
    Ok(Record {
        seq: h.seq,
        key: &b[RECORD_HEADER_SIZE..k_end],
        value: if h.is_tombstone() {
            None
        } else {
            Some(&b[k_end..])
        },
    })
}

/// One hint entry: where the latest record of a key is in the data file beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintEntry<'a> {
    /// Sequence number of the record.
    pub seq: u64,
    /// True if the record is a tombstone.
    pub tombstone: bool,
    /// Size of the whole record.
    pub record_size: u32,
    /// Offset of the record in the data file.
    pub record_offset: u64,
    /// The key.
    pub key: &'a [u8],
}

/// Appends a hint entry.
pub fn encode_hint(
    dst: &mut Vec<u8>,
    seq: u64,
    flags: u8,
    key: &[u8],
    record_size: u32,
    record_offset: u64,
) {
    let start = dst.len();
    put_fixed32(dst, 0);
    put_fixed64(dst, seq);
    dst.push(flags);
    put_fixed32(dst, key.len() as u32);
    put_fixed32(dst, record_size);
    put_fixed64(dst, record_offset);
    dst.extend_from_slice(key);
    let crc = mask(crc32c(&dst[start + 4..]));
    dst[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Checks a whole hint file (header, entries, footer) and returns its entry count. Any
/// problem (short, bad CRC, no footer, count or data length mismatch) is returned as
/// `Err(offset, reason)`: the caller falls back to scanning the data file.
pub fn check_hint_file(b: &[u8], file_id: u32, data_len: u64) -> Result<u64, (u64, String)> {
    decode_file_header(b, HINT_MAGIC, file_id).map_err(|e| (0, format!("{e:?}")))?;
    walk_hints(b, data_len, &mut |_| {})
}

/// Calls `f` on every entry of a hint file that passed [`check_hint_file`].
pub fn for_each_hint(b: &[u8], data_len: u64, mut f: impl FnMut(HintEntry<'_>)) {
    let _ = walk_hints(b, data_len, &mut f);
}

/// Checks a hint file and, only if all of it is valid, calls `f` on every entry.
pub fn decode_hint_file(
    b: &[u8],
    file_id: u32,
    data_len: u64,
    f: impl FnMut(HintEntry<'_>),
) -> Result<u64, (u64, String)> {
    let n = check_hint_file(b, file_id, data_len)?;
    for_each_hint(b, data_len, f);
    Ok(n)
}

fn walk_hints(
    b: &[u8],
    data_len: u64,
    f: &mut dyn FnMut(HintEntry<'_>),
) -> Result<u64, (u64, String)> {
    let mut pos = FILE_HEADER_SIZE;
    let mut count = 0u64;
    loop {
        let at = pos as u64;
        let h = b
            .get(pos..pos + HINT_HEADER_SIZE)
            .ok_or((at, "hint file ends without its footer".to_string()))?;
        let key_len = get_fixed32(&h[13..]).unwrap_or(0) as usize;
        let end = pos
            .checked_add(HINT_HEADER_SIZE + key_len)
            .filter(|&e| e <= b.len())
            .ok_or((at, "hint entry runs past the end".to_string()))?;
        let entry = &b[pos..end];
        if unmask(get_fixed32(entry).unwrap_or(0)) != crc32c(&entry[4..]) {
            return Err((at, "hint entry checksum mismatch".into()));
        }
        let seq = get_fixed64(&entry[4..]).unwrap_or(0);
        let flags = entry[12];
        let record_size = get_fixed32(&entry[17..]).unwrap_or(0);
        let record_offset = get_fixed64(&entry[21..]).unwrap_or(0);
        pos = end;
        if flags == FLAG_END {
            if seq != count || record_offset != data_len || pos != b.len() {
                return Err((
                    at,
                    "hint footer does not match the entries or data file".into(),
                ));
            }
            return Ok(count);
        }
        if flags & !FLAG_TOMBSTONE != 0 {
            return Err((at, format!("unknown hint flags {flags:#x}")));
        }
        // Both fields come from disk: the sum may overflow, and a size of 2^31 or more
        // would collide with the keydir's tombstone bit.
        if record_offset
            .checked_add(record_size as u64)
            .is_none_or(|end| end > data_len)
            || record_size as u64 > MAX_RECORD_SIZE
            || (record_size as usize) < RECORD_HEADER_SIZE + key_len
        {
            return Err((at, "hint points outside the data file".into()));
        }
        count += 1;
        f(HintEntry {
            seq,
            tombstone: flags & FLAG_TOMBSTONE != 0,
            record_size,
            record_offset,
            key: &entry[HINT_HEADER_SIZE..],
        });
    }
}

/// Encodes a merge commit file: the ids of the data files the merge replaced.
pub fn encode_merge_commit(id: u32, inputs: &[u32]) -> Vec<u8> {
    let mut b = encode_file_header(MERGE_MAGIC, 0, id).to_vec();
    let start = b.len();
    put_fixed32(&mut b, inputs.len() as u32);
    for &i in inputs {
        put_fixed32(&mut b, i);
    }
    let crc = mask(crc32c(&b[start..]));
    put_fixed32(&mut b, crc);
    b
}

/// Decodes a merge commit file.
pub fn decode_merge_commit(b: &[u8], id: u32) -> Result<Vec<u32>, String> {
    decode_file_header(b, MERGE_MAGIC, id).map_err(|e| format!("{e:?}"))?;
    let body = &b[FILE_HEADER_SIZE..];
    let n = get_fixed32(body).ok_or("no count")? as usize;
    let end = 4 + n * 4;
    let stored = body.get(end..).and_then(get_fixed32).ok_or("truncated")?;
    if body.len() != end + 4 || unmask(stored) != crc32c(&body[..end]) {
        return Err("merge commit checksum mismatch".into());
    }
    Ok((0..n)
        .filter_map(|i| get_fixed32(&body[4 + i * 4..]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_roundtrip_and_damage() {
        let mut b = Vec::new();
        let n = encode_record(&mut b, 7, b"key", Some(b"value"));
        assert_eq!(n, RECORD_HEADER_SIZE + 8);
        let r = decode_record(&b, true).unwrap();
        assert_eq!(
            (r.seq, r.key, r.value),
            (7, &b"key"[..], Some(&b"value"[..]))
        );
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 1;
            assert!(decode_record(&c, true).is_err(), "flip at {i}");
        }
        let mut t = Vec::new();
        encode_record(&mut t, 8, b"k", None);
        assert_eq!(decode_record(&t, true).unwrap().value, None);
    }

    #[test]
    fn hint_file_roundtrip() {
        let mut b = encode_file_header(HINT_MAGIC, 0, 3).to_vec();
        encode_hint(&mut b, 5, 0, b"a", 30, 24);
        encode_hint(&mut b, 6, FLAG_TOMBSTONE, b"b", 22, 54);
        encode_hint(&mut b, 2, FLAG_END, b"", 0, 76);
        let mut e = Vec::new();
        let n = decode_hint_file(&b, 3, 76, |h| e.push((h.key.to_vec(), h.tombstone))).unwrap();
        assert_eq!(n, 2);
        assert_eq!(e, vec![(b"a".to_vec(), false), (b"b".to_vec(), true)]);
        assert!(decode_hint_file(&b, 3, 77, |_| ()).is_err());
        assert!(decode_hint_file(&b, 4, 76, |_| ()).is_err());
        for cut in 0..b.len() {
            let mut called = false;
            assert!(decode_hint_file(&b[..cut], 3, 76, |_| called = true).is_err());
            assert!(!called, "nothing is applied from a bad hint file");
        }
    }

    /// Found by the `bitcask_hint` fuzzer: a checksum-valid hint whose offset plus size
    /// overflows u64 panicked instead of being refused.
    #[test]
    fn hint_with_overflowing_or_huge_location_is_refused() {
        for (size, offset) in [(30, u64::MAX - 5), (u32::MAX, 24), (1 << 31, 24)] {
            let mut b = encode_file_header(HINT_MAGIC, 0, 3).to_vec();
            encode_hint(&mut b, 5, 0, b"a", size, offset);
            encode_hint(&mut b, 1, FLAG_END, b"", 0, u64::MAX);
            let r = decode_hint_file(&b, 3, u64::MAX, |_| panic!("applied a bad hint"));
            assert_eq!(r.map_err(|(at, _)| at), Err(FILE_HEADER_SIZE as u64));
        }
    }

    #[test]
    fn names_and_merge_commit() {
        let d = Path::new("/d");
        assert_eq!(data_path(d, 7), Path::new("/d/000007.data"));
        assert_eq!(parse_file_name("000007.data"), Some(BitcaskFile::Data(7)));
        assert_eq!(parse_file_name("000007.hint"), Some(BitcaskFile::Hint(7)));
        assert_eq!(parse_file_name("000009.merge"), Some(BitcaskFile::Merge(9)));
        assert_eq!(parse_file_name("000007.data.tmp"), Some(BitcaskFile::Temp));
        assert_eq!(parse_file_name("x.data"), None);
        let m = encode_merge_commit(9, &[1, 2, 5]);
        assert_eq!(decode_merge_commit(&m, 9).unwrap(), vec![1, 2, 5]);
        assert!(decode_merge_commit(&m[..m.len() - 1], 9).is_err());
    }
}
