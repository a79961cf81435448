#!/usr/bin/env bash
# Starts tallyd nodes in the foreground, each log line prefixed with [node-N].
# Usage: scripts/run-cluster.sh TALLYD CONFIG...   (one config per node; see cluster-config/)
# Ctrl-C (or SIGTERM) stops every node gracefully and waits for them.
set -u

tallyd="$1"
shift
if [ ! -x "$tallyd" ]; then
    echo "run-cluster: $tallyd is not an executable; build it first (cargo build --release)" >&2
    exit 1
fi

pids=()
stop_all() {
    trap - INT TERM
    echo "run-cluster: stopping ${#pids[@]} node(s)..."
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
    echo "run-cluster: all nodes stopped; data is kept (make clean-data wipes it)"
    exit 0
}
trap stop_all INT TERM

for config in "$@"; do
    name="$(basename "$config" .toml)"
    # The subshell execs tallyd, so $! is the node's own pid (the one to signal); its output
    # goes through a process substitution that prefixes each line.
    (
        exec "$tallyd" --config "$config" 2>&1
    ) > >(sed -u "s/^/[$name] /") &
    pids+=("$!")
done

# The node's own top-level setting (the first match; initial_members repeats client_addr).
setting() {
    local key="$1" separator="$2"
    shift 2
    for config in "$@"; do
        awk -v key="$key" '$1 == key { gsub(/"/, "", $3); print $3; exit }' "$config"
    done | paste -sd"$separator" -
}
client_addrs=$(setting client_addr , "$@")
metrics_addrs=$(setting metrics_addr , "$@")
data_dirs=$(setting data_dir ' ' "$@")
cat <<MSG
================================================================================
 Tally is starting: ${#pids[@]} node(s)
   gRPC (Ledger, Admin):  $client_addrs
   HTTP metrics/health:   $metrics_addrs   (GET /metrics, /health/ready)
   data:                  $data_dirs   (kept across runs; make clean-data wipes it)
 First command to try, in another terminal:
   curl -s http://${metrics_addrs%%,*}/health/ready        (200 "ready" once a leader has initialized the ledger)
   curl -s http://${metrics_addrs%%,*}/metrics | grep tally_raft
   target/release/tally --endpoint ${client_addrs%%,*} cluster status   (with the tally CLI)
 Ctrl-C stops all nodes.
================================================================================
MSG

# Wait for any node to exit; if one dies on its own, keep the others running until Ctrl-C.
while true; do
    alive=0
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then alive=$((alive + 1)); fi
    done
    if [ "$alive" -eq 0 ]; then
        # Ctrl-C in a terminal reaches the nodes too, and they may finish before the trap
        # runs: a clean exit of every node is a clean stop.
        failed=0
        for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || failed=$((failed + 1)); done
        if [ "$failed" -eq 0 ]; then
            echo "run-cluster: all nodes stopped; data is kept (make clean-data wipes it)"
            exit 0
        fi
        echo "run-cluster: every node has exited, $failed with an error"
        exit 1
    fi
    sleep 1
done
