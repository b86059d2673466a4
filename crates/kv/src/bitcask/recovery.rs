//! Opening a store: finishing interrupted merges, then rebuilding the keydir from hint
//! files where they are present and valid (fast: no value is read), else by scanning the
//! data files; cutting a torn tail off the last file the writer used.

use super::datafile::{scan, DataFile, SkippedRange};
use super::format::{
    check_hint_file, data_path, decode_file_header, decode_merge_commit, for_each_hint, hint_path,
    merge_path, parse_file_name, tmp_path, BitcaskFile, HeaderError, DATA_MAGIC, FILE_HEADER_SIZE,
    KIND_WRITER,
};
use super::keydir::{Keydir, KeydirEntry};
use super::options::BitcaskOptions;
use crate::error::{Error, IoContext, Result};
use crate::fs::FileSystem;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

/// What recovery found and did when the store was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Data files whose keydir entries came from their hint file.
    pub files_from_hints: usize,
    /// Data files scanned record by record.
    pub files_scanned: usize,
    /// Hint files that were rejected (and removed), with the reason; their data files were
    /// scanned instead.
    pub bad_hints: Vec<String>,
    /// The torn tail cut off the last file the writer used: `(file, offset, bytes)`.
    pub torn_tail: Option<(String, u64, u64)>,
    /// Corrupt ranges skipped under `CorruptionPolicy::SkipAndReport`.
    pub skipped: Vec<SkippedRange>,
    /// Merges whose commit file was found and whose replaced files were removed now.
    pub merges_finished: usize,
}

pub(crate) struct Recovered {
    pub keydir: Keydir,
    pub next_seq: u64,
    pub next_file_id: u32,
    pub report: RecoveryReport,
}

fn remove(fs: &dyn FileSystem, p: &Path) -> Result<()> {
    fs.remove_file(p)
        .context(|| format!("removing {}", p.display()))
}

/// Rebuilds the state of the store in `dir`.
pub(crate) fn recover(dir: &Path, opts: &BitcaskOptions) -> Result<Recovered> {
    let fs = &opts.fs;
    let mut report = RecoveryReport::default();
    let names = fs
        .list_dir(dir)
        .context(|| format!("listing {}", dir.display()))?;
    let mut data_ids = BTreeSet::new();
    let mut max_id = 0u32;
    let mut commits = Vec::new();
    for name in &names {
        match parse_file_name(name) {
            Some(BitcaskFile::Temp) => remove(fs.as_ref(), &dir.join(name))?,
            Some(BitcaskFile::Data(id)) => {
                data_ids.insert(id);
                max_id = max_id.max(id);
            }
            Some(BitcaskFile::Hint(id)) => max_id = max_id.max(id),
            Some(BitcaskFile::Merge(id)) => {
                commits.push(id);
                max_id = max_id.max(id);
            }
            Some(BitcaskFile::Lock) | None => {}
        }
    }
    // A merge commit file lists the files its outputs replaced: finish deleting them.
    for id in commits {
        let p = merge_path(dir, id);
        let bytes = fs
            .read_file(&p)
            .context(|| format!("reading {}", p.display()))?;
        match decode_merge_commit(&bytes, id) {
            Ok(inputs) => {
                for i in inputs {
                    if data_ids.remove(&i) {
                        remove(fs.as_ref(), &data_path(dir, i))?;
                    }
                    let h = hint_path(dir, i);
                    if fs.exists(&h) {
                        remove(fs.as_ref(), &h)?;
                    }
                }
                report.merges_finished += 1;
            }
            // Outputs and inputs both remain: duplicates with equal sequence numbers, which
            // is harmless (tombstones are still in the inputs).
            Err(e) => tracing::warn!(file = %p.display(), error = %e, "ignoring bad merge commit"),
        }
        fs.sync_dir(dir)
            .context(|| format!("syncing {}", dir.display()))?;
        remove(fs.as_ref(), &p)?;
    }

    // Headers: which files the writer wrote, and the last of them.
    let mut files = Vec::new();
    let mut last_writer = None;
    for &id in &data_ids {
        let df = DataFile::open(fs, dir, id)?;
        let len = df.file.len();
        let head = df
            .file
            .read_at(0, FILE_HEADER_SIZE.min(len as usize))
            .context(|| format!("reading {}", df.name()))?;
        let kind = match decode_file_header(&head, DATA_MAGIC, id) {
            Ok(h) => Some(h.kind),
            Err(HeaderError::Short) => None,
            Err(HeaderError::Bad(r)) => return Err(Error::corruption(df.name(), 0, r)),
            Err(HeaderError::Version(version)) => {
                return Err(Error::UnsupportedVersion {
                    file: df.name(),
                    version,
                })
            }
        };
        if kind.is_none_or(|k| k == KIND_WRITER) {
            last_writer = Some(id);
        }
        files.push((df, len, kind));
    }

    let mut keydir = Keydir::default();
    let mut max_seq = 0u64;
    // The file that holds the highest sequence number, for the error if it is the last one.
    let mut max_seq_file = String::new();
    for (df, len, kind) in files {
        let id = df.id;
        let seq_before = max_seq;
        let name = df.name();
        let is_last = last_writer == Some(id);
        if kind.is_none() {
            if !is_last {
                return Err(Error::corruption(
                    df.name(),
                    0,
                    "file shorter than its header",
                ));
            }
            // The writer's newest file, torn before its header was complete: it holds nothing.
            report.torn_tail = Some((df.name(), 0, len));
            let p = df.path.clone();
            drop(df);
            remove(fs.as_ref(), &p)?;
            continue;
        }
        if len == FILE_HEADER_SIZE as u64 && kind == Some(KIND_WRITER) {
            // An active file that never received a record: nothing to keep.
            let p = df.path.clone();
            drop(df);
            remove(fs.as_ref(), &p)?;
            continue;
        }
        let hp = hint_path(dir, id);
        let mut from_hint = false;
        if fs.exists(&hp) {
            let bytes = fs.read_file(&hp).map_err(|e| (0, e.to_string()));
            let hint = bytes.and_then(|b| {
                let n = check_hint_file(&b, id, len)?;
                // The hint file knows how many keys follow: spare the keydir its rehashing.
                keydir.map.reserve(n as usize);
                for_each_hint(&b, len, |e| {
                    max_seq = max_seq.max(e.seq);
                    keydir.add_bytes(id, e.record_size as u64, false);
                    let entry =
                        KeydirEntry::new(id, e.record_offset, e.record_size, e.seq, e.tombstone);
                    keydir.apply(e.key, entry);
                });
                Ok(n)
            });
            match hint {
                Ok(_) => {
                    from_hint = true;
                    report.files_from_hints += 1;
                }
                Err((off, reason)) => {
                    tracing::warn!(file = %hp.display(), offset = off, %reason,
                        "bad hint file: scanning the data file instead");
                    report
                        .bad_hints
                        .push(format!("{} at offset {off}: {reason}", hp.display()));
                    remove(fs.as_ref(), &hp)?;
                }
            }
        }
        let df = if from_hint {
            df
        } else {
            report.files_scanned += 1;
            let out = scan(&df, len, is_last, opts.corruption, |r| {
                keydir.add_bytes(id, r.size as u64, false);
                keydir.apply(
                    r.key,
                    KeydirEntry::new(id, r.offset, r.size, r.seq, r.tombstone),
                );
                Ok(())
            })?;
            max_seq = max_seq.max(out.max_seq);
            keydir.add_bytes(id, out.batch_header_bytes, true);
            report.skipped.extend(out.skipped);
            match out.torn {
                Some(reason) => {
                    tracing::warn!(file = %df.name(), %reason, "cutting off a torn tail");
                    report.torn_tail = Some((df.name(), out.good_len, len - out.good_len));
                    cut_tail(fs, dir, df, out.good_len)?
                }
                None => {
                    if is_last {
                        // A crashed process may have left its last bytes in the page cache
                        // only, and the store goes on in a new file: made durable first, as
                        // a power loss would otherwise tear it before the new file's
                        // synced records (recovery then refuses the store).
                        fs.sync_file(&df.path)
                            .context(|| format!("syncing {}", df.name()))?;
                    }
                    df
                }
            }
        };
        keydir.stats.entry(id).or_default();
        keydir.files.insert(id, Arc::new(df));
        if max_seq > seq_before {
            max_seq_file = name;
        }
    }
    // Both maxima come from disk (a record or hint, a file name): a store that cannot
    // number its next write or file is refused rather than wrapped around.
    let next_seq = max_seq.checked_add(1).ok_or_else(|| {
        Error::corruption(
            max_seq_file,
            0,
            "holds sequence number 2^64 - 1: no sequence number is left for new writes",
        )
    })?;
    let next_file_id = max_id.checked_add(1).ok_or_else(|| {
        Error::corruption(
            data_path(dir, max_id).display().to_string(),
            0,
            "file id 2^32 - 1 leaves no id for a new file",
        )
    })?;
    Ok(Recovered {
        keydir,
        next_seq,
        next_file_id,
        report,
    })
}

/// Rewrites the first `good_len` bytes of `df` in its place (written aside, synced, renamed
/// over it): a file system has no portable truncate-and-sync for us, and the file becomes
/// immutable once the new active file exists.
pub(crate) fn cut_tail(
    fs: &Arc<dyn FileSystem>,
    dir: &Path,
    df: DataFile,
    good_len: u64,
) -> Result<DataFile> {
    let data = df
        .file
        .read_at(0, good_len as usize)
        .context(|| format!("reading {}", df.name()))?;
    let tmp = tmp_path(&df.path);
    let mut w = fs
        .create(&tmp)
        .context(|| format!("creating {}", tmp.display()))?;
    w.append(&data)
        .and_then(|_| w.sync())
        .context(|| format!("writing {}", tmp.display()))?;
    drop(w);
    let (id, path) = (df.id, df.path.clone());
    drop(df);
    fs.rename(&tmp, &path)
        .context(|| format!("renaming {}", tmp.display()))?;
    fs.sync_dir(dir)
        .context(|| format!("syncing {}", dir.display()))?;
    DataFile::open(fs, dir, id)
}
