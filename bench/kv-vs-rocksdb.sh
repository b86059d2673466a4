#!/usr/bin/env bash
# Side-by-side benchmark of strata-kv against RocksDB and LevelDB.
#
#   bench/kv-vs-rocksdb.sh                      # 1M keys, 3 rounds, 256 MiB block cache
#   bench/kv-vs-rocksdb.sh --num 200000 --rounds 1          # quick look
#   bench/kv-vs-rocksdb.sh --large              # 5M keys, 8 MiB block cache, 1M reads (disk path)
#   bench/kv-vs-rocksdb.sh --compression lz4    # LZ4 (LevelDB only has Snappy: it uses that)
#   bench/kv-vs-rocksdb.sh --build-only         # just obtain the binaries
#
# Other options (passed to bench/kv_compare.py): --benchmarks LIST, --reads N, --cache_size BYTES,
# --strata_flag=--mmap_reads (an extra flag for Strata's LSM runs, repeatable),
# --write_buffer_size BYTES, --bloom_bits N, --value_size N, --engines strata,rocksdb,...
#
# Release builds of RocksDB's and LevelDB's db_bench are made once from Debian's source
# packages and cached in ${STRATA_BENCH_CACHE:-~/.cache/strata-bench} (never in the repo);
# see bench/build-peers.sh. Databases are written under ${STRATA_BENCH_DIR:-/var/tmp/strata-bench}
# (use a real disk, not tmpfs). Every engine runs with the same settings: num, 16-byte keys,
# 100-byte values of compression ratio 0.5, compression, 10 bloom bits per key, block cache
# and write buffer size, WAL on, sync off, one thread, --histogram; engines alternate over
# the rounds and the table shows medians.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
# shellcheck source=bench/build-peers.sh
source "$here/build-peers.sh"

build_only=false
args=()
num=""
cache=""
while [ $# -gt 0 ]; do
    case "$1" in
        --build-only) build_only=true ;;
        --large) num="${num:-5000000}"; cache="${cache:-$((8 << 20))}"; args+=(--reads 1000000) ;;
        --num) num="$2"; shift ;;
        --num=*) num="${1#--num=}" ;;
        --cache_size) cache="$2"; shift ;;
        --cache_size=*) cache="${1#--cache_size=}" ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) args+=("$1") ;;
    esac
    shift
done
[ -n "$num" ] && args+=(--num "$num")
[ -n "$cache" ] && args+=(--cache_size "$cache")

build_rocksdb
build_leveldb
log "building strata (release)"
(cd "$repo" && cargo build --release --locked -q -p strata)
target="${CARGO_TARGET_DIR:-$repo/target}"
strata="$target/release/strata"
[ -x "$strata" ] || { log "no $strata"; exit 1; }
$build_only && exit 0

command -v python3 >/dev/null || as_root apt-get install -y -qq python3 >/dev/null
workdir="${STRATA_BENCH_DIR:-/var/tmp/strata-bench}"
logdir="$CACHE/runs/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$logdir"
python3 "$here/kv_compare.py" --strata "$strata" --rocksdb "$ROCKSDB_BENCH" \
    --leveldb "$LEVELDB_BENCH" --workdir "$workdir" --logdir "$logdir" "${args[@]}" \
    | tee "$logdir.table"
