#!/usr/bin/env bash
# reload-bench.sh - issue 4's figures: reload time and peak RSS for a 1,000,000-line deny list,
# and throughput with one reload a second vs none, in one run.
#
# usage: scripts/reload-bench.sh            (needs wrk; builds the release binary)
#   LINES [1000000]  DURATION [15]  CONC [64]  SEKISHO_BIN [target/release/sekisho]
# Pinning as in the anchors: origin and proxy on core 0, wrk on core 1. Loopback only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
LINES=${LINES:-1000000}; DURATION=${DURATION:-15}; CONC=${CONC:-64}
BIN=${SEKISHO_BIN:-}
if [ -z "$BIN" ]; then cargo build --release --locked >&2; BIN=$ROOT/target/release/sekisho; fi
command -v wrk >/dev/null || { echo "reload-bench.sh: needs wrk (apt-get install wrk)" >&2; exit 1; }
W=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
PORT=18093; ADMIN=18094; ORIGIN=18092

python3 - "$W/deny.txt" "$LINES" <<'PY'
import sys, random
path, n = sys.argv[1], int(sys.argv[2])
r = random.Random(4)
with open(path, "w") as f:
    f.write("# generated deny list\n")
    for i in range(n):
        if i % 10 == 0:
            f.write("2001:db8:%x:%x::/64\n" % (r.getrandbits(16), r.getrandbits(16)))
        else:
            a = r.getrandbits(32)
            while a >> 24 == 127:
                a = r.getrandbits(32)
            p = r.choice([24, 28, 32, 32])
            a &= (0xffffffff << (32 - p)) & 0xffffffff
            f.write("%d.%d.%d.%d/%d\n" % (a >> 24, a >> 16 & 255, a >> 8 & 255, a & 255, p))
PY
cat > "$W/sekisho.yaml" <<YAML
listen: ["127.0.0.1:$PORT"]
admin: { listen: "127.0.0.1:$ADMIN" }
threads: 1
grace_period: 0s
graceful_shutdown_timeout: 1s
upstreams: ["127.0.0.1:$ORIGIN"]
lists:
  deny: { files: [deny.txt] }
rules:
  - name: per-ip
    limit: { rate: 1000000/s, burst: 100000 }
YAML
taskset -c 0 "$BIN" demo-origin --listen "127.0.0.1:$ORIGIN" 2>/dev/null & PIDS+=($!)
t0=$(date +%s.%N)
SEKISHO_LOG=warn taskset -c 0 "$BIN" run -c "$W/sekisho.yaml" 2>"$W/sekisho.log" & SP=$!; PIDS+=($SP)
for _ in $(seq 600); do curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/healthz" && break; sleep 0.1; done
t1=$(date +%s.%N)
rss() { awk '/^VmRSS/ {print $2}' /proc/$SP/status; }
hwm() { awk '/^VmHWM/ {print $2}' /proc/$SP/status; }
echo "deny list: $LINES lines, $(du -h "$W/deny.txt" | cut -f1)"
echo "start-up with the list: $(python3 -c "print(round($t1-$t0,2))") s; RSS $(( $(rss) / 1024 )) MiB, peak $(( $(hwm) / 1024 )) MiB"
for i in 1 2 3; do
  out=$(curl -s -X POST "http://127.0.0.1:$ADMIN/admin/reload")
  echo "full reload $i: $(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("duration_ms"), "ms", d.get("result"))'); RSS $(( $(rss) / 1024 )) MiB, peak $(( $(hwm) / 1024 )) MiB"
done
# a list-file change (rename into place, one line added): noticed by the watch, only that file re-read
cp "$W/deny.txt" "$W/deny.new"; echo "203.0.113.77" >> "$W/deny.new"; mv "$W/deny.new" "$W/deny.txt"
for _ in $(seq 300); do
  g=$(curl -s "http://127.0.0.1:$ADMIN/admin/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["generation"])')
  [ "$g" -ge 5 ] && break; sleep 0.1
done
echo "watched list change (generation $g): $(curl -s "http://127.0.0.1:$ADMIN/admin/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["reloads"]["last_duration_ms"])') ms; peak RSS $(( $(hwm) / 1024 )) MiB"

wrk_rps() { taskset -c 1 wrk -t1 -c"$CONC" -d"${DURATION}s" "http://127.0.0.1:$PORT/" | awk '/Requests\/sec/ {print $2} /Non-2xx/ {print "non2xx", $NF > "/dev/stderr"} /Socket errors/ {print $0 > "/dev/stderr"}'; }
reloads_ok() { curl -s "http://127.0.0.1:$ADMIN/admin/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["reloads"]["ok"])'; }
taskset -c 1 wrk -t1 -c"$CONC" -d2s "http://127.0.0.1:$PORT/" >/dev/null
# the reload drivers run on the load generator's core (wrk leaves most of it idle)
drive_a() { end=$((SECONDS + DURATION)); while [ $SECONDS -lt $end ]; do curl -s -o /dev/null -X POST "http://127.0.0.1:$ADMIN/admin/reload"; sleep 1; done; }
drive_b() { end=$((SECONDS + DURATION)); n=$1
  while [ $SECONDS -lt $end ]; do cp "$W/deny.txt" "$W/deny.new"; echo "198.18.$((n / 256 % 256)).$((n % 256))" >> "$W/deny.new"; mv "$W/deny.new" "$W/deny.txt"; n=$((n+1)); sleep 1; done; }
export -f drive_a drive_b; export W ADMIN DURATION
NONE=(); A=(); B=(); RA=0; RB=0
for round in 1 2; do
  NONE+=("$(wrk_rps)")
  r0=$(reloads_ok); taskset -c 1 bash -c drive_a & RL=$!; A+=("$(wrk_rps)"); wait $RL; RA=$((RA + $(reloads_ok) - r0))
  r0=$(reloads_ok); taskset -c 1 bash -c "drive_b $((round * 1000))" & RL=$!; B+=("$(wrk_rps)"); wait $RL; RB=$((RB + $(reloads_ok) - r0))
done
echo "throughput c$CONC, ${DURATION}s each, interleaved in one run (round 1 / round 2):"
echo "  no reloads: ${NONE[*]} req/s"
echo "  A: POST /admin/reload every second ($RA reloads, list unchanged, re-read and hashed): ${A[*]} req/s"
echo "  B: the 1M-line list rewritten every second ($RB reloads, list re-parsed): ${B[*]} req/s"
python3 -c "
n=[${NONE[0]},${NONE[1]}]; a=[${A[0]},${A[1]}]; b=[${B[0]},${B[1]}]
m=lambda x: sum(x)/len(x)
print('ratio A/none: %.3f   ratio B/none: %.3f' % (m(a)/m(n), m(b)/m(n)))"
echo "reload time now: $(curl -s "http://127.0.0.1:$ADMIN/admin/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["reloads"]["last_duration_ms"])') ms; peak RSS over the run: $(( $(hwm) / 1024 )) MiB; RSS now $(( $(rss) / 1024 )) MiB"
