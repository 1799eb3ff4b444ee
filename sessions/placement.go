package sessions

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/balancer/acceptguard"
	"github.com/ringlb/ringlb/balancer/httplog"
	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/health"
)

// Ownership: the edge's half of "a session never splits" (docs/DESIGN.md,
// "The one hard property").
//
// With a cluster (UseCluster) an edge keeps its own ring of the cluster's
// edges, built exactly as the balancers build theirs, and before it starts a
// session it checks, in order:
//
//  1. the session is live here (or joining right now): join it, whatever
//     the ring says — a live session never moves on a ring change;
//  2. another edge pinned it (gossip), asked for it (a claim, below), or a
//     drain handed it on: 421 + X-Ringlb-Owner naming that edge;
//  3. the ring (less the edges the balancer could not reach, named in
//     X-Ringlb-Skip) gives it to another edge: 421 naming the owner;
//  4. the ring gives it to us, but the ring changed less than settleWindow
//     ago: every edge that owned the key in a view of that window is asked
//     (POST /_ringlb/claim) whether it hosts the session; one that does gets
//     the 421. One that does not records our claim for settleWindow, so a
//     balancer still routing by the old view is sent here, not given a
//     second session there.
//
// Pins cover what outlives the window: whenever the ring changes, every
// session live here that the ring now gives to another edge is pinned in
// gossip (health.Membership.Pin), and unpinned when it ends.
//
// A drain hands every session to its owner on the ring without this edge
// (POST /_ringlb/handoff: key, epoch, seq, history), marks it moved (no msg
// is sequenced here any more, joins get 421 to the new owner), then closes
// its participants with 1012; ringlb.v1 clients resume on the new owner with
// nothing lost (drain.go).
//
// This file decides where a new session belongs and asks other edges (the
// claim's client side); peer.go serves their claims and hand-offs and signs
// and checks every edge-to-edge request; the hub keeps the marks placement
// reads and writes (admitting, claims, moved) under its shard locks, in
// hub.go.

// settleWindow is how long a ring change is remembered: views of the last
// settleWindow are asked before a new session starts, and claims and
// hand-over marks last as long. Gossip converges in well under a second on a
// LAN (health's tests: ~65 ms, worst 1.4 s), so this is a wide margin; its
// cost is one loopback/LAN round trip per new session in the window.
const settleWindow = 10 * time.Second

// gossipBound is how long a membership change takes to reach every edge,
// with margin (health's tests: ~65 ms, worst 1.4 s): what an edge has not
// heard of this long after word of it left another edge, it will not hear
// of. The settle window rests on it too, five times over.
const gossipBound = 2 * time.Second

var errNoEdge = errors.New("no edge on the ring")

// Membership is what ownership reads of the cluster's gossip and writes to
// it: the edges and their state, pins, the cluster key and a signal on every
// change. *health.Membership is the one the edge runs with (ringlb edge, and
// the tests, on real memberlist nodes).
type Membership interface {
	// Edges returns the alive edges of region ("": every region).
	Edges(region string) []health.Node
	// Node returns the live member named name, whatever its role or state.
	Node(name string) (health.Node, bool)
	// Left returns the member named name as it was when it left, if it
	// did less than within ago and has not come back.
	Left(name string, within time.Duration) (health.Node, bool)
	// Subscribe signals membership changes (coalesced) until ended.
	Subscribe() (changes <-chan struct{}, unsubscribe func())
	// Pin and Unpin announce that a session of hash lives on this edge
	// although the ring may give it to another, and withdraw it.
	Pin(hash uint64)
	Unpin(hash uint64)
	// PinnedTo returns a live node, other than this one and those skip
	// names, that pinned hash.
	PinnedTo(hash uint64, skip ...string) (health.Node, bool)
	// PinnedByGone names a node that pinned hash and left the cluster
	// lately: it may only have been taken for dead.
	PinnedByGone(hash uint64) (string, bool)
	// BackAt is when this edge last came back from being suspected or
	// taken for dead by the cluster (zero if never; now while it may still
	// be away): from then on balancers route to it again, by rings it may
	// have left.
	BackAt() time.Time
	// CheckEdgeURL reports whether raw is an address an edge of the
	// cluster could announce (an IP address within its allowed networks,
	// and a port): one handed over for an edge not heard of yet is dialed
	// only then.
	CheckEdgeURL(raw string) error
	// Keyring is the cluster key that signs and checks peer requests.
	Keyring() *health.Keyring
	// BalancerBelow reports whether a live balancer announces a
	// peer_signing below level (an earlier release's).
	BalancerBelow(level int) bool
}

// pastView is a ring snapshot replaced less than settleWindow ago.
type pastView struct {
	snap  *ring.Snapshot
	until time.Time
}

// ownership is an edge's ring view, recent views, pins and peer client.
type ownership struct {
	srv  *Server
	m    Membership
	self string
	ring *ring.Ring
	log  *slog.Logger
	http *http.Client
	// unsureLog spaces the lines of joins refused because a previous
	// owner did not answer its claim: anyone's joins during a partition.
	unsureLog acceptguard.LogLimit

	// joined is when this edge joined: for settleWindow after, balancers may
	// still route by rings without it (arrived).
	joined time.Time

	mu     sync.Mutex
	past   []pastView
	pinned map[string]uint64 // sessions pinned by us: key → hash

	// skipMu guards the sets of two or more edges named in X-Ringlb-Skip
	// whose ring skipSnap has built (without).
	skipMu   sync.Mutex
	skipSnap *ring.Snapshot
	skipSets map[string]struct{}

	// failMu guards the rings a new edge has built, for failSnap's ring
	// version, of where its views send a key once its owner there is
	// gone (failover): at most maxFailoverRings.
	failMu    sync.Mutex
	failSnap  *ring.Snapshot
	failRings map[failoverRing]struct{}

	// claimSigs are the claim signatures taken here (claimTaken).
	claimSigsMu sync.Mutex
	claimSigs   onceSigs

	repl *replicator // replication.go

	stop     chan struct{}
	stopOnce sync.Once // a Shutdown called twice stops it once
	done     chan struct{}
}

// RingEdges is the number of edges on this edge's ownership ring; 0 before
// UseCluster. A cluster is settled for this edge once it counts them all.
func (s *Server) RingEdges() int {
	if o := s.hub.owner.Load(); o != nil {
		return o.ring.Snapshot().Len()
	}
	return 0
}

// UseCluster makes the edge check ownership on a ring of m's edges built
// with rc (the balancers' ring parameters), pin sessions that outlive a ring
// change, and hand sessions on when it drains. Call it once, before Serve.
// Shutdown stops what it starts.
func (s *Server) UseCluster(m Membership, rc ring.Config) {
	s.UseKeyring(m.Keyring())
	o := &ownership{
		srv: s, m: m, self: s.name, ring: ring.New(rc), log: s.log,
		http:      newPeerClient(),
		pinned:    make(map[string]uint64),
		claimSigs: onceSigs{kept: claimSigsKept},
		stop:      make(chan struct{}), done: make(chan struct{}),
	}
	// Subscribed before the ring is first built: a member believed in
	// between (a join confirmed after Join stopped waiting for it, as on
	// a loaded machine) signalled nobody, and the ring went without it
	// until the next membership change — in a quiet cluster, none
	// (TestOlderTermsAreFenced waited 30 s for edge-b's ring to count
	// edge-a; TestMemberBelievedAsTheRingIsBuiltIsOnIt).
	changes, unsubscribe := m.Subscribe()
	o.ring.Update(o.members())
	o.joined = s.hub.now()
	s.hub.owner.Store(o)
	pins := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ringlb_edge_pins",
		Help: "Sessions live on this edge pinned in gossip: the ring gave their key to another edge while they lived.",
	}, func() float64 {
		o.mu.Lock()
		defer o.mu.Unlock()
		return float64(len(o.pinned))
	})
	if err := s.reg.Register(pins); err != nil {
		s.log.Warn("ringlb_edge_pins not registered", "err", err)
	}
	o.repl = s.startReplication(o)
	drain := s.drainStarted
	go func() {
		defer close(o.done)
		defer unsubscribe()
		sweep := time.NewTicker(settleWindow)
		defer sweep.Stop()
		for {
			select {
			case <-o.stop:
				return
			case <-changes:
				o.update()
			case <-drain:
				o.update() // leave our own ring
				drain = nil
			case now := <-sweep.C:
				s.hub.sweep(now)
				o.repl.sweepCopies(now)
				o.sweepFailover(s.hub.now())
			}
		}
	}()
}

// close stops the ownership goroutine (Shutdown), once however often it
// is called: a second Shutdown closed the channel again and panicked.
func (o *ownership) close() {
	o.stopOnce.Do(func() { close(o.stop) })
	<-o.done
}

// members returns the edges taking new sessions: alive ones, less this one
// while it drains.
func (o *ownership) members() []ring.Member {
	nodes := o.m.Edges("")
	out := make([]ring.Member, 0, len(nodes))
	draining := o.srv.draining.Load()
	for _, n := range nodes {
		if draining && n.Name == o.self {
			continue
		}
		out = append(out, ring.Member{Name: n.Name, URL: n.Meta.URL, Weight: n.Meta.Weight})
	}
	return out
}

// update rebuilds the ring after a membership change; when it changed, the
// old view is remembered and pins are brought up to date.
func (o *ownership) update() {
	// A claim is "that edge may start this session": void once it drains
	// (it hands its sessions on) or no longer holds (claimed: that edge
	// gone, or, recorded for the edge a drain handed the key to, left).
	gone, now := o.goneEdges(nil), o.srv.hub.now()
	o.srv.hub.dropClaims(func(c handover) bool {
		n, ok := o.m.Node(c.edge)
		return !c.holds(gone, now) || ok && n.Meta.State == health.StateDraining
	})
	next, changed := o.rebuild()
	if !changed {
		o.repl.membershipChanged(false)
		return
	}
	o.log.Info("ring changed", "version", next.Version(), "edges", next.Len())
	o.srv.hub.eachSession(func(_ *hubShard, s *session) { o.syncPin(s.key, next) })
	o.repl.membershipChanged(true)
}

// rebuild builds the ring of the members as they are now and reports
// whether it changed. The new ring is published under o.mu, with the view
// it replaces already among the past ones: a join that reads the new ring
// reads the past views (previousOwners) after it, so it asks the old
// owner. Published first, a join placed in between saw a ring giving it
// the key and no previous owner to ask, and started a second session of a
// draining edge's session before the hand-off came (refused then: its
// clients were reset). A drain's hand-off rebuilds it too (handOn), and
// the view it replaces is one balancers may still route by: without it the
// drain told none of the edges they fail over to of a session handed to
// an edge that joined a moment before (noticeFailover).
//
// The members are read under o.mu too, as the balancers' ring.Rebuild
// reads them under its lock: the update loop and handOn rebuild at once,
// and a view read before the other's rebuild was applied after it, the
// ring left on a membership balancers no longer route by until the next
// change. members takes only gossip's lock, never o.mu.
func (o *ownership) rebuild() (next *ring.Snapshot, changed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	old := o.ring.Snapshot()
	if next = o.ring.Update(o.members()); next == old {
		return next, false
	}
	now := o.srv.hub.now()
	kept := o.past[:0]
	for _, p := range o.past {
		if now.Before(p.until) {
			kept = append(kept, p)
		}
	}
	o.past = append(kept, pastView{snap: old, until: now.Add(settleWindow)})
	return next, true
}

// syncPin pins key when the ring gives it to another edge. A pin stays
// while the session lives here, even when the ring gives the key back: a
// ring that flaps (a busy edge taken for dead and back) would otherwise
// withdraw and re-announce every pin, and a peer missing one for a moment
// could start a second session. Pins go when the session ends (freed) or
// it is handed on (a drain). Called with key's shard lock held.
func (o *ownership) syncPin(key string, snap *ring.Snapshot) {
	if o.srv.draining.Load() {
		return // the hand-off withdraws pins once the new owner has the session
	}
	if owner, ok := snap.Locate([]byte(key)); ok && owner.Name != o.self {
		o.pinHere(key)
	}
}

// pinHere pins key to this edge in gossip, once. Called with key's shard
// lock held.
func (o *ownership) pinHere(key string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, has := o.pinned[key]; has {
		return
	}
	h := xxhash.Sum64String(key)
	o.pinned[key] = h
	o.m.Pin(h)
}

// created and freed are the hub's hooks (under the shard lock).
func (o *ownership) created(key string) {
	if o.srv.draining.Load() {
		o.srv.createdDraining.Add(1) // the drain hands it on (handOn)
	}
	o.syncPin(key, o.ring.Snapshot())
}

func (o *ownership) freed(key string) { o.unpin(key) }

// unpin withdraws key's pin, if we hold one.
func (o *ownership) unpin(key string) {
	o.mu.Lock()
	if h, ok := o.pinned[key]; ok {
		delete(o.pinned, key)
		o.m.Unpin(h)
	}
	o.mu.Unlock()
}

// place decides where a new session of key belongs (steps 2–4 above): ""
// here, else the edge to send it to. skip names edges the balancer could
// not reach. It fails with errOwnerUnsure when a previous owner could not
// tell whether it hosts the session: the client retries (503) rather than
// risk a second session.
func (o *ownership) place(ctx context.Context, key []byte, skip []string) (string, error) {
	// Checked once: the debug lines' arguments (the key as a string, the
	// variadic slice) would otherwise be allocated on every join.
	debug := o.log.Enabled(ctx, slog.LevelDebug)
	if n, ok := o.m.PinnedTo(xxhash.Sum64(key), skip...); ok && n.Name != o.self {
		if debug {
			o.log.Debug("join redirected: pinned", "key", httplog.Key(key), "owner", n.Name)
		}
		return n.Name, nil
	}
	snap, err := o.without(o.ring.Snapshot(), skip)
	if err != nil {
		return "", err
	}
	owner, ok := snap.Locate(key)
	if !ok {
		return "", errNoEdge
	}
	if owner.Name != o.self {
		if debug {
			o.log.Debug("join redirected: ring", "key", httplog.Key(key), "owner", owner.Name, "skip", skip)
		}
		return owner.Name, nil
	}
	if o.repl.promoteOnJoin(key, skip) {
		// Its owner is gone (or unreachable for the balancer): our copy is
		// the session, same epoch and seq.
		return "", nil
	}
	// An edge taken for dead is one the balancers that know of it place
	// the key past: the owners of the views without it are asked next.
	var asked, dead []string
	var named []namedHolder // answers naming a third edge, not followed
	for again := true; again; {
		again = false
		prevs, hostOnly := o.previousOwners(key, skip, dead)
		for i := 0; i < len(prevs); i++ {
			prev := prevs[i]
			if contains(asked, prev.Name) {
				continue
			}
			asked = append(asked, prev.Name)
			holder, at, err := o.claimKnown(ctx, prev, key, claimArgs{})
			if err != nil {
				if !o.takeForDead(prev, err) {
					return "", o.unanswered(prev.Name, key, err)
				}
				if debug {
					o.log.Debug("claim unanswered; taking the edge for dead", "edge", prev.Name, "key", httplog.Key(key), "err", err)
				}
				dead = append(dead, prev.Name)
				again = true
				continue
			}
			switch {
			case holder == "":
			case holder == o.self:
				return "", o.awaitHandOff(ctx, prev.Name, key)
			case holder == prev.Name:
				// The asked edge hosts it: definitive, even when our gossip
				// has (wrongly) taken that edge for dead.
				if debug {
					o.log.Debug("join redirected: claim", "key", httplog.Key(key), "owner", holder)
				}
				return holder, nil
			case i >= hostOnly:
				// Asked only whether it hosts the key (previousOwners). The
				// edge it names, if a member here (draining or not: one
				// draining says where it handed the session), is asked
				// that too, once: a drain that knew neither new edge handed
				// the session there, and no view of ours has that edge for
				// the key's owner. Before, a scale-out by two during such a
				// drain started a second session
				// (TestDrainBeforeAScaleOutSplitsNoSession).
				if n, ok := o.m.Node(holder); ok && !contains(skip, holder) && !contains(dead, holder) {
					prevs = append(prevs, ring.Member{Name: holder, URL: n.Meta.URL})
				}
				named = append(named, namedHolder{prev, holder, at})
			case !contains(skip, holder) && o.member(holder):
				if debug {
					o.log.Debug("join redirected: claim", "key", httplog.Key(key), "asked", prev.Name, "owner", holder)
				}
				return holder, nil
			default:
				named = append(named, namedHolder{prev, holder, at})
			}
		}
	}
	// An edge that named an edge taken for dead since, or gone from our
	// view (its claim, made as that edge joined), is asked again, told
	// which are gone: it records this edge's claim instead, so a join it
	// gets past the dead edge (a balancer's skip) is sent here. Else it
	// kept the dead edge's claim, disregarded that join's claim and
	// started a second session (TestGoneEdgesClaimReplacedSplitsNoSession:
	// an edge that crashed before this one joined, gone from our view,
	// not yet from the asked edge's).
	for _, n := range named {
		if contains(dead, n.prev.Name) || !contains(dead, n.holder) && o.member(n.holder) {
			continue
		}
		// One not heard of here and not seen leaving may have joined a
		// moment ago — a drain's new owner, whose claim the drain
		// recorded on the asked edge. Taken for gone at once, that claim
		// was replaced by ours and a second session started here
		// (TestUnheardNewOwnerSplitsNoSession). It is asked itself, at
		// the address the asked edge gave, whether it hosts the key;
		// only one that refuses the connection (it crashed — as one that
		// crashed before this edge joined) or hosts nothing is passed
		// over. With no address given, the join waits for gossip (503).
		if !contains(dead, n.holder) && !contains(skip, n.holder) && !o.goneEdges(nil).left(n.holder) {
			if n.at.url == "" {
				return "", o.unanswered(n.prev.Name, key, fmt.Errorf("%w: %s", errHolderUnheard, n.holder))
			}
			if err := o.m.CheckEdgeURL(n.at.url); err != nil {
				// Never dialed outside the cluster's networks, signed or
				// not (gossip's rule for members' addresses).
				return "", o.unanswered(n.prev.Name, key, fmt.Errorf("%w: %s: %w", errHolderUnheard, n.holder, err))
			}
			holder, _, err := o.claimKnown(ctx, ring.Member{Name: n.holder, URL: n.at.url}, key, claimArgs{})
			switch {
			case err != nil && (!errors.Is(err, syscall.ECONNREFUSED) || !n.at.signed):
				// A refusal passes the holder over only at the address
				// the asked edge signed: one rewritten on the path to a
				// closed port would have passed a live holder over.
				return "", o.unanswered(n.holder, key, err)
			case err == nil && holder == n.holder:
				return holder, nil
			case err == nil && holder != "" && !contains(skip, holder) && o.member(holder):
				return holder, nil
			}
		}
		gone := dead
		if !contains(gone, n.holder) {
			gone = append(slices.Clip(dead), n.holder)
		}
		holder, _, err := o.claim(ctx, n.prev, key, claimArgs{gone: gone})
		switch {
		case err != nil:
			return "", o.unanswered(n.prev.Name, key, err)
		case holder == o.self:
			return "", o.awaitHandOff(ctx, n.prev.Name, key)
		case holder != "" && !contains(gone, holder) && !contains(skip, holder) && o.member(holder):
			return holder, nil
		}
	}
	// An edge taken for dead above (its claim refused) is gone for this
	// join as one the balancer skipped: a copy of its session here is the
	// session, not one to start anew beside it.
	if len(dead) > 0 && o.repl.promoteOnJoin(key, append(slices.Clip(skip), dead...)) {
		return "", nil
	}
	if debug {
		o.log.Debug("new session here", "key", httplog.Key(key), "skip", skip)
	}
	return "", nil
}

// unanswered is place's refusal of a join while edge, asked about key,
// has not answered clearly (errOwnerUnsure: 503, the client retries).
func (o *ownership) unanswered(edge string, key []byte, err error) error {
	o.unsureLog.Warn(o.log, "claim unanswered: refusing the join until the edge answers or leaves", "edge", edge, "key", httplog.Key(key), "err", err)
	return fmt.Errorf("%w: %s: %w", errOwnerUnsure, edge, err)
}

// awaitHandOff waits for the session of key that the draining edge from
// is handing here right now (a claim's answer named this edge).
func (o *ownership) awaitHandOff(ctx context.Context, from string, key []byte) error {
	if o.srv.hub.installedLately(key) {
		// It landed, and its session has ended here since (place found
		// none): nothing more is coming, and the key starts anew here.
		// Waited for, every join of it in the window was refused
		// (TestHandedSessionEndedStartsAnewAtOnce).
		return nil
	}
	if err := o.srv.hub.awaitInstall(ctx, key); err != nil {
		return fmt.Errorf("%w: hand-off from %s not received: %w", errOwnerUnsure, from, err)
	}
	return nil
}

// errHolderUnheard: a claim's answer named an edge this one has not heard
// of, without its address.
var errHolderUnheard = errors.New("the edge named as the holder is not known here yet")

// namedHolder is a claim's answer naming a third edge (holder) that place
// did not follow.
type namedHolder struct {
	prev   ring.Member
	holder string
	at     ownerAt // holder's address as prev gives it
}

// errOwnerUnsure: a previous owner of the key could not say whether it hosts
// the session (busy, or not yet aware of this edge); the join is refused
// with 503 and retried.
// maxSkipSets bounds the rings one ring version builds for X-Ringlb-Skip
// sets of two edges or more (a single edge's are bounded by the ring's
// size). Each is a ring rebuild (milliseconds of CPU, tens of KiB kept
// until the ring changes), and X-Ringlb-Skip is anyone's to send: every
// ordering of every subset of the ring's edges was a ring of its own, so
// joins naming new orderings held the edge's CPU and grew its heap without
// bound (TestSkipSetsBounded: 1,099 joins of ~250 bytes held the edge
// 2.6–5 s and +35 MiB on an 8-edge ring; 8 names of 20 edges reach 10^8
// rings).
// Balancers name the edges they failed to dial (at most 4, and the same
// set while a failure lasts), so a few sets per version are all they use.
const maxSkipSets = 32

// errSkipSets refuses a join whose X-Ringlb-Skip names a set of edges the
// ring version has no room for (maxSkipSets): the client retries (503),
// and a crashed edge's sessions need no skip once gossip has dropped it.
var errSkipSets = errors.New("too many sets of unreachable edges named for this ring; retry")

// without returns snap less the members skip names — the ring every node
// builds once gossip has dropped them — or errSkipSets. The names are taken
// as a set (sorted, once each, ring members only): in any order they make
// the same ring, built and cached once.
func (o *ownership) without(snap *ring.Snapshot, skip []string) (*ring.Snapshot, error) {
	var buf [8]string // skipList reads at most 8
	names := buf[:0]
	for _, name := range skip {
		if _, ok := snap.Member(name); ok && !slices.Contains(names, name) && len(names) < len(buf) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if len(names) > 1 {
		set := strings.Join(names, ",")
		o.skipMu.Lock()
		if o.skipSnap != snap {
			o.skipSnap, o.skipSets = snap, make(map[string]struct{})
		}
		_, built := o.skipSets[set]
		if !built && len(o.skipSets) >= maxSkipSets {
			o.skipMu.Unlock()
			o.srv.metrics.skipRefused.Inc()
			o.srv.skipLog.Warn(o.log, "join refused: X-Ringlb-Skip names one set of edges too many for this ring", "sets", maxSkipSets)
			return nil, errSkipSets
		}
		o.skipSets[set] = struct{}{}
		o.skipMu.Unlock()
	}
	for _, name := range names {
		snap = snap.Without(name)
	}
	return snap, nil
}

var errOwnerUnsure = errors.New("cannot tell yet whether another edge hosts this session; retry")

// takeForDead reports whether a claim's failure means the edge hosts
// nothing: nothing listens at its address (refused), or gossip has already
// declared it dead and it did not answer in time. Any other failure (a
// timeout on a member, an HTTP error) leaves the question open.
func (o *ownership) takeForDead(prev ring.Member, err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	return !o.member(prev.Name) && !errors.Is(err, errClaimAnswer)
}

func (o *ownership) member(name string) bool {
	_, ok := o.m.Node(name)
	return ok
}

// previousOwners returns the other edges that owned key in a view of the
// last settleWindow, less those the balancer could not reach. Edges gossip
// has declared dead since are asked too: a busy edge may be taken for dead
// while its sessions live on, and a crashed one refuses at once: the
// views are taken without the edges dead names (taken for dead by a
// claim), as balancers that know of them place keys. Those from hostOnly
// on are asked only whether they host the key themselves.
func (o *ownership) previousOwners(key []byte, skip, dead []string) (out []ring.Member, hostOnly int) {
	now := o.srv.hub.now()
	// The views are read under o.mu, the rings they need built after:
	// a ring is milliseconds to build, and o.mu is taken under the shard
	// locks (syncPin).
	past, current := o.recentViews(now)
	views := make([]*ring.Snapshot, 0, len(past)+1)
	var others []*ring.Snapshot
	if now.Before(o.arrived().Add(settleWindow)) {
		// Until every balancer knows of us they route by the ring without
		// us — the current one less this edge, not the first we saw: we
		// may have learnt of the other edges one by one.
		before := current.Without(o.self)
		views = append(views, before)
		// And by the ring without any one other edge besides: one that
		// joined with us is unknown to them too, and a key live on its
		// owner on the ring without both is pinned only once that owner
		// learns of us. Asking the owner without us alone (the other
		// new edge, which never hosted it), a scale-out by two started a
		// second session (TestTwoEdgesJoiningTogetherSplitNoSession).
		// Each ring is built once per ring version (Without caches it).
		for _, m := range before.Members() {
			others = append(others, before.Without(m.Name))
		}
	}
	views = append(views, past...)
	// Two edges crashed at once leave a key on the owner of a view
	// without both: a balancer that failed to dial one placed it past
	// the next. Without them (Without caches each ring on the one before),
	// the rings less another edge too: a balancer that has not heard of
	// an edge that joined with us places a key past a dead one there
	// (TestCrashAsTwoEdgesJoinSplitsNoSession).
	for _, rings := range [][]*ring.Snapshot{views, others} {
		for i, v := range rings {
			for _, name := range dead {
				v = v.Without(name)
			}
			rings[i] = v
		}
	}
	add := func(m ring.Member) {
		if m.Name == o.self || contains(skip, m.Name) || slices.ContainsFunc(out, func(x ring.Member) bool { return x.Name == m.Name }) {
			return
		}
		out = append(out, m)
	}
	for _, v := range views {
		if m, ok := v.Locate(key); ok {
			add(m)
		}
	}
	// An edge that pinned the key and left since (taken for dead while
	// busy, perhaps) is asked too, at its address in a recent view.
	if name, ok := o.m.PinnedByGone(xxhash.Sum64(key)); ok {
		for _, v := range append(views, current) {
			if m, ok := v.Member(name); ok {
				add(m)
				break
			}
		}
	}
	// Last, and only whether they host it themselves: the owners
	// without us and another edge. Their claims may name a third edge
	// that claimed the key as it joined and hosts nothing now (asked
	// directly above, it said so); taken, that answer sent the new
	// owner's joins around for the rest of the window.
	hostOnly = len(out)
	for _, v := range others {
		if m, ok := v.Locate(key); ok {
			add(m)
		}
	}
	// And, in a new edge's window, where each of those views sends the
	// key once its owner there is gone: a claim lives only on the edge
	// that recorded it, and when that edge crashed, a balancer that had
	// heard of neither the crash nor this edge placed the key past it on
	// an edge that held no claim and knew nothing of this one, which
	// started a second session (TestClaimHolderCrashSplitsNoSession).
	if len(others) > 0 {
		for _, v := range append(views, others...) {
			if m, ok := v.Locate(key); ok && o.failover(current, v, m.Name) {
				if next, ok := v.Without(m.Name).Locate(key); ok {
					add(next)
				}
			}
		}
	}
	return out, hostOnly
}

// recentViews returns the ring snapshots replaced less than settleWindow
// before now, and the current one.
func (o *ownership) recentViews(now time.Time) (past []*ring.Snapshot, current *ring.Snapshot) {
	o.mu.Lock()
	defer o.mu.Unlock()
	past = make([]*ring.Snapshot, 0, len(o.past))
	for _, p := range o.past {
		if now.Before(p.until) {
			past = append(past, p.snap)
		}
	}
	return past, o.ring.Snapshot()
}

// failoverRing is a view and the owner it is taken without.
type failoverRing struct {
	view  *ring.Snapshot
	owner string
}

// maxFailoverRings bounds the rings without a view's owner a new edge
// builds per ring version (failover). A view less one edge has an owner
// per key, so a new edge of n edges could build n² of them (20 edges:
// 380 rings, 2.2 s of CPU and 11 MiB on this machine) before its window
// ends; up to 8 edges every one fits. Beyond the bound those edges go
// unasked, as before: their keys keep the window a claim holder's crash
// leaves open (docs/DESIGN.md).
const maxFailoverRings = 64

// arrived is when this edge last came into the balancers' rings: when it
// joined, or came back from being taken for dead. Back, it is new to the
// cluster again: the others had dropped it from their rings, pinned
// nothing for it, and may have started its keys' sessions meanwhile — or
// had never heard of it at all (taken for dead before word of it spread),
// while its own view never changed: taking itself for an edge long
// settled, it asked nobody and started a second session of a key live
// elsewhere (TestEdgeBackFromTheDeadSplitsNoSession).
func (o *ownership) arrived() time.Time {
	if back := o.m.BackAt(); back.After(o.joined) {
		return back
	}
	return o.joined
}

// sweepFailover lets the failover rings go once the new edge's window
// has passed (they and their views were kept until the ring changed).
func (o *ownership) sweepFailover(now time.Time) {
	if now.Before(o.arrived().Add(settleWindow)) {
		return
	}
	o.failMu.Lock()
	o.failSnap, o.failRings = nil, nil
	o.failMu.Unlock()
}

// failover reports whether view's ring without owner may be used: built
// already for this ring version (current), or within the bound.
func (o *ownership) failover(current, view *ring.Snapshot, owner string) bool {
	k := failoverRing{view, owner}
	o.failMu.Lock()
	defer o.failMu.Unlock()
	if o.failSnap != current {
		o.failSnap, o.failRings = current, make(map[failoverRing]struct{})
	}
	if _, ok := o.failRings[k]; ok {
		return true
	}
	if len(o.failRings) >= maxFailoverRings {
		return false
	}
	o.failRings[k] = struct{}{}
	return true
}

// goneEdges says whose claims and hand-over marks a lookup disregards:
// the edges the balancer could not reach (skip, or a claim's ?gone=) and,
// with a cluster (m), those no longer in it. The zero value disregards
// none.
type goneEdges struct {
	skip []string
	m    Membership
}

// goneEdges is the goneEdges of this edge's cluster and skip.
func (o *ownership) goneEdges(skip []string) goneEdges { return goneEdges{skip: skip, m: o.m} }

// gone reports whether name is skipped or no member here.
func (g goneEdges) gone(name string) bool {
	if contains(g.skip, name) {
		return true
	}
	if g.m == nil {
		return false
	}
	_, ok := g.m.Node(name)
	return !ok
}

// left reports whether name is skipped or left the cluster lately, as
// this edge has seen it: an edge not heard of here yet has not.
func (g goneEdges) left(name string) bool {
	if contains(g.skip, name) {
		return true
	}
	if g.m == nil {
		return false
	}
	_, ok := g.m.Left(name, 2*settleWindow)
	return ok
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// claimArgs are a claim's arguments besides its key: the edges the
// claimer took for dead (argClaimGone), or the edge a draining claimer
// handed the key to (argHanded) and its address (argHandedAt).
type claimArgs struct {
	gone       []string
	handed, at string
}

// ownerAt is a third edge's address as the edge answering a claim gives
// it ("" if none).
type ownerAt struct {
	url string
	// signed: from the answer's signed body (or the cluster has no key:
	// nothing is signed) — the answering edge's word. Else from
	// HeaderOwnerURL, unsigned (an earlier release's answer): the path's,
	// as far as the claimer can tell.
	signed bool
}

// claim asks edge prev whether it hosts key; it returns the edge that does
// ("" when none: prev recorded our claim, or a.handed's) and, for a third
// edge, its address as prev knows it.
func (o *ownership) claim(ctx context.Context, prev ring.Member, key []byte, a claimArgs) (holder string, at ownerAt, err error) {
	u := prev.URL
	if n, ok := o.m.Node(prev.Name); ok && n.Meta.URL != "" {
		u = n.Meta.URL
	}
	if u == "" {
		return "", at, fmt.Errorf("edge %s has no address", prev.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	// A nonce in what is signed: no two claims share a signature, so the
	// asked edge can take each once (claimTaken).
	q := url.Values{argClaimNonce: {rand.Text()}}
	if len(a.gone) > 0 {
		q.Set(argClaimGone, strings.Join(a.gone, ","))
	}
	if a.handed != "" {
		q.Set(argHanded, a.handed)
		if a.at != "" {
			q.Set(argHandedAt, a.at)
		}
	}
	req, err := o.signed(ctx, prev.Name, u, pathClaim+"?"+q.Encode(), key)
	if err != nil {
		return "", at, err
	}
	req.Header.Set(headerClaimBy, o.self)
	// A claim may be sent twice: net/http then retries it on a fresh
	// connection when a kept-alive one turns out closed (the peer
	// restarted or crashed), instead of failing it. Should the first have
	// been taken after all, the copy gets 403 (claimTaken), and
	// claimKnown asks again with a claim of its own.
	req.Header.Set("Idempotency-Key", o.self)
	resp, err := o.http.Do(req)
	if err != nil {
		return "", at, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK, http.StatusConflict:
		// Taken only as prev signed it for this claim, once prev signs
		// them: a "claimed" made on the path would start a second
		// session of a key live there.
		body, err := o.m.Keyring().ReadAnswer(resp, o.self, prev.Name, health.PeerSigningClaimAnswer, 4<<10)
		if err != nil {
			return "", at, fmt.Errorf("%w: edge %s: %w", errClaimAnswer, prev.Name, err)
		}
		if resp.StatusCode == http.StatusOK {
			return "", at, nil
		}
		// The holder as the body names it, which the signature covers
		// (an earlier release's body names none: its X-Ringlb-Owner),
		// and its address, on a line of its own from an edge announcing
		// PeerSigningClaimOnce (an earlier release gives it unsigned).
		holder = resp.Header.Get(headerOwner)
		rest, named := strings.CutPrefix(string(body), hostedPrefix)
		if named {
			holder, rest, _ = strings.Cut(rest, "\n")
		}
		bodyAt := ""
		if u, ok := strings.CutPrefix(rest, ownerAtPrefix); ok {
			bodyAt = strings.TrimSuffix(u, "\n")
		}
		switch kr := o.m.Keyring(); {
		case !kr.Enabled():
			// Nothing is signed: the cluster's network is trusted.
			return holder, ownerAt{url: cmp.Or(bodyAt, resp.Header.Get(headerOwnerAt)), signed: true}, nil
		case kr.SignsAnswers(prev.Name, health.PeerSigningClaimOnce):
			return holder, ownerAt{url: bodyAt, signed: true}, nil
		}
		return holder, ownerAt{url: resp.Header.Get(headerOwnerAt)}, nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode == http.StatusForbidden {
		return "", at, fmt.Errorf("%w: edge %s: %s", errClaimUnknown, prev.Name, resp.Status)
	}
	return "", at, fmt.Errorf("%w: edge %s: %s", errClaimAnswer, prev.Name, resp.Status)
}

// errClaimUnknown: the edge does not know us (yet): a joining edge is known
// to the balancers before gossip has reached every peer.
var errClaimUnknown = fmt.Errorf("%w: this edge is unknown there", errClaimAnswer)

// unknownClaimerWait bounds the retries of a claim refused for not knowing
// us: gossip tells every peer of us within gossipBound.
const unknownClaimerWait = gossipBound

// claimKnown is claim, asked again while prev does not know this edge (or
// the edge a.handed names) yet — gossip tells it shortly —, for up to
// unknownClaimerWait.
func (o *ownership) claimKnown(ctx context.Context, prev ring.Member, key []byte, a claimArgs) (holder string, at ownerAt, err error) {
	deadline := time.Now().Add(unknownClaimerWait)
	for {
		holder, at, err = o.claim(ctx, prev, key, a)
		if !errors.Is(err, errClaimUnknown) || time.Now().After(deadline) {
			return holder, at, err
		}
		select {
		case <-ctx.Done():
			return "", ownerAt{}, err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// errClaimAnswer: the edge answered a claim with neither yes nor no (it does
// not know us yet, or failed): it is alive, so not taken for dead.
var errClaimAnswer = errors.New("claim not answered")
