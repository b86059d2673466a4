//! Label matchers: the series selectors of queries (`{job="node", path=~"/api/.*"}`), with
//! Prometheus semantics.
//!
//! * A missing label is the same as a label with the empty value: `{zone=""}` selects the
//!   series *without* a `zone` label, and any matcher that matches `""` (such as `zone!="eu"`
//!   or `zone=~"eu|"`) also selects series without the label. [`Matcher::matches`] takes
//!   `Option<&str>` for this reason, and [`Matcher::matches_empty`] tells the query planner
//!   that it cannot answer a matcher from the postings of the label's values alone.
//! * Regexes are fully anchored: `path=~"/api"` does not match `/api/v1`. A pattern `p` is
//!   compiled once, as `^(?s:p)$`; like Prometheus 3, `.` also matches a newline.
//! * A regex that is a plain alternation of literals (`GET|POST`) exposes that set
//!   ([`Matcher::set_matches`]), so the planner can look up each value's postings directly;
//!   such matchers are also evaluated without running the regex.

use std::fmt;

use regex::Regex;

/// The comparison a matcher makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`: the value equals.
    Equal,
    /// `!=`: the value differs.
    NotEqual,
    /// `=~`: the whole value matches the regex.
    RegexMatch,
    /// `!~`: the whole value does not match the regex.
    RegexNoMatch,
}

impl MatchOp {
    /// True for `=~` and `!~`.
    pub fn is_regex(self) -> bool {
        matches!(self, MatchOp::RegexMatch | MatchOp::RegexNoMatch)
    }

    /// True for `!=` and `!~`.
    pub fn is_negative(self) -> bool {
        matches!(self, MatchOp::NotEqual | MatchOp::RegexNoMatch)
    }
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::RegexMatch => "=~",
            MatchOp::RegexNoMatch => "!~",
        })
    }
}

/// Errors of building a matcher.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MatcherError {
    /// The regex does not compile.
    #[error("invalid regex {pattern:?} for label {name:?}: {source}")]
    InvalidRegex {
        /// The label name of the matcher.
        name: String,
        /// The pattern as given (before anchoring).
        pattern: String,
        /// Why it does not compile.
        #[source]
        source: regex::Error,
    },
}

/// A label matcher `name op "value"`. Immutable; regexes are compiled once by
/// [`Matcher::new`]. `Send + Sync`, cheap to evaluate many times.
#[derive(Debug, Clone)]
pub struct Matcher {
    name: String,
    op: MatchOp,
    value: String,
    /// The anchored regex, for regex ops whose pattern is not a literal set.
    re: Option<Regex>,
    /// For regex ops whose pattern is a plain alternation of literals: those literals, sorted
    /// and unique. Matching then is set membership.
    set: Option<Vec<String>>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Eq for Matcher {}

impl Matcher {
    /// Builds a matcher; compiles the regex of `=~` and `!~`. The name is not validated
    /// (a matcher on a name no series can have is valid and matches like an absent label).
    pub fn new(
        op: MatchOp,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, MatcherError> {
        let name = name.into();
        let value = value.into();
        let (mut re, mut set) = (None, None);
        if op.is_regex() {
            set = literal_alternation(&value);
            if set.is_none() {
                re = Some(Regex::new(&format!("^(?s:{value})$")).map_err(|source| {
                    MatcherError::InvalidRegex {
                        name: name.clone(),
                        pattern: value.clone(),
                        source,
                    }
                })?);
            }
        }
        Ok(Matcher {
            name,
            op,
            value,
            re,
            set,
        })
    }

    /// `name="value"` (cannot fail).
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
            re: None,
            set: None,
        }
    }

    /// The label name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operator.
    pub fn op(&self) -> MatchOp {
        self.op
    }

    /// The value, or the regex pattern as given (unanchored).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// True if a series whose label `name` has `value` (`None`: no such label, which is the
    /// same as `Some("")`) is selected.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let v = value.unwrap_or("");
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::RegexMatch => self.regex_matches(v),
            MatchOp::RegexNoMatch => !self.regex_matches(v),
        }
    }

    fn regex_matches(&self, v: &str) -> bool {
        match (&self.set, &self.re) {
            (Some(set), _) => set.binary_search_by(|s| s.as_str().cmp(v)).is_ok(),
            (None, Some(re)) => re.is_match(v),
            // Unreachable by construction: regex ops have a set or a regex.
            (None, None) => false,
        }
    }

    /// True if the matcher selects series that lack the label. The planner cannot answer
    /// such a matcher from the postings of the label's values alone: it must add (for
    /// positive ops) or keep (for negative ops) the series without the label.
    pub fn matches_empty(&self) -> bool {
        self.matches(None)
    }

    /// For `=~` and `!~` with a pattern that is a plain alternation of literals
    /// (`a|b|c`, optionally in one group `(a|b)` / `(?:a|b)`, with escaped metacharacters
    /// such as `a\.b` allowed): the literals, sorted and unique. `=~` selects exactly the
    /// series whose value is in the set (`""` in the set means "or the label is absent");
    /// `!~` selects all others. `None` for other matchers, or when the pattern is anything
    /// more than literals (classes, repetition, flags, ...).
    pub fn set_matches(&self) -> Option<&[String]> {
        self.set.as_deref()
    }
}

impl fmt::Display for Matcher {
    /// PromQL notation: `name="value"`, `name=~"regex"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op, self.value)
    }
}

/// If `pattern` is an alternation of literals, the literals, sorted and unique.
fn literal_alternation(pattern: &str) -> Option<Vec<String>> {
    let inner = strip_outer_group(pattern);
    let mut set = Vec::new();
    let mut cur = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '|' => set.push(std::mem::take(&mut cur)),
            '\\' => match chars.next() {
                // An escaped metacharacter is that character; `\d`, `\n`, `\x41`, `\<`
                // and friends are classes, escapes or assertions left to the regex engine.
                Some(e) if "\\.+*?()|[]{}^$-".contains(e) => cur.push(e),
                _ => return None,
            },
            '.' | '+' | '*' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '^' | '$' => return None,
            _ => cur.push(c),
        }
    }
    set.push(cur);
    set.sort();
    set.dedup();
    Some(set)
}

/// `(x)` or `(?:x)` -> `x` when the parentheses enclose the whole pattern.
fn strip_outer_group(pattern: &str) -> &str {
    let inner = if let Some(rest) = pattern.strip_prefix("(?:") {
        rest
    } else if let Some(rest) = pattern.strip_prefix('(') {
        rest
    } else {
        return pattern;
    };
    match inner.strip_suffix(')') {
        // With any other parenthesis inside, the outer pair might not be one group
        // (`(a)|(b)`); with a trailing `\` the last `)` is escaped (`(a\)`). Keep those
        // whole, for `literal_alternation` to reject.
        Some(body) if !body.contains(['(', ')']) && !body.ends_with('\\') => body,
        _ => pattern,
    }
}

#[cfg(test)]
mod tests;
