//! The filesystem abstraction: every byte the engine reads or writes goes through
//! [`FileSystem`].
//!
//! Two implementations ship: [`PosixFs`] (the real disk) and [`MemFs`] (in memory, with
//! fault injection for tests: failing fsync, ENOSPC, short writes, EIO, flipped bytes on
//! read, and a simulated crash that drops or tears everything not yet synced).
//!
//! The shape of the traits is chosen so that immutable tables can later live on an object
//! store: tables are written once front to back ([`WritableFile`]) and then only read by
//! positioned reads ([`RandomAccessFile::read_at`]); nothing is ever modified in place.

mod deferred;
mod mem;
mod posix;

pub use deferred::DeferredRemoveFs;
pub use mem::{CrashMode, MemFs};
pub use posix::PosixFs;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// A file being written front to back.
pub trait WritableFile: Send {
    /// Appends `data`. It may be buffered in the process until [`WritableFile::flush`].
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Hands buffered bytes to the operating system: after this they survive a crash of the
    /// process (not of the machine).
    fn flush(&mut self) -> io::Result<()>;
    /// Makes everything appended so far durable (flush + fdatasync).
    fn sync(&mut self) -> io::Result<()>;
    /// Bytes appended so far.
    fn len(&self) -> u64;
    /// True if nothing was appended.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills the file with zero bytes up to offset `until` (beyond what was appended), so
    /// that later appends overwrite blocks already allocated and written within the file's
    /// size: their fdatasync then writes the data alone, without the file-size and
    /// block-allocation metadata (a journal commit on ext4). A no-op by default.
    fn preallocate(&mut self, _until: u64) -> io::Result<()> {
        Ok(())
    }
    /// Cuts the file back to the bytes appended, dropping preallocated zeros (not synced).
    fn trim(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// A handle through which another thread can make the bytes flushed so far durable
    /// while this one keeps appending, if the file system has one (the default: none).
    fn background_syncer(&self) -> Option<Box<dyn BackgroundSync>> {
        None
    }
    /// A handle through which another thread can prepare space ahead of this file's
    /// appends (see [`BackgroundAllocate`]), if the file system has one (the default: none).
    fn background_allocator(&self) -> Option<Box<dyn BackgroundAllocate>> {
        None
    }
}

/// Makes a file's flushed bytes durable from another thread; see
/// [`WritableFile::background_syncer`].
pub trait BackgroundSync: Send {
    /// Makes at least the bytes flushed before the handle was made durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
}

/// Prepares, from another thread, the space a file's appends will go to, so that the
/// appending thread neither allocates disk blocks (ext4's delayed allocation then takes
/// the inode lock in writeback, which blocked appends for milliseconds) nor page-cache
/// pages (a page's first touch costs ~8 µs on a virtual machine whose host has not backed
/// it yet) in its `write(2)`. See [`WritableFile::background_allocator`].
pub trait BackgroundAllocate: Send + Sync {
    /// Allocates the blocks of `from..to`, growing the file to `to` if it is shorter (the
    /// new bytes read as zeros). Never changes a byte already written.
    fn allocate(&self, from: u64, to: u64) -> io::Result<()>;
    /// Loads the pages of `from..to` into the page cache (by reading them). Changes
    /// nothing; stops at the end of the file.
    fn load(&self, from: u64, to: u64) -> io::Result<()>;
    /// Starts writing the bytes of `from..to` handed to the OS so far to the disk, without
    /// waiting for them: a later sync then has less to wait for. Promises nothing about
    /// durability. A no-op by default.
    fn start_writeback(&self, _from: u64, _to: u64) -> io::Result<()> {
        Ok(())
    }
}

/// An immutable file read by positioned reads. Shared between threads.
pub trait RandomAccessFile: Send + Sync {
    /// Reads exactly `len` bytes at `offset`; a read past the end is an
    /// `UnexpectedEof` error.
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Fills `buf` with the bytes at `offset` (as [`RandomAccessFile::read_at`] of
    /// `buf.len()` bytes), into a buffer the caller reuses: a scan's readahead reads
    /// hundreds of KiB per call, and a fresh allocation that large costs page faults and
    /// zeroing on every window.
    fn read_exact_into(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let data = self.read_at(offset, buf.len())?;
        buf.copy_from_slice(&data);
        Ok(())
    }
    /// The whole file as bytes in memory, if it was opened mapped
    /// ([`FileSystem::open_mapped`]): a reader slices it instead of reading, with neither
    /// a system call nor a copy.
    fn mapped(&self) -> Option<&bytes::Bytes> {
        None
    }
    /// The file's size in bytes.
    fn len(&self) -> u64;
    /// True if the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A held advisory lock; dropping it releases the lock.
pub trait FileLock: Send + Sync {}

/// The operations the engine needs from a filesystem.
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Creates (or truncates) a file for writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;
    /// Opens a file for positioned reads.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn RandomAccessFile>>;
    /// Opens an immutable file for reading, mapped into memory where the file system can
    /// (see [`RandomAccessFile::mapped`]); the default opens it as [`FileSystem::open`].
    fn open_mapped(&self, path: &Path) -> io::Result<Arc<dyn RandomAccessFile>> {
        self.open(path)
    }
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Names (not paths) of the entries of a directory.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Makes the bytes of an existing file durable (fdatasync) through a descriptor of its
    /// own: for a file whose writer is gone (Bitcask's recovery syncs the last data file
    /// it keeps, which a crashed process may have left in the page cache only).
    fn sync_file(&self, path: &Path) -> io::Result<()>;
    /// True if the path exists.
    fn exists(&self, path: &Path) -> bool;
    /// Takes an exclusive lock on `path` (created if missing). Fails with
    /// `WouldBlock` if somebody else holds it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn FileLock>>;

    /// Makes `to` name the same immutable file as `from` (a hard link where the filesystem
    /// has them). The default copies the bytes and syncs the copy.
    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let data = self.read_file(from)?;
        let mut w = self.create(to)?;
        w.append(&data)?;
        w.sync()
    }

    /// Reads a whole file.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = self.open(path)?;
        file.read_at(0, file.len() as usize)
    }
}

/// Takes the exclusive `LOCK` file of a database directory: [`crate::Error::Locked`] if
/// another process (or another open database in this one) holds it.
pub(crate) fn lock_directory(fs: &dyn FileSystem, dir: &Path) -> crate::Result<Box<dyn FileLock>> {
    let lock_path = crate::filename::lock_path(dir);
    fs.lock(&lock_path).map_err(|e| {
        if e.kind() == io::ErrorKind::WouldBlock {
            crate::Error::Locked(dir.to_path_buf())
        } else {
            crate::Error::Io {
                context: format!("locking {}", lock_path.display()),
                source: e,
            }
        }
    })
}
