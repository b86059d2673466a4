//! The server's decoders of client bytes, fed random bytes and random mutations of valid
//! requests: remote write (snappy, protobuf, ingestion), remote read (both answer types),
//! InfluxDB line protocol and the Prometheus/OpenMetrics text formats. None panics; each
//! either refuses or decodes to something consistent. The short, fixed-seed companion of
//! the cargo-fuzz targets `remote_write`, `remote_read` and `text_formats` in `fuzz/` (see
//! docs/RELIABILITY.md).

use std::path::Path;
use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;
use strata_kv::fs::MemFs;
use strata_server::prompb::{
    Label, LabelMatcher, Query, ReadRequest, ReadResponse, Sample, TimeSeries, WriteRequest,
};
use strata_server::read::answer;
use strata_server::text::{parse_exposition, parse_line_protocol, parse_openmetrics, Parsed};
use strata_server::write::{ingest, snappy_decode};
use strata_server::{AppState, Config};
use strata_tsdb::{Labels, MatchOp, Matcher, Tsdb};

/// Runs `test` on `cases` values of `strategy` from this file's fixed seed.
fn check<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value))
where
    S::Value: std::fmt::Debug,
{
    strata_testkit::check(0x5e, cases, strategy, test)
}

use strata_testkit::mutate;

fn mutations() -> impl Strategy<Value = (Vec<(usize, u8)>, Option<usize>)> {
    (
        vec((any::<usize>(), any::<u8>()), 1..4),
        proptest::option::weighted(0.2, any::<usize>()),
    )
}

fn snappy(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(raw).unwrap()
}

fn state() -> AppState {
    let mut config = Config::default();
    config.limits.max_labels_per_series = 8;
    config.limits.max_active_series = Some(200);
    let mut opts = config.tsdb_options();
    opts.background = false;
    opts.kv.fs = Arc::new(MemFs::new());
    let tsdb = Tsdb::open(Path::new("/t"), opts).unwrap();
    AppState::new(tsdb, config)
}

fn label(name: &str, value: &str) -> Label {
    Label {
        name: name.into(),
        value: value.into(),
    }
}

fn sample_write() -> Vec<u8> {
    WriteRequest {
        timeseries: vec![
            TimeSeries {
                labels: vec![label("__name__", "up"), label("job", "a")],
                samples: vec![
                    Sample {
                        value: 1.0,
                        timestamp: 1_700_000_000_000,
                    },
                    Sample {
                        value: f64::NAN,
                        timestamp: 1_700_000_015_000,
                    },
                ],
                ..TimeSeries::default()
            },
            TimeSeries {
                labels: vec![label("job", "b"), label("__name__", "x_total")],
                samples: vec![Sample {
                    value: -2.5,
                    timestamp: 1_700_000_000_000,
                }],
                ..TimeSeries::default()
            },
        ],
        metadata: Vec::new(),
    }
    .encode_to_vec()
}

/// Decodes and ingests one remote-write body; every sample is stored or counted as
/// rejected, and a decoded request re-encodes stably.
fn check_write(state: &AppState, body: &[u8]) {
    let Ok(raw) = snappy_decode(body, 1 << 20) else {
        return;
    };
    let Ok(req) = WriteRequest::decode(raw.as_slice()) else {
        return;
    };
    let enc = req.encode_to_vec();
    let again = WriteRequest::decode(enc.as_slice()).expect("re-encoded request decodes");
    assert_eq!(again.encode_to_vec(), enc);
    let total: u64 = req.timeseries.iter().map(|t| t.samples.len() as u64).sum();
    let got = ingest(state, req, &state.config.label_limits()).expect("ingest");
    assert_eq!(
        got.samples + got.rejected_invalid + got.rejected_too_old + got.rejected_series_limit,
        total,
        "{got:?}"
    );
}

#[test]
fn remote_write_bodies_from_random_and_mutated_bytes() {
    let state = state();
    check(512, vec(any::<u8>(), 0..200), |data| {
        check_write(&state, &data);
        check_write(&state, &snappy(&data));
    });
    let base = sample_write();
    check(1024, mutations(), |(flips, cut)| {
        check_write(&state, &snappy(&mutate(&base, &flips, cut)))
    });
    let compressed = snappy(&base);
    check(512, mutations(), |(flips, cut)| {
        check_write(&state, &mutate(&compressed, &flips, cut))
    });
    // What was stored is well formed.
    let all = Matcher::new(MatchOp::RegexMatch, "__name__", ".+").unwrap();
    let stored = state
        .tsdb
        .querier(i64::MIN, i64::MAX)
        .select(&[all])
        .unwrap();
    assert!(!stored.is_empty());
    for s in stored {
        assert!(
            Labels::from_pairs(s.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
                .is_ok()
        );
    }
}

fn sample_read() -> Vec<u8> {
    ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: 1_699_999_000_000,
            end_timestamp_ms: 1_700_001_000_000,
            matchers: vec![
                LabelMatcher {
                    r#type: 0,
                    name: "__name__".into(),
                    value: "up".into(),
                },
                LabelMatcher {
                    r#type: 2,
                    name: "job".into(),
                    value: "a|b".into(),
                },
            ],
        }],
        accepted_response_types: vec![1, 0],
    }
    .encode_to_vec()
}

/// Answers one remote-read body both ways: both succeed or both fail with the same 4xx,
/// and the samples answer decodes with one result per query.
fn check_read(state: &AppState, body: &[u8]) {
    let Ok(raw) = snappy_decode(body, 1 << 20) else {
        return;
    };
    let Ok(req) = ReadRequest::decode(raw.as_slice()) else {
        return;
    };
    let again = ReadRequest::decode(req.encode_to_vec().as_slice()).expect("round trip");
    assert_eq!(again, req);
    match (
        answer(&state.tsdb, &req, false, 10_000),
        answer(&state.tsdb, &req, true, 10_000),
    ) {
        (Ok(plain), Ok(_)) => {
            let raw = snap::raw::Decoder::new().decompress_vec(&plain).unwrap();
            let resp = ReadResponse::decode(raw.as_slice()).unwrap();
            assert_eq!(resp.results.len(), req.queries.len());
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.0, b.0);
            assert!(a.0.is_client_error(), "{a:?}");
        }
        (a, b) => panic!("answers disagree: {:?} / {:?}", a.err(), b.err()),
    }
}

#[test]
fn remote_read_bodies_from_random_and_mutated_bytes() {
    let state = state();
    check_write(&state, &snappy(&sample_write()));
    check(512, vec(any::<u8>(), 0..120), |data| {
        check_read(&state, &data);
        check_read(&state, &snappy(&data));
    });
    let base = sample_read();
    check(1024, mutations(), |(flips, cut)| {
        check_read(&state, &snappy(&mutate(&base, &flips, cut)))
    });
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `(labels, (t, value bits with one NaN))` per series.
type Flat = Vec<(Vec<(String, String)>, Vec<(i64, u64)>)>;

fn flat(series: &[TimeSeries]) -> Flat {
    let canon = |v: f64| {
        if v.is_nan() {
            f64::NAN.to_bits()
        } else {
            v.to_bits()
        }
    };
    series
        .iter()
        .map(|s| {
            (
                s.labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect(),
                s.samples
                    .iter()
                    .map(|x| (x.timestamp, canon(x.value)))
                    .collect(),
            )
        })
        .collect()
}

/// The series written back as exposition text, if their names can be.
fn to_exposition(series: &[TimeSeries]) -> Option<String> {
    let metric = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
    };
    let mut out = String::new();
    for s in series {
        let at = s.labels.iter().position(|l| l.name == "__name__")?;
        let name = &s.labels[at].value;
        if !metric(name) {
            return None;
        }
        let lbl: Vec<String> = s
            .labels
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != at)
            .map(|(_, l)| format!("{}=\"{}\"", l.name, escape(&l.value)))
            .collect();
        for smp in &s.samples {
            out.push_str(&format!(
                "{name}{{{}}} {} {}\n",
                lbl.join(","),
                smp.value,
                smp.timestamp
            ));
        }
    }
    Some(out)
}

fn check_parsed(p: &Parsed) {
    for s in &p.series {
        assert!(!s.samples.is_empty());
        assert!(s.labels.iter().any(|l| l.name == "__name__"));
    }
    if let Some(text) = to_exposition(&p.series) {
        let again = parse_exposition(&text, 0);
        assert!(again.errors.is_empty(), "{:?} in\n{text}", again.errors);
        assert_eq!(
            flat(&again.series),
            flat(&p.series),
            "round trip through\n{text}"
        );
    }
}

/// Text built mostly from the characters that matter to the parsers.
fn text_strategy() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            4 => prop::sample::select(vec![
                'a', 'b', 'm', '_', ':', '0', '1', '9', '.', '-', '+', 'e', 'i', 'u', 'T',
                ' ', ',', '=', '"', '\\', '{', '}', '#', '\n', 'n', 'I', 'N', 'f',
            ]),
            1 => any::<char>(),
        ],
        0..80,
    )
    .prop_map(|c| c.into_iter().collect())
}

#[test]
fn text_formats_from_random_and_mutated_text() {
    check(2048, text_strategy(), |body| {
        check_parsed(&parse_line_protocol(&body, 1_000_000, 7));
        check_parsed(&parse_exposition(&body, 7));
        check_parsed(&parse_openmetrics(&body, 7));
    });
    let lp = "cpu,host=a,region=eu-1 usage=1.5,count=3i,up=true,note=\"x\" 1700000000000\n\
              mem,host=b free=2 1700000015000\nm v=-Inf";
    let expo = "# TYPE up gauge\nup{job=\"a\",instance=\"x:1\"} 1 1700000000000\n\
                esc{v=\"a\\\"b\\\\c\\nd\"} +Inf\nNaN_total NaN 5\n";
    for base in [lp, expo] {
        check(1024, mutations(), |(flips, cut)| {
            let bytes = mutate(base.as_bytes(), &flips, cut);
            let body = String::from_utf8_lossy(&bytes);
            check_parsed(&parse_line_protocol(&body, 1_000_000, 7));
            check_parsed(&parse_exposition(&body, 7));
            check_parsed(&parse_openmetrics(&body, 7));
        });
    }
}
