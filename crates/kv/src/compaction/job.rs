//! Running a compaction: merge the inputs, drop what no reader can see, write the outputs.

use super::Compaction;
use crate::error::{Error, IoContext, Result};
use crate::filename;
use crate::fs::FileSystem;
use crate::iterator::InternalIterator;
use crate::key::{parse_internal_key, ValueKind};
use crate::manifest::FileMeta;
use crate::merge::MergingIterator;
use crate::options::TableOptions;
use crate::sstable::TableBuilder;
use crate::version::{LevelIterator, Version};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// What a compaction job needs from the database.
pub struct JobContext<'a> {
    /// Filesystem of the tables.
    pub fs: &'a dyn FileSystem,
    /// Database directory.
    pub dir: &'a Path,
    /// Options of the output tables.
    pub table_options: &'a TableOptions,
    /// Outputs are cut at about this size (at user-key boundaries).
    pub target_file_size: u64,
    /// Sequence numbers of live snapshots, ascending.
    pub snapshots: Vec<u64>,
    /// The version the inputs were picked from.
    pub version: &'a Version,
    /// Hands out file numbers for outputs.
    pub new_file_number: &'a (dyn Fn() -> u64 + Sync),
    /// Set when the database is closing: the job stops and removes its outputs.
    pub abort: &'a AtomicBool,
}

/// The result of a finished job.
#[derive(Debug, Default)]
pub struct JobOutput {
    /// Tables written, in key order.
    pub outputs: Vec<FileMeta>,
    /// Bytes of input tables.
    pub bytes_read: u64,
    /// Bytes of output tables.
    pub bytes_written: u64,
    /// Entries read.
    pub entries_in: u64,
    /// Entries dropped (shadowed versions and tombstones no longer needed).
    pub entries_dropped: u64,
}

/// Index of the "snapshot stripe" of `seq`: the first snapshot that can see it
/// (`snapshots.len()` if only the latest state can). Two versions of a key in the same
/// stripe are seen by exactly the same readers, so only the newer one matters.
pub(crate) fn stripe(seq: u64, snapshots: &[u64]) -> usize {
    snapshots.partition_point(|&s| s < seq)
}

struct Output {
    builder: TableBuilder,
    number: u64,
    path: PathBuf,
}

/// Merges the compaction's inputs into new tables of its output level.
pub fn run(c: &Compaction, ctx: &JobContext<'_>) -> Result<JobOutput> {
    let mut written: Vec<PathBuf> = Vec::new();
    let result = merge(c, ctx, &mut written);
    if result.is_err() {
        for p in &written {
            let _ = ctx.fs.remove_file(p);
        }
    }
    result
}

fn merge(c: &Compaction, ctx: &JobContext<'_>, written: &mut Vec<PathBuf>) -> Result<JobOutput> {
    let mut children: Vec<Box<dyn InternalIterator>> = Vec::new();
    if c.level == 0 {
        for t in &c.inputs {
            children.push(Box::new(LevelIterator::new(vec![t.clone()], false)));
        }
    } else {
        children.push(Box::new(LevelIterator::new(c.inputs.clone(), false)));
    }
    if !c.output_level_inputs.is_empty() {
        children.push(Box::new(LevelIterator::new(
            c.output_level_inputs.clone(),
            false,
        )));
    }
    let mut merged = MergingIterator::new(children);
    merged.seek_to_first()?;

    let mut out = JobOutput {
        bytes_read: c.input_bytes(),
        ..JobOutput::default()
    };
    let mut current: Option<Output> = None;
    let mut user_key: Vec<u8> = Vec::new();
    let mut have_key = false;
    let mut last_stripe = usize::MAX;
    while merged.valid() {
        if out.entries_in.is_multiple_of(1024) && ctx.abort.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        out.entries_in += 1;
        let ikey = merged.key();
        let p = parse_internal_key(ikey)
            .ok_or_else(|| Error::corruption("<compaction input>", 0, "malformed internal key"))?;
        if !have_key || p.user_key != user_key.as_slice() {
            // A new user key: the only place an output may be cut, so that a user key never
            // spans two tables of a level.
            if current
                .as_ref()
                .is_some_and(|o| o.builder.estimated_file_size() >= ctx.target_file_size)
            {
                if let Some(o) = current.take() {
                    out.outputs.push(finish(o)?);
                }
            }
            user_key.clear();
            user_key.extend_from_slice(p.user_key);
            have_key = true;
            last_stripe = usize::MAX;
        }
        let s = stripe(p.seq, &ctx.snapshots);
        // The newest snapshot of this stripe (or the latest state) sees the same versions
        // as every reader of the stripe.
        let stripe_top = ctx.snapshots.get(s).copied().unwrap_or(u64::MAX);
        let drop = if s == last_stripe {
            // A newer version in the same stripe hides this one from every reader.
            true
        } else if ctx
            .version
            .range_tombstones
            .covering_seq(p.user_key, stripe_top)
            > p.seq
        {
            // A range delete that every reader of this stripe sees covers it.
            true
        } else {
            // A tombstone no snapshot needs, with nothing below to hide, hides nothing.
            p.kind == ValueKind::Deletion
                && s == 0
                && ctx
                    .version
                    .is_bottommost_for_key(c.output_level, p.user_key)
        };
        last_stripe = s;
        if drop {
            out.entries_dropped += 1;
        } else {
            if current.is_none() {
                let number = (ctx.new_file_number)();
                let path = filename::table_path(ctx.dir, number);
                let file = ctx
                    .fs
                    .create(&path)
                    .context(|| format!("creating compaction output {}", path.display()))?;
                written.push(path.clone());
                current = Some(Output {
                    builder: TableBuilder::new(file, path.display().to_string(), ctx.table_options),
                    number,
                    path,
                });
            }
            if let Some(o) = current.as_mut() {
                o.builder.add(ikey, merged.value())?;
            }
        }
        merged.next()?;
    }
    if let Some(o) = current.take() {
        out.outputs.push(finish(o)?);
    }
    if !out.outputs.is_empty() {
        ctx.fs
            .sync_dir(ctx.dir)
            .context(|| format!("syncing directory {}", ctx.dir.display()))?;
    }
    out.bytes_written = out.outputs.iter().map(|m| m.file_size).sum();
    Ok(out)
}

fn finish(o: Output) -> Result<FileMeta> {
    let props = o.builder.finish()?;
    tracing::trace!(table = o.number, path = %o.path.display(), bytes = props.file_size,
        "compaction output finished");
    Ok(FileMeta::from_properties(o.number, props))
}

#[cfg(test)]
mod tests {
    use super::stripe;

    #[test]
    fn stripes_group_versions_seen_by_the_same_snapshots() {
        let snaps = [10, 20];
        assert_eq!(stripe(5, &snaps), 0);
        assert_eq!(stripe(10, &snaps), 0);
        assert_eq!(stripe(11, &snaps), 1);
        assert_eq!(stripe(20, &snaps), 1);
        assert_eq!(stripe(21, &snaps), 2);
        assert_eq!(stripe(7, &[]), 0);
    }
}
