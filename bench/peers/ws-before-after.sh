#!/usr/bin/env bash
# Compares two builds of ringlb's balancer head to head, in front of the same
# three backends (BACKEND: "edges", three ringlb edges, the default; or
# "relay", three bench/peers/wsrelay processes), in one run on one machine:
# the working tree ("after")
# against an earlier commit ("before", BASE, default the merge base with
# main), and the load straight to one backend ("direct"). Both builds route
# to the backends as static edges with the same configuration. The scenarios and the
# interleaved rounds are those of ws-compare.sh:
#   a) 1000 sessions x 3 participants, 1 msg/s, 256 B, 30 s
#   b) saturation: 50 sessions x 2, each sender keeps 16 messages in flight, 10 s
#   c) 8000 idle connections: proxy RSS per connection
# a) and b) run ROUNDS times (default 3), the three targets interleaved and
# their order rotated each round; c) once. Prints medians (added latency
# against the same round's direct run) and after/before ratios round by
# round; JSON for every cell under $OUT (default bench/out/before-after).
#
#   flock /work/notes/bench.lock bench/peers/ws-before-after.sh   # BASE=<commit> to choose; SHORT=1 for one quick round; BACKEND=relay
set -euo pipefail
cd "$(dirname "$0")/../.."

# The fixed ports below: edges, gossip, the two builds' fronts and admin.
. bench/peers/ports.sh
refuse_taken_ports "stop the earlier run holding it" 17111 17112 17113 17951 17952 17953 19111 19112 19113 17964 17965 18084 18085 19094 19095

BASE=${BASE:-$(git merge-base HEAD main)}
OUT=${OUT:-bench/out/before-after}
WORK=$(mktemp -d)
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
DUR=30s; SAT=10s; IDLE=8000; ROUNDS=${ROUNDS:-3}
if [ "${SHORT:-}" = 1 ]; then DUR=5s; SAT=3s; IDLE=2000; ROUNDS=1; fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
# Ctrl-C ends the run, not only the command in the foreground: a load
# generator (`ringlb bench`, dnsperf) ends early on SIGINT and exits
# normally, and bash would go on with the next step.
trap 'exit 130' INT

go build -o "$WORK/after" ./cmd/ringlb
go build -o "$WORK/wsrelay" ./bench/peers/wsrelay
BACKEND=${BACKEND:-edges}
mkdir "$WORK/base"
git archive "$BASE" | tar -x -C "$WORK/base"
(cd "$WORK/base" && go build -o "$WORK/before" ./cmd/ringlb)
echo "before: $(git log -1 --format='%h %s' "$BASE" | cut -c1-80)" >&2
echo "after:  the working tree at $(git log -1 --format=%h HEAD)" >&2

# Three edges (ownership: none, as in ws-compare.sh) in a gossip cluster of
# their own; each build routes to them as static edges, alone in its own
# cluster, so the two configurations are the same and never see each other.
for i in 1 2 3; do
  cat >"$WORK/edge$i.yaml" <<YAML
cluster: { name: edge-$i, bind: 127.0.0.1:1795$i, join: [127.0.0.1:17951], profile: local }
edge: { listen: 127.0.0.1:1711$i, admin: 127.0.0.1:1911$i, send_queue: 1024, ownership: none }
YAML
done
for b in before:4 after:5; do
  cat >"$WORK/${b%:*}.yaml" <<YAML
cluster: { name: bal-${b%:*}, bind: 127.0.0.1:1796${b#*:}, profile: local }
balancer:
  listen: 127.0.0.1:1808${b#*:}
  admin: { listen: 127.0.0.1:1909${b#*:} }
  edges:
    - { name: edge-1, url: "http://127.0.0.1:17111" }
    - { name: edge-2, url: "http://127.0.0.1:17112" }
    - { name: edge-3, url: "http://127.0.0.1:17113" }
YAML
done
"$WORK/after" balancer -config "$WORK/after.yaml" -log-level warn & pids+=($!); AFTER_PID=$!
"$WORK/before" balancer -config "$WORK/before.yaml" -log-level warn & pids+=($!); BEFORE_PID=$!
case $BACKEND in
edges) for i in 1 2 3; do "$WORK/after" edge -config "$WORK/edge$i.yaml" -log-level warn & pids+=($!); done ;;
relay) for i in 1 2 3; do "$WORK/wsrelay" -name relay-$i -listen 127.0.0.1:1711$i >/dev/null & pids+=($!); done ;;
*) echo "BACKEND must be edges or relay, got $BACKEND" >&2; exit 1 ;;
esac
echo "backend: $BACKEND; machine before the run: load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

for port in 18084 18085 17111; do
  for try in $(seq 100); do
    if "$WORK/after" bench ws -url ws://127.0.0.1:$port/ws -sessions 1 -participants 2 -rate 10 -duration 200ms -drain 200ms >/dev/null 2>&1; then break; fi
    if [ "$try" = 100 ]; then echo "nothing answers a WebSocket on 127.0.0.1:$port after 10 s" >&2; exit 1; fi
    sleep 0.1
  done
done

declare -A URL=( [direct]=ws://127.0.0.1:17111/ws [before]=ws://127.0.0.1:18084/ws [after]=ws://127.0.0.1:18085/ws )
declare -A WATCH=( [direct]= [before]=$BEFORE_PID [after]=$AFTER_PID )
TARGETS=(direct before after)
SRC=127.0.0.1-127.0.0.8
run() {
  local name=$1 scen=$2 round=$3 of=$4; shift 4
  echo "== $scen via $name (round $round of $of)" >&2
  "$WORK/after" bench ws -url "${URL[$name]}" -sources $SRC ${WATCH[$name]:+-watch-pids ${WATCH[$name]}} \
    -json "$OUT/$scen-$name-r$round.json" "$@" 2>/dev/null | sed "s/^/   /" >&2
}
rounds() {
  local scen=$1 n=$2; shift 2
  for ((r = 1; r <= n; r++)); do
    for ((i = 0; i < ${#TARGETS[@]}; i++)); do
      run "${TARGETS[(i + r - 1) % ${#TARGETS[@]}]}" "$scen" "$r" "$n" "$@"
    done
  done
}
rounds a "$ROUNDS" -sessions 1000 -participants 3 -rate 1 -size 256 -duration $DUR -ramp 3s
rounds b "$ROUNDS" -sessions 50 -participants 2 -saturate -window 16 -size 256 -duration $SAT
rounds c 1 -sessions $((IDLE/2)) -participants 2 -rate 0 -duration 3s -drain 100ms

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, sys, os, statistics
out, rounds = sys.argv[1], int(sys.argv[2])
def load(s, t, r):
    with open(os.path.join(out, f"{s}-{t}-r{r}.json")) as f: return json.load(f)
ms = lambda ns: ns / 1e6
med = statistics.median
R = range(1, rounds + 1)
T = ["direct", "before", "after"]
lat = {t: [load("a", t, r)["latency"] for r in R] for t in T}
def added(t, q): return [ms(lat[t][i][q] - lat["direct"][i][q]) for i in range(rounds)]
sat = {t: [load("b", t, r)["delivered_per_second"] for r in R] for t in T}
cpu = {t: [load("a", t, r).get("watch_cpu_seconds", 0) for r in R] for t in T}
bcpu = {t: [load("b", t, r).get("watch_cpu_seconds", 0) for r in R] for t in T}
print(f"medians of {rounds} round(s)")
print(f"{'':8} | {'a) p50 ms':>9} {'p99 ms':>7} {'+p50':>6} {'+p99':>6} {'lost':>5} {'cpu s':>6} | {'b) msgs/s':>10} {'x direct':>8} {'cpu s':>6} | {'c) KiB/conn':>11} {'conns':>6}")
for t in T:
    c = load("c", t, 1)
    lost = sum(load("a", t, r)["messages_lost"] for r in R)
    rss = c.get("watch_rss_per_connection_bytes", 0) / 1024
    print(f"{t:8} | {med(ms(l['P50']) for l in lat[t]):9.3f} {med(ms(l['P99']) for l in lat[t]):7.3f} {med(added(t, 'P50')):6.3f} {med(added(t, 'P99')):6.3f} {lost:5d} {med(cpu[t]):6.2f} | "
          f"{med(sat[t]):10.0f} {med(s / d for s, d in zip(sat[t], sat['direct'])):8.2f} {med(bcpu[t]):6.2f} | {rss:11.2f} {c['connections_ok']:6d}")
def ratios(a, b): return " ".join(f"{x / y:.2f}" if y else "-" for x, y in zip(a, b))
print("after / before, round by round:")
print(f"  a) added p50 {ratios(added('after', 'P50'), added('before', 'P50'))}; added p99 {ratios(added('after', 'P99'), added('before', 'P99'))}; cpu {ratios(cpu['after'], cpu['before'])}")
print(f"  b) msgs/s {ratios(sat['after'], sat['before'])}; cpu {ratios(bcpu['after'], bcpu['before'])}")
ra, rb = (load("c", t, 1).get("watch_rss_per_connection_bytes", 0) for t in ("after", "before"))
print(f"  c) RSS per idle connection {ratios([ra], [rb])}")
PY
