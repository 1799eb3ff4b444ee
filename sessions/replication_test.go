package sessions

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// startReplEdge starts a cluster edge with edge.replication mode; advertise,
// when set, is the data address it announces (a proxy in front of it).
func startReplEdge(t testing.TB, cl *healthtest.Cluster, name, mode string, advertise func(data string) string) *clusterEdge {
	t.Helper()
	return startReplEdgeWith(t, cl, name, configs.Edge{IdleGrace: configs.Duration(time.Minute), Replication: mode}, advertise)
}

// startReplEdgeWith is startReplEdge with the edge config cfg.
func startReplEdgeWith(t testing.TB, cl *healthtest.Cluster, name string, cfg configs.Edge, advertise func(data string) string) *clusterEdge {
	t.Helper()
	return startReplEdgeViewing(t, cl, name, cfg, advertise, nil)
}

// startReplEdgeViewing is startReplEdgeWith whose edge sees its gossip
// member through view (nil: as it is).
func startReplEdgeViewing(t testing.TB, cl *healthtest.Cluster, name string, cfg configs.Edge, advertise func(data string) string, view func(*health.Membership) Membership) *clusterEdge {
	t.Helper()
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
	url := "http://" + e.data
	if advertise != nil {
		url = "http://" + advertise(e.data)
	}
	m := cl.Join(name, health.Meta{Role: health.RoleEdge, Region: "east", URL: url, Weight: 1, State: health.StateAlive})
	if view != nil {
		s.UseCluster(view(m), testRing)
	} else {
		s.UseCluster(m, testRing)
	}
	go s.Serve(dl) // once it checks ownership (startClusterEdgeBehind)
	go s.ServeAdmin(al)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
		defer cancel()
		s.Shutdown(ctx)
	})
	return &clusterEdge{testEdge: e, m: m}
}

// replPair starts edge-a and edge-b replicating in mode and returns a key
// edge-a owns (so edge-b is its replica).
func replPair(t testing.TB, mode, prefix string) (a, b *clusterEdge, key string) {
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

// waitCopy waits until e holds a copy of key's session at seq.
func waitCopy(t testing.TB, e *clusterEdge, key string, seq uint64) {
	t.Helper()
	healthtest.WaitUntil(t, fmt.Sprintf("%s holds %s's copy at seq %d", e.s.name, key, seq), func() bool {
		got, _, _, ok := copyOf(e, key)
		return ok && got == seq
	})
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
	parallel(t)
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
		live, _ := b.s.hub.lookup([]byte(key), "edge-b", goneEdges{})
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
	// Past the reserve for what the dead owner may have sequenced beyond
	// the copy (reserveLost).
	want := 10 + promotionSkip(configs.DefaultHistoryMessages) + 1
	if m := r2.readType(t, "msg"); m.Seq != want || m.Epoch != "" && m.Epoch != epoch {
		t.Fatalf("first msg after the promotion %+v, want seq %d", m, want)
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

// A session's first msgs, sent before its snapshot went out, wait for the
// snapshot's ack — not for replication_timeout: no stream falls back to
// async in a healthy cluster.
func TestNewSessionsDoNotFallBack(t *testing.T) {
	a, b, _ := replPair(t, configs.ReplicationSync, "fresh")
	var clients []*v1Client
	for i := range 30 {
		key := keyOwnedBy(fmt.Sprintf("fresh-%d", i), "edge-a", "edge-a", "edge-b")
		p := a.joinV1(t, key, "", nil)
		p.msg(t, i) // at once: its session's snapshot may not be out yet
		clients = append(clients, p)
	}
	for _, p := range clients {
		p.readType(t, "ack")
	}
	l := a.s.hub.repl.Load().links["edge-b"]
	healthtest.WaitUntil(t, "nothing waits without a record on the stream", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.orphans) == 0 && len(l.inflight) == 0
	})
	if v := metricValue(t, a.s, "ringlb_edge_replication_fallbacks_total"); v != 0 {
		t.Errorf("fallbacks %v in a healthy cluster, want 0", v)
	}
	if n := b.s.hub.repl.Load().store.count(); n != 30 {
		t.Errorf("edge-b holds %d copies, want 30", n)
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
	conns  map[net.Conn]struct{} // both ends of every connection open
}

func startPausableProxy(t *testing.T, target string) *pausableProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pausableProxy{ln: ln, target: target, resume: make(chan struct{}), conns: make(map[net.Conn]struct{})}
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

// cut closes every connection open through p, as a broken path does.
func (p *pausableProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func (p *pausableProxy) serve(c net.Conn) {
	defer c.Close()
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer u.Close()
	p.mu.Lock()
	p.conns[c], p.conns[u] = struct{}{}, struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		delete(p.conns, u)
		p.mu.Unlock()
	}()
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
	parallel(t)
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
	waitCopy(t, b, key, 21) // the replica catches up
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

// A replica is slow only when it is silent. An owner that resumes from a
// pause (SIGSTOP, a stall of its machine) past replication_timeout, or
// that is behind its own backlog, finds msgs that have waited longer — and
// its replica's answers to them not read yet. Those may be fences: gossip
// took the paused owner for dead and the replica promoted its sessions.
// Falling back to async before reading them showed the waiting msgs, and
// acknowledged them, on a session that was no longer this edge's: the new
// holder never had them (TestReplicationPartition lost dozens so, under
// load). The owner falls back only once it has read and handled what the
// replica sent.
func TestNoFallbackBeforeTheReplicasAnswersAreRead(t *testing.T) {
	a, b, key := replPair(t, configs.ReplicationSync, "unread")
	// other: a session of edge-a's in another shard, taken over first.
	// edge-a's readers of edge-b's streams stop at its fence while its
	// shard is locked here, so what edge-b sends after it waits unread.
	other := keyOwnedBy("unread-other", "edge-a", "edge-a", "edge-b")
	for i := 0; a.s.hub.shardOf(other) == a.s.hub.shardOf(key); i++ {
		other = keyOwnedBy(fmt.Sprintf("unread-other%d", i), "edge-a", "edge-a", "edge-b")
	}
	p0 := a.joinV1(t, other, "", nil)
	p0.msg(t, "before")
	p0.readType(t, "ack")
	p := a.joinV1(t, key, "", nil)
	p.msg(t, "before")
	p.readType(t, "ack")

	sh := a.s.hub.shardOf(other)
	sh.mu.Lock()
	var unlock sync.Once
	release := func() { unlock.Do(sh.mu.Unlock) }
	t.Cleanup(release)

	rb := b.s.hub.repl.Load()
	stream := inboundFrom(rb, "edge-a")
	b.joinSkipping(t, other, "resume=1&epoch="+p0.welcome.Epoch, "edge-a")
	// Its fence is told first on both of edge-b's streams with edge-a.
	waitFor(t, "the fence of the first takeover pushed", func() bool { return stream.pushed.Load() == 1 })
	waitFor(t, "the fence of the first takeover told on edge-b's stream to edge-a", func() bool {
		rb.mu.Lock()
		l := rb.links["edge-a"]
		rb.mu.Unlock()
		if l == nil {
			return false
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.connected && len(l.fencesDue) == 0
	})

	// edge-b takes key over too; edge-a, its answers unread, still
	// sequences a msg of key, which waits for edge-b (sync).
	b.joinSkipping(t, key, "resume=1&epoch="+p.welcome.Epoch, "edge-a")
	waitFor(t, "the fence of the second takeover pushed", func() bool { return stream.pushed.Load() == 2 })
	p.msg(t, "while superseded")
	waiting := func() (pending int, committed uint64) {
		sh := a.s.hub.shardOf(key)
		sh.mu.Lock()
		defer sh.mu.Unlock()
		s := sh.sessions[key]
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.v1.pending), s.v1.committed
	}
	waitFor(t, "the msg waiting for edge-b", func() bool {
		n, _ := waiting()
		return n == 1
	})
	// edge-a's watch wakes long past replication_timeout (a pause).
	ra := a.s.hub.repl.Load()
	ra.mu.Lock()
	l := ra.links["edge-b"]
	ra.mu.Unlock()
	l.checkTimeout(time.Now().Add(time.Hour), time.Time{})
	if n, committed := waiting(); n != 1 || committed != 1 {
		t.Fatalf("edge-a showed the msg of a session edge-b had taken over, which edge-b never got (%d waiting, seq %d shown), its answers unread", n, committed)
	}

	release()
	got, code := readUntilClose(p)
	if code != closeServiceRestart {
		t.Fatalf("the superseded session's participant ended with %d after %q, want 1012", code, got)
	}
	for _, f := range got {
		if strings.Contains(f, `"type":"ack"`) {
			t.Fatalf("edge-a acknowledged a msg of a session edge-b had taken over, which edge-b never got: %q (then 1012)", got)
		}
	}
	if v := metricValue(t, a.s, "ringlb_edge_replication_fallbacks_total"); v != 0 {
		t.Errorf("edge-a fell back to async %v times; its replica answered everything", v)
	}
}

// A paused owner resumes with its stream's reader still in the read it was
// in, and the replica's answers in the kernel: that replica is not silent.
// Nor is one whose bytes the reader has taken and is handling. It is once
// the reader waits in a read with everything read.
func TestStreamConnSilentOnlyWithEverythingRead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	replica := <-accepted
	defer replica.Close()
	sc := &streamConn{Conn: c}
	if _, ok := bytesReceived(c); !ok {
		t.Skip("the kernel does not say what a connection received here")
	}

	if _, err := replica.Write([]byte("answers")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the answers in the kernel", func() bool {
		n, _ := bytesReceived(c)
		return n == 7
	})
	sc.reading.Store(true) // a reader blocked in a read before they came, not run since
	if sc.silent() {
		t.Fatal("silent with the replica's answers unread")
	}
	sc.reading.Store(false)

	buf := make([]byte, 7)
	if _, err := io.ReadFull(sc, buf); err != nil {
		t.Fatal(err)
	}
	if sc.silent() {
		t.Fatal("silent while the reader handles what it read")
	}
	read := make(chan error, 1)
	go func() {
		_, err := sc.Read(buf)
		read <- err
	}()
	waitFor(t, "the reader in a read", sc.reading.Load)
	if !sc.silent() {
		t.Fatal("not silent with everything read and the reader waiting")
	}
	if _, err := replica.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
}

// joinSkipping joins key on e as a balancer does after failing to reach
// the edges in skip (X-Ringlb-Skip, signed), with query appended to /ws.
func (e *clusterEdge) joinSkipping(t *testing.T, key, query string, skip ...string) *v1Client {
	t.Helper()
	return e.joinV1(t, key, query, e.skipHeader(key, query, skip...))
}

// skipHeader is what a balancer of the cluster sends e with a join of key
// (query appended to /ws) after failing to reach the edges in skip: the
// list, signed with the cluster's key.
func (e *clusterEdge) skipHeader(key, query string, skip ...string) http.Header {
	uri := "/ws"
	if query != "" {
		uri += "?" + query
	}
	list := strings.Join(skip, ",")
	h := http.Header{}
	h.Set(headerSkip, list)
	h.Set(configs.HeaderPeer, e.m.Keyring().Sign("balancer-test", e.s.name, http.MethodGet, uri, health.SkipMessage(list, []byte(key))))
	return h
}

// A paused or cut-off owner is not dead: when a balancer cannot reach it,
// the replica takes the session over (same epoch and seq, a higher term)
// and the old owner, still serving, is fenced: it shows nothing more (sync:
// nothing the replica did not take), closes its participants with 1012,
// and sends later joins to the new owner. The participants resume there
// and resend what was not acknowledged: nothing lost, nothing split.
func TestStaleOwnerIsFenced(t *testing.T) {
	a, b, key := replPair(t, configs.ReplicationSync, "fence")
	p1, p2 := a.twoTalking(t, key, 5)
	epoch := p1.welcome.Epoch

	// A balancer could not reach edge-a: edge-b takes the session over.
	g := b.joinSkipping(t, key, "resume=5&epoch="+epoch, "edge-a")
	if g.welcome.Epoch != epoch || g.welcome.Seq != 5 {
		t.Fatalf("welcome on the replica %+v, want epoch %s seq 5", g.welcome, epoch)
	}
	// edge-a still serves p1, whose msg cannot be shown: the replica refuses
	// records of the old term, and edge-b fences edge-a on its own stream.
	p1.msg(t, "late")
	for _, p := range []*v1Client{p1, p2} {
		for {
			_, data, err := p.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != closeServiceRestart {
					t.Fatalf("the stale owner's participant ended with %v, want 1012", err)
				}
				break
			}
			if strings.Contains(string(data), `"late"`) || strings.Contains(string(data), `"ack"`) {
				t.Fatalf("the stale owner showed %s after the takeover", data)
			}
		}
	}
	if v := metricValue(t, a.s, "ringlb_edge_replication_fenced_total"); v != 1 {
		t.Errorf("fenced %v, want 1", v)
	}
	if got := dialExpect421(t, a, key); got != "edge-b" {
		t.Fatalf("the fenced owner sends joins to %q, want edge-b", got)
	}
	// p1 resumes on edge-b and resends its unacknowledged msg.
	r1 := b.joinV1(t, key, "resume=5&epoch="+epoch, nil)
	r1.msg(t, "late")
	late := 5 + promotionSkip(configs.DefaultHistoryMessages) + 1 // past reserveLost's reserve
	if ack := r1.readType(t, "ack"); ack.Seq != late {
		t.Fatalf("resent msg acked %d, want %d", ack.Seq, late)
	}
	if m := g.readType(t, "msg"); m.Seq != late || string(m.Data) != `"late"` {
		t.Fatalf("after the takeover %+v, want seq 6 late", m)
	}
}

// Records of an older term than what an edge holds are answered with a
// fence naming the holder, whether it holds the session live (it took it
// over) or a copy of a newer owner's.
func TestOlderTermsAreFenced(t *testing.T) {
	_, b, key := replPair(t, configs.ReplicationSync, "older")
	r := b.s.hub.repl.Load()
	var rec []byte
	rec = appendSnapshot(rec, 3, 0, "E", key)
	answers, err := r.apply("edge-a", rec, nil)
	if err != nil || len(answers) != 0 {
		t.Fatalf("a snapshot of term 3: answers %q, %v", answers, err)
	}
	for _, old := range [][]byte{appendSnapshot(nil, 2, 0, "E", key), appendMsg(nil, 2, 1, key, []byte(`{}`))} {
		answers, err := r.apply("edge-c", old, nil)
		var got record
		rd := reader{b: answers}
		if err != nil || !rd.next(&got) || got.kind != recFence || got.term != 3 || string(got.epoch) != "edge-a" || string(got.key) != key {
			t.Fatalf("term 2 record: answered %+v (%v), want a fence of term 3 naming edge-a", got, err)
		}
	}
	if !r.promote(key, "edge-a", "test", nil) {
		t.Fatal("not promoted")
	}
	answers, _ = r.apply("edge-a", appendMsg(nil, 3, 1, key, []byte(`{}`)), nil)
	var got record
	rd := reader{b: answers}
	if !rd.next(&got) || got.kind != recFence || got.term != 4 || string(got.epoch) != "edge-b" {
		t.Fatalf("a record of the promoted session's old term: answered %+v, want a fence of term 4 naming edge-b", got)
	}
}

// After a promotion the new owner replicates the session onward: a second
// crash is survived too, epoch and seq unchanged, the term counting owners.
func TestPromotedSessionReplicatesOnward(t *testing.T) {
	parallel(t)
	cl := healthtest.New(t)
	names := []string{"edge-a", "edge-b", "edge-c"}
	edges := map[string]*clusterEdge{}
	var all []*clusterEdge
	for _, n := range names {
		edges[n] = startReplEdge(t, cl, n, configs.ReplicationSync, nil)
		all = append(all, edges[n])
	}
	waitRing(t, all, names...)
	key := keyOwnedBy("onward", "edge-a", names...)
	first := ownerOf(key, "edge-b", "edge-c") // edge-a's replica: the owner without it
	second := "edge-b"
	if first == "edge-b" {
		second = "edge-c"
	}
	p := edges["edge-a"].joinV1(t, key, "", nil)
	for i := range 3 {
		p.msg(t, i)
		p.readType(t, "ack")
	}
	epoch := p.welcome.Epoch
	edges["edge-a"].crash(t)
	waitRing(t, []*clusterEdge{edges[first], edges[second]}, first, second)
	healthtest.WaitUntil(t, second+" holds the promoted session's copy", func() bool {
		_, _, term, ok := copyOf(edges[second], key)
		return ok && term == 2
	})
	q := edges[first].joinV1(t, key, "resume=3&epoch="+epoch, nil)
	if q.welcome.Epoch != epoch || q.welcome.Seq != 3 {
		t.Fatalf("welcome after the first crash %+v", q.welcome)
	}
	q.msg(t, "x")
	q.readType(t, "ack")
	edges[first].crash(t)
	waitRing(t, []*clusterEdge{edges[second]}, second)
	healthtest.WaitUntil(t, second+" promotes", func() bool {
		live, _ := edges[second].s.hub.lookup([]byte(key), second, goneEdges{})
		return live
	})
	// x came past the first promotion's reserve (reserveLost); the reserve
	// is holes, skipped by the replay.
	x := 3 + promotionSkip(configs.DefaultHistoryMessages) + 1
	r := edges[second].joinV1(t, key, "resume=0&epoch="+epoch, nil)
	if r.welcome.Epoch != epoch || r.welcome.Seq != x {
		t.Fatalf("welcome after the second crash %+v, want epoch %s seq %d", r.welcome, epoch, x)
	}
	for _, want := range []uint64{1, 2, 3, x} {
		if m := r.readType(t, "msg"); m.Seq != want {
			t.Fatalf("replay %+v, want seq %d", m, want)
		}
	}
}

// When the ring changes, a session's replica moves with it: the new
// replica gets the session whole, the old one drops its copy.
func TestReplicaMovesWithTheRing(t *testing.T) {
	parallel(t)
	cl := healthtest.New(t)
	a := startReplEdge(t, cl, "edge-a", configs.ReplicationSync, nil)
	b := startReplEdge(t, cl, "edge-b", configs.ReplicationSync, nil)
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	// A key edge-a owns with either ring, whose replica becomes edge-c.
	var key string
	for i := 0; key == ""; i++ {
		k := fmt.Sprintf("move-%d", i)
		if ownerOf(k, "edge-a", "edge-b") == "edge-a" && ownerOf(k, "edge-a", "edge-b", "edge-c") == "edge-a" && ownerOf(k, "edge-b", "edge-c") == "edge-c" {
			key = k
		}
	}
	p := a.joinV1(t, key, "", nil)
	for i := range 3 {
		p.msg(t, i)
		p.readType(t, "ack")
	}
	if seq, _, _, ok := copyOf(b, key); !ok || seq != 3 {
		t.Fatalf("edge-b's copy: seq %d (held %v)", seq, ok)
	}
	c := startReplEdge(t, cl, "edge-c", configs.ReplicationSync, nil)
	waitRing(t, []*clusterEdge{a, b, c}, "edge-a", "edge-b", "edge-c")
	healthtest.WaitUntil(t, "edge-c holds the copy and edge-b dropped it", func() bool {
		seq, _, _, onC := copyOf(c, key)
		_, _, _, onB := copyOf(b, key)
		return onC && seq == 3 && !onB
	})
	p.msg(t, "more")
	p.readType(t, "ack")
	if seq, _, _, _ := copyOf(c, key); seq != 4 {
		t.Fatalf("edge-c's copy at seq %d after an ack of 4", seq)
	}
}

// Raw sessions have no history: nothing is replicated, and their
// participants reconnect to a fresh session, as without replication.
func TestRawSessionsAreNotReplicated(t *testing.T) {
	a, b, key := replPair(t, configs.ReplicationSync, "raw")
	d := websocket.Dialer{HandshakeTimeout: testDeadline}
	c, _, err := d.Dial("ws://"+a.data+"/ws", http.Header{"Ctstickiness": {key}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-a.joined
	if err := c.WriteMessage(websocket.TextMessage, []byte("raw")); err != nil {
		t.Fatal(err)
	}
	if n := b.s.hub.repl.Load().store.count(); n != 0 {
		t.Fatalf("%d copies of a raw session", n)
	}
	a.crash(t)
	waitRing(t, []*clusterEdge{b}, "edge-b")
	again, _, err := d.Dial("ws://"+b.data+"/ws", http.Header{"Ctstickiness": {key}})
	if err != nil {
		t.Fatalf("raw reconnect: %v", err)
	}
	again.Close()
	if v := metricValue(t, b.s, "ringlb_edge_replication_promotions_total"); v != 0 {
		t.Errorf("promotions %v, want 0", v)
	}
}

// asyncLag is two async edges and a session owned by edge-a whose replica
// on edge-b (behind a proxy, paused) has seq 1 of the 4 its participants
// p1 (the sender) and p2 saw.
type asyncLag struct {
	a, b   *clusterEdge
	proxy  *pausableProxy
	key    string
	p1, p2 *v1Client
	epoch  string
}

func startAsyncLag(t *testing.T, prefix string) asyncLag {
	t.Helper()
	cl := healthtest.New(t)
	var l asyncLag
	l.a = startReplEdge(t, cl, "edge-a", configs.ReplicationAsync, nil)
	l.b = startReplEdge(t, cl, "edge-b", configs.ReplicationAsync, func(data string) string {
		l.proxy = startPausableProxy(t, data)
		return l.proxy.ln.Addr().String()
	})
	waitRing(t, []*clusterEdge{l.a, l.b}, "edge-a", "edge-b")
	l.key = keyOwnedBy(prefix, "edge-a", "edge-a", "edge-b")
	l.p1 = l.a.joinV1(t, l.key, "", nil)
	l.p2 = l.a.joinV1(t, l.key, "", nil)
	l.p1.readType(t, "join")
	l.p1.msg(t, 0)
	l.p1.readType(t, "ack")
	l.p2.readType(t, "msg")
	waitCopy(t, l.b, l.key, 1)
	l.proxy.setPaused(true)
	for i := 1; i <= 3; i++ { // seqs 2–4, on edge-a only
		l.p1.msg(t, i)
		l.p1.readType(t, "ack")
		l.p2.readType(t, "msg")
	}
	l.epoch = l.p1.welcome.Epoch
	return l
}

// Async: an ack means the owner has the msg; msgs its replica had not
// received when it was taken over are lost — and counted. A client that saw
// them resumes without a reset: the promoted session skips their seqs, so
// no seq ever names two msgs. The late records of the old owner are fenced.
func TestAsyncTakeoverSkipsLostSeqs(t *testing.T) {
	l := startAsyncLag(t, "async")
	b, proxy, key, p1, epoch := l.b, l.proxy, l.key, l.p1, l.epoch
	// edge-a unreachable for a balancer: p2, which saw seq 4, resumes on edge-b.
	g := b.joinSkipping(t, key, "resume=4&epoch="+epoch, "edge-a")
	if g.welcome.Epoch != epoch || g.welcome.Seq != 4 {
		t.Fatalf("welcome %+v, want epoch %s seq 4: no reset", g.welcome, epoch)
	}
	if v := metricValue(t, b.s, "ringlb_edge_replication_lost_total"); v != 3 {
		t.Errorf("lost %v, want 3", v)
	}
	g.msg(t, "new")
	// Past the reserve for what edge-a may have sequenced beyond seq 4
	// that no client has resumed with yet (reserveLost).
	first := 4 + promotionSkip(configs.DefaultHistoryMessages) + 1
	if ack := g.readType(t, "ack"); ack.Seq != first {
		t.Fatalf("first msg after the takeover got seq %d, want %d", ack.Seq, first)
	}
	// A client that saw only seq 1 gets no reset either: the gap is its loss.
	h := b.joinV1(t, key, "resume=1&epoch="+epoch, nil)
	if h.welcome.Seq != first {
		t.Fatalf("welcome %+v, want seq %d", h.welcome, first)
	}
	if m := h.readType(t, "msg"); m.Seq != first {
		t.Fatalf("replay %+v, want only seq %d", m, first)
	}
	proxy.setPaused(false) // edge-a's late records reach edge-b: fenced
	if code := closeCode(t, p1.Conn); code != closeServiceRestart {
		t.Fatalf("the old owner's participant closed with %d, want 1012", code)
	}
	if seq, _, _, _ := copyOf(b, key); seq != 0 {
		t.Errorf("a copy reappeared on edge-b")
	}
}

// Async, the other order: a client behind the copy resumes first and
// sends before a client that saw the lost msgs resumes. Sequenced at the
// copy's seq + 1, its msgs took seqs the ahead client already held other
// msgs at, and that client resumed without a reset, holding them (the
// chaos crash under load: "seq 17 names two msgs"). Now they come past a
// reserve (reserveLost), and the ahead client gets them, at seqs it never
// held.
func TestAsyncTakeoverBehindClientSendsFirst(t *testing.T) {
	l := startAsyncLag(t, "behind")
	b, key, epoch := l.b, l.key, l.epoch
	// A client that saw only seq 1 takes the session over on edge-b and
	// sends three msgs before anyone else comes back.
	behind := b.joinSkipping(t, key, "resume=1&epoch="+epoch, "edge-a")
	var sent []uint64
	for i := range 3 {
		behind.msg(t, fmt.Sprintf("new-%d", i))
		sent = append(sent, behind.readType(t, "ack").Seq)
	}
	// p2, which holds seqs 2–4 from edge-a, resumes.
	ahead := b.joinSkipping(t, key, "resume=4&epoch="+epoch, "edge-a")
	if ahead.welcome.Epoch != epoch {
		t.Fatalf("welcome %+v, want epoch %s", ahead.welcome, epoch)
	}
	for i, seq := range sent {
		if seq <= 4 {
			t.Errorf("the behind client's msg %d got seq %d, one the ahead client holds another msg at", i, seq)
		}
	}
	if sent[0] > 4 {
		for i := range sent {
			m := ahead.readType(t, "msg")
			if m.Seq != sent[i] || string(m.Data) != fmt.Sprintf("%q", fmt.Sprintf("new-%d", i)) {
				t.Fatalf("the ahead client's replay %+v, want new-%d at seq %d", m, i, sent[i])
			}
		}
	}
	l.proxy.setPaused(false)
}

// A replication stream plants state a client may resume into, so it is
// believed only from an edge of the cluster: the upgrade signed with the
// cluster key by the edge it names, then every batch MAC'd with the
// stream's key — from an X25519 exchange whose two halves (the upgrade and
// the replica's hello) are signed with the cluster key. The attacks: a
// stranger (no key, another cluster's key, a name that is no edge) opens a
// stream; someone replays a recorded upgrade of edge-b (its key exchange
// with it, but not its private key) and sends batches, or sends edge-b's
// batches out of order. Each plants nothing.
func TestReplicationStreamsFromStrangersRefused(t *testing.T) {
	cl := healthtest.New(t)
	a := startReplEdge(t, cl, "edge-a", configs.ReplicationSync, nil)
	b := startReplEdge(t, cl, "edge-b", configs.ReplicationSync, nil)
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	stranger := healthtest.New(t).Join("mallory", health.Meta{Role: health.RoleEdge, URL: "http://127.0.0.1:1", Weight: 1, State: health.StateAlive})
	recorded, err := ecdh.X25519().GenerateKey(rand.Reader) // edge-b's, in the recorded upgrade
	if err != nil {
		t.Fatal(err)
	}
	pubKey := base64.RawURLEncoding.EncodeToString(recorded.PublicKey().Bytes())
	signed := 0
	dial := func(from string, signer *health.Keyring, as string) (*websocket.Conn, int) {
		// Each upgrade signed anew (a signature opens one stream,
		// TestReplayedUpgradeOpensOneStream), for the same public key.
		signed++
		uri := fmt.Sprintf("%s?from=%s&key=%s&n=%d", pathReplicate, from, pubKey, signed)
		h := http.Header{}
		signer.SignRequest(h, as, "edge-a", http.MethodGet, uri, nil)
		return dialStream(t, a.data, uri, h)
	}
	for _, tt := range []struct {
		name, from string
		signer     *health.Keyring
		as         string
	}{
		{"unsigned, as edge-b", "edge-b", nil, ""},
		{"another cluster's key, as edge-b", "edge-b", stranger.Keyring(), "edge-b"},
		{"edge-b's signature naming mallory", "mallory", b.m.Keyring(), "edge-b"},
	} {
		if _, code := dial(tt.from, tt.signer, tt.as); code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", tt.name, code)
		}
	}
	if v := metricValue(t, a.s, "ringlb_edge_peer_requests_refused_total"); v != 3 {
		t.Errorf("refused %v, want 3", v)
	}

	// An upgrade edge-b signed for a public key opens a stream, but its
	// batches need the stream's key: the X25519 secret of that key.
	plant := func(priv *ecdh.PrivateKey, counter uint64) bool {
		c, code := dial("edge-b", b.m.Keyring(), "edge-b")
		if code != http.StatusSwitchingProtocols {
			t.Fatalf("a validly signed upgrade: %d", code)
		}
		_, hello, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := openHello(hello, b.m.Keyring(), "edge-b", "edge-a", pubKey)
		if err != nil {
			t.Fatalf("hello: %v", err)
		}
		keys, err := newStreamKeys(priv, theirs, true)
		if err != nil {
			t.Fatal(err)
		}
		body := appendSnapshot(nil, 1, 0, "E", "planted")
		if err := writeBatch(c, appendBatchHead(nil, keys.send, counter, body), body); err != nil {
			t.Fatal(err)
		}
		_, ack, err := c.ReadMessage()
		return err == nil && len(ack) > 0
	}
	replayer, err := ecdh.X25519().GenerateKey(rand.Reader) // not edge-b's private key
	if err != nil {
		t.Fatal(err)
	}
	if plant(replayer, 1) {
		t.Error("a replayed upgrade's batch was acknowledged")
	}
	if plant(recorded, 2) {
		t.Error("a batch out of order was acknowledged")
	}
	if _, _, _, ok := copyOf(a, "planted"); ok {
		t.Fatal("a replayed stream planted a session copy")
	}
	// The real thing: edge-b's own stream and key.
	if !plant(recorded, 1) {
		t.Fatal("edge-b's own batch was refused")
	}
	if _, _, _, ok := copyOf(a, "planted"); !ok {
		t.Fatal("edge-b's own batch planted nothing")
	}
}

// A promoted session skips the seqs a resuming client saw beyond its copy
// (skipLost), at most promotionSkip: the client's word is all there is.
// But the bound was per resume, from wherever the last one left seq, and
// nothing ends the window before a msg is sequenced: any participant — a
// viewer too, as resume is reading — could send resume after resume, each
// past the last, and push the session's seq as far as it liked, every
// step counted as msgs lost and sent to the replica as a skip record. Now
// the bound is from the copy's seq, whatever the number of resumes.
func TestResumesCannotPushAPromotedSessionsSeq(t *testing.T) {
	const resumes = 20
	l := startAsyncLag(t, "push")
	b, key, epoch := l.b, l.key, l.epoch
	// The honest client that saw seq 4 takes the session over on edge-b.
	g := b.joinSkipping(t, key, "resume=4&epoch="+epoch, "edge-a")
	if g.welcome.Seq != 4 {
		t.Fatalf("welcome %+v, want seq 4", g.welcome)
	}
	// Another participant of the session claims ever later seqs, before
	// anyone sends.
	m := b.joinV1(t, key, "", nil)
	bound := promotionSkip(configs.DefaultHistoryMessages)
	after := uint64(4)
	for range resumes {
		after += bound
		m.send(t, map[string]any{"type": "resume", "after": after, "epoch": epoch})
		m.send(t, map[string]any{"type": "ping"})
		for m.read(t).Type != "pong" { // the resume was acted on (a reset, once refused)
		}
	}
	w := b.joinV1(t, key, "", nil)
	lost := metricValue(t, b.s, "ringlb_edge_replication_lost_total")
	t.Logf("%d resumes each %d past the last: the session's seq %d (copy 1, honest client 4), %v seqs counted lost",
		resumes, bound, w.welcome.Seq, lost)
	if w.welcome.Seq > 1+bound {
		t.Errorf("seq pushed to %d by resumes, want at most the copy's 1 + %d", w.welcome.Seq, bound)
	}
	if lost > float64(bound) {
		t.Errorf("%v seqs counted lost, want at most %d", lost, bound)
	}
	l.proxy.setPaused(false)
}

// A promoted session takes a resuming client's word for the seqs it saw
// past the copy (skipLost), and the skip's holes take history slots like
// msgs. The attack: right after the takeover, one participant of the
// session (a viewer would do: resume is reading) claims it saw seq 5000.
// Before, the session skipped there, and the skip, past history.messages,
// emptied the history: a client behind the copy, resuming after seq 0,
// got reset "history" for msg 1 the copy held. Now a client's word moves
// seq at most as far as the reserve a takeover sets aside for the dead
// owner's unseen msgs (reserveLost: a quarter of the history, at most
// promotionReserve), so no claim costs the history more than the reserve
// does; a client further ahead gets reset "ahead" and starts again.
func TestOneClaimCannotEmptyAPromotedHistory(t *testing.T) {
	l := startAsyncLag(t, "wipe")
	b, key, epoch := l.b, l.key, l.epoch
	m := b.joinSkipping(t, key, "resume=5000&epoch="+epoch, "edge-a")
	t.Logf("mallory resuming after 5000: welcome seq %d", m.welcome.Seq)
	if m.welcome.Seq > 1+promotionSkip(configs.DefaultHistoryMessages) {
		t.Errorf("a claim of seq 5000 moved a copy at 1 to %d, want at most the reserve %d past it", m.welcome.Seq, promotionSkip(configs.DefaultHistoryMessages))
	} else if r := m.read(t); r.Type != "reset" || r.Reason != "ahead" {
		t.Errorf("a claim of seq 5000 on a copy at 1: %+v, want reset \"ahead\"", r)
	}
	h := b.joinV1(t, key, "resume=0&epoch="+epoch, nil)
	got := h.read(t)
	t.Logf("a client behind the copy resuming after 0: %s seq %d %q", got.Type, got.Seq, got.Reason)
	if got.Type != "msg" || got.Seq != 1 {
		t.Errorf("a client behind the copy got %+v, want msg 1 replayed from the copy", got)
	}
	l.proxy.setPaused(false)
}

// A promotion acts on the copy of the owner it was decided for. Gossip
// declared edge-a dead and promoteOrphans listed its copies; before it got
// to the key, the session's new owner (edge-c, a higher term: it took the
// session over) sent its copy here. Promoted, that copy would be a needless
// takeover of a live owner's session, fenced on its next record; dropped,
// it would make edge-c send it whole again. Neither: it stays.
func TestPromotionActsOnTheGoneOwnersCopy(t *testing.T) {
	_, b, key := replPair(t, configs.ReplicationSync, "newer")
	r := b.s.hub.repl.Load()
	if answers, err := r.apply("edge-a", appendSnapshot(nil, 3, 0, "E", key), nil); err != nil || len(answers) != 0 {
		t.Fatalf("edge-a's snapshot: answers %q, %v", answers, err)
	}
	if answers, err := r.apply("edge-c", appendSnapshot(nil, 4, 0, "E", key), nil); err != nil || len(answers) != 0 {
		t.Fatalf("edge-c's snapshot of a newer term: answers %q, %v", answers, err)
	}
	if r.promote(key, "edge-a", "owner gone", nil) {
		t.Fatal("edge-c's copy promoted for edge-a's death")
	}
	if c := r.store.takeOf(key, "edge-a"); c != nil {
		t.Fatal("edge-c's copy taken as edge-a's")
	}
	if _, _, term, ok := copyOf(b, key); !ok || term != 4 {
		t.Fatalf("edge-c's copy: held %v, term %d; want held, term 4", ok, term)
	}
	if !r.promote(key, "edge-c", "owner gone", nil) {
		t.Fatal("edge-c's copy not promoted for edge-c's death")
	}
}

// apply is applyStream outside any stream (the tests' batches, the fuzz
// harness's replica): a synced record drops nothing.
func (r *replicator) apply(from string, records, answers []byte) ([]byte, error) {
	return r.applyStream(from, time.Time{}, records, answers)
}

// An edge that drained once (announced draining in gossip, handed its
// sessions on, left) and was started again under its name replicates its
// new sessions to the same replica. When it then crashes, sync
// replication promises that no acknowledged msg is lost: the replica
// promotes its copies. Before, the replica kept the first life's draining
// mark (its copies all handed on, the mark was never looked at again) and
// dropped the second life's copies at its crash: the client resumed at
// seq 0 under a new epoch.
func TestRestartedEdgeOnceDrainedIsPromotedFrom(t *testing.T) {
	cl := healthtest.New(t)
	// edge-b first: it seeds the gossip cluster, which edge-a joins again.
	b := startReplEdge(t, cl, "edge-b", configs.ReplicationSync, nil)
	a := startReplEdge(t, cl, "edge-a", configs.ReplicationSync, nil)
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")

	// First life: a session on edge-a, replicated to edge-b.
	key1 := keyOwnedBy("drainmark-first", "edge-a", "edge-a", "edge-b")
	p := a.joinV1(t, key1, "", nil)
	for i := range 3 {
		p.msg(t, i)
		p.readType(t, "ack")
	}
	waitCopy(t, b, key1, 3)

	// A drain as the binary runs one: draining announced in gossip
	// (node.go, on srv.Draining or before stopping), its sessions handed
	// on, then the edge leaves.
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	if err := a.m.UpdateMeta(ctx, func(m *health.Meta) { m.State = health.StateDraining }); err != nil {
		t.Fatal(err)
	}
	st := b.s.hub.repl.Load().store
	healthtest.WaitUntil(t, "edge-b marks edge-a draining, holding its copy", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.draining["edge-a"]
	})
	drained := startDrain(a)
	closeCode(t, p.Conn)
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("drain: %v", err)
		}
	case <-time.After(testDeadline):
		t.Fatal("drain did not end")
	}
	if live, _ := b.s.hub.lookup([]byte(key1), "edge-b", goneEdges{}); !live {
		t.Fatal("the drained session was not handed to edge-b")
	}
	// The drained process exits (its Shutdown runs at the test's end).
	a.crash(t)
	waitRing(t, []*clusterEdge{b}, "edge-b")
	healthtest.WaitUntil(t, "edge-b's mark of edge-a's drain dropped once it left", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return !st.draining["edge-a"]
	})

	// Second life: edge-a started again under its name (a restart, a
	// rolling upgrade), a new session, every msg acknowledged under sync.
	a2 := startReplEdge(t, cl, "edge-a", configs.ReplicationSync, nil)
	waitRing(t, []*clusterEdge{a2, b}, "edge-a", "edge-b")
	key2 := keyOwnedBy("drainmark-second", "edge-a", "edge-a", "edge-b")
	q := a2.joinV1(t, key2, "", nil)
	for i := range 5 {
		q.msg(t, i)
		if ack := q.readType(t, "ack"); ack.Seq != uint64(i+1) {
			t.Fatalf("ack %+v", ack)
		}
	}
	waitCopy(t, b, key2, 5)
	epoch := q.welcome.Epoch

	// It crashes: the replica holds every acknowledged msg, and must
	// serve the session on under the same epoch.
	a2.crash(t)
	waitRing(t, []*clusterEdge{b}, "edge-b")
	_, _, _, still := copyOf(b, key2)
	live, _ := b.s.hub.lookup([]byte(key2), "edge-b", goneEdges{})
	r := b.joinV1(t, key2, fmt.Sprintf("resume=5&epoch=%s", epoch), nil)
	if r.welcome.Epoch != epoch || r.welcome.Seq != 5 {
		t.Fatalf("after the crash of edge-a's second life: welcome epoch %q seq %d on the replica (promoted before the join: %v, copy kept: %v), want epoch %q seq 5: 5 msgs acknowledged under sync replication lost",
			r.welcome.Epoch, r.welcome.Seq, live, still, epoch)
	}
}

// A Shutdown called again — by a caller's deferred stop after a signal's,
// say — returns as the first did: the ownership goroutine's stop channel
// was closed twice, a panic.
func TestShutdownTwiceReturns(t *testing.T) {
	cl := healthtest.New(t)
	e := startReplEdge(t, cl, "edge-a", configs.ReplicationSync, nil)
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
		err := e.s.Shutdown(ctx)
		cancel()
		if err != nil {
			t.Errorf("Shutdown %d: %v", i+1, err)
		}
	}
}
