package operator

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ringlb/ringlb/configs"
)

const testToken = "operator-token-0123456789"

// configRequest sends one request with the operator's token.
func configRequest(t *testing.T, method, url, ifMatch, body string) (int, map[string]any, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %d %q", method, url, resp.StatusCode, raw)
	}
	return resp.StatusCode, out, resp.Header
}

// The config API: GET the running config and the file's version, a check
// and a PUT with errors (located as `ringlb check` locates them, nothing
// written), a PUT without or with a stale version, one that applies (file
// and backup on disk, audit record), one the role refuses (restart).
func TestConfigAPI(t *testing.T) {
	dir, path, orig, running := edgeConfigFile(t)
	var applied atomic.Int32
	apply := func(old, next *configs.Config) error {
		if next.Edge.Listen != old.Edge.Listen {
			return configs.RestartNeeded("edge.listen", old.Edge.Listen, next.Edge.Listen)
		}
		applied.Add(1)
		return nil
	}
	n := newTestNode(t, configs.Admin{})
	cf := NewConfigFile(path, "edge", running, mustRead(t, path), apply, nil)
	n.UseConfigFile(cf)
	base := loginServer(t, n, testToken)

	code, view, header := configRequest(t, "GET", base+"/api/config", "", "")
	v1, _ := view["version"].(string)
	if code != 200 || len(v1) != 32 || header.Get("ETag") != `"`+v1+`"` || view["running_version"] != v1 || view["file"] != orig {
		t.Fatalf("GET: %d %v (ETag %s)", code, view, header.Get("ETag"))
	}
	eff := view["effective"].(map[string]any)
	if eff["edge"].(map[string]any)["history"].(map[string]any)["messages"] != float64(100) || eff["balancer"] != nil {
		t.Fatalf("effective: %v", eff)
	}

	bad := "cluster: { name: e1, bind: 127.0.0.1:7946 }\nedge:\n  history: { messages: -1 }\n  nope: 1\n"
	code, out, _ := configRequest(t, "POST", base+"/api/config/check", "", bad)
	wantProblems := []string{path + ":3: edge.history.messages: must be in range", path + ":4: edge.nope: unknown field"}
	if code != 400 || out["ok"] != false {
		t.Fatalf("check of a bad file: %d %v", code, out)
	}
	for _, want := range wantProblems {
		if !strings.Contains(out["error"].(string), want) {
			t.Errorf("check: %q not in %q", want, out["error"])
		}
	}
	if code, out, _ := configRequest(t, "POST", base+"/api/config/check", "", orig); code != 200 || out["ok"] != true || fmt.Sprint(out["warnings"]) != "[]" {
		t.Errorf("check of a good file: %d %v", code, out)
	}
	// A keyring its group may read, not root's: checked, with a warning
	// (configs/secretmode.go), as `ringlb check` prints it — once a file
	// on the host names it: the API reads no file the node was not told of.
	keyring := groupReadableKeyring(t, dir)
	keyed := strings.Replace(orig, "bind: 127.0.0.1:7946", "bind: 127.0.0.1:7946, secret_key_file: gossip.key", 1)
	if code, out, _ := configRequest(t, "POST", base+"/api/config/check", "", keyed); code != http.StatusForbidden || fmt.Sprint(out["fields"]) != "[cluster.secret_key_file]" {
		t.Errorf("check naming a keyring no file on the host names: %d %v, want 403", code, out)
	}
	restore := editOnHost(t, path, keyed)
	if code, out, _ := configRequest(t, "POST", base+"/api/config/check", "", keyed); code != 200 || out["ok"] != true ||
		!strings.Contains(fmt.Sprint(out["warnings"]), path+":1: cluster.secret_key_file: "+keyring+" is readable by its group") {
		t.Errorf("check of a file with a group-readable keyring: %d %v", code, out)
	}
	// With a problem too: refused, and the warning said with it.
	keyedBad := strings.Replace(keyed, "edge: {", "edge: { nope: 1,", 1)
	code, out, _ = configRequest(t, "POST", base+"/api/config/check", "", keyedBad)
	t.Logf("check of a file with a problem and a warning: %d %v", code, out)
	if code != 400 || out["ok"] != false || !strings.Contains(fmt.Sprint(out["problems"]), path+":2: edge.nope: unknown field") ||
		!strings.Contains(fmt.Sprint(out["warnings"]), path+":1: cluster.secret_key_file: "+keyring+" is readable by its group") {
		t.Errorf("check of a file with a problem and a warning: %d %v, want 400 with both", code, out)
	}
	restore()

	// PUT: no version, a bad file, a stale version.
	if code, _, _ := configRequest(t, "PUT", base+"/api/config", "", orig); code != http.StatusPreconditionRequired {
		t.Errorf("PUT without If-Match: %d", code)
	}
	code, out, _ = configRequest(t, "PUT", base+"/api/config", `"`+v1+`"`, bad)
	if code != 400 || !strings.Contains(out["error"].(string), wantProblems[0]) {
		t.Errorf("PUT of a bad file: %d %v", code, out)
	}
	if got, _ := os.ReadFile(path); string(got) != orig || applied.Load() != 0 {
		t.Fatalf("a bad PUT changed something: file %q, applied %d", got, applied.Load())
	}
	if _, err := os.Stat(path + ".bak"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a bad PUT left a backup: %v", err)
	}

	// A PUT that applies.
	good := "cluster: { name: e1, bind: 127.0.0.1:7946 }\nedge: { history: { messages: 7 } }\n"
	code, out, _ = configRequest(t, "PUT", base+"/api/config", `"`+v1+`"`, good)
	v2, _ := out["version"].(string)
	if code != 200 || out["applied"] != true || v2 == v1 || applied.Load() != 1 {
		t.Fatalf("PUT: %d %v (applied %d)", code, out, applied.Load())
	}
	if got, _ := os.ReadFile(path); string(got) != good {
		t.Errorf("file after PUT: %q", got)
	}
	if got, _ := os.ReadFile(path + ".bak"); string(got) != orig {
		t.Errorf("backup: %q", got)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("mode after PUT: %v %v", st.Mode(), err)
	}
	if cf.Running().Edge.History.Messages != 7 {
		t.Errorf("running config after PUT: %d", cf.Running().Edge.History.Messages)
	}
	if _, view, _ = configRequest(t, "GET", base+"/api/config", "", ""); view["version"] != v2 || view["running_version"] != v2 {
		t.Errorf("GET after PUT: %v", view)
	}
	recs := n.Audit.List(10)
	if len(recs) == 0 || recs[0].Action != "config" || recs[0].Target != path || recs[0].Result != 200 || recs[0].Who != CallerToken {
		t.Errorf("audit record of the PUT: %+v", recs)
	}

	// Someone edits the file on the host: a PUT made from v2 is refused.
	edited := good + "# edited on the host\n"
	if err := os.WriteFile(path, []byte(edited), 0o640); err != nil {
		t.Fatal(err)
	}
	code, out, _ = configRequest(t, "PUT", base+"/api/config", `"`+v2+`"`, orig)
	if code != http.StatusPreconditionFailed || out["version"] == v2 {
		t.Errorf("PUT on a stale version: %d %v", code, out)
	}
	if got, _ := os.ReadFile(path); string(got) != edited {
		t.Errorf("a refused PUT changed the file: %q", got)
	}

	// A change the role cannot make live: written, not applied, and said.
	_, view, _ = configRequest(t, "GET", base+"/api/config", "", "")
	moved := "cluster: { name: e1, bind: 127.0.0.1:7946 }\nedge: { listen: ':7999' }\n"
	code, out, _ = configRequest(t, "PUT", base+"/api/config", view["version"].(string), moved)
	if code != http.StatusAccepted || out["applied"] != false || !strings.Contains(out["error"].(string), "edge.listen: changing :7101 to :7999 needs a restart") {
		t.Errorf("PUT needing a restart: %d %v", code, out)
	}
	if r, _ := out["restart"].([]any); len(r) != 1 || r[0] != "edge.listen" {
		t.Errorf("restart fields: %v", out["restart"])
	}
	if cf.Running().Edge.Listen != ":7101" {
		t.Errorf("running listen: %s", cf.Running().Edge.Listen)
	}

	// A body over the bound is refused unread.
	big := strings.Repeat("#", MaxConfigBytes+1)
	if code, _, _ := configRequest(t, "POST", base+"/api/config/check", "", big); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized check: %d", code)
	}
	// Without a token nothing is read or changed.
	resp, err := http.Get(base + "/api/config")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET without the token: %d", resp.StatusCode)
	}
}

// A node started without a file (the demo) says so.
func TestConfigAPIWithoutFile(t *testing.T) {
	n := newTestNode(t, configs.Admin{})
	base := loginServer(t, n, testToken)
	if code, _, _ := configRequest(t, "GET", base+"/api/config", "", ""); code != http.StatusNotFound {
		t.Errorf("GET: %d", code)
	}
	if code, _, _ := configRequest(t, "PUT", base+"/api/config", `"x"`, ""); code != http.StatusNotFound {
		t.Errorf("PUT: %d", code)
	}
}

// A SIGHUP of a file with a problem changes nothing and logs, beside the
// problem (its caller's), what the file would be warned of, as `ringlb
// check` prints both; before, a refused reload said no warning.
func TestRefusedReloadLogsItsWarnings(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the warning is for a keyring its group may read that root does not own: needs root to chown")
	}
	dir, path, _, running := edgeConfigFile(t)
	groupReadableKeyring(t, dir)
	var logged strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logged.Write(p)
	}), nil))
	cf := NewConfigFile(path, "edge", running, mustRead(t, path), func(_, _ *configs.Config) error { return nil }, log)
	bad := "cluster: { name: e1, bind: 127.0.0.1:7946, secret_key_file: gossip.key }\nedge: { nope: 1 }\n"
	if err := os.WriteFile(path, []byte(bad), 0o640); err != nil {
		t.Fatal(err)
	}
	err := cf.Reload()
	mu.Lock()
	out := logged.String()
	mu.Unlock()
	t.Logf("reload: %v; logged: %s", err, out)
	if err == nil || !strings.Contains(err.Error(), "edge.nope: unknown field") {
		t.Fatalf("reload of a file with a problem: %v", err)
	}
	if !strings.Contains(out, "is readable by its group") || !strings.Contains(out, "field=cluster.secret_key_file") {
		t.Errorf("the refused file's warning was not logged: %q", out)
	}
	if cf.Running() != running {
		t.Error("a refused reload changed the running config")
	}
}

// edgeConfigFile writes an edge's config file in a directory of its own
// and loads it: the directory, the file's path, its text and the config.
func edgeConfigFile(t *testing.T) (dir, path, orig string, running *configs.Config) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "edge.yaml")
	orig = "cluster: { name: e1, bind: 127.0.0.1:7946 }\nedge: { history: { messages: 100 } }\n"
	if err := os.WriteFile(path, []byte(orig), 0o640); err != nil {
		t.Fatal(err)
	}
	running, err := configs.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return dir, path, orig, running
}

// configServer serves, behind testToken, a node whose config API edits
// the file at path, running as loaded from it and taking every change as
// applied; it returns the base URL.
func configServer(t *testing.T, path string) string {
	t.Helper()
	running, err := configs.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	n := newTestNode(t, configs.Admin{})
	n.UseConfigFile(NewConfigFile(path, "edge", running, mustRead(t, path), func(_, _ *configs.Config) error { return nil }, nil))
	return loginServer(t, n, testToken)
}

// groupReadableKeyring writes dir/gossip.key, readable by its group and,
// as root, given to another user: a keyring a check takes with a warning
// (configs/secretmode.go). It returns its path.
func groupReadableKeyring(t *testing.T, dir string) string {
	t.Helper()
	keyring := filepath.Join(dir, "gossip.key")
	if err := os.WriteFile(keyring, []byte(configs.GenerateKey()+"\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(keyring, 4321, 4321); err != nil {
			t.Fatal(err)
		}
	}
	return keyring
}

// writerFunc is a func as an io.Writer.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// mustRead is the content of the file at path.
func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// A PUT's audit record says what it changed: a config without the admin
// token (or the gossip key, the users) is a node weakened through its own
// API, and its record must say so, not only which file was written.
// Before, the record was "config PATH 200" whatever the PUT did, the same
// for a history bound and for the token dropped.
func TestPutAuditsTheSettingsItChanges(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := "cluster: { name: e1, bind: 127.0.0.1:7946 }\nedge: { history: { messages: %d }, admin: { listen: 127.0.0.1:9101%s } }\n"
	if err := os.WriteFile(path, fmt.Appendf(nil, file, 100, ", token_file: admin.token"), 0o640); err != nil {
		t.Fatal(err)
	}
	base := configServer(t, path)

	_, view, _ := configRequest(t, "GET", base+"/api/config", "", "")
	code, out, _ := configRequest(t, "PUT", base+"/api/config", `"`+view["version"].(string)+`"`, fmt.Sprintf(file, 7, ""))
	if code != http.StatusOK {
		t.Fatalf("PUT without the token: %d %v", code, out)
	}
	_, audit, _ := configRequest(t, "GET", base+"/api/audit", "", "")
	var recs []Record
	raw, _ := json.Marshal(audit["records"])
	if err := json.Unmarshal(raw, &recs); err != nil || len(recs) == 0 {
		t.Fatalf("GET /api/audit: %v %v", audit, err)
	}
	rec := recs[0]
	t.Logf("the PUT's record: %+v", rec)
	if rec.Action != "config" || rec.Target != path || rec.Result != http.StatusOK {
		t.Errorf("the PUT's record: %+v, want config %s 200", rec, path)
	}
	if len(rec.Changes) == 0 || rec.Changes[0] != "dropped edge.admin.token_file" || !slices.Contains(rec.Changes, "edge.history.messages") {
		t.Errorf("the PUT's record names the changes %q, want [dropped edge.admin.token_file ... edge.history.messages ...]", rec.Changes)
	}
}

// GET /api/config, a check and a PUT read the file on the host to the
// bound of a body (configs.MaxConfigBytes), as a start and a reload do: a
// file put in its place larger than any config — a link to /dev/zero — was
// read whole by each read of the config view, until the node was killed
// for its memory.
func TestConfigAPIReadsTheFileToABound(t *testing.T) {
	_, path, _, _ := edgeConfigFile(t)
	base := configServer(t, path)
	if err := os.Truncate(path, 64<<20); err != nil { // sparse: nothing written
		t.Fatal(err)
	}
	for _, req := range []struct{ method, url, ifMatch, body string }{
		{"GET", "/api/config", "", ""},
		{"POST", "/api/config/check", "", "cluster: { name: e1, bind: 127.0.0.1:7946 }\n"},
		{"PUT", "/api/config", `"x"`, "cluster: { name: e1, bind: 127.0.0.1:7946 }\n"},
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		code, out, _ := configRequest(t, req.method, base+req.url, req.ifMatch, req.body)
		runtime.ReadMemStats(&after)
		t.Logf("%s %s: %d, %d MiB allocated", req.method, req.url, code, (after.TotalAlloc-before.TotalAlloc)>>20)
		if msg, _ := out["error"].(string); code != http.StatusInternalServerError || !strings.Contains(msg, fmt.Sprintf("more than %d bytes", configs.MaxConfigBytes)) {
			t.Errorf("%s %s of a 64 MiB file: %d %.200v", req.method, req.url, code, out)
		}
	}
}
