package sessions

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/balancer/acceptguard"
	"github.com/ringlb/ringlb/balancer/acceptguard/acceptguardtest"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// A drain refuses new sessions but lets participants join the live ones, and
// ends by closing who is left with 1012 at drain_timeout.
func TestDrain(t *testing.T) {
	parallel(t)
	// The drain lasts long enough for the checks below on a busy machine
	// (a join must fit in it), then closes who is left.
	e := startEdge(t, configs.Edge{DrainTimeout: configs.Duration(3 * time.Second)}, nil)
	a := e.join(t, "live")
	defer a.Close()
	req, _ := http.NewRequest(http.MethodPost, "http://"+e.admin+"/api/drain", nil)
	req.Header.Set(configs.HeaderAdmin, "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /api/drain: %v %v", resp, err)
	}
	resp.Body.Close()
	select {
	case <-e.s.Draining():
	case <-time.After(testDeadline):
		t.Fatal("Draining not closed")
	}
	if resp, _ := e.get(t, e.admin, "/healthz"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/healthz while draining: %d", resp.StatusCode)
	}
	// A new session is refused before the upgrade...
	d := websocket.Dialer{HandshakeTimeout: testDeadline}
	if _, resp, err := d.Dial("ws://"+e.data+"/ws", http.Header{"Ctstickiness": {"new"}}); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("new session while draining: %v %v", resp, err)
	}
	// ...a participant of the live one is not, and sees its peers.
	b := e.join(t, "live")
	defer b.Close()
	a.WriteMessage(websocket.TextMessage, []byte("hi"))
	b.SetReadDeadline(time.Now().Add(testDeadline))
	if _, msg, err := b.ReadMessage(); err != nil || string(msg) != "hi" {
		t.Fatalf("joined the live session while draining: %q %v", msg, err)
	}
	// At drain_timeout the rest are closed with 1012.
	if code := closeCode(t, a); code != 1012 {
		t.Fatalf("close code at drain timeout: %d, want 1012", code)
	}
}

// The attack: any web page an operator has open can POST to a loopback admin
// port (a "simple" text/plain request needs no CORS preflight). It drained
// an edge before the admin rule; now the edge keeps serving. With a token,
// nothing but the token drains it.
func TestAdminDrainNeedsProof(t *testing.T) {
	token := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(token, []byte("edge-admin-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		cfg    configs.Edge
		header map[string]string
		want   int
	}{
		{"a page's cross-origin POST", configs.Edge{}, map[string]string{"Content-Type": "text/plain", "Origin": "http://evil.example"}, http.StatusForbidden},
		{"a page's form POST", configs.Edge{}, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusForbidden},
		{"no token", configs.Edge{Admin: configs.Admin{TokenFile: token}}, map[string]string{configs.HeaderAdmin: "1"}, http.StatusUnauthorized},
		{"the token", configs.Edge{Admin: configs.Admin{TokenFile: token}}, map[string]string{"Authorization": "Bearer edge-admin-token-0123456789"}, http.StatusAccepted},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := startEdge(t, tt.cfg, nil)
			req, _ := http.NewRequest(http.MethodPost, "http://"+e.admin+"/api/drain", strings.NewReader("x=1"))
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("POST /api/drain: %d, want %d", resp.StatusCode, tt.want)
			}
			if drained := e.s.draining.Load(); drained != (tt.want == http.StatusAccepted) {
				t.Errorf("draining = %v after a %d", drained, resp.StatusCode)
			}
		})
	}
}

// A draining edge hands every session (epoch, seq, history) to its new
// owner and closes its participants with 1012; they resume there with
// nothing lost, and a join sent to the draining edge gets 421.
func TestDrainHandsSessionsOn(t *testing.T) {
	parallel(t)
	a, b, key := startDrainPair(t, "drained")
	p1, p2 := a.twoTalking(t, key, 5)
	epoch := p1.welcome.Epoch

	drained := startDrain(a)
	for _, p := range []*v1Client{p1, p2} {
		if code := closeCode(t, p.Conn); code != closeServiceRestart {
			t.Fatalf("close code %d, want 1012", code)
		}
	}
	if got := dialExpect421(t, a, key); got != "edge-b" {
		t.Fatalf("draining edge sent %s to %q, want edge-b", key, got)
	}
	// p2 had seen up to seq 5: resuming on edge-b replays nothing and
	// keeps the epoch; a newcomer resuming from 0 gets all five.
	r2 := b.joinV1(t, key, "resume=5&epoch="+epoch, nil)
	if r2.welcome.Epoch != epoch || r2.welcome.Seq != 5 {
		t.Fatalf("welcome on the new edge %+v, want epoch %s seq 5", r2.welcome, epoch)
	}
	r1 := b.joinV1(t, key, "resume=0&epoch="+epoch, nil)
	for i := range 5 {
		m := r1.readType(t, "msg")
		if m.Seq != uint64(i+1) || string(m.Data) != fmt.Sprint(i) {
			t.Fatalf("replay %d: %+v", i, m)
		}
	}
	r1.msg(t, "after")
	if m := r2.readType(t, "msg"); m.Seq != 6 {
		t.Fatalf("first msg on the new edge %+v, want seq 6", m)
	}
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
	if v := metricValue(t, a.s, "ringlb_edge_sessions_handed_off_total"); v != 1 {
		t.Errorf("handed off %v sessions, want 1", v)
	}
}

// startDrainPair starts edge-a and edge-b in one cluster and returns a key
// (prefix-N) that edge-a owns.
func startDrainPair(t *testing.T, prefix string) (a, b *clusterEdge, key string) {
	t.Helper()
	cl := healthtest.New(t)
	a = startClusterEdge(t, cl, "edge-a")
	b = startClusterEdge(t, cl, "edge-b")
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	for i := 0; ; i++ {
		if key = fmt.Sprintf("%s-%d", prefix, i); ownerOf(key, "edge-a", "edge-b") == "edge-a" {
			return a, b, key
		}
	}
}

// startDrain drains e in the background; the channel gets Drain's result.
func startDrain(e *clusterEdge) <-chan error {
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
		defer cancel()
		drained <- e.s.Drain(ctx)
	}()
	return drained
}

// A drained raw-mode session carries no state: its participants reconnect
// on the new owner at once, which does not wait for a hand-off.
func TestDrainRawSessionsReconnectAtOnce(t *testing.T) {
	parallel(t)
	a, b, key := startDrainPair(t, "raw-drained")
	d := websocket.Dialer{HandshakeTimeout: testDeadline}
	h := http.Header{"Ctstickiness": {key}}
	p, _, err := d.Dial("ws://"+a.data+"/ws", h)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	<-a.joined
	drained := startDrain(a)
	if code := closeCode(t, p); code != closeServiceRestart {
		t.Fatalf("close code %d, want 1012", code)
	}
	// What ringlb edge does on a drain: announce it, so the ring leaves a.
	if err := a.m.UpdateMeta(t.Context(), func(m *health.Meta) { m.State = health.StateDraining }); err != nil {
		t.Fatal(err)
	}
	waitRing(t, []*clusterEdge{b}, "edge-b")
	// Waiting for a hand-off that never comes would end in a 503.
	again, resp, err := d.Dial("ws://"+b.data+"/ws", h)
	if err != nil {
		t.Fatalf("raw reconnect on the new owner: %v (%v)", err, resp)
	}
	defer again.Close()
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
}

// A hand-off the new owner refuses for now (503 + Retry-After: every
// hand-off slot taken — by the hand-offs of other edges of the cluster,
// or of one that announced bodies it never sends — the new owner low on
// memory, or at its max_connections) loses nothing: the draining edge
// keeps those sessions frozen and sends them again, and their participants,
// closed with 1012 once the new owner has them, resume there with every
// msg. Before, a refused hand-off was a failed one: the new owner started
// the sessions afresh and their clients got a reset, their history gone.
func TestDrainRetriesARefusedHandoff(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reason string
		// refuse makes edge b refuse hand-offs for a while; the returned
		// function (nil: none) ends it, once b has refused one.
		refuse func(t *testing.T, a, b *clusterEdge) func()
		// refused is the counter of b's refusals (nil: its hand-off
		// bodies refused for reason).
		refused func(t *testing.T, b *clusterEdge) float64
	}{
		{"slots taken", bodyBusy, func(t *testing.T, a, b *clusterEdge) func() {
			// By hand-offs whose heads an edge of the cluster signed (a
			// stranger's get no slot:
			// TestStrangerHoldsNoHandoffSlotsThroughADrain), freed once
			// their senders give up (rather than at their read deadline,
			// 9 s on).
			conns := declareSignedHandoffs(t, a, b, handoffBodies, maxHandoffBody)
			waitFor(t, "every hand-off slot taken", func() bool { return b.s.bodies.taken(time.Now()) == handoffBodies })
			return func() {
				for _, c := range conns {
					c.Close()
				}
				waitFor(t, "the hand-off slots free again", func() bool { return b.s.bodies.taken(time.Now()) == 0 })
			}
		}, nil},
		{"low on memory", acceptguard.ReasonMemory, func(t *testing.T, _, b *clusterEdge) func() {
			mem, release := acceptguardtest.Low(t)
			b.s.incoming.mem = mem
			return release
		}, nil},
		{"the new owner at its cap", "max_connections", func(t *testing.T, a, b *clusterEdge) func() {
			// Edge b holds max_connections, none of them admitted beyond
			// its client's share (those would make room): a's new
			// connection for the hand-off is answered 503 at accept.
			silent, err := net.Dial("tcp", b.data)
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the silent connection counted", func() bool { return dataOpen(b) >= 1 })
			setDataMax(b, 1)
			if o := a.s.hub.owner.Load(); o != nil {
				o.http.CloseIdleConnections() // the hand-off opens a new one
			}
			return func() {
				setDataMax(b, b.s.cfg.MaxConnections)
				silent.Close()
			}
		}, func(t *testing.T, b *clusterEdge) float64 {
			return labelledValue(t, b.s, "ringlb_edge_rejected_connections_total", "max_connections")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.reason != acceptguard.ReasonMemory {
				// Low sets the process's memory limit: that case runs
				// alone, before the others run side by side.
				parallel(t)
			}
			a, b, key := startDrainPair(t, "refused")
			p1, p2 := a.twoTalking(t, key, 0)
			// A history larger than a plain request's body, so that its
			// hand-off needs one of the hand-off slots.
			pad := strings.Repeat("x", maxPlainBody/4)
			for i := range 5 {
				p1.msg(t, pad+fmt.Sprint(i))
				p1.readType(t, "ack")
				p2.readType(t, "msg")
			}
			epoch := p1.welcome.Epoch
			end := tc.refuse(t, a, b)

			drained := startDrain(a)
			// What ringlb edge does on a drain: announce it, so the ring
			// leaves a.
			if err := a.m.UpdateMeta(t.Context(), func(m *health.Meta) { m.State = health.StateDraining }); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "edge-b refusing the hand-off", func() bool {
				if tc.refused != nil {
					return tc.refused(t, b) > 0
				}
				return labelledValue(t, b.s, "ringlb_edge_request_bodies_refused_total", tc.reason) > 0
			})
			if end != nil {
				end()
			}
			for _, p := range []*v1Client{p1, p2} {
				if code := closeCode(t, p.Conn); code != closeServiceRestart {
					t.Fatalf("close code %d, want 1012", code)
				}
			}
			waitRing(t, []*clusterEdge{b}, "edge-b")
			r := b.joinV1(t, key, "resume=0&epoch="+epoch, nil)
			if r.welcome.Epoch != epoch || r.welcome.Seq != 5 {
				t.Fatalf("resumed on the new owner after a refused hand-off: welcome epoch %s seq %d, want epoch %s seq 5 (the session's history lost)", r.welcome.Epoch, r.welcome.Seq, epoch)
			}
			for i := range 5 {
				if m := r.readType(t, "msg"); m.Seq != uint64(i+1) || string(m.Data) != `"`+pad+fmt.Sprint(i)+`"` {
					t.Fatalf("replay %d: seq %d, %d bytes of data", i, m.Seq, len(m.Data))
				}
			}
			if err := <-drained; err != nil {
				t.Fatalf("drain: %v", err)
			}
		})
	}
}

// A drain hands its sessions to each new owner at once: one that stalls
// (a hung process: it accepts the hand-off and never answers) holds
// frozen only the sessions bound for it, not those bound for the others.
// Before, the batches went one after another: a session whose new owner
// came after the stalled one in the loop stayed frozen, its participants
// connected and relaying nothing, until the stalled request timed out
// (handoffTimeout) — under load, past a check point that counted them as
// a split.
func TestDrainHandOffNotHeldByAStalledEdge(t *testing.T) {
	parallel(t)
	cl := healthtest.New(t)
	// No replication: a replica stream to the stalled edge is not what
	// this test is about.
	cfg := configs.Edge{IdleGrace: configs.Duration(time.Second), Replication: configs.ReplicationOff}
	discard := slog.New(slog.DiscardHandler)
	a := startClusterEdgeConfig(t, cl, "edge-a", cfg, discard, testRing, nil)
	b := startClusterEdgeConfig(t, cl, "edge-b", cfg, discard, testRing, nil)
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	// Keys edge-a owns with and without the stalled edge (their sessions
	// start before it joins: a new edge asks the others for a while, and
	// the stalled one would never answer), whose owner without edge-a is
	// edge-b or the stalled edge.
	keyTo := func(owner string) string {
		for i := 0; ; i++ {
			key := fmt.Sprintf("stalled-%s-%d", owner, i)
			if ownerOf(key, "edge-a", "edge-b") == "edge-a" && ownerOf(key, "edge-a", "edge-b", "edge-s") == "edge-a" &&
				ownerOf(key, "edge-b", "edge-s") == owner {
				return key
			}
		}
	}
	keyB, keyS := keyTo("edge-b"), keyTo("edge-s")
	b1, b2 := a.twoTalking(t, keyB, 3)
	s1, s2 := a.twoTalking(t, keyS, 3)
	stall := startStalledPeer(t)
	cl.Join("edge-s", health.Meta{Role: health.RoleEdge, Region: "east", URL: "http://" + stall.addr, Weight: 1, State: health.StateAlive})
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b", "edge-s")
	epoch := b1.welcome.Epoch

	drained := startDrain(a)
	for _, p := range []*v1Client{b1, b2} {
		if code := closeCode(t, p.Conn); code != closeServiceRestart {
			t.Fatalf("close code %d, want 1012", code)
		}
	}
	if n := stall.ended.Load(); n > 0 {
		t.Fatalf("the sessions bound for edge-b were let go only after edge-a gave up on the stalled edge (%d of its hand-off connections ended)", n)
	}
	waitFor(t, "edge-a's hand-off held by the stalled edge", func() bool { return stall.accepted.Load() > 0 })
	if n := stall.ended.Load(); n > 0 {
		t.Fatalf("edge-a gave up on the stalled edge (%d connections ended) before the test released it", n)
	}
	r := b.joinV1(t, keyB, "resume=3&epoch="+epoch, nil)
	if r.welcome.Epoch != epoch || r.welcome.Seq != 3 {
		t.Fatalf("resumed on edge-b while edge-s stalls: welcome epoch %s seq %d, want epoch %s seq 3", r.welcome.Epoch, r.welcome.Seq, epoch)
	}
	// The stalled edge's sessions go once its hand-off fails.
	stall.release()
	for _, p := range []*v1Client{s1, s2} {
		if code := closeCode(t, p.Conn); code != closeServiceRestart {
			t.Fatalf("close code %d, want 1012", code)
		}
	}
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
}

// stalledPeer is an edge's data port in a hung process: it accepts
// connections and reads what comes, answering nothing.
type stalledPeer struct {
	addr            string
	accepted, ended atomic.Int64
	release         func() // closes every connection and the listener
}

func startStalledPeer(t *testing.T) *stalledPeer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sp := &stalledPeer{addr: l.Addr().String()}
	var (
		mu       sync.Mutex
		conns    []net.Conn
		released bool
		wg       sync.WaitGroup
	)
	sp.release = func() {
		mu.Lock()
		defer mu.Unlock()
		if released {
			return
		}
		released = true
		l.Close()
		for _, c := range conns {
			c.Close()
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if released {
				mu.Unlock()
				c.Close()
				continue
			}
			conns = append(conns, c)
			mu.Unlock()
			sp.accepted.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(io.Discard, c)
				mu.Lock()
				byTest := released
				mu.Unlock()
				if !byTest {
					sp.ended.Add(1) // the other side gave up
				}
			}()
		}
	}()
	t.Cleanup(func() {
		sp.release()
		wg.Wait()
	})
	return sp
}

// A drain that starts with no other edge to take its sessions hands them
// on once one joins: before, a drain handed sessions on once, at its
// start, and a session left then stayed on the draining edge until its
// deadline closed it (its clients resumed with a new epoch: history lost)
// while the new edge, its owner, started the key anew on the next join.
func TestDrainHandsOnToAnEdgeThatJoinsLater(t *testing.T) {
	parallel(t)
	cl := healthtest.New(t)
	a := startClusterEdge(t, cl, "edge-a")
	waitRing(t, []*clusterEdge{a}, "edge-a")
	key := "alone-1"
	p1, p2 := a.twoTalking(t, key, 5)
	epoch := p1.welcome.Epoch
	drained := startDrain(a)
	healthtest.WaitUntil(t, "edge-a draining", func() bool { return a.s.draining.Load() })
	b := startClusterEdge(t, cl, "edge-b")
	waitRing(t, []*clusterEdge{a}, "edge-b")
	for _, p := range []*v1Client{p1, p2} {
		if code := closeCode(t, p.Conn); code != closeServiceRestart {
			t.Fatalf("close code %d, want 1012", code)
		}
	}
	r := b.joinV1(t, key, "resume=0&epoch="+epoch, nil)
	if r.welcome.Epoch != epoch || r.welcome.Seq != 5 {
		t.Fatalf("welcome on the new edge %+v, want epoch %s seq 5", r.welcome, epoch)
	}
	for i := range 5 {
		if m := r.readType(t, "msg"); m.Seq != uint64(i+1) || string(m.Data) != fmt.Sprint(i) {
			t.Fatalf("replay %d: %+v", i, m)
		}
	}
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
}
