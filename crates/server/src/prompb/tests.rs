//! The borrowed remote-write decoder agrees with `prost` and never panics.

use super::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use prost::Message;

/// A decoded series, comparable: labels, samples (value bits, timestamp), histograms.
type Flat = (Vec<(String, String)>, Vec<(u64, i64)>, usize);

/// What `prost` decoded, in the view's shape, for comparison.
fn flatten(req: &WriteRequest) -> Vec<Flat> {
    req.timeseries
        .iter()
        .map(|ts| {
            (
                ts.labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect(),
                ts.samples
                    .iter()
                    .map(|s| (s.value.to_bits(), s.timestamp))
                    .collect(),
                ts.histograms.len(),
            )
        })
        .collect()
}

fn flatten_view(v: &WriteRequestView<'_>) -> Vec<Flat> {
    v.series
        .iter()
        .map(|s| {
            (
                v.labels_of(s)
                    .iter()
                    .map(|(n, x)| {
                        (
                            String::from_utf8(n.to_vec()).expect("UTF-8 name"),
                            String::from_utf8(x.to_vec()).expect("UTF-8 value"),
                        )
                    })
                    .collect(),
                v.samples_of(s)
                    .iter()
                    .map(|s| (s.value.to_bits(), s.timestamp))
                    .collect(),
                s.histograms,
            )
        })
        .collect()
}

fn label() -> impl Strategy<Value = Label> {
    // Values past 127 bytes take the decoder's general path.
    ("[a-z_]{0,6}", "\\PC{0,8}|[a-z]{120,140}").prop_map(|(name, value)| Label { name, value })
}

fn sample() -> impl Strategy<Value = Sample> {
    (any::<u64>(), any::<i64>()).prop_map(|(bits, timestamp)| Sample {
        value: f64::from_bits(bits),
        timestamp,
    })
}

fn series() -> impl Strategy<Value = TimeSeries> {
    (
        prop::collection::vec(label(), 0..6),
        prop::collection::vec(sample(), 0..5),
        prop::collection::vec(
            (any::<i64>(), any::<f64>()).prop_map(|(timestamp, value)| Exemplar {
                labels: vec![Label {
                    name: "trace_id".into(),
                    value: "x".into(),
                }],
                value,
                timestamp,
            }),
            0..2,
        ),
        prop::collection::vec(
            any::<i64>().prop_map(|timestamp| Histogram { timestamp }),
            0..2,
        ),
    )
        .prop_map(|(labels, samples, exemplars, histograms)| TimeSeries {
            labels,
            samples,
            exemplars,
            histograms,
        })
}

fn request() -> impl Strategy<Value = WriteRequest> {
    (
        prop::collection::vec(series(), 0..6),
        prop::collection::vec(
            ("\\PC{0,5}", "\\PC{0,5}").prop_map(|(name, help)| MetricMetadata {
                r#type: 1,
                metric_family_name: name,
                help,
                unit: String::new(),
            }),
            0..2,
        ),
    )
        .prop_map(|(timeseries, metadata)| WriteRequest {
            timeseries,
            metadata,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn agrees_with_prost_on_valid_requests(req in request()) {
        let bytes = req.encode_to_vec();
        let view = decode_write_request(&bytes).expect("a valid request decodes");
        prop_assert_eq!(flatten_view(&view), flatten(&req));
        prop_assert_eq!(flatten_view(&WriteRequestView::of(&req)), flatten(&req));
        // Each series' label fields are one run of bytes holding exactly its labels.
        for (s, ts) in view.series.iter().zip(&req.timeseries) {
            let run = view.label_bytes_of(s);
            prop_assert_eq!(run.is_empty(), ts.labels.is_empty());
            let only_labels = TimeSeries::decode(run).expect("label fields decode");
            prop_assert_eq!(&only_labels.labels, &ts.labels);
            prop_assert!(only_labels.samples.is_empty());
        }
    }

    #[test]
    fn damaged_requests_never_panic_and_agree_when_both_decode(
        req in request(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = req.encode_to_vec();
        if bytes.is_empty() {
            return Ok(());
        }
        for (i, b) in edits {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let ours = decode_write_request(&bytes);
        if let (Ok(v), Ok(p)) = (&ours, WriteRequest::decode(bytes.as_slice())) {
            prop_assert_eq!(flatten_view(v), flatten(&p));
        }
        deferred_agrees(&bytes)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let ours = decode_write_request(&bytes);
        if let (Ok(v), Ok(p)) = (&ours, WriteRequest::decode(bytes.as_slice())) {
            prop_assert_eq!(flatten_view(v), flatten(&p));
        }
        deferred_agrees(&bytes)?;
    }
}

/// A view decoded into a previous request's vectors is the same view, and keeps them.
#[test]
fn reusing_decoder_keeps_the_vectors_and_agrees() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut spare = WriteRequestView::<'static>::default();
    for _ in 0..32 {
        let req = request()
            .new_tree(&mut runner)
            .expect("a request")
            .current();
        let bytes = req.encode_to_vec();
        let caps = (
            spare.series.capacity(),
            spare.labels.capacity(),
            spare.samples.capacity(),
        );
        let label_ptr = spare.labels.as_ptr() as usize;
        let v = decode_write_request_deferred_reusing(&bytes, spare).expect("valid");
        assert_eq!(Ok(&v), decode_write_request_deferred(&bytes).as_ref());
        assert!(v.series.capacity() >= caps.0 && v.samples.capacity() >= caps.2);
        if v.labels.capacity() == caps.1 && caps.1 > 0 {
            assert_eq!(
                v.labels.as_ptr() as usize,
                label_ptr,
                "the label vector is kept"
            );
        }
        let cap = v.labels.capacity();
        spare = v.into_spare();
        assert!(spare.series.is_empty() && spare.labels.is_empty() && spare.samples.is_empty());
        assert_eq!(
            spare.labels.capacity(),
            cap,
            "emptying keeps the allocation"
        );
    }
}

#[test]
fn label_bytes_are_only_a_run_of_label_fields() {
    let label = |n: &str, v: &str| Label {
        name: n.into(),
        value: v.into(),
    };
    let sample = Sample {
        value: 1.0,
        timestamp: 2,
    };
    // Labels, then a sample: the run is the labels.
    let ts = TimeSeries {
        labels: vec![label("__name__", "up"), label("job", "a")],
        samples: vec![sample],
        ..TimeSeries::default()
    };
    let mut bytes = WriteRequest {
        timeseries: vec![ts],
        metadata: vec![],
    }
    .encode_to_vec();
    let v = decode_write_request(&bytes).expect("valid");
    let run = v.series[0].label_bytes.clone();
    // Field key and length, then the label: name key, length, bytes, value likewise.
    assert_eq!(run.len(), (2 + 2 + 8 + 2 + 2) + (2 + 2 + 3 + 2 + 1));
    // The same series with a sample between its labels: no run.
    let first_label_end = run.start + 2 + 2 + 8 + 2 + 2;
    let mut sample_field = vec![0x12, 11, 0x09];
    sample_field.extend_from_slice(&1f64.to_le_bytes());
    sample_field.extend_from_slice(&[0x10, 2]);
    bytes.splice(
        first_label_end..first_label_end,
        sample_field.iter().copied(),
    );
    bytes[1] += sample_field.len() as u8;
    let v = decode_write_request(&bytes).expect("still valid");
    assert_eq!(v.series[0].labels.len(), 2);
    assert_eq!(v.samples.len(), 2);
    assert!(v.series[0].label_bytes.is_empty());
    assert!(v.label_bytes_of(&v.series[0]).is_empty());
}

/// Decoding with the UTF-8 check deferred gives what checked decoding gives, except that
/// it may accept what was refused only for a string not being UTF-8.
fn deferred_agrees(bytes: &[u8]) -> Result<(), TestCaseError> {
    let deferred = decode_write_request_deferred(bytes);
    match decode_write_request(bytes) {
        Ok(v) => prop_assert_eq!(deferred, Ok(v)),
        Err(e) if e.reason == "string is not UTF-8" => {}
        Err(e) => prop_assert_eq!(deferred, Err(e)),
    }
    Ok(())
}

#[test]
fn errors_name_the_offset() {
    // Field 1 (timeseries) announcing 5 bytes with only 1 present.
    let err = decode_write_request(&[0x0a, 0x05, 0x00]).unwrap_err();
    assert_eq!(err.offset, 1);
    // A label whose name is not UTF-8.
    let bad = [0x0a, 0x06, 0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe];
    assert_eq!(
        decode_write_request(&bad).unwrap_err().reason,
        "string is not UTF-8"
    );
    assert!(WriteRequest::decode(&bad[..]).is_err());
    // Deferred, the same bytes decode; the caller checks them.
    let v = decode_write_request_deferred(&bad).expect("structurally valid");
    assert_eq!(v.labels, vec![(&[0xff, 0xfe][..], &b""[..])]);
    assert_eq!(v.labels_str_of(&v.series[0]), None);
    // Field number 0.
    assert!(decode_write_request(&[0x00]).is_err());
    // An unknown field of each wire type is skipped.
    let ok = [0x10, 0x01, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0x25, 0, 0, 0, 0];
    assert_eq!(
        decode_write_request(&ok).unwrap(),
        WriteRequestView {
            body: &ok,
            ..WriteRequestView::default()
        }
    );
}
