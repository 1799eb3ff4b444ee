#!/usr/bin/env bash
# The edge alone: `ringlb bench ws` straight to one `ringlb edge` (the edge's own
# measurement), a fresh edge per scenario, each with its RSS and CPU watched:
#   load-raw  1000 sessions x 3 participants, 1 msg/s, 256 B, 30 s (raw mode)
#   load-v1   the same in ringlb.v1
#   idle-raw  10,000 idle connections (5000 sessions x 2): RSS per connection
#   idle-v1   the same in ringlb.v1
# The bench client and the edge are separate processes (each may open 20,000
# descriptors here), and the client dials from 127.0.0.1-127.0.0.8. Writes
# JSON and an SVG chart per scenario under $OUT (default bench/out/edge) and
# prints every summary line.
#
#   bench/edge-direct.sh                      # SCENARIOS="idle-raw" for a subset
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/edge}
SCENARIOS=${SCENARIOS:-load-raw load-v1 idle-raw idle-v1}
WORK=$(mktemp -d)
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
edge=
cleanup() { [ -n "$edge" ] && kill "$edge" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
# Ctrl-C ends the run, not only the command in the foreground: a load
# generator (`ringlb bench`, dnsperf) ends early on SIGINT and exits
# normally, and bash would go on with the next step.
trap 'exit 130' INT

go build -o "$WORK/ringlb" ./cmd/ringlb
cat >"$WORK/edge.yaml" <<YAML
cluster: { name: edge-b, region: east, bind: 127.0.0.1:17946, profile: local }
edge: { listen: 127.0.0.1:17101, admin: 127.0.0.1:19101, advertise_url: http://127.0.0.1:17101, ownership: none }
YAML

for s in $SCENARIOS; do
  case $s in
    load-raw) args=(-sessions 1000 -participants 3 -rate 1 -size 256 -duration 30s -ramp 3s) ;;
    load-v1) args=(-mode v1 -sessions 1000 -participants 3 -rate 1 -size 256 -duration 30s -ramp 3s) ;;
    idle-raw) args=(-sessions 5000 -participants 2 -rate 0 -duration 5s -drain 100ms) ;;
    idle-v1) args=(-mode v1 -sessions 5000 -participants 2 -rate 0 -duration 5s -drain 100ms) ;;
    *) echo "unknown scenario $s" >&2; exit 1 ;;
  esac
  "$WORK/ringlb" edge -config "$WORK/edge.yaml" -log-level warn & edge=$!
  for _ in $(seq 50); do curl -sf http://127.0.0.1:19101/healthz >/dev/null && break; sleep 0.1; done
  echo "== $s (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  "$WORK/ringlb" bench ws -url ws://127.0.0.1:17101/ws -sources 127.0.0.1-127.0.0.8 -watch-pids "$edge" \
    -json "$OUT/$s.json" "${args[@]}" 2>/dev/null
  kill "$edge"; wait "$edge" 2>/dev/null || true; edge=
done
