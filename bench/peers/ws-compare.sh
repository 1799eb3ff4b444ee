#!/usr/bin/env bash
# Compares ringlb's balancer with HAProxy and nginx (Debian's packages) in
# front of the same three backends, and with no proxy at all, in one run on
# one machine. The backends (BACKEND, default "relay edges": both, one after
# the other):
#   relay  three bench/peers/wsrelay processes: a small third-party Go
#          WebSocket relay, as a user who brings their own backends has
#   edges  three ringlb edges (ownership: none: the proxies hash keys their
#          own way and do not follow an edge's 421)
# ringlb routes to them as static edges (balancer.edges), HAProxy with
# `balance hdr(ctstickiness)` + `hash-type consistent` (nbthread 2), nginx with
# `hash $http_ctstickiness consistent` (2 workers); "direct" is the load
# straight to the first backend. Scenarios:
#   a) 1000 sessions x 3 participants, 1 msg/s, 256 B, 30 s
#   b) saturation: 50 sessions x 2, each sender keeps 16 messages in flight, 10 s
#   c) 8000 idle connections: proxy RSS per connection
#   d) (only when asked: SCENARIOS=d) one hop's latency on a quiet path:
#      20 sessions x 2, 10 msg/s, 256 B, 20 s
#   e) (only when asked: SCENARIOS=e) one hop, nothing else going on:
#      1 session x 2, 500 msg/s, 256 B, 10 s
# a) and b) run ROUNDS times (default 3), the targets interleaved and their
# order rotated each round, so that a noisy minute on a shared machine lands
# on every target alike; c) runs once. ringlb's and HAProxy's CPU (and
# nginx's) are watched with -watch-pids. Prints, per backend, one table of
# medians over the rounds (added latency is taken against the same round's
# direct run), then each round's ringlb/HAProxy ratios and the machine's load
# average before each round, and writes every JSON result under
# $OUT/BACKEND (default bench/out/ws) as SCENARIO-TARGET-rROUND.json.
#
# CPU_BUDGET=F (say 0.25) caps each front at F of a CPU, the same for all,
# with a CFS quota on a cgroup of its own (cgroup v2 cpu.max, or v1's cpu
# controller; needs root): saturation then measures what a front carries
# on a given CPU, as on a balancer whose load and backends run on other
# machines, instead of a share of two cores it splits with them. Go's
# runtime sees the quota as a container's (GOMAXPROCS follows it, at
# least 2); HAPROXY_THREADS=N sets HAProxy's nbthread (default 2).
#
#   apt-get install -y haproxy nginx-light   # once
#   flock /work/notes/bench.lock bench/peers/ws-compare.sh   # SHORT=1: one quick round
#   BACKEND=relay TARGETS="ringlb haproxy" SCENARIOS=b bench/peers/ws-compare.sh   # a subset, no table
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v haproxy >/dev/null && command -v nginx >/dev/null || {
  echo "needs haproxy and nginx: apt-get install -y haproxy nginx-light" >&2; exit 1; }

# The fixed ports of start(): backends, fronts, admin and gossip.
. bench/peers/ports.sh
refuse_taken_ports "stop the earlier run holding it" 17101 17102 17103 18080 18081 18082 19090 19101 19102 19103 17940 17941 17942 17943
OUT_ROOT=${OUT:-bench/out/ws}
WORK=$(mktemp -d)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
DUR=30s; SAT=10s; IDLE=8000; ROUNDS=${ROUNDS:-3}; WINDOW=${WINDOW:-16}
if [ "${SHORT:-}" = 1 ]; then DUR=5s; SAT=3s; IDLE=2000; ROUNDS=1; fi
read -r -a BACKENDS <<<"${BACKEND:-relay edges}"
SCENARIOS=${SCENARIOS:-abc}
SRC=127.0.0.1-127.0.0.8

pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
cleanup() { stop_all; unbudget; rm -rf "$WORK"; }

# budget: each front into a cgroup capped at CPU_BUDGET of a CPU (a 10 ms
# period, so a capped front runs in short slices, not 100 ms bursts).
CGROUPS=()
budget() {
  local root t dir p quota=$(python3 -c "print(int(float('$CPU_BUDGET') * 10000))")
  if [ -w /sys/fs/cgroup/cgroup.subtree_control ] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    root=/sys/fs/cgroup; grep -qw cpu $root/cgroup.subtree_control || echo +cpu >$root/cgroup.subtree_control
  elif [ -w /sys/fs/cgroup/cpu ]; then root=/sys/fs/cgroup/cpu
  else echo "CPU_BUDGET needs a writable cgroup cpu controller (run as root)" >&2; exit 1; fi
  for t in ringlb haproxy nginx; do
    [ -n "${WATCH[$t]:-}" ] || continue
    dir=$root/ringlb-bench-$t; mkdir -p "$dir"; CGROUPS+=("$dir")
    if [ -e "$dir/cpu.max" ]; then echo "$quota 10000" >"$dir/cpu.max"
    else echo 10000 >"$dir/cpu.cfs_period_us"; echo "$quota" >"$dir/cpu.cfs_quota_us"; fi
    for p in ${WATCH[$t]//,/ }; do echo "$p" >"$dir/cgroup.procs"; done
  done
  echo "fronts capped at $CPU_BUDGET of a CPU each (${CGROUPS[*]})" >&2
}
unbudget() { local d; for d in "${CGROUPS[@]}"; do rmdir "$d" 2>/dev/null || true; done; CGROUPS=(); }
trap cleanup EXIT
# Ctrl-C ends the run, not only the command in the foreground: a load
# generator (`ringlb bench`, dnsperf) ends early on SIGINT and exits
# normally, and bash would go on with the next step.
trap 'exit 130' INT

go build -o "$WORK/ringlb" ./cmd/ringlb
go build -o "$WORK/wsrelay" ./bench/peers/wsrelay
RINGLB=$WORK/ringlb

# busy: the machine's CPU use (of 100 % per core) over one second, before
# anything of this run starts: what others leave.
busy() {
  local a b
  read -r -a a < <(grep '^cpu ' /proc/stat); sleep 1; read -r -a b < <(grep '^cpu ' /proc/stat)
  local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  echo "$(( 100 * (total - idle) / (total ? total : 1) ))% of $(nproc) cores busy"
}

# wait_ws PORT: until a WebSocket through 127.0.0.1:PORT reaches a backend.
wait_ws() {
  local try
  for try in $(seq 100); do
    if "$RINGLB" bench ws -url "ws://127.0.0.1:$1/ws" -sessions 1 -participants 2 -rate 10 -duration 200ms -drain 200ms >/dev/null 2>&1; then return; fi
    sleep 0.1
  done
  echo "nothing answers a WebSocket on 127.0.0.1:$1 after 100 tries (about a minute); see the errors above (a port in use by an earlier run?)" >&2
  exit 1
}

# start BACKEND: the three backends on 127.0.0.1:17101-17103, then the
# three fronts in front of them; sets URL and WATCH.
start() {
  local backend=$1 i
  case $backend in
  relay)
    for i in 1 2 3; do "$WORK/wsrelay" -name relay-$i -listen 127.0.0.1:1710$i >/dev/null & pids+=($!); done ;;
  edges)
    # Their own gossip cluster; ringlb's balancer is not in it.
    for i in 1 2 3; do
      cat >"$WORK/edge$i.yaml" <<YAML
cluster: { name: edge-$i, bind: 127.0.0.1:1794$i, join: [127.0.0.1:17941], profile: local }
edge: { listen: 127.0.0.1:1710$i, admin: 127.0.0.1:1910$i, send_queue: 1024, ownership: none }
YAML
      "$RINGLB" edge -config "$WORK/edge$i.yaml" -log-level warn & pids+=($!)
    done ;;
  *) echo "BACKEND must be relay or edges, got $backend" >&2; exit 1 ;;
  esac

  # RINGLB_PROCS=N runs the ringlb balancer with GOMAXPROCS=N.
  cat >"$WORK/bal.yaml" <<YAML
cluster: { name: bal-1, bind: 127.0.0.1:17940, profile: local }
balancer:
  listen: 127.0.0.1:18080
  admin: { listen: 127.0.0.1:19090 }
  edges:
    - { name: be-1, url: "http://127.0.0.1:17101" }
    - { name: be-2, url: "http://127.0.0.1:17102" }
    - { name: be-3, url: "http://127.0.0.1:17103" }
YAML
  GOMAXPROCS=${RINGLB_PROCS:-} "$RINGLB" balancer -config "$WORK/bal.yaml" -log-level warn & pids+=($!); RINGLB_PID=$!

  cat >"$WORK/haproxy.cfg" <<CFG
global
  maxconn 9000
  nbthread ${HAPROXY_THREADS:-2}
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout tunnel 10m
frontend fe
  bind 127.0.0.1:18081
  default_backend edges
backend edges
  balance hdr(ctstickiness)
  hash-type consistent
  server be-1 127.0.0.1:17101
  server be-2 127.0.0.1:17102
  server be-3 127.0.0.1:17103
CFG
  haproxy -db -f "$WORK/haproxy.cfg" & pids+=($!); HAPROXY_PID=$!

  mkdir -p "$WORK/nginx"
  cat >"$WORK/nginx.conf" <<CFG
worker_processes 2;
worker_rlimit_nofile 19000;
pid $WORK/nginx.pid;
error_log stderr error;
daemon off;
events { worker_connections 9000; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  upstream backends {
    hash \$http_ctstickiness consistent;
    server 127.0.0.1:17101; server 127.0.0.1:17102; server 127.0.0.1:17103;
  }
  server {
    listen 127.0.0.1:18082;
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 600s;
      proxy_buffering off;
    }
  }
}
CFG
  nginx -c "$WORK/nginx.conf" -p "$WORK" & pids+=($!); local nginx_master=$!

  for port in 17101 17102 17103 18080 18081 18082; do wait_ws $port; done
  local workers; workers=$(pgrep -d, -P "$nginx_master" nginx || true)
  URL=( [direct]=ws://127.0.0.1:17101/ws [ringlb]=ws://127.0.0.1:18080/ws [haproxy]=ws://127.0.0.1:18081/ws [nginx]=ws://127.0.0.1:18082/ws )
  WATCH=( [direct]= [ringlb]=$RINGLB_PID [haproxy]=$HAPROXY_PID [nginx]=$nginx_master${workers:+,$workers} )
}

declare -A URL WATCH
read -r -a TARGETS <<<"${TARGETS:-direct ringlb haproxy nginx}"

run() { # name scenario round rounds args...
  local name=$1 scen=$2 round=$3 of=$4; shift 4
  echo "== $BACKEND_NOW: $scen via $name (round $round of $of)" >&2
  "$RINGLB" bench ws -url "${URL[$name]}" -sources $SRC ${WATCH[$name]:+-watch-pids ${WATCH[$name]}} \
    -json "$OUT/$scen-$name-r$round.json" "$@" 2>/dev/null | sed "s/^/   /" >&2
}
# rounds SCENARIO ROUNDS args...: every target once per round, the order
# rotated by one each round; the load average before each round is kept.
rounds() {
  local scen=$1 n=$2; shift 2
  for ((r = 1; r <= n; r++)); do
    cut -d' ' -f1-3 /proc/loadavg >"$OUT/load-$scen-r$r.txt"
    for ((i = 0; i < ${#TARGETS[@]}; i++)); do
      run "${TARGETS[(i + r - 1) % ${#TARGETS[@]}]}" "$scen" "$r" "$n" "$@"
    done
  done
}

for BACKEND_NOW in "${BACKENDS[@]}"; do
  OUT=$OUT_ROOT/$BACKEND_NOW
  rm -rf "$OUT"; mkdir -p "$OUT"
  echo "before starting ($BACKEND_NOW): $(busy); load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/machine.txt" >&2
  start "$BACKEND_NOW"
  [ -z "${CPU_BUDGET:-}" ] || budget
  [[ $SCENARIOS == *a* ]] && rounds a "$ROUNDS" -sessions 1000 -participants 3 -rate 1 -size 256 -duration $DUR -ramp 3s
  [[ $SCENARIOS == *b* ]] && rounds b "$ROUNDS" -sessions 50 -participants 2 -saturate -window "$WINDOW" -size 256 -duration $SAT
  [[ $SCENARIOS == *d* ]] && rounds d "$ROUNDS" -sessions 20 -participants 2 -rate 10 -size 256 -duration 20s
  [[ $SCENARIOS == *e* ]] && rounds e "$ROUNDS" -sessions 1 -participants 2 -rate 500 -size 256 -duration 10s
  [[ $SCENARIOS == *c* ]] && rounds c 1 -sessions $((IDLE/2)) -participants 2 -rate 0 -duration 3s -drain 100ms
  stop_all
  unbudget
  if [[ $SCENARIOS == *b* && " ${TARGETS[*]} " == *" ringlb "* && " ${TARGETS[*]} " == *" haproxy "* ]]; then
    python3 - "$OUT" "$ROUNDS" "${CPU_BUDGET:-}" <<'PY'
import json, os, statistics, sys
out, rounds, budget = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(t, r):
    with open(os.path.join(out, f"b-{t}-r{r}.json")) as f: return json.load(f)
rate, per = [], []
for r in range(1, rounds + 1):
    x, y = load("ringlb", r), load("haproxy", r)
    rate.append(x["delivered_per_second"] / y["delivered_per_second"])
    cpu = lambda c: c.get("watch_cpu_seconds", 0) / max(c["delivered_per_second"], 1)
    per.append(cpu(x) / cpu(y) if cpu(y) else float("nan"))
cap = f", each front capped at {budget} of a CPU" if budget else ""
print(f"b) ringlb / HAProxy{cap}: msgs/s {' '.join(f'{v:.2f}' for v in rate)} (median {statistics.median(rate):.2f}); "
      f"CPU per message {' '.join(f'{v:.2f}' for v in per)} (median {statistics.median(per):.2f})")
PY
  fi
  [ "$SCENARIOS" = abc ] || continue
  [ "${TARGETS[*]}" = "direct ringlb haproxy nginx" ] || continue
  python3 - "$OUT" "$ROUNDS" "$BACKEND_NOW" "$WINDOW" <<'PY'
import json, sys, os, statistics
out, rounds, backend, window = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def load(s, t, r):
    with open(os.path.join(out, f"{s}-{t}-r{r}.json")) as f: return json.load(f)
def loadavg(s, r):
    with open(os.path.join(out, f"load-{s}-r{r}.txt")) as f: return f.read().split()[0]
ms = lambda ns: ns / 1e6
med = statistics.median
R = range(1, rounds + 1)
T = ["direct", "ringlb", "haproxy", "nginx"]
lat = {t: [load("a", t, r)["latency"] for r in R] for t in T}
def added(t, q): return [ms(lat[t][i][q] - lat["direct"][i][q]) for i in range(rounds)]
sat = {t: [load("b", t, r)["delivered_per_second"] for r in R] for t in T}
cpu = {t: [load("a", t, r).get("watch_cpu_seconds", 0) for r in R] for t in T}
bcpu = {t: [load("b", t, r).get("watch_cpu_seconds", 0) for r in R] for t in T}
print(f"backend {backend}: medians of {rounds} round(s); b) window {window}")
with open(os.path.join(out, "machine.txt")) as f: print(f.read().strip())
print(f"{'':8} | {'a) p50 ms':>9} {'p99 ms':>7} {'+p50':>6} {'+p99':>6} {'lost':>5} {'cpu s':>6} | {'b) msgs/s':>10} {'x direct':>8} {'lost':>5} {'cpu s':>6} | {'c) KiB/conn':>11} {'conns':>6}")
for t in T:
    c = load("c", t, 1)
    lost = sum(load("a", t, r)["messages_lost"] for r in R)
    blost = sum(load("b", t, r)["messages_lost"] for r in R)
    rss = c.get("watch_rss_per_connection_bytes", 0) / 1024
    print(f"{t:8} | {med(ms(l['P50']) for l in lat[t]):9.3f} {med(ms(l['P99']) for l in lat[t]):7.3f} {med(added(t, 'P50')):6.3f} {med(added(t, 'P99')):6.3f} {lost:5d} {med(cpu[t]):6.2f} | "
          f"{med(sat[t]):10.0f} {med(s / d for s, d in zip(sat[t], sat['direct'])):8.2f} {blost:5d} {med(bcpu[t]):6.2f} | {rss:11.2f} {c['connections_ok']:6d}")
def ratio(x, y): return x / y if y else float("nan")
def ratios(a, b): return " ".join(f"{ratio(x, y):.2f}" for x, y in zip(a, b))
print(f"ringlb / HAProxy, round by round (load average before each round: a) {' '.join(loadavg('a', r) for r in R)}; b) {' '.join(loadavg('b', r) for r in R)}):")
print(f"  a) added p50 {ratios(added('ringlb', 'P50'), added('haproxy', 'P50'))}; added p99 {ratios(added('ringlb', 'P99'), added('haproxy', 'P99'))}; cpu {ratios(cpu['ringlb'], cpu['haproxy'])}")
print(f"  b) msgs/s {ratios(sat['ringlb'], sat['haproxy'])} (median {med(ratio(x, y) for x, y in zip(sat['ringlb'], sat['haproxy'])):.2f}); cpu {ratios(bcpu['ringlb'], bcpu['haproxy'])}; x direct {ratios(sat['ringlb'], sat['direct'])}")
rr, hr = (load("c", t, 1).get("watch_rss_per_connection_bytes", 0) for t in ("ringlb", "haproxy"))
print(f"  c) RSS per idle connection {ratios([rr], [hr])}" + (" (HAProxy's RSS did not grow: too few connections)" if not hr else ""))
PY
done
