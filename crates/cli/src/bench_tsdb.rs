//! `strata bench tsdb`: a seeded workload (node_exporter-like, or TSBS "cpu-only"-like),
//! ingested through the embedded API (reporting ingest samples/s, bytes per sample on disk
//! and memory per active series), sent as Prometheus remote write to any receiver
//! (`--remote-write URL`: Strata, Prometheus, VictoriaMetrics) over several connections, or
//! written out as text (`--emit prom|influx`: the Prometheus exposition format with
//! timestamps, or InfluxDB line protocol) for `strata import`, `/api/v1/import/prometheus`,
//! `/write` or any other tool. Remote-write bodies are all encoded and compressed before
//! the clock starts, the same for every receiver, so the client (on the same cores) costs
//! the receiver as little as possible.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;
use strata_tsdb::{Labels, Options, Tsdb};

use crate::bench::Rng;

/// The data generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// node_exporter-like: per host `--series-per-host` counters (cpu seconds, network
    /// bytes), gauges random-walking with few decimals, constants and histogram buckets.
    Node,
    /// TSBS "cpu-only"-like: per host the 10 fields of a `cpu` measurement
    /// (`cpu_usage_user` ... `cpu_usage_guest_nice`, random walks within [0, 100]) with 10
    /// host tags (hostname, region, datacenter, rack, os, arch, team, service,
    /// service_version, service_environment); `--series-per-host` does not apply.
    Cpu,
}

/// A text format the data can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TextFormat {
    /// The Prometheus text exposition format with millisecond timestamps
    /// (`name{label="value"} 1.5 1700000000000`).
    Prom,
    /// InfluxDB line protocol with nanosecond timestamps: the metric name is split at its
    /// first `_` into measurement and field (`cpu_usage_user` -> measurement `cpu`, field
    /// `usage_user`); Strata's `/write` names it back `measurement_field`. Fields of one
    /// measurement and tag set share a line (a TSBS host's 10 cpu fields).
    Influx,
}

#[derive(Debug, Clone, Args)]
pub struct TsdbBenchArgs {
    /// The data: node_exporter-like or TSBS cpu-only-like.
    #[arg(long, value_enum, default_value_t = Workload::Node)]
    pub workload: Workload,
    /// Hosts (scrape targets).
    #[arg(long, default_value_t = 100)]
    pub hosts: u32,
    /// Series per host (node_exporter exposes a few hundred to a thousand).
    #[arg(long, default_value_t = 200)]
    pub series_per_host: u32,
    /// Scrape interval in seconds.
    #[arg(long, default_value_t = 15)]
    pub interval: u32,
    /// Hours of data.
    #[arg(long, default_value_t = 6.0)]
    pub hours: f64,
    /// Every this many hours, `--churn` of the hosts are replaced by new ones.
    #[arg(long, default_value_t = 2.0)]
    pub churn_every_hours: f64,
    /// Fraction of hosts replaced at each churn.
    #[arg(long, default_value_t = 0.1)]
    pub churn: f64,
    /// Concurrent writers (hosts are split among them).
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// Seed of the generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Directory for the store (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Send the data as remote write to this URL instead of the embedded store, with
    /// `--threads` connections.
    #[arg(long)]
    pub remote_write: Option<String>,
    /// Samples per remote-write request.
    #[arg(long, default_value_t = 10_000)]
    pub batch_samples: usize,
    /// Bearer token for --remote-write.
    #[arg(long)]
    pub token: Option<String>,
    /// Embedded: after ingesting, stop as a killed process would (no flush) and time
    /// reopening the store, which replays the WAL.
    #[arg(long)]
    pub crash_restart: bool,
    /// Timestamp of the first scrape, Unix seconds (default: so that the data ends now).
    #[arg(long)]
    pub start: Option<i64>,
    /// Write the data as text in this format instead of storing or sending it (to `--out`,
    /// or standard output; the report then goes to standard error). With more than one
    /// `--threads` the hosts' scrapes interleave in the output in no fixed order (each
    /// series' samples stay in time order); `--threads 1` gives the same bytes every run.
    #[arg(long, value_enum, conflicts_with_all = ["remote_write", "crash_restart", "db"])]
    pub emit: Option<TextFormat>,
    /// File for `--emit` (default: standard output).
    #[arg(long, requires = "emit")]
    pub out: Option<PathBuf>,
}

/// Where generated samples go.
enum Sink<'a> {
    Embedded(&'a Tsdb),
    /// Remote-write bodies, encoded and compressed ahead of the timed sending, in epochs
    /// (one per writer meeting): the receiver, not this client, is what is measured.
    Encode {
        /// Protobuf `WriteRequest` being filled.
        pending: Vec<u8>,
        pending_samples: usize,
        batch: usize,
        /// Snappy-compressed bodies of each epoch.
        epochs: Vec<Vec<Vec<u8>>>,
    },
    /// Text lines, one host's scrape at a time, appended to a shared output.
    Text {
        format: TextFormat,
        out: &'a Mutex<Box<dyn Write + Send>>,
        buf: Vec<u8>,
    },
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len_field(out: &mut Vec<u8>, key: u8, bytes: &[u8]) {
    out.push(key);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends `WriteRequest.timeseries` (field 1) with one sample to `out`.
fn encode_series(out: &mut Vec<u8>, scratch: &mut Vec<u8>, labels: &Labels, t: i64, v: f64) {
    scratch.clear();
    let mut label = Vec::new();
    for l in labels {
        label.clear();
        put_len_field(&mut label, 0x0a, l.name.as_bytes());
        put_len_field(&mut label, 0x12, l.value.as_bytes());
        put_len_field(scratch, 0x0a, &label);
    }
    let mut sample = vec![0x09];
    sample.extend_from_slice(&v.to_bits().to_le_bytes());
    sample.push(0x10);
    put_varint(&mut sample, t as u64);
    put_len_field(scratch, 0x12, &sample);
    put_len_field(out, 0x0a, scratch);
}

impl Sink<'_> {
    /// Takes one host's scrape; returns the samples stored (or encoded).
    fn scrape(&mut self, labels: &[Labels], t: i64, values: &[f64]) -> Result<u64> {
        match self {
            Sink::Embedded(db) => {
                let mut app = db.appender();
                for (l, v) in labels.iter().zip(values) {
                    app.append(l, t, *v);
                }
                Ok(app.commit()?.appended)
            }
            Sink::Encode {
                pending,
                pending_samples,
                batch,
                ..
            } => {
                let mut scratch = Vec::new();
                for (l, v) in labels.iter().zip(values) {
                    encode_series(pending, &mut scratch, l, t, *v);
                }
                *pending_samples += labels.len();
                if *pending_samples >= *batch {
                    self.seal()?;
                }
                Ok(labels.len() as u64)
            }
            Sink::Text { format, out, buf } => {
                buf.clear();
                match format {
                    TextFormat::Prom => write_prom(buf, labels, t, values),
                    TextFormat::Influx => write_influx(buf, labels, t, values),
                }
                let mut out = out
                    .lock()
                    .map_err(|_| anyhow::anyhow!("a writer thread panicked"))?;
                out.write_all(buf).context("writing the text output")?;
                Ok(labels.len() as u64)
            }
        }
    }

    /// Compresses what is pending into a body of the current epoch.
    fn seal(&mut self) -> Result<()> {
        let Sink::Encode {
            pending,
            pending_samples,
            epochs,
            ..
        } = self
        else {
            return Ok(());
        };
        if pending.is_empty() {
            return Ok(());
        }
        let body = snap::raw::Encoder::new()
            .compress_vec(pending)
            .context("snappy")?;
        pending.clear();
        *pending_samples = 0;
        match epochs.last_mut() {
            Some(e) => e.push(body),
            None => epochs.push(vec![body]),
        }
        Ok(())
    }

    /// The writers meet: what is pending is sealed and a new epoch starts.
    fn epoch(&mut self) -> Result<()> {
        self.seal()?;
        if let Sink::Encode { epochs, .. } = self {
            epochs.push(Vec::new());
        }
        Ok(())
    }
}

/// Appends one scrape in the Prometheus text format: a line per series, labels in the
/// series' (sorted) order, values in Rust's shortest round-trip form, timestamps in ms.
fn write_prom(buf: &mut Vec<u8>, labels: &[Labels], t: i64, values: &[f64]) {
    for (l, v) in labels.iter().zip(values) {
        let name = l.get("__name__").unwrap_or_default();
        buf.extend_from_slice(name.as_bytes());
        let mut sep = b'{';
        for label in l.iter().filter(|x| x.name != "__name__") {
            buf.push(sep);
            sep = b',';
            buf.extend_from_slice(label.name.as_bytes());
            buf.extend_from_slice(b"=\"");
            for c in label.value.bytes() {
                match c {
                    b'\\' => buf.extend_from_slice(b"\\\\"),
                    b'"' => buf.extend_from_slice(b"\\\""),
                    b'\n' => buf.extend_from_slice(b"\\n"),
                    c => buf.push(c),
                }
            }
            buf.push(b'"');
        }
        if sep == b',' {
            buf.push(b'}');
        }
        let _ = writeln!(buf, " {v} {t}");
    }
}

/// Appends `s` escaped as a line-protocol measurement, tag key, tag value or field key.
fn push_influx_escaped(buf: &mut Vec<u8>, s: &str) {
    for c in s.bytes() {
        if matches!(c, b',' | b' ' | b'=' | b'\\') {
            buf.push(b'\\');
        }
        buf.push(c);
    }
}

/// Appends one scrape in InfluxDB line protocol. Consecutive series with the same
/// measurement and tags (a TSBS host's cpu fields) share a line.
fn write_influx(buf: &mut Vec<u8>, labels: &[Labels], t: i64, values: &[f64]) {
    let ns = i128::from(t) * 1_000_000;
    let mut line_key: Vec<u8> = Vec::new();
    let mut key = Vec::new();
    for (l, v) in labels.iter().zip(values) {
        let name = l.get("__name__").unwrap_or_default();
        // A name without an inner `_` keeps a field of its own (read back as `name_value`).
        let (measurement, field) = match name.find('_') {
            Some(i) if i > 0 && i + 1 < name.len() => (&name[..i], &name[i + 1..]),
            _ => (name, "value"),
        };
        key.clear();
        push_influx_escaped(&mut key, measurement);
        for label in l.iter().filter(|x| x.name != "__name__") {
            key.push(b',');
            push_influx_escaped(&mut key, &label.name);
            key.push(b'=');
            push_influx_escaped(&mut key, &label.value);
        }
        if key == line_key {
            buf.push(b',');
        } else {
            if !line_key.is_empty() {
                let _ = writeln!(buf, " {ns}");
            }
            buf.extend_from_slice(&key);
            buf.push(b' ');
            line_key.clone_from(&key);
        }
        push_influx_escaped(buf, field);
        let _ = write!(buf, "={v}");
    }
    if !line_key.is_empty() {
        let _ = writeln!(buf, " {ns}");
    }
}

/// Sends one remote-write body.
fn send_body(agent: &ureq::Agent, url: &str, token: Option<&str>, body: &[u8]) -> Result<()> {
    let mut req = agent
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0");
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req
        .send(body)
        .with_context(|| format!("remote write to {url}"))?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let msg = resp.body_mut().read_to_string().unwrap_or_default();
        anyhow::bail!("remote write to {url}: HTTP {status}: {msg}");
    }
    Ok(())
}

/// Sends each writer's epochs over its own connection; writers meet between epochs.
/// Returns the requests sent.
fn send_all(url: &str, token: Option<&str>, writers: &[Vec<Vec<Vec<u8>>>]) -> Result<u64> {
    let epochs = writers.iter().map(Vec::len).max().unwrap_or(0);
    let barrier = std::sync::Barrier::new(writers.len());
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let handles: Vec<_> = writers
            .iter()
            .map(|mine| {
                let (barrier, failed) = (&barrier, &failed);
                scope.spawn(move || -> Result<u64> {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    let mut sent = 0u64;
                    let mut error = None;
                    for e in 0..epochs {
                        // Keep meeting the others even after an error, so none waits forever.
                        barrier.wait();
                        if error.is_some() || failed.load(std::sync::atomic::Ordering::Relaxed) {
                            continue;
                        }
                        for body in mine.get(e).map(Vec::as_slice).unwrap_or_default() {
                            if let Err(err) = send_body(&agent, url, token, body) {
                                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                                error = Some(err);
                                break;
                            }
                            sent += 1;
                        }
                    }
                    match error {
                        Some(e) => Err(e),
                        None => Ok(sent),
                    }
                })
            })
            .collect();
        let mut requests = 0;
        let mut first_err = None;
        for h in handles {
            match h
                .join()
                .map_err(|_| anyhow::anyhow!("writer thread panicked"))?
            {
                Ok(n) => requests += n,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(requests),
        }
    })
}

/// The kind of a generated series, with the shape of its values.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Integer counter (bytes, packets): busy or mostly idle.
    CounterBytes(bool),
    /// Counter of seconds with 0.01 resolution (cpu time), growing by about this many
    /// hundredths per scrape.
    CounterSeconds(u32),
    /// Gauge random-walking with two decimals (load averages, temperatures).
    GaugeDecimal,
    /// Integer gauge random-walking in 4 KiB steps (memory, filesystem bytes).
    GaugePages,
    /// Never changes (boot time, info metrics).
    Constant,
    /// Cumulative histogram bucket: increments shrink with the bucket's index.
    Bucket(u8),
    /// A percentage random-walking within [0, 100] by normally distributed steps, at full
    /// float precision (as TSBS generates its cpu fields).
    Percent,
}

/// One host's series: labels and generator state.
struct HostSeries {
    labels: Vec<Labels>,
    kinds: Vec<Kind>,
    values: Vec<f64>,
}

const MODES: [&str; 8] = [
    "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
];
const LE: [&str; 8] = ["0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf"];

fn host_series(host: u64, per_host: u32, rng: &mut Rng) -> Result<HostSeries> {
    let instance = format!("host-{host}:9100");
    let mut labels = Vec::new();
    let mut kinds = Vec::new();
    let mut values = Vec::new();
    let mut push = |pairs: Vec<(&str, String)>, kind: Kind, v: f64| -> Result<()> {
        let mut all = vec![("instance", instance.clone()), ("job", "node".to_string())];
        all.extend(pairs);
        labels.push(Labels::from_pairs(all)?);
        kinds.push(kind);
        values.push(v);
        Ok(())
    };
    let mut i = 0u32;
    let mut cpu = 0u32;
    while i < per_host {
        let block = i / 8;
        match block % 6 {
            0 => {
                for (m, mode) in MODES.iter().enumerate() {
                    push(
                        vec![
                            ("__name__", "node_cpu_seconds_total".into()),
                            ("cpu", cpu.to_string()),
                            ("mode", (*mode).into()),
                        ],
                        // idle ~ 14 s, system/user ~ 0.5 s, iowait/softirq ~ 0.05 s per 15 s.
                        Kind::CounterSeconds(match m {
                            0 => 1400,
                            6 | 7 => 50,
                            1 | 4 => 5,
                            _ => 0,
                        }),
                        (rng.uniform(1_000_000) as f64) / 100.0,
                    )?;
                }
                cpu += 1;
            }
            1 => {
                for dev in 0..8 {
                    push(
                        vec![
                            ("__name__", "node_network_receive_bytes_total".into()),
                            ("device", format!("eth{}", block / 6 * 8 + dev)),
                        ],
                        Kind::CounterBytes(dev < 2),
                        rng.uniform(1 << 40) as f64,
                    )?;
                }
            }
            2 => {
                for (j, name) in [
                    "node_load1",
                    "node_load5",
                    "node_load15",
                    "node_hwmon_temp_celsius",
                ]
                .iter()
                .enumerate()
                {
                    for k in 0..2 {
                        push(
                            vec![
                                ("__name__", (*name).into()),
                                ("sensor", format!("s{}", block / 6 * 8 + j as u32 * 2 + k)),
                            ],
                            Kind::GaugeDecimal,
                            (rng.uniform(400) as f64) / 100.0,
                        )?;
                    }
                }
            }
            3 => {
                for k in 0..8 {
                    push(
                        vec![
                            ("__name__", "node_filesystem_avail_bytes".into()),
                            ("mountpoint", format!("/mnt/{}", block / 6 * 8 + k)),
                        ],
                        Kind::GaugePages,
                        (rng.uniform(1 << 28) * 4096) as f64,
                    )?;
                }
            }
            4 => {
                for (k, name) in [
                    "node_boot_time_seconds",
                    "node_memory_MemTotal_bytes",
                    "node_uname_info",
                    "node_exporter_build_info",
                    "node_cpu_count",
                    "node_os_info",
                    "node_time_zone_offset_seconds",
                    "node_filesystem_size_bytes",
                ]
                .iter()
                .enumerate()
                {
                    push(
                        vec![
                            ("__name__", (*name).into()),
                            ("c", (block / 6 * 8 + k as u32).to_string()),
                        ],
                        Kind::Constant,
                        1.6e9 + rng.uniform(1_000_000) as f64,
                    )?;
                }
            }
            _ => {
                for (b, le) in LE.iter().enumerate() {
                    push(
                        vec![
                            ("__name__", "http_request_duration_seconds_bucket".into()),
                            ("handler", format!("/api/{}", block / 6)),
                            ("le", (*le).into()),
                        ],
                        Kind::Bucket(b as u8),
                        // Counters of a process that has run for a while: far from zero.
                        (1_000_000 + b as u64 * 100_000) as f64,
                    )?;
                }
            }
        }
        i += 8;
    }
    Ok(HostSeries {
        labels,
        kinds,
        values,
    })
}

/// TSBS cpu-only's fields (measurement `cpu`).
const CPU_FIELDS: [&str; 10] = [
    "usage_user",
    "usage_system",
    "usage_idle",
    "usage_nice",
    "usage_iowait",
    "usage_irq",
    "usage_softirq",
    "usage_steal",
    "usage_guest",
    "usage_guest_nice",
];

const REGIONS: [&str; 9] = [
    "us-east-1",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "sa-east-1",
];

/// One TSBS-like host: the 10 `cpu_*` series sharing the host's 10 tags.
fn cpu_host_series(host: u64, rng: &mut Rng) -> Result<HostSeries> {
    fn pick(rng: &mut Rng, choices: &[&str]) -> String {
        choices[rng.uniform(choices.len() as u64) as usize].to_string()
    }
    let region = pick(rng, &REGIONS);
    let tags = [
        ("hostname", format!("host_{host}")),
        (
            "datacenter",
            format!("{region}{}", pick(rng, &["a", "b", "c"])),
        ),
        ("region", region),
        ("rack", rng.uniform(100).to_string()),
        (
            "os",
            pick(rng, &["Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"]),
        ),
        ("arch", pick(rng, &["x64", "x86"])),
        ("team", pick(rng, &["SF", "NYC", "LON", "CHI"])),
        ("service", rng.uniform(20).to_string()),
        ("service_version", rng.uniform(2).to_string()),
        (
            "service_environment",
            pick(rng, &["production", "staging", "test"]),
        ),
    ];
    let mut labels = Vec::new();
    for f in CPU_FIELDS {
        let name = format!("cpu_{f}");
        let pairs = std::iter::once(("__name__", name.as_str()))
            .chain(tags.iter().map(|(k, v)| (*k, v.as_str())));
        labels.push(Labels::from_pairs(pairs)?);
    }
    let values = (0..CPU_FIELDS.len()).map(|_| unit(rng) * 100.0).collect();
    Ok(HostSeries {
        kinds: vec![Kind::Percent; labels.len()],
        labels,
        values,
    })
}

/// A uniform variate in [0, 1).
fn unit(rng: &mut Rng) -> f64 {
    rng.uniform(1 << 53) as f64 / (1u64 << 53) as f64
}

/// A standard normal variate (Box-Muller).
fn normal(rng: &mut Rng) -> f64 {
    // 1 - u is in (0, 1]: its logarithm is finite.
    let u1 = 1.0 - unit(rng);
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn step(kind: Kind, v: f64, rng: &mut Rng) -> f64 {
    match kind {
        Kind::Percent => (v + normal(rng)).clamp(0.0, 100.0),
        Kind::CounterBytes(busy) => {
            // Idle interfaces see a packet now and then; busy ones steady traffic with
            // noise and the odd burst.
            let inc = if !busy {
                if rng.uniform(4) == 0 {
                    60 * (1 + rng.uniform(4))
                } else {
                    0
                }
            } else if rng.uniform(50) == 0 {
                rng.uniform(50_000_000)
            } else {
                150_000 + rng.uniform(100_000)
            };
            v + inc as f64
        }
        Kind::CounterSeconds(rate) => {
            // Around `rate` hundredths per scrape, +-20%; quiet modes rarely move.
            let inc = if rate == 0 {
                u64::from(rng.uniform(20) == 0)
            } else {
                u64::from(rate) * 8 / 10 + rng.uniform(u64::from(rate) * 4 / 10 + 1)
            };
            ((v * 100.0).round() + inc as f64) / 100.0
        }
        Kind::GaugeDecimal => {
            let d = rng.uniform(21) as f64 - 10.0;
            (((v * 100.0).round() + d).max(0.0)) / 100.0
        }
        Kind::GaugePages => {
            // Filesystems and memory change in bursts, not every scrape.
            if rng.uniform(3) == 0 {
                let d = rng.uniform(2001) as f64 - 1000.0;
                (v + d * 4096.0).max(0.0)
            } else {
                v
            }
        }
        Kind::Constant => v,
        // Stepped by the caller, which keeps the buckets of a histogram cumulative.
        Kind::Bucket(_) => v,
    }
}

fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub fn run_tsdb(args: &TsdbBenchArgs, out: &mut dyn Write) -> Result<()> {
    let (dir, _tmp) = match &args.db {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::tempdir().context("creating a temporary directory")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let steps = (args.hours * 3600.0 / f64::from(args.interval)) as u64;
    let churn_steps = ((args.churn_every_hours * 3600.0 / f64::from(args.interval)) as u64).max(1);
    let threads = args.threads.clamp(1, args.hosts.max(1));
    let start_ms: i64 = match args.start {
        Some(s) => s * 1000,
        None => {
            let now = chrono::Utc::now().timestamp_millis();
            now - (steps as i64) * i64::from(args.interval) * 1000
        }
    };
    // Text on standard output leaves the report to standard error.
    let mut stderr = std::io::stderr();
    let out: &mut dyn Write = if args.emit.is_some() && args.out.is_none() {
        &mut stderr
    } else {
        out
    };
    let series_per_host = match args.workload {
        Workload::Node => args.series_per_host,
        Workload::Cpu => CPU_FIELDS.len() as u32,
    };
    let into = match (&args.emit, &args.out, &args.remote_write) {
        (Some(f), Some(path), _) => format!("{f:?} text in {}", path.display()),
        (Some(f), None, _) => format!("{f:?} text on standard output"),
        (None, _, Some(url)) => url.clone(),
        (None, _, None) => "the embedded store".to_string(),
    };
    writeln!(
        out,
        "tsdb bench: {:?} workload, {} hosts x {} series, {}s interval, {} h ({} scrapes), churn {:.0}% every {} h, {} writers, into {}",
        args.workload,
        args.hosts,
        series_per_host,
        args.interval,
        args.hours,
        steps,
        args.churn * 100.0,
        args.churn_every_hours,
        threads,
        into
    )?;
    if let Some(format) = args.emit {
        let sink_out: Box<dyn Write + Send> = match &args.out {
            Some(path) => Box::new(std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            )),
            None => Box::new(std::io::BufWriter::with_capacity(
                1 << 20,
                std::io::stdout(),
            )),
        };
        let shared = Mutex::new(sink_out);
        let began = Instant::now();
        let (total, sinks) = generate(args, steps, churn_steps, threads, start_ms, |_| {
            Sink::Text {
                format,
                out: &shared,
                buf: Vec::new(),
            }
        })?;
        drop(sinks);
        shared
            .into_inner()
            .map_err(|_| anyhow::anyhow!("a writer thread panicked"))?
            .flush()
            .context("writing the text output")?;
        writeln!(
            out,
            "emitted      : {total} samples as {format:?} text in {:.2} s",
            began.elapsed().as_secs_f64()
        )?;
        return Ok(());
    }
    if let Some(url) = &args.remote_write {
        let (total, sinks) = generate(args, steps, churn_steps, threads, start_ms, |_| {
            Sink::Encode {
                pending: Vec::new(),
                pending_samples: 0,
                batch: args.batch_samples.max(1),
                epochs: Vec::new(),
            }
        })?;
        let writers: Vec<Vec<Vec<Vec<u8>>>> = sinks
            .into_iter()
            .map(|s| match s {
                Sink::Encode { epochs, .. } => epochs,
                Sink::Embedded(_) | Sink::Text { .. } => Vec::new(),
            })
            .collect();
        let bytes: usize = writers.iter().flatten().flatten().map(Vec::len).sum();
        writeln!(
            out,
            "encoded      : {total} samples in {:.1} MiB of snappy bodies, before timing",
            bytes as f64 / (1 << 20) as f64
        )?;
        let began = Instant::now();
        let requests = send_all(url, args.token.as_deref(), &writers)?;
        let took = began.elapsed();
        writeln!(
            out,
            "remote write : {total} samples in {requests} requests in {:.2} s = {:.0} samples/s",
            took.as_secs_f64(),
            total as f64 / took.as_secs_f64()
        )?;
        return Ok(());
    }
    let db = Tsdb::open(&dir, Options::default())
        .with_context(|| format!("opening the tsdb in {}", dir.display()))?;
    let began = Instant::now();
    let (total, _) = generate(args, steps, churn_steps, threads, start_ms, |_| {
        Sink::Embedded(&db)
    })?;
    let ingest = began.elapsed();
    let db = if args.crash_restart {
        let series = db.head_series();
        db.abandon();
        let began = Instant::now();
        let db = Tsdb::open(&dir, Options::default())
            .with_context(|| format!("reopening the tsdb in {}", dir.display()))?;
        writeln!(
            out,
            "restart      : WAL replayed in {:.2} s after a crash; {} head series before, {} after",
            began.elapsed().as_secs_f64(),
            series,
            db.head_series()
        )?;
        db
    } else {
        db
    };
    let stats_before = db.stats()?;
    let flush_began = Instant::now();
    db.flush()?;
    db.kv().compact_range::<&[u8]>(..)?;
    let settle = flush_began.elapsed();
    let gorilla_tables = db.kv().stats().table_bytes();
    let compact_began = Instant::now();
    let cst = db.compact()?;
    db.kv().compact_range::<&[u8]>(..)?;
    let compact_time = compact_began.elapsed();
    let st = db.stats()?;
    let table_bytes = db.kv().stats().table_bytes();
    let rss = peak_rss();
    db.close()?;
    let on_disk = dir_bytes(&dir);
    let rate = total as f64 / ingest.as_secs_f64();
    writeln!(
        out,
        "ingest       : {total} samples in {:.2} s = {:.0} samples/s",
        ingest.as_secs_f64(),
        rate
    )?;
    writeln!(
        out,
        "flush        : {:.2} s; {:.3} bytes/sample in tables before partition compaction",
        settle.as_secs_f64(),
        gorilla_tables as f64 / total as f64
    )?;
    writeln!(
        out,
        "compaction   : {:.2} s, {} partitions, chunks {} -> {}, chunk bytes {} -> {}",
        compact_time.as_secs_f64(),
        cst.partitions,
        cst.chunks_before,
        cst.chunks_after,
        cst.bytes_before,
        cst.bytes_after
    )?;
    writeln!(
        out,
        "disk         : {} bytes in tables, {} in the directory after close; {:.3} bytes/sample (tables), {:.3} (directory); chunks alone {:.3}",
        table_bytes,
        on_disk,
        table_bytes as f64 / total as f64,
        on_disk as f64 / total as f64,
        st.persisted_chunk_bytes as f64 / st.persisted_samples.max(1) as f64,
    )?;
    writeln!(
        out,
        "head         : {} active series before the final flush, {:.0} bytes/series (head estimate)",
        stats_before.head_series,
        stats_before.head_memory_bytes as f64 / stats_before.head_series.max(1) as f64
    )?;
    if let Some(rss) = rss {
        writeln!(
            out,
            "memory       : peak RSS {:.1} MiB = {:.0} bytes per active series",
            rss as f64 / (1 << 20) as f64,
            rss as f64 / stats_before.head_series.max(1) as f64
        )?;
    }
    writeln!(
        out,
        "stored       : {} samples, {} chunks, {} partitions, {} out-of-order",
        st.persisted_samples, st.persisted_chunks, st.partitions, st.out_of_order_samples
    )?;
    Ok(())
}

/// Host `id`'s series for the chosen workload.
fn make_host(args: &TsdbBenchArgs, id: u64, rng: &mut Rng) -> Result<HostSeries> {
    match args.workload {
        Workload::Node => host_series(id, args.series_per_host, rng),
        Workload::Cpu => cpu_host_series(id, rng),
    }
}

/// Runs the workload on `threads` writers, each with its own sink; writers meet every 40
/// scrapes so that no receiver sees one writer hours ahead of another (Prometheus refuses
/// samples older than its head). Returns the samples stored (or encoded) and the sinks.
fn generate<'a>(
    args: &TsdbBenchArgs,
    steps: u64,
    churn_steps: u64,
    threads: u32,
    start_ms: i64,
    make_sink: impl Fn(u32) -> Sink<'a> + Sync,
) -> Result<(u64, Vec<Sink<'a>>)> {
    let barrier = std::sync::Barrier::new(threads as usize);
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<(u64, Vec<Sink<'a>>)> {
        let mut handles = Vec::new();
        for w in 0..threads {
            let (barrier, failed, make_sink) = (&barrier, &failed, &make_sink);
            handles.push(scope.spawn(move || -> Result<(u64, Sink<'a>)> {
                let mut sink = make_sink(w);
                let mut rng = Rng::new(args.seed ^ (u64::from(w) << 32));
                let my_hosts: Vec<u32> = (0..args.hosts).filter(|h| h % threads == w).collect();
                let mut gens = Vec::new();
                for &h in &my_hosts {
                    gens.push(make_host(args, u64::from(h), &mut rng)?);
                }
                let mut generation = vec![0u64; my_hosts.len()];
                let mut n = 0u64;
                let mut error = None;
                for s in 0..steps {
                    if s % 40 == 0 {
                        if error.is_none() {
                            if let Err(e) = sink.epoch() {
                                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                                error = Some(e);
                            }
                        }
                        barrier.wait();
                        if failed.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                    }
                    if error.is_some() {
                        continue;
                    }
                    if s > 0 && s % churn_steps == 0 {
                        for (i, &h) in my_hosts.iter().enumerate() {
                            if (rng.uniform(1_000_000) as f64) < args.churn * 1e6 {
                                generation[i] += 1;
                                let id = u64::from(h) + generation[i] * u64::from(args.hosts);
                                gens[i] = make_host(args, id, &mut rng)?;
                            }
                        }
                    }
                    let t0 = start_ms + (s * u64::from(args.interval) * 1000) as i64;
                    for g in gens.iter_mut() {
                        // Scrapes are a few milliseconds late, differently each time.
                        let t = t0 + rng.uniform(5) as i64;
                        // A histogram's buckets are cumulative: each bucket grows by at
                        // least as much as the one before it.
                        let mut bucket_inc = 0u64;
                        for i in 0..g.labels.len() {
                            match g.kinds[i] {
                                Kind::Bucket(b) => {
                                    if b == 0 {
                                        bucket_inc = 0;
                                    }
                                    bucket_inc += rng.uniform(10);
                                    g.values[i] += bucket_inc as f64;
                                }
                                k => g.values[i] = step(k, g.values[i], &mut rng),
                            }
                        }
                        match sink.scrape(&g.labels, t, &g.values) {
                            Ok(k) => n += k,
                            Err(e) => {
                                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                                error = Some(e);
                                break;
                            }
                        }
                    }
                }
                if error.is_none() {
                    if let Err(e) = sink.seal() {
                        error = Some(e);
                    }
                }
                // Keep meeting the others until they stop, so none waits forever.
                if let Some(e) = error {
                    return Err(e);
                }
                Ok((n, sink))
            }));
        }
        let (mut total, mut sinks) = (0, Vec::new());
        let mut first_err = None;
        for h in handles {
            match h
                .join()
                .map_err(|_| anyhow::anyhow!("writer thread panicked"))?
            {
                Ok((n, sink)) => {
                    total += n;
                    sinks.push(sink);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok((total, sinks)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::BTreeMap;
    use strata_server::text::{parse_exposition, parse_line_protocol, Parsed};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TsdbBenchArgs,
    }

    /// Series (sorted label pairs) -> samples (timestamp, value bits).
    type Data = BTreeMap<Vec<(String, String)>, Vec<(i64, u64)>>;

    fn data(p: Parsed) -> Data {
        assert!(
            p.errors.is_empty(),
            "{:?}",
            &p.errors[..p.errors.len().min(3)]
        );
        let mut d = Data::new();
        for s in p.series {
            let mut labels: Vec<_> = s.labels.into_iter().map(|l| (l.name, l.value)).collect();
            labels.sort();
            let samples = d.entry(labels).or_default();
            samples.extend(s.samples.iter().map(|x| (x.timestamp, x.value.to_bits())));
            samples.sort();
        }
        d
    }

    /// Emits the workload given by `flags` in `format` and parses it back as the server would.
    fn emit(flags: &[&str], format: &str) -> (Data, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let mut argv = vec!["bench", "--emit", format, "--out", path.to_str().unwrap()];
        argv.extend_from_slice(flags);
        let cli = Cli::try_parse_from(argv).unwrap();
        let mut report = Vec::new();
        run_tsdb(&cli.args, &mut report).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed = match format {
            "prom" => parse_exposition(&text, 0),
            _ => parse_line_protocol(&text, 1, 0),
        };
        (data(parsed), String::from_utf8(report).unwrap())
    }

    fn samples(d: &Data) -> usize {
        d.values().map(Vec::len).sum()
    }

    const NODE: &[&str] = &[
        "--hosts",
        "3",
        "--series-per-host",
        "48",
        "--hours",
        "0.5",
        "--churn-every-hours",
        "0.25",
        "--churn",
        "0.5",
        "--threads",
        "2",
        "--start",
        "1700000000",
    ];

    /// Both text forms of the node workload read back as the same series and samples,
    /// as many as the report says were emitted, with churned hosts among them.
    #[test]
    fn node_text_forms_agree() {
        let (prom, report) = emit(NODE, "prom");
        let (influx, _) = emit(NODE, "influx");
        assert_eq!(prom, influx);
        assert!(report.contains(&format!("emitted      : {} samples", samples(&prom))));
        // 3 hosts x 48 series x 120 scrapes; churn adds series but not samples.
        assert_eq!(samples(&prom), 3 * 48 * 120);
        assert!(prom.len() > 3 * 48, "churn made new series: {}", prom.len());
        for (labels, s) in &prom {
            assert!(
                s.windows(2).all(|w| w[0].0 < w[1].0),
                "{labels:?} out of order"
            );
        }
    }

    /// The cpu workload: 10 `cpu_usage_*` series per host, each with the 10 host tags,
    /// values within [0, 100] that move by small steps; one line-protocol line per host
    /// and scrape; the same bytes from the same seed.
    #[test]
    fn cpu_workload_is_tsbs_like() {
        let flags = [
            "--workload",
            "cpu",
            "--hosts",
            "4",
            "--hours",
            "0.1",
            "--interval",
            "10",
            "--churn",
            "0",
            "--threads",
            "1",
            "--start",
            "1700000000",
        ];
        let (prom, _) = emit(&flags, "prom");
        let (influx, _) = emit(&flags, "influx");
        assert_eq!(prom, influx);
        assert_eq!(prom.len(), 40);
        assert_eq!(samples(&prom), 40 * 36);
        for (labels, s) in &prom {
            assert_eq!(labels.len(), 11, "{labels:?}");
            let name = &labels.iter().find(|(k, _)| k == "__name__").unwrap().1;
            assert!(
                CPU_FIELDS.iter().any(|f| *name == format!("cpu_{f}")),
                "{name}"
            );
            let v: Vec<f64> = s.iter().map(|x| f64::from_bits(x.1)).collect();
            assert!(v.iter().all(|x| (0.0..=100.0).contains(x)));
            assert!(v.windows(2).all(|w| (w[1] - w[0]).abs() < 6.0), "{v:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let run = |name: &str| {
            let path = dir.path().join(name);
            let mut argv = vec!["bench", "--emit", "influx", "--out", path.to_str().unwrap()];
            argv.extend_from_slice(&flags);
            run_tsdb(&Cli::try_parse_from(argv).unwrap().args, &mut Vec::new()).unwrap();
            std::fs::read_to_string(path).unwrap()
        };
        let (a, b) = (run("a"), run("b"));
        assert_eq!(a, b);
        assert_eq!(a.lines().count(), 4 * 36, "one line per host and scrape");
    }

    /// Label values that need escaping survive both text forms.
    #[test]
    fn text_escapes() {
        let labels =
            vec![Labels::from_pairs([("__name__", "m_x"), ("a", "q\"u\\o\nte, =sp")]).unwrap()];
        let (mut prom, mut influx) = (Vec::new(), Vec::new());
        write_prom(&mut prom, &labels, 5, &[1.5]);
        write_influx(&mut influx, &labels, 5, &[1.5]);
        let value_of_a = |d: &Data| d.keys().next().unwrap()[1].1.clone();
        let got = data(parse_exposition(std::str::from_utf8(&prom).unwrap(), 0));
        assert_eq!(value_of_a(&got), "q\"u\\o\nte, =sp");
        // Line protocol has no escape for a newline in a tag value; the rest survives.
        let labels = vec![Labels::from_pairs([("__name__", "m_x"), ("a", "te, =s\\p")]).unwrap()];
        influx.clear();
        write_influx(&mut influx, &labels, 5, &[1.5]);
        let got = data(parse_line_protocol(
            std::str::from_utf8(&influx).unwrap(),
            1,
            0,
        ));
        assert_eq!(value_of_a(&got), "te, =s\\p");
    }
}
