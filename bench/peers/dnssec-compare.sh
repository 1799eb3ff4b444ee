#!/usr/bin/env bash
# Signed answers, measured: ringlb's gslb with the zone signed online (queries
# with DO) against the same gslb unsigned (queries without DO, today's path)
# and against Knot DNS 3 signing the same zone online (mod-onlinesign, its
# own ECDSA P-256 key; queries with DO), all from Debian's packages, with
# dnsperf: one thread, 8 clients, a mix of the managed name, a CNAME to it,
# NXDOMAIN, MX and AAAA (NODATA).
#
# Each server runs one UDP worker (ringlb gslb.udp_workers: 1, Knot
# udp-workers: 1), as bench/peers/dns-compare.sh explains: on a 2-core machine
# dnsperf takes the other core. The three are measured in ROUNDS interleaved
# rounds (default 3, the order rotated each round); the table gives every
# round, the medians, and the ratios round by round. dnsperf's output for each
# cell is kept as $OUT/SERVER-rROUND.txt.
#
# Then every query a name never asked before (a random-subdomain flood: a
# fresh signature per answer), ringlb and Knot, one round; and the Go
# benchmark of the first answer after a failover
# (BenchmarkFirstAnswerAfterFailover: over UDP, signature cache emptied, so
# the signed answer needs a fresh signature) gives its median and p99, signed
# and not.
#
#   apt-get install -y knot dnsperf bind9-dnsutils   # once
#   bench/peers/dnssec-compare.sh                    # DURATION=5 ROUNDS=1 for a quick pass
set -euo pipefail
cd "$(dirname "$0")/../.."
for c in knotd dnsperf dig; do command -v $c >/dev/null || { echo "needs $c: apt-get install -y knot dnsperf bind9-dnsutils" >&2; exit 1; }; done
DURATION=${DURATION:-20}
# Ports: PLAIN (ringlb unsigned), PLAIN+1 (ringlb signed), PLAIN+2 (Knot).
PLAIN=${PORT:-15363}
SIGNED=$((PLAIN + 1))
KNOT=$((PLAIN + 2))
. bench/peers/ports.sh
refuse_taken_ports "PORT=N to move" $PLAIN $SIGNED $KNOT
OUT=${OUT:-bench/out/dnssec}
mkdir -p "$OUT"
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
# Ctrl-C ends the run, not only the command in the foreground: a load
# generator (`ringlb bench`, dnsperf) ends early on SIGINT and exits
# normally, and bash would go on with the next step.
trap 'exit 130' INT
go build -o "$WORK/ringlb" ./cmd/ringlb

RECORDS='@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60
@ 3600 IN NS ns1
@ 3600 IN MX 10 mail
ns1 3600 IN A 127.0.0.1
mail 3600 IN A 127.0.0.25
www 300 IN CNAME ide'

# ringlb, unsigned and signed: the managed name with two members that are
# always served (no monitoring traffic).
"$WORK/ringlb" keygen -dnssec ringlb.test -dir "$WORK" >"$WORK/keys.txt"
ringlb_config() { # port, signed (yes/no)
  echo "cluster: { name: gslb-$1, bind: 127.0.0.1:0 }   # gossip on loopback: no key needed"
  echo "gslb:"
  echo "  listen: 127.0.0.1:$1"
  echo "  udp_workers: ${UDP_WORKERS:-1}"
  echo "  rate_limit: { responses_per_second: 0 }   # off for a benchmark (one client asks at full speed)"
  echo "  admin: { listen: 127.0.0.1:0 }"
  echo "  zones:"
  echo "    - origin: ringlb.test"
  echo "      records:"
  while IFS= read -r l; do echo "        - \"$l\""; done <<<"$RECORDS"
  if [ "$2" = yes ]; then
    sed -n '/dnssec:/,/^$/p' "$WORK/keys.txt" | sed '/^$/d'
    # Unbounded here, to measure what signing costs: by default (2000 a
    # second) most of the random-name flood below would be answered TC.
    echo "        signatures_per_second: 1000000"
  fi
  cat <<'YAML'
  names:
    - name: ide.ringlb.test
      regions:
        all: { serve_mode: always, members: [ { name: bal-1, address: 127.0.0.1 }, { name: bal-2, address: 127.0.0.2 } ] }
YAML
}
ringlb_config $PLAIN no >"$WORK/plain.yaml"
ringlb_config $SIGNED yes >"$WORK/signed.yaml"
"$WORK/ringlb" gslb -config "$WORK/plain.yaml" -log-level warn & pids+=($!)
"$WORK/ringlb" gslb -config "$WORK/signed.yaml" -log-level warn & pids+=($!)

# Knot: the same zone, the managed name as two static A records, signed
# online by mod-onlinesign with the key it makes (ECDSA P-256).
mkdir -p "$WORK/knot/db"
{ echo '$ORIGIN ringlb.test.'; echo "$RECORDS"; echo "ide 30 IN A 127.0.0.1"; echo "ide 30 IN A 127.0.0.2"; } >"$WORK/knot/ringlb.test.zone"
cat >"$WORK/knot/knot.conf" <<CFG
server:
    listen: 127.0.0.1@$KNOT
    rundir: $WORK/knot
    udp-workers: ${UDP_WORKERS:-1}
    tcp-workers: 1
    background-workers: 1
database:
    storage: $WORK/knot/db
template:
  - id: default
    storage: $WORK/knot
    file: "%s.zone"
zone:
  - domain: ringlb.test
    module: mod-onlinesign
CFG
knotd -c "$WORK/knot/knot.conf" >"$WORK/knot/knot.log" 2>&1 & pids+=($!)

printf 'ide.ringlb.test A\nwww.ringlb.test A\nnope.ringlb.test A\nringlb.test MX\nide.ringlb.test AAAA\n' >"$WORK/queries"
for port in $PLAIN $SIGNED $KNOT; do
  for _ in $(seq 100); do dig +short +time=1 +tries=1 -p $port @127.0.0.1 ringlb.test SOA >/dev/null 2>&1 && break; sleep 0.1; done
done
# Both signers sign, or the comparison means nothing.
for port in $SIGNED $KNOT; do
  dig +dnssec +norec -p $port @127.0.0.1 ide.ringlb.test A | grep -q RRSIG || { echo "no RRSIG from port $port" >&2; exit 1; }
done

ROUNDS=${ROUNDS:-3}
# name:port:dnsperf flags (-D: the DO bit on every query)
SERVERS=(ringlb-plain:$PLAIN: ringlb-signed:$SIGNED:-D knot-signed:$KNOT:-D)
printf '%-6s %-14s %10s %10s %10s\n' round server QPS "avg ms" lost
for ((r = 1; r <= ROUNDS; r++)); do
  for ((i = 0; i < ${#SERVERS[@]}; i++)); do
    s=${SERVERS[(i + r - 1) % ${#SERVERS[@]}]}
    IFS=: read -r name port flags <<<"$s"
    # shellcheck disable=SC2086 # flags is empty or one flag
    dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries" -l "$DURATION" -c 8 -T 1 $flags >"$OUT/$name-r$r.txt" 2>&1 || true
    qps=$(awk '/Queries per second/ {print $4}' "$OUT/$name-r$r.txt")
    avg=$(awk '/Average Latency/ {print $4*1000}' "$OUT/$name-r$r.txt")
    lost=$(awk '/Queries lost/ {print $3}' "$OUT/$name-r$r.txt")
    printf '%-6s %-14s %10s %10s %10s\n' "$r" "$name" "$qps" "$avg" "$lost"
  done
done
python3 - "$OUT" "$ROUNDS" <<'PY'
import os, re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def qps(name, r):
    text = open(os.path.join(out, f"{name}-r{r}.txt")).read()
    m = re.search(r"Queries per second:\s+([\d.]+)", text)
    return float(m.group(1)) if m else 0.0
names = ("ringlb-plain", "ringlb-signed", "knot-signed")
q = {n: [qps(n, r) for r in range(1, rounds + 1)] for n in names}
print(f"median QPS of {rounds} round(s): " + ", ".join(f"{n} {statistics.median(v):,.0f}" for n, v in q.items()))
for a, b in (("ringlb-signed", "ringlb-plain"), ("ringlb-signed", "knot-signed")):
    rs = [x / y if y else 0 for x, y in zip(q[a], q[b])]
    print(f"{a} / {b}, round by round: " + " ".join(f"{x:.2f}" for x in rs) + f"; median {statistics.median(rs):.2f}")
PY

# The worst case for an online signer: every query a name never asked
# before (a random-subdomain flood), so every answer needs a new signature
# over its own NSEC. One round each, after the table.
python3 -c 'import sys
for i in range(int(sys.argv[1])): print(f"r{i:07d}.nope.ringlb.test A")' "${NAMES:-$((DURATION * 100000))}" >"$WORK/random-names"
echo
echo "every query a new name (fresh NSEC signature each), one round:"
for s in ringlb-signed:$SIGNED knot-signed:$KNOT; do
  IFS=: read -r name port <<<"$s"
  dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/random-names" -l "$DURATION" -c 8 -T 1 -D >"$OUT/$name-random.txt" 2>&1 || true
  printf '  %-14s %10s QPS %8s ms avg\n' "$name" "$(awk '/Queries per second/ {print $4}' "$OUT/$name-random.txt")" "$(awk '/Average Latency/ {print $4*1000}' "$OUT/$name-random.txt")"
done

echo
echo "first answer after a failover (BenchmarkFirstAnswerAfterFailover, UDP, fresh signature when signed):"
go test -run '^$' -bench 'FirstAnswerAfterFailover' -benchtime "${FAILOVERS:-2000}x" -count 1 ./gslb/ |
  awk '/^BenchmarkFirstAnswerAfterFailover/ { for (i = 1; i <= NF; i++) { if ($i == "p50-µs") p50 = $(i-1); if ($i == "p99-µs") p99 = $(i-1) } sub(/-[0-9]+$/, "", $1); print "  " $1 ": p50 " p50 " µs, p99 " p99 " µs" }'
