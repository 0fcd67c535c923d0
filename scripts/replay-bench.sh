#!/usr/bin/env bash
# replay-bench.sh - end-to-end speed of `sekisho replay`: a generated nginx combined log of
# LINES lines (synthetic browsers, a prober, a flood and a scraper: `sekisho synth-log`) is
# replayed against CONFIG; prints lines per second (wall and per CPU second, user + system)
# and the peak resident memory, from GNU time. Plain and gzip.
#
# usage: scripts/replay-bench.sh [LINES] [CONFIG] [BIN]
#   LINES   default 10000000
#   CONFIG  default conf/sekisho.yaml
#   BIN     default target/release/sekisho (built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
LINES=${1:-10000000}
CONFIG=${2:-conf/sekisho.yaml}
BIN=${3:-target/release/sekisho}
[ -x "$BIN" ] || cargo build --release --locked
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt install time)" >&2; exit 2; }
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
# about 186 lines a second of traffic with 2000 browsers and the default attackers
SECS=$(( LINES / 190 + 1 ))
"$BIN" synth-log --format nginx --seconds "$SECS" --browsers 2000 | head -n "$LINES" > "$DIR/access.log"
gzip -1 -c "$DIR/access.log" > "$DIR/access.log.gz"
n=$(wc -l < "$DIR/access.log")
echo "log: $n lines, $(du -h "$DIR/access.log" | cut -f1) plain, $(du -h "$DIR/access.log.gz" | cut -f1) gzip; config $CONFIG"
for f in access.log access.log.gz; do
    /usr/bin/time -f "%e %U %S %M" -o "$DIR/time" "$BIN" replay -c "$CONFIG" --json "$DIR/$f" > "$DIR/report.json"
    read -r wall user sys rss < "$DIR/time"
    python3 - "$n" "$wall" "$user" "$sys" "$rss" "$f" "$DIR/report.json" <<'PY'
import json, sys
n, wall, user, sys_, rss, f, rep = sys.argv[1:]
n, wall, cpu = int(n), float(wall), float(sys.argv[3]) + float(sys.argv[4])
r = json.load(open(rep))
print(f"{f}: {wall:.2f} s wall, {cpu:.2f} s CPU: {n / wall:,.0f} lines/s wall, {n / cpu:,.0f} lines/s per CPU second; peak RSS {int(rss) / 1024:.0f} MiB; "
      f"{r['requests']} judged, {r['refused']} refused, {r['unparsed']} unreadable")
PY
done
