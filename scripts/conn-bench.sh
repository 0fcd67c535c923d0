#!/usr/bin/env bash
# conn-bench.sh - the connection-layer measurements of issue 14, on loopback, in one run:
#   1. legit latency (wrk, keep-alive, 10 connections) with no attack, then during a slowloris
#      of CONNS connections from ADDRS loopback addresses (examples/conn_flood.rs), same run;
#   2. memory per idle client connection: sekisho's RSS before and with CONNS idle kept-alive
#      connections open, the delta divided by CONNS;
#   3. new connections per second (wrk with `Connection: close`) through sekisho with the
#      connection limits on (max_open, per_client max_open and rate, set high enough that they
#      refuse nothing: their cost, not their refusals) and off, and through nginx with
#      `limit_conn` (plus client_header_timeout) in front of the same origin. Quote the ratios.
#
# usage: scripts/conn-bench.sh [CONNS] [ADDRS] [SECONDS]     defaults 20000 100 10
#   needs: wrk nginx taskset python3 curl (scripts/setup.sh wrk nginx), a release build
#   (built here if missing). Pinning: sekisho / nginx proxy and the origin on core 0, wrk and the
#   flood on core 1. Run as root to lift the descriptor limit above CONNS*2 (else what the hard
#   limit allows is used and said).
set -euo pipefail
CONNS=${1:-20000}; ADDRS=${2:-100}; SECS=${3:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
for t in nginx wrk python3 taskset curl; do
    command -v "$t" >/dev/null || { echo "conn-bench.sh: needs $t (scripts/setup.sh wrk nginx)" >&2; exit 1; }
done
cargo build --release --locked --bin sekisho --example conn_flood >/dev/null 2>&1 \
    || cargo build --release --locked --bin sekisho --example conn_flood
BIN=$ROOT/target/release/sekisho
FLOOD=$ROOT/target/release/examples/conn_flood
want=$((CONNS * 2 + 4096))
ulimit -Hn "$want" 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
echo "descriptor limit $(ulimit -n) (wanted $want)"
RUN=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$RUN"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_url() { for _ in $(seq 200); do curl -s -o /dev/null --max-time 1 "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }
ORIGIN=$(free_port); PORT=$(free_port); ADMIN=$(free_port); NGX=$(free_port)
cat > "$RUN/origin.conf" <<EOF
worker_processes 1;
pid $RUN/origin.pid;
error_log $RUN/origin.err warn;
worker_rlimit_nofile $want;
events { worker_connections 65536; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$ORIGIN backlog=4096; location / { return 200 "ok\n"; } } }
EOF
cat > "$RUN/nginx.conf" <<EOF
worker_processes 1;
pid $RUN/nginx.pid;
error_log $RUN/nginx.err crit;
worker_rlimit_nofile $want;
events { worker_connections 65536; }
http { access_log off; keepalive_requests 10000; client_header_timeout 10s;
  limit_conn_zone \$binary_remote_addr zone=per_ip:10m;
  upstream o { server 127.0.0.1:$ORIGIN; keepalive 256; }
  server { listen 127.0.0.1:$NGX backlog=4096; limit_conn per_ip 256;
    location / { proxy_pass http://o; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOF
# sekisho_yaml NAME CONNECTIONS_SECTION
sekisho_yaml() {
    cat > "$RUN/$1.yaml" <<EOF
listen: ["127.0.0.1:$PORT"]
admin: { listen: "127.0.0.1:$ADMIN" }
threads: 1
grace_period: 0s
graceful_shutdown_timeout: 1s
upstreams: ["127.0.0.1:$ORIGIN"]
upstream_options: { pool_size: 256 }
$2
EOF
}
# the shipped defaults, with the bench client (127.0.0.1) a trusted proxy: exempt from
# per_client, as a load generator must be; the flood comes from 127.0.2.x
sekisho_yaml defaults "client_ip: { trusted_proxies: [127.0.0.1/32] }"
sekisho_yaml limits_on "connections: { max_open: 1000000, per_client: { max_open: 100000, rate: 10000000/s, burst: 10000000 } }"
sekisho_yaml limits_off "connections: { max_open: 10000000, per_client: { max_open: off, rate: off } }"
taskset -c 0 nginx -c "$RUN/origin.conf" -g 'daemon off;' -e "$RUN/origin.err" & PIDS+=($!)
wait_url "http://127.0.0.1:$ORIGIN/"
start_sekisho() {
    SEKISHO_LOG=warn taskset -c 0 "$BIN" run -c "$RUN/$1.yaml" 2>"$RUN/$1.err" & SP=$!
    PIDS+=("$SP")
    wait_url "http://127.0.0.1:$PORT/"
}
stop_sekisho() { kill "$SP"; wait "$SP" 2>/dev/null || true; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
latency() { # p50 and p99 and req/s of a keep-alive wrk run
    taskset -c 1 wrk -t1 -c10 -d"${SECS}s" --latency "http://127.0.0.1:$PORT/" \
        | awk '/^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Requests\/sec/ {rps=$2} /Non-2xx|Socket errors/ {err=err" "$0} END {printf "p50=%s p99=%s req/s=%s%s\n", p50, p99, rps, err}'
}
metric() { curl -s "http://127.0.0.1:$ADMIN/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

echo "== 1. legit latency, no attack vs slowloris of $CONNS connections from $ADDRS addresses"
start_sekisho defaults
echo "no attack:  $(latency)"
taskset -c 1 "$FLOOD" slowloris "127.0.0.1:$PORT" "$CONNS" "$ADDRS" $((SECS * 3)) > "$RUN/flood.log" & FP=$!
PIDS+=("$FP")
for _ in $(seq 100); do
    [ "$(metric sekisho_connections_open)" -ge $((CONNS * 9 / 10)) ] 2>/dev/null && break; sleep 0.2
done
echo "attack open: $(metric sekisho_connections_open) connections held by sekisho"
echo "slowloris:  $(latency)"
echo "closed by header_timeout: $(metric 'sekisho_connections_closed_total{reason="header_timeout"}'), refused: $(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^sekisho_connections_refused_total/ {printf "%s ", $0}')"
kill "$FP" 2>/dev/null || true; wait "$FP" 2>/dev/null || true
tail -1 "$RUN/flood.log"
stop_sekisho

echo "== 2. memory per idle client connection ($CONNS idle kept-alive connections)"
start_sekisho limits_off
curl -s -o /dev/null "http://127.0.0.1:$PORT/"
before=$(rss_kib "$SP")
taskset -c 1 "$FLOOD" idle "127.0.0.1:$PORT" "$CONNS" "$ADDRS" $((SECS * 3)) > "$RUN/idle.log" & FP=$!
PIDS+=("$FP")
for _ in $(seq 150); do
    [ "$(metric sekisho_connections_idle)" -ge "$CONNS" ] 2>/dev/null && break; sleep 0.2
done
idle=$(metric sekisho_connections_idle); after=$(rss_kib "$SP")
echo "idle=$idle rss_before_kib=$before rss_after_kib=$after per_connection_bytes=$(( (after - before) * 1024 / (idle > 0 ? idle : 1) ))"
kill "$FP" 2>/dev/null || true; wait "$FP" 2>/dev/null || true
stop_sekisho

echo "== 3. new connections per second (wrk -c32, Connection: close)"
cps() { taskset -c 1 wrk -t1 -c32 -d"${SECS}s" -H 'Connection: close' "$1" | awk '/Requests\/sec/ {rps=$2} /Socket errors|Non-2xx/ {err=err" ["$0"]"} END {print rps err}'; }
for round in 1 2; do
    for case in limits_on limits_off; do
        start_sekisho "$case"
        echo "round $round sekisho $case: $(cps "http://127.0.0.1:$PORT/") conn/s"
        stop_sekisho
    done
    taskset -c 0 nginx -c "$RUN/nginx.conf" -g 'daemon off;' -e "$RUN/nginx.err" & NP=$!
    wait_url "http://127.0.0.1:$NGX/"
    echo "round $round nginx limit_conn: $(cps "http://127.0.0.1:$NGX/") conn/s"
    kill "$NP"; wait "$NP" 2>/dev/null || true
done
