package balancer

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
	"github.com/ringlb/ringlb/sessions"
)

// A real edge (max_connections 16, max_direct_per_ip 4) behind a real
// balancer, in a cluster with a key. Anyone reaches the edge's data port:
// before the share one address opened 16 WebSocket participants straight
// to it, and the balancer's next client was refused (503). Now the direct
// client stops at its share (429) and the balancer's clients — from the
// same loopback address, told apart by the balancer's signature on each
// upgrade — join beyond it.
func TestDirectClientCannotShutBalancerClientsOut(t *testing.T) {
	const maxConns, share = 16, 4
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	edgeAddr := ln.Addr().String()
	balAddr := edgeBehindBalancer(t, configs.Edge{MaxConnections: maxConns, MaxDirectPerIP: share}, ln)

	direct, refusal := joinAll(t, edgeAddr, "direct", maxConns+1)
	t.Logf("straight to the edge, one address opened %d participants (max_connections %d), then %d", len(direct), maxConns, refusal)
	if len(direct) != share || refusal != http.StatusTooManyRequests {
		t.Errorf("a direct client opened %d participants, then %d; want its share %d, then 429", len(direct), refusal, share)
	}
	via, refusal := joinAll(t, balAddr, "via", 2*share)
	t.Logf("through the balancer: %d participants joined (refusal %d)", len(via), refusal)
	if len(via) != 2*share {
		t.Errorf("through the balancer %d of %d participants joined, then %d", len(via), 2*share, refusal)
	}
}

// edgeBehindBalancer serves a real edge (edge-a, cfg) on ln behind a real
// balancer, both members of a cluster with a key, until the test ends; it
// returns the balancer's data address once the edge sees the balancer.
func edgeBehindBalancer(t *testing.T, cfg configs.Edge, ln net.Listener) string {
	t.Helper()
	cl := healthtest.New(t)
	cfg.Provision()
	edge := sessions.New(cfg, "edge-a", "east", slog.New(slog.DiscardHandler), nil)
	url := "http://" + ln.Addr().String()
	ma := cl.Join("edge-a", health.Meta{Role: health.RoleEdge, Region: "east", URL: url, Weight: 1, State: health.StateAlive})
	edge.UseCluster(ma, ring.DefaultConfig())
	served := make(chan error, 1)
	go func() { served <- edge.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = edge.Shutdown(ctx)
		<-served
	})
	r := ring.New(ring.DefaultConfig())
	r.Update([]ring.Member{{Name: "edge-a", URL: url, Weight: 1}})
	// The edge is on loopback: a dial outlasting dial_timeout's 2 s is the
	// machine starving the test process (a burst of 800 joins lost up to
	// 248 to "i/o timeout" beside other work, none to a refused or dropped
	// SYN), not the edge refusing anyone.
	bal, balAddr := serveBalancer(t, configs.Balancer{DialTimeout: configs.Duration(healthtest.Patience)}, r)
	bal.SetCluster(cl.Join("bal-test", health.Meta{Role: health.RoleBalancer, State: health.StateAlive}))
	healthtest.WaitMembers(t, ma, "edge-a sees the balancer", func(ns []health.Node) bool { return len(ns) == 2 })
	return balAddr
}

// joinAll opens up to n WebSocket participants at addr, each in a session
// of its own (keys prefix-0, prefix-1, ...), until one is refused: the open
// ones and the refusal's status (0: none refused).
func joinAll(t *testing.T, addr, prefix string, n int) ([]*websocket.Conn, int) {
	t.Helper()
	var open []*websocket.Conn
	d := websocket.Dialer{HandshakeTimeout: healthtest.Patience}
	for i := range n {
		c, resp, err := d.Dial("ws://"+addr+"/ws", http.Header{"Ctstickiness": {fmt.Sprintf("%s-%d", prefix, i)}})
		if err != nil {
			if resp == nil {
				t.Fatalf("dial %s: %v", addr, err)
			}
			return open, resp.StatusCode
		}
		t.Cleanup(func() { c.Close() })
		open = append(open, c)
	}
	return open, 0
}

// A balancer forwards every client's upgrade to an edge from one address,
// and an edge counts each new connection against its address's share until
// its head — the balancer's signature — has arrived. A wave of
// reconnections (an edge gone, its sessions moving) reaches an edge as a
// burst of such connections at once: before, those beyond the share
// (max_connections/16) were refused 429 with room to spare: 492 of these
// 800 joins (665 of 2000 to an edge of 6000). The edge admits them now
// while it has room, and ends them first only when it has none — those a
// request has reached already not at all: ended, a balancer's upgrade was
// closed unanswered, which the balancer takes for the edge dying (502
// here; with another edge, the session tried there).
func TestBurstOfUpgradesThroughOneBalancer(t *testing.T) {
	for _, tc := range []struct {
		name            string
		maxConns, burst int
	}{
		{"with room", 1600, 800}, // the share: 100
		{"beyond the edge's room", 400, 600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			balAddr := edgeBehindBalancer(t, configs.Edge{MaxConnections: tc.maxConns}, ln)
			joined, refused := burstOfJoins(t, balAddr, tc.burst)
			t.Logf("a burst of %d joins through one balancer to an edge of %d connections: %d joined, refused %v", tc.burst, tc.maxConns, joined, refused)
			if tc.burst <= tc.maxConns {
				if joined != tc.burst {
					t.Errorf("%d of a burst of %d joins through one balancer joined (refused: %v); want all, the edge has room", joined, tc.burst, refused)
				}
				return
			}
			// Beyond the room: refused as at the cap (503, relayed), never
			// closed unanswered (502).
			if joined == 0 || joined+refused[http.StatusServiceUnavailable] != tc.burst {
				t.Errorf("a burst of %d joins to an edge of %d: %d joined, refused %v; want the rest refused 503 by the edge", tc.burst, tc.maxConns, joined, refused)
			}
		})
	}
}

// burstOfJoins opens n WebSocket joins at addr at once, each in a session of
// its own, from addresses spread over 127.0.0.x as many users' would be:
// how many joined, and the statuses of the refusals. The joins stay open
// until the test ends.
func burstOfJoins(t *testing.T, addr string, n int) (int, map[int]int) {
	t.Helper()
	var (
		mu      sync.Mutex
		refused = map[int]int{}
		joined  int
		wg      sync.WaitGroup
	)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := websocket.Dialer{HandshakeTimeout: healthtest.Patience, NetDial: func(network, addr string) (net.Conn, error) {
				nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, byte(1+i%50), byte(2+i/50))}, Timeout: healthtest.Patience}
				return nd.Dial(network, addr)
			}}
			<-start
			c, resp, err := d.Dial("ws://"+addr+"/ws", http.Header{"Ctstickiness": {fmt.Sprintf("burst-%d", i)}})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				joined++
				t.Cleanup(func() { c.Close() })
			case resp != nil:
				refused[resp.StatusCode]++
			default:
				t.Errorf("join %d: %v", i, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	return joined, refused
}
