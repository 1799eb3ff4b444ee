package operator

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/ringlb/ringlb/configs"
)

// configFileServer is an admin port serving a config file (the one of an
// edge on loopback) with apply, answering the operator's token.
func configFileServer(t *testing.T, apply func(old, next *configs.Config) error) (base, path string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(path, []byte("cluster: { name: e1, bind: 127.0.0.1:7946 }\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	running, err := configs.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if apply == nil {
		apply = func(_, _ *configs.Config) error { return nil }
	}
	n := newTestNode(t, configs.Admin{})
	n.UseConfigFile(NewConfigFile(path, "edge", running, apply, nil))
	return loginServer(t, n, testToken), path
}

// A few kilobytes of YAML whose aliases name aliases must not make a node
// build a config, or an error, a thousand times their size: the config
// API's check (and a PUT, and SIGHUP, and `ringlb check`) parses whatever
// the operator's client sends, up to MaxConfigBytes. Before, the 3 KiB
// "nested" body below answered 25 MB of problems after 190 MB of work, and
// the growth is a power of the aliases' depth: a 1 MiB body ends the node.
func TestConfigCheckAliasesCannotMultiply(t *testing.T) {
	base, _ := configFileServer(t, nil)
	nested := func(k int) string {
		var b strings.Builder
		b.WriteString("edge:\n  admin:\n    hosts: [&s \"" + strings.Repeat("A", 100) + "\"]\n")
		b.WriteString("gslb:\n  zones:\n  - &z\n    origin: example.com\n    records: [")
		b.WriteString(strings.Repeat("*s,", k))
		b.WriteString("]\n")
		b.WriteString(strings.Repeat("  - *z\n", k))
		return b.String()
	}
	wide := func(k int) string {
		return "edge:\n  admin:\n    hosts: [&s \"" + strings.Repeat("A", 10_000) + "\"" + strings.Repeat(",*s", k) + "]\n"
	}
	for _, tc := range []struct{ name, body string }{
		{"nested", nested(300)},
		{"wide", wide(1000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			req, _ := http.NewRequest("POST", base+"/api/config/check", strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer "+testToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			answer, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			runtime.ReadMemStats(&after)
			t.Logf("%d-byte body: %d, %d-byte answer, %d MB allocated", len(tc.body), resp.StatusCode, len(answer), (after.TotalAlloc-before.TotalAlloc)>>20)
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("status %d, want 400", resp.StatusCode)
			}
			// The answer may quote what the file holds (a bad value in a
			// problem), a few times over: never what aliases multiply.
			if limit := 8*len(tc.body) + 64<<10; len(answer) > limit {
				t.Errorf("a %d-byte body answered %d bytes (more than %d): aliases multiplied it", len(tc.body), len(answer), limit)
			}
			if !strings.Contains(string(answer), "alias") {
				t.Errorf("the answer does not name the aliases: %.300s", answer)
			}
		})
	}
}
