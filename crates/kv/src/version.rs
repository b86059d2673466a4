//! Versions: immutable snapshots of the set of live tables, per level.
//!
//! A [`Version`] is shared by `Arc`: a reader that picked one keeps reading exactly those
//! tables, however many flushes and compactions install newer versions meanwhile. A table
//! that compaction removed is deleted from disk only when the last version (and so the
//! last reader) holding its [`TableHandle`] lets go of it.

use crate::error::{IoContext, Result};
use crate::fs::FileSystem;
use crate::iterator::{InternalIterator, KeyBuf};
use crate::key::{compare_internal, user_key, Lookup};
use crate::manifest::FileMeta;
use crate::range_del::{RangeTombstone, RangeTombstoneSet};
use crate::sstable::{Table, TableIterator};
use crate::table_cache::TableCache;
use std::cmp::Ordering;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering as AtomicOrdering};
use std::sync::{Arc, RwLock, Weak};

/// Number of levels (L0 holds overlapping tables straight from flushes).
pub const NUM_LEVELS: usize = 7;

/// A live table: its manifest record and the way to its reader (through the table cache,
/// which bounds the number of open files). Dropping the last handle of a table marked
/// obsolete deletes its file.
pub struct TableHandle {
    /// What the manifest says about the table.
    pub meta: FileMeta,
    tables: Arc<TableCache>,
    fs: Arc<dyn FileSystem>,
    path: PathBuf,
    obsolete: AtomicBool,
    /// The table as last handed out by the table cache, without keeping it open: a reader
    /// that finds it still open (held by the cache or another reader) skips the cache's
    /// hash lookup and shard lock, which every seek paid once per table.
    open: RwLock<Weak<Table>>,
    /// Read-triggered compaction: charges reads may still make against this table before
    /// it is compacted (see [`crate::compaction::read_allowance`]); [`NO_ALLOWANCE`] until
    /// set, and for tables read-triggered compaction does not apply to.
    allowed_reads: AtomicI64,
}

/// `TableHandle::allowed_reads` of a table that reads do not charge.
const NO_ALLOWANCE: i64 = i64::MAX;

impl std::fmt::Debug for TableHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableHandle")
            .field("number", &self.meta.number)
            .field("size", &self.meta.file_size)
            .finish()
    }
}

impl TableHandle {
    /// A handle of the table `meta` describes, living at `path`, opened through `tables`.
    pub fn new(
        meta: FileMeta,
        tables: Arc<TableCache>,
        fs: Arc<dyn FileSystem>,
        path: PathBuf,
    ) -> Self {
        TableHandle {
            meta,
            tables,
            fs,
            path,
            obsolete: AtomicBool::new(false),
            open: RwLock::new(Weak::new()),
            allowed_reads: AtomicI64::new(NO_ALLOWANCE),
        }
    }

    /// The open table (opened now if the table cache had closed it).
    pub fn table(&self) -> Result<Arc<Table>> {
        let cached = self.open.read().map(|w| w.upgrade());
        if let Ok(Some(t)) = cached {
            return Ok(t);
        }
        let t = self.tables.get(self.meta.number, self.meta.file_size)?;
        if let Ok(mut w) = self.open.write() {
            *w = Arc::downgrade(&t);
        }
        Ok(t)
    }

    /// Marks the table as no longer part of the database: its file is deleted when the last
    /// reader lets go of it.
    pub fn mark_obsolete(&self) {
        self.obsolete.store(true, AtomicOrdering::Release);
    }

    /// The table's smallest user key.
    pub fn smallest_user_key(&self) -> &[u8] {
        user_key(&self.meta.smallest)
    }

    /// The table's largest user key.
    pub fn largest_user_key(&self) -> &[u8] {
        user_key(&self.meta.largest)
    }

    /// True if the table's user-key range intersects `[lo, hi]`.
    pub fn overlaps(&self, lo: &[u8], hi: &[u8]) -> bool {
        self.smallest_user_key() <= hi && lo <= self.largest_user_key()
    }

    /// Sets the read allowance if none is set yet (once per table: it is not renewed
    /// when the levels below change).
    pub fn init_read_allowance(&self, allowed: i64) {
        let _ = self.allowed_reads.compare_exchange(
            NO_ALLOWANCE,
            allowed.clamp(1, NO_ALLOWANCE - 1),
            AtomicOrdering::Relaxed,
            AtomicOrdering::Relaxed,
        );
    }

    /// Charges `n` reads that had to look past this table; true for the charge that used
    /// up its allowance (exactly one, whatever the threads).
    pub fn charge_read(&self, n: i64) -> bool {
        let left = self.allowed_reads.load(AtomicOrdering::Relaxed);
        if left <= 0 || left == NO_ALLOWANCE {
            return false;
        }
        let before = self.allowed_reads.fetch_sub(n, AtomicOrdering::Relaxed);
        before > 0 && before <= n
    }

    /// True once reads have used up the table's allowance.
    pub fn reads_exhausted(&self) -> bool {
        self.allowed_reads.load(AtomicOrdering::Relaxed) <= 0
    }

    fn covers(&self, key: &[u8]) -> bool {
        self.smallest_user_key() <= key && key <= self.largest_user_key()
    }
}

impl Drop for TableHandle {
    fn drop(&mut self) {
        if self.obsolete.load(AtomicOrdering::Acquire) {
            self.tables.evict(self.meta.number);
            let r = self
                .fs
                .remove_file(&self.path)
                .context(|| format!("removing obsolete table {}", self.path.display()));
            match r {
                Ok(()) => {
                    tracing::debug!(file = %self.path.display(), "deleted (or queued for deletion) an obsolete table")
                }
                Err(e) => tracing::warn!(error = %e, "could not delete obsolete table"),
            }
        }
    }
}

/// The live tables at one point in time.
#[derive(Debug, Clone)]
pub struct Version {
    /// `levels[0]` newest first (its tables overlap); deeper levels sorted by key, disjoint.
    pub levels: Vec<Vec<Arc<TableHandle>>>,
    /// Range deletes that may still hide data in these tables.
    pub range_tombstones: RangeTombstoneSet,
}

impl Default for Version {
    fn default() -> Self {
        Version {
            levels: vec![Vec::new(); NUM_LEVELS],
            range_tombstones: RangeTombstoneSet::default(),
        }
    }
}

impl Version {
    /// A copy of this version with `table` added at `level`.
    pub fn with_table(&self, level: usize, table: Arc<TableHandle>) -> Version {
        self.apply(&[], vec![(level, table)])
    }

    /// A copy of this version without the tables numbered in `deleted` and with `added`.
    pub fn apply(&self, deleted: &[u64], added: Vec<(usize, Arc<TableHandle>)>) -> Version {
        let mut v = self.clone();
        if !deleted.is_empty() {
            for level in &mut v.levels {
                level.retain(|t| !deleted.contains(&t.meta.number));
            }
        }
        let mut touched = [false; NUM_LEVELS];
        for (level, t) in added {
            v.levels[level].push(t);
            touched[level] = true;
        }
        for (level, t) in touched.iter().enumerate() {
            if *t {
                v.sort_level(level);
            }
        }
        v
    }

    /// A copy with range tombstones added and removed.
    pub fn with_range_tombstones(
        &self,
        add: &[RangeTombstone],
        remove: &[RangeTombstone],
    ) -> Version {
        let mut v = self.clone();
        if !remove.is_empty() {
            v.range_tombstones = v.range_tombstones.without(remove);
        }
        if !add.is_empty() {
            v.range_tombstones = v.range_tombstones.with(add.iter().cloned());
        }
        v
    }

    /// Range tombstones no table needs any more: no table overlapping the range holds data
    /// older than the tombstone.
    pub fn obsolete_range_tombstones(&self) -> Vec<RangeTombstone> {
        self.range_tombstones
            .iter()
            .filter(|t| {
                !self.all_tables().any(|f| {
                    f.meta.smallest_seq < t.seq
                        && f.smallest_user_key() < t.end.as_slice()
                        && t.start.as_slice() <= f.largest_user_key()
                })
            })
            .cloned()
            .collect()
    }

    /// Restores the level's invariant order.
    pub fn sort_level(&mut self, level: usize) {
        let files = &mut self.levels[level];
        if level == 0 {
            // Newest data first: a newer flush has larger sequence numbers.
            files.sort_by(|a, b| {
                (b.meta.largest_seq, b.meta.number).cmp(&(a.meta.largest_seq, a.meta.number))
            });
        } else {
            files.sort_by(|a, b| compare_internal(&a.meta.smallest, &b.meta.smallest));
        }
    }

    /// The newest version of `key` visible at `seq` among the tables (range tombstones are
    /// the caller's to apply).
    pub fn get(&self, key: &[u8], seq: u64) -> Result<Option<Lookup>> {
        self.get_charging(key, seq, false).map(|(hit, _)| hit)
    }

    /// As [`Version::get`]; with `charge`, a read that consulted (filter, index) more than
    /// one sorted run charges the first one if it is an L0 table (LevelDB's seek rule), and
    /// the flag returned is true if that used up the table's read allowance.
    pub fn get_charging(
        &self,
        key: &[u8],
        seq: u64,
        charge: bool,
    ) -> Result<(Option<Lookup>, bool)> {
        // None: nothing consulted yet; Some(Some(t)): only `t`, an L0 table, so far.
        let mut first: Option<Option<&Arc<TableHandle>>> = None;
        let mut ran_out = false;
        for (level, files) in self.levels.iter().enumerate() {
            if level == 0 {
                for t in files.iter().filter(|t| t.covers(key)) {
                    ran_out |= note_consulted(&mut first, t, level, charge);
                    if let Some(hit) = t.table()?.get(key, seq)? {
                        return Ok((Some(hit), ran_out));
                    }
                }
            } else if let Some(t) = self.file_for_key(level, key) {
                ran_out |= note_consulted(&mut first, t, level, charge);
                if let Some(hit) = t.table()?.get(key, seq)? {
                    return Ok((Some(hit), ran_out));
                }
            }
        }
        Ok((None, ran_out))
    }

    /// A scan's sample at `key`: if more than one sorted run (L0 table or deeper level)
    /// covers it, the topmost is charged `n` reads if it is an L0 table. True if that used
    /// up its allowance.
    pub fn charge_sampled_read(&self, key: &[u8], n: i64) -> bool {
        let mut l0 = self.levels[0].iter().filter(|t| t.covers(key));
        let Some(top) = l0.next() else { return false };
        let below = l0.next().is_some()
            || (1..self.levels.len()).any(|level| self.file_for_key(level, key).is_some());
        below && top.charge_read(n)
    }

    /// Gives each L0 table without one its read allowance, from the bytes its compaction
    /// into L1 would rewrite (see [`crate::compaction::read_allowance`]).
    pub fn init_read_allowances(&self) {
        for t in &self.levels[0] {
            if t.allowed_reads.load(AtomicOrdering::Relaxed) != NO_ALLOWANCE {
                continue;
            }
            let below: u64 = self
                .overlapping(1, t.smallest_user_key(), t.largest_user_key())
                .iter()
                .map(|o| o.meta.file_size)
                .sum();
            t.init_read_allowance(crate::compaction::read_allowance(t.meta.file_size + below));
        }
    }

    /// In a level >= 1: the one table whose range holds `key`, if any.
    fn file_for_key(&self, level: usize, key: &[u8]) -> Option<&Arc<TableHandle>> {
        let files = &self.levels[level];
        let i = files.partition_point(|t| t.largest_user_key() < key);
        files.get(i).filter(|t| t.covers(key))
    }

    /// Cursors over all tables, newest data first: one per L0 table, one per deeper level.
    /// Tables are opened when the cursor first reaches them.
    pub fn iterators(&self) -> Vec<Box<dyn InternalIterator>> {
        let mut v: Vec<Box<dyn InternalIterator>> = self.levels[0]
            .iter()
            .map(|t| Box::new(LevelIterator::new(vec![t.clone()], true)) as _)
            .collect();
        for files in self.levels.iter().skip(1).filter(|l| !l.is_empty()) {
            v.push(Box::new(LevelIterator::new(files.clone(), true)));
        }
        v
    }

    /// As [`Version::iterators`], unboxed, and sharing this version's lists of tables
    /// rather than copying them (a reader creates these for every new iterator).
    pub fn level_iterators(self: &Arc<Self>) -> impl Iterator<Item = LevelIterator> + '_ {
        let l0 = (0..self.levels[0].len()).map(|i| LevelIterator::shared(self, 0, i..i + 1));
        let deeper = (1..self.levels.len())
            .filter(|&l| !self.levels[l].is_empty())
            .map(|l| LevelIterator::shared(self, l, 0..self.levels[l].len()));
        l0.chain(deeper)
    }

    /// Tables of `level` whose user-key range intersects `[lo, hi]`. In L0, where tables
    /// overlap, the range grows to cover every table that intersects it (transitively), so
    /// that no newer version of a key is left behind while an older one moves down.
    pub fn overlapping(&self, level: usize, lo: &[u8], hi: &[u8]) -> Vec<Arc<TableHandle>> {
        let (mut lo, mut hi) = (lo.to_vec(), hi.to_vec());
        loop {
            let found: Vec<_> = self.levels[level]
                .iter()
                .filter(|t| t.overlaps(&lo, &hi))
                .cloned()
                .collect();
            if level != 0 {
                return found;
            }
            let mut grew = false;
            for t in &found {
                if t.smallest_user_key() < lo.as_slice() {
                    lo = t.smallest_user_key().to_vec();
                    grew = true;
                }
                if t.largest_user_key() > hi.as_slice() {
                    hi = t.largest_user_key().to_vec();
                    grew = true;
                }
            }
            if !grew {
                return found;
            }
        }
    }

    /// True if no level below `level` holds a table whose range includes `key`: a tombstone
    /// for `key` compacted into `level` then hides nothing and can be dropped.
    pub fn is_bottommost_for_key(&self, level: usize, key: &[u8]) -> bool {
        (level + 1..NUM_LEVELS).all(|l| self.file_for_key(l, key).is_none())
    }

    /// Number of tables per level.
    pub fn files_per_level(&self) -> Vec<usize> {
        self.levels.iter().map(Vec::len).collect()
    }

    /// Bytes of tables per level.
    pub fn bytes_per_level(&self) -> Vec<u64> {
        self.levels
            .iter()
            .map(|l| l.iter().map(|t| t.meta.file_size).sum())
            .collect()
    }

    /// Every table, all levels.
    pub fn all_tables(&self) -> impl Iterator<Item = &Arc<TableHandle>> {
        self.levels.iter().flatten()
    }
}

/// A point read is about to consult `t` (of `level`): the second table consulted charges
/// the first if that one is in L0. True if the charge used up its allowance.
#[inline]
fn note_consulted<'a>(
    first: &mut Option<Option<&'a Arc<TableHandle>>>,
    t: &'a Arc<TableHandle>,
    level: usize,
    charge: bool,
) -> bool {
    match *first {
        None => {
            *first = Some((level == 0).then_some(t));
            false
        }
        Some(Some(f)) => {
            *first = Some(None);
            charge && f.charge_read(1)
        }
        Some(None) => false,
    }
}

/// The tables a [`LevelIterator`] walks.
enum LevelFiles {
    Owned(Vec<Arc<TableHandle>>),
    /// `version.levels[level][range]`.
    Shared {
        version: Arc<Version>,
        level: usize,
        range: std::ops::Range<usize>,
    },
}

impl LevelFiles {
    #[inline]
    fn get(&self) -> &[Arc<TableHandle>] {
        match self {
            LevelFiles::Owned(v) => v,
            LevelFiles::Shared {
                version,
                level,
                range,
            } => version.levels[*level]
                .get(range.clone())
                .unwrap_or_default(),
        }
    }
}

/// A cursor over one level >= 1 (disjoint, sorted tables), opening one table at a time.
pub struct LevelIterator {
    files: LevelFiles,
    index: usize,
    current: Option<TableIterator>,
    fill_cache: bool,
    /// Whether a seek before a table's first key may leave the cursor [`pending`]
    /// (readers' cursors, which a merge prepares; see [`InternalIterator::prepare_value`]).
    ///
    /// [`pending`]: LevelIterator::pending
    lazy: bool,
    /// Positioned at the first entry of table `index`, which is its manifest's smallest
    /// key, without having opened the table or read a block.
    pending: bool,
    /// Not positioned; `bound_key` is a lower bound of the entry (see
    /// [`InternalIterator::is_bound`]), and settling seeks to it. Either `current` is
    /// table `index`, opened but not sought, whose bloom filter ruled out the sought user
    /// key `T` (the entry is the table's first after every entry of `T`, and `bound_key`
    /// is `T` with trailer 0, the smallest internal key of `T`), or `current` is `None`
    /// and the bound came from [`InternalIterator::seek_lazily`].
    bound: bool,
    bound_key: KeyBuf,
}

impl LevelIterator {
    /// A cursor over `files` (sorted, disjoint). `fill_cache` is false for compaction scans.
    pub fn new(files: Vec<Arc<TableHandle>>, fill_cache: bool) -> Self {
        LevelIterator {
            files: LevelFiles::Owned(files),
            index: 0,
            current: None,
            fill_cache,
            lazy: false,
            pending: false,
            bound: false,
            bound_key: KeyBuf::default(),
        }
    }

    /// A cursor over the tables `range` of `level` of `version` (one table of L0, or a
    /// whole deeper level), filling the block cache.
    fn shared(version: &Arc<Version>, level: usize, range: std::ops::Range<usize>) -> Self {
        LevelIterator {
            files: LevelFiles::Shared {
                version: version.clone(),
                level,
                range,
            },
            index: 0,
            current: None,
            fill_cache: true,
            lazy: true,
            pending: false,
            bound: false,
            bound_key: KeyBuf::default(),
        }
    }

    /// Positions on table `index` (none if past the end) and returns its cursor.
    fn open(&mut self, index: usize) -> Result<Option<&mut TableIterator>> {
        self.index = index;
        self.current = None;
        self.pending = false;
        self.bound = false;
        if let Some(t) = self.files.get().get(index) {
            let table: Arc<Table> = t.table()?;
            let mut it = table.iter();
            it.set_fill_cache(self.fill_cache);
            self.current = Some(it);
        }
        Ok(self.current.as_mut())
    }

    /// Moves forward over tables until positioned at an entry or past the last table.
    #[inline(never)]
    fn skip_forward(&mut self) -> Result<()> {
        while self.current.as_ref().is_some_and(|c| !c.valid()) {
            match self.open(self.index + 1)? {
                Some(it) => it.seek_to_first()?,
                None => break,
            }
        }
        Ok(())
    }

    /// Leaves the pending state (opens table `index` and positions at its first entry,
    /// which must be the smallest key the manifest recorded for it) or the bound state
    /// (seeks the opened table to the bound).
    #[inline]
    fn settle(&mut self) -> Result<()> {
        if self.pending {
            self.settle_pending()
        } else if self.bound {
            self.settle_bound()
        } else {
            Ok(())
        }
    }

    #[inline(never)]
    fn settle_bound(&mut self) -> Result<()> {
        self.bound = false;
        let bound = std::mem::take(&mut self.bound_key);
        let r = match self.current.as_mut() {
            Some(it) => it.seek(bound.as_slice()).and_then(|()| self.skip_forward()),
            None => self.seek_eagerly(bound.as_slice()),
        };
        self.bound_key = bound;
        r
    }

    /// Positions at the first entry `>= target`, searching the table that holds it.
    fn seek_eagerly(&mut self, target: &[u8]) -> Result<()> {
        let files = self.files.get();
        let i =
            files.partition_point(|t| compare_internal(&t.meta.largest, target) == Ordering::Less);
        match self.open(i)? {
            Some(it) => it.seek(target)?,
            None => return Ok(()),
        }
        self.skip_forward()
    }

    #[inline(never)]
    fn settle_pending(&mut self) -> Result<()> {
        let index = self.index;
        let Some(it) = self.open(index)? else {
            return Ok(());
        };
        it.seek_to_first()?;
        let expected = self.files.get().get(index).map(|t| &t.meta.smallest[..]);
        let found = self.current.as_ref().filter(|c| c.valid()).map(|c| c.key());
        if found != expected {
            let name = self
                .current
                .as_ref()
                .map_or_else(String::new, |c| c.table().file_name().to_string());
            self.current = None;
            return Err(crate::Error::corruption(
                name,
                0,
                "first key differs from the smallest key in the manifest",
            ));
        }
        Ok(())
    }

    /// With table `index` open (the first whose largest key is `>= target`): if its
    /// bloom filter rules out `target`'s user key `T`, enters the bound state and returns
    /// true. The table's largest key is then after `T`, so the level's first entry
    /// `>= target` is in this table, after every entry of `T`.
    #[inline]
    fn bloom_bound(&mut self, target: &[u8]) -> bool {
        let Some(it) = self.current.as_ref() else {
            return false;
        };
        let uk = user_key(target);
        if !it.table().filter_excludes(uk) {
            return false;
        }
        self.bound_key.clear();
        self.bound_key.keep_and_append(0, uk);
        self.bound_key.keep_and_append(uk.len(), &[0; 8]);
        self.bound = true;
        true
    }

    /// The key while pending (the table's smallest) or bound (the bound).
    fn unpositioned_key(&self) -> &[u8] {
        if self.bound {
            return self.bound_key.as_slice();
        }
        self.files
            .get()
            .get(self.index)
            .map_or(&[], |t| &t.meta.smallest[..])
    }

    #[inline(never)]
    fn skip_backward(&mut self) -> Result<()> {
        while self.current.as_ref().is_some_and(|c| !c.valid()) {
            if self.index == 0 {
                self.current = None;
                break;
            }
            if let Some(it) = self.open(self.index - 1)? {
                it.seek_to_last()?;
            }
        }
        Ok(())
    }
}

impl InternalIterator for LevelIterator {
    #[inline]
    fn valid(&self) -> bool {
        (self.pending | self.bound) || self.current.as_ref().is_some_and(|c| c.valid())
    }
    fn seek_to_first(&mut self) -> Result<()> {
        if let Some(it) = self.open(0)? {
            it.seek_to_first()?;
        }
        self.skip_forward()
    }
    fn seek_to_last(&mut self) -> Result<()> {
        if let Some(last) = self.files.get().len().checked_sub(1) {
            if let Some(it) = self.open(last)? {
                it.seek_to_last()?;
            }
        } else {
            self.current = None;
            self.pending = false;
            self.bound = false;
        }
        self.skip_backward()
    }
    fn seek(&mut self, target: &[u8]) -> Result<()> {
        let files = self.files.get();
        let i =
            files.partition_point(|t| compare_internal(&t.meta.largest, target) == Ordering::Less);
        if self.lazy
            && files
                .get(i)
                .is_some_and(|t| compare_internal(target, &t.meta.smallest) != Ordering::Greater)
        {
            // Every entry of table i is >= target: the answer is its first key, known
            // without a read (settled when the value or a step is wanted).
            self.index = i;
            self.current = None;
            self.pending = true;
            self.bound = false;
            return Ok(());
        }
        if self.open(i)?.is_none() {
            return Ok(());
        }
        if self.lazy && self.bloom_bound(target) {
            return Ok(());
        }
        if let Some(it) = self.current.as_mut() {
            it.seek(target)?;
        }
        self.skip_forward()
    }
    #[inline]
    fn next(&mut self) -> Result<()> {
        self.settle()?;
        if let Some(c) = self.current.as_mut() {
            c.next()?;
            if c.valid() {
                return Ok(());
            }
        }
        self.skip_forward()
    }
    #[inline]
    fn prev(&mut self) -> Result<()> {
        self.settle()?;
        if let Some(c) = self.current.as_mut() {
            c.prev()?;
            // Within the table: done, without the call to look for another (as `next`).
            if c.valid() {
                return Ok(());
            }
        }
        self.skip_backward()
    }
    #[inline(always)]
    fn key(&self) -> &[u8] {
        // One test of both flags: a scan's comparisons pay one branch, as before bounds.
        if self.pending | self.bound {
            return self.unpositioned_key();
        }
        self.current.as_ref().map_or(&[], |c| c.key())
    }
    #[inline]
    fn value(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |c| c.value())
    }
    #[inline]
    fn prepare_value(&mut self) -> Result<()> {
        self.settle()
    }
    #[inline(always)]
    fn is_bound(&self) -> bool {
        self.bound
    }
    fn seek_lazily(&mut self, bound: &[u8]) -> Result<()> {
        if !self.lazy {
            return self.seek(bound);
        }
        self.current = None;
        self.pending = false;
        self.bound = true;
        self.bound_key.clear();
        self.bound_key.keep_and_append(0, bound);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cache::BlockCache;
    use crate::filename::table_path;
    use crate::fs::MemFs;
    use crate::key::{internal_key, seek_key, ValueKind};
    use crate::merge::MergingIterator;
    use crate::options::TableOptions;
    use crate::sstable::TableBuilder;
    use std::path::Path;

    /// Table `number` holding keys `k{i}` for `i` in `keys` (value `v{i}`), and its handle.
    fn table(
        fs: &MemFs,
        tc: &Arc<TableCache>,
        number: u64,
        keys: std::ops::Range<u32>,
    ) -> Arc<TableHandle> {
        table_with(fs, tc, number, keys, &TableOptions::default(), |i| {
            format!("v{i}").into_bytes()
        })
    }

    /// Table `number` holding keys `k{i}` for `i` in `keys`, values `value(i)`, built with
    /// `options`.
    fn table_with(
        fs: &MemFs,
        tc: &Arc<TableCache>,
        number: u64,
        keys: std::ops::Range<u32>,
        options: &TableOptions,
        value: impl Fn(u32) -> Vec<u8>,
    ) -> Arc<TableHandle> {
        let path = table_path(Path::new("/db"), number);
        let mut b = TableBuilder::new(
            fs.create(&path).unwrap(),
            path.display().to_string(),
            options,
        );
        for i in keys {
            b.add(
                &internal_key(format!("k{i:05}").as_bytes(), 1, ValueKind::Value),
                &value(i),
            )
            .unwrap();
        }
        let meta = FileMeta::from_properties(number, b.finish().unwrap());
        Arc::new(TableHandle::new(
            meta,
            tc.clone(),
            Arc::new(fs.clone()),
            path,
        ))
    }

    fn lazy(files: Vec<Arc<TableHandle>>) -> LevelIterator {
        let mut it = LevelIterator::new(files, true);
        it.lazy = true;
        it
    }

    fn cache(fs: &MemFs) -> Arc<TableCache> {
        Arc::new(TableCache::new(
            Arc::new(fs.clone()),
            "/db".into(),
            100,
            Some(Arc::new(BlockCache::new(1 << 20))),
        ))
    }

    fn uk(it: &impl InternalIterator) -> String {
        String::from_utf8(crate::key::user_key(it.key()).to_vec()).unwrap()
    }

    #[test]
    fn lazy_seek_reads_nothing_until_the_merge_needs_the_value() {
        let fs = MemFs::new();
        let tc = cache(&fs);
        // Two "L0 tables" (one level cursor each, newest first) and a level of two tables.
        let l0a = table(&fs, &tc, 1, 3000..4000);
        let l0b = table(&fs, &tc, 2, 2000..3000);
        let deep = vec![table(&fs, &tc, 3, 0..1000), table(&fs, &tc, 4, 1000..2000)];
        let tables = [l0a.clone(), l0b.clone(), deep[0].clone(), deep[1].clone()];
        let mut m = MergingIterator::new(vec![lazy(vec![l0a]), lazy(vec![l0b]), lazy(deep)]);
        let read = || {
            tables
                .iter()
                .map(|t| t.table().unwrap().bytes_read())
                .collect::<Vec<_>>()
        };
        let opened = read();
        for (target, expect) in [
            (1500, 1500),
            (0u32, 0u32),
            (999, 999),
            (1000, 1000),
            (2000, 2000),
            (2999, 2999),
            (3000, 3000),
        ] {
            m.seek(&seek_key(format!("k{target:05}").as_bytes(), 5))
                .unwrap();
            assert_eq!(uk(&m), format!("k{expect:05}"));
            assert_eq!(m.value(), format!("v{expect}").as_bytes());
            // Forward and back across table and cursor boundaries.
            for i in expect + 1..(expect + 3).min(4000) {
                m.next().unwrap();
                assert_eq!(
                    (uk(&m), m.value()),
                    (format!("k{i:05}"), format!("v{i}").as_bytes())
                );
            }
            m.seek(&seek_key(format!("k{target:05}").as_bytes(), 5))
                .unwrap();
            for i in (expect.saturating_sub(2)..expect).rev() {
                m.prev().unwrap();
                assert_eq!(
                    (uk(&m), m.value()),
                    (format!("k{i:05}"), format!("v{i}").as_bytes())
                );
            }
        }
        // A seek into the deep level leaves both L0 cursors lazy: one block lookup, not 3.
        let lookups = || {
            let s = tc.block_cache().unwrap().stats();
            s.hits + s.misses
        };
        let before = lookups();
        m.seek(&seek_key(b"k00500", 5)).unwrap();
        assert_eq!(m.value(), b"v500");
        assert_eq!(lookups() - before, 1);
        assert!(read().iter().zip(&opened).all(|(a, o)| a >= o));
        m.seek(&seek_key(b"k09999", 5)).unwrap();
        assert!(!m.valid());
    }

    /// Table `number` holding `entries` (internal key, value), sorted here.
    fn table_of(
        fs: &MemFs,
        tc: &Arc<TableCache>,
        number: u64,
        mut entries: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Arc<TableHandle> {
        entries.sort_by(|a, b| compare_internal(&a.0, &b.0));
        let path = table_path(Path::new("/db"), number);
        let mut b = TableBuilder::new(
            fs.create(&path).unwrap(),
            path.display().to_string(),
            &TableOptions::default(),
        );
        for (k, v) in &entries {
            b.add(k, v).unwrap();
        }
        let meta = FileMeta::from_properties(number, b.finish().unwrap());
        Arc::new(TableHandle::new(
            meta,
            tc.clone(),
            Arc::new(fs.clone()),
            path,
        ))
    }

    fn ukey(i: u32) -> Vec<u8> {
        format!("k{i:05}").into_bytes()
    }

    /// Seeks `m` to keys `0..n + 2` (above, at and below their versions), stepping a few
    /// entries both ways after each, and compares with `all` (sorted).
    fn check_seeks_and_steps(
        m: &mut impl InternalIterator,
        all: &[(Vec<u8>, Vec<u8>)],
        n: u32,
        next: &mut impl FnMut(u32) -> u32,
    ) {
        for t in 0..n + 2 {
            for target in [
                seek_key(&ukey(t), 1000),
                seek_key(&ukey(t), 50),
                internal_key(&ukey(t), 0, ValueKind::Deletion),
            ] {
                m.seek(&target).unwrap();
                let mut at = all.partition_point(|(k, _)| compare_internal(k, &target).is_lt());
                for step in 0..6 {
                    match all.get(at) {
                        Some((k, v)) => {
                            assert!(m.valid(), "seek {t}, step {step}");
                            assert_eq!(
                                (m.key(), m.value()),
                                (&k[..], &v[..]),
                                "seek {target:?}, step {step}"
                            );
                        }
                        None => {
                            assert!(!m.valid(), "seek {t}, step {step}");
                            break;
                        }
                    }
                    if next(2) == 0 {
                        m.next().unwrap();
                        at += 1;
                    } else {
                        m.prev().unwrap();
                        match at.checked_sub(1) {
                            Some(a) => at = a,
                            None => {
                                assert!(!m.valid());
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Cursors whose tables all span the whole key range (as L0 tables of random writes),
    /// so that a seek inside them either searches a table or leaves a bloom bound: seeks
    /// to present and absent keys (and to the bounds themselves), then steps both ways,
    /// match a sorted model. Versions of one key sit in several cursors, some with
    /// sequence number 0 (whose deletion is the bound's own key).
    #[test]
    fn bloom_bounds_match_a_sorted_model() {
        let fs = MemFs::new();
        let tc = cache(&fs);
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u32| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % u64::from(n)) as u32
        };
        // Sources 0..3: "L0 tables", newest first; 3 and 4: two tables of one level.
        let mut per_source: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); 5];
        let mut all = Vec::new();
        const N: u32 = 3000;
        // The keys every table gets, below.
        let edges = [0, N / 2 - 2, N / 2, N - 2];
        for i in (0..N).step_by(2).filter(|i| !edges.contains(i)) {
            // One to three versions, older ones in later sources.
            let versions = 1 + next(3) as usize;
            let mut sources: Vec<usize> = (0..4).collect();
            sources.retain(|_| next(2) == 0);
            sources.truncate(versions);
            if sources.is_empty() {
                sources.push(3);
            }
            for (v, &src) in sources.iter().enumerate() {
                // The deep level splits at N / 2 into two tables.
                let src = if src == 3 && i >= N / 2 { 4 } else { src };
                let seq = if src >= 3 && next(5) == 0 {
                    0
                } else {
                    u64::from(100 - 10 * v as u32)
                };
                let kind = if next(6) == 0 {
                    ValueKind::Deletion
                } else {
                    ValueKind::Value
                };
                let ikey = internal_key(&ukey(i), seq, kind);
                per_source[src].push((ikey.clone(), format!("{i}@{src}").into_bytes()));
                all.push((ikey, format!("{i}@{src}").into_bytes()));
            }
        }
        // Every table spans (almost) the whole range.
        for (src, entries) in per_source.iter_mut().enumerate() {
            let (lo, hi) = match src {
                3 => (0, N / 2),
                4 => (N / 2, N),
                _ => (0, N),
            };
            for i in [lo, hi - 2] {
                // Newer sources hold newer versions.
                let ikey = internal_key(&ukey(i), 10 - src as u64, ValueKind::Value);
                entries.push((ikey.clone(), format!("{i}@{src}").into_bytes()));
                all.push((ikey, format!("{i}@{src}").into_bytes()));
            }
        }
        all.sort_by(|a, b| compare_internal(&a.0, &b.0));
        let mut tables: Vec<_> = (0..5)
            .map(|s| table_of(&fs, &tc, s as u64 + 1, per_source[s].clone()))
            .collect();
        let deep = vec![tables.remove(3), tables.remove(3)];
        for by_age in [false, true] {
            let mut children: Vec<_> = tables.iter().map(|t| lazy(vec![t.clone()])).collect();
            children.push(lazy(deep.clone()));
            let mut m = MergingIterator::new(children);
            if by_age {
                m = m.sources_by_age();
            }
            check_seeks_and_steps(&mut m, &all, N, &mut next);
        }
        let (mut bounds, mut false_positives) = (0, 0);
        for t in 0..N + 2 {
            // How often the filters left bounds, and let absent keys through.
            for tb in &tables {
                let tb = tb.table().unwrap();
                let present = per_source
                    .iter()
                    .flatten()
                    .any(|(k, _)| user_key(k) == ukey(t) && tb.properties().smallest_key <= *k)
                    && tb.may_contain(&ukey(t));
                if !tb.filter_excludes(&ukey(t)) && !present && t % 2 == 1 {
                    false_positives += 1;
                } else if tb.filter_excludes(&ukey(t)) {
                    bounds += 1;
                }
            }
        }
        assert!(bounds > 1000, "{bounds}");
        assert!(false_positives > 0, "no bloom false positive exercised");
    }

    /// A seek to a key that only the deepest level holds reads one block: the filters of
    /// the overlapping tables above rule the key out, and their cursors stay bounds.
    #[test]
    fn a_seek_found_in_the_deepest_level_reads_no_block_of_the_others() {
        let fs = MemFs::new();
        let tc = cache(&fs);
        let entries = |range: std::ops::Range<u32>, step: usize, seq: u64| {
            range
                .step_by(step)
                .map(|i| (internal_key(&ukey(i), seq, ValueKind::Value), ukey(i)))
                .collect::<Vec<_>>()
        };
        // Two L0 tables over the whole range (every 3rd and every 5th key), and a level
        // of two tables holding every key.
        let l0a = table_of(&fs, &tc, 1, entries(0..4000, 3, 30));
        let l0b = table_of(&fs, &tc, 2, entries(1..4000, 5, 20));
        let deep = vec![
            table_of(&fs, &tc, 3, entries(0..2000, 1, 10)),
            table_of(&fs, &tc, 4, entries(2000..4000, 1, 10)),
        ];
        let upper = [l0a.clone(), l0b.clone()];
        let mut m = MergingIterator::new(vec![lazy(vec![l0a]), lazy(vec![l0b]), lazy(deep)]);
        let lookups = || {
            let s = tc.block_cache().unwrap().stats();
            s.hits + s.misses
        };
        let upper_read = || {
            upper
                .iter()
                .map(|t| t.table().unwrap().bytes_read())
                .sum::<u64>()
        };
        let (mut only_deep, mut let_through) = (0, 0);
        for i in 0..4000 {
            let k = ukey(i);
            let excluded = upper.iter().all(|t| t.table().unwrap().filter_excludes(&k));
            if i % 3 == 0 || (i % 5 == 1) {
                continue;
            }
            let (before, read_before) = (lookups(), upper_read());
            m.seek(&seek_key(&k, 100)).unwrap();
            assert_eq!(m.key(), &internal_key(&k, 10, ValueKind::Value)[..]);
            assert_eq!(m.value(), &k[..]);
            if excluded {
                only_deep += 1;
                assert_eq!(lookups() - before, 1, "seek {i}");
                assert_eq!(upper_read(), read_before, "seek {i}");
            } else {
                // A false positive: that table is searched (and the seek stays right).
                let_through += 1;
                assert!(lookups() - before > 1, "seek {i}");
            }
        }
        assert!(only_deep > 1500, "{only_deep}");
        assert!(let_through > 0, "no bloom false positive exercised");
    }

    #[test]
    fn lazy_key_that_differs_from_the_table_is_corruption() {
        let fs = MemFs::new();
        let tc = cache(&fs);
        let t = table(&fs, &tc, 1, 10..20);
        let mut meta = t.meta.clone();
        // The manifest claims a smaller first key than the table holds.
        meta.smallest = internal_key(b"k00005", 1, ValueKind::Value);
        let lying = Arc::new(TableHandle::new(
            meta,
            tc.clone(),
            Arc::new(fs.clone()),
            table_path(Path::new("/db"), 1),
        ));
        let mut m = MergingIterator::new(vec![lazy(vec![lying])]);
        let e = m.seek(&seek_key(b"k00001", 5)).unwrap_err();
        assert!(e.is_corruption(), "{e:?}");
        assert!(e.to_string().contains("000001.sst"), "{e}");
        assert!(!m.valid());
    }

    /// Table `number` holding `k{i}` -> 100-byte values for `i` in `keys`, uncompressed.
    fn big_table(
        fs: &MemFs,
        tc: &Arc<TableCache>,
        number: u64,
        keys: std::ops::Range<u32>,
    ) -> Arc<TableHandle> {
        let options = TableOptions {
            compression: crate::options::CompressionType::None,
            ..TableOptions::default()
        };
        table_with(fs, tc, number, keys, &options, big_value)
    }

    fn big_value(i: u32) -> Vec<u8> {
        format!("{i:0>100}").into_bytes()
    }

    /// Three tables of ~450 KiB each: larger than the largest readahead window.
    fn big_level(fs: &MemFs, tc: &Arc<TableCache>) -> Vec<Arc<TableHandle>> {
        let files: Vec<_> = (0..3u32)
            .map(|t| big_table(fs, tc, u64::from(t) + 1, t * 4000..(t + 1) * 4000))
            .collect();
        for f in &files {
            assert!(f.meta.file_size > 256 << 10, "{}", f.meta.file_size);
        }
        files
    }

    #[test]
    fn scans_through_readahead_windows_match_the_model_and_fill_the_cache_on_a_repeat() {
        let fs = MemFs::new();
        let tc = cache(&fs);
        let files = big_level(&fs, &tc);
        let n = 12_000u32;
        let check = |it: &LevelIterator, i: u32| {
            assert_eq!(uk(it), format!("k{i:05}"));
            assert_eq!(it.value(), big_value(i).as_slice());
        };
        let mut it = LevelIterator::new(files.clone(), true);
        it.seek_to_first().unwrap();
        for i in 0..n {
            check(&it, i);
            it.next().unwrap();
        }
        assert!(!it.valid());
        // Every block came from the file once (most through readahead windows, ~350
        // blocks); only the few read alone (at the start of each table) were cached.
        let stats = tc.block_cache().unwrap().stats();
        assert!(stats.inserts <= 3, "{stats:?}");
        let read = || -> u64 { files.iter().map(|f| f.table().unwrap().bytes_read()).sum() };
        let size: u64 = files.iter().map(|f| f.meta.file_size).sum();
        let after_first = read();
        assert!(
            after_first <= size,
            "every block read once: {after_first} > {size}"
        );

        // The second scan (backward) reads them again and fills the cache...
        it.seek_to_last().unwrap();
        for i in (0..n).rev() {
            check(&it, i);
            it.prev().unwrap();
        }
        assert!(!it.valid());
        let stats = tc.block_cache().unwrap().stats();
        assert!(stats.inserts > 300, "{stats:?}");
        let after_second = read();
        assert!(after_second - after_first > size / 2);
        // ...and a third is served by it (in part: the 1 MiB cache holds ~3/4 of the
        // level).
        let hits = stats.hits;
        it.seek_to_first().unwrap();
        for i in 0..n {
            check(&it, i);
            it.next().unwrap();
        }
        let stats = tc.block_cache().unwrap().stats();
        assert!(stats.hits > hits + 100, "{stats:?}");
        assert!(read() - after_second < after_second - after_first);

        // Seeks, then scans long enough to ramp up the windows and cross tables.
        for start in [0u32, 17, 3000, 3999, 4000, 7777, 11_000] {
            it.seek(&seek_key(format!("k{start:05}").as_bytes(), 5))
                .unwrap();
            for i in start..(start + 2500).min(n) {
                check(&it, i);
                it.next().unwrap();
            }
        }
    }

    #[test]
    fn a_corrupt_block_in_a_readahead_window_names_file_and_offset() {
        let fs = MemFs::new();
        let tc = cache(&fs);
        let files = big_level(&fs, &tc);
        // Deep inside the second table: reached by a scan through a readahead window.
        let bad = 300_000u64;
        fs.corrupt_byte(&table_path(Path::new("/db"), 2), bad)
            .unwrap();
        let mut it = LevelIterator::new(files, true);
        it.seek_to_first().unwrap();
        let mut i = 0u32;
        let err = loop {
            match it.next() {
                Ok(()) => {
                    i += 1;
                    assert!(it.valid(), "scan ended without reporting the corruption");
                    assert_eq!(uk(&it), format!("k{i:05}"));
                }
                Err(e) => break e,
            }
        };
        assert!(!it.valid());
        assert!(i > 4000, "failed in the second table, after {i} entries");
        match err {
            crate::Error::Corruption {
                file,
                offset,
                reason,
            } => {
                assert!(file.ends_with("000002.sst"), "{file}");
                assert!(reason.contains("checksum"), "{reason}");
                // The block holding the flipped byte.
                assert!(offset <= bad && bad - offset < 8192, "{offset}");
            }
            e => panic!("{e:?}"),
        }
    }
}
