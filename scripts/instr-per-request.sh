#!/usr/bin/env bash
# instr-per-request.sh - user-space instructions sekisho executes per proxied request, counted by
# valgrind's callgrind (all threads: workers, admin, decision-log writer, housekeeping). Unlike
# req/s or CPU time, the count does not move with host contention, so two builds or configs can
# be compared to a fraction of a percent on a noisy VM. Kernel work (the syscalls) is not counted.
#
# usage: scripts/instr-per-request.sh BIN CONFIG [SECONDS]   (needs valgrind, wrk)
#   CONFIG must listen on 127.0.0.1:18083 and front 127.0.0.1:18080 (as for cpu-per-request.sh);
#   the demo origin is started there. SCRAPE=ADDR also scrapes http://ADDR/metrics once a second.
set -euo pipefail
BIN=${1:?usage: instr-per-request.sh BIN CONFIG [SECONDS]}; CFG=${2:?config}; SECS=${3:-15}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
W=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; cp "$W"/cg.* "$KEEP"/; fi; rm -rf "$W"; }
trap cleanup EXIT
# KEEP=DIR keeps the callgrind files there (callgrind_annotate --inclusive=yes DIR/cg.*)
"$BIN" demo-origin --listen 127.0.0.1:18080 2>/dev/null & PIDS+=($!)
SEKISHO_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$W/cg.%p" "$BIN" run -c "$CFG" 2>"$W/vg.log" & P=$!; PIDS+=($P)
for _ in $(seq 300); do curl -s -o /dev/null --max-time 2 http://127.0.0.1:18083/ && break; sleep 0.2; done
wrk -t1 -c8 -d3s http://127.0.0.1:18083/ >/dev/null            # warm-up: pools, tables, JIT-free but lazy inits
callgrind_control -z "$P" >/dev/null 2>&1
if [ -n "${SCRAPE:-}" ]; then (while sleep 1; do curl -s -o /dev/null "http://$SCRAPE/metrics"; done) & PIDS+=($!); fi
out=$(wrk -t1 -c8 -d"${SECS}s" http://127.0.0.1:18083/)
callgrind_control -d "$P" >/dev/null 2>&1
n=$(echo "$out" | awk '/requests in/ {print $1}')
ir=$(cat "$W"/cg.* 2>/dev/null | awk '/^summary:/ {s+=$2} END {print s+0}')
echo "$(basename "$BIN") $(basename "$CFG"): requests=$n instructions_per_request=$(python3 -c "print(round($ir/$n))")"
