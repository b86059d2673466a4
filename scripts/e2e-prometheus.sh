#!/usr/bin/env bash
# End-to-end test with a real Prometheus (Debian's package, installed if missing):
# Prometheus scrapes itself and Strata, remote-writes to Strata and remote-reads from it.
# Checks, within a bounded wait: promtool queries Strata; PromQL answers from Strata equal
# Prometheus' own over the same samples (within 1e-6); line protocol written with curl is
# queryable, also through Prometheus' remote_read; vmagent (VictoriaMetrics' agent, from
# Debian's victoria-metrics package, installed if missing) remote-writes its scrapes.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  echo "installing Debian's prometheus package" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus >/dev/null
fi
if ! command -v vmagent >/dev/null; then
  echo "installing Debian's victoria-metrics package (for vmagent)" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q victoria-metrics >/dev/null
fi
command -v python3 >/dev/null || { echo "python3 is needed to compare answers" >&2; exit 1; }

cargo build -q -p strata
STRATA="${CARGO_TARGET_DIR:-target}/debug/strata"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SP=$(free_port); PP=$(free_port)
TMP=$(mktemp -d)
cleanup() {
  [ -n "${PROM_PID:-}" ] && kill "$PROM_PID" 2>/dev/null || true
  [ -n "${VMAGENT_PID:-}" ] && kill "$VMAGENT_PID" 2>/dev/null || true
  [ -n "${STRATA_PID:-}" ] && kill -TERM "$STRATA_PID" 2>/dev/null && wait "$STRATA_PID" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

"$STRATA" serve --data-dir "$TMP/strata" --listen "127.0.0.1:$SP" >"$TMP/strata.log" 2>&1 &
STRATA_PID=$!

cat >"$TMP/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs: [{targets: ["127.0.0.1:$PP"]}]
  - job_name: strata
    static_configs: [{targets: ["127.0.0.1:$SP"]}]
remote_write:
  - url: http://127.0.0.1:$SP/api/v1/write
    queue_config: {batch_send_deadline: 1s, max_samples_per_send: 2000}
remote_read:
  - url: http://127.0.0.1:$SP/api/v1/read
    read_recent: true
    required_matchers: {source: lp}
YML
prometheus --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/prom" \
  --web.listen-address="127.0.0.1:$PP" >"$TMP/prometheus.log" 2>&1 &
PROM_PID=$!

S="http://127.0.0.1:$SP"; P="http://127.0.0.1:$PP"
fail() { echo "FAIL: $*" >&2; echo "--- strata log"; tail -20 "$TMP/strata.log"; echo "--- prometheus log"; tail -20 "$TMP/prometheus.log"; exit 1; }

# Wait (bounded) until Strata has received scraped samples from both jobs.
deadline=$((SECONDS + 170))
until curl -sf "$S/api/v1/query?query=count(up)" | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; sys.exit(0 if r and float(r[0]["value"][1])>=2 else 1)' 2>/dev/null; do
  [ $SECONDS -gt $deadline ] && fail "no samples reached Strata within the time limit"
  sleep 1
done
sleep 12 # a few more scrapes, so that rates have windows to work with
echo "samples arrived"

# promtool against Strata.
promtool query instant "$S" 'up' | grep -q 'job="prometheus"' || fail "promtool query instant against Strata"
echo "promtool: ok"

# Same expressions, same time, both servers. T lies a few seconds back so that remote
# write has delivered everything up to it.
T=$(python3 -c 'import time; print(int(time.time()) - 5)')
python3 - "$S" "$P" "$T" <<'PY' || fail "answers differ"
import json, sys, urllib.parse, urllib.request
s, p, t = sys.argv[1], sys.argv[2], sys.argv[3]
exprs = [
    'up',
    'sum(up)',
    'count by (job) (up)',
    'rate(prometheus_http_requests_total[5s])',
    'sum by (job) (rate(process_cpu_seconds_total[10s]))',
    'max_over_time(prometheus_tsdb_head_series[10s])',
    'histogram_quantile(0.9, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket[10s])))',
    'topk(3, prometheus_http_requests_total)',
    'up == bool 1',
]
def q(base, e):
    u = base + "/api/v1/query?" + urllib.parse.urlencode({"query": e, "time": t})
    d = json.load(urllib.request.urlopen(u))
    assert d["status"] == "success", d
    out = {}
    for r in d["data"]["result"]:
        out[json.dumps(r["metric"], sort_keys=True)] = float(r["value"][1])
    return out
bad = 0
for e in exprs:
    a, b = q(s, e), q(p, e)
    same = a.keys() == b.keys() and all(
        (x != x and y != y) or abs(x - y) <= 1e-6 * max(1.0, abs(y)) for x, y in ((a[k], b[k]) for k in a))
    print(("ok  " if same else "DIFF") + f" {e}: {len(a)} series")
    if not same:
        bad += 1
        print("  strata:    ", a)
        print("  prometheus:", b)
sys.exit(1 if bad else 0)
PY

# Line protocol via curl, visible in Strata and through Prometheus' remote_read.
NOW=$(date +%s)
curl -sf -XPOST "$S/api/v2/write?precision=s" --data-binary "e2e,source=lp,city=Oslo temp=21.5 $NOW" || fail "line protocol write"
curl -sf "$S/api/v1/query?query=e2e_temp" | grep -q '"21.5"' || fail "line protocol sample not queryable in Strata"
curl -sf "$P/api/v1/query?query=e2e_temp%7Bsource%3D%22lp%22%7D" | grep -q '"21.5"' || fail "remote_read through Prometheus"
echo "line protocol and remote read: ok"

# vmagent scraping Strata and remote-writing to it.
VP=$(free_port)
cat >"$TMP/vmagent.yml" <<YML
scrape_configs:
  - job_name: vmagent-strata
    scrape_interval: 1s
    static_configs: [{targets: ["127.0.0.1:$SP"]}]
YML
vmagent -promscrape.config="$TMP/vmagent.yml" -remoteWrite.url="$S/api/v1/write" \
  -remoteWrite.flushInterval=1s -httpListenAddr="127.0.0.1:$VP" \
  -remoteWrite.tmpDataPath="$TMP/vmagent-queue" >"$TMP/vmagent.log" 2>&1 &
VMAGENT_PID=$!
deadline=$((SECONDS + 60))
until curl -sf "$S/api/v1/query" --data-urlencode 'query=count(strata_samples_ingested_total{job="vmagent-strata"})' | grep -q '"1"'; do
  [ $SECONDS -gt $deadline ] && { tail -20 "$TMP/vmagent.log"; fail "no samples from vmagent within 60 s"; }
  sleep 1
done
echo "vmagent remote write: ok"
echo "e2e-prometheus: passed"
