# Tally: build, run, test, verify.
# `make run` starts a local 3-node cluster; `make test` runs every test.

CARGO ?= cargo

.PHONY: build release test verify fix purity clean-data

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
