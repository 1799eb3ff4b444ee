package main

import (
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// An operator logged in to the dashboard stays logged in across a hitless
// upgrade of a node with no state_dir, as the generated password is kept:
// the login sessions ride the hand-off's admin part beside it. Before, the
// new process started with none, and every SIGUSR2 logged every operator
// out.
func TestUpgradeKeepsLoginSessions(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	member := okServer(t)
	sections := map[string]string{
		"balancer": "balancer: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0, users_file: users } }\n",
		"gslb": fmt.Sprintf(`gslb:
  listen: 127.0.0.1:0
  admin: { listen: 127.0.0.1:0, users_file: users }
  zones: [ { origin: ringlb.test, records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "ns1 3600 IN A 127.0.0.1" ] } ]
  monitors: { bal: { type: http, path: /, interval: 1s, timeout: 500ms, rise: 1, fall: 2 } }
  names:
    - name: ide.ringlb.test
      default_region: east
      regions: { east: { monitor: bal, members: [ { name: bal-1, address: 127.0.0.1, probe: %q } ] } }
`, member),
	}
	for _, role := range []string{"balancer", "gslb"} {
		t.Run(role, func(t *testing.T) {
			dir := t.TempDir()
			users := filepath.Join(dir, "users")
			line, err := configs.UsersLine("alice", operatorPassword)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, users, line+"\n")
			path := filepath.Join(dir, role+".yaml")
			writeFile(t, path, fmt.Sprintf("cluster: { name: %s-1, bind: 127.0.0.1:0, profile: local }\n", role)+sections[role])
			p := startProc(t, bin, role, "-config", path, "-upgrade-dir", filepath.Join(dir, "run"))
			admin := "http://" + p.waitLog(t, role+" started")["admin"].(string)

			jar, _ := cookiejar.New(nil)
			client := &http.Client{Jar: jar, Timeout: 15 * time.Second}
			resp, err := client.PostForm(admin+"/login", url.Values{"user": {"alice"}, "password": {operatorPassword}})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("alice's login: %d", resp.StatusCode)
			}
			whoami := func() string {
				t.Helper()
				resp, err := client.Get(admin + "/api/whoami")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.Status
			}
			if got := whoami(); !strings.HasPrefix(got, "200") {
				t.Fatalf("alice's session: %s", got)
			}

			old := p.cmd.Process.Pid
			syscall.Kill(old, syscall.SIGUSR2)
			next := int(p.waitLog(t, "upgrade done; the old process exits")["new_pid"].(float64))
			t.Cleanup(func() { syscall.Kill(next, syscall.SIGTERM) })
			waitGone(t, old)
			got := whoami()
			t.Logf("alice's session after the upgrade: %s", got)
			if !strings.HasPrefix(got, "200") {
				t.Errorf("alice's session after the upgrade: %s, want 200", got)
			}
		})
	}
}
