//! Human-readable tables of the engine's figures.

use std::io::Write;
use strata_kv::DbStats;

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Prints `DbStats` as a per-level table followed by the engine's counters.
pub fn print_stats(out: &mut impl Write, s: &DbStats) -> std::io::Result<()> {
    writeln!(out, "Level  Tables     Size(MiB)   Score")?;
    for (level, ((files, bytes), score)) in s
        .files_per_level
        .iter()
        .zip(&s.bytes_per_level)
        .zip(&s.level_scores)
        .enumerate()
    {
        if *files > 0 || *score > 0.0 {
            writeln!(
                out,
                "L{level:<5} {files:>6} {:>13.2} {score:>7.2}",
                mib(*bytes)
            )?;
        }
    }
    let tables: usize = s.files_per_level.iter().sum();
    writeln!(out, "Total  {tables:>6} {:>13.2}", mib(s.table_bytes()))?;
    writeln!(out)?;
    writeln!(out, "last sequence            {}", s.last_sequence)?;
    writeln!(
        out,
        "memtables                {:.2} MiB active, {} frozen ({:.2} MiB)",
        mib(s.memtable_bytes),
        s.immutable_memtables,
        mib(s.immutable_bytes)
    )?;
    writeln!(
        out,
        "block cache              {:.2} of {:.2} MiB, {} hits, {} misses",
        mib(s.block_cache.usage_bytes),
        mib(s.block_cache.capacity_bytes),
        s.block_cache.hits,
        s.block_cache.misses
    )?;
    writeln!(
        out,
        "open tables              {} ({:.2} MiB of indexes and filters)",
        s.table_cache.open_tables,
        mib(s.table_cache.memory_bytes)
    )?;
    writeln!(
        out,
        "memory                   {:.2} MiB",
        mib(s.memory_bytes())
    )?;
    writeln!(
        out,
        "written                  user {:.2} MiB, WAL {:.2} MiB, flush {:.2} MiB, compaction {:.2} MiB",
        mib(s.user_bytes_written),
        mib(s.wal_bytes_written),
        mib(s.flush_bytes_written),
        mib(s.compaction_bytes_written)
    )?;
    writeln!(
        out,
        "write amplification      {:.2}",
        s.write_amplification()
    )?;
    writeln!(
        out,
        "compactions              {} ({} trivial moves, {} read-triggered), read {:.2} MiB, {} entries dropped, {:.2} MiB pending",
        s.compactions,
        s.trivial_moves,
        s.read_triggered_compactions,
        mib(s.compaction_bytes_read),
        s.compaction_entries_dropped,
        mib(s.pending_compaction_bytes)
    )?;
    writeln!(
        out,
        "write stalls             {} waits, {} slowdowns, {:.3} s",
        s.stalls,
        s.slowdowns,
        s.stall_micros as f64 / 1e6
    )?;
    writeln!(
        out,
        "bloom filters            {} checks, {} useful, {} false positives",
        s.bloom_checked, s.bloom_useful, s.bloom_false_positives
    )?;
    writeln!(
        out,
        "read from tables         {:.2} MiB",
        mib(s.table_bytes_read)
    )?;
    writeln!(out, "snapshots                {}", s.snapshots)?;
    if let Some(e) = &s.background_error {
        writeln!(out, "BACKGROUND ERROR         {e}")?;
    }
    Ok(())
}
