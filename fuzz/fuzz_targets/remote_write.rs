//! Prometheus remote write: snappy, protobuf decoding and ingestion (label validation,
//! limits) into a store, as `POST /api/v1/write` does them.
//!
//! Input: a mode byte, then the body; with bit 0 set the body is the raw protobuf and is
//! snappy-compressed first (so that mutations reach the protobuf decoder), otherwise it is
//! the compressed body as a client sends it.
//!
//! Oracles: a decoded request re-encodes to bytes that decode to the same request (compared
//! by encoding, since NaN != NaN); every sample is accounted for (stored or counted as
//! rejected); the store then holds only series with a metric name and valid labels, and
//! only samples the request carried for that label set, with their values.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use strata_kv::fs::MemFs;
use strata_server::prompb::WriteRequest;
use strata_server::write::{ingest, snappy_decode};
use strata_server::{AppState, Config};
use strata_tsdb::{Labels, MatchOp, Matcher, Tsdb};

/// Small limits, so that the fuzzer also crosses them.
const MAX_DECOMPRESSED: usize = 1 << 20;

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
    let Ok(raw) = snappy_decode(&body, MAX_DECOMPRESSED) else {
        return;
    };
    assert!(raw.len() <= MAX_DECOMPRESSED);
    let Ok(req) = WriteRequest::decode(raw.as_slice()) else {
        return;
    };
    let enc = req.encode_to_vec();
    let Ok(again) = WriteRequest::decode(enc.as_slice()) else {
        panic!("a decoded request does not decode after re-encoding");
    };
    assert_eq!(again.encode_to_vec(), enc, "re-encoding is not stable");

    // What the request carries: label set -> (t, value bits), for series that form valid
    // label sets.
    let mut carried: HashMap<Labels, HashSet<(i64, u64)>> = HashMap::new();
    let mut total = 0u64;
    for ts in &req.timeseries {
        total += ts.samples.len() as u64;
        if let Ok(l) = Labels::from_pairs(
            ts.labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str())),
        ) {
            let set = carried.entry(l).or_default();
            for s in &ts.samples {
                set.insert((s.timestamp, s.value.to_bits()));
            }
        }
    }

    let fs = Arc::new(MemFs::new());
    let mut config = Config::default();
    config.limits.max_labels_per_series = 8;
    config.limits.max_label_name_len = 64;
    config.limits.max_label_value_len = 256;
    config.limits.max_active_series = Some(64);
    let mut opts = config.tsdb_options();
    opts.background = false;
    opts.kv.fs = fs;
    let Ok(tsdb) = Tsdb::open(Path::new("/t"), opts) else {
        panic!("a fresh store on MemFs does not open");
    };
    let state = AppState::new(tsdb, config);
    let limits = state.config.label_limits();
    let Ok(got) = ingest(&state, req, &limits) else {
        panic!("ingest failed on a healthy store");
    };
    assert_eq!(
        got.samples + got.rejected_invalid + got.rejected_too_old + got.rejected_series_limit,
        total,
        "samples unaccounted for: {got:?}"
    );
    let Ok(all) = Matcher::new(MatchOp::RegexMatch, "__name__", ".+") else {
        panic!("matcher");
    };
    let Ok(stored) = state.tsdb.querier(i64::MIN, i64::MAX).select(&[all]) else {
        panic!("query failed on a healthy store");
    };
    let mut n = 0u64;
    for s in &stored {
        assert!(s.labels.metric_name().is_some_and(|m| !m.is_empty()));
        assert!(s.labels.len() <= limits.max_labels);
        let Some(set) = carried.get(&s.labels) else {
            panic!("stored series {} was not in the request", s.labels);
        };
        for &(t, v) in &s.samples {
            assert!(
                set.contains(&(t, v.to_bits())),
                "{} {t} {v}: not written",
                s.labels
            );
        }
        n += s.samples.len() as u64;
    }
    assert!(n <= got.samples, "more samples stored than appended");
    if got.first_error.is_none() {
        assert_eq!(
            got.rejected_invalid + got.rejected_too_old + got.rejected_series_limit,
            0
        );
    }
    state.tsdb.abandon();
});
