//! Merge (Bitcask's compaction): rewrite immutable data files keeping only the records the
//! keydir still points to, write a hint file beside each output, and swap atomically.
//!
//! 1. Under the writer lock and the keydir read lock: the active file id and the
//!    immutable files; select those passing the [`super::MergeTrigger`] thresholds (all of
//!    them for an explicit merge).
//! 2. Scan each selected file; a record is live if the keydir still points at it (a
//!    tombstone too: the keydir keeps a deleted key's tombstone as its latest record, so a
//!    later write makes it dead). Live records are copied verbatim (same sequence number) into `NNNNNN.data.tmp` outputs (fresh
//!    ids, rolled at `max_file_size`) and a hint entry is added to `NNNNNN.hint.tmp`.
//!    Tombstones are kept unless the merge covers every immutable file (no older record of
//!    the key can survive it), in which case they are dropped.
//! 3. Outputs are synced and renamed into place, then a merge commit file
//!    `NNNNNN.merge` listing the replaced files is written (temp, sync, rename, dir sync).
//!    A crash before the commit leaves duplicates (equal sequence numbers, harmless); after
//!    it, recovery deletes the replaced files.
//! 4. Under the keydir write lock: the outputs join the file set; entries still pointing
//!    at a copied record are repointed and entries still pointing at a dropped tombstone
//!    are removed, in chunks of [`REPOINT_CHUNK`] (the lock is let go between chunks, so a
//!    merge of millions of keys does not stall writers and readers: both the old and the
//!    new file are in the set meanwhile); then the replaced files leave the set and are
//!    deleted when the last reader holding them lets go.
//!
//! Readers are never blocked except for the instants of step 4, and a reader always finds
//! the file its entry names: entry and file are taken under the same lock.

use super::datafile::{scan, DataFile};
use super::format::{
    data_path, encode_file_header, encode_hint, encode_merge_commit, hint_path, merge_path,
    tmp_path, DATA_MAGIC, FILE_HEADER_SIZE, FLAG_END, FLAG_TOMBSTONE, HINT_MAGIC, KIND_MERGE,
};
use super::keydir::{Key, KeydirEntry};
use super::{lock, Inner, PendingCommit};
use crate::error::{IoContext, Result};
use crate::fs::WritableFile;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One output file being written.
struct Output {
    id: u32,
    data: Box<dyn WritableFile>,
    hint: Box<dyn WritableFile>,
    hint_buf: Vec<u8>,
    entries: u64,
}

/// A record copied by the merge: where it was, where it is now.
struct Moved {
    key: Key,
    old: KeydirEntry,
    new: KeydirEntry,
}

/// Moved entries repointed per hold of the keydir write lock: each is a random lookup in
/// the keydir (0.2 to 0.5 µs at millions of keys), and a write waits for the hold.
const REPOINT_CHUNK: usize = 16;

/// Picks the files to merge: every immutable file for an explicit merge, else those whose
/// dead bytes pass the thresholds. Returns (inputs, whether they are all immutable files).
fn pick(inner: &Inner, explicit: bool) -> (Vec<Arc<DataFile>>, bool) {
    let w = lock(&inner.writer);
    let idx = inner.read_index();
    let t = &inner.opts.merge_trigger;
    let immutable: Vec<_> = idx
        .files
        .values()
        .filter(|f| f.id != w.active_id)
        .cloned()
        .collect();
    let chosen: Vec<_> = immutable
        .iter()
        .filter(|f| {
            explicit
                || idx.stats.get(&f.id).is_some_and(|s| {
                    s.dead > 0 && (s.dead_ratio() >= t.min_dead_ratio || s.dead >= t.min_dead_bytes)
                })
        })
        .cloned()
        .collect();
    let all = chosen.len() == immutable.len();
    (chosen, all)
}

impl Inner {
    fn new_output(&self, tmps: &mut Vec<PathBuf>) -> Result<Output> {
        let id = self.next_file_id.fetch_add(1, Ordering::SeqCst);
        let dp = tmp_path(&data_path(&self.dir, id));
        let hp = tmp_path(&hint_path(&self.dir, id));
        tmps.push(dp.clone());
        tmps.push(hp.clone());
        let mut data = self
            .fs
            .create(&dp)
            .context(|| format!("creating {}", dp.display()))?;
        data.append(&encode_file_header(DATA_MAGIC, KIND_MERGE, id))
            .context(|| format!("writing {}", dp.display()))?;
        let mut hint = self
            .fs
            .create(&hp)
            .context(|| format!("creating {}", hp.display()))?;
        hint.append(&encode_file_header(HINT_MAGIC, 0, id))
            .context(|| format!("writing {}", hp.display()))?;
        Ok(Output {
            id,
            data,
            hint,
            hint_buf: Vec::new(),
            entries: 0,
        })
    }

    /// Writes the hint footer and syncs both files of `o`; returns bytes written.
    fn finish_output(&self, mut o: Output) -> Result<(u32, u64)> {
        let len = o.data.len();
        encode_hint(&mut o.hint_buf, o.entries, FLAG_END, b"", 0, len);
        let hp = hint_path(&self.dir, o.id);
        o.hint
            .append(&o.hint_buf)
            .and_then(|_| o.hint.sync())
            .context(|| format!("writing {}", hp.display()))?;
        o.data
            .sync()
            .context(|| format!("syncing {}", data_path(&self.dir, o.id).display()))?;
        Ok((o.id, len + o.hint.len()))
    }
}

/// Runs one merge. Returns `Ok(false)` if there was nothing to merge or the store is
/// shutting down.
pub(crate) fn run(inner: &Arc<Inner>, explicit: bool) -> Result<bool> {
    let _m = lock(&inner.merge_lock);
    let (inputs, all) = pick(inner, explicit);
    if inputs.is_empty() {
        return Ok(false);
    }
    let mut tmps = Vec::new();
    let r = write_outputs(inner, &inputs, all, &mut tmps);
    let (outputs, moved, dropped, bytes_read, bytes_written) = match r {
        Ok(Some(x)) => x,
        other => {
            for t in &tmps {
                if inner.fs.exists(t) {
                    let _ = inner.fs.remove_file(t);
                }
            }
            return other.map(|_| false);
        }
    };
    // Make the outputs live on disk, then commit.
    for &id in &outputs {
        for p in [data_path(&inner.dir, id), hint_path(&inner.dir, id)] {
            inner
                .fs
                .rename(&tmp_path(&p), &p)
                .context(|| format!("renaming to {}", p.display()))?;
        }
    }
    let commit_id = inner.next_file_id.fetch_add(1, Ordering::SeqCst);
    let cp = merge_path(&inner.dir, commit_id);
    let ctmp = tmp_path(&cp);
    let ids: Vec<u32> = inputs.iter().map(|f| f.id).collect();
    let mut w = inner
        .fs
        .create(&ctmp)
        .context(|| format!("creating {}", ctmp.display()))?;
    w.append(&encode_merge_commit(commit_id, &ids))
        .and_then(|_| w.sync())
        .context(|| format!("writing {}", ctmp.display()))?;
    drop(w);
    inner
        .fs
        .rename(&ctmp, &cp)
        .context(|| format!("renaming to {}", cp.display()))?;
    inner
        .fs
        .sync_dir(&inner.dir)
        .context(|| format!("syncing {}", inner.dir.display()))?;

    let mut opened = Vec::new();
    for &id in &outputs {
        opened.push(Arc::new(DataFile::open(&inner.fs, &inner.dir, id)?));
    }
    {
        let mut idx = inner.write_index();
        for f in opened {
            idx.stats.entry(f.id).or_default();
            idx.files.insert(f.id, f);
        }
    }
    for chunk in moved.chunks(REPOINT_CHUNK) {
        let mut idx = inner.write_index_yielding();
        for m in chunk {
            let key = m.key.as_slice();
            let live = match idx.map.get_mut(key) {
                Some(e) if e.same_location(&m.old) => {
                    *e = m.new;
                    true
                }
                _ => false,
            };
            idx.add_bytes(m.new.file_id, m.new.size() as u64, !live);
        }
    }
    for chunk in dropped.chunks(REPOINT_CHUNK) {
        let mut idx = inner.write_index_yielding();
        for (key, e) in chunk {
            idx.remove_if(key, e);
        }
    }
    {
        let mut idx = inner.write_index();
        for f in &inputs {
            idx.files.remove(&f.id);
            idx.stats.remove(&f.id);
            f.mark_obsolete();
        }
    }
    lock(&inner.pending_commits).push(PendingCommit {
        path: cp,
        inputs: inputs.iter().map(Arc::downgrade).collect(),
    });
    drop(inputs);
    let c = &inner.counters;
    c.merges.fetch_add(1, Ordering::Relaxed);
    c.merge_bytes_read.fetch_add(bytes_read, Ordering::Relaxed);
    c.merge_bytes_written
        .fetch_add(bytes_written, Ordering::Relaxed);
    tracing::info!(inputs = ?ids, outputs = ?outputs, bytes_read, bytes_written, "merge done");
    Ok(true)
}

/// Outputs, moved records, dropped tombstones (key and old location), bytes read and
/// written.
type Written = (Vec<u32>, Vec<Moved>, Vec<(Vec<u8>, KeydirEntry)>, u64, u64);

fn write_outputs(
    inner: &Arc<Inner>,
    inputs: &[Arc<DataFile>],
    all: bool,
    tmps: &mut Vec<PathBuf>,
) -> Result<Option<Written>> {
    let mut outputs = Vec::new();
    let mut moved = Vec::new();
    let mut dropped = Vec::new();
    let mut cur: Option<Output> = None;
    let (mut read, mut written) = (0u64, 0u64);
    for f in inputs {
        if inner.shutting_down.load(Ordering::Acquire) {
            return Ok(None);
        }
        let len = f.file.len();
        let expect = inner
            .read_index()
            .stats
            .get(&f.id)
            .map_or(0, |s| s.total + FILE_HEADER_SIZE as u64);
        if len < expect {
            // Never merge from a handle that sees less than the keydir accounts for: the
            // records beyond would be dropped as dead.
            return Err(crate::error::Error::corruption(
                f.name(),
                len,
                format!("file is {len} bytes, its records need {expect}"),
            ));
        }
        read += len;
        let out = scan(f, len, false, inner.opts.corruption, |r| {
            let here = KeydirEntry::new(f.id, r.offset, r.size, r.seq, r.tombstone);
            let live = inner
                .read_index_yielding()
                .map
                .get(r.key)
                .is_some_and(|e| e.same_location(&here));
            if !live {
                return Ok(());
            }
            if r.tombstone && all {
                dropped.push((r.key.to_vec(), here));
                return Ok(());
            }
            if let Some(o) = cur.as_ref() {
                if o.data.len() > FILE_HEADER_SIZE as u64
                    && o.data.len() + r.size as u64 > inner.opts.max_file_size
                {
                    if let Some(o) = cur.take() {
                        let (id, n) = inner.finish_output(o)?;
                        outputs.push(id);
                        written += n;
                    }
                }
            }
            if cur.is_none() {
                cur = Some(inner.new_output(tmps)?);
            }
            let Some(o) = cur.as_mut() else {
                return Ok(());
            };
            let off = o.data.len();
            o.data
                .append(r.raw)
                .context(|| format!("writing merge output {}", o.id))?;
            let flags = if r.tombstone { FLAG_TOMBSTONE } else { 0 };
            encode_hint(&mut o.hint_buf, r.seq, flags, r.key, r.size, off);
            o.entries += 1;
            if o.hint_buf.len() >= 1 << 20 {
                o.hint
                    .append(&o.hint_buf)
                    .context(|| format!("writing hint {}", o.id))?;
                o.hint_buf.clear();
            }
            moved.push(Moved {
                key: Key::new(r.key),
                old: here,
                new: KeydirEntry::new(o.id, off, r.size, r.seq, r.tombstone),
            });
            Ok(())
        })?;
        if !out.skipped.is_empty() {
            tracing::warn!(file = %f.name(), ranges = out.skipped.len(), "merge skipped corrupt bytes");
        }
    }
    if let Some(o) = cur.take() {
        let (id, n) = inner.finish_output(o)?;
        outputs.push(id);
        written += n;
    }
    Ok(Some((outputs, moved, dropped, read, written)))
}
