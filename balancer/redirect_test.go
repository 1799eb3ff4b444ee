package balancer

import (
	"bufio"
	"crypto/tls"
	"io"
	"maps"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// startRedirect serves cfg's balancer with its HTTPS data port said to be
// 127.0.0.1:8443 and returns the plain HTTP redirect port's address.
func startRedirect(t *testing.T, tls configs.TLS) (*harness, string) {
	t.Helper()
	return startRedirectWith(t, configs.Balancer{TLS: tls})
}

// startRedirectWith is startRedirect for a whole balancer section (its
// listen address and certificate are set here).
func startRedirectWith(t *testing.T, cfg configs.Balancer) (*harness, string) {
	t.Helper()
	cfg.TLS.CertFile, cfg.TLS.KeyFile, _ = writeTestCert(t)
	cfg.Listen = "127.0.0.1:8443"
	h := newHarness(t, cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go h.bal.ServeRedirect(ln) // ended by the harness's Shutdown
	return h, ln.Addr().String()
}

// redirectCase is one raw request to the redirect port and what it must get.
type redirectCase struct {
	name, request string
	status        int
	location      string // "" for none
}

func checkRedirects(t *testing.T, addr string, cases []redirectCase) {
	t.Helper()
	for _, tt := range cases {
		status, resp := rawRequest(t, addr, tt.request)
		loc := resp.Header.Get("Location")
		if status != tt.status || loc != tt.location {
			t.Errorf("%s: %d %q, want %d %q", tt.name, status, loc, tt.status, tt.location)
		}
	}
}

func get(target, host string) string {
	return "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
}

// The redirect builds its Location from the client's Host. Behind a shared
// cache one poisoned answer is served to everyone, and a Host is anyone's to
// choose: whatever is not a host name or an IP literal (with a port) must
// not become a Location.
func TestRedirectRefusesHostsThatAreNoHost(t *testing.T) {
	_, addr := startRedirect(t, configs.TLS{})
	checkRedirects(t, addr, []redirectCase{
		{"a name", get("/p?q=1", "good.example"), 301, "https://good.example:8443/p?q=1"},
		{"a name and the plain port", get("/p", "good.example:80"), 301, "https://good.example:8443/p"},
		{"an empty port", get("/p", "good.example:"), 301, "https://good.example:8443/p"},
		{"a fully qualified name", get("/p", "good.example."), 301, "https://good.example.:8443/p"},
		{"an IPv4 literal", get("/p", "127.0.0.1:80"), 301, "https://127.0.0.1:8443/p"},
		{"an IPv6 literal", get("/p", "[::1]:80"), 301, "https://[::1]:8443/p"},
		{"absolute form names the host", get("http://good.example/x?y", "other.example"), 301, "https://good.example:8443/x?y"},
		{"userinfo", get("/p", "a@evil.example"), 400, ""},
		{"userinfo in absolute form", get("http://a@evil.example/x", "good.example"), 400, ""},
		{"userinfo after a name", get("/p", "good.example@evil.example"), 400, ""},
		{"markup", get("/p", "<script>"), 400, ""},
		{"a name of 300 bytes", get("/p", strings.Repeat("a", 296)+".com"), 400, ""},
		{"a label of 64 bytes", get("/p", strings.Repeat("a", 64)+".example"), 400, ""},
		{"not ASCII", get("/p", "g\xc3\xb6od.example"), 400, ""},
		{"a port beyond 65535", get("/p", "good.example:99999"), 400, ""},
		{"an IPv6 zone", get("/p", "[fe80::1%25eth0]"), 400, ""},
		{"HTTP/1.0 without Host", "GET /p HTTP/1.0\r\n\r\n", 400, ""},
		{"asterisk form", "OPTIONS * HTTP/1.1\r\nHost: good.example\r\n\r\n", 400, ""},
	})
}

// With balancer.tls.redirect_host the client's Host is not read at all:
// every redirect goes to the configured host, the poisoned ones included,
// and a reload changes it. A Host with userinfo is no request at all (RFC
// 9110 section 4.2.4): the HTTP parser refuses it before any handler.
func TestRedirectToConfiguredHost(t *testing.T) {
	h, addr := startRedirect(t, configs.TLS{RedirectHost: "ide.example.com"})
	checkRedirects(t, addr, []redirectCase{
		{"a name", get("/p?q=1", "good.example"), 301, "https://ide.example.com:8443/p?q=1"},
		{"userinfo", get("/p", "a@evil.example"), 400, ""},
		{"another site", get("/p", "evil.example"), 301, "https://ide.example.com:8443/p"},
		{"markup", get("/p", "<script>"), 301, "https://ide.example.com:8443/p"},
		{"absolute form", get("http://evil.example/x", "good.example"), 301, "https://ide.example.com:8443/x"},
		{"HTTP/1.0 without Host", "GET /p HTTP/1.0\r\n\r\n", 301, "https://ide.example.com:8443/p"},
		{"asterisk form", "OPTIONS * HTTP/1.1\r\nHost: good.example\r\n\r\n", 400, ""},
		{"the health path", get(HealthPath, "evil.example"), 200, ""},
	})
	next := h.bal.current.Load().cfg
	next.TLS.RedirectHost = "[2001:db8::1]:443"
	if err := h.bal.Reload(provision(next)); err != nil {
		t.Fatal(err)
	}
	checkRedirects(t, addr, []redirectCase{
		{"after a reload, a configured port", get("/p", "evil.example"), 301, "https://[2001:db8::1]/p"},
	})
}

// The redirect port's connections take descriptors from the process's
// budget as the data port's do, and balancer.limits.max_connections is
// derived from that budget (two a tunnel). Uncapped, the plain port took
// connections from anyone without limit — each idle one held for up to
// request_timeout, then opened again — until the process ran out of
// descriptors: the data port could accept nothing, edges could not be
// dialed. Both ports now share max_connections, and one client is held to
// max_connections_per_ip on each.
func TestRedirectPortHeldToTheConnectionLimits(t *testing.T) {
	// holdOpen opens n connections to addr, each with a request answered
	// on it (kept alive), and counts the answers by status; the
	// connections stay open until the test ends.
	holdOpen := func(t *testing.T, addr string, n int) map[int]int {
		t.Helper()
		statuses := map[int]int{}
		for range n {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, get("/p", "good.example")); err != nil {
				statuses[0]++
				continue
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				statuses[0]++
				continue
			}
			resp.Body.Close()
			statuses[resp.StatusCode]++
		}
		return statuses
	}
	t.Run("max_connections", func(t *testing.T) {
		h, addr := startRedirectWith(t, configs.Balancer{Limits: configs.Limits{MaxConnections: 16}})
		got := holdOpen(t, addr, 40)
		t.Logf("40 connections to the redirect port, max_connections 16: %v", got)
		if got[301] != 16 || got[503] != 24 {
			t.Errorf("redirect port answered %v, want 16 × 301 and 24 × 503", got)
		}
		// The budget is one: the data port has no room left either. It
		// speaks TLS, so its refusal is a close without a word.
		before := h.metric(t, "ringlb_balancer_rejected_connections_total", map[string]string{"reason": "max_connections"})
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(healthtest.Patience))
		io.WriteString(c, get("/p", "good.example"))
		if got, err := io.ReadAll(c); len(got) != 0 || err != nil {
			t.Errorf("data port with the budget taken on the redirect port: %q, %v; want a close without a word", got, err)
		}
		if after := h.metric(t, "ringlb_balancer_rejected_connections_total", map[string]string{"reason": "max_connections"}); after != before+1 {
			t.Errorf("rejected max_connections went from %v to %v, want one more (the data port's refusal)", before, after)
		}
	})
	t.Run("max_connections_per_ip", func(t *testing.T) {
		_, addr := startRedirectWith(t, configs.Balancer{Limits: configs.Limits{MaxConnectionsPerIP: 4}})
		got := holdOpen(t, addr, 10)
		t.Logf("10 connections from one address to the redirect port, max_connections_per_ip 4: %v", got)
		if got[301] != 4 || got[429] != 6 {
			t.Errorf("redirect port answered %v, want 4 × 301 and 6 × 429", got)
		}
	})
	// Behind PROXY protocol the redirect port reads no header, so the
	// proxies in front (trusted_from) carry every client under their own
	// address and are not held to a client's share. Anyone else reaching
	// the port comes in under an address of its own: uncapped, one such
	// client took the whole max_connections, which the data port shares,
	// and the data port refused everyone (503).
	t.Run("max_connections_per_ip behind PROXY protocol", func(t *testing.T) {
		for _, tt := range []struct {
			name    string
			trusted string
			want    map[int]int
		}{
			{"from a client", "10.0.0.0/8", map[int]int{301: 4, 429: 16}},
			{"from the proxy in front", "127.0.0.0/8", map[int]int{301: 10, 503: 10}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				h, addr := startRedirectWith(t, configs.Balancer{
					ProxyProtocol: configs.ProxyProtocol{Enabled: true, TrustedFrom: []string{tt.trusted}},
					Limits:        configs.Limits{MaxConnections: 10, MaxConnectionsPerIP: 4},
				})
				got := holdOpen(t, addr, 20)
				t.Logf("20 connections from 127.0.0.1 to the redirect port, trusted_from %s, max_connections 10, max_connections_per_ip 4: %v", tt.trusted, got)
				if !maps.Equal(got, tt.want) {
					t.Errorf("redirect port answered %v, want %v", got, tt.want)
				}
				if tt.trusted != "10.0.0.0/8" {
					return
				}
				// The data port still has room for a client.
				c, err := tls.Dial("tcp", h.addr, &tls.Config{InsecureSkipVerify: true})
				if err != nil {
					t.Fatalf("TLS to the data port with a client holding the redirect port: %v", err)
				}
				c.Close()
			})
		}
	})
}

// The redirect reads no body, and fasthttp would read one whole before the
// handler, up to its default 4 MiB, allocating what the head declares at
// once: 32 connections each sending a head that declared 4 MiB and one byte
// held 128 MiB of the balancer's heap for request_timeout. A body beyond a
// small form's is refused at its head (fasthttp's 400).
func TestRedirectPortReadsNoLargeBody(t *testing.T) {
	_, addr := startRedirectWith(t, configs.Balancer{Limits: configs.Limits{RequestTimeout: configs.Duration(2 * time.Second)}})
	heap := func() int64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	before := heap()
	conns := make([]net.Conn, 32)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, "POST /p HTTP/1.1\r\nHost: good.example\r\nContent-Length: 4194304\r\n\r\nx"); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	statuses := map[int]int{}
	var held int64
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(healthtest.Patience))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if i == 0 {
			held = heap() - before // the others still wait for theirs
		}
		if err != nil {
			statuses[0]++
			continue
		}
		resp.Body.Close()
		statuses[resp.StatusCode]++
	}
	t.Logf("32 heads declaring a 4 MiB body to the redirect port: %v; heap +%d KiB at the first answer", statuses, held>>10)
	if statuses[http.StatusBadRequest] != len(conns) {
		t.Errorf("answers %v, want %d × 400", statuses, len(conns))
	}
	// A small form sent to the plain port still gets its redirect.
	checkRedirects(t, addr, []redirectCase{
		{"a small form", "POST /login HTTP/1.1\r\nHost: good.example\r\nContent-Length: 9\r\n\r\nuser=ann&", 301, "https://good.example:8443/login"},
	})
}
