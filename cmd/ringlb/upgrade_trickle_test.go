package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A request trickled to the old process's admin port (open to anyone
// beyond loopback: the login form) holds no upgrade: the hand-off ends, the
// old process leaves gossip and exits, and the request is cut — its client
// retries on the new process, which serves the same port. Before, the old
// process waited for it until the admin port's request timeout or the whole
// -shutdown-timeout (10 s by default, measured), the upgrade's answer and
// the new process's join to gossip with it, at every upgrade. The bounds
// here are ten minutes, beyond the test's patience.
func TestUpgradeDoesNotWaitForATrickledAdminRequest(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	member := okServer(t)
	sections := adminSections(member, "request_timeout: 10m")
	for _, role := range []string{"balancer", "gslb"} {
		t.Run(role, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, role+".yaml")
			writeFile(t, path, fmt.Sprintf("cluster: { name: %s-1, bind: 127.0.0.1:0, profile: local }\n", role)+sections[role])
			p := startProc(t, bin, role, "-config", path, "-upgrade-dir", filepath.Join(dir, "run"), "-shutdown-timeout", "10m")
			admin := p.waitLog(t, role+" started")["admin"].(string)
			c, err := net.Dial("tcp", admin)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// The head whole, the body a few bytes of its 100: the server
			// is reading it once it answers the request before it on the
			// same connection.
			if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"+
				"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nuser=a"); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Minute))
			first := make([]byte, len("HTTP/1.1 200"))
			if _, err := io.ReadFull(c, first); err != nil || string(first) != "HTTP/1.1 200" {
				t.Fatalf("the request before the trickled one: %q %v", first, err)
			}

			old := p.cmd.Process.Pid
			began := time.Now()
			syscall.Kill(old, syscall.SIGUSR2)
			next := int(p.waitLog(t, "upgrade done; the old process exits")["new_pid"].(float64))
			t.Cleanup(func() { syscall.Kill(next, syscall.SIGTERM) })
			waitGone(t, old)
			t.Logf("the old process gone %s after SIGUSR2, a request trickled to its admin port", time.Since(began).Round(time.Millisecond))
			_, err = io.ReadAll(c)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("the trickled request's connection still open after the old process exited")
			}
			resp, err := http.Get("http://" + admin + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("the admin port after the upgrade: %s", resp.Status)
			}
		})
	}
}
