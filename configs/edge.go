package configs

import (
	"net"
	"time"
)

// Edge is the session relay (sessions/).
type Edge struct {
	// Listen is the data port balancers reach: /ws, /whoami, / (default :7101).
	Listen string `yaml:"listen"`
	// Admin is the operational listener: /healthz, /metrics, /api/...
	// (default 127.0.0.1:9101). Written as an address (admin: 127.0.0.1:9101)
	// or in full (admin: { listen: ..., token_file: ... }).
	Admin Admin `yaml:"admin"`
	// AdvertiseURL is how balancers reach Listen (default http://<Listen>,
	// with an unspecified host replaced by this host's first private
	// address: an IPv4 one of RFC 1918, else one of shared address space,
	// 100.64.0.0/10, else an IPv6 unique local one, fc00::/7). A loopback URL is refused while gossip reaches beyond
	// loopback: peers on other hosts would ignore this edge. So is a file
	// without an edge section run as an edge, where its defaults come to
	// one. At most 160 bytes: it travels in the edge's gossip metadata.
	AdvertiseURL string `yaml:"advertise_url"`
	// Weight scales this edge's share of the ring (default 1).
	Weight int `yaml:"weight"`
	// MaxParticipants per session (default 64).
	MaxParticipants int `yaml:"max_participants"`
	// MaxMessageBytes is the largest frame a participant may send (default
	// 64 KiB). It may differ between edges (as while it is changed one edge
	// at a time): a replica takes any owner's msgs.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// History bounds what each session keeps for resume.
	History History `yaml:"history"`
	// IdleGrace keeps a session whose last participant left, for resume
	// (default 60s); one that sequenced nothing has nothing to resume and
	// goes at once.
	IdleGrace Duration `yaml:"idle_grace"`
	// MaxIdleSessions bounds the ringlb.v1 sessions kept without a
	// participant (for idle_grace) on this edge together, handed-off and
	// promoted ones included, so a client that opens one session after
	// another and leaves each cannot make the edge hold connection rate ×
	// idle_grace of them. Beyond it the session idle the longest is
	// forgotten with its history, as if its idle_grace had run out (a
	// resume gets a reset); live sessions are never touched (default
	// 65536).
	MaxIdleSessions int `yaml:"max_idle_sessions"`
	// SendQueue is each connection's outbound queue length in frames (default 256).
	SendQueue int `yaml:"send_queue"`
	// MaxQueuedBytes bounds the bytes every connection's send queue holds
	// together, a frame counted once per queue it waits in. A participant
	// that does not read holds up to send_queue frames, and a client with
	// many connections, each in a session of its own beside one that
	// sends, would make the edge hold sessions × send_queue ×
	// max_message_bytes. A queue with frames waiting may grow only while
	// it would hold no more than the budget has left free, so queues that
	// do not read stop at a share of it and never spend it all; a frame
	// beyond closes that connection as a slow consumer (1013). One whose
	// queue is empty always gets its frame, so readers that keep up are
	// never closed; a resume's replay, a whole history written at its
	// client's pace, is taken as a queue's growth is, so the budget is at
	// least twice history.bytes (default 256 MiB).
	MaxQueuedBytes int `yaml:"max_queued_bytes"`
	// MaxIncomingBytes bounds the bytes of messages every connection is
	// in the middle of receiving, together. A frame's announced length is
	// taken before its payload comes, so a client that announces the
	// largest message on each of its connections and sends one byte of it
	// made the edge hold connections × max_message_bytes. A message is
	// taken only while what its connection holds would be no more than the
	// budget has left free, so one client's connections stop at a share of
	// it and never spend it all; a frame beyond closes that connection 1013.
	// So a message may take at most half of it: it is at least twice
	// max_message_bytes (default 64 MiB).
	MaxIncomingBytes int `yaml:"max_incoming_bytes"`
	// MaxFanoutBytesPerSecond paces each participant by what its messages
	// make the edge send: a message counts its bytes plus 1 KiB once for
	// every participant it goes to (at least once: a ping's pong, an
	// error), a resume every msg of its replay the same way. A participant may spend a second's worth at once; past it
	// the edge reads its next message only once the rate has paid for the
	// last (at most a second later), so the sender's TCP window closes and
	// nothing is dropped or reordered. Without it one editor sending small
	// messages as fast as its socket takes them to a full session kept an
	// edge core busy with deliveries alone. The default carries a whole-text
	// editor's 64 KiB snapshots ten times a second to about 50 others
	// (default 32 MiB).
	MaxFanoutBytesPerSecond int `yaml:"max_fanout_bytes_per_second"`
	// MaxConnections open at once on the data port; beyond it a connection
	// is answered 503 and closed (default 0: derived from the open-file
	// limit, less a reserve for what the admin port and gossip may hold
	// and the node's own work; `ringlb check` shows the value).
	MaxConnections int `yaml:"max_connections" zero:"default"`
	// MaxDirectPerIP is one client's share of max_connections for WebSocket
	// participants that did not come through a balancer of the cluster (an
	// IPv4 address, an IPv6 /64; default max_connections/16, at least 1):
	// beyond it a join is answered 429 and closed, so one client that
	// reaches the data port directly cannot hold every connection. A
	// balancer signs each upgrade it forwards with the cluster key and its
	// participants count against no share. The same share, counted apart,
	// bounds the address's connections that carry nothing: from accept until
	// a request has arrived, and idle between requests (beyond it a new
	// connection is admitted while the edge is under max_connections and
	// the first ended to make room at it, an idle one closed after its
	// answer;
	// connections a member signed a request on are not counted idle — an
	// edge's claims, a balancer's forwarded plain requests — nor any while
	// a balancer of an earlier release, which does not sign those, is a
	// member).
	// Without a cluster key no share applies (a balancer cannot be told from
	// a client); while a balancer of an earlier release, which does not
	// sign, is a member, participants are counted but none refused.
	MaxDirectPerIP int `yaml:"max_direct_per_ip" zero:"default"`
	// DrainTimeout bounds a graceful drain (default 30s).
	DrainTimeout Duration `yaml:"drain_timeout"`
	// Auth configures signed join tokens.
	Auth EdgeAuth `yaml:"auth"`
	// Ownership is how the edge decides which sessions it hosts: "ring"
	// (default) checks every new session against the cluster's ring
	// (cluster.ring, the balancers' too),
	// answers 421 + X-Ringlb-Owner for another edge's, pins sessions that
	// outlive a ring change and hands sessions on when draining; "none"
	// hosts whatever it is sent (edges behind a third-party balancer).
	Ownership string `yaml:"ownership"`
	// StatsD optionally pushes the edge's metrics to a StatsD server.
	StatsD StatsD `yaml:"statsd"`
	// Replication streams each ringlb.v1 session's state to its replica, the
	// next edge the ring gives the key to, which takes the session over
	// (same epoch and sequence) when this edge dies: "off"; "async" (an ack
	// means this edge has the msg; the replica follows, its lag bounded and
	// reported); or "sync" (default: an ack, and every other participant's
	// copy, means the replica has the msg too, so a crash loses no
	// acknowledged msg). Only with ownership "ring" (with "none" there is
	// no ring to find a replica on). An edge keeps other edges' copies
	// whatever its own mode.
	Replication string `yaml:"replication"`
	// ReplicationTimeout bounds how long a msg waits for its replica under
	// sync; a replica that takes longer turns the stream to async (counted
	// in ringlb_edge_replication_fallbacks_total) until it catches up
	// (default 250ms).
	ReplicationTimeout Duration `yaml:"replication_timeout"`

	provisioned bool
	// advertiseDerived: AdvertiseURL was made from Listen, not written.
	advertiseDerived bool
}

// StatsD pushes the figures of a node's /metrics (its role's ringlb_*
// metrics) to a StatsD server: gauges as gauges, counters as the increase
// since the last push. Every role has one (edge.statsd, balancer.statsd,
// gslb.statsd); a reload changes it live.
type StatsD struct {
	// Address of the StatsD server, host:port; empty: no push.
	Address string `yaml:"address"`
	// Protocol is udp (default: datagrams of at most 1432 bytes) or tcp
	// (newline-separated lines over one kept connection, redialled when it
	// breaks; a push that cannot be written within 2s is dropped, so a slow
	// or dead server never holds the node up).
	Protocol string `yaml:"protocol"`
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

// Edge replication modes (edge.replication).
const (
	ReplicationOff   = "off"
	ReplicationAsync = "async"
	ReplicationSync  = "sync"
)

// History bounds a session's message history by count and by bytes.
type History struct {
	// Messages kept per ringlb.v1 session for resume (default 1000).
	Messages int `yaml:"messages"`
	// Bytes of messages kept per session (default 1 MiB). A drain hands
	// a session's history on whole to an edge whose bytes are as many
	// (edges of one cluster should share them); one with fewer gets its
	// newest msgs, a resume from before them a reset.
	Bytes int `yaml:"bytes"`
	// TotalBytes bounds the histories of all sessions together (the
	// copies kept for other edges' sessions included), so a client that
	// fills one session after another cannot make the edge hold sessions
	// × bytes (default 256 MiB). At the bound the histories of sessions
	// without participants give way first (oldest idle first), then the
	// session's own oldest msgs: a resume from before them gets a reset.
	TotalBytes int `yaml:"total_bytes"`
}

// EdgeAuth configures signed join tokens (sessions/token.go).
type EdgeAuth struct {
	// HMACSecretFile holds the key tokens are signed with (at least 16
	// bytes). Unset: no auth is configured and tokens are ignored.
	HMACSecretFile string `yaml:"hmac_secret_file"`
	// Anonymous is what a join without a token becomes: editor, viewer or
	// deny (401 before the upgrade). Default: deny when required is true,
	// viewer when hmac_secret_file is set, editor when it is not. A join
	// with an invalid token is refused whatever this says.
	Anonymous string `yaml:"anonymous"`
	// Required: true means the same as anonymous: deny (kept for existing
	// files; setting both differently is an error).
	Required bool `yaml:"required"`
	// MaxTokenTTL bounds a token's lifetime (exp − iat): longer ones are
	// neither minted nor accepted, and a user revocation is kept this long
	// (default 24h).
	MaxTokenTTL Duration `yaml:"max_token_ttl"`
	// RotationOverlap is how long, after a reload brings a new secret
	// (hmac_secret_file's content or path changed), tokens signed with the
	// previous one are still accepted, so links handed out just before
	// are not cut (default max_token_ttl: every such token has expired by
	// then; 0s: at once, for a leaked secret). The previous secret is kept
	// in memory only: a restart ends the overlap.
	RotationOverlap *Duration `yaml:"rotation_overlap"`

	// secret is HMACSecretFile's secret as the check read it (checked).
	secret checked[[]byte]
}

// Secret is the join-token secret (nil without HMACSecretFile): the one the
// check of a read, when a was checked (as Cluster.Keyring), else the
// file's (ReadJoinSecret).
func (a EdgeAuth) Secret() ([]byte, error) {
	if a.HMACSecretFile == "" {
		return nil, nil
	}
	if secret, ok := a.secret.of(a.HMACSecretFile); ok {
		return secret, nil
	}
	return ReadJoinSecret(a.HMACSecretFile)
}

// What a join without a token becomes (edge.auth.anonymous).
const (
	AnonymousEditor = "editor"
	AnonymousViewer = "viewer"
	AnonymousDeny   = "deny"
)

// Edge defaults.
const (
	DefaultEdgeListen      = ":7101"
	DefaultEdgeAdmin       = "127.0.0.1:9101"
	DefaultMaxParticipants = 64
	DefaultMaxMessageBytes = 64 << 10
	// MaxMessageBytesCeiling is the largest edge.max_message_bytes any
	// edge may have: what a replica reads from any owner (sessions/).
	MaxMessageBytesCeiling = 64 << 20
	DefaultHistoryMessages = 1000
	DefaultHistoryBytes    = 1 << 20
	// DefaultHistoryTotalBytes: the full history of 256 sessions at the
	// default history.bytes; idle sessions give way first.
	DefaultHistoryTotalBytes = 256 << 20
	DefaultSendQueue         = 256
	// DefaultMaxQueuedBytes: 16 connections' full queues of the largest
	// messages, thousands of ordinary ones.
	DefaultMaxQueuedBytes = 256 << 20
	// DefaultMaxIncomingBytes: a thousand of the largest messages arriving
	// at once; an ordinary message arrives within a read.
	DefaultMaxIncomingBytes = 64 << 20
	// DefaultMaxFanoutBytesPerSecond: see Edge.MaxFanoutBytesPerSecond.
	DefaultMaxFanoutBytesPerSecond = 32 << 20
	// FanoutDeliveryBytes is what one delivery of a message counts beyond
	// its bytes against max_fanout_bytes_per_second: a delivery's cost is
	// mostly its queueing and its write, whatever its size.
	FanoutDeliveryBytes = 1 << 10
	DefaultIdleGrace    = 60 * time.Second
	// DefaultMaxIdleSessions: an idle session without history costs about
	// 0.6 KiB of heap (sessions/idle_test.go), so about 40 MiB at the cap;
	// far above the sessions a client's reconnects leave idle.
	DefaultMaxIdleSessions = 65536
	DefaultDrainTimeout    = 30 * time.Second
	// DirectShareDivisor: max_direct_per_ip defaults to max_connections
	// over it, so 16 clients reaching the data port directly (tests,
	// monitors, a third-party balancer's few addresses) fit at once and
	// none alone holds more than a sixteenth of the edge.
	DirectShareDivisor    = 16
	DefaultStatsDInterval = 10 * time.Second
	// DefaultReplication: sync, so that an ack means what a user assumes
	// it means (the msg survives the edge), at the price measured in
	// sessions/README.md ("Replication").
	DefaultReplication        = ReplicationSync
	DefaultReplicationTimeout = 250 * time.Millisecond
	// MaxEdgeWeight bounds an edge's weight, in config and in what a node
	// believes another announces: a weight is a share of the ring.
	MaxEdgeWeight = 10
	// EdgeHeadBytes is the largest request head an edge reads (431
	// beyond): every head a balancer forwards fits (MaxHeaderBytes).
	EdgeHeadBytes = 16 << 10
	// DefaultMaxTokenTTL bounds a join token's lifetime, and so how long a
	// user revocation must be remembered.
	DefaultMaxTokenTTL = 24 * time.Hour
)

// Provision fills the unset fields of the edge section with their
// defaults. Idempotent.
func (e *Edge) Provision() {
	setDefault(&e.Listen, DefaultEdgeListen)
	setDefault(&e.Admin.Listen, DefaultEdgeAdmin)
	e.Admin.provision()
	if e.AdvertiseURL == "" {
		e.AdvertiseURL = "http://" + ReachableAddr(e.Listen)
		e.advertiseDerived = true
	}
	setDefaultInt(&e.Weight, 1)
	setDefaultInt(&e.MaxParticipants, DefaultMaxParticipants)
	setDefaultInt(&e.MaxMessageBytes, DefaultMaxMessageBytes)
	setDefaultInt(&e.History.Messages, DefaultHistoryMessages)
	setDefaultInt(&e.History.Bytes, DefaultHistoryBytes)
	setDefaultInt(&e.History.TotalBytes, DefaultHistoryTotalBytes)
	setDefaultInt(&e.SendQueue, DefaultSendQueue)
	setDefaultInt(&e.MaxQueuedBytes, DefaultMaxQueuedBytes)
	setDefaultInt(&e.MaxIncomingBytes, DefaultMaxIncomingBytes)
	setDefaultInt(&e.MaxFanoutBytesPerSecond, DefaultMaxFanoutBytesPerSecond)
	setDefaultInt(&e.MaxConnections, DefaultEdgeMaxConnections(e.Admin.MaxConnections))
	setDefaultInt(&e.MaxDirectPerIP, max(1, e.MaxConnections/DirectShareDivisor))
	setDefaultDuration(&e.IdleGrace, DefaultIdleGrace)
	setDefaultInt(&e.MaxIdleSessions, DefaultMaxIdleSessions)
	setDefaultDuration(&e.DrainTimeout, DefaultDrainTimeout)
	setDefault(&e.Ownership, OwnershipRing)
	e.StatsD.provision()
	setDefault(&e.Replication, DefaultReplication)
	setDefaultDuration(&e.ReplicationTimeout, DefaultReplicationTimeout)
	e.Auth.Provision()
	e.provisioned = true
}

// Provisioned reports whether Provision has run: the edge takes only a
// provisioned section (it sets no default of its own).
func (e *Edge) Provisioned() bool { return e.provisioned }

// validateReachable refuses an advertised URL on loopback from an edge
// whose gossip address is not: peers on other hosts take such a URL for
// their own host and ignore the edge (health's notThisHost), and a
// listen address on every interface of a host without a private address
// made one without a word. Said at the field the file has: listen when
// the URL was derived from it.
func (e *Edge) validateReachable(ps *problems, cl Cluster) {
	gossip := cl.announced()
	u, err := parseHTTPURL(e.AdvertiseURL)
	if err != nil || isLoopback(gossip) {
		return
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		return
	}
	if !e.advertiseDerived {
		ps.add("edge.advertise_url", "%s is a loopback address, which balancers on other hosts (gossip %s reaches them) take for their own host, and ignore this edge: set edge.advertise_url to the URL they reach it at", e.AdvertiseURL, gossip)
		return
	}
	why := "is a loopback address"
	if host, _, _ := net.SplitHostPort(e.Listen); anyHost(host) {
		why = "is on every interface, and " + noPrivateAddress + " to advertise in its place"
	}
	ps.add("edge.listen", "%s %s: this edge would announce %s, which balancers on other hosts (gossip %s reaches them) take for their own host, and ignore the edge: set edge.advertise_url to the URL they reach it at (in cluster.allowed_networks), or give edge.listen that address", e.Listen, why, e.AdvertiseURL, gossip)
}

func (e *Edge) validate(ps *problems, cl Cluster) {
	checkHostPort(ps, "edge.listen", e.Listen, true)
	checkAdmin(ps, "edge.admin", &e.Admin)
	checkURL(ps, "edge.advertise_url", e.AdvertiseURL)
	checkGossiped(ps, "edge.advertise_url", e.AdvertiseURL, MaxAdvertiseURL)
	if err := CheckAdvertisedURL(e.AdvertiseURL, cl.AllowedPrefixes()); err != nil {
		ps.add("edge.advertise_url", "%v: balancers would ignore this edge (set advertise_url to an address in cluster.allowed_networks, or add its network there)", err)
	}
	checkRange(ps, "edge.weight", e.Weight, 1, MaxEdgeWeight)
	checkRange(ps, "edge.max_participants", e.MaxParticipants, 2, 100000)
	checkRange(ps, "edge.max_message_bytes", e.MaxMessageBytes, 16, MaxMessageBytesCeiling)
	checkRange(ps, "edge.history.messages", e.History.Messages, 0, 10_000_000)
	checkRange(ps, "edge.history.bytes", e.History.Bytes, 0, 1<<30)
	if t := e.History.TotalBytes; t < e.History.Bytes || t > 1<<40 {
		ps.add("edge.history.total_bytes", "must be in range [edge.history.bytes (%d), %d], got %d", e.History.Bytes, 1<<40, t)
	}
	checkRange(ps, "edge.send_queue", e.SendQueue, 1, 1<<20)
	checkRange(ps, "edge.max_connections", e.MaxConnections, 0, MaxConnections)
	if e.MaxConnections > 0 && (e.MaxDirectPerIP < 1 || e.MaxDirectPerIP > e.MaxConnections) {
		ps.add("edge.max_direct_per_ip", "must be in range [1, edge.max_connections (%d)], got %d", e.MaxConnections, e.MaxDirectPerIP)
	} else {
		checkRange(ps, "edge.max_direct_per_ip", e.MaxDirectPerIP, 1, 10_000_000)
	}
	if e.IdleGrace < 0 {
		ps.add("edge.idle_grace", "must not be negative, got %s", e.IdleGrace.D())
	}
	checkRange(ps, "edge.max_idle_sessions", e.MaxIdleSessions, 1, 10_000_000)
	checkRange(ps, "edge.max_queued_bytes", e.MaxQueuedBytes, 1<<20, 1<<40)
	checkRange(ps, "edge.max_incoming_bytes", e.MaxIncomingBytes, 1<<20, 1<<40)
	checkRange(ps, "edge.max_fanout_bytes_per_second", e.MaxFanoutBytesPerSecond, 64<<10, 1<<40)
	if e.MaxQueuedBytes < 2*e.History.Bytes {
		ps.add("edge.max_queued_bytes", "must be at least twice history.bytes (%d), got %d: a resume's replay takes at most half of it, and no full history could be replayed", 2*e.History.Bytes, e.MaxQueuedBytes)
	}
	if e.MaxIncomingBytes < 2*e.MaxMessageBytes {
		ps.add("edge.max_incoming_bytes", "must be at least twice max_message_bytes (%d), got %d: a message takes at most half of it, and no largest message could arrive", 2*e.MaxMessageBytes, e.MaxIncomingBytes)
	}
	if e.DrainTimeout <= 0 {
		ps.add("edge.drain_timeout", "must be positive, got %s", e.DrainTimeout.D())
	}
	if e.Ownership != OwnershipRing && e.Ownership != OwnershipNone {
		ps.add("edge.ownership", "must be %q or %q, got %q", OwnershipRing, OwnershipNone, e.Ownership)
	}
	switch e.Replication {
	case ReplicationOff, ReplicationAsync, ReplicationSync:
	default:
		ps.add("edge.replication", "must be %s, %s or %s, got %q", ReplicationOff, ReplicationAsync, ReplicationSync, e.Replication)
	}
	if d := e.ReplicationTimeout.D(); d < 10*time.Millisecond || d > 10*time.Second {
		ps.add("edge.replication_timeout", "must be in range [10ms, 10s], got %s", d)
	}
	e.Auth.validate(ps)
	checkStatsD(ps, "edge.statsd", e.StatsD)
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
	if a.RotationOverlap == nil {
		a.RotationOverlap = ptr(a.MaxTokenTTL)
	}
}

// maxMaxTokenTTL bounds edge.auth.max_token_ttl: user revocations are kept
// that long, and a token valid for more than a month is a password.
const maxMaxTokenTTL = 30 * 24 * time.Hour

func (a *EdgeAuth) validate(ps *problems) {
	if a.HMACSecretFile != "" {
		var err error
		if a.secret, err = keep(a.HMACSecretFile, ReadJoinSecret); err != nil {
			ps.add("edge.auth.hmac_secret_file", "%v", err)
		}
		ps.warnSecret("edge.auth.hmac_secret_file", a.HMACSecretFile, whatJoinSecret)
	}
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
	if o := a.RotationOverlap; o != nil && (*o < 0 || *o > a.MaxTokenTTL) {
		ps.add("edge.auth.rotation_overlap", "must be in range [0s, max_token_ttl (%s)], got %s", a.MaxTokenTTL.D(), o.D())
	}
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
	if s.Protocol != StatsDUDP && s.Protocol != StatsDTCP {
		ps.add(path+".protocol", "must be %s or %s, got %q", StatsDUDP, StatsDTCP, s.Protocol)
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
