package sessions

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// testRing is small so rebuilds are quick; edges and test agree on it.
var testRing = ring.Config{Partitions: 271, Replication: 40, Load: 1.25}

// The edge's ownership runs on the real membership.
var _ Membership = (*health.Membership)(nil)

type clusterEdge struct {
	*testEdge
	m *health.Membership
}

// startClusterEdge starts an edge named name that joins the test's gossip
// cluster cl (the first one seeds it) and checks ownership.
func startClusterEdge(t *testing.T, cl *healthtest.Cluster, name string) *clusterEdge {
	t.Helper()
	return startClusterEdgeWith(t, cl, name, slog.New(slog.DiscardHandler), testRing)
}

// startClusterEdgeWith is startClusterEdge logging to logger, on a ring of rc.
func startClusterEdgeWith(t *testing.T, cl *healthtest.Cluster, name string, logger *slog.Logger, rc ring.Config) *clusterEdge {
	t.Helper()
	return startClusterEdgeTweaked(t, cl, name, logger, rc, nil)
}

// startClusterEdgeTweaked is startClusterEdgeWith with tweak (unless nil)
// run on the server before it serves.
func startClusterEdgeTweaked(t *testing.T, cl *healthtest.Cluster, name string, logger *slog.Logger, rc ring.Config, tweak func(*Server)) *clusterEdge {
	t.Helper()
	// A short idle_grace, so an ended session (and its pin) goes soon.
	return startClusterEdgeConfig(t, cl, name, configs.Edge{IdleGrace: configs.Duration(time.Second)}, logger, rc, tweak)
}

// startClusterEdgeConfig is startClusterEdgeTweaked with the edge section
// cfg (provisioned here).
func startClusterEdgeConfig(t *testing.T, cl *healthtest.Cluster, name string, cfg configs.Edge, logger *slog.Logger, rc ring.Config, tweak func(*Server)) *clusterEdge {
	t.Helper()
	return startClusterEdgeBehind(t, cl, name, cfg, logger, rc, tweak, nil)
}

// startClusterEdgeBehind is startClusterEdgeConfig advertising in gossip
// the address front returns for its data port's (unless front is nil): a
// path between it and its peers that the test shapes.
func startClusterEdgeBehind(t *testing.T, cl *healthtest.Cluster, name string, cfg configs.Edge, logger *slog.Logger, rc ring.Config, tweak func(*Server), front func(data string) string) *clusterEdge {
	t.Helper()
	s := New(provisioned(cfg), name, "east", logger, nil)
	e := &testEdge{s: s, joined: make(chan string, 1024)}
	s.joined = func(key string) { e.joined <- key }
	if tweak != nil {
		tweak(s)
	}
	dl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.data, e.admin = dl.Addr().String(), al.Addr().String()
	advertised := e.data
	if front != nil {
		advertised = front(e.data)
	}
	m := cl.Join(name, health.Meta{Role: health.RoleEdge, Region: "east", URL: "http://" + advertised, Weight: 1, State: health.StateAlive})
	s.UseCluster(m, rc)
	// Served once it checks ownership, as ringlb's edge is (cmd/ringlb):
	// a peer that heard of it in gossip and reached it before had its
	// hand-off refused 403 (this edge checks no ownership).
	go s.Serve(dl)
	go s.ServeAdmin(al)
	t.Cleanup(func() { // before the member leaves (cleanups run last first)
		ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
		defer cancel()
		s.Shutdown(ctx)
	})
	return &clusterEdge{testEdge: e, m: m}
}

// waitRing waits until every edge's own ring has exactly names.
func waitRing(t testing.TB, edges []*clusterEdge, names ...string) {
	t.Helper()
	for _, e := range edges {
		healthtest.WaitUntil(t, fmt.Sprintf("%s's ring is %v", e.s.name, names), func() bool {
			ms := e.s.hub.owner.Load().ring.Snapshot().Members()
			got := make([]string, len(ms))
			for i, m := range ms {
				got[i] = m.Name
			}
			return fmt.Sprint(got) == fmt.Sprint(names)
		})
	}
}

// ownerOf computes key's owner on a ring of names, as every node does.
func ownerOf(key string, names ...string) string { return ownerOn(testRing, key, names...) }

// ownerOn is key's owner on a ring of cfg of the edges names.
func ownerOn(cfg ring.Config, key string, names ...string) string {
	var ms []ring.Member
	for _, n := range names {
		ms = append(ms, ring.Member{Name: n, Weight: 1})
	}
	m, _ := ring.New(cfg).Update(ms).Locate([]byte(key))
	return m.Name
}

// dialExpect421 dials e for key and returns the X-Ringlb-Owner of its 421.
func dialExpect421(t *testing.T, e *clusterEdge, key string) string {
	t.Helper()
	c, resp, err := e.dialV1(t, key, "", nil)
	if err == nil {
		c.Close()
		t.Fatalf("%s accepted a join for %s, want 421", e.s.name, key)
	}
	if resp == nil || resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("%s answered %v for %s, want 421", e.s.name, resp, key)
	}
	return resp.Header.Get(headerOwner)
}

func TestOwnershipRedirectsToTheRingOwner(t *testing.T) {
	parallel(t)
	cl := healthtest.New(t)
	a := startClusterEdge(t, cl, "edge-a")
	b := startClusterEdge(t, cl, "edge-b")
	edges := []*clusterEdge{a, b}
	waitRing(t, edges, "edge-a", "edge-b")
	// Past the start-up window, in which a new edge asks the others.
	for i := range 40 {
		key := fmt.Sprintf("owned-%d", i)
		owner, other := a, b
		if ownerOf(key, "edge-a", "edge-b") == "edge-b" {
			owner, other = b, a
		}
		if got := dialExpect421(t, other, key); got != owner.s.name {
			t.Fatalf("key %s: 421 names %q, want %s", key, got, owner.s.name)
		}
		c := owner.joinV1(t, key, "", nil)
		if c.welcome.Edge != owner.s.name {
			t.Fatalf("welcome from %s", c.welcome.Edge)
		}
	}
}

// A new edge takes over part of the ring while sessions are live: each of
// those sessions stays on its old edge, and a participant sent to the new
// owner is redirected there (by the claim check at first, by gossip pins
// after), so none splits and no one is disconnected.
func TestScaleOutKeepsLiveSessionsWhole(t *testing.T) {
	parallel(t)
	cl := healthtest.New(t)
	a := startClusterEdge(t, cl, "edge-a")
	b := startClusterEdge(t, cl, "edge-b")
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	byName := map[string]*clusterEdge{"edge-a": a, "edge-b": b}
	host := map[string]*clusterEdge{}
	conns := map[string]*v1Client{}
	for i := range 60 {
		key := fmt.Sprintf("live-%d", i)
		e := byName[ownerOf(key, "edge-a", "edge-b")]
		host[key] = e
		conns[key] = e.joinV1(t, key, "", nil)
	}

	c := startClusterEdge(t, cl, "edge-c")
	all := []*clusterEdge{a, b, c}
	waitRing(t, all, "edge-a", "edge-b", "edge-c")
	var moved []string
	for key := range host {
		if ownerOf(key, "edge-a", "edge-b", "edge-c") == "edge-c" {
			moved = append(moved, key)
		}
	}
	if len(moved) == 0 {
		t.Fatal("no session changed owner; pick other keys")
	}
	// At once, before pins can have spread, the new owner already sends
	// every one of them to its host: it asks the edges that owned the key
	// before it joined.
	for _, key := range moved {
		if got := dialExpect421(t, c, key); got != host[key].s.name {
			t.Fatalf("right after joining, the new owner sent %s to %q, want its host %s", key, got, host[key].s.name)
		}
	}
	// The old hosts pin what they no longer own, and the pins reach c.
	for _, key := range moved {
		healthtest.WaitUntil(t, "the pin of "+key+" reaches edge-c", func() bool {
			n, ok := c.m.PinnedTo(xxhash.Sum64String(key))
			return ok && n.Name == host[key].s.name
		})
	}
	joiners := map[string]*v1Client{}
	for _, key := range moved {
		if got := dialExpect421(t, c, key); got != host[key].s.name {
			t.Fatalf("new owner sent %s to %q, want its host %s", key, got, host[key].s.name)
		}
		// The new participant joins the live session on its old edge.
		p := host[key].joinV1(t, key, "", nil)
		joiners[key] = p
		if len(p.welcome.Participants) != 2 {
			t.Fatalf("%s: joined a session of %d", key, len(p.welcome.Participants))
		}
		p.msg(t, "hello")
		if m := conns[key].readType(t, "msg"); string(m.Data) != `"hello"` {
			t.Fatalf("old participant got %+v", m)
		}
	}
	t.Logf("%d of %d live sessions changed owner; each stayed whole on its edge", len(moved), len(host))

	// The session ends (after idle_grace): its pin is withdrawn, and the
	// key is the new owner's from then on.
	key := moved[0]
	conns[key].leave(t)
	joiners[key].leave(t)
	healthtest.WaitUntil(t, "the ended session's pin withdrawn", func() bool {
		_, pinned := c.m.PinnedTo(xxhash.Sum64String(key))
		live, _ := host[key].s.hub.lookup([]byte(key), host[key].s.name, goneEdges{})
		return !pinned && !live
	})
	c.joinV1(t, key, "", nil)
}

// Right after a ring change, before any pin could spread, the new owner
// asks the previous one: a session live there is joined there, and a key
// the new owner claimed is refused by the previous owner (421 to the new
// one), whatever its own view says.
func TestClaimsCloseTheGossipWindow(t *testing.T) {
	cl := healthtest.New(t)
	a := startClusterEdge(t, cl, "edge-a")
	b := startClusterEdge(t, cl, "edge-b")
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	var live, fresh string
	for i := 0; live == "" || fresh == ""; i++ {
		key := fmt.Sprintf("claim-%d", i)
		if ownerOf(key, "edge-a") == "edge-a" && ownerOf(key, "edge-a", "edge-b") == "edge-b" {
			if live == "" {
				live = key
			} else {
				fresh = key
			}
		}
	}
	// edge-b's ring just changed (a start counts: balancers may not know
	// it yet), so it asks edge-a before starting any session.
	a.s.hub.install(handoffSession{Key: live, Epoch: "e", Seq: 0}, "", goneEdges{}) // live on edge-a, as if from before the change
	if got := dialExpect421(t, b, live); got != "edge-a" {
		t.Fatalf("new owner sent a session live on edge-a to %q", got)
	}
	// b claims fresh; a, even with a view where it owns fresh, refuses it.
	b.joinV1(t, fresh, "", nil)
	if got, _ := a.s.hub.lookup([]byte(fresh), "edge-a", goneEdges{}); got {
		t.Fatal("claimed key looks live on edge-a")
	}
	if _, owner := a.s.hub.lookup([]byte(fresh), "edge-a", goneEdges{}); owner != "edge-b" {
		t.Fatalf("edge-a sends a key edge-b claimed to %q", owner)
	}
}

// A previous owner that cannot answer a claim clearly is not taken for
// dead: an error answer refuses the join (503, Retry-After) so the client
// retries; "I do not know you" (gossip has not told it of the new edge yet)
// is asked again until it does; only an address where nothing listens lets
// the new edge take the session. The previous owner here is a gossip member
// whose relay is an HTTP server answering claims as a busy or lagging edge
// would: neither state can be produced on demand in a real edge.
func TestUnclearClaimRefusesTheJoin(t *testing.T) {
	var (
		answer atomic.Int32 // HTTP status of the next claim answers
		forbid atomic.Int32 // answer 403 to this many claims first
		claims atomic.Int32
	)
	answer.Store(http.StatusInternalServerError)
	var old atomic.Pointer[health.Membership] // its gossip member, whose key signs its "claimed"
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != pathClaim || r.Header.Get(headerClaimBy) != "edge-new" {
			http.Error(w, "unexpected request", http.StatusBadRequest)
			return
		}
		claims.Add(1)
		if forbid.Add(-1) >= 0 {
			http.Error(w, "forbidden: not an edge of this cluster", http.StatusForbidden)
			return
		}
		if status := int(answer.Load()); status != http.StatusOK {
			http.Error(w, http.StatusText(status), status)
			return
		}
		w.Header().Set(configs.HeaderPeerAnswer, old.Load().Keyring().SignAnswer("edge-old", "edge-new", r.Header.Get(configs.HeaderPeer), http.StatusOK, []byte(claimedBody)))
		_, _ = io.WriteString(w, claimedBody)
	}))
	defer peer.Close()
	cl := healthtest.New(t)
	old.Store(cl.Join("edge-old", health.Meta{Role: health.RoleEdge, Region: "east", URL: peer.URL, Weight: 1, State: health.StateAlive}))
	c := startClusterEdge(t, cl, "edge-new")
	waitRing(t, []*clusterEdge{c}, "edge-new", "edge-old")
	var keys []string
	for i := 0; len(keys) < 3; i++ {
		if key := fmt.Sprintf("unclear-%d", i); ownerOf(key, "edge-new", "edge-old") == "edge-new" {
			keys = append(keys, key)
		}
	}

	// Busy: 500 to the claim → 503 to the client, nothing started.
	conn, resp, err := c.dialV1(t, keys[0], "", nil)
	if err == nil {
		conn.Close()
		t.Fatal("joined although the previous owner could not say whether it hosts the session")
	}
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("answer %v, want 503 with Retry-After", resp)
	}
	if n, _ := c.s.Stats(); n != 0 {
		t.Fatalf("%d sessions started, want none", n)
	}

	// Not known there yet: asked again until it answers.
	answer.Store(http.StatusOK)
	forbid.Store(3)
	before := claims.Load()
	c.joinV1(t, keys[1], "", nil)
	if n := claims.Load() - before; n != 4 {
		t.Errorf("%d claims, want 4 (three refused for not knowing us, then one answered)", n)
	}

	// Nothing listens any more: the edge is taken for dead at once.
	peer.Close()
	c.joinV1(t, keys[2], "", nil)
}

// A session frozen by a drain for an edge that has died since belongs to
// nobody: joins and claims are no longer sent to the dead edge.
func TestMoveToAGoneEdgeIsDisregarded(t *testing.T) {
	s := New(provisioned(configs.Edge{}), "edge-a", "east", slog.New(slog.DiscardHandler), nil)
	// Shut down at the end: New counts its histories in the process's
	// memory for as long as it is not.
	t.Cleanup(func() {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	sh := s.hub.shardOf("k")
	sh.mu.Lock()
	sh.sessions["k"] = &session{key: "k", movedTo: "edge-b"}
	sh.mu.Unlock()
	alive, bGone := goneEdges{}, goneEdges{skip: []string{"edge-b"}}
	if live, to := s.hub.lookup([]byte("k"), "edge-a", alive); live || to != "edge-b" {
		t.Fatalf("moved to a live edge: live %v, redirect %q; want the redirect to edge-b", live, to)
	}
	if live, to := s.hub.lookup([]byte("k"), "edge-a", bGone); live || to != "" {
		t.Fatalf("moved to a dead edge: live %v, redirect %q; want neither", live, to)
	}
	if holder := s.hub.claim([]byte("k"), "edge-a", "edge-c", time.Minute, bGone); holder != "" {
		t.Fatalf("claim answered with %q, want it recorded for edge-c", holder)
	}
	if _, to := s.hub.lookup([]byte("k"), "edge-a", bGone); to != "edge-c" {
		t.Fatalf("after edge-c's claim the key goes to %q, want edge-c", to)
	}
}
