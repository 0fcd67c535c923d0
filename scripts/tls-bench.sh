#!/usr/bin/env bash
# tls-bench.sh - sekisho at the edge (TLS + HTTP/2) next to nginx (ssl + http2 + the same
# limit_req and geo deny list as the anchors' nginx_limits), with Debian's h2load, in one run.
#
# usage: scripts/tls-bench.sh [SECONDS]          default 10 s per reused-connection run
#   needs: nginx, h2load (nghttp2-client), openssl, taskset, python3
#          (scripts/setup.sh nginx nghttp2-client)
#   environment: SEKISHO_BIN (default: cargo build --release), RUNS [2], CONC [64],
#     STREAMS [10] (h2 streams in flight per connection), HANDSHAKES [2000],
#     PIN [1] (server + origin on core 0, h2load on core 1), OUTDIR
#
# Two measures per server, each RUNS times, side by side:
#   reused:     h2load -c CONC -m STREAMS -D SECONDS: requests/s over kept TLS+h2 connections
#   handshakes: h2load -c HANDSHAKES -n HANDSHAKES -m 1: one request per connection, so each
#               request costs a full TLS 1.3 handshake; connections/s
# Both servers: one worker (nginx worker_processes 1, sekisho threads 1), the same self-signed
# P-256 certificate, the same 10,000-CIDR deny list (../shared/bench/gen_cidrs.py), a per-IP
# limit that never refuses, the same nginx origin returning "ok\n". sekisho's per-client
# connection caps are off (every connection comes from 127.0.0.1). Ratios are sekisho / nginx
# from the same run; absolute figures from different runs are not comparable.
set -euo pipefail
SECS=${1:-10}
RUNS=${RUNS:-2}
CONC=${CONC:-64}
STREAMS=${STREAMS:-10}
HANDSHAKES=${HANDSHAKES:-2000}
PIN=${PIN:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GEN=${GEN_CIDRS:-$ROOT/../shared/bench/gen_cidrs.py}
for t in nginx h2load openssl python3 taskset; do
    command -v "$t" >/dev/null 2>&1 || { echo "tls-bench.sh: $t missing (scripts/setup.sh nginx nghttp2-client)" >&2; exit 1; }
done
[ -f "$GEN" ] || { echo "tls-bench.sh: $GEN not found (set GEN_CIDRS=path)" >&2; exit 1; }
if [ -z "${SEKISHO_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release --locked -q)
    SEKISHO_BIN=$ROOT/target/release/sekisho
fi
OUT=${OUTDIR:-/tmp/sekisho-tls-bench/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
if [ "$PIN" = 1 ]; then S=(taskset -c 0); L=(taskset -c 1); else S=(); L=(); fi

python3 "$GEN" "$OUT" 10000 >/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$OUT/tls.key" -out "$OUT/tls.pem" 2>/dev/null

cat > "$OUT/origin.conf" <<EOF
worker_processes 1;
pid $OUT/origin.pid;
error_log $OUT/origin.error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:18090 backlog=4096;
        location / { default_type text/plain; return 200 "ok\n"; }
    }
}
EOF
cat > "$OUT/nginx_tls.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 16384;
pid $OUT/nginx.pid;
error_log $OUT/nginx.error.log error;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    geo \$deny_cidr { default 0; include $OUT/deny_cidrs.geo; }
    limit_req_zone \$binary_remote_addr zone=perip:10m rate=1000000r/s;
    limit_req_status 403;
    upstream origin { server 127.0.0.1:18090; keepalive 512; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:18443 ssl http2 backlog=4096;
        ssl_certificate $OUT/tls.pem;
        ssl_certificate_key $OUT/tls.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        http2_max_concurrent_streams 100;
        if (\$deny_cidr) { return 403; }
        location / {
            limit_req zone=perip burst=100000 nodelay;
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
cat > "$OUT/sekisho_tls.yaml" <<EOF
listen:
  - addr: "127.0.0.1:18444"
    tls: { certificates: [{ cert: $OUT/tls.pem, key: $OUT/tls.key }] }
admin: { listen: off }
threads: 1
grace_period: 0s
graceful_shutdown_timeout: 1s
upstreams: ["127.0.0.1:18090"]
lists:
  deny: { files: ["$OUT/deny_cidrs.txt"] }
connections:
  per_client: { max_open: off, rate: off }
max_tracked_keys: 1000000
rules:
  - name: per-ip
    limit: { rate: 1000000/s, burst: 100000, key: ip }
EOF
"${S[@]}" nginx -c "$OUT/origin.conf" -g 'daemon off;' & PIDS+=($!)
"${S[@]}" nginx -c "$OUT/nginx_tls.conf" -g 'daemon off;' & PIDS+=($!)
"$SEKISHO_BIN" check -c "$OUT/sekisho_tls.yaml" >/dev/null
SEKISHO_LOG=warn "${S[@]}" "$SEKISHO_BIN" run -c "$OUT/sekisho_tls.yaml" 2>"$OUT/sekisho.log" & PIDS+=($!)
for port in 18090 18443 18444; do
    for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
done

# h2load's "finished in 10.00s, 12345.67 req/s, ..." and its failures
rate() { awk '/^finished in/ {gsub(",", "", $4); print $4}' "$1"; }
failed() { awk '/^requests:/ {print $10}' "$1"; }

printf 'measure\trun\tnginx\tsekisho\tratio\tnginx_failed\tsekisho_failed\n' > "$OUT/results.tsv"
for run in $(seq "$RUNS"); do
    for measure in reused handshakes; do
        declare -A got=() bad=()
        for server in nginx:18443 sekisho:18444; do
            name=${server%%:*}; port=${server##*:}
            log="$OUT/$measure-$run-$name.txt"
            url="https://127.0.0.1:$port/"
            # a short warm-up, then the timed run
            "${L[@]}" h2load -c 8 -m 4 -n 2000 "$url" >/dev/null 2>&1 || true
            if [ "$measure" = reused ]; then
                "${L[@]}" h2load -c "$CONC" -m "$STREAMS" -t 1 -D "$SECS" "$url" > "$log" 2>&1 || true
            else
                "${L[@]}" h2load -c "$HANDSHAKES" -n "$HANDSHAKES" -m 1 -t 1 "$url" > "$log" 2>&1 || true
            fi
            got[$name]=$(rate "$log"); bad[$name]=$(failed "$log")
        done
        ratio=$(python3 -c "import sys; a,b=float(sys.argv[1] or 0),float(sys.argv[2] or 0); print(f'{b/a:.2f}' if a else '-')" "${got[nginx]}" "${got[sekisho]}")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$measure" "$run" "${got[nginx]}" "${got[sekisho]}" "$ratio" "${bad[nginx]}" "${bad[sekisho]}" >> "$OUT/results.tsv"
    done
done
column -t -s $'\t' "$OUT/results.tsv"
echo "tls-bench.sh: results in $OUT (reused: req/s; handshakes: new TLS connections/s, one request each)"
