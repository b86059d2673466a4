//! Prometheus remote read: `SAMPLES` (one snappy-compressed `ReadResponse`) and
//! `STREAMED_XOR_CHUNKS` (a stream of length-delimited, CRC32C-checked
//! `ChunkedReadResponse` frames carrying Prometheus XOR chunks), chosen by the client's
//! `accepted_response_types` in order.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prost::Message;
use strata_tsdb::chunk::xor::encode_prometheus;
use strata_tsdb::{MatchOp, Matcher};

use crate::prompb::{self, RESPONSE_SAMPLES, RESPONSE_STREAMED_XOR_CHUNKS};
use crate::write::snappy_decode;
use crate::AppState;

/// Samples per chunk in streamed responses (Prometheus' own chunk size).
const SAMPLES_PER_CHUNK: usize = 120;
/// A frame is cut after this many bytes of series (Prometheus uses 1 MiB).
const FRAME_BYTES: usize = 1 << 20;

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, msg.into()).into_response()
}

/// The store matchers of a remote-read query (an unknown type or a bad regex is an error).
pub fn matchers(q: &prompb::Query) -> Result<Vec<Matcher>, String> {
    q.matchers
        .iter()
        .map(|m| {
            let op = match m.r#type {
                0 => MatchOp::Equal,
                1 => MatchOp::NotEqual,
                2 => MatchOp::RegexMatch,
                3 => MatchOp::RegexNoMatch,
                t => return Err(format!("unknown matcher type {t}")),
            };
            Matcher::new(op, m.name.clone(), m.value.clone()).map_err(|e| e.to_string())
        })
        .collect()
}

fn labels(l: &strata_tsdb::Labels) -> Vec<prompb::Label> {
    l.iter()
        .map(|x| prompb::Label {
            name: x.name.clone(),
            value: x.value.clone(),
        })
        .collect()
}

/// Appends one frame: uvarint length, big-endian CRC32C of the message, the message.
fn put_frame(out: &mut Vec<u8>, msg: &prompb::ChunkedReadResponse) {
    let data = msg.encode_to_vec();
    let mut n = data.len() as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(&crc32c::crc32c(&data).to_be_bytes());
    out.extend_from_slice(&data);
}

/// Whether `req` is answered as `STREAMED_XOR_CHUNKS` (the first accepted type Strata
/// knows decides).
pub fn wants_streamed(req: &prompb::ReadRequest) -> bool {
    req.accepted_response_types
        .iter()
        .find(|t| **t == RESPONSE_SAMPLES || **t == RESPONSE_STREAMED_XOR_CHUNKS)
        .is_some_and(|t| *t == RESPONSE_STREAMED_XOR_CHUNKS)
}

/// Answers a decoded remote-read request from `tsdb` (blocking): the snappy-compressed
/// `ReadResponse`, or with `streamed` the concatenated `ChunkedReadResponse` frames. At most
/// `max_samples` samples over all queries; a bad matcher is a 400.
pub fn answer(
    tsdb: &strata_tsdb::Tsdb,
    req: &prompb::ReadRequest,
    streamed: bool,
    max_samples: usize,
) -> Result<Vec<u8>, (StatusCode, String)> {
    let mut total = 0usize;
    let mut results = Vec::new();
    let mut stream = Vec::new();
    for (qi, q) in req.queries.iter().enumerate() {
        let ms = matchers(q).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
        let got = tsdb
            .querier(q.start_timestamp_ms, q.end_timestamp_ms)
            .select(&ms)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        total += got.iter().map(|s| s.samples.len()).sum::<usize>();
        if total > max_samples {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("remote read would return more than {max_samples} samples"),
            ));
        }
        if streamed {
            let mut frame = prompb::ChunkedReadResponse {
                chunked_series: Vec::new(),
                query_index: qi as i64,
            };
            let mut bytes = 0;
            for s in got {
                let chunks: Vec<prompb::Chunk> = s
                    .samples
                    .chunks(SAMPLES_PER_CHUNK)
                    .map(|c| prompb::Chunk {
                        min_time_ms: c[0].0,
                        max_time_ms: c[c.len() - 1].0,
                        r#type: 1,
                        data: encode_prometheus(c),
                    })
                    .collect();
                bytes += chunks.iter().map(|c| c.data.len() + 24).sum::<usize>();
                frame.chunked_series.push(prompb::ChunkedSeries {
                    labels: labels(&s.labels),
                    chunks,
                });
                if bytes >= FRAME_BYTES {
                    put_frame(&mut stream, &frame);
                    frame.chunked_series.clear();
                    bytes = 0;
                }
            }
            if !frame.chunked_series.is_empty() {
                put_frame(&mut stream, &frame);
            }
        } else {
            results.push(prompb::QueryResult {
                timeseries: got
                    .into_iter()
                    .map(|s| prompb::TimeSeries {
                        labels: labels(&s.labels),
                        samples: s
                            .samples
                            .iter()
                            .map(|&(timestamp, value)| prompb::Sample { value, timestamp })
                            .collect(),
                        ..prompb::TimeSeries::default()
                    })
                    .collect(),
            });
        }
    }
    if streamed {
        Ok(stream)
    } else {
        let raw = prompb::ReadResponse { results }.encode_to_vec();
        snap::raw::Encoder::new()
            .compress_vec(&raw)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }
}

/// `POST /api/v1/read`.
pub async fn remote_read(State(state): State<Arc<AppState>>, body: axum::body::Bytes) -> Response {
    let raw = match snappy_decode(&body, state.config.limits.max_decompressed_bytes) {
        Ok(r) => r,
        Err((status, msg)) => return text(status, msg),
    };
    let req = match prompb::ReadRequest::decode(raw.as_slice()) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("invalid protobuf: {e}")),
    };
    let streamed = wants_streamed(&req);
    let max_samples = state.config.limits.max_query_samples;
    let st = Arc::clone(&state);
    let res =
        tokio::task::spawn_blocking(move || answer(&st.tsdb, &req, streamed, max_samples)).await;
    match res {
        Ok(Ok(body)) if streamed => (
            [(
                header::CONTENT_TYPE,
                "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse",
            )],
            body,
        )
            .into_response(),
        Ok(Ok(body)) => (
            [
                (header::CONTENT_TYPE, "application/x-protobuf"),
                (header::CONTENT_ENCODING, "snappy"),
            ],
            body,
        )
            .into_response(),
        Ok(Err((status, msg))) => text(status, msg),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
