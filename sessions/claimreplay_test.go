package sessions

import (
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// A claim seen on the wire between two edges (plain HTTP unless the
// network protects it) and sent again within its signature's window took
// its effect again: recorded once more after the claim it made had
// expired, it sent the key's joins to its claimer for another settle
// window; a drain's hand-over claim, sent again, replaced the claim an
// edge had made since (that edge starting the session), so joins of the
// key there went to the edge the drain had named instead — the split a
// claim is there to prevent. Now each claim an edge sends carries a nonce
// in what it signs (argClaimNonce), and the asked edge takes a claim
// signature once: a copy gets 403 and records nothing. An edge of an
// earlier release sends none, and its claims are taken as before.
func TestReplayedClaimTakesNoEffect(t *testing.T) {
	parallel(t)
	cl := healthtest.New(t)
	var f claimFront
	var skew atomic.Int64 // edge-a's hub clock, ahead of the wall clock
	a := startClusterEdgeBehind(t, cl, "edge-a", configs.Edge{IdleGrace: configs.Duration(time.Second)}, slog.New(slog.DiscardHandler), testRing,
		func(s *Server) { s.hub.clock = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) } },
		func(data string) string { return f.front(t, data) })
	b := startClusterEdge(t, cl, "edge-b")
	c := startClusterEdge(t, cl, "edge-c")
	d := startClusterEdge(t, cl, "edge-d")
	waitRing(t, []*clusterEdge{a, b, c, d}, "edge-a", "edge-b", "edge-c", "edge-d")
	toA := ring.Member{Name: "edge-a"} // its address from gossip: the front's
	claim := func(by *clusterEdge, key string, args claimArgs) {
		t.Helper()
		if holder, _, err := by.s.hub.owner.Load().claim(t.Context(), toA, []byte(key), args); err != nil || holder != "" {
			t.Fatalf("%s's claim of %s at edge-a: holder %q, %v; want it recorded", by.s.name, key, holder, err)
		}
	}
	sendsTo := func(key string) string {
		_, owner := a.s.hub.lookup([]byte(key), "edge-a", a.s.hub.owner.Load().goneEdges(nil))
		return owner
	}
	expire := func() { skew.Add(int64(settleWindow + time.Second)) }

	// The same claim twice in a row, as joins of one key at one edge make
	// it: each is a claim of its own, taken.
	claim(b, "replay-k", claimArgs{})
	claim(b, "replay-k", claimArgs{})
	seen, body := f.last(t)
	expire()
	if owner := sendsTo("replay-k"); owner != "" {
		t.Fatalf("edge-a sends replay-k to %q once edge-b's claim expired, want nowhere", owner)
	}
	if code := replayClaim(t, seen, body, a.data); code != http.StatusForbidden {
		t.Errorf("edge-b's claim of replay-k sent again: %d, want 403", code)
	}
	if owner := sendsTo("replay-k"); owner != "" {
		t.Errorf("edge-a sends replay-k to %q after edge-b's expired claim was sent again, want nowhere", owner)
	}

	// A drain's hand-over claim sent again over the claim an edge made
	// since.
	cAt, ok := b.m.Node("edge-c")
	if !ok {
		t.Fatal("edge-b does not know edge-c")
	}
	claim(b, "replay-h", claimArgs{handed: "edge-c", at: cAt.Meta.URL})
	seen, body = f.last(t)
	expire()
	claim(d, "replay-h", claimArgs{})
	if code := replayClaim(t, seen, body, a.data); code != http.StatusForbidden {
		t.Errorf("edge-b's hand-over claim of replay-h sent again: %d, want 403", code)
	}
	if owner := sendsTo("replay-h"); owner != "edge-d" {
		t.Fatalf("edge-a sends replay-h to %q after a hand-over claim was sent again, want edge-d, which claimed it since", owner)
	}

	// edge-b of an earlier release: its claims carry no nonce, and two
	// alike within a second are one signature — taken as before.
	healthtest.AnnouncePeerSigning(t, b.m, a.m, health.PeerSigningClaimAnswer)
	claim(b, "replay-old", claimArgs{})
	seen, body = f.last(t)
	if code := replayClaim(t, seen, body, a.data); code != http.StatusOK {
		t.Errorf("a claim of an edge announcing peer_signing %d sent again: %d, want 200 (as before)", health.PeerSigningClaimAnswer, code)
	}
}

// onceSigs takes a signature once until it could no longer verify, and
// past its bound forgets the oldest first, no other.
func TestOnceSigsForgetsTheOldestFirst(t *testing.T) {
	o := &onceSigs{kept: 4}
	now := time.Now()
	sig := func(i int) string { return "edge-b 1765000000 mac" + strconv.Itoa(i) + " edge-a" }
	if o.seen("", now) || o.seen(sig(0), now) {
		t.Fatal("seen before anything was added")
	}
	o.add("", now) // nothing
	for i := range 4 {
		o.add(sig(i), now)
	}
	o.add(sig(1), now) // again: still one entry
	for i := range 4 {
		if !o.seen(sig(i), now) {
			t.Fatalf("sig %d not seen within the bound", i)
		}
	}
	o.add(sig(4), now)
	if o.seen(sig(0), now) {
		t.Error("the oldest sig still seen past the bound")
	}
	for i := 1; i <= 4; i++ {
		if !o.seen(sig(i), now) {
			t.Errorf("sig %d forgotten, want only the oldest gone", i)
		}
	}
	if later := now.Add(2 * health.PeerWindow); o.seen(sig(4), later) {
		t.Error("a sig seen once it could no longer verify")
	}
}
