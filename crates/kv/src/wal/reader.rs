//! Reading records back from a log file, with the recovery rules of
//! [`WalRecoveryMode`].

use super::format::{
    check_file_header, encode_file_header, find_valid_record, parse_record, HeaderCheck,
    RecordParse, LOG_HEADER_SIZE,
};
use crate::error::{Error, IoContext, Result};
use crate::fs::FileSystem;
use crate::options::WalRecoveryMode;
use std::path::Path;

/// A damaged tail that was tolerated ([`WalRecoveryMode::TolerateTail`]): everything from
/// `offset` to the end of the file was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailDamage {
    /// Offset of the first byte dropped.
    pub offset: u64,
    /// What was wrong there.
    pub reason: String,
}

/// Reads the records of a log file in order.
///
/// The whole file is held in memory (WAL segments are bounded by the memtable size,
/// manifests by `max_manifest_size`).
///
/// When the record at offset `X` is incomplete or fails its checksum, the reader scans the
/// rest of the file for any complete, checksum-valid record. If there is one, the damage is
/// in the middle of the log and [`LogReader::next_record`] fails with
/// [`Error::Corruption`] at `X` in both modes. Otherwise the damage is a torn tail: in
/// `TolerateTail` mode it is logged, recorded in [`LogReader::tail_damage`] and reading
/// ends; in `Strict` mode it is an error.
#[derive(Debug)]
pub struct LogReader {
    data: Vec<u8>,
    file_name: String,
    mode: WalRecoveryMode,
    /// Offset of the next record to parse.
    pos: usize,
    last_record_offset: u64,
    tail_damage: Option<TailDamage>,
    /// Set once reading has ended: `Ok(())` at the end of the log, `Err` after an error
    /// (which every later call repeats).
    finished: Option<Result<()>>,
}

impl LogReader {
    /// Reads the file at `path` through `fs` and checks its header against `magic`.
    ///
    /// Fails with [`Error::Corruption`] on a wrong magic or a bad header checksum, with
    /// [`Error::UnsupportedVersion`] on an unknown version, and (in `Strict` mode only) if
    /// the file is shorter than its header.
    pub fn open(
        fs: &dyn FileSystem,
        path: &Path,
        magic: u64,
        mode: WalRecoveryMode,
    ) -> Result<LogReader> {
        let data = fs
            .read_file(path)
            .context(|| format!("reading log {}", path.display()))?;
        LogReader::from_bytes(data, path.display().to_string(), magic, mode)
    }

    /// Like [`LogReader::open`] for a file already in memory; `file_name` is used in errors.
    pub fn from_bytes(
        data: Vec<u8>,
        file_name: impl Into<String>,
        magic: u64,
        mode: WalRecoveryMode,
    ) -> Result<LogReader> {
        let mut reader = LogReader {
            data,
            file_name: file_name.into(),
            mode,
            pos: LOG_HEADER_SIZE,
            last_record_offset: 0,
            tail_damage: None,
            finished: None,
        };
        reader.check_header(magic)?;
        Ok(reader)
    }

    fn check_header(&mut self, magic: u64) -> Result<()> {
        let len = self.data.len();
        let expected = encode_file_header(magic);
        // A header that was being written when the process died: fewer than 16 bytes that
        // agree with the expected magic (or zeros from preallocation), or an all-zero file.
        let torn = if len < LOG_HEADER_SIZE {
            let known = len.min(8);
            let prefix = &self.data[..known];
            prefix == &expected[..known] || prefix.iter().all(|&b| b == 0)
        } else {
            self.data.iter().all(|&b| b == 0)
        };
        if torn {
            let reason = format!("torn log header ({len} bytes, no records)");
            return self.tolerate_tail(0, reason);
        }
        if len < LOG_HEADER_SIZE {
            return Err(Error::corruption(
                &self.file_name,
                0,
                format!("short file ({len} bytes) does not start with the expected magic"),
            ));
        }
        match check_file_header(&self.data, magic) {
            HeaderCheck::Valid => Ok(()),
            HeaderCheck::WrongMagic(found) => Err(Error::corruption(
                &self.file_name,
                0,
                format!(
                    "bad log magic {:?} (expected {:?})",
                    String::from_utf8_lossy(&found.to_le_bytes()),
                    String::from_utf8_lossy(&magic.to_le_bytes())
                ),
            )),
            HeaderCheck::BadCrc => Err(Error::corruption(
                &self.file_name,
                0,
                "log header checksum mismatch",
            )),
            HeaderCheck::UnknownVersion(version) => Err(Error::UnsupportedVersion {
                file: self.file_name.clone(),
                version,
            }),
        }
    }

    /// Ends reading at a damaged tail starting at `offset`: tolerated (logged, recorded)
    /// in `TolerateTail` mode, an error in `Strict` mode.
    fn tolerate_tail(&mut self, offset: usize, reason: String) -> Result<()> {
        match self.mode {
            WalRecoveryMode::TolerateTail => {
                let dropped = self.data.len().saturating_sub(offset);
                tracing::warn!(
                    file = %self.file_name,
                    offset,
                    bytes_dropped = dropped,
                    %reason,
                    "dropping damaged log tail"
                );
                self.tail_damage = Some(TailDamage {
                    offset: offset as u64,
                    reason,
                });
                self.finished = Some(Ok(()));
                self.pos = self.data.len();
                Ok(())
            }
            WalRecoveryMode::Strict => {
                let err = Error::corruption(
                    &self.file_name,
                    offset as u64,
                    format!("{reason} (damaged log tail; strict recovery mode)"),
                );
                self.finished = Some(Err(err.duplicate()));
                Err(err)
            }
        }
    }

    /// The next complete, checksum-valid record; `Ok(None)` at the end of the log (or at a
    /// tolerated damaged tail, see [`LogReader::tail_damage`]). After an error every later
    /// call returns the same error.
    pub fn next_record(&mut self) -> Result<Option<Vec<u8>>> {
        match &self.finished {
            Some(Ok(())) => return Ok(None),
            Some(Err(e)) => return Err(e.duplicate()),
            None => {}
        }
        if self.pos >= self.data.len() {
            self.finished = Some(Ok(()));
            return Ok(None);
        }
        let at = self.pos;
        let reason = match parse_record(&self.data, at) {
            RecordParse::Valid {
                payload: (start, end),
            } => {
                self.pos = end;
                self.last_record_offset = at as u64;
                return Ok(Some(self.data[start..end].to_vec()));
            }
            RecordParse::Incomplete(reason) | RecordParse::Bad(reason) => reason,
        };
        if let Some(next) = find_valid_record(&self.data, at + 1) {
            let err = Error::corruption(
                &self.file_name,
                at as u64,
                format!("{reason}; a valid record follows at offset {next}"),
            );
            self.finished = Some(Err(err.duplicate()));
            return Err(err);
        }
        self.tolerate_tail(at, reason)?;
        Ok(None)
    }

    /// Offset in the file of the record last returned by [`LogReader::next_record`]
    /// (0 before the first one).
    pub fn last_record_offset(&self) -> u64 {
        self.last_record_offset
    }

    /// The damaged tail that was dropped, once `next_record` returned `Ok(None)` in
    /// `TolerateTail` mode; `None` if the log ended cleanly.
    pub fn tail_damage(&self) -> Option<&TailDamage> {
        self.tail_damage.as_ref()
    }

    /// Offset just past the last record returned: where the valid part of the log ends so
    /// far.
    pub fn end_of_records(&self) -> u64 {
        match &self.tail_damage {
            Some(t) => t.offset,
            None => self.pos.min(self.data.len()) as u64,
        }
    }

    /// The file name used in errors.
    pub fn file_name(&self) -> &str {
        &self.file_name
    }
}
