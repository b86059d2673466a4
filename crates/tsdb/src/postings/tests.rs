use super::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::collections::BTreeSet;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied()).expect("valid labels")
}

fn m(op: MatchOp, name: &str, value: &str) -> Matcher {
    Matcher::new(op, name, value).expect("valid matcher")
}

fn fixed(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x5157_a7a5),
        failure_persistence: None,
        ..Config::default()
    }
}

// ----- set operations -----

#[test]
fn seek_finds_first_not_less() {
    let l = [1, 3, 5, 7, 9, 11, 13, 15, 17];
    for from in 0..=l.len() {
        for target in 0..20 {
            let want = (from..l.len()).find(|&i| l[i] >= target).unwrap_or(l.len());
            assert_eq!(seek(&l, from, target), want, "from {from} target {target}");
        }
    }
    assert_eq!(seek(&[], 0, 5), 0);
}

#[test]
fn set_operations_edge_cases() {
    assert_eq!(intersect(&[]), Vec::<SeriesRef>::new());
    assert_eq!(intersect(&[&[1, 2, 3]]), vec![1, 2, 3]);
    assert_eq!(intersect(&[&[1, 2, 3], &[]]), Vec::<SeriesRef>::new());
    assert_eq!(merge(&[]), Vec::<SeriesRef>::new());
    assert_eq!(merge(&[&[], &[2], &[]]), vec![2]);
    assert_eq!(subtract(&[1, 2, 3], &[]), vec![1, 2, 3]);
    assert_eq!(subtract(&[], &[1]), Vec::<SeriesRef>::new());
    assert_eq!(subtract(&[1, 2, 3, 4], &[0, 2, 4, 6]), vec![1, 3]);
    assert_eq!(merge(&[&[1, 5], &[2, 5], &[0, 9]]), vec![0, 1, 2, 5, 9]);
}

fn sorted_list() -> impl Strategy<Value = Vec<SeriesRef>> {
    prop_oneof![
        // dense, small values: many overlaps
        proptest::collection::btree_set(0u64..64, 0..40),
        // sparse, large ranges: long gallops
        proptest::collection::btree_set(0u64..5_000, 0..400),
    ]
    .prop_map(|s| s.into_iter().collect())
}

fn model(l: &[SeriesRef]) -> BTreeSet<SeriesRef> {
    l.iter().copied().collect()
}

proptest! {
    #![proptest_config(fixed(512))]

    #[test]
    fn intersect_matches_btreeset(lists in proptest::collection::vec(sorted_list(), 0..6)) {
        let slices: Vec<&[SeriesRef]> = lists.iter().map(Vec::as_slice).collect();
        let want: Vec<SeriesRef> = match lists.split_first() {
            None => Vec::new(),
            Some((first, rest)) => rest
                .iter()
                .fold(model(first), |acc, l| acc.intersection(&model(l)).copied().collect())
                .into_iter()
                .collect(),
        };
        prop_assert_eq!(intersect(&slices), want);
    }

    #[test]
    fn merge_matches_btreeset(lists in proptest::collection::vec(sorted_list(), 0..8)) {
        let slices: Vec<&[SeriesRef]> = lists.iter().map(Vec::as_slice).collect();
        let want: Vec<SeriesRef> = lists.iter().flatten().copied().collect::<BTreeSet<_>>().into_iter().collect();
        prop_assert_eq!(merge(&slices), want);
    }

    #[test]
    fn subtract_matches_btreeset(a in sorted_list(), b in sorted_list()) {
        let want: Vec<SeriesRef> = model(&a).difference(&model(&b)).copied().collect();
        prop_assert_eq!(subtract(&a, &b), want);
        prop_assert_eq!(overlaps(&a, &b), !model(&a).is_disjoint(&model(&b)));
    }

    #[test]
    fn insert_sorted_keeps_set(refs in proptest::collection::vec(0u64..100, 0..100)) {
        let mut l = Vec::new();
        for &r in &refs {
            insert_sorted(&mut l, r);
        }
        let want: Vec<SeriesRef> = refs.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
        prop_assert_eq!(l, want);
    }
}

// ----- MemPostings -----

fn sample_index() -> MemPostings {
    let p = MemPostings::new();
    p.add(
        1,
        &labels(&[("__name__", "up"), ("job", "node"), ("zone", "eu")]),
    );
    p.add(2, &labels(&[("__name__", "up"), ("job", "node")]));
    p.add(
        3,
        &labels(&[("__name__", "up"), ("job", "api"), ("zone", "us")]),
    );
    p.add(4, &labels(&[("__name__", "rss"), ("job", "api")]));
    p
}

#[test]
fn label_names_and_values_are_sorted() {
    let p = sample_index();
    assert_eq!(p.label_names(), vec!["__name__", "job", "zone"]);
    assert_eq!(p.label_values("job"), vec!["api", "node"]);
    assert_eq!(p.label_values("__name__"), vec!["rss", "up"]);
    assert_eq!(p.label_values("nope"), Vec::<String>::new());
    assert_eq!(*p.get("zone", "eu"), vec![1]);
    assert_eq!(*p.get("zone", "nope"), Vec::<SeriesRef>::new());
    assert_eq!(*p.all(), vec![1, 2, 3, 4]);
    let (n, v) = ALL_POSTINGS_KEY;
    assert_eq!(*p.get(n, v), vec![1, 2, 3, 4]);
    assert_eq!(p.num_series(), 4);
}

#[test]
fn out_of_order_and_repeated_adds_stay_sorted() {
    let p = MemPostings::new();
    for r in [5, 1, 9, 3, 5, 0, 9] {
        p.add(r, &labels(&[("a", "x")]));
    }
    assert_eq!(*p.get("a", "x"), vec![0, 1, 3, 5, 9]);
    assert_eq!(*p.all(), vec![0, 1, 3, 5, 9]);
}

#[test]
fn delete_removes_refs_and_empty_entries() {
    let p = sample_index();
    p.delete(&[3, 1, 3]);
    assert_eq!(*p.all(), vec![2, 4]);
    assert_eq!(p.label_names(), vec!["__name__", "job"]);
    assert_eq!(p.label_values("job"), vec!["api", "node"]);
    assert_eq!(*p.get("job", "node"), vec![2]);
    assert_eq!(*p.get("job", "api"), vec![4]);
    p.delete(&[]);
    p.delete(&[2, 4, 100]);
    assert!(p.all().is_empty());
    assert!(p.label_names().is_empty());
}

#[test]
fn delete_with_labels_touches_only_affected_lists() {
    let a = sample_index();
    let b = sample_index();
    let dead = [
        (
            1,
            labels(&[("__name__", "up"), ("job", "node"), ("zone", "eu")]),
        ),
        (
            3,
            labels(&[("__name__", "up"), ("job", "api"), ("zone", "us")]),
        ),
    ];
    a.delete(&[1, 3]);
    b.delete_with_labels(dead.iter().map(|(r, l)| (*r, l)));
    assert_eq!(a.label_names(), b.label_names());
    for name in a.label_names() {
        assert_eq!(a.label_values(&name), b.label_values(&name));
        for v in a.label_values(&name) {
            assert_eq!(a.get(&name, &v), b.get(&name, &v));
        }
    }
    assert_eq!(a.all(), b.all());
}

#[test]
fn readers_keep_their_snapshot() {
    let p = sample_index();
    let before = p.get("job", "node");
    let all_before = p.all();
    p.add(10, &labels(&[("job", "node")]));
    p.delete(&[1]);
    assert_eq!(*before, vec![1, 2]);
    assert_eq!(*all_before, vec![1, 2, 3, 4]);
    assert_eq!(*p.get("job", "node"), vec![2, 10]);
}

#[test]
fn concurrent_readers_and_writer() {
    let p = Arc::new(MemPostings::new());
    std::thread::scope(|s| {
        let w = Arc::clone(&p);
        s.spawn(move || {
            for r in 0..2_000u64 {
                let v = (r % 7).to_string();
                w.add(r, &labels(&[("a", v.as_str())]));
            }
        });
        for _ in 0..2 {
            let rd = Arc::clone(&p);
            s.spawn(move || {
                for _ in 0..200 {
                    let l = select(&*rd, &[m(MatchOp::RegexMatch, "a", "1|3")]);
                    assert!(l.windows(2).all(|w| w[0] < w[1]));
                    assert!(l.iter().all(|r| r % 7 == 1 || r % 7 == 3));
                }
            });
        }
    });
    assert_eq!(p.num_series(), 2_000);
}

// ----- select -----

#[test]
fn select_prometheus_cases() {
    let p = sample_index();
    let eq = |n, v| m(MatchOp::Equal, n, v);
    let ne = |n, v| m(MatchOp::NotEqual, n, v);
    let re = |n, v| m(MatchOp::RegexMatch, n, v);
    let nre = |n, v| m(MatchOp::RegexNoMatch, n, v);
    let cases: Vec<(Vec<Matcher>, Vec<SeriesRef>)> = vec![
        (vec![], vec![1, 2, 3, 4]),
        (vec![eq("job", "node")], vec![1, 2]),
        (vec![eq("job", "nope")], vec![]),
        (vec![eq("zone", "")], vec![2, 4]),
        (vec![ne("zone", "")], vec![1, 3]),
        (vec![ne("zone", "eu")], vec![2, 3, 4]),
        (vec![eq("job", "node"), ne("zone", "eu")], vec![2]),
        (vec![re("zone", "|us")], vec![2, 3, 4]),
        (vec![re("zone", "|u.")], vec![2, 3, 4]),
        (vec![re("zone", ".*")], vec![1, 2, 3, 4]),
        (vec![re("zone", ".+")], vec![1, 3]),
        (vec![nre("zone", "eu|us")], vec![2, 4]),
        (vec![nre("zone", "e.")], vec![2, 3, 4]),
        (vec![nre("zone", "")], vec![1, 3]),
        (vec![re("zone", ".+"), ne("zone", "eu")], vec![3]),
        (
            vec![eq("__name__", "up"), re("job", "a.*"), eq("missing", "")],
            vec![3],
        ),
        (vec![eq("missing", "x")], vec![]),
        (vec![ne("missing", "x")], vec![1, 2, 3, 4]),
    ];
    for (ms, want) in cases {
        let shown: Vec<String> = ms.iter().map(ToString::to_string).collect();
        assert_eq!(select(&p, &ms), want, "{shown:?}");
    }
}

/// A random series: up to three labels from a small universe, so matchers hit often.
fn series_labels() -> impl Strategy<Value = Labels> {
    let value = prop::sample::select(vec!["", "1", "2", "x", "xy"]);
    (value.clone(), value.clone(), value)
        .prop_map(|(a, b, c)| labels(&[("a", a), ("b", b), ("c", c)]))
}

fn any_matcher() -> impl Strategy<Value = Matcher> {
    let name = prop::sample::select(vec!["a", "b", "c", "d"]);
    let op = prop::sample::select(vec![
        MatchOp::Equal,
        MatchOp::NotEqual,
        MatchOp::RegexMatch,
        MatchOp::RegexNoMatch,
    ]);
    let literal = prop::sample::select(vec!["", "1", "2", "x", "zz"]);
    let pattern = prop::sample::select(vec![
        "", "1", "x", "1|2", "|x", "1|", ".*", ".+", "[12]", "x.*", "x|y", "(|1)", "x?",
    ]);
    (name, op, literal, pattern).prop_map(|(n, op, lit, pat)| {
        if op.is_regex() {
            m(op, n, pat)
        } else {
            m(op, n, lit)
        }
    })
}

proptest! {
    #![proptest_config(fixed(1024))]

    #[test]
    fn select_matches_brute_force(
        series in proptest::collection::vec(series_labels(), 0..40),
        matchers in proptest::collection::vec(any_matcher(), 0..4),
        deleted in proptest::collection::vec(0u64..40, 0..5),
        shuffle in any::<bool>(),
    ) {
        let p = MemPostings::new();
        let order: Vec<usize> = if shuffle {
            (0..series.len()).rev().collect()
        } else {
            (0..series.len()).collect()
        };
        for i in order {
            p.add(i as SeriesRef, &series[i]);
        }
        p.delete(&deleted);
        let want: Vec<SeriesRef> = series
            .iter()
            .enumerate()
            .filter(|(i, _)| !deleted.contains(&(*i as SeriesRef)))
            .filter(|(_, l)| matchers.iter().all(|m| m.matches(l.get(m.name()))))
            .map(|(i, _)| i as SeriesRef)
            .collect();
        let shown: Vec<String> = matchers.iter().map(ToString::to_string).collect();
        prop_assert_eq!(select(&p, &matchers), want, "{:?}", shown);
    }
}
