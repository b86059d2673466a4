//! Label sets: the identity of a series.
//!
//! A series is identified by its [`Labels`], a set of `name="value"` pairs sorted by name
//! with unique names; the metric name is the label [`METRIC_NAME`] (`__name__`). The rules
//! are Prometheus':
//!
//! * A label **name** matches the legacy Prometheus rule `[a-zA-Z_][a-zA-Z0-9_]*`.
//! * A label **value** is any UTF-8 string, and this includes the value of `__name__`: Strata
//!   does not apply the legacy metric-name rule (`[a-zA-Z_:][a-zA-Z0-9_:]*`) to it, as
//!   Prometheus 3 with UTF-8 names does not, so metrics from OpenTelemetry (`http.server.duration`)
//!   are stored as they come.
//! * An **empty value** means the label is absent: pairs with an empty value are dropped, so
//!   `{a="1", b=""}` and `{a="1"}` are the same series.
//! * Names are unique within a set; [`LabelLimits`] bound the number of labels and the byte
//!   lengths of names and values.
//!
//! A label set has a stable 64-bit hash ([`Labels::stable_hash`]) and a compact binary
//! encoding whose byte order is the order of label sets ([`Labels::encode`]), so encoded
//! sets can serve as sorted keys in `strata-kv`.

use std::cmp::Ordering;
use std::fmt;

/// The name of the label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// One `name="value"` pair.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    /// The label name.
    pub name: String,
    /// The label value.
    pub value: String,
}

impl Label {
    /// A label from a name and a value (not validated; [`Labels`] validates).
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Errors of building or decoding a label set. Each names the offending label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LabelError {
    /// The name is empty or does not match `[a-zA-Z_][a-zA-Z0-9_]*`.
    #[error("invalid label name {name:?}: must match [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// Two labels have the same name.
    #[error("duplicate label name {name:?}")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// More labels than [`LabelLimits::max_labels`].
    #[error("series has {count} labels, more than the limit of {max}")]
    TooManyLabels {
        /// Labels in the set (after dropping empty values).
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A name longer than [`LabelLimits::max_name_len`] bytes.
    #[error("label name {name:?} is {len} bytes, longer than the limit of {max}")]
    NameTooLong {
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value longer than [`LabelLimits::max_value_len`] bytes.
    #[error("value of label {name:?} is {len} bytes, longer than the limit of {max}")]
    ValueTooLong {
        /// The label's name.
        name: String,
        /// The value's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Encoded bytes are not a valid label set.
    #[error("corrupt encoded label set at byte {offset}: {reason}")]
    Corrupt {
        /// Byte offset in the encoding.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
}

/// Bounds on a label set, checked when one is built from client input.
///
/// The defaults are generous for real series while stopping absurd ones: Cortex/Mimir's
/// defaults for name and value lengths, twice their label count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelLimits {
    /// Most labels in a set (after empty values are dropped). Default 64.
    pub max_labels: usize,
    /// Longest name, in bytes. Default 1024.
    pub max_name_len: usize,
    /// Longest value, in bytes. Default 2048.
    pub max_value_len: usize,
}

impl Default for LabelLimits {
    fn default() -> Self {
        LabelLimits {
            max_labels: 64,
            max_name_len: 1024,
            max_value_len: 2048,
        }
    }
}

impl LabelLimits {
    /// No limits at all.
    pub fn unlimited() -> Self {
        LabelLimits {
            max_labels: usize::MAX,
            max_name_len: usize::MAX,
            max_value_len: usize::MAX,
        }
    }
}

/// True if `name` matches `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A validated label set: sorted by name, names unique and valid, no empty values.
///
/// `Ord` compares label sets as sequences of `(name, value)` pairs, the order of
/// [`Labels::encode`]'s bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels {
    // Invariant: sorted by name, names unique and valid, values non-empty.
    labels: Vec<Label>,
}

// Encoding: each string is written with 0x00 escaped as 0x00 0xFF and terminated by
// 0x00 0x01, so byte order of encodings equals order of label sets (see `encode`).
const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xff;
const TERMINATOR: u8 = 0x01;
/// What follows each string in [`Labels::encode`].
pub(crate) const SEPARATOR: [u8; 2] = [ESCAPE, TERMINATOR];

impl Labels {
    /// The empty label set.
    pub fn empty() -> Self {
        Labels::default()
    }

    /// Builds a label set from `(name, value)` pairs in any order, with the default
    /// [`LabelLimits`]. See [`Labels::from_pairs_with_limits`].
    pub fn from_pairs<I, N, V>(pairs: I) -> Result<Self, LabelError>
    where
        I: IntoIterator<Item = (N, V)>,
        N: Into<String>,
        V: Into<String>,
    {
        Self::from_pairs_with_limits(pairs, &LabelLimits::default())
    }

    /// Builds a label set from `(name, value)` pairs in any order: validates every name
    /// (also of pairs with an empty value), checks lengths against `limits`, rejects
    /// duplicate names, drops pairs with an empty value, sorts, and checks the label count.
    pub fn from_pairs_with_limits<I, N, V>(
        pairs: I,
        limits: &LabelLimits,
    ) -> Result<Self, LabelError>
    where
        I: IntoIterator<Item = (N, V)>,
        N: Into<String>,
        V: Into<String>,
    {
        let mut labels: Vec<Label> = Vec::new();
        for (name, value) in pairs {
            let label = Label::new(name, value);
            if !is_valid_label_name(&label.name) {
                return Err(LabelError::InvalidName { name: label.name });
            }
            if label.name.len() > limits.max_name_len {
                return Err(LabelError::NameTooLong {
                    len: label.name.len(),
                    name: label.name,
                    max: limits.max_name_len,
                });
            }
            if label.value.len() > limits.max_value_len {
                return Err(LabelError::ValueTooLong {
                    len: label.value.len(),
                    name: label.name,
                    max: limits.max_value_len,
                });
            }
            labels.push(label);
        }
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = labels.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(LabelError::DuplicateName {
                name: w[0].name.clone(),
            });
        }
        labels.retain(|l| !l.value.is_empty());
        if labels.len() > limits.max_labels {
            return Err(LabelError::TooManyLabels {
                count: labels.len(),
                max: limits.max_labels,
            });
        }
        Ok(Labels { labels })
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True for the empty set.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The labels, sorted by name.
    pub fn as_slice(&self) -> &[Label] {
        &self.labels
    }

    /// Iterates the labels in name order.
    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.labels.iter()
    }

    /// The labels, sorted by name, without copying them.
    pub fn into_vec(self) -> Vec<Label> {
        self.labels
    }

    /// The value of label `name`, or `None` if the set has no such label (which, for
    /// matching, is the same as the empty value).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .map(|i| self.labels[i].value.as_str())
    }

    /// The metric name (the value of `__name__`), if any.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// A stable 64-bit hash: XXH3-64 (seed 0) of [`Labels::encode`]. It depends only on the
    /// labels, never on the process, platform or build, so it may be persisted. Distinct
    /// sets can collide; users of the hash must compare the labels.
    pub fn stable_hash(&self) -> u64 {
        hash_pairs(
            self.labels
                .iter()
                .map(|l| (l.name.as_bytes(), l.value.as_bytes())),
        )
    }

    /// The binary encoding: for each label in name order, the name then the value, each as
    /// its bytes with `0x00` escaped as `0x00 0xFF`, followed by the terminator `0x00 0x01`.
    ///
    /// The encoding is order-preserving: comparing two encodings bytewise gives the same
    /// result as comparing the label sets ([`Ord`]), so encoded sets sort correctly as
    /// `strata-kv` keys. The empty set encodes as no bytes. It carries no version of its
    /// own: the formats that embed it are versioned.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut out);
        out
    }

    /// Appends [`Labels::encode`]'s bytes to `dst`.
    pub fn encode_into(&self, dst: &mut Vec<u8>) {
        for l in &self.labels {
            put_escaped(dst, l.name.as_bytes());
            put_escaped(dst, l.value.as_bytes());
        }
    }

    fn encoded_len_hint(&self) -> usize {
        self.labels
            .iter()
            .map(|l| l.name.len() + l.value.len() + 4)
            .sum()
    }

    /// Decodes [`Labels::encode`]'s bytes, checking every invariant of a label set (valid,
    /// sorted, unique names; UTF-8, non-empty values). Arbitrary bytes give an error, never a
    /// panic. Limits are not applied: stored sets were checked when written.
    pub fn decode(mut src: &[u8]) -> Result<Self, LabelError> {
        let total = src.len();
        let mut labels: Vec<Label> = Vec::new();
        while !src.is_empty() {
            let at = total - src.len();
            let name = take_escaped(&mut src, total)?;
            let value = take_escaped(&mut src, total)?;
            let name = String::from_utf8(name).map_err(|_| corrupt(at, "name is not UTF-8"))?;
            let value = String::from_utf8(value)
                .map_err(|_| corrupt(at, format!("value of label {name:?} is not UTF-8")))?;
            if !is_valid_label_name(&name) {
                return Err(corrupt(at, format!("invalid label name {name:?}")));
            }
            if value.is_empty() {
                return Err(corrupt(at, format!("label {name:?} has an empty value")));
            }
            if let Some(prev) = labels.last() {
                if prev.name.as_str().cmp(&name) != Ordering::Less {
                    return Err(corrupt(
                        at,
                        format!("label {name:?} is not after {:?}", prev.name),
                    ));
                }
            }
            labels.push(Label { name, value });
        }
        Ok(Labels { labels })
    }
}

/// [`Labels::stable_hash`] of the label set made of these `(name, value)` pairs, taken as
/// they are (not sorted or validated): for pairs that form a valid label set in name order
/// it equals the set's hash, so a set can be looked up by hash straight from borrowed input.
pub fn hash_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> u64 {
    with_encoded(pairs, |_, h| h)
}

/// Calls `f` with the [`Labels::encode`] bytes of these pairs (taken as they are) and
/// their hash ([`hash_pairs`]), encoded into a reused per-thread buffer.
pub(crate) fn with_encoded<'a, R>(
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    f: impl FnOnce(&[u8], u64) -> R,
) -> R {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    // One-shot XXH3 over the encoding in a reused buffer: much cheaper than streaming the
    // short pieces through the hasher, and the same digest.
    BUF.with(|buf| match buf.try_borrow_mut() {
        Ok(mut buf) => {
            // `buf` is scratch space, its length its room (kept, so not zeroed again).
            let mut end = 0;
            for (name, value) in pairs {
                end = put_escaped_at(&mut buf, end, name);
                end = put_escaped_at(&mut buf, end, value);
            }
            let key = &buf[..end];
            let r = f(key, xxhash_rust::xxh3::xxh3_64(key));
            if buf.len() > 64 << 10 {
                *buf = Vec::new();
            }
            r
        }
        // Only if `f` itself encodes: use a buffer of its own.
        Err(_) => {
            let mut own = Vec::new();
            for (name, value) in pairs {
                put_escaped(&mut own, name);
                put_escaped(&mut own, value);
            }
            f(&own, xxhash_rust::xxh3::xxh3_64(&own))
        }
    })
}

/// [`put_escaped`] into `buf[at..]`, growing `buf` if needed; returns the end of what
/// was written. Label strings are short: fixed-size copies of overlapping words, checked
/// for 0x00 as they are copied, cost far less than `memchr` and `memcpy` calls.
#[inline(always)]
fn put_escaped_at(buf: &mut Vec<u8>, at: usize, s: &[u8]) -> usize {
    let n = s.len();
    // Room for the escaped string, its terminator and a word past the end.
    let need = at + 2 * n + 2 + 8;
    if buf.len() < need {
        buf.resize(need.max(2 * buf.len()).max(256), 0);
    }
    let nul = if n > 16 {
        buf[at..at + n].copy_from_slice(s);
        has_nul(s)
    } else if n >= 8 {
        let (head, tail) = (word8(&s[..8]), word8(&s[n - 8..]));
        buf[at..at + 8].copy_from_slice(&head.to_le_bytes());
        buf[at + n - 8..at + n].copy_from_slice(&tail.to_le_bytes());
        zero_byte_in(head) || zero_byte_in(tail)
    } else if n >= 4 {
        let (head, tail) = (word4(&s[..4]), word4(&s[n - 4..]));
        buf[at..at + 4].copy_from_slice(&head.to_le_bytes());
        buf[at + n - 4..at + n].copy_from_slice(&tail.to_le_bytes());
        zero_byte_in4(head) || zero_byte_in4(tail)
    } else if n > 0 {
        // One to three bytes: first, middle and last cover them.
        let (a, b, c) = (s[0], s[n / 2], s[n - 1]);
        buf[at] = a;
        buf[at + n / 2] = b;
        buf[at + n - 1] = c;
        a == ESCAPE || b == ESCAPE || c == ESCAPE
    } else {
        false
    };
    if !nul {
        buf[at + n] = ESCAPE;
        buf[at + n + 1] = TERMINATOR;
        return at + n + 2;
    }
    let mut i = at;
    for &b in s {
        buf[i] = b;
        i += 1;
        if b == ESCAPE {
            buf[i] = ESCAPED_ZERO;
            i += 1;
        }
    }
    buf[i] = ESCAPE;
    buf[i + 1] = TERMINATOR;
    i + 2
}

/// The first eight bytes of `s` (at least eight long) as a little-endian word.
fn word8(s: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&s[..8]);
    u64::from_le_bytes(a)
}

/// The first four bytes of `s` (at least four long) as a little-endian word.
fn word4(s: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&s[..4]);
    u32::from_le_bytes(a)
}

/// Whether a byte of `x` is zero (exact).
fn zero_byte_in4(x: u32) -> bool {
    x.wrapping_sub(0x0101_0101) & !x & 0x8080_8080 != 0
}

/// Whether a byte of `x` is zero (exact).
fn zero_byte_in(x: u64) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    x.wrapping_sub(LO) & !x & HI != 0
}

fn corrupt(offset: usize, reason: impl Into<String>) -> LabelError {
    LabelError::Corrupt {
        offset,
        reason: reason.into(),
    }
}

/// Whether `s` holds a 0x00 byte. Label strings are short: eight bytes at a time beats
/// `memchr`'s setup on them.
fn has_nul(s: &[u8]) -> bool {
    if s.len() < 8 {
        return s.iter().fold(false, |nul, &b| nul | (b == 0));
    }
    // The last eight bytes (overlapping the words) cover the remainder.
    let tail = zero_byte_in(word8(&s[s.len() - 8..]));
    s.chunks_exact(8)
        .fold(tail, |nul, w| nul | zero_byte_in(word8(w)))
}

pub(crate) fn put_escaped(dst: &mut Vec<u8>, s: &[u8]) {
    // Label bytes almost never hold 0x00: copy them whole then.
    if !has_nul(s) {
        dst.extend_from_slice(s);
        dst.extend_from_slice(&[ESCAPE, TERMINATOR]);
        return;
    }
    let mut rest = s;
    while let Some(i) = rest.iter().position(|&b| b == ESCAPE) {
        dst.extend_from_slice(&rest[..=i]);
        dst.push(ESCAPED_ZERO);
        rest = &rest[i + 1..];
    }
    dst.extend_from_slice(rest);
    dst.extend_from_slice(&[ESCAPE, TERMINATOR]);
}

/// Takes one escaped, terminated string from the front of `src`.
pub(crate) fn take_escaped(src: &mut &[u8], total: usize) -> Result<Vec<u8>, LabelError> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        // Copy each run up to the next 0x00 whole: label bytes almost never hold one, so
        // this is usually one copy into an exactly sized buffer.
        let Some(at) = src[i..].iter().position(|&b| b == ESCAPE) else {
            return Err(corrupt(total, "unterminated string"));
        };
        let run = &src[i..i + at];
        match src.get(i + at + 1) {
            Some(&TERMINATOR) => {
                if out.is_empty() {
                    out = run.to_vec();
                } else {
                    out.extend_from_slice(run);
                }
                *src = &src[i + at + 2..];
                return Ok(out);
            }
            Some(&ESCAPED_ZERO) => {
                out.extend_from_slice(run);
                out.push(0);
                i += at + 2;
            }
            _ => {
                return Err(corrupt(
                    total - src.len() + i + at,
                    "0x00 not followed by 0x01 or 0xFF",
                ))
            }
        }
    }
}

impl fmt::Display for Labels {
    /// Prometheus' notation: `{a="1", b="2"}`, values quoted and escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.labels.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.labels.iter()
    }
}

#[cfg(test)]
mod tests;
