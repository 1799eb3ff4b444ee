package sessions

import (
	"context"
	"fmt"
	"testing"
	"time"

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
