//! Leveled compaction: choosing what to compact ([`picker`]) and merging it ([`job`]).
//!
//! L0 holds overlapping tables straight from flushes. Each deeper level holds disjoint
//! tables and is about `level_multiplier` times larger than the one above. A level whose
//! score (L0: table count / trigger; deeper: bytes / target) reaches 1 is compacted into the
//! next: its chosen tables and every overlapping table of the next level are merged, versions
//! that no snapshot can see are dropped, tombstones are dropped where nothing below can hold
//! the key, and the output is cut into tables of about `target_file_size`.

pub mod job;
pub mod picker;

use crate::version::TableHandle;
use std::collections::HashSet;
use std::sync::Arc;

/// One unit of compaction work.
#[derive(Debug, Clone)]
pub struct Compaction {
    /// Level the inputs come from.
    pub level: usize,
    /// Level the outputs go to (`level + 1`).
    pub output_level: usize,
    /// Chosen tables of `level`.
    pub inputs: Vec<Arc<TableHandle>>,
    /// Tables of `output_level` overlapping them.
    pub output_level_inputs: Vec<Arc<TableHandle>>,
    /// Why it was chosen (for logs).
    pub reason: CompactionReason,
}

/// Why a compaction runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionReason {
    /// L0 reached its file-count trigger.
    L0FileCount,
    /// A level exceeded its byte target.
    LevelSize,
    /// `Db::compact_range`.
    Manual,
    /// A table mostly of tombstones over older data below it: pushed down so that the
    /// tombstones and what they delete are dropped, though no level is over its target.
    Tombstones,
    /// Reads used up an L0 table's read allowance ([`read_allowance`]): point reads that
    /// had to look past it, or scans sampled where it overlaps another sorted run. Its
    /// compaction into L1 leaves those reads one sorted run fewer.
    ReadTriggered,
}

/// Bytes rewritten per read charge: a compaction rewriting `b` bytes is allowed after
/// `b / READ_CHARGE_BYTES` charged reads. LevelDB's figure (one seek ~ compacting 16 KiB,
/// there for a disk seek; here a read that consults an extra sorted run: a filter probe,
/// often a block read, and an extra source in every scan's merge).
pub const READ_CHARGE_BYTES: u64 = 16 << 10;

/// No table is compacted by reads before this many charges (LevelDB's minimum).
pub const MIN_READ_ALLOWANCE: i64 = 100;

/// A scan samples the key it returns about once per this many bytes of keys and values
/// returned (jittered: uniform in half to one and a half times it), as LevelDB and Pebble do.
pub const READ_SAMPLE_BYTES: i64 = 1 << 20;

/// Read charges of one scan sample where more than one sorted run covers the key.
pub const SCAN_SAMPLE_CHARGE: i64 = 16;

/// Read charges an L0 table may take before it is compacted, given the bytes its
/// compaction would rewrite (the table plus what it overlaps in L1). Proportional to the
/// rewrite rather than to the table (LevelDB): a small flush over a large L1 must be read
/// past about as many times as L1 has 16 KiB blocks before it is worth rewriting L1, so a
/// read-mostly database with a trickle of writes does not rewrite L1 after every flush.
pub fn read_allowance(rewrite_bytes: u64) -> i64 {
    ((rewrite_bytes / READ_CHARGE_BYTES) as i64).max(MIN_READ_ALLOWANCE)
}

impl Compaction {
    /// True if the input tables can move down a level without being rewritten: nothing in
    /// the output level overlaps their key range and their own key ranges are disjoint.
    /// From L0 that takes every L0 table at once when they are disjoint, as the flushes of
    /// a sequential load are: merging them would rewrite every byte to drop nothing.
    pub fn is_trivial_move(&self) -> bool {
        if self.reason == CompactionReason::Manual
            || self.inputs.is_empty()
            || !self.output_level_inputs.is_empty()
        {
            return false;
        }
        let mut ranges: Vec<_> = self
            .inputs
            .iter()
            .map(|t| (t.smallest_user_key(), t.largest_user_key()))
            .collect();
        ranges.sort_unstable();
        // Strictly below: two versions of one user key must stay in L0's newest-first order.
        ranges.windows(2).all(|w| w[0].1 < w[1].0)
    }

    /// Numbers of all input tables.
    pub fn input_numbers(&self) -> impl Iterator<Item = u64> + '_ {
        self.inputs
            .iter()
            .chain(&self.output_level_inputs)
            .map(|t| t.meta.number)
    }

    /// The user-key range its outputs can cover in `output_level`.
    pub fn output_range(&self) -> Option<(&[u8], &[u8])> {
        let all = || self.inputs.iter().chain(&self.output_level_inputs);
        let lo = all().map(|t| t.smallest_user_key()).min()?;
        let hi = all().map(|t| t.largest_user_key()).max()?;
        Some((lo, hi))
    }

    /// Bytes of all input tables.
    pub fn input_bytes(&self) -> u64 {
        self.inputs
            .iter()
            .chain(&self.output_level_inputs)
            .map(|t| t.meta.file_size)
            .sum()
    }
}

/// What running compactions (and range-delete table drops) hold: their input tables, and
/// the key range each one writes into its output level. Two compactions may run at once
/// only if they share no table and their outputs cannot overlap in a level, which keeps
/// every level below L0 made of disjoint tables.
#[derive(Debug, Default)]
pub struct BusySet {
    tables: HashSet<u64>,
    outputs: Vec<(usize, Vec<u8>, Vec<u8>)>,
}

impl BusySet {
    /// True if table `number` is held.
    pub fn holds_table(&self, number: u64) -> bool {
        self.tables.contains(&number)
    }

    /// True if `c` shares a table with, or writes a key range overlapping that of, a
    /// running compaction.
    pub fn conflicts(&self, c: &Compaction) -> bool {
        if c.input_numbers().any(|n| self.tables.contains(&n)) {
            return true;
        }
        let Some((lo, hi)) = c.output_range() else {
            return false;
        };
        self.outputs.iter().any(|(level, l, h)| {
            *level == c.output_level && l.as_slice() <= hi && lo <= h.as_slice()
        })
    }

    /// Marks `c` as running.
    pub fn add(&mut self, c: &Compaction) {
        self.tables.extend(c.input_numbers());
        if let Some((lo, hi)) = c.output_range() {
            self.outputs
                .push((c.output_level, lo.to_vec(), hi.to_vec()));
        }
    }

    /// Marks `c` as finished.
    pub fn remove(&mut self, c: &Compaction) {
        for n in c.input_numbers() {
            self.tables.remove(&n);
        }
        if let Some((lo, hi)) = c.output_range() {
            if let Some(i) = self.outputs.iter().position(|(l, a, b)| {
                *l == c.output_level && a.as_slice() == lo && b.as_slice() == hi
            }) {
                self.outputs.swap_remove(i);
            }
        }
    }

    /// Holds tables that are not part of a compaction (a range delete dropping them).
    pub fn hold_tables(&mut self, numbers: &[u64]) {
        self.tables.extend(numbers.iter().copied());
    }

    /// Releases what [`BusySet::hold_tables`] held.
    pub fn release_tables(&mut self, numbers: &[u64]) {
        for n in numbers {
            self.tables.remove(n);
        }
    }
}
