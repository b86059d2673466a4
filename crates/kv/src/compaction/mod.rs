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
}

impl Compaction {
    /// True if the one input table can move down a level without being rewritten: nothing
    /// in the output level overlaps it (and, from L0, no other L0 table does).
    pub fn is_trivial_move(&self) -> bool {
        self.reason != CompactionReason::Manual
            && self.inputs.len() == 1
            && self.output_level_inputs.is_empty()
    }

    /// Numbers of all input tables.
    pub fn input_numbers(&self) -> impl Iterator<Item = u64> + '_ {
        self.inputs
            .iter()
            .chain(&self.output_level_inputs)
            .map(|t| t.meta.number)
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
