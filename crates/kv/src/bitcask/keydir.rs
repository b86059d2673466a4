//! The keydir: the in-memory hash index from every key to the location of its latest
//! record, plus the per-file live/dead byte counts that drive merges and the set of open
//! data files.
//!
//! Memory: an entry is a `Vec<u8>` key (24 bytes inline + the key on the heap, rounded up
//! by the allocator) and a 24-byte [`KeydirEntry`], in a `HashMap` slot with one control
//! byte, at a load factor of at most 7/8. [`Keydir::memory_bytes`] estimates it as
//! `capacity * (24 + 24 + 1) + key bytes + 16 * keys` (16 bytes of allocator overhead per
//! key): about 80 bytes + the key length per key. Tombstones stay in the keydir (they are
//! the latest record of their key) until a merge of every immutable file drops them.

use super::datafile::DataFile;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

const TOMBSTONE_BIT: u32 = 1 << 31;

/// Where the latest record of a key is: file, offset and size of the whole record, and its
/// sequence number. 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeydirEntry {
    /// Data file id.
    pub file_id: u32,
    size_flags: u32,
    /// Offset of the record in the file.
    pub offset: u64,
    /// Sequence number of the record (the highest wins).
    pub seq: u64,
}

impl KeydirEntry {
    /// A new entry; `size` must be below 2^31.
    pub fn new(file_id: u32, offset: u64, size: u32, seq: u64, tombstone: bool) -> Self {
        KeydirEntry {
            file_id,
            size_flags: (size & !TOMBSTONE_BIT) | if tombstone { TOMBSTONE_BIT } else { 0 },
            offset,
            seq,
        }
    }
    /// Size of the whole record.
    pub fn size(&self) -> u32 {
        self.size_flags & !TOMBSTONE_BIT
    }
    /// True if the record is a tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.size_flags & TOMBSTONE_BIT != 0
    }
    /// True if both name the same record.
    pub fn same_location(&self, other: &KeydirEntry) -> bool {
        self.file_id == other.file_id && self.offset == other.offset
    }
}

/// Record bytes of a data file (its header excluded) and how many of them are dead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStat {
    /// Bytes of records (and batch headers) in the file.
    pub total: u64,
    /// Bytes of records no longer the latest of their key, and batch headers.
    pub dead: u64,
}

impl FileStat {
    /// Live bytes.
    pub fn live(&self) -> u64 {
        self.total.saturating_sub(self.dead)
    }
    /// Dead bytes / record bytes.
    pub fn dead_ratio(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.dead as f64 / self.total as f64
        }
    }
}

/// The index, the file stats and the open files, guarded together by one `RwLock` so
/// that a reader picks an entry and the file it names atomically (a merge swaps both under
/// the write lock: a read never sees a gap).
#[derive(Default)]
pub struct Keydir {
    /// Key -> latest record.
    pub map: HashMap<Vec<u8>, KeydirEntry>,
    /// Open data files by id.
    pub files: BTreeMap<u32, Arc<DataFile>>,
    /// Live/dead bytes by file id.
    pub stats: BTreeMap<u32, FileStat>,
    /// Sum of key lengths in `map`.
    pub key_bytes: u64,
    /// Entries of `map` that are tombstones.
    pub tombstones: u64,
}

impl Keydir {
    /// Counts `size` record bytes in `file_id`.
    pub fn add_bytes(&mut self, file_id: u32, size: u64, dead: bool) {
        let s = self.stats.entry(file_id).or_default();
        s.total += size;
        if dead {
            s.dead += size;
        }
    }

    fn mark_dead(&mut self, e: &KeydirEntry) {
        if let Some(s) = self.stats.get_mut(&e.file_id) {
            s.dead += e.size() as u64;
        }
    }

    /// Applies a record (already counted with [`Keydir::add_bytes`]): it becomes the
    /// latest for `key` unless the keydir holds a record with a higher or equal sequence
    /// number, in which case it is counted dead. Returns true if it became the latest.
    pub fn apply(&mut self, key: &[u8], e: KeydirEntry) -> bool {
        match self.map.get_mut(key) {
            Some(old) if old.seq >= e.seq => {
                self.mark_dead(&e);
                false
            }
            Some(old) => {
                let prev = *old;
                *old = e;
                self.tombstones =
                    self.tombstones + e.is_tombstone() as u64 - prev.is_tombstone() as u64;
                self.mark_dead(&prev);
                true
            }
            None => {
                self.map.insert(key.to_vec(), e);
                self.key_bytes += key.len() as u64;
                self.tombstones += e.is_tombstone() as u64;
                true
            }
        }
    }

    /// Removes `key` if its entry is still `expect` (a tombstone dropped by a merge).
    pub fn remove_if(&mut self, key: &[u8], expect: &KeydirEntry) -> bool {
        match self.map.get(key) {
            Some(e) if e.same_location(expect) => {
                self.tombstones -= e.is_tombstone() as u64;
                self.key_bytes -= key.len() as u64;
                self.map.remove(key);
                true
            }
            _ => false,
        }
    }

    /// Live keys (tombstones excluded).
    pub fn live_keys(&self) -> u64 {
        self.map.len() as u64 - self.tombstones
    }

    /// Estimated heap bytes of the index (see the module doc).
    pub fn memory_bytes(&self) -> u64 {
        let slot = (std::mem::size_of::<Vec<u8>>() + std::mem::size_of::<KeydirEntry>() + 1) as u64;
        self.map.capacity() as u64 * slot + self.key_bytes + 16 * self.map.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_packs_into_24_bytes() {
        assert_eq!(std::mem::size_of::<KeydirEntry>(), 24);
        let e = KeydirEntry::new(3, 100, 50, 9, true);
        assert!(e.is_tombstone());
        assert_eq!(e.size(), 50);
    }

    #[test]
    fn highest_seq_wins_and_dead_bytes_counted() {
        let mut k = Keydir::default();
        k.add_bytes(1, 30, false);
        assert!(k.apply(b"a", KeydirEntry::new(1, 24, 30, 5, false)));
        k.add_bytes(2, 30, false);
        assert!(!k.apply(b"a", KeydirEntry::new(2, 24, 30, 4, false)));
        k.add_bytes(2, 22, false);
        assert!(k.apply(b"a", KeydirEntry::new(2, 54, 22, 6, true)));
        assert_eq!(k.stats[&1].dead, 30);
        assert_eq!(k.stats[&2].dead, 30);
        assert_eq!(k.live_keys(), 0);
        assert_eq!(k.tombstones, 1);
    }
}
