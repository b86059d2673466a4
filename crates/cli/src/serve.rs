//! `strata serve`: the server (Prometheus remote write and query API) with its store in a
//! local data directory.

use anyhow::{Context, Result};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use strata_server::{Config, Limits};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory (created if missing).
    #[arg(long, env = "STRATA_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Address to listen on (loopback only by default).
    #[arg(long, env = "STRATA_LISTEN", default_value = "127.0.0.1:9490")]
    listen: SocketAddr,
    /// How long samples are kept (a Prometheus duration: 15d, 90d, 10y).
    #[arg(long, env = "STRATA_RETENTION", default_value = "15d")]
    retention: String,
    /// Require `Authorization: Bearer <token>` on every endpoint except /-/healthy and /-/ready.
    #[arg(long, env = "STRATA_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// Also accept HTTP basic auth with these credentials, as `user:password`.
    #[arg(long, env = "STRATA_BASIC_AUTH", hide_env_values = true)]
    basic_auth: Option<String>,
    /// WAL fsync: "always", "never", or an interval such as "1s".
    #[arg(long, env = "STRATA_WAL_FSYNC", default_value = "1s")]
    wal_fsync: String,
    /// PromQL lookback delta.
    #[arg(long, env = "STRATA_LOOKBACK_DELTA", default_value = "5m")]
    lookback_delta: String,
    /// Range query result cache size, bytes (0 disables it).
    #[arg(long, env = "STRATA_QUERY_CACHE_BYTES", default_value_t = 64 << 20)]
    query_cache_bytes: usize,
    /// Steps of range queries newer than now minus this are never cached (recent data
    /// is still arriving), as VictoriaMetrics' -search.cacheTimestampOffset.
    #[arg(long, env = "STRATA_QUERY_CACHE_OFFSET", default_value = "5m")]
    query_cache_offset: String,
    /// Largest request body, bytes.
    #[arg(long, env = "STRATA_MAX_BODY_BYTES", default_value_t = 32 << 20)]
    max_body_bytes: usize,
    /// Largest decompressed request body, bytes.
    #[arg(long, env = "STRATA_MAX_DECOMPRESSED_BYTES", default_value_t = 256 << 20)]
    max_decompressed_bytes: usize,
    /// Most series per write request.
    #[arg(
        long,
        env = "STRATA_MAX_SERIES_PER_REQUEST",
        default_value_t = 1_000_000
    )]
    max_series_per_request: usize,
    /// Most samples per write request.
    #[arg(
        long,
        env = "STRATA_MAX_SAMPLES_PER_REQUEST",
        default_value_t = 10_000_000
    )]
    max_samples_per_request: usize,
    /// Most labels per series.
    #[arg(long, env = "STRATA_MAX_LABELS", default_value_t = 64)]
    max_labels: usize,
    /// Longest label name, bytes.
    #[arg(long, env = "STRATA_MAX_LABEL_NAME_LEN", default_value_t = 1024)]
    max_label_name_len: usize,
    /// Longest label value, bytes.
    #[arg(long, env = "STRATA_MAX_LABEL_VALUE_LEN", default_value_t = 4096)]
    max_label_value_len: usize,
    /// Most active series (0: no limit).
    #[arg(long, env = "STRATA_MAX_ACTIVE_SERIES", default_value_t = 0)]
    max_active_series: usize,
    /// Most samples one query may hold.
    #[arg(long, env = "STRATA_QUERY_MAX_SAMPLES", default_value_t = 50_000_000)]
    query_max_samples: usize,
    /// Query time limit.
    #[arg(long, env = "STRATA_QUERY_TIMEOUT", default_value = "2m")]
    query_timeout: String,
    /// Queries run at once.
    #[arg(long, env = "STRATA_QUERY_MAX_CONCURRENCY", default_value_t = 20)]
    query_max_concurrency: usize,
    /// Longest time to receive and store one write request.
    #[arg(long, env = "STRATA_WRITE_TIMEOUT", default_value = "30s")]
    write_timeout: String,
    /// Longest time for any other request.
    #[arg(long, env = "STRATA_REQUEST_TIMEOUT", default_value = "150s")]
    request_timeout: String,
}

fn duration_ms(what: &str, s: &str) -> Result<i64> {
    let ms =
        strata_server::params::parse_duration(s).map_err(|e| anyhow::anyhow!("--{what}: {e}"))?;
    anyhow::ensure!(ms > 0, "--{what} must be positive");
    Ok(ms)
}

pub fn run(args: ServeArgs) -> Result<()> {
    let wal_fsync = match args.wal_fsync.as_str() {
        "always" => strata_tsdb::FsyncPolicy::Always,
        "never" => strata_tsdb::FsyncPolicy::Never,
        other => strata_tsdb::FsyncPolicy::IntervalMs(duration_ms("wal-fsync", other)? as u64),
    };
    let config = Config {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        retention_ms: duration_ms("retention", &args.retention)?,
        auth_token: args.auth_token.filter(|t| !t.is_empty()),
        basic_auth: args.basic_auth.filter(|t| t.contains(':')),
        lookback_delta_ms: duration_ms("lookback-delta", &args.lookback_delta)?,
        query_cache_bytes: args.query_cache_bytes,
        query_cache_offset_ms: duration_ms("query-cache-offset", &args.query_cache_offset)?,
        wal_fsync,
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            max_decompressed_bytes: args.max_decompressed_bytes,
            max_series_per_request: args.max_series_per_request,
            max_samples_per_request: args.max_samples_per_request,
            max_labels_per_series: args.max_labels,
            max_label_name_len: args.max_label_name_len,
            max_label_value_len: args.max_label_value_len,
            max_active_series: (args.max_active_series > 0).then_some(args.max_active_series),
            max_query_samples: args.query_max_samples,
            query_timeout: Duration::from_millis(
                duration_ms("query-timeout", &args.query_timeout)? as u64,
            ),
            max_concurrent_queries: args.query_max_concurrency,
            write_timeout: Duration::from_millis(
                duration_ms("write-timeout", &args.write_timeout)? as u64,
            ),
            request_timeout: Duration::from_millis(duration_ms(
                "request-timeout",
                &args.request_timeout,
            )? as u64),
        },
    };
    if !config.listen.ip().is_loopback()
        && config.auth_token.is_none()
        && config.basic_auth.is_none()
    {
        tracing::warn!(addr = %config.listen, "listening beyond loopback without --auth-token");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime
        .block_on(strata_server::serve(config, shutdown_signal(), |addr| {
            eprintln!(
                "strata: serving on http://{addr} (data in {})",
                args.data_dir.display()
            );
        }))
        .context("serving")
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("signal received: shutting down");
}
