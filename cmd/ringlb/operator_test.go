package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// operatorCluster is a balancer (with a user to log in, a static edge and a
// state directory), an edge (with join tokens) and a gslb, each with its own
// state directory, as processes of the real binary in one gossip cluster.
type operatorCluster struct {
	bin, dir                    string
	balCfg, gslbCfg, balListen  string
	bal, edge, gslb             *proc
	balAdmin, edgeAdmin, gAdmin string
	gDNS                        string
	jar                         http.CookieJar
}

const operatorPassword = "a long operator password"

// okServer answers 200 to every HTTP request: a gslb pool member's probe
// target and a static edge that passes its TCP monitor.
func okServer(t *testing.T) string {
	t.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func startOperatorCluster(t *testing.T) *operatorCluster {
	t.Helper()
	c := &operatorCluster{bin: buildBinary(t), dir: t.TempDir()}
	line, err := configs.UsersLine("alice", operatorPassword)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(c.dir, "users"), line+"\n")
	writeFile(t, filepath.Join(c.dir, "hmac.key"), configs.GenerateKey()+"\n")
	static, member := okServer(t), okServer(t)

	c.balCfg = filepath.Join(c.dir, "bal.yaml")
	writeFile(t, c.balCfg, fmt.Sprintf(`cluster: { name: bal-1, bind: 127.0.0.1:0, profile: local, probe_interval: 200ms, gossip_interval: 100ms, state_dir: bal-state }
balancer:
  listen: 127.0.0.1:0
  admin: { listen: 127.0.0.1:0, users_file: users, history_interval: 200ms }
  edges: [ { name: static-1, url: "http://%s" } ]
`, static))
	c.bal = startProc(t, c.bin, "balancer", "-config", c.balCfg)
	rec := c.bal.waitLog(t, "balancer started")
	c.balAdmin, c.balListen = rec["admin"].(string), rec["listen"].(string)
	gossip := rec["gossip"].(string)

	edgeCfg := filepath.Join(c.dir, "edge.yaml")
	writeFile(t, edgeCfg, fmt.Sprintf(`cluster: { name: edge-1, bind: 127.0.0.1:0, join: [%q], profile: local, probe_interval: 200ms, gossip_interval: 100ms, state_dir: edge-state }
edge: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0, history_interval: 200ms }, drain_timeout: 2s, auth: { hmac_secret_file: hmac.key } }
`, gossip))
	c.edge = startProc(t, c.bin, "edge", "-config", edgeCfg)
	c.edgeAdmin = c.edge.waitLog(t, "edge started")["admin"].(string)

	c.gslbCfg = filepath.Join(c.dir, "gslb.yaml")
	writeFile(t, c.gslbCfg, fmt.Sprintf(`cluster: { name: gslb-1, bind: 127.0.0.1:0, join: [%q], profile: local, probe_interval: 200ms, gossip_interval: 100ms, state_dir: gslb-state }
gslb:
  listen: 127.0.0.1:0
  admin: { listen: 127.0.0.1:0, history_interval: 200ms }
  zones: [ { origin: ringlb.test, records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "ns1 3600 IN A 127.0.0.1" ] } ]
  monitors: { bal: { type: http, path: /, interval: 200ms, timeout: 150ms, rise: 2, fall: 2 } }
  names:
    - name: ide.ringlb.test
      auto_recover: false
      geo: { east: [127.0.0.1/32], west: [127.0.0.2/32] }
      regions:
        east: { monitor: bal, failover: [west], members: [ { name: bal-1, address: 127.0.0.1, probe: %q } ] }
        west: { monitor: bal, failover: [east], members: [ { name: bal-2, address: 127.0.0.2, probe: %q } ] }
`, gossip, member, member))
	c.startGSLB(t)
	c.jar, _ = cookiejar.New(nil)
	return c
}

func (c *operatorCluster) startGSLB(t *testing.T) {
	t.Helper()
	c.gslb = startProc(t, c.bin, "gslb", "-config", c.gslbCfg)
	rec := c.gslb.waitLog(t, "gslb started")
	c.gAdmin, c.gDNS = rec["admin"].(string), rec["dns"].(string)
}

func (c *operatorCluster) startBalancer(t *testing.T) {
	t.Helper()
	c.bal = startProc(t, c.bin, "balancer", "-config", c.balCfg)
	rec := c.bal.waitLog(t, "balancer started")
	c.balAdmin, c.balListen = rec["admin"].(string), rec["listen"].(string)
}

// call makes an admin request; with the session (the cookie jar, the
// dashboard's header) when session, else as a loopback admin client.
func (c *operatorCluster) call(t *testing.T, method, target string, form url.Values, session bool) (int, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Accept", "application/json")
	if method == http.MethodPost {
		req.Header.Set(configs.HeaderAdmin, "1")
	}
	client := &http.Client{Timeout: 15 * time.Second}
	if session {
		client.Jar = c.jar
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type auditRecord struct {
	Node, Who, For, Remote, Action, Target string
	Result                                 int
	At                                     time.Time
}

func (c *operatorCluster) audit(t *testing.T, admin string, session bool, query string) []auditRecord {
	t.Helper()
	code, body := c.call(t, http.MethodGet, "http://"+admin+"/api/audit"+query, nil, session)
	if code != 200 {
		t.Fatalf("GET %s/api/audit%s: %d %s", admin, query, code, body)
	}
	var v struct{ Records []auditRecord }
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	return v.Records
}

func westAnswer(t *testing.T, server string) string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("ide.ringlb.test.", dns.TypeA)
	cl := &dns.Client{Timeout: 2 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP("127.0.0.2")}}}
	r, _, err := cl.Exchange(m, server)
	if err != nil || len(r.Answer) == 0 {
		return fmt.Sprintf("error %v %v", err, r)
	}
	return r.Answer[0].(*dns.A).A.String()
}

// TestAuditOfEveryAdminPost: every admin POST of the three roles, made by a
// logged-in user through the balancer or by a loopback admin client on the
// node itself, is one audit record on the node that acted — who, from
// where, what, on which target, the status — and the balancer merges them
// cluster-wide. Before this, no admin port had an audit log (GET /api/audit
// answered 404) and the only trace was a log line.
func TestAuditOfEveryAdminPost(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	c := startOperatorCluster(t)
	bal, edge, gslb := "http://"+c.balAdmin, "http://"+c.edgeAdmin, "http://"+c.gAdmin

	// A user is configured: the loopback rule no longer opens the balancer.
	if code, _ := c.call(t, http.MethodGet, bal+"/api/cluster", nil, false); code != http.StatusUnauthorized {
		t.Fatalf("a loopback read of a balancer with users, without a session: %d, want 401", code)
	}
	if code, _ := c.call(t, http.MethodPost, bal+"/login", url.Values{"user": {"alice"}, "password": {"not it"}}, true); code != http.StatusUnauthorized {
		t.Fatalf("a wrong password: %d", code)
	}
	if code, body := c.call(t, http.MethodPost, bal+"/login", url.Values{"user": {"alice"}, "password": {operatorPassword}}, true); code != 200 {
		t.Fatalf("login: %d %s", code, body)
	}
	// The balancer sees the edge and the gslb (it forwards changes to them).
	c.waitBody(t, bal+"/api/nodes", true, func(body string) bool {
		return strings.Contains(body, `"name": "edge-1"`) && strings.Contains(body, `"name": "gslb-1"`)
	})
	steps := []struct {
		name, target string
		form         url.Values
		session      bool
		want         int
	}{
		{"maintenance", bal + "/api/maintenance?state=on", nil, true, 200},
		{"static drain", bal + "/api/nodes/static-1/drain", nil, true, 202},
		{"serve mode through the dashboard", bal + "/api/gslb/pools/ide.ringlb.test/west/bal-2/mode?mode=remove", nil, true, 200},
		{"a bad serve mode", gslb + "/api/pools/ide.ringlb.test/west/bal-2/mode?mode=sometimes", nil, false, 400},
		{"query log", gslb + "/api/querylog?on=true", nil, false, 200},
		{"recover", gslb + "/api/pools/ide.ringlb.test/west/recover", nil, false, 200},
		{"revoke", edge + "/api/tokens/revoke", url.Values{"user": {"mallory"}}, false, 200},
		{"drain through the balancer", bal + "/api/nodes/edge-1/drain", nil, true, 202},
		{"logout", bal + "/logout", nil, true, 200},
	}
	for _, s := range steps {
		if code, body := c.call(t, http.MethodPost, s.target, s.form, s.session); code != s.want {
			t.Fatalf("%s: POST %s: %d %s, want %d", s.name, s.target, code, body, s.want)
		}
	}

	// Reading the balancer needs a session again (logged out).
	if code, _ := c.call(t, http.MethodGet, bal+"/api/audit", nil, true); code != http.StatusUnauthorized {
		t.Fatalf("the balancer's audit after logout: %d, want 401", code)
	}
	c.login(t)

	balRecs := c.audit(t, c.balAdmin, true, "")
	gslbRecs := c.audit(t, c.gAdmin, false, "")
	edgeRecs := c.audit(t, c.edgeAdmin, false, "")
	type want struct {
		node, action, target, who, forUser string
		result                             int
	}
	viaBal := "user:alice via bal-1"
	wants := []struct {
		recs []auditRecord
		want
	}{
		{balRecs, want{"bal-1", "login", "", "user:alice", "", 401}}, // the name tried
		{balRecs, want{"bal-1", "login", "", "user:alice", "", 200}},
		{balRecs, want{"bal-1", "maintenance", "bal-1 on", "user:alice", "", 200}},
		{balRecs, want{"bal-1", "drain", "static-1 on", "user:alice", "", 202}},
		{balRecs, want{"bal-1", "serve_mode", "ide.ringlb.test/west/bal-2 remove", "user:alice", "", 200}},
		{balRecs, want{"bal-1", "drain", "edge-1", "user:alice", "", 202}},
		{balRecs, want{"bal-1", "logout", "alice", "user:alice", "", 200}},
		{gslbRecs, want{"gslb-1", "serve_mode", "ide.ringlb.test/west/bal-2 remove", "loopback", viaBal, 200}},
		{gslbRecs, want{"gslb-1", "serve_mode", "ide.ringlb.test/west/bal-2 sometimes", "loopback", "", 400}},
		{gslbRecs, want{"gslb-1", "query_log", "true", "loopback", "", 200}},
		{gslbRecs, want{"gslb-1", "recover", "ide.ringlb.test/west", "loopback", "", 200}},
		{edgeRecs, want{"edge-1", "revoke_tokens", "user mallory", "loopback", "", 200}},
		{edgeRecs, want{"edge-1", "drain", "edge-1", "loopback", viaBal, 202}},
	}
	for _, w := range wants {
		var r *auditRecord
		for i := range w.recs {
			x := &w.recs[i]
			if x.Node == w.node && x.Action == w.action && x.Target == w.target && x.Who == w.who && x.Result == w.result {
				r = x
				break
			}
		}
		if r == nil {
			t.Errorf("no audit record %+v among %+v", w.want, w.recs)
			continue
		}
		if r.For != w.forUser || !strings.HasPrefix(r.Remote, "127.0.0.1:") || time.Since(r.At) > 10*time.Minute {
			t.Errorf("record %+v: for %q, remote %q (want for %q, a loopback remote, a recent time)", w.want, r.For, r.Remote, w.forUser)
		}
	}
	// The dashboard's cluster-wide list holds every node's records.
	merged := c.audit(t, c.balAdmin, true, "?cluster=1")
	nodes := map[string]int{}
	for _, r := range merged {
		nodes[r.Node]++
	}
	if nodes["bal-1"] != len(balRecs) || nodes["gslb-1"] != len(gslbRecs) || nodes["edge-1"] != len(edgeRecs) {
		t.Errorf("merged audit by node %v, want bal-1 %d, gslb-1 %d, edge-1 %d", nodes, len(balRecs), len(gslbRecs), len(edgeRecs))
	}
	for i := 1; i < len(merged); i++ {
		if merged[i].At.After(merged[i-1].At) {
			t.Fatalf("merged audit not newest first at %d", i)
		}
	}
	t.Logf("%d audit records: balancer %d, gslb %d, edge %d", len(merged), len(balRecs), len(gslbRecs), len(edgeRecs))
}

func (c *operatorCluster) login(t *testing.T) {
	t.Helper()
	if code, body := c.call(t, http.MethodPost, "http://"+c.balAdmin+"/login", url.Values{"user": {"alice"}, "password": {operatorPassword}}, true); code != 200 {
		t.Fatalf("login: %d %s", code, body)
	}
}

// waitBody polls a GET until cond holds of its body (liveness bound only).
func (c *operatorCluster) waitBody(t *testing.T, target string, session bool, cond func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := c.call(t, http.MethodGet, target, nil, session)
		if code == 200 && cond(body) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %s", target, code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestOperatorStateSurvivesKill9: a gslb killed (kill -9) while a member is
// taken out by a serve-mode override, and a balancer killed in maintenance
// with a static edge drained, come back with all of it in force, their
// audit logs and the login session intact. Before cluster.state_dir the
// restarted gslb answered west clients with the removed member again
// (127.0.0.2) and the balancer came back out of maintenance.
func TestOperatorStateSurvivesKill9(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	c := startOperatorCluster(t)
	bal, gslb := "http://"+c.balAdmin, "http://"+c.gAdmin
	c.login(t)
	c.waitBody(t, bal+"/api/ring", true, func(body string) bool { return strings.Contains(body, "static-1") })
	for _, target := range []string{bal + "/api/maintenance?state=on", bal + "/api/nodes/static-1/drain", gslb + "/api/pools/ide.ringlb.test/west/bal-2/mode?mode=remove"} {
		session := strings.HasPrefix(target, bal)
		if code, body := c.call(t, http.MethodPost, target, nil, session); code/100 != 2 {
			t.Fatalf("POST %s: %d %s", target, code, body)
		}
	}
	if got := westAnswer(t, c.gDNS); got != "127.0.0.1" {
		t.Fatalf("west with bal-2 removed: %s, want 127.0.0.1 (failed over to east)", got)
	}
	balAudit, gslbAudit := len(c.audit(t, c.balAdmin, true, "")), len(c.audit(t, c.gAdmin, false, ""))

	for _, p := range []*proc{c.bal, c.gslb} {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
	c.startGSLB(t)
	c.startBalancer(t)

	if got := westAnswer(t, c.gDNS); got != "127.0.0.1" {
		t.Errorf("west after kill -9 and restart: %s, want 127.0.0.1 (bal-2 still removed)", got)
	}
	if _, body := c.call(t, http.MethodGet, "http://"+c.gAdmin+"/api/pools", nil, false); !strings.Contains(body, `"override": "remove"`) {
		t.Errorf("the restarted gslb's pools show no override: %s", body)
	}
	// The session cookie from before the kill still works.
	code, body := c.call(t, http.MethodGet, "http://"+c.balAdmin+"/api/maintenance", nil, true)
	if code != 200 || !strings.Contains(body, `"maintenance": true`) {
		t.Errorf("the restarted balancer's maintenance: %d %s, want on (with the session from before the kill)", code, body)
	}
	if _, body := c.call(t, http.MethodGet, "http://"+c.balAdmin+"/api/nodes", nil, true); !strings.Contains(body, `"state": "draining"`) {
		t.Errorf("the restarted balancer lost the static edge's drain: %s", body)
	}
	if _, body := c.call(t, http.MethodGet, "http://"+c.balAdmin+"/api/ring", nil, true); strings.Contains(body, "static-1") {
		t.Errorf("the drained static edge is back on the ring: %s", body)
	}
	if n := len(c.audit(t, c.balAdmin, true, "")); n < balAudit {
		t.Errorf("the balancer's audit log: %d records after the restart, %d before", n, balAudit)
	}
	if n := len(c.audit(t, c.gAdmin, false, "")); n < gslbAudit {
		t.Errorf("the gslb's audit log: %d records after the restart, %d before", n, gslbAudit)
	}
	// The health path answers maintenance: health checks keep clients away.
	resp, err := http.Get("http://" + c.balListen + "/_ringlb/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("the restarted balancer's health path: %s, want 503 (maintenance)", resp.Status)
	}
	// Undrained, the static edge is back on the ring.
	if code, body := c.call(t, http.MethodPost, "http://"+c.balAdmin+"/api/nodes/static-1/drain?state=off", nil, true); code != http.StatusAccepted {
		t.Fatalf("undrain static-1: %d %s", code, body)
	}
	c.waitBody(t, "http://"+c.balAdmin+"/api/ring", true, func(body string) bool { return strings.Contains(body, "static-1") })
}

// `ringlb keygen -password USER` prints a users-file line for the password
// on standard input, which a config then accepts and which checks the
// password; a short password is refused.
func TestKeygenPassword(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	if err := keygen(strings.NewReader(operatorPassword+"\n"), []string{"-password", "alice"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(t.TempDir(), "users")
	writeFile(t, users, out.String())
	got, err := (configs.Admin{UsersFile: users}).Users()
	if err != nil || len(got["alice"]) == 0 || strings.Contains(out.String(), operatorPassword) {
		t.Fatalf("keygen -password: %q → %v %v", out.String(), got, err)
	}
	if err := keygen(strings.NewReader("short\n"), []string{"-password", "alice"}, io.Discard, io.Discard); err == nil {
		t.Error("a 5-byte password was accepted")
	}
}
