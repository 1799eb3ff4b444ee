package ring

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

type hasher struct{}

func (hasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// consistentPoint is a point as consistent sees it.
type consistentPoint struct {
	name  string
	index int32
}

func (p consistentPoint) String() string { return p.name }

// consistentOwners is the placement of members by consistent itself (New,
// then its partition table), relaxed and falling back as distribute does:
// the reference build must match partition for partition, so rings built
// by this code and by releases that called consistent agree on every owner.
func consistentOwners(cfg Config, members []Member) ([]int32, float64) {
	var points []consistent.Member
	for i, m := range normalize(members) {
		for w := range m.Weight {
			points = append(points, consistentPoint{name: pointName(m.Name, w), index: int32(i)})
		}
	}
	owners := make([]int32, cfg.Partitions)
	load := cfg.Load
	for range 4 {
		ok := func() (ok bool) {
			defer func() {
				if recover() != nil {
					ok = false
				}
			}()
			c := consistent.New(points, consistent.Config{
				Hasher: hasher{}, PartitionCount: cfg.Partitions, ReplicationFactor: cfg.Replication, Load: load,
			})
			for p := range owners {
				owners[p] = c.GetPartitionOwner(p).(consistentPoint).index
			}
			return true
		}()
		if ok {
			return owners, load
		}
		load *= 2
	}
	var pid [8]byte
	for p := range owners {
		binary.LittleEndian.PutUint64(pid[:], uint64(p))
		var best uint64
		for i, pt := range points {
			if score := rendezvous(pid[:], pt.String()); i == 0 || score > best {
				best, owners[p] = score, pt.(consistentPoint).index
			}
		}
	}
	return owners, 0
}

func TestPlacementMatchesConsistent(t *testing.T) {
	weighted := members(7)
	for i := range weighted {
		weighted[i].Weight = 1 + i%3
	}
	tests := []struct {
		name string
		cfg  Config
		ms   []Member
	}{
		{"defaults, 3 edges", DefaultConfig(), members(3)},
		{"defaults, weighted", DefaultConfig(), weighted},
		{"defaults, 20 edges", DefaultConfig(), members(20)},
		{"defaults, ide-NN names", DefaultConfig(), named(10, namings["ide-NN.east"])},
		{"small ring", Config{Partitions: 271, Replication: 20, Load: 1.25}, members(5)},
		{"one member, replication 1", Config{Partitions: 7, Replication: 1, Load: 1.05}, members(1)},
		{"more points than partitions", Config{Partitions: 2, Replication: 3, Load: 1.05}, members(5)},
		{"one partition", Config{Partitions: 1, Replication: 1, Load: 1.01}, members(3)},
		{"tight load, few points", Config{Partitions: 13, Replication: 1, Load: 1.001}, members(4)},
		{"weighted, small ring", Config{Partitions: 101, Replication: 5, Load: 1.05}, weighted},
	}
	// And sets drawn at random (fixed seed): sizes, weights, duplicate
	// names, and configs that take every path of distribute.
	rnd := rand.New(rand.NewPCG(1, 2))
	primes := []int{1, 2, 3, 7, 13, 31, 97, 271, 1009, 7919}
	for i := range 100 {
		cfg := Config{Partitions: primes[rnd.IntN(len(primes))], Replication: 1 + rnd.IntN(60), Load: 1.001 + rnd.Float64()}
		ms := make([]Member, 1+rnd.IntN(25))
		for j := range ms {
			ms[j] = Member{Name: fmt.Sprintf("n%x", rnd.Uint32()%64), URL: fmt.Sprint(j), Weight: 1 + rnd.IntN(4)}
		}
		tests = append(tests, struct {
			name string
			cfg  Config
			ms   []Member
		}{fmt.Sprintf("random %d", i), cfg, ms})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantOwners, wantLoad := consistentOwners(tt.cfg, tt.ms)
			s := New(tt.cfg).Update(tt.ms)
			if s.Load() != wantLoad {
				t.Errorf("load bound %g, consistent's %g", s.Load(), wantLoad)
			}
			for p := range wantOwners {
				if s.owners[p] != wantOwners[p] {
					t.Fatalf("partition %d owned by %s, consistent says %s", p, s.members[s.owners[p]].Name, s.members[wantOwners[p]].Name)
				}
			}
		})
	}
}

// TestLargestRingBuilds builds the largest rings configs accepts, 1000
// static edges (configs.MaxStaticEdges) of weight 1 and 10
// (configs.MaxEdgeWeight) at the default replication, and the largest
// circle, those of weight 10 at the most partitions (with more points than
// partitions no circle is built): configs.MaxRingPoints. And the ring
// without one of them, which Candidates builds on a request's path once
// that edge is suspect. Durations and memory are reported, not asserted;
// the wait only ends a build that does not finish.
func TestLargestRingBuilds(t *testing.T) {
	for _, tt := range []struct{ weight, partitions int }{
		{1, DefaultConfig().Partitions},
		{10, DefaultConfig().Partitions},
		{10, 1 << 20},
	} {
		if testing.Short() && tt.partitions > DefaultConfig().Partitions {
			continue // the largest circle the check allows: seconds, ten times that under -race
		}
		ms := members(1000)
		for i := range ms {
			ms[i].Weight = tt.weight
		}
		cfg := DefaultConfig()
		cfg.Partitions = tt.partitions
		done := make(chan []Member, 1)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		var s *Snapshot
		go func() {
			s = New(cfg).Update(ms)
			built := time.Since(start)
			c := s.Candidates([]byte("some-session-key"), nil)
			runtime.ReadMemStats(&after)
			t.Logf("1000 edges of weight %d, %d partitions (weight × replication %d): ring built in %v (load bound %g), candidates (a ring without the owner) after %v more, %d MB allocated for both",
				tt.weight, tt.partitions, 1000*tt.weight*cfg.Replication, built, s.Load(), time.Since(start)-built, (after.TotalAlloc-before.TotalAlloc)>>20)
			done <- c
		}()
		select {
		case c := <-done:
			if len(c) != len(ms) {
				t.Fatalf("weight %d: %d candidates, want %d", tt.weight, len(c), len(ms))
			}
		case <-time.After(2 * time.Minute):
			t.Fatalf("1000 edges of weight %d, %d partitions: no ring after %v", tt.weight, tt.partitions, time.Since(start))
		}
	}
}

// TestRebuildsEndOnTheLatestView: callers that rebuild the ring from the
// membership as it is now (a balancer's static monitors each do when their
// edge changes, beside the goroutine following gossip) must leave it on the
// last membership, not on one a caller read before another's rebuild and
// applied after it.
func TestRebuildsEndOnTheLatestView(t *testing.T) {
	r := New(DefaultConfig())
	var (
		mu      sync.Mutex
		current = members(3)
	)
	view := func() []Member { mu.Lock(); defer mu.Unlock(); return slices.Clone(current) }
	read, secondDone := make(chan struct{}), make(chan struct{})
	firstDone := make(chan struct{})
	go func() {
		defer close(firstDone)
		r.Rebuild(func() []Member {
			v := view()
			close(read)
			// Hold the view read while the membership changes and a second
			// caller rebuilds. That caller cannot read before this one
			// applies its view when members are read under the ring's
			// lock; the wait then only ends the hold.
			select {
			case <-secondDone:
			case <-time.After(time.Second):
			}
			return v
		})
	}()
	<-read
	mu.Lock()
	current = members(4) // an edge came up
	mu.Unlock()
	go func() {
		defer close(secondDone)
		r.Rebuild(view)
	}()
	<-firstDone
	<-secondDone
	if got := r.Snapshot().Len(); got != 4 {
		t.Fatalf("the ring has %d members after both rebuilds returned, the membership 4", got)
	}
}

// TestWithoutMatchesBuild: a ring taken without members (Without, chained
// as a settling edge chains it: without itself, then each other member,
// then the edges it took for dead, then an owner there) owns every
// partition as the ring of those members built from scratch does — the
// build Without did on its own before it walked its snapshot's circle.
func TestWithoutMatchesBuild(t *testing.T) {
	check := func(t *testing.T, what string, got *Snapshot) {
		t.Helper()
		want := build(got.cfg, slices.Clone(got.members), got.version, newFamily(got.members), nil)
		if got.Load() != want.Load() {
			t.Fatalf("%s: load bound %g, built from scratch %g", what, got.Load(), want.Load())
		}
		if !slices.Equal(got.owners, want.owners) || !maps.Equal(got.shares, want.shares) {
			for p := range want.owners {
				if got.owners[p] != want.owners[p] {
					t.Fatalf("%s: partition %d owned by %s, built from scratch by %s", what, p, got.members[got.owners[p]].Name, want.members[want.owners[p]].Name)
				}
			}
			t.Fatalf("%s: shares %v, built from scratch %v", what, got.shares, want.shares)
		}
	}
	rnd := rand.New(rand.NewPCG(3, 4))
	primes := []int{1, 2, 3, 7, 13, 31, 97, 271, 1009, 7919}
	rings := 0
	sets := 200
	if testing.Short() {
		sets = 40 // the race detector's run: its first forty
	}
	for i := range sets {
		cfg := Config{Partitions: primes[rnd.IntN(len(primes))], Replication: 1 + rnd.IntN(60), Load: 1.001 + rnd.Float64()}
		if i%4 == 0 {
			cfg = DefaultConfig()
		}
		ms := make([]Member, 1+rnd.IntN(25))
		for j := range ms {
			ms[j] = Member{Name: fmt.Sprintf("n%x", rnd.Uint32()%64), URL: fmt.Sprint(j), Weight: 1 + rnd.IntN(4)}
		}
		s := New(cfg).Update(ms)
		self := s.members[rnd.IntN(len(s.members))].Name
		before := s.Without(self)
		check(t, fmt.Sprintf("set %d without %s", i, self), before)
		rings++
		for _, m := range before.Members() {
			v := before.Without(m.Name)
			what := fmt.Sprintf("set %d without %s, %s", i, self, m.Name)
			check(t, what, v)
			if dead := s.members[rnd.IntN(len(s.members))].Name; rnd.IntN(3) == 0 {
				v = v.Without(dead)
				what += ", " + dead
				check(t, what, v)
			}
			if owner, ok := v.Locate([]byte(what)); ok {
				check(t, what+", "+owner.Name, v.Without(owner.Name))
			}
			rings += 3
		}
	}
	t.Logf("%d rings without members, each as built from scratch", rings)
}

// TestWithoutEveryMemberCost reports what a settling edge pays for the
// rings without each other member (previousOwners: the ring without
// itself, then that ring without each member in turn), and what building
// each from scratch did. Durations are reported, not asserted.
func TestWithoutEveryMemberCost(t *testing.T) {
	for _, n := range []int{100, 300, 1000} {
		if testing.Short() && n > 300 {
			continue
		}
		s := New(DefaultConfig()).Update(members(n))
		start := time.Now()
		before := s.Without("edge-1")
		for _, m := range before.Members() {
			before.Without(m.Name)
		}
		took := time.Since(start)
		// Again, as each later claim of the window asks: the rings kept
		// are looked up, those past the budget walked again.
		start = time.Now()
		for _, m := range before.Members() {
			before.Without(m.Name)
		}
		again := time.Since(start)
		start = time.Now()
		const sample = 5
		for _, m := range before.Members()[:sample] {
			rest := slices.DeleteFunc(before.Members(), func(x Member) bool { return x.Name == m.Name })
			build(before.cfg, rest, before.version, newFamily(rest), nil)
		}
		scratch := time.Since(start) / sample * time.Duration(n)
		t.Logf("%d edges: the ring without one edge, then without each of the %d others: %v, again %v (built from scratch: ~%v)", n, n-1, took, again, scratch)
	}
}
