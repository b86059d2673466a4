//! Appending records to a log file.

use super::format::{encode_file_header, encode_record_header, MAX_RECORD_SIZE};
use crate::error::{Error, IoContext, Result};
use crate::fs::{BackgroundAllocate, BackgroundSync, WritableFile};
use std::io;

/// Writes a log file: the header, then one framed record per [`LogWriter::add_record`].
///
/// Records are appended to the file's buffer; [`LogWriter::flush`] hands them to the
/// operating system and [`LogWriter::sync`] makes them durable. A group commit appends
/// several records, then flushes once and syncs once.
///
/// After any failed write the writer refuses further records, flushes and syncs: the file
/// may end in a partial record, and appending after it would turn a tolerable torn tail
/// into mid-log corruption. The owner must start a new file.
pub struct LogWriter {
    file: Box<dyn WritableFile>,
    file_name: String,
    failed: bool,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("file_name", &self.file_name)
            .field("len", &self.file.len())
            .field("failed", &self.failed)
            .finish()
    }
}

impl LogWriter {
    /// Starts a log in the freshly created, empty `file` by appending the header for
    /// `magic` ([`super::WAL_MAGIC`] or [`super::MANIFEST_MAGIC`]). Nothing is flushed or
    /// synced. `file_name` is used in error messages.
    pub fn new(
        mut file: Box<dyn WritableFile>,
        file_name: impl Into<String>,
        magic: u64,
    ) -> Result<LogWriter> {
        let file_name = file_name.into();
        file.append(&encode_file_header(magic))
            .context(|| format!("writing log header of {file_name}"))?;
        Ok(LogWriter {
            file,
            file_name,
            failed: false,
        })
    }

    /// Appends one record carrying `payload` (up to [`MAX_RECORD_SIZE`] bytes; larger is
    /// [`Error::InvalidArgument`]). The record is buffered, not yet flushed or synced.
    pub fn add_record(&mut self, payload: &[u8]) -> Result<()> {
        if payload.len() > MAX_RECORD_SIZE {
            return Err(Error::InvalidArgument(format!(
                "log record of {} bytes exceeds the maximum of {MAX_RECORD_SIZE}",
                payload.len()
            )));
        }
        self.check_usable()?;
        let header = encode_record_header(payload);
        let res = self
            .file
            .append(&header)
            .and_then(|()| self.file.append(payload));
        self.track(res)
            .context(|| format!("appending a log record to {}", self.file_name))
    }

    /// Hands buffered records to the operating system (they then survive a crash of the
    /// process, not of the machine).
    pub fn flush(&mut self) -> Result<()> {
        self.check_usable()?;
        let res = self.file.flush();
        self.track(res)
            .context(|| format!("flushing {}", self.file_name))
    }

    /// Makes every record appended so far durable.
    pub fn sync(&mut self) -> Result<()> {
        self.check_usable()?;
        let res = self.file.sync();
        self.track(res)
            .context(|| format!("syncing {}", self.file_name))
    }

    /// Zero-fills the file up to offset `until`, so that synced records appended before it
    /// overwrite allocated blocks within the file size and their fdatasync commits no
    /// metadata (see [`WritableFile::preallocate`]). Readers take zeros up to the end of
    /// the file for a torn tail: only the live segment may carry them, and
    /// [`LogWriter::trim`] removes them before another segment follows it.
    pub fn preallocate(&mut self, until: u64) -> Result<()> {
        self.check_usable()?;
        // A failure here leaves at most zeros past the records: nothing to poison.
        self.file
            .preallocate(until)
            .context(|| format!("preallocating {}", self.file_name))
    }

    /// Cuts preallocated zeros off the end of the file (the next sync makes it durable).
    pub fn trim(&mut self) -> Result<()> {
        self.check_usable()?;
        let res = self.file.trim();
        self.track(res)
            .context(|| format!("trimming {}", self.file_name))
    }

    /// A handle that syncs, from another thread, the records flushed so far (see
    /// [`WritableFile::background_syncer`]); none once the writer has failed.
    pub fn background_syncer(&self) -> Option<Box<dyn BackgroundSync>> {
        if self.failed {
            return None;
        }
        self.file.background_syncer()
    }

    /// A handle that prepares, from another thread, space ahead of the records (see
    /// [`WritableFile::background_allocator`]); none once the writer has failed. What it
    /// allocates reads as zeros: a torn tail, like [`LogWriter::preallocate`]'s.
    pub fn background_allocator(&self) -> Option<Box<dyn BackgroundAllocate>> {
        if self.failed {
            return None;
        }
        self.file.background_allocator()
    }

    /// Bytes written to the file so far, header included.
    pub fn len(&self) -> u64 {
        self.file.len()
    }

    /// True if nothing at all (not even the header) was written, which only happens if the
    /// header write failed.
    pub fn is_empty(&self) -> bool {
        self.file.len() == 0
    }

    /// The file name given at construction.
    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    /// True once a write, flush or sync has failed; the writer then refuses all work.
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    fn track(&mut self, res: io::Result<()>) -> io::Result<()> {
        if res.is_err() {
            self.failed = true;
        }
        res
    }

    fn check_usable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::Io {
                context: format!("writing {}", self.file_name),
                source: io::Error::other(
                    "an earlier write, flush or sync of this log failed; start a new log file",
                ),
            });
        }
        Ok(())
    }
}
