#!/usr/bin/env bash
# A rolling upgrade mixes releases: for a while the balancers and edges of
# one cluster run the previous release and this tree side by side, and every
# wire between them (gossip metadata, signed peer requests, signed skips,
# replication streams, fences, hand-offs) must work both ways. This runs the
# mixes a rolling upgrade passes through under `ringlb bench chaos` (one
# balancer, three edges, sync replication, 60 sessions x 2; edge-1 drained,
# its sessions handed off, then edge-2 killed with -9):
#
#   old-bal     previous balancer, edges of this tree
#   new-bal     balancer of this tree, previous edges
#   mixed-old   balancer of this tree; edges new (drained: hands off to the
#               previous release), previous (killed), previous
#   mixed-new   balancer of this tree; edges previous (drained: hands off
#               to this tree's edge-2 and the previous edge-3), new
#               (killed), previous
#
# and prints, for each, what the chaos run saw (split sessions, lost msgs,
# resets, resume p50) and how many replication streams ended on a bad batch
# or record (a wire the two releases read differently). Exits 1 if any mix
# split, lost, reset or broke a stream.
#
#   bench/mixed-release.sh OLD_REV     # OLD_REV: a git revision (the previous release's tag)
#
# OLD_REV is built from this repository's history (a clone with it: a
# shallow clone has none). Ports 27xxx-29xxx on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD_REV=${1:?usage: bench/mixed-release.sh OLD_REV (a git revision of the previous release)}
WORK=$(mktemp -d)
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
cleanup() { stop_all; git worktree remove --force "$WORK/old-src" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
# Ctrl-C ends the run, not only the command in the foreground: a load
# generator (`ringlb bench`, dnsperf) ends early on SIGINT and exits
# normally, and bash would go on with the next step.
trap 'exit 130' INT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "building $OLD_REV and this tree..." >&2
git worktree add --detach "$WORK/old-src" "$OLD_REV" >/dev/null
(cd "$WORK/old-src" && go build -o "$WORK/ringlb-old" ./cmd/ringlb)
go build -o "$WORK/ringlb-new" ./cmd/ringlb
OLD=$WORK/ringlb-old NEW=$WORK/ringlb-new
"$NEW" keygen -o "$WORK/key" >/dev/null

write_configs() { # $1: run directory
  local d=$1
  cat >"$d/bal.yaml" <<YAML
cluster: { name: bal-1, region: east, bind: 127.0.0.1:27950, secret_key_file: $WORK/key, profile: local, state_dir: $d/st-bal }
balancer: { listen: 127.0.0.1:27080, admin: 127.0.0.1:29080 }
YAML
  for i in 1 2 3; do
    cat >"$d/e$i.yaml" <<YAML
cluster: { name: edge-$i, region: east, bind: 127.0.0.1:2795$i, join: [127.0.0.1:27950], secret_key_file: $WORK/key, profile: local, state_dir: $d/st-e$i }
edge: { listen: 127.0.0.1:2710$i, admin: 127.0.0.1:2910$i, advertise_url: "http://127.0.0.1:2710$i", drain_timeout: 10s, replication: sync }
YAML
  done
}

# wait_http URL: until it answers (30 s at most).
wait_http() {
  for _ in $(seq 300); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "no answer from $1" >&2; return 1
}

# run LABEL BALANCER EDGE1 EDGE2 EDGE3 (edge-1 is drained, edge-2 killed)
failed=0
run() {
  local label=$1 bal=$2 d=$WORK/$1
  local edges=("" "$3" "$4" "$5")
  mkdir -p "$d"; write_configs "$d"
  "$bal" balancer -config "$d/bal.yaml" >"$d/bal.log" 2>&1 & pids+=($!)
  wait_http http://127.0.0.1:29080/metrics
  local e2
  for i in 1 2 3; do
    "${edges[$i]}" edge -config "$d/e$i.yaml" >"$d/e$i.log" 2>&1 & pids+=($!)
    [ "$i" = 2 ] && e2=$!
    wait_http "http://127.0.0.1:2910$i/metrics"
  done
  echo "$label: chaos (balancer $(basename "$bal"), edges $(basename "$3") $(basename "$4") $(basename "$5"))..." >&2
  "$NEW" bench chaos -url ws://127.0.0.1:27080/ws -admin http://127.0.0.1:29080 -sessions 60 -participants 2 \
    -hold 4s -drain edge-1 -kill "kill -9 $e2" -kill-edge edge-2 -duration 120s -json "$d/chaos.json" >"$d/chaos.log" 2>&1 || true
  stop_all
  local broke
  broke=$(cat "$d"/e*.log | grep -c 'replication stream ended: bad \(batch\|record\)' || true)
  # What edge-1's drain handed on (its log's JSON or text line).
  handed=$(grep -o '"drain: sessions handed on".*"sessions":[0-9]*\|drain: sessions handed on.*sessions=[0-9]*' "$d/e1.log" | grep -o '[0-9]*$' | tail -1 || true)
  python3 - "$label" "$d/chaos.json" "$broke" "${handed:-0}" <<'PY' || failed=1
import json, sys
label, path, broke, handed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
try:
    r = json.load(open(path))
except (OSError, ValueError) as e:
    print(f"{label:10s} no result ({e})"); sys.exit(1)
p50 = max((p.get("resume") or {}).get("P50", 0) for p in r["phases"]) / 1e6
print(f"{label:10s} split {r['split_sessions']}  lost {r['messages_lost']}  lost-to-reset {r['messages_lost_to_reset']}"
      f"  resets {r['resets']}  duplicated {r['messages_duplicated']}  resume p50 {p50:.0f} ms  streams broken {broke}"
      f"  handed off {handed}")
# A drain that handed nothing on checked no hand-off between the releases.
bad = r["split_sessions"] or r["messages_lost"] or r["messages_lost_to_reset"] or r["resets"] or r["messages_duplicated"] or broke or not handed
sys.exit(1 if bad else 0)
PY
}

run old-bal   "$OLD" "$NEW" "$NEW" "$NEW"
run new-bal   "$NEW" "$OLD" "$OLD" "$OLD"
run mixed-old "$NEW" "$NEW" "$OLD" "$OLD"
run mixed-new "$NEW" "$OLD" "$NEW" "$OLD"
exit $failed
