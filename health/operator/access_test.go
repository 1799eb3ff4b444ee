package operator

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// adminServer serves Access around a read and a write endpoint on a
// real loopback listener, as the node self, and counts the writes that got
// through.
func adminServer(t *testing.T, self, token string, kr *health.Keyring) (addr string, writes *atomic.Int32) {
	t.Helper()
	n := new(atomic.Int32)
	access := Access{
		Token:   func() []byte { return []byte(token) },
		Keyring: func() *health.Keyring { return kr },
		Self:    self,
	}
	mux := http.NewServeMux()
	mux.Handle("GET /api/sessions", access.Read(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, Caller(r.Context()))
	})))
	mux.Handle("POST /api/drain", access.Write(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		io.WriteString(w, Caller(r.Context()))
	})))
	ln := serveMux(t, mux)
	return ln.Addr().String(), n
}

// The attacks on an admin port: a web page's cross-origin POST (text/plain,
// no preflight), a DNS-rebinding page addressing the port by its own name,
// a peer credential used to change something, a wrong token.
func TestAdminAccess(t *testing.T) {
	kr := healthtest.New(t).Join("keyring", health.Meta{Role: health.RoleBalancer, State: health.StateAlive}).Keyring()
	const token = "operator-token-0123456789"
	open, openWrites := adminServer(t, "edge-1", "", kr)
	guarded, guardedWrites := adminServer(t, "edge-1", token, kr)

	type req struct {
		name, addr, method, path string
		header                   map[string]string
		host                     string
		peer                     bool
		want                     int
		caller                   string
	}
	tests := []req{
		// No token configured (loopback admin).
		{"csrf: a page's text/plain POST", open, "POST", "/api/drain", map[string]string{"Content-Type": "text/plain", "Origin": "http://evil.example"}, "", false, 403, ""},
		{"csrf: a form POST without the admin header", open, "POST", "/api/drain", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, "", false, 403, ""},
		{"csrf: the admin header from another origin", open, "POST", "/api/drain", map[string]string{configs.HeaderAdmin: "1", "Origin": "http://evil.example"}, "", false, 403, ""},
		{"csrf: cross-site fetch metadata", open, "POST", "/api/drain", map[string]string{configs.HeaderAdmin: "1", "Sec-Fetch-Site": "cross-site"}, "", false, 403, ""},
		{"rebinding: addressed by a foreign name", open, "POST", "/api/drain", map[string]string{configs.HeaderAdmin: "1"}, "evil.example:9101", false, 403, ""},
		{"rebinding: reads too", open, "GET", "/api/sessions", nil, "evil.example:9101", false, 403, ""},
		{"an admin client", open, "POST", "/api/drain", map[string]string{configs.HeaderAdmin: "1"}, "", false, 200, "loopback"},
		{"the dashboard itself", open, "POST", "/api/drain", map[string]string{configs.HeaderAdmin: "1", "Origin": "http://" + open}, "", false, 200, "loopback"},
		{"localhost by name", open, "GET", "/api/sessions", nil, "localhost:9101", false, 200, "loopback"},
		// Token configured.
		{"no token", guarded, "GET", "/api/sessions", nil, "", false, 401, ""},
		{"wrong token", guarded, "POST", "/api/drain", map[string]string{"Authorization": "Bearer nope", configs.HeaderAdmin: "1"}, "", false, 401, ""},
		{"the admin header is no token", guarded, "POST", "/api/drain", map[string]string{configs.HeaderAdmin: "1"}, "", false, 401, ""},
		{"token", guarded, "POST", "/api/drain", map[string]string{"Authorization": "Bearer " + token}, "", false, 200, "token"},
		{"token from another origin", guarded, "POST", "/api/drain", map[string]string{"Authorization": "Bearer " + token, "Origin": "https://evil.example"}, "", false, 403, ""},
		{"a peer reads", guarded, "GET", "/api/sessions", nil, "", true, 200, "peer:bal-1"},
		{"a peer may not drain", guarded, "POST", "/api/drain", map[string]string{configs.HeaderAdmin: "1"}, "", true, 401, ""},
		{"a forged peer", guarded, "GET", "/api/sessions", map[string]string{configs.HeaderPeer: "bal-1 1 AAAA"}, "", false, 401, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest(tt.method, "http://"+tt.addr+tt.path, strings.NewReader(""))
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			if tt.host != "" {
				r.Host = tt.host
			}
			if tt.peer {
				kr.SignRequest(r.Header, "bal-1", "edge-1", tt.method, tt.path, nil)
			}
			resp, body := send(t, r)
			if resp.StatusCode != tt.want || (tt.want == 200 && string(body) != tt.caller) {
				t.Errorf("%d %q, want %d %q", resp.StatusCode, body, tt.want, tt.caller)
			}
			if tt.want != 200 && strings.Contains(string(body), "evil") {
				t.Errorf("refusal echoes the request: %s", body)
			}
		})
	}
	if openWrites.Load() != 2 || guardedWrites.Load() != 1 {
		t.Errorf("writes that got through: %d and %d, want 2 and 1 (only the legitimate ones)", openWrites.Load(), guardedWrites.Load())
	}
}

// A peer's signed read, captured on its way to one node, replayed to
// another node of the same cluster inside the signature's time window.
func TestPeerReadReplayedToAnotherNode(t *testing.T) {
	kr := healthtest.New(t).Join("keyring", health.Meta{Role: health.RoleBalancer, State: health.StateAlive}).Keyring()
	const token = "operator-token-0123456789"
	meant, _ := adminServer(t, "edge-1", token, kr)
	other, _ := adminServer(t, "edge-2", token, kr)
	captured := http.Header{}
	kr.SignRequest(captured, "bal-1", "edge-1", http.MethodGet, "/api/sessions", nil)
	get := func(addr string) int {
		r, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/api/sessions", nil)
		r.Header = captured.Clone()
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(meant); code != http.StatusOK {
		t.Fatalf("the node the read was signed for: %d, want 200", code)
	}
	if code := get(other); code != http.StatusUnauthorized {
		t.Errorf("the same signed read replayed to another node: %d, want 401", code)
	}
}

// The Host a request names its admin port by, read by configs.SplitHost's
// one rule: loopback for the operator's own machine, any IP address or a
// configured name for a login (never a name a page could rebind).
func TestRequestHost(t *testing.T) {
	names := []string{"admin.example"}
	for _, tt := range []struct {
		host                string
		loopback, addressed bool
	}{
		{"127.0.0.1:9101", true, true},
		{"127.8.0.1", true, true},
		{"[::1]:9101", true, true},
		{"[::ffff:127.0.0.1]", true, true},
		{"localhost:9101", true, true},
		{"LocalHost", true, true},
		{"localhost.", false, false}, // a name the resolver is asked for
		{"192.0.2.7:9101", false, true},
		{"[2001:db8::7]", false, true},
		{"Admin.Example.:9101", false, true},
		{"evil.example:9101", false, false},
		{"a@127.0.0.1", false, false},
		{"127.0.0.1@evil.example", false, false},
		{"::1", false, false}, // an IPv6 address must be in brackets
		{"[fe80::1%25eth0]", false, false},
		{"127.0.0.1:0", false, false},
		{"", false, true}, // HTTP/1.0: names nothing a page could rebind
	} {
		if got := loopbackHost(tt.host); got != tt.loopback {
			t.Errorf("loopbackHost(%q) = %v, want %v", tt.host, got, tt.loopback)
		}
		if got := addressedAs(tt.host, names); got != tt.addressed {
			t.Errorf("addressedAs(%q) = %v, want %v", tt.host, got, tt.addressed)
		}
	}
}

// The bearer token stands for the CSRF proof only when it is the token: a
// wrong one beside a valid session cookie let a change through without
// X-Ringlb-Admin, as if the token had authenticated it.
func TestWrongBearerNeedsTheAdminHeader(t *testing.T) {
	n := newTestNode(t, configs.Admin{UsersFile: usersFile(t)})
	base := loginServer(t, n, "the operator's token")
	c := noRedirects()
	if resp := postLogin(t, c, base, "alice", testPassword, map[string]string{"Origin": base}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %s", resp.Status)
	}
	change := func(bearer string) int {
		req, _ := http.NewRequest(http.MethodPost, base+"/api/drain", nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	code := change("wrong")
	t.Logf("change with the session cookie and a wrong bearer token, no %s: %d", configs.HeaderAdmin, code)
	if code != http.StatusForbidden {
		t.Errorf("change with the session cookie and a wrong bearer token, no %s: %d, want 403", configs.HeaderAdmin, code)
	}
	if code := change("the operator's token"); code != http.StatusAccepted {
		t.Errorf("change with the right bearer token: %d, want 202", code)
	}
	for _, rec := range n.Audit.List(10) {
		if rec.Action == "drain" && rec.Who != CallerToken {
			t.Errorf("a change went through without the header or the token: %+v", rec)
		}
	}
}
