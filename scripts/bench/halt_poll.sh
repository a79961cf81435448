# Sourced by tally.sh and postgres.sh: the guest's idle polling, shown and optionally set.
#
# On a KVM guest whose cpuidle driver is `haltpoll`, an idle vCPU may poll for up to
# guest_halt_poll_ns before it halts; with 0 it halts at once, and every wake-up (a network
# reply, an fsync completion, one thread waking another) then waits for the host to schedule
# the vCPU again. BENCH_HALT_POLL_NS=N sets it to N for the run and restores it afterwards
# (needs root and the haltpoll driver; it is a machine-wide setting, so the same value should
# be used when measuring the peers).

halt_poll_file=/sys/module/haltpoll/parameters/guest_halt_poll_ns
halt_poll_before=""

# `halt_poll_check PREFIX`: refuses a BENCH_HALT_POLL_NS that cannot be applied, before the
# script starts anything.
halt_poll_check() {
    local prefix="$1" wanted="${BENCH_HALT_POLL_NS:-}"
    [ -z "$wanted" ] && return 0
    if ! [[ "$wanted" =~ ^[0-9]+$ ]]; then
        echo "$prefix: BENCH_HALT_POLL_NS=$wanted is not a number of nanoseconds" >&2
        exit 1
    fi
    if [ ! -r "$halt_poll_file" ] || [ ! -w "$halt_poll_file" ]; then
        echo "$prefix: BENCH_HALT_POLL_NS needs $halt_poll_file, writable: a KVM guest using the haltpoll cpuidle driver, and root" >&2
        exit 1
    fi
}

# `halt_poll_apply PREFIX`: prints the setting in effect; applies BENCH_HALT_POLL_NS when set.
# Call it after the script's EXIT trap is in place, and `halt_poll_restore` from that trap.
halt_poll_apply() {
    local prefix="$1" wanted="${BENCH_HALT_POLL_NS:-}"
    if [ -n "$wanted" ]; then
        halt_poll_check "$prefix"
        halt_poll_before="$(cat "$halt_poll_file")"
        echo "$wanted" >"$halt_poll_file"
        echo "$prefix: guest_halt_poll_ns set to $(cat "$halt_poll_file") for this run (was $halt_poll_before; restored at the end)"
    elif [ -r "$halt_poll_file" ]; then
        echo "$prefix: guest_halt_poll_ns is $(cat "$halt_poll_file") (cpuidle governor $(cat /sys/devices/system/cpu/cpuidle/current_governor 2>/dev/null || echo unknown); BENCH_HALT_POLL_NS=N sets it for a run)"
    fi
}

halt_poll_restore() {
    if [ -n "$halt_poll_before" ]; then
        echo "$halt_poll_before" >"$halt_poll_file" || true
        halt_poll_before=""
    fi
}
