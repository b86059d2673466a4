//! The manifest: which tables are live, at which level, and the engine's counters.
//!
//! A manifest file `MANIFEST-<n>` is a log (see [`crate::wal`], with [`MANIFEST_MAGIC`]) of
//! [`VersionEdit`]s. Its first record is a snapshot of the whole state; every later record
//! is a change, appended and synced before the change takes effect. The file `CURRENT`
//! names the live manifest and is switched atomically ([`set_current`]). On open,
//! [`recover`] replays the live manifest into a [`ManifestState`]. The format is specified in
//! `docs/format/manifest.md`.

use crate::coding::{put_length_prefixed, put_varint32, put_varint64, Decoder};
use crate::error::{Error, IoContext, Result};
use crate::filename::{current_path, manifest_path, parse_file_name, temp_path, FileType};
use crate::fs::FileSystem;
use crate::range_del::RangeTombstone;
use crate::wal::{LogReader, LogWriter, TailPolicy, MANIFEST_MAGIC};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

/// Number of levels of the LSM tree; levels are numbered `0..MAX_LEVELS`.
pub const MAX_LEVELS: usize = 7;

/// Field tags of an encoded [`VersionEdit`].
mod tag {
    pub const LOG_NUMBER: u64 = 1;
    pub const NEXT_FILE_NUMBER: u64 = 2;
    pub const LAST_SEQUENCE: u64 = 3;
    pub const NEW_FILE: u64 = 4;
    pub const DELETED_FILE: u64 = 5;
    pub const NEW_RANGE_TOMBSTONE: u64 = 6;
    pub const DELETED_RANGE_TOMBSTONE: u64 = 7;
}

/// What the manifest knows about one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// The table's file number (`<number>.sst`).
    pub number: u64,
    /// Size of the table file in bytes.
    pub file_size: u64,
    /// Smallest internal key in the table.
    pub smallest: Vec<u8>,
    /// Largest internal key in the table.
    pub largest: Vec<u8>,
    /// Smallest sequence number of an entry in the table.
    pub smallest_seq: u64,
    /// Largest sequence number of an entry in the table.
    pub largest_seq: u64,
    /// Number of entries.
    pub num_entries: u64,
    /// Number of deletion tombstones among the entries.
    pub num_deletions: u64,
}

impl FileMeta {
    /// The record of table `number` just written, from the properties its builder returned.
    pub fn from_properties(number: u64, props: crate::sstable::Properties) -> FileMeta {
        FileMeta {
            number,
            file_size: props.file_size,
            smallest: props.smallest_key,
            largest: props.largest_key,
            smallest_seq: props.smallest_seq,
            largest_seq: props.largest_seq,
            num_entries: props.num_entries,
            num_deletions: props.num_deletions,
        }
    }
}

/// One change to the manifest state. Every field is optional; an edit sets the counters it
/// carries, removes `deleted_files` and then adds `new_files`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionEdit {
    /// WAL segments with a number below this are obsolete (their data is in tables).
    pub log_number: Option<u64>,
    /// The next file number to allocate.
    pub next_file_number: Option<u64>,
    /// The largest sequence number in use.
    pub last_sequence: Option<u64>,
    /// Tables added, with their level.
    pub new_files: Vec<(u32, FileMeta)>,
    /// Tables removed: (level, file number).
    pub deleted_files: Vec<(u32, u64)>,
    /// Range deletes that moved out of a flushed memtable.
    pub new_range_tombstones: Vec<RangeTombstone>,
    /// Range deletes no longer needed (no table holds older data in their range).
    pub deleted_range_tombstones: Vec<RangeTombstone>,
}

fn corrupt_edit(file_name: &str, offset: u64, pos: usize, what: &str) -> Error {
    Error::corruption(
        file_name,
        offset,
        format!("bad version edit: {what} (at byte {pos} of the edit)"),
    )
}

impl VersionEdit {
    /// Encodes the edit as a sequence of `tag varint | value` fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(v) = self.log_number {
            put_varint64(&mut out, tag::LOG_NUMBER);
            put_varint64(&mut out, v);
        }
        if let Some(v) = self.next_file_number {
            put_varint64(&mut out, tag::NEXT_FILE_NUMBER);
            put_varint64(&mut out, v);
        }
        if let Some(v) = self.last_sequence {
            put_varint64(&mut out, tag::LAST_SEQUENCE);
            put_varint64(&mut out, v);
        }
        for (level, number) in &self.deleted_files {
            put_varint64(&mut out, tag::DELETED_FILE);
            put_varint32(&mut out, *level);
            put_varint64(&mut out, *number);
        }
        for t in &self.deleted_range_tombstones {
            put_varint64(&mut out, tag::DELETED_RANGE_TOMBSTONE);
            t.encode_to(&mut out);
        }
        for t in &self.new_range_tombstones {
            put_varint64(&mut out, tag::NEW_RANGE_TOMBSTONE);
            t.encode_to(&mut out);
        }
        for (level, f) in &self.new_files {
            put_varint64(&mut out, tag::NEW_FILE);
            put_varint32(&mut out, *level);
            put_varint64(&mut out, f.number);
            put_varint64(&mut out, f.file_size);
            put_length_prefixed(&mut out, &f.smallest);
            put_length_prefixed(&mut out, &f.largest);
            put_varint64(&mut out, f.smallest_seq);
            put_varint64(&mut out, f.largest_seq);
            put_varint64(&mut out, f.num_entries);
            put_varint64(&mut out, f.num_deletions);
        }
        out
    }

    /// Decodes an edit. `file_name` and `offset` (of the record holding the edit) name the
    /// place in errors: an unknown tag, a truncated field, a repeated counter or a level
    /// `>= MAX_LEVELS` is [`Error::Corruption`].
    pub fn decode(data: &[u8], file_name: &str, offset: u64) -> Result<VersionEdit> {
        let mut d = Decoder::new(data);
        let mut edit = VersionEdit::default();
        while !d.is_empty() {
            let field_start = d.position();
            let bad = |what: &str| corrupt_edit(file_name, offset, field_start, what);
            let t = d.varint64().ok_or_else(|| bad("truncated tag"))?;
            match t {
                tag::LOG_NUMBER | tag::NEXT_FILE_NUMBER | tag::LAST_SEQUENCE => {
                    let (slot, name) = match t {
                        tag::LOG_NUMBER => (&mut edit.log_number, "log number"),
                        tag::NEXT_FILE_NUMBER => (&mut edit.next_file_number, "next file number"),
                        _ => (&mut edit.last_sequence, "last sequence"),
                    };
                    let v = d
                        .varint64()
                        .ok_or_else(|| bad(&format!("truncated {name}")))?;
                    if slot.replace(v).is_some() {
                        return Err(bad(&format!("{name} given twice")));
                    }
                }
                tag::DELETED_FILE => {
                    let level = decode_level(&mut d).map_err(|w| bad(&w))?;
                    let number = d
                        .varint64()
                        .ok_or_else(|| bad("truncated deleted file number"))?;
                    edit.deleted_files.push((level, number));
                }
                tag::NEW_FILE => {
                    let level = decode_level(&mut d).map_err(|w| bad(&w))?;
                    let meta = decode_file_meta(&mut d).ok_or_else(|| bad("truncated new file"))?;
                    edit.new_files.push((level, meta));
                }
                tag::NEW_RANGE_TOMBSTONE | tag::DELETED_RANGE_TOMBSTONE => {
                    let t_ = RangeTombstone::decode_from(&mut d)
                        .ok_or_else(|| bad("truncated range tombstone"))?;
                    if t == tag::NEW_RANGE_TOMBSTONE {
                        edit.new_range_tombstones.push(t_);
                    } else {
                        edit.deleted_range_tombstones.push(t_);
                    }
                }
                other => return Err(bad(&format!("unknown tag {other}"))),
            }
        }
        Ok(edit)
    }
}

fn decode_level(d: &mut Decoder<'_>) -> std::result::Result<u32, String> {
    let level = d.varint32().ok_or("truncated level")?;
    if level as usize >= MAX_LEVELS {
        return Err(format!(
            "level {level} out of range (max {})",
            MAX_LEVELS - 1
        ));
    }
    Ok(level)
}

fn decode_file_meta(d: &mut Decoder<'_>) -> Option<FileMeta> {
    Some(FileMeta {
        number: d.varint64()?,
        file_size: d.varint64()?,
        smallest: d.length_prefixed()?.to_vec(),
        largest: d.length_prefixed()?.to_vec(),
        smallest_seq: d.varint64()?,
        largest_seq: d.varint64()?,
        num_entries: d.varint64()?,
        num_deletions: d.varint64()?,
    })
}

/// The state a manifest describes: counters and the live tables of each level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestState {
    /// WAL segments with a number below this are obsolete.
    pub log_number: u64,
    /// The next file number to allocate.
    pub next_file_number: u64,
    /// The largest sequence number in use.
    pub last_sequence: u64,
    /// Live tables per level (`MAX_LEVELS` entries), keyed by file number.
    pub levels: Vec<BTreeMap<u64, FileMeta>>,
    /// Live range deletes.
    pub range_tombstones: BTreeSet<RangeTombstone>,
}

impl Default for ManifestState {
    fn default() -> Self {
        ManifestState {
            log_number: 0,
            next_file_number: 0,
            last_sequence: 0,
            levels: vec![BTreeMap::new(); MAX_LEVELS],
            range_tombstones: BTreeSet::new(),
        }
    }
}

impl ManifestState {
    /// An empty state: all counters 0, no tables.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks that `edit` applies to this state (see [`ManifestState::apply`]) without
    /// changing anything.
    pub fn check(&self, edit: &VersionEdit, file_name: &str, offset: u64) -> Result<()> {
        let bad = |reason: String| {
            Error::corruption(
                file_name,
                offset,
                format!("inconsistent version edit: {reason}"),
            )
        };
        let mut deleted = HashSet::new();
        for &(level, number) in &edit.deleted_files {
            let live = self
                .levels
                .get(level as usize)
                .is_some_and(|l| l.contains_key(&number));
            if !live {
                return Err(bad(format!(
                    "deletes file {number} which is not live at level {level}"
                )));
            }
            if !deleted.insert(number) {
                return Err(bad(format!("deletes file {number} twice")));
            }
        }
        let mut added = HashSet::new();
        for (level, meta) in &edit.new_files {
            if *level as usize >= self.levels.len() {
                return Err(bad(format!(
                    "adds file {} at level {level} (out of range)",
                    meta.number
                )));
            }
            let live_elsewhere = !deleted.contains(&meta.number)
                && self.levels.iter().any(|l| l.contains_key(&meta.number));
            if live_elsewhere || !added.insert(meta.number) {
                return Err(bad(format!(
                    "adds file {} which is already live",
                    meta.number
                )));
            }
        }
        for t in &edit.deleted_range_tombstones {
            if !self.range_tombstones.contains(t) {
                return Err(bad(format!(
                    "deletes range tombstone @{} which is not live",
                    t.seq
                )));
            }
        }
        Ok(())
    }

    /// Applies `edit`: sets the counters it carries, removes its deleted files, then adds
    /// its new files. Deleting a file that is not at that level, adding a file number that
    /// is already live (at any level), or a level out of range is [`Error::Corruption`]
    /// naming `file_name` and `offset`; on error the state is unchanged.
    pub fn apply(&mut self, edit: &VersionEdit, file_name: &str, offset: u64) -> Result<()> {
        // Validate everything first so that a failed edit changes nothing.
        self.check(edit, file_name, offset)?;
        if let Some(v) = edit.log_number {
            self.log_number = v;
        }
        if let Some(v) = edit.next_file_number {
            self.next_file_number = v;
        }
        if let Some(v) = edit.last_sequence {
            self.last_sequence = v;
        }
        for &(level, number) in &edit.deleted_files {
            self.levels[level as usize].remove(&number);
        }
        for (level, meta) in &edit.new_files {
            self.levels[*level as usize].insert(meta.number, meta.clone());
        }
        for t in &edit.deleted_range_tombstones {
            self.range_tombstones.remove(t);
        }
        self.range_tombstones
            .extend(edit.new_range_tombstones.iter().cloned());
        Ok(())
    }

    /// One edit that recreates this state when applied to an empty one (the first record
    /// of a new manifest).
    pub fn snapshot_edit(&self) -> VersionEdit {
        VersionEdit {
            log_number: Some(self.log_number),
            next_file_number: Some(self.next_file_number),
            last_sequence: Some(self.last_sequence),
            new_files: self
                .levels
                .iter()
                .enumerate()
                .flat_map(|(level, files)| files.values().map(move |f| (level as u32, f.clone())))
                .collect(),
            deleted_files: Vec::new(),
            new_range_tombstones: self.range_tombstones.iter().cloned().collect(),
            deleted_range_tombstones: Vec::new(),
        }
    }

    /// Number of live tables over all levels.
    pub fn num_files(&self) -> usize {
        self.levels.iter().map(BTreeMap::len).sum()
    }
}

/// Appends edits to a manifest file.
///
/// If an append fails the writer refuses further edits (the file may end in a torn
/// record); the owner must write a fresh manifest and switch `CURRENT` to it.
#[derive(Debug)]
pub struct ManifestWriter {
    log: LogWriter,
    number: u64,
}

impl ManifestWriter {
    /// Creates `dir/MANIFEST-<number>`, writes `snapshot` (normally
    /// [`ManifestState::snapshot_edit`]) as its first record and syncs it. The new manifest
    /// is not live until [`set_current`] names it (which also makes its directory entry
    /// durable).
    pub fn create(
        fs: &dyn FileSystem,
        dir: &Path,
        number: u64,
        snapshot: &VersionEdit,
    ) -> Result<ManifestWriter> {
        let path = manifest_path(dir, number);
        let file = fs
            .create(&path)
            .context(|| format!("creating manifest {}", path.display()))?;
        let log = LogWriter::new(file, path.display().to_string(), MANIFEST_MAGIC)?;
        let mut writer = ManifestWriter { log, number };
        writer.append(snapshot)?;
        Ok(writer)
    }

    /// Appends `edit`, flushes and syncs: the edit is durable when this returns `Ok`.
    pub fn append(&mut self, edit: &VersionEdit) -> Result<()> {
        self.log.add_record(&edit.encode())?;
        self.log.flush()?;
        self.log.sync()
    }

    /// True once an append failed: the file may end in a partial record, so nothing more
    /// may be appended to it (a new manifest must take over).
    pub fn has_failed(&self) -> bool {
        self.log.has_failed()
    }

    /// Size of the manifest file in bytes.
    pub fn size(&self) -> u64 {
        self.log.len()
    }

    /// The manifest's file number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The manifest's path, as used in errors.
    pub fn file_name(&self) -> &str {
        self.log.file_name()
    }
}

/// Makes `MANIFEST-<manifest_number>` the live manifest: writes `MANIFEST-<n>\n` to a
/// temporary file, syncs it, renames it over `CURRENT` and syncs the directory. A crash at
/// any point leaves `CURRENT` naming either the old or the new manifest.
pub fn set_current(fs: &dyn FileSystem, dir: &Path, manifest_number: u64) -> Result<()> {
    let manifest = manifest_path(dir, manifest_number);
    let name = manifest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = temp_path(dir, manifest_number);
    let current = current_path(dir);
    let result = (|| {
        let mut f = fs
            .create(&tmp)
            .context(|| format!("creating {}", tmp.display()))?;
        f.append(format!("{name}\n").as_bytes())
            .context(|| format!("writing {}", tmp.display()))?;
        f.sync().context(|| format!("syncing {}", tmp.display()))?;
        drop(f);
        fs.rename(&tmp, &current)
            .context(|| format!("renaming {} to {}", tmp.display(), current.display()))
    })();
    if result.is_err() {
        // Best effort: the temp file is garbage either way (and removed on open).
        let _ = fs.remove_file(&tmp);
        return result;
    }
    fs.sync_dir(dir)
        .context(|| format!("syncing directory {}", dir.display()))
}

/// The number of the manifest named by `dir/CURRENT`.
///
/// A missing `CURRENT` is an [`Error::Io`] (`NotFound`); contents other than
/// `MANIFEST-<n>\n` are [`Error::Corruption`] naming `CURRENT`.
pub fn read_current(fs: &dyn FileSystem, dir: &Path) -> Result<u64> {
    let path = current_path(dir);
    let data = fs
        .read_file(&path)
        .context(|| format!("reading {}", path.display()))?;
    let bad = |reason: String| Error::corruption(path.display().to_string(), 0, reason);
    let text =
        std::str::from_utf8(&data).map_err(|_| bad("CURRENT is not valid UTF-8".to_string()))?;
    let name = text.strip_suffix('\n').ok_or_else(|| {
        bad(format!(
            "CURRENT must be one line ending in a newline, found {text:?}"
        ))
    })?;
    match parse_file_name(name) {
        Some(FileType::Manifest(n)) if !name.contains('\n') => Ok(n),
        _ => Err(bad(format!(
            "CURRENT does not name a manifest file: {name:?}"
        ))),
    }
}

/// Reads `CURRENT` and replays the manifest it names: its number and the state it describes.
///
/// The manifest is read with [`TailPolicy::TolerateTornOnly`]: an edit only takes effect
/// once its append was synced, so a *torn* last record (a short header, a verified header
/// whose payload runs past the end of the file, or zeros to the end) is an edit that never
/// happened and is dropped (with a warning). A *complete* last record that fails its header
/// or payload checksum is media corruption of an edit that may have taken effect (it may be
/// the only record of a table whose WAL is gone), so it is [`Error::Corruption`] naming the
/// manifest and the record's offset, never silently dropped. Damage followed by valid
/// edits, an inconsistent edit, or a manifest that never sets the log number, next file
/// number and last sequence is [`Error::Corruption`] naming the manifest too. The caller
/// should write its next edits to a fresh manifest rather than append after a dropped tail.
pub fn recover(fs: &dyn FileSystem, dir: &Path) -> Result<(u64, ManifestState)> {
    let number = read_current(fs, dir)?;
    let path = manifest_path(dir, number);
    let mut reader =
        LogReader::open_with_policy(fs, &path, MANIFEST_MAGIC, TailPolicy::TolerateTornOnly)?;
    let file_name = reader.file_name().to_string();
    let mut state = ManifestState::new();
    let (mut has_log, mut has_next, mut has_seq) = (false, false, false);
    while let Some(record) = reader.next_record()? {
        let offset = reader.last_record_offset();
        let edit = VersionEdit::decode(&record, &file_name, offset)?;
        state.apply(&edit, &file_name, offset)?;
        has_log |= edit.log_number.is_some();
        has_next |= edit.next_file_number.is_some();
        has_seq |= edit.last_sequence.is_some();
    }
    let missing: Vec<&str> = [
        (has_log, "log number"),
        (has_next, "next file number"),
        (has_seq, "last sequence"),
    ]
    .iter()
    .filter(|(has, _)| !has)
    .map(|(_, name)| *name)
    .collect();
    if !missing.is_empty() {
        return Err(Error::corruption(
            file_name,
            reader.end_of_records(),
            format!("manifest never sets: {}", missing.join(", ")),
        ));
    }
    Ok((number, state))
}

#[cfg(test)]
mod tests;
