//! The head: the recent samples of active series, in memory, and their inverted index.
//!
//! Each [`MemSeries`] appends in-order samples to an open Gorilla chunk
//! ([`XorAppender`]); a chunk is closed when it holds [`crate::Options::max_chunk_samples`]
//! samples or the next sample falls in another time partition, so no chunk spans two
//! partitions. A sample at or before the series' last timestamp (out of order, or a
//! duplicate timestamp) goes to a sorted per-series buffer where the last write for a
//! timestamp wins; queries merge it over the chunks, and a flush persists it as its own
//! chunk that outranks older data.
//!
//! A flush (see `db.rs`) persists the closed chunks and removes them; series that received
//! nothing for two flushes leave the head, so series churn does not grow memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use crate::chunk::{XorAppender, XorChunk};
use crate::labels::Labels;
use crate::postings::{MemPostings, SeriesRef};

/// A closed chunk waiting to be persisted.
#[derive(Debug, Clone)]
pub(crate) struct HeadChunk {
    pub part: i64,
    pub mint: i64,
    pub maxt: i64,
    /// Holds out-of-order samples: outranks in-order chunks of the same flush.
    pub ooo: bool,
    pub chunk: XorChunk,
}

/// The chunk being appended to.
#[derive(Debug)]
pub(crate) struct OpenChunk {
    pub part: i64,
    pub mint: i64,
    pub maxt: i64,
    pub app: XorAppender,
}

/// Where a sample went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Appended {
    InOrder,
    OutOfOrder,
}

/// One series in the head.
#[derive(Debug)]
pub(crate) struct MemSeries {
    pub labels: Labels,
    pub r: SeriesRef,
    pub closed: Vec<HeadChunk>,
    pub open: Option<OpenChunk>,
    /// The last in-order timestamp (`i64::MIN` before the first sample).
    pub last_t: i64,
    /// Out-of-order and duplicate samples, newest write per timestamp.
    pub ooo: BTreeMap<i64, f64>,
    /// Samples appended since the last flush.
    pub dirty: bool,
    /// Flushes in a row that found the series without new samples.
    pub idle_flushes: u32,
    /// Partitions where the series' labels and postings are already persisted.
    pub persisted_parts: Vec<i64>,
}

impl MemSeries {
    pub fn new(r: SeriesRef, labels: Labels) -> Self {
        MemSeries {
            labels,
            r,
            closed: Vec::new(),
            open: None,
            last_t: i64::MIN,
            ooo: BTreeMap::new(),
            dirty: false,
            idle_flushes: 0,
            persisted_parts: Vec::new(),
        }
    }

    /// Appends a sample: in order into the open chunk, otherwise into the out-of-order
    /// buffer.
    pub fn append(&mut self, t: i64, v: f64, part_ms: i64, max_samples: usize) -> Appended {
        self.dirty = true;
        if t <= self.last_t {
            self.ooo.insert(t, v);
            return Appended::OutOfOrder;
        }
        let part = t.div_euclid(part_ms);
        if let Some(open) = &self.open {
            if open.part != part || open.app.chunk().num_samples() >= max_samples {
                self.close_open();
            }
        }
        let open = self.open.get_or_insert_with(|| OpenChunk {
            part,
            mint: t,
            maxt: t,
            app: XorAppender::new(),
        });
        if open.app.append(t, v).is_err() {
            // Full at the encoding's hard limit: start another chunk.
            self.close_open();
            let mut app = XorAppender::new();
            // A fresh appender always has room.
            let _ = app.append(t, v);
            self.open = Some(OpenChunk {
                part,
                mint: t,
                maxt: t,
                app,
            });
        } else {
            open.maxt = t;
        }
        self.last_t = t;
        Appended::InOrder
    }

    /// Moves the open chunk (if any) to the closed list.
    pub fn close_open(&mut self) {
        if let Some(open) = self.open.take() {
            if open.app.chunk().num_samples() > 0 {
                self.closed.push(HeadChunk {
                    part: open.part,
                    mint: open.mint,
                    maxt: open.maxt,
                    ooo: false,
                    chunk: open.app.into_chunk(),
                });
            }
        }
    }

    /// Moves the out-of-order buffer to closed chunks, one per partition.
    pub fn close_ooo(&mut self, part_ms: i64) {
        let ooo = std::mem::take(&mut self.ooo);
        let mut cur: Option<(i64, i64, i64, XorAppender)> = None;
        for (t, v) in ooo {
            let part = t.div_euclid(part_ms);
            if let Some((p, ..)) = &cur {
                if *p != part {
                    self.push_ooo(cur.take());
                }
            }
            let c = cur.get_or_insert_with(|| (part, t, t, XorAppender::new()));
            if c.3.append(t, v).is_err() {
                let mint = t;
                self.push_ooo(cur.take());
                let mut app = XorAppender::new();
                let _ = app.append(t, v);
                cur = Some((part, mint, t, app));
            }
            if let Some(c) = &mut cur {
                c.2 = t;
            }
        }
        self.push_ooo(cur);
    }

    fn push_ooo(&mut self, c: Option<(i64, i64, i64, XorAppender)>) {
        if let Some((part, mint, maxt, app)) = c {
            self.closed.push(HeadChunk {
                part,
                mint,
                maxt,
                ooo: true,
                chunk: app.into_chunk(),
            });
        }
    }

    /// Samples held (closed, open and out-of-order).
    pub fn num_samples(&self) -> usize {
        self.closed
            .iter()
            .map(|c| c.chunk.num_samples())
            .sum::<usize>()
            + self
                .open
                .as_ref()
                .map_or(0, |o| o.app.chunk().num_samples())
            + self.ooo.len()
    }

    /// Approximate heap bytes of the series.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .labels
                .iter()
                .map(|l| l.name.len() + l.value.len() + 48)
                .sum::<usize>()
            + self
                .closed
                .iter()
                .map(|c| c.chunk.bytes().len() + std::mem::size_of::<HeadChunk>())
                .sum::<usize>()
            + self
                .open
                .as_ref()
                .map_or(0, |o| o.app.chunk().bytes().len() + 64)
            + self.ooo.len() * 40
            + self.persisted_parts.len() * 8
    }
}

/// The series of the head and their index.
#[derive(Debug, Default)]
pub(crate) struct Head {
    map: RwLock<SeriesMap>,
    pub postings: MemPostings,
}

#[derive(Debug, Default)]
struct SeriesMap {
    by_ref: HashMap<SeriesRef, Arc<Mutex<MemSeries>>>,
    by_hash: HashMap<u64, Vec<SeriesRef>>,
}

/// Locks a series, ignoring poisoning: a panic elsewhere leaves a series whose fields are
/// each valid.
pub(crate) fn lock(s: &Mutex<MemSeries>) -> MutexGuard<'_, MemSeries> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Head {
    pub fn get(&self, r: SeriesRef) -> Option<Arc<Mutex<MemSeries>>> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        map.by_ref.get(&r).cloned()
    }

    /// The series with exactly these labels.
    pub fn find(&self, labels: &Labels, hash: u64) -> Option<(SeriesRef, Arc<Mutex<MemSeries>>)> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        for r in map.by_hash.get(&hash)? {
            if let Some(s) = map.by_ref.get(r) {
                if lock(s).labels == *labels {
                    return Some((*r, Arc::clone(s)));
                }
            }
        }
        None
    }

    /// Adds a series under `r`; a series with the same ref is kept (WAL replay sees
    /// checkpointed series again).
    pub fn insert(&self, r: SeriesRef, labels: Labels, hash: u64) -> Arc<Mutex<MemSeries>> {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = map.by_ref.get(&r) {
            return Arc::clone(s);
        }
        self.postings.add(r, &labels);
        let s = Arc::new(Mutex::new(MemSeries::new(r, labels)));
        map.by_ref.insert(r, Arc::clone(&s));
        map.by_hash.entry(hash).or_default().push(r);
        s
    }

    /// Removes series (already persisted and idle).
    pub fn remove(&self, gone: &[(SeriesRef, Labels)]) {
        if gone.is_empty() {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        for (r, labels) in gone {
            map.by_ref.remove(r);
            let h = labels.stable_hash();
            if let Some(refs) = map.by_hash.get_mut(&h) {
                refs.retain(|x| x != r);
                if refs.is_empty() {
                    map.by_hash.remove(&h);
                }
            }
        }
        drop(map);
        self.postings
            .delete_with_labels(gone.iter().map(|(r, l)| (*r, l)));
    }

    /// Every series, in ref order.
    pub fn all(&self) -> Vec<Arc<Mutex<MemSeries>>> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<(SeriesRef, Arc<Mutex<MemSeries>>)> = map
            .by_ref
            .iter()
            .map(|(r, s)| (*r, Arc::clone(s)))
            .collect();
        v.sort_unstable_by_key(|(r, _)| *r);
        v.into_iter().map(|(_, s)| s).collect()
    }

    pub fn num_series(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_ref
            .len()
    }
}
