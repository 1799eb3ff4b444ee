package balancer

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/operator"
	"github.com/ringlb/ringlb/health/operator/operatortest"
)

// balancerChanges are the balancer admin port's state-changing endpoints
// (ServeAdmin, handleDashboard, operator.Node.Mount).
var balancerChanges = [][2]string{
	{http.MethodPost, "/api/maintenance?state=on"},
	{http.MethodPost, "/api/nodes/edge-1/drain"},
	{http.MethodPost, "/api/nodes/edge-1/undrain"},
	{http.MethodPost, "/api/gslb/pools/ide.ringlb.test./east/bal-1/mode?mode=remove"},
	{http.MethodPost, operator.PathLogout},
	{http.MethodPost, "/api/config/check"},
	{http.MethodPut, "/api/config"},
}

// balancerReads are its endpoints that answer data.
var balancerReads = []string{
	"/metrics", "/api/ring", "/api/lookup?key=k", "/api/nodes", "/api/maintenance", "/api/cluster",
	"/api/history", "/api/audit", "/api/whoami", "/api/config",
}

// Every state-changing endpoint of the balancer's admin port, sent every
// request a web page can make an operator's browser send — cross-site
// simple requests to the port's loopback address, and a DNS-rebinding
// page's same-origin requests by the attacker's name — on a port without a
// token, with one, and with a logged-in user whose cookie goes along: none
// gets through, nothing changes, nothing is audited. The operator's own
// request then does, which shows the credential was good.
func TestAdminRefusesBrowserAttacks(t *testing.T) {
	for _, setup := range operatortest.Setups() {
		t.Run(setup.Name, func(t *testing.T) {
			h := newHarness(t, configs.Balancer{Admin: setup.Admin(t)})
			browser := setup.Browser(t, h.admin)
			before := len(h.bal.op.Audit.List(1000))
			through, sent := operatortest.AttackAll(t, h.admin, balancerChanges, balancerReads, browser)
			t.Logf("%d of %d browser attacks got through", through, sent)
			if h.bal.maintenance.Load() {
				t.Error("maintenance mode switched on")
			}
			if after := h.bal.op.Audit.List(1000); len(after) != before {
				t.Errorf("audit records %d → %d: a change went through: %+v", before, len(after), after[0])
			}
			legit := setup.Operator(h.admin, http.MethodPost, "/api/maintenance?state=on")
			if resp, body := operatortest.Send(t, h.admin, legit, browser); resp.StatusCode != http.StatusOK || !h.bal.maintenance.Load() {
				t.Errorf("the operator's change: %d %s, maintenance %v", resp.StatusCode, body, h.bal.maintenance.Load())
			}
		})
	}
}

// What another origin could read of the admin port: no answer carries a
// CORS header (a preflight included, so no page may send the admin header
// or a token), none wraps JSON in a caller's function (JSONP), the
// dashboard and the login page may not be framed, and no page the port
// serves without credentials holds the admin token.
func TestAdminGivesOtherOriginsNothing(t *testing.T) {
	h := newHarness(t, configs.Balancer{Admin: operatortest.Setups()[1].Admin(t)}) // the token
	bearer := map[string]string{"Authorization": "Bearer " + operatortest.Token}
	for _, ep := range balancerChanges {
		resp, _ := operatortest.Send(t, h.admin, operatortest.Preflight(ep[1], ep[0]), nil)
		if cors := operatortest.CORS(resp.Header); cors != "" || resp.StatusCode < 400 {
			t.Errorf("preflight for %s %s: %d %s, want refused without CORS headers", ep[0], ep[1], resp.StatusCode, cors)
		}
	}
	for _, path := range balancerReads {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		r := operatortest.Request{Name: "a cross-origin read", Method: http.MethodGet, Path: path + sep + "callback=steal&jsonp=steal", Credentialed: true,
			Header: map[string]string{"Origin": "http://" + operatortest.Attacker, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}}
		resp, body := operatortest.Send(t, h.admin, r, bearer)
		if cors := operatortest.CORS(resp.Header); cors != "" {
			t.Errorf("GET %s: %s", path, cors)
		}
		if strings.HasPrefix(strings.TrimSpace(string(body)), "steal") {
			t.Errorf("GET %s wraps its answer in the caller's function: %.60s", path, body)
		}
		if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/json") && resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: JSON without X-Content-Type-Options: nosniff", path)
		}
	}
	for _, path := range []string{"/", "/dashboard/app.js", "/dashboard/style.css", operator.PathLogin} {
		resp, body := operatortest.Send(t, h.admin, operatortest.Request{Name: "open page", Method: http.MethodGet, Path: path}, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
		}
		if strings.Contains(string(body), operatortest.Token) {
			t.Errorf("GET %s, open to anyone, holds the admin token", path)
		}
		if resp.Header.Get("X-Frame-Options") != "DENY" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
			t.Errorf("GET %s may be framed: X-Frame-Options %q, CSP %q", path, resp.Header.Get("X-Frame-Options"), resp.Header.Get("Content-Security-Policy"))
		}
	}
	// The page keeps the token in the tab (sessionStorage), sends it only as
	// a header, and only to its own origin (relative URLs).
	_, app := operatortest.Send(t, h.admin, operatortest.Request{Name: "app.js", Method: http.MethodGet, Path: "/dashboard/app.js"}, nil)
	for _, leak := range []string{"localStorage", "document.cookie", "postMessage", "?token=", "&token="} {
		if strings.Contains(string(app), leak) {
			t.Errorf("the dashboard's script uses %s: the token could leave the tab or reach another origin", leak)
		}
	}
	var whoami map[string]any
	resp, body := operatortest.Send(t, h.admin, operatortest.Request{Name: "whoami", Method: http.MethodGet, Path: "/api/whoami", Credentialed: true}, bearer)
	if err := json.Unmarshal(body, &whoami); err != nil || resp.StatusCode != http.StatusOK || strings.Contains(string(body), operatortest.Token) {
		t.Errorf("GET /api/whoami with the token: %d %s %v", resp.StatusCode, body, err)
	}
}

// Cookies go by host, not port (RFC 6265, 8.5): an operator logged in to
// an admin port sends its session cookie to every port of that host, the
// data port included — the demo's dashboard and pad are both 127.0.0.1 —
// and the balancer forwarded it to whichever backend the key routes to, a
// third-party static edge included, where it is a login to the admin port
// for 12 hours. The cookie is the admin port's alone: no backend may get
// it, plain request or upgrade, whatever else the Cookie lines carry.
func TestAdminSessionCookieNeverReachesABackend(t *testing.T) {
	setup := operatortest.Setups()[2] // a logged-in user
	h := newHarness(t, configs.Balancer{Admin: setup.Admin(t)})
	session := setup.Browser(t, h.admin)["Cookie"]
	backend := startRawBackend(t)
	h.ring.Update([]ring.Member{{Name: "raw", URL: backend.url, Weight: 1}})
	// A login over TLS names its cookie __Host-ringlb_admin: as much a
	// login to the admin port.
	hostSession := operator.SessionHostCookie + "=" + session[len(operator.SessionCookie)+1:] + "-host"
	cookies := "Cookie: theme=dark; " + session + "; ctstickiness=k\r\nCookie: " + session + "; " + hostSession + "; lang=en\r\n"
	for _, tt := range []struct {
		name, head string
		status     int
	}{
		{"plain", "GET /whoami HTTP/1.1\r\nHost: 127.0.0.1\r\n", 200},
		{"upgrade", wsHead, 101},
	} {
		t.Run(tt.name, func(t *testing.T) {
			statuses := exchange(t, h.addr, tt.head+cookies+"\r\n", 1, false)
			reqs := backend.settle(t, h.bal)
			if len(statuses) != 1 || statuses[0] != tt.status || len(reqs) != 1 {
				t.Fatalf("answers %v, backend parsed %d requests; want %d and one request", statuses, len(reqs), tt.status)
			}
			got := strings.Join(reqs[0].header.Values("Cookie"), "; ")
			if strings.Contains(got, session[len(operator.SessionCookie)+1:]) || strings.Contains(got, operator.SessionHostCookie) {
				t.Errorf("the backend got the admin session: Cookie %q", got)
			}
			for _, kept := range []string{"theme=dark", "ctstickiness=k", "lang=en"} {
				if !strings.Contains(got, kept) {
					t.Errorf("the backend's Cookie %q lacks %s", got, kept)
				}
			}
		})
	}
}

// adminCookieLines are a backend's Set-Cookie lines for the admin ports'
// login cookie (each value marked "planted"), in the forms a browser reads
// as that cookie: any case of the header name, space before the colon or
// around the cookie name, another path (sent before the Path=/ one to the
// admin port's paths), no value at all (a nameless cookie, sent as
// "ringlb_admin", which a server reads as that name with no value).
var adminCookieLines = []string{
	"Set-Cookie: ringlb_admin=planted-plain; Path=/; HttpOnly",
	"set-cookie:  ringlb_admin =planted-spaced; Path=/api",
	"SET-COOKIE : ringlb_admin=planted-colon",
	"Set-Cookie: ringlb_admin; Path=/api/planted-nameless",
	"Set-Cookie: __Host-ringlb_admin=planted-host; Path=/; Secure; HttpOnly",
}

// keptCookieLines are Set-Cookie lines of other cookies, which reach the
// client (cookie names are case-sensitive: RINGLB_ADMIN is another one).
var keptCookieLines = []string{"Set-Cookie: theme=dark; Path=/", "Set-Cookie: RINGLB_ADMIN=other", "Set-Cookie: lang=en"}

// Cookies go by host, not port: a backend behind the balancer (a
// third-party static edge) that answers Set-Cookie: ringlb_admin=...
// through the data port sets the operator's admin login cookie for that
// host name — logging the operator out, or logging their browser in to the
// admin port as a session of the backend's choosing (login CSRF). No answer
// the balancer relays carries a Set-Cookie for that name: a plain answer,
// a non-101 answer to an upgrade, a 101 (otherwise passed byte for byte:
// there folded, bare-LF and bare-CR lines too). Every other Set-Cookie line
// reaches the client, and so does the balancer's assigned key.
func TestBackendCannotSetTheAdminCookie(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	cookies := strings.Join(append(append([]string{}, keptCookieLines[:1]...), append(adminCookieLines, keptCookieLines[1:]...)...), "\r\n") + "\r\n"
	// Forms only the raw 101 head can carry (fasthttp re-frames the other
	// answers: it joins folds, ends lines at a bare LF, refuses a bare CR).
	obsolete := "Set-Cookie:\r\n ringlb_admin=planted-folded\r\n" +
		"Set-Cookie: fold=kept\r\n\tringlb_admin=not-a-cookie-of-its-own\r\n" +
		"X-A: 1\nSet-Cookie: ringlb_admin=planted-lf\r\n" +
		"X-B: 2\rSet-Cookie: ringlb_admin=after-a-bare-cr\r\n"
	for _, tt := range []struct {
		name, request, answer string
		status                int
	}{
		{"plain", "GET /page HTTP/1.1\r\nHost: bal\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n" + cookies + "\r\nok\n", 200},
		{"upgrade refused", wsHead, "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 3\r\n" + cookies + "\r\nno\n", 426},
		{"upgrade", wsHead, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + wsSampleAccept + "\r\n" + cookies + obsolete + "\r\nfrom the edge", 101},
	} {
		for _, assigned := range []bool{false, true} {
			request := tt.request
			if assigned {
				request = strings.Replace(request, "ctstickiness: k\r\n", "", 1)
			} else if !strings.Contains(request, "ctstickiness") {
				request += "ctstickiness: k\r\n"
			}
			t.Run(fmt.Sprintf("%s/assigned=%v", tt.name, assigned), func(t *testing.T) {
				url := scriptedBackend(t, func(c net.Conn, br *bufio.Reader) {
					_, _ = io.WriteString(c, tt.answer)
					_, _ = io.Copy(io.Discard, br)
				})
				h.ring.Update([]ring.Member{{Name: "cookie-setter", URL: url, Weight: 1}})
				c, err := net.Dial("tcp", h.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				if _, err := io.WriteString(c, request+"\r\n"); err != nil {
					t.Fatal(err)
				}
				// The head as the browser gets it, byte for byte.
				br := bufio.NewReader(c)
				var head strings.Builder
				for !strings.HasSuffix(head.String(), "\r\n\r\n") {
					line, err := br.ReadString('\n')
					if err != nil {
						t.Fatalf("head %q: %v", head.String(), err)
					}
					head.WriteString(line)
				}
				got := head.String()
				if !strings.HasPrefix(got, fmt.Sprintf("HTTP/1.1 %d ", tt.status)) {
					t.Fatalf("answer %q, want %d", got, tt.status)
				}
				if n := strings.Count(got, "planted"); n > 0 {
					t.Errorf("%d Set-Cookie lines for %s reached the client:\n%s", n, operator.SessionCookie, got)
				}
				for _, kept := range []string{"theme=dark", "RINGLB_ADMIN=other", "lang=en"} {
					if !strings.Contains(got, kept) {
						t.Errorf("the backend's cookie %s was dropped:\n%s", kept, got)
					}
				}
				if assigned != strings.Contains(got, "Set-Cookie: ctstickiness=") {
					t.Errorf("assigned key %v, head:\n%s", assigned, got)
				}
				if tt.status == 101 {
					// What is left of the obsolete forms is no line of its
					// own for any client: no bare CR, no obs-fold.
					for i := range len(got) - 1 {
						if got[i] == '\r' && got[i+1] != '\n' || got[i] == '\n' && (got[i+1] == ' ' || got[i+1] == '\t') {
							t.Errorf("a bare CR or an obs-fold reached the client at %d: %q", i, got[max(i-20, 0):min(i+40, len(got))])
						}
					}
					if !strings.Contains(got, "fold=kept") {
						t.Errorf("the folded cookie fold=kept was dropped:\n%s", got)
					}
					rest := make([]byte, len("from the edge"))
					if _, err := io.ReadFull(br, rest); err != nil || string(rest) != "from the edge" {
						t.Errorf("after the 101: %q %v, want the edge's bytes", rest, err)
					}
				}
			})
		}
	}
}
