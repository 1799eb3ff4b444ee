package health

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// memberlist keeps no record of the packets it has taken: a pin an edge
// broadcast, captured on the wire, decrypts again when someone without the
// key sends it later. A tombstone refuses it where the unpin was heard;
// a node that learnt the edge's pins from its whole set (push/pull) — one
// joined since, or one the unpin's broadcast missed — had no tombstone and
// took the pin again: that node sent the session's joins to the edge, which
// no longer has it and whose ring sends them back (to an owner that may
// have taken the pin too), for as long as the replay went on. The edge's
// set, merged, says what it had pinned up to its sequence then: an
// operation numbered at or below it is old news.
func TestReplayedPinIsNotTakenAgain(t *testing.T) {
	key := writeKey(t, 32)
	balancer := Meta{Role: RoleBalancer, Region: "east", State: StateAlive}
	cfg := testCluster("observer")
	cfg.SecretKeyFile = key
	observer := startNode(t, cfg, balancer)

	var rec *recordingTransport
	testHookTransport = func(_ string, tr memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		rec = &recordingTransport{NodeAwareTransport: tr, to: observer.Addr()}
		return rec
	}
	ecfg := testCluster("edge-a", observer.Addr())
	ecfg.SecretKeyFile = key
	edge, err := joinOn(t.Context(), ecfg, edgeMeta(1), nil, nil, tuning{})
	testHookTransport = nil
	if err != nil {
		t.Fatal(err)
	}
	stopAtCleanup(t, edge)

	const h = 0x5e55107
	edge.Pin(h)
	waitFor(t, "the pin reaches the observer, every retransmission sent", func() bool {
		n, ok := observer.PinnedTo(h)
		return ok && n.Name == edge.LocalName() && edge.pins.queue.NumQueued() == 0
	})
	capture := rec.captured()
	edge.Unpin(h)
	waitFor(t, "the unpin reaches the observer, every retransmission sent", func() bool {
		_, ok := observer.PinnedTo(h)
		return !ok && edge.pins.queue.NumQueued() == 0
	})

	// A balancer joins since: it learns the edge's pins from its set.
	var stale atomic.Int64
	lcfg := testCluster("late", observer.Addr())
	lcfg.SecretKeyFile = key
	late := startTuned(t, lcfg, balancer, countingLogger(errPinStale.Error(), &stale), tuning{})
	waitFor(t, "the late balancer has merged the edge's set", func() bool {
		late.pins.mu.Lock()
		defer late.pins.mu.Unlock()
		o := late.pins.remote[edge.LocalName()]
		return o != nil && o.stateSeq > 0
	})

	stop := replayLoop(t, late.Addr(), capture, 100*time.Millisecond)
	defer stop()
	var taken bool
	waitFor(t, "the replayed pin taken or refused", func() bool {
		_, taken = late.PinnedTo(h)
		return taken || stale.Load() > 0
	})
	t.Logf("%d packets of the edge's pin replayed to a node that joined after its unpin: pin taken again %v, refused %d times", len(capture), taken, stale.Load())
	if taken {
		t.Errorf("a replayed pin of a session the edge has unpinned sends its joins to the edge again")
	}
}

// The floor a node's set sets is its own process's: a node back from a
// leave may be a new process, numbering from its start time, below its
// earlier life's where the wall clock stepped back in between. Its set
// and operations are taken, and its next set is the floor again.
func TestPinsOfARestartBehindTheClockAreTaken(t *testing.T) {
	b := newPinTable("b", everyone, func() int { return 2 }, 4)
	a := newPinTable("a", everyone, func() int { return 2 }, 4)
	a.seq += uint64(time.Hour) // its clock an hour ahead
	a.set(8, true)
	if err := b.merge(a.state()); err != nil {
		t.Fatal(err)
	}
	b.left("a", time.Now())
	b.back("a") // restarted, the clock put right
	a2 := newPinTable("a", everyone, func() int { return 2 }, 4)
	a2.set(9, true)
	for _, m := range a2.queue.GetBroadcasts(0, 1<<16) {
		if err := b.receive(m); err != nil {
			t.Errorf("the new life's pin: %v", err)
		}
	}
	if err := b.merge(a2.state()); err != nil {
		t.Errorf("the new life's set: %v", err)
	}
	if n, ok := b.holder(9, false, nil); !ok || n != "a" {
		t.Errorf("the new life's pin is not taken: %q %v", n, ok)
	}
	// Its set is the floor again: a pin it numbered below, sent again, is not.
	stale := []byte{msgPinOp, 1, 'a', 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 7}
	if err := b.receive(stale); !errors.Is(err, errPinStale) {
		t.Errorf("a pin numbered below the new life's set: %v, want %v", err, errPinStale)
	}
}
