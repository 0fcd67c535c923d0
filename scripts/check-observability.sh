#!/usr/bin/env bash
# check-observability.sh - the shipped alert rules and dashboard against a live sekisho:
#   promtool check rules contrib/prometheus/sekisho.rules.yml
#   promtool check metrics on a live scrape of /metrics after some traffic
#   every sekisho_* metric the dashboard and the rules use is one the program exports
# usage: scripts/check-observability.sh [BIN]   (default target/debug/sekisho; needs promtool,
# curl and redis-server: the sekisho checked runs in fleet mode on a store of its own, so that
# the sekisho_cluster_* series exist)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN=${1:-target/debug/sekisho}
command -v promtool >/dev/null || { echo "check-observability: promtool missing (scripts/setup.sh prometheus)" >&2; exit 1; }
W=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

echo "check-observability: promtool check rules"
promtool check rules contrib/prometheus/sekisho.rules.yml

read -r PORT ADMIN ORIGIN TLSPORT REDIS < <(python3 -c '
import socket
ss=[socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
# a TLS listener too, so that its metric series exist (a 30-day self-signed certificate)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$W/tls.key" -out "$W/tls.pem" 2>/dev/null
cat > "$W/s.yaml" <<YAML
listen:
  - "127.0.0.1:$PORT"
  - addr: "127.0.0.1:$TLSPORT"
    tls: { certificates: [{ cert: tls.pem, key: tls.key }] }
admin: { listen: "127.0.0.1:$ADMIN" }
threads: 1
grace_period: 0s
graceful_shutdown_timeout: 1s
upstreams: ["127.0.0.1:$ORIGIN"]
decision_log: { path: decisions.log }
geo: { database: $ROOT/conf/geo/dbip-country.mmdb }
lists:
  deny: { cidrs: ["127.0.0.2"] }
rules:
  - name: probes
    match: { path: /.env }
    action: deny
  - name: login
    match: { path_prefix: /login }
    limit: { rate: 1/h, burst: 1 }
  - name: fleet-login
    match: { path_prefix: /login }
    limit: { rate: 10/min, burst: 10, scope: cluster }
  - name: foreign
    match: { country_not: [JP, "??"] }
    limit: { rate: 10/s, burst: 10 }
    mode: count
cluster: { redis: "redis://127.0.0.1:$REDIS/0", name: observability }
bans: { state_file: bans.json }
autoban:
  - name: probers
under_attack:
  rules:
    - name: attack-search
      match: { path_prefix: /search }
      action: deny
YAML
redis-server --bind 127.0.0.1 --port "$REDIS" --save "" --appendonly no --dir "$W" >/dev/null & PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$REDIS" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
"$BIN" demo-origin --listen "127.0.0.1:$ORIGIN" 2>/dev/null & PIDS+=($!)
SEKISHO_LOG=warn "$BIN" run -c "$W/s.yaml" & PIDS+=($!)
for _ in $(seq 200); do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$ADMIN/healthz" && break; sleep 0.05; done
for p in / /.env /login /login /status/404 /status/503; do curl -s -o /dev/null "http://127.0.0.1:$PORT$p"; done
curl -sk -o /dev/null --http2 "https://127.0.0.1:$TLSPORT/"
curl -s -o /dev/null --interface 127.0.0.2 "http://127.0.0.1:$PORT/" || true
curl -s -X POST -o /dev/null "http://127.0.0.1:$ADMIN/admin/reload"
curl -s -X POST -o /dev/null "http://127.0.0.1:$ADMIN/admin/bans?net=127.0.0.3&ttl=1m"
curl -s -X POST -o /dev/null "http://127.0.0.1:$ADMIN/admin/under-attack?switch=on"
curl -s -o /dev/null "http://127.0.0.1:$PORT/search"
curl -s -X POST -o /dev/null "http://127.0.0.1:$ADMIN/admin/under-attack?switch=off"
curl -sf "http://127.0.0.1:$ADMIN/metrics" > "$W/metrics.txt"

echo "check-observability: promtool check metrics (live scrape, $(grep -c '^sekisho_' "$W/metrics.txt") series)"
promtool check metrics < "$W/metrics.txt"

echo "check-observability: metric names used by the dashboard and the rules"
python3 - "$W/metrics.txt" contrib/grafana/sekisho.json contrib/prometheus/sekisho.rules.yml <<'PY'
import json, re, sys
scrape, dash_path, rules_path = sys.argv[1:4]
exported = set()
for line in open(scrape):
    m = re.match(r"# TYPE (\S+) (\S+)", line)
    if m:
        name, kind = m.groups()
        exported.add(name)
        if kind == "histogram":
            exported.update({name + "_bucket", name + "_sum", name + "_count"})
dash = json.load(open(dash_path))
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
exprs += [t.get("query", "") for t in dash.get("templating", {}).get("list", []) if isinstance(t.get("query"), str)]
used = {n for e in exprs for n in re.findall(r"\bsekisho_[a-z0-9_]+", e)}
used_rules = set(re.findall(r"\bsekisho_[a-z0-9_]+", open(rules_path).read()))
missing = sorted((used | used_rules) - exported)
if missing:
    sys.exit("not exported by sekisho: " + ", ".join(missing))
print(f"ok: {len(used)} names in the dashboard, {len(used_rules)} in the rules, all exported")
PY
echo "check-observability: ok"
