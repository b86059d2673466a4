//! The text ingestion formats: InfluxDB line protocol, the Prometheus text exposition
//! format and OpenMetrics text (`crates/server/src/text.rs`).
//!
//! Input: a mode byte (bits 0-1: 0 line protocol, 1 exposition, 2 OpenMetrics, 3 all
//! three; bits 2-4 pick the line-protocol precision), then the body (lossily made UTF-8,
//! as the handlers refuse anything else).
//!
//! Oracles: every parsed series has samples, a `__name__` and sorted label pairs; a
//! line-protocol series has exactly one `__name__` and only sanitized label names; and the
//! parse survives a round trip: the series written back as exposition text (escaped) parse
//! to the same series with the same samples (bit-exact, NaN as NaN), whenever their names
//! can be written in that format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_server::prompb::TimeSeries;
use strata_server::text::{parse_exposition, parse_line_protocol, parse_openmetrics, Parsed};

const UNITS: [i64; 6] = [
    1,
    1_000,
    1_000_000,
    1_000_000_000,
    60_000_000_000,
    3_600_000_000_000,
];

fn is_metric_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The series as exposition text with millisecond timestamps, or `None` if a name cannot
/// be written in it.
fn to_exposition(series: &[TimeSeries]) -> Option<String> {
    let mut out = String::new();
    for s in series {
        // The metric name: the first `__name__` pair (the parsers sort the pairs).
        let at = s.labels.iter().position(|l| l.name == "__name__")?;
        let name = &s.labels[at].value;
        if !is_metric_name(name) {
            return None;
        }
        let mut lbl = String::new();
        for (i, l) in s.labels.iter().enumerate() {
            if i == at {
                continue;
            }
            if !is_label_name(&l.name) {
                return None;
            }
            if !lbl.is_empty() {
                lbl.push(',');
            }
            lbl.push_str(&format!("{}=\"{}\"", l.name, escape(&l.value)));
        }
        for smp in &s.samples {
            out.push_str(&format!(
                "{name}{{{lbl}}} {} {}\n",
                smp.value, smp.timestamp
            ));
        }
    }
    Some(out)
}

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

fn check(p: &Parsed, sanitized: bool) {
    for s in &p.series {
        assert!(!s.samples.is_empty(), "a series without samples");
        assert!(
            s.labels.iter().any(|l| l.name == "__name__"),
            "a series without a name"
        );
        for w in s.labels.windows(2) {
            assert!(
                (&w[0].name, &w[0].value) <= (&w[1].name, &w[1].value),
                "labels not sorted"
            );
        }
        if sanitized {
            assert_eq!(
                s.labels.iter().filter(|l| l.name == "__name__").count(),
                1,
                "a tag named __name__ got through"
            );
            for l in &s.labels {
                assert!(
                    is_label_name(&l.name),
                    "unsanitized label name {:?}",
                    l.name
                );
            }
        }
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

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let body = String::from_utf8_lossy(rest);
    let now = 1_700_000_000_000;
    if mode & 3 == 0 || mode & 3 == 3 {
        let unit = UNITS[usize::from((mode >> 2) & 7) % UNITS.len()];
        check(&parse_line_protocol(&body, unit, now), true);
    }
    if mode & 3 == 1 || mode & 3 == 3 {
        check(&parse_exposition(&body, now), false);
    }
    if mode & 3 == 2 || mode & 3 == 3 {
        check(&parse_openmetrics(&body, now), false);
    }
});
