//! String literals that Go (Prometheus) would decode to invalid UTF-8.
//!
//! `promql-parser` turns `"\xc5"` into the character U+00C5, while Prometheus keeps the
//! byte 0xC5, which makes an invalid label name. Scanning the raw query finds such
//! literals so label-name checks can reject them as Prometheus does.

use std::collections::HashMap;

/// Decodes the inside of a `"` or `'` literal as Go does, into bytes.
fn go_bytes(inner: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut it = inner.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            let mut b = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            continue;
        }
        let e = it.next()?;
        let hex = |it: &mut std::iter::Peekable<std::str::Chars<'_>>, n: usize| {
            let s: String = (0..n).filter_map(|_| it.next()).collect();
            u32::from_str_radix(&s, 16).ok()
        };
        match e {
            'a' => out.push(7),
            'b' => out.push(8),
            'f' => out.push(12),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'v' => out.push(11),
            'x' => out.push(hex(&mut it, 2)? as u8),
            'u' | 'U' => {
                let ch = char::from_u32(hex(&mut it, if e == 'u' { 4 } else { 8 })?)?;
                let mut b = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
            }
            '0'..='7' => {
                let mut v = e.to_digit(8)?;
                for _ in 0..2 {
                    v = v * 8 + it.next()?.to_digit(8)?;
                }
                out.push(u8::try_from(v).ok()?);
            }
            other => {
                let mut b = [0u8; 4];
                out.extend_from_slice(other.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    Some(out)
}

/// Quotes bytes as Go's `%q`: valid characters escaped as Rust's debug form, invalid
/// bytes as `\xNN`.
pub fn go_quote(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            s.extend(c.escape_debug());
        }
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s.push('"');
    s
}

/// Maps the parser's decoding of each literal Go would decode to invalid UTF-8 to its bytes.
pub fn invalid_utf8_literals(query: &str) -> HashMap<String, Vec<u8>> {
    let mut out = HashMap::new();
    let b = query.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let q = b[i];
        if q == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if q != b'"' && q != b'\'' && q != b'`' {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < b.len() && b[i] != q {
            if b[i] == b'\\' && q != b'`' {
                i += 1;
            }
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        i += 1;
        let lit = &query[start..i];
        if q == b'`' || !lit.contains('\\') {
            continue;
        }
        let (Some(bytes), Ok(parsed)) = (
            go_bytes(&lit[1..lit.len() - 1]),
            promql_parser::util::unquote_string(lit),
        ) else {
            continue;
        };
        if std::str::from_utf8(&bytes).is_err() {
            out.insert(parsed, bytes);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_invalid_hex_escapes() {
        let m = invalid_utf8_literals(r#"count_values("a\xc5z", x) + f("ok\x41", '\xff')"#);
        assert_eq!(m.len(), 2);
        assert_eq!(go_quote(&m["a\u{c5}z"]), r#""a\xc5z""#);
        assert!(m.contains_key("\u{ff}"));
    }
}
