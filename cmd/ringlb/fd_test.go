package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Running out of file descriptors degrades service; it never ends a ringlb
// process. These tests run the real binary with a low open-file limit and
// hold more idle TCP connections on its data port than it has descriptors.
const (
	lowFDLimit = 128
	idleConns  = 200
)

// limitedBinary returns a script that runs bin with RLIMIT_NOFILE n, soft
// and hard, the way an operator's `ulimit -n` or systemd's LimitNOFILE does.
func limitedBinary(t *testing.T, bin string, n int) string {
	return wrappedBinary(t, bin, "ringlb-nofile", fmt.Sprintf("ulimit -n %d || exit 1", n))
}

// wrappedBinary returns a script, named name, that runs the shell line
// setup and then execs bin with the script's arguments.
func wrappedBinary(t *testing.T, bin, name, setup string) string {
	t.Helper()
	script := filepath.Join(t.TempDir(), name)
	writeFile(t, script, fmt.Sprintf("#!/bin/sh\n%s\nexec '%s' \"$@\"\n", setup, bin))
	if err := os.Chmod(script, 0o755); err != nil {
		t.Fatal(err)
	}
	return script
}

// logWatch takes over a process's log records: it keeps them for wait and
// closes exited when the process has exited (its log stream ended).
type logWatch struct {
	mu     sync.Mutex
	recs   []map[string]any
	more   chan struct{}
	exited chan struct{}
}

func watchLogs(p *proc) *logWatch {
	w := &logWatch{more: make(chan struct{}, 1), exited: make(chan struct{})}
	go func() {
		defer close(w.exited)
		for rec := range p.logs {
			w.mu.Lock()
			w.recs = append(w.recs, rec)
			w.mu.Unlock()
			select {
			case w.more <- struct{}{}:
			default:
			}
		}
	}()
	return w
}

// count returns how many records have message msg.
func (w *logWatch) count(msg string) int { return w.countFrom(msg, "") }

// countFrom counts the lines with msg about one listener ("": any).
func (w *logWatch) countFrom(msg, listener string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, r := range w.recs {
		if r["msg"] == msg && (listener == "" || r["listener"] == listener) {
			n++
		}
	}
	return n
}

// running fails the test when the process has exited.
func (w *logWatch) running(t *testing.T, what string) {
	t.Helper()
	select {
	case <-w.exited:
		t.Fatalf("the process exited %s", what)
	default:
	}
}

// idleOutcome is what became of one idle connection: "503" (refused with a
// status line), "closed" (closed without a word), or the first line of
// whatever else arrived.
type idleOutcome string

// holdIdle opens n TCP connections to addr that send nothing, and reports
// what the server does with each of them. A failed dial ends the test,
// saying whether the process had exited.
func holdIdle(t *testing.T, w *logWatch, addr string, n int) ([]net.Conn, <-chan idleOutcome) {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	out := make(chan idleOutcome, n)
	for range n {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			closeAll(conns)
			select {
			case <-w.exited:
				t.Fatalf("the process EXITED after %d idle connections (dial: %v)", len(conns), err)
			case <-time.After(5 * time.Second):
				t.Fatalf("dial idle connection %d: %v", len(conns), err)
			}
		}
		conns = append(conns, c)
		go func() {
			line, err := bufio.NewReader(c).ReadString('\n')
			switch {
			case strings.HasPrefix(line, "HTTP/1.1 503 "):
				out <- "503"
			case line == "" && err != nil:
				out <- "closed"
			default:
				out <- idleOutcome(strings.TrimSpace(line))
			}
		}()
	}
	return conns, out
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// waitStatus polls url until it answers want, failing after a generous wait.
func waitStatus(t *testing.T, url string, want int) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	last := "no answer"
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("GET %s: no %d within 30s (last: %s)", url, want, last)
}

// scrape returns the value of one series (name{labels} exactly as
// exposed) from a Prometheus text page; -1 when absent.
func scrape(t *testing.T, url, series string) float64 {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", series, v, err)
			}
			return f
		}
	}
	return -1
}

// attackDataPort holds idleConns idle connections on a node's data port
// and waits for the node's answer: with a known connection limit (max > 0)
// until every connection beyond it has been refused or closed; otherwise
// until the node logs that accepting fails. It fails the test if the node
// exits meanwhile. It returns the held connections and how many were refused.
func attackDataPort(t *testing.T, w *logWatch, addr string, max int) ([]net.Conn, int) {
	t.Helper()
	start := time.Now()
	conns, outcomes := holdIdle(t, w, addr, idleConns)
	refused, closed := 0, 0
	timeout := time.After(30 * time.Second)
	for {
		if max > 0 && refused+closed >= idleConns-max {
			break
		}
		if max == 0 && w.count(msgAcceptFailed) > 0 {
			break
		}
		select {
		case o := <-outcomes:
			switch o {
			case "503":
				refused++
			case "closed":
				closed++
			default:
				t.Fatalf("an idle connection got %q", o)
			}
		case <-w.more:
		case <-w.exited:
			closeAll(conns)
			t.Fatalf("the process EXITED while %d idle connections were open (%d refused with 503, %d closed)", idleConns, refused, closed)
		case <-timeout:
			closeAll(conns)
			t.Fatalf("no answer to %d idle connections within 30s: %d refused with 503, %d closed, limit %d, %d accept-failure lines", idleConns, refused, closed, max, w.count(msgAcceptFailed))
		}
	}
	t.Logf("%d idle connections: %d refused with 503, %d closed without a word, the rest held (limit %d); settled in %s",
		idleConns, refused, closed, max, time.Since(start).Round(time.Millisecond))
	return conns, refused
}

// TestFDReserveHoldsTheAdminAndGossipCaps runs an edge with RLIMIT_NOFILE
// 512 and its derived max_connections, fills its data port, then its admin
// port to its max_connections (32 idle connections from each of four
// addresses, each held for the request timeout) and gossip to its strangers'
// cap (8 idle streams from each of eight). The derived limit leaves room for
// all of them: the process keeps descriptors for its own work (claims,
// hand-offs, replication dials, probes). Before, the reserve was 64 and the
// data port's limit 448, and the admin port's connections took the process
// to EMFILE.
func TestFDReserveHoldsTheAdminAndGossipCaps(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	const limit = 512
	bin := buildBinary(t)
	cfg := filepath.Join(t.TempDir(), "edge.yaml")
	writeFile(t, cfg, "cluster: { name: edge-1, bind: 127.0.0.1:0 }\n"+
		"edge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0, drain_timeout: 1s }\n")
	edge := startProc(t, limitedBinary(t, bin, limit), "edge", "-config", cfg)
	rec := edge.waitLog(t, "edge started")
	listen, admin, gossip := rec["listen"].(string), rec["admin"].(string), rec["gossip"].(string)
	max := int(rec["max_connections"].(float64))
	w := watchLogs(edge)
	pid := edge.cmd.Process.Pid
	waitStatus(t, "http://"+listen+"/whoami", 200)
	base := openFDs(t, pid)

	data, _ := holdIdle(t, w, listen, max)
	defer closeAll(data)
	// hold opens per idle connections to addr from each of from loopback
	// addresses (127.0.0.1, .2, …): the admin port's and gossip's caps are
	// per client address.
	hold := func(addr string, from, per int) []net.Conn {
		var conns []net.Conn
		for i := 1; i <= from; i++ {
			d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(i))}}
			for range per {
				c, err := d.Dial("tcp", addr)
				if err != nil {
					closeAll(conns)
					t.Fatalf("idle connection %d to %s: %v", len(conns), addr, err)
				}
				conns = append(conns, c)
			}
		}
		return conns
	}
	admins := hold(admin, 4, 32)
	defer closeAll(admins)
	streams := hold(gossip, 8, 8)
	defer closeAll(streams)

	// Everything is held once the process has accepted it all, or it holds
	// every descriptor it may. (Less one: the readiness check's keep-alive
	// connection, in base, may hold one of the data port's slots.)
	want := base + max + len(admins) + len(streams) - 1
	deadline := time.Now().Add(30 * time.Second)
	fds := openFDs(t, pid)
	for ; fds < want && fds < limit; fds = openFDs(t, pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the edge holds %d descriptors 30s after the idle connections, want %d (or its limit %d)", fds, want, limit)
		}
		w.running(t, "under the idle connections")
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("open-file limit %d: max_connections %d; %d descriptors before, %d with %d data, %d admin and %d gossip connections held", limit, max, base, fds, max, len(admins), len(streams))
	if fds >= limit {
		t.Errorf("the edge holds all %d descriptors it may: its own work (claims, hand-offs, replication dials) meets EMFILE", fds)
	}
}

// Log messages of the accept guard (balancer/acceptguard) the tests wait for.
const (
	msgAcceptFailed = "accept failed; backing off"
	msgRefused      = "connection refused: max_connections reached"
)

// TestFDExhaustionDoesNotEndTheProcess runs each role with RLIMIT_NOFILE 128
// and opens 200 idle connections to its data port. With the limit derived
// from the descriptors (the default), the connections beyond it are refused
// with a 503; with a limit set above what the descriptors allow, accepting
// fails with EMFILE and backs off. Either way the process keeps running and
// serves again once the idle connections close.
func TestFDExhaustionDoesNotEndTheProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	limited := limitedBinary(t, bin, lowFDLimit)

	t.Run("check prints the derived limits", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "node.yaml")
		writeFile(t, cfg, "cluster: { name: n-1, bind: 127.0.0.1:7946 }\nedge: {}\nbalancer: {}\n")
		out, err := exec.Command(limited, "check", "-config", cfg).CombinedOutput()
		if err != nil {
			t.Fatalf("check: %v\n%s", err, out)
		}
		// ulimit -n 128: less than the reserve (64 for the node's own work,
		// 128 for the admin port's connections, 128 for gossip's streams):
		// one connection each.
		for _, want := range []string{"edge :7101, max_connections 1;", "balancer :8080, max_connections 1,", "open-file limit 128", "open-file limit too low"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("check summary lacks %q:\n%s", want, out)
			}
		}
	})

	for _, tc := range []struct {
		name   string
		limits string // the balancer's limits section, or the edge's max_connections
	}{
		{"derived limit", ""},
		{"limit above the descriptors", "100000"},
	} {
		t.Run("balancer/"+tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "balancer.yaml")
			limits := ""
			if tc.limits != "" {
				limits = ", limits: { max_connections: " + tc.limits + " }"
			}
			writeFile(t, cfg, "cluster: { name: bal-1, bind: 127.0.0.1:0, profile: local, probe_interval: 200ms }\n"+
				"balancer: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0 }"+limits+" }\n")
			bal := startProc(t, limited, "balancer", "-config", cfg)
			rec := bal.waitLog(t, "balancer started")
			listen, admin, gossip := rec["listen"].(string), rec["admin"].(string), rec["gossip"].(string)
			max, _ := rec["max_connections"].(float64)
			t.Logf("balancer started with max_connections %v (open-file limit %d)", rec["max_connections"], lowFDLimit)
			ecfg := filepath.Join(dir, "edge.yaml")
			writeFile(t, ecfg, fmt.Sprintf("cluster: { name: edge-1, bind: 127.0.0.1:0, join: [%q], profile: local, probe_interval: 200ms }\n"+
				"edge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0 }\n", gossip))
			startProc(t, bin, "edge", "-config", ecfg).waitLog(t, "edge started")
			w := watchLogs(bal)
			health := "http://" + listen + "/_ringlb/health"
			waitStatus(t, health, 200)

			if tc.limits != "" {
				max = 0 // above the descriptors: accepting fails before the limit bites
			}
			conns, refused := attackDataPort(t, w, listen, int(max))
			// The admin port (net/http) is reached while the descriptors are
			// gone: its request waits in the backlog and is answered once
			// they come back.
			var pendingAdmin net.Conn
			if max == 0 {
				c, err := net.DialTimeout("tcp", admin, 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
				pendingAdmin = c
			}
			w.running(t, "under the idle connections")
			closeAll(conns)
			released := time.Now()
			waitStatus(t, health, 200)
			t.Logf("balancer healthy again %s after the idle connections closed", time.Since(released).Round(time.Millisecond))
			w.running(t, "after the idle connections closed")
			if pendingAdmin != nil {
				pendingAdmin.SetReadDeadline(time.Now().Add(30 * time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(pendingAdmin), nil)
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("admin request sent while descriptors were exhausted: %v %v", resp, err)
				}
			}
			metrics := "http://" + admin + "/metrics"
			if max > 0 {
				if v := scrape(t, metrics, `ringlb_balancer_rejected_connections_total{reason="max_connections"}`); v < float64(refused) {
					t.Errorf("rejected max_connections = %v, want ≥ %d", v, refused)
				}
				if n := w.count(msgRefused); n == 0 || n >= refused {
					t.Errorf("%d %q lines for %d refusals, want at least one and fewer than the refusals", n, msgRefused, refused)
				}
			} else {
				errs := scrape(t, metrics, `ringlb_balancer_accept_errors_total{listener="data"}`)
				if errs <= 0 {
					t.Errorf("ringlb_balancer_accept_errors_total{listener=\"data\"} = %v, want > 0", errs)
				}
				// The data port's lines: the admin port's listener (its
				// per-client share is acceptguard's) logs its own.
				if n := w.countFrom(msgAcceptFailed, "balancer data"); float64(n) >= errs && errs > 1 {
					t.Errorf("%d %q lines for %v accept errors: not rate-limited", n, msgAcceptFailed, errs)
				}
				t.Logf("%v accept errors, %d log lines about them (%d in all, the admin port's included)", errs, w.countFrom(msgAcceptFailed, "balancer data"), w.count(msgAcceptFailed))
			}
		})
	}

	for _, tc := range []struct{ name, max string }{
		{"derived limit", ""},
		{"limit above the descriptors", "100000"},
	} {
		t.Run("edge/"+tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "edge.yaml")
			extra := ""
			if tc.max != "" {
				extra = ", max_connections: " + tc.max
			}
			writeFile(t, cfg, "cluster: { name: edge-1, bind: 127.0.0.1:0, profile: local, probe_interval: 200ms }\n"+
				"edge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0, drain_timeout: 1s"+extra+" }\n")
			edge := startProc(t, limited, "edge", "-config", cfg)
			rec := edge.waitLog(t, "edge started")
			listen, admin := rec["listen"].(string), rec["admin"].(string)
			max, _ := rec["max_connections"].(float64)
			t.Logf("edge started with max_connections %v (open-file limit %d)", rec["max_connections"], lowFDLimit)
			w := watchLogs(edge)
			whoami := "http://" + listen + "/whoami"
			waitStatus(t, whoami, 200)
			if tc.max != "" {
				max = 0
			}
			conns, refused := attackDataPort(t, w, listen, int(max))
			w.running(t, "under the idle connections")
			closeAll(conns)
			released := time.Now()
			waitStatus(t, whoami, 200)
			t.Logf("edge serving again %s after the idle connections closed", time.Since(released).Round(time.Millisecond))
			w.running(t, "after the idle connections closed")
			metrics := "http://" + admin + "/metrics"
			if max > 0 {
				if v := scrape(t, metrics, `ringlb_edge_rejected_connections_total{reason="max_connections"}`); v < float64(refused) {
					t.Errorf("ringlb_edge_rejected_connections_total = %v, want ≥ %d", v, refused)
				}
				if n := w.count(msgRefused); n == 0 || n >= refused {
					t.Errorf("%d %q lines for %d refusals, want at least one and fewer than the refusals", n, msgRefused, refused)
				}
			} else if v := scrape(t, metrics, "ringlb_edge_accept_errors_total"); v <= 0 {
				t.Errorf("ringlb_edge_accept_errors_total = %v, want > 0", v)
			}
		})
	}

	t.Run("gslb", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "gslb.yaml")
		// max_tcp_connections above the descriptors: accepting fails with
		// EMFILE before the cap bites (the derived cap, 1 here, refuses
		// instead: gslb's TestTCPConnectionsCapped).
		writeFile(t, cfg, `cluster: { name: gslb-1, bind: 127.0.0.1:0, profile: local }
gslb:
  listen: 127.0.0.1:0
  admin: { listen: 127.0.0.1:0 }
  max_tcp_connections: 100000
  zones: [ { origin: ringlb.test, records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "ns1 3600 IN A 127.0.0.1" ] } ]
`)
		g := startProc(t, limited, "gslb", "-config", cfg)
		rec := g.waitLog(t, "gslb started")
		server, admin := rec["dns"].(string), rec["admin"].(string)
		w := watchLogs(g)
		pid := g.cmd.Process.Pid
		query := func(network string) error {
			m := new(dns.Msg)
			m.SetQuestion("ns1.ringlb.test.", dns.TypeA)
			c := &dns.Client{Net: network, Timeout: 2 * time.Second}
			r, _, err := c.Exchange(m, server)
			if err == nil && (r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1) {
				err = fmt.Errorf("answer %v", r)
			}
			return err
		}
		if err := query("tcp"); err != nil {
			t.Fatalf("TCP before: %v", err)
		}
		conns, _ := holdIdle(t, w, server, idleConns)
		defer closeAll(conns)
		// Exhausted once the process holds every descriptor it may.
		deadline := time.Now().Add(30 * time.Second)
		for openFDs(t, pid) < lowFDLimit-1 {
			if time.Now().After(deadline) {
				t.Fatalf("gslb holds %d descriptors 30s after %d TCP connections, want %d", openFDs(t, pid), idleConns, lowFDLimit)
			}
			w.running(t, "under the idle connections")
			time.Sleep(5 * time.Millisecond)
		}
		// UDP is served meanwhile; the CPU the process burns meanwhile is
		// reported (a busy accept loop takes a whole core).
		cpu0, wall0 := cpuTicks(t, pid), time.Now()
		for i := range 100 {
			if err := query("udp"); err != nil {
				t.Fatalf("UDP query %d with descriptors exhausted: %v", i, err)
			}
		}
		time.Sleep(500 * time.Millisecond) // a measurement window for the figure below, not a wait for an event
		cpu1, wall1 := cpuTicks(t, pid), time.Now()
		t.Logf("descriptors exhausted: 100 UDP queries answered; gslb used %.0f%% of a CPU over %s",
			100*float64(cpu1-cpu0)/clockTicks/wall1.Sub(wall0).Seconds(), wall1.Sub(wall0).Round(time.Millisecond))
		closeAll(conns)
		deadline = time.Now().Add(30 * time.Second)
		for {
			err := query("tcp")
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("TCP not answered 30s after the idle connections closed: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		w.running(t, "after the idle connections closed")
		if v := scrape(t, "http://"+admin+"/metrics", "ringlb_gslb_accept_errors_total"); v <= 0 {
			t.Errorf("ringlb_gslb_accept_errors_total = %v, want > 0", v)
		}
	})
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times on Linux.
const clockTicks = 100

// cpuTicks returns the user+system CPU time of process pid, in clock ticks.
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	// Fields after the command name (which may hold spaces) start at ")".
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return utime + stime
}

// openFDs counts the descriptors process pid holds.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	return len(ents)
}
