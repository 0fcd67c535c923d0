#!/usr/bin/env bash
# cluster-bench.sh - fleet mode against the same rules counted locally, in one run: req/s and
# p99 under wrk for `scope: local` and `scope: cluster` (alternating ROUNDS times), and the
# store commands that cluster limits cost, per 10,000 requests a second (the local run has no
# cluster: section at all).
#
# usage: scripts/cluster-bench.sh [ROUNDS] [CONC] [CLIENTS]   (defaults 2, 64, 10000)
#   BIN=target/release/sekisho (built if missing). Needs wrk and redis-server
#   (scripts/setup.sh wrk). Everything on loopback: an origin (sekisho's demo origin) on a free
#   port, a redis-server of its own (no persistence), sekisho with 1 thread, wrk with 1 thread.
#   The traffic is mixed: each request comes through a trusted proxy (127.0.0.1) with an
#   X-Forwarded-For drawn from CLIENTS addresses, so that the buckets are many distinct keys;
#   2% are POST /login. Pinned as the other benches: origin and sekisho on core 0, wrk and
#   redis on core 1 (REDIS_CPU=0 puts redis beside sekisho), so quote the ratios, not the
#   absolute figures. Besides req/s and p99: the CPU the sekisho process spent per request
#   (utime + stime from /proc), the commands sekisho sent (sekisho_cluster_commands_total) and
#   the commands the store ran (INFO stats: the scripts' own GET/SET count there too).
set -euo pipefail
ROUNDS=${1:-2}; C=${2:-64}; CLIENTS=${3:-10000}; DUR=${DUR:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN=${BIN:-target/release/sekisho}
[ -x "$BIN" ] || cargo build --release --locked
for c in wrk redis-server redis-cli taskset; do
    command -v "$c" >/dev/null || { echo "cluster-bench: needs $c (scripts/setup.sh wrk)" >&2; exit 2; }
done
W=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
read -r PORT ADMIN ORIGIN REDIS < <(python3 -c '
import socket
ss=[socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
taskset -c 0 "$BIN" demo-origin --listen "127.0.0.1:$ORIGIN" 2>/dev/null & PIDS+=($!)
taskset -c "${REDIS_CPU:-1}" redis-server --bind 127.0.0.1 --port "$REDIS" --save "" --appendonly no --dir "$W" >/dev/null & PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$REDIS" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done

config() { # config SCOPE
    cat <<YAML
listen: ["127.0.0.1:$PORT"]
admin: { listen: "127.0.0.1:$ADMIN" }
threads: 1
grace_period: 0s
graceful_shutdown_timeout: 1s
upstreams: ["127.0.0.1:$ORIGIN"]
client_ip: { trusted_proxies: ["127.0.0.1/32"] }
$([ "$1" = cluster ] && echo "cluster: { redis: \"redis://127.0.0.1:$REDIS/0\", name: bench }")
rules:
  - name: login
    match: { path_prefix: /login, methods: [POST] }
    limit: { rate: 10/min, burst: 10, key: ip, scope: $1 }
  - name: per-ip
    limit: { rate: 100/s, burst: 200, key: ip, scope: $1 }
YAML
}
config local > "$W/local.yaml"
config cluster > "$W/cluster.yaml"
cat > "$W/mixed.lua" <<LUA
local n = $CLIENTS
math.randomseed(42)
request = function()
  local i = math.random(n)
  local ip = string.format("10.%d.%d.%d", math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256)
  if math.random(50) == 1 then
    return wrk.format("POST", "/login", { ["X-Forwarded-For"] = ip, ["Content-Length"] = "0" })
  end
  return wrk.format("GET", "/", { ["X-Forwarded-For"] = ip })
end
LUA

sent() { curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^sekisho_cluster_commands_total/ {print $2+0; f=1} END {if (!f) print 0}'; }
commands() { redis-cli -p "$REDIS" info stats | awk -F: '/total_commands_processed/ {print $2+0}'; }
run() { # run SCOPE
    SEKISHO_LOG=warn taskset -c 0 "$BIN" run -c "$W/$1.yaml" 2>>"$W/sekisho.log" & local P=$!
    for _ in $(seq 100); do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
    sleep 0.5
    taskset -c 1 wrk -t1 -c"$C" -d2s -s "$W/mixed.lua" "http://127.0.0.1:$PORT/" >/dev/null
    local c0; c0=$(commands)
    local s0; s0=$(sent)
    local t0; t0=$(awk '{print $14+$15}' "/proc/$P/stat")
    local out; out=$(taskset -c 1 wrk -t1 -c"$C" -d"${DUR}s" --latency -s "$W/mixed.lua" "http://127.0.0.1:$PORT/")
    local t1; t1=$(awk '{print $14+$15}' "/proc/$P/stat")
    local s1; s1=$(sent)
    local c1; c1=$(commands)
    kill "$P"; wait "$P" 2>/dev/null || true
    local rps p99 non2xx
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
    local n; n=$(echo "$out" | awk '/requests in/ {print $1}')
    local cpu; cpu=$(python3 -c "print(round(($t1-$t0)*1e6/$(getconf CLK_TCK)/$n,2))")
    echo "$1 rps=$rps p99=$p99 non2xx=${non2xx:-0} cpu_us=$cpu sent=$((s1 - s0)) store_cmds=$((c1 - c0))" | tee -a "$W/runs"
}
for _ in $(seq "$ROUNDS"); do
    run local
    run cluster
done
python3 - "$W/runs" "$DUR" <<'PY'
import re, statistics, sys
dur = float(sys.argv[2])
def ms(s):
    v = float(re.sub(r"[a-z]+$", "", s))
    return v / 1000 if s.endswith("us") else v * 1000 if s.endswith("s") and not s.endswith("ms") else v
runs = {"local": [], "cluster": []}
for line in open(sys.argv[1]):
    f = dict(kv.split("=") for kv in line.split()[1:])
    runs[line.split()[0]].append((float(f["rps"]), ms(f["p99"]), float(f["cpu_us"]), int(f["sent"]), int(f["store_cmds"])))
med = lambda v, i: statistics.median(r[i] for r in v)
for k, v in runs.items():
    rps, sent, ran = med(v, 0), med(v, 3) / dur, med(v, 4) / dur
    print(f"{k:8} median req/s {rps:8.0f}  p99 {med(v, 1):6.2f} ms  CPU/request {med(v, 2):6.2f} us  "
          f"commands sent/s {sent:5.0f} ({sent * 10000 / rps:4.0f} per 10k req/s)  run by the store/s {ran:6.0f} ({ran * 10000 / rps:5.0f} per 10k req/s)")
l, c = runs["local"], runs["cluster"]
print(f"cluster/local: req/s {med(c, 0) / med(l, 0):.3f}, p99 {med(c, 1) / med(l, 1):.3f}, CPU/request {med(c, 2) / med(l, 2):.3f}")
PY
