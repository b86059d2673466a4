//! The keydir: the in-memory hash index from every key to the location of its latest
//! record, plus the per-file live/dead byte counts that drive merges and the set of open
//! data files.
//!
//! Memory: one 48-byte slot per key (a 24-byte [`KeydirEntry`] and the key, stored inline
//! when it is at most [`INLINE_KEY`] bytes, else boxed) and one control byte, in an
//! open-addressing table ([`hashbrown::HashTable`]) whose buckets are a power of two at a
//! load of at most 7/8: 56 to 112 bytes per key, plus the heap copy of a long key. Short
//! keys cost no allocation and a probe compares them without chasing a pointer. Keys are
//! hashed with seeded XXH3 (the seed is random per process, so crafted keys cannot aim at
//! one bucket).
//!
//! A delete leaves a tombstone entry: it is the latest record of its key, so a later put
//! marks it dead (and a merge drops it once dead), and recovery, which applies records out
//! of sequence order, lets it beat an older put read later. A merge of every immutable file
//! drops the live tombstones too (nothing older can survive it) and removes their entries
//! ([`Keydir::remove_if`]).

use super::datafile::DataFile;
use super::lock;
use allocator_api2::alloc::{AllocError, Allocator, Global, Layout};
use hashbrown::HashTable;
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::ptr::NonNull;
use std::sync::{Arc, Condvar, Mutex};

const TOMBSTONE_BIT: u32 = 1 << 31;

/// Keys up to this many bytes are stored inside their slot.
pub const INLINE_KEY: usize = 22;

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

/// A key as the keydir stores it: inline if short (24 bytes, no allocation), else boxed.
#[derive(Clone)]
pub enum Key {
    /// At most [`INLINE_KEY`] bytes, in place.
    Inline {
        /// Bytes used of `bytes`.
        len: u8,
        /// The key, zero-padded.
        bytes: [u8; INLINE_KEY],
    },
    /// A longer key on the heap.
    Heap(Box<[u8]>),
}

impl Key {
    /// Copies `k`.
    pub fn new(k: &[u8]) -> Key {
        if k.len() <= INLINE_KEY {
            let mut bytes = [0u8; INLINE_KEY];
            bytes[..k.len()].copy_from_slice(k);
            Key::Inline {
                len: k.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(k.into())
        }
    }
    /// The key's bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            // `len` is at most INLINE_KEY by construction; `get` keeps a bad value harmless.
            Key::Inline { len, bytes } => bytes.get(..*len as usize).unwrap_or(bytes),
            Key::Heap(b) => b,
        }
    }
    /// Heap bytes this key holds beyond its slot (allocator overhead included).
    fn heap_bytes(&self) -> u64 {
        match self {
            Key::Inline { .. } => 0,
            Key::Heap(b) => b.len().next_multiple_of(16) as u64 + 16,
        }
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_slice())
    }
}

struct Slot {
    key: Key,
    entry: KeydirEntry,
}

/// Tables below this capacity grow all at once (it takes microseconds).
const INCREMENTAL_FROM: usize = 4096;
/// Buckets of the previous table moved per write while a resize is under way: it ends
/// long before the new table (twice the size) fills, and no write moves more than this.
const MOVE_PER_WRITE: usize = 16;
/// A table this large is shrunk once it is less than a quarter full.
const SHRINK_FROM: usize = 1 << 14;
/// A table of at least this capacity has its successor prepared by the keydir thread
/// ([`TablePrep`]); smaller ones grow into a table allocated in place.
const PREPARE_FROM: usize = 1 << 15;

/// Bytes between two writes that fault in every page of a table.
const PAGE: usize = 4096;

/// The allocator of the keydir's tables: the global allocator, plus, for a table the
/// keydir thread prepares, a write to every page of the new block so that it is backed by
/// memory before the writer gets it.
///
/// Why: a table twice the size of the current one (384 MiB at 5M keys) is fresh memory
/// whose every page costs a fault on first touch, ~4 µs on a virtual machine whose host has
/// not backed it yet. Faulted in by the writer (the resize's moves and new keys), that was
/// 16% of a 5M-key overwrite's time and made one write in ~40 a slow one while it lasted.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableAlloc {
    prefault: bool,
}

// SAFETY: every block comes from `Global` with the caller's layout and goes back to it with
// the same layout, so `Global`'s guarantees (a valid, unaliased block of at least
// `layout.size()` bytes, alive until deallocated; clones interchangeable) hold unchanged.
#[allow(unsafe_code)]
unsafe impl Allocator for TableAlloc {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let block = Global.allocate(layout)?;
        if self.prefault {
            let (base, len) = (block.cast::<u8>().as_ptr(), block.len());
            for off in (0..len).step_by(PAGE) {
                // SAFETY: `off < len`, inside the block just allocated, which nobody else
                // can reach yet; any byte of an allocated block may be written before it
                // is handed out (the table treats the memory as uninitialised).
                unsafe { base.add(off).write_volatile(0) };
            }
        }
        Ok(block)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller passes a block of this allocator and its layout: it came from
        // `Global.allocate(layout)`.
        unsafe { Global.deallocate(ptr, layout) }
    }
}

type Table = HashTable<Slot, TableAlloc>;

fn new_table(capacity: usize, prefault: bool) -> Table {
    HashTable::with_capacity_in(capacity, TableAlloc { prefault })
}

#[derive(Default)]
struct PrepState {
    /// The capacity asked for (0: nothing asked).
    want: usize,
    /// A table ready for `want`.
    ready: Option<Table>,
    /// Tables a finished resize let go of: freeing hundreds of MiB (`munmap`) takes
    /// milliseconds, off the writer.
    retired: Vec<Table>,
    stop: bool,
}

/// The keydir thread's mailbox. Once a large table is 7/8 full, the keydir asks for its
/// successor (twice the capacity); the thread allocates it and faults in its pages
/// ([`TableAlloc`]) while the writer goes on, and the resize starts with it. If it is not
/// ready when the table fills, the resize allocates in place as before (and the prepared
/// table is dropped). The thread also frees the tables resizes leave behind.
///
/// Memory: the prepared table is held from 7/8 full until the resize (which holds both
/// tables anyway).
#[derive(Default)]
pub struct TablePrep {
    state: Mutex<PrepState>,
    cv: Condvar,
}

impl TablePrep {
    /// Asks for a table of `capacity`.
    fn ask(&self, capacity: usize) {
        let mut g = lock(&self.state);
        if g.want == capacity || g.stop {
            return;
        }
        g.want = capacity;
        g.ready = None;
        drop(g);
        self.cv.notify_one();
    }

    /// The table prepared for `capacity`, if it is ready; either way nothing is asked any
    /// more.
    fn take(&self, capacity: usize) -> Option<Table> {
        let mut g = lock(&self.state);
        let want = std::mem::take(&mut g.want);
        let t = g.ready.take();
        (want == capacity).then_some(t).flatten()
    }

    /// Frees `t` in the keydir thread (at once if it has stopped).
    fn retire(&self, t: Table) {
        let mut g = lock(&self.state);
        if g.stop {
            drop(g);
            drop(t);
            return;
        }
        g.retired.push(t);
        drop(g);
        self.cv.notify_one();
    }

    /// Heap bytes of a table held ready.
    fn held_bytes(&self) -> u64 {
        lock(&self.state)
            .ready
            .as_ref()
            .map_or(0, |t| t.allocation_size() as u64)
    }

    /// Stops the keydir thread (tables asked for later are allocated in place).
    pub fn stop(&self) {
        let mut g = lock(&self.state);
        g.stop = true;
        g.ready = None;
        g.want = 0;
        let retired = std::mem::take(&mut g.retired);
        drop(g);
        drop(retired);
        self.cv.notify_one();
    }

    /// The keydir thread: prepares and frees tables until [`TablePrep::stop`].
    pub fn run(&self) {
        let mut g = lock(&self.state);
        loop {
            if g.stop {
                return;
            }
            if !g.retired.is_empty() {
                let retired = std::mem::take(&mut g.retired);
                drop(g);
                drop(retired);
                g = lock(&self.state);
                continue;
            }
            let want = g.want;
            if want > 0 && g.ready.is_none() {
                drop(g);
                let t = new_table(want, true);
                g = lock(&self.state);
                // Not if the resize started without it (or another size is asked now).
                if g.want == want && !g.stop {
                    g.ready = Some(t);
                } else {
                    drop(g);
                    drop(t);
                    g = lock(&self.state);
                }
                continue;
            }
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn slot_hasher(seed: u64) -> impl Fn(&Slot) -> u64 {
    move |s: &Slot| xxhash_rust::xxh3::xxh3_64_with_seed(s.key.as_slice(), seed)
}

/// Asks the keydir thread for the successor of `table` once it is 7/8 full (`asked`: the
/// capacity asked for last).
fn ask_for_next(table: &Table, prep: Option<&TablePrep>, asked: &mut usize) {
    let cap = table.capacity();
    if cap < PREPARE_FROM || *asked == cap * 2 || table.len() < cap - cap / 8 {
        return;
    }
    if let Some(p) = prep {
        *asked = cap * 2;
        p.ask(cap * 2);
    }
}

/// The hash table from keys to their entries.
///
/// Resizing is incremental, as in Redis's dict: when the table is full (or, past
/// [`SHRINK_FROM`], less than a quarter full) a new table is allocated and the previous
/// one drained into it [`MOVE_PER_WRITE`] buckets per write, so no write stalls for the
/// rehash of millions of keys. Meanwhile a key is in exactly one of the two tables, and
/// lookups try both. In an open store, a large table's successor is allocated and faulted
/// in ahead of time by the keydir thread, which also frees the drained one ([`TablePrep`]).
pub struct KeyMap {
    table: Table,
    /// The table being drained during a resize, else empty.
    old: Table,
    /// The next bucket of `old` to move.
    cursor: usize,
    seed: u64,
    /// Heap bytes of boxed (long) keys.
    heap_key_bytes: u64,
    /// The keydir thread, once the store is open (recovery grows tables in place).
    prep: Option<Arc<TablePrep>>,
    /// The capacity last asked of `prep` (0: none).
    asked: usize,
}

impl Default for KeyMap {
    fn default() -> Self {
        KeyMap {
            table: Table::default(),
            old: Table::default(),
            cursor: 0,
            seed: std::collections::hash_map::RandomState::new().hash_one(0x6b65_7964_6972u64),
            heap_key_bytes: 0,
            prep: None,
            asked: 0,
        }
    }
}

impl KeyMap {
    fn hash(&self, key: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(key, self.seed)
    }

    /// Lets the keydir thread prepare the tables of future resizes and free those of past
    /// ones (see [`TablePrep`]).
    pub fn set_preparer(&mut self, prep: Arc<TablePrep>) {
        self.prep = Some(prep);
    }

    /// True while a resize is under way.
    pub fn resizing(&self) -> bool {
        !self.old.is_empty()
    }

    /// Moves up to `buckets` buckets of the previous table into the current one.
    fn migrate(&mut self, buckets: usize) {
        if self.old.is_empty() {
            return;
        }
        let end = self
            .cursor
            .saturating_add(buckets)
            .min(self.old.num_buckets());
        let hasher = slot_hasher(self.seed);
        for i in self.cursor..end {
            if let Ok(e) = self.old.get_bucket_entry(i) {
                let (slot, _) = e.remove();
                let h = hasher(&slot);
                self.table.insert_unique(h, slot, &hasher);
            }
        }
        self.cursor = end;
        if self.old.is_empty() || end == self.old.num_buckets() {
            // Every bucket visited: nothing is left (entries only ever leave `old`).
            let old = std::mem::take(&mut self.old);
            self.cursor = 0;
            match &self.prep {
                Some(p) if old.allocation_size() >= 1 << 20 => p.retire(old),
                _ => drop(old),
            }
        }
    }

    /// Finishes a resize under way.
    fn finish_resize(&mut self) {
        self.migrate(usize::MAX);
    }

    /// One step of a resize under way; called on every write.
    pub fn step(&mut self) {
        self.migrate(MOVE_PER_WRITE);
    }

    /// Starts moving every key into a new table with room for `capacity` keys.
    fn start_resize(&mut self, capacity: usize) {
        self.finish_resize();
        let prepared = match (&self.prep, std::mem::take(&mut self.asked)) {
            (Some(p), asked) if asked > 0 => p.take(capacity),
            _ => None,
        };
        let new = prepared.unwrap_or_else(|| new_table(capacity, false));
        self.old = std::mem::replace(&mut self.table, new);
        self.cursor = 0;
        self.step();
    }

    /// The entry of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&KeydirEntry> {
        let h = self.hash(key);
        let eq = |s: &Slot| s.key.as_slice() == key;
        match self.table.find(h, eq) {
            Some(s) => Some(&s.entry),
            None if self.old.is_empty() => None,
            None => self.old.find(h, eq).map(|s| &s.entry),
        }
    }

    /// The entry of `key`, to change in place: one probe of each table.
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut KeydirEntry> {
        let h = self.hash(key);
        let eq = |s: &Slot| s.key.as_slice() == key;
        // Split borrows: a miss in `table` goes on to `old` without probing `table` again.
        let KeyMap { table, old, .. } = self;
        match table.find_mut(h, eq) {
            Some(s) => Some(&mut s.entry),
            None if old.is_empty() => None,
            None => old.find_mut(h, eq).map(|s| &mut s.entry),
        }
    }

    /// The entry of `key` to change in place, or `None` once `entry` is inserted for it.
    /// The key is hashed once and each table probed once (a miss keeps the slot it found
    /// to insert into), the write path's one lookup.
    pub fn get_or_insert(&mut self, key: &[u8], entry: KeydirEntry) -> Option<&mut KeydirEntry> {
        let h = self.hash(key);
        let eq = |s: &Slot| s.key.as_slice() == key;
        let seed = self.seed;
        let cap = self.table.capacity();
        if self.table.len() < cap {
            // `entry` grows the table at once when it is full, so only while it is not.
            let KeyMap {
                table,
                old,
                heap_key_bytes,
                prep,
                asked,
                ..
            } = self;
            let resizing = !old.is_empty();
            return match table.entry(h, eq, slot_hasher(seed)) {
                hashbrown::hash_table::Entry::Occupied(o) => Some(&mut o.into_mut().entry),
                hashbrown::hash_table::Entry::Vacant(v) => {
                    if resizing {
                        if let Some(s) = old.find_mut(h, eq) {
                            return Some(&mut s.entry);
                        }
                    }
                    let key = Key::new(key);
                    *heap_key_bytes += key.heap_bytes();
                    let table = v.insert(Slot { key, entry }).into_table();
                    if !resizing {
                        ask_for_next(table, prep.as_deref(), asked);
                    }
                    None
                }
            };
        }
        // The table is full (once per resize, or while a fill ends exactly at capacity):
        // an insert starts an incremental resize instead of growing at once.
        if self.get(key).is_some() {
            return self.get_mut(key);
        }
        if self.old.is_empty() && cap >= INCREMENTAL_FROM {
            self.start_resize(cap * 2);
        }
        let key = Key::new(key);
        self.heap_key_bytes += key.heap_bytes();
        // Grows at once only below INCREMENTAL_FROM (or if a shrink was too eager).
        self.table
            .insert_unique(h, Slot { key, entry }, slot_hasher(seed));
        None
    }

    /// Removes `key`, returning its entry.
    pub fn remove(&mut self, key: &[u8]) -> Option<KeydirEntry> {
        let h = self.hash(key);
        let eq = |s: &Slot| s.key.as_slice() == key;
        let slot = match self.table.find_entry(h, eq) {
            Ok(e) => e.remove().0,
            Err(_) => self.old.find_entry(h, eq).ok()?.remove().0,
        };
        self.heap_key_bytes -= slot.key.heap_bytes();
        let (len, cap) = (self.table.len(), self.table.capacity());
        if self.old.is_empty() && cap >= SHRINK_FROM && len < cap / 4 {
            self.start_resize((len * 2).max(INCREMENTAL_FROM));
        }
        Some(slot.entry)
    }

    /// Makes room for `additional` more keys without growing on the way.
    pub fn reserve(&mut self, additional: usize) {
        self.finish_resize();
        self.table.reserve(additional, slot_hasher(self.seed));
    }

    /// Keys in the map.
    pub fn len(&self) -> usize {
        self.table.len() + self.old.len()
    }

    /// True if there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys the tables hold before the current one grows.
    pub fn capacity(&self) -> usize {
        self.table.capacity() + self.old.capacity()
    }

    /// All entries, in unspecified order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &KeydirEntry)> + '_ {
        self.table
            .iter()
            .chain(self.old.iter())
            .map(|s| (&s.key, &s.entry))
    }

    /// Heap bytes: the tables (one held ready for the next resize included) and the boxed
    /// keys.
    pub fn memory_bytes(&self) -> u64 {
        let held = self.prep.as_ref().map_or(0, |p| p.held_bytes());
        (self.table.allocation_size() + self.old.allocation_size()) as u64
            + self.heap_key_bytes
            + held
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
    pub map: KeyMap,
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
    /// Removes `key`'s entry if it is still the record `e` (a tombstone a merge of every
    /// immutable file dropped; a newer write keeps its entry).
    pub fn remove_if(&mut self, key: &[u8], e: &KeydirEntry) {
        self.map.step();
        if self.map.get(key).is_some_and(|cur| cur.same_location(e)) {
            if let Some(old) = self.map.remove(key) {
                self.key_bytes -= key.len() as u64;
                self.tombstones -= old.is_tombstone() as u64;
            }
        }
    }

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
        self.map.step();
        match self.map.get_or_insert(key, e) {
            Some(old) if old.seq >= e.seq => {
                self.mark_dead(&e);
                false
            }
            Some(old) => {
                let prev = *old;
                *old = e;
                self.tombstones += e.is_tombstone() as u64;
                self.tombstones -= prev.is_tombstone() as u64;
                self.mark_dead(&prev);
                true
            }
            None => {
                self.key_bytes += key.len() as u64;
                self.tombstones += e.is_tombstone() as u64;
                true
            }
        }
    }

    /// Live keys (tombstones excluded).
    pub fn live_keys(&self) -> u64 {
        self.map.len() as u64 - self.tombstones
    }

    /// Heap bytes of the index: the table and the boxed keys.
    pub fn memory_bytes(&self) -> u64 {
        self.map.memory_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn entry_and_slot_sizes() {
        assert_eq!(std::mem::size_of::<KeydirEntry>(), 24);
        assert_eq!(std::mem::size_of::<Key>(), 24);
        assert_eq!(std::mem::size_of::<Slot>(), 48);
        let e = KeydirEntry::new(3, 100, 50, 9, true);
        assert!(e.is_tombstone());
        assert_eq!(e.size(), 50);
    }

    #[test]
    fn keys_inline_and_boxed() {
        for n in [0, 1, INLINE_KEY - 1, INLINE_KEY, INLINE_KEY + 1, 300] {
            let k: Vec<u8> = (0..n).map(|i| i as u8 ^ 0x5a).collect();
            let key = Key::new(&k);
            assert_eq!(key.as_slice(), &k[..]);
            assert_eq!(matches!(key, Key::Inline { .. }), n <= INLINE_KEY);
        }
    }

    #[test]
    fn highest_seq_wins_and_dead_bytes_counted() {
        let mut k = Keydir::default();
        k.add_bytes(1, 30, false);
        assert!(k.apply(b"a", KeydirEntry::new(1, 24, 30, 5, false)));
        k.add_bytes(2, 30, false);
        assert!(!k.apply(b"a", KeydirEntry::new(2, 24, 30, 4, false)));
        k.add_bytes(2, 22, false);
        let tomb = KeydirEntry::new(2, 54, 22, 6, true);
        assert!(k.apply(b"a", tomb));
        assert_eq!(k.stats[&1].dead, 30);
        assert_eq!(k.stats[&2].dead, 30);
        assert_eq!(k.live_keys(), 0);
        assert_eq!(k.tombstones, 1);
        // An older put after the tombstone (another file, read later) must lose.
        assert!(!k.apply(b"a", KeydirEntry::new(3, 24, 30, 3, false)));
        // A put after a delete makes the tombstone dead, so merges can reclaim it.
        k.add_bytes(4, 30, false);
        assert!(k.apply(b"a", KeydirEntry::new(4, 24, 30, 7, false)));
        assert_eq!(k.stats[&2].dead, 52);
        assert_eq!((k.tombstones, k.live_keys()), (0, 1));
        // A merge of every file drops a live tombstone: its entry goes, unless rewritten.
        k.add_bytes(4, 22, false);
        let tomb = KeydirEntry::new(4, 54, 22, 8, true);
        assert!(k.apply(b"a", tomb));
        k.remove_if(b"a", &KeydirEntry::new(2, 54, 22, 6, true));
        assert_eq!(k.map.len(), 1, "an older record's removal leaves the entry");
        k.remove_if(b"a", &tomb);
        assert_eq!((k.map.len(), k.tombstones, k.key_bytes), (0, 0, 0));
    }

    /// A write to a full table overwrites in place when the key is there and otherwise
    /// starts an incremental resize (never a rehash of everything at once); lookups in
    /// the middle of it find keys in either table.
    #[test]
    fn full_table_resizes_incrementally() {
        let mut k = Keydir::default();
        k.map.reserve(INCREMENTAL_FROM);
        let cap = k.map.capacity();
        let key = |i: usize| format!("k{i:08}").into_bytes();
        for i in 0..cap {
            assert!(k.apply(&key(i), KeydirEntry::new(1, i as u64, 10, i as u64, false)));
        }
        assert_eq!((k.map.len(), k.map.capacity()), (cap, cap));
        assert!(!k.map.resizing());
        // An overwrite of a full table: in place, no resize.
        assert!(k.apply(&key(5), KeydirEntry::new(2, 0, 10, cap as u64, false)));
        assert!(!k.map.resizing());
        assert_eq!(k.map.get(&key(5)).map(|e| e.file_id), Some(2));
        // A new key: the resize starts and moves only a few buckets.
        assert!(k.apply(b"new", KeydirEntry::new(2, 1, 10, cap as u64 + 1, false)));
        assert!(k.map.resizing());
        assert!(k.map.old.len() > cap / 2, "{}", k.map.old.len());
        // Overwrites, stale records and new keys while both tables hold keys.
        for i in (0..cap).step_by(3) {
            let seq = (cap + 10 + i) as u64;
            assert!(k.apply(&key(i), KeydirEntry::new(3, i as u64, 10, seq, false)));
            assert!(!k.apply(&key(i), KeydirEntry::new(3, 0, 10, 1, false)));
            if i % 2 == 0 {
                assert!(k.apply(&key(cap + i), KeydirEntry::new(3, 0, 10, seq, false)));
            }
        }
        for i in 0..cap {
            let want = if i % 3 == 0 {
                3
            } else if i == 5 {
                2
            } else {
                1
            };
            assert_eq!(k.map.get(&key(i)).map(|e| e.file_id), Some(want), "{i}");
            assert_eq!(k.map.get_mut(&key(i)).map(|e| e.file_id), Some(want), "{i}");
        }
        let added = (0..cap).step_by(3).filter(|i| i % 2 == 0).count();
        assert_eq!(k.map.len(), cap + 1 + added);
        assert_eq!(k.key_bytes, (k.map.len() * 9 - 6) as u64);
    }

    /// Blocks of every size come back usable from the prefaulting allocator (zero-sized
    /// ones included) and go back to it; a prefaulted table works as any other.
    #[test]
    fn prefaulting_allocator_round_trips() {
        let a = TableAlloc { prefault: true };
        for size in [0, 1, PAGE - 1, PAGE, 3 * PAGE + 17, 1 << 20] {
            let layout = Layout::from_size_align(size, 16).expect("layout");
            let block = a.allocate(layout).expect("allocation");
            assert!(block.len() >= size);
            let p = block.cast::<u8>().as_ptr();
            for off in (0..size).step_by(997) {
                // SAFETY: `off < size`, inside the block allocated above.
                #[allow(unsafe_code)]
                unsafe {
                    p.add(off).write(off as u8);
                    assert_eq!(p.add(off).read(), off as u8);
                }
            }
            // SAFETY: allocated by `a` with `layout`, deallocated once.
            #[allow(unsafe_code)]
            unsafe {
                a.deallocate(block.cast(), layout)
            };
        }
        let mut t = new_table(10_000, true);
        let hasher = slot_hasher(7);
        for i in 0..10_000u64 {
            let key = Key::new(&i.to_le_bytes());
            let entry = KeydirEntry::new(1, i, 10, i, false);
            t.insert_unique(
                hasher(&Slot {
                    key: key.clone(),
                    entry,
                }),
                Slot { key, entry },
                &hasher,
            );
        }
        for i in 0..10_000u64 {
            let k = i.to_le_bytes();
            let h = xxhash_rust::xxh3::xxh3_64_with_seed(&k, 7);
            let s = t.find(h, |s| s.key.as_slice() == k).expect("key");
            assert_eq!(s.entry.offset, i);
        }
    }

    fn fill_to_ask(k: &mut Keydir, from: usize) -> usize {
        let key = |i: usize| format!("k{i:08}").into_bytes();
        let cap = k.map.capacity();
        let mut i = from;
        while k.map.len() < cap - cap / 8 {
            assert!(k.apply(&key(i), KeydirEntry::new(1, i as u64, 10, i as u64, false)));
            i += 1;
        }
        i
    }

    /// With the keydir thread running, the table 7/8 full asks for its successor, the
    /// resize starts with the prepared (prefaulted) table, and the drained table is freed
    /// by the thread; no key is lost on the way.
    #[test]
    fn resize_takes_the_prepared_table() {
        let prep = Arc::new(TablePrep::default());
        let thread = {
            let p = prep.clone();
            std::thread::spawn(move || p.run())
        };
        let mut k = Keydir::default();
        k.map.reserve(PREPARE_FROM);
        k.map.set_preparer(prep.clone());
        let cap = k.map.capacity();
        let mut n = fill_to_ask(&mut k, 0);
        assert_eq!(k.map.asked, cap * 2);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while lock(&prep.state).ready.is_none() {
            assert!(std::time::Instant::now() < deadline, "table never prepared");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // The prepared table counts in the keydir's memory.
        let table = k.map.table.allocation_size() as u64;
        assert!(k.memory_bytes() >= table + (cap * 2 * 48) as u64);
        let key = |i: usize| format!("k{i:08}").into_bytes();
        while !k.map.resizing() {
            assert!(k.apply(&key(n), KeydirEntry::new(1, n as u64, 10, n as u64, false)));
            n += 1;
        }
        assert!(
            k.map.table.allocator().prefault,
            "the resize allocated its own table"
        );
        assert!(lock(&prep.state).ready.is_none());
        assert_eq!(lock(&prep.state).want, 0);
        while k.map.resizing() {
            k.map.step();
        }
        for i in 0..n {
            assert_eq!(k.map.get(&key(i)).map(|e| e.offset), Some(i as u64), "{i}");
        }
        prep.stop();
        thread.join().expect("keydir thread");
    }

    /// A table asked for but not ready when the resize starts (no thread runs here) is not
    /// waited for: the resize allocates in place and the request is withdrawn, so a table
    /// prepared late is dropped rather than held.
    #[test]
    fn resize_does_not_wait_for_a_table_not_ready() {
        let prep = Arc::new(TablePrep::default());
        let mut k = Keydir::default();
        k.map.reserve(PREPARE_FROM);
        k.map.set_preparer(prep.clone());
        let cap = k.map.capacity();
        let mut n = fill_to_ask(&mut k, 0);
        assert_eq!(lock(&prep.state).want, cap * 2);
        let key = |i: usize| format!("k{i:08}").into_bytes();
        while !k.map.resizing() {
            assert!(k.apply(&key(n), KeydirEntry::new(1, n as u64, 10, n as u64, false)));
            n += 1;
        }
        assert!(!k.map.table.allocator().prefault);
        assert_eq!(lock(&prep.state).want, 0, "the request was not withdrawn");
        assert_eq!(k.map.asked, 0);
        // The thread, started late, finds nothing to do and holds nothing.
        let thread = {
            let p = prep.clone();
            std::thread::spawn(move || p.run())
        };
        while k.map.resizing() {
            k.map.step();
        }
        for i in 0..n {
            assert_eq!(k.map.get(&key(i)).map(|e| e.offset), Some(i as u64), "{i}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(lock(&prep.state).ready.is_none());
        assert_eq!(k.memory_bytes(), k.map.table.allocation_size() as u64);
        prep.stop();
        thread.join().expect("keydir thread");
    }

    /// The table against a `HashMap` model: inserts, overwrites, deletes of short and long
    /// keys through incremental grows (checked while under way), then tombstones removed
    /// (as a merge of every file does) until the table shrinks, and inserts again.
    #[test]
    fn keydir_matches_a_hashmap_model() {
        let mut k = Keydir::default();
        let mut model: HashMap<Vec<u8>, KeydirEntry> = HashMap::new();
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let key = |id: u64| {
            let mut v = format!("key-{id:06}").into_bytes();
            if id.is_multiple_of(7) {
                v.extend_from_slice(&[b'x'; 40]);
            }
            v
        };
        let check = |k: &Keydir, model: &HashMap<Vec<u8>, KeydirEntry>| {
            assert_eq!(k.map.len(), model.len());
            for (key, e) in model {
                assert_eq!(k.map.get(key), Some(e), "{key:?}");
            }
            let mut n = 0;
            for (key, e) in k.map.iter() {
                assert_eq!(model.get(key.as_slice()), Some(e));
                n += 1;
            }
            assert_eq!(n, model.len());
            assert_eq!(
                k.key_bytes,
                model.keys().map(|k| k.len() as u64).sum::<u64>()
            );
            assert_eq!(
                k.tombstones,
                model.values().filter(|e| e.is_tombstone()).count() as u64
            );
            let long = model.keys().filter(|k| k.len() > INLINE_KEY).count() as u64;
            assert_eq!(k.map.heap_key_bytes, long * (64 + 16));
        };
        let mut seq = 0u64;
        let mut resizes_seen = 0;
        let mut apply =
            |k: &mut Keydir, model: &mut HashMap<Vec<u8>, KeydirEntry>, id: u64, tomb: bool| {
                seq += 1;
                let kk = key(id);
                let e = KeydirEntry::new(1, seq, 10, seq, tomb);
                k.apply(&kk, e);
                model.insert(kk, e);
            };
        // Grows from empty to ~40k keys, a fifth of them tombstones.
        for i in 0..120_000u64 {
            let r = next();
            apply(&mut k, &mut model, r % 40_000, r.is_multiple_of(5));
            if k.map.resizing() && i.is_multiple_of(97) {
                resizes_seen += 1;
                check(&k, &model);
            }
        }
        check(&k, &model);
        // Mostly deletes, then a merge of every file drops the tombstones: down to a few
        // keys (the table shrinks, checked while under way), then inserts.
        for _ in 0..150_000u64 {
            let r = next();
            apply(&mut k, &mut model, r % 40_000, !r.is_multiple_of(10));
        }
        check(&k, &model);
        let tombs: Vec<(Vec<u8>, KeydirEntry)> = model
            .iter()
            .filter(|(_, e)| e.is_tombstone())
            .map(|(k, e)| (k.clone(), *e))
            .collect();
        for (i, (key, e)) in tombs.iter().enumerate() {
            k.remove_if(key, e);
            model.remove(key);
            if k.map.resizing() && i % 97 == 0 {
                resizes_seen += 1;
                check(&k, &model);
            }
        }
        check(&k, &model);
        assert!(
            k.map.capacity() < 4 * model.len().max(8192),
            "the table did not shrink"
        );
        for i in 0..100_000u64 {
            let r = next();
            apply(&mut k, &mut model, r % 40_000, r.is_multiple_of(10));
            if k.map.resizing() && i.is_multiple_of(97) {
                resizes_seen += 1;
                check(&k, &model);
            }
        }
        check(&k, &model);
        assert!(resizes_seen > 10, "{resizes_seen}");
        assert!(k.memory_bytes() >= (k.map.capacity() * 48) as u64);
    }
}
