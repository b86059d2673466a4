//! Choosing the next compaction by level score.

use super::{BusySet, Compaction, CompactionReason};
use crate::options::CompactionOptions;
use crate::version::{TableHandle, Version, NUM_LEVELS};
use std::sync::Arc;

/// Each level's target size in bytes (index 0 unused: L0 is scored by file count).
///
/// Static targets (`level1_max_bytes`, then `level_multiplier` times the previous level)
/// leave a database smaller than the sum of its upper levels' targets with a large share in
/// them: at 600 MB, a 256 MiB L1 held a third of the data over a two-thirds L2, so a third
/// of the bytes were shadowed versions (the space they take, and scans merging two runs
/// almost key by key). With `dynamic_level_bytes` (the default, as RocksDB's
/// `level_compaction_dynamic_level_bytes`), each level above the deepest non-empty one
/// targets the deepest one's size divided by the multiplier once per level between them,
/// kept between a tenth of its static target and its static target: the deepest level
/// holds ~90% of the data at any size. The deepest level keeps its static target, past
/// which the tree grows a level (its tables move down by trivial moves).
pub fn level_targets(v: &Version, opts: &CompactionOptions) -> Vec<u64> {
    let bytes = v.bytes_per_level();
    let static_target = |level: usize| opts.max_bytes_for_level(level);
    let mut targets: Vec<u64> = (0..NUM_LEVELS)
        .map(|level| if level == 0 { 0 } else { static_target(level) })
        .collect();
    if !opts.dynamic_level_bytes {
        return targets;
    }
    let Some(last) = (1..NUM_LEVELS).rev().find(|&l| bytes[l] > 0) else {
        return targets;
    };
    let mult = opts.level_multiplier.max(2);
    let mut t = bytes[last];
    for level in (1..last).rev() {
        t /= mult;
        let s = static_target(level);
        targets[level] = t.clamp(s / mult, s);
    }
    targets
}

/// Each level's compaction score; a level with a score >= 1 needs compaction. The last
/// level is never compacted further and scores 0.
pub fn level_scores(v: &Version, opts: &CompactionOptions) -> Vec<f64> {
    let bytes = v.bytes_per_level();
    let targets = level_targets(v, opts);
    (0..NUM_LEVELS)
        .map(|level| {
            if level == NUM_LEVELS - 1 {
                0.0
            } else if level == 0 {
                v.levels[0].len() as f64 / opts.l0_trigger.max(1) as f64
            } else {
                bytes[level] as f64 / targets[level].max(1) as f64
            }
        })
        .collect()
}

/// Estimated bytes compaction must rewrite before every level is within its target: the
/// write stall thresholds apply to this debt.
pub fn pending_compaction_bytes(v: &Version, opts: &CompactionOptions) -> u64 {
    let bytes = v.bytes_per_level();
    let targets = level_targets(v, opts);
    let mut debt = 0u64;
    if v.levels[0].len() >= opts.l0_trigger {
        debt += bytes[0];
    }
    for (level, b) in bytes.iter().enumerate().take(NUM_LEVELS - 1).skip(1) {
        let target = targets[level];
        if *b > target {
            // The excess moves down and merges with about `multiplier` times its size.
            debt += (b - target) * (opts.level_multiplier + 1);
        }
    }
    debt
}

fn key_range(tables: &[Arc<TableHandle>]) -> Option<(Vec<u8>, Vec<u8>)> {
    let lo = tables.iter().map(|t| t.smallest_user_key()).min()?;
    let hi = tables.iter().map(|t| t.largest_user_key()).max()?;
    Some((lo.to_vec(), hi.to_vec()))
}

/// Builds the compaction of `inputs` (tables of `level`) into `level + 1`, or `None` if any
/// table involved is already being compacted.
pub fn compaction_for(
    v: &Version,
    level: usize,
    inputs: Vec<Arc<TableHandle>>,
    busy: &BusySet,
    reason: CompactionReason,
) -> Option<Compaction> {
    let (lo, hi) = key_range(&inputs)?;
    let output_level_inputs = v.overlapping(level + 1, &lo, &hi);
    let c = Compaction {
        level,
        output_level: level + 1,
        inputs,
        output_level_inputs,
        reason,
    };
    if busy.conflicts(&c) {
        return None;
    }
    Some(c)
}

/// Builds a rewrite of `inputs` (tables of `level` >= 1) into the same level: how a manual
/// compaction reclaims the space of tombstones and old versions in the deepest level,
/// where no compaction from above reaches. `None` if any input is busy.
pub fn rewrite_in_place(
    level: usize,
    inputs: Vec<Arc<TableHandle>>,
    busy: &BusySet,
) -> Option<Compaction> {
    let c = Compaction {
        level,
        output_level: level,
        inputs,
        output_level_inputs: Vec::new(),
        reason: CompactionReason::Manual,
    };
    if busy.conflicts(&c) {
        return None;
    }
    Some(c)
}

/// The most urgent compaction that touches no busy table, if any level needs one.
/// `cursors[level]` remembers where the last compaction of a level ended, so that levels
/// are compacted round-robin across their key range (as LevelDB does). A read-triggered
/// compaction is picked only if `reads_may_trigger` (and none by size or tombstones is).
pub fn pick(
    v: &Version,
    opts: &CompactionOptions,
    busy: &BusySet,
    cursors: &[Vec<u8>],
    reads_may_trigger: bool,
) -> Option<Compaction> {
    let scores = level_scores(v, opts);
    let mut order: Vec<usize> = (0..NUM_LEVELS - 1).filter(|&l| scores[l] >= 1.0).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    for level in order {
        if level == 0 {
            // All L0 tables: they overlap, and taking them all keeps newer versions above
            // older ones.
            let inputs = v.levels[0].clone();
            if let Some(c) = compaction_for(v, 0, inputs, busy, CompactionReason::L0FileCount) {
                return Some(c);
            }
            continue;
        }
        let files = &v.levels[level];
        let cursor = cursors.get(level).map(Vec::as_slice).unwrap_or(&[]);
        let start = files.partition_point(|t| t.largest_user_key() <= cursor);
        for i in (start..files.len()).chain(0..start) {
            let t = &files[i];
            if busy.holds_table(t.meta.number) {
                continue;
            }
            if let Some(c) =
                compaction_for(v, level, vec![t.clone()], busy, CompactionReason::LevelSize)
            {
                return Some(c);
            }
        }
    }
    pick_tombstones(v, busy).or_else(|| {
        if opts.read_triggered && reads_may_trigger {
            pick_read_triggered(v, busy)
        } else {
            None
        }
    })
}

/// With no size-based compaction due: L0 (all of it, see `pick`) into L1 if reads used up
/// the allowance of one of its tables.
fn pick_read_triggered(v: &Version, busy: &BusySet) -> Option<Compaction> {
    if !v.levels[0].iter().any(|t| t.reads_exhausted()) {
        return None;
    }
    compaction_for(
        v,
        0,
        v.levels[0].clone(),
        busy,
        CompactionReason::ReadTriggered,
    )
}

/// A table at least this fraction tombstones is worth compacting on its own account.
const TOMBSTONE_FRACTION: f64 = 0.5;

/// ... and holds at least this many of them (a few deletes are not worth a rewrite).
const TOMBSTONE_MIN: u64 = 16 << 10;

/// With no level over its target: the first table, upper levels first, that is mostly
/// tombstones over data in a deeper level. Until compaction carries them down, the
/// tombstones and every version they delete take disk space (after a bulk delete, most of
/// the database) and every read of those keys steps over them; by size alone they would
/// wait for the level above to fill up. Each compaction moves the tombstones one level
/// down, where they and what they hide are dropped once nothing older lies below, so a
/// table is picked at most once per level.
fn pick_tombstones(v: &Version, busy: &BusySet) -> Option<Compaction> {
    for level in 0..NUM_LEVELS - 1 {
        for t in &v.levels[level] {
            let m = &t.meta;
            if m.num_deletions < TOMBSTONE_MIN
                || (m.num_deletions as f64) < TOMBSTONE_FRACTION * m.num_entries as f64
                || busy.holds_table(m.number)
            {
                continue;
            }
            let (lo, hi) = (t.smallest_user_key(), t.largest_user_key());
            if !(level + 1..NUM_LEVELS).any(|l| !v.overlapping(l, lo, hi).is_empty()) {
                continue;
            }
            // L0 tables overlap one another: all of them go down together (see `pick`).
            let inputs = if level == 0 {
                v.levels[0].clone()
            } else {
                vec![t.clone()]
            };
            if let Some(c) = compaction_for(v, level, inputs, busy, CompactionReason::Tombstones) {
                return Some(c);
            }
        }
    }
    None
}
