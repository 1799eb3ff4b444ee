package ring

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// cachedWithout counts the Without rings kept on s and on the rings
// derived from it: its family's.
func cachedWithout(s *Snapshot) int {
	f := s.fam
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for e := f.recent.next; e != &f.recent; e = e.next {
		n++
	}
	return n
}

// without is the ring of ms less the member named name, built afresh.
func without(cfg Config, ms []Member, name string) *Snapshot {
	return New(cfg).Update(slices.DeleteFunc(slices.Clone(ms), func(m Member) bool { return m.Name == name }))
}

// withoutFamily is a ring of n members, with the config the Without tests
// share.
func withoutFamily(n int) (Config, []Member, *Snapshot) {
	cfg := Config{Partitions: 271, Replication: 20, Load: 1.25}
	ms := members(n)
	return cfg, ms, New(cfg).Update(ms)
}

// leaveRoom leaves s's family room for that many Without rings of its n
// members, and no more.
func leaveRoom(s *Snapshot, cfg Config, n, rings int) {
	s.fam.left = int64(rings) * ringBytes(cfg, n-1)
}

// TestWithoutCacheStaysWithinItsBudget: a balancer builds a Without ring
// for each owner it fails to dial (Candidates), and an edge one for each
// edge a claim takes for dead, for as long as the ring version lasts.
// Kept all, every edge failing before gossip dropped it was a whole ring
// each (4 MB at 1<<20 partitions): GBs for one version. Past the budget
// the ring is built for the call alone, and answers the same.
func TestWithoutCacheStaysWithinItsBudget(t *testing.T) {
	cfg, ms, s := withoutFamily(40)
	const room = 4
	leaveRoom(s, cfg, len(ms), room)
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
	cfg, ms, s := withoutFamily(5)
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

// TestWithoutPastTheBudgetEvicts: while more edges are suspect than the
// budget keeps rings for, every balancer request whose owner is one of
// them asks for its Without ring (Candidates). Past the budget that ring
// was built for the call alone, again on every request: a ring build per
// request, milliseconds to seconds each. The least recently used ring
// makes room instead, so a suspect owner's ring is built once while it is
// asked for, and the rings kept stay within the budget.
func TestWithoutPastTheBudgetEvicts(t *testing.T) {
	cfg, ms, s := withoutFamily(10)
	const room = 2
	leaveRoom(s, cfg, len(ms), room)
	builds := map[string]int{}
	s.fam.building = func(name string) { builds[name]++ }
	ks := keys(500)
	const calls = 20
	for _, name := range []string{"edge-1", "edge-2", "edge-3", "edge-4"} {
		for range calls {
			if got, want := owners(s.Without(name), ks), owners(without(cfg, ms, name), ks); !slices.Equal(got, want) {
				t.Fatalf("the ring without %s places keys otherwise than one built without it", name)
			}
		}
		n := cachedWithout(s)
		t.Logf("%d calls for the ring without %s: %d builds, %d rings kept, room for %d", calls, name, builds[name], n, room)
		if builds[name] != 1 {
			t.Errorf("%d calls for the ring without %s built it %d times, want once", calls, name, builds[name])
		}
		if n > room {
			t.Errorf("%d Without rings kept, room for %d", n, room)
		}
	}
	// The ring asked for most recently stays; the one used least
	// recently made room.
	before := builds["edge-4"]
	s.Without("edge-4")
	if builds["edge-4"] != before {
		t.Error("the ring without edge-4, the last asked for, was built again")
	}
}

// TestWithoutScanKeepsTheRingsAskedAgain: a joining edge asks for the ring
// without each member in turn, at every claim of its window (sessions'
// previousOwners). With more members than rings fit, the least recently
// used ring making room evicted, each time, the ring the next claim asks
// for first: every ring was built again at every claim. The rings asked
// for again stay, and only the others are built again.
func TestWithoutScanKeepsTheRingsAskedAgain(t *testing.T) {
	cfg, ms, s := withoutFamily(13)
	s.fam.walked(cfg) // the circle kept, room left for this many rings:
	const room = 4
	leaveRoom(s, cfg, len(ms), room)
	builds := 0
	s.fam.building = func(string) { builds++ }
	for claim := range 4 {
		builds = 0
		for _, m := range ms {
			s.Without(m.Name)
		}
		t.Logf("claim %d: %d rings built for %d members, room for %d", claim, builds, len(ms), room)
		if claim > 0 && builds > len(ms)-(room-1) {
			t.Errorf("claim %d built %d rings, want at most %d: the %d kept and asked for again were built again", claim, builds, len(ms)-(room-1), room-1)
		}
		if n := cachedWithout(s); n > room {
			t.Errorf("%d Without rings kept, room for %d", n, room)
		}
	}
}

// TestWithoutEvictsUnderConcurrentCalls: requests ask for rings of one
// family at once, past its budget, on the ring and on rings derived from
// it; each answer is the ring built without those members.
func TestWithoutEvictsUnderConcurrentCalls(t *testing.T) {
	cfg, ms, s := withoutFamily(8)
	const room = 3
	leaveRoom(s, cfg, len(ms), room)
	ks := keys(200)
	want := map[string][]string{}
	for _, m := range ms {
		want[m.Name] = owners(without(cfg, ms, m.Name), ks)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				name := ms[(g+i*(g+1))%len(ms)].Name
				w := s.Without(name)
				if i%5 == 0 {
					w.Without(ms[(i+1)%len(ms)].Name)
				}
				if got := owners(w, ks); !slices.Equal(got, want[name]) {
					t.Errorf("the ring without %s places keys otherwise than one built without it", name)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := cachedWithout(s); n > room {
		t.Errorf("%d Without rings kept, room for %d", n, room)
	}
}

// TestWithoutSuspectsAskedInTurnAreKept: after a scan (rings each asked
// for once), two suspect owners' rings asked for in turn, request after
// request: each took the room of the other, never asked again since it
// was built, and both were built again on every request. A ring forgotten
// a moment ago and asked for again is kept first.
func TestWithoutSuspectsAskedInTurnAreKept(t *testing.T) {
	cfg, ms, s := withoutFamily(13)
	s.fam.walked(cfg)
	const room = 4
	leaveRoom(s, cfg, len(ms), room)
	for _, m := range ms[:10] {
		s.Without(m.Name) // a scan: each once
	}
	builds := map[string]int{}
	s.fam.building = func(name string) { builds[name]++ }
	const calls = 20
	for range calls {
		s.Without("edge-11")
		s.Without("edge-12")
	}
	t.Logf("%d calls each for the rings without edge-11 and edge-12 in turn: built %d and %d times", calls, builds["edge-11"], builds["edge-12"])
	for _, name := range []string{"edge-11", "edge-12"} {
		if builds[name] > 2 {
			t.Errorf("the ring without %s was built %d times for %d calls, want at most twice", name, builds[name], calls)
		}
	}
	if n := cachedWithout(s); n > room {
		t.Errorf("%d Without rings kept, room for %d", n, room)
	}
}
