//! Deferring the UTF-8 check of label bytes to series not in the head changes no answer:
//! the same bodies, sent to two stores, one decoding with every string checked (as
//! before), get the same answers and leave the same series.

use std::path::Path;
use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;
use strata_kv::fs::MemFs;
use strata_tsdb::{MatchOp, Matcher, Tsdb};

use super::*;
use crate::prompb::{Label, Sample, TimeSeries, WriteRequest};
use crate::Config;

fn state() -> AppState {
    let mut config = Config::default();
    config.limits.max_labels_per_series = 8;
    config.limits.max_series_per_request = 6;
    let mut opts = config.tsdb_options();
    opts.background = false;
    opts.kv.fs = Arc::new(MemFs::new());
    let tsdb = Tsdb::open(Path::new("/t"), opts).expect("open");
    AppState::new(tsdb, config)
}

fn series(labels: &[(&str, &str)], t: i64) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| Label {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect(),
        samples: vec![Sample {
            value: 1.5,
            timestamp: t,
        }],
        ..TimeSeries::default()
    }
}

fn body(t: i64) -> Vec<u8> {
    WriteRequest {
        timeseries: vec![
            series(&[("__name__", "up"), ("job", "a")], t),
            series(&[("__name__", "up"), ("job", "b\u{e9}")], t),
            series(&[("__name__", "x"), ("a", "1"), ("b", "2")], t),
            series(&[("job", "c")], t),
        ],
        metadata: Vec::new(),
    }
    .encode_to_vec()
}

fn stored(state: &AppState) -> Vec<String> {
    let all = Matcher::new(MatchOp::RegexMatch, "__name__", ".*").expect("matcher");
    let mut v: Vec<String> = state
        .tsdb
        .querier(i64::MIN, i64::MAX)
        .select(&[all])
        .expect("select")
        .into_iter()
        .map(|s| format!("{} {:?}", s.labels, s.samples))
        .collect();
    v.sort();
    v
}

#[test]
fn deferred_utf8_check_answers_as_the_checked_decoder() {
    let (new, old) = (state(), state());
    let (stored_ok, not_utf8) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    // One spare view across all requests, as a server thread keeps one: decoding into the
    // previous request's vectors changes nothing.
    let spare = std::cell::RefCell::new(prompb::WriteRequestView::default());
    let mut unused = prompb::WriteRequestView::default();
    let send = |raw: &[u8]| {
        let a = store(&new, raw, true, &mut spare.borrow_mut());
        let b = store(&old, raw, false, &mut prompb::WriteRequestView::default());
        assert_eq!(a, b, "{raw:?}");
        if a.1.contains("string is not UTF-8") {
            not_utf8.set(not_utf8.get() + 1);
        } else if a.0 == StatusCode::NO_CONTENT || a.1.contains("no metric name") {
            stored_ok.set(stored_ok.get() + 1);
        }
    };
    // The series exist first: mutated bodies then hit known and unknown series.
    send(&body(1_700_000_000_000));
    let base = body(1_700_000_015_000);
    strata_testkit::check(
        0x17,
        1024,
        (
            vec((any::<usize>(), any::<u8>()), 1..4),
            proptest::option::weighted(0.1, any::<usize>()),
        ),
        |(flips, cut)| send(&strata_testkit::mutate(&base, &flips, cut)),
    );
    // Both kinds of answer were compared, many times.
    assert!(
        stored_ok.get() > 100 && not_utf8.get() > 20,
        "{stored_ok:?} {not_utf8:?}"
    );
    // Not UTF-8 in a new series' value: refused whole, naming the offset.
    let mut bad = body(1_700_000_030_000);
    let at = bad.windows(2).position(|w| w == b"up").expect("present") + 1;
    bad[at] = 0xff;
    let (status, msg) = store(&new, &bad, true, &mut spare.borrow_mut());
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(msg.contains("string is not UTF-8"), "{msg}");
    assert_eq!(store(&old, &bad, false, &mut unused), (status, msg));
    assert_eq!(stored(&new), stored(&old));
    assert!(!stored(&new).is_empty());
}
