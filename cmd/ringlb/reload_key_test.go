package main

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/ringlb/ringlb/configs"
)

// A reload that adds or removes the cluster key (possible on a loopback
// gossip port, where no key is required) needs a restart, and is refused
// before anything of it applies. Before, the edge's section was applied
// first and the keyring's refusal came after: the PUT answered "not
// applied", GET /api/config showed the old config, and the edge ran the
// new history bound.
func TestReloadThatRemovesTheKeyChangesNothing(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "gossip.key"), configs.GenerateKey()+"\n")
	path := filepath.Join(dir, "edge.yaml")
	file := "cluster: { name: edge-1, bind: 127.0.0.1:0, profile: local%s }\nedge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0, history: { messages: %d } }\n"
	keyed := ", secret_key_file: gossip.key"
	writeFile(t, path, fmt.Sprintf(file, keyed, 100))
	edge := startProc(t, bin, "edge", "-config", path)
	admin := "http://" + edge.waitLog(t, "edge started")["admin"].(string)

	_, view := adminCall(t, "GET", admin+"/api/config", nil, "")
	code, out := adminCall(t, "PUT", admin+"/api/config", map[string]string{"If-Match": `"` + view["version"].(string) + `"`}, fmt.Sprintf(file, "", 7))
	t.Logf("PUT without the key: %d %v", code, out)
	if code != 202 || out["applied"] != false || fmt.Sprint(out["restart"]) != "[cluster.secret_key_file]" {
		t.Errorf("PUT without the key: %d %v, want 202, not applied, restart [cluster.secret_key_file]", code, out)
	}

	// A PUT that applies (the key back, another bound) marks the log: every
	// reload line before its own is one the refused PUT made.
	_, view = adminCall(t, "GET", admin+"/api/config", nil, "")
	if code, out := adminCall(t, "PUT", admin+"/api/config", map[string]string{"If-Match": `"` + view["version"].(string) + `"`}, fmt.Sprintf(file, keyed, 9)); code != 200 {
		t.Fatalf("PUT with the key: %d %v", code, out)
	}
	var partial []any
	edge.waitLogWith(t, "configuration reloaded", func(r map[string]any) bool {
		if r["history_messages"] == float64(9) {
			return true
		}
		partial = append(partial, r["history_messages"])
		return false
	})
	if len(partial) > 0 {
		t.Errorf("the refused PUT applied the edge's section (history_messages %v)", partial)
	}
}
