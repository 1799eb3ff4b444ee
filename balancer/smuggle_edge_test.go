package balancer

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
	"github.com/ringlb/ringlb/sessions"
)

// recordingListener keeps every byte read from each accepted connection, so
// a test can parse what a real server was sent.
type recordingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*recordingConn
}

type recordingConn struct {
	net.Conn
	l    *recordingListener
	got  bytes.Buffer // guarded by l.mu
	done bool         // a read failed or the server closed it; guarded by l.mu
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &recordingConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns = append(l.conns, rc)
	l.mu.Unlock()
	return rc, nil
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.mu.Lock()
	c.got.Write(p[:n])
	if err != nil {
		c.done = true
	}
	c.l.mu.Unlock()
	return n, err
}

func (c *recordingConn) Close() error {
	c.l.mu.Lock()
	c.done = true
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// settled reports whether every connection has ended, and the request paths
// parsed (by net/http) from all the bytes they read.
func (l *recordingListener) settled() (bool, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var paths []string
	for _, c := range l.conns {
		if !c.done {
			return false, nil
		}
		br := bufio.NewReader(bytes.NewReader(c.got.Bytes()))
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				break
			}
			paths = append(paths, req.Method+" "+req.URL.Path)
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				break
			}
		}
	}
	return true, paths
}

// The review's attack against a real ringlb edge: a WebSocket upgrade of
// /whoami with a chunked body hiding POST /_ringlb/handoff from a peer edge of
// the cluster. Before the fix the edge parsed the body as a second request
// and installed the forged session; now the balancer refuses the upgrade
// with 400 and the edge receives nothing of it.
func TestSmuggledHandoffNeverReachesAnEdge(t *testing.T) {
	edgeCfg := configs.Edge{}
	edgeCfg.Provision()
	edge := sessions.New(edgeCfg, "edge-a", "east", slog.New(slog.DiscardHandler), nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingListener{Listener: ln}
	edgeURL := "http://" + ln.Addr().String()
	// The weakest edge there is: a keyless cluster, where an edge believes
	// a hand-off from edge-b because it comes from edge-b's address — the
	// loopback the balancer connects from. What stops the smuggling here
	// is the balancer alone.
	cl := healthtest.NewKeyless(t)
	ma := cl.Join("edge-a", health.Meta{Role: health.RoleEdge, Region: "east", URL: edgeURL, Weight: 1, State: health.StateAlive})
	cl.Join("edge-b", health.Meta{Role: health.RoleEdge, Region: "east", URL: "http://127.0.0.1:1", Weight: 1, State: health.StateAlive})
	edge.UseCluster(ma, ring.DefaultConfig())
	served := make(chan error, 1)
	go func() { served <- edge.Serve(rec) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = edge.Shutdown(ctx)
		<-served
	})
	healthtest.WaitMembers(t, ma, "edge-a sees edge-b", func(ns []health.Node) bool { return len(ns) == 2 })

	r := ring.New(ring.DefaultConfig())
	r.Update([]ring.Member{{Name: "edge-a", URL: edgeURL, Weight: 1}})
	bal, addr := serveBalancer(t, configs.Balancer{}, r)

	forged := `{"from":"edge-b","sessions":[{"key":"victim","epoch":"forged","seq":1,"history":[{"type":"msg","seq":1,"from":"mallory","data":"forged"}]}]}`
	handoff := fmt.Sprintf("POST /_ringlb/handoff HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(forged), forged)
	attack := upgradeHead + "Transfer-Encoding: chunked\r\n\r\n" + chunk("0\r\n\r\n"+handoff) + "0\r\n\r\n"
	statuses := exchange(t, addr, attack, 1, true)
	// A plain request afterwards shows the path to the edge works and what
	// a request that does reach it looks like in the recording.
	if got := exchange(t, addr, "GET /whoami HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\nConnection: close\r\n\r\n", 1, true); fmt.Sprint(got) != "[200]" {
		t.Fatalf("GET /whoami after the attack: %v", got)
	}

	var paths []string
	healthtest.WaitUntil(t, "the edge's connections end", func() bool {
		bal.edges.closeIdle()
		done, p := rec.settled()
		paths = p
		return done
	})
	sessionsLive, _ := edge.Stats()
	t.Logf("attack answered %v; the edge parsed %q and hosts %d sessions", statuses, paths, sessionsLive)
	if fmt.Sprint(statuses) != "[400]" {
		t.Errorf("upgrade with a chunked body answered %v, want [400]", statuses)
	}
	if fmt.Sprint(paths) != "[GET /whoami]" {
		t.Errorf("the edge parsed %q, want only the plain GET /whoami", paths)
	}
	if sessionsLive != 0 {
		t.Errorf("the edge hosts %d sessions: the forged hand-off was installed", sessionsLive)
	}
}

// serveBalancer starts a balancer on r at a loopback port and returns it
// with its data address.
func serveBalancer(t *testing.T, cfg configs.Balancer, r *ring.Ring) (*Balancer, string) {
	t.Helper()
	return serveBalancerLogging(t, cfg, r, slog.New(slog.DiscardHandler))
}

// serveBalancerLogging is serveBalancer logging to logger.
func serveBalancerLogging(t *testing.T, cfg configs.Balancer, r *ring.Ring, logger *slog.Logger) (*Balancer, string) {
	t.Helper()
	cfg.Provision()
	b, err := New(cfg, "bal-test", r, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- b.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
		<-served
	})
	return b, ln.Addr().String()
}
