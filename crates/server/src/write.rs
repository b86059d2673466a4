//! Ingestion: Prometheus remote write 1.0.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prost::Message;
use strata_tsdb::{LabelLimits, Labels};

use crate::prompb;
use crate::AppState;

/// A plain-text error answer (remote-write clients log the body).
fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, msg.into()).into_response()
}

/// Decompresses a snappy block, checking its declared length against `max` first.
pub fn snappy_decode(body: &[u8], max: usize) -> Result<Vec<u8>, (StatusCode, String)> {
    let len = snap::raw::decompress_len(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("snappy: {e}")))?;
    if len > max {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("decompressed body of {len} bytes exceeds the limit of {max}"),
        ));
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("snappy: {e}")))
}

/// Counts of one request's outcome.
#[derive(Debug, Default)]
pub struct Ingested {
    pub samples: u64,
    pub out_of_order: u64,
    pub rejected_invalid: u64,
    pub rejected_too_old: u64,
    pub rejected_series_limit: u64,
    pub rejected_histograms: u64,
    pub first_error: Option<String>,
}

/// Converts remote-write series to store samples and commits them (blocking).
pub fn ingest(
    state: &AppState,
    req: prompb::WriteRequest,
    limits: &LabelLimits,
) -> Result<Ingested, strata_tsdb::Error> {
    let mut out = Ingested::default();
    let mut app = state.tsdb.appender();
    for ts in req.timeseries {
        if !ts.histograms.is_empty() {
            out.rejected_histograms += ts.histograms.len() as u64;
            out.first_error
                .get_or_insert_with(|| "native histograms are not supported".into());
        }
        if ts.samples.is_empty() {
            continue;
        }
        // Refuse absurd label counts before sorting and copying them.
        if ts.labels.len() > limits.max_labels {
            out.rejected_invalid += ts.samples.len() as u64;
            out.first_error.get_or_insert_with(|| {
                format!(
                    "series has {} labels, more than the limit of {}",
                    ts.labels.len(),
                    limits.max_labels
                )
            });
            continue;
        }
        let labels = match Labels::from_pairs_with_limits(
            ts.labels.into_iter().map(|l| (l.name, l.value)),
            limits,
        ) {
            Ok(l) if l.metric_name().is_some() => l,
            Ok(l) => {
                out.rejected_invalid += ts.samples.len() as u64;
                out.first_error
                    .get_or_insert_with(|| format!("series {l} has no metric name"));
                continue;
            }
            Err(e) => {
                out.rejected_invalid += ts.samples.len() as u64;
                out.first_error.get_or_insert_with(|| e.to_string());
                continue;
            }
        };
        let samples: Vec<(i64, f64)> = ts.samples.iter().map(|s| (s.timestamp, s.value)).collect();
        app.add_series(labels, &samples);
    }
    let st = app.commit()?;
    out.samples = st.appended;
    out.out_of_order = st.out_of_order;
    out.rejected_too_old = st.too_old;
    out.rejected_series_limit = st.series_limited;
    if st.too_old > 0 {
        out.first_error.get_or_insert_with(|| {
            format!("{} samples older than the retention period", st.too_old)
        });
    }
    if st.series_limited > 0 {
        out.first_error.get_or_insert_with(|| {
            format!(
                "{} samples rejected: the active series limit is reached",
                st.series_limited
            )
        });
    }
    Ok(out)
}

/// `POST /api/v1/write`.
pub async fn remote_write(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.is_empty() && !ctype.starts_with("application/x-protobuf") {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported content type {ctype:?}; remote write 1.0 sends application/x-protobuf"
            ),
        );
    }
    if let Some(enc) = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
    {
        if !enc.eq_ignore_ascii_case("snappy") {
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content encoding {enc:?}; only snappy"),
            );
        }
    }
    let limits = &state.config.limits;
    let raw = match snappy_decode(&body, limits.max_decompressed_bytes) {
        Ok(r) => r,
        Err((status, msg)) => {
            state.metrics.rejected("bad_request", 1);
            return text(status, msg);
        }
    };
    let req = match prompb::WriteRequest::decode(raw.as_slice()) {
        Ok(r) => r,
        Err(e) => {
            state.metrics.rejected("bad_request", 1);
            return text(StatusCode::BAD_REQUEST, format!("invalid protobuf: {e}"));
        }
    };
    let n_series = req.timeseries.len();
    let n_samples: usize = req.timeseries.iter().map(|t| t.samples.len()).sum();
    if n_series > limits.max_series_per_request || n_samples > limits.max_samples_per_request {
        state
            .metrics
            .rejected("request_too_large", n_samples as u64);
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request has {n_series} series and {n_samples} samples; limits are {} and {}",
                limits.max_series_per_request, limits.max_samples_per_request
            ),
        );
    }
    let st = Arc::clone(&state);
    let res = tokio::task::spawn_blocking(move || {
        let limits = st.config.label_limits();
        ingest(&st, req, &limits)
    })
    .await;
    let got = match res {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "remote write failed");
            let status = match e {
                strata_tsdb::Error::ReadOnly(_) | strata_tsdb::Error::Closed => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return text(status, e.to_string());
        }
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    state.metrics.ingested(&got);
    match got.first_error {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(msg) => text(StatusCode::BAD_REQUEST, msg),
    }
}
