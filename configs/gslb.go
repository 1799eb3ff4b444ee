package configs

import (
	"crypto"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// GSLB is the authoritative DNS server with traffic-managed names (gslb/).
type GSLB struct {
	// Listen is the DNS address, served on UDP and TCP (default :53).
	Listen string `yaml:"listen"`
	// Admin is the admin API (default 127.0.0.1:9053).
	Admin Admin `yaml:"admin"`
	// Zones this server is authoritative for.
	Zones []Zone `yaml:"zones"`
	// Monitors are named health checks that regions and members refer to.
	Monitors map[string]Monitor `yaml:"monitors"`
	// Names are the traffic-managed names, each inside one of Zones.
	Names []ManagedName `yaml:"names"`
	// QueryLog logs every query at info level (default false).
	QueryLog bool `yaml:"query_log"`
	// RateLimit is response rate limiting per client prefix.
	RateLimit RateLimit `yaml:"rate_limit"`
	// UDPWorkers is the number of UDP sockets sharing the port
	// (SO_REUSEPORT), each with its own loop (default 0: one per CPU the Go
	// runtime uses). Set, `ringlb gslb` also limits itself to that many
	// CPUs (GOMAXPROCS, unless set in the environment), like NSD's
	// server-count: for hosts that run other busy processes.
	UDPWorkers int `yaml:"udp_workers"`
	// MaxUDPSize caps every UDP answer, in bytes (default 1232, as NSD and
	// Knot since DNS Flag Day 2020: no IP fragmentation, and a bound on how
	// much a spoofed query can reflect). A client gets min(its EDNS buffer
	// size, MaxUDPSize), 512 without EDNS; our OPT advertises MaxUDPSize.
	MaxUDPSize int `yaml:"max_udp_size"`
	// MaxTCPConnections caps the DNS TCP connections open at once; beyond
	// it a new connection is closed at once, UDP answering on (default
	// 1000, fewer when the open-file limit, less a reserve for what the
	// admin port and gossip may hold and the node's own work, is lower).
	// Each holds a descriptor and a
	// goroutine until its read or write deadline, and anyone can open them.
	MaxTCPConnections int `yaml:"max_tcp_connections"`
	// MaxTCPConnectionsPerIP is one client's share of max_tcp_connections
	// (an IPv4 address, an IPv6 /64): beyond it a new connection from that
	// client is closed at once, without a word, so one client cannot take
	// every slot (default max_tcp_connections / 16, at least 1: 62 of
	// 1000). A resolver retries a
	// truncated answer over TCP on a connection or a few; 16 clients are
	// needed to fill the port. A SIGHUP changes it, as it does
	// max_tcp_connections.
	MaxTCPConnectionsPerIP int `yaml:"max_tcp_connections_per_ip"`
	// StatsD optionally pushes the gslb's metrics to a StatsD server.
	StatsD StatsD `yaml:"statsd"`
	// at is where the config file has the section's fields (Place); nil
	// when it was not read from one.
	at *fieldLines
}

// Zone is one zone, from an RFC 1035 master file or inline records.
type Zone struct {
	// Origin is the zone's apex (e.g. ide.example.com).
	Origin string `yaml:"origin"`
	// File is an RFC 1035 master file; relative names are relative to Origin.
	// A problem in it names its file, line and column, not the text there,
	// after this field's line and path (config.yaml:9: gslb.zones[1].file:
	// /etc/ringlb/x.zone line 12: …). It may include others ($INCLUDE, a
	// relative path from its directory); it and they are read only when
	// regular files. It is checked as NSD and Knot check a zone
	// (gslb/README.md, Zone files): refused for a CNAME beside other data, a
	// record of a class other than IN or of a meta-type, a name past 255
	// octets, no SOA or two, data outside the zone or below a DNAME, every
	// problem said (the first 100, and how many more); a record written
	// twice is one, and an RRset's TTL its first record's.
	File string `yaml:"file"`
	// Records are master-file lines ("www 300 IN A 192.0.2.1"), used when
	// File is empty; they include no file ($INCLUDE is refused: name the
	// zone's File instead). One SOA is required either way. They are
	// checked as File is, a problem named by the record's line and path
	// (config.yaml:11: gslb.zones[0].records[3]: …).
	Records []string `yaml:"records"`
	// Transfer allows AXFR and sends NOTIFY.
	Transfer Transfer `yaml:"transfer"`
	// DNSSEC signs the zone online (gslb/dnssec.go): answers to queries
	// with the DO bit carry signatures; others are as without it.
	DNSSEC *DNSSEC `yaml:"dnssec"`

	// at is where the config file has the zone (Place, RecordPlace); nil
	// when it was not read from one.
	at *zoneAt
}

// zoneAt is where a config file has a zone: its path there and the
// records as read, which RecordPlace places only while they are the ones
// the zone holds.
type zoneAt struct {
	lines   *fieldLines
	path    string // "gslb.zones[2]"
	records []string
}

// Place is where the config file has the section's field at path (a
// whole path: "gslb.names[0].name"), for the problems gslb finds in it
// when it loads the section; false when the section was not read from a
// file.
func (g *GSLB) Place(path string) (Place, bool) {
	if g.at == nil {
		return Place{}, false
	}
	return g.at.place(path), true
}

// MonitorTLSProblem is err, from ClientConfig of monitor name's TLS
// settings, named at the field of the file that did not load, where the
// config file has it, as the check names it (gslb reads the files again at
// every start and reload).
func (g *GSLB) MonitorTLSProblem(name string, err error) error {
	path, why := tlsFileField("gslb.monitors."+name+".tls", err)
	if g.at == nil {
		return fmt.Errorf("%s: %w", path, why)
	}
	return g.at.place(path).Problem("%v", why)
}

// Place is where the config file has the zone's field (a path below the
// zone: "file", "records", "transfer.allow[1]"; "" is the zone itself),
// for the problems gslb finds when it loads the zone; false when the zone
// was not read from a file.
func (z *Zone) Place(field string) (Place, bool) {
	if z.at == nil {
		return Place{}, false
	}
	path := z.at.path
	if field != "" {
		path += "." + field
	}
	return z.at.lines.place(path), true
}

// RecordPlace is where the config file has the zone's record i
// (Records[i]): gslb names a problem it finds in the record by the file's
// line of it, as Load names its own, not by its place in the list. False
// when the zone was not read from a file, or its records were replaced
// since (a record would be named by a line that holds another).
func (z *Zone) RecordPlace(i int) (Place, bool) {
	if z.at == nil || i < 0 || i >= len(z.Records) || len(z.Records) != len(z.at.records) || &z.Records[0] != &z.at.records[0] {
		return Place{}, false
	}
	return z.at.lines.place(fmt.Sprintf("%s.records[%d]", z.at.path, i)), true
}

// placeZones has the gslb section and each zone keep where the file has
// them (lines).
func (g *GSLB) placeZones(lines *fieldLines) {
	g.at = lines
	for i := range g.Zones {
		g.Zones[i].at = &zoneAt{lines: lines, path: fmt.Sprintf("gslb.zones[%d]", i), records: g.Zones[i].Records}
	}
}

// DNSSEC is online signing of one zone with ECDSA P-256 keys (algorithm 13).
type DNSSEC struct {
	// Keys are the zone's keys (at most 8). At least one must be an active
	// key-signing key (flags 257): it signs the DNSKEY set. Active
	// zone-signing keys (256) sign everything else; with none, the KSKs do
	// (a combined signing key).
	Keys []DNSSECKey `yaml:"keys"`
	// SignatureValidity is how long a new signature is valid (default
	// 168h); its inception is set an hour back for clients' clock skew.
	SignatureValidity Duration `yaml:"signature_validity"`
	// SignatureRefresh: a signature is replaced by a new one when less than
	// this is left of it (default 72h). Keep it above the zone's longest
	// TTL, so that no resolver holds a signature past its expiry, and, for
	// a zone secondaries transfer, at least twice its SOA expire (else a
	// warning), so that a secondary cut off serves no expired signature.
	SignatureRefresh Duration `yaml:"signature_refresh"`
	// DNSKEYTTL is the TTL of the DNSKEY, CDS and CDNSKEY sets (default 3600).
	DNSKEYTTL int `yaml:"dnskey_ttl"`
	// SignaturesPerSecond bounds the new signatures UDP answers may cost
	// (default 2000, with a second of burst): every query for a name never
	// asked before needs one (one a key that signs it: two through a
	// rollover), and spoofed sources can ask millions. Beyond
	// it a UDP answer that needs a new signature goes out empty with TC,
	// and the resolver retries over TCP. TCP answers have as many again,
	// apart: beyond them one waits its turn up to 1 s, then gets SERVFAIL.
	SignaturesPerSecond int `yaml:"signatures_per_second"`
	// TCPClientShare is the fraction of the TCP answers' budget one client
	// network (gslb.rate_limit's prefixes: /24, /56 by default) may spend
	// (default 0.25, with a second of burst; 1: no share, one client may
	// spend it all), so that one client asking for new names cannot starve
	// the others. Beyond it the client's TCP answers that need a new
	// signature get SERVFAIL at once.
	TCPClientShare float64 `yaml:"tcp_client_share"`
}

// DNSSECKey is one key of a zone.
type DNSSECKey struct {
	// File is the key's base name as dnssec-keygen and `ringlb keygen
	// -dnssec` print it (K<zone>+013+<tag>), with <File>.key (its DNSKEY)
	// and <File>.private (a secret file) beside it.
	File string `yaml:"file"`
	// State: active (default) — published in the DNSKEY set and signing;
	// published — in the DNSKEY set only (a new ZSK before it takes over,
	// an old one while signatures made with it are still cached).
	State string `yaml:"state"`

	// pair is the key pair as the check read it (checked).
	pair checked[dnssecPair]
}

// dnssecPair is a DNSSEC key pair read for zone.
type dnssecPair struct {
	zone   string
	key    *dns.DNSKEY
	signer crypto.Signer
}

// Read is the key pair of zone (ReadDNSSECKey): the one the check of k
// read, when k was checked (as Cluster.Keyring), else its files'.
func (k DNSSECKey) Read(zone string) (*dns.DNSKEY, crypto.Signer, error) {
	if p, ok := k.pair.of(k.File); ok && p.zone == dns.CanonicalName(zone) {
		key := *p.key // the caller's to change (its TTL)
		return &key, p.signer, nil
	}
	return ReadDNSSECKey(k.File, zone)
}

// DNSSEC key states (see DNSSECKey.State).
const (
	KeyActive    = "active"
	KeyPublished = "published"
)

// Transfer controls zone transfers to secondaries.
type Transfer struct {
	// Allow lists the client prefixes (CIDR) that may AXFR this zone,
	// written as geo prefixes are (no bits beyond the length, IPv4 as IPv4).
	Allow []string `yaml:"allow"`
	// Notify lists secondaries (host:port) told of every serial change.
	Notify []string `yaml:"notify"`
	// TSIG, when set, requires transfers to be signed with this key.
	TSIG *TSIG `yaml:"tsig"`
}

// TSIG is a shared transaction-signature key.
type TSIG struct {
	// Name is the key's name, as secondaries know it (e.g. xfr.example.com.).
	Name string `yaml:"name"`
	// Algorithm is hmac-sha256 (default), hmac-sha384, hmac-sha512 or hmac-sha1.
	Algorithm string `yaml:"algorithm"`
	// SecretFile holds the base64 secret (as tsig-keygen writes it; `ringlb
	// keygen` makes one), at least 16 bytes decoded.
	SecretFile string `yaml:"secret_file"`

	// secret is SecretFile's secret as the check read it (checked).
	secret checked[[]byte]
}

// Secret is the TSIG secret: the one the check of t read, when t was checked
// (as Cluster.Keyring), else the file's (ReadTSIGSecret).
func (t TSIG) Secret() ([]byte, error) {
	if secret, ok := t.secret.of(t.SecretFile); ok {
		return secret, nil
	}
	return ReadTSIGSecret(t.SecretFile)
}

// MinTSIGSecretBytes is the shortest TSIG secret accepted: every NOTIFY the
// gslb sends carries a MAC made with it, and whoever sees one on the wire
// (or asks with guesses: a wrong MAC is answered BADSIG) can try secrets
// against it offline — two bytes were found from one NOTIFY in 24,931
// HMACs. tsig-keygen and `ringlb keygen` make 32.
const MinTSIGSecretBytes = 16

// ReadTSIGSecret reads a TSIG secret file (transfer.tsig.secret_file):
// base64 as BIND and NSD write it, at least MinTSIGSecretBytes decoded.
// Errors never quote the file's content.
func ReadTSIGSecret(path string) ([]byte, error) {
	raw, err := readSecret(path, whatTSIG, maxSecretFileBytes)
	if err != nil {
		return nil, err
	}
	secret, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(secret) == 0 {
		return nil, fmt.Errorf("%s does not hold a base64 secret", path)
	}
	if len(secret) < MinTSIGSecretBytes {
		return nil, fmt.Errorf("%s: the secret is %d bytes, need at least %d: a short one can be found from one signed message (make one with: ringlb keygen, or tsig-keygen)", path, len(secret), MinTSIGSecretBytes)
	}
	return secret, nil
}

// Monitor is an active health check (health/), shared by the gslb's pool
// members and the balancer's static edges.
type Monitor struct {
	// Type is http (a GET of path), https or tcp (a connect). Default: http
	// for a gslb monitor, tcp for a static edge's.
	Type MonitorType `yaml:"type"`
	// Port probed on each member's address. Default: a static edge's URL's
	// port; for a gslb monitor 80 for http, 443 for https (tcp needs one).
	Port int `yaml:"port"`
	// Path of an HTTP probe (default /_ringlb/health): a path and a query,
	// no fragment (a request never carries one).
	Path string `yaml:"path"`
	// ExpectStatus is the HTTP status that means up (default 200).
	ExpectStatus int `yaml:"expect_status"`
	// Interval between checks (default 2s).
	Interval Duration `yaml:"interval"`
	// Timeout bounds each wait of a check on its target: the connect, and the answer to each message the check sends (default 1s, at most Interval).
	Timeout Duration `yaml:"timeout"`
	// Rise successes in a row bring a member up (default 2).
	Rise int `yaml:"rise"`
	// Fall failures in a row take a member down (default 2).
	Fall int `yaml:"fall"`
	// Jitter spreads probes by up to this fraction of Interval (default 0.1).
	Jitter float64 `yaml:"jitter"`
	// TLS is how a gslb https monitor verifies each member, as HAProxy's
	// "check-ssl verify required ca-file ... sni ...": with server_name set,
	// a member's certificate must chain to ca_file (default: the system's
	// roots) and name server_name, sent as SNI and as the check's Host (with
	// the port unless 443: a member holding several sites answers for that
	// one); a certificate that does not verify is a failed check. Without it the check verifies nothing
	// (anything answering at the address keeps the member up; `ringlb
	// check` warns). Files are read at start and on every reload. Refused
	// on a static edge's monitor: its checks verify by the edge's own tls.
	TLS *EdgeTLS `yaml:"tls"`
}

// ManagedName is a name answered from region pools.
type ManagedName struct {
	// Name is the traffic-managed name, inside one of the zones and not at
	// or below a delegation (an NS RRset below the apex) of its zone.
	Name string `yaml:"name"`
	// TTL of the answers, in seconds (default 30).
	TTL int `yaml:"ttl"`
	// FailoverTTL is used while the client's region is failed over (default 10).
	FailoverTTL int `yaml:"failover_ttl"`
	// MaxAnswers caps the addresses in one answer (default 0: all).
	MaxAnswers int `yaml:"max_answers"`
	// AllDown: "serve_all" answers every member of a family when none is
	// healthy (like gdnsd); "servfail" answers SERVFAIL. Default serve_all.
	AllDown string `yaml:"all_down"`
	// DefaultRegion serves clients that no geo prefix matches.
	DefaultRegion string `yaml:"default_region"`
	// AutoRecover returns clients to their region as soon as it is healthy
	// again (default true); when false an operator recovers it by the admin API.
	AutoRecover *bool `yaml:"auto_recover"`
	// Geo maps regions to client prefixes (source address or EDNS Client
	// Subnet): a client goes to the region of its longest matching prefix,
	// and a prefix is one region's. A prefix is written as it is matched:
	// no bits set beyond its length, an IPv4 one as IPv4 (not ::ffff:…).
	Geo map[string][]string `yaml:"geo"`
	// Regions are the pools, by region name.
	Regions map[string]Region `yaml:"regions"`
}

// Region is one pool of a managed name.
type Region struct {
	// Members are the region's addresses: its balancers' floating IPs.
	Members []Member `yaml:"members"`
	// Monitor names an entry of gslb.monitors.
	Monitor string `yaml:"monitor"`
	// ServeMode for every member without its own: always | obey | remove | no
	// (default obey).
	ServeMode string `yaml:"serve_mode"`
	// Failover lists the regions to answer from, in order, while this one
	// has no member to serve, each address family on its own: A from the
	// first that serves IPv4 while this one serves none, AAAA likewise. A
	// family this region has no members of is answered NODATA, never
	// failed over.
	Failover []string `yaml:"failover"`
	// Steer sends a share of this region's clients to its failover region
	// while the region's edges are loaded (gslb/steer.go); nil: never.
	Steer *Steer `yaml:"steer"`
}

// Steer is load-aware steering: while the edges of a region (gossip members
// of role edge whose cluster.region is the region's name) are loaded above
// a level, Share of the region's clients get the first failover region
// that serves and is not loaded itself.
type Steer struct {
	// SessionsPerEdge starts steering when the region's edges hold at
	// least this many live sessions each, on average (0: not a trigger).
	SessionsPerEdge int `yaml:"sessions_per_edge"`
	// CPUPercent starts steering when the region's edges are at least this
	// busy, on average, in percent of the CPUs each edge uses (0: not a trigger).
	CPUPercent float64 `yaml:"cpu_percent"`
	// Share is the fraction of the region's clients, chosen by client
	// network (/24, /56), answered from the failover region while steering
	// (default 0.5). One client network always gets the same answer.
	Share float64 `yaml:"share"`
	// Hysteresis: steering ends only once every trigger is below
	// (1 - Hysteresis) of its level (default 0.2; range (0, 0.9]), so
	// answers do not flap while the load hovers at the level.
	Hysteresis float64 `yaml:"hysteresis"`
}

// Member is one address of a pool: a regional balancer's floating IP.
type Member struct {
	// Name is the member's name in its region (admin API, metrics).
	Name string `yaml:"name"`
	// Address is the IPv4 or IPv6 address answered (A or AAAA).
	Address string `yaml:"address"`
	// Probe overrides where the monitor checks this member (host:port);
	// default: address and the monitor's port.
	Probe string `yaml:"probe"`
	// ServeMode overrides the region's serve_mode for this member.
	ServeMode string `yaml:"serve_mode"`
}

// DefaultRRLResponsesPerSecond is gslb.rate_limit.responses_per_second
// when unset.
const DefaultRRLResponsesPerSecond = 200

// RateLimit is response rate limiting (RRL) against reflection floods.
type RateLimit struct {
	// ResponsesPerSecond per client prefix, also the burst; 0 disables
	// RRL (default 200, as NSD: an answer may be larger than its query, so
	// a server without a limit lends its bandwidth to anyone who spoofs a
	// victim's address; a resolver's clients over the limit get TC and
	// ask over TCP).
	ResponsesPerSecond *int `yaml:"responses_per_second"`
	// Slip: every Nth limited UDP response is sent truncated (TC) instead of
	// dropped, so real clients retry over TCP (default 2; 0 drops all).
	Slip *int `yaml:"slip"`
	// IPv4Prefix groups IPv4 clients into one rate (default /24), and
	// into one share of a signed zone's TCP budget (tcp_client_share).
	IPv4Prefix int `yaml:"ipv4_prefix"`
	// IPv6Prefix groups IPv6 clients into one rate (default /56), and
	// into one share of a signed zone's TCP budget (tcp_client_share).
	IPv6Prefix int `yaml:"ipv6_prefix"`
}

// Serve modes (docs/CONTRACT.md and gslb/README.md say what each does).
const (
	ServeAlways = "always"
	ServeObey   = "obey"
	ServeRemove = "remove"
	ServeNo     = "no"
)

// MonitorType is the kind of check a monitor makes.
type MonitorType string

// Monitor types.
const (
	MonitorHTTP  MonitorType = "http"
	MonitorHTTPS MonitorType = "https"
	MonitorTCP   MonitorType = "tcp"
)

// DefaultMonitor returns a monitor with every default filled in.
func DefaultMonitor() Monitor {
	var m Monitor
	m.Provision()
	return m
}

// Provision fills the unset fields of a monitor with their defaults.
// Idempotent.
func (m *Monitor) Provision() {
	if m.Type == "" {
		m.Type = MonitorHTTP
	}
	if m.Port == 0 {
		switch m.Type {
		case MonitorHTTP:
			m.Port = 80
		case MonitorHTTPS:
			m.Port = 443
		}
	}
	if m.Path == "" && m.Type != MonitorTCP {
		m.Path = PathHealth
	}
	setDefaultInt(&m.ExpectStatus, 200)
	setDefaultDuration(&m.Interval, 2*time.Second)
	setDefaultDuration(&m.Timeout, time.Second)
	setDefaultInt(&m.Rise, 2)
	setDefaultInt(&m.Fall, 2)
	if m.Jitter == 0 {
		m.Jitter = 0.1
	}
}

// Provision fills the unset fields of the gslb section with their defaults.
// Idempotent.
func (g *GSLB) Provision() {
	setDefault(&g.Listen, ":53")
	setDefault(&g.Admin.Listen, "127.0.0.1:9053")
	g.Admin.provision()
	setDefaultInt(&g.MaxUDPSize, 1232)
	setDefaultInt(&g.MaxTCPConnections, DefaultGSLBMaxTCPConnections(g.Admin.MaxConnections))
	setDefaultInt(&g.MaxTCPConnectionsPerIP, DefaultGSLBMaxTCPConnectionsPerIP(g.MaxTCPConnections))
	g.StatsD.provision()
	for k, m := range g.Monitors {
		m.Provision()
		g.Monitors[k] = m
	}
	for i := range g.Zones {
		g.Zones[i].Origin = dns.CanonicalName(UnpackedName(dns.Fqdn(g.Zones[i].Origin)))
		if t := g.Zones[i].Transfer.TSIG; t != nil && t.Algorithm == "" {
			t.Algorithm = "hmac-sha256"
		}
		if d := g.Zones[i].DNSSEC; d != nil {
			d.provision()
		}
	}
	for i := range g.Names {
		n := &g.Names[i]
		n.Name = dns.CanonicalName(UnpackedName(dns.Fqdn(n.Name)))
		setDefaultInt(&n.TTL, 30)
		setDefaultInt(&n.FailoverTTL, 10)
		setDefault(&n.AllDown, "serve_all")
		if n.AutoRecover == nil {
			n.AutoRecover = ptr(true)
		}
		for name, r := range n.Regions {
			setDefault(&r.ServeMode, ServeObey)
			for j := range r.Members {
				setDefault(&r.Members[j].ServeMode, r.ServeMode)
			}
			if st := r.Steer; st != nil {
				if st.Share == 0 {
					st.Share = 0.5
				}
				if st.Hysteresis == 0 {
					st.Hysteresis = 0.2
				}
			}
			n.Regions[name] = r
		}
	}
	rl := &g.RateLimit
	if rl.ResponsesPerSecond == nil {
		rl.ResponsesPerSecond = ptr(DefaultRRLResponsesPerSecond)
	}
	if rl.Slip == nil {
		rl.Slip = ptr(2)
	}
	setDefaultInt(&rl.IPv4Prefix, 24)
	setDefaultInt(&rl.IPv6Prefix, 56)
}

func (g *GSLB) validate(ps *problems) {
	checkHostPort(ps, "gslb.listen", g.Listen, true)
	checkAdmin(ps, "gslb.admin", &g.Admin)
	checkStatsD(ps, "gslb.statsd", g.StatsD)
	for _, name := range sortedMapKeys(g.Monitors) {
		g.Monitors[name].validate(ps, "gslb.monitors."+name)
		g.Monitors[name].warnings(ps, "gslb.monitors."+name)
	}
	origins := map[string]bool{}
	for i, z := range g.Zones {
		p := fmt.Sprintf("gslb.zones[%d]", i)
		if _, ok := dns.IsDomainName(z.Origin); !ok || z.Origin == "." {
			ps.add(p+".origin", "%q is not a domain name", z.Origin)
		}
		if origins[z.Origin] {
			ps.add(p+".origin", "zone %s is listed twice", z.Origin)
		}
		origins[z.Origin] = true
		switch {
		case z.File != "" && len(z.Records) > 0:
			ps.add(p, "set file or records, not both")
		case z.File != "":
			checkFile(ps, p+".file", z.File)
		case len(z.Records) == 0:
			ps.add(p, "needs a file or records (with one SOA)")
		default:
			soa := 0
			for j, line := range z.Records {
				rr, err := inlineRR(z.Origin, line)
				if err != nil {
					ps.add(fmt.Sprintf("%s.records[%d]", p, j), "%q: %v", line, err)
					continue
				}
				if rr == nil {
					continue
				}
				if rr.Header().Rrtype == dns.TypeSOA {
					soa++
				}
				if !dns.IsSubDomain(z.Origin, rr.Header().Name) {
					ps.add(fmt.Sprintf("%s.records[%d]", p, j), "%s is outside zone %s", rr.Header().Name, z.Origin)
				}
			}
			if soa != 1 {
				ps.add(p+".records", "need exactly one SOA record, found %d", soa)
			}
		}
		for j, c := range z.Transfer.Allow {
			checkPrefix(ps, fmt.Sprintf("%s.transfer.allow[%d]", p, j), c, "192.0.2.0/24")
		}
		for j, n := range z.Transfer.Notify {
			checkHostPort(ps, fmt.Sprintf("%s.transfer.notify[%d]", p, j), n, false)
		}
		if t := z.Transfer.TSIG; t != nil {
			if _, ok := dns.IsDomainName(t.Name); !ok || t.Name == "" {
				ps.add(p+".transfer.tsig.name", "%q is not a key name", t.Name)
			}
			switch dns.Fqdn(t.Algorithm) {
			case dns.HmacSHA256, dns.HmacSHA512, dns.HmacSHA1, dns.HmacSHA384:
			default:
				ps.add(p+".transfer.tsig.algorithm", "must be hmac-sha256, hmac-sha384, hmac-sha512 or hmac-sha1, got %q", t.Algorithm)
			}
			if t.SecretFile == "" {
				ps.add(p+".transfer.tsig.secret_file", "is required")
			} else {
				var err error
				if t.secret, err = keep(t.SecretFile, ReadTSIGSecret); err != nil {
					ps.add(p+".transfer.tsig.secret_file", "%v", err)
				}
				ps.warnSecret(p+".transfer.tsig.secret_file", t.SecretFile, whatTSIG)
			}
		}
		if d := z.DNSSEC; d != nil {
			d.validate(ps, p+".dnssec", z.Origin)
		}
	}
	seen := map[string]bool{}
	for i, n := range g.Names {
		g.validateName(ps, fmt.Sprintf("gslb.names[%d]", i), n, seen)
	}
	rl := g.RateLimit
	checkRange(ps, "gslb.udp_workers", g.UDPWorkers, 0, 1024)
	// 512 is what every client takes (RFC 1035); beyond 4096 answers
	// fragment on nearly every path, and amplify more.
	checkRange(ps, "gslb.max_udp_size", g.MaxUDPSize, 512, 4096)
	checkRange(ps, "gslb.max_tcp_connections", g.MaxTCPConnections, 1, MaxConnections)
	checkRange(ps, "gslb.max_tcp_connections_per_ip", g.MaxTCPConnectionsPerIP, 1, MaxConnections)
	checkRange(ps, "gslb.rate_limit.responses_per_second", *rl.ResponsesPerSecond, 0, 10_000_000)
	checkRange(ps, "gslb.rate_limit.slip", *rl.Slip, 0, 10)
	checkRange(ps, "gslb.rate_limit.ipv4_prefix", rl.IPv4Prefix, 8, 32)
	checkRange(ps, "gslb.rate_limit.ipv6_prefix", rl.IPv6Prefix, 16, 128)
}

func (g *GSLB) validateName(ps *problems, p string, n ManagedName, seen map[string]bool) {
	if _, ok := dns.IsDomainName(n.Name); !ok || n.Name == "." {
		ps.add(p+".name", "%q is not a domain name", n.Name)
	}
	if seen[n.Name] {
		ps.add(p+".name", "%s is managed twice", n.Name)
	}
	seen[n.Name] = true
	inZone := false
	for _, z := range g.Zones {
		inZone = inZone || dns.IsSubDomain(z.Origin, n.Name)
	}
	if !inZone {
		ps.add(p+".name", "%s is in none of gslb.zones; add its zone", n.Name)
	}
	checkRange(ps, p+".ttl", n.TTL, 0, 86400)
	checkRange(ps, p+".failover_ttl", n.FailoverTTL, 0, 86400)
	checkRange(ps, p+".max_answers", n.MaxAnswers, 0, 64)
	if n.AllDown != "serve_all" && n.AllDown != "servfail" {
		ps.add(p+".all_down", "must be serve_all or servfail, got %q", n.AllDown)
	}
	if len(n.Regions) == 0 {
		ps.add(p+".regions", "needs at least one region")
	}
	if n.DefaultRegion != "" {
		if _, ok := n.Regions[n.DefaultRegion]; !ok {
			ps.add(p+".default_region", "%q is not one of the regions", n.DefaultRegion)
		}
	}
	// A client goes to the region of its longest matching prefix; one
	// prefix in two regions went to whichever the map's order put first,
	// drawn anew at every start and reload: replicas answered its clients
	// differently, and a reload could move them.
	type geoField struct{ region, path, text string }
	prefixes := map[netip.Prefix]geoField{}
	for _, region := range sortedMapKeys(n.Geo) {
		if _, ok := n.Regions[region]; !ok {
			ps.add(p+".geo."+region, "%q is not one of the regions", region)
		}
		for j, c := range n.Geo[region] {
			path := fmt.Sprintf("%s.geo.%s[%d]", p, region, j)
			pfx, ok := checkPrefix(ps, path, c, "10.1.0.0/16")
			if !ok {
				continue
			}
			first, ok := prefixes[pfx.Masked()]
			switch {
			case !ok:
				prefixes[pfx.Masked()] = geoField{region, path, c}
			case first.region != region:
				other := first.path
				if first.text != c {
					other += ": " + first.text
				}
				ps.add(path, "%s is also region %s's (%s): its clients would go to either, drawn anew at every start and reload; give it to one region", c, first.region, other)
			}
		}
	}
	for _, name := range sortedMapKeys(n.Regions) {
		r := n.Regions[name]
		rp := p + ".regions." + name
		if len(r.Members) == 0 {
			ps.add(rp+".members", "needs at least one member")
		}
		if r.Monitor != "" {
			if _, ok := g.Monitors[r.Monitor]; !ok {
				ps.add(rp+".monitor", "%q is not in gslb.monitors", r.Monitor)
			}
		}
		checkServeMode(ps, rp+".serve_mode", r.ServeMode)
		if st := r.Steer; st != nil {
			validateSteer(ps, rp+".steer", *st, len(r.Failover) > 0)
		}
		for j, f := range r.Failover {
			if _, ok := n.Regions[f]; !ok || f == name {
				ps.add(fmt.Sprintf("%s.failover[%d]", rp, j), "%q must be another region of this name", f)
			}
		}
		memberNames := map[string]bool{}
		for j, m := range r.Members {
			mp := fmt.Sprintf("%s.members[%d]", rp, j)
			if m.Name == "" || memberNames[m.Name] {
				ps.add(mp+".name", "must be set and unique in the region, got %q", m.Name)
			}
			memberNames[m.Name] = true
			if ip := net.ParseIP(m.Address); ip == nil {
				ps.add(mp+".address", "%q is not an IPv4 or IPv6 address", m.Address)
			}
			if m.Probe != "" {
				checkHostPort(ps, mp+".probe", m.Probe, false)
			}
			checkServeMode(ps, mp+".serve_mode", m.ServeMode)
			if r.Monitor == "" && (m.ServeMode == ServeObey) {
				ps.add(mp+".serve_mode", "obey needs a monitor on region %s (or use always)", name)
			}
		}
	}
}

// DefaultDNSSEC returns the DNSSEC settings of a zone signed with keys
// (active), every default filled in.
func DefaultDNSSEC(keys ...string) *DNSSEC {
	d := &DNSSEC{}
	for _, k := range keys {
		d.Keys = append(d.Keys, DNSSECKey{File: k})
	}
	d.provision()
	return d
}

func (d *DNSSEC) provision() {
	setDefaultDuration(&d.SignatureValidity, 168*time.Hour)
	setDefaultDuration(&d.SignatureRefresh, 72*time.Hour)
	setDefaultInt(&d.DNSKEYTTL, 3600)
	setDefaultInt(&d.SignaturesPerSecond, 2000)
	if d.TCPClientShare == 0 {
		d.TCPClientShare = 0.25
	}
	for i := range d.Keys {
		setDefault(&d.Keys[i].State, KeyActive)
	}
}

// maxDNSSECKeys bounds a zone's keys: a rollover needs two of a kind.
const maxDNSSECKeys = 8

func (d *DNSSEC) validate(ps *problems, p, origin string) {
	if len(d.Keys) == 0 {
		ps.add(p+".keys", "needs at least one key (make a pair with: ringlb keygen -dnssec %s)", strings.TrimSuffix(origin, "."))
	}
	if len(d.Keys) > maxDNSSECKeys {
		ps.add(p+".keys", "%d keys, at most %d (remove the retired ones)", len(d.Keys), maxDNSSECKeys)
	}
	tags := map[uint16]int{}
	activeKSK := false
	for i, k := range d.Keys {
		kp := fmt.Sprintf("%s.keys[%d]", p, i)
		if k.State != KeyActive && k.State != KeyPublished {
			ps.add(kp+".state", "must be active or published, got %q", k.State)
		}
		if k.File == "" {
			ps.add(kp+".file", "is required: the key's base name (K%s+013+<tag>)", origin)
			continue
		}
		key, signer, err := ReadDNSSECKey(k.File, origin)
		if err != nil {
			ps.add(kp+".file", "%v", err)
			continue
		}
		d.Keys[i].pair = checked[dnssecPair]{file: k.File, v: dnssecPair{zone: dns.CanonicalName(origin), key: key, signer: signer}}
		_, priv := DNSSECKeyFiles(k.File)
		ps.warnSecret(kp+".file", priv, whatDNSSECKey(dns.Fqdn(origin)))
		if j, dup := tags[key.KeyTag()]; dup {
			ps.add(kp+".file", "key tag %d is also keys[%d]'s: list a key once, or make another", key.KeyTag(), j)
		}
		tags[key.KeyTag()] = i
		activeKSK = activeKSK || (k.State == KeyActive && key.Flags == FlagsKSK)
	}
	if len(tags) == len(d.Keys) && !activeKSK {
		ps.add(p+".keys", "needs an active key-signing key (flags 257): it signs the DNSKEY set (ringlb keygen -dnssec %s -type ksk)", strings.TrimSuffix(origin, "."))
	}
	if v := d.SignatureValidity.D(); v < time.Hour || v > 90*24*time.Hour {
		ps.add(p+".signature_validity", "must be in range [1h, 2160h], got %s", v)
	}
	if r := d.SignatureRefresh.D(); r < time.Hour || r >= d.SignatureValidity.D() {
		ps.add(p+".signature_refresh", "must be at least 1h and less than signature_validity (%s), got %s", d.SignatureValidity.D(), r)
	} else if r < time.Duration(d.DNSKEYTTL)*time.Second {
		ps.add(p+".signature_refresh", "must be at least dnskey_ttl (%ds): a resolver may hold the DNSKEY set's signature that long", d.DNSKEYTTL)
	}
	checkRange(ps, p+".dnskey_ttl", d.DNSKEYTTL, 0, 86400)
	checkRange(ps, p+".signatures_per_second", d.SignaturesPerSecond, 1, 1_000_000)
	if d.TCPClientShare <= 0 || d.TCPClientShare > 1 {
		ps.add(p+".tcp_client_share", "must be in range (0, 1], got %g", d.TCPClientShare)
	}
}

func validateSteer(ps *problems, p string, st Steer, hasFailover bool) {
	if !hasFailover {
		ps.add(p, "steers to the region's failover regions: list one in failover")
	}
	if st.SessionsPerEdge == 0 && st.CPUPercent == 0 {
		ps.add(p, "needs a level: sessions_per_edge, cpu_percent or both")
	}
	checkRange(ps, p+".sessions_per_edge", st.SessionsPerEdge, 0, 10_000_000)
	if st.CPUPercent < 0 || st.CPUPercent > 100 {
		ps.add(p+".cpu_percent", "must be in range [0, 100], got %g", st.CPUPercent)
	}
	if st.Share <= 0 || st.Share > 1 {
		ps.add(p+".share", "must be in range (0, 1], got %g", st.Share)
	}
	if st.Hysteresis <= 0 || st.Hysteresis > 0.9 {
		ps.add(p+".hysteresis", "must be in range (0, 0.9], got %g", st.Hysteresis)
	}
}

// validatePath checks an HTTP monitor's path, which a check asks for as
// its URL's.
func (m Monitor) validatePath(ps *problems, p string) {
	_, err := url.Parse("http://member" + m.Path)
	path, fragment, hasFragment := strings.Cut(m.Path, "#")
	switch {
	case !strings.HasPrefix(m.Path, "/"):
		ps.add(p, "must start with /, got %q", m.Path)
	case err != nil:
		// One that is no URL path (a "%" not followed by two hex digits,
		// a control character) failed every check of every member,
		// before anything was sent.
		ps.add(p, "%q is no URL path (%v): escape it as in a URL (%%25 for %%, %%20 for a space)", m.Path, errors.Unwrap(err))
	case hasFragment:
		// A request never carries its URL's fragment: /health#ready was
		// asked for as /health, and passed for it.
		ps.add(p, "%q has a fragment (#%s), which a request never carries: the check would ask for %s; escape it as %%23 if the path holds a #", m.Path, fragment, path)
	}
}

func (m Monitor) validate(ps *problems, p string) {
	switch m.Type {
	case MonitorHTTP, MonitorHTTPS, MonitorTCP:
	default:
		ps.add(p+".type", "must be %s, %s or %s, got %q", MonitorHTTP, MonitorHTTPS, MonitorTCP, m.Type)
	}
	checkRange(ps, p+".port", m.Port, 1, 65535)
	if m.Type != MonitorTCP {
		m.validatePath(ps, p+".path")
	}
	checkRange(ps, p+".expect_status", m.ExpectStatus, 100, 599)
	if m.Interval.D() < 10*time.Millisecond {
		ps.add(p+".interval", "must be at least 10ms, got %s", m.Interval.D())
	}
	if m.Timeout <= 0 || m.Timeout > m.Interval {
		ps.add(p+".timeout", "must be positive and at most interval (%s), got %s", m.Interval.D(), m.Timeout.D())
	}
	checkRange(ps, p+".rise", m.Rise, 1, 100)
	checkRange(ps, p+".fall", m.Fall, 1, 100)
	if m.Jitter < 0 || m.Jitter > 1 {
		ps.add(p+".jitter", "must be in range [0, 1], got %g", m.Jitter)
	}
	if t := m.TLS; t != nil && t.Set() {
		switch {
		case m.Type != MonitorHTTPS:
			ps.add(p+".tls", "is for type https, got type %s", m.Type)
		case t.ServerName == "":
			// A member is an address: without a name there is nothing
			// its certificate could be checked against.
			ps.add(p+".tls.server_name", "is required with tls: the name every member's certificate must carry (sent as SNI)")
		}
		t.validateFiles(ps, p+".tls")
	}
}

// warnings are what a monitor lets through that an operator should know of
// (`ringlb check` says them; they are not problems).
func (m Monitor) warnings(ps *problems, p string) {
	if m.Type == MonitorHTTPS && (m.TLS == nil || m.TLS.ServerName == "") {
		ps.warn(p+".type", "https verifies nothing without tls.server_name: anything answering at a member's address keeps it up; set tls.server_name (and tls.ca_file unless the system's roots sign the members' certificates)")
	}
}

func checkServeMode(ps *problems, p, mode string) {
	switch mode {
	case ServeAlways, ServeObey, ServeRemove, ServeNo:
	default:
		ps.add(p, "must be always, obey, remove or no, got %q", mode)
	}
}

func sortedMapKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// inlineRR reads one line of a zone's inline records as the gslb reads them:
// without $INCLUDE (the zone parser's default). dns.NewRR allows it, and a
// check — `ringlb check`, the config API's — would have read whatever file a
// record named and quoted it in its problem.
func inlineRR(origin, line string) (dns.RR, error) {
	zp := dns.NewZoneParser(strings.NewReader(line), dns.Fqdn(origin), "")
	rr, _ := zp.Next()
	return rr, zp.Err()
}

// UnpackedName is name as miekg/dns writes a name it unpacks — a
// question's, which answers look up — its case kept: a zone file may write
// any octet of a label as \DDD or \X (RFC 1035 5.1), and sp\032ace, \066ig
// and dot\046ted are the names sp\ ace, Big and dot\.ted (one label).
// Keyed as written, such a name was never found: NXDOMAIN, where NSD and
// Knot answer it. The zones' names (gslb's loader), the zones' origins
// and the managed names (provision) are so written: a managed name was
// lower-cased only, and one written with an escape was never answered.
// Every octet outside printable ASCII comes back as \DDD, so lower-casing
// the result (dns.CanonicalName) touches ASCII letters only, as names
// compare (RFC 4343). A name with no wire form is returned as it is (gslb's
// fits refuses its record, the config's check such a name). A name of printable ASCII with no
// character miekg/dns escapes is its own unpacked form: returned without
// packing, so a zone of plain names pays nothing.
func UnpackedName(name string) string {
	plain := true
	for i := 0; i < len(name) && plain; i++ {
		plain = PlainOctet(name[i])
	}
	if plain {
		return name
	}
	var buf [256]byte
	n, err := dns.PackDomainName(name, buf[:], 0, nil, false)
	if err != nil {
		return name
	}
	if s, _, err := dns.UnpackDomainName(buf[:n], 0); err == nil {
		return s
	}
	return name
}

// PlainOctet says whether octet c of a label stands for itself in a name
// as miekg/dns writes it (a dot aside, which separates labels): printable
// ASCII but for the octets it escapes. gslb's UDP answer cache spells a
// question's name so to find its managed name, and leaves any other to the
// full path: it took a\;b for a;b, a name of no pool, and cached a managed
// answer for every client whatever their region.
func PlainOctet(c byte) bool {
	switch c {
	case '\\', '\'', '@', ';', '(', ')', '"':
		return false
	}
	return c > ' ' && c <= '~'
}
