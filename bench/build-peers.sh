#!/usr/bin/env bash
# Builds release db_bench binaries of RocksDB and LevelDB from Debian's source packages,
# once, into a cache outside the repository. Sourced by kv-vs-rocksdb.sh; runnable alone:
#   bench/build-peers.sh [rocksdb|leveldb|all]
#
# Debian's rocksdb-tools db_bench is built without -DNDEBUG ("Assertions are enabled;
# benchmarks unnecessarily slow"), and Debian ships no LevelDB db_bench at all, so neither
# packaged binary is a fair peer.
set -euo pipefail

CACHE="${STRATA_BENCH_CACHE:-$HOME/.cache/strata-bench}"
JOBS="${STRATA_BENCH_JOBS:-2}"
ROCKSDB_BENCH="$CACHE/bin/rocksdb_db_bench"
LEVELDB_BENCH="$CACHE/bin/leveldb_db_bench"

log() { printf '[build-peers] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# apt-get source needs deb-src entries; Debian images often ship only binary ones.
ensure_deb_src() {
    if grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        return
    fi
    local codename
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
    log "adding deb-src entries for $codename"
    as_root tee /etc/apt/sources.list.d/strata-bench-src.sources >/dev/null <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    as_root apt-get update -qq
}

ensure_build_deps() {
    local need=()
    for p in dpkg-dev cmake g++ make pkg-config liblz4-dev libzstd-dev libsnappy-dev zlib1g-dev \
        libbz2-dev libgflags-dev libgtest-dev libgmock-dev; do
        dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
    done
    if [ "${#need[@]}" -gt 0 ]; then
        log "installing ${need[*]}"
        as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
}

# Refuses a binary that still has assertions compiled in.
check_release() {
    local bin="$1" dir
    dir="$(mktemp -d)"
    if "$bin" --benchmarks=fillseq --num=10 --db="$dir/db" 2>&1 | grep -q 'Assertions are enabled'; then
        rm -rf "$dir"
        log "$bin was built with assertions enabled; delete it and rebuild"
        return 1
    fi
    rm -rf "$dir"
}

build_rocksdb() {
    if [ -x "$ROCKSDB_BENCH" ]; then return; fi
    ensure_deb_src
    ensure_build_deps
    mkdir -p "$CACHE/src" "$CACHE/bin"
    cd "$CACHE/src"
    [ -d rocksdb-src ] || { apt-get source -qq rocksdb >/dev/null && mv "$(ls -d rocksdb-*/ | head -1)" rocksdb-src; }
    log "building RocksDB db_bench (Release, -DNDEBUG); about 20+ minutes on 2 cores"
    cmake -S rocksdb-src -B rocksdb-build -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_C_FLAGS_RELEASE='-O2 -DNDEBUG' -DCMAKE_CXX_FLAGS_RELEASE='-O2 -DNDEBUG' \
        -DWITH_LZ4=ON -DWITH_ZSTD=ON -DWITH_SNAPPY=ON -DWITH_ZLIB=ON -DWITH_BZ2=ON -DWITH_GFLAGS=ON \
        -DWITH_BENCHMARK_TOOLS=ON -DWITH_TESTS=OFF -DWITH_TOOLS=OFF -DWITH_CORE_TOOLS=OFF \
        -DWITH_JEMALLOC=OFF -DFAIL_ON_WARNINGS=OFF -DROCKSDB_BUILD_SHARED=OFF >/dev/null
    nice -n 15 cmake --build rocksdb-build --target db_bench -j"$JOBS" >rocksdb-build.log 2>&1 \
        || { tail -30 rocksdb-build.log >&2; return 1; }
    cp rocksdb-build/db_bench "$ROCKSDB_BENCH.tmp"
    check_release "$ROCKSDB_BENCH.tmp"
    mv "$ROCKSDB_BENCH.tmp" "$ROCKSDB_BENCH"
    log "RocksDB db_bench: $ROCKSDB_BENCH"
}

build_leveldb() {
    if [ -x "$LEVELDB_BENCH" ]; then return; fi
    ensure_deb_src
    ensure_build_deps
    mkdir -p "$CACHE/src" "$CACHE/bin"
    cd "$CACHE/src"
    [ -d leveldb-src ] || { apt-get source -qq leveldb >/dev/null && mv "$(ls -d leveldb-*/ | head -1)" leveldb-src; }
    log "building LevelDB library (Release, -DNDEBUG)"
    cmake -S leveldb-src -B leveldb-build -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_C_FLAGS_RELEASE='-O2 -DNDEBUG' -DCMAKE_CXX_FLAGS_RELEASE='-O2 -DNDEBUG' \
        -DBUILD_SHARED_LIBS=OFF -DLEVELDB_BUILD_TESTS=OFF -DLEVELDB_BUILD_BENCHMARKS=OFF \
        -DLEVELDB_INSTALL=OFF >/dev/null
    nice -n 15 cmake --build leveldb-build --target leveldb -j"$JOBS" >leveldb-build.log 2>&1 \
        || { tail -30 leveldb-build.log >&2; return 1; }
    # The upstream benchmark target wants vendored googletest/benchmark submodules that the
    # source package leaves out; db_bench itself needs only the library and two helpers.
    # LevelDB 1.23's db_bench always uses the default compression (Snappy); a --compression=0|1
    # flag is patched into a copy so that runs without compression compare like with like.
    log "building LevelDB db_bench"
    sed -e 's|^static bool FLAGS_reuse_logs = false;|&\nstatic int FLAGS_compression = 1;|' \
        -e 's|^    } else if (strncmp(argv\[i\], "--db=", 5) == 0) {|    } else if (sscanf(argv[i], "--compression=%d%c", \&n, \&junk) == 1) {\n      FLAGS_compression = n;\n&|' \
        -e 's|^    options.reuse_logs = FLAGS_reuse_logs;|&\n    options.compression = FLAGS_compression ? leveldb::kSnappyCompression : leveldb::kNoCompression;|' \
        leveldb-src/benchmarks/db_bench.cc >leveldb-db_bench-patched.cc
    grep -q 'FLAGS_compression ?' leveldb-db_bench-patched.cc || { log "patching db_bench.cc failed"; return 1; }
    nice -n 15 g++ -std=c++17 -O2 -DNDEBUG -DLEVELDB_PLATFORM_POSIX=1 -DHAVE_SNAPPY=1 \
        -I leveldb-src -I leveldb-src/include -I leveldb-build/include \
        leveldb-db_bench-patched.cc leveldb-src/util/histogram.cc leveldb-src/util/testutil.cc \
        leveldb-build/libleveldb.a -lsnappy -lgmock -lgtest -lpthread -o "$LEVELDB_BENCH.tmp" \
        >leveldb-bench-build.log 2>&1 || { tail -30 leveldb-bench-build.log >&2; return 1; }
    check_release "$LEVELDB_BENCH.tmp"
    mv "$LEVELDB_BENCH.tmp" "$LEVELDB_BENCH"
    log "LevelDB db_bench: $LEVELDB_BENCH"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    case "${1:-all}" in
        rocksdb) build_rocksdb ;;
        leveldb) build_leveldb ;;
        all) build_rocksdb; build_leveldb ;;
        *) echo "usage: $0 [rocksdb|leveldb|all]" >&2; exit 2 ;;
    esac
fi
