use super::*;
use crate::labels::METRIC_NAME;
use MatchOp::*;

fn m(op: MatchOp, name: &str, value: &str) -> Matcher {
    Matcher::new(op, name, value).expect("valid matcher")
}

#[test]
fn prometheus_semantics_table() {
    // (op, pattern, label value (None = label absent), selected?)
    let table: &[(MatchOp, &str, Option<&str>, bool)] = &[
        (Equal, "foo", Some("foo"), true),
        (Equal, "foo", Some("foobar"), false),
        (Equal, "foo", None, false),
        (Equal, "", None, true),
        (Equal, "", Some(""), true),
        (Equal, "", Some("x"), false),
        (NotEqual, "foo", Some("foo"), false),
        (NotEqual, "foo", Some("bar"), true),
        (NotEqual, "foo", None, true),
        (NotEqual, "", None, false),
        (NotEqual, "", Some("x"), true),
        // Regexes are fully anchored.
        (RegexMatch, "foo", Some("foo"), true),
        (RegexMatch, "foo", Some("foobar"), false),
        (RegexMatch, "foo", Some("barfoo"), false),
        (RegexMatch, "fo+", Some("xfoo"), false),
        (RegexMatch, "fo+", Some("fooo"), true),
        (RegexMatch, "a|b", Some("ab"), false),
        (RegexMatch, "a|b", Some("b"), true),
        (RegexMatch, "foo|bar", Some("foobar"), false),
        (RegexMatch, "^foo$", Some("foo"), true),
        (RegexMatch, ".*", None, true),
        (RegexMatch, ".*", Some(""), true),
        (RegexMatch, ".*", Some("anything"), true),
        (RegexMatch, ".*", Some("multi\nline"), true),
        (RegexMatch, ".+", None, false),
        (RegexMatch, ".+", Some("x"), true),
        (RegexMatch, "", None, true),
        (RegexMatch, "", Some("x"), false),
        (RegexMatch, "foo|", None, true),
        (RegexMatch, "foo|", Some("foo"), true),
        (RegexMatch, "(?i)FOO", Some("foo"), true),
        (RegexMatch, "a\\.b", Some("a.b"), true),
        (RegexMatch, "a\\.b", Some("axb"), false),
        (RegexMatch, "a.b", Some("axb"), true),
        (RegexMatch, "é|ü", Some("ü"), true),
        (RegexNoMatch, "foo", Some("foo"), false),
        (RegexNoMatch, "foo", Some("foobar"), true),
        (RegexNoMatch, "foo", None, true),
        (RegexNoMatch, ".*", None, false),
        (RegexNoMatch, ".*", Some("x"), false),
        (RegexNoMatch, ".+", None, true),
        (RegexNoMatch, ".+", Some("x"), false),
        (RegexNoMatch, "", None, false),
        (RegexNoMatch, "a|b", Some("c"), true),
        (RegexNoMatch, "a|b", Some("a"), false),
    ];
    for &(op, pattern, value, want) in table {
        let matcher = m(op, "l", pattern);
        assert_eq!(
            matcher.matches(value),
            want,
            "l{op}{pattern:?} on {value:?}"
        );
        assert_eq!(matcher.matches_empty(), matcher.matches(Some("")));
        assert_eq!(matcher.matches_empty(), matcher.matches(None));
    }
}

#[test]
fn metric_name_regex() {
    let matcher = m(RegexMatch, METRIC_NAME, "node_.*_total|up");
    for (name, want) in [
        ("node_cpu_seconds_total", true),
        ("up", true),
        ("node_cpu_seconds", false),
        ("upx", false),
        ("xnode_a_total", false),
    ] {
        assert_eq!(matcher.matches(Some(name)), want, "{name}");
    }
    assert!(!matcher.matches_empty());
}

#[test]
fn matches_empty_for_planning() {
    assert!(m(Equal, "a", "").matches_empty());
    assert!(!m(Equal, "a", "x").matches_empty());
    assert!(m(NotEqual, "a", "x").matches_empty());
    assert!(!m(NotEqual, "a", "").matches_empty());
    assert!(m(RegexMatch, "a", "x|").matches_empty());
    assert!(m(RegexMatch, "a", "x?").matches_empty());
    assert!(!m(RegexMatch, "a", "x+").matches_empty());
    assert!(m(RegexNoMatch, "a", "x+").matches_empty());
    assert!(!m(RegexNoMatch, "a", ".*").matches_empty());
}

#[test]
fn invalid_regexes_are_errors() {
    for bad in ["(", "a)", "[a", "*", "a{2,1}", "(?P<x", "\\"] {
        let err = Matcher::new(RegexMatch, "path", bad).expect_err(bad);
        let MatcherError::InvalidRegex { name, pattern, .. } = &err;
        assert_eq!((name.as_str(), pattern.as_str()), ("path", bad));
        assert!(err.to_string().contains("path"), "{err}");
        assert!(Matcher::new(RegexNoMatch, "path", bad).is_err());
    }
    // `=` and `!=` take the value literally.
    assert!(m(Equal, "path", "(").matches(Some("(")));
    assert!(!m(NotEqual, "path", "[a").matches(Some("[a")));
}

#[test]
fn set_matches_of_literal_alternations() {
    let set = |p: &str| m(RegexMatch, "l", p).set_matches().map(|s| s.to_vec());
    let v = |xs: &[&str]| Some(xs.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(set("foo"), v(&["foo"]));
    assert_eq!(set("c|a|b|a"), v(&["a", "b", "c"]));
    assert_eq!(set("(GET|POST)"), v(&["GET", "POST"]));
    assert_eq!(set("(?:GET|POST)"), v(&["GET", "POST"]));
    assert_eq!(set("a\\.b|c\\|d"), v(&["a.b", "c|d"]));
    assert_eq!(set("foo|"), v(&["", "foo"]));
    assert_eq!(set(""), v(&[""]));
    assert_eq!(set("é|日本"), v(&["é", "日本"]));
    for not_literal in [
        ".*", "a.b", "fo+", "a?", "[ab]", "a{2}", "(?i)a|b", "(a)|(b)", "a\\d", "\\n", "a\\<",
        "^a$",
    ] {
        assert_eq!(set(not_literal), None, "{not_literal:?}");
    }
    // Unbalanced groups are invalid regexes, not literal sets.
    for invalid in ["(a|b", "(a\\)", "a|b)"] {
        assert!(
            Matcher::new(RegexMatch, "l", invalid).is_err(),
            "{invalid:?}"
        );
    }
    assert_eq!(
        m(RegexNoMatch, "l", "a|b").set_matches(),
        Some(&["a".to_string(), "b".to_string()][..])
    );
    assert_eq!(m(Equal, "l", "a").set_matches(), None);
    assert_eq!(m(NotEqual, "l", "a|b").set_matches(), None);
}

#[test]
fn set_matching_agrees_with_the_regex() {
    let probes = [
        "", "a", "b", "ab", "a.b", "axb", "c|d", "c", "d", "GET", "POST", "get", "é", "foo",
    ];
    for pattern in ["a|b", "a\\.b|c\\|d", "(GET|POST)", "(?:a|)", "é|foo", "foo"] {
        let fast = m(RegexMatch, "l", pattern);
        assert!(fast.set_matches().is_some(), "{pattern}");
        let re = Regex::new(&format!("^(?s:{pattern})$")).expect("compiles");
        for probe in probes {
            assert_eq!(
                fast.matches(Some(probe)),
                re.is_match(probe),
                "{pattern} on {probe:?}"
            );
        }
    }
}

#[test]
fn display_and_equality() {
    assert_eq!(m(RegexMatch, "job", "a\"b").to_string(), r#"job=~"a\"b""#);
    assert_eq!(Matcher::equal("job", "x").to_string(), r#"job="x""#);
    assert_eq!(m(Equal, "job", "x"), Matcher::equal("job", "x"));
    assert_ne!(m(Equal, "job", "x"), m(NotEqual, "job", "x"));
    assert!(RegexNoMatch.is_regex() && RegexNoMatch.is_negative());
    assert!(!Equal.is_regex() && !Equal.is_negative());
}
