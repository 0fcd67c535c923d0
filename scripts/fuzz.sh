#!/usr/bin/env bash
# fuzz.sh - run every cargo-fuzz target (fuzz/fuzz_targets/, bodies in src/fuzzing.rs) for
# SECONDS each, and print executions and findings per target.
#
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]     default 60 s, every target
#   needs a nightly toolchain (`cargo +nightly`) and cargo-fuzz (`cargo install cargo-fuzz`);
#   the product itself builds on stable. A crash lands in fuzz/artifacts/TARGET/: copy it to
#   fuzz/regressions/TARGET/ with the fix, so tests/fuzz_replay.rs replays it on stable forever.
#   The corpus the runs grow stays in fuzz/work/TARGET/ (not committed; later runs start from
#   it): to keep its useful part, `cargo +nightly fuzz cmin TARGET work/TARGET` and copy the
#   few inputs that matter into fuzz/corpus/TARGET/.
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
# one build for every target first: a build that fails is not a finding
if ! cargo +nightly fuzz build >/dev/null 2>"${TMPDIR:-/tmp}/fuzz-build.$$"; then
    tail -40 "${TMPDIR:-/tmp}/fuzz-build.$$" >&2
    rm -f "${TMPDIR:-/tmp}/fuzz-build.$$"
    echo "fuzz.sh: the fuzz targets do not build" >&2
    exit 2
fi
rm -f "${TMPDIR:-/tmp}/fuzz-build.$$"
found=0
for t in "${targets[@]}"; do
    log=$(mktemp)
    rc=0
    mkdir -p "work/$t"
    # what the run finds goes to work/ (not committed); corpus/ is read as seeds
    cargo +nightly fuzz run "$t" "work/$t" "corpus/$t" -- -max_total_time="$SECS" -print_final_stats=1 >"$log" 2>&1 || rc=$?
    execs=$(awk '/stat::number_of_executed_units:/ {print $NF}' "$log" | tail -1)
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
