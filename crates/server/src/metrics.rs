//! Strata's own figures, exposed at `/metrics` in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::write::Ingested;

/// Upper bounds (seconds) of the query latency histogram.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0];

/// Counters of the server.
#[derive(Debug, Default)]
pub struct Metrics {
    samples_ingested: AtomicU64,
    samples_out_of_order: AtomicU64,
    rejected_invalid: AtomicU64,
    rejected_too_old: AtomicU64,
    rejected_series_limit: AtomicU64,
    rejected_histograms: AtomicU64,
    rejected_bad_request: AtomicU64,
    rejected_too_large: AtomicU64,
    skipped_strings: AtomicU64,
    write_requests: AtomicU64,
    queries: AtomicU64,
    query_errors: AtomicU64,
    query_buckets: [AtomicU64; 10],
    query_seconds_micros: AtomicU64,
}

impl Metrics {
    /// Counts a remote-write request's outcome.
    pub fn ingested(&self, g: &Ingested) {
        self.write_requests.fetch_add(1, Relaxed);
        self.samples_ingested.fetch_add(g.samples, Relaxed);
        self.samples_out_of_order.fetch_add(g.out_of_order, Relaxed);
        self.rejected_invalid.fetch_add(g.rejected_invalid, Relaxed);
        self.rejected_too_old.fetch_add(g.rejected_too_old, Relaxed);
        self.rejected_series_limit
            .fetch_add(g.rejected_series_limit, Relaxed);
        self.rejected_histograms
            .fetch_add(g.rejected_histograms, Relaxed);
    }

    /// Counts a request refused as a whole.
    pub fn rejected(&self, reason: &str, n: u64) {
        self.write_requests.fetch_add(1, Relaxed);
        match reason {
            "request_too_large" => self.rejected_too_large.fetch_add(n, Relaxed),
            _ => self.rejected_bad_request.fetch_add(n, Relaxed),
        };
    }

    /// Counts line-protocol string fields (not stored).
    pub fn skipped_strings(&self, n: u64) {
        self.skipped_strings.fetch_add(n, Relaxed);
    }

    /// Records one query.
    pub fn observe_query(&self, took: Duration, ok: bool) {
        self.queries.fetch_add(1, Relaxed);
        if !ok {
            self.query_errors.fetch_add(1, Relaxed);
        }
        let secs = took.as_secs_f64();
        for (b, c) in BUCKETS.iter().zip(&self.query_buckets) {
            if secs <= *b {
                c.fetch_add(1, Relaxed);
            }
        }
        self.query_seconds_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// The text exposition, with the store's figures passed in.
    pub fn render(&self, tsdb: &strata_tsdb::Tsdb) -> String {
        let mut o = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "strata_samples_ingested_total",
            "Samples stored.",
            self.samples_ingested.load(Relaxed),
        );
        counter(
            "strata_samples_out_of_order_total",
            "Samples stored out of order (or with a duplicate timestamp).",
            self.samples_out_of_order.load(Relaxed),
        );
        counter(
            "strata_write_requests_total",
            "Write requests received.",
            self.write_requests.load(Relaxed),
        );
        counter(
            "strata_queries_total",
            "PromQL queries run.",
            self.queries.load(Relaxed),
        );
        counter(
            "strata_query_errors_total",
            "PromQL queries that failed.",
            self.query_errors.load(Relaxed),
        );
        let _ = writeln!(
            o,
            "# HELP strata_samples_rejected_total Samples rejected, by reason.\n# TYPE strata_samples_rejected_total counter"
        );
        for (reason, v) in [
            ("invalid_labels", &self.rejected_invalid),
            ("too_old", &self.rejected_too_old),
            ("series_limit", &self.rejected_series_limit),
            ("native_histogram", &self.rejected_histograms),
            ("bad_request", &self.rejected_bad_request),
            ("request_too_large", &self.rejected_too_large),
        ] {
            let _ = writeln!(
                o,
                "strata_samples_rejected_total{{reason=\"{reason}\"}} {}",
                v.load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP strata_query_duration_seconds PromQL query latency.\n# TYPE strata_query_duration_seconds histogram"
        );
        for (b, c) in BUCKETS.iter().zip(&self.query_buckets) {
            let _ = writeln!(
                o,
                "strata_query_duration_seconds_bucket{{le=\"{b}\"}} {}",
                c.load(Relaxed)
            );
        }
        let n = self.queries.load(Relaxed);
        let _ = writeln!(o, "strata_query_duration_seconds_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            o,
            "strata_query_duration_seconds_sum {}",
            self.query_seconds_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(o, "strata_query_duration_seconds_count {n}");
        let kv = tsdb.kv().stats();
        let c = tsdb.counters();
        for (kind, name, help, v) in [
            (
                "gauge",
                "strata_head_series",
                "Active series in the head.",
                c.head_series as f64,
            ),
            (
                "gauge",
                "strata_head_samples",
                "Samples in the head not yet persisted.",
                c.head_samples as f64,
            ),
            (
                "gauge",
                "strata_partitions",
                "Time partitions on disk.",
                c.partitions as f64,
            ),
            (
                "counter",
                "strata_tsdb_flushes_total",
                "Head flushes since start.",
                c.flushes as f64,
            ),
            (
                "counter",
                "strata_tsdb_compactions_total",
                "Partitions compacted since start.",
                c.compactions as f64,
            ),
            (
                "counter",
                "strata_wal_fsyncs_total",
                "WAL fsyncs since start.",
                c.wal_fsyncs as f64,
            ),
            (
                "counter",
                "strata_wal_fsync_seconds_total",
                "Time spent in WAL fsyncs (divided by strata_wal_fsyncs_total: the mean latency).",
                c.wal_fsync_micros as f64 / 1e6,
            ),
            (
                "gauge",
                "strata_kv_table_bytes",
                "Bytes of key-value tables on disk.",
                kv.table_bytes() as f64,
            ),
            (
                "gauge",
                "strata_kv_memory_bytes",
                "Bytes of key-value memtables, caches and indexes.",
                kv.memory_bytes() as f64,
            ),
            (
                "gauge",
                "strata_kv_write_amplification",
                "Key-value write amplification.",
                kv.write_amplification(),
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        o
    }
}
