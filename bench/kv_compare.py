#!/usr/bin/env python3
"""Runs RocksDB's and LevelDB's db_bench and `strata bench kv` (LSM and Bitcask) with equal
settings, alternating engines over several rounds, and prints one comparison table.

Called by bench/kv-vs-rocksdb.sh, which builds the binaries first; see that script for usage.
Only the standard library is used, so any Python 3.7+ runs it.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

# db_bench's order (minus the benchmarks Strata does not implement); fillsync needs a fresh
# database and writes num/1000 entries with an fsync each, as in both db_benches.
DEFAULT_BENCHMARKS = (
    "fillseq,fillsync,fillrandom,overwrite,readrandom,readseq,readreverse,seekrandom,deleterandom"
)
# Bitcask keeps no key order: these are skipped there.
ORDERED_ONLY = {"readreverse", "seekrandom"}

LINE = re.compile(
    r"^(?P<name>\w+)\s+:\s+(?P<micros>[\d.]+) micros/op(?:\s+(?P<ops>\d+) ops/sec)?"
)
PERCENTILES = re.compile(r"P99: (?P<p99>[\d.]+) P99\.9: (?P<p999>[\d.]+)")
LEVELDB_MINMAX = re.compile(r"^Min: (?P<min>[\d.]+)\s+Median: [\d.]+\s+Max: (?P<max>[\d.]+)")
LEVELDB_COUNT = re.compile(r"^Count: (?P<count>\d+)")
LEVELDB_BUCKET = re.compile(r"^\[\s*(?P<lo>[\d.]+),\s*(?P<hi>[\d.]+)\s*\)\s+(?P<n>\d+)\s")


def leveldb_percentile(buckets, count, lo_clamp, hi_clamp, p):
    """LevelDB prints bucket counts, not percentiles; interpolate inside the bucket as its
    Histogram::Percentile does."""
    threshold = count * p / 100.0
    seen = 0
    for lo, hi, n in buckets:
        seen += n
        if seen >= threshold and n > 0:
            pos = (threshold - (seen - n)) / n
            r = lo + (hi - lo) * pos
            return min(max(r, lo_clamp), hi_clamp)
    return hi_clamp


def parse_output(text):
    """{benchmark: {"ops": ops/s, "p99": us, "p999": us}} from any of the three db_benches."""
    out = {}
    current = None
    buckets, count, minmax = [], 0, None

    def close_leveldb_hist():
        if current and buckets and count:
            lo_c, hi_c = minmax if minmax else (0.0, float("inf"))
            out[current]["p99"] = leveldb_percentile(buckets, count, lo_c, hi_c, 99.0)
            out[current]["p999"] = leveldb_percentile(buckets, count, lo_c, hi_c, 99.9)

    for raw in text.splitlines():
        line = raw.strip()
        m = LINE.match(line)
        if m:
            close_leveldb_hist()
            buckets, count, minmax = [], 0, None
            current = m.group("name")
            micros = float(m.group("micros"))
            # LevelDB prints only micros/op; with one thread ops/s is its inverse.
            ops = float(m.group("ops")) if m.group("ops") else (1e6 / micros if micros else 0.0)
            out[current] = {"ops": ops, "p99": None, "p999": None}
            continue
        if current is None:
            continue
        m = PERCENTILES.search(line)
        if m and out[current]["p99"] is None:
            out[current]["p99"] = float(m.group("p99"))
            out[current]["p999"] = float(m.group("p999"))
            continue
        m = LEVELDB_COUNT.match(line)
        if m:
            count = int(m.group("count"))
            continue
        m = LEVELDB_MINMAX.match(line)
        if m:
            minmax = (float(m.group("min")), float(m.group("max")))
            continue
        m = LEVELDB_BUCKET.match(line)
        if m:
            buckets.append((float(m.group("lo")), float(m.group("hi")), int(m.group("n"))))
    close_leveldb_hist()
    return out


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def engine_command(engine, a, bins, db, benchmarks):
    common = [
        f"--benchmarks={benchmarks}",
        f"--num={a.num}",
        *([f"--reads={a.reads}"] if a.reads else []),
        f"--value_size={a.value_size}",
        f"--compression_ratio={a.compression_ratio}",
        f"--bloom_bits={a.bloom_bits}",
        f"--cache_size={a.cache_size}",
        f"--write_buffer_size={a.write_buffer_size}",
        "--threads=1",
        "--histogram=1",
        f"--db={db}",
    ]
    if engine == "rocksdb":
        return [bins["rocksdb"], *common, f"--key_size={a.key_size}",
                f"--compression_type={a.compression}", "--sync=false", "--disable_wal=false"]
    if engine == "leveldb":
        # Keys are always 16 bytes; compression is Snappy or nothing (patched-in flag).
        return [bins["leveldb"], *common, f"--compression={0 if a.compression == 'none' else 1}"]
    cmd = [bins["strata"], "bench", "kv", *common, f"--key_size={a.key_size}",
           f"--compression_type={a.compression}", "--sync=false"]
    if engine == "bitcask":
        cmd.append("--engine=bitcask")
    else:
        cmd += a.strata_flag
    return cmd


def run_one(engine, a, bins, workdir, round_no, logdir):
    """One engine's run of all benchmarks: ({benchmark: results}, DB bytes, peak RSS)."""
    benches = a.benchmarks.split(",")
    if engine != "rocksdb" or "fillsync" not in benches or len(benches) == 1:
        return run_invocation(engine, a, bins, workdir, round_no, logdir, a.benchmarks, [])
    # RocksDB's fillsync divides num by 1000 but writes --writes entries, which defaults
    # to num: it would sync num entries. It runs alone with --writes=num/1000.
    rest = ",".join(b for b in benches if b != "fillsync")
    res, size, rss = run_invocation(engine, a, bins, workdir, round_no, logdir, rest, [])
    sync_res, _, sync_rss = run_invocation(
        engine, a, bins, workdir, round_no, logdir, "fillsync",
        [f"--writes={max(a.num // 1000, 1)}"], suffix="-fillsync")
    res.update(sync_res)
    return res, size, max(rss, sync_rss)


def run_invocation(engine, a, bins, workdir, round_no, logdir, benchmarks, extra, suffix=""):
    db = os.path.join(workdir, f"{engine}-db")
    subprocess.run(["rm", "-rf", db], check=True)
    os.makedirs(db, exist_ok=True)
    cmd = engine_command(engine, a, bins, db, benchmarks) + extra
    log_path = os.path.join(logdir, f"round{round_no}-{engine}{suffix}.txt")
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        started = time.time()
        # Strata's runs also log, per benchmark, its thread's CPU/wait time and the tables
        # per level before and after (what shape the reads met; not parsed, for reading).
        env = dict(os.environ, STRATA_BENCH_SCHED="1") if engine in ("strata", "bitcask") else None
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env=env)
        text = proc.stdout.read()
        # wait4 rather than wait: its rusage is this child's own peak RSS.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.write(text)
        log.write(f"\n# wall {time.time() - started:.1f}s exit {proc.returncode} "
                  f"maxrss {usage.ru_maxrss} KiB\n")
    if proc.returncode != 0:
        sys.exit(f"{engine} failed (exit {proc.returncode}); see {log_path}")
    size = dir_bytes(db)
    subprocess.run(["rm", "-rf", db], check=True)
    return parse_output(text), size, usage.ru_maxrss * 1024


def fmt_ops(x):
    if x is None:
        return "n/a"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    return f"{x:,.0f}"


def fmt_lat(x):
    if x is None:
        return "-"
    if x >= 1000:
        return f"{x / 1000:.1f}ms"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.1f}"


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--num", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reads", type=int, default=0, help="read/seek operations (default: num)")
    p.add_argument("--benchmarks", default=DEFAULT_BENCHMARKS)
    p.add_argument("--key_size", type=int, default=16)
    p.add_argument("--value_size", type=int, default=100)
    p.add_argument("--compression_ratio", type=float, default=0.5)
    p.add_argument("--compression", choices=["none", "lz4"], default="none")
    p.add_argument("--bloom_bits", type=int, default=10)
    p.add_argument("--cache_size", type=int, default=256 << 20)
    p.add_argument("--write_buffer_size", type=int, default=64 << 20)
    p.add_argument("--engines", default="strata,rocksdb,leveldb,bitcask")
    p.add_argument("--strata_flag", action="append", default=[],
                   help="an extra flag for Strata's LSM runs, e.g. --strata_flag=--mmap_reads")
    p.add_argument("--strata", required=True)
    p.add_argument("--rocksdb", required=True)
    p.add_argument("--leveldb", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--logdir", required=True)
    a = p.parse_args()

    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    bins = {"strata": a.strata, "bitcask": a.strata, "rocksdb": a.rocksdb, "leveldb": a.leveldb}
    benches = [b for b in a.benchmarks.split(",") if b]
    os.makedirs(a.workdir, exist_ok=True)
    os.makedirs(a.logdir, exist_ok=True)

    # results[engine] = list over rounds of ({bench: {...}}, size, rss)
    results = {e: [] for e in engines}
    for rnd in range(a.rounds):
        # Rotate the order each round so that no engine always runs first (warm disk,
        # cooler CPU) or right after another's background compaction.
        order = engines[rnd % len(engines):] + engines[:rnd % len(engines)]
        for e in order:
            print(f"# round {rnd + 1}/{a.rounds}: {e}", file=sys.stderr, flush=True)
            results[e].append(run_one(e, a, bins, a.workdir, rnd + 1, a.logdir))

    def per_round(e, b, field):
        return [r[0].get(b, {}).get(field) for r in results.get(e, [])]

    def ratio(b, other):
        if "strata" not in results or other not in results:
            return None
        rs = []
        for s, o in zip(per_round("strata", b, "ops"), per_round(other, b, "ops")):
            if s and o:
                rs.append(s / o)
        return med(rs)

    cols = engines
    lsm_peers = [e for e in ("rocksdb", "leveldb") if e in engines]
    head = ["workload"] + [f"{e} ops/s" for e in cols]
    head += [f"S/{e[:5]}" for e in lsm_peers]
    head += ["P99 us " + "/".join(e[0].upper() for e in cols)]
    head += ["P99.9 us " + "/".join(e[0].upper() for e in cols)]
    rows = []
    for b in benches:
        row = [b]
        for e in cols:
            if e == "bitcask" and b in ORDERED_ONLY:
                row.append("n/a")
            else:
                row.append(fmt_ops(med(per_round(e, b, "ops"))))
        for o in lsm_peers:
            r = ratio(b, o)
            row.append("-" if r is None else f"{r:.2f}")
        for field in ("p99", "p999"):
            row.append(" / ".join(fmt_lat(med(per_round(e, b, field))) for e in cols))
        rows.append(row)
    size_row = ["DB size MiB"] + [
        f"{med([r[1] for r in results[e]]) / 1048576:.1f}" for e in cols
    ]
    rss_row = ["peak RSS MiB"] + [
        f"{med([r[2] for r in results[e]]) / 1048576:.1f}" for e in cols
    ]
    widths = [max(len(str(r[i])) for r in [head] + rows + [size_row, rss_row] if i < len(r))
              for i in range(len(head))]

    def show(r):
        cells = [str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i])
                 for i, c in enumerate(r)]
        print("  ".join(cells).rstrip())

    print(f"num={a.num}{f' reads={a.reads}' if a.reads else ''} key={a.key_size}B value={a.value_size}B "
          f"compression={a.compression}{' (LevelDB: snappy)' if a.compression != 'none' else ''} "
          f"bloom_bits={a.bloom_bits} cache_size={a.cache_size} "
          f"write_buffer_size={a.write_buffer_size} WAL on, sync off (fillsync: num/1000 synced "
          f"writes); {a.rounds} rounds, medians; engines in rotating order"
          f"{'; strata ' + ' '.join(a.strata_flag) if a.strata_flag else ''}")
    show(head)
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for r in rows:
        show(r)
    show(size_row)
    show(rss_row)
    print(f"(DB size: bytes of all files after the whole run, closed; S/x: median over rounds "
          f"of Strata LSM ops/s / x ops/s; raw outputs in {a.logdir})")


if __name__ == "__main__":
    main()
