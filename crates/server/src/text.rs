//! Text ingestion: InfluxDB line protocol (`/write`, `/api/v2/write`) and the Prometheus
//! text exposition format with optional timestamps (`/api/v1/import/prometheus`). Both are
//! turned into remote-write series and stored by the same path.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use influxdb_line_protocol::FieldValue;

use crate::params::Params;
use crate::prompb::{Label, Sample, TimeSeries, WriteRequest};
use crate::write::ingest;
use crate::AppState;

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, msg.into()).into_response()
}

/// Label pairs, unsorted.
type Pairs = Vec<(String, String)>;

/// A label name made valid: characters outside `[a-zA-Z0-9_]` become `_`, and a leading
/// digit gets a `_` in front (as Prometheus' and VictoriaMetrics' sanitizing does).
pub fn sanitize_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

/// Series parsed from a text body, keyed by label set, plus counts of what was skipped.
#[derive(Debug, Default)]
pub struct Parsed {
    pub series: Vec<TimeSeries>,
    pub skipped_strings: u64,
    pub errors: Vec<String>,
}

fn push(
    map: &mut HashMap<Vec<(String, String)>, usize>,
    out: &mut Vec<TimeSeries>,
    mut labels: Vec<(String, String)>,
    t: i64,
    v: f64,
) {
    labels.sort();
    let idx = *map.entry(labels.clone()).or_insert_with(|| {
        out.push(TimeSeries {
            labels: labels
                .into_iter()
                .map(|(name, value)| Label { name, value })
                .collect(),
            ..TimeSeries::default()
        });
        out.len() - 1
    });
    out[idx].samples.push(Sample {
        value: v,
        timestamp: t,
    });
}

/// Parses line protocol; `unit_ns` is the length of one timestamp unit in ns.
pub fn parse_line_protocol(body: &str, unit_ns: i64, now_ms: i64) -> Parsed {
    let mut p = Parsed::default();
    let mut map = HashMap::new();
    for (i, line) in influxdb_line_protocol::parse_lines(body).enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                p.errors.push(format!("line {}: {e}", i + 1));
                continue;
            }
        };
        let t = match line.timestamp {
            // A timestamp whose milliseconds do not fit an i64 is refused, not wrapped.
            Some(ts) => match i64::try_from(i128::from(ts) * i128::from(unit_ns) / 1_000_000) {
                Ok(t) => t,
                Err(_) => {
                    p.errors
                        .push(format!("line {}: timestamp {ts} out of range", i + 1));
                    continue;
                }
            },
            None => now_ms,
        };
        let measurement = line.series.measurement.to_string();
        let tags: Vec<(String, String)> = line
            .series
            .tag_set
            .iter()
            .flatten()
            .map(|(k, v)| (sanitize_name(&k.to_string()), v.to_string()))
            .filter(|(k, _)| k != "__name__")
            .collect();
        for (field, value) in &line.field_set {
            let v = match value {
                FieldValue::F64(x) => *x,
                FieldValue::I64(x) => *x as f64,
                FieldValue::U64(x) => *x as f64,
                FieldValue::Boolean(b) => f64::from(u8::from(*b)),
                FieldValue::String(_) => {
                    p.skipped_strings += 1;
                    continue;
                }
            };
            let name = if measurement.is_empty() {
                field.to_string()
            } else {
                format!("{measurement}_{field}")
            };
            let mut labels = tags.clone();
            labels.push(("__name__".into(), name));
            push(&mut map, &mut p.series, labels, t, v);
        }
    }
    p
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Parses one exposition line `name{l="v",...} value [timestamp_ms]`.
fn parse_exposition_line(
    line: &str,
    now_ms: i64,
    ts_seconds: bool,
) -> Result<(Pairs, i64, f64), String> {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
        i += 1;
    }
    if i == 0 {
        return Err("expected a metric name".into());
    }
    let mut labels = vec![("__name__".to_string(), line[..i].to_string())];
    if b.get(i) == Some(&b'{') {
        i += 1;
        loop {
            while b.get(i) == Some(&b' ') {
                i += 1;
            }
            if b.get(i) == Some(&b'}') {
                i += 1;
                break;
            }
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let name = &line[start..i];
            if name.is_empty() || b.get(i) != Some(&b'=') || b.get(i + 1) != Some(&b'"') {
                return Err(format!("bad label at byte {start}"));
            }
            i += 2;
            let mut value = String::new();
            loop {
                match b.get(i) {
                    None => return Err("unterminated label value".into()),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        match b.get(i + 1) {
                            Some(b'n') => value.push('\n'),
                            Some(b'\\') => value.push('\\'),
                            Some(b'"') => value.push('"'),
                            _ => return Err(format!("bad escape at byte {i}")),
                        }
                        i += 2;
                    }
                    Some(_) => {
                        // Copy one UTF-8 character.
                        let ch = line[i..].chars().next().ok_or("bad UTF-8")?;
                        value.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            labels.push((name.to_string(), value));
            while b.get(i) == Some(&b' ') {
                i += 1;
            }
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {}
                _ => return Err(format!("expected ',' or '}}' at byte {i}")),
            }
        }
    }
    let mut rest = line[i..].split_ascii_whitespace();
    let v = rest
        .next()
        .and_then(parse_value)
        .ok_or("missing or bad value")?;
    let t = match rest.next() {
        Some(ts) if ts_seconds => {
            let secs: f64 = ts.parse().map_err(|_| format!("bad timestamp {ts:?}"))?;
            if !secs.is_finite() {
                return Err(format!("bad timestamp {ts:?}"));
            }
            (secs * 1000.0).round() as i64
        }
        Some(ts) => ts
            .parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?,
        None => now_ms,
    };
    if rest.next().is_some() {
        return Err("trailing characters".into());
    }
    Ok((labels, t, v))
}

/// Parses the Prometheus text format (comments and blank lines skipped); timestamps in ms.
pub fn parse_exposition(body: &str, now_ms: i64) -> Parsed {
    parse_text(body, now_ms, false)
}

/// Parses OpenMetrics text: like [`parse_exposition`], timestamps in (fractional) seconds.
pub fn parse_openmetrics(body: &str, now_ms: i64) -> Parsed {
    parse_text(body, now_ms, true)
}

fn parse_text(body: &str, now_ms: i64, ts_seconds: bool) -> Parsed {
    let mut p = Parsed::default();
    let mut map = HashMap::new();
    for (n, line) in body.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_exposition_line(line, now_ms, ts_seconds) {
            Ok((labels, t, v)) => push(&mut map, &mut p.series, labels, t, v),
            Err(e) => p.errors.push(format!("line {}: {e}", n + 1)),
        }
    }
    p
}

async fn store(state: Arc<AppState>, parsed: Parsed) -> Response {
    let limits = &state.config.limits;
    let n_samples: usize = parsed.series.iter().map(|s| s.samples.len()).sum();
    if parsed.series.len() > limits.max_series_per_request
        || n_samples > limits.max_samples_per_request
    {
        state
            .metrics
            .rejected("request_too_large", n_samples as u64);
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too many series or samples in one request",
        );
    }
    let st = Arc::clone(&state);
    let req = WriteRequest {
        timeseries: parsed.series,
        metadata: Vec::new(),
    };
    let res = tokio::task::spawn_blocking(move || {
        let limits = st.config.label_limits();
        ingest(&st, req, &limits)
    })
    .await;
    match res {
        Ok(Ok(got)) => {
            state.metrics.ingested(&got);
            state.metrics.skipped_strings(parsed.skipped_strings);
            match parsed.errors.first().cloned().or(got.first_error) {
                None => StatusCode::NO_CONTENT.into_response(),
                Some(e) => text(StatusCode::BAD_REQUEST, e),
            }
        }
        Ok(Err(e)) => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The body as text: gunzipped first if `Content-Encoding: gzip` (Telegraf and the InfluxDB
/// clients compress by default), never more than `max` bytes after decompression.
pub fn body_text(
    headers: &HeaderMap,
    body: &[u8],
    max: usize,
) -> Result<String, (StatusCode, String)> {
    use std::io::Read;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let bytes = match encoding.as_deref() {
        None | Some("" | "identity") => body.to_vec(),
        Some("gzip" | "x-gzip") => {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(body)
                .take(max as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| (StatusCode::BAD_REQUEST, format!("gzip: {e}")))?;
            if out.len() > max {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("decompressed body exceeds the limit of {max} bytes"),
                ));
            }
            out
        }
        Some(other) => {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Encoding {other:?} (gzip or none)"),
            ))
        }
    };
    String::from_utf8(bytes)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("body is not UTF-8: {e}")))
}

/// Decodes and parses a body off the async workers (a large gzipped body takes a while).
async fn parse_off_thread(
    state: &AppState,
    headers: HeaderMap,
    body: axum::body::Bytes,
    parse: impl FnOnce(&str) -> Parsed + Send + 'static,
) -> Result<Parsed, Response> {
    let max = state.config.limits.max_decompressed_bytes;
    tokio::task::spawn_blocking(move || body_text(&headers, &body, max).map(|b| parse(&b)))
        .await
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|(status, msg)| text(status, msg))
}

/// `POST /write` (InfluxDB 1.x) and `POST /api/v2/write`.
pub async fn influx_write(
    State(state): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let p = Params::parse(q.as_deref(), None);
    let unit_ns = match p.get("precision").unwrap_or("ns") {
        "ns" | "n" => 1,
        "us" | "u" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        other => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("unknown precision {other:?}"),
            )
        }
    };
    let now = chrono::Utc::now().timestamp_millis();
    match parse_off_thread(&state, headers, body, move |b| {
        parse_line_protocol(b, unit_ns, now)
    })
    .await
    {
        Ok(parsed) => store(state, parsed).await,
        Err(r) => r,
    }
}

/// `POST /api/v1/import/prometheus`.
pub async fn import_prometheus(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let now = chrono::Utc::now().timestamp_millis();
    match parse_off_thread(&state, headers, body, move |b| parse_exposition(b, now)).await {
        Ok(parsed) => store(state, parsed).await,
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(p: &Parsed) -> Vec<(Pairs, Vec<(i64, f64)>)> {
        p.series
            .iter()
            .map(|s| {
                (
                    s.labels
                        .iter()
                        .map(|l| (l.name.clone(), l.value.clone()))
                        .collect(),
                    s.samples.iter().map(|x| (x.timestamp, x.value)).collect(),
                )
            })
            .collect()
    }

    fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn line_protocol_maps_fields_to_series_like_victoriametrics() {
        let body =
            "cpu,host=a,region=eu-1 usage=1.5,count=3i,up=true,note=\"x\" 1700000000000000000\n\
                    cpu,host=a,region=eu-1 usage=2 1700000015000000000\nbad line here\n";
        let p = parse_line_protocol(body, 1, 0);
        assert_eq!(p.skipped_strings, 1);
        assert_eq!(p.errors.len(), 1);
        let got = flat(&p);
        assert_eq!(
            got[0],
            (
                l(&[("__name__", "cpu_usage"), ("host", "a"), ("region", "eu-1")]),
                vec![(1_700_000_000_000, 1.5), (1_700_000_015_000, 2.0)]
            )
        );
        assert_eq!(got[1].1, vec![(1_700_000_000_000, 3.0)]);
        assert_eq!(got[2].1, vec![(1_700_000_000_000, 1.0)]);
        // Precision and a missing timestamp.
        let p = parse_line_protocol("m,a-b=1 v=1 17\nm v=2", 1_000_000_000, 99);
        let got = flat(&p);
        assert_eq!(got[0].0, l(&[("__name__", "m_v"), ("a_b", "1")]));
        assert_eq!(got[0].1, vec![(17_000, 1.0)]);
        assert_eq!(got[1].1, vec![(99, 2.0)]);
        // Hours since the epoch that overflow milliseconds are refused, not wrapped.
        let p = parse_line_protocol("m v=1 9223372036854775807", 3_600_000_000_000, 0);
        assert!(p.series.is_empty());
        assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    }

    #[test]
    fn exposition_format_with_and_without_timestamps() {
        let body =
            "# HELP up Up.\n# TYPE up gauge\nup{job=\"a\",instance=\"x:1\"} 1 1700000000000\n\
                    up{job=\"a\",instance=\"x:1\"} 0 1700000015000\nhttp_total 5\n\
                    esc{v=\"a\\\"b\\\\c\\nd\"} +Inf\nbroken{x=} 1\n";
        let p = parse_exposition(body, 42);
        assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
        let got = flat(&p);
        assert_eq!(
            got[0].0,
            l(&[("__name__", "up"), ("instance", "x:1"), ("job", "a")])
        );
        assert_eq!(
            got[0].1,
            vec![(1_700_000_000_000, 1.0), (1_700_000_015_000, 0.0)]
        );
        assert_eq!(got[1].1, vec![(42, 5.0)]);
        assert_eq!(got[2].0[1], ("v".to_string(), "a\"b\\c\nd".to_string()));
        assert_eq!(got[2].1[0].1, f64::INFINITY);
    }

    #[test]
    fn openmetrics_timestamps_are_seconds() {
        let p = parse_openmetrics("# TYPE a gauge\na{x=\"1\"} 2.5 1700000000.123\n# EOF\n", 0);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(flat(&p)[0].1, vec![(1_700_000_000_123, 2.5)]);
    }

    #[test]
    fn sanitizing_names() {
        assert_eq!(sanitize_name("host-name"), "host_name");
        assert_eq!(sanitize_name("1st"), "_1st");
        assert_eq!(sanitize_name(""), "_");
    }
}
