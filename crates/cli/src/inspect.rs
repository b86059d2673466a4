//! `strata inspect ...`: print on-disk files and verify their checksums.

use crate::escape;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use strata_kv::batch::{BatchEntry, WriteBatch};
use strata_kv::fs::{FileSystem, PosixFs};
use strata_kv::key::parse_internal_key;
use strata_kv::manifest::VersionEdit;
use strata_kv::sstable::Table;
use strata_kv::wal::{LogReader, MANIFEST_MAGIC, WAL_MAGIC};
use strata_kv::WalRecoveryMode;

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(subcommand)]
    command: InspectCommand,
}

#[derive(Debug, Subcommand)]
enum InspectCommand {
    /// A table (*.sst): properties, then every entry; verifies every block checksum.
    Sst {
        file: PathBuf,
        /// Print only the properties and the verification result.
        #[arg(long)]
        summary: bool,
    },
    /// A WAL segment (*.log): every record and the batch it holds.
    Wal {
        file: PathBuf,
        /// Print only counts.
        #[arg(long)]
        summary: bool,
    },
    /// A manifest (MANIFEST-*): every version edit.
    Manifest { file: PathBuf },
    /// A database directory: opens it (recovering it if needed; the directory must not be
    /// in use) and prints its levels, sizes, caches and counters.
    DataDir { dir: PathBuf },
    /// A time-series data directory (`strata serve --data-dir`): meta keys, partitions
    /// (series, chunks, samples, bytes per sample, encodings, compaction), WAL segments and
    /// the key-value store. Reads the files directly; the server must not be running.
    Tsdb {
        dir: PathBuf,
        /// Also decode every chunk and check time ranges, labels, postings and stats.
        #[arg(long)]
        verify: bool,
    },
    /// A time-series WAL segment (DIR/wal/NNNNNNNN.log): every record; given the wal
    /// directory, a summary per segment.
    TsdbWal {
        path: PathBuf,
        /// Print only counts.
        #[arg(long)]
        summary: bool,
    },
    /// The persisted chunks of the series matching a selector: encoding, samples, bytes.
    Chunks {
        dir: PathBuf,
        /// Series selector, e.g. 'node_cpu_seconds_total{mode="idle"}'.
        #[arg(long = "match")]
        selector: String,
        /// Only chunks overlapping [start, end] (RFC 3339 or Unix seconds).
        #[arg(long)]
        start: Option<String>,
        #[arg(long)]
        end: Option<String>,
        /// Print every sample too.
        #[arg(long)]
        samples: bool,
    },
}

pub fn run(args: InspectArgs) -> Result<()> {
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    match args.command {
        InspectCommand::Sst { file, summary } => sst(&mut out, &file, summary)?,
        InspectCommand::Wal { file, summary } => wal(&mut out, &file, summary)?,
        InspectCommand::Manifest { file } => manifest(&mut out, &file)?,
        InspectCommand::DataDir { dir } => {
            let opts = strata_kv::Options {
                create_if_missing: false,
                ..strata_kv::Options::default()
            };
            let db = strata_kv::Db::open(&dir, opts)
                .with_context(|| format!("opening database {}", dir.display()))?;
            crate::report::print_stats(&mut out, &db.stats())?;
            db.close()?;
        }
        InspectCommand::Tsdb { dir, verify } => {
            crate::inspect_tsdb::data_dir(&mut out, &dir, verify)?
        }
        InspectCommand::TsdbWal { path, summary } => {
            crate::inspect_tsdb::wal_file(&mut out, &path, summary)?
        }
        InspectCommand::Chunks {
            dir,
            selector,
            start,
            end,
            samples,
        } => {
            let matchers = crate::tsdb_tools::selector(&selector)?;
            let time = |s: Option<String>, flag: &str, default: i64| -> Result<i64> {
                s.as_deref()
                    .map(strata_server::params::parse_time)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
                    .map(|t| t.unwrap_or(default))
            };
            let start = time(start, "--start", i64::MIN)?;
            let end = time(end, "--end", i64::MAX)?;
            crate::inspect_tsdb::chunks(&mut out, &dir, &matchers, start, end, samples)?
        }
    }
    out.flush()?;
    Ok(())
}

fn name(p: &Path) -> String {
    p.display().to_string()
}

fn sst(out: &mut impl Write, path: &Path, summary: bool) -> Result<()> {
    let fs = PosixFs;
    let file = fs
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let table = Arc::new(Table::open(file, name(path))?);
    let p = table.properties();
    writeln!(out, "file             {}", path.display())?;
    writeln!(out, "file_size        {}", p.file_size)?;
    writeln!(
        out,
        "entries          {} ({} deletions)",
        p.num_entries, p.num_deletions
    )?;
    writeln!(out, "data_blocks      {}", p.num_data_blocks)?;
    writeln!(
        out,
        "raw_keys/values  {} / {} bytes",
        p.raw_key_bytes, p.raw_value_bytes
    )?;
    writeln!(
        out,
        "data/index/filter {} / {} / {} bytes",
        p.data_bytes, p.index_bytes, p.filter_bytes
    )?;
    writeln!(out, "compression      {:?}", p.compression)?;
    writeln!(
        out,
        "seqno range      {}..={}",
        p.smallest_seq, p.largest_seq
    )?;
    for (label, k) in [("smallest", &p.smallest_key), ("largest", &p.largest_key)] {
        if let Some(pk) = parse_internal_key(k) {
            writeln!(out, "{label:<16} {} @{}", escape(pk.user_key), pk.seq)?;
        }
    }
    if !summary {
        use strata_kv::iterator::InternalIterator;
        let mut it = table.iter();
        it.seek_to_first()?;
        while it.valid() {
            let k = it.key();
            let pk = parse_internal_key(k).with_context(|| {
                format!("{}: malformed internal key {}", path.display(), escape(k))
            })?;
            writeln!(
                out,
                "{} @{} {:?} => {}",
                escape(pk.user_key),
                pk.seq,
                pk.kind,
                escape(it.value())
            )?;
            it.next()?;
        }
    }
    let n = table.verify()?;
    writeln!(out, "verified         {n} entries, all block checksums OK")?;
    Ok(())
}

fn wal(out: &mut impl Write, path: &Path, summary: bool) -> Result<()> {
    let fs = PosixFs;
    let mut r = LogReader::open(&fs, path, WAL_MAGIC, WalRecoveryMode::TolerateTail)?;
    let (mut records, mut entries) = (0u64, 0u64);
    while let Some(rec) = r.next_record()? {
        let offset = r.last_record_offset();
        let batch = WriteBatch::decode(&rec, &name(path), offset)?;
        records += 1;
        entries += batch.len() as u64;
        if !summary {
            writeln!(
                out,
                "record @{offset}: seq {} count {} ({} bytes)",
                batch.sequence(),
                batch.len(),
                rec.len()
            )?;
            for e in batch.iter() {
                match e {
                    BatchEntry::Put { key, value } => {
                        writeln!(out, "  Put {} => {}", escape(key), escape(value))?
                    }
                    BatchEntry::Delete { key } => writeln!(out, "  Delete {}", escape(key))?,
                    BatchEntry::DeleteRange { start, end } => {
                        writeln!(out, "  DeleteRange [{}, {})", escape(start), escape(end))?
                    }
                }
            }
        }
    }
    writeln!(
        out,
        "{records} records, {entries} entries, all checksums OK"
    )?;
    if let Some(t) = r.tail_damage() {
        writeln!(
            out,
            "damaged tail at offset {}: {} (recovery cuts the log here)",
            t.offset, t.reason
        )?;
        bail!("{}: damaged tail at offset {}", path.display(), t.offset);
    }
    Ok(())
}

fn manifest(out: &mut impl Write, path: &Path) -> Result<()> {
    let fs = PosixFs;
    let mut r = LogReader::open(&fs, path, MANIFEST_MAGIC, WalRecoveryMode::Strict)?;
    while let Some(rec) = r.next_record()? {
        let offset = r.last_record_offset();
        let edit = VersionEdit::decode(&rec, &name(path), offset)?;
        writeln!(out, "edit @{offset}:")?;
        if let Some(n) = edit.log_number {
            writeln!(out, "  log_number {n}")?;
        }
        if let Some(n) = edit.next_file_number {
            writeln!(out, "  next_file_number {n}")?;
        }
        if let Some(n) = edit.last_sequence {
            writeln!(out, "  last_sequence {n}")?;
        }
        for (level, f) in &edit.new_files {
            let range = match (
                parse_internal_key(&f.smallest),
                parse_internal_key(&f.largest),
            ) {
                (Some(a), Some(b)) => format!("{} .. {}", escape(a.user_key), escape(b.user_key)),
                _ => "?".into(),
            };
            writeln!(
                out,
                "  add L{level} table {:06} {} bytes, {} entries, keys {range}",
                f.number, f.file_size, f.num_entries
            )?;
        }
        for (level, n) in &edit.deleted_files {
            writeln!(out, "  delete L{level} table {n:06}")?;
        }
        for t in &edit.new_range_tombstones {
            writeln!(
                out,
                "  add range delete [{}, {}) @{}",
                escape(&t.start),
                escape(&t.end),
                t.seq
            )?;
        }
        for t in &edit.deleted_range_tombstones {
            writeln!(
                out,
                "  drop range delete [{}, {}) @{}",
                escape(&t.start),
                escape(&t.end),
                t.seq
            )?;
        }
    }
    Ok(())
}
