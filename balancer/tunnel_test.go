package balancer

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// serveRaw is a backend at the TCP level: each connection it accepts is
// served by serve on a goroutine of its own (and closed after it). It
// returns its listener's address.
func serveRaw(tb testing.TB, serve func(c net.Conn)) *net.TCPAddr {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr)
}

// startRawEdge is an edge at the TCP level: it answers any request with a
// 101 and then echoes bytes, so the tunnel alone is measured.
func startRawEdge(tb testing.TB) string {
	tb.Helper()
	return "http://" + serveRaw(tb, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		if _, err := io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+wsSampleAccept+"\r\nX-Ringlb-Edge: raw\r\n\r\n"); err != nil {
			return
		}
		if br.Buffered() > 0 {
			b, _ := br.Peek(br.Buffered())
			if _, err := c.Write(b); err != nil {
				return
			}
		}
		_, _ = io.Copy(c, c) // echo; *TCPConn → *TCPConn
	}).String()
}

// openRawTunnel returns a client connection through b past the 101.
func openRawTunnel(tb testing.TB, addr string) (net.Conn, *bufio.Reader) {
	tb.Helper()
	return openKeyedTunnel(tb, addr, "bench")
}

// openKeyedTunnel returns a client connection of key through b past the
// 101.
func openKeyedTunnel(tb testing.TB, addr, key string) (net.Conn, *bufio.Reader) {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nctstickiness: " + key + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		tb.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		tb.Fatalf("upgrade: %v %v", resp, err)
	}
	return c, br
}

func startRawBalancer(tb testing.TB, cfg configs.Balancer) (*Balancer, string) {
	tb.Helper()
	return startBalancerFor(tb, cfg, startRawEdge(tb))
}

// startBalancerFor serves a balancer whose ring is the one backend at url.
func startBalancerFor(tb testing.TB, cfg configs.Balancer, url string) (*Balancer, string) {
	tb.Helper()
	r := ring.New(ring.DefaultConfig())
	r.Update([]ring.Member{{Name: "raw", URL: url, Weight: 1}})
	cfg.Provision()
	b, err := New(cfg, "bal-bench", r, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() { _ = b.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
	})
	return b, ln.Addr().String()
}

// An active tunnel outlives many idle rounds; a half-close from the client
// reaches the edge, whose close ends the tunnel.
func TestTunnelRoundsAndHalfClose(t *testing.T) {
	t.Parallel()
	// Rounds of 1.5 s with a write every 25 ms: a busy machine would have
	// to stall the test for a whole round to make the tunnel look idle
	// (rounds of 500 ms were, once, under a full run beside others).
	b, addr := startRawBalancer(t, configs.Balancer{TunnelIdleTimeout: configs.Duration(1500 * time.Millisecond)})
	c, br := openRawTunnel(t, addr)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	msg := []byte("ping")
	got := make([]byte, len(msg))
	// Traffic for ~3 rounds: the tunnel must stay up.
	for range 180 {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatalf("tunnel closed while active: %v", err)
		}
		time.Sleep(25 * time.Millisecond)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after half-close: %v, want EOF", err)
	}
	// The tunnel is released once both directions ended.
	healthtest.WaitUntil(t, "the tunnel released", func() bool { return b.Tunnels() == 0 })
}

// BenchmarkTunnel measures echo throughput through one tunnel: client →
// balancer → edge → balancer → client, 64 KiB at a time. "direct" is the same
// client talking to the edge without the balancer, for scale.
func BenchmarkTunnel(b *testing.B) { benchBothWays(b, benchEcho) }

// BenchmarkTunnelRoundTrip measures one small message's round trip through
// a quiet tunnel (256 B out, echoed back, one at a time): what the balancer
// adds to latency when it is not busy. ns/op is the round trip; the
// balancer's cost is the difference from "direct".
func BenchmarkTunnelRoundTrip(b *testing.B) { benchBothWays(b, benchPingPong) }

// benchBothWays runs bench through a balancer's tunnel and straight to the
// edge.
func benchBothWays(b *testing.B, bench func(*testing.B, net.Conn, *bufio.Reader)) {
	b.Run("balancer", func(b *testing.B) {
		_, addr := startRawBalancer(b, configs.Balancer{})
		c, br := openRawTunnel(b, addr)
		defer c.Close()
		bench(b, c, br)
	})
	b.Run("direct", func(b *testing.B) {
		c, br := openRawTunnel(b, strings.TrimPrefix(startRawEdge(b), "http://"))
		defer c.Close()
		bench(b, c, br)
	})
}

func benchEcho(b *testing.B, c net.Conn, br *bufio.Reader) {
	const chunk = 64 << 10
	out := make([]byte, chunk)
	in := make([]byte, chunk)
	errc := make(chan error, 1)
	n := b.N
	b.SetBytes(chunk)
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		for range n {
			if _, err := c.Write(out); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for range n {
		if _, err := io.ReadFull(br, in); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}

func benchPingPong(b *testing.B, c net.Conn, br *bufio.Reader) {
	out := make([]byte, 256)
	in := make([]byte, 256)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(out); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(br, in); err != nil {
			b.Fatal(err)
		}
	}
}
