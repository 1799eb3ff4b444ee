package sessions

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/ringlb/ringlb/configs"
)

// streamGen returns how many streams e's link to peer has begun (0: none).
func streamGen(e *clusterEdge, peer string) uint64 {
	r := e.s.hub.repl.Load()
	r.mu.Lock()
	l := r.links[peer]
	r.mu.Unlock()
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gen
}

// A session's epoch travels on the replication stream as a string of at
// most 255 bytes (replwire.go), and a hand-off's epoch was taken at any
// length. An epoch of 300 bytes, handed on by a confused peer, made the
// new owner's snapshot of it a record its replica could not parse: the
// replica ended the stream, the owner dialed again and sent every session
// whole, the bad one among them, for as long as the session lived — every
// session it replicated there lost its replica meanwhile. Now a hand-off's
// session of an epoch the stream cannot carry is refused.
func TestHandoffEpochTheStreamCannotCarryIsRefused(t *testing.T) {
	a, b, key := replPair(t, configs.ReplicationSync, "epoch-poison")
	a.twoTalking(t, key, 1)
	waitCopy(t, b, key, 1)
	gen := streamGen(a, "edge-b")

	bad := keyOwnedBy("epoch-poison-handed", "edge-a", "edge-a", "edge-b")
	env, _ := json.Marshal(map[string]any{"type": "msg", "seq": 1, "data": "x"})
	req := &handoffRequest{From: "edge-b", Sessions: []handoffSession{{
		Key: bad, Epoch: strings.Repeat("E", 300), Seq: 1, Term: 1, History: []json.RawMessage{env},
	}}}
	if _, err := b.s.hub.owner.Load().send(context.Background(), "edge-a", "http://"+a.data, req); err != nil {
		t.Fatal(err)
	}
	installed, _ := a.s.hub.lookup([]byte(bad), "edge-a", goneEdges{})

	// edge-a's own session goes on replicating, on the same stream.
	fiveMoreReplicated(t, a, b, key)
	restarts := streamGen(a, "edge-b") - gen
	t.Logf("hand-off of a 300-byte epoch installed: %v; edge-a's stream to edge-b began anew %d times over 5 msgs", installed, restarts)
	if installed {
		t.Error("a session of an epoch the replication stream cannot carry was installed")
	}
	if restarts != 0 {
		t.Errorf("the stream to the replica began anew %d times", restarts)
	}
}

// A session's replica drops its copy when the session ends or moves to
// another replica: the owner sends a free. It sent one only while the
// session was in step with the stream — not while it waited to be sent
// whole again because its records had not fit the stream's queue (a
// replica 4 MiB behind: unsync). A session that ended in that window left
// its copy, history and all, on the replica for as long as the owner
// lived: the stream never began anew, so no sweep dropped it, and copies
// are never idle, so the edge's history budget never took it back.
func TestCopyOfASessionEndedOutOfStepIsFreed(t *testing.T) {
	a, b, key := replPair(t, configs.ReplicationSync, "leak")
	p1, p2 := a.twoTalking(t, key, 3)
	waitCopy(t, b, key, 3)
	p1.leave(t)
	p2.leave(t)

	// The queue overflows (replicate's unsync) and the session ends before
	// its snapshot goes out again: its idle_grace runs out, or the idle
	// sessions' bound takes it.
	h := a.s.hub
	sh := h.shardOf(key)
	sh.mu.Lock()
	s := sh.sessions[key]
	s.mu.Lock()
	l := s.repl
	l.mu.Lock()
	l.unsync(s)
	l.mu.Unlock()
	h.freeIdle(sh, s)
	s.mu.Unlock()
	sh.mu.Unlock()

	// A later session's msg, acknowledged by the replica, comes after
	// whatever the owner queued for it before.
	marker := keyOwnedBy("leak-marker", "edge-a", "edge-a", "edge-b")
	a.twoTalking(t, marker, 1)
	waitCopy(t, b, marker, 1)
	_, _, _, kept := copyOf(b, key)
	t.Logf("copy of the session ended out of step still on the replica: %v", kept)
	if kept {
		t.Error("the replica keeps the copy of a session its owner ended")
	}
}

// What waits for a replica is bounded by maxLinkQueue for records of msgs
// only: a session's free (it ended, or its replica moved) and a fence are
// queued whatever the queue holds, and the whole queue went out as one
// batch — past the replica's read limit (maxLinkQueue and a message, and
// 64 KiB), which ended the stream: the owner dialled again and sent every
// session whole. Many sessions ending or moving at once (a ring change
// moving the replicas of tens of thousands) do it; the attack queues the
// frees of 1,200 sessions of 4 KiB keys, about 4.7 MiB, on a live stream.
// Now a batch carries records up to maxLinkQueue (one at least) and what
// is left goes in the next, the waiting msgs' commits with the last.
func TestManyFreesAtOnceKeepTheStream(t *testing.T) {
	a, b, key := replPair(t, configs.ReplicationSync, "frees")
	a.twoTalking(t, key, 1)
	waitCopy(t, b, key, 1)
	gen := streamGen(a, "edge-b")
	r := a.s.hub.repl.Load()
	r.mu.Lock()
	l := r.links["edge-b"]
	r.mu.Unlock()
	// Queued while the writer is busy with the batch before (a replica
	// behind, a stalled process): one batch's worth together, as detach
	// appends each.
	long := strings.Repeat("k", 4000) // with its number, within MaxKeyLength
	l.mu.Lock()
	for i := range 1200 {
		l.building = appendFree(l.building, 1, fmt.Sprintf("%s-%d", long, i))
	}
	l.mu.Unlock()
	l.kick()

	// edge-a's own session goes on replicating, on the same stream.
	fiveMoreReplicated(t, a, b, key)
	restarts := streamGen(a, "edge-b") - gen
	t.Logf("1,200 frees of 4 KiB keys queued at once: the stream to edge-b began anew %d times", restarts)
	if restarts != 0 {
		t.Errorf("the stream to the replica began anew %d times", restarts)
	}
}

// fiveMoreReplicated has a participant of key's session on a (which holds
// one msg) send five more, each acknowledged, and waits until b's copy
// has them.
func fiveMoreReplicated(t *testing.T, a, b *clusterEdge, key string) {
	t.Helper()
	p := a.joinV1(t, key, "", nil)
	for i := range 5 {
		p.msg(t, i)
		p.readType(t, "ack")
	}
	waitCopy(t, b, key, 6)
}
