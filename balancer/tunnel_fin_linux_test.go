package balancer

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// A tunnel one side has closed while the other neither reads nor closes
// ends after balancer.tunnel_fin_timeout, as HAProxy's timeout client-fin
// and server-fin end a half-closed connection, and a graceful Shutdown
// waits no longer than that for it. Before, a half-closed tunnel had only
// the tunnel idle timeout (10m by default): an edge stopping (its close
// frame, then its FIN) with clients that never answer held the balancer's
// Shutdown for its whole bound, which ended in "context deadline
// exceeded" (the demo's stop: 15 s, exit 1). The default is kept here, so
// the test also says that a default stop (15 s) is not held.
func TestHalfClosedTunnelEndsAfterFinTimeout(t *testing.T) {
	certFile, keyFile, pool := writeTestCert(t)
	for _, tt := range []struct {
		name string
		tls  configs.TLS
		// clientCloses: the client half-closes and the edge then neither
		// reads nor closes; else the edge closes and the client neither
		// reads nor closes.
		clientCloses bool
	}{
		{"relayed, the edge closed", configs.TLS{}, false},
		{"relayed, the client closed", configs.TLS{}, true},
		{"TLS, the edge closed", configs.TLS{CertFile: certFile, KeyFile: keyFile}, false},
		{"TLS, the client closed", configs.TLS{CertFile: certFile, KeyFile: keyFile}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			url, edges := stuckEdge(t)
			b, addr := startBalancerFor(t, configs.Balancer{TLS: tt.tls}, url)
			raw, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			c := upgradeOver(t, raw, tt.tls.CertFile != "", pool)
			edge := <-edges
			defer edge.Close()
			if tt.clientCloses {
				if cw, ok := c.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
				edge.SetReadDeadline(time.Now().Add(healthtest.Patience))
				if _, err := io.Copy(io.Discard, edge); err != nil {
					t.Fatalf("the edge did not get the client's end: %v", err)
				}
			} else {
				edge.Close()
			}
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), healthtest.Patience)
			defer cancel()
			if err := b.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown with a half-closed tunnel: %v (after %s)", err, time.Since(start))
			}
			t.Logf("Shutdown took %s with the half-closed tunnel", time.Since(start))
		})
	}
}

// A client that never reads while it keeps sending holds no tunnel for
// longer than the idle timeout once bytes for it stop moving: as HAProxy's
// timeout tunnel bounds each side's write, and nginx's send_timeout. Before,
// the relay's only clock was the tunnel's last byte either way, so a client
// sending a byte now and then kept a tunnel whose bytes for it never moved,
// with what the relay held for it (up to 64 KiB a tunnel, on the heap), for
// as long as it liked. The TLS path's write deadline already bounded it.
func TestNonReadingClientCannotHoldATunnelBySending(t *testing.T) {
	certFile, keyFile, pool := writeTestCert(t)
	for _, tt := range []struct {
		name string
		tls  configs.TLS
	}{
		{"relayed", configs.TLS{}},
		{"TLS", configs.TLS{CertFile: certFile, KeyFile: keyFile}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			url, edges := stuckEdge(t)
			idle := time.Second
			b, addr := startBalancerFor(t, configs.Balancer{TLS: tt.tls, TunnelIdleTimeout: configs.Duration(idle)}, url)
			// A small receive buffer, set before the connect so the
			// window it offers is small: the client's socket fills soon.
			d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
				return rc.Control(func(fd uintptr) {
					syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
				})
			}}
			raw, err := d.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			c := upgradeOver(t, raw, tt.tls.CertFile != "", pool)
			edge := <-edges
			defer edge.Close()
			// The edge sends until the balancer stops taking its bytes; the
			// client reads none and sends a byte every tenth of the idle
			// timeout, which the edge takes.
			go func() {
				buf := make([]byte, 16<<10)
				for {
					if _, err := edge.Write(buf); err != nil {
						return
					}
				}
			}()
			go io.Copy(io.Discard, edge)
			start := time.Now()
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(idle / 10):
					}
					raw.SetWriteDeadline(time.Now().Add(idle))
					if _, err := c.Write([]byte{'x'}); err != nil {
						return
					}
				}
			}()
			healthtest.WaitUntil(t, "the tunnel of a client that does not read closed", func() bool { return b.Tunnels() == 0 })
			t.Logf("closed %s after the edge began sending (idle timeout %s)", time.Since(start), idle)
		})
	}
}

// upgradeOver sends a WebSocket upgrade over raw (in TLS, trusting pool,
// when overTLS) and returns the connection once it is switched.
func upgradeOver(t *testing.T, raw net.Conn, overTLS bool, pool *x509.CertPool) net.Conn {
	t.Helper()
	c := raw
	if overTLS {
		c = tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	}
	if _, err := io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nctstickiness: k\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return c
}
