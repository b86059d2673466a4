//! Ingestion: Prometheus remote write 1.0.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use strata_tsdb::{LabelLimits, Labels, METRIC_NAME};

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

/// [`snappy_decode`] into `buf` (reused: it is grown, never shrunk); returns the
/// decompressed length, the bytes being `buf[..len]`.
pub fn snappy_decode_into(
    body: &[u8],
    max: usize,
    buf: &mut Vec<u8>,
) -> Result<usize, (StatusCode, String)> {
    let len = snap::raw::decompress_len(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("snappy: {e}")))?;
    if len > max {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("decompressed body of {len} bytes exceeds the limit of {max}"),
        ));
    }
    if buf.len() < len {
        buf.resize(len, 0);
    }
    snap::raw::Decoder::new()
        .decompress(body, &mut buf[..len])
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
    // An owned request's strings are UTF-8: `NotUtf8` cannot happen.
    ingest_view(state, &prompb::WriteRequestView::of(&req), limits).map_err(|e| match e {
        IngestError::Store(e) => e,
        IngestError::NotUtf8 => strata_tsdb::Error::InvalidArgument("label not UTF-8".into()),
    })
}

/// Why [`ingest_view`] stored nothing.
#[derive(Debug)]
pub enum IngestError {
    /// The store failed.
    Store(strata_tsdb::Error),
    /// A label that is not a head series' is not UTF-8 (only possible for a view from
    /// [`prompb::decode_write_request_deferred`]); the request is refused whole, as the
    /// checked decoder refuses it.
    NotUtf8,
}

/// [`ingest`] of a request decoded without copying: series already in the head are found
/// by the hash of their borrowed label bytes, with no label set built and no UTF-8 check
/// (their bytes are a head series' labels, checked when it was created). Any other
/// series' labels are checked as UTF-8 before anything is stored.
pub fn ingest_view(
    state: &AppState,
    req: &prompb::WriteRequestView<'_>,
    limits: &LabelLimits,
) -> Result<Ingested, IngestError> {
    let mut out = Ingested::default();
    let mut app = state
        .tsdb
        .appender_with_capacity(req.series.len(), req.samples.len());
    for ts in &req.series {
        if ts.histograms > 0 {
            out.rejected_histograms += ts.histograms as u64;
            out.first_error
                .get_or_insert_with(|| "native histograms are not supported".into());
        }
        let samples = req.samples_of(ts);
        let raw = req.labels_of(ts);
        // The common case: a known series with a metric name (checked first, as the
        // general path below refuses series without one even if the head holds them).
        if !samples.is_empty()
            && raw.len() <= limits.max_labels
            && raw
                .iter()
                .any(|(n, v)| *n == METRIC_NAME.as_bytes() && !v.is_empty())
            && app.add_known_series(
                raw,
                req.label_bytes_of(ts),
                samples.iter().map(|s| (s.timestamp, s.value)),
                limits,
            )
        {
            continue;
        }
        let Some(pairs) = req.labels_str_of(ts) else {
            return Err(IngestError::NotUtf8);
        };
        if samples.is_empty() {
            continue;
        }
        // Refuse absurd label counts before sorting and copying them.
        if pairs.len() > limits.max_labels {
            out.rejected_invalid += samples.len() as u64;
            out.first_error.get_or_insert_with(|| {
                format!(
                    "series has {} labels, more than the limit of {}",
                    pairs.len(),
                    limits.max_labels
                )
            });
            continue;
        }
        if !pairs
            .iter()
            .any(|(n, v)| *n == METRIC_NAME && !v.is_empty())
        {
            out.rejected_invalid += samples.len() as u64;
            // Only now build the label set, to say what is wrong with it.
            let why = match Labels::from_pairs_with_limits(pairs.iter().copied(), limits) {
                Ok(l) => format!("series {l} has no metric name"),
                Err(e) => e.to_string(),
            };
            out.first_error.get_or_insert(why);
            continue;
        }
        let added = app.add_series_pairs(
            &pairs,
            samples.iter().map(|s| (s.timestamp, s.value)),
            limits,
        );
        if let Err(e) = added {
            out.rejected_invalid += samples.len() as u64;
            out.first_error.get_or_insert_with(|| e.to_string());
        }
    }
    let st = app.commit().map_err(IngestError::Store)?;
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
    // Decompressing, decoding and storing are CPU work: off the async workers.
    let st = Arc::clone(&state);
    match tokio::task::spawn_blocking(move || write_blocking(&st, &body)).await {
        Ok(resp) => resp,
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Decompresses, decodes, checks and stores one remote-write body.
fn write_blocking(state: &AppState, body: &[u8]) -> Response {
    // The decompressed bytes go to a buffer kept per blocking thread: fresh megabytes per
    // request would cost page faults and zeroing every time.
    // So do the decoded request's vectors.
    thread_local! {
        static RAW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        static VIEW: std::cell::RefCell<prompb::WriteRequestView<'static>> =
            std::cell::RefCell::new(prompb::WriteRequestView::default());
    }
    RAW.with(|cell| {
        VIEW.with(|view_cell| {
            let mut raw = cell.take();
            let mut view = view_cell.take();
            let resp = write_decompressed(state, body, &mut raw, &mut view);
            if raw.capacity() <= 64 << 20 {
                cell.replace(raw);
            }
            if view.labels.capacity() <= 1 << 20 {
                view_cell.replace(view);
            }
            resp
        })
    })
}

/// A status and its text (empty for 204).
type Answer = (StatusCode, String);

/// A request that does not decode: refused whole. A structural error found with the
/// UTF-8 check deferred may come after a string the checked decoder refuses first:
/// answer with the checked decoder's error, the first in the bytes.
fn bad_request(state: &AppState, raw: &[u8], e: prompb::DecodeError) -> Answer {
    let e = prompb::decode_write_request(raw).err().unwrap_or(e);
    state.metrics.rejected("bad_request", 1);
    (StatusCode::BAD_REQUEST, e.to_string())
}

fn write_decompressed(
    state: &AppState,
    body: &[u8],
    buf: &mut Vec<u8>,
    spare: &mut prompb::WriteRequestView<'static>,
) -> Response {
    let limits = &state.config.limits;
    let raw = match snappy_decode_into(body, limits.max_decompressed_bytes, buf) {
        Ok(len) => &buf[..len],
        Err((status, msg)) => {
            state.metrics.rejected("bad_request", 1);
            return text(status, msg);
        }
    };
    match store(state, raw, true, spare) {
        (StatusCode::NO_CONTENT, _) => StatusCode::NO_CONTENT.into_response(),
        (status, msg) => text(status, msg),
    }
}

/// Decodes, checks and stores one decompressed remote-write request. With `deferred`,
/// label bytes are checked as UTF-8 only where no head series has them (`ingest_view`);
/// without, every string is checked while decoding. The answers are the same (tested).
/// The vectors of the decoded request come from `spare` and go back to it.
fn store(
    state: &AppState,
    raw: &[u8],
    deferred: bool,
    spare: &mut prompb::WriteRequestView<'static>,
) -> Answer {
    let decoded = if deferred {
        prompb::decode_write_request_deferred_reusing(raw, std::mem::take(spare))
    } else {
        prompb::decode_write_request(raw)
    };
    let req = match decoded {
        Ok(r) => r,
        Err(e) => return bad_request(state, raw, e),
    };
    let answer = store_decoded(state, raw, deferred, &req);
    *spare = req.into_spare();
    answer
}

fn store_decoded(
    state: &AppState,
    raw: &[u8],
    deferred: bool,
    req: &prompb::WriteRequestView<'_>,
) -> Answer {
    let limits = &state.config.limits;
    let n_series = req.series.len();
    let n_samples = req.samples.len();
    if n_series > limits.max_series_per_request || n_samples > limits.max_samples_per_request {
        // As before the check was deferred, a string that is not UTF-8 is a bad request.
        if deferred {
            if let Err(e) = prompb::decode_write_request(raw) {
                return bad_request(state, raw, e);
            }
        }
        state
            .metrics
            .rejected("request_too_large", n_samples as u64);
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request has {n_series} series and {n_samples} samples; limits are {} and {}",
                limits.max_series_per_request, limits.max_samples_per_request
            ),
        );
    }
    let got = match ingest_view(state, req, &state.config.label_limits()) {
        Ok(g) => g,
        Err(IngestError::NotUtf8) => {
            // The checked decoder names the first string that is not UTF-8, as it did
            // when every string was checked up front.
            let e = prompb::DecodeError {
                offset: 0,
                reason: "string is not UTF-8",
            };
            return bad_request(state, raw, e);
        }
        Err(IngestError::Store(e)) => {
            tracing::error!(error = %e, "remote write failed");
            let status = match e {
                strata_tsdb::Error::ReadOnly(_) | strata_tsdb::Error::Closed => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return (status, e.to_string());
        }
    };
    state.metrics.ingested(&got);
    match got.first_error {
        None => (StatusCode::NO_CONTENT, String::new()),
        Some(msg) => (StatusCode::BAD_REQUEST, msg),
    }
}

#[cfg(test)]
mod tests;
