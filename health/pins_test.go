package health

import (
	"context"
	"testing"
	"time"
)

// waitPinned polls until cond holds for every node, or fails after 10 s.
// Gossip gives no event for a pin, so polling is the only way to see one.
func waitPinned(t *testing.T, what string, nodes []*Membership, cond func(*Membership) bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for _, m := range nodes {
		for !cond(m) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not seen by %s after 10s", what, m.LocalName())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return time.Since(start)
}

func TestPinsSpreadAndWithdraw(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	a, others := nodes[0], nodes[1:]
	const h1, h2 = 0xfeedface, 42
	a.Pin(h1)
	a.Pin(h2)
	a.Pin(h1) // idempotent
	took := waitPinned(t, "pins", others, func(m *Membership) bool {
		n1, ok1 := m.PinnedTo(h1)
		n2, ok2 := m.PinnedTo(h2)
		return ok1 && ok2 && n1.Name == a.LocalName() && n2.Name == a.LocalName()
	})
	t.Logf("two pins reached 2 peers in %s", took)
	if _, ok := a.PinnedTo(h1); ok {
		t.Error("a node's own pin is reported as pinned elsewhere")
	}
	if own, _ := a.PinCount(); own != 2 {
		t.Errorf("own pins %d, want 2", own)
	}
	a.Unpin(h1)
	waitPinned(t, "unpin", others, func(m *Membership) bool {
		_, ok1 := m.PinnedTo(h1)
		_, ok2 := m.PinnedTo(h2)
		return !ok1 && ok2
	})

	// A node joining later learns the standing pins by push/pull.
	late := startNode(t, testCluster("node-late", a.Addr()), edgeMeta(9))
	waitPinned(t, "pins at a late joiner", []*Membership{late}, func(m *Membership) bool {
		_, ok1 := m.PinnedTo(h1)
		n, ok2 := m.PinnedTo(h2)
		return !ok1 && ok2 && n.Name == a.LocalName()
	})

	// A node's pins leave with it.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitPinned(t, "pins of a node that left", append(others, late), func(m *Membership) bool {
		_, ok := m.PinnedTo(h2)
		return !ok
	})
}

// Operations arrive out of order in gossip: a late pin must not resurrect a
// session that was unpinned after it, and a push/pull state unpins what it
// no longer lists.
func TestPinOrdering(t *testing.T) {
	a := newPinTable("a", everyone, func() int { return 2 }, 4)
	b := newPinTable("b", everyone, func() int { return 2 }, 4)
	// a's sequence starts at its start time in nanoseconds: the handmade
	// messages below, numbered 1 and 4, are older than all of a's own.
	a.set(7, true)
	a.set(7, false)
	a.set(8, true)
	msgs := a.queue.GetBroadcasts(0, 1<<16)
	if len(msgs) != 2 {
		t.Fatalf("queued %d broadcasts, want 2 (the unpin of 7 replaces its pin)", len(msgs))
	}
	pin7 := []byte{msgPinOp, 1, 'a', 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 7}
	for _, m := range append(msgs, pin7) { // the stale pin of 7 last
		if err := b.receive(m); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := b.holder(7, false, nil); ok {
		t.Error("a stale pin resurrected an unpinned session")
	}
	if n, ok := b.holder(8, false, nil); !ok || n != "a" {
		t.Errorf("pin 8 held by %q %v", n, ok)
	}
	// b learnt pin 9 from a broadcast, then a state that lists it not.
	b.receive([]byte{msgPinOp, 1, 'a', 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 9})
	a.set(9, true)
	a.set(9, false)
	if err := b.merge(a.state()); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.holder(9, false, nil); ok {
		t.Error("state did not withdraw a pin it no longer lists")
	}
	if _, ok := b.holder(8, false, nil); !ok {
		t.Error("state lost a standing pin")
	}
	// A node ignores its own messages echoed back.
	if err := a.merge(a.state()); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.holder(8, false, nil); ok {
		t.Error("own pin counted as another node's")
	}
}

// A node taken for dead keeps its pins when it comes back; a node gone for
// good loses them after pinKeep; a node restarted under the same name
// replaces what its previous run had pinned.
func TestPinsOfANodeThatLeft(t *testing.T) {
	a := newPinTable("a", everyone, func() int { return 2 }, 4)
	b := newPinTable("b", everyone, func() int { return 2 }, 4)
	a.set(8, true)
	if err := b.merge(a.state()); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	b.left("a", now)
	if _, ok := b.holder(8, false, nil); ok {
		t.Error("a node that left still holds its pin")
	}
	if n, ok := b.holder(8, true, nil); !ok || n != "a" {
		t.Errorf("the pin of a node that left is not kept: %q %v", n, ok)
	}
	if _, remote := b.count(); remote != 0 {
		t.Errorf("count includes %d pins of a node that left", remote)
	}
	b.back("a") // it refuted its death
	if n, ok := b.holder(8, false, nil); !ok || n != "a" {
		t.Errorf("pin not back with its node: %q %v", n, ok)
	}

	// Restarted: a new table under the same name pins 9, not 8.
	a2 := newPinTable("a", everyone, func() int { return 2 }, 4)
	a2.set(9, true)
	if err := b.merge(a2.state()); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.holder(8, false, nil); ok {
		t.Error("the previous run's pin survived the new run's state")
	}
	if _, ok := b.holder(9, false, nil); !ok {
		t.Error("the new run's pin is missing")
	}

	b.left("a", now)
	b.left("c", now.Add(pinKeep+time.Second)) // any later leave sweeps
	if _, ok := b.holder(9, true, nil); ok {
		t.Errorf("pins of a node gone for over %s are still kept", pinKeep)
	}
}

func FuzzPinMessages(f *testing.F) {
	a := newPinTable("edge-1", everyone, func() int { return 2 }, 4)
	a.set(1, true)
	a.set(2, true)
	a.set(1, false)
	for _, m := range a.queue.GetBroadcasts(0, 1<<16) {
		f.Add(m)
	}
	f.Add(a.state())
	f.Add([]byte{msgPinState, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		tb := newPinTable("other", everyone, func() int { return 2 }, 4)
		errR, errM := tb.receive(b), tb.merge(b)
		if errR != nil && errM != nil {
			if own, remote := tb.count(); own != 0 || remote != 0 {
				t.Fatalf("a refused message changed the table: %d %d", own, remote)
			}
		}
		_ = tb.state()
	})
}

// Two nodes may pin one key (a session split, as DESIGN allows when a
// balancer could not reach its edge). When a join skips one of them (its
// balancer cannot reach it: crashed), the other is the pin that counts.
// Before, PinnedTo named either and the edge placing the join, finding
// the skipped one, went by the ring and started a second session beside
// the other's (found by the sessions package's FuzzPlacementEvents).
func TestPinnedToPassesOverSkippedPinners(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	const h = 0xc0ffee
	a.Pin(h)
	b.Pin(h)
	waitPinned(t, "pins of two nodes", []*Membership{c}, func(m *Membership) bool {
		_, byA := m.PinnedTo(h, b.LocalName())
		_, byB := m.PinnedTo(h, a.LocalName())
		return byA && byB
	})
	for skip, want := range map[string]string{a.LocalName(): b.LocalName(), b.LocalName(): a.LocalName()} {
		for range 20 { // the pins are a map: any order
			if n, ok := c.PinnedTo(h, skip); !ok || n.Name != want {
				t.Fatalf("PinnedTo skipping %s = %q %v, want %s", skip, n.Name, ok, want)
			}
		}
	}
	if n, ok := c.PinnedTo(h, a.LocalName(), b.LocalName()); ok {
		t.Errorf("PinnedTo skipping both pinners = %s", n.Name)
	}
}

// everyone is a pin table's member for tables that talk without gossip:
// every name is a member.
func everyone(string) bool { return true }
