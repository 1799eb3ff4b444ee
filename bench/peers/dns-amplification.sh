#!/usr/bin/env bash
# How much a spoofed query can reflect: serves the shipped example zone
# (configs/examples/zones/ide.example.com.zone) with ringlb's gslb, from
# configs/examples/gslb.yaml, and with NSD 4 from Debian's package, both on
# loopback, sends each the same small queries with EDNS buffer 4096 (what an
# attacker advertises) and prints, per query, the query's and the answer's
# size in bytes and their ratio, then each server's largest ratio.
#
# ringlb runs the example's gslb section as shipped except: it listens on
# loopback, and the managed name's members are served without probing
# (serve_mode always; their addresses are not on this machine, and nothing
# leaves it). NSD serves the same zone file plus the answer ringlb gives a
# client of the default region for the managed name, as static A records (up
# to max_answers), so both answer every query; NSD runs at its defaults.
#
# The queries are built by hand (no cookie, no other EDNS option, RD clear),
# so both servers get byte-identical queries; sizes are the UDP payloads.
# Exits 1 when ringlb's largest ratio is above NSD's.
#
#   apt-get install -y nsd          # once
#   bench/peers/dns-amplification.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v nsd >/dev/null || { echo "needs nsd: apt-get install -y nsd" >&2; exit 1; }
RINGLB_PORT=${RINGLB_PORT:-15363}
NSD_PORT=${NSD_PORT:-15365}
# A server left from an earlier run would be measured instead, and a
# leftover ringlb gslb even shares its port (SO_REUSEPORT): refuse to start
# beside one.
. bench/peers/ports.sh
refuse_taken_ports "RINGLB_PORT=N, NSD_PORT=N to move" $RINGLB_PORT $NSD_PORT
EXAMPLE=configs/examples/gslb.yaml
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
# Ctrl-C ends the run, not only the command in the foreground: a load
# generator (`ringlb bench`, dnsperf) ends early on SIGINT and exits
# normally, and bash would go on with the next step.
trap 'exit 130' INT
go build -o "$WORK/ringlb" ./cmd/ringlb

# Both servers' inputs from the example: ringlb's config, NSD's zone file,
# and the names to ask.
python3 - "$EXAMPLE" "$WORK" "$RINGLB_PORT" <<'PY'
import os, sys, yaml
example, work, port = sys.argv[1], sys.argv[2], sys.argv[3]
g = yaml.safe_load(open(example))["gslb"]
g["listen"] = f"127.0.0.1:{port}"
g["admin"] = {"listen": "127.0.0.1:0"}
g["udp_workers"] = 1
zone = g["zones"][0]
zone["file"] = os.path.abspath(os.path.join(os.path.dirname(example), zone["file"]))
origin = zone["origin"].rstrip(".") + "."
name = g["names"][0]
for r in name["regions"].values():
    r.pop("monitor", None)
    r["serve_mode"] = "always"
    for m in r["members"]:
        m["serve_mode"] = "always"
cfg = {"cluster": {"name": "gslb-amplification", "bind": "127.0.0.1:0"}, "gslb": g}
yaml.safe_dump(cfg, open(os.path.join(work, "ringlb.yaml"), "w"), sort_keys=False)
# The default region's answer, as ringlb gives it to a client no geo prefix
# matches (127.0.0.1), for NSD to serve statically.
default = name.get("default_region") or sorted(name["regions"])[0]
members = [m["address"] for m in name["regions"][default]["members"]]
if name.get("max_answers"):
    members = members[: name["max_answers"]]
managed = name["name"].rstrip(".") + "."
with open(os.path.join(work, "zone"), "w") as z:
    z.write(open(zone["file"]).read())
    for a in members:
        z.write(f"{managed} {name.get('ttl', 30)} IN {'AAAA' if ':' in a else 'A'} {a}\n")
with open(os.path.join(work, "names"), "w") as f:
    f.write(f"{origin}\n{managed}\n")
PY
{ read -r ORIGIN; read -r MANAGED; } <"$WORK/names"
"$WORK/ringlb" gslb -config "$WORK/ringlb.yaml" -log-level warn & pids+=($!)

mkdir -p "$WORK/nsd"
cat >"$WORK/nsd/nsd.conf" <<CFG
server:
  ip-address: 127.0.0.1@$NSD_PORT
  username: ""
  zonesdir: "$WORK"
  database: ""
  pidfile: "$WORK/nsd/nsd.pid"
  xfrdfile: "$WORK/nsd/xfrd.state"
  zonelistfile: "$WORK/nsd/zone.list"
  verbosity: 0
remote-control:
  control-enable: no
zone:
  name: $ORIGIN
  zonefile: zone
CFG
nsd -d -c "$WORK/nsd/nsd.conf" 2>"$WORK/nsd/log" & pids+=($!)

python3 - "$ORIGIN" "$MANAGED" "ringlb:$RINGLB_PORT" "nsd:$NSD_PORT" <<'PY'
import random, socket, struct, sys, time
origin, managed, servers = sys.argv[1], sys.argv[2], [s.split(":") for s in sys.argv[3:]]
TYPES = {"A": 1, "NS": 2, "TXT": 16, "DNSKEY": 48, "ANY": 255}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}

def query(name, qtype):
    q = struct.pack(">HHHHHH", random.randrange(65536), 0, 1, 0, 0, 1)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", TYPES[qtype], 1)
    # OPT: root owner, type 41, class = buffer size 4096, TTL 0, no options.
    return q + b"\0" + struct.pack(">HHIH", 41, 4096, 0, 0)

def ask(port, q):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(q, ("127.0.0.1", port))
        a, _ = s.recvfrom(65535)
        if a[:2] != q[:2]:
            raise RuntimeError("answer to another query")
        return a

for name, port in servers:  # wait until both answer (event-driven, bounded)
    for _ in range(100):
        try:
            ask(int(port), query(origin, "NS"))
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit(f"{name} does not answer on 127.0.0.1:{port}")

asks = [(origin, "ANY"), (origin, "TXT"), (managed, "A"), (origin, "DNSKEY"), (origin, "NS"), ("nxdomain-amplification-test." + origin, "A")]
print(f"{'server':<7} {'query':<48} {'q bytes':>7} {'a bytes':>7} {'ratio':>6}  rcode    TC answers")
largest = {}
for name, port in servers:
    for qname, qtype in asks:
        q = query(qname, qtype)
        a = ask(int(port), q)
        flags, an = struct.unpack(">H", a[2:4])[0], struct.unpack(">H", a[6:8])[0]
        ratio = len(a) / len(q)
        largest[name] = max(largest.get(name, (0, "")), (ratio, f"{qname} {qtype}"))
        print(f"{name:<7} {qname + ' ' + qtype:<48} {len(q):>7} {len(a):>7} {ratio:>6.2f}  {RCODES.get(flags & 15, flags & 15):<8} {'TC' if flags & 0x200 else '- '} {an:>7}")
for name, _ in servers:
    print(f"largest ratio {name}: {largest[name][0]:.2f} ({largest[name][1]})")
ok = largest["ringlb"][0] <= largest["nsd"][0]
print("ringlb's largest ratio is " + ("at most" if ok else "ABOVE") + " NSD's")
sys.exit(0 if ok else 1)
PY
