#!/usr/bin/env bash
# Strata vs VictoriaMetrics vs Prometheus on the same data, same machine, same run.
#
# Installs Debian's victoria-metrics and prometheus packages if missing, starts each on
# loopback with its data in a temporary directory, sends each the same seeded
# node_exporter-like data over remote write (`strata bench tsdb --remote-write`), then
# measures: ingest samples/s, bytes/sample on disk after each flushed/merged, peak RSS,
# restart time, latency (median, P99) of a fixed query set, and checks the answers against
# Prometheus' (within 1e-6). Prints one table with ratios.
#
# Usage: bench/tsdb-vs-peers.sh [--hosts N] [--series-per-host N] [--hours H]
#        [--connections N] [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."

HOSTS=100 SERIES=200 HOURS=6 CONNECTIONS=4 RUNS=15
while [ $# -gt 0 ]; do
  case "$1" in
    --hosts) HOSTS=$2; shift 2 ;;
    --series-per-host) SERIES=$2; shift 2 ;;
    --hours) HOURS=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

need() { command -v "$1" >/dev/null; }
if ! need victoria-metrics || ! need prometheus; then
  echo "installing Debian's victoria-metrics and prometheus packages" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q victoria-metrics prometheus >/dev/null
fi
need python3 || { echo "python3 is needed" >&2; exit 1; }
cargo build --release -q -p strata
STRATA="${CARGO_TARGET_DIR:-target}/release/strata"

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The data: the same seed and start for everyone, ending now.
START=$(python3 -c "import time; print(int(time.time()) - int($HOURS * 3600))")
END=$((START + ${HOURS%.*} * 3600))

start_peer() { # name port datadir -> PID in $PID
  local name=$1 port=$2 dir=$3
  case "$name" in
    strata)
      "$STRATA" serve --data-dir "$dir" --listen "127.0.0.1:$port" --retention 30d >>"$TMP/$name.log" 2>&1 & ;;
    victoriametrics)
      victoria-metrics -storageDataPath="$dir" -httpListenAddr="127.0.0.1:$port" -retentionPeriod=1y \
        -search.disableCache -search.latencyOffset=0s >>"$TMP/$name.log" 2>&1 & ;;
    prometheus)
      printf 'global: {scrape_interval: 1h}\n' >"$TMP/prom.yml"
      prometheus --config.file="$TMP/prom.yml" --storage.tsdb.path="$dir" --web.listen-address="127.0.0.1:$port" \
        --web.enable-remote-write-receiver --web.enable-admin-api --storage.tsdb.retention.time=30d \
        >>"$TMP/$name.log" 2>&1 & ;;
  esac
  PID=$!
  PIDS+=("$PID")
}

ready_url() { case "$1" in victoriametrics) echo "http://127.0.0.1:$2/health" ;; *) echo "http://127.0.0.1:$2/-/ready" ;; esac; }
wait_ready() { # name port [start time, Unix seconds] -> seconds from start until ready
  local url; url=$(ready_url "$1" "$2")
  python3 - "$url" "${3:-}" <<'PY'
import sys, time, urllib.request
# From the given start (taken before the process was launched), not from this script's
# own start, which comes tens of milliseconds later.
t = float(sys.argv[2]) if sys.argv[2] else time.time()
while True:
    try:
        if urllib.request.urlopen(sys.argv[1], timeout=1).status == 200:
            break
    except Exception:
        pass
    if time.time() - t > 600:
        sys.exit("not ready after 600 s")
    time.sleep(0.05)
print(f"{time.time() - t:.3f}")
PY
}

peak_rss() { awk '/VmHWM/ {print $2 * 1024}' "/proc/$1/status" 2>/dev/null || echo 0; }

for peer in strata victoriametrics prometheus; do
  port=$(free_port); dir="$TMP/data-$peer"; mkdir -p "$dir"
  echo "== $peer on 127.0.0.1:$port" >&2
  start_peer "$peer" "$port" "$dir"; pid=$PID
  wait_ready "$peer" "$port" >/dev/null
  out=$("$STRATA" bench tsdb --hosts "$HOSTS" --series-per-host "$SERIES" --hours "$HOURS" \
        --threads "$CONNECTIONS" --start "$START" --remote-write "http://127.0.0.1:$port/api/v1/write")
  echo "$out" >&2
  rate=$(echo "$out" | sed -n 's/.*= \([0-9]*\) samples\/s.*/\1/p')
  samples=$(echo "$out" | sed -n 's/^remote write : \([0-9]*\) samples.*/\1/p')
  # Let each settle its data on disk the way it offers.
  case "$peer" in
    strata)
      curl -sf -XPOST "http://127.0.0.1:$port/api/v1/admin/tsdb/compact" >/dev/null ;;
    victoriametrics)
      curl -sf "http://127.0.0.1:$port/internal/force_flush" >/dev/null
      curl -sf "http://127.0.0.1:$port/internal/force_merge?partition_prefix=$(date -u +%Y_%m)" >/dev/null || true
      sleep 2 ;;
    prometheus)
      curl -sf -XPOST "http://127.0.0.1:$port/api/v1/admin/tsdb/snapshot" >/dev/null ;;
  esac
  if [ "$peer" = prometheus ]; then
    # Its persisted form: the snapshot block (the head is otherwise only WAL + mmapped chunks).
    disk=$(du -sb "$dir/snapshots" | cut -f1)
  else
    disk=$(du -sb "$dir" | cut -f1)
  fi
  rss=$(peak_rss "$pid")
  # Restart: stop gracefully, start, time until ready.
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  launched=$(date +%s.%N)
  start_peer "$peer" "$port" "$dir"; pid=$PID
  restart=$(wait_ready "$peer" "$port" "$launched")
  echo "{\"peer\":\"$peer\",\"port\":$port,\"rate\":${rate:-0},\"samples\":${samples:-0},\"disk\":$disk,\"rss\":$rss,\"restart\":$restart}" >"$TMP/$peer.json"
done

python3 - "$TMP" "$START" "$END" "$RUNS" <<'PY'
import json, os, sys, time, urllib.parse, urllib.request
tmp, start, end, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# Evaluate half a second off the scrape grid: a window edge that falls exactly on a sample
# is excluded by Prometheus 3 (left-open ranges, which Strata implements) and included by
# Prometheus 2 (Debian's package), which would make the answers differ for that reason only.
end += 0.5
start += 0.5
peers = ["strata", "victoriametrics", "prometheus"]
info = {p: json.load(open(f"{tmp}/{p}.json")) for p in peers}
h = 3600
queries = [
    ("raw 1 series 1h", "/api/v1/query_range", {"query": 'node_load1{instance="host-0:9100",sensor="s0"}', "start": end - h, "end": end, "step": 15}),
    ("rate all hosts 1h/15s", "/api/v1/query_range", {"query": "rate(node_network_receive_bytes_total[5m])", "start": end - h, "end": end, "step": 15}),
    ("sum by job rate 24h/60s", "/api/v1/query_range", {"query": "sum by (job) (rate(node_cpu_seconds_total[5m]))", "start": max(start, end - 24 * h), "end": end, "step": 60}),
    ("topk(5) rate", "/api/v1/query", {"query": "topk(5, rate(node_network_receive_bytes_total[5m]))", "time": end}),
    ("histogram_quantile 1h", "/api/v1/query_range", {"query": "histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))", "start": end - h, "end": end, "step": 15}),
    ("series node_load1", "/api/v1/series", {"match[]": "node_load1", "start": end - h, "end": end}),
    ("label instance values", "/api/v1/label/instance/values", {"start": end - h, "end": end}),
]
def get(peer, path, params):
    url = f"http://127.0.0.1:{info[peer]['port']}{path}?" + urllib.parse.urlencode(params)
    t = time.perf_counter()
    body = urllib.request.urlopen(url, timeout=300).read()
    return time.perf_counter() - t, json.loads(body)
def canon(d):
    data = d.get("data")
    if isinstance(data, list):
        return sorted(json.dumps(x, sort_keys=True) if isinstance(x, dict) else str(x) for x in data)
    out = {}
    res = data["result"]
    if data["resultType"] == "scalar":
        return {"": [(res[0], float(res[1]))]}
    for r in res:
        key = json.dumps({k: v for k, v in r["metric"].items()}, sort_keys=True)
        pts = r.get("values") or [r["value"]]
        out[key] = [(float(t), float(v)) for t, v in pts]
    return out
def same(a, b):
    if isinstance(a, list) or isinstance(b, list):
        return a == b
    if a.keys() != b.keys():
        return False
    for k in a:
        pa, pb = a[k], b[k]
        if len(pa) != len(pb):
            return False
        for (ta, va), (tb, vb) in zip(pa, pb):
            if ta != tb:
                return False
            if va != va and vb != vb:
                continue
            if abs(va - vb) > 1e-6 * max(1.0, abs(vb)):
                return False
    return True
lat = {p: {} for p in peers}
answers = {p: {} for p in peers}
for name, path, params in queries:
    for p in peers:
        times = []
        for i in range(runs):
            t, d = get(p, path, params)
            times.append(t)
        times.sort()
        lat[p][name] = (times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))])
        answers[p][name] = canon(d)
def ratio(a, b):
    return f"{a / b:.2f}" if b else "-"
print()
print(f"{'':28} {'strata':>14} {'victoriametrics':>16} {'prometheus':>14} {'S/VM':>7} {'S/P':>7}")
def row(label, f, fmt, better="higher"):
    v = [f(info[p]) for p in peers]
    print(f"{label:28} {fmt(v[0]):>14} {fmt(v[1]):>16} {fmt(v[2]):>14} {ratio(v[0], v[1]):>7} {ratio(v[0], v[2]):>7}")
row("ingest samples/s", lambda i: i["rate"], lambda x: f"{x:,.0f}")
row("bytes/sample on disk", lambda i: i["disk"] / max(1, i["samples"]), lambda x: f"{x:.3f}")
row("peak RSS MiB", lambda i: i["rss"] / 2**20, lambda x: f"{x:.1f}")
row("restart s", lambda i: i["restart"], lambda x: f"{x:.2f}")
for name, _, _ in queries:
    for k, label in ((0, "median"), (1, "p99")):
        v = [lat[p][name][k] * 1000 for p in peers]
        print(f"{(name + ' ' + label + ' ms'):28} {v[0]:>14.2f} {v[1]:>16.2f} {v[2]:>14.2f} {ratio(v[0], v[1]):>7} {ratio(v[0], v[2]):>7}")
# VictoriaMetrics answers repeated range queries from its rollup result cache (and Strata from
# its own, unless --query-cache-bytes 0): the same queries again with nocache=1, for both.
print()
print("the queries again with each engine's result cache bypassed (nocache=1):")
for name, path, params in queries:
    if path not in ("/api/v1/query_range", "/api/v1/query"):
        continue
    v = []
    for p in ("strata", "victoriametrics"):
        times = sorted(get(p, path, dict(params, nocache=1))[0] for _ in range(runs))
        v.append(times[len(times) // 2] * 1000)
    print(f"{(name + ' median ms'):28} {v[0]:>14.2f} {v[1]:>16.2f} {'':>14} {ratio(v[0], v[1]):>7}")
print()
bad = 0
for name, _, _ in queries:
    s_ok = same(answers["strata"][name], answers["prometheus"][name])
    if not s_ok and os.environ.get("SHOW_DIFF"):
        a, b = answers["strata"][name], answers["prometheus"][name]
        for k in (a if isinstance(a, dict) else {}):
            for x, y in zip(a[k], b.get(k, [])):
                if x != y:
                    print("   first difference", k, x, y)
                    break
    v_ok = same(answers["victoriametrics"][name], answers["prometheus"][name])
    bad += not s_ok
    print(f"answers {name:26} strata==prometheus: {'yes' if s_ok else 'NO'}   victoriametrics==prometheus: {'yes' if v_ok else 'no (MetricsQL differs)'}")
sys.exit(1 if bad else 0)
PY
