#!/usr/bin/env bash
# Crash torture for the storage engine, the TSDB and the server: runs the SIGKILL crash tests
# (a real writer process, or the real `strata serve` under remote writes from several threads
# with flushes and compactions, killed at random moments, then restarted and checked)
# ROUNDS times with different seeds, then the model tests with many cases. Prints one line
# per round and a final "N passed, N failed". Usage: scripts/torture.sh [ROUNDS] (default
# 20; 25 kills per round, STRATA_CRASH_CYCLES to change).
set -u
cd "$(dirname "$0")/.."
rounds=${1:-20}
cycles=${STRATA_CRASH_CYCLES:-25}
log=$(mktemp -d)
cargo build --release --tests -q -p strata-kv -p strata-tsdb -p strata || exit 2
pass=0
fail=0
run() { # name, then the command
    local name=$1
    shift
    if "$@" >"$log/$name.log" 2>&1; then
        pass=$((pass + 1))
        echo "ok     $name"
    else
        fail=$((fail + 1))
        echo "FAILED $name (log: $log/$name.log)"
    fi
}
for i in $(seq 1 "$rounds"); do
    seed=$((RANDOM * 32768 + RANDOM + i))
    run "crash-round-$i-seed-$seed" env STRATA_CRASH_SEED="$seed" STRATA_CRASH_CYCLES="$cycles" \
        cargo test --release -q -p strata-kv --test crash_kill_child_process
    run "tsdb-crash-round-$i-seed-$seed" env STRATA_CRASH_SEED="$seed" STRATA_CRASH_CYCLES="$cycles" \
        cargo test --release -q -p strata-tsdb --test crash_kill_child_process
    run "server-crash-round-$i-seed-$seed" env STRATA_CRASH_SEED="$seed" STRATA_CRASH_CYCLES="$cycles" \
        cargo test --release -q -p strata --test server_crash_torture
done
run "lsm-model-5000-cases" env PROPTEST_CASES=5000 \
    cargo test --release -q -p strata-kv --test model_against_btreemap
run "bitcask-model-2000-cases" env PROPTEST_CASES=2000 \
    cargo test --release -q -p strata-kv --test bitcask_model
run "tsdb-model-3000-cases" env PROPTEST_CASES=3000 \
    cargo test --release -q -p strata-tsdb --test model
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
