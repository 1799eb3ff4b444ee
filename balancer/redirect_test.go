package balancer

import (
	"net"
	"strings"
	"testing"

	"github.com/ringlb/ringlb/configs"
)

// startRedirect serves cfg's balancer with its HTTPS data port said to be
// 127.0.0.1:8443 and returns the plain HTTP redirect port's address.
func startRedirect(t *testing.T, tls configs.TLS) (*harness, string) {
	t.Helper()
	cert, key, _ := writeTestCert(t)
	tls.CertFile, tls.KeyFile = cert, key
	h := newHarness(t, configs.Balancer{Listen: "127.0.0.1:8443", TLS: tls})
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
