package sessions

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// promoteCluster is edges a, b and c replicating under sync and key:
// edge-a's on a ring of the three, its replica edge-b (the key's owner on
// b and c), a session of it live on edge-a with msgs acknowledged and
// edge-b's copy of them.
func promoteCluster(t *testing.T, prefix string, msgs int) (a, b, c *clusterEdge, key, epoch string) {
	t.Helper()
	cl := healthtest.New(t)
	a = startReplEdge(t, cl, "edge-a", configs.ReplicationSync, nil)
	b = startReplEdge(t, cl, "edge-b", configs.ReplicationSync, nil)
	c = startReplEdge(t, cl, "edge-c", configs.ReplicationSync, nil)
	waitRing(t, []*clusterEdge{a, b, c}, "edge-a", "edge-b", "edge-c")
	for i := 0; key == ""; i++ {
		k := fmt.Sprintf("%s-%d", prefix, i)
		if ownerOf(k, "edge-a", "edge-b", "edge-c") == "edge-a" && ownerOf(k, "edge-b", "edge-c") == "edge-b" {
			key = k
		}
	}
	p := a.joinV1(t, key, "", nil)
	for i := range msgs {
		p.msg(t, i)
		p.readType(t, "ack")
	}
	waitCopy(t, b, key, uint64(msgs))
	return a, b, c, key, p.welcome.Epoch
}

// A claim is "that edge may start this session": an edge that asked
// edge-b whether it hosts the key, was told no (edge-b holds only a copy)
// and started the session itself. Gossip then declaring the copy's owner
// dead must not make the copy a second live session of the key on
// edge-b: the claimer's session is the one, and joins sent to edge-b go
// there. Before, promote dropped the claim and made the copy live: two
// sessions of one key.
func TestPromotionRespectsAClaim(t *testing.T) {
	parallel(t)
	a, b, c, key, _ := promoteCluster(t, "claimpromote", 3)
	// edge-c, whose view took edge-a and edge-b for dead (the key is its
	// own there), asks edge-b as a previous owner of the key — a claim.
	holder, _, err := c.s.hub.owner.Load().claimKnown(context.Background(), ring.Member{Name: "edge-b"}, []byte(key), claimArgs{gone: []string{"edge-a"}})
	if err != nil || holder != "" {
		t.Fatalf("edge-c's claim at edge-b: holder %q, %v; want none (edge-b holds a copy, no session)", holder, err)
	}
	a.crash(t)
	waitRing(t, []*clusterEdge{b, c}, "edge-b", "edge-c")
	healthtest.WaitUntil(t, "edge-b to be done with its copy", func() bool {
		_, _, _, ok := copyOf(b, key)
		return !ok
	})
	live, redirect := b.s.hub.lookup([]byte(key), "edge-b", goneEdges{})
	t.Logf("after edge-a's crash, with edge-c's claim held there: edge-b live %v, redirects to %q", live, redirect)
	if live || redirect != "edge-c" {
		t.Errorf("edge-b made its copy a live session while edge-c's claim held (live %v, redirect %q): two sessions of one key", live, redirect)
	}
}

// pinlessView is a gossip member whose pins of other edges have not come
// yet: gossip brings a pin a moment after the ring change that made it.
type pinlessView struct{ *health.Membership }

func (pinlessView) PinnedTo(uint64, ...string) (health.Node, bool) { return health.Node{}, false }

// A join that takes the copy's owner for dead because it refuses its
// claim (nothing listens there: it crashed, gossip does not know yet)
// promotes the copy, as it does when the balancer names the owner in its
// skip. Before, it started the session anew beside the copy: a new epoch,
// every acknowledged msg gone (a reset for its clients).
func TestRefusedClaimPromotesTheCopy(t *testing.T) {
	parallel(t)
	cl := healthtest.New(t)
	a := startReplEdge(t, cl, "edge-a", configs.ReplicationSync, nil)
	waitRing(t, []*clusterEdge{a}, "edge-a")
	key := keyOwnedBy("refusedclaim", "edge-b", "edge-a", "edge-b")
	p := a.joinV1(t, key, "", nil)
	for i := range 3 {
		p.msg(t, i)
		p.readType(t, "ack")
	}
	epoch := p.welcome.Epoch
	// edge-b joins: the key is its own on the ring now, the session lives
	// on (pinned) on edge-a, whose replica edge-b becomes.
	b := startReplEdgeViewing(t, cl, "edge-b", configs.Edge{IdleGrace: configs.Duration(time.Minute), Replication: configs.ReplicationSync}, nil,
		func(m *health.Membership) Membership { return pinlessView{m} })
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	waitCopy(t, b, key, 3)

	// edge-a's process is gone; gossip has not noticed.
	a.s.hub.repl.Load().close()
	stopAccepting(a)
	a.s.mu.Lock()
	for c := range a.s.conns {
		c.raw.Close()
	}
	a.s.mu.Unlock()

	q := b.joinV1(t, key, "resume=3&epoch="+epoch, nil)
	defer q.Close()
	t.Logf("a join on edge-b, edge-a's claim refused: epoch %s (the session's: %v), seq %d", q.welcome.Epoch, q.welcome.Epoch == epoch, q.welcome.Seq)
	if q.welcome.Epoch != epoch || q.welcome.Seq != 3 {
		t.Errorf("welcome %+v, want the copy's epoch %s and seq 3", q.welcome, epoch)
	}
}

// A stale owner cut off for longer than its takeover lived is fenced all
// the same once the path heals: edge-a, cut off from edge-b (every edge-
// to-edge path; gossip fine), keeps serving its session while edge-b, its
// replica, takes it over for a balancer that could not reach edge-a; the
// takeover ends on edge-b (its participants leave, idle_grace runs out)
// while the path is still down, so no fence of it is told any more
// (fenceHolds). When the path heals, edge-a's stream sends the stale
// incarnation whole — the taken-over epoch at the old term. Before, edge-b
// kept it as a copy and edge-a served it on: the ended session back with
// its epoch and a history that forks from the one edge-b sequenced under
// the same seqs. Now the snapshot is answered with the fence (its epoch is
// the takeover's: a new incarnation's is not) and edge-a yields.
func TestStaleOwnerBackAfterTheTakeoverEndedYields(t *testing.T) {
	parallel(t)
	staleOwnerBack(t, false)
}

// As TestStaleOwnerBackAfterTheTakeoverEndedYields, with a new incarnation
// of the key started on edge-b after the takeover ended (edge-a still
// unreachable): edge-b took the stale incarnation's snapshot, of the term
// of its own session, for a drain's last records and left it be — two
// live sessions of the key once the path healed. edge-a yields now, and
// the new incarnation keeps its place.
func TestStaleOwnerBackBesideANewIncarnationYields(t *testing.T) {
	parallel(t)
	staleOwnerBack(t, true)
}

// staleOwnerBack is TestStaleOwnerBackAfterTheTakeoverEndedYields; anew
// starts a new incarnation on edge-b once the takeover has ended.
func staleOwnerBack(t *testing.T, anew bool) {
	cl := healthtest.New(t)
	gates := map[string]*cuttableProxy{}
	var gmu sync.Mutex
	gated := func(name string) func(string) string {
		return func(data string) string {
			p := startCuttableProxy(t, data)
			gmu.Lock()
			gates[name] = p
			gmu.Unlock()
			return p.ln.Addr().String()
		}
	}
	a := startReplEdge(t, cl, "edge-a", configs.ReplicationSync, gated("edge-a"))
	b := startReplEdge(t, cl, "edge-b", configs.ReplicationSync, gated("edge-b"))
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	key := keyOwnedBy("stalefork", "edge-a", "edge-a", "edge-b")
	p1 := a.joinV1(t, key, "", nil)
	defer p1.Close()
	for i := range 5 {
		p1.msg(t, i)
		p1.readType(t, "ack")
	}
	epoch := p1.welcome.Epoch
	waitCopy(t, b, key, 5)

	for _, g := range gates {
		g.cut()
	}
	healthtest.WaitUntil(t, "edge-a's stream to edge-b ended", func() bool { return inboundFrom(b.s.hub.repl.Load(), "edge-a") == nil })
	g := b.joinSkipping(t, key, "resume=5&epoch="+epoch, "edge-a")
	if g.welcome.Epoch != epoch || g.welcome.Seq != 5 {
		t.Fatalf("welcome on the replica %+v, want epoch %s seq 5", g.welcome, epoch)
	}
	g.msg(t, "on edge-b")
	g.readType(t, "ack")
	g.leave(t)
	waitFor(t, "edge-b's session idle", func() bool { return b.s.hub.idle.count.Load() == 1 })
	b.s.hub.idle.limit.Store(0)
	b.s.hub.trimIdle()
	b.s.hub.idle.limit.Store(int64(configs.DefaultMaxIdleSessions))
	if b.s.hub.has([]byte(key)) {
		t.Fatal("the takeover did not end on edge-b")
	}
	var q *v1Client
	if anew {
		q = b.joinSkipping(t, key, "", "edge-a")
		defer q.Close()
		if q.welcome.Epoch == epoch {
			t.Fatalf("a new session on edge-b kept the old epoch %s", epoch)
		}
	}
	ra := a.s.hub.repl.Load()
	if term, moved := ra.liveTerm(key); term != 1 || moved {
		t.Fatalf("edge-a's session: term %d moved %v; want the stale one, term 1, serving (the path was not cut)", term, moved)
	}

	for _, g := range gates {
		g.heal()
	}
	var copied bool
	waitFor(t, "edge-a to yield, or edge-b to keep its stale incarnation", func() bool {
		if _, moved := ra.liveTerm(key); moved {
			return true
		}
		_, e, term, ok := copyOf(b, key)
		copied = ok && e == epoch && term == 1
		if anew {
			// edge-b keeps no copy beside its own session: edge-a's new
			// stream having sent batches (its sessions whole first) and
			// read every answer to them is the sign.
			ra.mu.Lock()
			l := ra.links["edge-b"]
			ra.mu.Unlock()
			if l == nil {
				return false
			}
			l.mu.Lock()
			defer l.mu.Unlock()
			copied = l.connected && l.nextBatch > 1 && len(l.inflight) == 0 && len(l.resync) == 0
		}
		return copied
	})
	t.Logf("the path healed: edge-a's stale incarnation lives on beside edge-b (a copy there, or a session of its own): %v", copied)
	if copied {
		t.Fatalf("edge-a serves on the incarnation edge-b took over and ended (epoch %s, term 1)", epoch)
	}
	if got, code := readUntilClose(p1); code != closeServiceRestart {
		t.Errorf("the stale incarnation's participant ended with %d (after %q), want 1012", code, got)
	}
	if q != nil {
		q.msg(t, "new")
		if got, code := readAck(q); code != 0 {
			t.Errorf("the new incarnation on edge-b was closed %d after %q", code, got)
		}
	}
}

// A session an edge started where the ring does not send its key is
// pinned in gossip for as long as it lives there: a promotion gives way to
// another live edge's pin as it does to a claim. Here a balancer reached
// neither edge-a (the owner) nor edge-b (its replica) and sent the join to
// edge-c, which asked neither (no claim at edge-b: a claim would also hold
// only 10 s, and gossip can take longer to declare an owner dead), started
// the session and pinned it; then edge-a died. Before, edge-b promoted
// its copy beside edge-c's session: two live sessions of one key.
func TestPromotionRespectsAPin(t *testing.T) {
	parallel(t)
	a, b, c, key, _ := promoteCluster(t, "pinpromote", 3)
	g := c.joinSkipping(t, key, "", "edge-a", "edge-b")
	defer g.Close()
	if !c.s.hub.has([]byte(key)) {
		t.Fatal("edge-c did not start the session")
	}
	healthtest.WaitUntil(t, "edge-b sees edge-c's pin", func() bool {
		n, ok := b.s.hub.repl.Load().o.m.PinnedTo(xxhash.Sum64String(key))
		return ok && n.Name == "edge-c"
	})

	a.crash(t)
	waitRing(t, []*clusterEdge{b, c}, "edge-b", "edge-c")
	// edge-b holds no copy of edge-a's then: promoted or dropped (a copy
	// of edge-c's, which replicates its session to edge-b, may be there).
	healthtest.WaitUntil(t, "edge-b to be done with edge-a's copy", func() bool {
		from, ok := b.s.hub.repl.Load().store.owner(key)
		return !ok || from != "edge-a"
	})
	live, redirect := b.s.hub.lookup([]byte(key), "edge-b", goneEdges{})
	t.Logf("after edge-a's crash, edge-c's session pinned: edge-b live %v, redirects to %q", live, redirect)
	if live {
		t.Errorf("edge-b made its copy a live session beside edge-c's pinned one: two sessions of one key")
	}
}
