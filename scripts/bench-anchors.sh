#!/usr/bin/env bash
# bench-anchors.sh - measure sekisho with the shared anchors (../shared/bench/anchors.sh), next to
# the nginx / haproxy baselines, under the same load and pinning.
#
# usage: scripts/bench-anchors.sh [CASE...]
#   default cases: origin nginx_limits haproxy_limits nginx_reject product product_reject
#   product         sekisho, 1 thread, 10,000-CIDR deny list + a per-IP limit that never rejects
#   product_reject  the same with rate 1/s, burst 1: nearly every request is refused with 403
# environment:
#   ANCHORS=path     the anchors script [../shared/bench/anchors.sh, relative to the repo root]
#   SEKISHO_BIN=path benchmark this binary instead of building target/release/sekisho
#   PRODUCT_PORT     [18083]
#   BENCH_SEKISHO_LOG  sekisho's log level during the runs [warn]
#   anything anchors.sh reads passes through: RUNS CONCS DURATION WARMUP PIN OUTDIR ...
#     e.g. RUNS=1 CONCS=64 DURATION=5 scripts/bench-anchors.sh product
#
# The configs are written when anchors.sh starts the product (it only then knows DENY_CIDRS_FILE):
# PRODUCT_CMD runs this script as `bench-anchors.sh --serve MODE`, which renders
# sekisho_MODE.yaml next to the deny list (anchors' run folder, kept with the results) and execs
# sekisho on it. Paths in the config are absolute (sekisho resolves relative ones against the
# config's folder).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SELF=$ROOT/scripts/$(basename "$0")
PRODUCT_PORT=${PRODUCT_PORT:-18083}

# ------------------------------------------------------------------ product side (run by anchors.sh)
if [ "${1:-}" = --serve ]; then
    mode=${2:?usage: bench-anchors.sh --serve product|product_reject}
    : "${DENY_CIDRS_FILE:?DENY_CIDRS_FILE not set (this mode is run by anchors.sh)}"
    bin=${SEKISHO_BIN:-$ROOT/target/release/sekisho}
    case "$mode" in
        product)        rate=1000000/s; burst=100000 ;;
        product_reject) rate=1/s; burst=1 ;;
        *) echo "bench-anchors.sh: unknown mode $mode" >&2; exit 2 ;;
    esac
    deny=$(realpath -- "$DENY_CIDRS_FILE")
    upstream=${ORIGIN_URL:-http://127.0.0.1:18080}
    upstream=${upstream#*://}; upstream=${upstream%%/*}
    cfg=$(dirname "$deny")/sekisho_$mode.yaml
    cat > "$cfg" <<YAML
# rendered by scripts/bench-anchors.sh for the anchors case "$mode"
listen: ["127.0.0.1:$PRODUCT_PORT"]
threads: 1
grace_period: 0s
graceful_shutdown_timeout: 1s
upstreams: ["$upstream"]
lists:
  deny: { files: ["$deny"] }
max_tracked_keys: 1000000
rules:
  - name: per-ip
    limit: { rate: $rate, burst: $burst, key: ip }
YAML
    echo "bench-anchors.sh: $mode: $bin run -c $cfg" >&2
    "$bin" check -c "$cfg" >&2
    SEKISHO_LOG=${BENCH_SEKISHO_LOG:-warn}
    export SEKISHO_LOG
    exec "$bin" run -c "$cfg"
fi

# ------------------------------------------------------------------ driver
cd "$ROOT"
ANCHORS=${ANCHORS:-../shared/bench/anchors.sh}
[ -f "$ANCHORS" ] || { echo "bench-anchors.sh: anchors script not found: $ANCHORS (set ANCHORS=path)" >&2; exit 1; }

if [ -n "${SEKISHO_BIN:-}" ]; then
    SEKISHO_BIN=$(realpath -- "$SEKISHO_BIN")
    echo "bench-anchors.sh: using $SEKISHO_BIN (SEKISHO_BIN)"
else
    scripts/setup.sh
    echo "bench-anchors.sh: cargo build --release --locked"
    cargo build --release --locked
    SEKISHO_BIN=$ROOT/target/release/sekisho
fi
[ -x "$SEKISHO_BIN" ] || { echo "bench-anchors.sh: $SEKISHO_BIN is not an executable" >&2; exit 1; }
export SEKISHO_BIN PRODUCT_PORT

if command -v ss >/dev/null 2>&1 && ss -ltnH "sport = :$PRODUCT_PORT" | grep -q .; then
    echo "bench-anchors.sh: port $PRODUCT_PORT already in use; stop whatever listens there first" >&2
    exit 1
fi

if [ $# -eq 0 ]; then
    set -- origin nginx_limits haproxy_limits nginx_reject product product_reject
fi

# anchors.sh runs these as `bash -c "exec $CMD"` from this folder.
PRODUCT_CMD="$(printf '%q' "$SELF") --serve product"
PRODUCT_REJECT_CMD="$(printf '%q' "$SELF") --serve product_reject"
PRODUCT_URL=${PRODUCT_URL:-http://127.0.0.1:$PRODUCT_PORT/}
export PRODUCT_CMD PRODUCT_REJECT_CMD PRODUCT_URL
echo "bench-anchors.sh: $ANCHORS $*"
echo "  PRODUCT_CMD=$PRODUCT_CMD"
echo "  PRODUCT_REJECT_CMD=$PRODUCT_REJECT_CMD"
echo "  PRODUCT_URL=$PRODUCT_URL"
exec bash "$ANCHORS" "$@"
