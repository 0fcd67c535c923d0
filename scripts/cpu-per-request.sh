#!/usr/bin/env bash
# cpu-per-request.sh - A/B one sekisho binary and config: req/s and the CPU the sekisho
# process spent per request (utime+stime from /proc), under wrk on loopback.
#
# usage: scripts/cpu-per-request.sh BIN CONFIG [CONC] [ROUNDS]
#   CONFIG must listen on 127.0.0.1:18083 and front 127.0.0.1:18080. An origin is started there
#   (nginx with ../shared/bench/conf/origin.conf when nginx is installed, else sekisho's demo
#   origin) unless something already listens on 18080. Pinning as in the anchors: origin and
#   sekisho on core 0, wrk on core 1. Each round: 2 s warm-up, then two 8 s runs.
# Alternate two binaries or configs by calling it twice per round, e.g.
#   for i in 1 2 3; do scripts/cpu-per-request.sh A.bin c.yaml; scripts/cpu-per-request.sh B.bin c.yaml; done
set -euo pipefail
BIN=${1:?usage: cpu-per-request.sh BIN CONFIG [CONC]}; CFG=${2:?config}; C=${3:-64}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v wrk >/dev/null || { echo "needs wrk" >&2; exit 1; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
if ! curl -s -o /dev/null --max-time 1 http://127.0.0.1:18080/; then
    if command -v nginx >/dev/null && [ -f "$ROOT/../shared/bench/conf/origin.conf" ]; then
        run=$(mktemp -d)
        sed "s#@RUN@#$run#g" "$ROOT/../shared/bench/conf/origin.conf" > "$run/origin.conf"
        taskset -c 0 nginx -c "$run/origin.conf" -g 'daemon off;' -e "$run/err.log" & PIDS+=($!)
    else
        taskset -c 0 "$BIN" demo-origin --listen 127.0.0.1:18080 2>/dev/null & PIDS+=($!)
    fi
    for _ in $(seq 50); do curl -s -o /dev/null --max-time 1 http://127.0.0.1:18080/ && break; sleep 0.1; done
fi
SEKISHO_LOG=warn taskset -c 0 "$BIN" run -c "$CFG" 2>/dev/null & P=$!; PIDS+=($P)
for _ in $(seq 100); do curl -s -o /dev/null --max-time 1 http://127.0.0.1:18083/ && break; sleep 0.1; done
taskset -c 1 wrk -t1 -c"$C" -d2s http://127.0.0.1:18083/ >/dev/null
ticks=$(getconf CLK_TCK)
for _ in 1 2; do
    t0=$(awk '{print $14+$15}' /proc/$P/stat)
    out=$(taskset -c 1 wrk -t1 -c"$C" -d8s http://127.0.0.1:18083/)
    t1=$(awk '{print $14+$15}' /proc/$P/stat)
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    echo "$(basename "$BIN") $(basename "$CFG") c$C: rps=$rps cpu_us_per_req=$(python3 -c "print(round(($t1-$t0)*1e6/$ticks/$n,2))")"
done
