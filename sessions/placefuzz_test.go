package sessions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// FuzzPlacementEvents drives the session ownership of two to four edges
// (docs/DESIGN.md, "The one hard property: a session never splits"), each
// a real Server with its real ownership and hub (New, UseCluster), through
// an order of events the input chooses, on four session keys (one in raw
// mode) and a clock of the harness's (hub.clock): joins of a key
// arriving at an edge as a balancer sends them — by a possibly stale view
// of the cluster (one edge's, or the converged one), to the edge that
// pinned the key or the ring's owner, skipping the edges it cannot reach
// (X-Ringlb-Skip), now and then one it could reach but failed to dial —
// through the real Server.place (lookup, ownership.place, reserve), its
// 421s followed for two hops as a balancer does, its upgrade done at once
// or at a later event (admitted meanwhile) or failing; participants
// leaving, idle_grace running out (60 s, 5 s, or 0: a v1 session freed with
// its last participant); edges joining the cluster (scale-out: knowing
// every member gossip has converged on, or, as memberlist's join does,
// what the one member it joins through knows, that member learning of it)
// and every
// edge's view of the membership and of each node's pins brought up to
// date one by one (views differ while gossip converges, within two seconds
// of the clock: time passing converges what is older; a node's state may
// arrive before its pins); an edge crashing
// (its sessions gone, nothing listens there) and, crashed or drained and
// exited, restarting under its name (a new process: no sessions, claims
// or pins); an edge taken for dead while
// alive (a busy one: gossip drops it, balancers skip it, its claims go
// unanswered until it is back) and coming back (knowing it was away, as
// memberlist's node does when it refutes its death: Membership.BackAt); a drain (its own ring
// updated before or after its hand-off, as the UseCluster goroutine may),
// its hand-offs delivered, lost before or after the new owner installed
// them, or refused for now then delivered, then the drained edge exiting;
// the links between edges delivering claims, dropping them, losing their
// answers or delivering them late (at a later event); the clock advancing
// across the 10 s settle window (sweeps run, late claims expire).
//
// Claims and hand-offs go through each edge's real peer client
// (ownership.http) with a RoundTripper of the harness that calls the
// target's real serveClaim and serveHandoff in process: sockets cannot be
// held or dropped on cue. A claim the target refuses for not knowing the
// claimer (403) brings the claimer into its view, as gossip does during
// claimKnown's pause, so the retry is answered; its ring is rebuilt at a
// later event (pevGossip, pevPins, time passing), as UseCluster's
// goroutine does shortly after. The membership is a
// harness Membership per edge (memberlist cannot be driven
// deterministically: its timers, probes and random peers are its own);
// UseCluster's goroutine is stopped at once and what it would do on a
// change (update) and every settle window (hub.sweep) the harness does at
// the events that cause them. Everything in sessions is the real code.
//
// Checked after every event: no key has participants in live (unfrozen)
// sessions on two edges that are up; a join that starts a session anew
// does so while no other edge that is up hosts the key (idle or not), and
// a join that finds the key hosted elsewhere is redirected there or refused;
// no 421 names an edge the join's X-Ringlb-Skip names;
// an edge's pins are exactly the gossip pins it announced, each for a
// session it hosts unfrozen (pins withdrawn when sessions end or are handed
// on); no admission is left counted but the upgrades still pending; no
// claim, hand-over or install mark outlives the settle window past a
// sweep, no ring view is kept past it, and at most maxSkipSets skip sets
// are built.
//
// Allowed by DESIGN, and so excused for the key until at most one edge
// hosts it again (and the edges involved can know of each other's
// session: a skipped edge up has its pin, an edge back from the dead has
// been seen back, within gossip's two seconds): a join whose balancer names in X-Ringlb-Skip an edge that
// is up ("A crash moves only the crashed edge's sessions": the balancer's
// word that it could not reach it is believed, though that edge hosts the
// key, holds the claim of the edge that does, starts it before the pin
// of this one reaches it, or admitted a join of it whose upgrade ends
// later), and a join
// placed while an edge hosting the key, or any edge, is taken for dead
// (busy, or back within gossip's two seconds) and not a member in the
// placing edge's view (takeForDead; back, that edge may start the key
// before it learns of this session). Replication is off
// (edge.replication: off), so nothing takes those sessions over.
//
// Not reached: the signatures of claims, answers, skips and hand-offs (the
// cluster has no key here: the insecure mode; TestForgedClaimAnswerSplitsNoSession
// and skipsign_test.go check them); the data port's sockets, the upgrade and the
// participants' readers and writers (a join is place then hub.join; a
// participant closed 1012 leaves at once); replication and promotion;
// a claim that stays unanswered past claimKnown's 2 s (403 for ever), and a
// busy edge placing joins;
// gossip slower than two seconds (the settle window's margin is its
// premise); max_participants, tokens and seats (one anonymous editor a
// join). Edges may drain at once, one before the others learn of it
// (TestTwoEdgesDrainingTogetherLoseNoSession).
func FuzzPlacementEvents(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		runPlacementEvents(t, in)
	})
}

// The events: two bytes each, what (mod numPlaceEvents) and an argument.
const (
	pevJoin     = iota // arg: key (0–1), balancer's view (2–4: an edge's; 5: before the last membership change; else converged), a failed dial (5), upgrade later (6–7 both set)
	pevLeave           // a participant leaves (arg: which)
	pevUpgrade         // a pending upgrade ends (arg bit 0: fails; 1–7: which)
	pevEdgeJoin        // the next edge joins the cluster (scale-out; arg 0xd0–0xd3: through edge 0–1, learning what it knows)
	pevGossip          // an edge's view of one node catches up (arg: viewer 0–1, node 2–3, its pins not yet 4)
	pevPins            // an edge learns one node's pins (arg: viewer 0–1, node 2–3)
	pevCrash           // an edge crashes (arg: edge), or, crashed or exited, restarts (bit 2)
	pevBusy            // an edge is taken for dead while alive, or is back (arg: edge)
	pevDrain           // an edge drains (arg: edge 0–1, hand-off 2–3, update after 4), or, draining, exits
	pevTime            // the clock advances (arg: placeSteps)
	pevLink            // a link between edges changes (arg: from 0–1, to 2–3, pfLinkMode 4–5)
	pevLate            // a claim held on a link arrives (arg: which)
	numPlaceEvents
)

// placeSteps are pevTime's: within gossip's two seconds, past them, past
// the settle window, past idle_grace and a gone node's pins.
var placeSteps = [8]time.Duration{100 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second, 9 * time.Second, 11 * time.Second, 61 * time.Second}

// pfForever is an excuse's end while an edge is taken for dead.
var pfForever = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// pfStart is the harness clock's start.
var pfStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// pfGossipBound is how long a change takes to reach every view at most:
// the bound the edges rely on.
const pfGossipBound = gossipBound

// pfLateFor is how long a claim held on a link may still arrive.
const pfLateFor = 2 * time.Second

// pfKeys are the keys, each moved by scale-out (pfRing; the first edges
// are edge-a and edge-b, then edge-c, then edge-d): room-13 from edge-a
// to edge-c, room-7 from edge-b to edge-c then edge-d, room-12 (a raw-mode
// session's) from edge-a to edge-d; room-36, edge-c's of the three, moves
// to edge-b when edge-a leaves (the ring's load bound moves keys between
// the edges that stay).
var pfKeys = [4]string{"room-13", "room-7", "room-12", "room-36"}

var pfNames = [4]string{"edge-a", "edge-b", "edge-c", "edge-d"}

// pfRing is a small ring, rebuilt in microseconds.
var pfRing = ring.Config{Partitions: 61, Replication: 16, Load: 1.25}

type pfState int

const (
	pfAbsent   pfState = iota // not started yet
	pfAlive                   // serving
	pfDraining                // drained, still up (its frozen sessions, joins after)
	pfGone                    // drained and exited: nothing listens
	pfCrashed                 // nothing listens; its sessions are gone
)

// pfLinkMode is what a link does with a claim.
type pfLinkMode int

const (
	pfDeliver    pfLinkMode = iota
	pfDrop                  // lost on the way: the claimer times out
	pfLoseAnswer            // answered, the answer lost: the claimer times out
	pfHoldLate              // arrives at a later event; the claimer times out
)

// Hand-off modes of a drain (pevDrain bits 2–3).
const (
	pfHandOffOK        = iota
	pfHandOffLost      // lost before the new owner: a timeout
	pfHandOffNoAnswer  // installed, its answer lost: a timeout
	pfHandOffBusyFirst // refused for now (503), then delivered
)

type pfEdge struct {
	i       int
	name    string
	s       *Server
	o       *ownership
	v       *pfView
	state   pfState
	busy    bool
	backAt  time.Time // when it was last seen back from busy (pevBusy)
	started bool
}

func (e *pfEdge) up() bool { return e.state == pfAlive || e.state == pfDraining }

// pfPart is a participant of the harness.
type pfPart struct {
	e   *pfEdge
	key string
	p   *participant
	at  time.Time // admitted (an upgrade pending)
	// excuse is why the join was allowed to start the key beside
	// another edge's session (join): it holds again when a pending
	// upgrade ends, the session starting only then.
	excuse string
}

// pfLate is a claim held on a link.
type pfLate struct {
	from, to int
	req      *http.Request
	body     []byte
	at       time.Time
}

// pfCluster is the harness: the edges, the gossip truth and every view,
// the links, the clock.
type pfCluster struct {
	t   *testing.T
	now time.Time
	log []string

	// mu guards the views, the truth and the links: a drain's hand-offs
	// run on goroutines of their own (one per new owner).
	mu        sync.Mutex
	edges     [4]*pfEdge
	pins      [4]map[uint64]bool // the pins each edge announced
	changedAt [4]time.Time       // when a node's membership last changed
	pinsAt    [4]time.Time       // when its pins last changed
	links     [4][4]pfLinkMode
	handOff   int // the drain's hand-off mode
	busyFirst map[int]bool
	late      []pfLate
	// stale is the converged view before the last membership change, at
	// staleAt (changing).
	stale   bview
	staleAt time.Time

	parts   []*pfPart
	pending []*pfPart // admitted, their upgrade not done
	// idleSince is when each idle v1 session became idle.
	idleSince map[*session]time.Time
	idleGrace time.Duration // 0: freed with its last participant
	excused   map[string]string
	// excusedUntil: a key placed past a skipped edge that is up stays
	// excused until that edge has its pin.
	excusedUntil map[string]time.Time
	excusedBy    map[string]map[int]bool // the edges taken for dead a key's excuse waits for
	partN        int
}

// pfView is one edge's view of the cluster: its Membership.
type pfView struct {
	c     *pfCluster
	self  int
	nodes map[string]health.Node
	left  map[string]time.Time
	pins  map[string]map[uint64]bool // other nodes' pins as gossip told them
}

func (c *pfCluster) node(i int) health.Node {
	st := health.StateAlive
	if c.edges[i].state == pfDraining {
		st = health.StateDraining
	}
	return health.Node{Name: pfNames[i], Meta: health.Meta{Role: health.RoleEdge, URL: "http://" + pfNames[i] + ".invalid:7101", Weight: 1, State: st, PeerSigning: health.PeerSigningClaimOnce}}
}

// in reports whether gossip converges to node i being a member.
func (c *pfCluster) in(i int) bool {
	e := c.edges[i]
	return e.up() && !e.busy
}

func (v *pfView) Edges(region string) []health.Node {
	v.c.mu.Lock()
	defer v.c.mu.Unlock()
	var out []health.Node
	for _, name := range pfNames {
		if n, ok := v.nodes[name]; ok && n.Meta.State == health.StateAlive {
			out = append(out, n)
		}
	}
	return out
}

func (v *pfView) Node(name string) (health.Node, bool) {
	v.c.mu.Lock()
	defer v.c.mu.Unlock()
	n, ok := v.nodes[name]
	return n, ok
}

// BackAt is when the edge came back from busy: it refuted its death, as
// memberlist's node does once it hears of it (before the others see it
// back).
func (v *pfView) BackAt() time.Time {
	v.c.mu.Lock()
	defer v.c.mu.Unlock()
	return v.c.edges[v.self].backAt
}

func (v *pfView) Left(name string, within time.Duration) (health.Node, bool) {
	v.c.mu.Lock()
	defer v.c.mu.Unlock()
	if at, ok := v.left[name]; ok && v.c.now.Sub(at) < within {
		return health.Node{Name: name}, true
	}
	return health.Node{}, false
}

func (v *pfView) Subscribe() (<-chan struct{}, func()) { return nil, func() {} }

func (v *pfView) Pin(h uint64) {
	v.c.mu.Lock()
	v.c.pins[v.self][h] = true
	v.c.pinsAt[v.self] = v.c.now
	v.c.mu.Unlock()
}

func (v *pfView) Unpin(h uint64) {
	v.c.mu.Lock()
	delete(v.c.pins[v.self], h)
	v.c.pinsAt[v.self] = v.c.now
	v.c.mu.Unlock()
}

func (v *pfView) PinnedTo(h uint64, skip ...string) (health.Node, bool) {
	v.c.mu.Lock()
	defer v.c.mu.Unlock()
	for i, name := range pfNames {
		if i == v.self || slices.Contains(skip, name) {
			continue
		}
		if n, ok := v.nodes[name]; ok && v.pins[name][h] {
			return n, true
		}
	}
	return health.Node{}, false
}

// PinnedByGone keeps a gone node's pins a minute, as health does.
func (v *pfView) PinnedByGone(h uint64) (string, bool) {
	v.c.mu.Lock()
	defer v.c.mu.Unlock()
	for _, name := range pfNames {
		if at, ok := v.left[name]; ok && v.c.now.Sub(at) < time.Minute && v.pins[name][h] {
			return name, true
		}
	}
	return "", false
}

func (v *pfView) Keyring() *health.Keyring { return nil }

func (v *pfView) BalancerBelow(int) bool { return false }

// CheckEdgeURL takes the harness's own addresses (names under .invalid:
// its RoundTripper dials no socket).
func (v *pfView) CheckEdgeURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || !strings.HasSuffix(u.Hostname(), ".invalid") {
		return fmt.Errorf("%q: not an edge of the harness", raw)
	}
	return nil
}

// catchUp brings viewer's view of node i to the truth (membership and
// pins; a node gone keeps its last pins). Called with c.mu held.
func (c *pfCluster) catchUp(viewer, i int) { c.catchUpMembers(viewer, i, true) }

// catchUpMembers is catchUp, with node i's pins only if pins: gossip
// carries a node's state and its pin operations apart, so a view may
// learn that a node drains (or is back) before it learns what it pinned.
// Called with c.mu held.
func (c *pfCluster) catchUpMembers(viewer, i int, pins bool) {
	v := c.edges[viewer].v
	name := pfNames[i]
	if viewer == i {
		return
	}
	if c.in(i) {
		v.nodes[name] = c.node(i)
		delete(v.left, name)
		if pins {
			v.pins[name] = mapsClone(c.pins[i])
		}
		return
	}
	if _, ok := v.nodes[name]; ok {
		delete(v.nodes, name)
		v.left[name] = c.now
	}
}

func mapsClone(m map[uint64]bool) map[uint64]bool {
	out := make(map[uint64]bool, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// update is what UseCluster's goroutine does on a membership change.
func (c *pfCluster) update(e *pfEdge) {
	if !e.started || !e.up() {
		return
	}
	e.o.update()
	c.drainLoop(e)
}

// drainLoop is a step of e's drain's loop, if it drains: it hands on what
// had no other owner before, or was created since (handOn); it runs while
// participants are connected, and a drained edge exits only after it
// (pevDrain).
func (c *pfCluster) drainLoop(e *pfEdge) {
	if e.state != pfDraining || !e.s.handed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	e.s.handOn(ctx, e.o)
	cancel()
	c.closeStopped()
}

// pfRefused is a dial where nothing listens; pfTimeout, a request with no
// answer in time.
var (
	pfRefused = &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	pfTimeout = fmt.Errorf("harness: no answer: %w", os.ErrDeadlineExceeded)
)

// pfLink is an edge's peer transport: claims and hand-offs to the
// target's real handlers, as the links say.
type pfLink struct {
	c    *pfCluster
	from int
}

func (l pfLink) RoundTrip(req *http.Request) (*http.Response, error) {
	c := l.c
	body, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	to := slices.Index(pfNames[:], strings.TrimSuffix(req.URL.Hostname(), ".invalid"))
	if to < 0 {
		return nil, pfRefused
	}
	c.mu.Lock()
	e := c.edges[to]
	up, busy, mode, handOff := e.up(), e.busy, c.links[l.from][to], c.handOff
	claim := req.URL.Path == pathClaim
	if claim && up && (busy || mode == pfHoldLate) {
		c.late = append(c.late, pfLate{from: l.from, to: to, req: req, body: body, at: c.now})
	}
	busyFirst := !claim && handOff == pfHandOffBusyFirst && !c.busyFirst[to]
	if busyFirst {
		c.busyFirst[to] = true
	}
	c.mu.Unlock()
	if !up {
		return nil, pfRefused
	}
	if busy {
		return nil, pfTimeout
	}
	if !claim {
		switch {
		case handOff == pfHandOffLost:
			return nil, pfTimeout
		case busyFirst:
			return &http.Response{StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable", Header: http.Header{"Retry-After": {"0"}}, Body: http.NoBody, Request: req}, nil
		}
		resp := c.serve(e, req, body)
		if handOff == pfHandOffNoAnswer {
			return nil, pfTimeout
		}
		return resp, nil
	}
	switch mode {
	case pfDrop, pfHoldLate:
		return nil, pfTimeout
	}
	resp := c.serve(e, req, body)
	if resp.StatusCode == http.StatusForbidden {
		// Not known there yet: gossip tells it during claimKnown's
		// pause. Its ring is rebuilt later (UseCluster's goroutine:
		// here, at the next event that updates it), so a join that
		// comes meanwhile finds the claim, not the ring, sending it on.
		c.mu.Lock()
		c.catchUp(to, l.from)
		c.mu.Unlock()
	}
	if mode == pfLoseAnswer {
		return nil, pfTimeout
	}
	return resp, nil
}

// serve runs the edge's real handler of req in process.
func (c *pfCluster) serve(e *pfEdge, req *http.Request, body []byte) *http.Response {
	var rc fasthttp.RequestCtx
	rc.Request.Header.SetMethod(req.Method)
	rc.Request.SetRequestURI(req.URL.RequestURI())
	for k, vs := range req.Header {
		for _, v := range vs {
			rc.Request.Header.Add(k, v)
		}
	}
	rc.Request.SetBody(body)
	switch req.URL.Path {
	case pathClaim:
		e.s.serveClaim(&rc)
	case pathHandoff:
		e.s.serveHandoff(&rc)
	default:
		rc.Error("not found", fasthttp.StatusNotFound)
	}
	resp := &http.Response{
		StatusCode: rc.Response.StatusCode(),
		Status:     fmt.Sprintf("%d %s", rc.Response.StatusCode(), http.StatusText(rc.Response.StatusCode())),
		Header:     http.Header{},
		Body:       io.NopCloser(bytes.NewReader(append([]byte(nil), rc.Response.Body()...))),
		Request:    req,
	}
	for k, v := range rc.Response.Header.All() {
		resp.Header.Add(string(k), string(v))
	}
	return resp
}

func newPlaceCluster(t *testing.T, config byte) *pfCluster {
	c := &pfCluster{
		t: t, now: pfStart,
		busyFirst: map[int]bool{}, idleSince: map[*session]time.Time{},
		excused: map[string]string{}, excusedUntil: map[string]time.Time{}, excusedBy: map[string]map[int]bool{},
	}
	c.idleGrace = [4]time.Duration{time.Minute, 5 * time.Second, 0, time.Minute}[config>>2&3]
	for i := range c.edges {
		c.edges[i] = &pfEdge{i: i, name: pfNames[i], s: c.newServer(i)}
		c.pins[i] = map[uint64]bool{}
	}
	t.Cleanup(func() {
		for _, e := range c.edges {
			e.s.hub.close()
			e.s.untrackMemory()
			if e.started {
				e.o.repl.close()
			}
		}
	})
	n := 2 + int(config&3)%3
	for i := range n {
		c.start(i)
	}
	c.mu.Lock()
	for v := range n {
		for i := range n {
			c.catchUp(v, i)
		}
	}
	c.mu.Unlock()
	for i := range n {
		c.update(c.edges[i])
	}
	if config&0x10 != 0 {
		c.now = c.now.Add(settleWindow + time.Second) // past the start's window
	}
	return c
}

// newServer is edge i's Server, on the harness's clock.
func (c *pfCluster) newServer(i int) *Server {
	cfg := configs.Edge{Replication: configs.ReplicationOff}
	cfg.Provision()
	s := New(cfg, pfNames[i], "east", slog.New(slog.DiscardHandler), nil)
	// Real timers never fire in a run: idle_grace is the harness's.
	s.hub.idleGrace = time.Hour
	if c.idleGrace == 0 {
		s.hub.idleGrace = 0
	}
	s.hub.clock = func() time.Time { return c.now }
	return s
}

// restart starts edge e again under its name after a crash or an exit (a
// process restarted, by hand or by its supervisor): a new Server that
// knows nothing of the old one's sessions, claims or pins. Views that
// still count it a member learn its new, empty pins as gossip reaches
// them (memberlist's new incarnation).
func (c *pfCluster) restart(e *pfEdge) { c.restartVia(e, -1) }

// restartVia is restart, the new process joining through edge seed (-1:
// gossip has converged), as startVia.
func (c *pfCluster) restartVia(e *pfEdge, seed int) {
	e.s.hub.eachSession(func(_ *hubShard, s *session) { delete(c.idleSince, s) })
	e.s.hub.close()
	e.s.untrackMemory()
	e.o.repl.close()
	e.s = c.newServer(e.i)
	e.busy, e.backAt = false, time.Time{}
	c.mu.Lock()
	c.pins[e.i] = map[uint64]bool{}
	c.pinsAt[e.i] = c.now
	c.mu.Unlock()
	c.startVia(e.i, seed)
	c.update(e)
}

// start starts edge i: it knows the members gossip converged on.
func (c *pfCluster) start(i int) { c.startVia(i, -1) }

// startVia starts edge i, joining through edge seed (-1: gossip has
// converged): as memberlist's join does, the two exchange what they know
// — the new edge learns the members, states and pins in seed's view
// (it may lack an edge that joined a moment ago), and seed learns of it.
func (c *pfCluster) startVia(i, seed int) {
	e := c.edges[i]
	c.mu.Lock()
	e.state = pfAlive
	e.v = &pfView{c: c, self: i, nodes: map[string]health.Node{}, left: map[string]time.Time{}, pins: map[string]map[uint64]bool{}}
	e.v.nodes[e.name] = c.node(i)
	if seed < 0 {
		for j := range c.edges {
			if c.in(j) {
				c.catchUp(i, j)
			}
		}
	} else {
		sv := c.edges[seed].v
		for name, n := range sv.nodes {
			if name != e.name {
				e.v.nodes[name] = n
				e.v.pins[name] = mapsClone(sv.pins[name])
			}
		}
		c.catchUp(i, seed) // the seed's own state and pins as they are
	}
	c.changedAt[i] = c.now
	c.mu.Unlock()
	e.s.UseCluster(e.v, pfRing)
	e.o = e.s.hub.owner.Load()
	// The harness does what its goroutine does, at the events that cause it.
	e.o.close()
	e.o.http = &http.Client{CheckRedirect: configs.NoRedirect, Transport: pfLink{c: c, from: i}}
	e.started = true
}

// bview is a balancer's view: the nodes it routes to and the pins it
// reads.
type bview struct {
	nodes map[string]health.Node
	pins  map[string]map[uint64]bool
}

func (c *pfCluster) balancerView(which int) bview {
	c.mu.Lock()
	defer c.mu.Unlock()
	if which == 5 && c.now.Sub(c.staleAt) < pfGossipBound {
		return c.stale
	}
	return c.truthView(which)
}

// truthView is edge which's view, or (which ≥ 4) the converged one.
// Called with c.mu held.
func (c *pfCluster) truthView(which int) bview {
	b := bview{nodes: map[string]health.Node{}, pins: map[string]map[uint64]bool{}}
	if which < 4 && c.edges[which].started {
		v := c.edges[which].v
		for k, n := range v.nodes {
			b.nodes[k] = n
		}
		for k, p := range v.pins {
			b.pins[k] = p
		}
		b.pins[pfNames[which]] = c.pins[which]
		return b
	}
	for i := range c.edges {
		if c.in(i) {
			b.nodes[pfNames[i]] = c.node(i)
			b.pins[pfNames[i]] = mapsClone(c.pins[i])
		}
	}
	return b
}

// changing keeps the converged view as it is before the membership
// changes: a balancer that has heard nothing since (pevJoin's view 5)
// routes by it for gossip's two seconds.
func (c *pfCluster) changing() {
	c.mu.Lock()
	c.stale, c.staleAt = c.truthView(4), c.now
	c.mu.Unlock()
}

// up reports whether edge name is up (alive or draining).
func (c *pfCluster) up(name string) bool {
	i := slices.Index(pfNames[:], name)
	return i >= 0 && c.edges[i].up()
}

// reachable reports whether a balancer's dial of edge name succeeds.
func (c *pfCluster) reachable(name string) bool {
	i := slices.Index(pfNames[:], name)
	return i >= 0 && c.edges[i].up() && !c.edges[i].busy
}

// route is the balancer's choice: the pinner, else the ring's owner, less
// the edges it failed to dial (skip).
func (c *pfCluster) route(b bview, key string, failOnce bool) (string, []string) {
	h := xxhash.Sum64String(key)
	var members []ring.Member
	for _, name := range pfNames {
		if n, ok := b.nodes[name]; ok && n.Meta.State == health.StateAlive {
			members = append(members, ring.Member{Name: name, URL: n.Meta.URL, Weight: 1})
		}
	}
	var skip []string
	target := ""
	for _, name := range pfNames {
		if _, ok := b.nodes[name]; ok && b.pins[name][h] {
			target = name
			break
		}
	}
	for range 4 {
		if target == "" {
			r := ring.New(pfRing)
			snap := r.Update(slices.DeleteFunc(slices.Clone(members), func(m ring.Member) bool { return slices.Contains(skip, m.Name) }))
			m, ok := snap.Locate([]byte(key))
			if !ok {
				return "", skip
			}
			target = m.Name
		}
		if c.reachable(target) && !failOnce {
			return target, skip
		}
		failOnce = false
		skip = append(skip, target)
		target = ""
	}
	return "", skip
}

// hosts returns the up edges hosting key unfrozen (idle or not), and those
// of them with participants.
func (c *pfCluster) hosts(key string) (hosting, live []*pfEdge) {
	for _, e := range c.edges {
		if !e.up() {
			continue
		}
		sh := e.s.hub.shardOf(key)
		sh.mu.Lock()
		if s := sh.sessions[key]; s != nil {
			s.mu.Lock()
			if s.movedTo == "" {
				hosting = append(hosting, e)
				if len(s.participants) > 0 {
					live = append(live, e)
				}
			}
			s.mu.Unlock()
		}
		sh.mu.Unlock()
	}
	return hosting, live
}

func (c *pfCluster) logf(format string, args ...any) {
	c.log = append(c.log, fmt.Sprintf("%7.3f ", c.now.Sub(pfStart).Seconds())+fmt.Sprintf(format, args...))
}

func (c *pfCluster) fail(format string, args ...any) {
	c.t.Helper()
	c.t.Fatalf("%s\nevents:\n  %s", fmt.Sprintf(format, args...), strings.Join(c.log, "\n  "))
}

func (c *pfCluster) newParticipant(s *Server, raw bool) *participant {
	c.partN++
	p := &participant{srv: s}
	p.v1 = !raw
	p.id = fmt.Sprintf("p%d", c.partN)
	p.user = p.id
	p.out.limit = 64
	p.out.budget = &s.sendBudget
	p.out.writing = true // no writer: frames stay queued
	return p
}

// join is a client's join of key through a balancer (pevJoin).
func (c *pfCluster) join(arg byte) {
	key := pfKeys[arg&3]
	raw := key == pfKeys[2]
	b := c.balancerView(int(arg >> 2 & 7))
	target, skip := c.route(b, key, arg&0x20 != 0)
	later := arg&0xc0 == 0xc0
	c.logf("join %s: balancer view %d, to %q, skip %v", key, arg>>2&7, target, skip)
	hosting, _ := c.hosts(key)
	var visited []string
	for hop := 0; target != "" && hop < 3; hop++ {
		if !c.reachable(target) || slices.Contains(visited, target) {
			c.logf("  %s not reachable (or visited): the client retries", target)
			return
		}
		visited = append(visited, target)
		e := c.edges[slices.Index(pfNames[:], target)]
		var rc fasthttp.RequestCtx
		if len(skip) > 0 {
			rc.Request.Header.Set(headerSkip, strings.Join(skip, ","))
		}
		owner, err := e.s.place(&rc, []byte(key))
		switch {
		case err != nil:
			c.logf("  %s: 503 %v", target, err)
			return
		case owner != "":
			c.logf("  %s: 421 → %s", target, owner)
			if slices.Contains(skip, owner) {
				// The ring less the edges the balancer could not reach
				// places it: never one of them.
				c.fail("%s sent %s to %s, which the balancer could not reach (skip %v)", target, key, owner, skip)
			}
			target = owner
			continue
		}
		p := c.newParticipant(e.s, raw)
		p.admitted = true
		pp := &pfPart{e: e, key: key, p: p}
		c.checkJoin(e, key, skip, hosting)
		for _, q := range c.pending {
			if q.e == e && q.key == key && q.excuse != "" {
				// Joins the session joining here (step 1): the same
				// split as the pending join's, the same excuse.
				pp.excuse = q.excuse
			}
		}
		for _, h := range c.edges {
			if c.takenForDead(e, h) {
				// Started while an edge that is up is taken for dead
				// here (busy, or back and not yet seen back): that
				// edge may host it or start it too before it learns
				// of this one ("taken for dead": allowed).
				c.excused[key] = "placed while " + h.name + " is taken for dead"
				if c.excusedBy[key] == nil {
					c.excusedBy[key] = map[int]bool{}
				}
				c.excusedBy[key][h.i] = true
				until := pfForever
				if !h.busy {
					until = h.backAt.Add(pfGossipBound)
				}
				if until.After(c.excusedUntil[key]) {
					c.excusedUntil[key] = until
				}
				c.logf("  excused: %s", c.excused[key])
				c.excusePending(h, key)
			}
		}
		for _, name := range skip {
			if i := slices.Index(pfNames[:], name); c.edges[i].up() {
				// Placed on the ring without an edge that is up: it may
				// start the key itself before this edge's pin reaches it.
				c.excused[key] = "placed past " + name + ", skipped by the balancer"
				if until := c.now.Add(pfGossipBound); until.After(c.excusedUntil[key]) {
					// Not shortening an excuse of this join's that lasts
					// longer (an edge taken for dead, until it is back).
					c.excusedUntil[key] = until
				}
				c.logf("  excused: %s", c.excused[key])
				c.excusePending(c.edges[i], key)
			}
		}
		if later {
			c.logf("  %s: admitted, upgrade pending (%s)", target, p.id)
			pp.at = c.now
			if pp.excuse == "" {
				pp.excuse = c.excused[key]
			}
			c.pending = append(c.pending, pp)
			return
		}
		c.upgrade(pp)
		return
	}
	if target != "" {
		c.logf("  too many hops: the client retries")
	}
}

// checkJoin checks a join admitted at e: a key hosted on another edge that
// is up may be started here only where DESIGN allows it.
func (c *pfCluster) checkJoin(e *pfEdge, key string, skip []string, hosting []*pfEdge) {
	c.t.Helper()
	for _, h := range hosting {
		if h == e {
			return // joins the session here
		}
	}
	if slices.ContainsFunc(c.pending, func(pp *pfPart) bool { return pp.e == e && pp.key == key }) {
		return // joins the one joining here (an upgrade pending), as step 1 says
	}
	pinner, pinned := e.v.PinnedTo(xxhash.Sum64String(key))
	for _, h := range hosting {
		switch {
		case pinned && pinner.Name == h.name && !slices.Contains(skip, h.name):
			c.fail("a new session of %s admitted at %s, which holds %s's pin of it", key, e.name, h.name)
		case slices.Contains(skip, h.name):
			c.excused[key] = h.name + " skipped by the balancer"
		case c.takenForDead(e, h):
			c.excused[key] = h.name + " taken for dead"
		case slices.ContainsFunc(skip, c.up):
			// The balancer's word that it could not reach an edge that
			// is up is believed, and that edge may hold the host's
			// claim (the host asked it as it started the key).
			c.excused[key] = "placed past " + strings.Join(skip, ", ") + ", skipped by the balancer"
		case c.excused[key] != "":
			// Still: the edges hosting it may not know of each other.
		default:
			c.fail("a new session of %s admitted at %s while %s hosts it", key, e.name, h.name)
		}
		c.logf("  excused: %s", c.excused[key])
	}
}

// takenForDead reports whether edge h, up, is taken for dead in e's
// view: busy, or back from busy and not yet seen back (gossip's bound).
func (c *pfCluster) takenForDead(e, h *pfEdge) bool {
	if _, member := e.v.Node(h.name); member || !h.up() {
		return false
	}
	return h.busy || (!h.backAt.IsZero() && c.now.Sub(h.backAt) < pfGossipBound)
}

// upgrade ends an admitted join: the participant joins.
func (c *pfCluster) upgrade(pp *pfPart) {
	e := pp.e
	if err := e.s.hub.join([]byte(pp.key), pp.p); err != nil {
		c.logf("  %s: %s refused after the upgrade: %v", e.name, pp.p.id, err)
		return
	}
	c.logf("  %s: %s joined %s", e.name, pp.p.id, pp.key)
	c.parts = append(c.parts, pp)
	defer c.drainLoop(e)
	if pp.excuse != "" {
		c.excused[pp.key] = pp.excuse
		if until := c.now.Add(pfGossipBound); until.After(c.excusedUntil[pp.key]) {
			c.excusedUntil[pp.key] = until
		}
		c.logf("  excused again: %s", pp.excuse)
	}
}

// excusePending gives the excuse of key to its joins pending on h: the
// edge a balancer placed the key past (or took for dead) admitted them
// before, and their upgrades, ending later, start its session there — the
// split DESIGN allows, which the excuse names.
func (c *pfCluster) excusePending(h *pfEdge, key string) {
	for _, pp := range c.pending {
		if pp.e == h && pp.key == key && pp.excuse == "" {
			pp.excuse = c.excused[key]
		}
	}
}

// drain drains edge e (pevDrain).
func (c *pfCluster) drain(e *pfEdge, arg byte) {
	c.mu.Lock()
	e.state = pfDraining
	c.changedAt[e.i] = c.now
	e.v.nodes[e.name] = c.node(e.i)
	c.handOff = int(arg >> 2 & 3)
	clear(c.busyFirst)
	c.mu.Unlock()
	c.logf("%s drains (hand-off mode %d, update after %v)", e.name, arg>>2&3, arg&0x10 != 0)
	e.s.beginDrain()
	if arg&0x10 == 0 {
		c.update(e)
	}
	// Drain's first step; its loop is the harness's: hand-offs again
	// on ring changes (update), the edge's exit after lingerUntil.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	e.s.handOn(ctx, e.o)
	cancel()
	if arg&0x10 != 0 {
		c.update(e)
	}
	c.closeStopped()
}

// closeStopped ends the participants closed with 1012: their clients leave.
func (c *pfCluster) closeStopped() {
	c.parts = slices.DeleteFunc(c.parts, func(pp *pfPart) bool {
		if pp.p.stopping() {
			pp.e.s.hub.leave(pp.p)
			c.logf("  %s: %s closed (1012)", pp.e.name, pp.p.id)
			return true
		}
		return false
	})
}

// down takes edge e down: its participants and pending joins are gone.
// crash kills edge e: nothing listens there any more.
func (c *pfCluster) crash(e *pfEdge) {
	c.changing()
	e.state = pfCrashed
	c.down(e)
}

// learn has edge viewer's gossip catch up with the edges of, and the
// edge update its ring.
func (c *pfCluster) learn(viewer int, of ...int) {
	c.mu.Lock()
	for _, i := range of {
		c.catchUp(viewer, i)
	}
	c.mu.Unlock()
	c.update(c.edges[viewer])
}

func (c *pfCluster) down(e *pfEdge) {
	c.parts = slices.DeleteFunc(c.parts, func(pp *pfPart) bool { return pp.e == e })
	c.pending = slices.DeleteFunc(c.pending, func(pp *pfPart) bool { return pp.e == e })
	c.mu.Lock()
	c.changedAt[e.i] = c.now
	c.late = slices.DeleteFunc(c.late, func(l pfLate) bool { return l.to == e.i })
	c.mu.Unlock()
}

// advance moves the clock by d: what gossip has had its time for
// converges first (with the pins the edges make as they learn of it);
// then sweeps, late claims lost, idle sessions freed.
func (c *pfCluster) advance(d time.Duration) {
	until := c.now.Add(d).Add(-pfGossipBound)
	for range 3 {
		c.mu.Lock()
		var changed []int
		for i := range c.edges {
			if !c.edges[i].started {
				continue
			}
			members, pins := !c.changedAt[i].After(until), !c.pinsAt[i].After(until)
			for v := range c.edges {
				if v == i || !c.edges[v].started || !c.edges[v].up() {
					continue
				}
				vw := c.edges[v].v
				if _, ok := vw.nodes[pfNames[i]]; members {
					c.catchUp(v, i)
					changed = append(changed, v)
				} else if pins && ok {
					vw.pins[pfNames[i]] = mapsClone(c.pins[i])
				}
			}
		}
		c.mu.Unlock()
		slices.Sort(changed)
		for _, v := range slices.Compact(changed) {
			c.update(c.edges[v]) // its pins, announced now, are due too
		}
	}
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.late = slices.DeleteFunc(c.late, func(l pfLate) bool { return c.now.Sub(l.at) > pfLateFor })
	c.mu.Unlock()
	// An upgrade ends within its deadlines: one pending past the
	// admission's bound failed meanwhile (its handshake timed out).
	c.pending = slices.DeleteFunc(c.pending, func(pp *pfPart) bool {
		if c.now.Sub(pp.at) <= admitTimeout {
			return false
		}
		c.logf("  %s: upgrade of %s timed out", pp.e.name, pp.p.id)
		pp.e.s.hub.unreserve([]byte(pp.key))
		return true
	})
	for _, e := range c.edges {
		c.update(e) // views older than the settle window expire
	}
	for _, e := range c.edges {
		if !e.started || !e.up() {
			continue
		}
		e.s.hub.sweep(c.now)
		e.o.sweepFailover(c.now)
		e.o.failMu.Lock()
		failRings := len(e.o.failRings)
		e.o.failMu.Unlock()
		if failRings > 0 && !c.now.Before(e.o.arrived().Add(settleWindow)) {
			c.fail("%s keeps %d failover rings past its window", e.name, failRings)
		}
		for i := range e.s.hub.shards {
			sh := &e.s.hub.shards[i]
			sh.mu.Lock()
			n := 0
			for _, marks := range sh.marks() {
				for _, m := range marks {
					if !c.now.Before(m.until) {
						n++
					}
				}
			}
			sh.mu.Unlock()
			if n > 0 {
				c.fail("%s keeps %d expired claims, hand-over or install marks past a sweep", e.name, n)
			}
		}
	}
	if c.idleGrace > 0 {
		for s, at := range c.idleSince {
			if c.now.Sub(at) < c.idleGrace {
				continue
			}
			for _, e := range c.edges {
				if !e.up() {
					continue
				}
				sh := e.s.hub.shardOf(s.key)
				sh.mu.Lock()
				_, mine := sh.sessions[s.key]
				sh.mu.Unlock()
				if mine {
					s.mu.Lock()
					gen, due := s.v1.idleGen, s.v1.idleTimer != nil
					s.mu.Unlock()
					if due {
						e.s.hub.expire(s, gen)
					}
				}
			}
			delete(c.idleSince, s)
		}
	}
}

func runPlacementEvents(t *testing.T, in []byte) {
	if len(in) < 1 {
		return
	}
	c := newPlaceCluster(t, in[0])
	in = in[1:]
	if len(in) > 120 {
		in = in[:120]
	}
	for len(in) >= 2 {
		op, arg := in[0]%numPlaceEvents, in[1]
		in = in[2:]
		switch op {
		case pevJoin:
			c.join(arg)
		case pevLeave:
			if len(c.parts) == 0 {
				continue
			}
			i := int(arg) % len(c.parts)
			pp := c.parts[i]
			c.parts = slices.Delete(c.parts, i, i+1)
			c.logf("%s leaves %s on %s", pp.p.id, pp.key, pp.e.name)
			pp.e.s.hub.leave(pp.p)
		case pevUpgrade:
			if len(c.pending) == 0 {
				continue
			}
			i := int(arg>>1) % len(c.pending)
			pp := c.pending[i]
			c.pending = slices.Delete(c.pending, i, i+1)
			if arg&1 != 0 {
				c.logf("%s: upgrade of %s fails", pp.e.name, pp.p.id)
				pp.e.s.hub.unreserve([]byte(pp.key))
				continue
			}
			c.logf("%s: upgrade of %s done", pp.e.name, pp.p.id)
			c.upgrade(pp)
		case pevEdgeJoin:
			i := slices.IndexFunc(c.edges[:], func(e *pfEdge) bool { return !e.started })
			if i < 0 {
				continue
			}
			seed := -1
			if s := int(arg & 3); arg>>4 == 0xd && s != i && c.edges[s].up() {
				seed = s
			}
			c.changing()
			if seed < 0 {
				c.logf("%s joins the cluster", pfNames[i])
				c.start(i)
			} else {
				c.logf("%s joins the cluster through %s (learning the members it knows; it learns of %[1]s)", pfNames[i], pfNames[seed])
				c.startVia(i, seed)
				c.mu.Lock()
				c.catchUp(seed, i)
				c.mu.Unlock()
				c.update(c.edges[seed])
			}
			c.update(c.edges[i])
		case pevGossip, pevPins:
			viewer, node := c.edges[arg&3], int(arg>>2&3)
			if !viewer.started || !viewer.up() || !c.edges[node].started {
				continue
			}
			c.mu.Lock()
			if op == pevGossip {
				c.catchUpMembers(viewer.i, node, arg&0x10 == 0)
			} else if _, ok := viewer.v.nodes[pfNames[node]]; ok && viewer.i != node {
				viewer.v.pins[pfNames[node]] = mapsClone(c.pins[node])
			}
			c.mu.Unlock()
			what := map[bool]string{true: "the membership", false: "the pins"}[op == pevGossip]
			if op == pevGossip && arg&0x10 != 0 {
				what += " (not yet the pins)"
			}
			c.logf("%s learns %s of %s", viewer.name, what, pfNames[node])
			c.update(viewer)
		case pevCrash:
			e := c.edges[arg&3]
			switch {
			case e.up():
				c.logf("%s crashes", e.name)
				c.crash(e)
			case e.started && arg&4 != 0:
				c.logf("%s restarts", e.name)
				c.changing()
				c.restart(e)
			}
		case pevBusy:
			e := c.edges[arg&3]
			if e.state != pfAlive {
				continue
			}
			c.changing()
			c.mu.Lock()
			e.busy = !e.busy
			c.changedAt[e.i] = c.now
			if !e.busy {
				e.backAt = c.now
			}
			c.mu.Unlock()
			for key, by := range c.excusedBy {
				switch {
				case !by[e.i] || c.excused[key] == "":
				case e.busy:
					// Taken for dead again before it learnt of the
					// key's session: back, it may start it again.
					c.excusedUntil[key] = pfForever
				case c.excusedUntil[key] == pfForever && !slices.ContainsFunc(c.edges[:], func(h *pfEdge) bool { return by[h.i] && h.busy }):
					// Back, and no other edge the excuse waits for
					// is still taken for dead.
					c.excusedUntil[key] = c.now.Add(pfGossipBound)
				}
			}
			c.logf("%s busy: %v", e.name, e.busy)
		case pevDrain:
			e := c.edges[arg&3]
			switch {
			case e.state == pfAlive && !e.busy:
				c.changing()
				c.drain(e, arg)
			case e.state == pfDraining && !c.now.Before(e.s.lingerUntil()):
				c.changing()
				c.logf("%s exits", e.name)
				e.state = pfGone
				c.down(e)
			}
		case pevTime:
			d := placeSteps[arg&7]
			c.logf("%v pass", d)
			c.advance(d)
		case pevLink:
			from, to, mode := int(arg&3), int(arg>>2&3), pfLinkMode(arg>>4&3)
			c.mu.Lock()
			c.links[from][to] = mode
			c.mu.Unlock()
			c.logf("link %s→%s: mode %d", pfNames[from], pfNames[to], mode)
		case pevLate:
			c.mu.Lock()
			if len(c.late) == 0 {
				c.mu.Unlock()
				continue
			}
			i := int(arg) % len(c.late)
			l := c.late[i]
			c.late = slices.Delete(c.late, i, i+1)
			e := c.edges[l.to]
			ok := e.up() && !e.busy
			c.mu.Unlock()
			if !ok {
				continue
			}
			resp := c.serve(e, l.req, l.body)
			c.logf("a late claim of %s by %s reaches %s: %d", l.body, pfNames[l.from], e.name, resp.StatusCode)
		}
		c.check()
	}
	if testing.Verbose() {
		t.Logf("events:\n  %s", strings.Join(c.log, "\n  "))
	}
}

// check checks the invariants after an event.
func (c *pfCluster) check() {
	c.t.Helper()
	c.closeStopped()
	for _, key := range pfKeys {
		hosting, live := c.hosts(key)
		if len(hosting) <= 1 && !c.now.Before(c.excusedUntil[key]) {
			delete(c.excused, key)
			delete(c.excusedBy, key)
		}
		if len(live) > 1 && c.excused[key] == "" {
			var names []string
			for _, e := range live {
				names = append(names, e.name)
			}
			c.fail("session %s split: participants on %v", key, names)
		}
	}
	for _, e := range c.edges {
		if !e.started || !e.up() {
			continue
		}
		// Pins: exactly what it announced, each a session it hosts.
		e.o.mu.Lock()
		pinned := maps2(e.o.pinned)
		e.o.mu.Unlock()
		c.mu.Lock()
		announced := mapsClone(c.pins[e.i])
		c.mu.Unlock()
		if len(announced) != len(pinned) {
			c.fail("%s announces %d pins, holds %d", e.name, len(announced), len(pinned))
		}
		for key, h := range pinned {
			if !announced[h] {
				c.fail("%s holds a pin of %s it did not announce", e.name, key)
			}
			sh := e.s.hub.shardOf(key)
			sh.mu.Lock()
			s := sh.sessions[key]
			live := s != nil
			if live {
				s.mu.Lock()
				live = s.movedTo == ""
				s.mu.Unlock()
			}
			sh.mu.Unlock()
			if !live {
				c.fail("%s pins %s, which it does not host", e.name, key)
			}
		}
		// Marks: bounded by the settle window; admissions by the
		// upgrades pending.
		pending := map[string]int{}
		for _, pp := range c.pending {
			if pp.e == e {
				pending[pp.key]++
			}
		}
		for i := range e.s.hub.shards {
			sh := &e.s.hub.shards[i]
			sh.mu.Lock()
			for k, a := range sh.admitting {
				if a.n != pending[k] {
					sh.mu.Unlock()
					c.fail("%s counts %d admissions of %s, %d pending", e.name, a.n, k, pending[k])
				}
			}
			for k, m := range sh.claims {
				if m.until.After(c.now.Add(settleWindow)) {
					sh.mu.Unlock()
					c.fail("%s: a claim of %s until %v", e.name, k, m.until)
				}
			}
			for k, m := range sh.moved {
				if m.until.After(c.now.Add(settleWindow)) {
					sh.mu.Unlock()
					c.fail("%s: a hand-over mark of %s until %v", e.name, k, m.until)
				}
			}
			n := len(sh.claims) + len(sh.moved)
			sh.mu.Unlock()
			if n > 2*len(pfKeys) {
				c.fail("%s: %d marks in a shard", e.name, n)
			}
		}
		e.o.mu.Lock()
		past := len(e.o.past)
		e.o.mu.Unlock()
		if past > 64 {
			c.fail("%s keeps %d past views", e.name, past)
		}
		e.o.skipMu.Lock()
		sets := len(e.o.skipSets)
		e.o.skipMu.Unlock()
		if sets > maxSkipSets {
			c.fail("%s: %d skip sets", e.name, sets)
		}
		e.o.failMu.Lock()
		failRings := len(e.o.failRings)
		e.o.failMu.Unlock()
		if failRings > maxFailoverRings {
			c.fail("%s: %d failover rings", e.name, failRings)
		}
		// Idle sessions, for idle_grace.
		e.s.hub.eachSession(func(_ *hubShard, s *session) {
			s.mu.Lock()
			idle := s.v1 != nil && len(s.participants) == 0 && s.v1.idleTimer != nil
			s.mu.Unlock()
			if _, ok := c.idleSince[s]; idle && !ok {
				c.idleSince[s] = c.now
			} else if !idle && ok {
				delete(c.idleSince, s)
			}
		})
	}
}

func maps2(m map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Two edges join the cluster together (edge-c and edge-d: a scale-out by
// two) while room-7 is live on edge-b, which owned it on the ring of
// edge-a and edge-b; room-7 is edge-c's on the ring with edge-c, edge-d's
// on the ring with both. A balancer that learnt of both new edges before
// edge-b did sends a join of room-7 to edge-d, before edge-b (which knows
// neither yet) has pinned it. Before, edge-d asked only the owner of its
// ring less itself, edge-c — which never hosted room-7 and recorded the
// claim — and started a second session of room-7 while edge-b's lived on:
// the session split (found by FuzzPlacementEvents). Now, within its settle
// window after joining, an edge also asks the owners of its ring less
// itself and any one other edge (one that joined with it, which the
// balancers routing by the old ring do not know either): edge-b, which
// hosts it, and the join is sent there.
func TestTwoEdgesJoiningTogetherSplitNoSession(t *testing.T) {
	c := scaleOutByTwo(t)
	c.placeExpect(c.edges[3], "room-7", "edge-b")
}

// scaleOutByTwo is a cluster of edge-a and edge-b, settled, with room-7
// live on edge-b, that edge-c and then edge-d join: edge-d knows every
// edge, edge-c the first two, and they know neither yet.
func scaleOutByTwo(t *testing.T) *pfCluster {
	c := newPlaceCluster(t, 0x10) // edge-a and edge-b, settled
	c.join(1)                     // room-7, routed by the converged view: edge-b
	if _, live := c.hosts("room-7"); len(live) != 1 || live[0].name != "edge-b" {
		t.Fatalf("room-7 live on %d edges, want edge-b alone", len(live))
	}
	c.start(2)
	c.update(c.edges[2])
	c.start(3)
	c.update(c.edges[3])
	return c
}

// placeExpect places a new join of key at e, as Server.place does, and
// fails unless e sends it to the edge want, which hosts it.
func (c *pfCluster) placeExpect(e *pfEdge, key, want string, skip ...string) {
	c.t.Helper()
	var rc fasthttp.RequestCtx
	if len(skip) > 0 {
		rc.Request.Header.Set(headerSkip, strings.Join(skip, ","))
	}
	owner, err := e.s.place(&rc, []byte(key))
	if err != nil {
		c.t.Fatal(err)
	}
	if owner != want {
		if owner == "" {
			e.s.hub.unreserve([]byte(key))
		}
		c.fail("%s placed %s at %q while %s hosts it, want a 421 to %s", e.name, key, owner, want, want)
	}
}

// Two edges drain at once, the second before it learns that the first
// drains. room-36 is live on edge-b; edge-c, its owner on the ring without
// edge-b, begins to drain; then edge-b drains and hands room-36 to edge-c.
// Before, edge-c installed it and never handed it on (its own drain had
// looked already): once edge-c exited the session was gone, and within the
// hand-over window edge-a started room-36 anew while edge-c hosted it
// (found by FuzzPlacementEvents). Now a draining edge refuses a hand-off
// (421) and edge-b hands room-36 to its owner on the ring without edge-c:
// edge-a.
func TestTwoEdgesDrainingTogetherLoseNoSession(t *testing.T) {
	c := newPlaceCluster(t, 0x31) // edge-a, edge-b and edge-c, settled
	c.join('7')                   // room-36 on edge-b
	if _, live := c.hosts("room-36"); len(live) != 1 || live[0].name != "edge-b" {
		t.Fatalf("room-36 live on %v, want edge-b", live)
	}
	c.drain(c.edges[2], 0x32) // edge-c; nobody else knows yet
	c.drain(c.edges[1], 0x31) // edge-b, handing room-36 on
	c.check()
	hosting, _ := c.hosts("room-36")
	if len(hosting) != 1 || hosting[0].name != "edge-a" {
		names := make([]string, len(hosting))
		for i, e := range hosting {
			names[i] = e.name
		}
		c.fail("room-36 hosted on %v after both drains, want edge-a alone", names)
	}
	c.advance(11 * time.Second)
	c.join('C') // room-36 again, by the converged view: joins edge-a's copy
	c.check()
}

// Two edges crash at once just as a third joins. edge-d joins edge-a,
// edge-b and edge-c; edge-c and edge-b crash; a balancer that fails to dial
// both places room-7 on edge-a, its owner on the ring without them. A
// balancer that has heard of neither crash sends a join of room-7 to
// edge-d, which still counts both as members and owns room-7 on its ring.
// Before, edge-d asked the owners of its views less itself (edge-c, then
// edge-b), took each for dead as it refused, and started a second session
// while edge-a's lived on (found by FuzzPlacementEvents). Now each edge
// taken for dead is taken out of the views, and edge-a, their owner then,
// is asked too.
func TestTwoEdgesCrashingTogetherSplitNoSession(t *testing.T) {
	c := newPlaceCluster(t, 0x31) // edge-a, edge-b and edge-c, settled
	c.changing()
	c.start(3)
	c.update(c.edges[3])
	for _, i := range []int{2, 1} {
		c.crash(c.edges[i])
	}
	c.join(0x01) // room-7 by edge-a's view: past edge-c and edge-b
	if _, live := c.hosts("room-7"); len(live) != 1 || live[0].name != "edge-a" {
		c.fail("room-7 live on %v, want edge-a", live)
	}
	c.placeExpect(c.edges[3], "room-7", "edge-a")
}

// An edge drains while no other edge is left to take its sessions (the
// other crashed), and a new edge joins before the drain ends. Before, the
// drain handed sessions on once, at its start: room-13 stayed on the
// draining edge, unpinned (a draining edge pins nothing: its hand-off
// moves what it hosts), and the new edge, its owner now, started a second
// session of it on the next join while its participants were still
// connected to the draining one (found by FuzzPlacementEvents). Now the
// drain hands on again when its ring changes (handOn): room-13 goes to
// the new edge.
func TestDrainWithNowhereToGoHandsOnToANewEdge(t *testing.T) {
	c := newPlaceCluster(t, 0x10) // edge-a and edge-b, settled
	c.join(0x10)                  // room-13, by the converged view
	_, live := c.hosts("room-13")
	if len(live) != 1 {
		c.fail("room-13 live on %d edges, want 1", len(live))
	}
	host, other := live[0], c.edges[1-live[0].i]
	c.crash(other)
	c.learn(host.i, other.i)
	c.drain(host, byte(host.i)) // nowhere to go
	if hosting, _ := c.hosts("room-13"); len(hosting) != 1 || hosting[0] != host {
		c.fail("room-13 moved with no other edge up")
	}
	c.changing()
	c.start(2)
	c.update(c.edges[2])
	c.learn(host.i, 2) // the draining edge learns of edge-c
	hosting, _ := c.hosts("room-13")
	if len(hosting) != 1 || hosting[0].name != "edge-c" {
		names := make([]string, len(hosting))
		for i, e := range hosting {
			names[i] = e.name
		}
		c.fail("room-13 hosted on %v once edge-c joined, want edge-c", names)
	}
	c.join(0x10) // room-13 again: to edge-c's copy
	c.check()
}

// An edge drains into an edge that two new edges' claims do not reach.
// room-7 is live on edge-b, its owner on the ring of edge-a and edge-b;
// edge-c and edge-d join; edge-b, which knows neither yet, drains and hands
// room-7 to edge-a, the owner of its ring less itself. A balancer that
// routes by edge-d's view sends a join of room-7 to edge-d, which asks the
// owner of its ring less itself (edge-c, which never hosted it) and, only
// whether it hosts the key, edge-b, which answers that edge-a does. Before,
// edge-d took such an answer naming a third edge for a claim that edge
// recorded as it joined and hosting nothing, and started a second session
// of room-7 while edge-a hosted it (found by FuzzPlacementEvents). Now the
// edge an answer names is asked too whether it hosts the key: edge-a does,
// and the join is sent there.
func TestDrainBeforeAScaleOutSplitsNoSession(t *testing.T) {
	c := scaleOutByTwo(t)
	c.drain(c.edges[1], 0x01) // hands room-7 to edge-a
	if hosting, _ := c.hosts("room-7"); len(hosting) != 1 || hosting[0].name != "edge-a" {
		t.Fatalf("room-7 hosted on %d edges after edge-b's drain, want edge-a alone", len(hosting))
	}
	c.placeExpect(c.edges[3], "room-7", "edge-a")
}

// A session a drain handed on ends on its new edge (its last participant
// leaves; idle_grace 0 frees it at once), and a participant joins its key
// again within the hand-over window. The new edge asks the drained one,
// an owner in its view of a moment ago, whose hand-over mark names the
// new edge itself. Before, the new edge took that for a hand-off on its
// way and waited for it — 5 s, then 503, again on every retry until the
// mark expired — though it had landed and ended (found by
// FuzzPlacementEvents as a run that hung). Now an edge remembers the
// hand-offs it installed for the window, and starts the key anew at once.
func TestHandedSessionEndedStartsAnewAtOnce(t *testing.T) {
	c := newPlaceCluster(t, 0x18) // edge-a and edge-b, settled, idle_grace 0
	c.join(0x10)                  // room-13, by the converged view
	_, live := c.hosts("room-13")
	if len(live) != 1 {
		t.Fatalf("room-13 live on %d edges, want 1", len(live))
	}
	from, to := live[0], c.edges[1-live[0].i]
	c.drain(from, byte(from.i)) // hands room-13 to the other edge
	c.join(0x10)                // the participant resumes there
	if _, live := c.hosts("room-13"); len(live) != 1 || live[0] != to {
		t.Fatalf("room-13 not live on %s alone after the drain", to.name)
	}
	for _, pp := range slices.Clone(c.parts) {
		c.parts = slices.DeleteFunc(c.parts, func(x *pfPart) bool { return x == pp })
		to.s.hub.leave(pp.p) // the last participant leaves: the session ends
	}
	if hosting, _ := c.hosts("room-13"); len(hosting) != 0 {
		t.Fatalf("room-13 still hosted after its last participant left (idle_grace 0)")
	}
	c.learn(to.i, from.i) // it learns that the other drains
	var rc fasthttp.RequestCtx
	owner, err := to.s.place(&rc, []byte("room-13"))
	if err != nil || owner != "" {
		t.Fatalf("%s placed room-13 at %q, %v; want a new session here", to.name, owner, err)
	}
	to.s.hub.unreserve([]byte("room-13"))
}

// An edge crashes as two edges join, and a balancer that has heard of none
// of it sends a key past the crashed one. edge-c and edge-d join edge-a
// and edge-b; edge-b crashes; room-36 joins edge-d, its owner now, which
// asks the owners of its views without itself — with edge-b found dead,
// without edge-b too — and, only whether they host it, the owners of its
// ring less itself and any one other edge. A balancer that knows only
// edge-a and edge-b fails to dial edge-b and sends room-36 to edge-a.
// Before, the rings less one other edge were not taken without the dead
// edge: edge-d never asked edge-a — the owner of the ring less edge-c and
// edge-b, which that balancer routes by — and edge-a, which knows neither
// new edge, started a second session of room-36 (found by
// FuzzPlacementEvents). Now edge-a holds edge-d's claim and sends the
// join there.
func TestCrashAsTwoEdgesJoinSplitsNoSession(t *testing.T) { crashDuringScaleOut(t, true) }

// The edge holding a new edge's claim crashes. edge-c and edge-d join
// edge-a and edge-b; room-36 joins edge-d, its owner now, which records
// its claim on the owners of its views less itself and of its ring less
// itself and any one other edge; then edge-b, one of those, crashes. A
// balancer that has heard of none of it fails to dial edge-b and sends
// room-36 to edge-a, the owner of its ring without edge-b. Before, edge-a
// held no claim (the claim lived only on edge-b, gone with it), knew
// neither new edge and started a second session of room-36. Now a new
// edge also asks, whether they host the key, the edges each of its views
// sends the key to once its owner there is gone: edge-a records the claim
// and sends the join to edge-d.
func TestClaimHolderCrashSplitsNoSession(t *testing.T) { crashDuringScaleOut(t, false) }

// crashDuringScaleOut has edge-c and edge-d join edge-a and edge-b, edge-b
// crash before room-36 joins edge-d (first) or after, and a balancer that
// knows only edge-a and edge-b send room-36 past edge-b: to edge-a, which
// must send it to edge-d.
func crashDuringScaleOut(t *testing.T, first bool) {
	c := newPlaceCluster(t, 0x10) // edge-a and edge-b, settled
	c.start(2)
	c.update(c.edges[2])
	c.start(3)
	c.update(c.edges[3])
	crash := func() { c.crash(c.edges[1]) }
	if first {
		crash()
	}
	c.join(0x1f) // room-36 by the converged view: edge-d
	if _, live := c.hosts("room-36"); len(live) != 1 || live[0].name != "edge-d" {
		t.Fatalf("room-36 live on %d edges, want edge-d alone", len(live))
	}
	if !first {
		crash()
	}
	c.join(0x03) // room-36 by edge-a's view: past edge-b, to edge-a
	c.check()
	if _, live := c.hosts("room-36"); len(live) != 1 || live[0].name != "edge-d" {
		t.Fatalf("room-36 live on %d edges, want edge-d alone", len(live))
	}
}

// A drain hands a session to an edge that holds another edge's claim of
// its key. room-13 is admitted on edge-a just before edge-a drains; edge-c
// joins, knows edge-a drains, and starts room-13 itself after asking
// edge-b (its ring's owner less itself), which records edge-c's claim.
// edge-a's upgrade ends, creating room-13 there, and edge-a's drain hands
// it to edge-b, the owner of its ring, which knows nothing of edge-c.
// Before, edge-b installed it over edge-c's claim (an install dropped
// claims): room-13 lived on edge-b and edge-c (found by
// FuzzPlacementEvents). Now an edge refuses to install a session of a key
// another edge has claimed from it lately (not the sender, not gone): the
// sender's clients rejoin and the claim sends them to edge-c.
func TestHandOffOverAClaimSplitsNoSession(t *testing.T) {
	c := newPlaceCluster(t, 0x10) // edge-a and edge-b, settled
	c.join(0xd0)                  // room-13 by the converged view: edge-a, its upgrade pending
	if len(c.pending) != 1 || c.pending[0].e.name != "edge-a" {
		t.Fatalf("room-13's join pending on %d edges, want edge-a", len(c.pending))
	}
	c.drain(c.edges[0], 0x00)
	c.start(2)
	c.update(c.edges[2])
	c.join(0x08) // room-13 by edge-c's view: edge-c starts it
	if _, live := c.hosts("room-13"); len(live) != 1 || live[0].name != "edge-c" {
		t.Fatalf("room-13 live on %d edges, want edge-c alone", len(live))
	}
	pp := c.pending[0]
	c.pending = nil
	c.upgrade(pp) // edge-a's upgrade ends; its drain hands room-13 on
	c.check()
	c.join(0x10) // room-13 again by the converged view
	c.check()
}

// A new edge finds a crashed edge's claim on the edge it asks. edge-a and
// edge-b start together; room-13 starts on edge-a, which, new, records its
// claim on edge-b; edge-a crashes and edge-c joins. room-13 joins edge-c,
// its owner now, which asks edge-b: "hosted by edge-a" — a claim of an
// edge gone from edge-c's view, but not yet from edge-b's. Before, edge-c
// passed over that answer and started room-13 without its claim recorded
// anywhere: a join that a balancer sent past the crashed edge-a to edge-b
// found only edge-a's claim, disregarded it, and edge-b started a second
// session (found by FuzzPlacementEvents). Now edge-b is asked again, told
// edge-a is gone (?gone=), and records edge-c's claim.
func TestGoneEdgesClaimReplacedSplitsNoSession(t *testing.T) {
	c := newPlaceCluster(t, 0x00) // edge-a and edge-b, starting together
	c.join(0x10)                  // room-13 by the converged view: edge-a
	if _, live := c.hosts("room-13"); len(live) != 1 || live[0].name != "edge-a" {
		t.Fatalf("room-13 live on %d edges, want edge-a alone", len(live))
	}
	c.crash(c.edges[0])
	c.start(2)
	c.update(c.edges[2])
	c.join(0x10) // room-13 by the converged view: edge-c
	if _, live := c.hosts("room-13"); len(live) != 1 || live[0].name != "edge-c" {
		t.Fatalf("room-13 live on %d edges, want edge-c alone", len(live))
	}
	c.join(0x00) // room-13 by edge-a's view: past edge-a, to edge-b
	c.check()
}

// A drained edge crashes within its linger, before gossip has told every
// edge where its sessions went. room-13 is live on edge-a, its owner on
// the ring of edge-a and edge-b; edge-c joins, and edge-a, which has heard
// of it, drains and hands room-13 to edge-c, the owner of its ring less
// itself; then edge-a crashes. A balancer that knows only edge-a and
// edge-b fails to dial edge-a and sends room-13 to edge-b, which knows
// neither edge-c nor the hand-off. Before, the hand-over mark lived on
// edge-a alone and edge-b started a second session of room-13 while
// edge-c hosted it (found by FuzzPlacementEvents). Now a drain records
// each session's new owner, before it hands the session on, at the edges
// balancers fail over to — the owners of its recent views less itself —
// even when they have not heard of the new owner yet: edge-b sends the
// join to edge-c.
func TestDrainedEdgeCrashSplitsNoSession(t *testing.T) {
	c := newPlaceCluster(t, 0x10) // edge-a and edge-b, settled
	c.join(0x10)                  // room-13 by the converged view: edge-a
	if _, live := c.hosts("room-13"); len(live) != 1 || live[0].name != "edge-a" {
		t.Fatalf("room-13 live on %d edges, want edge-a alone", len(live))
	}
	c.start(2)
	c.update(c.edges[2])
	c.learn(0, 2)          // edge-a learns of edge-c; edge-b has not yet
	c.drain(c.edges[0], 0) // hands room-13 to edge-c
	if hosting, _ := c.hosts("room-13"); len(hosting) != 1 || hosting[0].name != "edge-c" {
		t.Fatalf("room-13 hosted on %d edges after edge-a's drain, want edge-c alone", len(hosting))
	}
	c.crash(c.edges[0])
	c.placeExpect(c.edges[1], "room-13", "edge-c", "edge-a") // a join past edge-a, as that balancer sends it
	// The mark edge-b holds for edge-c goes once edge-b has seen edge-c
	// leave (here it crashes, its sessions with it): the key starts anew.
	c.learn(1, 2)
	c.crash(c.edges[2])
	c.learn(1, 0, 2)
	var again fasthttp.RequestCtx
	if owner, err := c.edges[1].s.place(&again, []byte("room-13")); err != nil || owner != "" {
		t.Fatalf("edge-b placed room-13 at %q, %v once edge-c and edge-a were gone, want a new session here", owner, err)
	}
	c.edges[1].s.hub.unreserve([]byte("room-13"))
}

// A drain's new owner crashes and restarts under its name within moments of
// taking a hand-off. room-13 went from edge-a to edge-c and died with edge-c's
// process. A join of it at the new edge-c asked edge-a (the new process
// joined through edge-b, which had not heard of the drain), whose mark still
// named edge-c, and took the answer for a hand-off on its way: it waited
// handoffTimeout for one that had gone to the process before, then refused
// 503 — every join of the key, until edge-a exited or its mark ran out (found
// by FuzzPlacementEvents, an input the engine took for hung). Now a drain
// whose hand-off was taken has nothing more coming for its keys: asked by
// the new owner itself, which holds the key no more, it lets it start the
// key anew, as for a raw session or a failed hand-off.
func TestHandedToARestartedEdgeStartsAnewAtOnce(t *testing.T) {
	c := newPlaceCluster(t, 0x10) // edge-a and edge-b, settled
	c.join(0x10)                  // room-13 by the converged view: edge-a
	c.start(2)
	c.update(c.edges[2])
	c.learn(0, 2)          // edge-a learns of edge-c
	c.drain(c.edges[0], 0) // hands room-13 to edge-c
	if hosting, _ := c.hosts("room-13"); len(hosting) != 1 || hosting[0].name != "edge-c" {
		t.Fatalf("room-13 hosted on %d edges after edge-a's drain, want edge-c alone", len(hosting))
	}
	c.crash(c.edges[2])
	c.restartVia(c.edges[2], 1)
	var rc fasthttp.RequestCtx
	if owner, err := c.edges[2].s.place(&rc, []byte("room-13")); err != nil || owner != "" {
		c.fail("the restarted edge-c placed room-13 at %q, %v; want a new session there", owner, err)
	}
	c.edges[2].s.hub.unreserve([]byte("room-13"))
}

// A drain that hands its sessions on before its own ring is rebuilt (the
// UseCluster goroutine has not run yet since the edge heard of a new one)
// rebuilt the ring itself without keeping the view it replaced: room-7,
// live on edge-c, went to edge-d, which had joined a moment before, and
// the drain, finding no ring change in its recent views, told nobody —
// but a balancer that knows neither edge-d nor the drain routes by that
// replaced view. edge-c crashed within its linger, and such a balancer
// sent room-7 past it to edge-b, which knew of no change and started a
// second session (found by FuzzPlacementEvents). Now the drain's rebuild
// keeps the view it replaces, as a ring change does: edge-b is told of
// the hand-off to edge-d and sends the join there.
func TestDrainBeforeItsRingUpdateSplitsNoSession(t *testing.T) {
	c := roomSevenAsEdgeDJoins(t)
	c.mu.Lock()
	c.catchUp(2, 3) // edge-c hears of edge-d; its ring is rebuilt later
	c.mu.Unlock()
	c.drain(c.edges[2], 0x10) // hands room-7 to edge-d, before its update
	c.wantHandedToEdgeD()
	c.crash(c.edges[2])
	c.placeExpect(c.edges[1], "room-7", "edge-d", "edge-c") // a join past edge-c, by a balancer that knows neither change
}

// A drained edge crashes within its linger just after another edge did.
// room-7, live on edge-c, goes to edge-d, which joined a moment before;
// edge-b crashed a moment before the drain. A balancer that has heard of
// neither edge-d nor the drain and reaches neither edge-c nor edge-b sends
// room-7 past both, to edge-a. The drain had recorded the new owner only at
// edge-b, the owner of its view without itself, and edge-a, knowing of no
// change, started a second session (found by FuzzPlacementEvents). Now the
// drain also records it at the owner of each such view without that edge
// too, as a claimer asks both (two edges crashed at once): edge-a sends the
// join to edge-d.
func TestDrainedEdgeCrashAfterAnotherSplitsNoSession(t *testing.T) {
	c := roomSevenAsEdgeDJoins(t)
	c.learn(2, 3) // edge-c hears of edge-d; edge-a and edge-b have not yet
	c.crash(c.edges[1])
	c.drain(c.edges[2], 0) // hands room-7 to edge-d
	c.wantHandedToEdgeD()
	c.crash(c.edges[2])
	c.placeExpect(c.edges[0], "room-7", "edge-d", "edge-c", "edge-b") // a join past both, by a balancer that knows neither change
}

// roomSevenAsEdgeDJoins is a settled cluster of edge-a, edge-b and edge-c
// with room-7 live on edge-c, its owner, and edge-d just started, the
// owner of room-7 on the ring of edge-a, edge-b and edge-d (edge-b's on
// the ring of edge-a and edge-b): no edge has heard of it yet.
func roomSevenAsEdgeDJoins(t *testing.T) *pfCluster {
	if ownerOn(pfRing, "room-7", "edge-a", "edge-b", "edge-c") != "edge-c" || ownerOn(pfRing, "room-7", "edge-a", "edge-b", "edge-d") != "edge-d" || ownerOn(pfRing, "room-7", "edge-a", "edge-b") != "edge-b" {
		t.Fatal("room-7's owners on pfRing are not the ones this test needs")
	}
	c := newPlaceCluster(t, 0x11) // edge-a, edge-b and edge-c, settled
	c.join(0x11)                  // room-7 by the converged view: edge-c
	if _, live := c.hosts("room-7"); len(live) != 1 || live[0].name != "edge-c" {
		t.Fatalf("room-7 live on %d edges, want edge-c alone", len(live))
	}
	c.start(3)
	c.update(c.edges[3])
	return c
}

// wantHandedToEdgeD fails the test unless edge-c's drain left room-7 on
// edge-d alone.
func (c *pfCluster) wantHandedToEdgeD() {
	c.t.Helper()
	if hosting, _ := c.hosts("room-7"); len(hosting) != 1 || hosting[0].name != "edge-d" {
		c.t.Fatalf("room-7 hosted on %d edges after edge-c's drain, want edge-d alone", len(hosting))
	}
}

// An edge taken for dead by the cluster (busy) before any other edge had
// heard of it comes back: balancers that see it back route to it the keys
// it owns on the ring with it — room-7, live on edge-c since before
// edge-d joined. edge-c never heard of edge-d, so it pinned nothing; and
// edge-d, whose own view never changed, took itself for an edge settled
// long ago, asked nobody and started a second session (found by
// FuzzPlacementEvents). Now an edge back from being taken for dead (it
// refuted its death: Membership.BackAt) is new to the cluster again for a
// settle window, and asks the owners of the ring without it: edge-d sends
// the join to edge-c.
func TestEdgeBackFromTheDeadSplitsNoSession(t *testing.T) {
	c := newPlaceCluster(t, 0x11) // edge-a, edge-b and edge-c, settled
	c.join(0x11)                  // room-7 by the converged view: edge-c
	c.start(3)
	c.update(c.edges[3])
	c.mu.Lock()
	c.edges[3].busy = true // taken for dead before anyone heard of it
	c.changedAt[3] = c.now
	c.mu.Unlock()
	c.advance(time.Minute + time.Second)
	c.mu.Lock()
	c.edges[3].busy, c.edges[3].backAt = false, c.now // back: it refuted its death
	c.changedAt[3] = c.now
	c.mu.Unlock()
	c.update(c.edges[3])
	if _, ok := c.edges[2].v.Node("edge-d"); ok {
		t.Fatal("edge-c heard of edge-d")
	}
	c.placeExpect(c.edges[3], "room-7", "edge-c")
}

// The edge a drain handed a key to crashes before the edge holding the
// drain's claim for it has heard of it: nothing will tell that edge it is
// gone (gossip tells of no member's death before its life). The claim
// held while gossip could still bring word of the new owner; past that
// bound an edge still unheard of is taken for gone, and the key starts
// anew (its session was lost with the crash) rather than being sent for
// the rest of the settle window to an edge nobody reaches.
func TestHandedClaimLapsesForAnEdgeNeverHeardOf(t *testing.T) {
	c := newPlaceCluster(t, 0x10) // edge-a and edge-b, settled
	c.join(0x10)                  // room-13 by the converged view: edge-a
	c.start(2)
	c.update(c.edges[2])
	c.learn(0, 2)          // edge-a learns of edge-c; edge-b has not yet
	c.drain(c.edges[0], 0) // hands room-13 to edge-c, edge-b records it
	c.crash(c.edges[0])
	c.crash(c.edges[2])
	place := func() (string, error) {
		var rc fasthttp.RequestCtx
		rc.Request.Header.Set(headerSkip, "edge-a")
		owner, err := c.edges[1].s.place(&rc, []byte("room-13"))
		if err == nil && owner == "" {
			c.edges[1].s.hub.unreserve([]byte("room-13"))
		}
		return owner, err
	}
	// Within gossip's bound edge-c may be alive and not heard of yet.
	if owner, err := place(); err != nil || owner != "edge-c" {
		t.Fatalf("edge-b placed room-13 at %q, %v right after the drain, want a 421 to edge-c", owner, err)
	}
	c.advance(pfGossipBound)
	if _, ok := c.edges[1].v.Node("edge-c"); ok {
		t.Fatal("edge-b heard of edge-c, which crashed before anyone but edge-a knew it")
	}
	if owner, err := place(); err != nil || owner != "" {
		t.Fatalf("edge-b placed room-13 at %q, %v with edge-c unheard of past gossip's bound, want a new session here", owner, err)
	}
}

// A new edge has not heard of the edge a drain handed a key to. edge-d
// joins edge-a and edge-b, then edge-c, which edge-d has not heard of
// yet; a key live on edge-a (its owner on the ring of edge-a and edge-b)
// is handed to edge-c by edge-a's drain, which records edge-c's claim on
// edge-b, where a balancer that knows neither fails over to. A join of
// the key past edge-a reaches edge-d, its owner on the ring of edge-b and
// edge-d; edge-d asks edge-b, which answers that edge-c holds it. Before,
// edge-d took an edge it had not heard of for one gone, asked edge-b again
// naming it gone — edge-b replaced edge-c's claim with edge-d's — and
// started a second session. Now such an edge is asked itself at the
// address the answer gives — edge-b's own knowledge of it, or the drain's
// that came with its claim —, or, with none, the join waits for gossip
// (503). Found reading the drain's hand-over claims, not by the fuzzer.
func TestUnheardNewOwnerSplitsNoSession(t *testing.T) {
	key := ""
	for i := 0; i < 1000 && key == ""; i++ {
		k := fmt.Sprintf("unheard-%d", i)
		if ownerOn(pfRing, k, "edge-a", "edge-b") == "edge-a" && ownerOn(pfRing, k, "edge-b", "edge-c", "edge-d") == "edge-c" && ownerOn(pfRing, k, "edge-b", "edge-d") == "edge-d" {
			key = k
		}
	}
	if key == "" {
		t.Fatal("no key of the shape this test needs on pfRing")
	}
	c := newPlaceCluster(t, 0x10) // edge-a and edge-b, settled
	c.placeExpect(c.edges[0], key, "")
	p := c.newParticipant(c.edges[0].s, false)
	p.admitted = true
	if err := c.edges[0].s.hub.join([]byte(key), p); err != nil {
		t.Fatal(err)
	}
	c.start(3)
	c.update(c.edges[3])
	c.start(2) // edge-c knows edge-d; edge-d, edge-a and edge-b not edge-c
	c.update(c.edges[2])
	c.learn(0, 2, 3)
	c.drain(c.edges[0], 0) // hands the key to edge-c
	if hosting, _ := c.hosts(key); len(hosting) != 1 || hosting[0].name != "edge-c" {
		t.Fatalf("%s hosted on %d edges after edge-a's drain, want edge-c alone", key, len(hosting))
	}
	place := func() (string, error) {
		var rc fasthttp.RequestCtx
		rc.Request.Header.Set(headerSkip, "edge-a")
		owner, err := c.edges[3].s.place(&rc, []byte(key))
		if err == nil && owner == "" {
			c.edges[3].s.hub.unreserve([]byte(key))
		}
		return owner, err
	}
	if owner, err := place(); err != nil || owner != "edge-c" {
		t.Fatalf("edge-d placed %s at %q, %v while edge-c hosts it, want a 421 to edge-c at the address the drain gave edge-b", key, owner, err)
	}
	// An address no edge of the cluster could have (a hint forged on the
	// path, unsigned) is not dialed — taken for an edge where nothing
	// listens, edge-c would be passed over: the join waits for gossip.
	if c.edges[1].s.hub.handedOn([]byte(key), "edge-b", "edge-c", "http://198.51.100.7:80", settleWindow) != "" {
		t.Fatal("edge-b did not record the claim for edge-c")
	}
	if owner, err := place(); !errors.Is(err, errOwnerUnsure) {
		t.Fatalf("edge-d placed %s at %q, %v given an address outside the cluster for edge-c, want a 503", key, owner, err)
	}
	// An answer naming edge-c with no address (edge-b's claim for it
	// recorded without one): the join waits for gossip.
	if c.edges[1].s.hub.handedOn([]byte(key), "edge-b", "edge-c", "", settleWindow) != "" {
		t.Fatal("edge-b did not record the claim for edge-c")
	}
	if owner, err := place(); !errors.Is(err, errOwnerUnsure) {
		t.Fatalf("edge-d placed %s at %q, %v while edge-c hosts it, want a 503 until it hears of edge-c", key, owner, err)
	}
	c.learn(1, 2) // edge-b hears of edge-c: its answer gives edge-c's address
	if owner, err := place(); err != nil || owner != "edge-c" {
		t.Fatalf("edge-d placed %s at %q, %v once edge-b gave edge-c's address, want a 421 to edge-c", key, owner, err)
	}
	c.learn(3, 2)
	if owner, err := place(); err != nil || owner != "edge-c" {
		t.Fatalf("edge-d placed %s at %q, %v once it heard of edge-c, want a 421 to edge-c", key, owner, err)
	}
}

// A drain's claim for the new owner goes unanswered at the edge balancers
// fail over to (the link drops it): the drain passes that edge over and
// hands the session on all the same, not held by it.
func TestDrainPassesOverAnUnansweringFailoverEdge(t *testing.T) {
	// edge-b is where a balancer of edge-a's old view fails over to, not
	// the new owner: the drain sends it a claim (as in
	// TestDrainedEdgeCrashSplitsNoSession, where it is recorded).
	if ownerOn(pfRing, "room-13", "edge-b", "edge-c") != "edge-c" {
		t.Fatal("room-13's owner without edge-a is not edge-c on pfRing")
	}
	c := newPlaceCluster(t, 0x10) // edge-a and edge-b, settled
	c.join(0x10)                  // room-13 by the converged view: edge-a
	c.start(2)
	c.update(c.edges[2])
	c.learn(0, 2)
	c.mu.Lock()
	c.links[0][1] = pfDrop
	c.mu.Unlock()
	c.drain(c.edges[0], 0)
	if hosting, _ := c.hosts("room-13"); len(hosting) != 1 || hosting[0].name != "edge-c" {
		t.Fatalf("room-13 hosted on %d edges after edge-a's drain, want edge-c alone", len(hosting))
	}
	if _, owner := c.edges[1].s.hub.lookup([]byte("room-13"), "edge-b", goneEdges{}); owner != "" {
		t.Fatalf("edge-b sends room-13 to %q; the claim was dropped on the way, want none", owner)
	}
}
