#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ one after another.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60; no TARGET means all of them (`cargo fuzz list`).
# Each target starts from its committed seeds (fuzz/seeds/<target>) plus the corpus that
# earlier runs grew (fuzz/corpus/<target>, not committed) and the inputs of fixed crashes
# (fuzz/regressions/<target>). A crash leaves its input in fuzz/artifacts/<target>/.
# Prints one line per target and a summary; exits non-zero if any target crashed.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The toolchain is stable, so libFuzzer's
# nightly flags are unlocked with RUSTC_BOOTSTRAP=1. Extra libFuzzer flags can be passed
# in FUZZ_FLAGS (e.g. FUZZ_FLAGS="-jobs=2"). The fuzzers run under `nice`.
set -u -o pipefail

cd "$(dirname "$0")/.."
secs=${1:-60}
[ $# -gt 0 ] && shift
if ! [[ $secs =~ ^[0-9]+$ ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi
export RUSTC_BOOTSTRAP=1

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "building ${#targets[@]} fuzz targets..."
logdir=$(mktemp -d)
if ! nice -n 10 cargo fuzz build >"$logdir/build.log" 2>&1; then
    tail -30 "$logdir/build.log" >&2
    echo "cargo fuzz build failed" >&2
    exit 2
fi
# The binaries are run directly, so that no cargo lock is held while they run.
triple=$(rustc -vV | sed -n 's/^host: //p')
bindir="${CARGO_TARGET_DIR:-fuzz/target}/$triple/release"

total_runs=0
failed=0
passed=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    dirs=("fuzz/corpus/$t")
    for extra in "fuzz/seeds/$t" "fuzz/regressions/$t"; do
        [ -d "$extra" ] && dirs+=("$extra")
    done
    log="$logdir/$t.log"
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    touch "$logdir/$t.start"
    # -rss_limit_mb and -malloc_limit_mb turn unbounded allocation into a finding;
    # -timeout turns a hang (or a quadratic blow-up) into one.
    # shellcheck disable=SC2086
    nice -n 10 "$bindir/$t" -artifact_prefix="fuzz/artifacts/$t/" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -print_final_stats=1 ${FUZZ_FLAGS:-} "${dirs[@]}" >"$log" 2>&1
    rc=$?
    after=$(find "fuzz/artifacts/$t" -type f | wc -l)
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    runs=${runs:-0}
    total_runs=$((total_runs + runs))
    crashes=$((after - before))
    if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        failed=$((failed + 1))
        [ "$crashes" -eq 0 ] && crashes=1
        echo "$t: runs=$runs crashes=$crashes seconds=$secs FAILED (exit $rc, log $log)"
        grep -m1 -E '^(thread .* panicked|==[0-9]+==ERROR|SUMMARY)' "$log" | sed 's/^/    /'
        find "fuzz/artifacts/$t" -type f -newer "$logdir/$t.start" 2>/dev/null | sed 's/^/    artifact: /'
    else
        passed=$((passed + 1))
        echo "$t: runs=$runs crashes=0 seconds=$secs"
    fi
done
echo "fuzz: ${#targets[@]} targets x ${secs}s, $total_runs runs in total"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
