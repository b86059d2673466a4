//! `strata kv ...`: direct access to a key-value engine, the LSM tree (`--engine lsm`, the
//! default) or Bitcask (`--engine bitcask`).
//!
//! `put`, `get`, `delete`, `load`, `flush`, `stats` and `compact` (Bitcask: a merge of every
//! file) work on both through [`KvEngine`]; `scan` on Bitcask lists entries in unspecified
//! order, filtered client-side; `delete-range`, `checkpoint`, `scan --reverse` and
//! `compact --start/--end` need the LSM's key order and are refused on Bitcask before the
//! store is opened.

use crate::bench::Engine;
use crate::{escape, unescape};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use strata_kv::bitcask::{Bitcask, BitcaskOptions, BitcaskStats};
use strata_kv::{CompressionType, Db, KvEngine, Options, WriteBatch, WriteOptions};

#[derive(Debug, Args)]
pub struct KvArgs {
    /// Storage engine.
    #[arg(long, value_enum, default_value = "lsm")]
    engine: Engine,
    /// Database directory, created if missing (default: ./data/kv for lsm, ./data/bitcask
    /// for bitcask).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Compression of new table blocks (lsm only; default lz4).
    #[arg(long)]
    compression: Option<CompressionType>,
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
    /// Print key/value pairs, tab separated: in key order (lsm), in unspecified order
    /// (bitcask; --start/--end/--prefix filter the entries, --reverse is refused).
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
    /// Make every write durable (lsm: flush the memtable to a table; bitcask: fsync).
    Flush,
    /// Delete every key in [START, END) with one range tombstone (lsm only).
    DeleteRange { start: String, end: String },
    /// Compact the tables holding keys in [--start, --end) (default: everything); bitcask:
    /// merge every data file (no --start/--end).
    Compact {
        #[arg(long)]
        start: Option<String>,
        #[arg(long)]
        end: Option<String>,
    },
    /// Write a consistent copy of the database into a new directory (tables hard-linked;
    /// lsm only).
    Checkpoint { target: PathBuf },
    /// Print the engine's figures.
    Stats,
}

/// The open store of one command.
enum Store {
    Lsm(Db),
    Bitcask(Bitcask),
}

impl Store {
    /// The engine-independent operations.
    fn kv(&self) -> &dyn KvEngine {
        match self {
            Store::Lsm(db) => db,
            Store::Bitcask(db) => db,
        }
    }

    fn close(self) -> Result<()> {
        match self {
            Store::Lsm(db) => db.close(),
            Store::Bitcask(db) => db.close(),
        }
        .context("closing database")
    }
}

pub fn run(args: KvArgs) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    run_with(args, &mut out, &mut input)?;
    out.flush()?;
    Ok(())
}

/// The directory used when `--data-dir` is not given.
fn default_data_dir(engine: Engine) -> PathBuf {
    match engine {
        Engine::Lsm => PathBuf::from("./data/kv"),
        Engine::Bitcask => PathBuf::from("./data/bitcask"),
    }
}

/// Refuses, before anything is opened, what `engine` cannot do.
fn check_supported(args: &KvArgs) -> Result<()> {
    if args.engine == Engine::Lsm {
        return Ok(());
    }
    let engine = args.engine.name();
    if args.compression.is_some() {
        bail!("--compression applies to --engine lsm only (bitcask stores values as written)");
    }
    match &args.command {
        KvCommand::Scan { reverse: true, .. } => bail!(
            "scan --reverse needs an ordered engine: {engine} lists entries in unspecified \
             order (use --engine lsm)"
        ),
        KvCommand::DeleteRange { .. } => bail!(
            "delete-range needs an ordered engine: {engine} has no key ranges (use --engine lsm)"
        ),
        KvCommand::Compact { start, end } if start.is_some() || end.is_some() => bail!(
            "compact --start/--end needs an ordered engine: {engine} merges every file \
             (run compact without them)"
        ),
        KvCommand::Checkpoint { .. } => {
            bail!("checkpoint is available for --engine lsm only, not {engine}")
        }
        _ => Ok(()),
    }
}

/// Opens the store `args` name and runs its command, printing to `out` and reading `load`'s
/// lines from `input`.
fn run_with(args: KvArgs, out: &mut dyn Write, input: &mut dyn BufRead) -> Result<()> {
    check_supported(&args)?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| default_data_dir(args.engine));
    let store = match args.engine {
        Engine::Lsm => {
            let mut opts = Options::default();
            opts.table.compression = args.compression.unwrap_or(CompressionType::Lz4);
            Store::Lsm(
                Db::open(&dir, opts)
                    .with_context(|| format!("opening database {}", dir.display()))?,
            )
        }
        Engine::Bitcask => Store::Bitcask(
            Bitcask::open(&dir, BitcaskOptions::default())
                .with_context(|| format!("opening bitcask store {}", dir.display()))?,
        ),
    };
    let result = command(&store, args.command, out, input);
    store.close()?;
    result
}

fn command(
    store: &Store,
    command: KvCommand,
    out: &mut dyn Write,
    input: &mut dyn BufRead,
) -> Result<()> {
    let db = store.kv();
    match command {
        KvCommand::Put { key, value, sync } => {
            let mut b = WriteBatch::new();
            b.put(unescape(&key)?, unescape(&value)?);
            db.write(b, WriteOptions { sync })?;
        }
        KvCommand::Get { key } => match db.get(&unescape(&key)?)? {
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
            let limit = limit.unwrap_or(usize::MAX);
            match store {
                Store::Lsm(db) => {
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
                    for item in scan.take(limit) {
                        let (k, v) = item?;
                        writeln!(out, "{}\t{}", escape(&k), escape(&v))?;
                    }
                }
                Store::Bitcask(db) => {
                    if reverse {
                        bail!("scan --reverse needs an ordered engine (use --engine lsm)");
                    }
                    let prefix = prefix.map(|p| unescape(&p)).transpose()?;
                    let lo = start.map(|s| unescape(&s)).transpose()?;
                    let hi = end.map(|s| unescape(&s)).transpose()?;
                    let wanted = |k: &[u8]| {
                        prefix.as_deref().is_none_or(|p| k.starts_with(p))
                            && lo.as_deref().is_none_or(|lo| k >= lo)
                            && hi.as_deref().is_none_or(|hi| k < hi)
                    };
                    let mut printed = 0;
                    let mut err = None;
                    if limit > 0 {
                        KvEngine::for_each(db, &mut |k, v| {
                            if wanted(k) {
                                if let Err(e) = writeln!(out, "{}\t{}", escape(k), escape(v)) {
                                    err = Some(e);
                                    return false;
                                }
                                printed += 1;
                            }
                            printed < limit
                        })?;
                    }
                    if let Some(e) = err {
                        return Err(e.into());
                    }
                }
            }
        }
        KvCommand::Load { batch } => {
            let mut b = WriteBatch::new();
            let mut n = 0u64;
            for (i, line) in input.lines().enumerate() {
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
        KvCommand::Stats => print_store_stats(store, out)?,
        KvCommand::DeleteRange { start, end } => {
            let Store::Lsm(db) = store else {
                bail!("delete-range needs an ordered engine (use --engine lsm)");
            };
            db.delete_range(unescape(&start)?, unescape(&end)?)?
        }
        KvCommand::Compact { start, end } => {
            let Store::Lsm(db) = store else {
                if start.is_some() || end.is_some() {
                    bail!("compact --start/--end needs an ordered engine (use --engine lsm)");
                }
                db.compact()?;
                print_store_stats(store, out)?;
                return Ok(());
            };
            let lo = start.map(|s| unescape(&s)).transpose()?;
            let hi = end.map(|s| unescape(&s)).transpose()?;
            let range = (
                lo.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Included),
                hi.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
            );
            db.compact_range::<Vec<u8>>(range)?;
            print_store_stats(store, out)?;
        }
        KvCommand::Checkpoint { target } => {
            let Store::Lsm(db) = store else {
                bail!("checkpoint is available for --engine lsm only");
            };
            db.checkpoint(&target)
                .with_context(|| format!("checkpoint into {}", target.display()))?;
            eprintln!("checkpoint written to {}", target.display());
        }
    }
    Ok(())
}

fn print_store_stats(store: &Store, out: &mut dyn Write) -> Result<()> {
    let mut out = out;
    match store {
        Store::Lsm(db) => crate::report::print_stats(&mut out, &db.stats())?,
        Store::Bitcask(db) => print_bitcask_stats(&mut out, &db.stats())?,
    }
    Ok(())
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Prints `BitcaskStats` in the layout of the LSM's table (`report::print_stats`).
pub(crate) fn print_bitcask_stats(out: &mut dyn Write, s: &BitcaskStats) -> std::io::Result<()> {
    writeln!(
        out,
        "keys                     {} live, {} tombstones",
        s.keys, s.tombstones
    )?;
    writeln!(
        out,
        "data files               {}, {:.2} MiB on disk: {:.2} MiB live, {:.2} MiB dead",
        s.files,
        mib(s.disk_bytes),
        mib(s.live_bytes),
        mib(s.dead_bytes)
    )?;
    writeln!(
        out,
        "keydir                   {:.2} MiB, {:.1} bytes per key",
        mib(s.keydir_memory_bytes),
        s.keydir_bytes_per_key
    )?;
    writeln!(
        out,
        "merges                   {}, read {:.2} MiB, wrote {:.2} MiB",
        s.merges,
        mib(s.merge_bytes_read),
        mib(s.merge_bytes_written)
    )?;
    writeln!(
        out,
        "writes                   {} batches, {:.2} MiB appended, {} syncs",
        s.writes,
        mib(s.bytes_written),
        s.syncs
    )?;
    writeln!(
        out,
        "reads                    {}, {:.2} MiB",
        s.reads,
        mib(s.bytes_read)
    )?;
    if let Some(e) = &s.last_merge_error {
        writeln!(out, "LAST MERGE ERROR         {e}")?;
    }
    if let Some(e) = &s.background_error {
        writeln!(out, "BACKGROUND ERROR         {e}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::Path;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: KvArgs,
    }

    /// Runs `strata kv ARGS...` on `dir` with `input` as standard input; returns stdout.
    fn kv(engine: &str, dir: &Path, args: &[&str], input: &str) -> Result<String> {
        let mut argv = vec![
            "kv",
            "--engine",
            engine,
            "--data-dir",
            dir.to_str().unwrap(),
        ];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv)?;
        let mut out = Vec::new();
        run_with(cli.args, &mut out, &mut input.as_bytes())?;
        Ok(String::from_utf8(out)?)
    }

    fn sorted_lines(s: &str) -> Vec<&str> {
        let mut v: Vec<&str> = s.lines().collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn engine_defaults_and_data_dirs() {
        let cli = Cli::try_parse_from(["kv", "stats"]).unwrap();
        assert_eq!(cli.args.engine, Engine::Lsm);
        assert_eq!(cli.args.data_dir, None);
        assert_eq!(default_data_dir(Engine::Lsm), Path::new("./data/kv"));
        assert_eq!(
            default_data_dir(Engine::Bitcask),
            Path::new("./data/bitcask")
        );
        assert!(Cli::try_parse_from(["kv", "--engine", "btree", "stats"]).is_err());
    }

    #[test]
    fn bitcask_commands() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bc");
        let run = |args: &[&str], input: &str| kv("bitcask", &dir, args, input);
        run(&["put", "user/1", "ada", "--sync"], "").unwrap();
        run(&["put", "user/2", "bob"], "").unwrap();
        assert_eq!(run(&["get", "user/1"], "").unwrap(), "ada\n");
        run(&["load"], "a\t1\nb\\x00\t2\nuser/3\tcy\n").unwrap();
        run(&["delete", "user/2"], "").unwrap();
        let err = run(&["get", "user/2"], "").unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");

        let all = run(&["scan"], "").unwrap();
        assert_eq!(
            sorted_lines(&all),
            ["a\t1", "b\\x00\t2", "user/1\tada", "user/3\tcy"]
        );
        let users = run(&["scan", "--prefix", "user/"], "").unwrap();
        assert_eq!(sorted_lines(&users), ["user/1\tada", "user/3\tcy"]);
        let range = run(&["scan", "--start", "b", "--end", "user/2"], "").unwrap();
        assert_eq!(sorted_lines(&range), ["b\\x00\t2", "user/1\tada"]);
        assert_eq!(
            run(&["scan", "--limit", "3"], "").unwrap().lines().count(),
            3
        );
        assert_eq!(run(&["scan", "--limit", "0"], "").unwrap(), "");

        run(&["flush"], "").unwrap();
        let stats = run(&["stats"], "").unwrap();
        assert!(stats.contains("keys                     4 live"), "{stats}");
        assert!(stats.contains("bytes per key"), "{stats}");
        let merged = run(&["compact"], "").unwrap();
        assert!(merged.contains("merges                   1"), "{merged}");
        assert!(merged.contains("0 tombstones"), "{merged}");
        assert_eq!(run(&["get", "user/3"], "").unwrap(), "cy\n");

        // What needs key order is refused, with nothing opened or created.
        let fresh = tmp.path().join("never");
        for (args, msg) in [
            (
                &["scan", "--reverse"][..],
                "--reverse needs an ordered engine",
            ),
            (
                &["delete-range", "a", "b"][..],
                "delete-range needs an ordered engine",
            ),
            (&["compact", "--start", "a"][..], "compact --start/--end"),
            (&["checkpoint", "/tmp/x"][..], "lsm only"),
            (
                &["--compression", "zstd", "stats"][..],
                "--compression applies",
            ),
        ] {
            let err = kv("bitcask", &fresh, args, "").unwrap_err().to_string();
            assert!(err.contains(msg), "{args:?}: {err}");
        }
        assert!(!fresh.exists());
    }

    #[test]
    fn lsm_commands() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("lsm");
        let run = |args: &[&str], input: &str| kv("lsm", &dir, args, input);
        run(&["put", "b", "2"], "").unwrap();
        run(&["load"], "a\t1\nc\t3\nd\t4\n").unwrap();
        assert_eq!(run(&["get", "a"], "").unwrap(), "1\n");
        assert_eq!(run(&["scan"], "").unwrap(), "a\t1\nb\t2\nc\t3\nd\t4\n");
        assert_eq!(
            run(&["scan", "--reverse", "--limit", "2"], "").unwrap(),
            "d\t4\nc\t3\n"
        );
        run(&["delete-range", "b", "d"], "").unwrap();
        run(&["delete", "a", "--sync"], "").unwrap();
        assert_eq!(run(&["scan"], "").unwrap(), "d\t4\n");
        run(&["flush"], "").unwrap();
        assert!(run(&["compact"], "")
            .unwrap()
            .contains("write amplification"));
        assert!(run(&["stats"], "").unwrap().contains("Level  Tables"));
        let cp = tmp.path().join("cp");
        run(&["checkpoint", cp.to_str().unwrap()], "").unwrap();
        assert_eq!(kv("lsm", &cp, &["get", "d"], "").unwrap(), "4\n");
    }
}
