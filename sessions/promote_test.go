package sessions

import (
	"context"
	"fmt"
	"testing"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
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
