//! The server end to end through its router: remote write in, Prometheus API out, with
//! the limits and the token enforced.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use prost::Message;
use serde_json::Value;
use strata_server::prompb::{Label, Sample, TimeSeries, WriteRequest};
use strata_server::{router, AppState, Config};
use strata_tsdb::Tsdb;
use tower::ServiceExt;

fn state(dir: &std::path::Path, config: Config) -> Arc<AppState> {
    let mut opts = config.tsdb_options();
    opts.background = false;
    let tsdb = Tsdb::open(dir, opts).unwrap();
    Arc::new(AppState::new(tsdb, config))
}

fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: pairs
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|&(timestamp, value)| Sample { value, timestamp })
            .collect(),
        ..TimeSeries::default()
    }
}

fn write_body(ts: Vec<TimeSeries>) -> Vec<u8> {
    let raw = WriteRequest {
        timeseries: ts,
        metadata: vec![],
    }
    .encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&raw).unwrap()
}

async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn write_req(body: Vec<u8>) -> Request<Body> {
    Request::post("/api/v1/write")
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .header(header::CONTENT_ENCODING, "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(Body::from(body))
        .unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn remote_write_then_query_series_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), Config::default());
    let app = router(Arc::clone(&st));

    let t0 = 1_700_000_000_000i64;
    let body = write_body(vec![
        series(
            &[("__name__", "up"), ("job", "node"), ("instance", "a")],
            &[(t0, 1.0), (t0 + 15_000, 1.0)],
        ),
        series(
            &[("__name__", "up"), ("job", "node"), ("instance", "b")],
            &[(t0, 0.0)],
        ),
        series(
            &[("__name__", "http_requests_total"), ("job", "api")],
            &[(t0, 10.0), (t0 + 15_000, 25.0), (t0 + 30_000, 40.0)],
        ),
    ]);
    let (status, msg) = send(&app, write_req(body)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{msg}");

    // Instant query.
    let (status, body) = send(&app, get("/api/v1/query?query=sum(up)&time=1700000015")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["resultType"], "vector");
    assert_eq!(
        v["data"]["result"][0]["value"],
        serde_json::json!([1700000015, "1"])
    );

    // Range query via POST form.
    let req = Request::post("/api/v1/query_range")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(
            "query=rate(http_requests_total%5B1m%5D)&start=1700000030&end=1700000030&step=15s",
        ))
        .unwrap();
    let (status, body) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["resultType"], "matrix");
    assert_eq!(v["data"]["result"][0]["metric"]["job"], "api");
    // 30 over 30 s, extrapolated by half an interval towards the window start: 37.5 / 60 s.
    assert_eq!(v["data"]["result"][0]["values"][0][1], "0.625");

    // Series, labels, values.
    let (_, body) = send(
        &app,
        get("/api/v1/series?match[]=up%7Binstance%3D%22b%22%7D"),
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["data"],
        serde_json::json!([{"__name__": "up", "instance": "b", "job": "node"}])
    );
    let (_, body) = send(&app, get("/api/v1/labels")).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["data"],
        serde_json::json!(["__name__", "instance", "job"])
    );
    let (_, body) = send(&app, get("/api/v1/label/job/values")).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"], serde_json::json!(["api", "node"]));
    let (_, body) = send(&app, get("/api/v1/status/tsdb")).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["headStats"]["numSeries"], 3);

    // Errors in Prometheus' shape.
    let (status, body) = send(&app, get("/api/v1/query?query=sum(")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "error");
    assert_eq!(v["errorType"], "bad_data");
    let (status, _) = send(
        &app,
        get("/api/v1/query_range?query=up&start=10&end=5&step=1"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = send(
        &app,
        get("/api/v1/query_range?query=up&start=0&end=100000&step=1"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "too many points");

    // Metrics count what came in.
    let (status, body) = send(&app, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("strata_samples_ingested_total 6"), "{body}");
    assert!(body.contains("strata_head_series 3"), "{body}");
    for name in [
        "strata_wal_fsyncs_total",
        "strata_wal_fsync_seconds_total",
        "strata_tsdb_compactions_total",
        "strata_partitions",
    ] {
        assert!(body.contains(&format!("# TYPE {name} ")), "{name} missing");
    }
}

#[tokio::test]
async fn bad_writes_are_refused_and_the_valid_part_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.limits.max_decompressed_bytes = 1 << 20;
    let st = state(dir.path(), config);
    let app = router(Arc::clone(&st));

    // Wrong encoding / content type.
    let req = Request::post("/api/v1/write")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let req = Request::post("/api/v1/write")
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from("x"))
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Not snappy, and snappy declaring far more than the limit.
    assert_eq!(
        send(&app, write_req(b"\xff\xff\xff\xff\x0fgarbage".to_vec()))
            .await
            .0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        send(&app, write_req(b"\x05ab".to_vec())).await.0,
        StatusCode::BAD_REQUEST
    );
    // Snappy around garbage protobuf.
    let junk = snap::raw::Encoder::new()
        .compress_vec(&[0x0a, 0xff, 0xff, 0xff, 0x7f])
        .unwrap();
    assert_eq!(send(&app, write_req(junk)).await.0, StatusCode::BAD_REQUEST);

    // One invalid series among valid ones: 400, the valid ones stored.
    let body = write_body(vec![
        series(&[("__name__", "ok"), ("a", "1")], &[(1000, 1.0)]),
        series(&[("__name__", "bad"), ("0invalid", "x")], &[(1000, 1.0)]),
        series(&[("no_name", "x")], &[(1000, 1.0)]),
    ]);
    let (status, msg) = send(&app, write_req(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(msg.contains("0invalid"), "{msg}");
    let (_, body) = send(
        &app,
        get("/api/v1/series?match[]=%7B__name__%3D~%22.%2B%22%7D"),
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"], serde_json::json!([{"__name__": "ok", "a": "1"}]));
}

#[tokio::test]
async fn the_token_guards_everything_but_health() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        auth_token: Some("s3cret".into()),
        ..Config::default()
    };
    let st = state(dir.path(), config);
    let app = router(Arc::clone(&st));
    assert_eq!(send(&app, get("/-/healthy")).await.0, StatusCode::OK);
    assert_eq!(
        send(&app, get("/api/v1/labels")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, get("/metrics")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let req = Request::get("/api/v1/labels")
        .header(header::AUTHORIZATION, "Bearer wrong")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::UNAUTHORIZED);
    let req = Request::get("/api/v1/labels")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::OK);
    // InfluxDB 2 clients' scheme for the same token.
    let req = Request::post("/api/v2/write?precision=s")
        .header(header::AUTHORIZATION, "Token s3cret")
        .body(Body::from("m,a=b f=1 1700000000\n"))
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::NO_CONTENT);
    let req = Request::post("/api/v2/write?precision=s")
        .header(header::AUTHORIZATION, "Token wrong")
        .body(Body::from("m,a=b f=1 1700000000\n"))
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(&app, write_req(write_body(vec![]))).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn bodies_past_the_limit_get_413() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.limits.max_body_bytes = 1024;
    let st = state(dir.path(), config);
    let app = router(Arc::clone(&st));
    let (status, _) = send(&app, write_req(vec![0u8; 4096])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

fn read_req(types: Vec<i32>) -> Request<Body> {
    use strata_server::prompb::{LabelMatcher, Query, ReadRequest};
    let raw = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: 0,
            end_timestamp_ms: 10_000_000,
            matchers: vec![LabelMatcher {
                r#type: 0,
                name: "__name__".into(),
                value: "m".into(),
            }],
        }],
        accepted_response_types: types,
    }
    .encode_to_vec();
    Request::post("/api/v1/read")
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .header(header::CONTENT_ENCODING, "snappy")
        .body(Body::from(
            snap::raw::Encoder::new().compress_vec(&raw).unwrap(),
        ))
        .unwrap()
}

#[tokio::test]
async fn remote_read_answers_samples_and_streamed_chunks() {
    use strata_server::prompb::{ChunkedReadResponse, ReadResponse};
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), Config::default());
    let app = router(Arc::clone(&st));
    let samples: Vec<(i64, f64)> = (0..300).map(|i| (i * 15_000, i as f64 * 0.5)).collect();
    let body = write_body(vec![series(&[("__name__", "m"), ("k", "v")], &samples)]);
    assert_eq!(send(&app, write_req(body)).await.0, StatusCode::NO_CONTENT);

    // SAMPLES (also the default when the client names no type).
    let resp = app.clone().oneshot(read_req(vec![])).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_ENCODING], "snappy");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
    let rr = ReadResponse::decode(raw.as_slice()).unwrap();
    let ts = &rr.results[0].timeseries[0];
    assert_eq!(ts.labels.len(), 2);
    assert_eq!(ts.samples.len(), 300);
    assert_eq!(
        (ts.samples[7].timestamp, ts.samples[7].value),
        (105_000, 3.5)
    );

    // STREAMED_XOR_CHUNKS preferred.
    let resp = app.clone().oneshot(read_req(vec![1, 0])).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/x-streamed-protobuf"));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    // One frame: uvarint length, CRC32C (big-endian), message.
    let (mut len, mut shift, mut i) = (0usize, 0, 0);
    loop {
        let b = body[i];
        len |= usize::from(b & 0x7f) << shift;
        i += 1;
        if b < 0x80 {
            break;
        }
        shift += 7;
    }
    let crc = u32::from_be_bytes(body[i..i + 4].try_into().unwrap());
    let msg = &body[i + 4..i + 4 + len];
    assert_eq!(crc, crc32c::crc32c(msg));
    assert_eq!(i + 4 + len, body.len());
    let frame = ChunkedReadResponse::decode(msg).unwrap();
    let chunks = &frame.chunked_series[0].chunks;
    assert_eq!(chunks.len(), 3, "120 samples per chunk");
    assert_eq!(
        (chunks[0].min_time_ms, chunks[0].max_time_ms),
        (0, 119 * 15_000)
    );
    assert_eq!(
        u16::from_be_bytes([chunks[2].data[0], chunks[2].data[1]]),
        60
    );
}

#[tokio::test]
async fn line_protocol_and_text_import_are_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), Config::default());
    let app = router(Arc::clone(&st));
    let req = Request::post("/api/v2/write?precision=s")
        .body(Body::from("weather,city=Oslo temp=-3.5,humidity=80i 1700000000\nweather,city=Rome temp=14 1700000000\n"))
        .unwrap();
    let (status, msg) = send(&app, req).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{msg}");
    let req = Request::post("/api/v1/import/prometheus")
        .body(Body::from(
            "# TYPE jobs gauge\njobs{queue=\"q1\"} 7 1700000000000\n",
        ))
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::NO_CONTENT);

    let (_, body) = send(
        &app,
        get("/api/v1/query?query=weather_temp&time=1700000010"),
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let res = v["data"]["result"].as_array().unwrap();
    assert_eq!(res.len(), 2, "{body}");
    assert_eq!(res[0]["metric"]["city"], "Oslo");
    assert_eq!(res[0]["value"][1], "-3.5");
    let (_, body) = send(
        &app,
        get("/api/v1/query?query=jobs%2Bweather_humidity*0&time=1700000010"),
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["data"]["result"].as_array().unwrap().len(),
        0,
        "no common labels: {body}"
    );
    let (_, body) = send(&app, get("/api/v1/query?query=jobs&time=1700000010")).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["result"][0]["value"][1], "7");

    // Malformed lines: 400, the good lines kept.
    let req = Request::post("/write")
        .body(Body::from("good v=1 1\nthis is not lp\n"))
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::BAD_REQUEST);
    let (_, body) = send(&app, get("/api/v1/series?match[]=good_v")).await;
    assert!(body.contains("good_v"), "{body}");
}

#[tokio::test]
async fn admin_delete_series_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let st = state(&dir.path().join("tsdb"), config);
    let app = router(Arc::clone(&st));
    let body = write_body(vec![
        series(
            &[("__name__", "x"), ("k", "1")],
            &[(1000, 1.0), (2000, 2.0)],
        ),
        series(&[("__name__", "x"), ("k", "2")], &[(1000, 1.0)]),
    ]);
    assert_eq!(send(&app, write_req(body)).await.0, StatusCode::NO_CONTENT);
    let req = Request::post(
        "/api/v1/admin/tsdb/delete_series?match[]=x%7Bk%3D%221%22%7D&start=0&end=1.5",
    )
    .body(Body::empty())
    .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::NO_CONTENT);
    let (_, body) = send(
        &app,
        get("/api/v1/query?query=count_over_time(x%5B1h%5D)&time=3"),
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let res = v["data"]["result"].as_array().unwrap();
    assert_eq!(res[0]["metric"]["k"], "1");
    assert_eq!(res[0]["value"][1], "1", "one sample left: {body}");
    assert_eq!(res[1]["value"][1], "1");

    let req = Request::post("/api/v1/admin/tsdb/snapshot")
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let name = v["data"]["name"].as_str().unwrap();
    let opts = strata_tsdb::Options {
        background: false,
        ..Default::default()
    };
    let copy = Tsdb::open(dir.path().join("snapshots").join(name), opts).unwrap();
    let got = copy
        .querier(0, 10_000)
        .select(&[strata_tsdb::Matcher::equal("__name__", "x")])
        .unwrap();
    assert_eq!(got.iter().map(|s| s.samples.len()).sum::<usize>(), 2);
}

#[tokio::test]
async fn basic_auth_is_accepted_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        basic_auth: Some("admin:pa:ss".into()),
        ..Config::default()
    };
    let st = state(dir.path(), config);
    let app = router(Arc::clone(&st));
    let with = |v: &str| {
        Request::get("/api/v1/labels")
            .header(header::AUTHORIZATION, v)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&app, get("/api/v1/labels")).await.0,
        StatusCode::UNAUTHORIZED
    );
    // base64("admin:pa:ss") = YWRtaW46cGE6c3M=; "admin:pa:st" = YWRtaW46cGE6c3Q=
    assert_eq!(
        send(&app, with("Basic YWRtaW46cGE6c3M=")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, with("Basic YWRtaW46cGE6c3Q=")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, with("Basic !!!")).await.0,
        StatusCode::UNAUTHORIZED
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn gzipped_line_protocol_is_accepted_as_telegraf_sends_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.limits.max_decompressed_bytes = 1 << 20;
    let st = state(dir.path(), config);
    let app = router(Arc::clone(&st));
    // Telegraf's influxdb output: POST /write?db=..., gzip by default, ns precision.
    let lines = "cpu,host=a,cpu=cpu0 usage_idle=97.5,usage_user=1.25 1700000000000000000\n";
    let req = Request::post("/write?db=telegraf")
        .header(header::CONTENT_ENCODING, "gzip")
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(gzip(lines.as_bytes())))
        .unwrap();
    let (status, msg) = send(&app, req).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{msg}");
    let (_, body) = send(
        &app,
        get("/api/v1/query?query=cpu_usage_idle&time=1700000010"),
    )
    .await;
    assert!(body.contains("\"97.5\""), "{body}");
    // So is a gzipped text import.
    let req = Request::post("/api/v1/import/prometheus")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(gzip(b"jobs{queue=\"q\"} 3 1700000000000\n")))
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::NO_CONTENT);

    // A gzip bomb stops at the decompressed limit; other encodings are refused; nothing of
    // either is stored.
    let bomb = gzip(&vec![b'#'; 4 << 20]);
    assert!(bomb.len() < 64 << 10);
    let req = Request::post("/write")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(bomb))
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    let req = Request::post("/api/v2/write")
        .header(header::CONTENT_ENCODING, "br")
        .body(Body::from("cpu,host=b usage_idle=1 1700000000000000000\n"))
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let req = Request::post("/write")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from("not gzip at all"))
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::BAD_REQUEST);
    let (_, body) = send(
        &app,
        get("/api/v1/query?query=count(cpu_usage_idle)&time=1700000010"),
    )
    .await;
    assert!(body.contains("\"1\""), "only host a: {body}");
}

#[tokio::test]
async fn endpoints_grafana_probes_answer_in_prometheus_shape() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), Config::default());
    let app = router(Arc::clone(&st));
    let (status, body) = send(
        &app,
        get("/api/v1/query_exemplars?query=up&start=1700000000&end=1700000100"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::json!({"status": "success", "data": []})
    );
    let (status, body) = send(&app, get("/api/v1/query_exemplars?query=up{")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("\"errorType\":\"bad_data\""), "{body}");
    let (_, body) = send(&app, get("/api/v1/rules")).await;
    assert!(body.contains("\"groups\":[]"), "{body}");
    let (_, body) = send(&app, get("/api/v1/alerts")).await;
    assert!(body.contains("\"alerts\":[]"), "{body}");
    let req = Request::post("/api/v1/format_query")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("query=sum(rate(x%5B5m%5D))by(job)"))
        .unwrap();
    let (status, body) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"], "sum by (job) (rate(x[5m]))");
}
