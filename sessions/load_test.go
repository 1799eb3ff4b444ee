package sessions

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

func joinCluster(t *testing.T, name, seed string, meta health.Meta) *health.Membership {
	t.Helper()
	cluster := configs.Cluster{Name: name, Region: "east", Bind: "127.0.0.1:0", Profile: "local",
		ProbeInterval: configs.Duration(100 * time.Millisecond), GossipInterval: configs.Duration(50 * time.Millisecond)}
	if seed != "" {
		cluster.Join = []string{seed}
	}
	m := healthtest.NewKeyless(t).JoinWith(cluster, meta)
	return m
}

// An edge's sessions and connections reach the other members' view of its
// metadata: what gslb nodes steer by.
func TestPublishLoad(t *testing.T) {
	e := startEdge(t, configs.Edge{IdleGrace: configs.Duration(time.Hour)}, nil)
	edge := joinCluster(t, "edge-t", "", health.Meta{Role: health.RoleEdge, Region: "east", URL: "http://" + e.data, Weight: 1, State: health.StateAlive})
	watcher := joinCluster(t, "gslb-t", edge.Addr(), health.Meta{Role: health.RoleGSLB, Region: "east", State: health.StateAlive})
	stop := e.s.PublishLoad(edge, 50*time.Millisecond)
	defer stop()
	seen := func(sessions, conns int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), testDeadline)
		defer cancel()
		err := watcher.Wait(ctx, func(ns []health.Node) bool {
			for _, n := range ns {
				if l := n.Meta.Load; n.Name == "edge-t" && l != nil && l.Sessions == sessions && l.Connections == conns && l.CPU >= 0 && l.CPU <= 100 {
					return true
				}
			}
			return false
		})
		if err != nil {
			t.Fatalf("the watcher never saw %d sessions and %d connections: %v", sessions, conns, watcher.Members())
		}
	}
	seen(0, 0)
	// ringlb.v1 sessions no one is in, kept for idle_grace, are not load:
	// a client that joined made-up keys and left at once (600 in 0.19 s
	// from one connection at a time) had the edge announce 600 sessions
	// for idle_grace after it stopped, and gslb steer a region's clients
	// away by sessions_per_edge, back and forth as it pleased.
	// Each sends a msg before it leaves: a session that sequenced nothing
	// is not kept idle at all (owesResumes).
	held := e.joinV1(t, "held", "", nil)
	for i := range 20 {
		v := e.joinV1(t, fmt.Sprintf("made-up-%d", i), "", nil)
		v.msg(t, i)
		v.readType(t, "ack")
		v.leave(t)
	}
	if sessions, _ := e.s.Stats(); sessions != 21 {
		t.Fatalf("%d sessions kept, want the one held and the 20 left idle", sessions)
	}
	seen(1, 1)
	held.leave(t)
	seen(0, 0)
	a := e.join(t, "session-a")
	e.join(t, "session-a")
	e.join(t, "session-b")
	seen(2, 3)
	a.Close()
	seen(2, 2)
}

// A busy process shows as busy.
func TestCPUSampler(t *testing.T) {
	if _, ok := processCPUTime(); !ok {
		t.Skip("no process CPU time on this platform")
	}
	c := cpuSampler{}
	if got := c.sample(); got != 0 {
		t.Errorf("first sample %d, want 0", got)
	}
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); {
	}
	if got := c.sample(); got <= 0 || got > 100 {
		t.Errorf("after a busy loop: %d%%, want in (0, 100]", got)
	}
}
