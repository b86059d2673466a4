//! `strata kv ...`: direct access to the LSM engine.

use crate::{escape, unescape};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use strata_kv::{CompressionType, Db, Options, WriteBatch, WriteOptions};

#[derive(Debug, Args)]
pub struct KvArgs {
    /// Database directory (created if missing).
    #[arg(long, default_value = "./data/kv")]
    data_dir: PathBuf,
    /// Compression of new table blocks.
    #[arg(long, default_value = "lz4")]
    compression: CompressionType,
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Debug, Subcommand)]
enum KvCommand {
    /// Set KEY to VALUE (keys and values accept \xNN escapes).
    Put {
        key: String,
        value: String,
        /// fsync the WAL before returning.
        #[arg(long)]
        sync: bool,
    },
    /// Print the value of KEY; exits with status 1 if it is absent.
    Get { key: String },
    /// Delete KEY.
    Delete {
        key: String,
        /// fsync the WAL before returning.
        #[arg(long)]
        sync: bool,
    },
    /// Print key/value pairs in key order, tab separated.
    Scan {
        /// First key (inclusive).
        #[arg(long)]
        start: Option<String>,
        /// Last key (exclusive).
        #[arg(long)]
        end: Option<String>,
        /// Only keys with this prefix (instead of --start/--end).
        #[arg(long, conflicts_with_all = ["start", "end"])]
        prefix: Option<String>,
        /// Descending order.
        #[arg(long)]
        reverse: bool,
        /// Stop after this many entries.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Load tab-separated `key<TAB>value` lines from standard input, in batches.
    Load {
        /// Entries per write batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Flush the memtable to a table.
    Flush,
    /// Delete every key in [START, END) with one range tombstone.
    DeleteRange { start: String, end: String },
    /// Compact the tables holding keys in [--start, --end) (default: everything).
    Compact {
        #[arg(long)]
        start: Option<String>,
        #[arg(long)]
        end: Option<String>,
    },
    /// Write a consistent copy of the database into a new directory (tables hard-linked).
    Checkpoint { target: PathBuf },
    /// Print the engine's figures.
    Stats,
}

pub fn run(args: KvArgs) -> Result<()> {
    let mut opts = Options::default();
    opts.table.compression = args.compression;
    let db = Db::open(&args.data_dir, opts)
        .with_context(|| format!("opening database {}", args.data_dir.display()))?;
    let result = command(&db, args.command);
    db.close().context("closing database")?;
    result
}

fn command(db: &Db, command: KvCommand) -> Result<()> {
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    match command {
        KvCommand::Put { key, value, sync } => {
            let mut b = WriteBatch::new();
            b.put(unescape(&key)?, unescape(&value)?);
            db.write(b, WriteOptions { sync })?;
        }
        KvCommand::Get { key } => match db.get(unescape(&key)?)? {
            Some(v) => writeln!(out, "{}", escape(&v))?,
            None => anyhow::bail!("not found: {key}"),
        },
        KvCommand::Delete { key, sync } => {
            let mut b = WriteBatch::new();
            b.delete(unescape(&key)?);
            db.write(b, WriteOptions { sync })?;
        }
        KvCommand::Scan {
            start,
            end,
            prefix,
            reverse,
            limit,
        } => {
            let scan = if let Some(p) = prefix {
                db.prefix(unescape(&p)?)
            } else {
                let lo = start.map(|s| unescape(&s)).transpose()?;
                let hi = end.map(|s| unescape(&s)).transpose()?;
                let range = (
                    lo.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Included),
                    hi.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
                );
                if reverse {
                    db.scan_rev::<Vec<u8>>(range)
                } else {
                    db.scan::<Vec<u8>>(range)
                }
            };
            for item in scan.take(limit.unwrap_or(usize::MAX)) {
                let (k, v) = item?;
                writeln!(out, "{}\t{}", escape(&k), escape(&v))?;
            }
        }
        KvCommand::Load { batch } => {
            let mut b = WriteBatch::new();
            let mut n = 0u64;
            for (i, line) in std::io::stdin().lines().enumerate() {
                let line = line.context("reading standard input")?;
                let (k, v) = line
                    .split_once('\t')
                    .with_context(|| format!("line {}: expected key<TAB>value", i + 1))?;
                b.put(unescape(k)?, unescape(v)?);
                n += 1;
                if b.len() >= batch.max(1) {
                    db.write(std::mem::take(&mut b), WriteOptions::default())?;
                }
            }
            db.write(b, WriteOptions::default())?;
            eprintln!("loaded {n} entries");
        }
        KvCommand::Flush => db.flush()?,
        KvCommand::Stats => crate::report::print_stats(&mut out, &db.stats())?,
        KvCommand::DeleteRange { start, end } => {
            db.delete_range(unescape(&start)?, unescape(&end)?)?
        }
        KvCommand::Compact { start, end } => {
            let lo = start.map(|s| unescape(&s)).transpose()?;
            let hi = end.map(|s| unescape(&s)).transpose()?;
            let range = (
                lo.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Included),
                hi.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
            );
            db.compact_range::<Vec<u8>>(range)?;
            crate::report::print_stats(&mut out, &db.stats())?;
        }
        KvCommand::Checkpoint { target } => {
            db.checkpoint(&target)
                .with_context(|| format!("checkpoint into {}", target.display()))?;
            eprintln!("checkpoint written to {}", target.display());
        }
    }
    out.flush()?;
    Ok(())
}
