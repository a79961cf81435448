# Sourced by the measurement scripts here: sets root, tallyd, tally and bench to the release
# binaries, and stops with the command that builds them if one is missing.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tallyd="$root/target/release/tallyd"
tally="$root/target/release/tally"
bench="$root/target/release/tally-bench"
for binary in "$tallyd" "$tally" "$bench"; do
    if [ ! -x "$binary" ]; then
        echo "$(basename "$0"): $binary is missing; run: cargo build --release -p tally-server -p tally-cli -p tally-bench" >&2
        exit 1
    fi
done
