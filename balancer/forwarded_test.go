package balancer

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
)

// What a client sends to make a backend believe another address, scheme or
// host, or one of the cluster's own headers: second lines of the headers the
// balancer writes, their standard and single-address forms, spellings with
// underscores (which CGI-style backends, PHP and Rack read as the dashed
// name), and the X-Ringlb- namespace.
const forgedHeaders = "X-Forwarded-For: 192.0.2.1\r\n" +
	"X-Forwarded-For: 192.0.2.2\r\n" +
	"X-Forwarded-Proto: https\r\n" +
	"x-forwarded-proto: https\r\n" +
	"X-Forwarded-Host: evil.example\r\n" +
	"X-Forwarded-Host: evil.example\r\n" +
	"X_Forwarded_For: 192.0.2.3\r\n" +
	"X-Forwarded-Port: 443\r\n" +
	"X-Forwarded-Prefix: /evil\r\n" +
	"Forwarded: for=192.0.2.4;proto=https;host=evil.example\r\n" +
	"X-Real-IP: 192.0.2.5\r\n" +
	"X-Ringlb-Skip: edge-2\r\n" +
	"X-Ringlb-Peer: edge-2 1 mac edge-1\r\n" +
	"X-Ringlb-Claim-By: edge-2\r\n" +
	"X-Ringlb-Admin: 1\r\n" +
	"X-Ringlb-On-Behalf: user:admin\r\n" +
	"X-Ringlb-Owner: edge-2\r\n" +
	"x_ringlb_skip: edge-3\r\n"

// A backend trusts the balancer for who the client is: X-Forwarded-For ends
// with the peer address, X-Forwarded-Proto and -Host are the balancer's, no
// other header says otherwise, and nothing of the cluster's X-Ringlb-
// namespace comes from a client. Plain requests and WebSocket upgrades alike.
func TestClientCannotForgeForwardedHeaders(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	backend := startRawBackend(t)
	h.ring.Update([]ring.Member{{Name: "raw", URL: backend.url, Weight: 1}})

	for _, tt := range []struct {
		name, head string
		status     int
	}{
		{"plain", "GET /whoami HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n", 200},
		{"plain naming X-Forwarded-Proto in Connection", "GET /whoami HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\nConnection: keep-alive, X-Forwarded-Proto\r\n", 200},
		{"upgrade", wsHead, 101},
	} {
		t.Run(tt.name, func(t *testing.T) {
			statuses := exchange(t, h.addr, tt.head+forgedHeaders+"\r\n", 1, false)
			reqs := backend.settle(t, h.bal)
			if len(statuses) != 1 || statuses[0] != tt.status || len(reqs) != 1 {
				t.Fatalf("answers %v, backend parsed %d requests; want %d and one request", statuses, len(reqs), tt.status)
			}
			got := reqs[0].header
			if xff := got.Values("X-Forwarded-For"); len(xff) != 1 || !strings.HasSuffix(xff[0], ", 127.0.0.1") {
				t.Errorf("X-Forwarded-For lines %q, want one ending with the peer address", xff)
			}
			if p := got.Values("X-Forwarded-Proto"); !slices.Equal(p, []string{"http"}) {
				t.Errorf("X-Forwarded-Proto lines %q, want only the balancer's http", p)
			}
			if host := got.Values("X-Forwarded-Host"); !slices.Equal(host, []string{"bal"}) {
				t.Errorf("X-Forwarded-Host lines %q, want only the request's host", host)
			}
			if k := got.Values("Ctstickiness"); !slices.Equal(k, []string{"k"}) {
				t.Errorf("ctstickiness lines %q, want the key routed with", k)
			}
			for name, values := range got {
				n := strings.ReplaceAll(strings.ToLower(name), "_", "-")
				switch {
				case n == "forwarded", n == "x-real-ip", n == "x-forwarded-port", n == "x-forwarded-prefix",
					strings.HasPrefix(n, "x-ringlb-"), strings.HasPrefix(n, "x-forwarded-") && name != http.CanonicalHeaderKey(n):
					t.Errorf("the client's %s: %q reached the backend", name, values)
				}
			}
		})
	}
}
