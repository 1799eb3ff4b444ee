package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// TestPassiveFailoverWhenAnEdgeDies runs a real balancer and two edges as
// processes. With a session live on each edge, edge-2 is killed (-9): its
// client is cut off and reconnects at once to the next candidate, while the
// session on edge-1 goes on untouched.
func TestPassiveFailoverWhenAnEdgeDies(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	balCfg := filepath.Join(dir, "balancer.yaml")
	writeFile(t, balCfg, "cluster: { name: bal-1, bind: 127.0.0.1:0, profile: local }\n"+
		"balancer: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0 } }\n")
	bal := startProc(t, bin, "balancer", "-config", balCfg)
	rec := bal.waitLog(t, "balancer started")
	listen, admin, gossip := rec["listen"].(string), rec["admin"].(string), rec["gossip"].(string)
	edges := map[string]*proc{}
	for i := 1; i <= 2; i++ {
		cfg := filepath.Join(dir, fmt.Sprintf("edge%d.yaml", i))
		writeFile(t, cfg, fmt.Sprintf("cluster: { name: edge-%d, bind: 127.0.0.1:0, join: [%q], profile: local }\n"+
			"edge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0, drain_timeout: 1s }\n", i, gossip))
		p := startProc(t, bin, "edge", "-config", cfg)
		p.waitLog(t, "edge started")
		edges[fmt.Sprintf("edge-%d", i)] = p
	}
	waitRingMembers(t, "http://"+admin+"/api/ring", 2)

	// One key owned by each edge.
	keyOn := map[string]string{}
	for i := 0; len(keyOn) < 2 && i < 1000; i++ {
		key := fmt.Sprintf("k-%d", i)
		resp, err := http.Get("http://" + admin + "/api/lookup?key=" + key)
		if err != nil {
			t.Fatal(err)
		}
		var l struct{ Owner string }
		json.NewDecoder(resp.Body).Decode(&l)
		resp.Body.Close()
		if _, ok := keyOn[l.Owner]; !ok {
			keyOn[l.Owner] = key
		}
	}
	// dial joins key as a client does: an answer that asks to retry (503
	// while an edge cannot yet tell who hosts a key, a 421 naming an edge
	// the balancer does not know yet) is retried after a short pause.
	dial := func(key string) (*websocket.Conn, string) {
		t.Helper()
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		deadline := time.Now().Add(30 * time.Second) // liveness, not a measurement
		for attempt := 1; ; attempt++ {
			c, resp, err := d.Dial("ws://"+listen+"/ws", http.Header{"Ctstickiness": {key}})
			if err == nil {
				return c, resp.Header.Get("X-Ringlb-Edge")
			}
			if resp == nil || (resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusMisdirectedRequest) || time.Now().After(deadline) {
				t.Fatalf("dial %s, attempt %d: %v%s", key, attempt, err, describeResponse(resp))
			}
			t.Logf("dial %s: %v%s, retrying", key, err, describeResponse(resp))
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Two participants per session, so frames have someone to reach.
	survivorA, on1 := dial(keyOn["edge-1"])
	survivorB, _ := dial(keyOn["edge-1"])
	victim, on2 := dial(keyOn["edge-2"])
	defer victim.Close()
	defer survivorA.Close()
	defer survivorB.Close()
	if on1 != "edge-1" || on2 != "edge-2" {
		t.Fatalf("sessions on %s and %s", on1, on2)
	}

	killed := time.Now()
	edges["edge-2"].cmd.Process.Kill()
	victim.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := victim.ReadMessage(); err == nil {
		t.Fatal("client of the killed edge still connected")
	}
	again, on := dial(keyOn["edge-2"])
	defer again.Close()
	t.Logf("the killed edge's session reconnected to %s %s after the kill", on, time.Since(killed).Round(time.Millisecond))
	if on != "edge-1" {
		t.Fatalf("reconnect served by %q, want the next candidate edge-1", on)
	}
	// The other session saw nothing.
	survivorA.WriteMessage(websocket.TextMessage, []byte("still here"))
	survivorB.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, msg, err := survivorB.ReadMessage(); err != nil || string(msg) != "still here" {
		t.Fatalf("session on edge-1 disturbed: %q %v", msg, err)
	}
}
