#!/usr/bin/env bash
# Memory of one node before and after a restart from its snapshot.
#
# Starts `tallyd --dev` in a temporary directory under target/, funds BENCH_ACCOUNTS accounts
# (the benchmark's setup: an allowance and a purchased grant each), builds a snapshot, stops the
# node, starts it again from that snapshot and prints its resident memory (VmRSS, VmHWM) and
# how long it took to answer again. Needs release binaries:
#   cargo build --release -p tally-server -p tally-cli -p tally-bench
#
#   BENCH_ACCOUNTS=1000000 scripts/bench/restart-memory.sh
set -euo pipefail

source "$(dirname "$0")/release-binaries.sh"
accounts="${BENCH_ACCOUNTS:-1000000}"

dir="$(mktemp -d "$root/target/restart-memory.XXXXXX")"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT

memory() {
    awk '/^VmRSS/ {rss=$2} /^VmHWM/ {hwm=$2} END {printf "VmRSS %s KiB, VmHWM %s KiB", rss, hwm}' "/proc/$1/status"
}

wait_ready() {
    for _ in $(seq 1 600); do
        if "$tally" cluster status --endpoint 127.0.0.1:7101 --timeout 2s >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "restart-memory: the node did not answer within 2 minutes (see $dir/node.log)" >&2
    exit 1
}

"$tallyd" --dev --data-dir "$dir/data" >"$dir/node.log" 2>&1 &
pid=$!
wait_ready
"$bench" --endpoint 127.0.0.1:7101 --accounts "$accounts" --setup-only
"$tally" cluster snapshot --endpoint 127.0.0.1:7101 --timeout 300s
echo "restart-memory: funded, $accounts accounts, snapshot built: $(memory "$pid")"
kill -INT "$pid"; wait "$pid" || true; pid=""
echo "restart-memory: snapshot file $(stat -c %s "$dir/data/snapshots/current.snap") bytes"

start=$(date +%s%N)
"$tallyd" --dev --data-dir "$dir/data" >>"$dir/node.log" 2>&1 &
pid=$!
wait_ready
echo "restart-memory: answering again after $(( ($(date +%s%N) - start) / 1000000 )) ms: $(memory "$pid")"
sleep 5
echo "restart-memory: 5 s later: $(memory "$pid")"
