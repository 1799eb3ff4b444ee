package sessions

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
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

// holdingView is a hidingView whose next look at the edges, once armed, is
// followed by hold before the edge goes on with what it read.
type holdingView struct {
	*hidingView
	hold atomic.Pointer[func()]
}

func (v *holdingView) Edges(region string) []health.Node {
	edges := v.hidingView.Edges(region)
	if hold := v.hold.Swap(nil); hold != nil {
		(*hold)()
	}
	return edges
}

// Two callers rebuild an edge's ring from the membership as it is now (its
// update loop on a change, a drain's handOn): the ring must end on the
// later view, not on one a caller read before another's rebuild and
// applied after it. Before, the members were read before o.mu was taken:
// the first caller here applied its view of two edges after the second had
// applied the one without edge-a, and the edge kept a ring balancers no
// longer route by until the next membership change, which a quiet cluster
// never makes.
func TestEdgeRebuildsEndOnTheLatestView(t *testing.T) {
	parallel(t)
	cl := healthtest.New(t)
	a := startClusterEdge(t, cl, "edge-a")
	var view *holdingView
	b := startReplEdgeViewing(t, cl, "edge-b", configs.Edge{}, nil, func(m *health.Membership) Membership {
		view = &holdingView{hidingView: newHidingView(m)}
		return view
	})
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	o := b.s.hub.owner.Load()

	read, firstDone, secondDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	hold := func() {
		close(read)
		// Hold the view read while the membership changes and a second
		// caller rebuilds. That caller cannot read before this one applies
		// its view when members are read under the lock serializing
		// rebuilds; the wait then only ends the hold.
		select {
		case <-secondDone:
		case <-time.After(time.Second):
		}
	}
	view.hold.Store(&hold)
	go func() {
		defer close(firstDone)
		o.rebuild()
	}()
	<-read
	// edge-a taken for dead, unsignalled (hide would signal): the update
	// loop stays out, the two rebuilds here are the only ones.
	gone := "edge-a"
	view.hidden.Store(&gone)
	go func() {
		defer close(secondDone)
		o.rebuild()
	}()
	<-firstDone
	<-secondDone
	if ms := b.s.hub.owner.Load().ring.Snapshot().Members(); len(ms) != 1 || ms[0].Name != "edge-b" {
		t.Fatalf("edge-b's ring is %v after both rebuilds returned, its view [edge-b]", ms)
	}
}
