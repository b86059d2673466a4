//! `strata`: the command-line face of Strata.

mod bench;
mod bench_tsdb;
mod inspect;
mod inspect_tsdb;
mod kv;
mod promql_test;
mod report;
mod serve;
mod tsdb_tools;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Strata: a time-series database on its own log-structured storage engine.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: Prometheus remote write and HTTP query API, data in ./data.
    Serve(serve::ServeArgs),
    /// Run a PromQL query against a data directory or a running server.
    Query(tsdb_tools::QueryArgs),
    /// Bulk-import samples into a data directory (offline).
    Import(tsdb_tools::ImportArgs),
    /// Export samples of the selected series from a data directory (offline).
    Export(tsdb_tools::ExportArgs),
    /// Read and write the embedded key-value engine directly.
    Kv(kv::KvArgs),
    /// Print and verify on-disk files: tables, WAL segments, manifests, time-series data
    /// directories, their WAL and chunks.
    Inspect(inspect::InspectArgs),
    /// Benchmarks (db_bench compatible): `strata bench kv --benchmarks=fillrandom,readrandom`.
    Bench(bench::BenchArgs),
    /// Run PromQL test scripts (Prometheus test-script language): `strata promql-test FILE...`.
    PromqlTest(promql_test::PromqlTestArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The server logs its life cycle; command-line tools stay quiet unless asked.
    let default_filter = match cli.command {
        Command::Serve(_) => "warn,strata_server=info,strata_tsdb=info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("STRATA_LOG")
                .unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Query(args) => tsdb_tools::run_query(args),
        Command::Import(args) => tsdb_tools::run_import(args),
        Command::Export(args) => tsdb_tools::run_export(args),
        Command::Kv(args) => kv::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Bench(args) => bench::run(args),
        Command::PromqlTest(args) => promql_test::run(args),
    }
}

/// Renders bytes for a terminal: printable ASCII as is, everything else as `\xNN`.
pub(crate) fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// Parses the escapes [`escape`] produces, so that printed keys can be typed back.
pub(crate) fn unescape(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            match bytes.get(i + 1) {
                Some(b'\\') => {
                    out.push(b'\\');
                    i += 2;
                }
                Some(b'x') => {
                    let hex = s
                        .get(i + 2..i + 4)
                        .ok_or_else(|| anyhow::anyhow!("truncated \\x escape in {s:?}"))?;
                    out.push(
                        u8::from_str_radix(hex, 16)
                            .map_err(|_| anyhow::anyhow!("bad \\x escape {hex:?} in {s:?}"))?,
                    );
                    i += 4;
                }
                _ => anyhow::bail!("bad escape in {s:?} (use \\\\ or \\xNN)"),
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_roundtrip() {
        let raw = b"a\\b\x00\xffz ~".to_vec();
        assert_eq!(escape(&raw), "a\\\\b\\x00\\xffz ~");
        assert_eq!(unescape(&escape(&raw)).unwrap(), raw);
        assert!(unescape("\\x1").is_err());
        assert!(unescape("\\q").is_err());
    }
}
