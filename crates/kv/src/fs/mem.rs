//! An in-memory filesystem with fault injection, for tests.
//!
//! It models the page cache: bytes appended are visible to readers at once, but only the
//! bytes covered by a successful `sync` survive [`MemFs::crash`]. Faults are switched on and
//! off at run time, so a test can fail exactly the operation it wants to study.

use super::{FileLock, FileSystem, RandomAccessFile, WritableFile};
use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct MemFile {
    data: Vec<u8>,
    /// Prefix of `data` that has been synced.
    synced: usize,
}

#[derive(Debug, Default)]
struct Faults {
    fail_sync: bool,
    no_space: bool,
    /// Bytes that may still be written before writes fail with ENOSPC (a short write).
    space_left: Option<u64>,
    /// Paths (containing this substring) whose reads fail with EIO.
    read_errors: Vec<String>,
    /// (path, offset): the byte at offset is returned flipped by every read.
    flips: Vec<(PathBuf, u64)>,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<PathBuf, Arc<Mutex<MemFile>>>,
    dirs: HashSet<PathBuf>,
    locks: HashSet<PathBuf>,
    faults: Faults,
}

/// What a simulated crash does to bytes that were written but not synced.
#[derive(Debug, Clone, Copy)]
pub enum CrashMode {
    /// Unsynced bytes are lost.
    DropUnsynced,
    /// Keep all bytes: a crash of the process alone, where the OS still has them.
    KeepAll,
    /// A torn write: of each file's unsynced bytes a pseudo-random prefix survives,
    /// chosen from this seed.
    TearUnsynced(u64),
}

/// In-memory [`FileSystem`] with fault injection. Clones share the same files.
#[derive(Debug, Clone, Default)]
pub struct MemFs {
    state: Arc<Mutex<State>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another test thread must not cascade into poison errors here.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl MemFs {
    /// An empty filesystem.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later `sync` (file or directory) fail with EIO.
    pub fn set_fail_sync(&self, fail: bool) {
        lock(&self.state).faults.fail_sync = fail;
    }

    /// Makes every later write fail with ENOSPC (`StorageFull`).
    pub fn set_no_space(&self, full: bool) {
        let mut s = lock(&self.state);
        s.faults.no_space = full;
        if !full {
            s.faults.space_left = None;
        }
    }

    /// Lets `bytes` more bytes be written, then fails writes with ENOSPC; the write that
    /// crosses the limit is short (its first part lands).
    pub fn set_space_left(&self, bytes: Option<u64>) {
        lock(&self.state).faults.space_left = bytes;
    }

    /// Makes reads of every file whose path contains `pattern` fail with EIO.
    pub fn add_read_error(&self, pattern: &str) {
        lock(&self.state)
            .faults
            .read_errors
            .push(pattern.to_string());
    }

    /// Removes all read errors and byte flips.
    pub fn clear_read_faults(&self) {
        let mut s = lock(&self.state);
        s.faults.read_errors.clear();
        s.faults.flips.clear();
    }

    /// Every read of `path` returns the byte at `offset` flipped (the stored data is intact).
    pub fn flip_on_read(&self, path: &Path, offset: u64) {
        lock(&self.state)
            .faults
            .flips
            .push((path.to_path_buf(), offset));
    }

    /// Flips the byte at `offset` of the stored file (permanent corruption).
    pub fn corrupt_byte(&self, path: &Path, offset: u64) -> io::Result<()> {
        let file = self.file(path)?;
        let mut f = lock(&file);
        let len = f.data.len();
        let b = f.data.get_mut(offset as usize).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("offset {offset} past end {len}"),
            )
        })?;
        *b ^= 0x40;
        Ok(())
    }

    /// Truncates the stored file to `len` bytes.
    pub fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = self.file(path)?;
        let mut f = lock(&file);
        f.data.truncate(len as usize);
        f.synced = f.synced.min(f.data.len());
        Ok(())
    }

    /// The size of a file.
    pub fn file_len(&self, path: &Path) -> io::Result<u64> {
        let file = self.file(path)?;
        let len = lock(&file).data.len() as u64;
        Ok(len)
    }

    /// Simulates a crash: releases all locks and applies `mode` to unsynced bytes.
    pub fn crash(&self, mode: CrashMode) {
        let mut s = lock(&self.state);
        s.locks.clear();
        let mut rng = match mode {
            CrashMode::TearUnsynced(seed) => seed | 1,
            _ => 1,
        };
        for file in s.files.values() {
            let mut f = lock(file);
            let keep = match mode {
                CrashMode::KeepAll => f.data.len(),
                CrashMode::DropUnsynced => f.synced,
                CrashMode::TearUnsynced(_) => {
                    // xorshift64: deterministic per seed.
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let unsynced = f.data.len() - f.synced;
                    f.synced + (rng % (unsynced as u64 + 1)) as usize
                }
            };
            f.data.truncate(keep);
            f.synced = keep;
        }
    }

    /// Paths of all files, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        lock(&self.state).files.keys().cloned().collect()
    }

    fn file(&self, path: &Path) -> io::Result<Arc<Mutex<MemFile>>> {
        lock(&self.state)
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(path))
    }

    fn check_sync(&self) -> io::Result<()> {
        if lock(&self.state).faults.fail_sync {
            return Err(io::Error::other("injected fsync failure"));
        }
        Ok(())
    }
}

struct MemWritable {
    fs: MemFs,
    file: Arc<Mutex<MemFile>>,
    len: u64,
}

impl WritableFile for MemWritable {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let allowed = {
            let mut s = lock(&self.fs.state);
            if s.faults.no_space {
                0
            } else if let Some(left) = s.faults.space_left.as_mut() {
                let n = (*left).min(data.len() as u64);
                *left -= n;
                n as usize
            } else {
                data.len()
            }
        };
        lock(&self.file).data.extend_from_slice(&data[..allowed]);
        self.len += allowed as u64;
        if allowed < data.len() {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected ENOSPC: no space left on device",
            ));
        }
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        self.fs.check_sync()?;
        let mut f = lock(&self.file);
        f.synced = f.data.len();
        Ok(())
    }
    fn len(&self) -> u64 {
        self.len
    }
}

struct MemRandom {
    fs: MemFs,
    path: PathBuf,
    file: Arc<Mutex<MemFile>>,
}

impl RandomAccessFile for MemRandom {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let (fail, flips) = {
            let s = lock(&self.fs.state);
            let p = self.path.to_string_lossy();
            let fail = s
                .faults
                .read_errors
                .iter()
                .any(|pat| p.contains(pat.as_str()));
            let flips: Vec<u64> = s
                .faults
                .flips
                .iter()
                .filter(|(fp, _)| fp == &self.path)
                .map(|(_, o)| *o)
                .collect();
            (fail, flips)
        };
        if fail {
            return Err(io::Error::other("injected EIO on read"));
        }
        let f = lock(&self.file);
        let end = offset
            .checked_add(len as u64)
            .filter(|&e| e <= f.data.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past end of file"))?;
        let mut buf = f.data[offset as usize..end as usize].to_vec();
        for o in flips {
            if o >= offset && o < end {
                buf[(o - offset) as usize] ^= 0x40;
            }
        }
        Ok(buf)
    }
    fn len(&self) -> u64 {
        lock(&self.file).data.len() as u64
    }
}

struct MemLock {
    fs: MemFs,
    path: PathBuf,
}

impl FileLock for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        lock(&self.fs.state).locks.remove(&self.path);
    }
}

impl FileSystem for MemFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let file = Arc::new(Mutex::new(MemFile::default()));
        {
            let mut s = lock(&self.state);
            if s.faults.no_space {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "injected ENOSPC",
                ));
            }
            s.files.insert(path.to_path_buf(), file.clone());
        }
        Ok(Box::new(MemWritable {
            fs: self.clone(),
            file,
            len: 0,
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn RandomAccessFile>> {
        let file = self.file(path)?;
        Ok(Arc::new(MemRandom {
            fs: self.clone(),
            path: path.to_path_buf(),
            file,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        lock(&self.state)
            .files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        let f = s.files.remove(from).ok_or_else(|| not_found(from))?;
        s.files.insert(to.to_path_buf(), f);
        Ok(())
    }

    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        let f = s.files.get(from).cloned().ok_or_else(|| not_found(from))?;
        if s.files.contains_key(to) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "link target exists",
            ));
        }
        s.files.insert(to.to_path_buf(), f);
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = lock(&self.state);
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(s.files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        for a in dir.ancestors() {
            s.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        self.check_sync()
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        self.check_sync()?;
        let file = self.file(path)?;
        let mut f = lock(&file);
        f.synced = f.data.len();
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let s = lock(&self.state);
        s.files.contains_key(path) || s.dirs.contains(path)
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn FileLock>> {
        let mut s = lock(&self.state);
        if !s.locks.insert(path.to_path_buf()) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "lock held"));
        }
        s.files.entry(path.to_path_buf()).or_default();
        Ok(Box::new(MemLock {
            fs: self.clone(),
            path: path.to_path_buf(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_drops_unsynced_and_tears() {
        let fs = MemFs::new();
        let p = Path::new("/d/f");
        fs.create_dir_all(Path::new("/d")).unwrap();
        let mut w = fs.create(p).unwrap();
        w.append(b"durable").unwrap();
        w.sync().unwrap();
        w.append(b"volatile").unwrap();
        assert_eq!(fs.read_file(p).unwrap(), b"durablevolatile");
        fs.crash(CrashMode::DropUnsynced);
        assert_eq!(fs.read_file(p).unwrap(), b"durable");

        let mut w = fs.create(p).unwrap();
        w.append(b"abc").unwrap();
        w.sync().unwrap();
        w.append(&[7u8; 100]).unwrap();
        fs.crash(CrashMode::TearUnsynced(42));
        let len = fs.file_len(p).unwrap();
        assert!((3..=103).contains(&len));
    }

    #[test]
    fn faults_are_injected() {
        let fs = MemFs::new();
        let p = Path::new("/f");
        let mut w = fs.create(p).unwrap();
        fs.set_space_left(Some(4));
        let err = w.append(b"123456").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(
            fs.read_file(p).unwrap(),
            b"1234",
            "short write lands its prefix"
        );
        fs.set_no_space(false);
        fs.set_fail_sync(true);
        assert!(w.sync().is_err());
        fs.set_fail_sync(false);
        fs.flip_on_read(p, 1);
        assert_eq!(fs.read_file(p).unwrap(), b"1r34");
        fs.clear_read_faults();
        fs.add_read_error("/f");
        assert!(fs.read_file(p).is_err());
        let _l = fs.lock(Path::new("/LOCK")).unwrap();
        assert!(fs.lock(Path::new("/LOCK")).is_err());
    }
}
