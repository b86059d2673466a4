//! `strata import`, `strata export` and `strata query`: the time-series store from the
//! command line, offline (`--data-dir`, the server must not be running) or through a
//! server (`query --server`).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value as J;
use strata_server::params::{parse_duration, parse_time};
use strata_server::prompb::TimeSeries;
use strata_tsdb::{Labels, Matcher, Options, Tsdb};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ImportFormat {
    /// OpenMetrics text (timestamps in seconds).
    Openmetrics,
    /// Prometheus text exposition format (timestamps in milliseconds).
    Prometheus,
    /// InfluxDB line protocol (see --precision).
    Influx,
    /// CSV lines `series,timestamp,value`: a series selector such as `up{job="a"}` (quoted
    /// if it holds commas), a timestamp in ms or RFC 3339, a value.
    Csv,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Data directory of the server (it must not be running).
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Input format.
    #[arg(long, value_enum)]
    format: ImportFormat,
    /// Line-protocol timestamp precision: ns, us, ms, s.
    #[arg(long, default_value = "ns")]
    precision: String,
    /// Files to import (`-` for stdin).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

fn open(data_dir: &std::path::Path) -> Result<Tsdb> {
    let dir = data_dir.join("tsdb");
    Tsdb::open(&dir, Options::default()).with_context(|| {
        format!(
            "opening the store in {} (is a server running on it?)",
            dir.display()
        )
    })
}

/// One CSV line as an exposition line `series value timestamp`.
fn csv_to_exposition(line: &str) -> Result<String, String> {
    let (rest, value) = line
        .rsplit_once(',')
        .ok_or("expected series,timestamp,value")?;
    let (series, ts) = rest
        .rsplit_once(',')
        .ok_or("expected series,timestamp,value")?;
    let series = series.trim();
    let series = match series.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => series.to_string(),
    };
    let ts = ts.trim();
    let ms = match ts.parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => parse_time(ts)?,
    };
    Ok(format!("{series} {} {ms}", value.trim()))
}

fn parse_block(
    format: ImportFormat,
    block: &str,
    unit_ns: i64,
    now: i64,
) -> strata_server::text::Parsed {
    use strata_server::text::{parse_exposition, parse_line_protocol, parse_openmetrics, Parsed};
    match format {
        ImportFormat::Openmetrics => parse_openmetrics(block, now),
        ImportFormat::Prometheus => parse_exposition(block, now),
        ImportFormat::Influx => parse_line_protocol(block, unit_ns, now),
        ImportFormat::Csv => {
            let mut text = String::with_capacity(block.len() + 64);
            let mut errors = Vec::new();
            for line in block.lines().filter(|l| !l.trim().is_empty()) {
                if line.trim_start().starts_with("series,") {
                    continue; // header
                }
                match csv_to_exposition(line) {
                    Ok(l) => {
                        text.push_str(&l);
                        text.push('\n');
                    }
                    Err(e) => errors.push(format!("{line:?}: {e}")),
                }
            }
            let mut p: Parsed = parse_exposition(&text, now);
            p.errors.extend(errors);
            p
        }
    }
}

pub fn run_import(args: ImportArgs) -> Result<()> {
    let unit_ns = match args.precision.as_str() {
        "ns" | "n" => 1,
        "us" | "u" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        other => bail!("unknown precision {other:?}"),
    };
    let db = open(&args.data_dir)?;
    let limits = db.options().label_limits;
    let series_before = db.head_series();
    let began = Instant::now();
    let (mut samples, mut rejected, mut errors) = (0u64, 0u64, 0u64);
    let now = chrono::Utc::now().timestamp_millis();
    for path in &args.files {
        let (reader, len): (Box<dyn Read>, u64) = if path.as_os_str() == "-" {
            (Box::new(std::io::stdin()), 0)
        } else {
            let f =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            (Box::new(f), len)
        };
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(path.display().to_string());
        let mut reader = BufReader::with_capacity(1 << 20, reader);
        let mut block = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .with_context(|| format!("reading {}", path.display()))?;
            block.push_str(&line);
            if n == 0 || block.len() >= 4 << 20 {
                bar.inc(block.len() as u64);
                let parsed = parse_block(args.format, &block, unit_ns, now);
                errors += parsed.errors.len() as u64;
                for e in parsed.errors.iter().take(3) {
                    bar.println(format!("skipped: {e}"));
                }
                let mut app = db.appender();
                for ts in parsed.series {
                    let TimeSeries {
                        labels, samples: s, ..
                    } = ts;
                    match Labels::from_pairs_with_limits(
                        labels.into_iter().map(|l| (l.name, l.value)),
                        &limits,
                    ) {
                        Ok(l) => app.add_series(
                            l,
                            &s.iter().map(|x| (x.timestamp, x.value)).collect::<Vec<_>>(),
                        ),
                        Err(e) => {
                            rejected += s.len() as u64;
                            bar.println(format!("rejected series: {e}"));
                        }
                    }
                }
                let st = app.commit()?;
                samples += st.appended;
                rejected += st.too_old + st.series_limited;
                block.clear();
            }
            if n == 0 {
                break;
            }
        }
        bar.finish_and_clear();
    }
    let took = began.elapsed();
    db.flush()?;
    // The chunks just flushed sit in the engine's memtable: write them to tables, so that
    // bytes/sample below measures the disk.
    db.kv().flush()?;
    let stats = db.stats()?;
    let series = db.head_series().saturating_sub(series_before);
    db.close()?;
    println!(
        "imported {samples} samples of {series} new series in {:.2} s ({:.0} samples/s); {rejected} rejected, {errors} unparsable lines; {:.3} bytes/sample on disk",
        took.as_secs_f64(),
        samples as f64 / took.as_secs_f64().max(1e-9),
        stats.bytes_per_sample
    );
    Ok(())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// OpenMetrics text, timestamps in seconds, ending with `# EOF`.
    Openmetrics,
    /// `series,timestamp,value` lines (timestamps in ms), as `strata import --format csv` reads.
    Csv,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Data directory of the server (it must not be running).
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Series selector (repeatable), e.g. `up{job="node"}`.
    #[arg(long = "match", required = true)]
    matchers: Vec<String>,
    /// Start (RFC 3339 or Unix seconds; default: everything).
    #[arg(long)]
    start: Option<String>,
    /// End (RFC 3339 or Unix seconds; default: everything).
    #[arg(long)]
    end: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "openmetrics")]
    format: ExportFormat,
}

pub(crate) fn selector(s: &str) -> Result<Vec<Matcher>> {
    let expr = promql_parser_parse(s)?;
    Ok(expr)
}

fn promql_parser_parse(s: &str) -> Result<Vec<Matcher>> {
    // A selector is also an exposition-style series: reuse the query API's parsing.
    let p = strata_server::params::Params(vec![("match[]".into(), s.to_string())]);
    strata_server::api::selectors(&p)
        .map_err(|e| anyhow::anyhow!("{}", e.message))?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("empty selector"))
}

fn escape_label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn series_text(l: &Labels) -> String {
    let name = l.metric_name().unwrap_or("");
    let rest: Vec<String> = l
        .iter()
        .filter(|x| x.name != "__name__")
        .map(|x| format!("{}=\"{}\"", x.name, escape_label_value(&x.value)))
        .collect();
    if rest.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", rest.join(","))
    }
}

pub fn run_export(args: ExportArgs) -> Result<()> {
    let start = args
        .start
        .as_deref()
        .map(parse_time)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--start: {e}"))?;
    let end = args
        .end
        .as_deref()
        .map(parse_time)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--end: {e}"))?;
    let db = open(&args.data_dir)?;
    let q = db.querier(start.unwrap_or(i64::MIN), end.unwrap_or(i64::MAX));
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut seen = std::collections::BTreeSet::new();
    if let ExportFormat::Csv = args.format {
        writeln!(out, "series,timestamp,value")?;
    }
    for m in &args.matchers {
        for s in q.select(&selector(m)?)? {
            if !seen.insert(s.labels.clone()) {
                continue;
            }
            let text = series_text(&s.labels);
            for (t, v) in s.iter() {
                let v = strata_server::api::format_value(v);
                match args.format {
                    ExportFormat::Openmetrics => {
                        let secs = if t % 1000 == 0 {
                            format!("{}", t / 1000)
                        } else {
                            format!("{}.{:03}", t.div_euclid(1000), t.rem_euclid(1000))
                        };
                        writeln!(out, "{text} {v} {secs}")?;
                    }
                    ExportFormat::Csv => {
                        writeln!(out, "\"{}\",{t},{v}", text.replace('"', "\"\""))?
                    }
                }
            }
        }
    }
    if let ExportFormat::Openmetrics = args.format {
        writeln!(out, "# EOF")?;
    }
    out.flush()?;
    drop(out);
    db.close()?;
    Ok(())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// PromQL expression.
    expr: String,
    /// Query a store directly (the server must not be running on it).
    #[arg(long, conflicts_with = "server")]
    data_dir: Option<PathBuf>,
    /// Query a running server, e.g. http://127.0.0.1:9490.
    #[arg(long)]
    server: Option<String>,
    /// Bearer token for --server.
    #[arg(long, env = "STRATA_AUTH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Evaluation time of an instant query (RFC 3339 or Unix seconds; default now).
    #[arg(long, conflicts_with_all = ["start", "end", "step"])]
    time: Option<String>,
    /// Range query start.
    #[arg(long, requires_all = ["end"])]
    start: Option<String>,
    /// Range query end.
    #[arg(long, requires_all = ["start"])]
    end: Option<String>,
    /// Range query step (a duration, default 1m).
    #[arg(long)]
    step: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: OutputFormat,
}

fn render_table(data: &J, out: &mut dyn Write) -> Result<()> {
    let labels = |m: &J| -> String {
        let Some(obj) = m.as_object() else {
            return "{}".into();
        };
        let name = obj.get("__name__").and_then(J::as_str).unwrap_or("");
        let rest: Vec<String> = obj
            .iter()
            .filter(|(k, _)| *k != "__name__")
            .map(|(k, v)| format!("{k}={}", v))
            .collect();
        format!("{name}{{{}}}", rest.join(", "))
    };
    let point = |p: &J| -> String {
        let t = p.get(0).and_then(J::as_f64).unwrap_or(0.0);
        let v = p.get(1).and_then(J::as_str).unwrap_or("");
        let when = chrono::DateTime::from_timestamp_millis((t * 1000.0).round() as i64)
            .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default();
        format!("{v} @ {when}")
    };
    match data["resultType"].as_str() {
        Some("vector") => {
            for r in data["result"].as_array().into_iter().flatten() {
                writeln!(out, "{}  {}", labels(&r["metric"]), point(&r["value"]))?;
            }
        }
        Some("matrix") => {
            for r in data["result"].as_array().into_iter().flatten() {
                writeln!(out, "{}", labels(&r["metric"]))?;
                for p in r["values"].as_array().into_iter().flatten() {
                    writeln!(out, "  {}", point(p))?;
                }
            }
        }
        Some("scalar") | Some("string") => writeln!(out, "{}", point(&data["result"]))?,
        _ => writeln!(out, "{data}")?,
    }
    Ok(())
}

pub fn run_query(args: QueryArgs) -> Result<()> {
    let range = args.start.is_some();
    let now = chrono::Utc::now().timestamp_millis();
    let tp = |s: &Option<String>, what: &str, default: i64| -> Result<i64> {
        s.as_deref()
            .map(parse_time)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--{what}: {e}"))
            .map(|t| t.unwrap_or(default))
    };
    let step_ms = parse_duration(args.step.as_deref().unwrap_or("1m"))
        .map_err(|e| anyhow::anyhow!("--step: {e}"))?;
    let body: J = if let Some(server) = &args.server {
        let base = server.trim_end_matches('/');
        let mut params: Vec<(&str, String)> = vec![("query", args.expr.clone())];
        let path = if range {
            params.push((
                "start",
                (tp(&args.start, "start", 0)? as f64 / 1000.0).to_string(),
            ));
            params.push((
                "end",
                (tp(&args.end, "end", 0)? as f64 / 1000.0).to_string(),
            ));
            params.push(("step", (step_ms as f64 / 1000.0).to_string()));
            "/api/v1/query_range"
        } else {
            params.push((
                "time",
                (tp(&args.time, "time", now)? as f64 / 1000.0).to_string(),
            ));
            "/api/v1/query"
        };
        let mut req = ureq::get(&format!("{base}{path}"))
            .config()
            .http_status_as_error(false)
            .build();
        for (k, v) in &params {
            req = req.query(*k, v);
        }
        if let Some(t) = &args.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut resp = req.call().with_context(|| format!("querying {base}"))?;
        let text = resp
            .body_mut()
            .read_to_string()
            .context("reading the answer")?;
        serde_json::from_str(&text).with_context(|| format!("answer is not JSON: {text}"))?
    } else {
        let dir = args
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("data"));
        let db = open(&dir)?;
        let engine = strata_promql::Engine::default();
        let q = strata_server::queryable::TsdbQueryable { db: &db };
        let res = if range {
            engine.range_query(
                &q,
                &args.expr,
                tp(&args.start, "start", 0)?,
                tp(&args.end, "end", 0)?,
                step_ms,
            )
        } else {
            engine.instant_query(&q, &args.expr, tp(&args.time, "time", now)?)
        };
        let body = match res {
            Ok(r) => {
                let mut data = String::new();
                strata_server::api::write_result(&r, &mut data);
                let data: J = serde_json::from_str(&data).context("encoding the answer")?;
                serde_json::json!({"status": "success", "data": data, "warnings": r.warnings})
            }
            Err(e) => serde_json::json!({"status": "error", "error": e.to_string()}),
        };
        db.close()?;
        body
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if body["status"] != "success" {
        bail!(
            "query failed: {}",
            body["error"].as_str().unwrap_or("unknown error")
        );
    }
    match args.format {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&body)?)?,
        OutputFormat::Table => {
            render_table(&body["data"], &mut out)?;
            for w in body["warnings"].as_array().into_iter().flatten() {
                eprintln!("warning: {}", w.as_str().unwrap_or_default());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lines_become_exposition_lines() {
        assert_eq!(
            csv_to_exposition("\"up{job=\"\"a,b\"\"}\",1000,1").unwrap(),
            "up{job=\"a,b\"} 1 1000"
        );
        assert_eq!(
            csv_to_exposition("up,2026-11-21T00:00:00Z,2.5").unwrap(),
            "up 2.5 1795219200000"
        );
        assert!(csv_to_exposition("nonsense").is_err());
    }
}
