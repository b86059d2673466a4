//! The persisted inverted index of a time partition, read from `strata-kv`.
//!
//! Each flush that adds series to a partition writes one postings *fragment* per label
//! pair (`'P' part 'x' name value seq`, see [`crate::keys`]); a list is the union of its
//! fragments. Partition compaction merges the fragments into one. Values of a label are
//! the distinct `value`s under `'P' part 'x' name`, so a regex is tested once per value,
//! never per series.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use strata_kv::Snapshot;

use crate::error::{show_key, Error, Result};
use crate::keys;
use crate::labels::Labels;
use crate::postings::{merge, PostingsIndex, PostingsList, SeriesRef, ALL_POSTINGS_KEY};

/// [`PostingsIndex`] over one partition of a snapshot. The trait's methods cannot fail, so
/// the first error is kept and reported by [`PartitionIndex::take_error`].
pub(crate) struct PartitionIndex<'a> {
    snap: &'a Snapshot,
    part: i64,
    error: RefCell<Option<Error>>,
}

impl<'a> PartitionIndex<'a> {
    pub fn new(snap: &'a Snapshot, part: i64) -> Self {
        PartitionIndex {
            snap,
            part,
            error: RefCell::new(None),
        }
    }

    fn keep(&self, e: Error) {
        let mut slot = self.error.borrow_mut();
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    /// The first error met by a [`PostingsIndex`] method, if any.
    pub fn take_error(&self) -> Result<()> {
        match self.error.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The union of the fragments under `prefix`.
    fn list(&self, prefix: &[u8]) -> Result<Vec<SeriesRef>> {
        let mut frags = Vec::new();
        for item in self.snap.prefix(prefix) {
            let (k, v) = item?;
            frags.push(decode_fragment(&k, &v)?);
        }
        Ok(match frags.len() {
            0 => Vec::new(),
            1 => frags.pop().unwrap_or_default(),
            _ => {
                let slices: Vec<&[SeriesRef]> = frags.iter().map(Vec::as_slice).collect();
                merge(&slices)
            }
        })
    }

    /// Every value of label `name` with its list.
    pub fn values_with_lists(&self, name: &str) -> Result<BTreeMap<String, Vec<SeriesRef>>> {
        let mut out: BTreeMap<String, Vec<Vec<SeriesRef>>> = BTreeMap::new();
        for item in self
            .snap
            .prefix(keys::postings_name_prefix(self.part, name))
        {
            let (k, v) = item?;
            let (n, value) = keys::parse_postings_key(&k).ok_or_else(|| bad_key(&k))?;
            if n != name {
                return Err(bad_key(&k));
            }
            out.entry(value).or_default().push(decode_fragment(&k, &v)?);
        }
        Ok(out
            .into_iter()
            .map(|(v, frags)| {
                let slices: Vec<&[SeriesRef]> = frags.iter().map(Vec::as_slice).collect();
                (v, merge(&slices))
            })
            .collect())
    }

    /// Every value of label `name`, sorted, from the keys alone (no list is decoded, no
    /// value copied): one allocation per distinct value, for the answer itself.
    /// Reads at most `budget` keys (decremented by the keys read); `None` once it runs out.
    pub fn label_values_within(
        &self,
        name: &str,
        budget: &mut usize,
    ) -> Result<Option<Vec<String>>> {
        let prefix = keys::postings_name_prefix(self.part, name);
        let mut out: Vec<String> = Vec::new();
        // The escaped value of the previous key: a value's fragments are adjacent.
        let mut last: Vec<u8> = Vec::new();
        let mut it = self.snap.iter();
        it.seek(&prefix)?;
        while it.valid() && it.key().starts_with(&prefix) {
            if *budget == 0 {
                return Ok(None);
            }
            *budget -= 1;
            let k = it.key();
            // `prefix` ends with the escaped name: the rest is esc(value) and the sequence.
            let escaped = k
                .get(prefix.len()..k.len().saturating_sub(8))
                .filter(|e| !e.is_empty())
                .ok_or_else(|| bad_key(k))?;
            if out.is_empty() || escaped != last.as_slice() {
                let value = keys::parse_escaped_str(escaped).ok_or_else(|| bad_key(k))?;
                last.clear();
                last.extend_from_slice(escaped);
                out.push(value);
            }
            it.next()?;
        }
        Ok(Some(out))
    }

    /// Every label name of the partition, sorted (skipping the all-series key).
    pub fn label_names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut it = self.snap.iter();
        let prefix = keys::sub_prefix(self.part, keys::POSTINGS);
        it.seek(&prefix)?;
        while it.valid() && it.key().starts_with(&prefix) {
            let k = it.key().to_vec();
            let (name, _) = keys::parse_postings_key(&k).ok_or_else(|| bad_key(&k))?;
            // Jump over the rest of this name's keys.
            it.seek(&keys::prefix_end(&keys::postings_name_prefix(
                self.part, &name,
            )))?;
            if !name.is_empty() {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// The labels of series `r`, `None` if the partition has none (deleted).
    pub fn labels(&self, r: SeriesRef) -> Result<Option<Labels>> {
        let key = keys::series_key(self.part, r);
        match self.snap.get(&key)? {
            None => Ok(None),
            Some(v) => decode_labels(&key, &v).map(Some),
        }
    }
}

/// The labels a series key `key` holds as `value`; undecodable ones are corruption naming
/// the key.
pub(crate) fn decode_labels(key: &[u8], value: &[u8]) -> Result<Labels> {
    Labels::decode(value).map_err(|e| Error::Corruption {
        location: format!("key {}", show_key(key)),
        offset: 0,
        reason: e.to_string(),
    })
}

fn bad_key(k: &[u8]) -> Error {
    Error::Corruption {
        location: format!("key {}", show_key(k)),
        offset: 0,
        reason: "malformed postings key".to_string(),
    }
}

fn decode_fragment(k: &[u8], v: &[u8]) -> Result<Vec<SeriesRef>> {
    keys::decode_postings(v).map_err(|at| Error::Corruption {
        location: format!("key {}", show_key(k)),
        offset: at as u64,
        reason: "malformed postings list".to_string(),
    })
}

impl PostingsIndex for PartitionIndex<'_> {
    fn all_postings(&self) -> PostingsList {
        let (n, v) = ALL_POSTINGS_KEY;
        self.postings(n, v).unwrap_or_default()
    }

    fn postings(&self, name: &str, value: &str) -> Option<PostingsList> {
        match self.list(&keys::postings_prefix(self.part, name, value)) {
            Ok(l) if l.is_empty() => None,
            Ok(l) => Some(Arc::new(l)),
            Err(e) => {
                self.keep(e);
                None
            }
        }
    }

    fn postings_for_values(
        &self,
        name: &str,
        pred: &mut dyn FnMut(&str) -> bool,
    ) -> Vec<PostingsList> {
        match self.values_with_lists(name) {
            Ok(m) => m
                .into_iter()
                .filter(|(v, _)| pred(v))
                .map(|(_, l)| Arc::new(l))
                .collect(),
            Err(e) => {
                self.keep(e);
                Vec::new()
            }
        }
    }
}
