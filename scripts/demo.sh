#!/usr/bin/env bash
# demo.sh - try sekisho locally: builds it, starts the demo origin on 127.0.0.1:8000 and runs
# the proxy with conf/sekisho.yaml on 127.0.0.1:8080 and [::1]:8080 in the foreground, with the
# admin listener on 127.0.0.1:9248. Ctrl-C stops the proxy; the origin is stopped on exit.
#
# usage: scripts/demo.sh
#   PROXY_PORT=n       where the proxy listens, on 127.0.0.1 and [::1] (default: 8080)
#   ORIGIN_PORT=n      where the demo origin listens, on 127.0.0.1 (default: 8000)
#   ADMIN_PORT=n       where the admin listener listens, on 127.0.0.1 (default: 9248)
#   SEKISHO_BIN=path   use this binary instead of building target/release/sekisho
#   SEKISHO_LOG=level  log level of both (default: info)
#
# The proxy runs on a copy of conf/sekisho.yaml in a temporary folder with these three
# addresses written in (listen, upstreams, admin.listen); the other files of conf/ are linked
# beside it, so conf/deny.txt and conf/geo/ are the ones read. The copy is removed on exit.
# A port that something already listens on stops the demo before anything is started.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

PROXY_PORT=${PROXY_PORT:-8080}
ORIGIN_PORT=${ORIGIN_PORT:-8000}
ADMIN_PORT=${ADMIN_PORT:-9248}

for var in PROXY_PORT ORIGIN_PORT ADMIN_PORT; do
    val=${!var}
    if ! [[ "$val" =~ ^[0-9]{1,5}$ ]] || [ "$val" -lt 1 ] || [ "$val" -gt 65535 ]; then
        echo "demo: $var=$val is not a port (1-65535)" >&2
        exit 1
    fi
done
if [ "$PROXY_PORT" = "$ORIGIN_PORT" ] || [ "$PROXY_PORT" = "$ADMIN_PORT" ] || [ "$ORIGIN_PORT" = "$ADMIN_PORT" ]; then
    echo "demo: PROXY_PORT=$PROXY_PORT, ORIGIN_PORT=$ORIGIN_PORT and ADMIN_PORT=$ADMIN_PORT must differ" >&2
    exit 1
fi

# Something listens on TCP port $1 (any local address)? With ss, also says what.
port_busy() {
    local out
    if command -v ss >/dev/null 2>&1; then
        out=$(ss -ltnpH "sport = :$1" 2>/dev/null || ss -ltnH "sport = :$1")
        [ -n "$out" ] || return 1
        printf '%s\n' "$out" | sed -nE 's/.*users:\(\("([^"]+)",pid=([0-9]+).*/\1 (pid \2)/p' | head -n 1
        return 0
    fi
    # Without ss: a connection that is accepted means a listener.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
busy=0
for var in PROXY_PORT ORIGIN_PORT ADMIN_PORT; do
    if who=$(port_busy "${!var}"); then
        echo "demo: port ${!var} is in use${who:+ by $who} (set $var=... to use another)" >&2
        busy=1
    fi
done
[ "$busy" = 0 ] || exit 1

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

ORIGIN_PID=""
DEMO_DIR=""
cleanup() {
    if [ -n "$ORIGIN_PID" ] && kill -0 "$ORIGIN_PID" 2>/dev/null; then
        echo "demo: stopping the demo origin (pid $ORIGIN_PID)"
        kill -TERM "$ORIGIN_PID" 2>/dev/null || true
        wait "$ORIGIN_PID" 2>/dev/null || true
    fi
    [ -z "$DEMO_DIR" ] || rm -rf "$DEMO_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The demo's config: conf/sekisho.yaml with its one-line listen, upstreams and admin keys
# replaced; each must be there exactly once, or the copy would not say what the demo runs.
DEMO_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sekisho-demo.XXXXXX")
CONFIG=$DEMO_DIR/sekisho.yaml
for key in listen upstreams admin; do
    n=$(grep -cE "^$key:" conf/sekisho.yaml || true)
    one=$(grep -cE "^$key: *(\[.*\]|\{.*\}) *(#.*)?\$" conf/sekisho.yaml || true)
    if [ "$n" != 1 ] || [ "$one" != 1 ]; then
        echo "demo: conf/sekisho.yaml must have its \`$key:\` on one line ($key: [...] or $key: { ... }) for the demo to set the port" >&2
        exit 1
    fi
done
{
    echo "# Written by scripts/demo.sh from conf/sekisho.yaml (PROXY_PORT=$PROXY_PORT ORIGIN_PORT=$ORIGIN_PORT ADMIN_PORT=$ADMIN_PORT)."
    sed -E \
        -e "s|^listen:.*|listen: [\"127.0.0.1:$PROXY_PORT\", \"[::1]:$PROXY_PORT\"]|" \
        -e "s|^upstreams:.*|upstreams: [\"127.0.0.1:$ORIGIN_PORT\"]|" \
        -e "s|^admin:.*|admin: { listen: \"127.0.0.1:$ADMIN_PORT\" }|" \
        conf/sekisho.yaml
} >"$CONFIG"
for entry in conf/*; do
    [ "$entry" = conf/sekisho.yaml ] || ln -s "$ROOT/$entry" "$DEMO_DIR/"
done

"$BIN" check -c "$CONFIG"

echo "demo: starting the demo origin on 127.0.0.1:$ORIGIN_PORT"
"$BIN" demo-origin --listen "127.0.0.1:$ORIGIN_PORT" &
ORIGIN_PID=$!

up=0
for _ in $(seq 1 100); do
    kill -0 "$ORIGIN_PID" 2>/dev/null || { echo "demo: the demo origin exited" >&2; exit 1; }
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$ORIGIN_PORT/"; then up=1; break; fi
    sleep 0.1
done
[ "$up" = 1 ] || { echo "demo: the demo origin does not answer on 127.0.0.1:$ORIGIN_PORT" >&2; exit 1; }

P=$PROXY_PORT
cat <<HINT

demo: origin up. Starting sekisho on 127.0.0.1:$P and [::1]:$P, admin on 127.0.0.1:$ADMIN_PORT (Ctrl-C to stop). In another shell try:
    curl -i http://127.0.0.1:$P/                 # passes through to the origin: 200 ok
    curl -i http://127.0.0.1:$P/wp-login.php     # refused by the wp-probes rule: 403
    curl -i 'http://[::1]:$P/status/404'         # the origin's status, passed through
    for i in \$(seq 1 12); do curl -s -o /dev/null -w '%{http_code} ' -X POST http://127.0.0.1:$P/login; done; echo
                                                   # the login rule: 429 after a burst of 10
    curl -s http://127.0.0.1:$ADMIN_PORT/admin/status   # what it decided, per rule
    tail -f $DEMO_DIR/access.log                # one line per request (access_log)
Edit $CONFIG (a copy of conf/sekisho.yaml) or conf/deny.txt and reload without a
restart: curl -X POST http://127.0.0.1:$ADMIN_PORT/admin/reload (list files are also picked up by themselves)

HINT

"$BIN" run -c "$CONFIG"
