//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use strata_kv::fs::{CrashMode, FileSystem, MemFs};
use strata_kv::Options;

/// Options on an in-memory filesystem with small buffers, so that tests exercise flushes
/// and many tables quickly.
pub fn small_options(fs: &MemFs) -> Options {
    let mut o = Options {
        fs: Arc::new(fs.clone()),
        write_buffer_size: 16 * 1024,
        ..Options::default()
    };
    o.table.block_size = 512;
    o
}

/// A deep copy of every file under `dir` (after a simulated crash of `fs` in `mode`).
pub fn snapshot_files(fs: &MemFs, mode: CrashMode) -> Vec<(PathBuf, Vec<u8>)> {
    fs.crash(mode);
    // A background thread of a live database may delete a listed file (an obsolete WAL
    // segment) before it is read: it is then gone at the crash, as if deleted just before.
    fs.paths()
        .into_iter()
        .filter_map(|p| match fs.read_file(&p) {
            Ok(data) => Some((p, data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("reading {}: {e}", p.display()),
        })
        .collect()
}

/// A new filesystem holding `files`, with `dir` created.
pub fn restore_files(dir: &Path, files: &[(PathBuf, Vec<u8>)]) -> MemFs {
    let fs = MemFs::new();
    fs.create_dir_all(dir).expect("mkdir");
    for (p, data) in files {
        let mut w = fs.create(p).expect("create");
        w.append(data).expect("append");
        w.sync().expect("sync");
    }
    fs
}

/// The first file in `dir` whose name ends with `suffix`.
pub fn find_file(fs: &MemFs, suffix: &str) -> Option<PathBuf> {
    fs.paths()
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(suffix))
}

/// 100 incompressible-ish bytes for key `k` in write round `round` (xorshift), so that sizes
/// measure the engine, not the compressor, and each round's value differs.
pub fn noise_value(round: u32, k: u32) -> Vec<u8> {
    let mut x = (round as u64) << 32 | k as u64 | 1;
    (0..100)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
