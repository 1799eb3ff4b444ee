package sessions

import (
	"testing"
	"time"

	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// A join must never see an edge's new ring without the view it replaced:
// a key the new ring gives this edge is checked with its owners of the
// recent views (previousOwners), which host it until a hand-off arrives.
// Here edge-a hosts a session and announces a drain; edge-b's ring leaves
// edge-a while o.mu is held (as a concurrent join's previousOwners holds
// it). Whatever edge-b's ring says meanwhile, a join placed on it must find
// edge-a: before, the new ring was published first and its view of edge-a
// recorded only once o.mu was free, and a join placed in between started a
// second session (the chaos drain's rare resets: the hand-off then found
// the key hosted, and its clients got the new session's epoch).
func TestRingChangeRemembersThePreviousOwnerFirst(t *testing.T) {
	parallel(t)
	a, b, key := startDrainPair(t, "changing")
	p := a.joinV1(t, key, "", nil)
	defer p.Close()

	o := b.s.hub.owner.Load()
	o.mu.Lock()
	held := true
	defer func() {
		if held {
			o.mu.Unlock()
		}
	}()
	// What ringlb edge does on a drain: announce it, so rings leave a. The
	// session stays live on a (no hand-off here).
	if err := a.m.UpdateMeta(t.Context(), func(m *health.Meta) { m.State = health.StateDraining }); err != nil {
		t.Fatal(err)
	}
	healthtest.WaitUntil(t, "edge-b sees edge-a draining", func() bool {
		n, ok := b.m.Node("edge-a")
		return ok && n.Meta.State == health.StateDraining
	})
	// edge-b's ownership goroutine takes the change now. This bound only
	// decides whether the race is seen: a ring published before o.mu is
	// taken shows within it (fixed, the ring stays until o.mu is free).
	for start := time.Now(); o.ring.Snapshot().Len() == 2 && time.Since(start) < 2*time.Second; {
		time.Sleep(5 * time.Millisecond)
	}
	// What a join placed now reads: the ring, then (o.mu) the past views.
	if owner, _ := o.ring.Snapshot().Locate([]byte(key)); owner.Name == "edge-b" {
		asked := false
		for _, v := range o.past {
			if m, ok := v.snap.Locate([]byte(key)); ok && m.Name == "edge-a" {
				asked = true
			}
		}
		if !asked {
			t.Fatalf("edge-b's ring gives %s to edge-b and no recent view names edge-a, which hosts it: a join placed now starts a second session", key)
		}
	}
	o.mu.Unlock()
	held = false
	waitRing(t, []*clusterEdge{b}, "edge-b")
	if got := dialExpect421(t, b, key); got != "edge-a" {
		t.Fatalf("edge-b sent a join for %s to %q, want edge-a (it hosts the session)", key, got)
	}
}
