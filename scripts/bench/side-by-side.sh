#!/usr/bin/env bash
# Compares two tallyd builds by running them AT THE SAME TIME: two fresh 3-node clusters (A on
# ports 7401-7603, B on 8401-8603), each driven by the same tally-bench build over the same
# shapes, then each one's table and CPU per settled event, one under the other.
#
# Why: this machine's speed drifts by tens of percent within minutes (its host is shared), so
# two builds measured one after the other differ by the drift as much as by the change. Run
# side by side, both share the same 2 cores and the same drift; compare their events/s and CPU
# per event with each other, not with figures from another run (each cluster gets about half
# the machine). Run it twice with the builds swapped (A <-> B) to see what the ports or the
# start order add.
#
#   scripts/bench/side-by-side.sh OLD_TALLYD NEW_TALLYD
#
# Environment: BENCH_SECONDS (default 8), BENCH_SHAPES (default all four), BENCH_ACCOUNTS,
# TALLY_BENCH (default target/release/tally-bench); SIDE_A_ENV / SIDE_B_ENV: NAME=VALUE words
# for one side's run only (e.g. SIDE_A_ENV="BENCH_BATCH_REPLY=every" compares the two reply
# forms on one build). Logs: target/bench/side-by-side-{A,B}.log.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
if [ $# -ne 2 ]; then
    echo "usage: $0 TALLYD_A TALLYD_B" >&2
    exit 2
fi
for binary in "$1" "$2"; do
    if [ ! -x "$binary" ]; then
        echo "side-by-side: $binary is not an executable tallyd" >&2
        exit 1
    fi
done
export BENCH_SECONDS="${BENCH_SECONDS:-8}"
export BENCH_SHAPES="${BENCH_SHAPES:-1x1 64x1 16x100 4x8190}"
mkdir -p "$root/target/bench"

run() { # SIDE TALLYD PORT_BASE EXTRA_ENV
    # shellcheck disable=SC2086 # EXTRA_ENV is a list of NAME=VALUE words
    env $4 TALLYD="$2" BENCH_PORT_BASE="$3" BENCH_OUT="$root/target/bench/side-by-side-$1.json" \
        bash "$root/scripts/bench/tally.sh" >"$root/target/bench/side-by-side-$1.log" 2>&1
}

run A "$1" 7400 "${SIDE_A_ENV:-}" &
a=$!
run B "$2" 8400 "${SIDE_B_ENV:-}" &
b=$!
status=0
wait "$a" || status=$?
wait "$b" || status=$?

for side in A B; do
    binary="$1"
    [ "$side" = B ] && binary="$2"
    echo "== $side: $binary"
    grep -E '^\| |CPU per settled event' "$root/target/bench/side-by-side-$side.log" || true
done
if [ "$status" -ne 0 ]; then
    echo "side-by-side: a run failed; see target/bench/side-by-side-{A,B}.log" >&2
fi
exit "$status"
