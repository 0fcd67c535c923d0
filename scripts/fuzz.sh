#!/usr/bin/env bash
# fuzz.sh - run every cargo-fuzz target (fuzz/fuzz_targets/, bodies in src/fuzzing.rs) for
# SECONDS each, and print executions and findings per target.
#
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]     default 60 s, every target
#   needs a nightly toolchain (`cargo +nightly`) and cargo-fuzz (`cargo install cargo-fuzz`);
#   the product itself builds on stable. A crash lands in fuzz/artifacts/TARGET/: copy it to
#   fuzz/regressions/TARGET/ with the fix, so tests/fuzz_replay.rs replays it on stable forever.
#   The corpus grown by the run stays in fuzz/corpus/TARGET/ (commit the small, useful part).
set -euo pipefail
SECS=${1:-60}
shift || true
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT/fuzz"
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: no nightly toolchain (rustup toolchain install nightly); the stable replay runs in cargo test" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz missing (cargo install cargo-fuzz)" >&2
    exit 2
fi
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
found=0
for t in "${targets[@]}"; do
    log=$(mktemp)
    rc=0
    cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$SECS" -print_final_stats=1 >"$log" 2>&1 || rc=$?
    execs=$(awk -F: '/stat::number_of_executed_units/ {gsub(/ /, "", $2); print $2}' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    if [ "$rc" -eq 0 ]; then
        echo "$t: ${execs:-?} executions, ${cov:-cov: ?}, no finding"
    else
        found=1
        echo "$t: FINDING after ${execs:-?} executions (exit $rc); see fuzz/artifacts/$t/ and:"
        tail -30 "$log"
    fi
    rm -f "$log"
done
exit "$found"
