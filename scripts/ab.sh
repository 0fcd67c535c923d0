#!/usr/bin/env bash
# ab.sh - compare two sekisho builds or configs in one run: A and B alternate ROUNDS times
# under the same wrk load (scripts/cpu-per-request.sh: origin and sekisho on core 0, wrk on
# core 1, two 8 s runs per turn), and the ratio B/A of the median req/s and of the median CPU
# per request is printed at the end. Alternating cancels most of the drift a 2-core VM has
# between runs; quote the ratio, not the absolute figures.
#
# usage: scripts/ab.sh BIN_A CONFIG_A BIN_B CONFIG_B [ROUNDS] [CONC]
#   Both configs must listen on 127.0.0.1:18083 and front 127.0.0.1:18080 (see
#   cpu-per-request.sh). SCRAPE=ADDR also scrapes http://ADDR/metrics once a second while B
#   runs, as Prometheus would (more often than its usual 15 s).
# Example (issue 6: metrics + decision log on vs a build without them):
#   scripts/ab.sh /tmp/old/sekisho off.yaml target/release/sekisho on.yaml 4
set -euo pipefail
A=${1:?usage: ab.sh BIN_A CONFIG_A BIN_B CONFIG_B [ROUNDS] [CONC]}
CA=${2:?config A}; B=${3:?bin B}; CB=${4:?config B}; ROUNDS=${5:-3}; C=${6:-64}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp -d)
scraper() { while sleep 1; do curl -s -o /dev/null --max-time 1 "http://$SCRAPE/metrics" || true; done; }
for r in $(seq "$ROUNDS"); do
    "$HERE/cpu-per-request.sh" "$A" "$CA" "$C" | sed 's/^/A /' | tee -a "$OUT/runs"
    SP=""
    if [ -n "${SCRAPE:-}" ]; then scraper & SP=$!; fi
    "$HERE/cpu-per-request.sh" "$B" "$CB" "$C" | sed 's/^/B /' | tee -a "$OUT/runs"
    [ -n "$SP" ] && kill "$SP" 2>/dev/null || true
done
python3 - "$OUT/runs" <<'PY'
import re, statistics, sys
runs = {"A": [], "B": []}
for line in open(sys.argv[1]):
    m = re.match(r"(A|B) .* rps=([\d.]+) cpu_us_per_req=([\d.]+)", line)
    if m:
        runs[m[1]].append((float(m[2]), float(m[3])))
med = {k: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
print(f"A: median {med['A'][0]:.0f} req/s, {med['A'][1]:.2f} us CPU/request over {len(runs['A'])} runs")
print(f"B: median {med['B'][0]:.0f} req/s, {med['B'][1]:.2f} us CPU/request over {len(runs['B'])} runs")
print(f"B/A throughput {med['B'][0] / med['A'][0]:.3f}; A/B CPU per request {med['A'][1] / med['B'][1]:.3f} (1.0 = same cost, below 1 = B costs more)")
PY
