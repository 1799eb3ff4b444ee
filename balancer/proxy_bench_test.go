package balancer

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// Whole-path benchmarks: a client's request through a balancer to a
// backend on loopback and its answer back. allocs/op counts the whole
// process — the client's and the backend's parsing too, which stay the
// same — so a change of the balancer's path shows as a change of it.

// BenchmarkProxyRequest: one plain GET on a keep-alive connection, answered
// 200 with a Set-Cookie of the backend's own. "key": the client sends
// ctstickiness; "assigned": it sends none and is assigned a cookie.
func BenchmarkProxyRequest(b *testing.B) {
	url := servePlainBackend(b, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nSet-Cookie: theme=dark; Path=/\r\nX-Ringlb-Edge: raw\r\n\r\nok\n")
	_, addr := startBalancerFor(b, configs.Balancer{}, url)
	for _, tt := range []struct{ name, key string }{{"key", "ctstickiness: bench\r\n"}, {"assigned", ""}} {
		b.Run(tt.name, func(b *testing.B) {
			benchGets(b, addr, "GET /page HTTP/1.1\r\nHost: bal\r\n"+tt.key+"\r\n")
		})
	}
}

// BenchmarkProxyRequestSigned is BenchmarkProxyRequest's "key" with the
// balancer in a cluster, without and with a cluster key: with one, it signs
// every plain request it forwards (Keyring.SignForwarded), and the
// difference is the signature's cost.
func BenchmarkProxyRequestSigned(b *testing.B) {
	url := servePlainBackend(b, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Ringlb-Edge: raw\r\n\r\nok\n")
	for _, tt := range []struct {
		name    string
		cluster func(testing.TB) *healthtest.Cluster
	}{{"keyless", healthtest.NewKeyless}, {"key", healthtest.New}} {
		b.Run(tt.name, func(b *testing.B) {
			bal, addr := startBalancerFor(b, configs.Balancer{}, url)
			bal.SetCluster(tt.cluster(b).Join("bal-bench", health.Meta{Role: health.RoleBalancer, State: health.StateAlive}))
			benchGets(b, addr, "GET /page HTTP/1.1\r\nHost: bal\r\nctstickiness: bench\r\n\r\n")
		})
	}
}

// benchGets sends req b.N times on one keep-alive connection to addr, each
// answered 200 and read whole before the next.
func benchGets(b *testing.B, addr, req string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Minute))
	raw := []byte(req)
	br := bufio.NewReader(c)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(raw); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("answer %v %v", resp, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// BenchmarkUpgradeHandshake: one WebSocket upgrade on a new connection,
// answered 101 by the backend, read by the client, closed.
func BenchmarkUpgradeHandshake(b *testing.B) {
	_, addr := startRawBalancer(b, configs.Balancer{})
	for _, tt := range []struct{ name, key string }{{"key", "ctstickiness: bench\r\n"}, {"assigned", ""}} {
		b.Run(tt.name, func(b *testing.B) {
			req := []byte("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + tt.key + "\r\n")
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				_ = c.SetDeadline(time.Now().Add(time.Minute))
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
					b.Fatalf("upgrade %v %v", resp, err)
				}
				c.Close()
			}
		})
	}
}

// BenchmarkUpgradeHandshakeSigned is BenchmarkUpgradeHandshake's "key"
// with the balancer in a cluster, without and with a cluster key: with
// one, it signs every upgrade it forwards (Keyring.SignUpgrade), and the
// difference is the signature's cost.
func BenchmarkUpgradeHandshakeSigned(b *testing.B) {
	for _, tt := range []struct {
		name    string
		cluster func(testing.TB) *healthtest.Cluster
	}{{"keyless", healthtest.NewKeyless}, {"key", healthtest.New}} {
		b.Run(tt.name, func(b *testing.B) {
			bal, addr := startRawBalancer(b, configs.Balancer{})
			bal.SetCluster(tt.cluster(b).Join("bal-bench", health.Meta{Role: health.RoleBalancer, State: health.StateAlive}))
			req := []byte("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nctstickiness: bench\r\n\r\n")
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				_ = c.SetDeadline(time.Now().Add(time.Minute))
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
					b.Fatalf("upgrade %v %v", resp, err)
				}
				c.Close()
			}
		})
	}
}

// servePlainBackend answers every request of every keep-alive connection
// with answer.
func servePlainBackend(tb testing.TB, answer string) string {
	tb.Helper()
	return serveConns(tb, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			if _, err := io.WriteString(c, answer); err != nil {
				return
			}
		}
	})
}
