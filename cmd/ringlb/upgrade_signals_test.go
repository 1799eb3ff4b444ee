package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// upgradeGSLBYAML is a gslb whose www answers addr; gossip binds bind.
func upgradeGSLBYAML(bind, addr string) string {
	return `cluster: { name: gslb-1, bind: ` + bind + `, profile: local }
gslb:
  listen: 127.0.0.1:0
  admin: { listen: 127.0.0.1:0 }
  rate_limit: { responses_per_second: 0 }
  zones: [ { origin: ringlb.test, records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "ns1 3600 IN A 127.0.0.1", "www 60 IN A ` + addr + `" ] } ]
`
}

// wwwAnswer is www.ringlb.test's address at server ("" when none).
func wwwAnswer(t *testing.T, server string) string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("www.ringlb.test.", dns.TypeA)
	r, _, err := (&dns.Client{Timeout: 3 * time.Second}).Exchange(m, server)
	if err != nil || len(r.Answer) != 1 {
		return ""
	}
	return r.Answer[0].(*dns.A).A.String()
}

// upgradeGSLB is a gslb of the real binary, from upgradeGSLBYAML with
// gossip on bind, started with -upgrade-dir run when run is not "" (else
// the default its environment makes); rec is its "gslb started" record.
type upgradeGSLB struct {
	bin, path, run string
	g              *proc
	rec            map[string]any
}

// startUpgradeGSLB skips the test under -short, else starts an upgradeGSLB
// (withDir: a hand-off directory of its own in the test's).
func startUpgradeGSLB(t *testing.T, bind string, withDir bool) *upgradeGSLB {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	u := &upgradeGSLB{bin: buildBinary(t)}
	dir := t.TempDir()
	u.path = filepath.Join(dir, "gslb.yaml")
	writeFile(t, u.path, upgradeGSLBYAML(bind, "127.0.0.9"))
	args := []string{"gslb", "-config", u.path}
	if withDir {
		u.run = filepath.Join(dir, "run")
		args = append(args, "-upgrade-dir", u.run)
	}
	u.g = startProc(t, u.bin, args...)
	u.rec = u.g.waitLog(t, "gslb started")
	return u
}

// During an upgrade the config belongs to no one process: a PUT to the old
// one is refused 503 (it applied only there, answered 200, and the new
// process ran the file it had read before), and a SIGHUP it gets is passed
// to the new one, which reloads (it was lost: the old process exited with
// it pending). Before, the PUT's change and the edit the SIGHUP announced
// were both gone once the upgrade was done.
func TestConfigChangesDuringAnUpgradeAreNotLost(t *testing.T) {
	t.Parallel()
	u := startUpgradeGSLB(t, "127.0.0.1:0", true)
	g, path := u.g, u.path
	server, admin := u.rec["dns"].(string), "http://"+u.rec["admin"].(string)
	old := g.cmd.Process.Pid
	_, view := adminCall(t, "GET", admin+"/api/config", nil, "")
	v0 := view["version"].(string)

	syscall.Kill(old, syscall.SIGUSR2)
	g.waitLog(t, "upgrade: starting the new process")
	code, out := adminCall(t, "PUT", admin+"/api/config", map[string]string{"If-Match": `"` + v0 + `"`}, upgradeGSLBYAML("127.0.0.1:0", "127.0.0.7"))
	t.Logf("PUT during the upgrade: %d %v", code, out)
	if code != 503 {
		t.Errorf("PUT during the upgrade: %d %v, want 503", code, out)
	}
	g.waitLog(t, "upgrade: the new process is ready; handing over")
	// An edit on the host after the new process read the file, announced
	// to the old process.
	writeFile(t, path, upgradeGSLBYAML("127.0.0.1:0", "127.0.0.8"))
	syscall.Kill(old, syscall.SIGHUP)
	done := g.waitLog(t, "upgrade done; the old process exits")
	next := int(done["new_pid"].(float64))
	t.Cleanup(func() { syscall.Kill(next, syscall.SIGTERM) })
	waitGone(t, old)
	deadline := time.Now().Add(30 * time.Second)
	for wwwAnswer(t, server) != "127.0.0.8" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := wwwAnswer(t, server); got != "127.0.0.8" {
		t.Errorf("www after the upgrade: %q, want 127.0.0.8, the edit the SIGHUP announced", got)
	}
}

// A SIGTERM to the old process while it hands over stops the node: the new
// process stops too. Before, the hand-off went on and the new process
// served on, the stop lost.
func TestStopDuringAnUpgradeStopsTheNode(t *testing.T) {
	t.Parallel()
	g := startUpgradeGSLB(t, "127.0.0.1:0", true).g
	old := g.cmd.Process.Pid
	syscall.Kill(old, syscall.SIGUSR2)
	g.waitLog(t, "upgrade: the new process is ready; handing over")
	syscall.Kill(old, syscall.SIGTERM)
	done := g.waitLog(t, "upgrade done; the old process exits")
	next := int(done["new_pid"].(float64))
	t.Cleanup(func() { syscall.Kill(next, syscall.SIGKILL) })
	waitGone(t, old)
	deadline := time.Now().Add(60 * time.Second)
	for alive(next) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(next) {
		t.Errorf("the new process %d serves on after the node was told to stop", next)
	}
}

// An upgrade hands the gossip port's sockets to the new process, so the port
// is never free: another user of the host who tries to bind it through
// three upgrades in a row never gets it, and each upgrade succeeds. Before,
// the old process closed its sockets as it left gossip and the new one
// bound the port again; a user who bound it in between (TCP or UDP) ended
// the new process after the hand-off, and nothing served.
func TestUpgradeKeepsTheGossipPort(t *testing.T) {
	t.Parallel()
	gossip := freeAddr(t)
	u := startUpgradeGSLB(t, gossip, true)
	old := u.g.cmd.Process.Pid
	stop, taken, done := make(chan struct{}), make(chan string, 1), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if ln, err := net.Listen("tcp", gossip); err == nil {
				taken <- "tcp"
				ln.Close()
				return
			}
			if pc, err := net.ListenPacket("udp", gossip); err == nil {
				taken <- "udp"
				pc.Close()
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	defer func() {
		close(stop)
		<-done
	}()
	for upgrade := 1; upgrade <= 3; upgrade++ {
		out, err := exec.Command(u.bin, "upgrade", "-pid", strconv.Itoa(old), "-upgrade-dir", u.run, "-timeout", "60s").CombinedOutput()
		t.Logf("ringlb upgrade %d: %v: %s", upgrade, err, out)
		select {
		case proto := <-taken:
			t.Fatalf("upgrade %d: another user bound the gossip port (%s) during the upgrade", upgrade, proto)
		default:
		}
		_, next, ok := strings.Cut(strings.TrimSpace(string(out)), "handed over to pid ")
		next, _, _ = strings.Cut(next, " ")
		pid, perr := strconv.Atoi(next)
		if err != nil || !ok || perr != nil {
			t.Fatalf("ringlb upgrade %d: %v %q, want upgraded", upgrade, err, out)
		}
		t.Cleanup(func() { syscall.Kill(pid, syscall.SIGTERM) })
		waitGone(t, old)
		old = pid
	}
	// The last new process gossips on the port: a stream there is accepted.
	c, err := net.DialTimeout("tcp", gossip, 5*time.Second)
	if err != nil {
		t.Fatalf("nothing listens on the gossip port after the upgrades: %v", err)
	}
	c.Close()
}

// A new process that cannot join gossip after the hand-off — here its new
// config names a gossip port another user holds, so the sockets passed on
// do not serve it — ends: the upgrade failed, and says so. `ringlb
// upgrade` exits 1 naming the reason, the old process's last word is an
// error. Before, the old process recorded a success and exited, `ringlb
// upgrade` printed "upgraded", and nothing served.
func TestUpgradeWhoseNewProcessCannotJoinSaysSo(t *testing.T) {
	t.Parallel()
	u := startUpgradeGSLB(t, "127.0.0.1:0", true)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	writeFile(t, u.path, upgradeGSLBYAML(held.Addr().String(), "127.0.0.9"))
	old := u.g.cmd.Process.Pid
	out, err := exec.Command(u.bin, "upgrade", "-pid", strconv.Itoa(old), "-upgrade-dir", u.run, "-timeout", "60s").CombinedOutput()
	t.Logf("ringlb upgrade: %v: %s", err, out)
	if err == nil || !strings.Contains(string(out), "gossip") {
		t.Errorf("ringlb upgrade: %v %q, want a failure naming the gossip port", err, out)
	}
	waitGone(t, old)
}

// `ringlb upgrade -pid` finds the process's hand-off directory as the
// process does — systemd's RuntimeDirectory= in its environment here —
// not by its own environment: run from a shell (or by sudo) it looked in
// its own default, and a successful upgrade exited 1, "exited without
// recording an upgrade".
func TestUpgradeCommandFindsTheProcessesDirectory(t *testing.T) {
	run := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(run, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("RUNTIME_DIRECTORY", run) // as systemd sets it for the unit
	u := startUpgradeGSLB(t, "127.0.0.1:0", false)
	bin, g := u.bin, u.g
	old := g.cmd.Process.Pid
	cmd := exec.Command(bin, "upgrade", "-pid", strconv.Itoa(old), "-timeout", "60s")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RUNTIME_DIRECTORY=") && !strings.HasPrefix(kv, "TMPDIR=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "TMPDIR="+t.TempDir()) // a shell's own
	out, err := cmd.CombinedOutput()
	t.Logf("ringlb upgrade: %v: %s", err, out)
	if err != nil || !strings.Contains(string(out), "upgraded") {
		t.Errorf("ringlb upgrade of a process under RuntimeDirectory=: %v %q, want upgraded", err, out)
	}
	if done := g.waitLog(t, "upgrade done; the old process exits"); done != nil {
		next := int(done["new_pid"].(float64))
		t.Cleanup(func() { syscall.Kill(next, syscall.SIGTERM) })
	}
	waitGone(t, old)
}
