package ring

import (
	"slices"
	"testing"
	"time"
)

// cachedWithout counts the Without rings kept on s and on the rings
// derived from it.
func cachedWithout(s *Snapshot) int {
	s.withoutMu.Lock()
	defer s.withoutMu.Unlock()
	n := 0
	for _, e := range s.without {
		if w := e.ring; w != nil {
			n += 1 + cachedWithout(w)
		}
	}
	return n
}

// without is the ring of ms less the member named name, built afresh.
func without(cfg Config, ms []Member, name string) *Snapshot {
	return New(cfg).Update(slices.DeleteFunc(slices.Clone(ms), func(m Member) bool { return m.Name == name }))
}

// TestWithoutCacheStaysWithinItsBudget: a balancer builds a Without ring
// for each owner it fails to dial (Candidates), and an edge one for each
// edge a claim takes for dead, for as long as the ring version lasts.
// Kept all, every edge failing before gossip dropped it was a whole ring
// each (4 MB at 1<<20 partitions): GBs for one version. Past the budget
// the ring is built for the call alone, and answers the same.
func TestWithoutCacheStaysWithinItsBudget(t *testing.T) {
	cfg := Config{Partitions: 271, Replication: 20, Load: 1.25}
	ms := members(40)
	s := New(cfg).Update(ms)
	const room = 4
	s.fam.cacheLeft.Store(room * ringBytes(cfg, len(ms)-1))
	ks := keys(500)
	for i, m := range ms {
		w := s.Without(m.Name)
		if got, want := owners(w, ks), owners(without(cfg, ms, m.Name), ks); !slices.Equal(got, want) {
			t.Fatalf("the ring without %s places keys otherwise than one built without it", m.Name)
		}
		// And the ring less a second member too (two edges failed).
		next := ms[(i+1)%len(ms)].Name
		rest := slices.DeleteFunc(slices.Clone(ms), func(x Member) bool { return x.Name == m.Name })
		if got, want := owners(w.Without(next), ks), owners(without(cfg, rest, next), ks); !slices.Equal(got, want) {
			t.Fatalf("the ring without %s and %s places keys otherwise than one built without them", m.Name, next)
		}
		if w.Version() != s.Version() {
			t.Fatalf("the ring without %s has version %d, want %d", m.Name, w.Version(), s.Version())
		}
	}
	n := cachedWithout(s)
	t.Logf("%d members failed, each with a second: %d rings kept, room for %d", len(ms), n, room)
	if n > room {
		t.Fatalf("%d Without rings kept, room for %d", n, room)
	}
}

// TestWithoutBuildHoldsUpNoOtherName: a Without ring is seconds to build
// on a large ring, on the request path (Candidates when the owner is
// suspect). One lock held across every build made a request whose owner's
// ring was already built wait for another owner's build.
func TestWithoutBuildHoldsUpNoOtherName(t *testing.T) {
	cfg := Config{Partitions: 271, Replication: 20, Load: 1.25}
	ms := members(5)
	s := New(cfg).Update(ms)
	cached := s.Without("edge-1")
	started, release := make(chan struct{}), make(chan struct{})
	s.fam.building = func(name string) {
		if name == "edge-2" {
			close(started)
			<-release
		}
	}
	slow := make(chan *Snapshot, 1)
	go func() { slow <- s.Without("edge-2") }()
	<-started
	got := make(chan *Snapshot, 1)
	go func() { got <- s.Without("edge-1") }()
	select {
	case w := <-got:
		if w != cached {
			t.Error("the ring without edge-1 was built again")
		}
	case <-time.After(10 * time.Second):
		close(release)
		<-slow
		<-got
		t.Fatal("the ring without edge-1, built already, waited for the ring without edge-2 to be built")
	}
	// A second caller for the ring being built waits for that build.
	again := make(chan *Snapshot, 1)
	go func() { again <- s.Without("edge-2") }()
	close(release)
	w := <-slow
	if <-again != w {
		t.Error("the ring without edge-2 was built twice")
	}
	ks := keys(500)
	if got, want := owners(w, ks), owners(without(cfg, ms, "edge-2"), ks); !slices.Equal(got, want) {
		t.Fatal("the ring without edge-2 places keys otherwise than one built without it")
	}
}
