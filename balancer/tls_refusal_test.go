package balancer

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// readRecorder counts what a connection delivered and keeps the error that
// ended its reads.
type readRecorder struct {
	net.Conn
	n   int
	err error
}

func (r *readRecorder) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.n += n
	if err != nil && r.err == nil {
		r.err = err
	}
	return n, err
}

// wantClosedUnanswered runs a TLS handshake over c, a connection h's TLS
// port refuses for reason, and checks that it was closed cleanly (EOF)
// without a byte sent, and counted once.
func wantClosedUnanswered(t *testing.T, h *harness, c net.Conn, tlsConfig *tls.Config, reason string) {
	t.Helper()
	rec := &readRecorder{Conn: c}
	herr := tls.Client(rec, tlsConfig).Handshake()
	if herr == nil {
		t.Fatal("a connection over the limit completed its handshake")
	}
	t.Logf("the refused client's handshake: %v (its socket: %d bytes, %v)", herr, rec.n, rec.err)
	if rec.n != 0 {
		t.Errorf("the refused client was sent %d bytes, want none (plain text in a TLS connection)", rec.n)
	}
	if !errors.Is(rec.err, io.EOF) {
		t.Errorf("the refused connection ended with %v, want a clean close (EOF)", rec.err)
	}
	if v := h.metric(t, "ringlb_balancer_rejected_connections_total", map[string]string{"reason": reason}); v != 1 {
		t.Errorf("rejected %s = %v, want 1", reason, v)
	}
}

// A connection the TLS data port refuses (a limit) is closed without a
// word: a FIN, no plain text. Before, it was sent the plain port's HTTP
// 429/503, which a client in its TLS handshake reads as a broken record
// ("first record does not look like a TLS handshake") and nothing else. An
// answer inside TLS would cost a handshake — CPU the refused client
// chooses — per connection the limits exist to shed, so the port closes,
// as HAProxy does; the refusal is counted as on the plain port.
func TestTLSPortRefusesWithoutPlainText(t *testing.T) {
	certFile, keyFile, pool := writeTestCert(t)
	tlsConfig := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	for _, tt := range []struct {
		name   string
		limits configs.Limits
		reason string
	}{
		{"max_connections_per_ip", configs.Limits{MaxConnectionsPerIP: 1}, "max_connections_per_ip"},
		{"max_connections", configs.Limits{MaxConnections: 1}, "max_connections"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, configs.Balancer{TLS: configs.TLS{CertFile: certFile, KeyFile: keyFile}, Limits: tt.limits})
			// The one connection allowed, served.
			held, err := tls.Dial("tcp", h.addr, tlsConfig)
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			held.SetDeadline(time.Now().Add(healthtest.Patience))
			io.WriteString(held, "GET /_ringlb/health HTTP/1.1\r\nHost: x\r\n\r\n")
			if resp, err := http.ReadResponse(bufio.NewReader(held), nil); err != nil || resp.StatusCode != 200 {
				t.Fatalf("first connection: %v %v", resp, err)
			}
			raw, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			raw.SetDeadline(time.Now().Add(healthtest.Patience))
			wantClosedUnanswered(t, h, raw, tlsConfig, tt.reason)
		})
	}
}

// A refusal on the TLS port of a connection that came through a trusted
// PROXY protocol proxy closes as cleanly as a direct client's: the write
// side shut, the ClientHello drained, then the close — a FIN, not a reset
// the proxy would pass on to its client as a broken connection. The PROXY
// connection cannot shut its write side itself: the refusal shuts the
// accept guard's socket under it and drains the ClientHello through it
// (RefuseServed), as for a direct client.
func TestTLSPortRefusalThroughProxyClosesCleanly(t *testing.T) {
	certFile, keyFile, pool := writeTestCert(t)
	tlsConfig := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	h := newHarness(t, configs.Balancer{
		TLS:           configs.TLS{CertFile: certFile, KeyFile: keyFile},
		ProxyProtocol: configs.ProxyProtocol{Enabled: true},
		Limits:        configs.Limits{MaxConnectionsPerIP: 1},
	})
	hdr, err := (&proxyproto.Header{Version: 1, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
		SourceAddr: &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 5555}, DestinationAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 443}}).Format()
	if err != nil {
		t.Fatal(err)
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(healthtest.Patience))
		if _, err := c.Write(hdr); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// The one connection the client is allowed, served.
	held := tls.Client(dial(), tlsConfig)
	io.WriteString(held, "GET /_ringlb/health HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(held), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first connection: %v %v", resp, err)
	}
	wantClosedUnanswered(t, h, dial(), tlsConfig, "max_connections_per_ip")
}
