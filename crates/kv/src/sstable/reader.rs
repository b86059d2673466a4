//! Reading a table: point lookups and a two-level iterator.

use super::block::{Block, BlockIter, RestartSample, SharedWindow};
use super::filter::BloomFilter;
use super::format::{
    block_len_with_trailer, decode_block_shared, read_block, BlockHandle, Footer,
    BLOCK_TRAILER_LEN, FOOTER_LEN,
};
use super::index::IndexKeys;
use super::properties::Properties;
use crate::cache::BlockCache;
use crate::error::{Error, IoContext, Result};
use crate::fs::RandomAccessFile;
use crate::iterator::InternalIterator;
use crate::key::{compare_internal, parse_internal_key, seek_key, user_key, Lookup};
use bytes::Bytes;
use std::cmp::Ordering;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

/// One index key in this many is kept in the table's [`RestartSample`]: about 1/16 of
/// the index block's size in memory, and a seek probes 4 index entries, not ~log2(blocks).
const INDEX_SAMPLE_STRIDE: usize = 16;

/// How a table narrows the search of its index block.
#[derive(Debug)]
enum IndexSearch {
    Keys(IndexKeys),
    Sample(RestartSample),
}

impl IndexSearch {
    fn size(&self) -> usize {
        match self {
            IndexSearch::Keys(k) => k.size(),
            IndexSearch::Sample(s) => s.size(),
        }
    }
}

/// How a data block read uses the block cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CacheUse {
    /// Look up; insert on a miss.
    Fill,
    /// Look up; do not insert on a miss.
    NoFill,
    /// Neither: always read the file.
    Bypass,
}

/// An open, immutable table. The footer, index block, filter and properties are validated
/// and kept in memory; data blocks are read (and checksummed) on demand, through the
/// [`BlockCache`] if the table was opened with one.
pub struct Table {
    file: Arc<dyn RandomAccessFile>,
    /// The file in memory, if it was opened mapped ([`RandomAccessFile::mapped`]): data
    /// blocks are sliced from it rather than read.
    map: Option<Bytes>,
    file_name: Arc<str>,
    index: Arc<Block>,
    /// Narrows index seeks: [`IndexKeys`], or for an index they do not fit a
    /// [`RestartSample`].
    index_search: IndexSearch,
    filter: Option<BloomFilter>,
    props: Properties,
    /// The block cache and this table's id in it (fresh for every open).
    cache: Option<(Arc<BlockCache>, u64)>,
    filter_checked: AtomicU64,
    filter_useful: AtomicU64,
    filter_false_positives: AtomicU64,
    bytes_read: AtomicU64,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("file_name", &self.file_name)
            .field("props", &self.props)
            .finish_non_exhaustive()
    }
}

impl Table {
    /// Opens the table in `file`, named `file_name` in errors, without a block cache.
    pub fn open(file: Arc<dyn RandomAccessFile>, file_name: impl Into<String>) -> Result<Table> {
        Self::open_with_cache(file, file_name, None)
    }

    /// Opens the table in `file`, named `file_name` in errors. Data blocks are looked up
    /// in `cache` first and inserted into it after they were read and verified; the table
    /// takes a fresh id from the cache, so its blocks never alias those of any other open
    /// (even of the same file).
    pub fn open_with_cache(
        file: Arc<dyn RandomAccessFile>,
        file_name: impl Into<String>,
        cache: Option<Arc<BlockCache>>,
    ) -> Result<Table> {
        let file_name: String = file_name.into();
        let mut bytes_read = 0u64;
        let mut read = |handle: BlockHandle| -> Result<Vec<u8>> {
            let data = read_block(file.as_ref(), &file_name, handle)?;
            bytes_read += handle.size + BLOCK_TRAILER_LEN as u64;
            Ok(data)
        };
        let file_len = file.len();
        if file_len < FOOTER_LEN as u64 {
            return Err(Error::corruption(
                file_name,
                0,
                format!("file of {file_len} bytes is too short to be a table"),
            ));
        }
        let footer_buf = file
            .read_at(file_len - FOOTER_LEN as u64, FOOTER_LEN)
            .context(|| format!("reading footer of {file_name}"))?;
        let footer = Footer::decode(&footer_buf, &file_name, file_len)?;

        let index_data = read(footer.index)?;
        let index = Arc::new(Block::new(
            index_data,
            file_name.as_str(),
            footer.index.offset,
        )?);

        let index_search = match IndexKeys::new(&index)? {
            Some(keys) => IndexSearch::Keys(keys),
            None => IndexSearch::Sample(RestartSample::new(&index, INDEX_SAMPLE_STRIDE)?),
        };

        let filter = if footer.filter.is_empty() {
            None
        } else {
            let data = read(footer.filter)?;
            Some(BloomFilter::new(data).ok_or_else(|| {
                Error::corruption(&*file_name, footer.filter.offset, "malformed bloom filter")
            })?)
        };

        let props_data = read(footer.properties)?;
        let mut props = Properties::decode(&props_data, &file_name, footer.properties.offset)?;
        props.file_size = file_len;
        if props.num_entries > 0
            && (parse_internal_key(&props.smallest_key).is_none()
                || parse_internal_key(&props.largest_key).is_none()
                || compare_internal(&props.smallest_key, &props.largest_key) == Ordering::Greater)
        {
            return Err(Error::corruption(
                &*file_name,
                footer.properties.offset,
                "bad key range in properties",
            ));
        }
        let cache = cache.map(|c| {
            let id = c.next_table_id();
            (c, id)
        });
        Ok(Table {
            map: file.mapped().cloned(),
            file,
            file_name: file_name.into(),
            index,
            index_search,
            filter,
            props,
            cache,
            filter_checked: AtomicU64::new(0),
            filter_useful: AtomicU64::new(0),
            filter_false_positives: AtomicU64::new(0),
            bytes_read: AtomicU64::new(bytes_read + FOOTER_LEN as u64),
        })
    }

    /// True if point reads and seeks slice this table's blocks from a memory mapping
    /// (`Options::mmap_reads`, where the file system maps files).
    pub fn is_mapped(&self) -> bool {
        self.map.is_some()
    }

    /// Bytes read from the file so far: the footer, index, filter and properties blocks at
    /// open, then every data block read from the file (with its trailer; a block an
    /// iterator takes from its readahead window counts as read then). Block cache hits
    /// read nothing and are not counted, nor are reads that failed with an I/O error or a
    /// bad checksum.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(AtomicOrdering::Relaxed)
    }

    /// Approximate bytes this open table keeps in memory whatever is read: the index
    /// block, the bloom filter, the properties (with their key range) and the table
    /// itself. Cached data blocks are charged to the [`BlockCache`], not here.
    pub fn memory_usage(&self) -> usize {
        std::mem::size_of::<Table>()
            + self.file_name.len()
            + self.index.size()
            + self.index_search.size()
            + self.filter.as_ref().map_or(0, BloomFilter::size)
            + self.props.smallest_key.len()
            + self.props.largest_key.len()
    }

    /// This table's id in its block cache, if it was opened with one.
    pub fn cache_id(&self) -> Option<u64> {
        self.cache.as_ref().map(|(_, id)| *id)
    }

    /// The name given at open.
    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    /// The table's properties (`file_size` is the actual file size).
    pub fn properties(&self) -> &Properties {
        &self.props
    }

    /// False if the table certainly holds no entry for `user_key` (outside its key range,
    /// or rejected by the bloom filter). Does not count in [`Table::filter_stats`].
    pub fn may_contain(&self, user_key: &[u8]) -> bool {
        self.in_range(user_key) && self.filter.as_ref().is_none_or(|f| f.may_contain(user_key))
    }

    /// True if the bloom filter rules `user_key` out (never for a table without one).
    /// Not counted in [`Table::filter_stats`] (a seek asks, not a point read).
    #[inline]
    pub fn filter_excludes(&self, user_key: &[u8]) -> bool {
        self.filter
            .as_ref()
            .is_some_and(|f| !f.may_contain(user_key))
    }

    fn in_range(&self, uk: &[u8]) -> bool {
        self.props.num_entries > 0
            && uk >= user_key(&self.props.smallest_key)
            && uk <= user_key(&self.props.largest_key)
    }

    /// `(filter checks, checks that ruled the key out)` made by [`Table::get`].
    pub fn filter_stats(&self) -> (u64, u64) {
        (
            self.filter_checked.load(AtomicOrdering::Relaxed),
            self.filter_useful.load(AtomicOrdering::Relaxed),
        )
    }

    /// Point reads the filter let through although the table holds no entry for the key
    /// (the filter's false positives, as seen by [`Table::get`]).
    pub fn filter_false_positives(&self) -> u64 {
        self.filter_false_positives.load(AtomicOrdering::Relaxed)
    }

    /// The data block at `handle`: from the block cache if it is there (unless `use` is
    /// [`CacheUse::Bypass`]), else read, verified and parsed, and then (if `use` is
    /// [`CacheUse::Fill`]) inserted into the cache. A block that fails any check is never
    /// inserted.
    fn read_data_block(&self, handle: BlockHandle, cache_use: CacheUse) -> Result<Arc<Block>> {
        if cache_use != CacheUse::Bypass {
            if let Some((cache, id)) = &self.cache {
                if let Some(block) = cache.get(*id, handle.offset) {
                    return Ok(block);
                }
            }
        }
        if let Some(block) = self.mapped_block(handle, cache_use)? {
            return Ok(block);
        }
        let data = read_block(self.file.as_ref(), &self.file_name, handle)?;
        self.bytes_read.fetch_add(
            handle.size + BLOCK_TRAILER_LEN as u64,
            AtomicOrdering::Relaxed,
        );
        let block = Arc::new(Block::new(data, self.file_name.clone(), handle.offset)?);
        if cache_use == CacheUse::Fill {
            if let Some((cache, id)) = &self.cache {
                cache.insert(*id, handle.offset, block.clone());
            }
        }
        Ok(block)
    }

    /// The data block at `handle` sliced from the mapped file (checksummed, as a read
    /// block), or `None` if the file is not mapped. The caller looked in the cache.
    ///
    /// Under [`CacheUse::Fill`] the cache gets a copy of it in memory of its own, as a
    /// block read from the file: a cached slice would keep the whole mapping (and, after
    /// compaction deleted the table, its disk space) until evicted.
    fn mapped_block(&self, handle: BlockHandle, cache_use: CacheUse) -> Result<Option<Arc<Block>>> {
        let Some(map) = &self.map else {
            return Ok(None);
        };
        let total = block_len_with_trailer(map.len() as u64, &self.file_name, handle)?;
        // In bounds (checked against the mapping's length just above); checked again
        // rather than trusted, as slicing out of bounds would panic.
        let range = usize::try_from(handle.offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(total)?))
            .filter(|r| r.end <= map.len())
            .ok_or_else(|| Error::corruption(&*self.file_name, handle.offset, "short read"))?;
        let raw = map.slice(range);
        let (data, sliced) = decode_block_shared(raw, &self.file_name, handle)?;
        self.bytes_read
            .fetch_add(total as u64, AtomicOrdering::Relaxed);
        let block = Arc::new(Block::new(data, self.file_name.clone(), handle.offset)?);
        if cache_use == CacheUse::Fill {
            if let Some((cache, id)) = &self.cache {
                // A decompressed block already owns its bytes.
                let owned = if sliced {
                    Arc::new(block.detached())
                } else {
                    Arc::clone(&block)
                };
                cache.insert(*id, handle.offset, owned);
            }
        }
        Ok(Some(block))
    }

    /// As [`Table::read_data_block`], for an iterator: a block missing from the cache is
    /// taken from the iterator's readahead window, and once the iterator reads adjacent
    /// blocks from the file (a scan, either way) it reads whole windows of them at once,
    /// growing from [`READAHEAD_MIN`] to [`READAHEAD_MAX`] bytes: one system call per
    /// window rather than per 4 KiB block. Every block is still checksummed.
    ///
    /// Under [`CacheUse::Fill`], a block taken from a window is cached on its second read
    /// only ([`BlockCache::admit_scanned`]): a one-off scan neither pays for filling the
    /// cache nor evicts what point reads keep hot, while the time-series store, which
    /// scans the same key ranges query after query, is served from the cache from the
    /// third run on. A long scan (see [`Readahead::long`]) is not cached at all. Scans
    /// that should not touch the cache at all (compaction) use `set_fill_cache(false)`
    /// ([`CacheUse::NoFill`]), as RocksDB's `fill_cache`.
    fn read_data_block_ahead(
        &self,
        handle: BlockHandle,
        cache_use: CacheUse,
        ra: &mut Readahead,
    ) -> Result<Arc<Block>> {
        // A long scan takes a block its window holds from the window, without asking the
        // cache: it would almost never be there (see `Readahead::long`), and the lookup
        // (hash, shard lock, a likely miss to DRAM) costs about what decoding it does.
        if cache_use != CacheUse::Bypass && !(ra.long && ra.holds(handle)) {
            if let Some((cache, id)) = &self.cache {
                if let Some(block) = cache.get(*id, handle.offset) {
                    ra.last = Some(handle);
                    return Ok(block);
                }
            }
        }
        // A mapped table serves a scan's blocks through the readahead windows all the
        // same (large reads, cached on their second read): only the first block of a run,
        // a point seek's, is sliced from the mapping.
        let adjacent = ra.last.is_some_and(|l| {
            l.end_with_trailer() == Some(handle.offset)
                || Some(l.offset) == handle.end_with_trailer()
        });
        if !adjacent {
            if let Some(block) = self.mapped_block(handle, cache_use)? {
                ra.last = Some(handle);
                return Ok(block);
            }
        }
        let total = block_len_with_trailer(self.file.len(), &self.file_name, handle)?;
        let (raw, window) = match ra.cut(handle, total) {
            Some(raw) => (raw, ra.share.clone()),
            None => {
                let (start, len) = ra.plan(handle, total, self.file.len());
                let context = || {
                    format!(
                        "reading block at offset {} of {}",
                        handle.offset, self.file_name
                    )
                };
                if len == total {
                    (self.file.read_at(start, len).context(context)?.into(), None)
                } else {
                    let counted = match (&self.cache, cache_use) {
                        (Some((cache, _)), CacheUse::Fill) => Some(cache.window_total()),
                        _ => None,
                    };
                    ra.fill(self.file.as_ref(), start, len, counted)
                        .context(context)?;
                    let raw = ra.cut(handle, total).ok_or_else(|| {
                        Error::corruption(&*self.file_name, handle.offset, "short read")
                    })?;
                    (raw, ra.share.clone())
                }
            }
        };
        ra.last = Some(handle);
        let (data, sliced) = decode_block_shared(raw, &self.file_name, handle)?;
        self.bytes_read
            .fetch_add(total as u64, AtomicOrdering::Relaxed);
        let scanned = window.is_some();
        // Whether this scan was already long before this block: a block is admitted or
        // not as the scan's earlier ones were.
        let long = ra.long;
        if scanned {
            ra.count_scanned(total, self.cache.as_ref().map(|(c, _)| c.capacity()));
        }
        let mut block = Block::new(data, self.file_name.clone(), handle.offset)?;
        if let Some(w) = window.filter(|_| sliced) {
            block = block.in_window(&w, total);
        }
        let block = Arc::new(block);
        if cache_use == CacheUse::Fill {
            if let Some((cache, id)) = &self.cache {
                // A block from a readahead window (a scan) is cached on its second read,
                // unless the scan is long (see `Readahead::long`).
                if !scanned || (!long && cache.admit_scanned(*id, handle.offset)) {
                    cache.insert(*id, handle.offset, block.clone());
                }
            }
        }
        Ok(block)
    }

    /// Seeks an iterator over the index block, searching only where the sample says.
    fn seek_index(&self, index_iter: &mut BlockIter, target: &[u8]) -> Result<()> {
        let (lo, hi) = match &self.index_search {
            IndexSearch::Keys(k) => k.narrow(target),
            IndexSearch::Sample(s) => s.narrow(target),
        };
        index_iter.seek_between(target, lo, hi)
    }

    fn decode_handle(&self, v: &[u8]) -> Result<BlockHandle> {
        BlockHandle::decode(v).ok_or_else(|| {
            Error::corruption(
                &*self.file_name,
                self.index.offset(),
                "bad block handle in index block",
            )
        })
    }

    /// The newest entry for `user_key` with sequence number `<= seq`: its kind (a
    /// tombstone is `ValueKind::Deletion`), sequence number and value, or `None` if the
    /// table has no such entry.
    pub fn get(&self, user_key: &[u8], seq: u64) -> Result<Option<Lookup>> {
        if !self.in_range(user_key) {
            return Ok(None);
        }
        if let Some(f) = &self.filter {
            self.filter_checked.fetch_add(1, AtomicOrdering::Relaxed);
            if !f.may_contain(user_key) {
                self.filter_useful.fetch_add(1, AtomicOrdering::Relaxed);
                return Ok(None);
            }
        }
        let target = seek_key(user_key, seq);
        let mut index_iter = BlockIter::new(self.index.clone());
        self.seek_index(&mut index_iter, &target)?;
        // The first index key >= target names the first block that may hold an entry >=
        // target; if it holds none (which a valid table never does) move on.
        while index_iter.valid() {
            let handle = self.decode_handle(index_iter.value())?;
            let mut it = BlockIter::new(self.read_data_block(handle, CacheUse::Fill)?);
            it.seek(&target)?;
            if it.valid() {
                let parsed = parse_internal_key(it.key()).ok_or_else(|| {
                    Error::corruption(&*self.file_name, handle.offset, "bad internal key")
                })?;
                if parsed.user_key == user_key {
                    return Ok(Some(Lookup {
                        kind: parsed.kind,
                        seq: parsed.seq,
                        value: it.value().to_vec(),
                    }));
                }
                self.count_false_positive();
                return Ok(None);
            }
            index_iter.next()?;
        }
        self.count_false_positive();
        Ok(None)
    }

    fn count_false_positive(&self) {
        if self.filter.is_some() {
            self.filter_false_positives
                .fetch_add(1, AtomicOrdering::Relaxed);
        }
    }

    /// An iterator over all entries; it keeps the table alive. It reads data blocks
    /// through the block cache and fills it (see [`TableIterator::set_fill_cache`]).
    pub fn iter(self: &Arc<Self>) -> TableIterator {
        TableIterator {
            index_iter: BlockIter::new(self.index.clone()),
            table: self.clone(),
            data_iter: None,
            data_handle: None,
            fill_cache: true,
            readahead: Readahead::default(),
            ahead: None,
        }
    }

    /// Reads and checksums every block and checks that keys are valid internal keys in
    /// strictly increasing order, consistent with the index, present in the bloom filter
    /// and as many as the properties say. Returns the number of entries.
    ///
    /// Every block is read from the file, bypassing the block cache (and not filling it).
    pub fn verify(&self) -> Result<u64> {
        let corrupt =
            |offset: u64, reason: String| Error::corruption(&*self.file_name, offset, reason);
        let mut count = 0u64;
        let mut prev_key: Option<Vec<u8>> = None;
        let mut first_key: Option<Vec<u8>> = None;
        let mut prev_index_key: Option<Vec<u8>> = None;
        let mut index_iter = BlockIter::new(self.index.clone());
        index_iter.seek_to_first()?;
        while index_iter.valid() {
            let index_key = index_iter.key().to_vec();
            if let Some(p) = &prev_index_key {
                if compare_internal(p, &index_key) != Ordering::Less {
                    return Err(corrupt(
                        self.index.offset(),
                        "index keys out of order".to_string(),
                    ));
                }
            }
            let handle = self.decode_handle(index_iter.value())?;
            let mut it = BlockIter::new(self.read_data_block(handle, CacheUse::Bypass)?);
            it.seek_to_first()?;
            if !it.valid() {
                return Err(corrupt(handle.offset, "empty data block".to_string()));
            }
            while it.valid() {
                let k = it.key();
                let parsed = parse_internal_key(k).ok_or_else(|| {
                    corrupt(
                        handle.offset,
                        "entry key is not an internal key".to_string(),
                    )
                })?;
                if let Some(p) = &prev_key {
                    if compare_internal(p, k) != Ordering::Less {
                        return Err(corrupt(handle.offset, "keys out of order".to_string()));
                    }
                }
                if compare_internal(k, &index_key) == Ordering::Greater {
                    return Err(corrupt(
                        handle.offset,
                        "key beyond its index entry".to_string(),
                    ));
                }
                if let Some(f) = &self.filter {
                    if !f.may_contain(parsed.user_key) {
                        return Err(corrupt(
                            handle.offset,
                            "bloom filter misses a key of the table".to_string(),
                        ));
                    }
                }
                if first_key.is_none() {
                    first_key = Some(k.to_vec());
                }
                prev_key = Some(k.to_vec());
                count += 1;
                it.next()?;
            }
            prev_index_key = Some(index_key);
            index_iter.next()?;
        }
        if count != self.props.num_entries {
            return Err(corrupt(
                self.index.offset(),
                format!(
                    "table holds {count} entries, properties say {}",
                    self.props.num_entries
                ),
            ));
        }
        if count > 0
            && (first_key.as_deref() != Some(&self.props.smallest_key[..])
                || prev_key.as_deref() != Some(&self.props.largest_key[..]))
        {
            return Err(corrupt(
                self.index.offset(),
                "key range differs from properties".to_string(),
            ));
        }
        Ok(count)
    }
}

/// First readahead window of a scan, in bytes.
const READAHEAD_MIN: usize = 16 << 10;
/// Largest readahead window (as RocksDB's automatic iterator readahead).
const READAHEAD_MAX: usize = 256 << 10;

/// A table iterator's readahead: the last window read and how the iterator has moved.
#[derive(Debug, Default)]
struct Readahead {
    /// Stored bytes of the file from `buf_offset` (blocks with their trailers). Blocks
    /// cut from the window share its allocation (see [`Table::read_data_block_ahead`]).
    buf: Bytes,
    /// Accounting for the blocks cut from `buf`.
    share: Option<Arc<SharedWindow>>,
    /// The window before `buf`: once no block holds a slice of it, the next window is
    /// read into its allocation (see [`Readahead::fill`]).
    spare: Bytes,
    buf_offset: u64,
    /// The block the iterator fetched last (from the cache, the window or the file).
    last: Option<BlockHandle>,
    /// Size of the next window; 0 until the iterator reads adjacent blocks.
    window: usize,
    /// Bytes of blocks taken from windows by this iterator (the scan, in this table).
    scanned: u64,
    /// The scan took more than [`LONG_SCAN_FRACTION`] of the block cache's capacity from
    /// windows (or the table has no cache): it neither looks up the blocks its window
    /// holds in the cache nor admits them, as RocksDB's and LevelDB's `fill_cache =
    /// false`. A range that large would push its own first blocks out of the cache
    /// before a repeat reached them (a scan over more than the cache is served by it only
    /// in part), while each admitted block costs an insert, an eviction and a readahead
    /// window that cannot be reused (a cached slice pins it): fresh, zeroed memory for
    /// every window. Blocks point reads cached are still found when the scan reads
    /// outside its windows; shorter scans, a time-series query's, are cached as before.
    long: bool,
}

/// A scan is long (see [`Readahead::long`]) once it took more than the block cache's
/// capacity divided by this from its readahead windows.
const LONG_SCAN_FRACTION: u64 = 2;

impl Readahead {
    /// Whether the window holds all of the block at `handle` (with its trailer).
    #[inline]
    fn holds(&self, handle: BlockHandle) -> bool {
        handle.offset >= self.buf_offset
            && handle
                .end_with_trailer()
                .is_some_and(|end| end - self.buf_offset <= self.buf.len() as u64)
    }

    /// A seek: the scan from here is short until it reads enough.
    #[inline]
    fn new_scan(&mut self) {
        self.scanned = 0;
        self.long = false;
    }

    /// Counts `total` bytes taken from a window; `capacity` is the block cache's.
    #[inline]
    fn count_scanned(&mut self, total: usize, capacity: Option<usize>) {
        self.scanned += total as u64;
        let limit = capacity.map_or(0, |c| c as u64 / LONG_SCAN_FRACTION);
        self.long = self.scanned > limit;
    }

    /// The stored bytes of the block at `handle` (`total` with its trailer), if the
    /// window holds all of them: a slice sharing the window's allocation.
    fn cut(&self, handle: BlockHandle, total: usize) -> Option<Bytes> {
        let start = usize::try_from(handle.offset.checked_sub(self.buf_offset)?).ok()?;
        let end = start.checked_add(total)?;
        (end <= self.buf.len()).then(|| self.buf.slice(start..end))
    }

    /// Reads `len` bytes at `start` into a new window (the previous one lives on in the
    /// blocks cut from it). On error the window is empty.
    ///
    /// The window before the previous one is reused if no block holds a slice of it any
    /// more (none was cached, and the iterator has moved past its blocks): a scan then
    /// reads into the same two allocations throughout, rather than zeroing and
    /// page-faulting a fresh one of up to [`READAHEAD_MAX`] bytes for every window.
    fn fill(
        &mut self,
        file: &dyn RandomAccessFile,
        start: u64,
        len: usize,
        total: Option<Arc<AtomicUsize>>,
    ) -> std::io::Result<()> {
        let previous = std::mem::take(&mut self.buf);
        self.share = None;
        self.buf_offset = start;
        // A reused allocation keeps its capacity: only one at most twice the window is
        // taken (a tail window or one after a huge block gets its own), and the window is
        // accounted by what it holds, so cached slices of it are charged honestly.
        let (buf, held) = match std::mem::replace(&mut self.spare, previous).try_into_mut() {
            Ok(mut reused) if reused.capacity() <= 2 * len => {
                // Zeroes only what the window grew by (nothing once it stopped growing).
                reused.resize(len, 0);
                file.read_exact_into(start, &mut reused)?;
                let held = reused.capacity();
                (reused.freeze(), held)
            }
            Ok(_) | Err(_) => (file.read_at(start, len)?.into(), len),
        };
        self.buf = buf;
        self.share = Some(SharedWindow::counted(held, total));
        Ok(())
    }

    /// Where to read for a block the window does not hold: `(offset, length)`. Just the
    /// block unless the iterator is scanning, then a window after it (forward) or ending
    /// with it (backward), within the file.
    fn plan(&mut self, handle: BlockHandle, total: usize, file_len: u64) -> (u64, usize) {
        let end = handle.offset + total as u64;
        let forward = self
            .last
            .is_some_and(|l| l.end_with_trailer() == Some(handle.offset));
        let backward = self.last.is_some_and(|l| l.offset == end);
        if !forward && !backward {
            self.new_scan();
            self.window = 0;
            self.buf = Bytes::new();
            self.spare = Bytes::new();
            self.share = None;
            return (handle.offset, total);
        }
        self.window = (self.window * 2).clamp(READAHEAD_MIN, READAHEAD_MAX);
        let want = self.window.max(total) as u64;
        if forward {
            let stop = file_len.min(handle.offset.saturating_add(want)).max(end);
            (handle.offset, (stop - handle.offset) as usize)
        } else {
            let start = end.saturating_sub(want);
            (start, (end - start) as usize)
        }
    }
}

/// A two-level iterator over a [`Table`]: index entries, and the data block each names,
/// loaded lazily. Owns a reference to the table.
pub struct TableIterator {
    table: Arc<Table>,
    index_iter: BlockIter,
    data_iter: Option<BlockIter>,
    data_handle: Option<BlockHandle>,
    fill_cache: bool,
    readahead: Readahead,
    /// The cached block after (or before) the current one in the direction of a scan
    /// that crossed a block boundary, looked up and prefetched when the scan entered the
    /// current block: cached blocks lie scattered in memory, and a cursor entering one
    /// waited for DRAM (and a page walk) on its first entries. Used if the scan gets there.
    ahead: Option<(BlockHandle, Arc<Block>)>,
}

impl std::fmt::Debug for TableIterator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableIterator")
            .field("table", &self.table.file_name)
            .field("data_handle", &self.data_handle)
            .field("fill_cache", &self.fill_cache)
            .finish_non_exhaustive()
    }
}

impl TableIterator {
    /// Whether data blocks this iterator reads from the file are inserted into the block
    /// cache (default `true`). Blocks already cached are used either way. Compaction
    /// passes `false` so that a one-off scan does not evict hot blocks.
    pub fn set_fill_cache(&mut self, fill_cache: bool) {
        self.fill_cache = fill_cache;
    }

    /// The table this iterator reads.
    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// Loads the data block named by the current index entry (if not loaded already).
    fn init_data_block(&mut self) -> Result<()> {
        if !self.index_iter.valid() {
            self.data_iter = None;
            self.data_handle = None;
            return Ok(());
        }
        let handle = self.table.decode_handle(self.index_iter.value())?;
        if self.data_iter.is_some() && self.data_handle == Some(handle) {
            return Ok(());
        }
        let block = match self.ahead.take() {
            Some((h, block)) if h == handle => {
                // As a cache hit in `read_data_block_ahead`.
                self.readahead.last = Some(handle);
                block
            }
            _ => {
                let cache_use = if self.fill_cache {
                    CacheUse::Fill
                } else {
                    CacheUse::NoFill
                };
                self.table
                    .read_data_block_ahead(handle, cache_use, &mut self.readahead)?
            }
        };
        match &mut self.data_iter {
            Some(it) => it.reset(block),
            None => self.data_iter = Some(BlockIter::new(block)),
        }
        self.data_handle = Some(handle);
        Ok(())
    }

    #[inline]
    fn data_valid(&self) -> bool {
        self.data_iter.as_ref().is_some_and(|d| d.valid())
    }

    fn skip_empty_forward(&mut self) -> Result<()> {
        while !self.data_valid() {
            if !self.index_iter.valid() {
                self.data_iter = None;
                return Ok(());
            }
            self.index_iter.next()?;
            self.init_data_block()?;
            self.look_ahead(true);
            if let Some(d) = &mut self.data_iter {
                d.seek_to_first()?;
            }
        }
        Ok(())
    }

    fn skip_empty_backward(&mut self) -> Result<()> {
        while !self.data_valid() {
            if !self.index_iter.valid() {
                self.data_iter = None;
                return Ok(());
            }
            self.index_iter.prev()?;
            self.init_data_block()?;
            self.look_ahead(false);
            if let Some(d) = &mut self.data_iter {
                d.seek_to_last()?;
            }
        }
        Ok(())
    }

    /// A scan moved into the current block: looks up the next block in its direction in
    /// the block cache and, if there, prefetches what the scan will read first of it
    /// (see [`TableIterator::ahead`]). A seek does not look ahead: a point seek reads
    /// one block, and a scan looks ahead from its second.
    fn look_ahead(&mut self, forward: bool) {
        self.ahead = None;
        // A long scan does not look in the cache for the blocks its windows hold.
        if self.readahead.long {
            return;
        }
        let Some((cache, id)) = &self.table.cache else {
            return;
        };
        let Some(handle) = self
            .index_iter
            .peek_adjacent_value(forward)
            .and_then(BlockHandle::decode)
        else {
            return;
        };
        if let Some(block) = cache.get_ahead(*id, handle.offset) {
            block.prefetch(forward);
            self.ahead = Some((handle, block));
        }
    }

    /// Runs `f`; on error leaves the iterator invalid.
    fn guard(&mut self, f: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        let r = f(self);
        if r.is_err() {
            self.data_iter = None;
            self.data_handle = None;
        }
        r
    }
}

impl InternalIterator for TableIterator {
    #[inline]
    fn valid(&self) -> bool {
        self.data_valid()
    }

    fn seek_to_first(&mut self) -> Result<()> {
        self.readahead.new_scan();
        self.guard(|s| {
            s.index_iter.seek_to_first()?;
            s.init_data_block()?;
            if let Some(d) = &mut s.data_iter {
                d.seek_to_first()?;
            }
            s.skip_empty_forward()
        })
    }

    fn seek_to_last(&mut self) -> Result<()> {
        self.readahead.new_scan();
        self.guard(|s| {
            s.index_iter.seek_to_last()?;
            s.init_data_block()?;
            if let Some(d) = &mut s.data_iter {
                d.seek_to_last()?;
            }
            s.skip_empty_backward()
        })
    }

    fn seek(&mut self, target: &[u8]) -> Result<()> {
        self.readahead.new_scan();
        self.guard(|s| {
            s.table.seek_index(&mut s.index_iter, target)?;
            s.init_data_block()?;
            if let Some(d) = &mut s.data_iter {
                d.seek(target)?;
            }
            s.skip_empty_forward()
        })
    }

    #[inline]
    fn next(&mut self) -> Result<()> {
        let Some(d) = self.data_iter.as_mut().filter(|d| d.valid()) else {
            return Ok(());
        };
        let r = d.next();
        // Within a block (all but the last entry of each): done, no block change.
        if r.is_ok() && d.valid() {
            return Ok(());
        }
        self.guard(|s| {
            r?;
            s.skip_empty_forward()
        })
    }

    #[inline]
    fn prev(&mut self) -> Result<()> {
        let Some(d) = self.data_iter.as_mut().filter(|d| d.valid()) else {
            return Ok(());
        };
        let r = d.prev();
        // Within a block: done, as in `next`.
        if r.is_ok() && d.valid() {
            return Ok(());
        }
        self.guard(|s| {
            r?;
            s.skip_empty_backward()
        })
    }

    #[inline(always)]
    fn key(&self) -> &[u8] {
        self.data_iter.as_ref().map_or(&[], |d| d.key())
    }

    #[inline]
    fn value(&self) -> &[u8] {
        self.data_iter.as_ref().map_or(&[], |d| d.value())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::fs::{FileSystem, MemFs};
    use std::path::Path;

    /// A 64 KiB file of known bytes, and those bytes.
    fn file_of_64_kib() -> (Arc<dyn RandomAccessFile>, Vec<u8>) {
        let fs = MemFs::new();
        let data: Vec<u8> = (0..64u32 << 10).map(|i| (i % 251) as u8).collect();
        let mut w = fs.create(Path::new("/f")).unwrap();
        w.append(&data).unwrap();
        w.sync().unwrap();
        drop(w);
        (fs.open(Path::new("/f")).unwrap(), data)
    }

    #[test]
    fn readahead_reuses_a_window_only_once_no_block_holds_it() {
        let (f, data) = file_of_64_kib();
        let mut ra = Readahead::default();
        let window = |i: u64| (i * 8192, 8192usize);
        let fill = |ra: &mut Readahead, i: u64| {
            let (at, len) = window(i);
            ra.fill(f.as_ref(), at, len, None).unwrap();
            assert_eq!(&ra.buf[..], &data[at as usize..at as usize + len]);
        };
        fill(&mut ra, 0);
        // A block of window 0 stays alive (as a cached block would).
        let held = ra.buf.slice(100..200);
        let held_ptr = held.as_ptr();
        fill(&mut ra, 1);
        let window1_ptr = ra.buf.as_ptr();
        fill(&mut ra, 2);
        // Window 0 was not reused: the held block still reads its own bytes.
        assert_eq!(&held[..], &data[100..200]);
        assert_ne!(ra.buf.as_ptr(), held_ptr);
        // Window 1 had no block left: window 3 is read into its allocation.
        fill(&mut ra, 3);
        assert_eq!(ra.buf.as_ptr(), window1_ptr);
        assert_eq!(&held[..], &data[100..200]);
        // A longer window than the reused one still reads every byte.
        ra.fill(f.as_ref(), 40_000, 20_000, None).unwrap();
        assert_eq!(&ra.buf[..], &data[40_000..60_000]);
    }

    #[test]
    fn readahead_does_not_reuse_an_allocation_much_larger_than_the_window() {
        let (f, data) = file_of_64_kib();
        let total = Arc::new(AtomicUsize::new(0));
        let mut ra = Readahead::default();
        let fill = |ra: &mut Readahead, at: usize, len: usize| {
            ra.fill(f.as_ref(), at as u64, len, Some(total.clone()))
                .unwrap();
            assert_eq!(&ra.buf[..], &data[at..at + len]);
            ra.buf.as_ptr()
        };
        let big = fill(&mut ra, 0, 32 << 10);
        fill(&mut ra, 32 << 10, 8 << 10);
        // A 4 KiB tail window does not take the 32 KiB allocation (a cached slice of it
        // would pin 32 KiB charged as 4).
        let tail = fill(&mut ra, 40 << 10, 4 << 10);
        assert_ne!(tail, big);
        // Windows of one size keep reusing.
        let a = fill(&mut ra, 0, 16 << 10);
        fill(&mut ra, 16 << 10, 16 << 10);
        assert_eq!(fill(&mut ra, 32 << 10, 16 << 10), a);
    }
}
