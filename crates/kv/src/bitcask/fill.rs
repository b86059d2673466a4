//! Space prepared ahead of the active data file's appends, by a thread of its own.
//!
//! A `write(2)` that is the first to touch a page of the file allocates the page-cache page
//! (a first touch of memory the VM host has not backed yet costs ~8 µs) and reserves the
//! disk block (ext4 delayed allocation). One append in ~30 paid that, which made the P99 of
//! 5M-key fills and overwrites, and it was ~15% of a write's CPU time. The fill thread
//! allocates ([`BackgroundAllocate::allocate`], `fallocate`) and loads into the page cache
//! [`FILL_AHEAD`] bytes past the records, asked for again once fewer than [`FILL_LOW`] are
//! left, so the writer's `write(2)` finds both ready (as the LSM's WAL does).
//!
//! The fill thread also starts the writeback of the records appended so far, a MiB behind
//! the writer ([`BackgroundAllocate::start_writeback`], `sync_file_range`): left to the
//! fsync that seals a 256 MiB file at roll-over, the writer waited 0.1 to 0.25 s for all of
//! it. Durability is unchanged (that fsync still seals the file before the next one is
//! written); only what it waits for is less.
//!
//! The file then ends in zeros until the writer rolls over or closes and cuts them off
//! ([`crate::fs::WritableFile::trim`], before the sync that seals the file). After a crash
//! the newest writer file may end in zeros: recovery cuts them off as it cuts a torn tail
//! (and reports them as one: zeros cannot be told from a torn record's zero bytes).

use super::lock;
use crate::fs::BackgroundAllocate;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Bytes kept allocated and loaded ahead of the active file's records.
pub(crate) const FILL_AHEAD: u64 = 8 << 20;
/// Space ahead is asked for again once fewer than this many bytes are left.
pub(crate) const FILL_LOW: u64 = 6 << 20;
/// Writeback is started up to this boundary below the writer's offset, and this far behind
/// it (the page being appended to is not written back under the writer).
pub(crate) const WRITEBACK_STEP: u64 = 1 << 20;

/// Where the writeback of a file whose records end at `len` may be started up to.
pub(crate) fn writeback_until(len: u64) -> u64 {
    (len / WRITEBACK_STEP).saturating_sub(1) * WRITEBACK_STEP
}

/// The active file's allocator, shared by the writer and the fill thread.
pub(crate) struct FileAllocator {
    handle: Box<dyn BackgroundAllocate>,
    /// Set (under this lock) when the file stops being the active one, before its zeros
    /// are cut off; allocations happen under it, so none can grow the file afterwards.
    retired: Mutex<bool>,
    /// Offset up to which writeback was started.
    written_back: AtomicU64,
}

impl FileAllocator {
    pub(crate) fn new(handle: Box<dyn BackgroundAllocate>) -> Arc<FileAllocator> {
        Arc::new(FileAllocator {
            handle,
            retired: Mutex::new(false),
            written_back: AtomicU64::new(0),
        })
    }

    /// Starts the writeback of the records up to `until`. A failure costs only speed.
    fn write_back(&self, until: u64) {
        let from = self.written_back.load(Ordering::Relaxed);
        if until <= from {
            return;
        }
        match self.handle.start_writeback(from, until) {
            Ok(()) => self.written_back.store(until, Ordering::Relaxed),
            Err(e) => tracing::debug!(error = %e, "starting the writeback of a data file failed"),
        }
    }

    /// Allocates and loads `from..to` unless the file was retired. A failure costs only
    /// speed (the writer's appends allocate as they would without it): the file is retired.
    fn fill(&self, from: u64, to: u64) {
        {
            let mut retired = lock(&self.retired);
            if *retired {
                return;
            }
            if let Err(e) = self.handle.allocate(from, to) {
                tracing::debug!(error = %e, "allocating data file space ahead failed");
                *retired = true;
                return;
            }
        }
        // Outside the lock: loading takes a while and changes nothing.
        if let Err(e) = self.handle.load(from, to) {
            tracing::debug!(error = %e, "loading data file space ahead failed");
        }
    }

    /// No allocation from now on (the file is about to be trimmed and sealed).
    pub(crate) fn retire(&self) {
        *lock(&self.retired) = true;
    }
}

/// Space `from..to` of the active file for the fill thread.
pub(crate) struct FillJob {
    pub(crate) alloc: Arc<FileAllocator>,
    pub(crate) from: u64,
    pub(crate) to: u64,
    /// Writeback may be started up to here (records already handed to the OS).
    pub(crate) write_back: u64,
}

/// The fill thread's mailbox: at most one job (a newer one of the same file absorbs it).
#[derive(Default)]
pub(crate) struct Filler {
    job: Mutex<(Option<FillJob>, bool)>,
    cv: Condvar,
}

impl Filler {
    /// Hands `job` to the fill thread.
    pub(crate) fn post(&self, mut job: FillJob) {
        let mut g = lock(&self.job);
        if let Some(old) = g.0.take() {
            if Arc::ptr_eq(&old.alloc, &job.alloc) {
                job.from = job.from.min(old.from);
                job.write_back = job.write_back.max(old.write_back);
            }
        }
        g.0 = Some(job);
        drop(g);
        self.cv.notify_one();
    }

    /// Stops the fill thread.
    pub(crate) fn stop(&self) {
        lock(&self.job).1 = true;
        self.cv.notify_one();
    }

    /// The fill thread: runs jobs until [`Filler::stop`].
    pub(crate) fn run(&self) {
        loop {
            let job = {
                let mut g = lock(&self.job);
                loop {
                    if g.1 {
                        return;
                    }
                    if let Some(j) = g.0.take() {
                        break j;
                    }
                    g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
                }
            };
            job.alloc.fill(job.from, job.to);
            job.alloc.write_back(job.write_back);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writeback stays at least a MiB behind the writer, on MiB boundaries.
    #[test]
    fn writeback_stays_behind_the_writer() {
        assert_eq!(writeback_until(0), 0);
        assert_eq!(writeback_until(WRITEBACK_STEP), 0);
        assert_eq!(writeback_until(2 * WRITEBACK_STEP - 1), 0);
        assert_eq!(writeback_until(2 * WRITEBACK_STEP), WRITEBACK_STEP);
        for len in [3 << 20, (5 << 20) + 17, 256 << 20] {
            let w = writeback_until(len);
            assert!(
                w + WRITEBACK_STEP <= len
                    && w.is_multiple_of(WRITEBACK_STEP)
                    && len - w < 2 * WRITEBACK_STEP
            );
        }
    }
}
