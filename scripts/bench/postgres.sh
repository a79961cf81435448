#!/usr/bin/env bash
# `make bench-peers`: the standard debit on PostgreSQL 15, for comparison with `make bench`.
# Throwaway clusters under target/ (unix sockets only, no TCP port), fsync=on and
# synchronous_commit=on; one statement per event that is correct on retry (debit.sql); pgbench
# with 1 and 64 clients. Configurations: a single node, and a primary with two local synchronous
# standbys (a commit waits for the WAL flush on a quorum, like a Raft majority of 3).
# Writes target/bench/postgres.json and prints the Tally / PostgreSQL table when
# target/bench/tally.json exists.
#
# Needs PostgreSQL 15's server binaries. Where they are missing:
#   sudo apt-get install postgresql-15        (Debian, Ubuntu; or set PG_BIN to its bin directory)
#
# Environment (all optional):
#   BENCH_SECONDS=20 BENCH_WARMUP_SECONDS=2 BENCH_ACCOUNTS=10000
#   BENCH_PG_CLIENTS="1 64"      pgbench clients per run
#   BENCH_PG_STANDBYS="0 2"      configurations: 0 = single node, 2 = two synchronous standbys
#   BENCH_PG_SYNC="ANY 1 (standby1, standby2)"   synchronous_standby_names with standbys
#                                (quorum: primary + 1 of 2 = majority of 3; "FIRST 2 (...)" waits for both)
#   BENCH_PG_PORT_BASE=7700      socket "ports" (the socket files live in the cluster directory)
#   BENCH_HALT_POLL_NS=N         the guest's idle polling for the run (as tally.sh; see halt_poll.sh)
#   BENCH_KEEP=1                 keep the clusters' directory afterwards
#   PG_BIN=/usr/lib/postgresql/15/bin   TALLY_BENCH=target/release/tally-bench
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=halt_poll.sh
source "$root/scripts/bench/halt_poll.sh"
halt_poll_check bench-peers
here="$root/scripts/bench"
seconds="${BENCH_SECONDS:-20}"
warmup="${BENCH_WARMUP_SECONDS:-2}"
accounts="${BENCH_ACCOUNTS:-10000}"
client_counts="${BENCH_PG_CLIENTS:-1 64}"
standby_counts="${BENCH_PG_STANDBYS:-0 2}"
sync_names="${BENCH_PG_SYNC:-ANY 1 (standby1, standby2)}"
port_base="${BENCH_PG_PORT_BASE:-7700}"
pg_bin="${PG_BIN:-/usr/lib/postgresql/15/bin}"
bench="${TALLY_BENCH:-$root/target/release/tally-bench}"
out_dir="$root/target/bench"

for tool in initdb pg_ctl postgres pg_basebackup psql pgbench; do
    if [ ! -x "$pg_bin/$tool" ]; then
        echo "bench-peers: $pg_bin/$tool not found: PostgreSQL 15 is not installed here." >&2
        echo "  Install it with:  sudo apt-get install postgresql-15   (Debian/Ubuntu)" >&2
        echo "  or point PG_BIN at the bin directory of a PostgreSQL 15 installation." >&2
        exit 1
    fi
done
if ! "$pg_bin/postgres" --version | grep -q ' 15\.'; then
    echo "bench-peers: $pg_bin/postgres is not PostgreSQL 15: $("$pg_bin/postgres" --version)" >&2
    exit 1
fi
if [ ! -x "$bench" ]; then
    echo "bench-peers: $bench is missing; run: cargo build --release -p tally-bench" >&2
    exit 1
fi

mkdir -p "$root/target" "$out_dir"
work="$(mktemp -d "$root/target/bench-pg.XXXXXX")"

# PostgreSQL refuses to run as root: as root, run it (and pgbench, which writes its logs into
# the cluster directory) as the `postgres` user, or a system user created for the purpose.
if [ "$(id -u)" -eq 0 ]; then
    run_user=postgres
    if ! id "$run_user" >/dev/null 2>&1; then
        run_user=tallybench
        id "$run_user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$run_user"
    fi
    chown "$run_user" "$work"
    as_pg() { runuser -u "$run_user" -- "$@"; }
else
    run_user="$(id -un)"
    as_pg() { "$@"; }
fi
if ! as_pg test -w "$work"; then
    echo "bench-peers: user $run_user cannot write $work (a parent directory is not searchable?)" >&2
    exit 1
fi

started_dirs=()
stop_all() {
    local status=$?
    trap - EXIT INT TERM
    halt_poll_restore
    for dir in "${started_dirs[@]}"; do
        as_pg "$pg_bin/pg_ctl" -D "$dir" -m fast -w -t 20 stop >/dev/null 2>&1 ||
            as_pg "$pg_bin/pg_ctl" -D "$dir" -m immediate stop >/dev/null 2>&1 || true
    done
    if [ "${BENCH_KEEP:-0}" = 1 ] || [ "$status" -ne 0 ]; then
        echo "bench-peers: cluster directory kept: $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap stop_all EXIT
trap 'exit 130' INT TERM
halt_poll_apply bench-peers

# Runs psql against a socket directory and port; extra arguments follow.
sql() {
    local socket_dir="$1" port="$2"
    shift 2
    as_pg "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$socket_dir" -p "$port" -U postgres -d postgres "$@"
}

start_instance() {
    local dir="$1"
    as_pg "$pg_bin/pg_ctl" -D "$dir" -l "$dir.log" -w -t 60 start >/dev/null
    started_dirs+=("$dir")
}

common_settings() {
    local port="$1" socket_dir="$2"
    cat <<CONF

# Set by scripts/bench/postgres.sh: durable commits, sockets only.
port = $port
listen_addresses = ''
unix_socket_directories = '$socket_dir'
fsync = on
synchronous_commit = on
full_page_writes = on
wal_level = replica
max_wal_senders = 8
max_connections = 150
shared_buffers = 256MB
CONF
}

results=()
for standbys in $standby_counts; do
    cluster="$work/standbys-$standbys"
    socket_dir="$cluster/sockets"
    as_pg mkdir -p "$cluster" "$socket_dir"
    primary="$cluster/primary"
    primary_port="$port_base"
    as_pg "$pg_bin/initdb" -D "$primary" --auth=trust --username=postgres --no-instructions >/dev/null
    common_settings "$primary_port" "$socket_dir" | as_pg tee -a "$primary/postgresql.conf" >/dev/null
    start_instance "$primary"
    sql "$socket_dir" "$primary_port" -v accounts="$accounts" -f "$here/schema.sql"

    if [ "$standbys" -gt 0 ]; then
        names=()
        for index in $(seq 1 "$standbys"); do
            standby="$cluster/standby$index"
            as_pg "$pg_bin/pg_basebackup" -h "$socket_dir" -p "$primary_port" -U postgres \
                -D "$standby" -X stream -c fast
            {
                common_settings "$((primary_port + index))" "$socket_dir"
                echo "primary_conninfo = 'host=$socket_dir port=$primary_port user=postgres application_name=standby$index'"
            } | as_pg tee -a "$standby/postgresql.conf" >/dev/null
            as_pg touch "$standby/standby.signal"
            start_instance "$standby"
            names+=("standby$index")
        done
        sql "$socket_dir" "$primary_port" -c "ALTER SYSTEM SET synchronous_standby_names = '$sync_names'"
        sql "$socket_dir" "$primary_port" -c "SELECT pg_reload_conf()" >/dev/null
        deadline=$((SECONDS + 60))
        until [ "$(sql "$socket_dir" "$primary_port" -At -c \
            "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')")" -ge "$standbys" ]; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                echo "bench-peers: the standbys did not become synchronous within 60 s" >&2
                sql "$socket_dir" "$primary_port" -c "SELECT application_name, state, sync_state FROM pg_stat_replication" >&2
                exit 1
            fi
            sleep 0.2
        done
        setup_name="primary + $standbys synchronous standbys ($sync_names)"
        suffix="standbys$standbys"
    else
        setup_name="single node, no replication"
        suffix="single"
    fi
    echo "bench-peers: PostgreSQL ready: $setup_name"

    for clients in $client_counts; do
        label="${clients}x1-$suffix"
        run_dir="$cluster/run-$label"
        as_pg mkdir -p "$run_dir"
        threads=$((clients < 2 ? clients : 2))
        before="$(sql "$socket_dir" "$primary_port" -At -c "SELECT count(*) FROM usage_events")"
        echo
        echo "bench-peers: $label: pgbench, $clients clients, $((seconds + warmup)) s (${warmup} s warm-up)"
        set +e
        ( cd "$run_dir" && as_pg "$pg_bin/pgbench" -n -h "$socket_dir" -p "$primary_port" -U postgres \
            -f "$here/debit.sql" -D accounts="$accounts" -M prepared \
            -c "$clients" -j "$threads" -T "$((seconds + warmup))" -P 5 \
            -l --log-prefix="$run_dir/log" postgres ) >"$run_dir/pgbench.out" 2>&1
        pgbench_status=$?
        set -e
        grep -E '^(progress|tps|latency|number of (transactions|failed))' "$run_dir/pgbench.out" || true
        if [ "$pgbench_status" -ne 0 ]; then
            echo "bench-peers: pgbench failed (status $pgbench_status):" >&2
            tail -n 20 "$run_dir/pgbench.out" >&2
            exit 1
        fi
        failed="$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$run_dir/pgbench.out")"
        after="$(sql "$socket_dir" "$primary_port" -At -c "SELECT count(*) FROM usage_events")"
        # Conservation: what left the balances is exactly what the usage rows say was charged.
        conserved="$(sql "$socket_dir" "$primary_port" -At -c \
            "SELECT (SELECT sum(balance) FROM balances) + (SELECT coalesce(sum(amount), 0) FROM usage_events) = 2000000::numeric * $accounts")"
        if [ "$conserved" != "t" ]; then
            echo "bench-peers: balances and usage rows do not add up: the debit statement is wrong" >&2
            exit 1
        fi
        echo "bench-peers: $((after - before)) usage rows inserted; balances + charged = funded: ok"
        "$bench" pgbench --label "$label" --clients "$clients" --accounts "$accounts" \
            --warmup "${warmup}s" --failed "${failed:-0}" --out "$run_dir/result.json" "$run_dir"/log*
        results+=("$run_dir/result.json")
    done

    for dir in "${started_dirs[@]}"; do
        as_pg "$pg_bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
    done
    started_dirs=()
done

echo
"$bench" table --system postgresql \
    --note "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}'), fsync=on, synchronous_commit=on, one statement per event (scripts/bench/debit.sql), pgbench -M prepared; $accounts accounts; ${seconds} s per run after ${warmup} s warm-up" \
    --out "$out_dir/postgres.json" "${results[@]}"
echo "bench-peers: wrote $out_dir/postgres.json"
if [ -f "$out_dir/tally.json" ]; then
    echo
    tally_written="$(stat -c %Y "$out_dir/tally.json")"
    echo "Tally / PostgreSQL (Tally from $out_dir/tally.json, written $(date -u -d "@$tally_written" '+%Y-%m-%d %H:%M UTC'), $(( ($(date +%s) - tally_written) / 60 )) min ago: run make bench just before for a same-hour comparison):"
    "$bench" compare "$out_dir/tally.json" "$out_dir/postgres.json"
else
    echo "bench-peers: no $out_dir/tally.json yet; run make bench for the Tally / PostgreSQL table"
fi
