// Package health is ringlb's view of which nodes are alive: gossip membership
// over hashicorp/memberlist (SWIM) carrying each node's role, region, address
// and state, and active probes for what is not in gossip.
//
// It decides nothing about routing: consumers (the ring, the gslb pools) read
// Members or Edges when Subscribe tells them something changed.
package health

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/balancer/acceptguard"
	"github.com/ringlb/ringlb/configs"
)

// Role is what a node does.
type Role string

// The roles (docs/DESIGN.md).
const (
	RoleEdge     Role = "edge"
	RoleBalancer Role = "balancer"
	RoleGSLB     Role = "gslb"
)

// State is a node's own view of itself; draining edges leave the ring.
type State string

// Node states.
const (
	StateAlive    State = "alive"
	StateDraining State = "draining"
)

// Meta is the metadata every node gossips about itself. Encoded it must fit
// memberlist's 512-byte limit (memberlist.MetaMaxSize).
type Meta struct {
	Role   Role   `json:"role"`
	Region string `json:"region,omitempty"`
	// URL is the advertised data URL, e.g. http://10.0.0.11:7101.
	URL string `json:"url,omitempty"`
	// Admin is the admin URL, for dashboards.
	Admin  string `json:"admin,omitempty"`
	Weight int    `json:"weight,omitempty"`
	State  State  `json:"state"`
	// Load is an edge's load, refreshed every few seconds (sessions.PublishLoad);
	// gslb nodes steer clients away from a loaded region by it.
	Load *Load `json:"load,omitempty"`
	// PeerSigning is the form of the peer signatures (configs.HeaderPeer)
	// the node makes and, from nodes announcing it, requires: Join sets
	// PeerSigningTableAsk, the latest. Absent (0): a node of an earlier release, whose
	// signatures name no receiver.
	PeerSigning int `json:"peer_signing,omitempty"`
}

// Forms of peer signatures, each including the ones before: a node takes
// the later forms for the earlier ones it knows.
const (
	// PeerSigningBound: signatures name their receiver.
	PeerSigningBound = 2
	// PeerSigningSkip: and a balancer signs the X-Ringlb-Skip it sends a
	// fallback edge (health.SkipMessage).
	PeerSigningSkip = 3
	// PeerSigningHead: and an edge signs the head of each hand-off it
	// sends (configs.HeaderPeerHead, Keyring.SignHead), so the receiver
	// gives a hand-off's body a slot only when the head is a member's.
	PeerSigningHead = 4
	// PeerSigningUpgrade: and a balancer signs every WebSocket upgrade it
	// forwards (Keyring.SignUpgrade), so an edge tells a balancer's
	// participants from a direct client's (edge.max_direct_per_ip).
	PeerSigningUpgrade = 5
	// PeerSigningForwarded: and a balancer signs every plain request it
	// forwards to an edge (Keyring.SignForwarded), so an edge does not
	// count the balancer's keep-alive connections idle against its
	// address's share (edge.max_direct_per_ip).
	PeerSigningForwarded = 6
	// PeerSigningAnswer: and a node signs its answer to each signed read
	// of its admin API and to each signed change (a balancer's dashboard
	// forwarding the operator's) with configs.HeaderPeerAnswer
	// (Keyring.SignAnswer), so the reader takes no view, and the operator
	// no outcome, altered or replayed on the way (Keyring.ReadAnswer).
	PeerSigningAnswer = 7
	// PeerSigningClaimAnswer: and an edge signs its answer to another
	// edge's session claim the same way, the holder a 409 names in the
	// signed body, so a claimer takes no "not hosted here" the holder did
	// not say: one made on the path started a second session of a live
	// key (sessions' claims).
	PeerSigningClaimAnswer = 8
	// PeerSigningClaimOnce: and each claim an edge sends carries a nonce
	// in what it signs (configs.ArgClaimNonce), so that no two claims
	// share a signature, and the asked edge takes each claim signature
	// once: a claim seen on the wire and sent again within PeerWindow
	// recorded its claim again after it had expired or been replaced. And
	// an edge's 409 to such a claimer gives a third edge's address in its
	// signed body, not only in configs.HeaderOwnerURL, which nothing signs.
	PeerSigningClaimOnce = 9
	// PeerSigningLive: and the node answers a liveness challenge (a
	// nonce, live.go) under its name, and believes a member announcing
	// this level only on such an answer: memberlist matches a ping's ack
	// by its sequence number alone, so replayed acks answered pings.
	PeerSigningLive = 10
	// PeerSigningTableAsk: and a balancer asks another for its session
	// table with an ask that names the balancer asked and carries its
	// time (balancer/table_sync.go), answered once: a copy of an ask,
	// which memberlist takes as it took the original, had the whole table
	// sent again. The earlier form is answered only from a balancer
	// announcing less.
	PeerSigningTableAsk = 11
)

// Load is what an edge carries: live sessions, WebSocket connections, and
// how busy its CPUs are (percent of those its Go runtime uses, 0–100).
// About 50 bytes of the 512 a node's metadata may take.
type Load struct {
	Sessions    int `json:"sessions"`
	Connections int `json:"connections"`
	CPU         int `json:"cpu"`
}

// ErrMetaTooLarge is returned when encoded metadata exceeds memberlist's limit.
var ErrMetaTooLarge = errors.New("node metadata too large")

// Encode returns the wire form of m.
func (m Meta) Encode() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d (shorten url, admin or region)", ErrMetaTooLarge, len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// Node is a live member of the cluster.
type Node struct {
	Name string
	// Addr is the node's gossip address, host:port.
	Addr string
	Meta Meta
}

// Event is one membership change.
type Event struct {
	Kind string // "join", "leave" or "update"
	Node Node
	At   time.Time
}

const recentEvents = 64

// leftKept bounds how long Left remembers a member's leave: beyond its
// callers' windows (a signature's, health.PeerWindow; two settle windows).
const leftKept = 2 * time.Minute

// notifyEvery spaces the notifications of subscribers: a change after a
// quiet spell is told at once, changes within notifyEvery of the last
// notification are told together once it has passed. Each notification
// is a ring rebuild on every balancer and edge (and on an edge a log
// line, a ring kept for the settle window and its sessions re-pinned),
// and a member holding the key can change its metadata as fast as gossip
// carries it: 400 flips of an edge's weight in 2.5 s were 128 rebuilds of
// a balancer's ring (TestMetadataFlipStormCoalesced). At most 4 a second,
// whatever a member does; a real change waits at most this long.
const notifyEvery = 250 * time.Millisecond

// Membership is this node's membership in a gossip cluster. Its goroutines
// are memberlist's and the seed-retry loop; Shutdown stops them all.
type Membership struct {
	ml         *memberlist.Memberlist
	logger     *slog.Logger
	name, addr string
	socks      GossipSockets // the gossip port, to hand to an upgrade's new process

	mu     sync.Mutex
	meta   Meta
	encMet []byte
	// nodes is the live member set, copied in memberlist's event callbacks:
	// memberlist.Members() hands out pointers that its own goroutines keep
	// writing to, so reading them races (serf keeps its own copy for the same
	// reason).
	nodes map[string]Node
	// balancerSigning is the lowest peer_signing among nodes' balancers
	// (math.MaxInt32: none), kept with nodes so that a check per
	// request is one load (BalancerBelow).
	balancerSigning atomic.Int32
	// liveMembers counts nodes' members (this one aside) announcing
	// PeerSigningLive: while there is one, only an answered challenge is
	// an answer to this node (live.go).
	liveMembers atomic.Int32
	// live is what challenges need per member (live.go), dropped as it
	// leaves.
	live   map[string]*liveState
	subs   map[int]chan struct{}
	nextID int
	// lastNotify is when subscribers were last told; notifyDue, when set,
	// tells them of the changes since (notifyEvery).
	lastNotify time.Time
	notifyDue  *time.Timer
	recent     []Event
	closed     bool
	// awayAt, when set, is since when the others may have dropped this
	// node, which no member has answered since (BackAt), and awayFrom
	// since when it may have gone unheard (an answer to a probe sent
	// before is no return); backAt is when one last did after that; backs
	// counts the times away by each way this node knew
	// (ringlb_gossip_back_total), awayHow the ways of this one (bits).
	// back tells watchAway to announce the node again.
	awayAt, awayFrom, backAt time.Time
	awayHow                  uint8
	awayLogged               bool
	backs                    [len(backReasons)]atomic.Uint64
	back                     chan struct{}
	// answeredAt is when a member last answered this node
	// (probeAnswered; written under mu), tickAt when watchAway
	// last ran, awayBound the dropAfter it read then (0: alone) — times
	// on clock0's monotonic clock (mono), for watchAway and BackAt.
	clock0                        time.Time
	answeredAt, tickAt, awayBound atomic.Int64
	gossipInterval                time.Duration

	// ignored are members whose metadata this node does not trust, with
	// why (logged once per reason); they are not in nodes.
	ignored map[string]string
	// ignoredAddr are their gossip addresses: their liveness challenges
	// are answered all the same (live.go).
	ignoredAddr map[string]string
	// noted are members believed without part of their metadata, with
	// what was dropped (trustMeta's note), so that it is logged once, as
	// an ignored member's reason is: an edge announces its load every 2 s
	// while it changes, each update a record.
	noted map[string]string
	// gone are the members that left this node's view, as they were then,
	// for leftKept (Left): not read from recent, where routine updates of
	// the others' metadata (an edge's load, every 2 s while it changes)
	// pushed a leave out within seconds.
	gone map[string]Event
	// pending are members memberlist took in that have not answered this
	// node's ping yet (joins.go); they are not in nodes.
	pending map[string]*pendingJoin
	// asking is the pending members waiting their turn to be asked
	// (confirmJoins: askFirst, askLater), askDue wakes it for one queued.
	asking [2]askQueue
	askDue chan struct{}
	// departed are believed members that left less than rejoinWithin
	// ago (half of memberlist's GossipToTheDeadTime), when they did.
	departed     map[string]departure
	rejoinWithin time.Duration
	pings        chan struct{} // a slot per ping in flight (maxConfirmPings)
	streamSends  chan struct{} // a slot per stream send in flight (maxStreamSends, live.go)
	// joinsUnconfirmed counts pending members dropped before they
	// answered (ringlb_gossip_joins_unconfirmed_total).
	joinsUnconfirmed atomic.Uint64
	unconfirmedLog   acceptguard.LogLimit
	// memberlist's timings, for probation (joins.go).
	probeInterval                   time.Duration
	suspicionMult, suspicionMaxMult int
	// ready is closed once ml is set (or Join failed before).
	ready chan struct{}

	pins *pinTable
	// streams bounds the inbound gossip streams (streams.go).
	streams *streamGuard
	// channels are other packages' traffic (channel.go), by id.
	channels map[byte]*Channel
	// keyring is the cluster's key (nil: none); allowed are the networks
	// members' announced addresses must be in.
	keyring *Keyring
	allowed []netip.Prefix

	stop  chan struct{}
	retry sync.WaitGroup
	// stopDials ends the transport's dials in flight (markClosed): a
	// goroutine of retry may be in one.
	stopDials context.CancelFunc
	// liveSends are the liveness challenges and answers being sent over
	// memberlist's stream (live.go): waited for once memberlist is shut
	// down; their dials and streams end as Shutdown begins (stopDials).
	liveSends sync.WaitGroup
	shutOnce  sync.Once
	shutErr   error
}

// Join creates this node's memberlist from cfg, announcing meta, and joins the
// cluster through cfg.Join. When no seed answers, Join still returns a
// working single-node membership and keeps retrying the seeds in the
// background (like Consul's retry_join), so an edge started before its seeds
// joins as soon as they are up. After that it keeps checking that every seed
// leads to a live member and joins the ones that do not: a seed restarted
// after the others took it for dead comes back with no members of its own
// and no seeds to ask (the first node usually has none), and gossip alone
// never tells it about the rest.
func Join(ctx context.Context, cfg configs.Cluster, meta Meta, logger *slog.Logger) (*Membership, error) {
	return JoinOn(ctx, cfg, meta, logger, nil)
}

// JoinOn is Join on gossip sockets bound already (an upgrade's new process
// inherits its predecessor's); nil binds cfg.Bind. The membership owns
// them from the call on, also when it fails.
func JoinOn(ctx context.Context, cfg configs.Cluster, meta Meta, logger *slog.Logger, socks *GossipSockets) (*Membership, error) {
	return joinOn(ctx, cfg, meta, logger, socks, tuning{})
}

// tuning is memberlist's configuration beyond what configs.Cluster sets,
// for tests: the zero value keeps the profile's.
type tuning struct {
	// gossipToTheDead is how long memberlist remembers a member that left
	// or died (GossipToTheDeadTime; 15 s with the local profile): the
	// replay tests wait that long before a replay can make a join.
	gossipToTheDead time.Duration
	// tcpTimeout bounds memberlist's streams (TCPTimeout; 1 s with the
	// local profile): the shutdown tests hold one past their patience.
	tcpTimeout time.Duration
}

func joinOn(ctx context.Context, cfg configs.Cluster, meta Meta, logger *slog.Logger, socks *GossipSockets, tune tuning) (_ *Membership, err error) {
	if socks != nil {
		defer func() {
			if err != nil {
				socks.Close()
			}
		}()
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	meta.PeerSigning = PeerSigningTableAsk
	enc, err := meta.Encode()
	if err != nil {
		return nil, err
	}
	kr, err := loadKeyring(cfg)
	if err != nil {
		return nil, err
	}
	if !kr.Enabled() {
		if cfg.InsecureGossip {
			logger.Warn("gossip is not encrypted or authenticated (cluster.insecure_gossip): anyone who reaches the gossip port can join the cluster and take its traffic; set cluster.secret_key_file", "bind", cfg.Bind)
		} else {
			logger.Info("gossip has no key: loopback only", "bind", cfg.Bind)
		}
	}
	allowed := cfg.AllowedPrefixes()
	if len(cfg.AllowedNetworks) == 0 {
		allowed = configs.Cluster{AllowedNetworks: configs.DefaultAllowedNetworks}.AllowedPrefixes()
	}
	m := &Membership{logger: logger, meta: meta, encMet: enc, keyring: kr, allowed: allowed,
		nodes: map[string]Node{}, ignored: map[string]string{}, ignoredAddr: map[string]string{}, noted: map[string]string{}, gone: map[string]Event{}, pending: map[string]*pendingJoin{}, live: map[string]*liveState{}, departed: map[string]departure{}, pings: make(chan struct{}, maxConfirmPings), askDue: make(chan struct{}, 1), streamSends: make(chan struct{}, maxStreamSends),
		subs: map[int]chan struct{}{}, channels: map[byte]*Channel{}, stop: make(chan struct{}), ready: make(chan struct{}),
		back: make(chan struct{}, 1)}
	m.clock0 = time.Now()

	m.balancerSigning.Store(math.MaxInt32)
	if kr != nil {
		// Before gossip starts: which form of signature each member makes.
		kr.members, kr.log = m.Node, logger
	}
	mc, err := memberlistConfig(cfg, kr, logger, m.refutedDeath)
	if err != nil {
		return nil, err
	}
	if tune.gossipToTheDead > 0 {
		mc.GossipToTheDeadTime = tune.gossipToTheDead
	}
	if tune.tcpTimeout > 0 {
		mc.TCPTimeout = tune.tcpTimeout
	}
	m.pins = newPinTable(mc.Name, m.toldOf, func() int {
		m.mu.Lock()
		defer m.mu.Unlock()
		return max(len(m.nodes), 1)
	}, pinRetransmitFactor*mc.RetransmitMult)
	// Before Create: peers' events (record) read it as soon as gossip runs.
	m.name = mc.Name
	m.probeInterval, m.suspicionMult, m.suspicionMaxMult = mc.ProbeInterval, mc.SuspicionMult, mc.SuspicionMaxTimeoutMult
	m.gossipInterval = mc.GossipInterval
	m.rejoinWithin = mc.GossipToTheDeadTime / 2
	mc.Delegate = delegate{m}
	mc.Events = events{m}
	mc.Ping = pingDelegate{m}
	// Inbound streams bounded (streams.go): memberlist's own transport
	// takes any number, each up to 20 MB.
	if socks == nil {
		bound, err := ListenGossip(mc.BindAddr, mc.BindPort)
		if err != nil {
			return nil, fmt.Errorf("start gossip on %s: %w", cfg.Bind, err)
		}
		socks = &bound
	} else if err := socks.check(mc.BindAddr, mc.BindPort); err != nil {
		socks.Close()
		return nil, err
	}
	m.socks = *socks
	var dials context.Context
	dials, m.stopDials = context.WithCancel(context.Background())
	guard := guardTransport(newSocketTransport(*socks, dials, logger), logger)
	if mc.BindPort == 0 {
		mc.BindPort = socks.Port()
		mc.AdvertisePort = mc.BindPort
	}
	mc.Transport = guard
	if testHookTransport != nil {
		mc.Transport = testHookTransport(mc.Name, guard)
	}
	m.streams = guard
	ml, err := memberlist.Create(mc)
	if err != nil {
		guard.Shutdown()
		m.markClosed()
		return nil, fmt.Errorf("start gossip on %s: %w", cfg.Bind, err)
	}
	m.ml = ml
	m.retry.Add(1)
	go m.confirmJoins()
	close(m.ready)
	// LocalNode's fields are written by memberlist later (UpdateNode), so
	// read the identity once, now.
	local := ml.LocalNode()
	m.addr = local.Address()
	seeds := slices.Clone(cfg.Join)
	if len(seeds) > 0 {
		_, err := ml.Join(seeds)
		if err != nil {
			logger.Warn("no gossip seed answered yet; retrying in the background", "seeds", seeds, "err", err)
		} else {
			// The members the seeds told of are believed once they
			// answer (joins.go): a round trip, which callers expect
			// Join to have waited for.
			m.waitConfirmed(ctx, joinConfirmWait)
		}
		every := seedCheckLAN
		if cfg.Profile == "local" {
			every = seedCheckLocal
		}
		m.retry.Add(1)
		go m.keepSeeds(seeds, every, err == nil)
	}
	// The watch's clocks start now: Join's own wait for its seeds (one
	// that takes the connection and answers nothing holds it for
	// memberlist's TCP timeout) is no pause, and no probe of this node's
	// went unanswered before it (TestJoinsWaitIsNotAway).
	start := m.mono(time.Now())
	m.tickAt.Store(start)
	m.mu.Lock()
	m.answeredAt.Store(start)
	m.mu.Unlock()
	m.retry.Add(1)
	go m.watchAway()
	if err := ctx.Err(); err != nil {
		m.Shutdown(context.Background())
		return nil, err
	}
	return m, nil
}

// How often a joined node checks that it reaches every seed: a restarted
// seed is back in the cluster within about this long after it is up.
const (
	seedCheckLAN   = 5 * time.Second
	seedCheckLocal = time.Second
)

// keepSeeds joins the seeds until one answers (backing off from 200 ms to
// every), then, every so often, joins again each seed that no live member
// answers for. It stops with the membership; a host name lookup in flight
// is cancelled then, and a join in flight ends (its dial and stream do).
func (m *Membership) keepSeeds(seeds []string, every time.Duration, joined bool) {
	defer m.retry.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-m.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	wait := every
	if !joined {
		wait = 200 * time.Millisecond
	}
	for {
		select {
		case <-m.stop:
			return
		case <-time.After(wait):
		}
		missing := m.unreachedSeeds(ctx, seeds)
		if len(missing) == 0 {
			joined, wait = true, every
			continue
		}
		n, err := m.ml.Join(missing)
		switch {
		case n == 0:
			m.logger.Debug("gossip seeds still unreachable", "seeds", missing, "err", err)
			if !joined {
				wait = min(2*wait, every)
			}
			continue
		case joined:
			m.logger.Info("rejoined gossip seeds that had dropped out of the cluster", "seeds", missing, "answered", n)
		default:
			m.logger.Info("joined the gossip cluster", "seeds", missing)
		}
		joined, wait = true, every
	}
}

// unreachedSeeds returns the seeds that lead to no live member (this node
// included). A seed named by host name (a headless Service) is reached when
// any of its addresses is.
func (m *Membership) unreachedSeeds(ctx context.Context, seeds []string) []string {
	m.mu.Lock()
	live := make(map[string]bool, len(m.nodes)+1)
	live[m.addr] = true
	for _, n := range m.nodes {
		live[n.Addr] = true
	}
	m.mu.Unlock()
	var missing []string
	for _, seed := range seeds {
		host, port, err := net.SplitHostPort(seed)
		if err != nil {
			missing = append(missing, seed) // memberlist reports what is wrong with it
			continue
		}
		addrs := []string{host}
		if net.ParseIP(host) == nil {
			lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			addrs, err = net.DefaultResolver.LookupHost(lctx, host)
			cancel()
			if err != nil {
				missing = append(missing, seed)
				continue
			}
		}
		if !slices.ContainsFunc(addrs, func(a string) bool { return live[net.JoinHostPort(a, port)] }) {
			missing = append(missing, seed)
		}
	}
	return missing
}

func memberlistConfig(cfg configs.Cluster, kr *Keyring, logger *slog.Logger, refutedDeath func()) (*memberlist.Config, error) {
	var mc *memberlist.Config
	if cfg.Profile == "local" {
		mc = memberlist.DefaultLocalConfig()
	} else {
		mc = memberlist.DefaultLANConfig()
	}
	mc.Name = cfg.Name
	if mc.Name == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("cluster.name is empty and the host name is unknown: %w", err)
		}
		mc.Name = host
	}
	bind := cfg.Bind
	if bind == "" {
		bind = configs.DefaultGossipBind
	}
	host, port, err := splitHostPort(bind)
	if err != nil {
		return nil, fmt.Errorf("cluster.bind: %w", err)
	}
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertisePort = port
	if cfg.Advertise != "" {
		ahost, aport, err := splitHostPort(cfg.Advertise)
		if err != nil {
			return nil, fmt.Errorf("cluster.advertise: %w", err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = ahost, aport
	}
	// Every broadcast (a node's join, a drain, a pin) is sent to
	// RetransmitMult×log10(n) peers; the local profile's 2 leaves a node of
	// a small cluster without a join for a push/pull interval now and then,
	// and edges refuse claims from edges they do not know yet.
	mc.RetransmitMult = max(mc.RetransmitMult, 4)
	if cfg.ProbeInterval > 0 {
		mc.ProbeInterval = cfg.ProbeInterval.D()
		mc.ProbeTimeout = min(mc.ProbeTimeout, cfg.ProbeInterval.D()/2)
	}
	if cfg.GossipInterval > 0 {
		mc.GossipInterval = cfg.GossipInterval.D()
		mc.PushPullInterval = max(20*cfg.GossipInterval.D(), time.Second)
	}
	// A node's name is taken on another address once memberlist holds it
	// dead (0, memberlist's default, is never: not until it forgets the
	// node, GossipToTheDeadTime). An edge that crashed and came back on a
	// new address — a rescheduled pod — was refused as a conflict by every
	// node for that long, and then until its next push/pull
	// (TestCrashedNodeBackOnAnotherAddress). It is believed as any join
	// is (joins.go), and a live node's address is never taken this way.
	mc.DeadNodeReclaimTime = mc.ProbeInterval
	if kr.Enabled() {
		// Encrypted and authenticated both ways: a packet without a key
		// of the ring is dropped (memberlist's GossipVerify* defaults,
		// stated here because the cluster's trust rests on them).
		mc.Keyring = kr.ml
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	mc.Logger = log.New(&logWriter{logger: logger, refutedDeath: refutedDeath}, "", 0)
	return mc, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// logWriter turns memberlist's "[LEVEL] memberlist: msg" lines into slog
// records at debug level, keeping memberlist's level as an attribute. Not
// warn or error: many of memberlist's [ERR] and [WARN] lines are triggered by
// peers (undecryptable or malformed packets, a peer's failed probe), so
// raising them would let any host that reaches the gossip port flood the
// logs; what operators need (joins, leaves, failures) comes as events.
//
// Two lines are an event of their own: memberlist says nothing else when
// this node hears that the cluster suspects it or took it for dead, and
// refutes that (refutedDeath).
type logWriter struct {
	logger       *slog.Logger
	refutedDeath func()
}

// refuting begin memberlist's lines for a suspect or dead message about
// this node that it refutes (state.go: suspectNode, deadNode). A node the
// others had taken for dead may hear only the suspicion before it (a node
// stopped 12 s and let go on loopback refuted "a suspect message" only,
// while the others had it dead for 8 s): either way they may have dropped
// it, and take it back once they hear the refutation. Matched at the
// line's start only (memberlist's logger has no prefix or flags): lines
// quote what strangers send — a packet's unexpected label is quoted whole,
// no key needed — and a label spelling a refutation made the node away at
// will (TestForgedRefutationInALabelIsNotAway).
var refuting = [...][]byte{[]byte("[WARN] memberlist: Refuting a suspect message"), []byte("[WARN] memberlist: Refuting a dead message")}

func (w *logWriter) Write(p []byte) (int, error) {
	if w.refutedDeath != nil && (bytes.HasPrefix(p, refuting[0]) || bytes.HasPrefix(p, refuting[1])) {
		w.refutedDeath()
	}
	if !w.logger.Enabled(context.Background(), slog.LevelDebug) {
		return len(p), nil
	}
	line := string(bytes.TrimSpace(p))
	level := ""
	// "[LEVEL] memberlist: ...", possibly after a timestamp.
	if i := strings.IndexByte(line, '['); i >= 0 {
		if j := strings.IndexByte(line[i:], ']'); j > 0 {
			level, line = line[i+1:i+j], strings.TrimSpace(line[i+j+1:])
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	w.logger.Debug(line, "component", "memberlist", "memberlist_level", level)
	return len(p), nil
}

// BackAt is when this node last came back from being suspected or taken
// for dead by the cluster (zero if never), or now while it may still be
// away: others that had dropped it take it back as they hear from it
// again, and route to it again by rings they had dropped it from. Away
// is from when it learns that the others may have dropped it until a
// member answers it (probeAnswered); then it announces itself again.
func (m *Membership) BackAt() time.Time {
	now := time.Now()
	if after := m.awayBound.Load(); after > 0 {
		if _, ok := quiet(m.mono(now), m.tickAt.Load(), m.answeredAt.Load(), after); ok {
			// Away, though the watch has not run since to say so: a
			// join placed as the process resumes from a pause may run
			// before it (TestBackAtSeesAPauseBeforeTheWatch).
			return now
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.awayAt.IsZero() {
		return now
	}
	return m.backAt
}

// How a node learns that the others may have dropped it
// (ringlb_gossip_back_total{reason}: a time away known two ways counts
// under both):
// it refuted a suspicion or death memberlist told it of; it did not run
// for longer than the others take to drop it; or no member answered its
// probes for that long. The last two are needed: a node stopped past the
// others' suspicion (SIGSTOP in the end-to-end partition test) came back
// through its own next metadata update, which raises its incarnation as a
// refutation does, without hearing of its death at all; and a node cut off
// one way (the others lose what it sends) refutes their suspicion while
// still cut off, and comes back long after, hearing nothing more
// (TestCutOffNodeIsBackOnceAnswered).
var backReasons = [...]string{"refuted", "paused", "unanswered"}

const (
	backRefuted = iota
	backPaused
	backUnanswered
)

// testHookTransport, set by tests, wraps the transport memberlist is
// given a node of that name (a test cuts the node off the network there).
var testHookTransport func(name string, tr memberlist.NodeAwareTransport) memberlist.NodeAwareTransport

// backLogEvery spaces the warnings of a node's times away.
const backLogEvery = 10 * time.Second

// refutedDeath notes that this node refuted its suspicion or death
// (logWriter). Called by memberlist with its state locked: it takes m.mu,
// as memberlist's event callbacks do, and calls nothing of memberlist's.
func (m *Membership) refutedDeath() {
	now := time.Now()
	m.wentAway(backRefuted, now, now)
}

// wentAway notes, at now, that the others may have dropped this node, how
// it knows, unheard since from: it is away (BackAt) until a member answers
// a probe sent since (probeAnswered).
func (m *Membership) wentAway(reason int, now, from time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.awayHow&(1<<reason) != 0 {
		return
	}
	if reason == backUnanswered && !unheard(m.mono(now), m.answeredAt.Load(), m.awayBound.Load()) {
		return // answered since noticeGap looked
	}
	m.awayHow |= 1 << reason
	m.backs[reason].Add(1)
	if !m.awayAt.IsZero() {
		if from.Before(m.awayFrom) {
			m.awayFrom = from
		}
		return // known another way already
	}
	m.awayAt, m.awayFrom = now, from
	// Once in a while: a member can make this node refute at will.
	if m.awayLogged = now.Sub(m.backAt) > backLogEvery; m.awayLogged {
		m.logger.Warn("the cluster may have taken this node for dead (busy, stopped, or cut off from the others?); it counts as new to the cluster until a member answers it and for the settle window after", "how", backReasons[reason])
	}
	m.notifyLocked()
}

// probeAnswered notes, at now, that a member answered a challenge of
// this node's (live.go) — or, while no member announces PeerSigningLive,
// one of memberlist's probes — sent at sent: away, and sent since it went
// unheard, it is back, and announces itself again — an answer read on
// resuming from a pause may be to a probe from before it. A probe's ack
// may be a replay (live.go): from members that answer challenges only a
// challenge's answer counts. Called with no lock of memberlist's held.
func (m *Membership) probeAnswered(now, sent time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.answeredAt.Store(m.mono(now))
	if m.awayAt.IsZero() || sent.Before(m.awayFrom) {
		return
	}
	if m.awayLogged {
		m.logger.Info("a member answered this node again: it is back, announcing itself", "away", now.Sub(m.awayAt).Round(time.Millisecond))
	}
	m.awayAt, m.awayFrom, m.awayHow, m.backAt = time.Time{}, time.Time{}, 0, now
	m.notifyLocked()
	select {
	case m.back <- struct{}{}:
	default:
	}
}

// watchAway notes the times this node may have been dropped that nothing
// of memberlist's tells it of — a pause of the process, or its probes going
// unanswered, for as long as the others take to drop it (dropAfter) — and
// announces the node again when it is back: the others take it back as
// they hear that, not at its next push/pull or metadata update (30 s and
// more apart) — until then, BackAt's window would be running out.
func (m *Membership) watchAway() {
	defer m.retry.Done()
	tick := time.NewTicker(m.probeInterval)
	defer tick.Stop()
	next := 0 // the member to challenge (challengeNext)
	for {
		select {
		case <-m.stop:
			return
		case <-m.back:
			// A higher incarnation, gossiped: others holding this node
			// dead at a lower one take it back. Bounded: it waits only for
			// the broadcast to go out, at the next gossip round (Shutdown
			// waits for it too).
			if err := m.ml.UpdateNode(2 * m.gossipInterval); err != nil {
				m.logger.Debug("announcing this node again", "err", err)
			}
			m.tickAt.Store(m.mono(time.Now()))
		case <-tick.C:
			now := time.Now()
			m.noticeGap(m.at(m.tickAt.Load()), now)
			m.tickAt.Store(m.mono(now))
			next = m.challengeNext(next)
		}
	}
}

// noticeGap is watchAway's check of what happened between two of its
// ticks, last and now: a pause of the process, or no answer.
func (m *Membership) noticeGap(last, now time.Time) {
	n := m.ml.NumMembers()
	if n < 2 {
		// Nobody to drop it, nobody to answer it: a node started before
		// its seeds, or left alone, does not go away for that (one that
		// went away before it was left alone stays away until answered).
		m.mu.Lock()
		m.answeredAt.Store(m.mono(now))
		m.mu.Unlock()
		m.awayBound.Store(0)
		return
	}
	after := int64(m.dropAfter(n))
	m.awayBound.Store(after)
	answered := m.answeredAt.Load()
	switch reason, ok := quiet(m.mono(now), m.mono(last), answered, after); {
	case !ok:
	case reason == backPaused:
		m.wentAway(reason, now, last)
	default:
		m.wentAway(reason, now, m.at(answered))
	}
}

// mono is t on the membership's monotonic clock (nanoseconds since
// clock0): the wall clock may step.
func (m *Membership) mono(t time.Time) int64 { return int64(t.Sub(m.clock0)) }

// at is the time of a mono reading.
func (m *Membership) at(mono int64) time.Time { return m.clock0.Add(time.Duration(mono)) }

// quiet reports whether, at now, the process has not run since ran, or
// no member has answered it since answered, for longer than after — as
// long as the others take to drop it — and which (mono times, and
// nanoseconds).
func quiet(now, ran, answered, after int64) (reason int, ok bool) {
	switch {
	case unheard(now, ran, after):
		return backPaused, true
	case unheard(now, answered, after):
		return backUnanswered, true
	}
	return 0, false
}

// unheard reports whether more than after has passed between since and
// now (mono times): as long as the others take to drop a silent node.
func unheard(now, since, after int64) bool { return now-since > after }

// dropAfter is the least time the others, n members with this node, take
// to drop it once it goes silent: a probe and memberlist's shortest
// suspicion timeout.
func (m *Membership) dropAfter(n int) time.Duration {
	return m.probeInterval + m.suspicion(n, 1)
}

// Keyring is the cluster's key (nil when it has none): nodes sign their
// requests to each other with it and verify those they get.
func (m *Membership) Keyring() *Keyring { return m.keyring }

// ReloadKeys installs the keys of cluster.secret_key_file (SIGHUP) without
// a partition: keys new to the file are accepted first, then the first line
// becomes primary, then keys gone from the file are removed. The keys are
// those the check of cfg read (configs.Cluster.Keyring): the file is not
// read again between the check and here, where a swap would fail the
// reload after the role's section had applied.
func (m *Membership) ReloadKeys(cfg configs.Cluster) error {
	keys, err := cfg.Keyring()
	if err != nil {
		return fmt.Errorf("cluster.secret_key_file: %w", err)
	}
	if err := m.keyring.replace(keys); err != nil {
		return err
	}
	if len(keys) > 0 {
		m.logger.Info("gossip keyring reloaded", "keys", len(keys))
	}
	return nil
}

// Collector is the gossip's own metrics for the role's registry
// (metrics.go): ringlb_gossip_streams_refused_total,
// ringlb_gossip_joins_unconfirmed_total, ringlb_peer_answers_refused_total
// (the keyring's: answer.go).
func (m *Membership) Collector() prometheus.Collector { return collector{m} }

// LocalName is this node's name.
func (m *Membership) LocalName() string { return m.name }

// Addr is this node's gossip address as peers see it (after a port-0 bind
// has been resolved).
func (m *Membership) Addr() string { return m.addr }

// Sockets are the gossip port's sockets: an upgrade passes them on, so the
// new process gossips on the same port without it ever being free.
func (m *Membership) Sockets() GossipSockets { return m.socks }

// Meta returns this node's current metadata.
func (m *Membership) Meta() Meta {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.meta
}

// Members returns the live members, this node included, sorted by name.
func (m *Membership) Members() []Node {
	m.mu.Lock()
	out := make([]Node, 0, len(m.nodes))
	for _, n := range m.nodes {
		out = append(out, n)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Edges returns the live edges that take new sessions (state alive, not
// draining) in region, or in every region when region is "".
func (m *Membership) Edges(region string) []Node {
	all := m.Members()
	out := all[:0]
	for _, n := range all {
		if n.Meta.Role == RoleEdge && n.Meta.State == StateAlive && (region == "" || n.Meta.Region == region) {
			out = append(out, n)
		}
	}
	return out
}

// toNode copies n, its metadata decoded. Metadata that does not decode
// whole is an error: json.Unmarshal leaves the fields it had filled before
// a value of the wrong type, and a member believed on part of its metadata
// (a region or a load read as nothing) was routed to.
//
// Metadata over memberlist's limit is not read at all: memberlist bounds
// what a node announces, not what it takes from others, and a member
// holding the key can gossip as much as a push/pull carries (20 MB).
func toNode(n *memberlist.Node) (Node, error) {
	node := Node{Name: n.Name, Addr: n.Address()}
	if len(n.Meta) > memberlist.MetaMaxSize {
		return node, fmt.Errorf("metadata of %d bytes, over memberlist's limit of %d: not read", len(n.Meta), memberlist.MetaMaxSize)
	}
	if len(n.Meta) > 0 {
		if err := json.Unmarshal(n.Meta, &node.Meta); err != nil {
			return node, fmt.Errorf("unreadable metadata: %w", err)
		}
	}
	return node, nil
}

// Subscribe returns a channel that receives a value after membership changes
// (coalesced: one pending notification at most, so gossip never waits on a
// slow consumer), and a function that ends the subscription. Read Members or
// Edges after each notification.
func (m *Membership) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	m.mu.Lock()
	id := m.nextID
	m.nextID++
	m.subs[id] = ch
	m.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			m.mu.Lock()
			delete(m.subs, id)
			m.mu.Unlock()
		})
	}
}

// Recent returns the last membership events, oldest first.
func (m *Membership) Recent() []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.recent)
}

// Left returns the member name as it was when it left this node's view, if
// it left less than within (at most leftKept) ago and has not come back
// since.
func (m *Membership) Left(name string, within time.Duration) (Node, bool) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	ev, ok := m.gone[name]
	if !ok || now.Sub(ev.At) >= min(within, leftKept) {
		return Node{}, false
	}
	return ev.Node, true
}

// CheckEdgeURL reports whether raw is an address a member of this cluster
// could announce as its own (configs.CheckAdvertisedURL against
// cluster.allowed_networks): for an address another node hands over for
// an edge not heard of yet.
func (m *Membership) CheckEdgeURL(raw string) error {
	return configs.CheckAdvertisedURL(raw, m.allowed)
}

// Wait returns once cond holds for the live members, or ctx ends.
func (m *Membership) Wait(ctx context.Context, cond func([]Node) bool) error {
	ch, unsubscribe := m.Subscribe()
	defer unsubscribe()
	for !cond(m.Members()) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
	return nil
}

// ErrShutdown is returned by UpdateMeta after Shutdown.
var ErrShutdown = errors.New("gossip membership is shut down")

// waitBound turns ctx into memberlist's timeout argument, where 0 or less
// means "wait forever": an expired ctx becomes the shortest wait, no deadline
// becomes def.
func waitBound(ctx context.Context, def time.Duration) time.Duration {
	dl, ok := ctx.Deadline()
	if !ok {
		return def
	}
	return max(time.Until(dl), time.Nanosecond)
}

// UpdateMeta changes this node's metadata and gossips it; ctx bounds the wait
// for the update to go out (5 s when ctx has no deadline). The local change
// stands even when the wait times out: gossip carries it on.
func (m *Membership) UpdateMeta(ctx context.Context, f func(*Meta)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrShutdown
	}
	next := m.meta
	f(&next)
	enc, err := next.Encode()
	if err != nil {
		m.mu.Unlock()
		return err
	}
	m.meta, m.encMet = next, enc
	m.mu.Unlock()
	if err := m.ml.UpdateNode(waitBound(ctx, 5*time.Second)); err != nil {
		return fmt.Errorf("gossip metadata update: %w", err)
	}
	return nil
}

// Shutdown leaves the cluster gracefully (bounded by ctx, and by 2 s, after
// an announcement under way: two gossip intervals) and stops gossip. It is
// safe to call more than once.
func (m *Membership) Shutdown(ctx context.Context) error {
	m.shutOnce.Do(func() {
		m.markClosed()
		// Leave waits for peers to take the leave message; when they are
		// all stopping too (a whole demo) nobody answers, so bound the wait
		// and stop anyway: peers then detect the node as failed instead.
		if err := m.ml.Leave(min(waitBound(ctx, 2*time.Second), 2*time.Second)); err != nil {
			m.logger.Warn("left the gossip cluster without confirmation", "err", err)
		}
		m.shutErr = m.ml.Shutdown()
		m.liveSends.Wait()
	})
	return m.shutErr
}

func (m *Membership) markClosed() {
	m.mu.Lock()
	m.closed = true
	if m.notifyDue != nil && m.notifyDue.Stop() {
		m.notifyDue = nil
		m.wakeLocked(time.Now())
	}
	m.mu.Unlock()
	close(m.stop)
	m.stopDials()
	m.retry.Wait()
}

// crash stops gossip without leaving, as a killed process would (tests).
func (m *Membership) crash() error {
	m.shutOnce.Do(func() {
		m.markClosed()
		m.shutErr = m.ml.Shutdown()
		m.liveSends.Wait()
	})
	return m.shutErr
}

func (m *Membership) record(kind string, n *memberlist.Node) {
	node, err := toNode(n)
	ev := Event{Kind: kind, Node: node, At: time.Now()}
	var distrust, note string
	switch {
	case kind == "leave" || ev.Node.Name == m.name:
	case err != nil:
		distrust = err.Error()
	default:
		distrust, note = trustMeta(&ev.Node, m.allowed)
	}
	m.mu.Lock()
	// Here, where trust is decided: an ignored member's address is a
	// stranger's to the stream guard, or a key holder's made-up members
	// would hold the slots kept for members.
	m.memberStreams(n, kind != "leave" && distrust == "")
	if distrust != "" {
		// Not a member this node routes to, votes with or calls: drop it
		// (an update may have turned a trusted node untrusted), and say
		// why once per reason, not once per gossip update.
		_, was := m.nodes[ev.Node.Name]
		delete(m.nodes, ev.Node.Name)
		delete(m.noted, ev.Node.Name)
		changed := m.ignored[ev.Node.Name] != distrust
		m.ignored[ev.Node.Name] = distrust
		m.ignoredAddr[ev.Node.Name] = n.Address()
		if was {
			m.nodesChangedLocked()
		}
		m.mu.Unlock()
		if changed {
			m.logger.Warn("ignoring a gossip member whose metadata this node does not trust", "member", bounded(ev.Node.Name), "addr", n.Address(), "why", distrust)
		}
		return
	}
	_, wasIgnored := m.ignored[ev.Node.Name]
	delete(m.ignored, ev.Node.Name)
	delete(m.ignoredAddr, ev.Node.Name)
	newNote := note != "" && m.noted[ev.Node.Name] != note
	if note == "" {
		delete(m.noted, ev.Node.Name)
	} else {
		m.noted[ev.Node.Name] = note
	}
	if old, ok := m.nodes[ev.Node.Name]; !ok || kind != "update" || !sameButLoad(old.Meta, ev.Node.Meta) {
		// An update of a load alone is no event: an edge's comes every
		// 2 s while its load changes, and ten such edges pushed every
		// join and leave out of the recent events within 13 s.
		if len(m.recent) == recentEvents {
			m.recent = append(m.recent[:0], m.recent[1:]...)
		}
		m.recent = append(m.recent, ev)
	}
	if kind == "leave" {
		_, was := m.nodes[ev.Node.Name]
		delete(m.nodes, ev.Node.Name)
		m.pins.left(ev.Node.Name, ev.At)
		for name, left := range m.gone {
			if ev.At.Sub(left.At) >= leftKept {
				delete(m.gone, name)
			}
		}
		if was { // an ignored member was never in the view
			m.gone[ev.Node.Name] = ev
		}
	} else {
		m.nodes[ev.Node.Name] = ev.Node
		m.pins.back(ev.Node.Name)
		delete(m.gone, ev.Node.Name)
	}
	m.nodesChangedLocked()
	m.mu.Unlock()
	if newNote {
		m.logger.Warn("a gossip member announces metadata this node does not trust; ignoring that part", "member", bounded(ev.Node.Name), "why", note)
	}
	if wasIgnored && kind != "leave" {
		m.logger.Info("gossip member trusted again", "member", ev.Node.Name)
	}
	// A leave is what an operator looks for after a crash; joins and
	// updates are routine (every node logs every other one at start).
	level := slog.LevelDebug
	if kind == "leave" {
		level = slog.LevelInfo
	}
	m.logger.Log(context.Background(), level, "membership "+kind, "member", bounded(n.Name), "addr", n.Address(), "state", ev.Node.Meta.State)
}

// sameButLoad reports whether a and b differ in their load alone.
func sameButLoad(a, b Meta) bool {
	a.Load, b.Load = nil, nil
	return a == b
}

// nodesChangedLocked follows a change of m.nodes: what is kept of them is
// brought up to date and every subscriber woken. m.mu is held.
func (m *Membership) nodesChangedLocked() {
	lowest := int32(math.MaxInt32)
	live := int32(0)
	for _, n := range m.nodes {
		if n.Meta.Role == RoleBalancer {
			lowest = min(lowest, int32(min(n.Meta.PeerSigning, math.MaxInt32)))
		}
		if n.Name != m.name && n.Meta.PeerSigning >= PeerSigningLive {
			live++
		}
	}
	m.balancerSigning.Store(lowest)
	m.liveMembers.Store(live)
	m.notifyLocked()
}

// BalancerBelow reports whether a live balancer announces a peer_signing
// below level: one of an earlier release, which does not sign what level
// adds. One atomic load: edges ask it per unsigned request.
func (m *Membership) BalancerBelow(level int) bool {
	return int(m.balancerSigning.Load()) < level
}

// notifyLocked wakes every subscriber (coalesced), now or, within
// notifyEvery of the last time, once it has passed. m.mu is held.
func (m *Membership) notifyLocked() {
	if m.notifyDue != nil {
		return // the changes so far will be told then
	}
	now := time.Now()
	if wait := m.lastNotify.Add(notifyEvery).Sub(now); wait > 0 && !m.closed {
		m.notifyDue = time.AfterFunc(wait, func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			m.notifyDue = nil
			m.wakeLocked(time.Now())
		})
		return
	}
	m.wakeLocked(now)
}

func (m *Membership) wakeLocked(now time.Time) {
	m.lastNotify = now
	for _, ch := range m.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// delegate gives memberlist this node's metadata and carries pins (pins.go)
// and channels (channel.go).
type delegate struct{ m *Membership }

func (d delegate) NodeMeta(limit int) []byte {
	d.m.mu.Lock()
	defer d.m.mu.Unlock()
	if len(d.m.encMet) > limit {
		return nil // Encode already refused this; never hand memberlist more than it allows
	}
	return d.m.encMet
}

func (d delegate) NotifyMsg(b []byte) {
	var err error
	switch {
	case len(b) > 0 && b[0] == msgChannel:
		err = d.m.deliverChannel(b)
	case len(b) > 0 && b[0] == msgLive:
		err = d.m.receiveLive(b)
	default:
		err = d.m.pins.receive(b)
	}
	if err != nil {
		d.m.logger.Debug("ignoring gossip message", "err", err, "bytes", len(b))
	}
}

func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.m.pins.queue.GetBroadcasts(overhead, limit)
}

func (d delegate) LocalState(join bool) []byte { return d.m.pins.state() }

func (d delegate) MergeRemoteState(buf []byte, join bool) {
	if len(buf) == 0 {
		return
	}
	if err := d.m.pins.merge(buf); err != nil {
		d.m.logger.Debug("ignoring gossip state", "err", err, "bytes", len(buf))
	}
}

// events feeds memberlist's join/leave/update callbacks to subscribers.
type events struct{ m *Membership }

// A join is believed once the member answers a ping (joins.go); until
// then its updates and its leave only change or drop what is pending.
func (e events) NotifyJoin(n *memberlist.Node) { e.m.joined(n) }

func (e events) NotifyLeave(n *memberlist.Node) {
	if e.m.leftPending(n) {
		// Never believed, so no departure to come back from: recorded as
		// one, a replay of the node's later life (a higher incarnation)
		// within rejoinWithin was believed without a ping
		// (TestReplayedLaterLifeAfterAPendingJoinIsNotBelieved).
		return
	}
	if n.Name != e.m.name {
		e.m.departedNow(n)
		e.m.forgetLive(n.Name)
	}
	e.m.record("leave", n)
}

func (e events) NotifyUpdate(n *memberlist.Node) {
	if e.m.updatedPending(n) {
		return
	}
	e.m.record("update", n)
}

// memberStreams tells the stream guard where another member is (present)
// or that it has left or is ignored: streams from members' addresses have
// slots of their own (streams.go). m.mu is held (record).
func (m *Membership) memberStreams(n *memberlist.Node, present bool) {
	if n.Name == m.name {
		return
	}
	addr, ok := netip.AddrFromSlice(n.Addr)
	if !ok {
		return
	}
	m.streams.member(n.Name, acceptguard.ClientNetwork(addr.Unmap()), present)
}
