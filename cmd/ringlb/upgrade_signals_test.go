package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
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

// Two `ringlb upgrade` of one node at once (two operators, a deploy tool
// beside a timer) are one upgrade: the second SIGUSR2 comes while the node
// hands over, and both commands report its outcome. Before, each removed
// the outcome's record — before it signalled, and once it had read it —
// so one of them found none and exited 1, "exited without recording an
// upgrade (stopped or crashed?)", for an upgrade that succeeded.
func TestTwoUpgradeCommandsAtOnceBothReportTheUpgrade(t *testing.T) {
	t.Parallel()
	u := startUpgradeGSLB(t, "127.0.0.1:0", true)
	old := u.g.cmd.Process.Pid
	upgrade := func() *exec.Cmd {
		return exec.Command(u.bin, "upgrade", "-pid", strconv.Itoa(old), "-upgrade-dir", u.run, "-timeout", "60s")
	}
	type result struct {
		out []byte
		err error
	}
	results := make(chan result, 2)
	run := func(cmd *exec.Cmd) {
		out, err := cmd.CombinedOutput()
		results <- result{out, err}
	}
	go run(upgrade())
	go run(upgrade())
	done := u.g.waitLog(t, "upgrade done; the old process exits")
	next := int(done["new_pid"].(float64))
	t.Cleanup(func() { syscall.Kill(next, syscall.SIGTERM) })
	for i := 1; i <= 2; i++ {
		r := <-results
		t.Logf("ringlb upgrade %d: %v: %s", i, r.err, r.out)
		if r.err != nil || !strings.Contains(string(r.out), "handed over to pid "+strconv.Itoa(next)) {
			t.Errorf("ringlb upgrade %d: %v %q, want upgraded to pid %d", i, r.err, r.out, next)
		}
	}
	waitGone(t, old)
}

// A new process that dies after it said it was ready (killed, a crash, the
// OOM killer) while the old one hands over takes nothing over: the old
// one, committed, exits, and the upgrade is reported as the loss it is —
// `ringlb upgrade` exits 1 saying neither process serves, and the old
// process's last word is an error. Before, the old process recorded a
// success for the dead pid (and named it systemd's main process), and
// `ringlb upgrade` printed "upgraded" and exited 0 while nothing served.
func TestUpgradeWhoseNewProcessDiesMidHandOffSaysSo(t *testing.T) {
	t.Parallel()
	u := startUpgradeGSLB(t, "127.0.0.1:0", true)
	old := u.g.cmd.Process.Pid
	type result struct {
		out []byte
		err error
	}
	results := make(chan result, 1)
	go func() {
		out, err := exec.Command(u.bin, "upgrade", "-pid", strconv.Itoa(old), "-upgrade-dir", u.run, "-timeout", "60s").CombinedOutput()
		results <- result{out, err}
	}()
	// The gslb hands over for a moment at least (its TCP connections'
	// grace): the new process dies before it is done.
	ready := u.g.waitLog(t, "upgrade: the new process is ready; handing over")
	next := int(ready["pid"].(float64))
	if err := syscall.Kill(next, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r := <-results
	t.Logf("ringlb upgrade: %v: %s", r.err, r.out)
	if r.err == nil || !strings.Contains(string(r.out), "neither process serves") {
		t.Errorf("ringlb upgrade whose new process died mid-hand-off: %v %q, want a failure saying neither process serves", r.err, r.out)
	}
	waitGone(t, old)
}

// An operator's change on the old process while the new one starts —
// maintenance switched on (POST /api/maintenance?state=on, answered 200)
// after the old process had sent the new one its state — holds once the
// new process serves. Before, the new process served with the maintenance
// the state had said: /api/maintenance said false, its health path
// answered as in service, and the balancer the operator had just taken out
// was back in every health check (keepalived, a gslb monitor).
func TestMaintenanceSetDuringAnUpgradeIsKept(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	ss, err := exec.LookPath("ss")
	if err != nil {
		t.Skip("needs ss (iproute2) to see what waits on the new process's hand-off socket")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "balancer.yaml")
	yaml := "cluster: { name: bal-1, bind: 127.0.0.1:0, profile: local }\nbalancer: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0 } }\n"
	writeFile(t, cfg, yaml)
	bal := startProc(t, bin, "balancer", "-config", cfg, "-upgrade-dir", filepath.Join(dir, "run"))
	admin := "http://" + bal.waitLog(t, "balancer started")["admin"].(string)
	old := bal.cmd.Process.Pid

	// The new process reads its config from a FIFO: it waits there, once
	// it has said hello to the old process, until the test writes it.
	fifo, next := upgradeReadingFIFO(t, cfg, old)
	waitUnread(t, ss, next) // the old process's peers and state
	if code, out := adminCall(t, "POST", admin+"/api/maintenance?state=on", nil, ""); code != 200 || out["maintenance"] != true {
		t.Fatalf("maintenance on during the upgrade: %d %v", code, out)
	}
	if _, err := fifo.WriteString(yaml); err != nil {
		t.Fatal(err)
	}
	fifo.Close()
	done := bal.waitLog(t, "upgrade done; the old process exits")
	if got := int(done["new_pid"].(float64)); got != next {
		t.Fatalf("upgraded to pid %d, the test waited on %d", got, next)
	}
	waitGone(t, old)
	_, out := adminCall(t, "GET", admin+"/api/maintenance", nil, "")
	if out["maintenance"] != true {
		t.Errorf("after the upgrade: %v, want the maintenance the operator set on the old process during it", out)
	}
}

// childOf waits for the child process of pid (an upgrade's new process).
func childOf(t *testing.T, pid int) int {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			child, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
			if err != nil {
				continue
			}
			// "pid (comm) state ppid ...": the fields follow the last ')'.
			s := string(data)
			fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
			if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
				return child
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d started no process within 60s", pid)
	return 0
}

// waitUnread waits until bytes wait unread on a Unix stream socket of pid
// (ss's Recv-Q).
func waitUnread(t *testing.T, ss string, pid int) {
	t.Helper()
	owner := "pid=" + strconv.Itoa(pid) + ","
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		out, err := exec.Command(ss, "-x", "-H", "-p").Output()
		if err != nil {
			t.Fatalf("ss: %v", err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) > 2 && f[0] == "u_str" && strings.Contains(line, owner) && f[2] != "0" {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("nothing waits unread on a Unix socket of pid %d within 60s", pid)
}

// A member an operator took out of a gslb's answers (serve mode remove)
// stays out while the gslb is upgraded: the new process answers from the
// moment it reads the DNS sockets, before the old one has stopped, and it
// answers with the old one's operator state. Before, without
// cluster.state_dir (the default) it answered without it until the
// hand-off's end: the removed member was handed out (with its TTL, to
// every resolver that asked meanwhile) for the length of the hand-off.
// The old process is stopped (SIGSTOP) once the new one is ready, so the
// queries meanwhile are the new one's alone.
func TestGSLBUpgradeKeepsOverridesFromItsFirstAnswer(t *testing.T) {
	t.Parallel()
	g, server, admin := startPoolGSLB(t)
	answers := func() []string { return ideAnswers(t, server) }
	if code, out := adminCall(t, "POST", admin+"/api/pools/ide.ringlb.test/east/bal-2/mode?mode=remove", nil, ""); code != 200 {
		t.Fatalf("serve mode remove: %d %v", code, out)
	}
	if got := answers(); len(got) != 1 || got[0] != "192.0.2.1" {
		t.Fatalf("answers with bal-2 removed: %v, want 192.0.2.1 alone", got)
	}
	old := g.cmd.Process.Pid
	syscall.Kill(old, syscall.SIGUSR2)
	g.waitLog(t, "upgrade: the new process is ready; handing over")
	freeze(t, old)
	handedOut := 0
	for range 20 {
		if got := answers(); len(got) != 1 || got[0] != "192.0.2.1" {
			handedOut++
			t.Logf("during the upgrade: %v", got)
		}
	}
	syscall.Kill(old, syscall.SIGCONT)
	done := g.waitLog(t, "upgrade done; the old process exits")
	next := int(done["new_pid"].(float64))
	t.Cleanup(func() { syscall.Kill(next, syscall.SIGTERM) })
	waitGone(t, old)
	if handedOut > 0 {
		t.Errorf("%d of 20 answers from the new process during the upgrade handed out the member the operator removed", handedOut)
	}
	if got := answers(); len(got) != 1 || got[0] != "192.0.2.1" {
		t.Errorf("answers after the upgrade: %v, want 192.0.2.1 alone", got)
	}
}

// An operator's change made on a gslb's new process during the upgrade —
// it serves the admin port beside the old one from its start — stands once
// the upgrade is done, when the old one changed nothing meanwhile. Before,
// the old process's operator state at the hand-off's end replaced the new
// one's whole: a member removed there (answered 200, and answered without
// at once) was answered again once the upgrade was done. The old process
// is stopped (SIGSTOP) once the new one is ready, so that the change
// reaches the new one.
func TestGSLBChangeOnTheNewProcessDuringTheUpgradeStands(t *testing.T) {
	t.Parallel()
	g, server, admin := startPoolGSLB(t)
	answers := func() []string { return ideAnswers(t, server) }
	old := g.cmd.Process.Pid
	syscall.Kill(old, syscall.SIGUSR2)
	g.waitLog(t, "upgrade: the new process is ready; handing over")
	freeze(t, old)
	code, out := adminCall(t, "POST", admin+"/api/pools/ide.ringlb.test/east/bal-2/mode?mode=remove", nil, "")
	during := answers()
	syscall.Kill(old, syscall.SIGCONT)
	if code != 200 {
		t.Fatalf("serve mode remove during the upgrade: %d %v", code, out)
	}
	t.Logf("answers once removed during the upgrade: %v", during)
	done := g.waitLog(t, "upgrade done; the old process exits")
	next := int(done["new_pid"].(float64))
	t.Cleanup(func() { syscall.Kill(next, syscall.SIGTERM) })
	waitGone(t, old)
	if got := answers(); len(got) != 1 || got[0] != "192.0.2.1" {
		t.Errorf("answers after the upgrade: %v, want 192.0.2.1 alone: the member removed on the new process during it is back", got)
	}
}

// startPoolGSLB skips the test under -short, else starts a gslb of the
// real binary (with an -upgrade-dir of its own) whose ide.ringlb.test
// answers bal-1 (192.0.2.1) and bal-2 (192.0.2.2), served always; it
// returns its DNS and admin addresses.
func startPoolGSLB(t *testing.T) (g *proc, server, admin string) {
	t.Helper()
	g, server, admin, _ = startPoolGSLBOf(t, poolGSLBConfig(2))
	return g, server, admin
}

// poolGSLBConfig is a gslb config whose ide.ringlb.test answers members
// bal-1 … bal-N (192.0.2.1 …), served always, its RRL off.
func poolGSLBConfig(members int) string {
	var ms []string
	for i := 1; i <= members; i++ {
		ms = append(ms, fmt.Sprintf("{ name: bal-%d, address: 192.0.2.%d }", i, i))
	}
	return `cluster: { name: gslb-1, bind: 127.0.0.1:0, profile: local }
gslb:
  listen: 127.0.0.1:0
  admin: { listen: 127.0.0.1:0 }
  rate_limit: { responses_per_second: 0 }
  zones: [ { origin: ringlb.test, records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "ns1 3600 IN A 127.0.0.1" ] } ]
  names:
    - name: ide.ringlb.test
      regions:
        east: { serve_mode: always, members: [ ` + strings.Join(ms, ", ") + ` ] }
`
}

// startPoolGSLBOf is startPoolGSLB of the config yaml; it also returns the
// config file's path.
func startPoolGSLBOf(t *testing.T, yaml string) (g *proc, server, admin, cfg string) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	cfg = filepath.Join(dir, "gslb.yaml")
	writeFile(t, cfg, yaml)
	g = startProc(t, bin, "gslb", "-config", cfg, "-upgrade-dir", filepath.Join(dir, "run"))
	rec := g.waitLog(t, "gslb started")
	return g, rec["dns"].(string), "http://" + rec["admin"].(string), cfg
}

// ideAnswers is the addresses server answers for ide.ringlb.test.
func ideAnswers(t *testing.T, server string) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("ide.ringlb.test.", dns.TypeA)
	r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, server)
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	var out []string
	for _, rr := range r.Answer {
		out = append(out, rr.(*dns.A).A.String())
	}
	return out
}

// freeze stops pid (SIGSTOP) and waits until every thread of it is
// stopped: kill returns before they are, and meanwhile one may still take
// a connection or a query.
func freeze(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		running := len(tasks) == 0
		for _, task := range tasks {
			data, err := os.ReadFile(task)
			if err != nil {
				continue // a thread that ended
			}
			// "tid (comm) state ...": the state follows the last ')'.
			s := string(data)
			if i := strings.LastIndexByte(s, ')'); i < 0 || i+2 >= len(s) || (s[i+2] != 'T' && s[i+2] != 't') {
				running = true
			}
		}
		if !running {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("pid %d not stopped within 60s of SIGSTOP", pid)
}

// A `ringlb upgrade` of a node that has already handed over and is on its
// way out — its outcome recorded, a TLS tunnel (which cannot move) kept
// for up to the shutdown timeout — reports that upgrade. Before, it took
// the record for an earlier attempt's, and once the old process had
// exited said 1, "exited without recording an upgrade (stopped or
// crashed?)". The old process is stopped (SIGSTOP) while the command
// looks, so that its tunnel's end cannot come first.
func TestUpgradeCommandDuringTheOldProcessesExitReportsTheUpgrade(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	echo := startEchoBackend(t)
	cert, key := selfSigned(t, dir, 0o600)
	cfg := filepath.Join(dir, "balancer.yaml")
	writeFile(t, cfg, fmt.Sprintf(`cluster: { name: bal-1, bind: 127.0.0.1:0, profile: local }
balancer:
  listen: 127.0.0.1:0
  admin: { listen: 127.0.0.1:0 }
  tls: { cert_file: %s, key_file: %s }
  edges: [ { name: echo, url: "http://%s" } ]
`, cert, key, echo.ln.Addr()))
	run := filepath.Join(dir, "run")
	bal := startProc(t, bin, "balancer", "-config", cfg, "-upgrade-dir", run, "-shutdown-timeout", "60s")
	listen := bal.waitLog(t, "balancer started")["listen"].(string)
	old := bal.cmd.Process.Pid

	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	var ws *websocket.Conn
	deadline := time.Now().Add(60 * time.Second)
	for ws == nil {
		c, _, err := d.Dial("wss://"+listen+"/ws", http.Header{"Ctstickiness": {"kept"}})
		if err == nil {
			ws = c
		} else if time.Now().After(deadline) {
			t.Fatalf("no TLS tunnel through the balancer within 60s: %v", err)
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	defer ws.Close()

	syscall.Kill(old, syscall.SIGUSR2)
	status := filepath.Join(run, "upgrade-"+strconv.Itoa(old)+".status")
	for {
		if data, _ := os.ReadFile(status); strings.HasPrefix(string(data), "ok ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no outcome recorded within 60s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	freeze(t, old)
	cmd := exec.Command(bin, "upgrade", "-pid", strconv.Itoa(old), "-upgrade-dir", run, "-timeout", "60s")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// It has looked once it has signalled (the signal waits for the old
	// process); the tunnel's end then lets the old process exit.
	for !signalPending(old, syscall.SIGUSR2) {
		if time.Now().After(deadline) {
			t.Fatal("ringlb upgrade sent no SIGUSR2 within 60s")
		}
		time.Sleep(time.Millisecond)
	}
	syscall.Kill(old, syscall.SIGCONT)
	ws.Close()
	err := cmd.Wait()
	done := bal.waitLog(t, "upgrade done; the old process exits")
	next := int(done["new_pid"].(float64))
	t.Cleanup(func() { syscall.Kill(next, syscall.SIGTERM) })
	t.Logf("ringlb upgrade: %v: %s", err, out.String())
	if err != nil || !strings.Contains(out.String(), "handed over to pid "+strconv.Itoa(next)) {
		t.Errorf("ringlb upgrade during the old process's exit: %v %q, want upgraded to pid %d", err, out.String(), next)
	}
	waitGone(t, old)
}

// signalPending reports whether sig waits to be delivered to pid (stopped).
func signalPending(pid int, sig syscall.Signal) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "ShdPnd:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<(uint(sig)-1)) != 0
		}
	}
	return false
}

// Operator changes made on both of a gslb's processes during an upgrade —
// one on the old process while the new one starts, another on the new one
// once it serves — both stand once the upgrade is done: the state the old
// process ends with is merged key by key over the one it started the new
// process with. Before, it replaced the new process's whole once the old
// one had changed anything: the member removed on the new process was
// answered again.
func TestGSLBChangesOnBothProcessesDuringTheUpgradeStand(t *testing.T) {
	t.Parallel()
	yaml := poolGSLBConfig(3)
	g, server, admin, cfg := startPoolGSLBOf(t, yaml)
	old := g.cmd.Process.Pid

	// The new process reads its config from a FIFO: it waits there, past
	// the start state, until the test writes it; meanwhile only the old
	// process serves the admin port.
	fifo, next := upgradeReadingFIFO(t, cfg, old)
	if code, out := adminCall(t, "POST", admin+"/api/pools/ide.ringlb.test/east/bal-2/mode?mode=remove", nil, ""); code != 200 {
		t.Fatalf("serve mode remove on the old process: %d %v", code, out)
	}
	if _, err := fifo.WriteString(yaml); err != nil {
		t.Fatal(err)
	}
	fifo.Close()
	g.waitLog(t, "upgrade: the new process is ready; handing over")
	freeze(t, old) // the next change reaches the new process
	// Not on the keep-alive connection the old process accepted.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	code, out := adminCall(t, "POST", admin+"/api/pools/ide.ringlb.test/east/bal-3/mode?mode=remove", nil, "")
	syscall.Kill(old, syscall.SIGCONT)
	if code != 200 {
		t.Fatalf("serve mode remove on the new process: %d %v", code, out)
	}
	done := g.waitLog(t, "upgrade done; the old process exits")
	if got := int(done["new_pid"].(float64)); got != next {
		t.Fatalf("upgraded to pid %d, the test waited on %d", got, next)
	}
	waitGone(t, old)
	if got := ideAnswers(t, server); len(got) != 1 || got[0] != "192.0.2.1" {
		t.Errorf("answers after the upgrade: %v, want 192.0.2.1 alone: a member removed during it is back", got)
	}
}

// upgradeReadingFIFO signals old to upgrade with its config file cfg made a
// FIFO: the new process waits reading it until the test writes it (fifo).
// It returns the FIFO, open for writing, and the new process's pid.
func upgradeReadingFIFO(t *testing.T, cfg string, old int) (fifo *os.File, next int) {
	t.Helper()
	if err := os.Remove(cfg); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(old, syscall.SIGUSR2)
	fifo, err := os.OpenFile(cfg, os.O_WRONLY, 0) // opened once the new process reads it
	if err != nil {
		t.Fatal(err)
	}
	next = childOf(t, old)
	t.Cleanup(func() { syscall.Kill(next, syscall.SIGTERM) })
	return fifo, next
}

// handedOverKeepingATunnel starts a balancer holding a TLS tunnel (which
// cannot move) and upgrades it: it returns once the old process has
// recorded its hand-off's outcome, the new process the node's main one, the
// old one kept by the tunnel (ws) until it closes or the shutdown timeout.
func handedOverKeepingATunnel(t *testing.T, shutdownTimeout string) (bal *proc, old int, admin string, ws *websocket.Conn) {
	t.Helper()
	bin := buildBinary(t)
	dir := t.TempDir()
	echo := startEchoBackend(t)
	cert, key := selfSigned(t, dir, 0o600)
	cfg := filepath.Join(dir, "balancer.yaml")
	writeFile(t, cfg, fmt.Sprintf(`cluster: { name: bal-1, bind: 127.0.0.1:0, profile: local }
balancer:
  listen: 127.0.0.1:0
  admin: { listen: 127.0.0.1:0 }
  tls: { cert_file: %s, key_file: %s }
  edges: [ { name: echo, url: "http://%s" } ]
`, cert, key, echo.ln.Addr()))
	run := filepath.Join(dir, "run")
	// The kept tunnel holds the old process until the shutdown timeout.
	bal = startProc(t, bin, "balancer", "-config", cfg, "-upgrade-dir", run, "-shutdown-timeout", shutdownTimeout)
	started := bal.waitLog(t, "balancer started")
	listen, admin := started["listen"].(string), started["admin"].(string)
	old = bal.cmd.Process.Pid

	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	deadline := time.Now().Add(60 * time.Second)
	for ws == nil {
		c, _, err := d.Dial("wss://"+listen+"/ws", http.Header{"Ctstickiness": {"kept"}})
		if err == nil {
			ws = c
		} else if time.Now().After(deadline) {
			t.Fatalf("no TLS tunnel through the balancer within 60s: %v", err)
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Cleanup(func() { ws.Close() })

	syscall.Kill(old, syscall.SIGUSR2)
	status := filepath.Join(run, "upgrade-"+strconv.Itoa(old)+".status")
	for {
		if data, _ := os.ReadFile(status); strings.HasPrefix(string(data), "ok ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no outcome recorded within 60s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return bal, old, admin, ws
}

// A SIGTERM to the old process once it has handed over — its outcome
// recorded, the new process the node's main one, a TLS tunnel (which
// cannot move) kept for up to the shutdown timeout — is for that process,
// already stopping: the new one serves on. Before, it was passed to the
// new process as the old one exited, as if it had come during the
// hand-off: `kill OLDPID`, to be rid of the old process, stopped the node.
func TestStopOfTheOldProcessAfterTheHandOffLeavesTheNewOne(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bal, old, admin, _ := handedOverKeepingATunnel(t, "5s")
	syscall.Kill(old, syscall.SIGTERM)
	var forwarded map[string]any
	oldProcessEnds(t, bal, old, admin, func(msg string, rec map[string]any) {
		if strings.HasPrefix(msg, "upgrade: told to stop") {
			forwarded = rec
		}
	})
	if forwarded != nil {
		t.Errorf("the old process's own stop was passed to the new one: %v", forwarded)
	}
}

// A SIGHUP to the old process once it has handed over is for that process,
// which has nothing left to reload: it is logged as ignored, and the new
// one is left alone — as a signal to HAProxy's or nginx's old process
// after a binary upgrade concerns that process only. Before, it was passed
// to the new process as the old one exited: `kill -HUP OLDPID` reloaded
// the node.
func TestReloadOfTheOldProcessAfterTheHandOffLeavesTheNewOne(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	// The old process lingers for its tunnel as long as the test needs (a
	// starved machine cannot let it end before the SIGHUP arrives); the
	// tunnel closes once the SIGHUP has been said ignored.
	bal, old, admin, ws := handedOverKeepingATunnel(t, "10m")
	syscall.Kill(old, syscall.SIGHUP)
	var forwarded, ignored map[string]any
	next := oldProcessEnds(t, bal, old, admin, func(msg string, rec map[string]any) {
		switch {
		case strings.HasPrefix(msg, "upgrade: told to reload"):
			forwarded = rec
		case msg == "upgrade: SIGHUP ignored: this process has handed the node over and only ends what it kept":
			ignored = rec
			ws.Close()
		}
	})
	if forwarded != nil {
		t.Errorf("the old process's own SIGHUP was passed to the new one: %v", forwarded)
	}
	if ignored == nil {
		t.Errorf("the old process did not say it ignored its SIGHUP")
	} else if got := int(ignored["new_pid"].(float64)); got != next {
		t.Errorf("the SIGHUP ignored names new_pid %d, want %d", got, next)
	}
}

// oldProcessEnds hands seen every log line up to the old process's last
// (one of them perhaps a signal passed on), waits for it to be gone, and
// checks that the new process, whose pid it returns, serves on.
func oldProcessEnds(t *testing.T, bal *proc, old int, admin string, seen func(msg string, rec map[string]any)) (next int) {
	t.Helper()
	var done map[string]any
	for done == nil {
		select {
		case rec, ok := <-bal.logs:
			if !ok {
				t.Fatal("the processes' log ended before the old process's last line")
			}
			msg := fmt.Sprint(rec["msg"])
			seen(msg, rec)
			if msg == "upgrade done; the old process exits" {
				done = rec
			}
		case <-time.After(60 * time.Second):
			t.Fatal("the old process did not exit within 60s")
		}
	}
	next = int(done["new_pid"].(float64))
	t.Cleanup(func() { syscall.Kill(next, syscall.SIGTERM) })
	waitGone(t, old)
	resp, err := http.Get("http://" + admin + "/healthz")
	if err != nil {
		t.Fatalf("the new process after the old one's signal: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !alive(next) {
		t.Errorf("the new process after the old one's signal: %s, alive %v", resp.Status, alive(next))
	}
	return next
}
