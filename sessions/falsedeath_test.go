package sessions

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// hidingView is an edge's view of the cluster in which one edge, alive
// in gossip, looks dead: a false death (the edge stalled, or a one-way
// partition), seen by this edge alone. It may also reach an edge at
// another data address than the one it announces (a proxy: a path of this
// edge's alone).
type hidingView struct {
	*health.Membership
	hidden  atomic.Pointer[string]
	via     atomic.Pointer[[2]string] // an edge's name and the data URL this edge reaches it at
	changed chan struct{}             // cap 1: hide's change signal
}

func newHidingView(m *health.Membership) *hidingView {
	return &hidingView{Membership: m, changed: make(chan struct{}, 1)}
}

// hide takes name for dead from now on ("": none), and says the view
// changed.
func (h *hidingView) hide(name string) {
	h.hidden.Store(&name)
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

func (h *hidingView) hides(name string) bool {
	n := h.hidden.Load()
	return n != nil && *n == name
}

// reach has this edge reach name's data port at url.
func (h *hidingView) reach(name, url string) { h.via.Store(&[2]string{name, url}) }

func (h *hidingView) routed(n health.Node) health.Node {
	if v := h.via.Load(); v != nil && v[0] == n.Name {
		n.Meta.URL = v[1]
	}
	return n
}

func (h *hidingView) Edges(region string) (out []health.Node) {
	for _, n := range h.Membership.Edges(region) {
		if !h.hides(n.Name) {
			out = append(out, h.routed(n))
		}
	}
	return out
}

func (h *hidingView) Node(name string) (health.Node, bool) {
	if h.hides(name) {
		return health.Node{}, false
	}
	n, ok := h.Membership.Node(name)
	return h.routed(n), ok
}

// Subscribe signals the gossip member's changes and hide's; its goroutine
// ends with unsubscribe.
func (h *hidingView) Subscribe() (<-chan struct{}, func()) {
	changes, unsubscribe := h.Membership.Subscribe()
	out := make(chan struct{}, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-changes:
			case <-h.changed:
			}
			select {
			case out <- struct{}{}:
			default:
			}
		}
	})
	return out, func() {
		close(stop)
		wg.Wait()
		unsubscribe()
	}
}

// falseDeathCluster is edges a, b and c replicating under sync, edge-a
// seeing the cluster through view, and key: edge-a's on a ring of the
// three and of a and b, its replica edge-c (the key's owner on b and c),
// edge-b once c is gone from edge-a's view.
func falseDeathCluster(t *testing.T) (a, b, c *clusterEdge, view *hidingView, key string) {
	t.Helper()
	cfg := configs.Edge{IdleGrace: configs.Duration(time.Second), Replication: configs.ReplicationSync}
	cl := healthtest.New(t)
	a = startReplEdgeViewing(t, cl, "edge-a", cfg, nil, func(m *health.Membership) Membership {
		view = newHidingView(m)
		return view
	})
	b = startReplEdgeWith(t, cl, "edge-b", cfg, nil)
	c = startReplEdgeWith(t, cl, "edge-c", cfg, nil)
	waitRing(t, []*clusterEdge{a, b, c}, "edge-a", "edge-b", "edge-c")
	for i := 0; key == ""; i++ {
		k := fmt.Sprintf("false-death-%d", i)
		if ownerOf(k, "edge-a", "edge-b", "edge-c") == "edge-a" && ownerOf(k, "edge-a", "edge-b") == "edge-a" && ownerOf(k, "edge-b", "edge-c") == "edge-c" {
			key = k
		}
	}
	return a, b, c, view, key
}

// A replica the owner takes for dead while it runs (a stall, a one-way
// partition) drops its copies all the same: the owner moves every session
// to another replica and writes their frees on the stream before it closes
// it. Before, the stream was closed as the frees were queued, and they
// were almost never written: the replica kept the copy of the ended
// session (seq 5) for as long as the owner lived, and after the owner's
// crash a new join there got the ended session's epoch and seq 5 back.
func TestCopyOnAReplicaTakenForDeadIsFreed(t *testing.T) {
	parallel(t)
	a, b, c, view, key := falseDeathCluster(t)
	p := a.joinV1(t, key, "", nil)
	for i := range 5 {
		p.msg(t, i)
		p.readType(t, "ack")
	}
	epoch := p.welcome.Epoch
	waitCopy(t, c, key, 5)

	view.hide("edge-c")
	waitCopy(t, b, key, 5)
	// What edge-a wrote on its stream to edge-c is applied there before
	// edge-c sees the stream end.
	healthtest.WaitUntil(t, "edge-a's stream to edge-c ended", func() bool { return inboundFrom(c.s.hub.repl.Load(), "edge-a") == nil })
	seq, _, _, kept := copyOf(c, key)
	t.Logf("edge-a took edge-c for dead: edge-c keeps the session's copy: %v (seq %d)", kept, seq)
	if kept {
		t.Error("the replica taken for dead keeps the copy of a session moved off it")
	}

	p.Close()
	healthtest.WaitUntil(t, "the session ended on edge-a", func() bool { return !a.s.hub.has([]byte(key)) })
	healthtest.WaitUntil(t, "edge-b dropped its copy", func() bool {
		_, _, _, ok := copyOf(b, key)
		return !ok
	})
	a.crash(t)
	waitRing(t, []*clusterEdge{b, c}, "edge-b", "edge-c")
	q := c.joinV1(t, key, "", nil)
	defer q.Close()
	t.Logf("a new join on edge-c after edge-a's crash: epoch %s (the ended session's: %v), seq %d", q.welcome.Epoch, q.welcome.Epoch == epoch, q.welcome.Seq)
	if q.welcome.Epoch == epoch {
		t.Errorf("the session ended on edge-a came back on edge-c at seq %d", q.welcome.Seq)
	}
}

// A replica taken for dead and back at once ends up with the copy: the
// link retired as it went writes the session's free, and the new link
// sends its snapshot only once the retired one has stopped, so the free
// never drops the copy the snapshot made.
func TestReplicaTakenForDeadAndBackKeepsItsCopy(t *testing.T) {
	parallel(t)
	a, b, c, view, key := falseDeathCluster(t)
	p := a.joinV1(t, key, "", nil)
	for i := range 5 {
		p.msg(t, i)
		p.readType(t, "ack")
	}
	waitCopy(t, c, key, 5)
	view.hide("edge-c")
	waitCopy(t, b, key, 5)
	view.hide("")
	waitRing(t, []*clusterEdge{a}, "edge-a", "edge-b", "edge-c")
	healthtest.WaitUntil(t, "edge-c holds the copy and edge-b dropped it", func() bool {
		seq, _, _, onC := copyOf(c, key)
		_, _, _, onB := copyOf(b, key)
		return onC && seq == 5 && !onB
	})
	p.msg(t, "more")
	p.readType(t, "ack")
	if seq, _, _, ok := copyOf(c, key); !ok || seq != 6 {
		t.Errorf("edge-c's copy at seq %d (held %v) after an ack of 6", seq, ok)
	}
}

// cuttableProxy forwards TCP connections to target until cut: then it
// ends those open and every one that comes, as a network that drops the
// path does (the replica unreachable for its owner, gossip unaffected),
// until healed.
type cuttableProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func startCuttableProxy(t *testing.T, target string) *cuttableProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttableProxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			if !p.track(c, u) {
				continue
			}
			p.wg.Go(func() { p.pipe(u, c) })
			p.wg.Go(func() { p.pipe(c, u) })
		}
	})
	return p
}

// track adds c and u to the connections cut ends (false: cut, both
// closed).
func (p *cuttableProxy) track(c, u net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		c.Close()
		u.Close()
		return false
	}
	p.conns[c], p.conns[u] = struct{}{}, struct{}{}
	return true
}

func (p *cuttableProxy) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// cut ends the connections open and every one that comes until heal.
func (p *cuttableProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
}

// heal lets connections through again.
func (p *cuttableProxy) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// A replica whose owner's stream ended and did not begin anew while the
// owner lives drops that owner's copies once staleCopyAge has passed: an
// owner keeps a stream to every replica it has, so it no longer counts
// this edge as one, and the frees it queued for it (it moved its sessions
// off, it ended them) never came. Here the owner's path to the replica is
// cut before the owner takes the replica for dead: nothing is written to
// it; another owner's stream to the replica stays up, and its copy too. Before, the copy of the ended session was kept for as
// long as the owner lived, to be promoted at its crash.
func TestCopiesOfAnOwnerWhoseStreamStaysDownAreDropped(t *testing.T) {
	parallel(t)
	a, b, c, view, key := falseDeathCluster(t)
	// edge-a's path to edge-c, and no one else's: edge-a has no stream to
	// edge-c yet (no session of its has it as replica).
	proxy := startCuttableProxy(t, c.data)
	view.reach("edge-c", "http://"+proxy.ln.Addr().String())
	// A session of edge-b's replicated on edge-c: its owner's stream stays
	// up, and its copy with it.
	var other string
	for i := 0; other == ""; i++ {
		k := fmt.Sprintf("false-death-other-%d", i)
		if ownerOf(k, "edge-a", "edge-b", "edge-c") == "edge-b" && ownerOf(k, "edge-a", "edge-c") == "edge-c" {
			other = k
		}
	}
	q := b.joinV1(t, other, "", nil)
	defer q.Close()
	q.msg(t, "x")
	q.readType(t, "ack")
	waitCopy(t, c, other, 1)
	p := a.joinV1(t, key, "", nil)
	for i := range 5 {
		p.msg(t, i)
		p.readType(t, "ack")
	}
	waitCopy(t, c, key, 5)

	proxy.cut()
	healthtest.WaitUntil(t, "edge-a's stream to edge-c ended", func() bool { return inboundFrom(c.s.hub.repl.Load(), "edge-a") == nil })
	view.hide("edge-c")
	waitCopy(t, b, key, 5)
	p.Close()
	healthtest.WaitUntil(t, "the session ended on edge-a", func() bool { return !a.s.hub.has([]byte(key)) })
	healthtest.WaitUntil(t, "edge-b dropped its copy", func() bool {
		_, _, _, ok := copyOf(b, key)
		return !ok
	})
	if _, _, _, ok := copyOf(c, key); !ok {
		t.Fatal("edge-c dropped the copy without a sweep: the path was not cut")
	}

	c.s.hub.repl.Load().sweepCopies(time.Now().Add(staleCopyAge + settleWindow))
	seq, _, _, kept := copyOf(c, key)
	t.Logf("a sweep past staleCopyAge with edge-a's stream down: edge-c keeps the ended session's copy: %v (seq %d)", kept, seq)
	if kept {
		t.Error("edge-c keeps the copy of an owner whose stream stayed down")
	}
	if _, _, _, ok := copyOf(c, other); !ok {
		t.Error("edge-c dropped the copy of an owner whose stream is up")
	}
}
