package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
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
	sections := adminSections(member, "users_file: users")
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

			client, login := operatorClient(t, admin)
			if code := login("alice"); code != http.StatusOK {
				t.Fatalf("alice's login: %d", code)
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

// A logout the old process answers during a hitless upgrade holds on the
// new one: the hand-off's sessions (or, with state_dir, the file the new
// process reads at its start) are taken as the upgrade begins, and the old
// process serves its admin port until its hand-off. A logout it answered
// 200 in between came back to life on the new process — a cookie the
// operator had ended (a shared screen, a stolen laptop) worked again.
// The logout here is sent to the old process on a connection it accepted
// before SIGUSR2, its head completed only once the new process runs.
func TestUpgradeKeepsLogouts(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	member := okServer(t)
	sections := adminSections(member, "users_file: users")
	for _, tc := range []struct {
		name, role, stateDir, section string
	}{
		{"balancer", "balancer", "", sections["balancer"]},
		{"balancer-state_dir", "balancer", ", state_dir: state", sections["balancer"]},
		{"gslb", "gslb", "", sections["gslb"]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			line, err := configs.UsersLine("alice", operatorPassword)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, "users"), line+"\n")
			path := filepath.Join(dir, tc.role+".yaml")
			writeFile(t, path, fmt.Sprintf("cluster: { name: %s-1, bind: 127.0.0.1:0, profile: local%s }\n", tc.role, tc.stateDir)+tc.section)
			p := startProc(t, bin, tc.role, "-config", path, "-upgrade-dir", filepath.Join(dir, "run"))
			adminAddr := p.waitLog(t, tc.role+" started")["admin"].(string)
			admin := "http://" + adminAddr

			client, login := operatorClient(t, admin)
			if code := login("alice"); code != http.StatusOK {
				t.Fatalf("alice's login: %d", code)
			}
			u, _ := url.Parse(admin)
			var cookie string
			for _, c := range client.Jar.Cookies(u) {
				if c.Name == configs.CookieAdmin {
					cookie = c.Value
				}
			}
			if cookie == "" {
				t.Fatal("no session cookie after the login")
			}
			whoami := func() int {
				t.Helper()
				resp, err := client.Get(admin + "/api/whoami")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}

			// Only the old process accepts now; the head's last line
			// is held back until the new one is ready.
			c, err := net.Dial("tcp", adminAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := fmt.Fprintf(c, "POST /logout HTTP/1.1\r\nHost: %s\r\nCookie: %s=%s\r\n%s: 1\r\nContent-Length: 0\r\n", adminAddr, configs.CookieAdmin, cookie, configs.HeaderAdmin); err != nil {
				t.Fatal(err)
			}
			old := p.cmd.Process.Pid
			syscall.Kill(old, syscall.SIGUSR2)
			// The new process's first line: it runs, its start state
			// taken; the old one serves until the new one is ready (a
			// head completed once the old one stops serving is dropped
			// unanswered, as net/http does).
			p.waitLog(t, "open-file limit")
			oldAnswer := "no answer"
			if _, err := io.WriteString(c, "\r\n"); err != nil {
				oldAnswer += ": " + err.Error()
			} else {
				_ = c.SetReadDeadline(time.Now().Add(time.Minute))
				if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
					oldAnswer += ": " + err.Error()
				} else {
					resp.Body.Close()
					oldAnswer = resp.Status
					if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
						t.Errorf("the old process's 503 to the logout has no Retry-After")
					}
				}
			}
			next := int(p.waitLog(t, "upgrade done; the old process exits")["new_pid"].(float64))
			t.Cleanup(func() { syscall.Kill(next, syscall.SIGTERM) })
			waitGone(t, old)
			t.Logf("the old process's answer to the logout during the upgrade: %s", oldAnswer)
			if !strings.HasPrefix(oldAnswer, "200") {
				// Refused or cut: the operator logs out again, on the
				// new process.
				req, _ := http.NewRequest(http.MethodPost, admin+"/logout", nil)
				req.Header.Set(configs.HeaderAdmin, "1")
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("the logout again after the upgrade: %s", resp.Status)
				}
				client.Jar.SetCookies(u, []*http.Cookie{{Name: configs.CookieAdmin, Value: cookie, Path: "/"}})
			}
			if got := whoami(); got != http.StatusUnauthorized {
				t.Errorf("alice's ended session on the new process: %d, want 401", got)
			}
		})
	}
}
