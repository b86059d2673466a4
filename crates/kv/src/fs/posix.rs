//! The real filesystem.

use super::{
    BackgroundAllocate, BackgroundSync, FileLock, FileSystem, RandomAccessFile, WritableFile,
};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// The local disk, through `std::fs`.
#[derive(Debug, Default, Clone, Copy)]
pub struct PosixFs;

struct PosixWritable {
    file: BufWriter<File>,
    len: u64,
    /// File size reached by [`WritableFile::preallocate`] (0: none).
    allocated: u64,
}

/// Zeros written per `pwrite` while preallocating.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

impl WritableFile for PosixWritable {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.len += data.len() as u64;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
    fn sync(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn preallocate(&mut self, until: u64) -> io::Result<()> {
        // Positioned writes past the appended (and buffered) bytes: the file position, where
        // appends go, does not move.
        let mut at = self.allocated.max(self.len);
        while at < until {
            let n = (until - at).min(ZEROS.len() as u64) as usize;
            self.file.get_ref().write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
            self.allocated = at;
        }
        Ok(())
    }
    fn trim(&mut self) -> io::Result<()> {
        // Unconditionally: a background allocator may have grown the file too.
        self.file.flush()?;
        self.file.get_ref().set_len(self.len)?;
        self.allocated = 0;
        Ok(())
    }
    fn background_syncer(&self) -> Option<Box<dyn BackgroundSync>> {
        let file = self.file.get_ref().try_clone().ok()?;
        Some(Box::new(PosixSyncer(file)))
    }
    fn background_allocator(&self) -> Option<Box<dyn BackgroundAllocate>> {
        let file = self.file.get_ref().try_clone().ok()?;
        Some(Box::new(PosixAllocator(file)))
    }
}

/// A second descriptor of a file being written, preparing space ahead of its appends.
struct PosixAllocator(File);

/// Bytes read per `pread` while loading pages.
const LOAD_CHUNK: usize = 256 << 10;

impl BackgroundAllocate for PosixAllocator {
    // std has no fallocate; `File::set_len` would leave a hole, allocated in writeback.
    #[allow(unsafe_code)]
    fn allocate(&self, from: u64, to: u64) -> io::Result<()> {
        if to <= from {
            return Ok(());
        }
        let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(to - from)) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        // Mode 0: allocate (as unwritten extents, which read as zeros) and grow the size.
        // Unlike zeros written through the page cache it takes the inode lock only for the
        // allocation, not for copying megabytes, so the appender hardly waits for it.
        // SAFETY: fallocate takes an open descriptor and integers; no memory is shared.
        let r = unsafe { libc::fallocate(self.0.as_raw_fd(), 0, offset, len) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    // std has no sync_file_range.
    #[allow(unsafe_code)]
    fn start_writeback(&self, from: u64, to: u64) -> io::Result<()> {
        if to <= from {
            return Ok(());
        }
        let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(to - from)) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        // SAFETY: sync_file_range takes an open descriptor and integers; no memory is shared.
        let r = unsafe {
            libc::sync_file_range(self.0.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    fn load(&self, from: u64, to: u64) -> io::Result<()> {
        let mut buf = vec![0u8; LOAD_CHUNK];
        let mut at = from;
        while at < to {
            let n = (to - at).min(LOAD_CHUNK as u64) as usize;
            match self.0.read_at(&mut buf[..n], at)? {
                0 => break,
                r => at += r as u64,
            }
        }
        Ok(())
    }
}

/// A second descriptor of a file being written: fdatasync through it covers what the
/// writer flushed through the first.
struct PosixSyncer(File);

impl BackgroundSync for PosixSyncer {
    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

struct PosixRandom {
    file: File,
    len: u64,
    /// The file mapped read-only, if opened by [`FileSystem::open_mapped`].
    map: Option<bytes::Bytes>,
}

/// A read-only shared mapping of a whole file, unmapped on drop (when the last slice of
/// it goes).
struct Mapping {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the mapping is read-only and never changed through this process; the pointer is
// only read as a byte slice, from any thread.
#[allow(unsafe_code)]
unsafe impl Send for Mapping {}
// SAFETY: as for Send: shared read-only memory.
#[allow(unsafe_code)]
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes (> 0) of `file` read-only.
    #[allow(unsafe_code)]
    fn new(file: &File, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh mapping of an open descriptor, no address requested: it aliases
        // no Rust memory. Tables are immutable once written (never modified in place, only
        // unlinked, which keeps the mapping valid), so the bytes do not change under the
        // slices handed out. A file truncated by another process while mapped would fault
        // on access (SIGBUS), as in LevelDB and RocksDB with mmap reads.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Random reads of single blocks: no readahead around each fault.
        // SAFETY: advice on the mapping just made; it changes no memory.
        unsafe { libc::madvise(ptr, len, libc::MADV_RANDOM) };
        Ok(Mapping {
            ptr: ptr as *const u8,
            len,
        })
    }
}

impl AsRef<[u8]> for Mapping {
    #[allow(unsafe_code)]
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `self` is dropped.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no slice of it outlives `self`
        // (each `Bytes` slice holds the owner).
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

impl RandomAccessFile for PosixRandom {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
    fn read_exact_into(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn mapped(&self) -> Option<&bytes::Bytes> {
        self.map.as_ref()
    }
    fn len(&self) -> u64 {
        self.len
    }
}

struct PosixLock {
    _file: File,
}

impl FileLock for PosixLock {}

impl FileSystem for PosixFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        // Readable too: a background allocator loads pages through a clone of it.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(PosixWritable {
            file: BufWriter::with_capacity(64 * 1024, file),
            len: 0,
            allocated: 0,
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn RandomAccessFile>> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Arc::new(PosixRandom {
            file,
            len,
            map: None,
        }))
    }

    fn open_mapped(&self, path: &Path) -> io::Result<Arc<dyn RandomAccessFile>> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        // An empty file cannot be mapped (nor is it a table); one too large for the
        // address space is read as usual.
        let map = match usize::try_from(len) {
            // A failed mapping (address space, `vm.max_map_count`) leaves the file to
            // plain reads, as LevelDB does: the mapping is a speed-up, not a need.
            Ok(n) if n > 0 => match Mapping::new(&file, n) {
                Ok(m) => Some(bytes::Bytes::from_owner(m)),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "could not map a table; reading it instead");
                    None
                }
            },
            _ => None,
        };
        Ok(Arc::new(PosixRandom { file, len, map }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        match fs::hard_link(from, to) {
            Ok(()) => Ok(()),
            // Another filesystem (EXDEV) or no hard links: copy instead.
            Err(_) => {
                fs::copy(from, to)?;
                File::open(to)?.sync_all()
            }
        }
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        // A new description sees a writeback error nobody has reported yet (errseq), so
        // an error of pages the writer's descriptor wrote is not lost.
        File::open(path)?.sync_data()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn FileLock>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(PosixLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "lock held by another process",
            )),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_exact_into_matches_read_at_and_stops_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let fs = PosixFs;
        let mut w = fs.create(&path).unwrap();
        w.append(&data).unwrap();
        w.sync().unwrap();
        let f = fs.open(&path).unwrap();
        let mut buf = vec![0u8; 4096];
        f.read_exact_into(1234, &mut buf).unwrap();
        assert_eq!(buf, f.read_at(1234, 4096).unwrap());
        assert_eq!(&buf[..], &data[1234..1234 + 4096]);
        let e = f.read_exact_into(8000, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_mapped_file_reads_as_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = PosixFs.create(&path).unwrap();
        w.append(&data).unwrap();
        w.sync().unwrap();
        drop(w);
        let f = PosixFs.open_mapped(&path).unwrap();
        let map = f.mapped().unwrap().clone();
        assert_eq!(&map[..], &data[..]);
        assert_eq!(f.read_at(1234, 100).unwrap(), &data[1234..1334]);
        // A slice outlives the file handle (the mapping goes with the last slice); the
        // file's name may go first.
        let slice = map.slice(9000..);
        drop((f, map));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&slice[..], &data[9000..]);
        // Not mapped: plain open, and an empty file.
        assert!(PosixFs.open(&dir.path().join("f2")).is_err());
        drop(PosixFs.create(&dir.path().join("e")).unwrap());
        assert!(PosixFs
            .open_mapped(&dir.path().join("e"))
            .unwrap()
            .mapped()
            .is_none());
    }

    #[test]
    fn background_allocation_grows_with_zeros_and_keeps_written_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut w = PosixFs.create(&path).unwrap();
        w.append(b"records").unwrap();
        w.flush().unwrap();
        let a = w.background_allocator().unwrap();
        // Overlapping what was written: those bytes stay.
        a.allocate(0, 1 << 20).unwrap();
        a.load(0, 2 << 20).unwrap(); // past the end: stops there
        w.append(b" and more").unwrap();
        w.flush().unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), 1 << 20);
        assert_eq!(&data[..16], b"records and more");
        assert!(data[16..].iter().all(|&b| b == 0));
        // Writeback of written bytes, of zeros and past the end changes nothing.
        a.start_writeback(0, 4096).unwrap();
        a.start_writeback(4096, 4 << 20).unwrap();
        assert!(a.start_writeback(5, 1).is_ok());
        assert_eq!(std::fs::read(&path).unwrap(), data);
        w.trim().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"records and more");
        assert!(a.allocate(5, 1).is_ok());
    }
}
