#!/usr/bin/env bash
# Upgrading a proxy under live WebSockets: ringlb (SIGUSR2 via ringlb upgrade),
# HAProxy (a new process with -sf OLDPID) and nginx (nginx -s reload), each in
# front of the same three ringlb edges, in one run on one machine.
#
# For each target: 2500 sessions x 2 participants (5000 tunnels), 1 msg/s,
# 256 B, 45 s; three reloads at 12 s, 20 s and 28 s; at 35 s the processes of
# the target are counted and the memory held by old processes (those a reload
# left behind, still carrying tunnels) is summed. Then, from the load's
# result: tunnels closed before the end, messages lost.
# For ringlb also: time from the signal to the old process's exit for each
# upgrade, the new process's RSS after it, and the p99 latency of a small
# probe (20 x 2 sessions, 20 msg/s) over 4 s without an upgrade and over 4 s
# with one in the middle.
#
#   apt-get install -y haproxy nginx-light   # once
#   bench/peers/upgrade-compare.sh           # SHORT=1: 1000 tunnels, 25 s
#   TARGETS="ringlb haproxy" bench/peers/upgrade-compare.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v haproxy >/dev/null && command -v nginx >/dev/null || {
  echo "needs haproxy and nginx: apt-get install -y haproxy nginx-light" >&2; exit 1; }
# The fixed ports below: edges, gossip, the three fronts, admin.
. bench/peers/ports.sh
refuse_taken_ports "stop the earlier run holding it" 27101 27102 27103 27941 27942 27943 27940 28080 28081 28082 29090 29101 29102 29103

OUT=${OUT:-bench/out/upgrade}
WORK=$(mktemp -d)
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
SESSIONS=2500; DUR=45; AT=(12 20 28); COUNT_AT=35
if [ "${SHORT:-}" = 1 ]; then SESSIONS=500; DUR=25; AT=(6 10 14); COUNT_AT=18; fi
SRC=127.0.0.1-127.0.0.16

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -f "balancer -config $WORK/bal.yaml" 2>/dev/null || true
  [ -f "$WORK/haproxy.pid" ] && pkill -F "$WORK/haproxy.pid" 2>/dev/null || true
  pkill -f "haproxy -D -p $WORK/haproxy.pid" 2>/dev/null || true
  pkill -f "nginx -c $WORK/nginx.conf" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
# Ctrl-C ends the run, not only the command in the foreground: a load
# generator (`ringlb bench`, dnsperf) ends early on SIGINT and exits
# normally, and bash would go on with the next step.
trap 'exit 130' INT

go build -o "$WORK/ringlb" ./cmd/ringlb
RINGLB=$WORK/ringlb

for i in 1 2 3; do
  cat >"$WORK/edge$i.yaml" <<YAML
cluster: { name: edge-$i, bind: 127.0.0.1:2794$i, join: [127.0.0.1:27940], profile: local }
edge: { listen: 127.0.0.1:2710$i, admin: 127.0.0.1:2910$i, send_queue: 1024, ownership: none }
YAML
done
cat >"$WORK/bal.yaml" <<YAML
cluster: { name: bal-1, bind: 127.0.0.1:27940, profile: local }
balancer: { listen: 127.0.0.1:28080, admin: { listen: 127.0.0.1:29090 } }
YAML
"$RINGLB" balancer -config "$WORK/bal.yaml" -upgrade-dir "$WORK/run" -log-level warn & pids+=($!)
for i in 1 2 3; do "$RINGLB" edge -config "$WORK/edge$i.yaml" -log-level warn & pids+=($!); done

cat >"$WORK/haproxy.cfg" <<CFG
global
  maxconn 9000
  nbthread 2
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout tunnel 10m
frontend fe
  bind 127.0.0.1:28081
  default_backend edges
backend edges
  balance hdr(ctstickiness)
  hash-type consistent
  server edge-1 127.0.0.1:27101
  server edge-2 127.0.0.1:27102
  server edge-3 127.0.0.1:27103
CFG
haproxy -D -p "$WORK/haproxy.pid" -f "$WORK/haproxy.cfg"

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx.conf" <<CFG
worker_processes 2;
worker_rlimit_nofile 19000;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log error;
events { worker_connections 9000; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  upstream edges {
    hash \$http_ctstickiness consistent;
    server 127.0.0.1:27101; server 127.0.0.1:27102; server 127.0.0.1:27103;
  }
  server {
    listen 127.0.0.1:28082;
    location / {
      proxy_pass http://edges;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 600s;
      proxy_buffering off;
    }
  }
}
CFG
nginx -c "$WORK/nginx.conf" -p "$WORK"

declare -A URL=( [ringlb]=ws://127.0.0.1:28080/ws [haproxy]=ws://127.0.0.1:28081/ws [nginx]=ws://127.0.0.1:28082/ws )
for port in 28080 28081 28082; do
  for try in $(seq 100); do
    if "$RINGLB" bench ws -url ws://127.0.0.1:$port/ws -sessions 1 -participants 2 -rate 10 -duration 200ms -drain 200ms >/dev/null 2>&1; then break; fi
    [ "$try" = 100 ] && { echo "nothing answers a WebSocket on 127.0.0.1:$port after 10 s (a port in use by an earlier run?)" >&2; exit 1; }
    sleep 0.1
  done
done

# ringlb_pid: the balancer serving now (the newest: an old one exits).
ringlb_pid() { pgrep -n -f "balancer -config $WORK/bal.yaml"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# alive PID: running, not a zombie.
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
ms_now() { date +%s%3N; }

# procs TARGET: "COUNT OLD_RSS_KIB": the target's processes, and the memory
# of those a reload left behind.
procs() {
  case $1 in
  ringlb) local cur; cur=$(ringlb_pid)
          local n=0 old=0
          for p in $(pgrep -f "balancer -config $WORK/bal.yaml" || true); do
            alive "$p" || continue
            n=$((n + 1)); [ "$p" = "$cur" ] || old=$((old + $(rss_kib "$p")))
          done
          echo "$n $old" ;;
  haproxy) local cur; cur=$(cat "$WORK/haproxy.pid")
           local all; all=$(pgrep -x haproxy || true)
           local n=0 old=0
           for p in $all; do n=$((n + 1)); [ "$p" = "$cur" ] || old=$((old + $(rss_kib "$p"))); done
           echo "$n $old" ;;
  nginx) local n=0 old=0
         for p in $(pgrep -f "nginx: (master|worker)" || true); do
           n=$((n + 1))
           grep -q "shutting down" "/proc/$p/cmdline" 2>/dev/null && old=$((old + $(rss_kib "$p")))
         done
         echo "$n $old" ;;
  esac
}

UPGRADE_LOG=$WORK/upgrades.txt
: >"$UPGRADE_LOG"
reload() { # TARGET
  case $1 in
  ringlb) local old new began ended out
          old=$(ringlb_pid); began=$(ms_now)
          out=$("$RINGLB" upgrade -pid "$old" -upgrade-dir "$WORK/run")
          while alive "$old"; do sleep 0.001; done
          ended=$(ms_now)
          new=$(sed -n 's/.*to pid \([0-9]*\).*/\1/p' <<<"$out")
          sleep 1
          echo "$old $new $((ended - began)) $(rss_kib "$new")" >>"$UPGRADE_LOG" ;;
  haproxy) haproxy -D -p "$WORK/haproxy.pid" -f "$WORK/haproxy.cfg" -sf "$(cat "$WORK/haproxy.pid")" ;;
  nginx) nginx -s reload -c "$WORK/nginx.conf" -p "$WORK" ;;
  esac
}

read -r -a TARGETS <<<"${TARGETS:-ringlb haproxy nginx}"
declare -A COUNTED
for t in "${TARGETS[@]}"; do
  echo "== $t: $((SESSIONS * 2)) tunnels, reloads at ${AT[*]} s" >&2
  "$RINGLB" bench ws -url "${URL[$t]}" -sources $SRC -sessions $SESSIONS -participants 2 -rate 1 -size 256 \
    -duration ${DUR}s -ramp 5s -drain 3s -json "$OUT/upgrade-$t.json" 2>/dev/null | sed "s/^/   /" >&2 &
  load=$!
  start=$(date +%s)
  for at in "${AT[@]}"; do
    sleep $(( at - ($(date +%s) - start) ))
    reload "$t"
    echo "   reloaded at $(( $(date +%s) - start )) s" >&2
  done
  sleep $(( COUNT_AT - ($(date +%s) - start) ))
  COUNTED[$t]=$(procs "$t")
  echo "   at ${COUNT_AT} s: processes, old processes' KiB: ${COUNTED[$t]}" >&2
  wait $load || true
done

# The ringlb latency probe: 4 s with no upgrade, 4 s with one at 2 s.
PROBE=()
if [[ " ${TARGETS[*]} " == *" ringlb "* ]]; then
  "$RINGLB" bench ws -url "${URL[ringlb]}" -sessions 20 -participants 2 -rate 20 -size 256 -duration 4s -drain 1s \
    -json "$OUT/probe-before.json" >/dev/null 2>&1
  "$RINGLB" bench ws -url "${URL[ringlb]}" -sessions 20 -participants 2 -rate 20 -size 256 -duration 4s -drain 1s \
    -json "$OUT/probe-during.json" >/dev/null 2>&1 &
  probe=$!
  sleep 2.5
  reload ringlb
  wait $probe || true
  PROBE=("$OUT/probe-before.json" "$OUT/probe-during.json")
fi

python3 - "$OUT" "$UPGRADE_LOG" "${PROBE[@]}" <<PY
import json, sys, os
out, log = sys.argv[1], sys.argv[2]
counted = {$(for t in "${TARGETS[@]}"; do printf '"%s": "%s", ' "$t" "${COUNTED[$t]}"; done)}
print(f"{'target':8} | {'tunnels':>7} {'closed':>6} {'lost msgs':>9} | {'procs after 3 reloads':>21} {'old procs KiB':>13}")
for t, c in counted.items():
    r = json.load(open(os.path.join(out, f"upgrade-{t}.json")))
    n, old = c.split()
    print(f"{t:8} | {r['connections_ok']:7d} {r['connections_closed_early']:6d} {r['messages_lost']:9d} | {n:>21} {old:>13}")
ups = [l.split() for l in open(log) if l.strip()]
if ups:
    print("ringlb upgrades (old pid -> new pid: signal to old exit, new RSS):")
    for old, new, ms, rss in ups:
        print(f"  {old} -> {new}: {ms} ms, {rss} KiB")
if len(sys.argv) > 4:
    b, d = (json.load(open(p))["latency"] for p in sys.argv[3:5])
    print(f"ringlb probe p99: {b['P99']/1e6:.3f} ms over 4 s without an upgrade, {d['P99']/1e6:.3f} ms over 4 s with one (max {d['Max']/1e6:.3f} ms)")
PY
