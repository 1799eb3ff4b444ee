package balancer

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// acceptsSeen is a listener that tells accepted each connection it accepts:
// the test's view of what reaches the edge.
type acceptsSeen struct {
	net.Listener
	accepted chan struct{}
}

func (l *acceptsSeen) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		select {
		case l.accepted <- struct{}{}:
		default:
		}
	}
	return c, err
}

// The balancer forwards plain requests to an edge through a keep-alive
// pool; between requests those connections sit idle on the edge. An edge
// in a cluster with a key counts an idle connection against its address's
// share (edge.max_direct_per_ip) unless a member signed a request on it.
// The balancer signed none of its plain requests: 4 concurrent plain
// requests filled its own share with its idle pool, and every upgrade it
// forwarded next — a new connection from the same address — was refused
// 429 at accept (0 of 8 joined), for as long as plain traffic kept the pool
// in use. It signs each now (health.Keyring.SignForwarded): 8 of 8 join.
func TestPooledPlainRequestsDoNotShutTheBalancersClientsOut(t *testing.T) {
	const maxConns, share = 16, 4
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &acceptsSeen{Listener: raw, accepted: make(chan struct{}, maxConns)}
	balAddr := edgeBehindBalancer(t, configs.Edge{MaxConnections: maxConns, MaxDirectPerIP: share}, ln)

	// share plain requests at once through the balancer, each holding its
	// connection to the edge until its body comes: the pool opens share
	// connections, idle on the edge once answered.
	clients := make([]net.Conn, share)
	for i := range clients {
		c, err := net.Dial("tcp", balAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(healthtest.Patience))
		if _, err := fmt.Fprintf(c, "POST /whoami HTTP/1.1\r\nHost: bal\r\nctstickiness: plain-%d\r\nTransfer-Encoding: chunked\r\n\r\n", i); err != nil {
			t.Fatal(err)
		}
		clients[i] = c
	}
	for i := range share {
		select {
		case <-ln.accepted:
		case <-time.After(healthtest.Patience):
			t.Fatalf("the edge accepted %d of the balancer's %d pooled connections", i, share)
		}
	}
	for _, c := range clients {
		if resp := requestOn(t, c, "1\r\nx\r\n0\r\n\r\n"); resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("a plain POST /whoami through the balancer: %d, want the edge's 405", resp.StatusCode)
		}
	}

	// Now the balancer's clients join.
	via, refusal := joinAll(t, balAddr, "via", 2*share)
	joined := len(via)
	t.Logf("after %d plain requests through the balancer, %d of %d of its clients joined (refusal %d)", share, joined, 2*share, refusal)
	if joined != 2*share {
		t.Errorf("after %d plain requests through the balancer %d of %d of its clients joined, then %d; want all", share, joined, 2*share, refusal)
	}
}

// A plain request holds its connection of the balancer's keep-alive pool
// to the edge until its body has come, and a client sends its body as
// slowly as it likes (up to request_timeout). fasthttp's HostClient opens
// at most 512 connections to one host (DefaultMaxConnsPerHost) and answers
// a request beyond them at once with ErrNoFreeConns: 512 uploads trickling
// from one address — three with max_connections_per_ip 200 — made every
// other client's plain request to that edge a 502, counted as the edge's
// failure. The pool has no cap of its own now: the client connections
// (limits.max_connections, one request in flight each) bound it.
func TestSlowUploadsCannotTakeTheEdgePool(t *testing.T) {
	const uploads = 520 // beyond fasthttp's 512
	h := newHarness(t, configs.Balancer{})
	key := h.keyOwnedBy(t, "edge-1")
	for range uploads {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		// The head and 8 KiB (what fasthttp reads before the handler) of a
		// body of 100 kB: the rest never comes while the test runs.
		if _, err := fmt.Fprintf(c, "POST /whoami HTTP/1.1\r\nHost: bal\r\nctstickiness: %s\r\nContent-Length: 100000\r\n\r\n%s", key, strings.Repeat("x", 8<<10)); err != nil {
			t.Fatal(err)
		}
	}
	// Every upload's request is on its way to the edge, as far as the
	// pool let it (512 before).
	edge := h.byName["edge-1"]
	healthtest.WaitUntil(t, "the uploads' requests reaching the edge", func() bool {
		return edge.srv.GetOpenConnectionsCount() >= 512
	})
	resp, body := h.get(t, "/whoami", http.Header{"Ctstickiness": {key}})
	errs := h.metric(t, "ringlb_balancer_backend_errors_total", map[string]string{"edge": "edge-1"})
	t.Logf("%d slow uploads held: another client's GET got %d, edge-1's errors counted %v", uploads, resp.StatusCode, errs)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("another client's GET to the edge: %d %q, want 200", resp.StatusCode, body)
	}
	if errs != 0 {
		t.Errorf("backend_errors_total{edge=edge-1} = %v, want 0: the edge never failed", errs)
	}
}
