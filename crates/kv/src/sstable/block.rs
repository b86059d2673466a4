//! Blocks: sorted runs of key/value entries with prefix-compressed keys and restart points.
//!
//! ```text
//! entry:   shared_len varint | non_shared_len varint | value_len varint
//!          | key[shared_len..] (non_shared_len bytes) | value (value_len bytes)
//! block:   entry* | restart_offset fixed32 * num_restarts | num_restarts fixed32
//! ```
//!
//! Every `restart_interval` entries the key is stored whole (`shared_len == 0`) and the
//! entry's offset is recorded as a restart point, so that a seek can binary-search the
//! restart points and then scan forward. Keys are internal keys ordered by
//! [`compare_internal`].

use crate::coding::{get_fixed32, put_fixed32, put_varint32, Decoder};
use crate::error::{Error, Result};
use crate::iterator::{InternalIterator, KeyBuf};
use crate::key::compare_internal;
use crate::prefetch::{prefetch_read, prefetch_slice};
use bytes::Bytes;
use std::cmp::Ordering;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

/// Builds one block in memory.
#[derive(Debug)]
pub struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    restart_interval: usize,
    counter: usize,
    last_key: Vec<u8>,
    num_entries: usize,
}

impl BlockBuilder {
    /// A builder that records a restart point every `restart_interval` entries (at least 1).
    pub fn new(restart_interval: usize) -> Self {
        BlockBuilder {
            buf: Vec::new(),
            restarts: vec![0],
            restart_interval: restart_interval.max(1),
            counter: 0,
            last_key: Vec::new(),
            num_entries: 0,
        }
    }

    /// Appends an entry. REQUIRES: `key` is larger than every key added before (the table
    /// builder checks this).
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        let shared = if self.counter < self.restart_interval {
            self.last_key
                .iter()
                .zip(key)
                .take_while(|(a, b)| a == b)
                .count()
        } else {
            self.restarts.push(self.buf.len() as u32);
            self.counter = 0;
            0
        };
        let suffix = key.get(shared..).unwrap_or_default();
        put_varint32(&mut self.buf, shared as u32);
        put_varint32(&mut self.buf, suffix.len() as u32);
        put_varint32(&mut self.buf, value.len() as u32);
        self.buf.extend_from_slice(suffix);
        self.buf.extend_from_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.counter += 1;
        self.num_entries += 1;
    }

    /// Size of the block if it were finished now.
    pub fn estimated_size(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    /// True if no entry was added since creation or the last [`BlockBuilder::finish`].
    pub fn is_empty(&self) -> bool {
        self.num_entries == 0
    }

    /// Entries added so far.
    pub fn num_entries(&self) -> usize {
        self.num_entries
    }

    /// The last key added.
    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// Appends the restart array and returns the block contents, resetting the builder.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        for &r in &self.restarts {
            put_fixed32(&mut out, r);
        }
        put_fixed32(&mut out, self.restarts.len() as u32);
        self.restarts.clear();
        self.restarts.push(0);
        self.counter = 0;
        self.last_key.clear();
        self.num_entries = 0;
        out
    }
}

/// Bytes of a block's entries [`Block::prefetch`] asks for at most (a block is 4 KiB by
/// default; of a larger one, the part a scan reaches first).
pub const BLOCK_PREFETCH_MAX: usize = 8 << 10;

/// A parsed, validated block and its (uncompressed) contents. The contents are a
/// [`Bytes`]: either the block's own allocation, or a slice of a larger read (a scan's
/// readahead window) that the blocks cut from it share (see [`SharedWindow`]).
#[derive(Debug)]
pub struct Block {
    data: Bytes,
    /// The window `data` is a slice of, and the stored bytes (with the trailer) this
    /// block accounts for in it; `None` if `data` is the block's own allocation.
    window: Option<(Arc<SharedWindow>, usize)>,
    /// Entries occupy `data[..data_end]`.
    data_end: usize,
    restarts: Vec<u32>,
    file: Arc<str>,
    offset: u64,
}

impl Block {
    /// Validates the restart array of `data`, a block read from `file` at `offset` (both
    /// only used in error messages).
    pub fn new(data: impl Into<Bytes>, file: impl Into<Arc<str>>, offset: u64) -> Result<Block> {
        let data = data.into();
        let file = file.into();
        let corrupt = |reason: String| Error::corruption(&*file, offset, reason);
        let len = data.len();
        let num_restarts = len
            .checked_sub(4)
            .and_then(|p| data.get(p..))
            .and_then(get_fixed32)
            .ok_or_else(|| corrupt(format!("block of {len} bytes is too short")))?
            as usize;
        let max_restarts = (len - 4) / 4;
        if num_restarts == 0 || num_restarts > max_restarts {
            return Err(corrupt(format!(
                "block of {len} bytes claims {num_restarts} restart points"
            )));
        }
        let data_end = len - 4 - 4 * num_restarts;
        let mut restarts = Vec::with_capacity(num_restarts);
        for i in 0..num_restarts {
            let r = data
                .get(data_end + 4 * i..)
                .and_then(get_fixed32)
                .ok_or_else(|| corrupt("truncated restart array".to_string()))?;
            let ok = if i == 0 {
                r == 0
            } else {
                restarts.last().is_some_and(|&p| r > p) && (r as usize) < data_end
            };
            if !ok {
                return Err(corrupt(format!(
                    "restart point {i} has bad offset {r} (entries end at {data_end})"
                )));
            }
            restarts.push(r);
        }
        Ok(Block {
            data,
            window: None,
            data_end,
            restarts,
            file,
            offset,
        })
    }

    /// Records that this block's contents are a slice of `window`, occupying `stored`
    /// bytes of it (the block with its trailer): the window's memory is live as long as
    /// any such block is (see [`SharedWindow`]).
    pub fn in_window(mut self, window: &Arc<SharedWindow>, stored: usize) -> Block {
        window.live.fetch_add(stored, AtomicOrdering::Relaxed);
        self.window = Some((window.clone(), stored));
        self
    }

    /// True if the block is a slice of a window that live blocks now mostly do not use
    /// (less than half of it): a block cache keeping this block should keep a copy of it
    /// instead (see [`Block::detached`]), so that the window can be freed.
    pub fn pins_sparse_window(&self) -> bool {
        self.window
            .as_ref()
            .is_some_and(|(w, _)| w.live.load(AtomicOrdering::Relaxed) * 2 < w.len)
    }

    /// True if the block is a slice of a shared readahead window.
    pub fn in_shared_window(&self) -> bool {
        self.window.is_some()
    }

    /// The same block in an allocation of its own (a copy of its contents).
    pub fn detached(&self) -> Block {
        Block {
            data: Bytes::copy_from_slice(&self.data),
            window: None,
            data_end: self.data_end,
            restarts: self.restarts.clone(),
            file: self.file.clone(),
            offset: self.offset,
        }
    }

    /// Size of the block contents in bytes.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// Bytes of memory the block's contents account for: its contents, or for a slice
    /// of a window the stored bytes it occupies there (contents and trailer).
    pub fn charge(&self) -> usize {
        self.window
            .as_ref()
            .map_or(self.data.len(), |&(_, stored)| stored)
    }

    /// True if the block holds no entries.
    pub fn is_empty(&self) -> bool {
        self.data_end == 0
    }

    /// Number of restart points (for an index block, written with restart interval 1:
    /// its number of entries, restart `i` being entry `i`).
    pub fn num_restarts(&self) -> usize {
        self.restarts.len()
    }

    /// Offset of the block in its file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Hints the CPU to load the entries of the block, up to [`BLOCK_PREFETCH_MAX`]
    /// bytes of them from its start (`forward`) or its end, and the restart points there:
    /// what a scan entering it reads. Cached blocks lie scattered in memory, each a
    /// DRAM miss (and page walk) away; whole blocks prefetched ahead of a scan measured
    /// faster than their first lines only (readreverse -13%, readseq -4% CPU).
    #[inline]
    pub fn prefetch(&self, forward: bool) {
        let entries = self.data.get(..self.data_end).unwrap_or_default();
        let n = entries.len().min(BLOCK_PREFETCH_MAX);
        let restart = if forward {
            prefetch_slice(&entries[..n]);
            self.restarts.first()
        } else {
            prefetch_slice(&entries[entries.len() - n..]);
            self.restarts.last()
        };
        if let Some(r) = restart {
            prefetch_read(std::ptr::from_ref(r).cast());
        }
    }

    /// Name of the file the block came from.
    pub fn file_name(&self) -> &str {
        &self.file
    }

    fn corruption(&self, at: usize, reason: &str) -> Error {
        Error::corruption(
            &*self.file,
            self.offset,
            format!("bad block entry at offset {at} within the block: {reason}"),
        )
    }

    /// Decodes the entry header at `at`: (shared, non_shared, value_len, header length).
    #[inline]
    fn decode_header(&self, at: usize) -> Result<(usize, usize, usize, usize)> {
        let region = self
            .data
            .get(at..self.data_end)
            .ok_or_else(|| self.corruption(at, "offset out of range"))?;
        // Fast path (LevelDB's too): all three lengths below 128 take one byte each.
        if let [a, b, c, ..] = *region {
            if (a | b | c) < 0x80 {
                let (shared, non_shared, value_len) = (a as usize, b as usize, c as usize);
                if non_shared + value_len <= region.len() - 3 {
                    return Ok((shared, non_shared, value_len, 3));
                }
                return Err(self.corruption(at, "entry extends past the end of the block"));
            }
        }
        let mut d = Decoder::new(region);
        let (Some(shared), Some(non_shared), Some(value_len)) =
            (d.varint32(), d.varint32(), d.varint32())
        else {
            return Err(self.corruption(at, "truncated or bad entry header"));
        };
        let (shared, non_shared, value_len) =
            (shared as usize, non_shared as usize, value_len as usize);
        if non_shared
            .checked_add(value_len)
            .is_none_or(|body| body > d.remaining())
        {
            return Err(self.corruption(at, "entry extends past the end of the block"));
        }
        Ok((shared, non_shared, value_len, d.position()))
    }

    /// The full key of the entry at restart point `i` (which must have `shared == 0`).
    #[inline]
    fn restart_key(&self, i: usize) -> Result<&[u8]> {
        let at = self.restarts.get(i).copied().unwrap_or(0) as usize;
        // Probed by every step of a seek's binary search: one-byte lengths are read in
        // place (the key must lie within the entries either way, checked below).
        let (shared, non_shared, _, hdr) = match self.data.get(at..at + 3) {
            Some(&[a, b, c]) if (a | b | c) < 0x80 => (a as usize, b as usize, c as usize, 3),
            _ => self.decode_header(at)?,
        };
        if shared != 0 {
            return Err(self.corruption(at, "restart entry shares a prefix"));
        }
        self.data
            .get(at + hdr..at + hdr + non_shared)
            .filter(|_| at + hdr + non_shared <= self.data_end)
            .ok_or_else(|| self.corruption(at, "key out of range"))
    }
}

impl Drop for SharedWindow {
    fn drop(&mut self) {
        if let Some(t) = &self.total {
            t.fetch_sub(self.len, AtomicOrdering::Relaxed);
        }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Some((w, stored)) = &self.window {
            w.live.fetch_sub(*stored, AtomicOrdering::Relaxed);
        }
    }
}

/// A scan's readahead window (one read of many adjacent blocks) whose blocks are cut from
/// it as slices rather than copied. Its memory is freed only when the last such block is
/// dropped, so it counts the bytes live blocks account for: once they fall under half of
/// the window, [`Block::pins_sparse_window`] tells the block cache to keep copies instead.
#[derive(Debug)]
pub struct SharedWindow {
    len: usize,
    live: AtomicUsize,
    /// Bytes of all windows alive that feed a block cache, this one included while it
    /// lives (see [`crate::cache::BlockCache::insert`]).
    total: Option<Arc<AtomicUsize>>,
}

impl SharedWindow {
    /// Accounting for a window of `len` bytes, no block cut from it yet.
    pub fn new(len: usize) -> Arc<SharedWindow> {
        Self::counted(len, None)
    }

    /// As [`SharedWindow::new`], adding `len` to `total` until the window is freed.
    pub fn counted(len: usize, total: Option<Arc<AtomicUsize>>) -> Arc<SharedWindow> {
        if let Some(t) = &total {
            t.fetch_add(len, AtomicOrdering::Relaxed);
        }
        Arc::new(SharedWindow {
            len,
            live: AtomicUsize::new(0),
            total,
        })
    }

    /// Bytes of the window that live blocks account for.
    pub fn live_bytes(&self) -> usize {
        self.live.load(AtomicOrdering::Relaxed)
    }
}

/// Every `stride`-th restart key of a block, copied side by side in memory.
///
/// A seek in a large block (a table's index, one restart point per data block) binary
/// searches thousands of restart points spread over the block, each probe a likely cache
/// miss. Searching this small, hot copy first narrows the search in the block to `stride`
/// restart points.
#[derive(Debug, Clone)]
pub struct RestartSample {
    stride: usize,
    keys: Vec<u8>,
    /// End of sampled key `i` in `keys` (its start is the previous end).
    ends: Vec<u32>,
}

impl RestartSample {
    /// Samples every `stride`-th restart key of `block` (stride at least 2).
    pub fn new(block: &Block, stride: usize) -> Result<RestartSample> {
        let stride = stride.max(2);
        let mut keys = Vec::new();
        let mut ends = Vec::new();
        if block.data_end > 0 {
            for i in (0..block.restarts.len()).step_by(stride) {
                keys.extend_from_slice(block.restart_key(i)?);
                ends.push(u32::try_from(keys.len()).unwrap_or(u32::MAX));
            }
        }
        Ok(RestartSample { stride, keys, ends })
    }

    fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.keys
            .get(start..self.ends[i] as usize)
            .unwrap_or_default()
    }

    /// The range of restart points `[lo, hi]` in which a seek for `target` must search.
    pub fn narrow(&self, target: &[u8]) -> (usize, usize) {
        // Sampled keys below target: the last of them starts the range.
        let (mut below, mut above) = (0, self.ends.len());
        while below < above {
            let mid = below + (above - below) / 2;
            if compare_internal(self.key(mid), target) == Ordering::Less {
                below = mid + 1;
            } else {
                above = mid;
            }
        }
        match below {
            0 => (0, 0),
            b => ((b - 1) * self.stride, b * self.stride - 1),
        }
    }

    /// Bytes held.
    pub fn size(&self) -> usize {
        self.keys.len() + 4 * self.ends.len()
    }
}

/// A cursor over one [`Block`]; owns a reference to it, so it is `'static`.
#[derive(Debug)]
pub struct BlockIter {
    block: Arc<Block>,
    /// Offset of the current entry; `>= data_end` when invalid.
    current: usize,
    /// Offset just past the current entry.
    next_offset: usize,
    /// Index of the restart point at or before `current`.
    restart_index: usize,
    key: KeyBuf,
    value_start: usize,
    value_len: usize,
    /// Going backward: the entries of the current restart interval before the current
    /// entry, decoded once when `prev` first scanned the interval (as RocksDB's block
    /// iterator does), so that each further `prev` in it is a pop instead of a rescan
    /// from the restart point. Their full keys are in `prev_keys`, one after the other,
    /// each inline key with its [`KeyBuf`]'s whole inline array (copies of fixed size,
    /// and padding for [`KeyBuf::keep_and_append_padded`]).
    prev_entries: Vec<PrevEntry>,
    prev_keys: Vec<u8>,
}

/// An entry decoded by a backward scan (see [`BlockIter::prev_entries`]).
#[derive(Debug, Clone, Copy)]
struct PrevEntry {
    offset: usize,
    next_offset: usize,
    restart_index: usize,
    /// Its key is `prev_keys[key_start..key_start + key_len]`.
    key_start: usize,
    key_len: usize,
    value_start: usize,
    value_len: usize,
}

impl BlockIter {
    /// An (invalid) iterator over `block`; position it with a seek.
    pub fn new(block: Arc<Block>) -> Self {
        let end = block.data_end;
        BlockIter {
            block,
            current: end,
            next_offset: end,
            restart_index: 0,
            key: KeyBuf::default(),
            value_start: 0,
            value_len: 0,
            prev_entries: Vec::new(),
            prev_keys: Vec::new(),
        }
    }

    /// Makes this an (invalid) iterator over `block`, keeping its buffers: a table
    /// iterator moving to its next block reuses its block cursor.
    pub fn reset(&mut self, block: Arc<Block>) {
        self.block = block;
        self.invalidate();
        self.restart_index = 0;
    }

    /// The value of the entry after (`forward`) or before the current one, read without
    /// moving, if both are restart points, as in a table's index block (restart interval
    /// 1), where a table cursor looks up its next data block ahead of time. `None`
    /// otherwise, or if the entry is malformed (the move itself reports that).
    pub fn peek_adjacent_value(&self, forward: bool) -> Option<&[u8]> {
        let block = &*self.block;
        if !self.valid() || self.restart_point(self.restart_index) != self.current {
            return None;
        }
        let i = if forward {
            self.restart_index + 1
        } else {
            self.restart_index.checked_sub(1)?
        };
        let at = *block.restarts.get(i)? as usize;
        let (shared, non_shared, value_len, hdr) = block.decode_header(at).ok()?;
        let start = at + hdr + non_shared;
        // Adjacent entries only: with a restart interval above 1 the next restart point is
        // several entries away, and an entry before the current one ends where it starts.
        let adjacent = if forward {
            at == self.next_offset
        } else {
            start + value_len == self.current
        };
        if !adjacent {
            return None;
        }
        (shared == 0)
            .then(|| block.data.get(start..start + value_len))
            .flatten()
    }

    /// The block being iterated.
    pub fn block(&self) -> &Arc<Block> {
        &self.block
    }

    /// As [`InternalIterator::seek`], given that the last restart point whose key is
    /// below `target` lies in `[lo, hi]` (as [`RestartSample::narrow`] tells): the binary
    /// search only probes that range.
    pub fn seek_between(&mut self, target: &[u8], lo: usize, hi: usize) -> Result<()> {
        let r = self.do_seek(target, lo, hi);
        self.guarded(r)
    }

    fn invalidate(&mut self) {
        self.prev_entries.clear();
        self.prev_keys.clear();
        self.current = self.block.data_end;
        self.next_offset = self.block.data_end;
        self.restart_index = self.block.restarts.len();
        self.key.clear();
    }

    fn restart_point(&self, i: usize) -> usize {
        self.block.restarts.get(i).copied().unwrap_or(0) as usize
    }

    fn seek_to_restart_point(&mut self, i: usize) {
        self.key.clear();
        self.restart_index = i;
        self.current = self.block.data_end;
        self.next_offset = self.restart_point(i);
    }

    /// Decodes the entry at `next_offset`. Returns false (and invalidates) at the end.
    #[inline]
    fn parse_next(&mut self) -> Result<bool> {
        if self.next_in_interval() {
            return Ok(true);
        }
        self.parse_next_checked()
    }

    #[inline(never)]
    fn parse_next_checked(&mut self) -> Result<bool> {
        let at = self.next_offset;
        if at >= self.block.data_end {
            self.invalidate();
            return Ok(false);
        }
        let r = self.parse_at(at);
        if r.is_err() {
            self.invalidate();
        }
        r.map(|()| true)
    }

    /// The common case of [`BlockIter::parse_next`], without the checks it can skip: the
    /// entry lies before the next restart point (so `restart_index` stays; at the restart
    /// point itself, as after `seek_to_restart_point`, the key is empty and `shared` must
    /// be 0, as checked) and its three lengths take one byte each. Returns false, having
    /// changed nothing, for anything else (the end, the next restart point, long lengths,
    /// any inconsistency), which [`BlockIter::parse_next_checked`] decodes or reports.
    #[inline(always)]
    fn next_in_interval(&mut self) -> bool {
        let block = &*self.block;
        let at = self.next_offset;
        // Restart point `restart_index` is at or before `at`: `at` is inside its interval
        // unless it reached the next restart point.
        if block
            .restarts
            .get(self.restart_index + 1)
            .is_some_and(|&r| r as usize <= at)
        {
            return false;
        }
        let Some(&[a, b, c]) = block
            .data
            .get(at..block.data_end)
            .and_then(|r| r.first_chunk())
        else {
            return false;
        };
        if (a | b | c) >= 0x80 {
            return false;
        }
        let (shared, non_shared, value_len) = (a as usize, b as usize, c as usize);
        let key_start = at + 3;
        let value_start = key_start + non_shared;
        let next = value_start + value_len;
        if next > block.data_end || shared > self.key.len() {
            return false;
        }
        // The block's bytes from the suffix on (the value and more may follow it).
        let Some(tail) = block.data.get(key_start..) else {
            return false;
        };
        self.key.keep_and_append_padded(shared, tail, non_shared);
        self.current = at;
        self.value_start = value_start;
        self.value_len = value_len;
        self.next_offset = next;
        true
    }

    fn parse_at(&mut self, at: usize) -> Result<()> {
        let block = &*self.block;
        let (shared, non_shared, value_len, hdr) = block.decode_header(at)?;
        if shared > self.key.len() {
            return Err(block.corruption(at, "shared prefix longer than the previous key"));
        }
        while self.restart_index + 1 < block.restarts.len()
            && self.restart_point(self.restart_index + 1) <= at
        {
            self.restart_index += 1;
            // A restart point inside an entry would make backward iteration and seeks
            // decode other entries than a forward scan does.
            if self.restart_point(self.restart_index) != at {
                return Err(block.corruption(at, "restart point inside an entry"));
            }
        }
        if shared != 0 && self.restart_point(self.restart_index) == at {
            return Err(block.corruption(at, "restart entry shares a prefix"));
        }
        let key_start = at + hdr;
        let suffix = block
            .data
            .get(key_start..key_start + non_shared)
            .ok_or_else(|| block.corruption(at, "key out of range"))?;
        self.key.keep_and_append(shared, suffix);
        self.value_start = key_start + non_shared;
        self.value_len = value_len;
        self.current = at;
        self.next_offset = self.value_start + value_len;
        Ok(())
    }

    fn do_seek(&mut self, target: &[u8], lo: usize, hi: usize) -> Result<()> {
        let n = self.block.restarts.len();
        if self.block.data_end == 0 || n == 0 {
            self.invalidate();
            return Ok(());
        }
        // Largest restart point whose key is < target (or `lo`), searched in [lo, hi].
        let (mut left, mut right) = (lo.min(n - 1), hi.min(n - 1));
        if left > right {
            (left, right) = (0, n - 1);
        }
        while left < right {
            let mid = left + (right - left).div_ceil(2);
            let k = self.block.restart_key(mid)?;
            if compare_internal(k, target) == Ordering::Less {
                left = mid;
            } else {
                right = mid - 1;
            }
        }
        self.seek_to_restart_point(left);
        if self.scan_interval(target)? {
            return Ok(());
        }
        // Past the interval (the last one, or keys out of order): entry by entry, with
        // every restart check.
        while self.parse_next()? {
            if compare_internal(self.key.as_slice(), target) != Ordering::Less {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The linear part of a seek, positioned at a restart point: decodes the entries of
    /// that restart interval (up to the next restart point) until one is `>= target`.
    /// Returns true if it stopped at such an entry; false with the cursor at the last
    /// entry before the next restart point (`next_offset` at that point), or invalid at
    /// the end of the block, for [`BlockIter::parse_next`] to go on.
    ///
    /// A seek decodes ~half an interval per block, so this loop is the hot part of a
    /// point seek: it skips what `parse_next` checks per entry for iteration in either
    /// direction (the restart index cannot change inside the interval) and decodes
    /// one-byte lengths in place.
    #[inline]
    fn scan_interval(&mut self, target: &[u8]) -> Result<bool> {
        let block = &*self.block;
        let start = self.next_offset;
        let limit = block
            .restarts
            .get(self.restart_index + 1)
            .map_or(block.data_end, |&r| r as usize);
        let mut at = start;
        while at < limit {
            let (shared, non_shared, value_len, hdr) = match block.data.get(at..at + 3) {
                Some(&[a, b, c]) if (a | b | c) < 0x80 => (a as usize, b as usize, c as usize, 3),
                _ => block.decode_header(at)?,
            };
            let key_start = at + hdr;
            let value_start = key_start + non_shared;
            let next = value_start + value_len;
            if next > block.data_end {
                return Err(block.corruption(at, "entry extends past the end of the block"));
            }
            if shared > self.key.len() {
                return Err(block.corruption(at, "shared prefix longer than the previous key"));
            }
            if shared != 0 && at == start {
                return Err(block.corruption(at, "restart entry shares a prefix"));
            }
            self.key
                .keep_and_append(shared, &block.data[key_start..value_start]);
            self.current = at;
            self.next_offset = next;
            self.value_start = value_start;
            self.value_len = value_len;
            if compare_internal(self.key.as_slice(), target) != Ordering::Less {
                return Ok(true);
            }
            at = next;
        }
        Ok(false)
    }

    fn do_seek_to_last(&mut self) -> Result<()> {
        let n = self.block.restarts.len();
        self.seek_to_restart_point(n.saturating_sub(1));
        if !self.parse_next()? {
            return Ok(());
        }
        while self.next_offset < self.block.data_end {
            if !self.parse_next()? {
                break;
            }
        }
        Ok(())
    }

    /// The common step of `prev`: to the entry before the current one, if the last
    /// backward scan decoded it (all but the first step back in a restart interval).
    /// Returns false, having changed nothing, otherwise (or if invalid).
    #[inline(always)]
    fn pop_prev(&mut self) -> bool {
        let original = self.current;
        if original >= self.block.data_end {
            return false;
        }
        let Some(e) = self.prev_entries.pop_if(|e| e.next_offset == original) else {
            return false;
        };
        let src = self.prev_keys.get(e.key_start..).unwrap_or_default();
        self.key.set_padded(src, e.key_len);
        self.current = e.offset;
        self.next_offset = e.next_offset;
        self.restart_index = e.restart_index;
        self.value_start = e.value_start;
        self.value_len = e.value_len;
        true
    }

    /// `prev` where [`BlockIter::pop_prev`] does not apply: decodes the restart interval
    /// before the current entry, keeping its entries for the next steps back.
    #[inline(never)]
    fn prev_slow(&mut self) -> Result<()> {
        let r = self.do_prev();
        self.guarded(r)
    }

    fn do_prev(&mut self) -> Result<()> {
        let original = self.current;
        if original >= self.block.data_end {
            return Ok(());
        }
        // Called where `pop_prev` did not apply: the interval before is decoded afresh.
        self.prev_entries.clear();
        self.prev_keys.clear();
        while self.restart_point(self.restart_index) >= original {
            if self.restart_index == 0 {
                self.invalidate();
                return Ok(());
            }
            self.restart_index -= 1;
        }
        self.seek_to_restart_point(self.restart_index);
        loop {
            if !self.parse_next()? {
                return Ok(());
            }
            if self.next_offset == original {
                // The current entry is the one wanted; those before it are kept.
                return Ok(());
            }
            if self.next_offset > original {
                return Err(self
                    .block
                    .corruption(self.current, "entry runs across the next entry's start"));
            }
            let key_start = self.prev_keys.len();
            match self.key.inline_padded() {
                Some(inline) => self.prev_keys.extend_from_slice(inline),
                None => self.prev_keys.extend_from_slice(self.key.as_slice()),
            }
            self.prev_entries.push(PrevEntry {
                offset: self.current,
                next_offset: self.next_offset,
                restart_index: self.restart_index,
                key_start,
                key_len: self.key.len(),
                value_start: self.value_start,
                value_len: self.value_len,
            });
        }
    }

    fn guarded(&mut self, r: Result<()>) -> Result<()> {
        if r.is_err() {
            self.invalidate();
        }
        r
    }
}

impl InternalIterator for BlockIter {
    fn valid(&self) -> bool {
        self.current < self.block.data_end
    }

    fn seek_to_first(&mut self) -> Result<()> {
        self.seek_to_restart_point(0);
        self.parse_next().map(|_| ())
    }

    fn seek_to_last(&mut self) -> Result<()> {
        let r = self.do_seek_to_last();
        self.guarded(r)
    }

    fn seek(&mut self, target: &[u8]) -> Result<()> {
        let r = self.do_seek(target, 0, usize::MAX);
        self.guarded(r)
    }

    #[inline]
    fn next(&mut self) -> Result<()> {
        if !self.valid() {
            return Ok(());
        }
        self.parse_next().map(|_| ())
    }

    #[inline]
    fn prev(&mut self) -> Result<()> {
        if self.pop_prev() {
            return Ok(());
        }
        self.prev_slow()
    }

    #[inline(always)]
    fn key(&self) -> &[u8] {
        self.key.as_slice()
    }

    fn value(&self) -> &[u8] {
        self.block
            .data
            .get(self.value_start..self.value_start + self.value_len)
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::key::{internal_key, seek_key, ValueKind};
    use proptest::prelude::*;

    fn build(entries: &[(Vec<u8>, Vec<u8>)], interval: usize) -> Arc<Block> {
        let mut b = BlockBuilder::new(interval);
        for (k, v) in entries {
            b.add(k, v);
        }
        Arc::new(Block::new(b.finish(), "test.sst", 77).unwrap())
    }

    /// The look-ahead of a scan (`Block::prefetch`, `BlockIter::peek_adjacent_value`):
    /// a block smaller or larger than the prefetched part, both directions; peeking gives
    /// the adjacent entry's value in a block of restart interval 1 and nothing elsewhere.
    #[test]
    fn prefetch_and_peek_adjacent_value() {
        for n in [1, 10, 400] {
            let entries = sample(n, true);
            let b = build(&entries, 1);
            b.prefetch(true);
            b.prefetch(false);
            let mut it = BlockIter::new(b.clone());
            it.seek_to_first().unwrap();
            assert_eq!(it.peek_adjacent_value(false), None);
            for i in 0..n {
                assert_eq!(
                    it.peek_adjacent_value(true),
                    entries.get(i + 1).map(|e| &e.1[..])
                );
                if i > 0 {
                    assert_eq!(it.peek_adjacent_value(false), Some(&entries[i - 1].1[..]));
                }
                it.next().unwrap();
            }
            assert_eq!(it.peek_adjacent_value(true), None);
            // Entries between restart points: no peeking; nor from a restart point whose
            // neighbouring restart point is entries away (interval 4).
            let mut it = BlockIter::new(build(&entries, 4));
            it.seek_to_first().unwrap();
            if n > 1 {
                it.next().unwrap();
                assert_eq!(it.peek_adjacent_value(true), None);
            }
            it.seek_to_first().unwrap();
            assert_eq!(it.peek_adjacent_value(true), None);
            if n > 4 {
                for _ in 0..4 {
                    it.next().unwrap();
                }
                assert_eq!(it.peek_adjacent_value(true), None);
                assert_eq!(it.peek_adjacent_value(false), None);
            }
        }
    }

    fn sample(n: usize, long: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let mut uk = format!("key{:05}", i / 2).into_bytes();
                if long && (i / 2) % 7 == 0 {
                    uk.extend(std::iter::repeat_n(b'x', 5000 + i / 2));
                }
                // Two versions of each user key, newest first.
                let seq = 1000 - (i % 2) as u64;
                let kind = if i % 5 == 0 {
                    ValueKind::Deletion
                } else {
                    ValueKind::Value
                };
                let v = if i % 3 == 0 {
                    Vec::new()
                } else {
                    format!("value{i}").into_bytes()
                };
                (internal_key(&uk, seq, kind), v)
            })
            .collect()
    }

    fn collect_fwd(it: &mut BlockIter) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        it.seek_to_first().unwrap();
        while it.valid() {
            out.push((it.key().to_vec(), it.value().to_vec()));
            it.next().unwrap();
        }
        out
    }

    fn collect_back(it: &mut BlockIter) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        it.seek_to_last().unwrap();
        while it.valid() {
            out.push((it.key().to_vec(), it.value().to_vec()));
            it.prev().unwrap();
        }
        out.reverse();
        out
    }

    #[test]
    fn block_roundtrip_intervals() {
        for interval in [1, 2, 16] {
            for long in [false, true] {
                for n in [1, 2, 15, 16, 17, 100] {
                    let entries = sample(n, long);
                    let block = build(&entries, interval);
                    let mut it = BlockIter::new(block);
                    assert_eq!(collect_fwd(&mut it), entries, "fwd {interval} {n}");
                    assert_eq!(collect_back(&mut it), entries, "back {interval} {n}");
                }
            }
        }
    }

    #[test]
    fn block_seek_and_prev_at_boundaries() {
        for interval in [1, 16] {
            let entries = sample(100, true);
            let block = build(&entries, interval);
            let mut it = BlockIter::new(block);
            for (i, (k, v)) in entries.iter().enumerate() {
                it.seek(k).unwrap();
                assert!(it.valid());
                assert_eq!((it.key(), it.value()), (&k[..], &v[..]));
                // prev from every position, including restart points.
                it.prev().unwrap();
                if i == 0 {
                    assert!(!it.valid());
                    it.seek(k).unwrap();
                } else {
                    assert_eq!(it.key(), &entries[i - 1].0[..]);
                    it.next().unwrap();
                    assert_eq!(it.key(), &k[..]);
                }
                it.next().unwrap();
                if i + 1 == entries.len() {
                    assert!(!it.valid());
                } else {
                    assert_eq!(it.key(), &entries[i + 1].0[..]);
                }
            }
            // Seeks between keys: a user key's seek key at a sequence number above both
            // versions lands on the newest version.
            let uk = crate::key::user_key(&entries[10].0).to_vec();
            it.seek(&seek_key(&uk, 5000)).unwrap();
            assert_eq!(it.key(), &entries[10].0[..]);
            it.seek(&seek_key(&uk, 999)).unwrap();
            assert_eq!(it.key(), &entries[11].0[..]);
            it.seek(&seek_key(b"a", 1)).unwrap();
            assert_eq!(it.key(), &entries[0].0[..]);
            it.seek(&seek_key(b"zzz", 1)).unwrap();
            assert!(!it.valid());
        }
    }

    #[test]
    fn empty_block() {
        let mut b = BlockBuilder::new(16);
        assert!(b.is_empty());
        let block = Arc::new(Block::new(b.finish(), "t", 0).unwrap());
        assert!(block.is_empty());
        let mut it = BlockIter::new(block);
        it.seek_to_first().unwrap();
        assert!(!it.valid());
        it.seek_to_last().unwrap();
        assert!(!it.valid());
        it.seek(b"anything").unwrap();
        assert!(!it.valid());
    }

    #[test]
    fn sampled_seeks_land_where_full_seeks_do() {
        for (n, interval, stride) in [
            (1, 1, 16),
            (40, 1, 16),
            (1000, 1, 16),
            (1000, 3, 2),
            (7, 1, 5),
        ] {
            let entries = sample(n, false);
            let block = build(&entries, interval);
            let sample = RestartSample::new(&block, stride).unwrap();
            let mut targets: Vec<Vec<u8>> = entries.iter().map(|e| e.0.clone()).collect();
            targets.push(Vec::new());
            targets.push(internal_key(b"key", 5, ValueKind::Value));
            targets.push(internal_key(b"key00003", 2000, ValueKind::Value));
            targets.push(internal_key(b"key00003", 0, ValueKind::Deletion));
            targets.push(internal_key(b"zzz", 1, ValueKind::Value));
            let mut full = BlockIter::new(block.clone());
            let mut narrowed = BlockIter::new(block.clone());
            for t in &targets {
                full.seek(t).unwrap();
                let (lo, hi) = sample.narrow(t);
                narrowed.seek_between(t, lo, hi).unwrap();
                assert_eq!(full.valid(), narrowed.valid(), "n {n} target {t:?}");
                if full.valid() {
                    assert_eq!(full.key(), narrowed.key(), "n {n} target {t:?}");
                    assert_eq!(full.value(), narrowed.value());
                }
            }
        }
    }

    #[test]
    fn bad_restart_arrays_rejected() {
        for data in [
            vec![],
            vec![1, 0, 0],
            vec![0, 0, 0, 0],
            vec![5, 0, 0, 0],
            vec![9, 9, 9, 9, 1, 0, 0, 0],
        ] {
            let err = Block::new(data, "bad.sst", 3).unwrap_err();
            assert!(err.is_corruption());
            assert!(err.to_string().contains("bad.sst"));
        }
    }

    /// Found by the `sstable_block` fuzzer: a restart point that falls inside an entry
    /// made a backward scan decode different entries than a forward scan. Both now report
    /// the block as corrupt.
    #[test]
    fn restart_point_inside_an_entry_is_corruption() {
        let entries = sample(6, false);
        let mut b = BlockBuilder::new(3);
        for (k, v) in &entries {
            b.add(k, v);
        }
        let mut data = b.finish();
        // Move the second restart point (entry 3) one byte into entry 3.
        let n = data.len();
        let at = n - 4 - 4;
        let r = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
        data[at..at + 4].copy_from_slice(&(r + 1).to_le_bytes());
        let block = Arc::new(Block::new(data, "bad.sst", 9).unwrap());
        let mut it = BlockIter::new(block.clone());
        let mut forward = Ok(());
        it.seek_to_first().unwrap();
        while it.valid() {
            forward = it.next();
            if forward.is_err() {
                break;
            }
        }
        assert!(forward.unwrap_err().is_corruption());
        let mut it = BlockIter::new(block);
        let backward = it.seek_to_last().and_then(|()| {
            while it.valid() {
                it.prev()?;
            }
            Ok(())
        });
        assert!(backward.unwrap_err().is_corruption());
    }

    #[test]
    fn zig_zag_across_restart_intervals() {
        // Backward steps are served from the decoded interval; mixing in forward steps
        // and seeks must never return a stale entry.
        for interval in [1, 3, 16] {
            let entries = sample(100, false);
            let block = build(&entries, interval);
            let mut it = BlockIter::new(block);
            let mut rng = 0x2545_f491_4f6c_dd1du64;
            it.seek_to_last().unwrap();
            let mut at = entries.len() - 1;
            for _ in 0..5000 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                match rng % 8 {
                    0 => {
                        at = (rng >> 8) as usize % entries.len();
                        it.seek(&entries[at].0).unwrap();
                    }
                    1..=2 if at + 1 < entries.len() => {
                        it.next().unwrap();
                        at += 1;
                    }
                    _ if at > 0 => {
                        it.prev().unwrap();
                        at -= 1;
                    }
                    _ => continue,
                }
                assert!(it.valid());
                assert_eq!(
                    (it.key(), it.value()),
                    (&entries[at].0[..], &entries[at].1[..])
                );
            }
        }
    }

    fn exercise(block: Arc<Block>, targets: &[Vec<u8>]) {
        let mut it = BlockIter::new(block);
        let mut steps = 0;
        if it.seek_to_first().is_ok() {
            while it.valid() && steps < 10_000 {
                let _ = (it.key(), it.value());
                if it.next().is_err() {
                    break;
                }
                steps += 1;
            }
        }
        if it.seek_to_last().is_ok() {
            while it.valid() && steps < 20_000 {
                if it.prev().is_err() {
                    break;
                }
                steps += 1;
            }
        }
        for t in targets {
            if it.seek(t).is_ok() && it.valid() {
                let _ = it.prev();
                let _ = it.next();
            }
        }
    }

    proptest! {
        /// A seek (binary search of the restart points, then the interval scan) lands on
        /// the first entry `>= target`, as a search of the sorted entries says, for
        /// targets present, absent, before and after all keys, with keys of shared
        /// prefixes of any length (long keys leave the inline key buffer) and every
        /// restart interval; and the cursor steps on from there both ways.
        #[test]
        fn seek_lands_on_the_first_entry_at_or_after_target(
            keys in proptest::collection::btree_set(
                proptest::collection::vec(0u8..4, 0..50), 1..120),
            interval in 1usize..20,
            targets in proptest::collection::vec(
                (proptest::collection::vec(0u8..4, 0..50), 0u64..4), 1..40),
        ) {
            let entries: Vec<(Vec<u8>, Vec<u8>)> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| (internal_key(k, 2, ValueKind::Value), i.to_le_bytes().to_vec()))
                .collect();
            let mut it = BlockIter::new(build(&entries, interval));
            for (uk, seq) in &targets {
                let target = seek_key(uk, *seq);
                it.seek(&target).unwrap();
                let want = entries
                    .partition_point(|(k, _)| compare_internal(k, &target) == Ordering::Less);
                match entries.get(want) {
                    Some((k, v)) => {
                        prop_assert!(it.valid());
                        prop_assert_eq!((it.key(), it.value()), (&k[..], &v[..]));
                        it.next().unwrap();
                        prop_assert_eq!(it.valid(), want + 1 < entries.len());
                        if let Some((k, _)) = entries.get(want + 1) {
                            prop_assert_eq!(it.key(), &k[..]);
                        }
                        it.seek(&target).unwrap();
                        it.prev().unwrap();
                        prop_assert_eq!(it.valid(), want > 0);
                        if want > 0 {
                            prop_assert_eq!(it.key(), &entries[want - 1].0[..]);
                        }
                    }
                    None => prop_assert!(!it.valid()),
                }
            }
        }

        /// Keys of every length around the fast paths' limits (suffixes of up to 16 bytes
        /// copied as 16; keys inline up to 40 bytes, on the heap beyond), lengths of one
        /// varint byte or more, any restart interval: random moves agree with the entries.
        #[test]
        fn moves_match_the_entries(
            keys in proptest::collection::btree_set(
                proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), any::<u8>()], 0..70),
                1..120),
            value_lens in proptest::collection::vec(0usize..300, 1..120),
            interval in 1usize..20,
            moves in proptest::collection::vec((0u8..10, any::<usize>()), 1..300),
        ) {
            let mut uks: Vec<Vec<u8>> = keys.into_iter().collect();
            uks.sort();
            let entries: Vec<(Vec<u8>, Vec<u8>)> = uks
                .iter()
                .enumerate()
                .map(|(i, uk)| {
                    let n = value_lens[i % value_lens.len()];
                    (internal_key(uk, 7, ValueKind::Value), vec![i as u8; n])
                })
                .collect();
            let block = build(&entries, interval);
            let mut it = BlockIter::new(block);
            let mut at: Option<usize> = None;
            for (m, r) in moves {
                at = match m {
                    0 => {
                        it.seek_to_first().unwrap();
                        Some(0)
                    }
                    1 => {
                        it.seek_to_last().unwrap();
                        Some(entries.len() - 1)
                    }
                    2 => {
                        let i = r % entries.len();
                        it.seek(&entries[i].0).unwrap();
                        Some(i)
                    }
                    _ if at.is_none() => continue,
                    3..=6 => {
                        it.next().unwrap();
                        at.map(|i| i + 1).filter(|&i| i < entries.len())
                    }
                    _ => {
                        it.prev().unwrap();
                        at.and_then(|i| i.checked_sub(1))
                    }
                };
                match at {
                    Some(i) => {
                        prop_assert!(it.valid());
                        prop_assert_eq!((it.key(), it.value()), (&entries[i].0[..], &entries[i].1[..]));
                    }
                    None => prop_assert!(!it.valid()),
                }
            }
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300),
                                    t in proptest::collection::vec(any::<u8>(), 0..20)) {
            if let Ok(block) = Block::new(data, "fuzz", 0) {
                exercise(Arc::new(block), &[t]);
            }
        }

        #[test]
        fn mutated_blocks_never_panic(interval in 1usize..5,
                                      muts in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
            let entries = sample(40, false);
            let mut b = BlockBuilder::new(interval);
            for (k, v) in &entries {
                b.add(k, v);
            }
            let mut data = b.finish();
            let len = data.len();
            for (pos, byte) in muts {
                data[pos % len] = byte;
            }
            if let Ok(block) = Block::new(data, "fuzz", 0) {
                let targets: Vec<Vec<u8>> = entries.iter().map(|e| e.0.clone()).step_by(7).collect();
                exercise(Arc::new(block), &targets);
            }
        }
    }
}
