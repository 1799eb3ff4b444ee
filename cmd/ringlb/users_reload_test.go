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

// SIGHUP reads each role's users_file again: a user removed from it is
// logged out at once and logs in no more, a user added logs in. Before, the
// reload succeeded and changed nothing (the users were read only at start):
// an operator removing a compromised login had to restart the node, and
// nothing said so.
func TestUsersFileReloadedOnSIGHUP(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	member := okServer(t)
	sections := adminSections(member, "users_file: users")
	for _, role := range []string{"balancer", "edge", "gslb"} {
		t.Run(role, func(t *testing.T) {
			dir := t.TempDir()
			users := filepath.Join(dir, "users")
			line := func(user string) string {
				l, err := configs.UsersLine(user, operatorPassword)
				if err != nil {
					t.Fatal(err)
				}
				return l + "\n"
			}
			writeFile(t, users, line("alice"))
			path := filepath.Join(dir, role+".yaml")
			writeFile(t, path, fmt.Sprintf("cluster: { name: %s-1, bind: 127.0.0.1:0, profile: local }\n", role)+sections[role])
			p := startProc(t, bin, role, "-config", path)
			admin := "http://" + p.waitLog(t, role+" started")["admin"].(string)

			client, login := operatorClient(t, admin)
			whoami := func() string {
				t.Helper()
				resp, err := client.Get(admin + "/api/whoami")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.Status
			}
			if code := login("alice"); code != http.StatusOK {
				t.Fatalf("alice's login: %d", code)
			}
			if got := whoami(); !strings.HasPrefix(got, "200") {
				t.Fatalf("alice's session: %s", got)
			}

			writeFile(t, users, line("bob"))
			p.cmd.Process.Signal(syscall.SIGHUP)
			p.waitLog(t, "SIGHUP: configuration reloaded")
			if got := whoami(); !strings.HasPrefix(got, "401") {
				t.Errorf("alice's session after she was removed: %s, want 401", got)
			}
			if code := login("alice"); code != http.StatusUnauthorized {
				t.Errorf("alice's login after she was removed: %d, want 401", code)
			}
			if code := login("bob"); code != http.StatusOK {
				t.Errorf("bob's login once added: %d, want 200", code)
			}
		})
	}
}

// adminSections are a balancer's, an edge's and a gslb's config sections
// (the gslb's pool probing member) on free loopback ports, each admin port
// with the options admin adds ("users_file: users").
func adminSections(member, admin string) map[string]string {
	return map[string]string{
		"balancer": fmt.Sprintf("balancer: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0, %s } }\n", admin),
		"edge":     fmt.Sprintf("edge: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0, %s } }\n", admin),
		"gslb": fmt.Sprintf(`gslb:
  listen: 127.0.0.1:0
  admin: { listen: 127.0.0.1:0, %s }
  zones: [ { origin: ringlb.test, records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "ns1 3600 IN A 127.0.0.1" ] } ]
  monitors: { bal: { type: http, path: /, interval: 1s, timeout: 500ms, rise: 1, fall: 2 } }
  names:
    - name: ide.ringlb.test
      default_region: east
      regions: { east: { monitor: bal, members: [ { name: bal-1, address: 127.0.0.1, probe: %q } ] } }
`, admin, member),
	}
}

// operatorClient returns a client with a cookie jar of its own for the
// admin port at admin, and a login of user (operatorPassword) through it
// that returns the answer's status.
func operatorClient(t *testing.T, admin string) (*http.Client, func(user string) int) {
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 15 * time.Second}
	return client, func(user string) int {
		t.Helper()
		resp, err := client.PostForm(admin+"/login", url.Values{"user": {user}, "password": {operatorPassword}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
}
