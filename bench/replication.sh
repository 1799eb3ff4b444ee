#!/usr/bin/env bash
# What edge.replication costs: the same load through a ringlb balancer to two
# ringlb edges (one gossip cluster; each session's replica is the other edge)
# with replication off, async and sync. Scenarios:
#   a) 1000 sessions x 3 participants, ringlb.v1, 1 msg/s, 256 B, 30 s:
#      latency, the edges' CPU while msgs flowed, and their memory per
#      session (peak RSS of both edges during the run, less their RSS before
#      it: connections, histories and replica copies)
#   b) saturation: 50 sessions x 2, ringlb.v1, as fast as acks allow, 10 s
# A fresh cluster per run. The modes run ROUNDS times (default 3),
# interleaved, their order rotated each round, so a noisy minute on a shared
# machine lands on every mode alike. Prints a table of medians and each
# round's sync/off and async/off ratios, and writes every JSON result under
# $OUT (default bench/out/replication) as SCENARIO-MODE-rROUND.json.
#
#   bench/replication.sh             # SHORT=1: one round, 5 s and 3 s
set -euo pipefail
cd "$(dirname "$0")/.."
# Without curl or jq, the wait for the cluster reads an empty ring and
# says the cluster did not come up.
for c in curl jq python3; do command -v $c >/dev/null || { echo "needs $c: apt-get install -y curl jq python3" >&2; exit 1; }; done
OUT=${OUT:-bench/out/replication}
WORK=$(mktemp -d)
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
DUR=30s; SAT=10s; ROUNDS=${ROUNDS:-3}
if [ "${SHORT:-}" = 1 ]; then DUR=5s; SAT=3s; ROUNDS=1; fi
MODES=(off async sync)
SRC=127.0.0.1-127.0.0.8

pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap 'stop_all; rm -rf "$WORK"' EXIT
# Ctrl-C ends the run, not only the command in the foreground: a load
# generator (`ringlb bench`, dnsperf) ends early on SIGINT and exits
# normally, and bash would go on with the next step.
trap 'exit 130' INT

go build -o "$WORK/ringlb" ./cmd/ringlb
RINGLB=$WORK/ringlb

cat >"$WORK/bal.yaml" <<YAML
cluster: { name: bal-1, bind: 127.0.0.1:27940, profile: local }
balancer: { listen: 127.0.0.1:28080, admin: { listen: 127.0.0.1:29090 } }
YAML

rss_kib() { # summed VmRSS of the PIDs given
  local sum=0 p v
  for p in "$@"; do v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0); sum=$((sum + ${v:-0})); done
  echo "$sum"
}

start_cluster() { # mode: the balancer and edge-1, edge-2 replicating in mode
  local mode=$1 i
  for i in 1 2; do
    cat >"$WORK/edge$i.yaml" <<YAML
cluster: { name: edge-$i, bind: 127.0.0.1:2794$i, join: [127.0.0.1:27940], profile: local }
edge: { listen: 127.0.0.1:2710$i, admin: 127.0.0.1:2910$i, send_queue: 1024, replication: $mode }
YAML
  done
  "$RINGLB" balancer -config "$WORK/bal.yaml" -log-level warn & pids+=($!)
  "$RINGLB" edge -config "$WORK/edge1.yaml" -log-level warn & pids+=($!); EDGE1=$!
  "$RINGLB" edge -config "$WORK/edge2.yaml" -log-level warn & pids+=($!); EDGE2=$!
  for try in $(seq 200); do
    n=$(curl -sf http://127.0.0.1:29090/api/ring 2>/dev/null | jq '.members | length' 2>/dev/null || echo 0)
    [ "$n" = 2 ] && "$RINGLB" bench ws -url ws://127.0.0.1:28080/ws -mode v1 -sessions 4 -participants 2 -rate 10 -duration 200ms -drain 500ms >/dev/null 2>&1 && return 0
    [ "$try" = 200 ] && { echo "the cluster did not come up (ring has $n edges); ports in use by an earlier run?" >&2; exit 1; }
    sleep 0.1
  done
}

edge_metric() { # name: summed over both edges' /metrics
  local sum=0 p v
  for p in 29101 29102; do
    v=$(curl -sf "http://127.0.0.1:$p/metrics" | awk -v n="$1" '$1 == n {print $2}')
    sum=$(python3 -c "print(${sum} + ${v:-0})")
  done
  echo "$sum"
}

run() { # mode round
  local mode=$1 r=$2 base peak now sampler
  echo "== $mode (round $r of $ROUNDS; load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  start_cluster "$mode"
  base=$(rss_kib "$EDGE1" "$EDGE2")
  echo 0 >"$WORK/peak"
  ( peak=0; while :; do now=$(rss_kib "$EDGE1" "$EDGE2"); [ "$now" -gt "$peak" ] && { peak=$now; echo "$peak" >"$WORK/peak"; }; sleep 0.5; done ) & sampler=$!
  "$RINGLB" bench ws -url ws://127.0.0.1:28080/ws -mode v1 -sources $SRC -watch-pids "$EDGE1,$EDGE2" \
    -sessions 1000 -participants 3 -rate 1 -size 256 -duration $DUR -ramp 3s -json "$OUT/a-$mode-r$r.json" 2>/dev/null | sed "s/^/   /" >&2
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  peak=$(cat "$WORK/peak")
  jq --argjson base "$base" --argjson peak "$peak" --arg bytes "$(edge_metric ringlb_edge_replication_bytes_total)" \
    --arg fallbacks "$(edge_metric ringlb_edge_replication_fallbacks_total)" --arg copies "$(edge_metric ringlb_edge_replica_sessions)" \
    '. + {edges_rss_before_kib: $base, edges_rss_peak_kib: $peak, replication_bytes: ($bytes|tonumber), replication_fallbacks: ($fallbacks|tonumber), replica_sessions: ($copies|tonumber)}' \
    "$OUT/a-$mode-r$r.json" >"$WORK/a.json" && mv "$WORK/a.json" "$OUT/a-$mode-r$r.json"
  "$RINGLB" bench ws -url ws://127.0.0.1:28080/ws -mode v1 -sources $SRC -watch-pids "$EDGE1,$EDGE2" \
    -sessions 50 -participants 2 -saturate -size 256 -duration $SAT -json "$OUT/b-$mode-r$r.json" 2>/dev/null | sed "s/^/   /" >&2
  stop_all
}

for ((r = 1; r <= ROUNDS; r++)); do
  for ((i = 0; i < ${#MODES[@]}; i++)); do
    run "${MODES[(i + r - 1) % ${#MODES[@]}]}" "$r"
  done
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, sys, os, statistics
out, rounds = sys.argv[1], int(sys.argv[2])
def load(s, m, r):
    with open(os.path.join(out, f"{s}-{m}-r{r}.json")) as f: return json.load(f)
ms = lambda ns: ns / 1e6
med = statistics.median
R = range(1, rounds + 1)
modes = ["off", "async", "sync"]
a = {m: [load("a", m, r) for r in R] for m in modes}
b = {m: [load("b", m, r) for r in R] for m in modes}
p50 = {m: [ms(x["latency"]["P50"]) for x in a[m]] for m in modes}
p99 = {m: [ms(x["latency"]["P99"]) for x in a[m]] for m in modes}
cpu = {m: [x.get("watch_cpu_seconds", 0) for x in a[m]] for m in modes}

mem = {m: [(x["edges_rss_peak_kib"] - x["edges_rss_before_kib"]) / x["options"]["Sessions"] for x in a[m]] for m in modes}
sat = {m: [x["delivered_per_second"] for x in b[m]] for m in modes}
bcpu = {m: [x.get("watch_cpu_seconds", 0) for x in b[m]] for m in modes}
print(f"medians of {rounds} round(s); a) 1000 sessions x 3, 1 msg/s, 256 B; b) 50 x 2 saturating")
print(f"{'':6} | {'a) p50 ms':>9} {'p99 ms':>7} {'lost':>5} {'gaps':>5} {'cpu s':>6} {'KiB/session':>11} {'repl MiB':>8} {'fallbacks':>9} {'copies':>6} | {'b) msgs/s':>10} {'cpu s':>6}")
for m in modes:
    lost = sum(x["messages_lost"] for x in a[m]); gaps = sum(x.get("seq_gaps") or 0 for x in a[m])
    print(f"{m:6} | {med(p50[m]):9.3f} {med(p99[m]):7.3f} {lost:5d} {gaps:5d} {med(cpu[m]):6.2f} {med(mem[m]):11.1f} "
          f"{med(x['replication_bytes'] for x in a[m]) / 2**20:8.1f} {med(x['replication_fallbacks'] for x in a[m]):9.0f} {med(x['replica_sessions'] for x in a[m]):6.0f} | "
          f"{med(sat[m]):10.0f} {med(bcpu[m]):6.2f}")
def ratios(x, y): return " ".join(f"{p / q:.2f}" if q else "-" for p, q in zip(x, y))
for m in ("async", "sync"):
    print(f"{m}/off, round by round: a) p50 {ratios(p50[m], p50['off'])}; p99 {ratios(p99[m], p99['off'])}; cpu {ratios(cpu[m], cpu['off'])}; "
          f"memory/session {ratios(mem[m], mem['off'])}; b) msgs/s {ratios(sat[m], sat['off'])}")
    print(f"  medians: p99 {med(q / o for q, o in zip(p99[m], p99['off'])):.2f}x, memory {med(q / o for q, o in zip(mem[m], mem['off'])):.2f}x, "
          f"cpu {med(q / o for q, o in zip(cpu[m], cpu['off'])):.2f}x, saturation {med(q / o for q, o in zip(sat[m], sat['off'])):.2f}x")
PY
