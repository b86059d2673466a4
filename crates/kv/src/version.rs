//! Versions: immutable snapshots of the set of live tables, per level.
//!
//! A [`Version`] is shared by `Arc`: a reader that picked one keeps reading exactly those
//! tables, however many flushes install newer versions meanwhile.

use crate::error::Result;
use crate::iterator::InternalIterator;
use crate::key::{user_key, ValueKind};
use crate::manifest::FileMeta;
use crate::sstable::Table;
use std::sync::Arc;

/// Number of levels (L0 holds overlapping tables straight from flushes).
pub const NUM_LEVELS: usize = 7;

/// A live table: its manifest record and its open reader.
#[derive(Debug)]
pub struct TableHandle {
    /// What the manifest says about the table.
    pub meta: FileMeta,
    /// The open table.
    pub table: Arc<Table>,
}

impl TableHandle {
    fn covers(&self, key: &[u8]) -> bool {
        user_key(&self.meta.smallest) <= key && key <= user_key(&self.meta.largest)
    }
}

/// The live tables at one point in time.
#[derive(Debug, Clone)]
pub struct Version {
    /// `levels[0]` newest first (its tables overlap); deeper levels sorted by key, disjoint.
    pub levels: Vec<Vec<Arc<TableHandle>>>,
}

impl Default for Version {
    fn default() -> Self {
        Version {
            levels: vec![Vec::new(); NUM_LEVELS],
        }
    }
}

impl Version {
    /// A copy of this version with `table` added at `level`.
    pub fn with_table(&self, level: usize, table: Arc<TableHandle>) -> Version {
        let mut v = self.clone();
        v.levels[level].push(table);
        v.sort_level(level);
        v
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
            files.sort_by(|a, b| user_key(&a.meta.smallest).cmp(user_key(&b.meta.smallest)));
        }
    }

    /// The newest version of `key` visible at `seq` among the tables.
    pub fn get(&self, key: &[u8], seq: u64) -> Result<Option<(ValueKind, Vec<u8>)>> {
        for (level, files) in self.levels.iter().enumerate() {
            if level == 0 {
                for t in files.iter().filter(|t| t.covers(key)) {
                    if let Some(hit) = t.table.get(key, seq)? {
                        return Ok(Some(hit));
                    }
                }
            } else {
                // Disjoint and sorted: the one candidate is the first whose largest >= key.
                let i = files.partition_point(|t| user_key(&t.meta.largest) < key);
                if let Some(t) = files.get(i).filter(|t| t.covers(key)) {
                    if let Some(hit) = t.table.get(key, seq)? {
                        return Ok(Some(hit));
                    }
                }
            }
        }
        Ok(None)
    }

    /// One iterator per table, newest data first.
    pub fn iterators(&self) -> Vec<Box<dyn InternalIterator>> {
        self.levels
            .iter()
            .flatten()
            .map(|t| Box::new(t.table.iter()) as Box<dyn InternalIterator>)
            .collect()
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
}
