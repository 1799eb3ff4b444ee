package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// buildBinary compiles the real ringlb binary (after the first, go's build
// cache makes it a link).
func buildBinary(t *testing.T) string {
	t.Helper()
	b := &sharedBinary
	b.Lock()
	defer b.Unlock()
	if b.path == "" && b.err == nil {
		var dir string
		if dir, b.err = os.MkdirTemp("", "ringlb-e2e-"); b.err == nil {
			b.dir = dir
			path := filepath.Join(dir, "ringlb")
			if b.out, b.err = exec.Command("go", "build", "-o", path, ".").CombinedOutput(); b.err == nil {
				// Its mode follows the umask; an upgrade refuses a
				// binary its group can write (umask 002).
				if b.err = os.Chmod(path, 0o755); b.err == nil {
					b.path = path
				}
			}
		}
	}
	if b.err != nil {
		t.Fatalf("go build: %v\n%s", b.err, b.out)
	}
	return b.path
}

// sharedBinary is the one build of the binary the package's tests run (a
// link is seconds of CPU, and three dozen tests run it): read-only to them
// (a test that replaces the binary at its path, as an upgrade's install
// does, copies it first); TestMain removes it.
var sharedBinary struct {
	sync.Mutex
	dir, path string
	out       []byte
	err       error
}

// goBuild compiles package pkg (a path or an import path) into a binary
// named name in a temporary directory.
func goBuild(t *testing.T, pkg, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// startDemo runs `ringlb demo` and returns once it prints its ready line.
// The demo listens on the fixed ports of docs/DESIGN.md ("Demo topology"), so this is the one test
// that uses fixed ports.
func startDemo(t *testing.T, bin string) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	return runDemoCommand(t, exec.Command(bin, "demo"))
}

// runDemoCommand starts cmd, a `ringlb demo`, and returns once it prints its
// ready line.
func runDemoCommand(t *testing.T, cmd *exec.Cmd) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), demoReadyLine) {
				ready <- sc.Text()
			}
		}
	}()
	select {
	case line := <-ready:
		t.Logf("%s", line)
	case <-exited:
		cmd.Wait()
		t.Fatalf("demo exited before it was ready; stderr:\n%s", stderr.String())
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("demo not ready within 30s; stderr:\n%s", stderr.String())
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if crash := goCrash(stderr.String()); crash != "" {
			t.Errorf("the demo crashed: %s\n%s", crash, stderr.String())
		}
	})
	return cmd, &stderr
}

type participant struct {
	conn    *websocket.Conn
	edge    string
	session int
	index   int
}

// TestDemoEndToEnd: with the real binary's demo running, 200 sessions × 3
// participants connect round-robin through both balancers, half keyed by
// header and half by cookie. No session splits, every frame reaches every
// other participant in the order it was sent, all three edges are used with
// max/mean sessions per edge ≤ 1.3, and Ctrl-C stops the demo cleanly.
func TestDemoEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	cmd, stderr := startDemo(t, bin)
	checkDemoPages(t)

	const sessions, perSession, frames = 200, 3, 5
	balancers := []string{"127.0.0.1:8080", "127.0.0.1:8081"}
	dialer := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	parts := make([]*participant, 0, sessions*perSession)
	defer func() {
		for _, p := range parts {
			p.conn.Close()
		}
	}()
	for s := 0; s < sessions; s++ {
		// Fixed keys: the demo starts empty, and the ring is deterministic,
		// so the per-edge counts below are the same on every run.
		key := fmt.Sprintf("e2e-session-%d", s)
		for i := 0; i < perSession; i++ {
			h := http.Header{}
			if s%2 == 0 {
				h.Set("ctstickiness", key)
			} else {
				h.Set("Cookie", "ctstickiness="+key)
			}
			bal := balancers[(s*perSession+i)%len(balancers)]
			conn, resp, err := dialer.Dial("ws://"+bal+"/ws", h)
			if err != nil {
				t.Fatalf("session %d participant %d via %s: %v%s", s, i, bal, err, describeResponse(resp))
			}
			parts = append(parts, &participant{conn: conn, edge: resp.Header.Get("X-Ringlb-Edge"), session: s, index: i})
		}
	}

	// No split: every participant of a session is on the same edge.
	perEdge := map[string]int{}
	for s := 0; s < sessions; s++ {
		group := parts[s*perSession : (s+1)*perSession]
		for _, p := range group {
			if p.edge == "" || p.edge != group[0].edge {
				t.Fatalf("session %d split: participants on %q and %q", s, group[0].edge, p.edge)
			}
		}
		perEdge[group[0].edge]++
	}
	if len(perEdge) != 3 {
		t.Fatalf("sessions per edge = %v, want all three edges used", perEdge)
	}
	maxSessions := 0
	for _, n := range perEdge {
		maxSessions = max(maxSessions, n)
	}
	mean := float64(sessions) / float64(len(perEdge))
	t.Logf("sessions per edge: %v, max/mean %.2f", perEdge, float64(maxSessions)/mean)
	if float64(maxSessions)/mean > 1.3 {
		t.Errorf("max/mean sessions per edge = %.2f, want ≤ 1.3 (%v)", float64(maxSessions)/mean, perEdge)
	}

	// Every participant sends `frames` frames; each must reach both others,
	// and each sender's frames must arrive in the order sent.
	var wg sync.WaitGroup
	errs := make(chan error, len(parts))
	for _, p := range parts {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for n := 0; n < frames; n++ {
				msg := fmt.Sprintf("%d/%d/%d", p.session, p.index, n)
				if err := p.conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
					errs <- fmt.Errorf("session %d participant %d write: %v", p.session, p.index, err)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			next := map[int]int{} // sender index → next expected frame number
			p.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			for got := 0; got < (perSession-1)*frames; got++ {
				_, data, err := p.conn.ReadMessage()
				if err != nil {
					errs <- fmt.Errorf("session %d participant %d: read after %d frames: %v", p.session, p.index, got, err)
					return
				}
				var s, from, n int
				if _, err := fmt.Sscanf(string(data), "%d/%d/%d", &s, &from, &n); err != nil || s != p.session || from == p.index {
					errs <- fmt.Errorf("session %d participant %d got foreign frame %q", p.session, p.index, data)
					return
				}
				if n != next[from] {
					errs <- fmt.Errorf("session %d participant %d: from %d got frame %d, want %d", p.session, p.index, from, n, next[from])
					return
				}
				next[from]++
			}
		}()
	}
	wg.Wait()
	close(errs)
	failures := 0
	for err := range errs {
		if failures < 10 {
			t.Error(err)
		}
		failures++
	}
	if failures > 0 {
		t.Fatalf("%d participants failed", failures)
	}

	for _, p := range parts {
		p.conn.Close()
	}
	parts = nil

	// `ringlb bench ws` through both balancers, cookie keys, from two source
	// addresses: its report must show every connection up and nothing split
	// or lost.
	resultFile := filepath.Join(t.TempDir(), "ws.json")
	out, err := exec.Command(bin, "bench", "ws", "-url", "ws://127.0.0.1:8080/ws,ws://127.0.0.1:8081/ws",
		"-sessions", "60", "-participants", "3", "-rate", "5", "-duration", "2s", "-key", "cookie",
		"-sources", "127.0.0.1-127.0.0.2", "-json", resultFile).CombinedOutput()
	if err != nil {
		t.Fatalf("bench ws: %v\n%s", err, out)
	}
	var res struct {
		ConnsOK   int   `json:"connections_ok"`
		Split     int   `json:"split_sessions"`
		Lost      int64 `json:"messages_lost"`
		Delivered int64 `json:"messages_delivered"`
		Expected  int64 `json:"messages_expected"`
	}
	data, err := os.ReadFile(resultFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	t.Logf("bench ws: %s", lastLine(string(out)))
	if res.ConnsOK != 180 || res.Split != 0 || res.Lost != 0 || res.Delivered == 0 || res.Delivered != res.Expected {
		t.Errorf("bench ws result %+v\n%s", res, out)
	}

	// The demo's gslb: east clients get bal-1's address, west clients
	// bal-2's; taking bal-2 out (serve mode remove) flips west to east.
	dnsAnswer := func(src string) string {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion("ide.ringlb.test.", dns.TypeA)
		c := &dns.Client{Timeout: 5 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}}}
		r, _, err := c.Exchange(m, "127.0.0.1:5353")
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("dig from %s: %v %v", src, r, err)
		}
		return r.Answer[0].(*dns.A).A.String()
	}
	if east, west := dnsAnswer("127.0.0.1"), dnsAnswer("127.0.0.2"); east != "127.0.0.1" || west != "127.0.0.2" {
		t.Fatalf("ide.ringlb.test: east %s west %s", east, west)
	}
	// The demo signs its zone with keys made at start: with DO the answer
	// carries a signature that verifies with the zone's DNSKEY set.
	signedAnswer := func(name string, qtype uint16) *dns.Msg {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		m.SetEdns0(1232, true)
		r, _, err := (&dns.Client{Net: "tcp", Timeout: 5 * time.Second}).Exchange(m, "127.0.0.1:5353")
		if err != nil {
			t.Fatalf("%s with DO: %v", name, err)
		}
		return r
	}
	keys := map[uint16]*dns.DNSKEY{}
	for _, rr := range signedAnswer("ringlb.test.", dns.TypeDNSKEY).Answer {
		if k, ok := rr.(*dns.DNSKEY); ok {
			keys[k.KeyTag()] = k
		}
	}
	var rrset []dns.RR
	var sig *dns.RRSIG
	for _, rr := range signedAnswer("ide.ringlb.test.", dns.TypeA).Answer {
		if s, ok := rr.(*dns.RRSIG); ok {
			sig = s
		} else {
			rrset = append(rrset, rr)
		}
	}
	if sig == nil || keys[sig.KeyTag] == nil || sig.Verify(keys[sig.KeyTag], rrset) != nil {
		t.Fatalf("the demo's signed answer: %v %v with keys %v", rrset, sig, keys)
	}
	post := func(url string) {
		t.Helper()
		resp, err := postAdmin(http.DefaultClient, url)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("POST %s: %v %v", url, resp, err)
		}
		resp.Body.Close()
	}
	post("http://127.0.0.1:9053/api/pools/ide.ringlb.test/west/bal-2/mode?mode=remove")
	if west := dnsAnswer("127.0.0.2"); west != "127.0.0.1" {
		t.Fatalf("west with bal-2 removed: %s, want the east failover 127.0.0.1", west)
	}
	post("http://127.0.0.1:9053/api/pools/ide.ringlb.test/west/bal-2/mode?mode=obey")
	// Health-based failover and recovery: bal-2 in maintenance fails its
	// health path, the gslb's monitor (1 s interval, fall 2, rise 2) takes
	// it out and, once maintenance ends, back in.
	waitWest := func(want, why string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for got := dnsAnswer("127.0.0.2"); got != want; got = dnsAnswer("127.0.0.2") {
			if time.Now().After(deadline) {
				t.Fatalf("west %s: %s, want %s", why, got, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitWest("127.0.0.2", "back in obey mode")
	post("http://127.0.0.1:9091/api/maintenance?state=on")
	waitWest("127.0.0.1", "with bal-2 failing its health checks")
	post("http://127.0.0.1:9091/api/maintenance?state=off")
	waitWest("127.0.0.2", "after bal-2 recovered")

	// `ringlb bench dns` against the demo's gslb: every query answered.
	out, err = exec.Command(bin, "bench", "dns", "-server", "127.0.0.1:5353", "-duration", "1s", "-clients", "4").CombinedOutput()
	if err != nil || !strings.Contains(string(out), " 0 lost") || !strings.Contains(string(out), "NXDOMAIN") {
		t.Fatalf("bench dns: %v\n%s", err, out)
	}
	t.Logf("bench dns: %s", lastLine(string(out)))

	// Ctrl-C stops the whole demo cleanly.
	stopDemo(t, cmd, stderr, syscall.SIGINT)
}

// stopDemo sends the running demo sig and waits for it to exit cleanly.
func stopDemo(t *testing.T, cmd *exec.Cmd, stderr *strings.Builder, sig syscall.Signal) {
	t.Helper()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("demo exited with %v after %v; stderr:\n%s", err, sig, stderr.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("demo did not stop within 30s of %v", sig)
	}
}

// describeResponse tells what an edge or balancer answered instead of the
// upgrade: status, which edge, the owner it named and the body's start.
func describeResponse(resp *http.Response) string {
	if resp == nil {
		return ""
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	return fmt.Sprintf(" (HTTP %d from %s, owner %q: %s)", resp.StatusCode, resp.Header.Get("X-Ringlb-Edge"), resp.Header.Get("X-Ringlb-Owner"), bytes.TrimSpace(body))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// Every command's -h, each bench kind's included, says how to call it and
// what its exit status means: scripts, systemd units and health checks go
// by it. Most said nothing of it (only check, probe and upgrade did), and
// none said that a usage error is 2.
func TestHelpOnEverySubcommand(t *testing.T) {
	args := [][]string{}
	for _, c := range commands() {
		args = append(args, []string{c.name, "-h"})
	}
	for _, c := range benchCommands() {
		args = append(args, []string{"bench", c.name, "-h"})
	}
	for _, a := range args {
		var out strings.Builder
		code := run(context.Background(), a, &out, &out)
		name := strings.Join(a[:len(a)-1], " ")
		if code != 0 || !strings.Contains(out.String(), "Usage: ringlb "+name) || !strings.Contains(out.String(), exitStatus) {
			t.Errorf("ringlb %s -h: exit %d, output:\n%s\nwant its usage and %q", name, code, out.String(), exitStatus)
		}
	}
}

// The examples pass `ringlb check` once the key files they name exist, made
// as their comments say (ringlb keygen); without the key, check refuses a
// gossip port beyond loopback and says how to make one.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"gossip.key", "admin.token"} {
		var out, errOut strings.Builder
		if code := run(context.Background(), []string{"keygen", "-o", filepath.Join(dir, name)}, &out, &errOut); code != 0 {
			t.Fatalf("keygen: exit %d: %s", code, errOut.String())
		}
	}
	if err := os.CopyFS(filepath.Join(dir, "zones"), os.DirFS("../../configs/examples/zones")); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("../../configs/examples/*.yaml")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		keyed := filepath.Join(dir, filepath.Base(f))
		os.WriteFile(keyed, []byte(strings.ReplaceAll(string(data), "/etc/ringlb/", dir+"/")), 0o644)
		var out, errOut strings.Builder
		if code := run(context.Background(), []string{"check", "-config", keyed}, &out, &errOut); code != 0 || !strings.Contains(out.String(), ": ok: ") {
			t.Errorf("check %s: exit %d\n%s%s", f, code, out.String(), errOut.String())
		}
		// As shipped, before the operator made the key: refused, saying how.
		if code := run(context.Background(), []string{"check", "-config", f}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "cannot read /etc/ringlb/gossip.key") {
			t.Errorf("check %s without its key: exit %d\n%s", f, code, errOut.String())
		}
	}
	var out, errOut strings.Builder
	if code := run(context.Background(), []string{"check", "-config", "../../configs/demo.yaml"}, &out, &errOut); code != 0 {
		t.Errorf("check demo.yaml: exit %d\n%s", code, errOut.String())
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("edge:\n  lisen: x\nbalancer:\n  ring: { load: 0.5 }\n"), 0o644)
	out.Reset()
	errOut.Reset()
	code := run(context.Background(), []string{"check", "-config", bad}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), bad+":2: edge.lisen: unknown field") ||
		!strings.Contains(errOut.String(), bad+":4: balancer.ring.load: must be in range") ||
		!strings.Contains(errOut.String(), bad+": cluster.secret_key_file: is required when cluster.bind (0.0.0.0:7946) is not a loopback address") ||
		!strings.Contains(errOut.String(), "ringlb keygen") ||
		!strings.Contains(errOut.String(), "3 problem(s)") {
		t.Errorf("check bad file: exit %d, stderr:\n%s", code, errOut.String())
	}
	// keygen never overwrites a key.
	if code := run(context.Background(), []string{"keygen", "-o", filepath.Join(dir, "gossip.key")}, &out, &errOut); code != 1 {
		t.Errorf("keygen over an existing key: exit %d", code)
	}
}

// The deployment examples (systemd, keepalived, Kubernetes) only call ringlb
// subcommands and flags that exist.
func TestDeployExamplesCallRealCommands(t *testing.T) {
	files, _ := filepath.Glob("../../configs/deploy/*/*")
	files = append(files, "../../Dockerfile")
	known := map[string]bool{}
	for _, c := range commands() {
		known[c.name] = true
	}
	re := regexp.MustCompile(`ringlb"?,? +"?([a-z]+)`)
	calls := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(data), -1) {
			if m[1] == "balancer" || m[1] == "edge" || m[1] == "gslb" || m[1] == "probe" || m[1] == "check" || known[m[1]] {
				if !known[m[1]] {
					t.Errorf("%s calls unknown subcommand %q", f, m[1])
				}
				calls++
			}
		}
	}
	if calls < 5 {
		t.Fatalf("found only %d ringlb invocations in the deploy examples", calls)
	}
	// The probe flags used there parse.
	var out strings.Builder
	if code := run(context.Background(), []string{"probe", "-method", "POST", "-url", "http://127.0.0.1:1/api/drain", "-timeout", "100ms"}, &out, &out); code != 1 {
		t.Errorf("ringlb probe -method POST against a closed port: exit %d, want 1\n%s", code, out.String())
	}
}

// postAdmin POSTs to an admin port as an admin client does: with
// X-Ringlb-Admin, the CSRF proof an admin port without a token wants.
func postAdmin(c *http.Client, url string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(configs.HeaderAdmin, "1")
	return c.Do(req)
}

// The CLI's conventions: `version` and `-version` print the build, `help
// CMD` is `CMD -h`, usage errors exit 2.
func TestVersionAndHelp(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"-version"}} {
		var out strings.Builder
		if code := run(context.Background(), args, &out, &out); code != 0 || !strings.HasPrefix(out.String(), "ringlb ") || !strings.Contains(out.String(), "go1.") {
			t.Errorf("ringlb %s: exit %d %q", args[0], code, out.String())
		}
	}
	var out strings.Builder
	if code := run(context.Background(), []string{"help", "check"}, &out, &out); code != 0 || !strings.Contains(out.String(), "Usage: ringlb check") {
		t.Errorf("ringlb help check: exit %d %q", code, out.String())
	}
	// A bad value is a usage error as a bad flag is: a keygen type, a
	// bench's options, a query mix, a PID (they exited 1, as a run that
	// failed, before).
	for _, args := range [][]string{{"help", "nope"}, {"help", "a", "b"}, {"nope"}, {}, {"check", "-nope"}, {"check", "extra"},
		{"keygen", "-dnssec", "ringlb.test", "-type", "foo", "-dir", t.TempDir()},
		{"bench", "ws", "-mode", "foo"}, {"bench", "ws", "-watch-pids", "x"}, {"bench", "ring", "-keys", "-1"},
		{"bench", "dns", "-server", "127.0.0.1:1", "-clients", "5000"}, {"bench", "dns", "-server", "127.0.0.1:1", "-mix", "nope"},
		{"bench", "chaos", "-sessions", "-1"}} {
		out.Reset()
		if code := run(context.Background(), args, &out, &out); code != 2 {
			t.Errorf("ringlb %q: exit %d, want 2 (usage)\n%s", args, code, out.String())
		}
	}
	reg := newRegistry(false)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetName() != "ringlb_build_info" || mfs[0].GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Errorf("a role's registry: %v %v", mfs, err)
	}
}

// A node started with a config file that is not there is told where to
// start one: "run ringlb check" on a file that is not there helped nobody.
func TestMissingConfigFileSaysWhereToStart(t *testing.T) {
	var out strings.Builder
	missing := filepath.Join(t.TempDir(), "balancer.yaml")
	code := run(context.Background(), []string{"balancer", "-config", missing}, &out, &out)
	if code != 1 || !strings.Contains(out.String(), "configs/examples/balancer.yaml") || strings.Contains(out.String(), "ringlb check") {
		t.Errorf("ringlb balancer -config %s: exit %d\n%s\nwant 1 and where to start a config from", missing, code, out.String())
	}
}

// `ringlb demo` with a node's admin address beyond loopback and no token for
// its role is refused before anything listens, as `ringlb check` refuses it:
// before, the demo opened that admin port on every interface, guarded only
// by a password it generated and logged.
func TestDemoRefusesAnAdminPortBeyondLoopbackWithoutToken(t *testing.T) {
	open := strings.Replace(string(configs.DemoFile), "admin: 127.0.0.1:9090", "admin: 0.0.0.0:9090", 1)
	if open == string(configs.DemoFile) {
		t.Fatal("the demo's first balancer no longer has admin 127.0.0.1:9090")
	}
	f := filepath.Join(t.TempDir(), "demo.yaml")
	if err := os.WriteFile(f, []byte(open), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"check", "demo"} {
		// Refused, it returns at once; the bound only ends a demo that ran
		// (as it did), so the test reports it instead of waiting forever.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var out, errOut strings.Builder
		code := run(ctx, []string{cmd, "-config", f}, &out, &errOut)
		cancel()
		if code != 1 || !strings.Contains(errOut.String(), "demo.nodes[0].admin: 0.0.0.0:9090 is not a loopback address: set balancer.admin.token_file") {
			t.Errorf("ringlb %s: exit %d\n%s%s", cmd, code, out.String(), errOut.String())
		}
	}
}

// A demo file without a balancer (an edge and a gslb, which `ringlb check`
// accepts) gets its banner: the lines for what it runs, none for the pad
// and dashboard no balancer serves. Before, the banner indexed the first
// balancer and the demo ended in a panic once every node had started.
func TestBannerWithoutABalancer(t *testing.T) {
	var out bytes.Buffer
	printBanner(&out, []*node{
		{name: "edge-1", role: "edge", listen: "127.0.0.1:20001", admin: "127.0.0.1:20002"},
		{name: "gslb-1", role: "gslb", listen: "127.0.0.1:20053", admin: "127.0.0.1:20054"},
	}, "", time.Second)
	banner := out.String()
	for _, want := range []string{demoReadyLine + ": 0 balancers, 1 edges and 1 gslb", "edge     edge-1", "dig @127.0.0.1 -p 20053 ide.ringlb.test"} {
		if !strings.Contains(banner, want) {
			t.Errorf("the banner has no %q:\n%s", want, banner)
		}
	}
	if strings.Contains(banner, "?session=hello") {
		t.Errorf("the banner points at a pad no balancer serves:\n%s", banner)
	}
}

// Closing the demo's terminal (SIGHUP) stops it as Ctrl-C does: its nodes
// stop and its private directory of generated keys and state goes with it.
// Before, SIGHUP's default action ended the process where it stood, and the
// directory stayed in the temporary directory with the run's keys.
func TestDemoStopsOnSIGHUP(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	gossip := freeAddr(t)
	dir := t.TempDir()
	path := writeDemoConfig(t, dir, gossip,
		fmt.Sprintf("{ name: edge-1, role: edge, region: east, listen: %s, admin: %s, gossip: %s }", freeAddr(t), freeAddr(t), gossip))
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "demo", "-config", path)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	cmd, stderr := runDemoCommand(t, cmd)
	if left, _ := filepath.Glob(filepath.Join(tmp, "ringlb-demo-*")); len(left) != 1 {
		t.Fatalf("the running demo's private directories in TMPDIR: %v, want one", left)
	}
	stopDemo(t, cmd, stderr, syscall.SIGHUP)
	if left, _ := filepath.Glob(filepath.Join(tmp, "ringlb-demo-*")); len(left) != 0 {
		t.Errorf("after SIGHUP the demo left %v behind", left)
	}
}

// Ctrl-C stops a demo whose pad is open (a live session through a
// balancer, its client reading as a browser's tab does) cleanly: every node
// stops, exit 0. Before, the balancers stopped first and waited for their
// tunnels, which only the edges, stopped after them, would close: the demo
// sat out its whole stop bound, then reported every node's stop as
// "context deadline exceeded" and exited 1, its edges never drained.
func TestDemoStopsWithALiveSession(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	gossip, balancer := freeAddr(t), freeAddr(t)
	path := writeBalancerAndEdgeDemo(t, gossip, balancer, freeAddr(t))
	cmd, stderr := runDemoCommand(t, exec.Command(bin, "demo", "-config", path))
	h := http.Header{}
	h.Set("ctstickiness", "open-pad")
	conn, resp, err := websocket.DefaultDialer.Dial("ws://"+balancer+"/ws", h)
	if err != nil {
		t.Fatalf("join through the balancer: %v%s", err, describeResponse(resp))
	}
	defer conn.Close()
	closed := make(chan error, 1)
	go func() {
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				// As a browser does once the close handshake is over.
				conn.Close()
				closed <- err
				return
			}
		}
	}()
	start := time.Now()
	stopDemo(t, cmd, stderr, syscall.SIGINT)
	t.Logf("the demo stopped %s after SIGINT", time.Since(start).Round(time.Millisecond))
	select {
	case err := <-closed:
		t.Logf("the session's client: %v", err)
	case <-time.After(10 * time.Second):
		t.Error("the session's connection is still open after the demo exited")
	}
}

// `ringlb demo -listen-all` (for the image: `docker run -p 8080:8080`
// reaches a container's address, never its loopback) takes the pad and its
// WebSockets on every interface, and nothing else: the admin API, which
// has no token in the demo, stays on loopback. The banner still names an
// address a browser opens. Before, the demo had no way to listen beyond
// loopback, so the image's demo could not be reached from outside.
func TestDemoListenAllOpensOnlyTheBalancers(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	gossip, balancer, admin := freeAddr(t), freeAddr(t), freeAddr(t)
	path := writeBalancerAndEdgeDemo(t, gossip, balancer, admin)
	cmd, stderr := runDemoCommand(t, exec.Command(bin, "demo", "-config", path, "-listen-all"))
	// 127.0.0.2 is this host's too, but not 127.0.0.1: only a listener on
	// every interface answers there.
	other := func(addr string) string { _, port, _ := net.SplitHostPort(addr); return "127.0.0.2:" + port }
	c := &http.Client{Timeout: 10 * time.Second}
	req, _ := http.NewRequest("GET", "http://"+other(balancer)+"/whoami", nil)
	req.Header.Set("ctstickiness", "from-outside")
	if resp, err := c.Do(req); err != nil {
		t.Errorf("the balancer beyond loopback: %v", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("a session's request to the balancer beyond loopback: %s", resp.Status)
		}
	}
	if resp, err := c.Get("http://" + other(admin) + "/api/ring"); err == nil {
		resp.Body.Close()
		t.Errorf("the admin API answers beyond loopback (%s), with no token", resp.Status)
	}
	stopDemo(t, cmd, stderr, syscall.SIGINT)

	// What the banner says to open, a listener on every interface: its
	// loopback address, not 0.0.0.0 (which browsers refuse).
	var out bytes.Buffer
	printBanner(&out, []*node{{name: "bal-1", role: "balancer", listen: "0.0.0.0:20080", admin: "127.0.0.1:20090"}}, "", time.Second)
	if banner := out.String(); !strings.Contains(banner, "http://127.0.0.1:20080/?session=hello") || strings.Contains(banner, "0.0.0.0") {
		t.Errorf("the banner of a balancer on 0.0.0.0:20080:\n%s", banner)
	}
}

// A demo whose fixed address another program holds (5353/udp is mDNS's on
// most desktops: avahi-daemon) says which node could not have it and how to
// run the demo elsewhere. Before, it said "change the listen address", of a
// file the user never gave it.
func TestDemoSaysHowToMoveATakenAddress(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	gossip := freeAddr(t)
	path := writeDemoConfig(t, t.TempDir(), gossip,
		fmt.Sprintf("{ name: edge-1, role: edge, region: east, listen: %s, admin: %s, gossip: %s }", taken.Addr(), freeAddr(t), gossip))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut strings.Builder
	code := run(ctx, []string{"demo", "-config", path}, &out, &errOut)
	for _, want := range []string{"start edge-1", taken.Addr().String(), "address already in use", "ringlb demo -config FILE"} {
		if code != 1 || !strings.Contains(errOut.String(), want) {
			t.Errorf("ringlb demo with %s taken: exit %d, no %q in\n%s%s", taken.Addr(), code, want, out.String(), errOut.String())
		}
	}
}

// The banner's failover line is one a user can follow in the demo's one
// process: the command that fails the last balancer's health path, then
// the query that shows its region answered by the other. Before, it said
// "stop a balancer", which no command of the demo does.
func TestBannerSaysHowToFailOver(t *testing.T) {
	var out bytes.Buffer
	printBanner(&out, []*node{
		{name: "bal-1", role: "balancer", listen: "127.0.0.1:20080", admin: "127.0.0.1:20090"},
		{name: "bal-2", role: "balancer", listen: "127.0.0.1:20081", admin: "127.0.0.1:20091"},
		{name: "gslb-1", role: "gslb", listen: "127.0.0.1:20053", admin: "127.0.0.1:20054"},
	}, "", time.Second)
	banner := out.String()
	want := "curl -X POST -H 'X-Ringlb-Admin: 1' 'http://127.0.0.1:20091/api/maintenance?state=on'"
	if !strings.Contains(banner, want) || strings.Contains(banner, "stop a balancer") {
		t.Errorf("the banner has no %q, or says to stop a balancer:\n%s", want, banner)
	}
}

// writeDemoConfig writes, in dir, a demo config of one region whose
// cluster gossips at gossip, with nodes (each a flow mapping of one node),
// and returns its path.
func writeDemoConfig(t *testing.T, dir, gossip string, nodes ...string) string {
	t.Helper()
	cfg := fmt.Sprintf("cluster:\n  region: east\n  bind: %[1]s\n  join: [%[1]s]\n  profile: local\ndemo:\n  nodes:\n", gossip)
	for _, n := range nodes {
		cfg += "    - " + n + "\n"
	}
	path := filepath.Join(dir, "demo.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeBalancerAndEdgeDemo writes a demo config of a balancer (bal-1,
// listening at balancer, its admin at admin, gossiping at gossip) and an
// edge on free ports, and returns its path.
func writeBalancerAndEdgeDemo(t *testing.T, gossip, balancer, admin string) string {
	t.Helper()
	return writeDemoConfig(t, t.TempDir(), gossip,
		fmt.Sprintf("{ name: bal-1, role: balancer, region: east, listen: %s, admin: %s, gossip: %s }", balancer, admin, gossip),
		fmt.Sprintf("{ name: edge-1, role: edge, region: east, listen: %s, admin: %s, gossip: %s }", freeAddr(t), freeAddr(t), freeAddr(t)))
}
