#!/usr/bin/env bash
# cpu-vs-nginx.sh - sekisho and the anchors' nginx_limits alternated under the same wrk load:
# requests served and CPU per request of the proxy process (all its threads, from /proc), with
# the anchors' nginx origin. Pinning as in the anchors: origin and proxy on core 0, wrk on core 1.
# Alternating cancels most of the drift a shared VM has between runs; quote the ratios.
#
# usage: scripts/cpu-vs-nginx.sh BIN [CONC] [ROUNDS] [SECONDS]   (needs nginx, wrk, python3)
#   sekisho runs with the same policy as the anchors' product case: a per-IP limit that never
#   rejects and the same 10,000-CIDR deny list nginx_limits uses.
set -euo pipefail
BIN=$(realpath -- "${1:?usage: cpu-vs-nginx.sh BIN [CONC] [ROUNDS] [SECONDS]}")
C=${2:-64}; ROUNDS=${3:-4}; SECS=${4:-6}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$ROOT/../shared/bench}
for t in nginx wrk python3 taskset curl; do
    command -v "$t" >/dev/null || { echo "cpu-vs-nginx.sh: needs $t" >&2; exit 1; }
done
RUN=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
python3 "$BENCH/gen_cidrs.py" "$RUN" 10000 >/dev/null
for f in origin.conf nginx_limits.conf; do sed "s#@RUN@#$RUN#g" "$BENCH/conf/$f" > "$RUN/$f"; done
cat > "$RUN/sekisho.yaml" <<YAML
listen: ["127.0.0.1:18083"]
threads: 1
grace_period: 0s
graceful_shutdown_timeout: 1s
upstreams: ["127.0.0.1:18080"]
admin: { listen: off }
lists:
  deny: { files: ["$RUN/deny_cidrs.txt"] }
rules:
  - name: per-ip
    limit: { rate: 1000000/s, burst: 100000, key: ip }
YAML
wait_url() { for _ in $(seq 100); do curl -s -o /dev/null --max-time 1 "$1" && return 0; sleep 0.1; done; return 1; }
# cpu_per_request PID URL: served requests and CPU us per request of PID's threads over one wrk run
cpu_per_request() {
    local pid=$1 url=$2 t0 t1 out n
    taskset -c 1 wrk -t1 -c"$C" -d2s "$url" >/dev/null
    t0=$(cat /proc/"$pid"/task/*/stat | awk '{sub(/.*\) /, ""); s += $12 + $13} END {print s}')
    out=$(taskset -c 1 wrk -t1 -c"$C" -d"${SECS}s" "$url")
    t1=$(cat /proc/"$pid"/task/*/stat | awk '{sub(/.*\) /, ""); s += $12 + $13} END {print s}')
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    echo "requests=$n cpu_us_per_req=$(python3 -c "print(round(($t1-$t0)*1e6/$(getconf CLK_TCK)/$n,2))")"
}
taskset -c 0 nginx -c "$RUN/origin.conf" -g 'daemon off;' -e "$RUN/origin.err" & PIDS+=($!)
wait_url http://127.0.0.1:18080/
for r in $(seq "$ROUNDS"); do
    taskset -c 0 nginx -c "$RUN/nginx_limits.conf" -g 'daemon off;' -e "$RUN/limits.err" & NP=$!
    wait_url http://127.0.0.1:18081/
    W=$(pgrep -P "$NP" | head -1)
    echo "round $r c$C nginx_limits $(cpu_per_request "$W" http://127.0.0.1:18081/)"
    kill "$NP"; wait "$NP" 2>/dev/null || true
    SEKISHO_LOG=warn taskset -c 0 "$BIN" run -c "$RUN/sekisho.yaml" 2>/dev/null & SP=$!
    wait_url http://127.0.0.1:18083/
    echo "round $r c$C sekisho $(cpu_per_request "$SP" http://127.0.0.1:18083/)"
    kill "$SP"; wait "$SP" 2>/dev/null || true
done
