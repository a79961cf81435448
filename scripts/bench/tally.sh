#!/usr/bin/env bash
# `make bench`: starts a FRESH 3-node Tally cluster in a temporary directory under target/, runs
# the standard set of shapes against it with tally-bench, prints one table, writes
# target/bench/tally.json with each node's peak memory, and stops the cluster (also on failure).
#
# Environment (all optional):
#   BENCH_SECONDS=20          measured seconds per shape
#   BENCH_EVENTS=N            measure until N events were sent per shape instead (a figure that
#                             depends on how many events the nodes remember, such as memory at
#                             a million accounts, then does not depend on the machine's speed;
#                             pair it with BENCH_WARMUP_SECONDS=0)
#   BENCH_WARMUP_SECONDS=2    warm-up per shape (not counted)
#   BENCH_ACCOUNTS=10000      accounts the events are spread over
#   BENCH_SHAPES="1x1 64x1 16x100 4x8190"   CLIENTSxEVENTS_PER_REQUEST
#   BENCH_PORT_BASE=7400      node N listens on BASE+N (client), BASE+100+N (peer), BASE+200+N (metrics)
#   BENCH_HEARTBEAT_MS=250, BENCH_ELECTION_TIMEOUT_MS_MIN=1500 (max is twice the min)
#   BENCH_PERF_SHAPE=64x1     record a perf profile of the leader during that shape
#                             (BENCH_PERF_CALLGRAPH=dwarf,8192 for call stacks, BENCH_PERF_HZ=499)
#                             (target/bench/perf-SHAPE.data; perf report -i it)
#   BENCH_TIMELINE_SHAPE=1x1  trace system calls on the whole machine for a second of that
#                             shape (one client) and print where one request's time goes, step
#                             by step (timeline.py; trace in BENCH_TIMELINE_DIR, default /dev/shm,
#                             table in target/bench/timeline-SHAPE.txt)
#   BENCH_SNAPSHOT_LOGS=N     build a snapshot every N applied entries (node default 50,000;
#                             lower it to have snapshot builds fall inside the measured runs)
#   BENCH_NODE_TOML='...'   extra TOML appended to every node's config (try a setting, e.g.
#                             $'[limits]\nentries_in_flight_max = 8')
#   BENCH_RAFT_TOML='...'   extra TOML inside every node's [raft] table (e.g.
#                             'leader_sync_in_parallel = false')
#   BENCH_WORKER_THREADS=N    every node's `worker_threads` (runtime threads; node default 0,
#                             one per core)
#   BENCH_BATCH_REPLY=every   batches ask for every event's result in the reply (default
#                             `unsettled`: counts and the events that did not settle only)
#   BENCH_CONNECTIONS=N       the clients share N connections (default: one per client; the
#                             standard table keeps one per client)
#   BENCH_VIA=client          send the load through tally-client's Client (as an application
#                             does: retries, leader-following, replies parsed into amounts)
#                             instead of tally-bench's own connections (`--via`)
#   BENCH_HALT_POLL_NS=N      set the guest's idle polling (haltpoll cpuidle driver on KVM) to N
#                             ns for the run, restoring it afterwards (root; see halt_poll.sh)
#   BENCH_OUT=FILE            where the table goes (default target/bench/tally.json)
#   BENCH_KEEP=1              keep the cluster's directory (data and logs) afterwards
#   TALLYD, TALLY_BENCH       binaries (default target/release/...; `make bench` builds them)
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=halt_poll.sh
source "$root/scripts/bench/halt_poll.sh"
halt_poll_check bench
seconds="${BENCH_SECONDS:-20}"
events="${BENCH_EVENTS:-}"
if [ -n "$events" ]; then
    measure=(--events "$events")
    measured="$events events per shape"
else
    measure=(--duration "${seconds}s")
    measured="${seconds} s per shape"
fi
warmup="${BENCH_WARMUP_SECONDS:-2}"
accounts="${BENCH_ACCOUNTS:-10000}"
shapes="${BENCH_SHAPES:-1x1 64x1 16x100 4x8190}"
port_base="${BENCH_PORT_BASE:-7400}"
if [ -n "${BENCH_TIMELINE_SHAPE:-}" ]; then
    # The timeline follows one request at a time through the processes' system calls.
    if ! [[ "$BENCH_TIMELINE_SHAPE" =~ ^1x[0-9]+$ ]]; then
        echo "bench: BENCH_TIMELINE_SHAPE=$BENCH_TIMELINE_SHAPE: the timeline needs a shape with one client (1xN)" >&2
        exit 2
    fi
    if ! command -v perf >/dev/null; then
        echo "bench: BENCH_TIMELINE_SHAPE needs perf (linux-perf), which is not installed" >&2
        exit 2
    fi
fi
# Longer than cluster-config/'s 100 ms heartbeat: openraft gives an AppendEntries the heartbeat
# interval as its deadline, and on a loaded 2-core machine a 100 ms deadline on a multi-MiB
# append (4 x 8,190 events) expires, which starts elections in the middle of a run.
heartbeat_ms="${BENCH_HEARTBEAT_MS:-250}"
election_ms_min="${BENCH_ELECTION_TIMEOUT_MS_MIN:-1500}"
tallyd="${TALLYD:-$root/target/release/tallyd}"
bench="${TALLY_BENCH:-$root/target/release/tally-bench}"
out_dir="$root/target/bench"
out_file="${BENCH_OUT:-$out_dir/tally.json}"
nodes=(1 2 3)

for binary in "$tallyd" "$bench"; do
    if [ ! -x "$binary" ]; then
        echo "bench: $binary is missing; run: cargo build --release -p tally-server -p tally-bench" >&2
        exit 1
    fi
done

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for n in "${nodes[@]}"; do
    for port in $((port_base + n)) $((port_base + 100 + n)) $((port_base + 200 + n)); do
        if port_in_use "$port"; then
            echo "bench: port $port is in use; stop what listens there or set BENCH_PORT_BASE" >&2
            exit 1
        fi
    done
done

mkdir -p "$root/target" "$out_dir"
work="$(mktemp -d "$root/target/bench-cluster.XXXXXX")"
pids=()

stop_cluster() {
    local status=$?
    trap - EXIT INT TERM
    halt_poll_restore
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    # Graceful stop first; whatever is still alive after 10 s is killed.
    for _ in $(seq 1 100); do
        local alive=0
        for pid in "${pids[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        [ "$alive" -eq 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "${BENCH_KEEP:-0}" = 1 ] || [ "$status" -ne 0 ]; then
        echo "bench: cluster directory kept: $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap stop_cluster EXIT
trap 'exit 130' INT TERM
halt_poll_apply bench

members=""
for n in "${nodes[@]}"; do
    members+="
[[initial_members]]
id = $n
peer_addr = \"127.0.0.1:$((port_base + 100 + n))\"
client_addr = \"127.0.0.1:$((port_base + n))\"
"
done
endpoints=()
for n in "${nodes[@]}"; do
    cat >"$work/node-$n.toml" <<TOML
# Generated by scripts/bench/tally.sh for one benchmark run.
node_id = $n
client_addr = "127.0.0.1:$((port_base + n))"
peer_addr = "127.0.0.1:$((port_base + 100 + n))"
metrics_addr = "127.0.0.1:$((port_base + 200 + n))"
data_dir = "$work/node-$n"
${BENCH_WORKER_THREADS:+worker_threads = $BENCH_WORKER_THREADS}
$members
[raft]
heartbeat_ms = $heartbeat_ms
election_timeout_ms_min = $election_ms_min
election_timeout_ms_max = $((election_ms_min * 2))
${BENCH_SNAPSHOT_LOGS:+snapshot_logs_since_last = $BENCH_SNAPSHOT_LOGS}
${BENCH_RAFT_TOML:-}

[ledger]
reporting_currency = "USD"
reporting_scale = 2
${BENCH_NODE_TOML:-}
TOML
    endpoints+=(--endpoint "127.0.0.1:$((port_base + n))")
done

for n in "${nodes[@]}"; do
    "$tallyd" --config "$work/node-$n.toml" >"$work/node-$n.log" 2>&1 &
    pids+=("$!")
done
echo "bench: 3 nodes started (pids ${pids[*]}), data and logs in $work"

# Ready = every node answers /health/ready with 200.
deadline=$((SECONDS + 60))
for n in "${nodes[@]}"; do
    until curl -sf "http://127.0.0.1:$((port_base + 200 + n))/health/ready" >/dev/null; do
        if ! kill -0 "${pids[$((n - 1))]}" 2>/dev/null; then
            echo "bench: node $n exited; its log:" >&2
            tail -n 30 "$work/node-$n.log" >&2
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "bench: node $n not ready after 60 s; its log:" >&2
            tail -n 30 "$work/node-$n.log" >&2
            exit 1
        fi
        sleep 0.2
    done
done
echo "bench: cluster ready"

# A counter from a node's /metrics (integer part), empty when unavailable.
metric() {
    [ -n "$1" ] || return 0
    curl -sf "http://127.0.0.1:$((port_base + 200 + $1))/metrics" 2>/dev/null |
        awk -v name="$2" '{split($1, parts, "{")} parts[1] == name {printf "%d\n", $2}' || true
}
# The node that says it leads.
leader_node() {
    for n in "${nodes[@]}"; do
        if [ "$(metric "$n" tally_raft_is_leader)" = 1 ]; then echo "$n"; return; fi
    done
}

# CPU time (user + system, in clock ticks) a node has used so far.
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}
ticks_per_second="$(getconf CLK_TCK)"

# Funding first, on its own, so that every shape (and a profile of one) measures usage only.
echo "bench: funding $accounts accounts"
"$bench" "${endpoints[@]}" --accounts "$accounts" --setup-only

results=()
failed_shapes=()
for shape in $shapes; do
    clients="${shape%x*}"
    per_request="${shape#*x}"
    result="$work/result-$shape.json"
    echo
    echo "bench: $shape ($clients clients x $per_request events/request, ${measured})"
    rm -f "$result"
    leader_node="$(leader_node)"
    before_entries="$(metric "$leader_node" tally_entries_proposed_total)"
    before_commands="$(metric "$leader_node" tally_commands_proposed_total)"
    before_settled="$(metric "$leader_node" tally_events_settled_total)"
    before_cpu=()
    for pid in "${pids[@]}"; do before_cpu+=("$(cpu_ticks "$pid")"); done
    perf_pid=""
    if [ "${BENCH_PERF_SHAPE:-}" = "$shape" ] && [ -n "$leader_node" ]; then
        perf_data="$out_dir/perf-$shape.data"
        perf record -F "${BENCH_PERF_HZ:-499}" --call-graph "${BENCH_PERF_CALLGRAPH:-fp}" -o "$perf_data" -p "${pids[$((leader_node - 1))]}" \
            -- sleep "$((seconds + warmup + 5))" >"$work/perf.log" 2>&1 &
        perf_pid=$!
        echo "bench: profiling node $leader_node (the leader) into $perf_data"
    fi
    timeline_pid=""
    if [ "${BENCH_TIMELINE_SHAPE:-}" = "$shape" ] && [ -n "$leader_node" ]; then
        timeline_data="${BENCH_TIMELINE_DIR:-/dev/shm}/tally-timeline-$shape.data"
        # After the warm-up, one second of the measured run.
        (sleep "$((warmup + 1))"
         perf record -a -o "$timeline_data" -e syscalls:sys_enter_writev,syscalls:sys_exit_recvfrom,syscalls:sys_enter_pwrite64,syscalls:sys_enter_fdatasync,syscalls:sys_exit_fdatasync \
             -- sleep 1) >"$work/timeline.log" 2>&1 &
        timeline_pid=$!
        echo "bench: tracing system calls for 1 s of $shape into $timeline_data"
    fi
    # The load generator shares the cores with the nodes: its CPU time (bash's `time`, user +
    # system seconds) is reported next to theirs. Its own stderr goes through fd 3.
    bench_status=0
    { TIMEFORMAT='%U %S'; time RUST_BACKTRACE=0 "$bench" "${endpoints[@]}" --accounts "$accounts" --clients "$clients" \
        --events-per-request "$per_request" "${measure[@]}" --warmup "${warmup}s" \
        --label "$shape" --batch-reply "${BENCH_BATCH_REPLY:-unsettled}" ${BENCH_CONNECTIONS:+--connections "$BENCH_CONNECTIONS"} ${BENCH_VIA:+--via "$BENCH_VIA"} \
        --out "$result" --skip-setup 2>&3 || bench_status=$?; } 3>&2 2>"$work/client-time"
    if [ "$bench_status" != 0 ]; then
        failed_shapes+=("$shape")
    fi
    if [ -n "$perf_pid" ]; then wait "$perf_pid" || true; fi
    if [ -n "$timeline_pid" ]; then
        followers=()
        for n in "${nodes[@]}"; do
            if [ "$n" != "$leader_node" ]; then followers+=("${pids[$((n - 1))]}"); fi
        done
        if wait "$timeline_pid" && perf script -i "$timeline_data" -F comm,pid,tid,time,event >"$work/timeline.txt" 2>/dev/null; then
            python3 "$root/scripts/bench/timeline.py" "$work/timeline.txt" --leader "${pids[$((leader_node - 1))]}" \
                --followers "$(IFS=,; echo "${followers[*]}")" --client-comm "$(basename "$bench" | cut -c1-15)" \
                | tee "$out_dir/timeline-$shape.txt" || echo "bench: no timeline for $shape" >&2
        else
            echo "bench: tracing $shape failed: $(tail -n 3 "$work/timeline.log")" >&2
        fi
        rm -f "$timeline_data" "$work/timeline.txt"
    fi
    after_entries="$(metric "$leader_node" tally_entries_proposed_total)"
    after_commands="$(metric "$leader_node" tally_commands_proposed_total)"
    if [ -n "$before_entries" ] && [ -n "$after_entries" ] && [ "$after_entries" -gt "$before_entries" ]; then
        entries=$((after_entries - before_entries))
        commands=$((after_commands - before_commands))
        echo "bench: group commit on node $leader_node: $commands commands in $entries log entries ($((commands / entries)) per entry)"
    fi
    # CPU per settled event, per node, over the whole shape (warm-up included on both sides):
    # what an event costs each node, independent of how busy the machine was.
    after_settled="$(metric "$leader_node" tally_events_settled_total)"
    if [ -n "$before_settled" ] && [ -n "$after_settled" ] && [ "$after_settled" -gt "$before_settled" ]; then
        settled=$((after_settled - before_settled))
        line="bench: CPU per settled event ($settled events):"
        for n in "${nodes[@]}"; do
            used=$(($(cpu_ticks "${pids[$((n - 1))]}") - before_cpu[n - 1]))
            role=""
            if [ "$n" = "$leader_node" ]; then role=" (leader)"; fi
            line+=" node-$n$role $(awk -v t="$used" -v hz="$ticks_per_second" -v e="$settled" 'BEGIN {printf "%.1f", t / hz * 1e6 / e}') us"
        done
        client_seconds="$(awk 'NF == 2 {print $1 + $2}' "$work/client-time")"
        if [ -n "$client_seconds" ]; then
            line+=" tally-bench $(awk -v s="$client_seconds" -v e="$settled" 'BEGIN {printf "%.1f", s * 1e6 / e}') us"
        fi
        echo "$line"
    fi
    if [ -f "$result" ]; then results+=("$result"); fi
done

memory=()
for n in "${nodes[@]}"; do
    pid="${pids[$((n - 1))]}"
    hwm_kib="$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
    if [ -n "$hwm_kib" ]; then memory+=(--memory "node-$n=$hwm_kib"); fi
done

echo
"$bench" table --system tally \
    --note "3 tallyd nodes on this machine, every write committed (fsynced) on a majority; raft heartbeat ${heartbeat_ms} ms, election timeout ${election_ms_min}-$((election_ms_min * 2)) ms; $accounts accounts; ${measured} after ${warmup} s warm-up" \
    "${memory[@]}" --out "$out_file" "${results[@]}"
echo "bench: wrote $out_file"
if [ "${#failed_shapes[@]}" -gt 0 ]; then
    echo "bench: these shapes failed or settled nothing: ${failed_shapes[*]} (node logs: BENCH_KEEP=1)" >&2
    exit 1
fi
