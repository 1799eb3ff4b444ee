package balancer

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// TestAdminNodesAndDrain: /api/nodes lists gossip members and static
// edges; a drain of a gossip edge is asked of the edge's admin port. The
// edge here is an earlier release's (peer_signing 6): it signs no answer,
// and its answer is shown as before; the same unsigned answer from an edge
// announcing 7 is shown as the edge's error.
func TestAdminNodesAndDrain(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	var drains atomic.Int32
	edgeAdmin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/api/drain" {
			drains.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"draining":true}`))
			return
		}
		http.NotFound(w, r)
	}))
	defer edgeAdmin.Close()
	cl := healthtest.New(t)
	self := cl.Join("bal-test", health.Meta{Role: health.RoleBalancer, State: health.StateAlive})
	edge := cl.Join("gossip-edge", health.Meta{Role: health.RoleEdge, URL: "http://127.0.0.1:1", Admin: edgeAdmin.URL, Weight: 1, State: health.StateAlive})
	announce := func(level int) { healthtest.AnnouncePeerSigning(t, edge, self, level) }
	announce(health.PeerSigningForwarded)
	h.bal.SetCluster(self)

	resp, err := h.client.Get("http://" + h.admin + "/api/nodes")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Nodes []struct {
			Name, Role, State, Admin string
			OnRing                   bool `json:"on_ring"`
		}
		Recent []struct{ Kind, Node string }
	}
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	byName := map[string]string{}
	for _, n := range got.Nodes {
		byName[n.Name] = n.Role + "/" + n.State
	}
	want := map[string]string{"bal-test": "balancer/alive", "gossip-edge": "edge/alive", "edge-1": "edge/static", "edge-2": "edge/static", "edge-3": "edge/static"}
	for name, w := range want {
		if byName[name] != w {
			t.Errorf("node %s = %q, want %q (all: %v)", name, byName[name], w, byName)
		}
	}
	if len(got.Recent) == 0 {
		t.Error("no recent membership events")
	}

	postBody := func(name string) (int, string) {
		t.Helper()
		resp, err := postAdmin(h.client, "http://"+h.admin+"/api/nodes/"+name+"/drain")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	post := func(name string) int {
		code, _ := postBody(name)
		return code
	}
	if code := post("gossip-edge"); code != 200 || drains.Load() != 1 {
		t.Errorf("drain gossip-edge: %d, edge saw %d drain requests", code, drains.Load())
	}
	announce(health.PeerSigningAnswer)
	if code, body := postBody("gossip-edge"); code != http.StatusBadGateway || !strings.Contains(body, "not signed") {
		t.Errorf("drain an edge announcing peer_signing %d that answers unsigned: %d %s, want its error", health.PeerSigningAnswer, code, body)
	}
	if code := post("nobody"); code != 404 {
		t.Errorf("drain unknown node: %d, want 404", code)
	}
	if code := post("bal-test"); code != 400 {
		t.Errorf("drain a balancer: %d, want 400", code)
	}
}
