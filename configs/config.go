// Package configs holds ringlb's configuration schema, its defaults, strict
// YAML decoding and validation, and the example files operators start from.
//
// One file describes a node (or, for the demo, a whole cluster): each role reads
// its own section. It imports no other ringlb package.
package configs

import "time"

// Config is one ringlb configuration file. Each role reads its own section.
type Config struct {
	Cluster  Cluster  `yaml:"cluster"`
	Edge     Edge     `yaml:"edge"`
	Balancer Balancer `yaml:"balancer"`
	GSLB     GSLB     `yaml:"gslb"`
	// Demo describes the nodes `ringlb demo` starts in one process; the
	// other sections are the settings they share.
	Demo Demo `yaml:"demo"`
}

// Cluster is gossip membership (health/): who this node is and whom it joins.
type Cluster struct {
	// Name is this node's unique name in the cluster (default: the host name).
	Name string `yaml:"name"`
	// Region this node serves; balancers route only to edges of their region.
	Region string `yaml:"region"`
	// Bind is the gossip address, host:port, UDP and TCP (default 0.0.0.0:7946).
	Bind string `yaml:"bind"`
	// Advertise is the gossip address other nodes reach this one at
	// (default: Bind, or the first private address when Bind is unspecified).
	Advertise string `yaml:"advertise"`
	// Join lists seed nodes (host:port); joining any one is enough.
	Join []string `yaml:"join"`
	// SecretKeyFile is the cluster's keyring: one base64 AES key (16, 24 or
	// 32 bytes) per line, the first one primary. Gossip is encrypted and
	// authenticated with it (a node without a key of the ring cannot join or
	// read), and edge-to-edge requests and peers' admin reads are signed with
	// keys derived from it. Make one with `ringlb keygen`. Required when Bind
	// is not a loopback address, unless InsecureGossip is set.
	SecretKeyFile string `yaml:"secret_key_file"`
	// InsecureGossip allows a non-loopback gossip bind without a key: anyone
	// who reaches the gossip port can then join the cluster and take its
	// traffic. Every start logs a warning while it is set.
	InsecureGossip bool `yaml:"insecure_gossip"`
	// AllowedNetworks are the prefixes (CIDR) that the addresses other nodes
	// gossip about themselves (an edge's data URL, admin URLs) must fall in;
	// a member announcing anything else is ignored (default: loopback and
	// the private ranges, DefaultAllowedNetworks).
	AllowedNetworks []string `yaml:"allowed_networks"`
	// Profile picks memberlist's timing defaults: "lan" (production) or
	// "local" (loopback: faster probes, quicker failure detection).
	Profile string `yaml:"profile"`
	// ProbeInterval and GossipInterval override the profile when non-zero.
	ProbeInterval  Duration `yaml:"probe_interval"`
	GossipInterval Duration `yaml:"gossip_interval"`
}

// Edge is the session relay (sessions/).
type Edge struct {
	// Listen is the data port balancers reach: /ws, /whoami, / (default :7101).
	Listen string `yaml:"listen"`
	// Admin is the operational listener: /healthz, /metrics, /api/...
	// (default 127.0.0.1:9101). Written as an address (admin: 127.0.0.1:9101)
	// or in full (admin: { listen: ..., token_file: ... }).
	Admin Admin `yaml:"admin"`
	// AdvertiseURL is how balancers reach Listen (default http://<Listen>, with
	// an unspecified host replaced by this host's first private address).
	AdvertiseURL string `yaml:"advertise_url"`
	// Weight scales this edge's share of the ring (default 1).
	Weight int `yaml:"weight"`
	// MaxParticipants per session (default 64).
	MaxParticipants int `yaml:"max_participants"`
	// MaxMessageBytes is the largest frame a participant may send (default 64 KiB).
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// History bounds what each session keeps for resume.
	History History `yaml:"history"`
	// IdleGrace keeps a session whose last participant left, for resume (default 60s).
	IdleGrace Duration `yaml:"idle_grace"`
	// SendQueue is each connection's outbound queue length in frames (default 256).
	SendQueue int `yaml:"send_queue"`
	// MaxConnections open at once on the data port; beyond it a connection
	// is answered 503 and closed (default 0: derived from the open-file
	// limit, DefaultEdgeMaxConnections).
	MaxConnections int `yaml:"max_connections"`
	// DrainTimeout bounds a graceful drain (default 30s).
	DrainTimeout Duration `yaml:"drain_timeout"`
	Auth         EdgeAuth `yaml:"auth"`
	// Ownership is how the edge decides which sessions it hosts: "ring"
	// (default) checks every new session against the cluster's ring, built
	// with balancer.ring's parameters (keep them equal across a cluster),
	// answers 421 + X-Ringlb-Owner for another edge's, pins sessions that
	// outlive a ring change and hands sessions on when draining; "none"
	// hosts whatever it is sent (edges behind a third-party balancer).
	Ownership string `yaml:"ownership"`
	// StatsD optionally pushes the edge's metrics to a StatsD server.
	StatsD StatsD `yaml:"statsd"`
}

// StatsD pushes the figures of an edge's /metrics to a StatsD server over
// UDP: gauges as gauges, counters as the increase since the last push.
type StatsD struct {
	// Address of the StatsD server, host:port (UDP); empty: no push.
	Address string `yaml:"address"`
	// Prefix starts every metric name (default "ringlb.<cluster.name>.", so
	// several edges' gauges do not overwrite each other).
	Prefix string `yaml:"prefix"`
	// Interval between pushes (default 10s, the usual StatsD flush).
	Interval Duration `yaml:"interval"`
}

// Edge ownership modes.
const (
	OwnershipRing = "ring"
	OwnershipNone = "none"
)

// History bounds a session's message history by count and by bytes.
type History struct {
	Messages int `yaml:"messages"` // default 1000
	Bytes    int `yaml:"bytes"`    // default 1 MiB
}

// EdgeAuth configures signed join tokens (sessions/token.go).
type EdgeAuth struct {
	// HMACSecretFile holds the key tokens are signed with (at least 16
	// bytes). Unset: no auth is configured and tokens are ignored.
	HMACSecretFile string `yaml:"hmac_secret_file"`
	// Anonymous is what a join without a token becomes: AnonymousEditor,
	// AnonymousViewer or AnonymousDeny (401 before the upgrade). Default
	// (Provision): deny when Required, viewer when HMACSecretFile is set,
	// editor when it is not. A join with an invalid token is refused
	// whatever this says.
	Anonymous string `yaml:"anonymous"`
	// Required: true means the same as anonymous: deny (kept for existing
	// files; setting both differently is an error).
	Required bool `yaml:"required"`
	// MaxTokenTTL bounds a token's lifetime (exp − iat): longer ones are
	// neither minted nor accepted, and a user revocation is kept this long
	// (default 24h).
	MaxTokenTTL Duration `yaml:"max_token_ttl"`
}

// What a join without a token becomes (edge.auth.anonymous).
const (
	AnonymousEditor = "editor"
	AnonymousViewer = "viewer"
	AnonymousDeny   = "deny"
)

// Balancer is the regional front tier (balancer/).
type Balancer struct {
	// Listen is the data port (default :8080).
	Listen string `yaml:"listen"`
	TLS    TLS    `yaml:"tls"`
	Admin  Admin  `yaml:"admin"`
	Key    Key    `yaml:"key"`
	Ring   Ring   `yaml:"ring"`
	// Edges are static edges, routed to in addition to those found by gossip.
	Edges []StaticEdge `yaml:"edges"`
	// DialTimeout bounds connecting to an edge (default 2s).
	DialTimeout Duration `yaml:"dial_timeout"`
	// IdleTimeout closes idle keep-alive client connections (default 60s).
	IdleTimeout Duration `yaml:"idle_timeout"`
	// TunnelIdleTimeout closes a WebSocket tunnel with no bytes either way (default 10m).
	TunnelIdleTimeout Duration `yaml:"tunnel_idle_timeout"`
	// ProxyProtocol accepts PROXY protocol v1/v2 headers from an L4
	// balancer in front, so the real client address survives.
	ProxyProtocol ProxyProtocol `yaml:"proxy_protocol"`
	Limits        Limits        `yaml:"limits"`
}

// ProxyProtocol configures PROXY protocol on the balancer's data listener.
type ProxyProtocol struct {
	Enabled bool `yaml:"enabled"`
	// TrustedFrom lists the prefixes (CIDR) of the L4 balancers in front:
	// their connections must start with a header; a header from any other
	// source is refused, so clients cannot forge their address (like nginx's
	// set_real_ip_from). Empty: every connection must start with a header.
	TrustedFrom []string `yaml:"trusted_from"`
}

// Limits protect the balancer from floods; 0 means no limit, except for
// MaxConnections.
type Limits struct {
	// MaxConnections open at once, WebSocket tunnels included (default 0:
	// derived from the open-file limit, DefaultBalancerMaxConnections).
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerIP open at once from one client address.
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// NewConnectionsPerIP per second from one client address (token bucket
	// with a burst of NewConnectionsBurst, default twice the rate).
	NewConnectionsPerIP float64 `yaml:"new_connections_per_ip"`
	NewConnectionsBurst int     `yaml:"new_connections_burst"`
	// RequestTimeout bounds reading a request's head and body, so slow
	// (slowloris) clients cannot hold connections (default 30s).
	RequestTimeout Duration `yaml:"request_timeout"`
	// MaxHeaderBytes bounds a request's head (default 8 KiB; 431 beyond).
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxBodyBytes bounds a request body, declared (Content-Length) or
	// counted as it streams (chunked): 413 beyond (default 1 MiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
}

// TLS terminates HTTPS on Listen when CertFile and KeyFile are set.
type TLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	RedirectFrom string `yaml:"redirect_from"`
}

// Admin is an operational listener. In YAML a bare address is short for
// { listen: ADDRESS }.
type Admin struct {
	// Listen is the admin address (each role has its own loopback default).
	Listen string `yaml:"listen"`
	// TokenFile holds the operator's bearer token (whitespace trimmed, at
	// least 16 bytes); required when Listen is not loopback. Every POST needs
	// it (or, without a token, the header X-Ringlb-Admin: 1).
	TokenFile string `yaml:"token_file"`
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
	// MaxLength rejects longer keys with 400 (default 256, at most
	// MaxKeyLength). Edges read it too: one key rule (CheckKey) for both.
	MaxLength int `yaml:"max_length"`
	// AssignCookie gives key-less browsers a ctstickiness cookie (default true).
	AssignCookie *bool `yaml:"assign_cookie"`
	// NoKey is the policy for requests without a key: "assign_cookie" (the
	// default while assign_cookie is true), "source_ip" (route by the client
	// address) or "reject" (400).
	NoKey string `yaml:"no_key"`
}

// Ring parameters of bounded-load consistent hashing.
type Ring struct {
	Partitions  int     `yaml:"partitions"`  // default 7919 (prime)
	Replication int     `yaml:"replication"` // default 400
	Load        float64 `yaml:"load"`        // default 1.05
}

// StaticEdge is an edge listed in config instead of found by gossip.
type StaticEdge struct {
	Name   string `yaml:"name"`
	URL    string `yaml:"url"`
	Weight int    `yaml:"weight"`
	// Monitor checks the edge actively; it is on the ring only while up.
	// Default: a TCP connect to the URL's host and port every 2s.
	Monitor *Monitor `yaml:"monitor"`
}

// Demo lists the nodes `ringlb demo` runs in one process.
type Demo struct {
	Nodes []DemoNode `yaml:"nodes"`
}

// DemoNode is one node of the demo: its role and the addresses that differ
// from node to node; everything else comes from the shared sections.
type DemoNode struct {
	Name   string `yaml:"name"`
	Role   string `yaml:"role"` // edge | balancer | gslb
	Region string `yaml:"region"`
	Listen string `yaml:"listen"`
	Admin  string `yaml:"admin"`
	Gossip string `yaml:"gossip"`
}

// Duration is a time.Duration written in YAML as "1.5s", "250ms" or "2m".
type Duration time.Duration

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
