package sessions

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// firstLookView is a member's real view whose first look at the edges
// (UseCluster's first build of the ring) is followed by then, before the
// edge goes on: a membership change made there lands in the gap between
// that look and what the edge does next, which on a loaded machine a join
// confirmed late (after Join stopped waiting for it) does by itself.
type firstLookView struct {
	*health.Membership
	once sync.Once
	then func()
}

func (v *firstLookView) Edges(region string) []health.Node {
	edges := v.Membership.Edges(region)
	v.once.Do(v.then)
	return edges
}

// A member believed while an edge first builds its ring is on that ring.
// Before, the edge subscribed to membership changes after that build: a
// member believed in between signalled nobody, and the ring went without
// it until the next change, which a quiet cluster never makes
// (TestOlderTermsAreFenced once waited its 30 s for edge-b's ring to count
// edge-a, under load).
func TestMemberBelievedAsTheRingIsBuiltIsOnIt(t *testing.T) {
	parallel(t)
	cl := healthtest.New(t)
	a := startClusterEdge(t, cl, "edge-a")
	var c *clusterEdge
	b := startReplEdgeViewing(t, cl, "edge-b", configs.Edge{}, nil, func(m *health.Membership) Membership {
		return &firstLookView{Membership: m, then: func() {
			// A quiet spell first, as before a join confirmed late:
			// health signals a change after one at once, to the
			// subscribers it has then; one within 250 ms of the last
			// signal goes out later, and reaches a subscriber made
			// meanwhile.
			time.Sleep(time.Second)
			c = startClusterEdge(t, cl, "edge-c")
			healthtest.WaitMembers(t, m, "edge-c believed", func(ns []health.Node) bool {
				return slices.ContainsFunc(ns, func(n health.Node) bool { return n.Name == "edge-c" })
			})
		}}
	})
	waitRing(t, []*clusterEdge{a, b, c}, "edge-a", "edge-b", "edge-c")
}
