//! Data files: the shared read handle ([`DataFile`]) and the sequential scan used by
//! recovery and merge, with the torn-tail and corruption rules.

use super::format::{
    crc_ok, data_path, hint_path, RecordHeader, FILE_HEADER_SIZE, RECORD_HEADER_SIZE,
};
use super::options::CorruptionPolicy;
use crate::error::{Error, IoContext, Result};
use crate::fs::{FileSystem, RandomAccessFile};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// An open data file. Shared by `Arc` between the keydir and readers; once a merge has
/// replaced it, it is marked obsolete and its data and hint files are deleted when the last
/// reader lets go of it.
pub struct DataFile {
    /// File id.
    pub id: u32,
    /// Path of the data file.
    pub path: PathBuf,
    /// Positioned-read handle.
    pub file: Arc<dyn RandomAccessFile>,
    fs: Arc<dyn FileSystem>,
    obsolete: AtomicBool,
}

impl DataFile {
    /// Opens data file `id` in `dir`.
    pub fn open(fs: &Arc<dyn FileSystem>, dir: &std::path::Path, id: u32) -> Result<DataFile> {
        let path = data_path(dir, id);
        let file = fs
            .open(&path)
            .context(|| format!("opening {}", path.display()))?;
        Ok(DataFile {
            id,
            path,
            file,
            fs: fs.clone(),
            obsolete: AtomicBool::new(false),
        })
    }

    /// The path as errors name it.
    pub fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// Deletes the file (and its hint file) once the last handle is dropped.
    pub fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::Release);
    }
}

impl Drop for DataFile {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            if let Err(e) = self.fs.remove_file(&self.path) {
                tracing::warn!(file = %self.path.display(), error = %e, "could not remove merged data file");
            }
            if let Some(dir) = self.path.parent() {
                let hint = hint_path(dir, self.id);
                if self.fs.exists(&hint) {
                    let _ = self.fs.remove_file(&hint);
                }
            }
        }
    }
}

const CHUNK: usize = 1 << 20;

/// Sequential reads of a file through a window of about 1 MiB.
pub struct SeqReader {
    file: Arc<dyn RandomAccessFile>,
    len: u64,
    buf: Vec<u8>,
    start: u64,
}

impl SeqReader {
    /// Reads `file`, which is `len` bytes long.
    pub fn new(file: Arc<dyn RandomAccessFile>, len: u64) -> Self {
        SeqReader {
            file,
            len,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// The bytes `[off, off + n)`, or `None` if they run past the end of the file.
    pub fn slice(&mut self, off: u64, n: usize) -> std::io::Result<Option<&[u8]>> {
        let Some(end) = off.checked_add(n as u64).filter(|&e| e <= self.len) else {
            return Ok(None);
        };
        if off < self.start || end > self.start + self.buf.len() as u64 {
            let want = (n.max(CHUNK) as u64).min(self.len - off) as usize;
            self.buf = self.file.read_at(off, want)?;
            self.start = off;
        }
        let s = (off - self.start) as usize;
        Ok(Some(&self.buf[s..s + n]))
    }
}

/// One record found by a scan.
#[derive(Debug, Clone, Copy)]
pub struct Scanned<'a> {
    /// Offset of the record.
    pub offset: u64,
    /// Size of the whole record.
    pub size: u32,
    /// Sequence number.
    pub seq: u64,
    /// True for a tombstone.
    pub tombstone: bool,
    /// The key.
    pub key: &'a [u8],
    /// The whole record (header included).
    pub raw: &'a [u8],
}

/// Damage skipped by [`CorruptionPolicy::SkipAndReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRange {
    /// The file.
    pub file: String,
    /// Offset of the first bad byte.
    pub offset: u64,
    /// Bytes skipped.
    pub len: u64,
    /// What was wrong.
    pub reason: String,
}

/// How a scan ended.
#[derive(Debug, Default)]
pub struct ScanOutcome {
    /// Length of the valid prefix (the file length unless a torn tail was found).
    pub good_len: u64,
    /// The torn tail that was found (only when scanning the writer's last file).
    pub torn: Option<String>,
    /// Ranges skipped under `SkipAndReport`.
    pub skipped: Vec<SkippedRange>,
    /// Bytes of batch headers (counted dead).
    pub batch_header_bytes: u64,
    /// Highest sequence number seen (batch headers included).
    pub max_seq: u64,
}

/// Checks whether a complete, checksum-valid record (or batch header whose group fits)
/// starts at `at`.
fn valid_at(r: &mut SeqReader, at: u64) -> std::io::Result<bool> {
    let Some(hb) = r.slice(at, RECORD_HEADER_SIZE)? else {
        return Ok(false);
    };
    let hb = hb.to_vec();
    let Some(h) = RecordHeader::decode(&hb) else {
        return Ok(false);
    };
    if !h.flags_known() || (h.is_tombstone() && h.value_len != 0) {
        return Ok(false);
    }
    if h.is_batch() {
        let fits = at + RECORD_HEADER_SIZE as u64 + h.value_len as u64 <= r.len;
        return Ok(fits && h.key_len > 0 && crc_ok(&hb));
    }
    let len = h.record_len();
    if len > super::format::MAX_RECORD_SIZE {
        return Ok(false);
    }
    Ok(match r.slice(at, len as usize)? {
        Some(b) => crc_ok(b),
        None => false,
    })
}

/// The offset of the next valid record after `at`, if any.
fn next_valid(r: &mut SeqReader, at: u64) -> std::io::Result<Option<u64>> {
    let mut p = at + 1;
    while p + RECORD_HEADER_SIZE as u64 <= r.len {
        if valid_at(r, p)? {
            return Ok(Some(p));
        }
        p += 1;
    }
    Ok(None)
}

/// Parses a complete group of `count` records; `None` if anything is wrong with it.
fn parse_group(group: &[u8], base: u64, count: u32) -> Option<Vec<(u64, RecordHeader)>> {
    // `count` comes from disk: reserve no more than the group's bytes can hold.
    let mut out = Vec::with_capacity((count as usize).min(group.len() / RECORD_HEADER_SIZE));
    let mut p = 0usize;
    while p < group.len() {
        let h = RecordHeader::decode(&group[p..])?;
        if !h.flags_known() || h.is_batch() || (h.is_tombstone() && h.value_len != 0) {
            return None;
        }
        let end = p.checked_add(h.record_len() as usize)?;
        if end > group.len() || !crc_ok(&group[p..end]) {
            return None;
        }
        out.push((base + p as u64, h));
        p = end;
    }
    (out.len() == count as usize).then_some(out)
}

/// Scans the records of data file `file` (`len` bytes, header already checked) in order,
/// calling `f` for each complete record; a batch's records are passed only if the whole
/// batch is intact.
///
/// Damage is handled thus: in the last file the writer used (`tolerate_tail`), damage after
/// which no valid record follows is a torn tail: the scan stops there and reports it.
/// Anywhere else it is `Error::Corruption` naming the file and offset, or, with
/// [`CorruptionPolicy::SkipAndReport`], skipped up to the next valid record and reported.
pub fn scan(
    file: &DataFile,
    len: u64,
    tolerate_tail: bool,
    policy: CorruptionPolicy,
    mut f: impl FnMut(Scanned<'_>) -> Result<()>,
) -> Result<ScanOutcome> {
    let name = file.name();
    let io = |e: std::io::Error| Error::Io {
        context: format!("reading {name}"),
        source: e,
    };
    let mut r = SeqReader::new(file.file.clone(), len);
    let mut out = ScanOutcome {
        good_len: len,
        ..ScanOutcome::default()
    };
    let mut pos = FILE_HEADER_SIZE as u64;
    'scan: while pos < len {
        let mut surely_tail = false;
        let bad: String = 'rec: {
            let Some(hb) = r.slice(pos, RECORD_HEADER_SIZE).map_err(io)? else {
                break 'rec "truncated record header".into();
            };
            let Some(h) = RecordHeader::decode(hb) else {
                break 'rec "truncated record header".into();
            };
            if !h.flags_known() {
                break 'rec format!("unknown record flags {:#x}", h.flags);
            }
            if h.is_batch() {
                let hb = hb.to_vec();
                if !crc_ok(&hb) {
                    break 'rec "batch header checksum mismatch".into();
                }
                let group_start = pos + RECORD_HEADER_SIZE as u64;
                let Some(group) = r.slice(group_start, h.value_len as usize).map_err(io)? else {
                    // A checksum-valid batch header whose group runs past the end: a batch
                    // cut short by a crash. Nothing can follow it.
                    surely_tail = true;
                    break 'rec "batch runs past the end of the file".into();
                };
                let group = group.to_vec();
                let Some(recs) = parse_group(&group, group_start, h.key_len) else {
                    break 'rec "damaged record inside a batch".into();
                };
                out.max_seq = out.max_seq.max(h.seq);
                out.batch_header_bytes += RECORD_HEADER_SIZE as u64;
                for (off, rh) in recs {
                    let s = (off - group_start) as usize;
                    let raw = &group[s..s + rh.record_len() as usize];
                    out.max_seq = out.max_seq.max(rh.seq);
                    f(Scanned {
                        offset: off,
                        size: raw.len() as u32,
                        seq: rh.seq,
                        tombstone: rh.is_tombstone(),
                        key: &raw[RECORD_HEADER_SIZE..RECORD_HEADER_SIZE + rh.key_len as usize],
                        raw,
                    })?;
                }
                pos = group_start + h.value_len as u64;
                continue 'scan;
            }
            if h.is_tombstone() && h.value_len != 0 {
                break 'rec "tombstone with a value".into();
            }
            let rlen = h.record_len();
            if rlen > super::format::MAX_RECORD_SIZE {
                break 'rec format!("record length {rlen} too large");
            }
            let Some(raw) = r.slice(pos, rlen as usize).map_err(io)? else {
                break 'rec "record runs past the end of the file".into();
            };
            if !crc_ok(raw) {
                break 'rec "record checksum mismatch".into();
            }
            out.max_seq = out.max_seq.max(h.seq);
            f(Scanned {
                offset: pos,
                size: rlen as u32,
                seq: h.seq,
                tombstone: h.is_tombstone(),
                key: &raw[RECORD_HEADER_SIZE..RECORD_HEADER_SIZE + h.key_len as usize],
                raw,
            })?;
            pos += rlen;
            continue 'scan;
        };
        // Damage at `pos`.
        let next = if surely_tail && tolerate_tail {
            None
        } else {
            next_valid(&mut r, pos).map_err(io)?
        };
        match next {
            None if tolerate_tail => {
                out.good_len = pos;
                out.torn = Some(format!("{bad} at offset {pos}"));
                return Ok(out);
            }
            _ if policy == CorruptionPolicy::Error => {
                return Err(Error::corruption(name, pos, bad));
            }
            _ => {
                let resume = next.unwrap_or(len);
                tracing::warn!(file = %name, offset = pos, bytes = resume - pos, reason = %bad,
                    "skipping corrupt bytes");
                out.skipped.push(SkippedRange {
                    file: name.clone(),
                    offset: pos,
                    len: resume - pos,
                    reason: bad,
                });
                pos = resume;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcask::format::encode_record;

    /// Found by the `bitcask_data` fuzzer: a checksum-valid batch header claiming 2^32 - 1
    /// records made recovery reserve ~100 GiB (an abort) before looking at the group.
    #[test]
    fn batch_count_from_disk_does_not_size_allocations() {
        let mut group = Vec::new();
        encode_record(&mut group, 1, b"k", Some(b"v"));
        assert!(parse_group(&group, 100, u32::MAX).is_none());
        let parsed = parse_group(&group, 100, 1).expect("one record");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, 100);
    }
}
