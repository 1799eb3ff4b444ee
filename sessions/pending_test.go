package sessions

import (
	"fmt"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// Under sync replication, a client that resumes from the last seq it was
// shown, while msgs after it wait for a stopped replica, has missed
// nothing: it gets no reset, however few of the session's msgs its history
// holds (the waiting ones fill it), and the waiting msgs come live once
// the replica answers. Found by FuzzHubReplEvents: a history shorter than
// the msgs waiting answered such a resume reset "history".
func TestResumeWhileMsgsWaitForTheReplica(t *testing.T) {
	parallel(t)
	cl := healthtest.New(t)
	cfg := configs.Edge{
		IdleGrace: configs.Duration(time.Minute), Replication: configs.ReplicationSync,
		// Nothing falls back to async while the test runs: the msgs wait.
		ReplicationTimeout: configs.Duration(10 * time.Second),
		History:            configs.History{Messages: 2},
	}
	a := startReplEdgeWith(t, cl, "edge-a", cfg, nil)
	var proxy *pausableProxy
	b := startReplEdgeWith(t, cl, "edge-b", cfg, func(data string) string {
		proxy = startPausableProxy(t, data)
		return proxy.ln.Addr().String()
	})
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	key := keyOwnedBy("waiting", "edge-a", "edge-a", "edge-b")
	p1 := a.joinV1(t, key, "", nil)
	p1.msg(t, "shown")
	p1.readType(t, "ack")
	epoch := p1.welcome.Epoch

	proxy.setPaused(true)
	for i := range 3 {
		p1.msg(t, i)
	}
	healthtest.WaitUntil(t, "three msgs waiting for the replica", func() bool {
		sh := a.s.hub.shardOf(key)
		sh.mu.Lock()
		s := sh.sessions[key]
		sh.mu.Unlock()
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.v1.pending) == 3
	})
	p2 := a.joinV1(t, key, fmt.Sprintf("resume=1&epoch=%s", epoch), nil)
	if p2.welcome.Seq != 1 {
		t.Fatalf("welcomed at seq %d, want 1 (the waiting msgs are nobody's yet)", p2.welcome.Seq)
	}
	proxy.setPaused(false)
	for want := uint64(2); want <= 4; want++ {
		if m := p2.read(t); m.Type != "msg" || m.Seq != want {
			t.Fatalf("resumed after 1 with msgs 2–4 waiting: got %+v, want msg %d", m, want)
		}
	}
}

// A session whose replica asked for it whole (a resync) while its msgs
// waited, and whose stream then ended before the snapshot went, still has
// its waiting msgs shown by the fallback (replication_timeout): they were
// tracked by nothing — not a batch's commit (the ack of theirs is ignored
// for a session out of step), not an orphan — so no fallback ever showed
// them, and its clients waited until the replica came back or the ring
// changed. Found by FuzzHubReplEvents.
func TestResyncedSessionsWaitingMsgsFallBack(t *testing.T) {
	ph := newPresenceHub(t)
	h := ph.h
	rp := newHubFuzzRepl(h, ph.m)
	defer h.close()
	p := ph.newParticipant("A")
	if err := h.join([]byte("k"), p); err != nil {
		t.Fatal(err)
	}
	rp.ship() // the session's snapshot
	rp.ack(false)
	h.publish(p, []byte(`1`), time.Now())
	rp.ship()           // its record
	rp.l.resyncKey("k") // edge-2 lacks the session: it asks for it whole
	rp.ack(false)       // and acks the batch: no commit, out of step
	rp.streamDown()     // the stream ends before the snapshot goes
	rp.l.mu.Lock()      // replication_timeout runs out
	rp.l.fallBackLocked("the test")
	s := p.session
	s.mu.Lock()
	pending, committed := len(s.v1.pending), s.v1.committed
	s.mu.Unlock()
	var acked []uint64
	es, _ := ph.read(p)
	for _, e := range es {
		if e.Type == "ack" {
			acked = append(acked, e.Seq)
		}
	}
	if pending != 0 || committed != 1 || len(acked) != 1 {
		t.Fatalf("after the fallback: %d msgs pending, committed %d, acks %v; want none pending, 1 committed and acked", pending, committed, acked)
	}
}

// A replica that answers a batch with a resync of a session (it lacks the
// session's copy: it could not apply the session's records) and acks the
// batch: the ack commits none of the session's msgs, even when the link's
// writer sends the session's snapshot before the ack is handled (it runs
// as soon as the resync wakes it). Only the snapshot's ack shows them.
// Committed by the first ack, they were shown, and acknowledged to their
// sender, while the replica had none of them: a crash of the owner then
// lost msgs clients had seen, under sync. Found by FuzzHubReplEvents.
func TestResyncAnswerCommitsNothing(t *testing.T) {
	ph, rp, a, b := replicatedPair(t)
	h := ph.h
	// Edge-2 loses its copy (full, or taken for stale): it answers the
	// next record of the session with a resync.
	rp.r2.store.mu.Lock()
	delete(rp.r2.store.copies, "k")
	rp.r2.store.mu.Unlock()
	h.publish(a, []byte(`1`), time.Now())
	rp.ship()
	ph.read(a)
	ph.read(b)
	rp.ack(true) // the writer sends the snapshot before the ack is handled
	shown := func() (int, int) { return shownTo(ph, a, b) }
	if acks, msgs := shown(); acks != 0 || msgs != 0 || copyIn(rp.r2, "k") != nil {
		t.Fatalf("after the resync's ack: %d acks, %d msgs shown, edge-2's copy %v; want none shown, no copy", acks, msgs, copyIn(rp.r2, "k") != nil)
	}
	rp.ship() // the snapshot, applied and acked
	rp.ack(false)
	if acks, msgs := shown(); acks != 1 || msgs != 1 {
		t.Fatalf("after the snapshot's ack: %d acks, %d msgs shown; want 1, 1", acks, msgs)
	}
}

// A session's replica moved away and back (two ring changes in a row)
// while a batch carrying its msg was on its way: the replica applies that
// batch, then the session's free; the batch's ack came back, and committed
// the msg — shown, and acknowledged to its sender, while the replica had
// dropped it and the session's new snapshot had not come. A crash of the
// owner then lost a msg clients had seen, under sync. The reattachment
// passes the session's turn: only the new snapshot's ack shows the msg.
func TestReplicaMovedAwayAndBackCommitsOnlyItsSnapshot(t *testing.T) {
	ph, rp, a, b := replicatedPair(t)
	h := ph.h
	ph.read(a)
	ph.read(b)
	h.publish(a, []byte(`1`), time.Now())
	rp.ship() // the msg's batch, on its way
	s := a.session
	s.mu.Lock()
	rp.l.detach(s) // the ring moves the replica away: a free
	s.mu.Unlock()
	rp.ship()
	s.mu.Lock()
	rp.l.attach(s) // and back: a snapshot, queued
	s.mu.Unlock()
	rp.l.mu.Lock()
	gen := rp.l.gen
	rp.l.mu.Unlock()
	rp.l.syncSessions(gen)
	rp.ack(false) // the msg's batch applied and acked
	rp.ack(false) // the free applied: edge-2 has no copy
	shown := func() (int, int) { return shownTo(ph, a, b) }
	if acks, msgs := shown(); acks+msgs != 0 && copyIn(rp.r2, "k") == nil {
		t.Fatalf("%d acks, %d msgs shown while edge-2 has no copy of the session", acks, msgs)
	}
	rp.ship() // the snapshot, applied and acked
	rp.ack(false)
	if acks, msgs := shown(); acks != 1 || msgs != 1 || copyIn(rp.r2, "k") == nil {
		t.Fatalf("after the snapshot's ack: %d acks, %d msgs shown, edge-2's copy %v; want 1, 1, a copy", acks, msgs, copyIn(rp.r2, "k") != nil)
	}
}

// replicatedPair is a hub replicating under sync to edge-2 (hubFuzzRepl)
// with participants A and B in session k, whose snapshot edge-2 has
// applied and acked. The hub closes with the test.
func replicatedPair(t *testing.T) (ph *presenceHub, rp *hubFuzzRepl, a, b *participant) {
	t.Helper()
	ph = newPresenceHub(t)
	rp = newHubFuzzRepl(ph.h, ph.m)
	t.Cleanup(ph.h.close)
	a, b = ph.newParticipant("A"), ph.newParticipant("B")
	for _, p := range []*participant{a, b} {
		if err := ph.h.join([]byte("k"), p); err != nil {
			t.Fatal(err)
		}
	}
	rp.ship() // the session's snapshot
	rp.ack(false)
	return ph, rp, a, b
}

// shownTo counts the acks a and the msgs b have read since last read.
func shownTo(ph *presenceHub, a, b *participant) (acks, msgs int) {
	es, _ := ph.read(a)
	for _, e := range es {
		if e.Type == "ack" {
			acks++
		}
	}
	es, _ = ph.read(b)
	for _, e := range es {
		if e.Type == "msg" {
			msgs++
		}
	}
	return acks, msgs
}
