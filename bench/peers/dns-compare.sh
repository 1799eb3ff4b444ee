#!/usr/bin/env bash
# Serves the same zone with ringlb's gslb, gdnsd 3 (its multifo plugin for the
# managed name) and NSD 4 (a static A record), all from Debian's packages, and
# measures all three with dnsperf in one run: one dnsperf thread, 8 clients,
# a mix of the managed name, a CNAME, NXDOMAIN, MX and AAAA.
#
# ringlb runs one UDP worker (gslb.udp_workers: 1; UDP_WORKERS=N to change),
# as NSD runs one server process by default: on a 2-core machine dnsperf
# takes one core, and a second worker only competes with it (measured: two
# workers 0.75-0.78x NSD, one worker 0.99x, same runs). gdnsd and NSD run at
# their defaults.
#
# The three servers are measured in ROUNDS interleaved rounds (default 3; the
# order rotated by one each round, so a noisy moment on a shared machine
# does not land on one server only); the table gives every round, the medians
# and ringlb's ratio to each peer round by round. dnsperf's output for each
# cell is kept as $OUT/SERVER-rROUND.txt.
#
#   apt-get install -y gdnsd nsd dnsperf     # once
#   bench/peers/dns-compare.sh               # DURATION=5 ROUNDS=1 for a quick pass
set -euo pipefail
cd "$(dirname "$0")/../.."
for c in gdnsd nsd dnsperf; do command -v $c >/dev/null || { echo "needs $c: apt-get install -y gdnsd nsd dnsperf" >&2; exit 1; }; done
DURATION=${DURATION:-20}
OUT=${OUT:-bench/out/dns}
mkdir -p "$OUT"
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
go build -o "$WORK/ringlb" ./cmd/ringlb

RECORDS='@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60
@ 3600 IN NS ns1
@ 3600 IN MX 10 mail
ns1 3600 IN A 127.0.0.1
mail 3600 IN A 127.0.0.25
www 300 IN CNAME ide'

# ringlb: the managed name with two members that are always served (no
# monitoring traffic on any of the three servers).
{
  echo "cluster: { name: gslb-compare, bind: 127.0.0.1:0 }   # gossip on loopback: no key needed"
  echo "gslb:"
  echo "  listen: 127.0.0.1:15353"
  echo "  udp_workers: ${UDP_WORKERS:-1}"
  echo "  admin: { listen: 127.0.0.1:0 }"
  echo "  zones:"
  echo "    - origin: ringlb.test"
  echo "      records:"
  while IFS= read -r l; do echo "        - \"$l\""; done <<<"$RECORDS"
  cat <<'YAML'
  names:
    - name: ide.ringlb.test
      regions:
        all: { serve_mode: always, members: [ { name: bal-1, address: 127.0.0.1 }, { name: bal-2, address: 127.0.0.2 } ] }
YAML
} >"$WORK/ringlb.yaml"
"$WORK/ringlb" gslb -config "$WORK/ringlb.yaml" -log-level warn & pids+=($!)

mkdir -p "$WORK/gdnsd/zones" "$WORK/gdnsd-run"
cat >"$WORK/gdnsd/config" <<'CFG'
options => { listen => [ 127.0.0.1:15354 ] }
plugins => { multifo => { ide => { service_types => up, bal1 => 127.0.0.1, bal2 => 127.0.0.2 } } }
CFG
{ echo "$RECORDS"; echo "ide 30 DYNA multifo!ide"; } >"$WORK/gdnsd/zones/ringlb.test"
RUNTIME_DIRECTORY="$WORK/gdnsd-run" gdnsd -c "$WORK/gdnsd" start 2>/dev/null & pids+=($!)

mkdir -p "$WORK/nsd"
{ echo '$ORIGIN ringlb.test.'; echo "$RECORDS"; echo "ide 30 IN A 127.0.0.1"; echo "ide 30 IN A 127.0.0.2"; } >"$WORK/nsd/ringlb.test.zone"
cat >"$WORK/nsd/nsd.conf" <<CFG
server:
  ip-address: 127.0.0.1@15355
  username: ""
  zonesdir: "$WORK/nsd"
  database: ""
  pidfile: "$WORK/nsd/nsd.pid"
  xfrdfile: "$WORK/nsd/xfrd.state"
  zonelistfile: "$WORK/nsd/zone.list"
  verbosity: 0
  # NSD limits 200 responses/s per prefix by default: off for a benchmark.
  rrl-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: ringlb.test
  zonefile: ringlb.test.zone
CFG
nsd -d -c "$WORK/nsd/nsd.conf" 2>/dev/null & pids+=($!)

printf 'ide.ringlb.test A\nwww.ringlb.test A\nnope.ringlb.test A\nringlb.test MX\nide.ringlb.test AAAA\n' >"$WORK/queries"
for port in 15353 15354 15355; do
  for _ in $(seq 100); do dig +short +time=1 +tries=1 -p $port @127.0.0.1 ringlb.test SOA >/dev/null 2>&1 && break; sleep 0.1; done
done

ROUNDS=${ROUNDS:-3}
SERVERS=(ringlb:15353 gdnsd:15354 nsd:15355)
printf '%-6s %-8s %10s %10s %10s\n' round server QPS "avg ms" lost
for ((r = 1; r <= ROUNDS; r++)); do
  for ((i = 0; i < ${#SERVERS[@]}; i++)); do
    s=${SERVERS[(i + r - 1) % ${#SERVERS[@]}]}
    name=${s%%:*}; port=${s##*:}
    dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries" -l "$DURATION" -c 8 -T 1 >"$OUT/$name-r$r.txt" 2>&1 || true
    qps=$(awk '/Queries per second/ {print $4}' "$OUT/$name-r$r.txt")
    avg=$(awk '/Average Latency/ {print $4*1000}' "$OUT/$name-r$r.txt")
    lost=$(awk '/Queries lost/ {print $3}' "$OUT/$name-r$r.txt")
    printf '%-6s %-8s %10s %10s %10s\n' "$r" "$name" "$qps" "$avg" "$lost"
  done
done
python3 - "$OUT" "$ROUNDS" <<'PY'
import os, re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def qps(name, r):
    text = open(os.path.join(out, f"{name}-r{r}.txt")).read()
    m = re.search(r"Queries per second:\s+([\d.]+)", text)
    return float(m.group(1)) if m else 0.0
q = {n: [qps(n, r) for r in range(1, rounds + 1)] for n in ("ringlb", "gdnsd", "nsd")}
print(f"median QPS of {rounds} round(s): " + ", ".join(f"{n} {statistics.median(v):,.0f}" for n, v in q.items()))
for peer in ("nsd", "gdnsd"):
    rs = [a / b if b else 0 for a, b in zip(q["ringlb"], q[peer])]
    print(f"ringlb / {peer}, round by round: " + " ".join(f"{x:.2f}" for x in rs) + f"; median {statistics.median(rs):.2f}")
PY
