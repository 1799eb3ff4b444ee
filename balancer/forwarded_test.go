package balancer

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/valyala/fasthttp"

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

// A chunked body ends with a trailer section, which the balancer's server
// parses after the head went on, and which HostClient wrote to the edge
// after the last chunk: the fields the balancer drops from the head reached
// the backend there (all but X-Forwarded-* and X-Real-IP, which fasthttp
// refuses in a trailer), with a ctstickiness of the client's. fasthttp — the
// edge's server, any fasthttp app — reads a trailer field as a header when
// the head has none of that name (Peek), so such a backend read the
// client's Forwarded and X-Ringlb- fields as the balancer's word. The
// backend here is such an app: it gets the body whole and no trailer field,
// as through nginx, which drops them too.
func TestClientTrailerNeverReachesABackend(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	type seen struct {
		body                       string
		trailers                   []string
		forwarded, skip, peer, key string
	}
	got := make(chan seen, 1)
	srv := &fasthttp.Server{Logger: quietLog{}, Handler: func(ctx *fasthttp.RequestCtx) {
		hd := &ctx.Request.Header
		var s seen
		s.body = string(ctx.Request.Body())
		for _, k := range hd.PeekTrailerKeys() {
			s.trailers = append(s.trailers, string(k))
		}
		s.forwarded, s.skip, s.peer, s.key = string(hd.Peek("Forwarded")), string(hd.Peek("X-Ringlb-Skip")), string(hd.Peek("X-Ringlb-Peer")), string(hd.Peek("Ctstickiness"))
		got <- s
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	h.ring.Update([]ring.Member{{Name: "app", URL: "http://" + ln.Addr().String(), Weight: 1}})

	trailer := "Forwarded: for=192.0.2.4;proto=https\r\nX_Real_IP: 192.0.2.5\r\nX-Ringlb-Skip: edge-2\r\n" +
		"X-Ringlb-Peer: edge-2 1 mac app\r\nx_ringlb_owner: edge-2\r\nCtstickiness: forged\r\n"
	payload := postHead + "Transfer-Encoding: chunked\r\n\r\n" + chunk("{}") + "0\r\n" + trailer + "\r\n"
	if statuses := exchange(t, h.addr, payload, 1, false); len(statuses) != 1 || statuses[0] != http.StatusOK {
		t.Fatalf("answers %v, want [200]", statuses)
	}
	s := <-got
	if s.body != "{}" {
		t.Errorf("the backend got the body %q, want {}", s.body)
	}
	if len(s.trailers) > 0 {
		t.Errorf("the client's trailer fields %q reached the backend", s.trailers)
	}
	if s.forwarded != "" || s.skip != "" || s.peer != "" || s.key != "k" {
		t.Errorf("the backend read Forwarded %q, X-Ringlb-Skip %q, X-Ringlb-Peer %q and ctstickiness %q; want none but the routed key k",
			s.forwarded, s.skip, s.peer, s.key)
	}
}

// A proxy adds nothing of its own to what it relays but the headers it is
// there to add: through HAProxy and nginx a request without User-Agent
// reaches the backend without one, and an answer without Content-Type
// reaches the client without one. Through the balancer, HostClient named
// itself (User-Agent: ringlb-balancer) in every such request — a backend's
// logs and bot rules took its clients for the balancer — and fasthttp's
// server typed every such answer text/plain, which a browser then shows as
// text, or, with nosniff, refuses to run as a script or a style, where it
// sniffed the backend's untyped answer.
func TestRelayedMessagesGetNoHeaderOfTheBalancers(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	backend := startRawBackend(t) // answers 200 "ok\n" with no Content-Type
	h.ring.Update([]ring.Member{{Name: "raw", URL: backend.url, Weight: 1}})

	for _, tt := range []struct{ name, head string }{
		{"plain", "GET /whoami HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n\r\n"},
		{"upgrade the backend refuses", upgradeHead + "\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, tt.head); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
				t.Fatalf("answer %d %q, want the backend's 200 ok", resp.StatusCode, body)
			}
			if ct, ok := resp.Header["Content-Type"]; ok {
				t.Errorf("the client got Content-Type %q, which the backend did not send", ct)
			}
			reqs := backend.settle(t, h.bal)
			if len(reqs) != 1 {
				t.Fatalf("the backend parsed %d requests, want 1", len(reqs))
			}
			if ua, ok := reqs[0].header["User-Agent"]; ok {
				t.Errorf("the backend got User-Agent %q, which the client did not send", ua)
			}
		})
	}
}

// A backend that answers a plain request with 101 has switched its
// connection to another protocol: what it writes next is not an answer to a
// request the balancer sends on that connection. (The balancer never asks a
// plain request to switch: it strips Upgrade and Connection.) The backend
// here answers whatever it reads after its 101 with a planted HTTP
// response, as the switched protocol's peer could; the next client, with
// another key and its own connection, must get the backend's answer to its
// own request, over a connection that never switched.
func TestUnrequestedSwitchNotReused(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	var (
		mu     sync.Mutex
		reused int // requests sent on a switched connection
	)
	url := serveConns(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.URL.Path != "/switch" {
				if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nyour page\n"); err != nil {
					return
				}
				continue
			}
			if _, err := io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: other\r\n\r\n"); err != nil {
				return
			}
			if _, err := br.ReadByte(); err != nil {
				return // the balancer closed it: not reused
			}
			mu.Lock()
			reused++
			mu.Unlock()
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nplanted!\n")
			return
		}
	})
	h.ring.Update([]ring.Member{{Name: "switching", URL: url, Weight: 1}})

	statuses := exchange(t, h.addr, "GET /switch HTTP/1.1\r\nHost: bal\r\nctstickiness: attacker\r\n\r\n", 1, false)
	if len(statuses) != 1 || statuses[0] != http.StatusBadGateway {
		t.Errorf("a 101 to a plain request answered %v, want 502", statuses)
	}
	for i := range 3 {
		resp, body := h.get(t, "/page", http.Header{"Ctstickiness": {"victim"}})
		if resp.StatusCode != http.StatusOK || string(body) != "your page\n" {
			t.Errorf("request %d after the switch: %d %q, want 200 and the backend's answer to it", i, resp.StatusCode, body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if reused != 0 {
		t.Errorf("%d requests went down the switched connection", reused)
	}
}

// A header the client names in Connection is hop-by-hop: a proxy behind the
// balancer (Go's httputil.ReverseProxy, Apache, Envoy in front of an app)
// deletes it. On an upgrade the client's Connection went to the edge as it
// was, so "Connection: Upgrade, ctstickiness, X-Forwarded-For" made such a
// proxy drop the key the balancer routed with (the app then read the
// client's other key from its cookie: one session on two backends) and the
// client's address. The edge must get "Connection: Upgrade" and nothing the
// client named but Upgrade.
func TestUpgradeConnectionNamesNoHeaders(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	backend := startRawBackend(t)
	h.ring.Update([]ring.Member{{Name: "raw", URL: backend.url, Weight: 1}})
	// Through a hop-by-hop-honouring proxy, as a backend may sit.
	u, err := url.Parse(backend.url)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(httputil.NewSingleHostReverseProxy(u))
	t.Cleanup(proxy.Close)

	head := "GET /ws HTTP/1.1\r\nHost: bal\r\nctstickiness: routed\r\nCookie: ctstickiness=other\r\n" +
		"Connection: Upgrade, ctstickiness, X-Forwarded-For, X-Forwarded-Proto, Cookie\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	// The proxy appends the balancer's address to the balancer's line:
	// the client's (the balancer's peer) must still be there before it.
	for _, via := range []struct{ name, url, xff string }{
		{"direct", backend.url, "127.0.0.1"},
		{"through a proxy", proxy.URL, "127.0.0.1, 127.0.0.1"},
	} {
		t.Run(via.name, func(t *testing.T) {
			h.ring.Update([]ring.Member{{Name: "raw", URL: via.url, Weight: 1}})
			if got := exchange(t, h.addr, head, 1, false); len(got) != 1 || got[0] != http.StatusSwitchingProtocols {
				t.Fatalf("answers %v, want [101]", got)
			}
			reqs := backend.settle(t, h.bal)
			if len(reqs) != 1 {
				t.Fatalf("the backend parsed %d requests, want 1: %+v", len(reqs), reqs)
			}
			got := reqs[0].header
			if c := got.Values("Connection"); len(c) != 1 || !strings.EqualFold(c[0], "Upgrade") {
				t.Errorf("Connection %q, want Upgrade alone", c)
			}
			if k := got.Values("Ctstickiness"); len(k) != 1 || k[0] != "routed" {
				t.Errorf("ctstickiness %q, want the routed key", k)
			}
			if xff := got.Get("X-Forwarded-For"); xff != via.xff {
				t.Errorf("X-Forwarded-For %q, want %q", xff, via.xff)
			}
			if p := got.Get("X-Forwarded-Proto"); p != "http" {
				t.Errorf("X-Forwarded-Proto %q, want http", p)
			}
		})
	}
}

// A request target in absolute form names the host (RFC 9112, 3.2.2): a
// proxy ignores the Host header then, and forwards a Host made from the
// target. Plain requests went on so (HostClient writes the origin form and
// the target's host), but an upgrade went to the edge as the client wrote
// it — "GET http://evil.example/ws" with "Host: bal", and the balancer's
// own X-Forwarded-Host saying evil.example — so a backend that reads Host
// and one that reads the target (or the balancer's header) each took the
// request for another site's. The edge gets the origin form and the
// target's host now, as on a plain request.
func TestAbsoluteFormUpgradeForwardedAsItsHost(t *testing.T) {
	heads := make(chan string, 1)
	done := make(chan struct{}) // a head nobody takes does not hold serveConns's cleanup
	url := serveConns(t, func(c net.Conn, br *bufio.Reader) {
		var head strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
		}
		select {
		case heads <- head.String():
		case <-done:
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+wsSampleAccept+"\r\n\r\n")
		_, _ = io.Copy(io.Discard, br)
	})
	t.Cleanup(func() { close(done) }) // before serveConns's
	h := newHarness(t, configs.Balancer{})
	h.ring.Update([]ring.Member{{Name: "raw", URL: url, Weight: 1}})
	// A target that is neither a path nor a URL names nothing to upgrade.
	for _, target := range []string{"*", "evil.example:443"} {
		if got := exchange(t, h.addr, wsUpgrade(target), 1, true); fmt.Sprint(got) != "[400]" {
			t.Errorf("an upgrade of %q: %v, want [400]", target, got)
		}
	}
	for _, scheme := range []string{"http", "ws"} {
		t.Run(scheme, func(t *testing.T) {
			if got := exchange(t, h.addr, wsUpgrade(scheme+"://evil.example/ws?x=1"), 1, false); len(got) != 1 || got[0] != http.StatusSwitchingProtocols {
				t.Fatalf("answers %v, want [101]", got)
			}
			checkOriginForm(t, <-heads)
		})
	}
}

// checkOriginForm checks the head an edge got for an upgrade of
// "SCHEME://evil.example/ws?x=1" with "Host: bal".
func checkOriginForm(t *testing.T, head string) {
	t.Helper()
	requestLine, _, _ := strings.Cut(head, "\r\n")
	var hosts, forwardedHosts []string
	for _, line := range strings.Split(head, "\r\n") {
		name, value, _ := strings.Cut(line, ":")
		switch strings.ToLower(name) {
		case "host":
			hosts = append(hosts, strings.TrimSpace(value))
		case "x-forwarded-host":
			forwardedHosts = append(forwardedHosts, strings.TrimSpace(value))
		}
	}
	t.Logf("the edge got %q, Host %q, X-Forwarded-Host %q", requestLine, hosts, forwardedHosts)
	if requestLine != "GET /ws?x=1 HTTP/1.1" || fmt.Sprint(hosts) != "[evil.example]" || fmt.Sprint(forwardedHosts) != "[evil.example]" {
		t.Errorf("the edge got %q, Host %q, X-Forwarded-Host %q; want the origin form and evil.example in both", requestLine, hosts, forwardedHosts)
	}
}

func TestOriginForm(t *testing.T) {
	for target, want := range map[string]string{
		"http://h":               "/",
		"http://h?x=1":           "/?x=1",
		"HTTPS://h:8443/a/b?c=d": "/a/b?c=d",
		"http://u@h/%2F/x":       "/%2F/x",
	} {
		if got := string(originForm([]byte(target))); got != want {
			t.Errorf("originForm(%q) = %q, want %q", target, got, want)
		}
	}
}
