//! Reading records back from a log file, with the tail rules of [`TailPolicy`].

use super::format::{
    check_file_header, encode_file_header, find_valid_record, parse_record, HeaderCheck,
    RecordParse, LOG_HEADER_SIZE,
};
use crate::error::{Error, IoContext, Result};
use crate::fs::FileSystem;
use crate::options::WalRecoveryMode;
use std::path::Path;

/// What a [`LogReader`] does with damage at the end of a log (damage with no valid record
/// after it). Damage followed by a valid record is [`Error::Corruption`] under every policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailPolicy {
    /// Drop a damaged tail of either kind, torn ([`TailDamageKind::Torn`]) or corrupt
    /// ([`TailDamageKind::Corrupt`]). The WAL's default
    /// ([`WalRecoveryMode::TolerateTail`]).
    TolerateTornOrCorrupt,
    /// Drop a torn tail (a write cut short by a crash); a complete record that fails its
    /// checks is [`Error::Corruption`]. Used for the manifest, whose last edit may be the
    /// only record of a table.
    TolerateTornOnly,
    /// Any damage is an error ([`WalRecoveryMode::Strict`]).
    Strict,
}

impl From<WalRecoveryMode> for TailPolicy {
    fn from(mode: WalRecoveryMode) -> TailPolicy {
        match mode {
            WalRecoveryMode::TolerateTail => TailPolicy::TolerateTornOrCorrupt,
            WalRecoveryMode::Strict => TailPolicy::Strict,
        }
    }
}

/// The kind of damage found at the end of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailDamageKind {
    /// A write cut short: fewer bytes than a record header, a checksum-valid header whose
    /// payload runs past the end of the file, or only zero bytes up to the end.
    Torn,
    /// A complete record that fails a check: header checksum, type, length bound or payload
    /// checksum (media corruption rather than a crash).
    Corrupt,
}

/// A damaged tail that was tolerated: everything from `offset` to the end of the file was
/// dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailDamage {
    /// Offset of the first byte dropped.
    pub offset: u64,
    /// Whether the tail looked torn or corrupt.
    pub kind: TailDamageKind,
    /// What was wrong there.
    pub reason: String,
}

/// Reads the records of a log file in order.
///
/// The whole file is held in memory (WAL segments are bounded by the memtable size,
/// manifests by `max_manifest_size`).
///
/// When the record at offset `X` is damaged, the reader scans the rest of the file for any
/// complete, checksum-valid record. If there is one, the damage is in the middle of the log
/// and [`LogReader::next_record`] fails with [`Error::Corruption`] at `X` under every
/// policy. Otherwise the damage is a tail, classified as torn or corrupt
/// ([`TailDamageKind`]) and handled by the reader's [`TailPolicy`]: when tolerated it is
/// logged, recorded in [`LogReader::tail_damage`] and reading ends; otherwise it is an error.
#[derive(Debug)]
pub struct LogReader {
    data: Vec<u8>,
    file_name: String,
    policy: TailPolicy,
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
    /// the file is shorter than its header. `mode` selects the [`TailPolicy`] (see its
    /// `From` implementation); [`LogReader::open_with_policy`] takes a policy directly.
    pub fn open(
        fs: &dyn FileSystem,
        path: &Path,
        magic: u64,
        mode: WalRecoveryMode,
    ) -> Result<LogReader> {
        LogReader::open_with_policy(fs, path, magic, mode.into())
    }

    /// Like [`LogReader::open`], with an explicit [`TailPolicy`]. A torn file header counts
    /// as a torn tail.
    pub fn open_with_policy(
        fs: &dyn FileSystem,
        path: &Path,
        magic: u64,
        policy: TailPolicy,
    ) -> Result<LogReader> {
        let data = fs
            .read_file(path)
            .context(|| format!("reading log {}", path.display()))?;
        LogReader::from_bytes_with_policy(data, path.display().to_string(), magic, policy)
    }

    /// Like [`LogReader::open`] for a file already in memory; `file_name` is used in errors.
    pub fn from_bytes(
        data: Vec<u8>,
        file_name: impl Into<String>,
        magic: u64,
        mode: WalRecoveryMode,
    ) -> Result<LogReader> {
        LogReader::from_bytes_with_policy(data, file_name, magic, mode.into())
    }

    /// Like [`LogReader::open_with_policy`] for a file already in memory; `file_name` is
    /// used in errors.
    pub fn from_bytes_with_policy(
        data: Vec<u8>,
        file_name: impl Into<String>,
        magic: u64,
        policy: TailPolicy,
    ) -> Result<LogReader> {
        let mut reader = LogReader {
            data,
            file_name: file_name.into(),
            policy,
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
            return self.tolerate_tail(0, TailDamageKind::Torn, reason);
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

    /// Ends reading at a damaged tail of `kind` starting at `offset`: tolerated (logged,
    /// recorded) or an error, as the policy says.
    fn tolerate_tail(&mut self, offset: usize, kind: TailDamageKind, reason: String) -> Result<()> {
        let tolerated = match self.policy {
            TailPolicy::TolerateTornOrCorrupt => true,
            TailPolicy::TolerateTornOnly => kind == TailDamageKind::Torn,
            TailPolicy::Strict => false,
        };
        if tolerated {
            let dropped = self.data.len().saturating_sub(offset);
            tracing::warn!(
                file = %self.file_name,
                offset,
                bytes_dropped = dropped,
                ?kind,
                %reason,
                "dropping damaged log tail"
            );
            self.tail_damage = Some(TailDamage {
                offset: offset as u64,
                kind,
                reason,
            });
            self.finished = Some(Ok(()));
            self.pos = self.data.len();
            return Ok(());
        }
        let why = match (self.policy, kind) {
            (TailPolicy::Strict, TailDamageKind::Torn) => "torn log tail; strict recovery",
            (TailPolicy::Strict, TailDamageKind::Corrupt) => "corrupt last record; strict recovery",
            _ => "corrupt last record: complete but failing its checks, not a torn write",
        };
        let err = Error::corruption(&self.file_name, offset as u64, format!("{reason} ({why})"));
        self.finished = Some(Err(err.duplicate()));
        Err(err)
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
        let (kind, reason) = match parse_record(&self.data, at) {
            RecordParse::Valid {
                payload: (start, end),
            } => {
                self.pos = end;
                self.last_record_offset = at as u64;
                return Ok(Some(self.data[start..end].to_vec()));
            }
            RecordParse::Incomplete(reason) => (TailDamageKind::Torn, reason),
            RecordParse::Bad(reason) => (TailDamageKind::Corrupt, reason),
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
        self.tolerate_tail(at, kind, reason)?;
        Ok(None)
    }

    /// Offset in the file of the record last returned by [`LogReader::next_record`]
    /// (0 before the first one).
    pub fn last_record_offset(&self) -> u64 {
        self.last_record_offset
    }

    /// The damaged tail that was dropped, once `next_record` returned `Ok(None)` under a
    /// policy that tolerated it; `None` if the log ended cleanly.
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

    /// The tail policy this reader applies.
    pub fn policy(&self) -> TailPolicy {
        self.policy
    }

    /// The file name used in errors.
    pub fn file_name(&self) -> &str {
        &self.file_name
    }
}
