package sessions

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"testing"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/balancer/acceptguard"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// The data port has max_connections and, for participants that did not
// come through a balancer of the cluster, a per-address share
// (edge.max_direct_per_ip). Before the share, one address that reached an
// edge directly held every connection with WebSocket participants (16 of
// max_connections 16) and a balancer's client was then refused 503.
const (
	shareMaxConns = 16
	shareDirect   = 4
)

func startShareEdge(t *testing.T, cl *healthtest.Cluster) *clusterEdge {
	t.Helper()
	cfg := configs.Edge{MaxConnections: shareMaxConns, MaxDirectPerIP: shareDirect}
	e := startClusterEdgeConfig(t, cl, "edge-a", cfg, slog.New(slog.DiscardHandler), testRing, nil)
	waitRing(t, []*clusterEdge{e}, "edge-a")
	return e
}

// startShareEdgeWithBalancer starts startShareEdge's edge in a cluster with
// a balancer, bal-1, and waits until the edge sees it.
func startShareEdgeWithBalancer(t *testing.T) (*clusterEdge, *health.Membership) {
	t.Helper()
	cl := healthtest.New(t)
	bal := cl.Join("bal-1", health.Meta{Role: health.RoleBalancer, State: health.StateAlive})
	e := startShareEdge(t, cl)
	healthtest.WaitMembers(t, e.m, "edge-a sees bal-1", func(ns []health.Node) bool { return len(ns) == 2 })
	return e, bal
}

// signedUpgrade is the header a balancer (from, a member's keyring) sends
// with an upgrade of key forwarded to the edge to.
func signedUpgrade(m *health.Membership, from, to, key string) http.Header {
	h := http.Header{}
	h.Set(configs.HeaderPeer, m.Keyring().SignUpgrade(from, to, "/ws", []byte(key)))
	return h
}

// openJoins opens up to n ringlb.v1 participants on e, each in a session of
// its own (keys prefix-0, prefix-1, ...), with header(key) (nil: none),
// until one is refused; it returns the open ones and the refusal's status
// (0: none refused).
func openJoins(t *testing.T, e *clusterEdge, prefix string, n int, header func(key string) http.Header) ([]*websocket.Conn, int) {
	t.Helper()
	var open []*websocket.Conn
	for i := range n {
		key := fmt.Sprintf("%s-%d", prefix, i)
		var h http.Header
		if header != nil {
			h = header(key)
		}
		c, resp, err := e.dialV1(t, key, "", h)
		if err != nil {
			if resp == nil {
				t.Fatalf("join %s: %v", key, err)
			}
			return open, resp.StatusCode
		}
		open = append(open, c)
	}
	return open, 0
}

// dataOpen is the connections e's data port holds open.
func dataOpen(e *clusterEdge) int {
	e.s.mu.Lock()
	defer e.s.mu.Unlock()
	n := 0
	for _, ln := range e.s.listeners {
		if g, ok := ln.(*acceptguard.Listener); ok {
			n += g.Open()
		}
	}
	return n
}

// setDataMax sets the cap of e's data listeners (edge.max_connections,
// which a reload does not change).
func setDataMax(e *clusterEdge, n int) {
	e.s.mu.Lock()
	defer e.s.mu.Unlock()
	for _, ln := range e.s.listeners {
		if g, ok := ln.(*acceptguard.Listener); ok {
			g.SetMax(n)
		}
	}
}

func closeAll(cs []*websocket.Conn) {
	for _, c := range cs {
		c.Close()
	}
}

func TestDirectClientHeldToItsShare(t *testing.T) {
	e, bal := startShareEdgeWithBalancer(t)

	// The attack: one address opens participants straight to the edge.
	direct, refusal := openJoins(t, e, "direct", shareMaxConns+2, nil)
	t.Logf("one direct address opened %d participants of max_connections %d; the next was answered %d", len(direct), shareMaxConns, refusal)
	if len(direct) != shareDirect || refusal != http.StatusTooManyRequests {
		t.Fatalf("a direct client opened %d participants, then %d; want its share %d, then 429", len(direct), refusal, shareDirect)
	}
	// What is not a member balancer's signature for this edge and this
	// key counts as direct.
	forged := map[string]http.Header{
		"signed by an edge":       signedUpgrade(e.m, "edge-a", "edge-a", "forged"),
		"signed for another key":  signedUpgrade(bal, "bal-1", "edge-a", "other"),
		"signed for another edge": signedUpgrade(bal, "bal-1", "edge-b", "forged"),
		"signed by a stranger":    signedUpgrade(bal, "bal-x", "edge-a", "forged"),
	}
	for name, h := range forged {
		c, resp, err := e.dialV1(t, "forged", "", h)
		if err == nil {
			c.Close()
			t.Fatalf("%s: joined beyond the share", name)
		}
		if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("%s: %v (response %v), want 429", name, err, resp)
		}
	}
	if got := labelledValue(t, e.s, "ringlb_edge_rejected_connections_total", "direct_per_ip"); got != float64(1+len(forged)) {
		t.Errorf("ringlb_edge_rejected_connections_total{reason=direct_per_ip} = %v, want %d", got, 1+len(forged))
	}
	// The refused connections are closed: only the participants remain.
	waitFor(t, "the refused connections closed", func() bool { return dataOpen(e) == len(direct) })

	// A balancer's clients, from the same address, join up to
	// max_connections.
	via, refusal := openJoins(t, e, "via", shareMaxConns, func(key string) http.Header { return signedUpgrade(bal, "bal-1", "edge-a", key) })
	t.Logf("through the balancer: %d participants joined, then %d", len(via), refusal)
	if len(via) != shareMaxConns-shareDirect {
		t.Fatalf("%d participants joined through the balancer (then %d), want %d", len(via), refusal, shareMaxConns-shareDirect)
	}
	closeAll(via)

	// Closing gives the share back: the same address opens its share
	// again, and nothing of it is kept.
	closeAll(direct)
	waitFor(t, "the direct participants gone", func() bool { return dataOpen(e) == 0 })
	if n := e.s.direct.Clients(); n != 0 {
		t.Errorf("%d addresses still counted with every participant closed", n)
	}
	again, refusal := openJoins(t, e, "again", shareMaxConns, nil)
	if len(again) != shareDirect || refusal != http.StatusTooManyRequests {
		t.Errorf("after closing, the direct client opened %d, then %d; want %d, then 429", len(again), refusal, shareDirect)
	}
}

// While a member balancer announces a peer_signing below
// PeerSigningUpgrade (an earlier release, which signs no upgrade), an
// unsigned participant may be its client: none is refused, but each is
// counted, so that once it is gone the address is held to its share.
func TestNoDirectShareWhileAnEarlierBalancerIsAMember(t *testing.T) {
	cl := healthtest.New(t)
	old := cl.Join("bal-old", health.Meta{Role: health.RoleBalancer, State: health.StateAlive})
	e := startShareEdge(t, cl)
	announce := func(level int) { healthtest.AnnouncePeerSigning(t, old, e.m, level) }
	announce(health.PeerSigningHead)
	held, refusal := openJoins(t, e, "old", shareDirect+2, nil)
	if len(held) != shareDirect+2 || refusal != 0 {
		t.Fatalf("with an earlier release's balancer a member: %d unsigned participants joined, then %d; want %d", len(held), refusal, shareDirect+2)
	}
	announce(health.PeerSigningUpgrade)
	if more, refusal := openJoins(t, e, "new", 1, nil); len(more) != 0 || refusal != http.StatusTooManyRequests {
		t.Fatalf("the balancer upgraded, an address holding %d unsigned participants: joined %d, then %d; want 429", len(held), len(more), refusal)
	}
	closeAll(held)
	waitFor(t, "the held participants gone", func() bool { return dataOpen(e) == 0 })
	if n := e.s.direct.Clients(); n != 0 {
		t.Errorf("%d addresses still counted with every participant closed", n)
	}
}

// Without a cluster key (the documented insecure mode) nothing tells a
// balancer's upgrade from a client's: no share applies.
func TestNoDirectShareWithoutAClusterKey(t *testing.T) {
	cl := healthtest.NewKeyless(t)
	e := startShareEdge(t, cl)
	open, refusal := openJoins(t, e, "keyless", shareDirect+2, nil)
	if len(open) != shareDirect+2 || refusal != 0 {
		t.Fatalf("keyless: %d participants joined, then %d; want %d", len(open), refusal, shareDirect+2)
	}
}

// A balancer overloaded by the wave of reconnections it forwards can miss
// its gossip probes and be taken for dead (seen: a burst of 800 joins under
// the race detector, in a test cluster's timings). Its upgrades still carry
// the cluster's signature, all from its address: before, beyond the share
// they were refused 429 until it was back. They count against nothing for
// a signature's window after it left.
func TestBalancerTakenForDeadStillForwards(t *testing.T) {
	e, bal := startShareEdgeWithBalancer(t)
	ctx, cancel := context.WithTimeout(context.Background(), healthtest.Patience)
	defer cancel()
	if err := bal.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	healthtest.WaitMembers(t, e.m, "edge-a sees bal-1 gone", func(ns []health.Node) bool { return len(ns) == 1 })

	via, refusal := openJoins(t, e, "via", 2*shareDirect, func(key string) http.Header { return signedUpgrade(bal, "bal-1", "edge-a", key) })
	t.Logf("bal-1 gone from edge-a's view: %d of its %d upgrades joined (refusal %d)", len(via), 2*shareDirect, refusal)
	if len(via) != 2*shareDirect {
		t.Errorf("bal-1 gone from edge-a's view: %d of its %d upgrades joined, then %d; want all (share %d)", len(via), 2*shareDirect, refusal, shareDirect)
	}
	closeAll(via)
}
