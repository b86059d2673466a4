//! Request parameters as Prometheus' HTTP API reads them: from the URL query and, for POST,
//! an `application/x-www-form-urlencoded` body; times as RFC 3339 or Unix seconds;
//! durations as Prometheus durations (`1h30m`) or seconds.

use crate::error::ApiError;

/// All `(name, value)` parameters of a request, in order (repeated names kept).
#[derive(Debug, Default, Clone)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// Parameters from the URL query and a form body.
    pub fn parse(query: Option<&str>, form_body: Option<&[u8]>) -> Params {
        let mut v: Vec<(String, String)> = Vec::new();
        if let Some(q) = query {
            v.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        if let Some(b) = form_body {
            v.extend(form_urlencoded::parse(b).into_owned());
        }
        Params(v)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A time parameter in ms, `default` if absent.
    pub fn time(&self, name: &str, default: i64) -> Result<i64, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(default),
            Some(s) => parse_time(s)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter \"{name}\": {e}"))),
        }
    }
}

/// Parses Unix seconds (with fraction) or RFC 3339 into ms since the epoch.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() {
            return Err(format!("cannot parse {s:?} to a valid timestamp"));
        }
        let ms = (secs * 1000.0).round();
        // Prometheus' own bounds for "min/max time".
        return Ok(ms.clamp(i64::MIN as f64 / 2.0, i64::MAX as f64 / 2.0) as i64);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| format!("cannot parse {s:?} to a valid timestamp"))
}

/// Parses a duration: seconds as a number, or Prometheus units `ms s m h d w y` (e.g.
/// `1h30m`). Returns ms.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || secs.abs() > (i64::MAX / 1000) as f64 {
            return Err(format!("cannot parse {s:?} to a valid duration"));
        }
        return Ok((secs * 1000.0).round() as i64);
    }
    let bad = || format!("cannot parse {s:?} to a valid duration");
    let b = s.as_bytes();
    if b.is_empty() {
        return Err(bad());
    }
    let mut i = 0;
    let mut total: i64 = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(bad());
        }
        let n: i64 = s[start..i].parse().map_err(|_| bad())?;
        let ustart = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit: i64 = match &s[ustart..i] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations() {
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_duration("15"), Ok(15_000));
        assert_eq!(parse_duration("0.5"), Ok(500));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("90d"), Ok(90 * 86_400_000));
        assert_eq!(parse_duration("10y"), Ok(10 * 365 * 86_400_000));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn repeated_parameters_from_query_and_form() {
        let p = Params::parse(
            Some("match[]=up&start=1"),
            Some(b"match[]=a%7Bb%3D%22c%22%7D"),
        );
        assert_eq!(p.all("match[]"), vec!["up", "a{b=\"c\"}"]);
        assert_eq!(p.get("start"), Some("1"));
    }
}
