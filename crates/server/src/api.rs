//! The Prometheus HTTP API: queries, series, labels, status. Responses follow Prometheus'
//! JSON shape exactly: sample values as strings (`"+Inf"`, `"NaN"`), times as Unix
//! seconds, `warnings`/`infos` when the engine reports any.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use promql_parser::parser::Expr;
use serde_json::{json, Map, Value as J};
use strata_promql::{QueryResult, Value};
use strata_tsdb::{Labels, Matcher};

use crate::error::ApiError;
use crate::params::{parse_duration, Params};
use crate::queryable::{convert_matchers, TsdbQueryable};
use crate::result_cache::ResultCache;
use crate::AppState;

/// Prometheus' cap on points per series of a range query.
const MAX_POINTS: i64 = 11_000;

/// Formats a sample value as Prometheus does (Go's `'f', -1` formatting).
pub fn format_value(v: f64) -> String {
    let mut out = String::new();
    push_value(&mut out, v);
    out
}

/// Appends a sample value as Prometheus writes it: Go's `strconv.FormatFloat(v, 'f', -1,
/// 64)`, the shortest decimal that reads back as `v`, never in exponent form.
fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        // Ryu finds the same shortest digits as `{}` several times faster, but writes
        // `1.0` for 1 and switches to exponent form far from 1: trim the one, fall back for
        // the other.
        let mut buf = ryu::Buffer::new();
        let s = buf.format_finite(v);
        if s.contains('e') {
            let _ = write!(out, "{v}");
        } else {
            out.push_str(s.strip_suffix(".0").unwrap_or(s));
        }
    }
}

fn success(data: J, warnings: &[String], infos: &[String]) -> Response {
    let mut body = Map::new();
    body.insert("status".into(), J::String("success".into()));
    body.insert("data".into(), data);
    if !warnings.is_empty() {
        body.insert("warnings".into(), json!(warnings));
    }
    if !infos.is_empty() {
        body.insert("infos".into(), json!(infos));
    }
    Json(J::Object(body)).into_response()
}

/// The request's parameters: URL query, plus the form body of a POST.
pub(crate) fn params(
    method: &Method,
    headers: &HeaderMap,
    query: Option<String>,
    body: &[u8],
) -> Params {
    let is_form = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let form = (*method == Method::POST && is_form).then_some(body);
    Params::parse(query.as_deref(), form)
}

/// Appends `s` as a JSON string.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a timestamp in seconds, exactly (ms / 1000 with up to three decimals).
fn push_time(out: &mut String, ms: i64) {
    if ms < 0 {
        out.push('-');
    }
    let abs = ms.unsigned_abs();
    let mut buf = itoa::Buffer::new();
    out.push_str(buf.format(abs / 1000));
    let frac = (abs % 1000) as u32;
    if frac != 0 {
        let digits = [
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        let len = if digits[2] != b'0' {
            3
        } else if digits[1] != b'0' {
            2
        } else {
            1
        };
        out.push('.');
        for &d in &digits[..len] {
            out.push(d as char);
        }
    }
}

/// Whether `s` goes between quotes as it is. No early exit: the loop runs on whole
/// vectors of bytes, and escapes are rare.
fn plain_json(s: &str) -> bool {
    let mut bad = false;
    for &b in s.as_bytes() {
        bad |= (b < 0x20) | (b == b'"') | (b == b'\\');
    }
    !bad
}

fn push_labels<'a>(out: &mut String, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    out.push('{');
    for (i, (k, v)) in pairs.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if plain_json(k) && plain_json(v) {
            // A pair at once, one reservation (half the instructions of a `/series`
            // answer were spent here, string by string).
            out.reserve(k.len() + v.len() + 5);
            out.push('"');
            out.push_str(k);
            out.push_str("\":\"");
            out.push_str(v);
            out.push('"');
        } else {
            push_json_str(out, k);
            out.push(':');
            push_json_str(out, v);
        }
    }
    out.push('}');
}

fn push_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    push_time(out, t);
    out.push_str(",\"");
    push_value(out, v);
    out.push_str("\"]");
}

/// Writes the `data` member of a query answer as JSON text (no intermediate tree: a range
/// query answer can hold millions of points).
pub fn write_result(r: &QueryResult, out: &mut String) {
    if let Value::Matrix(m) = &r.value {
        // About 32 bytes a point and 100 a series: one allocation instead of doublings.
        let points: usize = m.iter().map(|s| s.samples.len()).sum();
        out.reserve(points * 32 + m.len() * 100);
    }
    match &r.value {
        Value::Scalar { t, v } => {
            out.push_str("{\"resultType\":\"scalar\",\"result\":");
            push_point(out, *t, *v);
            out.push('}');
        }
        Value::String(s) => {
            out.push_str("{\"resultType\":\"string\",\"result\":[null,");
            push_json_str(out, s);
            out.push_str("]}");
        }
        Value::Vector(v) => {
            out.push_str("{\"resultType\":\"vector\",\"result\":[");
            for (i, e) in v.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                push_labels(out, e.labels.iter());
                out.push_str(",\"value\":");
                push_point(out, e.t, e.v);
                out.push('}');
            }
            out.push_str("]}");
        }
        Value::Matrix(m) => {
            out.push_str("{\"resultType\":\"matrix\",\"result\":[");
            for (i, s) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                push_labels(out, s.labels.iter());
                out.push_str(",\"values\":[");
                for (j, p) in s.samples.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    push_point(out, p.t, p.v);
                }
                out.push_str("]}");
            }
            out.push_str("]}");
        }
    }
}

async fn run_query(
    state: Arc<AppState>,
    query: String,
    start: i64,
    end: i64,
    step: i64,
    instant: bool,
    use_cache: bool,
) -> Result<Response, ApiError> {
    let _permit = state
        .query_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::unavailable("server is shutting down"))?;
    let began = Instant::now();
    let st = Arc::clone(&state);
    let res = tokio::task::spawn_blocking(move || {
        let q = TsdbQueryable { db: &st.tsdb };
        let cache = &st.result_cache;
        let key = (!instant && use_cache && cache.enabled())
            .then(|| ResultCache::key(&query, start, step))
            .flatten();
        if instant {
            st.engine.instant_query(&q, &query, start)
        } else if let Some(key) = key {
            let now = chrono::Utc::now().timestamp_millis();
            cache.range_query(key, &st.engine, &q, &st.tsdb, &query, start, end, step, now)
        } else {
            st.engine.range_query(&q, &query, start, end, step)
        }
    })
    .await
    .map_err(|e| ApiError::internal(format!("query task failed: {e}")))?;
    state.metrics.observe_query(began.elapsed(), res.is_ok());
    let r = res.map_err(ApiError::from_promql)?;
    let mut body = String::with_capacity(4096);
    body.push_str("{\"status\":\"success\",\"data\":");
    write_result(&r, &mut body);
    for (key, list) in [("warnings", &r.warnings), ("infos", &r.infos)] {
        if !list.is_empty() {
            let _ = write!(body, ",\"{key}\":{}", json!(list));
        }
    }
    body.push('}');
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// The request's parameters as an extractor: the URL query, plus a form body on POST.
pub struct ApiParams(pub Params);

impl<S: Send + Sync> axum::extract::FromRequest<S> for ApiParams {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let method = req.method().clone();
        let headers = req.headers().clone();
        let query = req.uri().query().map(str::to_string);
        let body = <axum::body::Bytes as axum::extract::FromRequest<S>>::from_request(req, state)
            .await
            .map_err(|e| ApiError {
                status: e.status(),
                error_type: "bad_data",
                message: e.body_text(),
            })?;
        Ok(ApiParams(params(&method, &headers, query, &body)))
    }
}

/// The required `query` parameter.
fn query_param(p: &Params) -> Result<String, ApiError> {
    p.get("query")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": missing or empty"))
}

/// `GET|POST /api/v1/query`.
pub async fn query(
    State(state): State<Arc<AppState>>,
    ApiParams(p): ApiParams,
) -> Result<Response, ApiError> {
    let expr = query_param(&p)?;
    let now = chrono::Utc::now().timestamp_millis();
    let t = p.time("time", now)?;
    run_query(state, expr, t, t, 1, true, false).await
}

/// `GET|POST /api/v1/query_range`.
pub async fn query_range(
    State(state): State<Arc<AppState>>,
    ApiParams(p): ApiParams,
) -> Result<Response, ApiError> {
    let expr = query_param(&p)?;
    let start = p
        .get("start")
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"start\": missing"))
        .and_then(|_| p.time("start", 0))?;
    let end = p
        .get("end")
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"end\": missing"))
        .and_then(|_| p.time("end", 0))?;
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = p
        .get("step")
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"step\": missing"))
        .and_then(|s| {
            parse_duration(s)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter \"step\": {e}")))
        })?;
    if step <= 0 {
        return Err(ApiError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step > MAX_POINTS {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    // `nocache=1` bypasses the result cache, as VictoriaMetrics'.
    let use_cache = !matches!(p.get("nocache"), Some("1" | "true"));
    run_query(state, expr, start, end, step, false, use_cache).await
}

/// Parses `match[]` selectors into matcher sets.
/// Parses `match[]` selectors into matcher sets (`{a="1" or b="2"}` gives two sets).
pub fn selectors(p: &Params) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let mut out = Vec::new();
    for s in p.all("match[]") {
        match bare_metric_name(s) {
            Some(m) => out.push(vec![m]),
            None => parse_selector(s, &mut out)?,
        }
    }
    Ok(out)
}

/// Appends the matcher sets of selector `s`, read by the PromQL parser.
fn parse_selector(s: &str, out: &mut Vec<Vec<Matcher>>) -> Result<(), ApiError> {
    {
        let expr = promql_parser::parser::parse(s)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"match[]\": {e}")))?;
        let Expr::VectorSelector(vs) = expr else {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"match[]\": {s:?} is not a series selector"
            )));
        };
        let mut ms = vs.matchers.matchers.clone();
        if let Some(name) = &vs.name {
            if !ms.iter().any(|m| m.name == "__name__") {
                ms.push(promql_parser::label::Matcher::new(
                    promql_parser::label::MatchOp::Equal,
                    "__name__",
                    name,
                ));
            }
        }
        if !vs.matchers.or_matchers.is_empty() {
            for alt in &vs.matchers.or_matchers {
                out.push(convert_matchers(alt).map_err(|e| ApiError::bad_data(e.to_string()))?);
            }
            return Ok(());
        }
        out.push(convert_matchers(&ms).map_err(|e| ApiError::bad_data(e.to_string()))?);
    }
    Ok(())
}

/// The words promql-parser (0.11) looks up as keywords, aggregators, operators or numbers
/// (its `token::KEYWORDS`, which it does not export): a selector of one of them, in any
/// case, is left to the parser (which still reads some, `and` say, as a metric name).
/// Re-check on a parser upgrade.
const PARSER_WORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "atan2",
    "sum",
    "avg",
    "count",
    "min",
    "max",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "count_values",
    "quantile",
    "limitk",
    "limit_ratio",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "smoothed",
    "anchored",
    "fill",
    "fill_left",
    "fill_right",
    "start",
    "end",
    "nan",
    "inf",
];

/// The matcher of a selector that is only a metric name (`node_load1`, the common
/// `match[]`), read without the PromQL parser (~35 us a call, ~170 us the first). `None`
/// for anything else, keywords and number words included, which the parser then reads.
fn bare_metric_name(s: &str) -> Option<Matcher> {
    let b = s.as_bytes();
    let first_ok = b
        .first()
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_' || *c == b':');
    if !first_ok
        || !b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
    {
        return None;
    }
    if s.len() <= 12 && PARSER_WORDS.iter().any(|w| w.eq_ignore_ascii_case(s)) {
        return None;
    }
    Some(Matcher::equal("__name__", s))
}

fn range(p: &Params) -> Result<(i64, i64), ApiError> {
    Ok((p.time("start", i64::MIN / 2)?, p.time("end", i64::MAX / 2)?))
}

/// `GET|POST /api/v1/series`.
pub async fn series(
    State(state): State<Arc<AppState>>,
    ApiParams(p): ApiParams,
) -> Result<Response, ApiError> {
    let sets = selectors(&p)?;
    if sets.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let (start, end) = range(&p)?;
    let limit = p
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    // Small answers (one selector, few series, bounds in memory) are written here, on
    // the async worker: no hand-off to the blocking pool and back (two thread wake-ups,
    // milliseconds each when the machine is busy).
    let inline = match sets.as_slice() {
        [_] => series_body(&state, &sets, start, end, limit, INLINE_MAX_SERIES)?,
        _ => None,
    };
    let body = match inline {
        Some(body) => body,
        None => {
            let st = Arc::clone(&state);
            tokio::task::spawn_blocking(move || {
                series_body(&st, &sets, start, end, limit, usize::MAX)
            })
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??
            .unwrap_or_default()
        }
    };
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// Series selected (head and partitions, before the range check) up to which a
/// `/api/v1/series` request of one selector is answered on the async worker.
const INLINE_MAX_SERIES: usize = 2048;

/// The JSON answer of a series request; `None` (for one selector) if it selects more
/// than `max_refs` series or needs key-value seeks per series.
fn series_body(
    st: &AppState,
    sets: &[Vec<Matcher>],
    start: i64,
    end: i64,
    limit: Option<usize>,
    max_refs: usize,
) -> Result<Option<String>, ApiError> {
    // Written as text, as query answers are: no JSON tree of every label set. One
    // selector's answer comes sorted and unique, written as it is visited.
    let q = st.tsdb.querier(start, end);
    let mut body = String::with_capacity(4096);
    body.push_str("{\"status\":\"success\",\"data\":[");
    let max = limit.unwrap_or(usize::MAX);
    let mut put = |i: usize, l: &Labels| {
        if i < max {
            if i > 0 {
                body.push(',');
            }
            push_labels(
                &mut body,
                l.iter().map(|x| (x.name.as_str(), x.value.as_str())),
            );
        }
    };
    let n = if let [ms] = sets {
        let mut i = 0;
        let n = q.for_each_series_within(ms, max_refs, |l| {
            put(i, l);
            i += 1;
        })?;
        match n {
            Some(n) => n,
            None => return Ok(None),
        }
    } else {
        let mut all = std::collections::BTreeSet::new();
        for ms in sets {
            all.extend(q.series(ms)?);
        }
        for (i, l) in all.iter().enumerate() {
            put(i, l);
        }
        all.len()
    };
    body.push(']');
    if limit.is_some_and(|l| n > l) {
        body.push_str(",\"warnings\":[\"results truncated due to limit\"]");
    }
    body.push('}');
    Ok(Some(body))
}

/// A label-values request without matchers that reads at most this many index keys is
/// answered on the async worker that received it: no hand-off to the blocking pool and
/// back (two thread wake-ups, which cost more than the answer). The keys are read in
/// order from few blocks; a label with more keys is read again on the blocking pool.
const INLINE_MAX_KEYS: usize = 4096;

async fn names_or_values(
    state: Arc<AppState>,
    p: Params,
    name: Option<String>,
) -> Result<Response, ApiError> {
    let sets = selectors(&p)?;
    let (start, end) = range(&p)?;
    let limit = p
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let inline = match &name {
        Some(n) if sets.is_empty() => state
            .tsdb
            .querier(start, end)
            .label_values_within(n, INLINE_MAX_KEYS)?,
        _ => None,
    };
    let out = match inline {
        Some(out) => out,
        None => {
            let st = Arc::clone(&state);
            tokio::task::spawn_blocking(move || -> Result<Vec<String>, ApiError> {
                let q = st.tsdb.querier(start, end);
                let get = |ms: &[Matcher]| match &name {
                    Some(n) => q.label_values(n, ms),
                    None => q.label_names(ms),
                };
                // One answer comes sorted and unique; several are merged.
                if sets.len() <= 1 {
                    return Ok(get(sets.first().map_or(&[][..], Vec::as_slice))?);
                }
                let mut all = std::collections::BTreeSet::new();
                for ms in &sets {
                    all.extend(get(ms)?);
                }
                Ok(all.into_iter().collect())
            })
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??
        }
    };
    // Written as text: no JSON tree of the strings.
    let shown = limit.map_or(out.len(), |l| l.min(out.len()));
    let mut body =
        String::with_capacity(64 + out[..shown].iter().map(|s| s.len() + 3).sum::<usize>());
    body.push_str("{\"status\":\"success\",\"data\":[");
    for (i, s) in out[..shown].iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        push_json_str(&mut body, s);
    }
    body.push(']');
    if shown < out.len() {
        body.push_str(",\"warnings\":[\"results truncated due to limit\"]");
    }
    body.push('}');
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// `GET|POST /api/v1/labels`.
pub async fn labels(
    State(state): State<Arc<AppState>>,
    ApiParams(p): ApiParams,
) -> Result<Response, ApiError> {
    names_or_values(state, p, None).await
}

/// `GET /api/v1/label/<name>/values`.
pub async fn label_values(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    // UTF-8 names may come escaped as `U__...` (Prometheus 3); plain names are the norm.
    if !strata_tsdb::labels::is_valid_label_name(&name) {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let p = Params::parse(q.as_deref(), None);
    names_or_values(state, p, Some(name)).await
}

fn top_json(v: &[(String, u64)]) -> J {
    J::Array(
        v.iter()
            .map(|(n, c)| json!({"name": n, "value": c}))
            .collect(),
    )
}

/// `GET /api/v1/status/tsdb`.
pub async fn status_tsdb(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let st = Arc::clone(&state);
    let s = tokio::task::spawn_blocking(move || st.tsdb.stats())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let data = json!({
        "headStats": {
            "numSeries": s.head_series,
            "numLabelPairs": s.series_count_by_label_value_pair.len(),
            "chunkCount": s.head_chunks,
            "minTime": s.min_time.unwrap_or(0),
            "maxTime": s.max_time.unwrap_or(0),
        },
        "seriesCountByMetricName": top_json(&s.series_count_by_metric_name),
        "labelValueCountByLabelName": top_json(&s.label_value_count_by_label_name),
        "memoryInBytesByLabelName": top_json(&s.memory_in_bytes_by_label_name),
        "seriesCountByLabelValuePair": top_json(&s.series_count_by_label_value_pair),
    });
    Ok(success(data, &[], &[]))
}

/// `GET /api/v1/status/buildinfo`.
pub async fn buildinfo() -> Response {
    success(
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "revision": "",
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "rust",
        }),
        &[],
        &[],
    )
}

/// `GET /api/v1/metadata`: Strata keeps no metric metadata yet; an empty map, as Prometheus
/// answers for unknown metrics.
pub async fn metadata() -> Response {
    success(json!({}), &[], &[])
}

/// `POST|PUT /api/v1/admin/tsdb/delete_series?match[]=..&start=..&end=..`: 204.
pub async fn delete_series(
    State(state): State<Arc<AppState>>,
    ApiParams(p): ApiParams,
) -> Result<Response, ApiError> {
    let sets = selectors(&p)?;
    if sets.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let (start, end) = range(&p)?;
    let st = Arc::clone(&state);
    let deleted = tokio::task::spawn_blocking(move || -> Result<u64, ApiError> {
        let mut n = 0;
        for ms in &sets {
            n += st.tsdb.delete_series(ms, start, end)?;
        }
        Ok(n)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    tracing::info!(deleted, start, end, "deleted series samples");
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// `POST|PUT /api/v1/admin/tsdb/snapshot`: a consistent copy under `<data-dir>/snapshots/`.
pub async fn snapshot(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let name = chrono::Utc::now().format("%Y%m%dT%H%M%SZ-%f").to_string();
    let dir = state.config.data_dir.join("snapshots").join(&name);
    let st = Arc::clone(&state);
    tokio::task::spawn_blocking(move || st.tsdb.snapshot(&dir))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(success(json!({ "name": name }), &[], &[]))
}

/// `POST /api/v1/admin/tsdb/flush`: persists the head now (like VictoriaMetrics'
/// `/internal/force_flush`).
pub async fn flush(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let st = Arc::clone(&state);
    tokio::task::spawn_blocking(move || st.tsdb.flush())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/admin/tsdb/compact`: flushes, then compacts every partition written since
/// its last compaction (like VictoriaMetrics' `/internal/force_merge`).
pub async fn compact(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let st = Arc::clone(&state);
    let c = tokio::task::spawn_blocking(move || -> Result<_, strata_tsdb::Error> {
        let c = st.tsdb.compact()?;
        st.tsdb.kv().compact_range::<&[u8]>(..)?;
        Ok(c)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(success(
        json!({
            "partitions": c.partitions,
            "series": c.series,
            "chunksBefore": c.chunks_before,
            "chunksAfter": c.chunks_after,
            "bytesBefore": c.bytes_before,
            "bytesAfter": c.bytes_after,
        }),
        &[],
        &[],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_sets_write_as_serde_json_writes_them() {
        let sets: &[&[(&str, &str)]] = &[
            &[],
            &[("__name__", "up"), ("job", "node")],
            &[
                ("a", "q\"uote"),
                ("b", "back\\slash"),
                ("c", "nl\n\u{1}"),
                ("d", "é€"),
            ],
            &[("x", "0123456789abcdef0123456789abcdef\"tail")],
        ];
        for pairs in sets {
            let mut out = String::new();
            push_labels(&mut out, pairs.iter().copied());
            let want: Map<String, J> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), J::String(v.to_string())))
                .collect();
            let got: J = serde_json::from_str(&out).unwrap();
            assert_eq!(got, J::Object(want), "{out}");
        }
    }

    #[test]
    fn bare_metric_names_read_as_the_parser_reads_them() {
        let names = [
            "node_load1",
            "up",
            "a:b_c",
            "_x",
            ":y",
            "rate",
            "sum_x",
            "sum",
            "SUM",
            "Sum",
            "by",
            "offset",
            "count_values",
            "nan",
            "NaN",
            "Inf",
            "inf",
            "start",
            "end",
            "bool",
            "1abc",
            "a-b",
            "a{}",
            "a{b=\"c\"}",
            "{__name__=\"x\"}",
            "a b",
            "",
        ];
        for s in names {
            let p = Params(vec![("match[]".into(), s.into())]);
            // Taken without the parser only where the parser reads a selector of just
            // that name (else the parser's answer stands, error or not).
            if let Some(m) = bare_metric_name(s) {
                let mut parsed = Vec::new();
                parse_selector(s, &mut parsed).unwrap();
                assert_eq!(parsed, vec![vec![m]], "{s:?}");
                assert_eq!(selectors(&p).unwrap(), parsed, "{s:?}");
            }
        }
        assert!(bare_metric_name("node_load1").is_some());
        assert!(bare_metric_name("Sum").is_none());
    }

    #[test]
    fn values_and_times_format_as_prometheus() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        for (ms, want) in [
            (1_435_781_451_781, "1435781451.781"),
            (1_435_781_451_000, "1435781451"),
            (1_435_781_451_500, "1435781451.5"),
        ] {
            let mut s = String::new();
            push_time(&mut s, ms);
            assert_eq!(s, want);
        }
        let mut s = String::new();
        push_time(&mut s, -1_500);
        assert_eq!(s, "-1.5");
        let mut s = String::new();
        push_time(&mut s, -500);
        assert_eq!(s, "-0.5");
        for v in [
            -0.0,
            1e-7,
            123456.789,
            1e15,
            1e16,
            1.5e300,
            -2.5e-300,
            f64::MIN_POSITIVE,
        ] {
            assert_eq!(format_value(v), format!("{v}"), "{v:e}");
        }
        // As many digits as Rust's `{}` for any bit pattern, and back to the same bits.
        // (Where two shortest strings are equally close, Ryu and Go round half to even:
        // 1658206780088562.25 is "1658206780088562.2", Rust's `{}` writes ".3".)
        let tie = 1658206780088562.0 + 0.25;
        assert_eq!(format_value(tie), "1658206780088562.2");
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x);
            if v.is_finite() {
                let got = format_value(v);
                assert_eq!(got.len(), format!("{v}").len(), "{v:e}");
                assert_eq!(
                    got.parse::<f64>().map(f64::to_bits),
                    Ok(v.to_bits()),
                    "{v:e}"
                );
            }
            let small = (x % 1_000_000_000) as f64 / 1000.0;
            assert_eq!(format_value(small), format!("{small}"));
        }
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\u{1}");
        assert_eq!(s, r#""a\"b\\c\nd\u0001""#);
        let parsed: J = serde_json::from_str(&s).unwrap();
        assert_eq!(parsed, "a\"b\\c\nd\u{1}");
    }
}
