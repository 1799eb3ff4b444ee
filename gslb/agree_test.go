package gslb

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// startNameserver starts a gslb with its admin API and joins it to a real
// gossip cluster (through seed, when set) as role gslb.
func startNameserver(t *testing.T, name string, cfg configs.GSLB, seed string) (*Server, *health.Membership) {
	t.Helper()
	s, admin := serveWithAdmin(t, name, cfg)
	cluster := configs.Cluster{Name: name, Region: "east", Bind: "127.0.0.1:0", Profile: "local",
		ProbeInterval: configs.Duration(100 * time.Millisecond), GossipInterval: configs.Duration(50 * time.Millisecond)}
	if seed != "" {
		cluster.Join = []string{seed}
	}
	m, err := health.Join(t.Context(), cluster, health.Meta{Role: health.RoleGSLB, Region: "east", Admin: admin, State: health.StateAlive}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		m.Shutdown(ctx)
	})
	s.UsePeers(m)
	return s, m
}

// Two nameservers, one of which cannot reach east's member: they still give
// the same answer (a tie is not a majority), and both fail over once the
// member is down for both.
func TestTwoNameserversAgree(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	// A port nothing listens on: gslb-b's probe of bal-1 always fails.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()

	a, ma := startNameserver(t, "gslb-a", gslbConfig(t, east, west, ""), "")
	b, _ := startNameserver(t, "gslb-b", parseGSLB(t, "", deadAddr, west.addr()), ma.Addr())
	healthtest.WaitMembers(t, ma, "the two nameservers meet in gossip", func(n []health.Node) bool { return len(n) == 2 })
	// gslb-b sees bal-1 down on its own, gslb-a sees it up: 1 of 2 is no
	// majority, so both answer east's member.
	const bal1 = "ide.ringlb.test./east/bal-1"
	// (Absent from its view until its checks have settled it.)
	healthtest.WaitUntil(t, "gslb-b's own probe sees bal-1 down", func() bool {
		up, ok := b.state.Load().pools.localMonitors()[bal1]
		return ok && !up
	})
	waitAnswer(t, a, "127.0.0.1", "192.0.2.1")
	waitAnswer(t, b, "127.0.0.1", "192.0.2.1")
	why := ""
	for _, r := range b.state.Load().pools.status()[0]["regions"].([]map[string]any) {
		if r["region"] == "east" {
			why = r["members"].([]map[string]any)[0]["why"].(string)
		}
	}
	if !strings.HasPrefix(why, "down for 1 of 2 gslb nodes") {
		t.Errorf("gslb-b says bal-1 is served because %q", why)
	}
	for range 20 { // over several probe and exchange rounds
		if got := answerIPs(queryFrom(t, b, "udp", "127.0.0.1", "ide.ringlb.test.", 1, nil)); got != "192.0.2.1" {
			t.Fatalf("gslb-b answers %s against the majority", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Now down for both: both fail over to west.
	east.healthy.Store(false)
	waitAnswer(t, a, "127.0.0.1", "192.0.2.2")
	waitAnswer(t, b, "127.0.0.1", "192.0.2.2")
}

// serveWithAdmin starts a nameserver named name and its admin API on a free
// loopback port; the admin URL is returned with it.
func serveWithAdmin(t *testing.T, name string, cfg configs.GSLB) (*Server, string) {
	t.Helper()
	s, err := New(cfg, name, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.ServeAdmin(ln)
	return s, "http://" + ln.Addr().String()
}
