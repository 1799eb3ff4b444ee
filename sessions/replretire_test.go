package sessions

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// pendingOf returns how many msgs of key's session on e wait for its
// replica, and the last seq shown.
func pendingOf(e *clusterEdge, key string) (pending int, committed uint64) {
	sh := e.s.hub.shardOf(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.sessions[key]
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.v1.pending), s.v1.committed
}

// A msg waiting (sync) for a replica that then leaves the cluster waits
// for the session's next replica, whose snapshot carries it: the retired
// link's end shows only what still waits on it. It showed every waiting
// msg of the sessions just moved off it, so the msg was acknowledged while
// neither replica had it, and the owner's crash then lost it.
func TestMsgWaitingOnARetiredReplicaWaitsForTheNext(t *testing.T) {
	parallel(t)
	cl := healthtest.New(t)
	// Long enough that no fallback shows the msg while the replicas are
	// paused: what is shown is what the retire showed.
	cfg := configs.Edge{IdleGrace: configs.Duration(time.Minute), Replication: configs.ReplicationSync, ReplicationTimeout: configs.Duration(10 * time.Second)}
	a := startReplEdgeWith(t, cl, "edge-a", cfg, nil)
	var pb, pc *pausableProxy
	b := startReplEdgeWith(t, cl, "edge-b", cfg, func(data string) string {
		pb = startPausableProxy(t, data)
		return pb.ln.Addr().String()
	})
	c := startReplEdgeWith(t, cl, "edge-c", cfg, func(data string) string {
		pc = startPausableProxy(t, data)
		return pc.ln.Addr().String()
	})
	waitRing(t, []*clusterEdge{a, b, c}, "edge-a", "edge-b", "edge-c")
	// A key edge-a owns, replicated to edge-b, then to edge-c once edge-b
	// is gone.
	var key string
	for i := 0; key == ""; i++ {
		k := fmt.Sprintf("retire-%d", i)
		if ownerOf(k, "edge-a", "edge-b", "edge-c") == "edge-a" && ownerOf(k, "edge-b", "edge-c") == "edge-b" && ownerOf(k, "edge-a", "edge-c") == "edge-a" {
			key = k
		}
	}
	p := a.joinV1(t, key, "", nil)
	p.msg(t, "replicated")
	p.readType(t, "ack")
	waitCopy(t, b, key, 1)

	pb.setPaused(true)
	pc.setPaused(true)
	p.msg(t, "waiting")
	waitFor(t, "the msg waiting for edge-b", func() bool {
		n, _ := pendingOf(a, key)
		return n == 1
	})
	b.crash(t)
	ra := a.s.hub.repl.Load()
	waitFor(t, "edge-a's link to edge-b retired and the session moved to edge-c", func() bool {
		ra.mu.Lock()
		_, linked := ra.links["edge-b"]
		lc := ra.links["edge-c"]
		ra.mu.Unlock()
		if linked || lc == nil {
			return false
		}
		lc.mu.Lock()
		defer lc.mu.Unlock()
		for s := range lc.sessions {
			if s.key == key {
				return true
			}
		}
		return false
	})
	if n, committed := pendingOf(a, key); n != 1 || committed != 1 {
		t.Fatalf("edge-b gone, edge-c paused: %d msgs waiting, seq %d shown; want the msg still waiting (1, 1): neither replica has it", n, committed)
	}
	pc.setPaused(false)
	if ack := p.readType(t, "ack"); ack.Seq != 2 {
		t.Fatalf("ack %+v, want seq 2", ack)
	}
	if seq, _, _, ok := copyOf(c, key); !ok || seq != 2 {
		t.Fatalf("msg 2 acknowledged; edge-c's copy at seq %d (held %v)", seq, ok)
	}
	if v := metricValue(t, a.s, "ringlb_edge_replication_fallbacks_total"); v != 0 {
		t.Errorf("fallbacks %v, want 0", v)
	}
}

// An owner back from a stall (SIGSTOP, its machine frozen) past
// replication_timeout finds a msg that waited longer — but its replica
// has not had that long to answer it: the stall was the owner's. Its
// stream stays sync for a full replication_timeout more, and the
// replica's answer, a fence (gossip took the stalled owner for dead and
// the replica took the session over), comes first: the msg is never
// shown. Falling back at its first wake showed and acknowledged it on a
// session the new holder had without it, lost once the participants
// moved there (TestReplicationPartition under load: 3 acknowledged msgs
// lost).
func TestOwnerBackFromAStallGivesItsReplicaTheTimeout(t *testing.T) {
	parallel(t)
	cl := healthtest.New(t)
	// The watch's own wakes (a quarter of this) show nothing meanwhile:
	// the stall is the test's.
	cfg := configs.Edge{IdleGrace: configs.Duration(time.Minute), Replication: configs.ReplicationSync, ReplicationTimeout: configs.Duration(10 * time.Second)}
	// Both edges behind proxies: paused, neither edge's stream to the
	// other carries anything, as the fence is not pushed yet or the msg
	// not written yet when the owner stops.
	var pa, pb *pausableProxy
	a := startReplEdgeWith(t, cl, "edge-a", cfg, func(data string) string {
		pa = startPausableProxy(t, data)
		return pa.ln.Addr().String()
	})
	b := startReplEdgeWith(t, cl, "edge-b", cfg, func(data string) string {
		pb = startPausableProxy(t, data)
		return pb.ln.Addr().String()
	})
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	key := keyOwnedBy("stall", "edge-a", "edge-a", "edge-b")
	p := a.joinV1(t, key, "", nil)
	p.msg(t, "replicated")
	p.readType(t, "ack")
	waitCopy(t, b, key, 1)

	pa.setPaused(true)
	pb.setPaused(true)
	p.msg(t, "across the stall")
	waitFor(t, "the msg waiting for edge-b", func() bool {
		n, _ := pendingOf(a, key)
		return n == 1
	})
	// edge-b takes the session over: edge-a's balancer found it
	// unreachable.
	b.joinSkipping(t, key, "resume=1&epoch="+p.welcome.Epoch, "edge-a")
	// edge-a's watch wakes an hour after its previous wake: edge-a was
	// stopped meanwhile.
	a.s.hub.repl.Load().tick(time.Now().Add(time.Hour))
	if n, committed := pendingOf(a, key); n != 1 || committed != 1 {
		t.Fatalf("edge-a, back from its stall, showed the msg edge-b never got (%d waiting, seq %d shown) before edge-b could answer", n, committed)
	}

	pa.setPaused(false)
	pb.setPaused(false)
	got, code := readUntilClose(p)
	if code != closeServiceRestart {
		t.Fatalf("the superseded session's participant ended with %d after %q, want 1012", code, got)
	}
	for _, f := range got {
		if strings.Contains(f, `"type":"ack"`) {
			t.Fatalf("edge-a acknowledged a msg of a session edge-b had taken over without it: %q (then 1012)", got)
		}
	}
	if v := metricValue(t, a.s, "ringlb_edge_replication_fallbacks_total"); v != 0 {
		t.Errorf("edge-a fell back to async %v times; its replica answered within replication_timeout of its return", v)
	}
}

// A replica at its bound of copies keeps no new one, and says so: the
// owner does not take the batch's ack for the copy, counts the session's
// stream fallen back to async and sends the session's msgs nowhere until
// it may try again. It acknowledged the snapshot as if kept: the owner
// showed the msgs as replicated (no fallback counted) with no copy
// anywhere, and each msg's append, answered with a resync, had the whole
// session sent again, to be dropped again.
func TestFullReplicaRefusesTheCopy(t *testing.T) {
	parallel(t)
	a, b, key := replPair(t, configs.ReplicationSync, "full")
	st := b.s.hub.repl.Load().store
	st.mu.Lock()
	st.maxCopies = len(st.copies)
	st.mu.Unlock()
	p := a.joinV1(t, key, "", nil)
	for i := range 5 {
		p.msg(t, i)
		if ack := p.readType(t, "ack"); ack.Seq != uint64(i+1) {
			t.Fatalf("ack %+v, want seq %d", ack, i+1)
		}
	}
	if seq, _, _, ok := copyOf(b, key); ok {
		t.Fatalf("edge-b, full, holds a copy at seq %d", seq)
	}
	if v := metricValue(t, a.s, "ringlb_edge_replication_fallbacks_total"); v != 1 {
		t.Errorf("fallbacks %v, want 1: the session's msgs were shown with no copy on its replica", v)
	}
}

// A stream that ends makes orphans only of the sessions still replicated
// on it. A session a ring change moved to another replica, its msg in
// flight on the old stream when that stream broke, was left an orphan
// there: nothing sends it whole on that link again, so at
// replication_timeout the healthy replica was taken for silent — the
// stream turned async (counted, a WARN line) and every msg waiting on it,
// other sessions' included, was shown before their replica had it.
func TestStreamEndOrphansOnlyItsOwnSessions(t *testing.T) {
	parallel(t)
	cl := healthtest.New(t)
	cfg := configs.Edge{IdleGrace: configs.Duration(time.Minute), Replication: configs.ReplicationSync, ReplicationTimeout: configs.Duration(10 * time.Second)}
	a := startReplEdgeWith(t, cl, "edge-a", cfg, nil)
	var pb *pausableProxy
	b := startReplEdgeWith(t, cl, "edge-b", cfg, func(data string) string {
		pb = startPausableProxy(t, data)
		return pb.ln.Addr().String()
	})
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	// A key edge-a owns with either ring, whose replica becomes edge-c.
	var key string
	for i := 0; key == ""; i++ {
		k := fmt.Sprintf("orphan-%d", i)
		if ownerOf(k, "edge-a", "edge-b") == "edge-a" && ownerOf(k, "edge-a", "edge-b", "edge-c") == "edge-a" && ownerOf(k, "edge-b", "edge-c") == "edge-c" {
			key = k
		}
	}
	p := a.joinV1(t, key, "", nil)
	p.msg(t, "replicated")
	p.readType(t, "ack")
	waitCopy(t, b, key, 1)

	pb.setPaused(true)
	p.msg(t, "in flight to edge-b")
	waitFor(t, "the msg waiting for edge-b", func() bool {
		n, _ := pendingOf(a, key)
		return n == 1
	})
	c := startReplEdgeWith(t, cl, "edge-c", cfg, nil)
	waitRing(t, []*clusterEdge{a, b, c}, "edge-a", "edge-b", "edge-c")
	// Moved to edge-c, whose snapshot's ack shows the msg.
	if ack := p.readType(t, "ack"); ack.Seq != 2 {
		t.Fatalf("ack %+v, want seq 2", ack)
	}
	ra := a.s.hub.repl.Load()
	ra.mu.Lock()
	l := ra.links["edge-b"]
	ra.mu.Unlock()
	// The stream to edge-b breaks, the batch with the moved session's msg
	// unanswered, and edge-a dials edge-b again.
	pb.cut()
	pb.setPaused(false)
	waitFor(t, "edge-a's stream to edge-b again, nothing in flight", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.connected && l.gen >= 2 && len(l.inflight) == 0 && len(l.building) == 0
	})
	// edge-a's watch, long after: edge-b has answered everything.
	l.checkTimeout(time.Now().Add(time.Hour), time.Time{})
	if v := metricValue(t, a.s, "ringlb_edge_replication_fallbacks_total"); v != 0 {
		t.Errorf("edge-a's stream to edge-b, healthy and owed nothing, fell back to async %v times", v)
	}
}

// streamRecords reports whether e's replica store still records streams
// of from.
func streamRecords(e *clusterEdge, from string) bool {
	st := e.s.hub.repl.Load().store
	st.mu.Lock()
	defer st.mu.Unlock()
	_, began := st.streams[from]
	_, ended := st.down[from]
	return began || ended || st.up[from] > 0
}

// The records a replica keeps of an owner's streams go once the owner has
// left the cluster, copies or none, and whether its stream ended before
// the replica heard of the leave or after (a stream cut late: the path
// stalled). Before, only an owner with copies here at its leave was
// forgotten, and a stream ending after it was recorded anew: every edge
// that ever replicated here and left with none (its sessions ended, or
// handed on by a drain) stayed recorded, and edges named anew at each
// start (pods without stable names) grew the records without bound.
func TestLeftOwnersStreamsAreForgotten(t *testing.T) {
	for _, late := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream ends after the leave %v", late), func(t *testing.T) {
			parallel(t)
			cl := healthtest.New(t)
			a := startReplEdge(t, cl, "edge-a", configs.ReplicationSync, nil)
			var proxy *pausableProxy
			b := startReplEdge(t, cl, "edge-b", configs.ReplicationSync, func(data string) string {
				proxy = startPausableProxy(t, data)
				return proxy.ln.Addr().String()
			})
			waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
			key := keyOwnedBy("forgotten", "edge-a", "edge-a", "edge-b")
			p := a.joinV1(t, key, "", nil)
			waitCopy(t, b, key, 0)
			if !streamRecords(b, "edge-a") {
				t.Fatal("edge-b records no stream of edge-a, which replicates to it")
			}
			// The session ends with nothing sequenced: freed at once, its
			// copy with it.
			p.leave(t)
			healthtest.WaitUntil(t, "edge-b drops the copy of the ended session", func() bool {
				_, _, _, ok := copyOf(b, key)
				return !ok
			})
			if late {
				// edge-b reads nothing more of the stream, and sees it
				// end only when the path is cut, after the leave.
				proxy.setPaused(true)
			}
			a.crash(t)
			waitRing(t, []*clusterEdge{b}, "edge-b")
			if late {
				proxy.cut()
				proxy.setPaused(false)
			}
			healthtest.WaitUntil(t, "edge-b forgets the streams of edge-a, gone", func() bool {
				return !streamRecords(b, "edge-a")
			})
		})
	}
}
