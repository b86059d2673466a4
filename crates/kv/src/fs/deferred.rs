//! Deleting files off the caller's thread.
//!
//! Unlinking a table whose pages are in the page cache frees them in the unlinking thread:
//! about 15 ms per 64 MiB table. An obsolete table is deleted by whoever drops its last
//! handle, often a reader (a point read or scan that held the version a compaction
//! replaced), which then stalls for every table of that compaction at once. Through
//! [`DeferredRemoveFs`] the unlink happens on a background thread instead.

use super::{FileLock, FileSystem, RandomAccessFile, WritableFile};
use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

#[derive(Default)]
struct Queue {
    paths: VecDeque<PathBuf>,
    /// A thread serves the queue.
    running: bool,
    /// The thread should empty the queue and exit.
    stop: bool,
    /// Paths ever queued, and of those the ones removed (or given up on a failed removal):
    /// a waiter waits for the count queued when it started, not for an empty queue that
    /// steady compaction may keep from ever being empty.
    queued: u64,
    done: u64,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a path is queued, on stop, and when a queued path is done.
    cv: Condvar,
}

fn lock(m: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A [`FileSystem`] whose [`FileSystem::remove_file`] hands the path to a background
/// thread (once [`DeferredRemoveFs::start`]ed, until [`DeferredRemoveFs::stop`]; otherwise
/// it removes the file at once). Everything else goes straight to the wrapped filesystem.
/// A deferred removal that fails is logged: the caller has already been told it succeeded,
/// and the file is an unreferenced leftover that the next open removes.
pub struct DeferredRemoveFs {
    inner: Arc<dyn FileSystem>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for DeferredRemoveFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredRemoveFs")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl DeferredRemoveFs {
    /// Wraps `inner`; removals stay synchronous until [`DeferredRemoveFs::start`].
    pub fn new(inner: Arc<dyn FileSystem>) -> DeferredRemoveFs {
        DeferredRemoveFs {
            inner,
            shared: Arc::new(Shared::default()),
            thread: Mutex::new(None),
        }
    }

    /// Starts the thread that removes queued files, named `name`.
    pub fn start(&self, name: &str) -> io::Result<()> {
        let mut slot = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Ok(());
        }
        let shared = self.shared.clone();
        let fs = self.inner.clone();
        lock(&shared.queue).running = true;
        let spawned = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || serve(&shared, fs.as_ref()));
        match spawned {
            Ok(h) => {
                *slot = Some(h);
                Ok(())
            }
            Err(e) => {
                lock(&self.shared.queue).running = false;
                Err(e)
            }
        }
    }

    /// Removes every queued file, stops the thread and makes removals synchronous again.
    pub fn stop(&self) {
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        lock(&self.shared.queue).stop = true;
        self.shared.cv.notify_all();
        if let Some(h) = handle {
            if h.join().is_err() {
                tracing::error!("file deletion thread panicked");
            }
        }
        // Queued after the thread's last look (or with no thread ever started).
        let rest: Vec<PathBuf> = lock(&self.shared.queue).paths.drain(..).collect();
        for p in rest {
            remove_logged(self.inner.as_ref(), &p);
        }
    }

    /// Waits until every file queued so far has been removed (or the thread stopped).
    pub fn wait_idle(&self) {
        let mut q = lock(&self.shared.queue);
        let target = q.queued;
        while q.running && q.done < target {
            q = self.shared.cv.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn remove_logged(fs: &dyn FileSystem, path: &Path) {
    match fs.remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "could not delete obsolete file")
        }
    }
}

fn serve(shared: &Shared, fs: &dyn FileSystem) {
    let mut q = lock(&shared.queue);
    loop {
        if let Some(p) = q.paths.pop_front() {
            drop(q);
            remove_logged(fs, &p);
            q = lock(&shared.queue);
            q.done += 1;
            shared.cv.notify_all();
            continue;
        }
        if q.stop {
            q.running = false;
            shared.cv.notify_all();
            return;
        }
        q = shared.cv.wait(q).unwrap_or_else(|e| e.into_inner());
    }
}

impl Drop for DeferredRemoveFs {
    fn drop(&mut self) {
        self.stop();
    }
}

impl FileSystem for DeferredRemoveFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        self.inner.create(path)
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn RandomAccessFile>> {
        self.inner.open(path)
    }
    fn open_mapped(&self, path: &Path) -> io::Result<Arc<dyn RandomAccessFile>> {
        self.inner.open_mapped(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        {
            let mut q = lock(&self.shared.queue);
            if q.running && !q.stop {
                q.paths.push_back(path.to_path_buf());
                q.queued += 1;
                drop(q);
                self.shared.cv.notify_all();
                return Ok(());
            }
        }
        self.inner.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn sync_file(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_file(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn FileLock>> {
        self.inner.lock(path)
    }
    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.link(from, to)
    }
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read_file(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::MemFs;

    fn file(fs: &dyn FileSystem, name: &str) -> PathBuf {
        let p = PathBuf::from(format!("/d/{name}"));
        let mut w = fs.create(&p).unwrap();
        w.append(b"x").unwrap();
        w.sync().unwrap();
        p
    }

    #[test]
    fn removes_on_its_thread_once_started_and_at_once_otherwise() {
        let mem = MemFs::new();
        let inner: Arc<dyn FileSystem> = Arc::new(mem.clone());
        inner.create_dir_all(Path::new("/d")).unwrap();
        let fs = DeferredRemoveFs::new(inner.clone());
        // Not started: synchronous.
        let a = file(&fs, "a");
        fs.remove_file(&a).unwrap();
        assert!(!mem.exists(&a));

        fs.start("test-delete").unwrap();
        let paths: Vec<_> = (0..20).map(|i| file(&fs, &format!("f{i}"))).collect();
        for p in &paths {
            fs.remove_file(p).unwrap();
        }
        // Removing a missing file is not an error worth more than a log line.
        fs.remove_file(Path::new("/d/missing")).unwrap();
        fs.wait_idle();
        assert!(paths.iter().all(|p| !mem.exists(p)));

        // Stopped: whatever was queued is gone, and removals are synchronous again.
        let b = file(&fs, "b");
        fs.remove_file(&b).unwrap();
        fs.stop();
        assert!(!mem.exists(&b));
        let c = file(&fs, "c");
        fs.remove_file(&c).unwrap();
        assert!(!mem.exists(&c));
        assert!(
            fs.remove_file(&c).is_err(),
            "synchronous errors are reported"
        );
    }
}
