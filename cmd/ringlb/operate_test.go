package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/balancer/httplog"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/sessions"
)

// adminCall makes a request to a loopback admin port without a token (the
// loopback rule; changes carry X-Ringlb-Admin) and decodes its JSON answer.
func adminCall(t *testing.T, method, url string, header map[string]string, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if method != http.MethodGet {
		req.Header.Set(configs.HeaderAdmin, "1")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %d %q", method, url, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

// joinEdge opens a WebSocket to an edge's relay directly.
func joinEdge(t *testing.T, listen, key string) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+listen+"/ws", http.Header{"Ctstickiness": {key}})
	if err != nil {
		t.Fatalf("join %s: %v (%v)", key, err, resp)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// The config API against a running edge: GET the running config and the
// file's version; a PUT with an error changes nothing and says where; a PUT
// that applies is what the node then runs (a debug line it did not log
// before, the new history bound), with the file and its backup on disk and
// an audit record; a PUT made from a version the file no longer has is
// refused.
func TestConfigRoundTrip(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.yaml")
	orig := "cluster: { name: edge-1, bind: 127.0.0.1:0, profile: local }\nedge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0, history: { messages: 100 } }\n"
	writeFile(t, path, orig)
	edge := startProc(t, bin, "edge", "-config", path)
	rec := edge.waitLog(t, "edge started")
	admin, listen := "http://"+rec["admin"].(string), rec["listen"].(string)

	code, view := adminCall(t, "GET", admin+"/api/config", nil, "")
	v1, _ := view["version"].(string)
	if code != 200 || v1 == "" || view["file"] != orig || view["role"] != "edge" {
		t.Fatalf("GET /api/config: %d %v", code, view)
	}
	if h := view["effective"].(map[string]any)["edge"].(map[string]any)["history"].(map[string]any); h["messages"] != float64(100) {
		t.Fatalf("effective history %v", h)
	}

	bad := strings.Replace(orig, "messages: 100", "messages: -5", 1)
	code, out := adminCall(t, "PUT", admin+"/api/config", map[string]string{"If-Match": `"` + v1 + `"`}, bad)
	if want := path + ":2: edge.history.messages: must be in range [0, 10000000], got -5"; code != 400 || !strings.Contains(fmt.Sprint(out["error"]), want) {
		t.Fatalf("PUT of a bad file: %d %v, want 400 with %q", code, out, want)
	}
	if raw, _ := os.ReadFile(path); string(raw) != orig {
		t.Fatalf("a refused PUT changed the file: %q", raw)
	}
	if _, err := os.Stat(path + ".bak"); err == nil {
		t.Fatal("a refused PUT wrote a backup")
	}

	joinEdge(t, listen, "before") // at info level: no debug line for it
	good := "cluster: { name: edge-1, bind: 127.0.0.1:0, profile: local, log_level: debug }\nedge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0, history: { messages: 7 } }\n"
	code, out = adminCall(t, "PUT", admin+"/api/config", map[string]string{"If-Match": `"` + v1 + `"`}, good)
	if code != 200 || out["applied"] != true {
		t.Fatalf("PUT: %d %v", code, out)
	}
	edge.waitLogWith(t, "configuration reloaded", func(r map[string]any) bool { return r["history_messages"] == float64(7) })
	joinEdge(t, listen, "after")
	rec = edge.waitLog(t, "new session here") // debug, logged now
	if rec["key"] != httplog.KeyString("after").String() {
		t.Fatalf("the first debug line is for %v: the session joined at info level was logged", rec["key"])
	}
	if raw, _ := os.ReadFile(path); string(raw) != good {
		t.Errorf("file after PUT: %q", raw)
	}
	if raw, _ := os.ReadFile(path + ".bak"); string(raw) != orig {
		t.Errorf("backup after PUT: %q", raw)
	}
	_, view = adminCall(t, "GET", admin+"/api/config", nil, "")
	v2 := view["version"].(string)
	if view["running_version"] != v2 || view["effective"].(map[string]any)["cluster"].(map[string]any)["log_level"] != "debug" {
		t.Errorf("GET after PUT: %v", view)
	}
	_, audit := adminCall(t, "GET", admin+"/api/audit", nil, "")
	recs, _ := audit["records"].([]any)
	var found bool
	for _, r := range recs {
		r := r.(map[string]any)
		if r["action"] == "config" && r["target"] == path && r["result"] == float64(200) && r["who"] == "loopback" {
			found = true
		}
	}
	if !found {
		t.Errorf("no audit record of the PUT in %v", recs)
	}

	// The file is edited on the host meanwhile: a PUT made from v2 is refused.
	writeFile(t, path, good+"# edited by hand\n")
	code, out = adminCall(t, "PUT", admin+"/api/config", map[string]string{"If-Match": `"` + v2 + `"`}, orig)
	if code != http.StatusPreconditionFailed {
		t.Fatalf("PUT on a stale version: %d %v", code, out)
	}
	if raw, _ := os.ReadFile(path); string(raw) != good+"# edited by hand\n" {
		t.Errorf("a stale PUT changed the file: %q", raw)
	}
}

// SIGHUP on an edge changes its history bound and log level live, and a
// change only a restart can make is refused, naming the fields.
func TestEdgeReloadLive(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	path := filepath.Join(t.TempDir(), "edge.yaml")
	base := "cluster: { name: edge-1, bind: 127.0.0.1:0, profile: local%s }\nedge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0, history: { messages: %d }%s }\n"
	writeFile(t, path, fmt.Sprintf(base, "", 100, ""))
	edge := startProc(t, bin, "edge", "-config", path)
	rec := edge.waitLog(t, "edge started")
	listen, admin := rec["listen"].(string), rec["admin"].(string)
	joinEdge(t, listen, "quiet")

	writeFile(t, path, fmt.Sprintf(base, ", log_level: debug", 3, ""))
	edge.cmd.Process.Signal(syscall.SIGHUP)
	edge.waitLogWith(t, "configuration reloaded", func(r map[string]any) bool { return r["history_messages"] == float64(3) })
	edge.waitLog(t, "SIGHUP: configuration reloaded")
	joinEdge(t, listen, "loud")
	if rec := edge.waitLog(t, "new session here"); rec["key"] != httplog.KeyString("loud").String() {
		t.Fatalf("debug line for %v", rec["key"])
	}

	writeFile(t, path, strings.Replace(fmt.Sprintf(base, ", log_level: debug", 5, ", max_participants: 8"), "listen: 127.0.0.1:0", "listen: 127.0.0.1:1", 1))
	edge.cmd.Process.Signal(syscall.SIGHUP)
	rec = edge.waitLog(t, "SIGHUP: reload failed, still running the previous configuration")
	restart := fmt.Sprint(rec["restart"])
	if restart != "[edge.listen edge.advertise_url edge.max_participants]" || !strings.Contains(fmt.Sprint(rec["err"]), "edge.max_participants: changing 64 to 8 needs a restart") {
		t.Fatalf("restart-only change: %v", rec)
	}
	// Nothing of it applied: the history bound is still 3.
	_, view := adminCall(t, "GET", "http://"+admin+"/api/config", nil, "")
	if h := view["effective"].(map[string]any)["edge"].(map[string]any)["history"].(map[string]any); h["messages"] != float64(3) {
		t.Errorf("history after a refused reload: %v", h)
	}
}

// statsdCollector is a StatsD server on TCP in the test: it keeps the
// last value of every line.
type statsdCollector struct {
	ln    net.Listener
	mu    sync.Mutex
	lines map[string]string
	conns []net.Conn
}

func listenStatsDTCP(t *testing.T) *statsdCollector {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &statsdCollector{ln: ln, lines: map[string]string{}}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			c.conns = append(c.conns, conn)
			c.mu.Unlock()
			go func() {
				sc := bufio.NewScanner(conn)
				for sc.Scan() {
					name, value, _ := strings.Cut(sc.Text(), ":")
					c.mu.Lock()
					c.lines[name] = value
					c.mu.Unlock()
				}
			}()
		}
	}()
	t.Cleanup(c.kill)
	return c
}

// kill closes the listener and every connection: the server is gone.
func (c *statsdCollector) kill() {
	c.ln.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
}

func (c *statsdCollector) waitFor(t *testing.T, names ...string) {
	t.Helper()
	pollUntil(t, 60*time.Second, func() (bool, string) {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, n := range names {
			if _, ok := c.lines[n]; !ok {
				return false, fmt.Sprintf("StatsD: %s not received (%d names were)", n, len(c.lines))
			}
		}
		return true, ""
	})
}

// Every role pushes its figures to StatsD over TCP; a StatsD server that
// goes away costs the nodes nothing: they keep serving and say so once.
func TestStatsDOverTCPFromEveryRole(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	sd := listenStatsDTCP(t)
	statsd := fmt.Sprintf("statsd: { address: %q, protocol: tcp, interval: 100ms }", sd.ln.Addr().String())
	writeFile(t, filepath.Join(dir, "bal.yaml"), "cluster: { name: bal-1, bind: 127.0.0.1:0, profile: local }\nbalancer: { listen: 127.0.0.1:0, admin: 127.0.0.1:0, "+statsd+" }\n")
	bal := startProc(t, bin, "balancer", "-config", filepath.Join(dir, "bal.yaml"))
	rec := bal.waitLog(t, "balancer started")
	gossip, balAdmin := rec["gossip"].(string), rec["admin"].(string)
	writeFile(t, filepath.Join(dir, "edge.yaml"), fmt.Sprintf("cluster: { name: edge-1, bind: 127.0.0.1:0, join: [%q], profile: local }\nedge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0, %s }\n", gossip, statsd))
	edge := startProc(t, bin, "edge", "-config", filepath.Join(dir, "edge.yaml"))
	rec = edge.waitLog(t, "edge started")
	listen, edgeAdmin := rec["listen"].(string), rec["admin"].(string)
	writeFile(t, filepath.Join(dir, "gslb.yaml"), fmt.Sprintf(`cluster: { name: gslb-1, bind: 127.0.0.1:0, join: [%q], profile: local }
gslb:
  listen: 127.0.0.1:0
  admin: 127.0.0.1:0
  zones: [ { origin: ringlb.test, records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "ns1 3600 IN A 127.0.0.1" ] } ]
  %s
`, gossip, statsd))
	gslb := startProc(t, bin, "gslb", "-config", filepath.Join(dir, "gslb.yaml"))
	rec = gslb.waitLog(t, "gslb started")
	gAdmin := rec["admin"].(string)
	dnsAddr := rec["dns"].(string)
	query := func() {
		t.Helper()
		q := new(dns.Msg)
		q.SetQuestion("ringlb.test.", dns.TypeSOA)
		if r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(q, dnsAddr); err != nil || r.Rcode != dns.RcodeSuccess {
			t.Fatalf("SOA query: %v %v", r, err)
		}
	}
	query()

	joinEdge(t, listen, "counted")
	sd.waitFor(t, "ringlb.edge-1.edge_connections_active", "ringlb.edge-1.edge_sessions_active", "ringlb.bal-1.balancer_ring_members",
		"ringlb.gslb-1.gslb_queries_total.qtype.SOA.rcode.NOERROR")
	sd.mu.Lock()
	conns := sd.lines["ringlb.edge-1.edge_connections_active"]
	sd.mu.Unlock()
	if conns != "1|g" {
		t.Errorf("edge_connections_active %q, want 1|g", conns)
	}

	// The server dies: every node goes on serving (the gslb notices when it
	// has a count to push: its figures here are counters).
	sd.kill()
	query()
	for _, p := range []*proc{bal, edge, gslb} {
		p.waitLog(t, "StatsD push failed; retrying every interval")
	}
	for _, admin := range []string{balAdmin, edgeAdmin, gAdmin} {
		resp, err := http.Get("http://" + admin + "/healthz")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s/healthz with StatsD gone: %v %v", admin, resp, err)
		}
		resp.Body.Close()
	}
	c := joinEdge(t, listen, "after")
	if err := c.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
}

// Two edges and a balancer: the user alice, online in a session on each
// edge, is one user of the cluster (each edge counts her once); the
// access log has a line for a request and one for a closed tunnel, and
// SIGUSR1 reopens it after a rename.
func TestUsersOnceAndAccessLog(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	secret := configs.GenerateKey()
	writeFile(t, filepath.Join(dir, "hmac.key"), secret+"\n")
	access := filepath.Join(dir, "access.log")
	writeFile(t, filepath.Join(dir, "bal.yaml"), "cluster: { name: bal-1, bind: 127.0.0.1:0, profile: local, probe_interval: 200ms }\nbalancer: { listen: 127.0.0.1:0, admin: 127.0.0.1:0, access_log: { enabled: true, path: access.log } }\n")
	bal := startProc(t, bin, "balancer", "-config", filepath.Join(dir, "bal.yaml"))
	rec := bal.waitLog(t, "balancer started")
	gossip, balListen, balAdmin := rec["gossip"].(string), rec["listen"].(string), "http://"+rec["admin"].(string)
	for i := 1; i <= 2; i++ {
		cfg := filepath.Join(dir, fmt.Sprintf("edge%d.yaml", i))
		writeFile(t, cfg, fmt.Sprintf("cluster: { name: edge-%d, bind: 127.0.0.1:0, join: [%q], profile: local, probe_interval: 200ms }\nedge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0, auth: { hmac_secret_file: hmac.key } }\n", i, gossip))
		startProc(t, bin, "edge", "-config", cfg).waitLog(t, "edge started")
	}
	waitRingMembers(t, balAdmin+"/api/ring", 2)
	// A session on each edge.
	keys := map[string]string{}
	for i := 0; len(keys) < 2 && i < 1000; i++ {
		k := fmt.Sprintf("doc-%d", i)
		_, out := adminCall(t, "GET", balAdmin+"/api/lookup?key="+k, nil, "")
		if owner, _ := out["owner"].(string); keys[owner] == "" {
			keys[owner] = k
		}
	}
	if len(keys) != 2 {
		t.Fatalf("keys by owner: %v", keys)
	}
	now := time.Now()
	for _, key := range keys {
		tok, _, err := sessions.MintToken([]byte(secret), sessions.TokenClaims{Session: key, User: "alice", Role: sessions.RoleEditor, IssuedAt: now, Expires: now.Add(time.Hour)}, configs.DefaultMaxTokenTTL)
		if err != nil {
			t.Fatal(err)
		}
		c, resp, err := websocket.DefaultDialer.Dial("ws://"+balListen+"/ws?token="+tok, http.Header{"Ctstickiness": {key}})
		if err != nil {
			t.Fatalf("join %s: %v %v", key, err, resp)
		}
		defer c.Close()
	}
	pollUntil(t, 30*time.Second, func() (bool, string) {
		_, cluster := adminCall(t, "GET", balAdmin+"/api/cluster", nil, "")
		sum := 0.0
		for _, n := range cluster["nodes"].([]any) {
			if st, ok := n.(map[string]any)["stats"].(map[string]any); ok {
				sum += st["users"].(float64)
			}
		}
		users, _ := cluster["users"].(map[string]any)
		if sum != 2 || users == nil || users["edges"] != float64(2) {
			return false, fmt.Sprintf("the edges did not both count alice: %v", cluster)
		}
		if users["online"] != float64(1) {
			t.Fatalf("alice on two edges: the cluster counts %v users (the edges' figures add up to %g)", users["online"], sum)
		}
		t.Logf("edges' users_online add up to %g; the cluster's figure is %v", sum, users["online"])
		return true, ""
	})

	// The access log: a request, then a tunnel that closes.
	resp, err := http.Get("http://" + balListen + "/whoami?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var edgeKey string
	for _, k := range keys {
		edgeKey = k
	}
	c, _, err := websocket.DefaultDialer.Dial("ws://"+balListen+"/ws", http.Header{"Ctstickiness": {edgeKey}})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	lines := waitAccessLines(t, access, func(ls []map[string]any) bool {
		var http, tunnel bool
		for _, l := range ls {
			http = http || l["type"] == "http" && l["status"] == float64(200)
			tunnel = tunnel || l["type"] == "tunnel" && l["status"] == float64(101) && l["close"] == "client"
		}
		return http && tunnel
	})
	if raw, _ := os.ReadFile(access); strings.Contains(string(raw), edgeKey) || strings.Contains(string(raw), "token=") {
		t.Errorf("a key or token in the access log:\n%s", raw)
	}
	t.Logf("%d access lines, e.g. %v", len(lines), lines[len(lines)-1])
	// logrotate: rename, SIGUSR1, and the next line is in a new file.
	if err := os.Rename(access, access+".1"); err != nil {
		t.Fatal(err)
	}
	bal.cmd.Process.Signal(syscall.SIGUSR1)
	bal.waitLog(t, "SIGUSR1: log files reopened")
	resp, err = http.Get("http://" + balListen + "/whoami?after=rotate")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitAccessLines(t, access, func(ls []map[string]any) bool { return len(ls) == 1 && ls[0]["type"] == "http" })
}

func waitAccessLines(t *testing.T, path string, done func([]map[string]any) bool) []map[string]any {
	t.Helper()
	var lines []map[string]any
	pollUntil(t, 30*time.Second, func() (bool, string) {
		lines = nil
		if raw, err := os.ReadFile(path); err == nil {
			for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) == nil {
					lines = append(lines, m)
				}
			}
		}
		return done(lines), fmt.Sprintf("%s: %d lines, not what was expected: %v", path, len(lines), lines)
	})
	return lines
}
