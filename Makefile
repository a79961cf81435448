# Tally: build, run, test, verify.
# `make run` starts a local 3-node cluster; `make test` runs every test.

CARGO ?= cargo

.PHONY: build release test verify fix purity clean-data run run-single demo bench bench-peers

build:
	$(CARGO) build --workspace --all-targets

release:
	$(CARGO) build --release --workspace --bins

test:
	$(CARGO) test --workspace --all-targets

verify: purity
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fix:
	$(CARGO) fmt --all
	$(CARGO) clippy --workspace --all-targets --fix --allow-dirty --allow-staged

# tally-core must stay pure: none of these may appear in its normal dependency tree.
purity:
	@if $(CARGO) tree -p tally-core -e normal --prefix none | grep -E '^(tokio|sled|tonic|openraft|prost|hyper|mio|rand|getrandom|chrono) ' ; then \
		echo "purity: tally-core depends on an impure crate (above)"; exit 1; \
	else echo "purity: tally-core is pure"; fi

# The local 3-node cluster from cluster-config/, in the foreground, each line prefixed [node-N].
# Data lives in ./data/node-N and is kept between runs; Ctrl-C stops all three.
run:
	$(CARGO) build --release -p tally-server --bin tallyd -p tally-cli --bin tally
	@mkdir -p data
	scripts/run-cluster.sh target/release/tallyd cluster-config/node-1.toml cluster-config/node-2.toml cluster-config/node-3.toml

# One node with every default (client 127.0.0.1:7101, metrics 127.0.0.1:7301), data in ./data/dev.
run-single:
	$(CARGO) build --release -p tally-server --bin tallyd
	target/release/tallyd --dev --data-dir ./data/dev

# Wipes the data of `make run` and `make run-single`.
clean-data:
	rm -rf ./data/node-1 ./data/node-2 ./data/node-3 ./data/dev

# Benchmarks (never part of `make test`). `make bench` starts a fresh 3-node cluster under
# target/, runs the standard shapes (1x1, 64x1, 16x100, 4x8190), prints one table and writes
# target/bench/tally.json; BENCH_SECONDS=5 make bench for a quick look (see scripts/bench/tally.sh).
bench:
	$(CARGO) build --release -p tally-server --bin tallyd -p tally-bench --bin tally-bench
	scripts/bench/tally.sh

# The same debit on PostgreSQL 15 (single node and with two synchronous standbys); writes
# target/bench/postgres.json and prints Tally / PostgreSQL (see scripts/bench/postgres.sh).
bench-peers:
	$(CARGO) build --release -p tally-bench --bin tally-bench
	scripts/bench/postgres.sh

# Against a running `make run` cluster (another terminal): creates the pitch's customers (monthly
# allowance of 10,000 that resets + purchased top-up of 5,000), a per-token price book for two
# models, streams 4,000 usage events with provider cost, changes a price half-way, and prints each
# customer's balance, revenue, cost and margin as they move. Options: `make demo DEMO_ARGS="--events 10000"`.
demo:
	$(CARGO) build --release -p tally-cli --bin tally
	target/release/tally demo $(DEMO_ARGS)

# Long fault-injection run (tests/fault_scenarios.rs `mixed`): every fault drawn at random from
# SEED for DURATION seconds; FAULTS=kill_leader,slow_links restricts the pool. A failure prints
# the fault schedule and the command that replays it (SEED, DURATION and FAULTS together).
SEED ?= $(shell date +%s)
DURATION ?= 120
FAULTS ?=
.PHONY: test-faults
test-faults:
	FAULT_SEED=$(SEED) FAULT_DURATION_S=$(DURATION) FAULT_FAULTS=$(FAULTS) \
		$(CARGO) test -p tally-tests --test fault_scenarios -- --exact mixed --nocapture
