#!/usr/bin/env bash
# Serves the same zone with ringlb's gslb, gdnsd 3 (its multifo plugin for the
# managed name) and NSD 4 (a static A record), all from Debian's packages, and
# measures all three with dnsperf in one run: one dnsperf thread, 8 clients,
# a mix of the managed name, a CNAME, NXDOMAIN, MX and AAAA.
#
# All three run at their defaults: ringlb one UDP worker per CPU
# (gslb.udp_workers: 0; UDP_WORKERS=N to change), gdnsd its two UDP threads
# (udp_threads), NSD its one server process.
#
# Each round measures five cells, in an order rotated by one each round (so a
# noisy moment on a shared machine does not land on one server only):
#   ringlb, gdnsd, nsd       steady answers;
#   ringlb-fo, gdnsd-fo      the same load while the managed name fails over
#                            every FLIP seconds (default 4): member bal-1
#                            (127.0.0.1) out, then back in. ringlb through its
#                            admin API (a serve-mode override: a new pool view,
#                            so every cached answer is dropped); gdnsd through
#                            its admin_state file (127.0.0.1/up => DOWN), which
#                            it applies about 2 s after the write. A poller
#                            (one query every 2 ms) notes when each answer
#                            changes; dnsperf reports its rate every 100 ms,
#                            so the table gives the rate in the first 100 ms
#                            after each failover became visible, next to the
#                            cell's median 100 ms rate. NSD serves no
#                            health-managed answer: it has no such cell.
# For every cell the script also measures the CPU time the rest of the
# machine took (all CPUs' busy time minus the server's, dnsperf's and the
# poller's): a round where that exceeds BUSY_LIMIT (default 10 % of one CPU)
# was measured while something else ran and is measured again (up to
# RETRIES more times, default 3); both are printed.
#
# dnsperf's output for each cell is kept as $OUT/CELL-rROUND.txt, the cells'
# figures as $OUT/cells.jsonl.
#
#   apt-get install -y gdnsd nsd dnsperf     # once
#   bench/peers/dns-compare.sh               # DURATION=5 ROUNDS=1 for a quick pass
set -euo pipefail
cd "$(dirname "$0")/../.."
for c in gdnsd nsd dnsperf python3; do command -v $c >/dev/null || { echo "needs $c: apt-get install -y gdnsd nsd dnsperf" >&2; exit 1; }; done
DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-3}
FLIP=${FLIP:-4}
BUSY_LIMIT=${BUSY_LIMIT:-10}
RETRIES=${RETRIES:-3}
# Ports: PORT (ringlb's DNS, default 15353), PORT+1 (gdnsd), PORT+2 (NSD), PORT+3
# (ringlb's admin).
RINGLB_DNS=${PORT:-15353}
GDNSD=$((RINGLB_DNS + 1))
NSD=$((RINGLB_DNS + 2))
RINGLB_ADMIN=$((RINGLB_DNS + 3))
# A server left from an earlier run would be measured instead, and a
# leftover ringlb gslb even shares its port (SO_REUSEPORT): refuse to start
# beside one.
. bench/peers/ports.sh
refuse_taken_ports "PORT=N to move" $RINGLB_DNS $GDNSD $NSD $RINGLB_ADMIN
OUT=${OUT:-bench/out/dns}
mkdir -p "$OUT"
: >"$OUT/cells.jsonl"
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

# ringlb: the managed name with two members that are always served (no
# monitoring traffic on any of the three servers).
mkdir -p "$WORK/ringlb-state"
{
  echo "cluster: { name: gslb-compare, bind: 127.0.0.1:0, state_dir: $WORK/ringlb-state }   # gossip on loopback: no key needed"
  echo "gslb:"
  echo "  listen: 127.0.0.1:$RINGLB_DNS"
  echo "  udp_workers: ${UDP_WORKERS:-0}"
  echo "  rate_limit: { responses_per_second: 0 }   # off for a benchmark, as NSD's rrl-ratelimit below"
  echo "  admin: { listen: 127.0.0.1:$RINGLB_ADMIN }"
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
ringlb_pid=$!

# gdnsd keeps its control socket in run_dir and reads admin_state from
# state_dir: both here, so it neither needs nor touches /run or /var/lib.
mkdir -p "$WORK/gdnsd/zones" "$WORK/gdnsd-run" "$WORK/gdnsd-state"
cat >"$WORK/gdnsd/config" <<CFG
options => { listen => [ 127.0.0.1:$GDNSD ], run_dir => $WORK/gdnsd-run, state_dir => $WORK/gdnsd-state }
plugins => { multifo => { ide => { service_types => up, bal1 => 127.0.0.1, bal2 => 127.0.0.2 } } }
CFG
{ echo "$RECORDS"; echo "ide 30 DYNA multifo!ide"; } >"$WORK/gdnsd/zones/ringlb.test"
gdnsd -c "$WORK/gdnsd" start >"$WORK/gdnsd.log" 2>&1 & pids+=($!)
gdnsd_pid=$!

mkdir -p "$WORK/nsd"
{ echo '$ORIGIN ringlb.test.'; echo "$RECORDS"; echo "ide 30 IN A 127.0.0.1"; echo "ide 30 IN A 127.0.0.2"; } >"$WORK/nsd/ringlb.test.zone"
cat >"$WORK/nsd/nsd.conf" <<CFG
server:
  ip-address: 127.0.0.1@$NSD
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
nsd_pid=$!

printf 'ide.ringlb.test A\nwww.ringlb.test A\nnope.ringlb.test A\nringlb.test MX\nide.ringlb.test AAAA\n' >"$WORK/queries"
for port in $RINGLB_DNS $GDNSD $NSD; do
  up=
  for _ in $(seq 100); do dig +short +time=1 +tries=1 -p $port @127.0.0.1 ringlb.test SOA >/dev/null 2>&1 && { up=1; break; }; sleep 0.1; done
  [ -n "$up" ] || { echo "the server on port $port does not answer" >&2; cat "$WORK/gdnsd.log" >&2; exit 1; }
done

# cell.py runs one cell: dnsperf against a port (with -S 0.1 and the
# failover poller for the -fo cells) and prints one JSON line of figures.
cat >"$WORK/cell.py" <<'PY'
import json, os, random, re, resource, socket, struct, subprocess, sys, threading, time, urllib.request

name, port, duration, queries, out, pidspec = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
flip = json.loads(sys.argv[7]) if len(sys.argv) > 7 else None
tick = os.sysconf("SC_CLK_TCK")

def server_pids():
    # the server's processes: the pid given and its descendants (NSD's
    # first process becomes xfrd, whose child forks the server)
    pids, todo = set(), [int(pidspec)]
    while todo:
        p = todo.pop()
        pids.add(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return pids

def proc_cpu(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / tick

def machine():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / tick  # busy CPU seconds, all CPUs

def ancount(sock, qid):
    # one query for the managed name's A records: how many answers
    q = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0) + b"\x03ide\x06ringlb\x04test\x00" + struct.pack(">HH", 1, 1)
    sock.send(q)
    while True:
        r = sock.recv(512)
        if len(r) >= 12 and struct.unpack(">H", r[:2])[0] == qid:
            return struct.unpack(">H", r[6:8])[0]

flips = []
def flipper(start):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(1)
    period, out_next, k = flip["period"], True, 0
    while True:
        at = start + period / 2 + k * period
        if at > start + duration - 1:
            return
        time.sleep(max(0, at - time.time()))
        t_req = time.time()
        set_member(out_next)
        want = 1 if out_next else 2
        while time.time() - t_req < 10:
            try:
                if ancount(sock, random.randrange(65536)) == want:
                    break
            except OSError:
                pass
            time.sleep(0.002)
        flips.append({"requested": t_req, "visible": time.time(), "out": out_next})
        out_next, k = not out_next, k + 1

def set_member(out):
    if flip["kind"] == "ringlb":
        req = urllib.request.Request(f"http://127.0.0.1:{flip['admin']}/api/pools/ide.ringlb.test/all/bal-1/mode?mode={'remove' if out else ''}",
                                     method="POST", headers={"X-Ringlb-Admin": "1"})
        urllib.request.urlopen(req, timeout=10).read()
    else:
        path = flip["state"]
        with open(path + ".tmp", "w") as f:
            f.write("127.0.0.1/up => DOWN\n" if out else "")
        os.rename(path + ".tmp", path)

pids = server_pids()
cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", queries, "-l", str(duration), "-c", "8", "-T", "1"]
if flip:
    cmd += ["-S", "0.1"]
m0, s0, self0 = machine(), proc_cpu(pids), time.process_time()
c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
start = time.time()
th = None
if flip:
    th = threading.Thread(target=flipper, args=(start,), daemon=True)
    th.start()
with open(out, "w") as f:
    subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False)
c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
m1, s1, self1 = machine(), proc_cpu(pids), time.process_time()
if th:
    th.join()
    if flips and flips[-1]["out"]:
        set_member(False)  # back in for the next cell
elapsed = time.time() - start
text = open(out).read()
def num(pat):
    m = re.search(pat, text)
    return float(m.group(1)) if m else 0.0
server = s1 - s0
dnsperf = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
poller = self1 - self0
other = (m1 - m0) - server - dnsperf - poller
cell = {"cell": name, "qps": num(r"Queries per second:\s+([\d.]+)"), "latency_ms": num(r"Average Latency \(s\):\s+([\d.]+)") * 1000,
        "lost": num(r"Queries lost:\s+(\d+)"), "server_cpu": server / elapsed, "dnsperf_cpu": dnsperf / elapsed,
        "other_cpu": max(other, 0) / elapsed}
if flip:
    series = [(float(t), float(q)) for t, q in re.findall(r"^(\d+\.\d+): ([\d.]+)$", text, re.M)]
    series = [(t, q) for i, (t, q) in enumerate(series) if i > 0 and q > 0]  # the first interval starts before the load
    rates = sorted(q for _, q in series)
    cell["interval_median_qps"] = rates[len(rates) // 2] if rates else 0
    after = []
    for fl in flips:
        # the first whole 100 ms interval after the answer changed
        prev = None
        for t, q in series:
            if prev is not None and prev >= fl["visible"]:
                after.append(q)
                break
            prev = t
    cell["after_failover_qps"] = sum(after) / len(after) if after else 0
    cell["failovers"] = len(flips)
    cell["visible_after_ms"] = [round((fl["visible"] - fl["requested"]) * 1000) for fl in flips]
print(json.dumps(cell))
PY

CELLS=(ringlb gdnsd nsd ringlb-fo gdnsd-fo)
cell() { # cell NAME ROUND
  local name=$1 r=$2 port pid flip=
  case $name in
  ringlb) port=$RINGLB_DNS pid=$ringlb_pid ;;
  gdnsd) port=$GDNSD pid=$gdnsd_pid ;;
  nsd) port=$NSD pid=$nsd_pid ;;
  ringlb-fo) port=$RINGLB_DNS pid=$ringlb_pid flip="{\"kind\":\"ringlb\",\"admin\":$RINGLB_ADMIN,\"period\":$FLIP}" ;;
  gdnsd-fo) port=$GDNSD pid=$gdnsd_pid flip="{\"kind\":\"gdnsd\",\"state\":\"$WORK/gdnsd-state/admin_state\",\"period\":$FLIP}" ;;
  esac
  python3 "$WORK/cell.py" "$name" "$port" "$DURATION" "$WORK/queries" "$OUT/$name-r$r.txt" "$pid" ${flip:+"$flip"}
}

printf '%-9s %-10s %10s %8s %6s %8s %8s %8s  %s\n' round cell QPS "avg ms" lost "srv cpu" "perf cpu" "other" "failover: after/median qps, visible ms"
for ((r = 1; r <= ROUNDS; r++)); do
  for ((try = 0; try <= RETRIES; try++)); do
    busy=
    lines=()
    for ((i = 0; i < ${#CELLS[@]}; i++)); do
      name=${CELLS[(i + r - 1) % ${#CELLS[@]}]}
      line=$(cell "$name" "$r")
      lines+=("$line")
      python3 - "$line" "$r" "$try" "$BUSY_LIMIT" <<'PY'
import json, sys
c, r, t, limit = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
fo = ""
if "after_failover_qps" in c:
    fo = f"{c['after_failover_qps']:,.0f}/{c['interval_median_qps']:,.0f} ({c['failovers']}x), {c['visible_after_ms']}"
flag = "  BUSY" if c["other_cpu"] * 100 > limit else ""
label = r if t == 0 else f"{r} rerun{t}"
print(f"{label:<9} {c['cell']:<10} {c['qps']:>10,.0f} {c['latency_ms']:>8.3f} {c['lost']:>6.0f} {c['server_cpu']*100:>7.0f}% {c['dnsperf_cpu']*100:>7.0f}% {c['other_cpu']*100:>7.0f}%  {fo}{flag}")
PY
      python3 -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1])["other_cpu"]*100 <= float(sys.argv[2]) else 1)' "$line" "$BUSY_LIMIT" || busy=1
    done
    if [ -z "$busy" ] || [ $try -eq $RETRIES ]; then
      for l in "${lines[@]}"; do python3 -c 'import json,sys; c=json.loads(sys.argv[1]); c["round"]=int(sys.argv[2]); c["busy"]=sys.argv[3]=="1"; print(json.dumps(c))' "$l" "$r" "${busy:-0}" >>"$OUT/cells.jsonl"; done
      break
    fi
  done
done

python3 - "$OUT/cells.jsonl" <<'PY'
import json, statistics, sys
cells = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for c in cells:
    by.setdefault(c["round"], {})[c["cell"]] = c
print()
print("| round | ringlb QPS | gdnsd QPS | NSD QPS | ringlb × gdnsd | ringlb × NSD | avg latency ms ringlb / gdnsd / NSD | failover: ringlb QPS | gdnsd QPS | ringlb × gdnsd | ringlb failover × steady | first 100 ms after a failover ÷ median, ringlb / gdnsd |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
ratios = {"gdnsd": [], "nsd": [], "fo": [], "fo_steady": []}
for r in sorted(by):
    c = by[r]
    g, n, l = c["ringlb"]["qps"] / c["gdnsd"]["qps"], c["ringlb"]["qps"] / c["nsd"]["qps"], c["ringlb-fo"]["qps"] / c["gdnsd-fo"]["qps"]
    fs = c["ringlb-fo"]["qps"] / c["ringlb"]["qps"]
    ratios["gdnsd"].append(g); ratios["nsd"].append(n); ratios["fo"].append(l); ratios["fo_steady"].append(fs)
    after = lambda x: x["after_failover_qps"] / x["interval_median_qps"] if x["interval_median_qps"] else 0
    busy = " (busy)" if c["ringlb"].get("busy") else ""
    print(f"| {r}{busy} | {c['ringlb']['qps']:,.0f} | {c['gdnsd']['qps']:,.0f} | {c['nsd']['qps']:,.0f} | **{g:.2f}** | **{n:.2f}** | "
          f"{c['ringlb']['latency_ms']:.2f} / {c['gdnsd']['latency_ms']:.2f} / {c['nsd']['latency_ms']:.2f} | "
          f"{c['ringlb-fo']['qps']:,.0f} | {c['gdnsd-fo']['qps']:,.0f} | **{l:.2f}** | {fs:.2f} | {after(c['ringlb-fo']):.2f} / {after(c['gdnsd-fo']):.2f} |")
print()
for k, label in (("gdnsd", "ringlb / gdnsd"), ("nsd", "ringlb / NSD"), ("fo", "failover: ringlb / gdnsd"), ("fo_steady", "ringlb failover / ringlb steady")):
    v = ratios[k]
    print(f"{label}, round by round: " + " ".join(f"{x:.2f}" for x in v) + f"; min {min(v):.2f}, median {statistics.median(v):.2f}")
lost = sum(c["lost"] for c in cells)
print(f"queries lost, all cells: {lost:.0f}")
PY
