package sessions

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
)

// A balancer that cannot reach a session's owner has the replica take the
// session over; the owner, still serving its participants, must then be
// fenced. A busy session fences its owner at its next message (the
// replica answers the record with a fence). An idle one had to wait for
// the replica to dial the owner and say so on a stream of its own — and
// an owner the balancer could not reach is often one the replica cannot
// reach either (overloaded, its backlog full): the participants stayed on
// the old owner while joins went to the new one, the session split for as
// long as the owner stayed unreachable. The owner's own stream to the
// replica — the one the copy came by — is up all along: the fence goes
// back on it at once.
func TestIdleStaleOwnerFencedOnItsOwnStream(t *testing.T) {
	a, b, key := replPair(t, configs.ReplicationSync, "idlefence")
	p1, p2 := a.twoTalking(t, key, 1)
	epoch := p1.welcome.Epoch

	// edge-a takes no new connection from now on (its backlog full, as
	// far as anyone dialing it can tell); what it has keeps working.
	stopAccepting(a)

	took := time.Now()
	g := b.joinSkipping(t, key, "resume=1&epoch="+epoch, "edge-a")
	if g.welcome.Epoch != epoch || g.welcome.Seq != 1 {
		t.Fatalf("welcome on the replica %+v, want epoch %s seq 1", g.welcome, epoch)
	}
	// Nobody on edge-a says a word: its participants are moved all the same.
	for _, p := range []*v1Client{p1, p2} {
		if got, code := readUntilClose(p); code != closeServiceRestart {
			t.Fatalf("the stale owner's idle participant ended with %d (after %q), want 1012", code, got)
		}
	}
	t.Logf("the idle stale owner's participants were closed %s after the takeover", time.Since(took).Round(time.Millisecond))
	if v := metricValue(t, a.s, "ringlb_edge_replication_fenced_total"); v != 1 {
		t.Errorf("fenced %v, want 1", v)
	}
}

// A fence is kept for fenceTTL and told on every new stream with its stale
// owner — but it says "this edge holds the session at a higher term", and
// that stops being true when the session ends here. The key then belongs
// to its ring owner again, which starts a new incarnation at term 1: a
// fence of the old takeover (term 2) still waiting here made that healthy
// session yield the first time the owner's stream began anew (any network
// blip), its participants closed 1012 and sent to an edge that does not
// have it. A fence is told only while this edge still holds the session it
// fences for.
func TestFenceOfAnEndedTakeoverIsNotTold(t *testing.T) {
	a, b, key := replPair(t, configs.ReplicationSync, "stalefence")
	p1 := a.joinV1(t, key, "", nil)
	p1.msg(t, "before")
	p1.readType(t, "ack")
	epoch := p1.welcome.Epoch

	// A balancer could not reach edge-a: edge-b takes over, edge-a yields.
	g := b.joinSkipping(t, key, "resume=1&epoch="+epoch, "edge-a")
	if _, code := readUntilClose(p1); code != closeServiceRestart {
		t.Fatalf("the stale owner's participant ended with %d, want 1012", code)
	}
	// The session ends on edge-b, and edge-a's frozen one with it, their
	// idle_grace run out (a minute or two after the takeover; the fence is
	// kept for five); edge-a's hand-over window has passed.
	g.leave(t)
	for _, e := range []*clusterEdge{a, b} {
		waitFor(t, e.s.name+"'s session idle", func() bool { return e.s.hub.idle.count.Load() == 1 })
		e.s.hub.idle.limit.Store(0)
		e.s.hub.trimIdle()
		e.s.hub.idle.limit.Store(int64(configs.DefaultMaxIdleSessions))
	}
	sh := a.s.hub.shardOf(key)
	sh.mu.Lock()
	delete(sh.moved, key)
	sh.mu.Unlock()
	// That window (settleWindow) is ten seconds: long after whatever
	// edge-b told edge-a of the takeover while it held the session (the
	// fence pushed on edge-a's stream, the fence and snapshot on the
	// stream edge-b opened for the promoted session) has reached edge-a.
	// Here it was milliseconds, and some of it may still be on its way: a
	// new incarnation would yield to it. edge-a's streams with edge-b
	// begin anew, so what came on them is applied by now or never will be.
	streamsBeginAnew(t, a, "edge-b")

	// A new incarnation on its ring owner, healthy (once edge-b's pin of
	// the ended session is withdrawn over gossip).
	var p3 *v1Client
	waitFor(t, "edge-a to take joins for the key", func() bool {
		c, _, err := a.dialV1(t, key, "", nil)
		if err != nil {
			return false
		}
		a.waitJoined(t)
		p3 = &v1Client{Conn: c}
		p3.welcome = p3.read(t)
		return true
	})
	if p3.welcome.Epoch == epoch {
		t.Fatalf("a new session kept the old epoch %s", epoch)
	}
	p3.msg(t, "new")
	p3.readType(t, "ack")

	// edge-a's stream to edge-b begins anew.
	rb := b.s.hub.repl.Load()
	var old *ownerStream
	waitFor(t, "edge-a's stream to edge-b", func() bool {
		old = inboundFrom(rb, "edge-a")
		return old != nil
	})
	old.conn.NetConn().Close()
	ra := a.s.hub.repl.Load()
	waitFor(t, "a new stream from edge-a", func() bool {
		if term, moved := ra.liveTerm(key); term == 0 || moved {
			return true // the session yielded (and sends nothing more): the msgs below say so
		}
		s := inboundFrom(rb, "edge-a")
		return s != nil && s != old && answersSent(s) > 0
	})
	// Whatever the new stream's pusher had to tell is told by now: it was
	// woken before the stream's first answer, and edge-a reads answers in
	// order.
	for i := range 3 {
		p3.msg(t, i)
		if got, code := readAck(p3); code != 0 {
			t.Fatalf("the new session of its ring owner was closed %d after %q: yielded to a fence of an ended takeover", code, got)
		}
	}
	if v := metricValue(t, a.s, "ringlb_edge_replication_fenced_total"); v != 1 {
		t.Errorf("edge-a fenced %v times, want 1 (the takeover's, not the new session)", v)
	}
}

// streamsBeginAnew cuts, from e's side, its replication streams with peer
// (its own to peer, and peer's to it) and returns once the goroutines that
// read them have ended: whatever peer wrote on them e has applied, or never
// will. Fences peer tells on the streams that follow are checked after the
// call (when each begins, when pushed).
func streamsBeginAnew(t *testing.T, e *clusterEdge, peer string) {
	t.Helper()
	r := e.s.hub.repl.Load()
	r.mu.Lock()
	var inbound []*websocket.Conn
	for c, s := range r.inbound {
		if s.from == peer {
			inbound = append(inbound, c)
			_ = c.NetConn().Close()
		}
	}
	r.mu.Unlock()
	waitFor(t, e.s.name+"'s streams from "+peer+" to end", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, c := range inbound {
			if r.inbound[c] != nil {
				return false
			}
		}
		return true
	})
	// The stream to peer cut is one that is up (one being dialed may have
	// begun on peer's side already); a ring change may replace the link.
	var (
		cut *link
		gen uint64
	)
	waitFor(t, e.s.name+"'s stream to "+peer, func() bool {
		r.mu.Lock()
		l := r.links[peer]
		r.mu.Unlock()
		if l == nil {
			return true // none
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if !l.connected {
			return false
		}
		cut, gen = l, l.gen
		_ = l.conn.NetConn().Close()
		return true
	})
	if cut == nil {
		return
	}
	// A stream ends (and the next begins) once its reader has ended.
	waitFor(t, e.s.name+"'s stream to "+peer+" to end", func() bool {
		cut.mu.Lock()
		defer cut.mu.Unlock()
		return cut.gen > gen || (cut.closed && !cut.connected)
	})
}

// inboundFrom returns r's current stream from owner (nil: none).
func inboundFrom(r *replicator, owner string) *ownerStream {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.inbound {
		if s.from == owner {
			return s
		}
	}
	return nil
}

// answersSent is how many answers s has written.
func answersSent(s *ownerStream) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

// readUntilClose reads c until it ends and returns the close code (-1:
// ended without one).
func readUntilClose(c *v1Client) ([]string, int) { return readUntil(c, "") }

// parallel runs t beside the package's other parallel tests: the
// tests that mostly wait (on gossip, a drain's linger, a token's expiry,
// a paced fan-out), each on its own listeners, gossip cluster and edges,
// and none setting anything of the process's. Not under the race
// detector (go test -race -short): slowed there several times, two
// clusters side by side missed peer requests' bound (peerTimeout,
// 500 ms) and a claim's answer was taken for none.
func parallel(t *testing.T) {
	t.Helper()
	if !raceDetector {
		t.Parallel()
	}
}

// waitFor waits (generously) until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(testDeadline); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, testDeadline)
		}
	}
}

// readAck reads c until an ack (code 0) or its end (the close code, -1
// without one), returning what came before.
func readAck(c *v1Client) ([]string, int) { return readUntil(c, `"type":"ack"`) }

// readUntil reads c until a frame holding mark (code 0; "": none does) or
// its end (the close code, -1 without one), returning what came before.
func readUntil(c *v1Client, mark string) ([]string, int) {
	var got []string
	_ = c.SetReadDeadline(time.Now().Add(testDeadline))
	for {
		_, data, err := c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return got, ce.Code
			}
			return got, -1
		}
		if mark != "" && strings.Contains(string(data), mark) {
			return got, 0
		}
		got = append(got, string(data))
	}
}

// Fences pushed on an owner's stream are answers numbered as written, in
// between the acks of the owner's batches: the owner checks each answer's
// MAC against the next number, so a push and an ack written out of their
// numbers' order would end the stream. Many takeovers at once, on a stream
// busy with msgs (sync: each ack waits for the replica's), must fence
// exactly the sessions taken over, keep every other session acknowledging,
// and never break the stream.
func TestPushedFencesInterleaveWithAcks(t *testing.T) {
	const (
		sessions  = 40
		takenOver = 20
		msgs      = 60
	)
	a, b, _ := replPair(t, configs.ReplicationSync, "interleave")
	keys := make([]string, sessions)
	clients := make([]*v1Client, sessions)
	for i := range keys {
		keys[i] = keyOwnedBy(fmt.Sprintf("interleave%d", i), "edge-a", "edge-a", "edge-b")
		clients[i] = a.joinV1(t, keys[i], "", nil)
	}
	rb := b.s.hub.repl.Load()
	waitFor(t, "edge-a's stream to edge-b", func() bool { return inboundFrom(rb, "edge-a") != nil })
	stream := inboundFrom(rb, "edge-a")
	// edge-b cannot dial edge-a: every fence goes on edge-a's own stream,
	// pushed or in answer to a record of a session taken over.
	stopAccepting(a)

	type result struct {
		acked int
		code  int // 0: every msg acknowledged
	}
	results := make([]result, sessions)
	started := make(chan struct{}, sessions)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			// Every session says once that it is under way: after 5 msgs,
			// or when it ends before (then its result below says how;
			// before, the test waited for it for ever).
			told := false
			tell := func() {
				if !told {
					told = true
					started <- struct{}{}
				}
			}
			defer tell()
			// A session taken over sends until it is fenced (its takeover
			// may come after any number of msgs), for testDeadline at most.
			limit, until := msgs, time.Now().Add(testDeadline)
			if i < takenOver {
				limit = math.MaxInt
			}
			for n := range limit {
				if n == 5 {
					tell()
				}
				if time.Now().After(until) {
					return // never fenced: code 0, reported below
				}
				// A write to a fenced session may fail: its end is read below.
				_ = c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"msg","data":%d}`, n))
				if _, code := readAck(c); code != 0 {
					results[i].code = code
					return
				}
				results[i].acked++
			}
		})
	}
	for range sessions {
		<-started
	}
	// The takeovers, all at once, while the msgs flow.
	var takeovers sync.WaitGroup
	for i := range takenOver {
		takeovers.Go(func() {
			g := b.joinSkipping(t, keys[i], "", "edge-a")
			g.Close()
		})
	}
	takeovers.Wait()
	wg.Wait()

	for i, r := range results {
		switch {
		case i < takenOver && r.code != closeServiceRestart:
			t.Errorf("session %d, taken over: ended %d after %d acks, want 1012", i, r.code, r.acked)
		case i >= takenOver && (r.code != 0 || r.acked != msgs):
			t.Errorf("session %d, not taken over: %d of %d msgs acknowledged, ended %d", i, r.acked, msgs, r.code)
		}
	}
	if v := metricValue(t, a.s, "ringlb_edge_replication_fenced_total"); v != takenOver {
		t.Errorf("edge-a fenced %v sessions, want %d", v, takenOver)
	}
	if now := inboundFrom(rb, "edge-a"); now != stream {
		t.Errorf("edge-a's stream to edge-b began anew: an answer's number was out of order")
	}
	t.Logf("%d answers written on the stream, %d fences pushed among them", answersSent(stream), stream.pushed.Load())
}

// An owner reads its replica's answers up to maxAnswerBatch. Fences pushed
// all in one batch — what waits for an owner that was declared dead and
// comes back, every session of it promoted at once — passed that past
// some eighteen thousand sessions with 200-byte keys: the owner ended the
// stream, dialed again, and the new stream pushed the same batch, for as
// long as the fences were kept (fenceTTL), and the owner was never told.
// Pushed fences go in batches that fit.
func TestManyPushedFencesFitTheOwnersBatches(t *testing.T) {
	const fences = 20_000
	a, b, key := replPair(t, configs.ReplicationSync, "manyfences")
	p := a.joinV1(t, key, "", nil)
	p.msg(t, "before")
	p.readType(t, "ack")
	rb := b.s.hub.repl.Load()
	waitFor(t, "edge-a's stream to edge-b", func() bool { return inboundFrom(rb, "edge-a") != nil })
	// edge-b cannot dial edge-a: the fences go on edge-a's stream alone.
	stopAccepting(a)

	// edge-b took over sessions of edge-a's while edge-a was away (term
	// 2); their fences wait for edge-a.
	fencesWaiting(b, "edge-a", fences)
	// edge-a's stream begins anew: every fence waiting goes on it.
	old := inboundFrom(rb, "edge-a")
	old.conn.NetConn().Close()
	waitFor(t, "a new stream from edge-a", func() bool {
		s := inboundFrom(rb, "edge-a")
		return s != nil && s != old && answersSent(s) > 0
	})
	stream := inboundFrom(rb, "edge-a")
	waitFor(t, "the fences pushed, or the stream ended", func() bool {
		return stream.pushed.Load() == fences || inboundFrom(rb, "edge-a") != stream
	})
	if inboundFrom(rb, "edge-a") != stream {
		t.Fatalf("edge-a's stream to edge-b ended as %d fences were pushed (%d written)", fences, stream.pushed.Load())
	}
	// edge-a's session goes on, on that stream (sync: each ack waits for
	// edge-b's, written after the fences: edge-a reads them first).
	for i := range 3 {
		p.msg(t, i)
		if got, code := readAck(p); code != 0 {
			t.Fatalf("edge-a's session was closed %d after %q", code, got)
		}
		if inboundFrom(rb, "edge-a") != stream {
			t.Fatalf("edge-a's stream to edge-b began anew after %d fences were pushed (msg %d)", fences, i)
		}
	}
	t.Logf("%d fences pushed at once; %d answers written on edge-a's stream", fences, answersSent(stream))
}

// The same on the stream the promoting edge opens to the stale owner: every
// fence waiting for it went in the stream's first batch, past what the
// owner reads of one (its read limit), and each new stream sent it again.
func TestManyFencesFitTheReplicaStreamsBatches(t *testing.T) {
	const fences = 20_000
	_, b, _ := replPair(t, configs.ReplicationSync, "manylinkfences")
	rb := b.s.hub.repl.Load()
	fencesWaiting(b, "edge-a", fences)
	// A membership change: edge-b opens a stream to edge-a to tell them.
	rb.membershipChanged(false)
	rb.mu.Lock()
	l := rb.links["edge-a"]
	rb.mu.Unlock()
	if l == nil {
		t.Fatal("no stream to edge-a for its fences")
	}
	told := func() (done bool, gen uint64) {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.connected && len(l.fencesDue) == 0 && len(l.building) == 0 && len(l.inflight) == 0, l.gen
	}
	waitFor(t, "every fence told, or a second stream", func() bool {
		done, gen := told()
		return done || gen > 1
	})
	if _, gen := told(); gen != 1 {
		t.Fatalf("edge-b's stream to edge-a began anew (stream %d) telling %d fences", gen, fences)
	}
}

// fencesWaiting makes e hold n sessions it took over from stale (term 2,
// keys of 206 bytes), their fences waiting for stale.
func fencesWaiting(e *clusterEdge, stale string, n int) {
	r := e.s.hub.repl.Load()
	now := time.Now()
	for i := range n {
		k := fmt.Sprintf("taken-%0200d", i)
		sh := e.s.hub.shardOf(k)
		sh.mu.Lock()
		sh.sessions[k] = &session{key: k, created: now, v1: &v1Session{epoch: "E", term: 2}}
		sh.mu.Unlock()
		r.mu.Lock()
		r.fences[stale] = append(r.fences[stale], pendingFence{key: k, term: 2, at: now})
		r.mu.Unlock()
	}
}

// stopAccepting closes e's listeners: e takes no new connection (its
// backlog full, as far as anyone dialing it can tell); what it has keeps
// working.
func stopAccepting(e *clusterEdge) {
	e.s.mu.Lock()
	defer e.s.mu.Unlock()
	for _, ln := range e.s.listeners {
		ln.Close()
	}
}
