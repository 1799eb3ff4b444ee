package health

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// An edge that crashed (OOM-killed, its pod rescheduled) comes back under
// its name on another address, as a Kubernetes pod does. memberlist keeps
// a dead node's name on its old address until it forgets the node
// (GossipToTheDeadTime: 30 s on a LAN), refusing any other address for it
// as a conflict, unless told a dead node's name may be reclaimed: the
// edge was out of every ring for all that time, and after, until its next
// push/pull (30 s more). Its name is taken on the new address once the old
// one is dead — here with memberlist remembering the dead for longer than
// the test waits.
func TestCrashedNodeBackOnAnotherAddress(t *testing.T) {
	remember := tuning{gossipToTheDead: 10 * time.Minute}
	seed := startTuned(t, testCluster("node-0"), edgeMeta(0), nil, remember)
	nodes := []*Membership{seed}
	for i := 1; i < 3; i++ {
		nodes = append(nodes, startTuned(t, testCluster(fmt.Sprintf("node-%d", i), seed.Addr()), edgeMeta(i), nil, remember))
	}
	waitAll(t, nodes, func(ns []Node) bool { return len(ns) == 3 })
	oldAddr := nodes[2].Addr()
	if err := nodes[2].crash(); err != nil {
		t.Fatal(err)
	}
	holdAddr(t, oldAddr) // its old address is not its any more
	waitAll(t, nodes[:2], func(ns []Node) bool { return !hasMember("node-2")(ns) })

	start := time.Now()
	back := startTuned(t, testCluster("node-2", seed.Addr()), edgeMeta(2), nil, remember)
	newAddr := back.Addr()
	waitAll(t, append(nodes[:2:2], back), func(ns []Node) bool {
		return len(ns) == 3 && slices.ContainsFunc(ns, func(n Node) bool { return n.Name == "node-2" && n.Addr == newAddr })
	})
	t.Logf("node-2 back in every view on %s (was %s) %s after it started again", newAddr, oldAddr, time.Since(start).Round(time.Millisecond))
}

// An edge lived on one address, left, and lived on another (a pod
// rescheduled), and left again. Someone without the key who captured what
// it sent in its first life replays it: memberlist takes a departed node's
// name on another address whatever the incarnation (and, since
// DeadNodeReclaimTime, a dead one's), so the replay is a join — and one
// within half of GossipToTheDeadTime of the edge's leave was believed at
// once, as a node coming back (joins.go), on its first life's address and
// metadata. A join on another address than the one it left from is asked
// to answer like any other.
func TestReplayOfAnEarlierLifeOnAnotherAddressIsAsked(t *testing.T) {
	key := writeKey(t, 32)
	cfg := testCluster("target")
	cfg.SecretKeyFile = key
	target := startNode(t, cfg, Meta{Role: RoleBalancer, Region: "east", State: StateAlive})

	// Its first life, recorded as it talks to the target.
	var tap *recordingTransport
	testHookTransport = func(name string, tr memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		tap = &recordingTransport{NodeAwareTransport: tr, to: target.Addr()}
		return tap
	}
	ecfg := testCluster("edge", target.Addr())
	ecfg.SecretKeyFile = key
	first, err := joinOn(t.Context(), ecfg, edgeMeta(1), nil, nil, tuning{})
	testHookTransport = nil
	if err != nil {
		t.Fatal(err)
	}
	stopAtCleanup(t, first)
	waitAll(t, []*Membership{target}, hasMember("edge"))
	time.Sleep(500 * time.Millisecond) // gossip rounds carrying its alive message
	capture := tap.captured()
	firstAddr := first.Addr()
	if err := first.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	holdAddr(t, firstAddr) // nothing answers there any more
	waitAll(t, []*Membership{target}, func(ns []Node) bool { return !hasMember("edge")(ns) })

	// Its second life, on another address, and its leave.
	second := startNode(t, ecfg, edgeMeta(2))
	waitAll(t, []*Membership{target}, hasMember("edge"))
	if err := second.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitAll(t, []*Membership{target}, func(ns []Node) bool { return !hasMember("edge")(ns) })

	start := time.Now()
	defer replayLoop(t, target.Addr(), capture, 20*time.Millisecond)()
	// Taken in: believed (a join recorded on the first life's address),
	// or pending, or dropped unbelieved — the second life's leave, still
	// in flight, may take the replay for gone again at once.
	unconfirmed := target.joinsUnconfirmed.Load()
	believed := func() bool {
		return slices.ContainsFunc(target.Recent(), func(ev Event) bool {
			return ev.Kind == "join" && ev.Node.Name == "edge" && ev.Node.Addr == firstAddr && !ev.At.Before(start)
		})
	}
	waitFor(t, "the target takes the replayed first life in", func() bool {
		target.mu.Lock()
		_, pending := target.pending["edge"]
		target.mu.Unlock()
		return pending || target.joinsUnconfirmed.Load() > unconfirmed || believed()
	})
	t.Logf("captured %d packets of the first life", len(capture))
	if believed() {
		t.Fatalf("a replay of the edge's first life, on %s, was believed at once after its second life left", firstAddr)
	}
}
