package configs

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"
)

// Defaults, in one place. A zero Config plus these is a working single node.
const (
	DefaultGossipBind      = "0.0.0.0:7946"
	DefaultEdgeListen      = ":7101"
	DefaultEdgeAdmin       = "127.0.0.1:9101"
	DefaultBalancerListen  = ":8080"
	DefaultBalancerAdmin   = "127.0.0.1:9090"
	DefaultMaxParticipants = 64
	DefaultMaxMessageBytes = 64 << 10
	DefaultHistoryMessages = 1000
	DefaultHistoryBytes    = 1 << 20
	DefaultSendQueue       = 256
	DefaultKeyMaxLength    = 256
	DefaultStatsDInterval  = 10 * time.Second
	// MaxEdgeWeight bounds an edge's weight, in config and in what a node
	// believes another announces: a weight is a share of the ring.
	MaxEdgeWeight = 10
	// DefaultMaxTokenTTL bounds a join token's lifetime, and so how long a
	// user revocation must be remembered.
	DefaultMaxTokenTTL = 24 * time.Hour
	// Ring defaults come from the measurement kept as a test in balancer/ring:
	// with 7919 partitions, replication 400 and load 1.05 the busiest edge
	// holds ≤ 1.05× the mean and a 3→4 scale-out moves ≈ the ideal quarter.
	DefaultRingPartitions  = 7919
	DefaultRingReplication = 400
	DefaultRingLoad        = 1.05
	// DefaultMaxBodyBytes bounds a request body through the balancer: IDE
	// traffic is WebSocket frames and small API calls, so a larger body is
	// refused (413) unless an operator raises the limit for it.
	DefaultMaxBodyBytes = 1 << 20
)

// DefaultKeySources is the contract's default order of stickiness key sources.
var DefaultKeySources = []string{"header:ctstickiness", "cookie:ctstickiness", "query:token"}

func (c *Config) applyDefaults() {
	cl := &c.Cluster
	if cl.Name == "" {
		cl.Name, _ = os.Hostname()
	}
	if cl.Bind == "" {
		cl.Bind = DefaultGossipBind
	}
	if cl.Profile == "" {
		cl.Profile = "lan"
	}
	if len(cl.AllowedNetworks) == 0 {
		cl.AllowedNetworks = append([]string(nil), DefaultAllowedNetworks...)
	}

	e := &c.Edge
	setDefault(&e.Listen, DefaultEdgeListen)
	setDefault(&e.Admin.Listen, DefaultEdgeAdmin)
	if e.AdvertiseURL == "" {
		e.AdvertiseURL = "http://" + ReachableAddr(e.Listen)
	}
	setDefaultInt(&e.Weight, 1)
	setDefaultInt(&e.MaxParticipants, DefaultMaxParticipants)
	setDefaultInt(&e.MaxMessageBytes, DefaultMaxMessageBytes)
	setDefaultInt(&e.History.Messages, DefaultHistoryMessages)
	setDefaultInt(&e.History.Bytes, DefaultHistoryBytes)
	setDefaultInt(&e.SendQueue, DefaultSendQueue)
	setDefaultInt(&e.MaxConnections, DefaultEdgeMaxConnections())
	setDefaultDuration(&e.IdleGrace, 60*time.Second)
	setDefaultDuration(&e.DrainTimeout, 30*time.Second)
	setDefault(&e.Ownership, OwnershipRing)
	setDefaultDuration(&e.StatsD.Interval, DefaultStatsDInterval)
	e.Auth.Provision()

	b := &c.Balancer
	setDefault(&b.Listen, DefaultBalancerListen)
	setDefault(&b.Admin.Listen, DefaultBalancerAdmin)
	if len(b.Key.Sources) == 0 {
		b.Key.Sources = append([]string(nil), DefaultKeySources...)
	}
	if b.Key.HashQuery == nil {
		b.Key.HashQuery = ptr(true)
	}
	if b.Key.AssignCookie == nil {
		b.Key.AssignCookie = ptr(true)
	}
	setDefaultInt(&b.Key.MaxLength, DefaultKeyMaxLength)
	setDefaultInt(&b.Ring.Partitions, DefaultRingPartitions)
	setDefaultInt(&b.Ring.Replication, DefaultRingReplication)
	if b.Ring.Load == 0 {
		b.Ring.Load = DefaultRingLoad
	}
	for i := range b.Edges {
		e := &b.Edges[i]
		setDefaultInt(&e.Weight, 1)
		if e.Monitor == nil {
			e.Monitor = &Monitor{Type: "tcp"}
		}
		if e.Monitor.Port == 0 {
			if u, err := url.Parse(e.URL); err == nil {
				if p, err := parsePort(u.Port()); err == nil && p > 0 {
					e.Monitor.Port = p
				} else if u.Scheme == "https" {
					e.Monitor.Port = 443
				} else {
					e.Monitor.Port = 80
				}
			}
		}
		e.Monitor.applyDefaults()
	}
	setDefaultDuration(&b.DialTimeout, 2*time.Second)
	setDefaultDuration(&b.IdleTimeout, 60*time.Second)
	setDefaultDuration(&b.TunnelIdleTimeout, 10*time.Minute)
	setDefaultDuration(&b.Limits.RequestTimeout, 30*time.Second)
	setDefaultInt(&b.Limits.MaxHeaderBytes, 8<<10)
	if b.Limits.MaxBodyBytes == 0 {
		b.Limits.MaxBodyBytes = DefaultMaxBodyBytes
	}
	setDefaultInt(&b.Limits.MaxConnections, DefaultBalancerMaxConnections())
	if b.Limits.NewConnectionsPerIP > 0 && b.Limits.NewConnectionsBurst == 0 {
		b.Limits.NewConnectionsBurst = max(int(2*b.Limits.NewConnectionsPerIP), 1)
	}

	c.GSLB.applyDefaults()
}

// Provision fills the unset fields of a with their defaults; it is the
// one home of edge.auth's defaults (Load calls it; so does sessions.New,
// for a config built in code). Idempotent.
func (a *EdgeAuth) Provision() {
	if a.Anonymous == "" {
		switch {
		case a.Required:
			a.Anonymous = AnonymousDeny
		case a.HMACSecretFile != "":
			// With a secret configured, links carry tokens: a link minus its
			// token must not be worth more than a viewer's.
			a.Anonymous = AnonymousViewer
		default:
			a.Anonymous = AnonymousEditor // no auth configured
		}
	}
	setDefaultDuration(&a.MaxTokenTTL, DefaultMaxTokenTTL)
}

// maxMaxTokenTTL bounds edge.auth.max_token_ttl: user revocations are kept
// that long, and a token valid for more than a month is a password.
const maxMaxTokenTTL = 30 * 24 * time.Hour

func (a EdgeAuth) validate(ps *problems) {
	checkFile(ps, "edge.auth.hmac_secret_file", a.HMACSecretFile)
	switch a.Anonymous {
	case AnonymousEditor, AnonymousViewer, AnonymousDeny:
	default:
		ps.add("edge.auth.anonymous", "must be %s, %s or %s, got %q", AnonymousEditor, AnonymousViewer, AnonymousDeny, a.Anonymous)
	}
	switch {
	case a.Required && a.Anonymous != AnonymousDeny:
		ps.add("edge.auth.required", "true means anonymous: deny, but edge.auth.anonymous is %q: set one of them", a.Anonymous)
	case a.Required && a.HMACSecretFile == "":
		ps.add("edge.auth.required", "needs edge.auth.hmac_secret_file to verify tokens with")
	case a.Anonymous != AnonymousEditor && a.HMACSecretFile == "":
		ps.add("edge.auth.anonymous", "%s needs edge.auth.hmac_secret_file: without it no join could be an editor", a.Anonymous)
	}
	if a.MaxTokenTTL < Duration(time.Minute) || a.MaxTokenTTL > Duration(maxMaxTokenTTL) {
		ps.add("edge.auth.max_token_ttl", "must be in range [1m, %s], got %s", maxMaxTokenTTL, a.MaxTokenTTL.D())
	}
}

// problem is a validation finding before it is located in the file.
type problem struct{ path, msg string }

type problems []problem

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, problem{path, fmt.Sprintf(format, args...)})
}

// validate checks every rule and returns every violation; each message says
// what is wrong, the value given, and what is allowed.
func (c *Config) validate() []problem {
	var ps problems
	cl := c.Cluster
	checkHostPort(&ps, "cluster.bind", cl.Bind, true)
	if cl.Advertise != "" {
		checkHostPort(&ps, "cluster.advertise", cl.Advertise, false)
	}
	for i, j := range cl.Join {
		checkHostPort(&ps, fmt.Sprintf("cluster.join[%d]", i), j, false)
	}
	if cl.Profile != "lan" && cl.Profile != "local" {
		ps.add("cluster.profile", "must be lan or local, got %q", cl.Profile)
	}
	checkGossipTrust(&ps, cl)
	if cl.ProbeInterval < 0 || cl.GossipInterval < 0 {
		ps.add("cluster", "probe_interval and gossip_interval must not be negative")
	}

	e := c.Edge
	checkHostPort(&ps, "edge.listen", e.Listen, true)
	checkAdmin(&ps, "edge.admin", e.Admin)
	checkURL(&ps, "edge.advertise_url", e.AdvertiseURL)
	if err := CheckAdvertisedURL(e.AdvertiseURL, cl.AllowedPrefixes()); err != nil {
		ps.add("edge.advertise_url", "%v: balancers would ignore this edge (set advertise_url to an address in cluster.allowed_networks, or add its network there)", err)
	}
	checkRange(&ps, "edge.weight", e.Weight, 1, MaxEdgeWeight)
	checkRange(&ps, "edge.max_participants", e.MaxParticipants, 2, 100000)
	checkRange(&ps, "edge.max_message_bytes", e.MaxMessageBytes, 16, 64<<20)
	checkRange(&ps, "edge.history.messages", e.History.Messages, 0, 10_000_000)
	checkRange(&ps, "edge.history.bytes", e.History.Bytes, 0, 1<<30)
	checkRange(&ps, "edge.send_queue", e.SendQueue, 1, 1<<20)
	checkRange(&ps, "edge.max_connections", e.MaxConnections, 0, 10_000_000)
	if e.IdleGrace < 0 {
		ps.add("edge.idle_grace", "must not be negative, got %s", e.IdleGrace.D())
	}
	if e.DrainTimeout <= 0 {
		ps.add("edge.drain_timeout", "must be positive, got %s", e.DrainTimeout.D())
	}
	if e.Ownership != OwnershipRing && e.Ownership != OwnershipNone {
		ps.add("edge.ownership", "must be %q or %q, got %q", OwnershipRing, OwnershipNone, e.Ownership)
	}
	e.Auth.validate(&ps)
	checkStatsD(&ps, "edge.statsd", e.StatsD)

	b := c.Balancer
	checkHostPort(&ps, "balancer.listen", b.Listen, true)
	checkAdmin(&ps, "balancer.admin", b.Admin)
	if (b.TLS.CertFile == "") != (b.TLS.KeyFile == "") {
		ps.add("balancer.tls", "cert_file and key_file must be set together")
	}
	checkFile(&ps, "balancer.tls.cert_file", b.TLS.CertFile)
	checkFile(&ps, "balancer.tls.key_file", b.TLS.KeyFile)
	if b.TLS.RedirectFrom != "" {
		checkHostPort(&ps, "balancer.tls.redirect_from", b.TLS.RedirectFrom, true)
	}
	for i, src := range b.Key.Sources {
		if err := CheckKeySource(src); err != nil {
			ps.add(fmt.Sprintf("balancer.key.sources[%d]", i), "%v", err)
		}
	}
	checkRange(&ps, "balancer.key.max_length", b.Key.MaxLength, 1, MaxKeyLength)
	switch b.Key.NoKey {
	case "", "assign_cookie", "source_ip", "reject":
	default:
		ps.add("balancer.key.no_key", "must be assign_cookie, source_ip or reject, got %q", b.Key.NoKey)
	}
	checkRange(&ps, "balancer.ring.partitions", b.Ring.Partitions, 1, 1<<20)
	checkRange(&ps, "balancer.ring.replication", b.Ring.Replication, 1, 10000)
	// consistent panics with "not enough room to distribute partitions" when
	// load leaves no slack; catch it here rather than at the first ring change.
	if b.Ring.Load <= 1.0 || b.Ring.Load > 10 {
		ps.add("balancer.ring.load", "must be in range (1.0, 10], got %g", b.Ring.Load)
	}
	names := map[string]bool{}
	for i, se := range b.Edges {
		p := fmt.Sprintf("balancer.edges[%d]", i)
		if se.Name == "" {
			ps.add(p+".name", "is required")
		} else if names[se.Name] {
			ps.add(p+".name", "%q is listed twice", se.Name)
		}
		names[se.Name] = true
		checkURL(&ps, p+".url", se.URL)
		checkRange(&ps, p+".weight", se.Weight, 1, MaxEdgeWeight)
		validateMonitor(&ps, p+".monitor", *se.Monitor)
	}
	if b.DialTimeout <= 0 || b.IdleTimeout <= 0 || b.TunnelIdleTimeout <= 0 {
		ps.add("balancer", "dial_timeout, idle_timeout and tunnel_idle_timeout must be positive")
	}

	for i, cidr := range b.ProxyProtocol.TrustedFrom {
		if _, err := netip.ParsePrefix(cidr); err != nil {
			ps.add(fmt.Sprintf("balancer.proxy_protocol.trusted_from[%d]", i), "%q is not a CIDR prefix (e.g. 10.0.0.0/8)", cidr)
		}
	}
	if len(b.ProxyProtocol.TrustedFrom) > 0 && !b.ProxyProtocol.Enabled {
		ps.add("balancer.proxy_protocol.enabled", "is false, so trusted_from has no effect; set enabled: true")
	}
	l := b.Limits
	checkRange(&ps, "balancer.limits.max_connections", l.MaxConnections, 0, 10_000_000)
	checkRange(&ps, "balancer.limits.max_connections_per_ip", l.MaxConnectionsPerIP, 0, 10_000_000)
	if l.NewConnectionsPerIP < 0 || l.NewConnectionsPerIP > 1e6 {
		ps.add("balancer.limits.new_connections_per_ip", "must be in range [0, 1000000], got %g", l.NewConnectionsPerIP)
	}
	checkRange(&ps, "balancer.limits.new_connections_burst", l.NewConnectionsBurst, 0, 10_000_000)
	checkRange(&ps, "balancer.limits.max_header_bytes", l.MaxHeaderBytes, 1024, 1<<20)
	if l.MaxBodyBytes < 0 {
		ps.add("balancer.limits.max_body_bytes", "must not be negative, got %d", l.MaxBodyBytes)
	}
	if l.RequestTimeout <= 0 {
		ps.add("balancer.limits.request_timeout", "must be positive, got %s", l.RequestTimeout.D())
	}

	c.GSLB.validate(&ps)
	c.validateDemo(&ps)
	return ps
}

func (c *Config) validateDemo(ps *problems) {
	names := map[string]bool{}
	addrs := map[string]string{}
	claim := func(path, addr string) {
		if addr == "" {
			return
		}
		if other, ok := addrs[addr]; ok {
			ps.add(path, "%s is already used by %s", addr, other)
			return
		}
		addrs[addr] = path
	}
	for i, n := range c.Demo.Nodes {
		p := fmt.Sprintf("demo.nodes[%d]", i)
		if n.Name == "" {
			ps.add(p+".name", "is required")
		} else if names[n.Name] {
			ps.add(p+".name", "%q is used twice", n.Name)
		}
		names[n.Name] = true
		if n.Role != "edge" && n.Role != "balancer" && n.Role != "gslb" {
			ps.add(p+".role", "must be edge, balancer or gslb, got %q", n.Role)
		}
		for _, f := range []struct{ field, addr string }{{"listen", n.Listen}, {"admin", n.Admin}, {"gossip", n.Gossip}} {
			if f.addr == "" {
				ps.add(p+"."+f.field, "is required")
				continue
			}
			checkHostPort(ps, p+"."+f.field, f.addr, true)
			claim(p+"."+f.field, f.addr)
		}
	}
}

// CheckKeySource reports whether src is a valid stickiness key source spec:
// "header:NAME", "cookie:NAME" or "query:NAME".
func CheckKeySource(src string) error {
	kind, name, ok := strings.Cut(src, ":")
	if !ok || name == "" {
		return fmt.Errorf("%q must be KIND:NAME, e.g. header:ctstickiness", src)
	}
	switch kind {
	case "header", "cookie", "query":
	case "path":
		if n, err := parsePort(name); err != nil || n < 1 || n > 32 {
			return fmt.Errorf("%q: path:N takes a segment number in range [1, 32]", src)
		}
		return nil
	default:
		return fmt.Errorf("%q: kind must be header, cookie, query or path, got %q", src, kind)
	}
	for _, r := range name {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", r) {
			return fmt.Errorf("%q: name has a character not allowed in a %s name", src, kind)
		}
	}
	return nil
}

func checkHostPort(ps *problems, path, addr string, portZeroOK bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		ps.add(path, "%q is not host:port (e.g. 127.0.0.1:8080 or :8080)", addr)
		return
	}
	if host != "" && net.ParseIP(host) == nil && !validHostname(host) {
		ps.add(path, "%q: %q is neither an IP address nor a host name", addr, host)
	}
	n, err := parsePort(port)
	if err != nil || (n == 0 && !portZeroOK) {
		ps.add(path, "%q: port must be in range [1, 65535]", addr)
	}
}

func parsePort(s string) (int, error) {
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n < 0 || n > 65535 || fmt.Sprint(n) != s {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return n, nil
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return false
			}
		}
	}
	return true
}

// checkStatsD checks an optional StatsD push. The prefix goes into every
// line of the plain-text protocol, where ':', '|' and newlines are syntax.
func checkStatsD(ps *problems, path string, s StatsD) {
	if s.Address == "" {
		if s.Prefix != "" {
			ps.add(path+".address", "is required when %s.prefix is set", path)
		}
		return
	}
	checkHostPort(ps, path+".address", s.Address, false)
	if host, _, err := net.SplitHostPort(s.Address); err == nil && host == "" {
		ps.add(path+".address", "%q needs a host (e.g. 127.0.0.1:8125)", s.Address)
	}
	if iv := s.Interval.D(); iv < 100*time.Millisecond || iv > time.Hour {
		ps.add(path+".interval", "must be in range [100ms, 1h], got %s", iv)
	}
	if len(s.Prefix) > 100 {
		ps.add(path+".prefix", "must be at most 100 characters, got %d", len(s.Prefix))
	}
	for _, r := range s.Prefix {
		if !(r == '.' || r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			ps.add(path+".prefix", "%q may hold only letters, digits, '.', '_' and '-'", s.Prefix)
			break
		}
	}
}

func checkURL(ps *problems, path, raw string) {
	if _, err := parseHTTPURL(raw); err != nil {
		ps.add(path, "%v", err)
	}
}

func parseHTTPURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q must be an http:// or https:// URL with a host", raw)
	}
	return u, nil
}

func checkRange(ps *problems, path string, v, lo, hi int) {
	if v < lo || v > hi {
		ps.add(path, "must be in range [%d, %d], got %d", lo, hi, v)
	}
}

func checkFile(ps *problems, path, file string) {
	if file == "" {
		return
	}
	if _, err := os.Stat(file); err != nil {
		ps.add(path, "cannot read %s: %v", file, err)
	}
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func setDefault(s *string, v string) {
	if *s == "" {
		*s = v
	}
}

func setDefaultInt(i *int, v int) {
	if *i == 0 {
		*i = v
	}
}

func setDefaultDuration(d *Duration, v time.Duration) {
	if *d == 0 {
		*d = Duration(v)
	}
}

func ptr[T any](v T) *T { return &v }
