use super::*;
use proptest::prelude::*;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied()).expect("valid labels")
}

#[test]
fn pairs_are_sorted_by_name() {
    let l = labels(&[("job", "node"), ("__name__", "up"), ("instance", "a:9100")]);
    let names: Vec<_> = l.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["__name__", "instance", "job"]);
    assert_eq!(l.metric_name(), Some("up"));
    assert_eq!(l.get("job"), Some("node"));
    assert_eq!(l.get("zone"), None);
    assert_eq!(
        l.to_string(),
        r#"{__name__="up", instance="a:9100", job="node"}"#
    );
}

#[test]
fn empty_values_mean_absent() {
    assert_eq!(labels(&[("a", "1"), ("b", "")]), labels(&[("a", "1")]));
    assert!(labels(&[("a", "")]).is_empty());
}

#[test]
fn names_follow_the_legacy_prometheus_rule() {
    for ok in ["a", "_", "__name__", "A_b9", "_9"] {
        assert!(is_valid_label_name(ok), "{ok}");
    }
    for bad in ["", "9a", "a-b", "a.b", "a:b", "é", "a b"] {
        assert!(!is_valid_label_name(bad), "{bad:?}");
        assert_eq!(
            Labels::from_pairs([(bad, "v")]),
            Err(LabelError::InvalidName { name: bad.into() })
        );
    }
    // Even with an empty value, a bad name is an error (not silently dropped).
    assert_eq!(
        Labels::from_pairs([("a-b", "")]),
        Err(LabelError::InvalidName { name: "a-b".into() })
    );
}

#[test]
fn values_are_any_utf8_including_the_metric_name() {
    let l = labels(&[
        (METRIC_NAME, "http.server.duration"),
        ("path", "/ä/\0/\"x\"\n"),
    ]);
    assert_eq!(l.metric_name(), Some("http.server.duration"));
    assert_eq!(Labels::decode(&l.encode()), Ok(l));
}

#[test]
fn duplicate_names_are_rejected() {
    assert_eq!(
        Labels::from_pairs([("b", "1"), ("a", "1"), ("b", "2")]),
        Err(LabelError::DuplicateName { name: "b".into() })
    );
    assert_eq!(
        Labels::from_pairs([("a", "1"), ("a", "")]),
        Err(LabelError::DuplicateName { name: "a".into() })
    );
}

#[test]
fn limits_are_enforced_and_name_the_label() {
    let limits = LabelLimits {
        max_labels: 2,
        max_name_len: 4,
        max_value_len: 3,
    };
    let build =
        |pairs: &[(&str, &str)]| Labels::from_pairs_with_limits(pairs.iter().copied(), &limits);
    assert!(build(&[("a", "123"), ("abcd", "1")]).is_ok());
    assert_eq!(
        build(&[("a", "1"), ("b", "1"), ("c", "1")]),
        Err(LabelError::TooManyLabels { count: 3, max: 2 })
    );
    // Empty values do not count.
    assert!(build(&[("a", "1"), ("b", "1"), ("c", "")]).is_ok());
    assert_eq!(
        build(&[("abcde", "1")]),
        Err(LabelError::NameTooLong {
            name: "abcde".into(),
            len: 5,
            max: 4
        })
    );
    assert_eq!(
        build(&[("a", "1234")]),
        Err(LabelError::ValueTooLong {
            name: "a".into(),
            len: 4,
            max: 3
        })
    );
    let err = build(&[("a", "1234")]).expect_err("too long").to_string();
    assert!(err.contains("\"a\""), "{err}");

    let defaults = LabelLimits::default();
    assert_eq!(
        (
            defaults.max_labels,
            defaults.max_name_len,
            defaults.max_value_len
        ),
        (64, 1024, 2048)
    );
    let many: Vec<_> = (0..65)
        .map(|i| (format!("l{i}"), "v".to_string()))
        .collect();
    assert!(matches!(
        Labels::from_pairs(many.clone()),
        Err(LabelError::TooManyLabels { count: 65, max: 64 })
    ));
    assert!(Labels::from_pairs_with_limits(many, &LabelLimits::unlimited()).is_ok());
}

#[test]
fn stable_hash_is_pinned() {
    // The hash may be persisted: it must never change across builds or platforms.
    assert_eq!(
        Labels::empty().stable_hash(),
        xxhash_rust::xxh3::xxh3_64(b"")
    );
    let l = labels(&[("__name__", "up"), ("job", "node")]);
    assert_eq!(l.encode(), b"__name__\0\x01up\0\x01job\0\x01node\0\x01");
    assert_eq!(l.stable_hash(), 0x9cac4042f814e82e);
    assert_ne!(
        l.stable_hash(),
        labels(&[("__name__", "up"), ("job", "nodf")]).stable_hash()
    );
    // Boundaries between name and value are part of the hash.
    assert_ne!(
        labels(&[("a", "bc")]).stable_hash(),
        labels(&[("ab", "c")]).stable_hash()
    );
}

#[test]
fn decode_rejects_invalid_sets() {
    let cases: &[&[u8]] = &[
        b"a",                            // unterminated
        b"a\0\x01",                      // name without value
        b"a\0\x01v\0",                   // cut terminator
        b"a\0\x02v\0\x01",               // bad escape
        b"9\0\x01v\0\x01",               // invalid name
        b"a\0\x01\0\x01",                // empty value
        b"b\0\x01v\0\x01a\0\x01v\0\x01", // unsorted
        b"a\0\x01v\0\x01a\0\x01w\0\x01", // duplicate
        b"a\0\x01\xff\0\x01",            // value not UTF-8
    ];
    for &bytes in cases {
        assert!(
            matches!(Labels::decode(bytes), Err(LabelError::Corrupt { .. })),
            "{bytes:?}"
        );
    }
    assert_eq!(Labels::decode(b""), Ok(Labels::empty()));
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-c]{1,3}",
        "[a-zA-Z_][a-zA-Z0-9_]{0,8}",
        Just(METRIC_NAME.to_string()),
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof!["[a-c\\x00\\x01\\xff]{0,3}", any::<String>()]
}

fn label_set() -> impl Strategy<Value = Labels> {
    proptest::collection::btree_map(name(), value(), 0..6)
        .prop_map(|m| Labels::from_pairs_with_limits(m, &LabelLimits::unlimited()).expect("valid"))
}

proptest! {
    #[test]
    fn encode_decode_round_trip(l in label_set()) {
        prop_assert_eq!(Labels::decode(&l.encode()), Ok(l));
    }

    #[test]
    fn encoding_preserves_order(a in label_set(), b in label_set()) {
        prop_assert_eq!(a.encode().cmp(&b.encode()), a.cmp(&b));
        if a == b {
            prop_assert_eq!(a.stable_hash(), b.stable_hash());
        }
    }

    #[test]
    fn pair_order_does_not_matter(pairs in proptest::collection::btree_map(name(), value(), 0..6)) {
        let forward = Labels::from_pairs(pairs.clone()).expect("valid");
        let backward = Labels::from_pairs(pairs.into_iter().rev()).expect("valid");
        prop_assert_eq!(forward.stable_hash(), backward.stable_hash());
        prop_assert_eq!(forward, backward);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(l) = Labels::decode(&bytes) {
            // Whatever decodes is canonical.
            prop_assert_eq!(l.encode(), bytes);
        }
    }

    #[test]
    fn decoding_near_valid_bytes_never_panics(
        l in label_set(),
        pos: usize,
        mask: u8,
    ) {
        let mut bytes = l.encode();
        if !bytes.is_empty() {
            let i = pos % bytes.len();
            bytes[i] ^= mask;
        }
        if let Ok(d) = Labels::decode(&bytes) {
            prop_assert_eq!(d.encode(), bytes);
        }
    }
}

#[test]
fn stable_hash_is_xxh3_of_the_encoding() {
    for pairs in [
        vec![],
        vec![("a", "1")],
        vec![("__name__", "up"), ("job", "a\0b\0"), ("z", "\0")],
    ] {
        let l = Labels::from_pairs(pairs).unwrap();
        assert_eq!(
            l.stable_hash(),
            xxhash_rust::xxh3::xxh3_64(&l.encode()),
            "{l}"
        );
    }
}

proptest! {
    #[test]
    fn with_encoded_writes_what_put_escaped_writes(
        pairs in prop::collection::vec(
            (
                prop::collection::vec(prop::sample::select(vec![0u8, 1, 0xff, b'a']), 0..40),
                prop::collection::vec(any::<u8>(), 0..40),
            ),
            0..8,
        )
    ) {
        let mut want = Vec::new();
        for (n, v) in &pairs {
            put_escaped(&mut want, n);
            put_escaped(&mut want, v);
        }
        let iter = || pairs.iter().map(|(n, v)| (n.as_slice(), v.as_slice()));
        let (got, h) = with_encoded(iter(), |k, h| (k.to_vec(), h));
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(h, xxhash_rust::xxh3::xxh3_64(&want));
        // Reentrant use (a buffer of its own) agrees.
        let inner = with_encoded(iter(), |_, _| with_encoded(iter(), |k, _| k.to_vec()));
        prop_assert_eq!(inner, want);
    }
}
