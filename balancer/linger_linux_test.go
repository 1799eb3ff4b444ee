package balancer

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/acceptguard/acceptguardtest"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// A server that answers a bad request and closes while the client is still
// sending: a close with bytes unread, or bytes arriving after it, draws a
// TCP reset; the client gets "connection reset by peer" on its write or its
// read, and one that gives up on the error loses the answer (Go's transport
// did, once in 600 runs of TestSizeLimits). The balancer's ports linger
// instead (acceptguard): the write side is shut, what the client still
// sends is read and dropped (bounded), then the socket is closed. Each
// client here sends more once the answer has arrived and must read the
// whole answer and a clean end, and never be reset.
func TestErrorAnswerNotReset(t *testing.T) {
	h := newHarness(t, configs.Balancer{Limits: configs.Limits{MaxHeaderBytes: 2048}})
	redirect, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { redirect.Close() }) // if Shutdown came before ServeRedirect
	go h.bal.ServeRedirect(redirect)

	bigHead := func(n int) string {
		return "GET /whoami HTTP/1.1\r\nHost: bal\r\nCtstickiness: k\r\nX-Big: " + strings.Repeat("y", n)
	}
	// A malformed head with a body behind it, part of it sent only after
	// the answer: the server has not read it all when it closes.
	body := strings.Repeat("z", 8<<10)
	malformed := "POST /whoami HTTP/1.1\r\nHost: bal\r\nNo colon here\r\nContent-Length: 16384\r\n\r\n" + body
	for _, tt := range []struct {
		name, addr, first, rest, want string
	}{
		// A head over balancer.limits.max_header_bytes (2048 here).
		{"data port head too large", h.addr, bigHead(3000), strings.Repeat("y", 3000) + "\r\n\r\n", "HTTP/1.1 431 "},
		{"data port malformed head", h.addr, malformed, body, "HTTP/1.1 400 "},
		// The redirect port's head limit is fasthttp's default, 4 KiB.
		{"redirect port head too large", redirect.Addr().String(), bigHead(6000), strings.Repeat("y", 3000) + "\r\n\r\n", "HTTP/1.1 431 "},
		{"redirect port malformed head", redirect.Addr().String(), malformed, body, "HTTP/1.1 400 "},
		// The admin port is net/http's (health/operator), behind the guard too.
		{"admin port malformed head", h.admin, malformed, body, "HTTP/1.1 400 "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			acceptguardtest.NotReset(t, tt.addr, tt.first, tt.rest, tt.want)
		})
	}
}

// A tunnel's client connection was handed over at the hijack: it closes at
// once when the tunnel ends, never lingering (a relayed socket is the
// relay's, or the next process's after a hand-off, where shutting its write
// side would end the tunnel; a TLS tunnel's close must not wait either).
// The client here sees the end, then writes: the balancer's socket is
// closed already, so the write draws a reset (a lingering socket would take
// it). And each connection is counted off once.
func TestTunnelClosesAtOnce(t *testing.T) {
	certFile, keyFile, pool := writeTestCert(t)
	for _, tt := range []struct {
		name string
		tls  configs.TLS
	}{
		{"relayed", configs.TLS{}},
		{"TLS", configs.TLS{CertFile: certFile, KeyFile: keyFile}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, addr := startRawBalancer(t, configs.Balancer{TLS: tt.tls, TunnelIdleTimeout: configs.Duration(50 * time.Millisecond)})
			raw, err := net.DialTimeout("tcp", addr, acceptguardtest.Patience)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			_ = raw.SetDeadline(time.Now().Add(acceptguardtest.Patience))
			c := raw
			if tt.tls.CertFile != "" {
				c = tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
			}
			if _, err := io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nctstickiness: k\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade: %v %v", resp, err)
			}
			// Silent: the tunnel idles out and the balancer closes it.
			if _, err := io.Copy(io.Discard, br); err != nil {
				t.Fatalf("reading to the tunnel's end: %v", err)
			}
			if !acceptguardtest.ResetAfterWrite(t, raw.(*net.TCPConn), []byte("after the end")) {
				t.Error("a write after the tunnel's end was taken in; want a reset (the balancer's socket closed at once)")
			}
			l := b.limiterOrNil(acceptguardtest.Patience)
			healthtest.WaitUntil(t, "the tunnel released", func() bool { return b.Tunnels() == 0 })
			if n := l.guard.Open(); n != 0 {
				t.Errorf("the guard counts %d connections open, want 0", n)
			}
		})
	}
}
