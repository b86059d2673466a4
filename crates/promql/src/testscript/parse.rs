//! Parsing test scripts: commands, series descriptions and the expanding sample notation
//! (`1+2x3`, `_x2`, `stale`, `{{...}}`).

use crate::error::{Error, Result};
use crate::labels::{Labels, METRIC_NAME};

/// One point of a series description.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Point {
    /// A float sample.
    Value(f64),
    /// A staleness marker.
    Stale,
    /// No sample at this step (`_`).
    Omitted,
    /// A native-histogram sample (`{{...}}`), not supported: counted as skipped.
    Histogram,
}

/// An expected (or loaded) series: labels and points.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedSeries {
    /// Labels (`{}` is empty).
    pub labels: Labels,
    /// Points in step order.
    pub points: Vec<Point>,
}

/// An `expect` line.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// `expect fail [msg:|regex: ...]`.
    Fail(Option<Matcher>),
    /// `expect warn [...]`.
    Warn(Option<Matcher>),
    /// `expect info [...]`.
    Info(Option<Matcher>),
    /// `expect no_warn`.
    NoWarn,
    /// `expect no_info`.
    NoInfo,
    /// `expect ordered`.
    Ordered,
    /// `expect string "..."`.
    String(String),
    /// `expect range vector from A to B step S` (ms).
    RangeVector {
        /// First timestamp.
        start: i64,
        /// Last timestamp.
        end: i64,
        /// Step.
        step: i64,
    },
}

/// How an annotation or error message is matched.
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    /// Exact text.
    Msg(String),
    /// Regular expression (unanchored, as Go's `MatchString`).
    Regex(String),
}

/// An `eval` command.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalCmd {
    /// Line of the command (1-based).
    pub line: usize,
    /// The PromQL text.
    pub query: String,
    /// Instant time, or range start (ms).
    pub start: i64,
    /// Range end (ms); equals `start` for instant queries.
    pub end: i64,
    /// Range step (ms); 0 for instant queries.
    pub step: i64,
    /// True for `eval range`.
    pub range: bool,
    /// `expect` lines.
    pub expects: Vec<Expect>,
    /// Expected series.
    pub series: Vec<ExpectedSeries>,
    /// An expected scalar (a line with just a value).
    pub scalar: Option<f64>,
    /// The block mentions native-histogram samples.
    pub has_histograms: bool,
}

/// One command of a script.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `load <interval>` (or `load_with_nhcb`).
    Load {
        /// Line of the command.
        line: usize,
        /// Step between points (ms).
        interval: i64,
        /// Series to add.
        series: Vec<ExpectedSeries>,
        /// `load_with_nhcb`: classic histograms would also be loaded as native histograms.
        with_nhcb: bool,
    },
    /// `clear`.
    Clear,
    /// `eval ...`.
    Eval(EvalCmd),
}

fn err(line: usize, msg: impl Into<String>) -> Error {
    Error::Script {
        file: String::new(),
        line,
        msg: msg.into(),
    }
}

/// Parses a Prometheus duration (`1h30m`, `5m`, `10s`, `100ms`, `0`); a bare number is seconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<f64>() {
        return Some((n * 1000.0).round() as i64);
    }
    let mut total: i64 = 0;
    let b = s.as_bytes();
    let mut i = 0;
    if b.is_empty() {
        return None;
    }
    while i < b.len() {
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let n: i64 = s[st..i].parse().ok()?;
        let us = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let mult = match &s[us..i] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(mult)?)?;
    }
    Some(total)
}

/// Parses a float as PromQL (`Inf`, `+Inf`, `-Inf`, `NaN`, hex, decimal).
pub fn parse_float(s: &str) -> Option<f64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = match body.to_ascii_lowercase().as_str() {
        "inf" => f64::INFINITY,
        "nan" => f64::NAN,
        b if b.starts_with("0x") => i64::from_str_radix(&b[2..], 16).ok()? as f64,
        _ => body.parse::<f64>().ok()?,
    };
    Some(if neg { -v } else { v })
}

/// Splits a series description into its selector part and the rest.
fn split_series(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut in_str: Option<u8> = None;
    let mut depth = 0;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = in_str {
            if c == b'\\' {
                i += 1;
            } else if c == q {
                in_str = None;
            }
        } else if c == b'"' || c == b'\'' || c == b'`' {
            in_str = Some(c);
        } else if c == b'{' {
            depth += 1;
        } else if c == b'}' {
            depth -= 1;
            if depth == 0 {
                return Some((&s[..=i], &s[i + 1..]));
            }
        } else if depth == 0 && c.is_ascii_whitespace() {
            return Some((&s[..i], &s[i..]));
        }
        i += 1;
    }
    Some((s, ""))
}

fn unquote(s: &str) -> Option<String> {
    let q = s.chars().next()?;
    let inner = s.get(1..s.len().checked_sub(1)?)?;
    if q == '`' {
        return Some(inner.to_string());
    }
    let mut out = String::new();
    let mut it = inner.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                o => {
                    out.push('\\');
                    out.push(o);
                }
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Parses `name{a="b", ...}` (or `{__name__="x"}`, `{"name", a="b"}`) into labels.
pub fn parse_labels(s: &str) -> Option<Labels> {
    let s = s.trim();
    let (name, body) = match s.find('{') {
        Some(i) => (&s[..i], s[i + 1..].strip_suffix('}')?),
        None => (s, ""),
    };
    let mut l = Labels::new();
    if !name.is_empty() {
        l.set(METRIC_NAME, name);
    }
    // Split on commas outside quotes.
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut in_str: Option<char> = None;
    let mut esc = false;
    for c in body.chars() {
        if let Some(q) = in_str {
            cur.push(c);
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == q {
                in_str = None;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            in_str = Some(c);
            cur.push(c);
        } else if c == ',' {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    for p in parts {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        match eq_outside_quotes(p) {
            Some(eq) => {
                let k = p[..eq].trim();
                let k = if k.starts_with('"') {
                    unquote(k)?
                } else {
                    k.to_string()
                };
                let v = unquote(p[eq + 1..].trim())?;
                l.set(&k, &v);
            }
            // A bare quoted metric name.
            None => l.set(METRIC_NAME, &unquote(p)?),
        }
    }
    Some(l)
}

fn eq_outside_quotes(p: &str) -> Option<usize> {
    let mut in_str = false;
    let mut esc = false;
    for (i, c) in p.char_indices() {
        if in_str {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if c == '=' {
            return Some(i);
        }
    }
    None
}

/// Expands the points notation (`1 2+3x2 _ stale _x3 {{...}}x2`).
pub fn parse_points(s: &str) -> Option<Vec<Point>> {
    let mut out = Vec::new();
    let s = s.trim();
    let mut rest = s;
    while !rest.is_empty() {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let tok_end;
        if rest.starts_with("{{") {
            // A histogram token, possibly `{{..}}+{{..}}xN`: whitespace inside braces is part of it.
            let b = rest.as_bytes();
            let (mut i, mut depth) = (0, 0);
            while i < b.len() && (depth > 0 || !b[i].is_ascii_whitespace()) {
                match b[i] {
                    b'{' => depth += 1,
                    b'}' => depth -= 1,
                    _ => {}
                }
                i += 1;
            }
            let tok = &rest[..i];
            let times = tok
                .rfind("}}x")
                .and_then(|x| tok[x + 3..].parse::<usize>().ok());
            out.extend(std::iter::repeat_n(
                Point::Histogram,
                times.map_or(1, |t| t + 1),
            ));
            tok_end = i;
        } else {
            let ws = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let tok = &rest[..ws];
            tok_end = ws;
            expand_token(tok, &mut out)?;
        }
        rest = &rest[tok_end..];
    }
    Some(out)
}

fn expand_token(tok: &str, out: &mut Vec<Point>) -> Option<()> {
    if tok == "_" {
        out.push(Point::Omitted);
        return Some(());
    }
    if tok == "stale" {
        out.push(Point::Stale);
        return Some(());
    }
    // `0x10` in a series description is `0` repeated, not hex (as in Prometheus' lexer).
    let repeated = tok.rfind('x').is_some_and(|x| {
        x > 0 && x + 1 < tok.len() && tok[x + 1..].bytes().all(|b| b.is_ascii_digit())
    });
    if !repeated {
        if let Some(v) = parse_float(tok) {
            out.push(Point::Value(v));
            return Some(());
        }
    }
    let x = tok.rfind('x')?;
    let times: usize = tok[x + 1..].parse().ok()?;
    let head = &tok[..x];
    if head == "_" {
        out.extend(std::iter::repeat_n(Point::Omitted, times));
        return Some(());
    }
    if head == "stale" {
        out.extend(std::iter::repeat_n(Point::Stale, times));
        return Some(());
    }
    // Find the sign that starts the increment (not the leading sign, not an exponent's).
    let hb = head.as_bytes();
    let mut split = None;
    for i in 1..hb.len() {
        if (hb[i] == b'+' || hb[i] == b'-') && !matches!(hb[i - 1], b'e' | b'E') {
            split = Some(i);
            break;
        }
    }
    let (start, delta) = match split {
        Some(i) => (parse_float(&head[..i])?, parse_float(&head[i..])?),
        None => (parse_float(head)?, 0.0),
    };
    let mut v = start;
    for _ in 0..=times {
        out.push(Point::Value(v));
        v += delta;
    }
    Some(())
}

fn parse_series_line(line: &str, lno: usize) -> Result<ExpectedSeries> {
    let (sel, rest) = split_series(line).ok_or_else(|| err(lno, "bad series"))?;
    let labels =
        parse_labels(sel).ok_or_else(|| err(lno, format!("bad series description {sel:?}")))?;
    let points = parse_points(rest).ok_or_else(|| err(lno, format!("bad points {rest:?}")))?;
    Ok(ExpectedSeries { labels, points })
}

fn parse_matcher(rest: &str) -> Option<Matcher> {
    let rest = rest.trim();
    if let Some(m) = rest.strip_prefix("msg:") {
        return Some(Matcher::Msg(m.trim().to_string()));
    }
    if let Some(m) = rest.strip_prefix("regex:") {
        return Some(Matcher::Regex(m.trim().to_string()));
    }
    None
}

fn parse_expect(line: &str, lno: usize) -> Result<Expect> {
    let rest = line.strip_prefix("expect").unwrap_or(line).trim_start();
    let (kind, tail) = rest.split_at(rest.find(char::is_whitespace).unwrap_or(rest.len()));
    let tail = tail.trim();
    Ok(match kind {
        "fail" => Expect::Fail(parse_matcher(tail)),
        "warn" => Expect::Warn(parse_matcher(tail)),
        "info" => Expect::Info(parse_matcher(tail)),
        "no_warn" => Expect::NoWarn,
        "no_info" => Expect::NoInfo,
        "ordered" => Expect::Ordered,
        "string" => Expect::String(unquote(tail).ok_or_else(|| err(lno, "bad expected string"))?),
        "range" => {
            // range vector from A to B step S
            let w: Vec<&str> = tail.split_whitespace().collect();
            match w.as_slice() {
                ["vector", "from", a, "to", b, "step", s] => Expect::RangeVector {
                    start: parse_duration(a).ok_or_else(|| err(lno, "bad time"))?,
                    end: parse_duration(b).ok_or_else(|| err(lno, "bad time"))?,
                    step: parse_duration(s).ok_or_else(|| err(lno, "bad step"))?,
                },
                _ => return Err(err(lno, format!("bad expect line {line:?}"))),
            }
        }
        _ => return Err(err(lno, format!("unknown expect line {line:?}"))),
    })
}

/// Splits off the first whitespace-separated word.
fn word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let i = s.find(char::is_whitespace).unwrap_or(s.len());
    (&s[..i], s[i..].trim_start())
}

fn is_command(line: &str) -> bool {
    matches!(
        word(line).0,
        "load"
            | "load_with_nhcb"
            | "clear"
            | "eval"
            | "eval_fail"
            | "eval_warn"
            | "eval_info"
            | "eval_ordered"
    )
}

/// Parses a whole script.
pub fn parse_script(text: &str) -> Result<Vec<Command>> {
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let t = l.trim();
            if t.starts_with('#') {
                String::new()
            } else {
                t.to_string()
            }
        })
        .collect();
    let mut cmds = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        let lno = i + 1;
        i += 1;
        if line.is_empty() {
            continue;
        }
        // The block: following non-empty lines.
        let mut block = Vec::new();
        while i < lines.len() && !lines[i].is_empty() && !is_command(&lines[i]) {
            block.push((i + 1, lines[i].clone()));
            i += 1;
        }
        let (cmd, rest) = word(line);
        match cmd {
            "clear" => cmds.push(Command::Clear),
            "load" | "load_with_nhcb" => {
                let interval =
                    parse_duration(rest.trim()).ok_or_else(|| err(lno, "bad load interval"))?;
                let mut series = Vec::new();
                for (l, text) in &block {
                    series.push(parse_series_line(text, *l)?);
                }
                cmds.push(Command::Load {
                    line: lno,
                    interval,
                    series,
                    with_nhcb: cmd == "load_with_nhcb",
                });
            }
            "eval" | "eval_fail" | "eval_warn" | "eval_info" | "eval_ordered" => {
                let mut expects = Vec::new();
                match cmd {
                    "eval_fail" => expects.push(Expect::Fail(None)),
                    "eval_warn" => expects.push(Expect::Warn(None)),
                    "eval_info" => expects.push(Expect::Info(None)),
                    "eval_ordered" => expects.push(Expect::Ordered),
                    _ => {}
                }
                let (kind, rest) = word(rest);
                let (start, end, step, range, query) = match kind {
                    "instant" => {
                        let (at, rest) = word(rest);
                        if at != "at" {
                            return Err(err(lno, "expected 'at'"));
                        }
                        let (t, q) = word(rest);
                        let t = parse_duration(t).ok_or_else(|| err(lno, "bad time"))?;
                        (t, t, 0, false, q.to_string())
                    }
                    "range" => {
                        let (f, rest) = word(rest);
                        let (a, rest) = word(rest);
                        let (to, rest) = word(rest);
                        let (b, rest) = word(rest);
                        let (st, rest) = word(rest);
                        let (s, q) = word(rest);
                        if f != "from" || to != "to" || st != "step" {
                            return Err(err(lno, "expected 'from .. to .. step ..'"));
                        }
                        let p = |x: &str| parse_duration(x).ok_or_else(|| err(lno, "bad time"));
                        (p(a)?, p(b)?, p(s)?, true, q.to_string())
                    }
                    _ => return Err(err(lno, format!("bad eval command {line:?}"))),
                };
                let mut series = Vec::new();
                let mut scalar = None;
                let mut has_histograms = false;
                for (l, text) in &block {
                    if text.contains("{{") {
                        has_histograms = true;
                    }
                    if text.starts_with("expect ") || text == "expect" {
                        expects.push(parse_expect(text, *l)?);
                    } else if let Some(v) = parse_float(text) {
                        scalar = Some(v);
                    } else if let Some(m) = text.strip_prefix("expected_fail_message ") {
                        expects.push(Expect::Fail(Some(Matcher::Msg(m.to_string()))));
                    } else if let Some(m) = text.strip_prefix("expected_fail_regexp ") {
                        expects.push(Expect::Fail(Some(Matcher::Regex(m.to_string()))));
                    } else {
                        series.push(parse_series_line(text, *l)?);
                    }
                }
                cmds.push(Command::Eval(EvalCmd {
                    line: lno,
                    query,
                    start,
                    end,
                    step,
                    range,
                    expects,
                    series,
                    scalar,
                    has_histograms,
                }));
            }
            _ => return Err(err(lno, format!("unknown command {line:?}"))),
        }
    }
    Ok(cmds)
}
