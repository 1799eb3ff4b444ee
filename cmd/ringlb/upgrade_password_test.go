package main

import (
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// generatedPasswordLog is the message the generated password is logged
// with (health/operator).
const generatedPasswordLog = "no admin user is configured on an admin port beyond loopback: generated a password for the dashboard login"

// A balancer with no admin user and no state_dir, its admin port beyond
// loopback, logs a generated dashboard password once; an upgrade keeps it.
// Before, the new process made and logged another, and the operator's
// stopped working at every SIGUSR2.
func TestUpgradeKeepsTheGeneratedPassword(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	// A name, not an IP, beyond loopback by the rule of the admin
	// plane (only localhost and loopback IPs are loopback to it), though
	// it resolves to loopback here: the test reaches nothing beyond.
	host, _ := os.Hostname()
	addrs, err := net.LookupHost(host)
	if err != nil || len(addrs) == 0 || host == "localhost" {
		t.Skipf("the host name %q does not resolve (%v): no name to bind the admin port by", host, err)
	}
	for _, a := range addrs {
		if ip := net.ParseIP(a); ip == nil || !ip.IsLoopback() {
			t.Skipf("the host name %q resolves beyond loopback (%s): the test binds on loopback only", host, a)
		}
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "admin.token"), configs.GenerateKey()+"\n")
	cfg := filepath.Join(dir, "balancer.yaml")
	writeFile(t, cfg, "cluster: { name: bal-1, bind: 127.0.0.1:0, profile: local }\nbalancer: { listen: 127.0.0.1:0, admin: { listen: '"+host+":0', token_file: admin.token } }\n")
	bal := startProc(t, bin, "balancer", "-config", cfg, "-upgrade-dir", filepath.Join(dir, "run"))
	password, _ := bal.waitLog(t, generatedPasswordLog)["password"].(string)
	_, port, _ := net.SplitHostPort(bal.waitLog(t, "balancer started")["admin"].(string))
	login := func() int {
		t.Helper()
		c := &http.Client{Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.PostForm("http://127.0.0.1:"+port+"/login", url.Values{"user": {"admin"}, "password": {password}, "next": {"/"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := login(); code != http.StatusSeeOther {
		t.Fatalf("login with the generated password: %d, want 303", code)
	}
	old := bal.cmd.Process.Pid
	syscall.Kill(old, syscall.SIGUSR2)
	done := bal.waitLog(t, "upgrade done; the old process exits")
	newPID := int(done["new_pid"].(float64))
	t.Cleanup(func() { syscall.Kill(newPID, syscall.SIGTERM) })
	waitGone(t, old)
	code := login()
	made := strings.Count(bal.output(), generatedPasswordLog)
	t.Logf("after the upgrade: login with the first password %d; passwords generated and logged: %d", code, made)
	if code != http.StatusSeeOther || made != 1 {
		t.Errorf("the upgrade did not keep the generated password")
	}
}
