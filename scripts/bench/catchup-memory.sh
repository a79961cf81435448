#!/usr/bin/env bash
# Memory of a snapshot transfer: a node away while accounts are funded catches up by snapshot.
#
# Starts the 3-node cluster of cluster-config/ (ports 7101-7103, 7201-7203, 7301-7303: stop
# `make run` first) with its data in a temporary directory under target/, stops node 3, funds
# BENCH_ACCOUNTS accounts through nodes 1 and 2, builds a snapshot on both (the log before it is
# purged, so node 3 can only catch up by snapshot), starts node 3 again and waits until the
# three state hashes agree. Prints each node's resident memory (VmRSS) and peak (VmHWM) before
# and after. Needs release binaries:
#   cargo build --release -p tally-server -p tally-cli -p tally-bench
#
#   BENCH_ACCOUNTS=300000 scripts/bench/catchup-memory.sh
set -euo pipefail

source "$(dirname "$0")/release-binaries.sh"
accounts="${BENCH_ACCOUNTS:-300000}"

dir="$(mktemp -d "$root/target/catchup-memory.XXXXXX")"
declare -A pid=()
cleanup() {
    for n in "${!pid[@]}"; do kill -INT "${pid[$n]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

for n in 1 2 3; do
    # Data under $dir; snapshots only on request; little log kept after one.
    sed -e "s#^data_dir = .*#data_dir = \"$dir/node-$n\"#" \
        -e "s#^snapshot_logs_since_last = .*#snapshot_logs_since_last = 1000000\nlogs_to_keep_after_snapshot = 10#" \
        "$root/cluster-config/node-$n.toml" >"$dir/node-$n.toml"
done
start() {
    "$tallyd" --config "$dir/node-$1.toml" >>"$dir/node-$1.log" 2>&1 &
    pid[$1]=$!
}
memory() {
    awk '/^VmRSS/ {rss=$2} /^VmHWM/ {hwm=$2} END {printf "VmRSS %s KiB, VmHWM %s KiB", rss, hwm}' "/proc/${pid[$1]}/status"
}
endpoints=127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103

for n in 1 2 3; do start "$n"; done
for _ in $(seq 1 300); do
    if "$tally" cluster status --endpoint "$endpoints" --timeout 2s >/dev/null 2>&1; then break; fi
    sleep 0.2
done
kill -INT "${pid[3]}"; wait "${pid[3]}" || true; unset 'pid[3]'
"$bench" --endpoint 127.0.0.1:7101 --endpoint 127.0.0.1:7102 --accounts "$accounts" --setup-only
"$tally" cluster snapshot --endpoint 127.0.0.1:7101,127.0.0.1:7102 --timeout 300s
for n in 1 2; do echo "catchup-memory: before, node $n: $(memory "$n")"; done

started=$(date +%s)
start 3
agreed=""
for _ in $(seq 1 600); do
    if "$tally" cluster hash --endpoint "$endpoints" --timeout 5s 2>/dev/null | grep -q "all 3 nodes agree"; then
        agreed=yes
        break
    fi
    sleep 1
done
if [ -z "$agreed" ]; then
    echo "catchup-memory: node 3 did not catch up within 10 minutes (see $dir/node-3.log)" >&2
    exit 1
fi
echo "catchup-memory: node 3 caught up in $(( $(date +%s) - started )) s"
for n in 1 2 3; do echo "catchup-memory: after, node $n: $(memory "$n")"; done
