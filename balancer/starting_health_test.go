package balancer

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// A balancer waiting for another balancer's table is not ready: its health
// path answers 503, but marked configs.HeaderStarting, which a gslb's
// monitor takes for no finding (a starting balancer is not a dead one, and
// its region must not fail over). Once its table routes it answers 200,
// unmarked.
func TestStartingBalancerHealthSaysStarting(t *testing.T) {
	edge := startTestEdge(t, "edge-1")
	cl := healthtest.New(t)
	// Another balancer that never answers an ask: bal-2 waits for it
	// (startup_wait, long here) until the test lets its table route.
	cl.Join("bal-quiet", health.Meta{Role: health.RoleBalancer, Region: "east", State: health.StateAlive})
	cfg := configs.Balancer{Edges: staticEdgesOf(edge), SessionTable: configs.SessionTable{StartupWait: configs.Duration(healthtest.Patience)}}
	b2 := startClusterBalancer(t, cl, "bal-2", cfg)
	resp, body := b2.get(t, HealthPath, nil)
	if b2.bal.table.routable() {
		t.Fatal("bal-2's table routes before any balancer answered it")
	}
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(configs.HeaderStarting) == "" {
		t.Errorf("starting balancer's health: %d %q, %s %q; want 503 marked starting", resp.StatusCode, body, configs.HeaderStarting, resp.Header.Get(configs.HeaderStarting))
	}
	b2.bal.table.markReady() // what the end of the asks does
	waitRing(t, b2, "edge-1")
	resp, body = b2.get(t, HealthPath, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get(configs.HeaderStarting) != "" {
		t.Errorf("ready balancer's health: %d %q, %s %q; want 200 unmarked", resp.StatusCode, body, configs.HeaderStarting, resp.Header.Get(configs.HeaderStarting))
	}
	// Maintenance is the operator's word, not a start: unmarked.
	b2.bal.maintenance.Store(true)
	resp, body = b2.get(t, HealthPath, nil)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "maintenance") || resp.Header.Get(configs.HeaderStarting) != "" {
		t.Errorf("balancer in maintenance: %d %q, %s %q; want 503 maintenance unmarked", resp.StatusCode, body, configs.HeaderStarting, resp.Header.Get(configs.HeaderStarting))
	}
}
