package sessions

import (
	"fmt"
	"testing"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// A session that ended while its owner's stream to the replica was down
// leaves no copy once the stream is back: its free was never written, and
// the owner, which sends every session it still has whole on a stream
// begun anew, says when it has (a synced record); the replica drops what
// that owner did not send again. Before, the copy stayed until a sweep
// staleCopyAge (a minute) after the stream began: an owner's crash within
// it promoted the ended session, and a new join got its epoch and history
// back.
func TestSessionEndedWhileTheStreamWasDownIsNotPromoted(t *testing.T) {
	parallel(t)
	cl := healthtest.New(t)
	var toB *cuttableProxy
	a := startReplEdge(t, cl, "edge-a", configs.ReplicationSync, nil)
	b := startReplEdge(t, cl, "edge-b", configs.ReplicationSync, func(data string) string {
		toB = startCuttableProxy(t, data)
		return toB.ln.Addr().String()
	})
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	var keys []string
	for i := 0; len(keys) < 2; i++ {
		if k := fmt.Sprintf("resynced-%d", i); ownerOf(k, "edge-a", "edge-b") == "edge-a" {
			keys = append(keys, k)
		}
	}
	kept, ended := keys[0], keys[1]
	p := a.joinV1(t, kept, "", nil)
	defer p.Close()
	q := a.joinV1(t, ended, "", nil)
	for i := range 3 {
		p.msg(t, i)
		p.readType(t, "ack")
		q.msg(t, i)
		q.readType(t, "ack")
	}
	epoch := q.welcome.Epoch
	waitCopy(t, b, kept, 3)
	waitCopy(t, b, ended, 3)

	toB.cut()
	healthtest.WaitUntil(t, "edge-a's stream to edge-b ended", func() bool { return inboundFrom(b.s.hub.repl.Load(), "edge-a") == nil })
	q.leave(t)
	waitFor(t, "the left session idle on edge-a", func() bool { return a.s.hub.idle.count.Load() == 1 })
	a.s.hub.idle.limit.Store(0)
	a.s.hub.trimIdle()
	a.s.hub.idle.limit.Store(int64(configs.DefaultMaxIdleSessions))
	if a.s.hub.has([]byte(ended)) || !a.s.hub.has([]byte(kept)) {
		t.Fatal("the idle session did not end alone on edge-a")
	}
	if _, _, _, ok := copyOf(b, ended); !ok {
		t.Fatal("edge-b dropped the ended session's copy with the stream cut")
	}

	toB.heal()
	p.msg(t, "after the heal") // acknowledged once replicated: the stream is back
	p.readType(t, "ack")
	healthtest.WaitUntil(t, "edge-a's stream to edge-b back", func() bool { return inboundFrom(b.s.hub.repl.Load(), "edge-a") != nil })
	waitCopy(t, b, kept, 4)
	healthtest.WaitUntil(t, "edge-b dropped the copy of the session edge-a no longer has", func() bool {
		_, _, _, ok := copyOf(b, ended)
		return !ok
	})

	a.crash(t)
	waitRing(t, []*clusterEdge{b}, "edge-b")
	g := b.joinV1(t, ended, "", nil)
	defer g.Close()
	t.Logf("a join of the ended session's key on edge-b after edge-a's crash: epoch %s (the ended session's: %v), seq %d", g.welcome.Epoch, g.welcome.Epoch == epoch, g.welcome.Seq)
	if g.welcome.Epoch == epoch {
		t.Errorf("the session ended on edge-a came back on edge-b at seq %d", g.welcome.Seq)
	}
}
