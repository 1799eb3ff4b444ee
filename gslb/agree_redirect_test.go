package gslb

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// A member announces an admin address inside cluster.allowed_networks that
// answers every read with a redirect elsewhere (a cloud metadata address, a
// host beyond the allowed networks). The gslb's signed read of
// /api/monitors must not follow it: the announced address is the only one
// it calls, and its signature goes nowhere else.
func TestPeerReadFollowsNoRedirect(t *testing.T) {
	var elsewhere, redirected atomic.Int32
	outside := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		if r.Header.Get(configs.HeaderPeer) != "" {
			t.Errorf("the gslb's peer signature reached the redirect's target")
		}
		w.Write([]byte(`{"members":{}}`))
	}))
	defer outside.Close()
	rogue := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirected.Add(1)
		http.Redirect(w, r, outside.URL+"/latest/meta-data/", http.StatusFound)
	}))
	defer rogue.Close()

	east, west := newFakeBalancer(t), newFakeBalancer(t)
	_, ma := startNameserver(t, "gslb-a", gslbConfig(t, east, west, ""), "")
	cluster := configs.Cluster{Name: "rogue", Region: "east", Bind: "127.0.0.1:0", Profile: "local", Join: []string{ma.Addr()},
		ProbeInterval: configs.Duration(100 * time.Millisecond), GossipInterval: configs.Duration(50 * time.Millisecond)}
	healthtest.NewKeyless(t).JoinWith(cluster, health.Meta{Role: health.RoleGSLB, Region: "east", Admin: rogue.URL, State: health.StateAlive})
	// Several exchange rounds (a monitor interval each) reach the rogue.
	for deadline := time.Now().Add(30 * time.Second); redirected.Load() < 3; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the gslb read the rogue member %d times in 30 s, want 3", redirected.Load())
		}
	}
	t.Logf("%d reads of the rogue member's admin address; %d requests followed its redirect", redirected.Load(), elsewhere.Load())
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the gslb followed a peer's redirect %d times, want never", n)
	}
}
