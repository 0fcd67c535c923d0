#!/usr/bin/env bash
# demo.sh - try sekisho locally: builds it, starts the demo origin on 127.0.0.1:8000 and runs
# the proxy with conf/sekisho.yaml on 127.0.0.1:8080 and [::1]:8080 in the foreground.
# Ctrl-C stops the proxy; the origin is stopped on exit.
#
# usage: scripts/demo.sh
#   SEKISHO_BIN=path   use this binary instead of building target/release/sekisho
#   SEKISHO_LOG=level  log level of both (default: info)
set -euo pipefail

cd "$(dirname "$0")/.."

if [ -n "${SEKISHO_BIN:-}" ]; then
    BIN=$SEKISHO_BIN
    echo "demo: using $BIN (SEKISHO_BIN)"
else
    scripts/setup.sh
    echo "demo: cargo build --release --locked"
    cargo build --release --locked
    BIN=target/release/sekisho
fi
[ -x "$BIN" ] || { echo "demo: $BIN is not an executable" >&2; exit 1; }

if command -v ss >/dev/null 2>&1; then
    for p in 8000 8080; do
        if ss -ltnH "sport = :$p" | grep -q .; then
            echo "demo: port $p is already in use; stop whatever listens there first" >&2
            exit 1
        fi
    done
fi

"$BIN" check -c conf/sekisho.yaml

ORIGIN_PID=""
cleanup() {
    if [ -n "$ORIGIN_PID" ] && kill -0 "$ORIGIN_PID" 2>/dev/null; then
        echo "demo: stopping the demo origin (pid $ORIGIN_PID)"
        kill -TERM "$ORIGIN_PID" 2>/dev/null || true
        wait "$ORIGIN_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "demo: starting the demo origin on 127.0.0.1:8000"
"$BIN" demo-origin --listen 127.0.0.1:8000 &
ORIGIN_PID=$!

up=0
for _ in $(seq 1 100); do
    kill -0 "$ORIGIN_PID" 2>/dev/null || { echo "demo: the demo origin exited" >&2; exit 1; }
    if curl -s -o /dev/null --max-time 1 http://127.0.0.1:8000/; then up=1; break; fi
    sleep 0.1
done
[ "$up" = 1 ] || { echo "demo: the demo origin does not answer on 127.0.0.1:8000" >&2; exit 1; }

cat <<'HINT'

demo: origin up. Starting sekisho on 127.0.0.1:8080 and [::1]:8080 (Ctrl-C to stop). In another shell try:
    curl -i http://127.0.0.1:8080/                 # passes through to the origin: 200 ok
    curl -i http://127.0.0.1:8080/wp-login.php     # refused by the wp-probes rule: 403
    curl -i 'http://[::1]:8080/status/404'         # the origin's status, passed through
    for i in $(seq 1 12); do curl -s -o /dev/null -w '%{http_code} ' -X POST http://127.0.0.1:8080/login; done; echo
                                                   # the login rule: 429 after a burst of 10
Edit conf/sekisho.yaml or conf/deny.txt and reload without a restart: kill -HUP <sekisho pid>

HINT

"$BIN" run -c conf/sekisho.yaml
