//! A MemFs wrapper with "gates": an armed gate blocks the next matching operation until
//! released (and optionally makes it fail).
use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use strata_kv::fs::{FileLock, FileSystem, MemFs, RandomAccessFile, WritableFile};

#[derive(Default)]
pub struct Gate {
    st: Mutex<(
        bool, /*armed*/
        bool, /*blocked*/
        bool, /*released*/
        bool, /*fail*/
    )>,
    skip: Mutex<u32>,
    cv: Condvar,
}
impl Gate {
    pub fn arm(&self, fail: bool) {
        *self.st.lock().unwrap() = (true, false, false, fail);
    }
    /// Lets `n` matching operations through, then blocks the next one.
    pub fn arm_after(&self, n: u32, fail: bool) {
        *self.skip.lock().unwrap() = n;
        self.arm(fail);
    }
    pub fn wait_blocked(&self) {
        let mut g = self.st.lock().unwrap();
        while !g.1 {
            g = self.cv.wait(g).unwrap();
        }
    }
    pub fn release(&self) {
        let mut g = self.st.lock().unwrap();
        g.2 = true;
        self.cv.notify_all();
    }
    /// Called by the hooked operation. Returns Err if the gate was armed to fail.
    fn pass(&self) -> io::Result<()> {
        let mut g = self.st.lock().unwrap();
        if !g.0 {
            return Ok(());
        }
        {
            let mut sk = self.skip.lock().unwrap();
            if *sk > 0 {
                *sk -= 1;
                return Ok(());
            }
        }
        g.0 = false;
        g.1 = true;
        self.cv.notify_all();
        while !g.2 {
            g = self.cv.wait(g).unwrap();
        }
        if g.3 {
            return Err(io::Error::other("injected by gate"));
        }
        Ok(())
    }
}

#[derive(Clone, Default)]
pub struct HookFs {
    pub inner: MemFs,
    /// Blocks the next create of a `.sst` file.
    pub sst_create: Arc<Gate>,
    /// Blocks the next sync of a MANIFEST file.
    pub manifest_sync: Arc<Gate>,
    /// Every removed path, with the name of the thread that removed it.
    pub removed: Arc<Mutex<Vec<(String, String)>>>,
}
impl std::fmt::Debug for HookFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookFs")
    }
}
struct HookFile {
    inner: Box<dyn WritableFile>,
    gate: Option<Arc<Gate>>,
}
impl WritableFile for HookFile {
    fn append(&mut self, d: &[u8]) -> io::Result<()> {
        self.inner.append(d)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
    fn sync(&mut self) -> io::Result<()> {
        if let Some(g) = &self.gate {
            g.pass()?;
        }
        self.inner.sync()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}
impl FileSystem for HookFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let name = path.to_string_lossy().to_string();
        if name.ends_with(".sst") {
            self.sst_create.pass()?;
        }
        let gate = name
            .contains("MANIFEST")
            .then(|| self.manifest_sync.clone());
        Ok(Box::new(HookFile {
            inner: self.inner.create(path)?,
            gate,
        }))
    }
    fn open(&self, p: &Path) -> io::Result<Arc<dyn RandomAccessFile>> {
        self.inner.open(p)
    }
    fn remove_file(&self, p: &Path) -> io::Result<()> {
        let thread = std::thread::current().name().unwrap_or("").to_string();
        if let Ok(mut r) = self.removed.lock() {
            r.push((p.to_string_lossy().to_string(), thread));
        }
        self.inner.remove_file(p)
    }
    fn rename(&self, a: &Path, b: &Path) -> io::Result<()> {
        self.inner.rename(a, b)
    }
    fn list_dir(&self, d: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(d)
    }
    fn create_dir_all(&self, d: &Path) -> io::Result<()> {
        self.inner.create_dir_all(d)
    }
    fn sync_dir(&self, d: &Path) -> io::Result<()> {
        self.inner.sync_dir(d)
    }
    fn sync_file(&self, p: &Path) -> io::Result<()> {
        self.inner.sync_file(p)
    }
    fn exists(&self, p: &Path) -> bool {
        self.inner.exists(p)
    }
    fn lock(&self, p: &Path) -> io::Result<Box<dyn FileLock>> {
        self.inner.lock(p)
    }
}
