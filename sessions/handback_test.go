package sessions

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// A session fenced away from its owner comes back to it by a drain: edge-a
// yielded the session to edge-b (a balancer could not reach edge-a, edge-b
// took it over), and keeps its frozen copy for idle_grace. Within that
// minute edge-b drains, and the session's owner without edge-b is edge-a
// again: the hand-off carries edge-b's history, newer than the frozen copy,
// and the clients resume on edge-a from it with nothing lost — not reset
// because the stale copy was in the way.
func TestHandOffBackToAFencedOwner(t *testing.T) {
	parallel(t)
	a, b, key, epoch, g := takenOver(t, "handback")
	for i := range 3 {
		g.msg(t, "on b "+strconv.Itoa(i))
		g.readType(t, "ack")
	}

	drained := startDrain(b)
	if _, code := readUntilClose(g); code != closeServiceRestart {
		t.Fatalf("the draining edge's participant ended with %d, want 1012", code)
	}
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
	r := a.joinV1(t, key, "resume=1&epoch="+epoch, nil)
	if r.welcome.Epoch != epoch {
		t.Fatalf("welcome back on edge-a %+v, want epoch %s (the session edge-b handed on)", r.welcome, epoch)
	}
	// Sequenced on edge-b after a takeover, the msgs follow the seqs it
	// set aside for any the old owner may have sequenced unseen.
	var last uint64 = 1
	for i := range 3 {
		m := r.readType(t, "msg")
		if want := `"on b ` + strconv.Itoa(i) + `"`; string(m.Data) != want || m.Seq <= last {
			t.Fatalf("replay %d: %+v, want %s after seq %d", i, m, want, last)
		}
		last = m.Seq
	}
	if last != r.welcome.Seq {
		t.Fatalf("replay ended at seq %d, welcome said %d", last, r.welcome.Seq)
	}
}

// A session fenced away from its owner whose new edge is gone since: a
// balancer that cannot reach edge-b sends the key's clients to edge-a,
// which yielded the session to edge-b and keeps the frozen copy for
// idle_grace. The replica copy edge-b kept here is newer: the join resumes
// from it, nothing lost, rather than being closed 1012 for the frozen copy.
func TestJoinPastAFrozenSessionWhoseEdgeIsGone(t *testing.T) {
	a, _, key, epoch, g := takenOver(t, "frozengone")
	g.msg(t, "on b")
	g.readType(t, "ack")

	r := a.joinSkipping(t, key, "resume=1&epoch="+epoch, "edge-b")
	if r.welcome.Epoch != epoch {
		t.Fatalf("welcome on edge-a skipping edge-b %+v, want epoch %s", r.welcome, epoch)
	}
	if m := r.readType(t, "msg"); string(m.Data) != `"on b"` || m.Seq != r.welcome.Seq {
		t.Fatalf("replay %+v, want edge-b's msg at seq %d", m, r.welcome.Seq)
	}
}

// The same with no copy of edge-b's session here (its stream to edge-a
// never carried one: edge-a was cut off when edge-b took over), edge-b
// gone since: the frozen copy names an edge that is gone, so the key is
// nobody's, as lookup already says. A join starts the session anew here
// (a resuming client is told so by a reset), rather than being closed 1012
// at every try until the frozen copy's idle_grace runs out. In the relay
// core: end to end, an edge that learns its peer is gone promotes the
// copy it holds at once, so "no copy" is a race to set up there.
func TestJoinPastAFrozenSessionWithNoCopy(t *testing.T) {
	ph := newPresenceHub(t)
	key := []byte("net")
	ph.join("A")
	frozen := ph.ps["A"].session
	frozen.mu.Lock()
	frozen.movedTo = "edge-b" // yielded to edge-b, as yield sets it
	frozen.mu.Unlock()

	if redirect := ph.h.reserve(key, "edge-a", goneEdges{}); redirect != "edge-b" {
		t.Fatalf("a join while edge-b is alive sent to %q, want edge-b", redirect)
	}
	ph.h.unreserve(key)
	if redirect := ph.h.reserve(key, "edge-a", goneEdges{skip: []string{"edge-b"}}); redirect != "" {
		t.Fatalf("a join once edge-b is gone sent to %q, want it here", redirect)
	}
	p := ph.newParticipant("B")
	p.admitted = true
	if err := ph.h.join(key, p); err != nil {
		t.Fatalf("join past the frozen session of a gone edge: %v", err)
	}
	if p.session == frozen {
		t.Fatal("joined the frozen session")
	}
	ph.leave("A") // the frozen session's participant, closing
	if !ph.h.has(key) || len(p.session.participants) != 1 {
		t.Fatal("the frozen session's last leave took the new session with it")
	}
}

// takenOver starts edge-a and edge-b (sync replication) and a session of a
// key edge-a owns, its one participant having sent a msg there; then a
// balancer that cannot reach edge-a sends a client to edge-b, which takes
// the session over (g, resumed at seq 1 of epoch), and edge-a yields it,
// its participant closed 1012 and the session frozen there.
func takenOver(t *testing.T, prefix string) (a, b *clusterEdge, key, epoch string, g *v1Client) {
	t.Helper()
	a, b, key = replPair(t, configs.ReplicationSync, prefix)
	p1 := a.joinV1(t, key, "", nil)
	p1.msg(t, "on a")
	p1.readType(t, "ack")
	epoch = p1.welcome.Epoch
	g = b.joinSkipping(t, key, "resume=1&epoch="+epoch, "edge-a")
	if _, code := readUntilClose(p1); code != closeServiceRestart {
		t.Fatalf("the fenced owner's participant ended with %d, want 1012", code)
	}
	return a, b, key, epoch, g
}

// A frozen session replaced (by a hand-off coming back, a promotion, a join
// past it) while its participants were still closing: when the last of
// them leaves, it is nobody's session any more — freed then, not kept
// idle for idle_grace, holding an idle slot and its history for a key
// another session serves.
func TestReplacedFrozenSessionIsFreedWhenItEmpties(t *testing.T) {
	ph := newPresenceHub(t)
	ph.h.idleGrace = time.Hour
	ph.join("A")
	frozen := ph.ps["A"].session
	frozen.mu.Lock()
	frozen.movedTo = "edge-b" // yielded to edge-b, as yield sets it
	frozen.mu.Unlock()
	if !ph.h.install(handoffSession{Key: "net", Epoch: "E", Seq: 1, Term: 2, History: []json.RawMessage{json.RawMessage(`{"type":"msg","seq":1}`)}}, "", goneEdges{}) {
		t.Fatal("the hand-off back was refused")
	}
	ph.leave("A") // the frozen session's last participant, closing
	if n := ph.h.idle.count.Load(); n != 1 {
		t.Fatalf("%d idle sessions, want 1: the installed one, not the frozen one it replaced", n)
	}
}
