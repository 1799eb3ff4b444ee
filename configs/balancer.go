package configs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// Balancer is the regional front tier (balancer/).
type Balancer struct {
	// Listen is the data port (default :8080).
	Listen string `yaml:"listen"`
	// TLS terminates HTTPS on the data port.
	TLS TLS `yaml:"tls"`
	// Admin is the admin port: /api/..., /metrics, the dashboard (default
	// 127.0.0.1:9090).
	Admin Admin `yaml:"admin"`
	// Key says where the stickiness key comes from.
	Key Key `yaml:"key"`
	// Ring is read only where cluster.ring is unset: the ring's parameters
	// are the cluster's, shared with the edges (cluster.ring).
	Ring Ring `yaml:"ring"`
	// Edges are static edges, routed to in addition to those found by
	// gossip (at most 1000: each is a monitor and a ring member).
	Edges []StaticEdge `yaml:"edges"`
	// DialTimeout bounds connecting to an edge (default 2s).
	DialTimeout Duration `yaml:"dial_timeout"`
	// IdleTimeout closes idle keep-alive client connections (default 60s).
	IdleTimeout Duration `yaml:"idle_timeout"`
	// TunnelIdleTimeout closes a WebSocket tunnel with no bytes either way,
	// or whose bytes for one side have waited this long without it taking
	// any (default 10m).
	TunnelIdleTimeout Duration `yaml:"tunnel_idle_timeout"`
	// TunnelFinTimeout closes a WebSocket tunnel one side has closed (sent
	// its FIN) once nothing has crossed it for this long, as HAProxy's
	// timeout client-fin and server-fin: a client that neither reads nor
	// closes after its edge closed cannot hold the tunnel, or a graceful
	// stop, for the idle timeout (default 5s; a shorter
	// tunnel_idle_timeout applies instead).
	TunnelFinTimeout Duration `yaml:"tunnel_fin_timeout"`
	// ProxyProtocol accepts PROXY protocol v1/v2 headers from an L4
	// balancer in front, so the real client address survives.
	ProxyProtocol ProxyProtocol `yaml:"proxy_protocol"`
	// Limits protect the balancer from floods.
	Limits Limits `yaml:"limits"`
	// SessionTable is the live-session table the balancers share: a key
	// with an open tunnel (or a recent request) stays on its backend
	// whatever the ring says.
	SessionTable SessionTable `yaml:"session_table"`
	// StatsD optionally pushes the balancer's metrics to a StatsD server.
	StatsD StatsD `yaml:"statsd"`
	// AccessLog writes a line per HTTP request and per closed tunnel.
	AccessLog AccessLog `yaml:"access_log"`

	provisioned bool
}

// SessionTable bounds and times the balancers' live-session table
// (docs/DESIGN.md, "Live-session table").
type SessionTable struct {
	// Linger keeps a key on its backend this long after its last tunnel
	// closed or its last request, as a connection manager would (default
	// 60s, in range [1s, 24h]).
	Linger Duration `yaml:"linger"`
	// MaxEntries bounds the keys held (default 1000000, in range [1000,
	// 100000000]); beyond it keys with no open tunnel are evicted, oldest
	// first.
	MaxEntries int `yaml:"max_entries"`
	// NewKeysPerIP is how many new keys one client address (an IPv6 /64)
	// may enter per second, a token bucket (default 20, in range (0,
	// 1000000]); a key beyond it is routed by the ring but not entered, so a
	// client inventing keys cannot evict live ones.
	NewKeysPerIP float64 `yaml:"new_keys_per_ip"`
	// NewKeysBurst is the bucket's size (default 10 × new_keys_per_ip).
	NewKeysBurst int `yaml:"new_keys_burst"`
	// StartupWait bounds how long a starting balancer waits for a peer's
	// table before it routes (default 5s, at most 5m); requests wait with it.
	StartupWait Duration `yaml:"startup_wait"`
	// DrainDeadline ends a static edge's drain (admin API or weight 0): its
	// sessions still live then move to other edges (default 1h, in range
	// [1s, 720h]).
	DrainDeadline Duration `yaml:"drain_deadline"`
}

// ProxyProtocol configures PROXY protocol on the balancer's data listener.
type ProxyProtocol struct {
	// Enabled reads a PROXY v1/v2 header at the start of connections.
	Enabled bool `yaml:"enabled"`
	// TrustedFrom lists the prefixes (CIDR) of the L4 balancers in front:
	// their connections must start with a header; a header from any other
	// source is refused, so clients cannot forge their address (like nginx's
	// set_real_ip_from). Empty: every connection must start with a header.
	TrustedFrom []string `yaml:"trusted_from"`
}

// Limits protect the balancer from floods. A per-client limit left out or
// 0 is no limit; the bounds with a default (request_timeout,
// max_header_bytes, max_body_bytes) take no 0.
type Limits struct {
	// MaxConnections open at once, WebSocket tunnels included (default 0:
	// derived from the open-file limit, less a reserve for what the admin
	// port and gossip may hold and the node's own work, halved: every
	// tunnel holds two descriptors; `ringlb check` shows the value).
	MaxConnections int `yaml:"max_connections" zero:"default"`
	// MaxConnectionsPerIP open at once from one client (an IPv4 address, an
	// IPv6 /64).
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// NewConnectionsPerIP per second from one client (a token
	// bucket; 0: no limit).
	NewConnectionsPerIP float64 `yaml:"new_connections_per_ip"`
	// NewConnectionsBurst is the bucket's size: new connections one client
	// may open at once (default twice new_connections_per_ip).
	NewConnectionsBurst int `yaml:"new_connections_burst"`
	// RequestTimeout bounds reading a request's head and body, so slow
	// (slowloris) clients cannot hold connections (default 30s). It also
	// times a plain answer: its head must come from the backend within
	// it, then its body may pause for as long between two reads from the
	// backend and between two writes to the client (as nginx's
	// proxy_read_timeout and send_timeout, HAProxy's timeout server and
	// client), so a long download goes on while bytes move; a backend or
	// client that stalls for it is cut.
	RequestTimeout Duration `yaml:"request_timeout"`
	// MaxHeaderBytes bounds a request's head (default 8 KiB; 431 beyond).
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxBodyBytes bounds a request body, declared (Content-Length) or
	// counted as it streams (chunked): 413 beyond (default 1 MiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
}

// TLS terminates HTTPS on Listen when CertFile and KeyFile are set.
type TLS struct {
	// CertFile is the PEM certificate chain; watched, and re-read on change.
	CertFile string `yaml:"cert_file"`
	// KeyFile is its PEM private key, a secret file; `ringlb check` loads
	// the pair as a start does.
	KeyFile string `yaml:"key_file"`
	// RedirectFrom is a plain HTTP listener (host:port) answering every
	// request with a redirect to HTTPS (and /_ringlb/health as on the data
	// port).
	RedirectFrom string `yaml:"redirect_from"`
	// RedirectHost is where that redirect sends every client, HOST or
	// HOST:PORT (an IPv6 address in brackets; without a port, the data
	// port's, none for 443), whatever Host the request named, as nginx's
	// "return 301 https://NAME$request_uri": a cache in front then never
	// keeps a Location a client chose. Default "": the request's Host,
	// when it is a host name or an IP address with an optional port; any
	// other Host gets 400.
	RedirectHost string `yaml:"redirect_host"`

	// pair is the certificate and key as the check loaded them
	// (checkTLSFiles), which KeyPair hands out.
	pair checked[tls.Certificate]
	// pairStamp is the files' KeyPairStamp, taken before the check read pair.
	pairStamp string
}

// StaticEdge is an edge listed in config instead of found by gossip.
type StaticEdge struct {
	// Name is the edge's name on the ring (unique among the edges, at most
	// 64 bytes, as a node's name).
	Name string `yaml:"name"`
	// URL is where the balancer dials it: http:// or https://HOST:PORT.
	URL string `yaml:"url"`
	// Weight scales its share of the ring (default 1, at most 10); 0 drains
	// it: no new keys, its live sessions stay until they end or
	// session_table.drain_deadline passes (counted from the start or reload
	// that gave it weight 0, across upgrades, and restarts with
	// cluster.state_dir).
	Weight *int `yaml:"weight"`
	// Monitor checks the edge actively; it is on the ring only while up.
	// Default: a TCP connect to the URL's host and port every 2s; a block
	// without a type is that connect with the block's settings.
	Monitor *Monitor `yaml:"monitor"`
	// TLS is how an https:// edge is verified and what the balancer
	// presents to it; there is no way to skip verification.
	TLS EdgeTLS `yaml:"tls"`
}

// EdgeTLS verifies a peer's certificate and, for mutual TLS, gives the
// node a client certificate: a static edge's (for plain requests, WebSocket
// tunnels and its checks alike) and a gslb https monitor's members'
// (ClientConfig builds both).
type EdgeTLS struct {
	// CAFile is the PEM bundle the peer's certificate must chain to
	// (default: the system's roots).
	CAFile string `yaml:"ca_file"`
	// ServerName is sent as SNI and must be in the peer's certificate
	// (default for a static edge: the URL's host; a gslb monitor needs it,
	// and sends it as its checks' Host too).
	ServerName string `yaml:"server_name"`
	// CertFile is a PEM client certificate the node presents (with
	// key_file).
	CertFile string `yaml:"cert_file"`
	// KeyFile is the client certificate's PEM private key, a secret file;
	// `ringlb check` loads the files as a start does.
	KeyFile string `yaml:"key_file"`

	// ca and pair are the files as the check loaded them (checkTLSFiles),
	// which ClientConfig hands out for as long as the fields name them.
	ca   checked[*x509.CertPool]
	pair checked[tls.Certificate]
}

// Set reports whether any TLS setting is given.
func (t EdgeTLS) Set() bool {
	return t.CAFile != "" || t.ServerName != "" || t.CertFile != "" || t.KeyFile != ""
}

// Key says where the stickiness key comes from.
type Key struct {
	// Sources in order, each "header:NAME", "cookie:NAME", "query:NAME" or
	// "path:N" (the Nth segment of the URL path, from 1)
	// (default header:ctstickiness, cookie:ctstickiness, query:token).
	Sources []string `yaml:"sources"`
	// HashQuery hashes a key taken from the URL before use, so a token is never
	// used or logged as a key (default true).
	HashQuery *bool `yaml:"hash_query"`
	// MaxLength rejects longer keys with 400 (default 256, at most 4096,
	// which is what edges accept: no setting here makes an edge refuse a
	// key the balancer routes).
	MaxLength int `yaml:"max_length"`
	// AssignCookie gives key-less browsers a ctstickiness cookie (default:
	// true when a cookie source exists to read it back).
	AssignCookie *bool `yaml:"assign_cookie"`
	// NoKey is the policy for requests without a key: assign_cookie (give
	// the client a key in a cookie; the default while assign_cookie is
	// true), source_ip (route by the client address) or reject (400; the
	// default otherwise).
	NoKey string `yaml:"no_key"`

	// Parsed is Sources parsed (Provision; validation reports the specs
	// that do not parse).
	Parsed []KeySource `yaml:"-"`
	// AssignCookieName is the cookie an assigned key is set in and read
	// back from: the first cookie source (Provision; "" unless NoKey is
	// NoKeyAssignCookie).
	AssignCookieName string `yaml:"-"`
}

// Policies for requests without a key (balancer.key.no_key).
const (
	NoKeyAssignCookie = "assign_cookie"
	NoKeySourceIP     = "source_ip"
	NoKeyReject       = "reject"
)

// KeyFrom is where a stickiness key source reads the key.
type KeyFrom uint8

// Key source kinds, as written before the colon of a source spec.
const (
	KeyFromHeader KeyFrom = iota + 1
	KeyFromCookie
	KeyFromQuery
	KeyFromPath
)

// KeySource is one parsed "KIND:NAME" spec of balancer.key.sources.
type KeySource struct {
	From    KeyFrom
	Name    string // header, cookie or query parameter name; "N" for path
	Segment int    // path:N: the Nth segment of the URL path, from 1
}

// ParseKeySource parses a stickiness key source spec: "header:NAME",
// "cookie:NAME", "query:NAME" or "path:N".
func ParseKeySource(spec string) (KeySource, error) {
	kind, name, ok := strings.Cut(spec, ":")
	if !ok || name == "" {
		return KeySource{}, fmt.Errorf("%q must be KIND:NAME, e.g. header:ctstickiness", spec)
	}
	src := KeySource{Name: name}
	switch kind {
	case "header":
		src.From = KeyFromHeader
	case "cookie":
		src.From = KeyFromCookie
	case "query":
		src.From = KeyFromQuery
	case "path":
		n, err := parsePort(name)
		if err != nil || n < 1 || n > 32 {
			return KeySource{}, fmt.Errorf("%q: path:N takes a segment number in range [1, 32]", spec)
		}
		return KeySource{From: KeyFromPath, Name: name, Segment: n}, nil
	default:
		return KeySource{}, fmt.Errorf("%q: kind must be header, cookie, query or path, got %q", spec, kind)
	}
	for _, r := range name {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", r) {
			return KeySource{}, fmt.Errorf("%q: name has a character not allowed in a %s name", spec, kind)
		}
	}
	if src.From == KeyFromCookie && (name == CookieAdmin || name == CookieAdminHost) {
		return KeySource{}, fmt.Errorf("%q: %s is the admin ports' login, never a session key (and never forwarded to a backend); name another cookie", spec, name)
	}
	return src, nil
}

// Balancer defaults.
const (
	DefaultBalancerListen = ":8080"
	DefaultBalancerAdmin  = "127.0.0.1:9090"
	DefaultKeyMaxLength   = 256
	DefaultDialTimeout    = 2 * time.Second
	DefaultIdleTimeout    = 60 * time.Second
	// DefaultTunnelIdleTimeout closes a WebSocket tunnel nothing crossed
	// for this long.
	DefaultTunnelIdleTimeout = 10 * time.Minute
	// DefaultTunnelFinTimeout: a WebSocket ends both ways at once (the
	// close handshake, then both FINs), so a side that has not followed
	// its peer's FIN within seconds is gone or never reads; waiting the
	// tunnel idle timeout for it would hold the tunnel, and a graceful
	// stop, for minutes.
	DefaultTunnelFinTimeout = 5 * time.Second
	// DefaultRequestTimeout bounds reading one request, so a client
	// trickling it byte by byte cannot hold a connection.
	DefaultRequestTimeout = 30 * time.Second
	DefaultMaxHeaderBytes = 8 << 10
	// MaxHeaderBytes bounds balancer.limits.max_header_bytes so that
	// whatever head a balancer accepts, with the headers it adds (the key,
	// up to MaxKeyLength; X-Forwarded-*; X-Request-Id; X-Ringlb-Skip), fits
	// what an edge reads (EdgeHeadBytes).
	MaxHeaderBytes = 10 << 10
	// DefaultMaxBodyBytes bounds a request body through the balancer: IDE
	// traffic is WebSocket frames and small API calls, so a larger body is
	// refused (413) unless an operator raises the limit for it.
	DefaultMaxBodyBytes = 1 << 20
	// DefaultSessionLinger keeps a session's backend a minute after its
	// last connection, as a connection manager releases a backend.
	DefaultSessionLinger = time.Minute
	// DefaultSessionTableEntries bounds the live-session table (measured
	// under 200 bytes an entry: ~200 MB at the bound).
	DefaultSessionTableEntries = 1_000_000
	// DefaultNewKeysPerIP is a client address's rate of new keys entered
	// in the table; a classroom behind one NAT opening its sessions fits
	// the burst.
	DefaultNewKeysPerIP = 20
	// DefaultSessionStartupWait bounds a starting balancer's wait for a
	// peer's table.
	DefaultSessionStartupWait = 5 * time.Second
	// MaxSessionStartupWait is the longest startup_wait: no balancer
	// answers as starting (HeaderStarting) for longer.
	MaxSessionStartupWait = 5 * time.Minute
	// DefaultDrainDeadline ends a static edge's drain.
	DefaultDrainDeadline = time.Hour
	// MaxStaticEdges bounds balancer.edges: each static edge is a monitor
	// checking it every few seconds and a member of every ring the
	// balancer builds, and every start, reload and config check reads the
	// list. A list of tens of thousands is an error (a generated file
	// gone wrong), not a cluster: a file of about a megabyte listed
	// 170,000 and held 230 MB in `ringlb check`. Gossip finds edges
	// without such a bound.
	MaxStaticEdges = 1000
)

// DefaultKeySources is the contract's default order of stickiness key sources.
var DefaultKeySources = []string{"header:ctstickiness", "cookie:ctstickiness", "query:token"}

// Provision fills the unset fields of the balancer section with their
// defaults and resolves the key settings (Key.Parsed, Key.NoKey,
// Key.AssignCookieName). Idempotent.
func (b *Balancer) Provision() {
	setDefault(&b.Listen, DefaultBalancerListen)
	setDefault(&b.Admin.Listen, DefaultBalancerAdmin)
	b.Admin.provision()
	b.Key.provision()
	for i := range b.Edges {
		b.Edges[i].provision()
	}
	setDefaultDuration(&b.DialTimeout, DefaultDialTimeout)
	setDefaultDuration(&b.IdleTimeout, DefaultIdleTimeout)
	setDefaultDuration(&b.TunnelIdleTimeout, DefaultTunnelIdleTimeout)
	setDefaultDuration(&b.TunnelFinTimeout, DefaultTunnelFinTimeout)
	b.StatsD.provision()
	b.AccessLog.provision()
	l := &b.Limits
	setDefaultDuration(&l.RequestTimeout, DefaultRequestTimeout)
	setDefaultInt(&l.MaxHeaderBytes, DefaultMaxHeaderBytes)
	if l.MaxBodyBytes == 0 {
		l.MaxBodyBytes = DefaultMaxBodyBytes
	}
	setDefaultInt(&l.MaxConnections, DefaultBalancerMaxConnections(b.Admin.MaxConnections))
	if l.NewConnectionsPerIP > 0 && l.NewConnectionsBurst == 0 {
		l.NewConnectionsBurst = max(int(2*l.NewConnectionsPerIP), 1)
	}
	b.SessionTable.provision()
	b.provisioned = true
}

func (s *SessionTable) provision() {
	setDefaultDuration(&s.Linger, DefaultSessionLinger)
	setDefaultInt(&s.MaxEntries, DefaultSessionTableEntries)
	if s.NewKeysPerIP == 0 {
		s.NewKeysPerIP = DefaultNewKeysPerIP
	}
	if s.NewKeysBurst == 0 {
		s.NewKeysBurst = max(int(10*s.NewKeysPerIP), 1)
	}
	setDefaultDuration(&s.StartupWait, DefaultSessionStartupWait)
	setDefaultDuration(&s.DrainDeadline, DefaultDrainDeadline)
}

func (s SessionTable) validate(ps *problems) {
	checkDurationRange(ps, "balancer.session_table.linger", s.Linger, time.Second, 24*time.Hour)
	checkRange(ps, "balancer.session_table.max_entries", s.MaxEntries, 1000, 100_000_000)
	if s.NewKeysPerIP <= 0 || s.NewKeysPerIP > 1e6 {
		ps.add("balancer.session_table.new_keys_per_ip", "must be in range (0, 1000000], got %g", s.NewKeysPerIP)
	}
	checkRange(ps, "balancer.session_table.new_keys_burst", s.NewKeysBurst, 1, 10_000_000)
	checkDurationRange(ps, "balancer.session_table.startup_wait", s.StartupWait, time.Millisecond, MaxSessionStartupWait)
	checkDurationRange(ps, "balancer.session_table.drain_deadline", s.DrainDeadline, time.Second, 720*time.Hour)
}

func checkDurationRange(ps *problems, path string, d Duration, lo, hi time.Duration) {
	if d.D() < lo || d.D() > hi {
		ps.add(path, "must be in range [%s, %s], got %s", lo, hi, d.D())
	}
}

// Provisioned reports whether Provision has run: the balancer takes only a
// provisioned section (it sets no default of its own).
func (b *Balancer) Provisioned() bool { return b.provisioned }

func (k *Key) provision() {
	if len(k.Sources) == 0 {
		k.Sources = append([]string(nil), DefaultKeySources...)
	}
	if k.HashQuery == nil {
		k.HashQuery = ptr(true)
	}
	setDefaultInt(&k.MaxLength, DefaultKeyMaxLength)
	k.Parsed = k.Parsed[:0]
	cookie := ""
	for _, spec := range k.Sources {
		if src, err := ParseKeySource(spec); err == nil {
			k.Parsed = append(k.Parsed, src)
			if src.From == KeyFromCookie && cookie == "" {
				cookie = src.Name
			}
		}
	}
	if k.AssignCookie == nil {
		// An assigned key nobody reads back would give every request of a
		// browser a new edge: assign only when a cookie source exists.
		k.AssignCookie = ptr(cookie != "")
	}
	if k.NoKey == "" {
		k.NoKey = NoKeyReject
		if *k.AssignCookie {
			k.NoKey = NoKeyAssignCookie
		}
	}
	k.AssignCookieName = ""
	if k.NoKey == NoKeyAssignCookie {
		k.AssignCookieName = cookie
	}
}

func (e *StaticEdge) provision() {
	if e.Weight == nil {
		e.Weight = ptr(1)
	}
	if e.Monitor == nil {
		e.Monitor = &Monitor{}
	}
	if e.Monitor.Type == "" {
		// A connect, with or without a block: an edge behind a static
		// entry may be a third-party backend, which has no health path
		// to GET. A block setting only timings changes only them.
		e.Monitor.Type = MonitorTCP
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
	e.Monitor.Provision()
}

func (b *Balancer) validate(ps *problems) {
	checkHostPort(ps, "balancer.listen", b.Listen, true)
	checkAdmin(ps, "balancer.admin", &b.Admin)
	if (b.TLS.CertFile == "") != (b.TLS.KeyFile == "") {
		ps.add("balancer.tls", "cert_file and key_file must be set together")
	}
	b.TLS.pairStamp = KeyPairStamp(b.TLS.CertFile, b.TLS.KeyFile) // before the read: PairStamp
	_, b.TLS.pair = checkTLSFiles(ps, "balancer.tls", "", b.TLS.CertFile, b.TLS.KeyFile)
	if b.TLS.RedirectFrom != "" {
		checkHostPort(ps, "balancer.tls.redirect_from", b.TLS.RedirectFrom, true)
	}
	if b.TLS.RedirectHost != "" {
		if _, _, err := SplitHost(b.TLS.RedirectHost); err != nil {
			ps.add("balancer.tls.redirect_host", "%v: want HOST or HOST:PORT, an IPv6 address in brackets", err)
		}
		if b.TLS.RedirectFrom == "" {
			ps.add("balancer.tls.redirect_host", "is set but redirect_from is not, so no redirect uses it; set redirect_from too")
		}
	}
	b.Key.validate(ps)
	names := map[string]bool{}
	for i, se := range b.Edges {
		p := fmt.Sprintf("balancer.edges[%d]", i)
		if se.Name == "" {
			ps.add(p+".name", "is required")
		} else if names[se.Name] {
			ps.add(p+".name", "%q is listed twice", se.Name)
		} else if len(se.Name) > MaxNodeName {
			ps.add(p+".name", "%d bytes, at most %d (a node name's bound: the balancers' live-session table carries it)", len(se.Name), MaxNodeName)
		}
		names[se.Name] = true
		checkURL(ps, p+".url", se.URL)
		if se.Weight != nil {
			checkRange(ps, p+".weight", *se.Weight, 0, MaxEdgeWeight)
		}
		se.Monitor.validate(ps, p+".monitor")
		if se.Monitor.TLS != nil {
			ps.add(p+".monitor.tls", "a static edge's checks verify as its requests do: set %s.tls instead", p)
		}
		b.Edges[i].TLS.validate(ps, p+".tls", se.URL)
	}
	b.SessionTable.validate(ps)
	for _, t := range []struct {
		path string
		d    Duration
	}{{"balancer.dial_timeout", b.DialTimeout}, {"balancer.idle_timeout", b.IdleTimeout}, {"balancer.tunnel_idle_timeout", b.TunnelIdleTimeout}, {"balancer.tunnel_fin_timeout", b.TunnelFinTimeout}} {
		if t.d <= 0 {
			ps.add(t.path, "must be positive, got %s", t.d.D())
		}
	}
	for i, cidr := range b.ProxyProtocol.TrustedFrom {
		checkPrefix(ps, fmt.Sprintf("balancer.proxy_protocol.trusted_from[%d]", i), cidr, "10.0.0.0/8")
	}
	if len(b.ProxyProtocol.TrustedFrom) > 0 && !b.ProxyProtocol.Enabled {
		ps.add("balancer.proxy_protocol.enabled", "is false, so trusted_from has no effect; set enabled: true")
	}
	checkStatsD(ps, "balancer.statsd", b.StatsD)
	checkAccessLog(ps, "balancer.access_log", b.AccessLog)
	l := b.Limits
	checkRange(ps, "balancer.limits.max_connections", l.MaxConnections, 0, MaxConnections)
	checkRange(ps, "balancer.limits.max_connections_per_ip", l.MaxConnectionsPerIP, 0, 10_000_000)
	if l.NewConnectionsPerIP < 0 || l.NewConnectionsPerIP > 1e6 {
		ps.add("balancer.limits.new_connections_per_ip", "must be in range [0, 1000000], got %g", l.NewConnectionsPerIP)
	}
	checkRange(ps, "balancer.limits.new_connections_burst", l.NewConnectionsBurst, 0, 10_000_000)
	checkRange(ps, "balancer.limits.max_header_bytes", l.MaxHeaderBytes, 1024, MaxHeaderBytes)
	if l.MaxBodyBytes < 0 {
		ps.add("balancer.limits.max_body_bytes", "must not be negative, got %d", l.MaxBodyBytes)
	}
	if l.RequestTimeout <= 0 {
		ps.add("balancer.limits.request_timeout", "must be positive, got %s", l.RequestTimeout.D())
	}
}

func (t *EdgeTLS) validate(ps *problems, path, rawURL string) {
	if !t.Set() {
		return
	}
	if u, err := parseHTTPURL(rawURL); err == nil && u.Scheme != "https" {
		ps.add(path, "is set but the url %q is not https://", rawURL)
	}
	t.validateFiles(ps, path)
}

// validateFiles checks what t's settings are, whoever uses them (a static
// edge, a gslb monitor): both halves of a client certificate, files that
// load as ClientConfig loads them, a server name that is a name.
func (t *EdgeTLS) validateFiles(ps *problems, path string) {
	if (t.CertFile == "") != (t.KeyFile == "") {
		ps.add(path, "cert_file and key_file must be set together")
	}
	t.ca, t.pair = checkTLSFiles(ps, path, t.CAFile, t.CertFile, t.KeyFile)
	if t.ServerName != "" && !validHostname(t.ServerName) && net.ParseIP(t.ServerName) == nil {
		ps.add(path+".server_name", "%q is not a host name", t.ServerName)
	}
}

func (k Key) validate(ps *problems) {
	for i, src := range k.Sources {
		if _, err := ParseKeySource(src); err != nil {
			ps.add(fmt.Sprintf("balancer.key.sources[%d]", i), "%v", err)
		}
	}
	if len(k.Sources) > 0 && len(k.Parsed) == 0 {
		ps.add("balancer.key.sources", "at least one source must parse")
	}
	// The limit itself is bounded (MaxKeyLength says why).
	checkRange(ps, "balancer.key.max_length", k.MaxLength, 1, MaxKeyLength)
	switch k.NoKey {
	case NoKeyAssignCookie, NoKeySourceIP, NoKeyReject:
	default:
		ps.add("balancer.key.no_key", "must be %s, %s or %s, got %q", NoKeyAssignCookie, NoKeySourceIP, NoKeyReject, k.NoKey)
	}
	noCookie := true
	for _, s := range k.Parsed {
		noCookie = noCookie && s.From != KeyFromCookie
	}
	switch {
	case *k.AssignCookie && noCookie:
		ps.add("balancer.key.assign_cookie", "true needs a cookie:NAME source to read the assigned cookie back; add one to balancer.key.sources or set assign_cookie: false")
	case k.NoKey == NoKeyAssignCookie && noCookie:
		ps.add("balancer.key.no_key", "assign_cookie needs a cookie:NAME source to read the assigned cookie back; add one to balancer.key.sources")
	}
}
