package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The config API changes a node's settings, not which files of its host it
// reads or writes: a PUT that names another file (here the access log) is
// refused, and the host's files stay as they were. Before, a logged-in
// operator of the dashboard could make a balancer — often root — append a
// line per request to any file (/etc/sudoers, breaking sudo), or create
// one (/etc/nologin, refusing every other login): the PUT applied, and the
// next request's line was appended to the victim.
func TestPutCannotPointTheNodeAtOtherFiles(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	victim := filepath.Join(dir, "etc", "sudoers")
	os.Mkdir(filepath.Dir(victim), 0o755)
	const kept = "root ALL=(ALL:ALL) ALL\n"
	writeFile(t, victim, kept)
	path := filepath.Join(dir, "bal.yaml")
	file := "cluster: { name: bal-1, bind: 127.0.0.1:0, profile: local }\nbalancer: { listen: 127.0.0.1:0, admin: 127.0.0.1:0, access_log: { enabled: true, path: %s } }\n"
	writeFile(t, path, strings.Replace(file, "%s", "access.log", 1))
	bal := startProc(t, bin, "balancer", "-config", path)
	rec := bal.waitLog(t, "balancer started")
	listen, admin := rec["listen"].(string), "http://"+rec["admin"].(string)

	_, view := adminCall(t, "GET", admin+"/api/config", nil, "")
	code, out := adminCall(t, "PUT", admin+"/api/config", map[string]string{"If-Match": `"` + view["version"].(string) + `"`}, strings.Replace(file, "%s", victim, 1))
	t.Logf("PUT with access_log.path %s: %d %v", victim, code, out)
	if code != http.StatusForbidden || !strings.Contains(fmt.Sprint(out["fields"]), "balancer.access_log.path") {
		t.Errorf("PUT naming another file: %d %v, want 403 naming balancer.access_log.path", code, out)
	}

	// A request: its line goes to the access log the node runs with. Once
	// it is there, the victim holds whatever the node appended to it.
	resp, err := http.Get("http://" + listen + "/whoami")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	logFile := filepath.Join(dir, "access.log")
	if code == http.StatusOK {
		logFile = victim
	}
	waitAccessLines(t, logFile, func(ls []map[string]any) bool { return len(ls) > 0 })
	if got, _ := os.ReadFile(victim); string(got) != kept {
		t.Errorf("the node wrote to %s:\n%s", victim, got)
	}
}
