//! `strata-server`: Strata over HTTP. Prometheus remote write, the Prometheus HTTP query
//! API (PromQL by `strata-promql` over `strata-tsdb`), health and metrics. Safe by default:
//! loopback only, an optional bearer token, bounded requests and queries.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used)]

pub mod api;
pub mod compat;
pub mod error;
pub mod malloc;
pub mod metrics;
pub mod params;
pub mod prompb;
pub mod queryable;
pub mod read;
pub mod result_cache;
pub mod text;
pub mod ui;
pub mod write;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use strata_promql::{Engine, EngineOptions};
use strata_tsdb::{LabelLimits, Tsdb};
use tokio::sync::Semaphore;

/// Bounds on requests and queries.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (compressed), bytes.
    pub max_body_bytes: usize,
    /// Largest decompressed remote-write/read body, bytes (checked before decompressing).
    pub max_decompressed_bytes: usize,
    /// Most series in one write request.
    pub max_series_per_request: usize,
    /// Most samples in one write request.
    pub max_samples_per_request: usize,
    /// Most labels per series.
    pub max_labels_per_series: usize,
    /// Longest label name, bytes.
    pub max_label_name_len: usize,
    /// Longest label value, bytes.
    pub max_label_value_len: usize,
    /// Most active series (cardinality limit); `None` for no limit.
    pub max_active_series: Option<usize>,
    /// Most samples a query may hold.
    pub max_query_samples: usize,
    /// Query time limit.
    pub query_timeout: Duration,
    /// Queries run at once; more wait.
    pub max_concurrent_queries: usize,
    /// Longest time to receive and store a write request (slow clients get 408).
    pub write_timeout: Duration,
    /// Longest time for any other request (a query past it gets 503).
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 32 << 20,
            max_decompressed_bytes: 256 << 20,
            max_series_per_request: 1_000_000,
            max_samples_per_request: 10_000_000,
            max_labels_per_series: 64,
            max_label_name_len: 1024,
            max_label_value_len: 4096,
            max_active_series: None,
            max_query_samples: 50_000_000,
            query_timeout: Duration::from_secs(120),
            max_concurrent_queries: 20,
            write_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(150),
        }
    }
}

/// Server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory (the store is in it).
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Retention, ms.
    pub retention_ms: i64,
    /// Bearer token required on every endpoint but health checks, if set.
    pub auth_token: Option<String>,
    /// `user:password` accepted as HTTP basic auth (alternatively to the token), if set.
    pub basic_auth: Option<String>,
    /// PromQL lookback delta, ms.
    pub lookback_delta_ms: i64,
    /// Range query result cache size, bytes (0 disables it).
    pub query_cache_bytes: usize,
    /// Steps newer than now minus this (ms) are never cached.
    pub query_cache_offset_ms: i64,
    /// WAL fsync policy.
    pub wal_fsync: strata_tsdb::FsyncPolicy,
    /// Bounds.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 9490)),
            retention_ms: 15 * strata_tsdb::DAY_MS,
            auth_token: None,
            basic_auth: None,
            lookback_delta_ms: 5 * 60 * 1000,
            query_cache_bytes: 64 << 20,
            query_cache_offset_ms: 5 * 60 * 1000,
            wal_fsync: strata_tsdb::FsyncPolicy::IntervalMs(1000),
            limits: Limits::default(),
        }
    }
}

impl Config {
    /// The label bounds of ingestion.
    pub fn label_limits(&self) -> LabelLimits {
        LabelLimits {
            max_labels: self.limits.max_labels_per_series,
            max_name_len: self.limits.max_label_name_len,
            max_value_len: self.limits.max_label_value_len,
        }
    }

    /// Store options for this configuration.
    pub fn tsdb_options(&self) -> strata_tsdb::Options {
        strata_tsdb::Options {
            retention_ms: self.retention_ms,
            wal_fsync: self.wal_fsync,
            label_limits: self.label_limits(),
            max_series: self.limits.max_active_series,
            ..strata_tsdb::Options::default()
        }
    }
}

/// What every handler shares.
pub struct AppState {
    /// The store.
    pub tsdb: Tsdb,
    /// The PromQL engine.
    pub engine: Engine,
    /// The configuration.
    pub config: Config,
    /// Counters.
    pub metrics: metrics::Metrics,
    /// Query slots.
    pub query_slots: Arc<Semaphore>,
    /// Range query results.
    pub result_cache: result_cache::ResultCache,
}

impl AppState {
    /// State over an open store.
    pub fn new(tsdb: Tsdb, config: Config) -> Self {
        let engine = Engine::new(EngineOptions {
            lookback_delta_ms: config.lookback_delta_ms,
            max_samples: config.limits.max_query_samples,
            timeout: config.limits.query_timeout,
            ..EngineOptions::default()
        });
        AppState {
            tsdb,
            engine,
            query_slots: Arc::new(Semaphore::new(config.limits.max_concurrent_queries.max(1))),
            result_cache: result_cache::ResultCache::new(
                config.query_cache_bytes,
                config.query_cache_offset_ms,
            ),
            config,
            metrics: metrics::Metrics::default(),
        }
    }
}

async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let cfg = &state.config;
    if cfg.auth_token.is_none() && cfg.basic_auth.is_none() {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // InfluxDB 2 clients (Telegraf's influxdb_v2 output) send the token as `Token <t>`.
    let token = given
        .strip_prefix("Bearer ")
        .or_else(|| given.strip_prefix("Token "));
    let bearer_ok = match (&cfg.auth_token, token) {
        (Some(token), Some(t)) => constant_time_eq(t.as_bytes(), token.as_bytes()),
        _ => false,
    };
    let basic_ok = match (&cfg.basic_auth, given.strip_prefix("Basic ")) {
        (Some(pair), Some(b64)) => {
            decode_base64(b64.trim()).is_some_and(|got| constant_time_eq(&got, pair.as_bytes()))
        }
        _ => false,
    };
    if bearer_ok || basic_ok {
        return next.run(req).await;
    }
    let challenge = if cfg.basic_auth.is_some() {
        "Basic realm=\"strata\""
    } else {
        "Bearer"
    };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
        "missing or wrong credentials",
    )
        .into_response()
}

/// Standard base64 (with or without padding); `None` on anything else.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().take_while(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Bounds the time of every request, so that a slow (or stalled) client cannot hold a
/// connection and its buffers forever.
async fn deadline(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let is_write = path.ends_with("/write") || path.starts_with("/api/v1/import");
    let limit = if is_write {
        state.config.limits.write_timeout
    } else {
        state.config.limits.request_timeout
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) if is_write => (
            StatusCode::REQUEST_TIMEOUT,
            format!("request not received and stored within {limit:?}"),
        )
            .into_response(),
        Err(_) => error::ApiError::unavailable(format!("request took longer than {limit:?}"))
            .into_response(),
    }
}

/// Compares secrets without an early exit that would leak their common prefix length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics_handler(State(state): State<Arc<AppState>>) -> Response {
    let st = Arc::clone(&state);
    let render = move || {
        let mut body = st.metrics.render(&st.tsdb);
        st.result_cache.render(&mut body);
        body
    };
    match tokio::task::spawn_blocking(render).await {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The HTTP routes over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/api/v1/write", post(write::remote_write))
        .route("/api/v1/read", post(read::remote_read))
        .route("/write", post(text::influx_write))
        .route("/api/v2/write", post(text::influx_write))
        .route("/api/v1/import/prometheus", post(text::import_prometheus))
        .route("/api/v1/query", get(api::query).post(api::query))
        .route(
            "/api/v1/query_range",
            get(api::query_range).post(api::query_range),
        )
        .route("/api/v1/series", get(api::series).post(api::series))
        .route("/api/v1/labels", get(api::labels).post(api::labels))
        .route("/api/v1/label/{name}/values", get(api::label_values))
        .route("/api/v1/status/tsdb", get(api::status_tsdb))
        .route("/api/v1/status/buildinfo", get(api::buildinfo))
        .route("/api/v1/metadata", get(api::metadata))
        .route(
            "/api/v1/query_exemplars",
            get(compat::query_exemplars).post(compat::query_exemplars),
        )
        .route(
            "/api/v1/format_query",
            get(compat::format_query).post(compat::format_query),
        )
        .route("/api/v1/rules", get(compat::rules))
        .route("/api/v1/alerts", get(compat::alerts))
        .route(
            "/api/v1/admin/tsdb/delete_series",
            post(api::delete_series).put(api::delete_series),
        )
        .route(
            "/api/v1/admin/tsdb/snapshot",
            post(api::snapshot).put(api::snapshot),
        )
        .route("/api/v1/admin/tsdb/flush", post(api::flush))
        .route("/api/v1/admin/tsdb/compact", post(api::compact))
        .route("/metrics", get(metrics_handler))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), auth))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), deadline));
    Router::new()
        .route("/-/healthy", get(|| async { "Strata is Healthy.\n" }))
        .route("/-/ready", get(|| async { "Strata is Ready.\n" }))
        .merge(api)
        .merge(ui::routes())
        .layer(DefaultBodyLimit::max(state.config.limits.max_body_bytes))
        .with_state(state)
}

/// Most bytes of index (postings) read into the block cache after open: a quarter of the
/// store's default block cache, so that warming never evicts more than it brings.
const WARM_INDEX_BYTES: usize = 8 << 20;

/// Errors of starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store failed to open or close.
    #[error("store: {0}")]
    Tsdb(#[from] strata_tsdb::Error),
    /// Binding or serving failed.
    #[error("listening on {addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Opens the store, serves until `shutdown` resolves, then finishes in-flight requests and
/// closes the store (flushing the head). `on_listening` gets the bound address.
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    // Queries' freed memory stays for the next query instead of being faulted in again.
    if !malloc::tune() {
        tracing::debug!("allocator settings not applied (not glibc)");
    }
    let dir = config.data_dir.join("tsdb");
    let opts = config.tsdb_options();
    let tsdb = tokio::task::spawn_blocking(move || Tsdb::open(dir, opts))
        .await
        .map_err(|e| ServeError::Io {
            addr: config.listen,
            source: std::io::Error::other(e.to_string()),
        })??;
    let addr = config.listen;
    let state = Arc::new(AppState::new(tsdb, config));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Io { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Io { addr, source })?;
    tracing::info!(addr = %local, "listening");
    on_listening(local);
    // The index of the newest partitions into the block cache, in the background: the
    // first metadata queries after a restart then find their blocks there. Ready is not
    // delayed; shutdown waits for it (it is bounded) before closing the store.
    let warm = {
        let st = Arc::clone(&state);
        tokio::task::spawn_blocking(move || {
            let t = std::time::Instant::now();
            match st.tsdb.warm_index(WARM_INDEX_BYTES) {
                Ok(bytes) => tracing::info!(bytes, elapsed = ?t.elapsed(), "index warmed"),
                Err(e) => tracing::warn!(error = %e, "warming the index"),
            }
        })
    };
    // As a make-service, each connection gets a clone of the router (an `Arc`); served as
    // a `Router` itself, axum rebuilds its route table for every connection (clones and
    // re-states every route: ~30 us per connection here, more than a small query).
    axum::serve(listener, router(Arc::clone(&state)).into_make_service())
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServeError::Io { addr, source })?;
    tracing::info!("shutting down: flushing the store");
    let _ = warm.await;
    // In-flight requests are done; close the store if nobody else holds it.
    match Arc::try_unwrap(state) {
        Ok(state) => tokio::task::spawn_blocking(move || state.tsdb.close())
            .await
            .map_err(|e| ServeError::Io {
                addr,
                source: std::io::Error::other(e.to_string()),
            })??,
        Err(_) => tracing::warn!("store still referenced at shutdown; it closes when dropped"),
    }
    Ok(())
}
