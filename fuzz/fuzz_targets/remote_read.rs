//! Prometheus remote read: snappy, protobuf decoding, matchers, and both answers
//! (`SAMPLES` and `STREAMED_XOR_CHUNKS`) over a small fixed store, as `POST /api/v1/read`.
//!
//! Input: a mode byte, then the body; with bit 0 set the body is the raw protobuf and is
//! snappy-compressed first, otherwise it is the compressed body as a client sends it.
//!
//! Oracles: a decoded request re-encodes stably; both response types succeed or fail
//! alike; the samples answer decodes, has one result per query, and each series matches its
//! query's matchers with sorted samples inside the query's range; the streamed answer is a
//! sequence of CRC-valid frames naming the same series in the same order, cut into chunks
//! of at most 120 samples whose counts and first/last timestamps are those of the samples.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use prost::Message;
use strata_kv::fs::MemFs;
use strata_server::prompb::{ChunkedReadResponse, ReadRequest, ReadResponse};
use strata_server::read::{answer, matchers};
use strata_server::write::snappy_decode;
use strata_tsdb::{FsyncPolicy, Labels, Options, Tsdb};

const MAX_SAMPLES: usize = 5_000;

fn store() -> &'static Tsdb {
    static STORE: OnceLock<Tsdb> = OnceLock::new();
    STORE.get_or_init(|| {
        let mut o = Options {
            wal_fsync: FsyncPolicy::Never,
            background: false,
            ..Options::default()
        };
        o.kv.fs = Arc::new(MemFs::new());
        let db = Tsdb::open(Path::new("/r"), o).expect("open");
        let mut app = db.appender();
        let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 1e300];
        for (i, (name, job, n)) in [
            ("up", "a", 5usize),
            ("up", "b", 130),
            ("http_requests_total", "a", 300),
            ("temp", "b", 1),
        ]
        .into_iter()
        .enumerate()
        {
            let labels =
                Labels::from_pairs([("__name__", name), ("job", job), ("i", &i.to_string())])
                    .expect("labels");
            let samples: Vec<(i64, f64)> = (0..n)
                .map(|k| {
                    let v = if k % 17 == 3 {
                        specials[k % specials.len()]
                    } else {
                        k as f64 * 0.5
                    };
                    (k as i64 * 1000 - 60_000, v)
                })
                .collect();
            app.add_series(labels, &samples);
        }
        app.commit().expect("commit");
        db.flush().expect("flush");
        // Some samples in the head too, after the flushed ones.
        let mut app = db.appender();
        app.add(
            Labels::from_pairs([("__name__", "up"), ("job", "a"), ("i", "0")]).expect("labels"),
            500_000,
            1.0,
        );
        app.commit().expect("commit");
        db
    })
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &x) in b.iter().enumerate().take(10) {
        v |= u64::from(x & 0x7f) << (7 * i);
        if x & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let body = if mode & 1 != 0 {
        match snap::raw::Encoder::new().compress_vec(rest) {
            Ok(b) => b,
            Err(_) => return,
        }
    } else {
        rest.to_vec()
    };
    let Ok(raw) = snappy_decode(&body, 1 << 20) else {
        return;
    };
    let Ok(req) = ReadRequest::decode(raw.as_slice()) else {
        return;
    };
    let enc = req.encode_to_vec();
    let Ok(again) = ReadRequest::decode(enc.as_slice()) else {
        panic!("a decoded request does not decode after re-encoding");
    };
    assert_eq!(again, req, "round trip changed the request");
    // Keep each run small.
    if req.queries.len() > 8 {
        return;
    }
    let db = store();
    let plain = answer(db, &req, false, MAX_SAMPLES);
    let streamed = answer(db, &req, true, MAX_SAMPLES);
    let (plain, streamed) = match (plain, streamed) {
        (Ok(p), Ok(s)) => (p, s),
        (Err(a), Err(b)) => {
            assert_eq!(a.0, b.0, "the two answers fail differently: {a:?} {b:?}");
            assert!(a.0.is_client_error(), "a server error: {a:?}");
            return;
        }
        (a, b) => panic!(
            "one answer fails, the other not: {:?} / {:?}",
            a.err(),
            b.err()
        ),
    };
    let Ok(raw) = snap::raw::Decoder::new().decompress_vec(&plain) else {
        panic!("the samples answer is not snappy");
    };
    let Ok(resp) = ReadResponse::decode(raw.as_slice()) else {
        panic!("the samples answer is not a ReadResponse");
    };
    assert_eq!(resp.results.len(), req.queries.len());
    let mut expected = Vec::new(); // (query index, labels, first/last/count per chunk)
    for (qi, (q, r)) in req.queries.iter().zip(&resp.results).enumerate() {
        let Ok(ms) = matchers(q) else {
            panic!("an answered query has bad matchers");
        };
        for ts in &r.timeseries {
            for m in &ms {
                let v = ts
                    .labels
                    .iter()
                    .find(|l| l.name == m.name())
                    .map(|l| l.value.as_str());
                assert!(m.matches(v), "series {:?} does not match {m:?}", ts.labels);
            }
            for w in ts.samples.windows(2) {
                assert!(w[0].timestamp < w[1].timestamp, "samples out of order");
            }
            for s in &ts.samples {
                assert!(
                    q.start_timestamp_ms <= s.timestamp && s.timestamp <= q.end_timestamp_ms,
                    "sample at {} outside [{}, {}]",
                    s.timestamp,
                    q.start_timestamp_ms,
                    q.end_timestamp_ms
                );
            }
            let chunks: Vec<(i64, i64, usize)> = ts
                .samples
                .chunks(120)
                .map(|c| (c[0].timestamp, c[c.len() - 1].timestamp, c.len()))
                .collect();
            expected.push((qi as i64, ts.labels.clone(), chunks));
        }
    }
    // The streamed answer: frames of uvarint length, big-endian CRC32C, message.
    let mut got = Vec::new();
    let mut at = 0;
    while at < streamed.len() {
        let Some((len, n)) = uvarint(&streamed[at..]) else {
            panic!("bad frame length");
        };
        at += n;
        let crc = u32::from_be_bytes(streamed[at..at + 4].try_into().expect("4 bytes"));
        at += 4;
        let msg = &streamed[at..at + len as usize];
        at += len as usize;
        assert_eq!(crc, crc32c::crc32c(msg), "frame CRC");
        let Ok(frame) = ChunkedReadResponse::decode(msg) else {
            panic!("a frame is not a ChunkedReadResponse");
        };
        for s in frame.chunked_series {
            let chunks: Vec<(i64, i64, usize)> = s
                .chunks
                .iter()
                .map(|c| {
                    assert_eq!(c.r#type, 1);
                    let count = u16::from_be_bytes([c.data[0], c.data[1]]) as usize;
                    (c.min_time_ms, c.max_time_ms, count)
                })
                .collect();
            got.push((frame.query_index, s.labels, chunks));
        }
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "the two answers hold different series"
    );
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g.0, e.0);
        assert_eq!(g.1, e.1);
        assert_eq!(g.2, e.2);
    }
});
