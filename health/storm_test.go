package health

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
)

// flipDelegate is a member whose metadata the test changes at will.
type flipDelegate struct {
	metaDelegate
	meta atomic.Pointer[[]byte]
}

func (d *flipDelegate) NodeMeta(int) []byte { return *d.meta.Load() }

// A member holding the key flips its metadata as fast as it can — its
// weight between 1 and 10, each change pushed to the target by a push/pull
// of its own — and every flip was a ring rebuild on every balancer and
// edge (an edge also logs "ring changed", keeps the ring it replaces for
// the settle window and re-pins its sessions). Subscribers are now told at
// most once per notifyEvery, the last change always among what they read.
func TestMetadataFlipStormCoalesced(t *testing.T) {
	cfg := testCluster("target")
	cfg.SecretKeyFile = writeKey(t, 32)
	target := startNode(t, cfg, Meta{Role: RoleBalancer, Region: "east", State: StateAlive})
	d := &flipDelegate{}
	weights := [3][]byte{}
	for i, w := range []int{1, 10, 5} {
		meta := edgeMeta(3)
		meta.Weight = w
		enc, err := meta.Encode()
		if err != nil {
			t.Fatal(err)
		}
		weights[i] = enc
	}
	d.meta.Store(&weights[0])
	liar, _ := startPlainMember(t, "liar", cfg.SecretKeyFile, d, target.Addr())
	waitAll(t, []*Membership{target}, hasMember("liar"))

	// A balancer's ring, following the target as balancer.FollowCluster does.
	r := ring.New(ring.DefaultConfig())
	changes, unsubscribe := target.Subscribe()
	defer unsubscribe()
	members := func() []ring.Member {
		var ms []ring.Member
		for _, n := range target.Edges("") {
			ms = append(ms, ring.Member{Name: n.Name, URL: n.Meta.URL, Weight: n.Meta.Weight})
		}
		return ms
	}
	r.Update(members())
	base := r.Snapshot().Version()
	var wg sync.WaitGroup
	stopFollow := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stopFollow:
				return
			case <-changes:
				r.Update(members())
			}
		}
	})

	const flips = 400
	start := time.Now()
	for i := 1; i <= flips; i++ {
		w := &weights[i%2]
		if i == flips {
			w = &weights[2] // the last one, weight 5, is what the ring must end with
		}
		d.meta.Store(w)
		liar.UpdateNode(time.Nanosecond) // the broadcast is not waited for
		if _, err := liar.Join([]string{target.Addr()}); err != nil {
			t.Fatalf("flip %d: push/pull: %v", i, err)
		}
	}
	took := time.Since(start)
	// The last flip reaches the ring.
	waitFor(t, "the last flip on the ring", func() bool {
		m, ok := r.Snapshot().Member("liar")
		return ok && m.Weight == 5
	})
	close(stopFollow)
	wg.Wait()
	rebuilds := r.Snapshot().Version() - base
	t.Logf("%d metadata flips in %s: %d ring rebuilds (one notification per %s at most)", flips, took.Round(time.Millisecond), rebuilds, notifyEvery)
	// A bound the design gives, which a slow machine only loosens: one
	// rebuild per notifyEvery of the storm, and the trailing one.
	if limit := uint64(took/notifyEvery) + 2; rebuilds > limit {
		t.Errorf("%d ring rebuilds for %d flips in %s; want at most %d (one per %s)", rebuilds, flips, took, limit, notifyEvery)
	}
}

// waitFor polls cond until it holds; the test fails after 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
