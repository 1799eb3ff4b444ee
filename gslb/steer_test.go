package gslb

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// joinEdge joins a gossip edge of region to the cluster through seed, with
// load announced in its metadata, as sessions.PublishLoad does.
func joinEdge(t *testing.T, name, region, seed string, port int, load health.Load) *health.Membership {
	t.Helper()
	cluster := configs.Cluster{Name: name, Region: region, Bind: "127.0.0.1:0", Profile: "local", Join: []string{seed},
		ProbeInterval: configs.Duration(100 * time.Millisecond), GossipInterval: configs.Duration(50 * time.Millisecond)}
	meta := health.Meta{Role: health.RoleEdge, Region: region, URL: fmt.Sprintf("http://127.0.0.1:%d", port), Weight: 1, State: health.StateAlive, Load: &load}
	m := healthtest.NewKeyless(t).JoinWith(cluster, meta)
	return m
}

// westShare asks for the managed name on behalf of 200 east client
// networks (ECS 10.1.N.0/24) and returns the share answered with west's member.
func westShare(t *testing.T, s *Server) float64 {
	t.Helper()
	west := 0
	const clients = 200
	for i := range clients {
		m := query(t, s, "udp", "ide.ringlb.test.", dns.TypeA, ecs(fmt.Sprintf("10.1.%d.0", i), 24))
		if answerIPs(m) == "192.0.2.2" {
			west++
		}
	}
	return float64(west) / clients
}

// regionStatus is /api/pools' entry for a region of the managed name.
func regionStatus(s *Server, region string) map[string]any {
	for _, r := range s.state.Load().pools.status()[0]["regions"].([]map[string]any) {
		if r["region"] == region {
			return r
		}
	}
	return nil
}

// waitFor polls cond until it holds, or fails after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
	}
}

// TestSteeringFollowsEdgeLoad: three east edges announce their load in
// gossip; when they are loaded past steer.sessions_per_edge, a share of
// east's clients (by network) is answered with west's member; the share
// stays while the load is below the level but above the hysteresis band,
// and returns to none below it. A dead region still fails over whole.
func TestSteeringFollowsEdgeLoad(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	cfg := gslbConfig(t, east, west, "")
	r := cfg.Names[0].Regions["east"]
	r.Steer = &configs.Steer{SessionsPerEdge: 100, Share: 0.5, Hysteresis: 0.2}
	cfg.Names[0].Regions["east"] = r
	s, m := startNameserver(t, "gslb-a", cfg, "")
	var edges []*health.Membership
	for i := range 3 {
		edges = append(edges, joinEdge(t, fmt.Sprintf("edge-%d", i+1), "east", m.Addr(), 7101+i, health.Load{Sessions: 10, Connections: 20, CPU: 5}))
	}
	announce := func(sessions int) {
		t.Helper()
		for _, e := range edges {
			if err := e.UpdateMeta(t.Context(), func(meta *health.Meta) {
				meta.Load = &health.Load{Sessions: sessions, Connections: 2 * sessions, CPU: 5}
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// seen waits until the gslb has taken a sample with this load.
	seen := func(sessions float64) {
		t.Helper()
		waitFor(t, fmt.Sprintf("the gslb sees %g sessions per east edge", sessions), func() bool {
			l, ok := regionStatus(s, "east")["load"].(regionLoad)
			return ok && l.Edges == 3 && l.Sessions == sessions
		})
	}
	waitAnswer(t, s, "127.0.0.1", "192.0.2.1")
	seen(10)
	if got := westShare(t, s); got != 0 {
		t.Fatalf("unloaded: %.2f of east's clients answered with west", got)
	}

	// The load run: every east edge above 100 sessions.
	announce(150)
	waitFor(t, "a share of east's clients steered to west", func() bool { return westShare(t, s) >= 0.3 })
	high := westShare(t, s)
	if high > 0.7 {
		t.Errorf("%.2f of east's clients steered, want about share 0.5", high)
	}
	st := regionStatus(s, "east")["steer"].(map[string]any)
	if st["active"] != true || st["to"] != "west" {
		t.Errorf("/api/pools steer: %v", st)
	}
	if g := counterValue(t, s, "ringlb_gslb_steered_share", "region", "east"); g != 0.5 {
		t.Errorf("ringlb_gslb_steered_share{region=east} = %g, want 0.5", g)
	}
	// A steered answer has the failover TTL and the ECS scope of the
	// client network the choice was made by.
	for i := range 200 {
		m := query(t, s, "udp", "ide.ringlb.test.", dns.TypeA, ecs(fmt.Sprintf("10.1.%d.0", i), 24))
		if answerIPs(m) == "192.0.2.2" {
			if m.Answer[0].Header().Ttl != 5 || m.IsEdns0().Option[0].(*dns.EDNS0_SUBNET).SourceScope != 24 {
				t.Errorf("steered answer: %v", m)
			}
			break
		}
	}
	t.Logf("loaded: %.2f of east's client networks answered with west", high)

	// Below the level, above the band (100 × (1 - 0.2) = 80): still steering.
	announce(90)
	seen(90)
	if got := westShare(t, s); got != high {
		t.Errorf("load 90 (below the level, in the band): %.2f steered, was %.2f; want no change (hysteresis)", got, high)
	}
	// Below the band: steering ends.
	announce(50)
	waitFor(t, "steering ends below the band", func() bool { return westShare(t, s) == 0 })
	if g := counterValue(t, s, "ringlb_gslb_steered_share", "region", "east"); g != 0 {
		t.Errorf("ringlb_gslb_steered_share{region=east} = %g after steering ended", g)
	}

	// Loaded and then dead: the region fails over whole, as without steering.
	announce(150)
	waitFor(t, "steering again", func() bool { return westShare(t, s) >= 0.3 })
	east.healthy.Store(false)
	waitFor(t, "east fails over whole", func() bool { return westShare(t, s) == 1 })
}

// The share is chosen by client network, the same for every address of
// it, and close to the configured share over many networks.
func TestSteeredByClientNetwork(t *testing.T) {
	for _, share := range []float64{0.1, 0.5, 0.9} {
		n := 0
		for i := range 10000 {
			a := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1})
			b := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 200})
			if steered(a, share) != steered(b, share) {
				t.Fatalf("%s and %s of one /24 decided apart", a, b)
			}
			if steered(a, share) {
				n++
			}
		}
		if got := float64(n) / 10000; got < share-0.03 || got > share+0.03 {
			t.Errorf("share %g: %.3f of networks steered", share, got)
		}
	}
}

// Load the gslb does not see in its own gossip comes from a peer that does:
// the one seeing the most edges of the region.
func TestMergeLoads(t *testing.T) {
	local := map[string]regionLoad{"east": {Edges: 3, Sessions: 10}}
	peers := map[string]peerReport{
		"gslb-b": {loads: map[string]regionLoad{"east": {Edges: 5, Sessions: 99}, "west": {Edges: 1, Sessions: 7}}},
		"gslb-c": {loads: map[string]regionLoad{"west": {Edges: 2, Sessions: 8}}},
	}
	got := mergeLoads(local, peers)
	if got["east"].Sessions != 10 || got["west"].Sessions != 8 {
		t.Errorf("merged %v: want east from here, west from the peer seeing 2 edges", got)
	}
	// Absurd figures from one edge are bounded.
	l := loadsOf([]health.Node{
		{Name: "e1", Meta: health.Meta{Role: health.RoleEdge, Region: "east", State: health.StateAlive, Load: &health.Load{Sessions: -5, CPU: 900}}},
		{Name: "e2", Meta: health.Meta{Role: health.RoleEdge, Region: "east", State: health.StateDraining, Load: &health.Load{Sessions: 1000}}},
	})
	if e := l["east"]; e.Edges != 1 || e.Sessions != 0 || e.CPU != 100 {
		t.Errorf("loads %+v: want one alive edge, sessions 0, cpu 100", e)
	}
}
