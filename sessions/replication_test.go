package sessions

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// startReplEdge starts a cluster edge with edge.replication mode; advertise,
// when set, is the data address it announces (a proxy in front of it).
func startReplEdge(t *testing.T, cl *healthtest.Cluster, name, mode string, advertise func(data string) string) *clusterEdge {
	t.Helper()
	cfg := configs.Edge{IdleGrace: configs.Duration(time.Minute), Replication: mode}
	s := New(provisioned(cfg), name, "east", slog.New(slog.DiscardHandler), nil)
	e := &testEdge{s: s, joined: make(chan string, 1024)}
	s.joined = func(key string) { e.joined <- key }
	dl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.data, e.admin = dl.Addr().String(), al.Addr().String()
	go s.Serve(dl)
	go s.ServeAdmin(al)
	url := "http://" + e.data
	if advertise != nil {
		url = "http://" + advertise(e.data)
	}
	m := cl.Join(name, health.Meta{Role: health.RoleEdge, Region: "east", URL: url, Weight: 1, State: health.StateAlive})
	s.UseCluster(m, testRing)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
		defer cancel()
		s.Shutdown(ctx)
	})
	return &clusterEdge{testEdge: e, m: m}
}

// replPair starts edge-a and edge-b replicating in mode and returns a key
// edge-a owns (so edge-b is its replica).
func replPair(t *testing.T, mode, prefix string) (a, b *clusterEdge, key string) {
	t.Helper()
	cl := healthtest.New(t)
	a = startReplEdge(t, cl, "edge-a", mode, nil)
	b = startReplEdge(t, cl, "edge-b", mode, nil)
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	return a, b, keyOwnedBy(prefix, "edge-a", "edge-a", "edge-b")
}

// keyOwnedBy returns the first key prefix-N that owner owns on a ring of names.
func keyOwnedBy(prefix, owner string, names ...string) string {
	for i := 0; ; i++ {
		if key := fmt.Sprintf("%s-%d", prefix, i); ownerOf(key, names...) == owner {
			return key
		}
	}
}

// copyOf returns the seq and epoch of e's replica copy of key (ok false: none).
func copyOf(e *clusterEdge, key string) (seq uint64, epoch string, term uint64, ok bool) {
	st := e.s.hub.repl.Load().store
	st.mu.Lock()
	defer st.mu.Unlock()
	c := st.copies[key]
	if c == nil {
		return 0, "", 0, false
	}
	return c.v.seq, c.v.epoch, c.v.term, true
}

// crash makes e vanish as a killed process does: its replication streams
// and client connections are cut, its listeners closed, and it leaves the
// gossip cluster — without a drain, a hand-off or a single record more.
// (A graceful gossip leave stands in for the dead declaration that follows
// a kill: peers see the same "leave".)
func (e *clusterEdge) crash(t *testing.T) {
	t.Helper()
	e.s.hub.repl.Load().close()
	e.s.mu.Lock()
	for _, ln := range e.s.listeners {
		ln.Close()
	}
	for p := range e.s.conns {
		p.raw.Close()
	}
	e.s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	if err := e.m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// The replica holds every acknowledged msg of the session, and after the
// owner's crash it serves the session under the same epoch and seq: a
// client resuming there (by query or by resume frame) gets exactly what it
// missed, and no reset.
func TestCrashedOwnersSessionResumesOnReplica(t *testing.T) {
	a, b, key := replPair(t, configs.ReplicationSync, "crash")
	p1 := a.joinV1(t, key, "", nil)
	p2 := a.joinV1(t, key, "", nil)
	p1.readType(t, "join")
	for i := range 10 {
		p1.msg(t, i)
		if ack := p1.readType(t, "ack"); ack.Seq != uint64(i+1) {
			t.Fatalf("ack %+v", ack)
		}
		// Sync: the ack went out once the replica had the msg.
		if seq, _, _, ok := copyOf(b, key); !ok || seq < uint64(i+1) {
			t.Fatalf("acked seq %d, replica has %d (copy %v)", i+1, seq, ok)
		}
		if m := p2.readType(t, "msg"); m.Seq != uint64(i+1) {
			t.Fatalf("p2 got %+v", m)
		}
	}
	epoch := p1.welcome.Epoch
	if _, e, term, _ := copyOf(b, key); e != epoch || term != 1 {
		t.Fatalf("replica copy epoch %q term %d, want %q 1", e, term, epoch)
	}

	a.crash(t)
	waitRing(t, []*clusterEdge{b}, "edge-b")
	healthtest.WaitUntil(t, "edge-b promotes the session", func() bool {
		live, _ := b.s.hub.lookup([]byte(key), "edge-b", nil)
		return live
	})
	if v := metricValue(t, b.s, "ringlb_edge_replication_promotions_total"); v != 1 {
		t.Errorf("promotions %v, want 1", v)
	}
	// p2 saw up to 10 and resumes by query; p1 saw 7 and by frame.
	r2 := b.joinV1(t, key, "resume=10&epoch="+epoch, nil)
	if r2.welcome.Epoch != epoch || r2.welcome.Seq != 10 {
		t.Fatalf("welcome on the replica %+v, want epoch %s seq 10", r2.welcome, epoch)
	}
	r1 := b.joinV1(t, key, "", nil)
	r1.send(t, map[string]any{"type": "resume", "after": 7, "epoch": epoch})
	for want := uint64(8); want <= 10; want++ {
		if m := r1.readType(t, "msg"); m.Seq != want || string(m.Data) != fmt.Sprint(want-1) {
			t.Fatalf("replay %+v, want seq %d", m, want)
		}
	}
	r1.msg(t, "after")
	if m := r2.readType(t, "msg"); m.Seq != 11 || m.Epoch != "" && m.Epoch != epoch {
		t.Fatalf("first msg after the promotion %+v, want seq 11", m)
	}
}

// Sync: no participant sees a msg, and its sender gets no ack, before the
// replica has it.
func TestSyncAckWaitsForTheReplica(t *testing.T) {
	a, b, key := replPair(t, configs.ReplicationSync, "sync")
	p1 := a.joinV1(t, key, "", nil)
	p2 := a.joinV1(t, key, "", nil)
	p1.readType(t, "join")
	for i := range 50 {
		p1.msg(t, i)
		ack := p1.readType(t, "ack")
		seq, _, _, _ := copyOf(b, key)
		m := p2.readType(t, "msg")
		if seq < ack.Seq || seq < m.Seq {
			t.Fatalf("ack %d and delivery %d before the replica had them (it has %d)", ack.Seq, m.Seq, seq)
		}
	}
}

// pausableProxy forwards TCP connections to target until paused: then it
// stops reading either side, as a stopped process does (SIGSTOP): the
// connections stay open, nothing is answered.
type pausableProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	paused bool
	resume chan struct{}
}

func startPausableProxy(t *testing.T, target string) *pausableProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pausableProxy{ln: ln, target: target, resume: make(chan struct{})}
	t.Cleanup(func() { ln.Close(); p.setPaused(false) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *pausableProxy) setPaused(paused bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused && !paused {
		close(p.resume)
		p.resume = make(chan struct{})
	}
	p.paused = paused
}

func (p *pausableProxy) gate() {
	p.mu.Lock()
	paused, resume := p.paused, p.resume
	p.mu.Unlock()
	if paused {
		<-resume
	}
}

func (p *pausableProxy) serve(c net.Conn) {
	defer c.Close()
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer u.Close()
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			p.gate()
			n, err := src.Read(buf)
			p.gate()
			if n > 0 {
				if _, err := dst.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	done := make(chan struct{}, 2)
	go func() { pipe(u, c); done <- struct{}{} }()
	go func() { pipe(c, u); done <- struct{}{} }()
	<-done
}

// A replica that stops answering (a stopped process: connections open,
// nothing read) blocks no client for more than replication_timeout: the
// owner falls back to async, says so in a metric, and returns to sync once
// the replica catches up.
func TestStoppedReplicaFallsBackToAsync(t *testing.T) {
	cl := healthtest.New(t)
	a := startReplEdge(t, cl, "edge-a", configs.ReplicationSync, nil)
	var proxy *pausableProxy
	b := startReplEdge(t, cl, "edge-b", configs.ReplicationSync, func(data string) string {
		proxy = startPausableProxy(t, data)
		return proxy.ln.Addr().String()
	})
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	key := keyOwnedBy("stopped", "edge-a", "edge-a", "edge-b")
	p1 := a.joinV1(t, key, "", nil)
	p1.msg(t, "before")
	p1.readType(t, "ack")
	if seq, _, _, _ := copyOf(b, key); seq != 1 {
		t.Fatalf("replica has seq %d before the pause, want 1", seq)
	}

	proxy.setPaused(true)
	start := time.Now()
	for i := range 20 {
		p1.msg(t, i)
		if ack := p1.readType(t, "ack"); ack.Seq != uint64(i+2) {
			t.Fatalf("ack %+v", ack)
		}
	}
	t.Logf("20 msgs acked in %s with the replica stopped (replication_timeout %s)", time.Since(start).Round(time.Millisecond), a.s.cfg.ReplicationTimeout.D())
	if v := metricValue(t, a.s, "ringlb_edge_replication_fallbacks_total"); v != 1 {
		t.Fatalf("fallbacks %v, want 1", v)
	}
	if seq, _, _, _ := copyOf(b, key); seq != 1 {
		t.Fatalf("the stopped replica applied up to %d", seq)
	}
	proxy.setPaused(false)
	healthtest.WaitUntil(t, "the replica catches up", func() bool {
		seq, _, _, _ := copyOf(b, key)
		return seq == 21
	})
	healthtest.WaitUntil(t, "the stream is sync again", func() bool {
		l := a.s.hub.repl.Load().links["edge-b"]
		l.mu.Lock()
		defer l.mu.Unlock()
		return !l.degraded
	})
	p1.msg(t, "after")
	p1.readType(t, "ack")
	if seq, _, _, _ := copyOf(b, key); seq != 22 {
		t.Fatalf("back to sync: acked 22, replica has %d", seq)
	}
}

var _ = io.EOF
var _ atomic.Int32
var _ http.Header
var _ websocket.Dialer
