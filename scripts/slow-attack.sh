#!/usr/bin/env bash
# slow-attack.sh - try slow HTTP attacks (Debian's slowhttptest) on a running sekisho, and show
# what sekisho did about them.
#
# usage: scripts/slow-attack.sh [MODE] [URL] [CONNECTIONS] [SECONDS]
#   MODE         headers (slowloris: a request head trickled), body (R-U-Dead-Yet: a POST body
#                trickled), read (a response read slowly), or all (the three in turn); default all
#   URL          the proxy, default http://127.0.0.1:8080/ (scripts/demo.sh's)
#   CONNECTIONS  connections slowhttptest keeps open, default 500
#   SECONDS      length of each test, default 30
#   ADMIN        environment: the admin listener, default 127.0.0.1:9248 (for the metrics)
#
# Each test prints slowhttptest's verdict (whether its probe connection was still served, and
# when) and how sekisho's connection metrics moved: sekisho_connections_closed_total and
# sekisho_connections_refused_total by reason. slowhttptest's HTML/CSV reports are kept in a
# folder it names. The target must be a loopback address (127.0.0.0/8, ::1, localhost): set
# SLOW_ATTACK_ANY_HOST=1 to aim it at another host you run yourself.
set -euo pipefail

MODE=${1:-all}
URL=${2:-http://127.0.0.1:8080/}
CONNS=${3:-500}
SECS=${4:-30}
ADMIN=${ADMIN:-127.0.0.1:9248}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

case "$MODE" in headers | body | read | all) ;; *)
    echo "slow-attack: mode $MODE: use headers, body, read or all" >&2
    exit 2
    ;;
esac
host=$(printf '%s' "$URL" | sed -E 's#^[a-z]+://(\[[^]]+\]|[^/:]+).*#\1#')
if [ "${SLOW_ATTACK_ANY_HOST:-0}" != 1 ]; then
    case "$host" in
    127.* | localhost | "[::1]") ;;
    *)
        echo "slow-attack: $host is not a loopback address; set SLOW_ATTACK_ANY_HOST=1 for a host you run yourself" >&2
        exit 2
        ;;
    esac
fi
command -v slowhttptest >/dev/null 2>&1 || "$ROOT/scripts/setup.sh" slowhttptest
curl -s -o /dev/null --max-time 2 "$URL" \
    || { echo "slow-attack: nothing answers at $URL (start sekisho first, e.g. scripts/demo.sh)" >&2; exit 1; }

# "reason value" lines of the connection metrics, or nothing when the admin listener is away
metrics() {
    curl -s --max-time 2 "http://$ADMIN/metrics" 2>/dev/null \
        | awk '/^sekisho_connections_(closed|refused)_total\{/ {
                 match($0, /reason="[^"]*"/); r = substr($0, RSTART + 8, RLENGTH - 9)
                 k = ($0 ~ /closed/ ? "closed:" : "refused:") r; print k, $NF }' | sort
}

OUT=$(mktemp -d /tmp/slow-attack.XXXXXX)
run() { # run NAME FLAGS...
    local name=$1
    shift
    local before after
    before=$(metrics)
    echo "== $name: $CONNS connections for ${SECS}s against $URL"
    # -p 3: the probe connection counts the service as down if it waits more than 3 s
    slowhttptest "$@" -c "$CONNS" -r 200 -l "$SECS" -p 3 -u "$URL" -g -o "$OUT/$name" \
        > "$OUT/$name.log" 2>&1 || true
    sed 's/\x1b\[[0-9;]*m//g' "$OUT/$name.log" \
        | grep -E "service available|Exit status|closed:|pending:|connected:" | tail -5 || true
    after=$(metrics)
    if [ -n "$after" ]; then
        echo "   sekisho, what moved during the test:"
        join -a 2 <(printf '%s\n' "$before") <(printf '%s\n' "$after") \
            | awk 'NF == 3 && $3 != $2 { printf "     %-32s +%d\n", $1, $3 - $2 }
                   NF == 2 && $2 != 0  { printf "     %-32s +%d\n", $1, $2 }'
    else
        echo "   (no metrics: the admin listener at $ADMIN did not answer; set ADMIN)"
    fi
}

[ "$MODE" = all ] || [ "$MODE" = headers ] && run headers -H -i 5 -x 10
[ "$MODE" = all ] || [ "$MODE" = body ] && run body -B -i 5 -s 8192 -x 10
[ "$MODE" = all ] || [ "$MODE" = read ] && run read -X -k 3 -n 5 -w 10 -y 20 -z 32
echo "reports (HTML and CSV) in $OUT"
