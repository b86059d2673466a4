//! Postings: the inverted index from label pairs to series, and query planning over it.
//!
//! A **postings list** is the sorted, deduplicated list of the [`SeriesRef`]s of the series
//! that have one `name="value"` pair. Lists are plain sorted slices; [`intersect`],
//! [`merge`] and [`subtract`] combine them, galloping (exponential search) through the
//! longer side so that a small list against a huge one costs `O(small · log huge)`.
//!
//! [`MemPostings`] is the in-memory index of the head: `(name, value) -> list`, plus the
//! list of all series ([`ALL_POSTINGS_KEY`]). Lists are shared copy-on-write
//! ([`PostingsList`] is an `Arc`): a reader clones the `Arc` under a short read lock and
//! keeps a consistent snapshot of that list while writers go on.
//!
//! [`select`] answers a set of [`Matcher`]s with Prometheus semantics (a missing label is the
//! empty value) from any [`PostingsIndex`], without ever looking at a series' labels:
//!
//! * each matcher that does **not** match the empty string selects the union of the lists of
//!   the values it matches (looked up directly for `=` and literal-set regexes, otherwise by
//!   testing the matcher against the label's *values*, never per series); these unions are
//!   intersected, smallest first;
//! * each matcher that **does** match the empty string (`=""`, `!="x"`, `=~"|x"`, `!~"x"`,
//!   `=~".*"`) selects every series except those whose value for the label it rejects, so
//!   the union of the lists of the rejected values is subtracted;
//! * if every matcher matches the empty string, the base is the list of all series.
//!
//! ```
//! use strata_tsdb::labels::Labels;
//! use strata_tsdb::matcher::{MatchOp, Matcher};
//! use strata_tsdb::postings::{select, MemPostings};
//!
//! let index = MemPostings::new();
//! index.add(1, &Labels::from_pairs([("job", "node"), ("zone", "eu")])?);
//! index.add(2, &Labels::from_pairs([("job", "node")])?);
//! index.add(3, &Labels::from_pairs([("job", "api"), ("zone", "us")])?);
//!
//! let q = [Matcher::equal("job", "node"), Matcher::new(MatchOp::NotEqual, "zone", "eu")?];
//! assert_eq!(select(&index, &q), vec![2]);
//! let q = [Matcher::new(MatchOp::RegexMatch, "zone", "|us")?];
//! assert_eq!(select(&index, &q), vec![2, 3]);
//! assert_eq!(index.label_values("zone"), vec!["eu", "us"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::labels::Labels;
use crate::matcher::{MatchOp, Matcher};

/// The reference of a series in the head or a block.
pub type SeriesRef = u64;

/// A shared, immutable snapshot of one postings list: sorted, without duplicates.
pub type PostingsList = Arc<Vec<SeriesRef>>;

/// The `(name, value)` key of the list of all series. No label has an empty name or value,
/// so it collides with no real pair.
pub const ALL_POSTINGS_KEY: (&str, &str) = ("", "");

// ---------------------------------------------------------------------------------------
// Set operations on sorted, deduplicated slices.
// ---------------------------------------------------------------------------------------

/// The first index `i >= from` with `list[i] >= target` (or `list.len()`), by galloping
/// from `from`: `O(log d)` where `d` is the distance moved. This is a cursor's `seek`.
pub fn seek(list: &[SeriesRef], from: usize, target: SeriesRef) -> usize {
    let n = list.len();
    if from >= n || list[from] >= target {
        return from.min(n);
    }
    // Invariant: list[lo] < target; find hi with list[hi] >= target (or hi = n).
    let mut lo = from;
    let mut step = 1;
    let mut hi = from + 1;
    while hi < n && list[hi] < target {
        lo = hi;
        step *= 2;
        hi = lo + step;
    }
    let hi = hi.min(n);
    // list[lo] < target <= list[hi] (hi may be n): binary search in (lo, hi].
    lo + 1 + list[lo + 1..hi].partition_point(|&r| r < target)
}

/// The series in every list. Lists are processed smallest first: the candidates come from
/// the smallest list and are looked up (galloping) in the larger ones. No lists: empty.
pub fn intersect(lists: &[&[SeriesRef]]) -> Vec<SeriesRef> {
    let mut order: Vec<&[SeriesRef]> = lists.to_vec();
    order.sort_by_key(|l| l.len());
    let Some((first, rest)) = order.split_first() else {
        return Vec::new();
    };
    let mut out: Vec<SeriesRef> = first.to_vec();
    for other in rest {
        if out.is_empty() {
            break;
        }
        intersect_in_place(&mut out, other);
    }
    out
}

/// Keeps in `acc` only the refs also in `other` (both sorted; `acc` is the smaller).
fn intersect_in_place(acc: &mut Vec<SeriesRef>, other: &[SeriesRef]) {
    let mut pos = 0;
    acc.retain(|&r| {
        pos = seek(other, pos, r);
        pos < other.len() && other[pos] == r
    });
}

/// The series in `a` and not in `b` (Prometheus' `Without`).
pub fn subtract(a: &[SeriesRef], b: &[SeriesRef]) -> Vec<SeriesRef> {
    if b.is_empty() {
        return a.to_vec();
    }
    let mut out = Vec::with_capacity(a.len());
    let mut pos = 0;
    for &r in a {
        pos = seek(b, pos, r);
        if pos == b.len() || b[pos] != r {
            out.push(r);
        }
    }
    out
}

/// True if the sorted lists share a ref.
fn overlaps(a: &[SeriesRef], b: &[SeriesRef]) -> bool {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut pos = 0;
    small.iter().any(|&r| {
        pos = seek(large, pos, r);
        pos < large.len() && large[pos] == r
    })
}

/// The union of the lists, sorted and deduplicated: a k-way merge over a min-heap of the
/// lists' heads (two lists: a plain two-way merge).
pub fn merge(lists: &[&[SeriesRef]]) -> Vec<SeriesRef> {
    let lists: Vec<&[SeriesRef]> = lists.iter().copied().filter(|l| !l.is_empty()).collect();
    match lists.as_slice() {
        [] => Vec::new(),
        [one] => one.to_vec(),
        [a, b] => merge2(a, b),
        _ => {
            let total: usize = lists.iter().map(|l| l.len()).sum();
            let mut out = Vec::with_capacity(total);
            // (head value, list index, position of the head)
            let mut heap: BinaryHeap<Reverse<(SeriesRef, usize, usize)>> = lists
                .iter()
                .enumerate()
                .map(|(i, l)| Reverse((l[0], i, 0)))
                .collect();
            while let Some(Reverse((r, i, p))) = heap.pop() {
                if out.last() != Some(&r) {
                    out.push(r);
                }
                if let Some(&next) = lists[i].get(p + 1) {
                    heap.push(Reverse((next, i, p + 1)));
                }
            }
            out
        }
    }
}

fn merge2(a: &[SeriesRef], b: &[SeriesRef]) -> Vec<SeriesRef> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Inserts `r` into the sorted list, keeping it sorted and unique; appending (the usual
/// case, refs grow) is `O(1)`.
fn insert_sorted(list: &mut Vec<SeriesRef>, r: SeriesRef) {
    match list.last() {
        None => list.push(r),
        Some(&last) if last < r => list.push(r),
        Some(_) => {
            if let Err(i) = list.binary_search(&r) {
                list.insert(i, r);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The index abstraction and the in-memory index.
// ---------------------------------------------------------------------------------------

/// What [`select`] needs from an inverted index (the head's [`MemPostings`], later the
/// persisted index of a block).
pub trait PostingsIndex {
    /// The list of all series.
    fn all_postings(&self) -> PostingsList;

    /// The list of `name="value"`, `None` if no series has that pair.
    fn postings(&self, name: &str, value: &str) -> Option<PostingsList>;

    /// The lists of the values of label `name` for which `pred` is true; `pred` is called
    /// once per distinct value of the label.
    fn postings_for_values(
        &self,
        name: &str,
        pred: &mut dyn FnMut(&str) -> bool,
    ) -> Vec<PostingsList>;
}

#[derive(Debug, Default)]
struct Inner {
    all: PostingsList,
    /// name -> value -> list. Values in a `BTreeMap`, so they come out sorted.
    by_name: HashMap<String, BTreeMap<String, PostingsList>>,
}

/// The in-memory inverted index of the head: `(name, value) -> sorted series refs`, and the
/// list of all series. Thread-safe (`RwLock`); readers get `Arc` snapshots of lists, and a
/// writer copies a list only while a reader still holds its snapshot.
///
/// Each method locks once, so a [`select`] over it sees every list at some point during
/// the query; series added meanwhile may or may not be returned, as in Prometheus.
#[derive(Debug, Default)]
pub struct MemPostings {
    inner: RwLock<Inner>,
}

impl MemPostings {
    /// An empty index.
    pub fn new() -> Self {
        MemPostings::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock leaves every list sorted (each mutation is one
        // `Vec` operation), so a poisoned lock is still usable.
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds series `r` with labels `labels` to the list of each of its pairs and to the list
    /// of all series. Refs usually come in increasing order (appends); any order is fine, and
    /// adding a pair twice is a no-op.
    pub fn add(&self, r: SeriesRef, labels: &Labels) {
        let mut inner = self.write();
        insert_sorted(Arc::make_mut(&mut inner.all), r);
        for l in labels {
            let values = match inner.by_name.get_mut(l.name.as_str()) {
                Some(values) => values,
                None => inner.by_name.entry(l.name.clone()).or_default(),
            };
            match values.get_mut(l.value.as_str()) {
                Some(list) => insert_sorted(Arc::make_mut(list), r),
                None => {
                    values.insert(l.value.clone(), Arc::new(vec![r]));
                }
            }
        }
    }

    /// Removes the series `refs` (any order, duplicates allowed) from every list, dropping
    /// lists, values and names left empty. Scans every list; [`MemPostings::delete_with_labels`]
    /// touches only the lists of the given label sets.
    pub fn delete(&self, refs: &[SeriesRef]) {
        let dead = sorted_unique(refs);
        if dead.is_empty() {
            return;
        }
        let mut inner = self.write();
        remove_refs(&mut inner.all, &dead);
        inner.by_name.retain(|_, values| {
            values.retain(|_, list| {
                remove_refs(list, &dead);
                !list.is_empty()
            });
            !values.is_empty()
        });
    }

    /// Removes the series `(ref, labels)` (the labels they were added with) from the lists
    /// of their pairs and from the list of all series, like [`MemPostings::delete`] but
    /// touching only the affected lists.
    pub fn delete_with_labels<'a>(
        &self,
        series: impl IntoIterator<Item = (SeriesRef, &'a Labels)>,
    ) {
        let series: Vec<(SeriesRef, &Labels)> = series.into_iter().collect();
        let dead = sorted_unique(&series.iter().map(|(r, _)| *r).collect::<Vec<_>>());
        if dead.is_empty() {
            return;
        }
        let mut inner = self.write();
        remove_refs(&mut inner.all, &dead);
        for (_, labels) in &series {
            for l in *labels {
                let Some(values) = inner.by_name.get_mut(l.name.as_str()) else {
                    continue;
                };
                if let Some(list) = values.get_mut(l.value.as_str()) {
                    remove_refs(list, &dead);
                    if list.is_empty() {
                        values.remove(l.value.as_str());
                    }
                }
                if values.is_empty() {
                    inner.by_name.remove(l.name.as_str());
                }
            }
        }
    }

    /// The label names of the indexed series, sorted.
    pub fn label_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().by_name.keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// The values of label `name` among the indexed series, sorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        self.read()
            .by_name
            .get(name)
            .map(|values| values.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of indexed series.
    pub fn num_series(&self) -> usize {
        self.read().all.len()
    }

    /// Snapshot of the list of all series.
    pub fn all(&self) -> PostingsList {
        Arc::clone(&self.read().all)
    }

    /// Snapshot of the list of `name="value"` (the empty list if none).
    /// [`ALL_POSTINGS_KEY`] gives the list of all series.
    pub fn get(&self, name: &str, value: &str) -> PostingsList {
        self.postings(name, value).unwrap_or_default()
    }
}

fn sorted_unique(refs: &[SeriesRef]) -> Vec<SeriesRef> {
    let mut v = refs.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// Removes the (sorted) `dead` refs from `list`, copying it only if it holds one.
fn remove_refs(list: &mut PostingsList, dead: &[SeriesRef]) {
    if overlaps(list, dead) {
        let mut pos = 0;
        Arc::make_mut(list).retain(|&r| {
            pos = seek(dead, pos, r);
            pos == dead.len() || dead[pos] != r
        });
    }
}

impl PostingsIndex for MemPostings {
    fn all_postings(&self) -> PostingsList {
        self.all()
    }

    fn postings(&self, name: &str, value: &str) -> Option<PostingsList> {
        let inner = self.read();
        if (name, value) == ALL_POSTINGS_KEY {
            return Some(Arc::clone(&inner.all));
        }
        inner.by_name.get(name)?.get(value).cloned()
    }

    fn postings_for_values(
        &self,
        name: &str,
        pred: &mut dyn FnMut(&str) -> bool,
    ) -> Vec<PostingsList> {
        let inner = self.read();
        let Some(values) = inner.by_name.get(name) else {
            return Vec::new();
        };
        values
            .iter()
            .filter(|(v, _)| pred(v))
            .map(|(_, list)| Arc::clone(list))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Query planning.
// ---------------------------------------------------------------------------------------

/// The union of the lists of the values of label `name` for which `pred` holds. When
/// `known` is given, it holds exactly the (non-empty) values `pred` accepts, which are
/// looked up directly instead of testing every value of the label.
fn union_of_values<I: PostingsIndex + ?Sized>(
    index: &I,
    name: &str,
    known: Option<&[String]>,
    pred: &mut dyn FnMut(&str) -> bool,
) -> Vec<SeriesRef> {
    let lists: Vec<PostingsList> = match known {
        Some(values) => values
            .iter()
            .filter(|v| !v.is_empty())
            .filter_map(|v| index.postings(name, v))
            .collect(),
        None => index.postings_for_values(name, pred),
    };
    let slices: Vec<&[SeriesRef]> = lists.iter().map(|l| l.as_slice()).collect();
    merge(&slices)
}

/// The series selected by `m` among those with the label: for a matcher that does not match
/// the empty string, exactly the series it selects.
fn matching_postings<I: PostingsIndex + ?Sized>(index: &I, m: &Matcher) -> Vec<SeriesRef> {
    let one = [m.value().to_string()];
    let known: Option<&[String]> = match m.op() {
        MatchOp::Equal => Some(&one),
        MatchOp::RegexMatch => m.set_matches(),
        MatchOp::NotEqual | MatchOp::RegexNoMatch => None,
    };
    union_of_values(index, m.name(), known, &mut |v| m.matches(Some(v)))
}

/// The series that have `m`'s label with a value `m` rejects: for a matcher that matches
/// the empty string, exactly the series it does *not* select.
fn rejected_postings<I: PostingsIndex + ?Sized>(index: &I, m: &Matcher) -> Vec<SeriesRef> {
    let one = [m.value().to_string()];
    let known: Option<&[String]> = match m.op() {
        MatchOp::NotEqual => Some(&one),
        MatchOp::RegexNoMatch => m.set_matches(),
        MatchOp::Equal | MatchOp::RegexMatch => None,
    };
    union_of_values(index, m.name(), known, &mut |v| !m.matches(Some(v)))
}

/// The series selected by all `matchers` (sorted refs), with Prometheus semantics: a missing
/// label is the empty value. See the [module docs](self) for the plan. An empty `matchers`
/// selects every series (rejecting selectors that match everything is the query layer's job).
pub fn select<I: PostingsIndex + ?Sized>(index: &I, matchers: &[Matcher]) -> Vec<SeriesRef> {
    let (subtracting, intersecting): (Vec<&Matcher>, Vec<&Matcher>) =
        matchers.iter().partition(|m| m.matches_empty());

    // Intersecting matchers first: they give the (smaller) base of the subtraction.
    let mut result = if intersecting.is_empty() {
        index.all_postings().as_ref().clone()
    } else {
        let mut unions: Vec<Vec<SeriesRef>> = Vec::with_capacity(intersecting.len());
        for m in intersecting {
            let u = matching_postings(index, m);
            if u.is_empty() {
                return Vec::new();
            }
            unions.push(u);
        }
        let slices: Vec<&[SeriesRef]> = unions.iter().map(Vec::as_slice).collect();
        intersect(&slices)
    };

    for m in subtracting {
        if result.is_empty() {
            break;
        }
        let rejected = rejected_postings(index, m);
        if !rejected.is_empty() {
            result = subtract(&result, &rejected);
        }
    }
    result
}

#[cfg(test)]
mod tests;
