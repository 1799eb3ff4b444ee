package balancer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// The data port counts a connection under max_connections_per_ip on its
// first read, as soon as it is accepted (and, behind PROXY protocol, its
// header read), before the client has sent a request. Its 429 was written
// then, at once: neither the accept guard's connection nor the PROXY one
// can shut only its write side, so the guard's refusal, which waits for
// the request to begin (as the direct socket's refusals at accept do), wrote
// it straight away. A client that had connected and not yet sent its
// request (a browser's preconnected socket, a client's pooled one) got an
// answer to nothing, which Go's transport drops from a pooled connection
// ("Unsolicited response received on idle HTTP channel"); nginx's
// limit_conn answers its 503 to the request, once read. The refusal is to
// answer the request once it has begun to arrive (a client that sends
// nothing gets it when the wait ends), counted once, its slot given back.
func TestPerIPRefusalAnswersTheRequestNotBeforeIt(t *testing.T) {
	// The client's pause between connecting and sending its request.
	const pause = 100 * time.Millisecond
	client := &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 5555}
	for _, proxied := range []bool{false, true} {
		name := "direct"
		if proxied {
			name = "PROXY"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, configs.Balancer{
				ProxyProtocol: configs.ProxyProtocol{Enabled: proxied},
				Limits:        configs.Limits{MaxConnectionsPerIP: 1},
			})
			dial := func(t *testing.T) net.Conn {
				t.Helper()
				c, err := net.Dial("tcp", h.addr)
				if err != nil {
					t.Fatal(err)
				}
				if proxied {
					hdr, err := (&proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
						SourceAddr: client, DestinationAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 80}}).Format()
					if err != nil {
						t.Fatal(err)
					}
					c.Write(hdr)
				}
				return c
			}
			refused := func() float64 {
				return h.metric(t, "ringlb_balancer_rejected_connections_total", map[string]string{"reason": rejectPerIPConns})
			}
			waitRefused := func(n float64) {
				healthtest.WaitUntil(t, "the connection refused at max_connections_per_ip", func() bool { return refused() >= n })
			}

			held := dial(t)
			defer held.Close()
			held.SetDeadline(time.Now().Add(healthtest.Patience))
			io.WriteString(held, "GET /_ringlb/health HTTP/1.1\r\nHost: x\r\n\r\n")
			if resp, err := http.ReadResponse(bufio.NewReader(held), nil); err != nil || resp.StatusCode != 200 {
				t.Fatalf("held connection: %v %v", resp, err)
			}

			// A raw client: nothing may come before its request.
			c := dial(t)
			defer c.Close()
			waitRefused(1)
			start := time.Now()
			c.SetReadDeadline(time.Now().Add(pause))
			early := make([]byte, 512)
			n, err := c.Read(early)
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("raw client: %d bytes (%v) %v after the refusal, before its request was sent; want nothing until it is", n, err, time.Since(start).Round(time.Millisecond))
			}
			c.SetDeadline(time.Now().Add(healthtest.Patience))
			_, werr := io.WriteString(c, "GET /_ringlb/health HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(bytes.NewReader(early[:n]), c)), nil)
			if err != nil {
				t.Fatalf("raw client: no answer to its request (write: %v): %v", werr, err)
			}
			body, _ := io.ReadAll(resp.Body)
			t.Logf("raw client, request %v after connecting: %d %q", pause, resp.StatusCode, strings.TrimSpace(string(body)))
			if resp.StatusCode != http.StatusTooManyRequests {
				t.Errorf("raw client: %d, want 429", resp.StatusCode)
			}

			// Go's HTTP client, connecting and pausing before its request:
			// its request claims the connection before its read loop looks
			// for a stray answer, so it read the early 429 too; it is to
			// read the 429 to its request.
			var conns int
			tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				conns++
				c := dial(t)
				waitRefused(float64(1 + conns))
				time.Sleep(pause)
				return c, nil
			}}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr, Timeout: healthtest.Patience}
			resp, err = hc.Get("http://" + h.addr + "/_ringlb/health")
			if err != nil {
				t.Fatalf("Go client: %v (%d connections), want a 429", err, conns)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Logf("Go client, request %v after connecting: %d %q (%d connections)", pause, resp.StatusCode, strings.TrimSpace(string(body)), conns)
			if resp.StatusCode != http.StatusTooManyRequests || conns != 1 {
				t.Errorf("Go client: %d on %d connections, want a 429 on one", resp.StatusCode, conns)
			}

			// A client that never sends a request still learns why, once
			// the wait for it is over.
			silent := dial(t)
			defer silent.Close()
			silent.SetReadDeadline(time.Now().Add(healthtest.Patience))
			start = time.Now()
			got, _ := io.ReadAll(silent)
			t.Logf("silent client: %q after %v", strings.SplitN(string(got), "\r\n", 2)[0], time.Since(start).Round(time.Millisecond))
			if !strings.HasPrefix(string(got), "HTTP/1.1 429 ") {
				t.Errorf("silent client: %q, want a 429", got)
			}
			if got := refused(); got != float64(2+conns) {
				t.Errorf("rejected max_connections_per_ip = %v, want %d: one per refused connection", got, 2+conns)
			}
			// Every refused connection gives its slot back: only the held
			// one is open.
			guard := h.bal.limiterOrNil(healthtest.Patience).guard
			start = time.Now()
			healthtest.WaitUntil(t, "the refused connections' slots given back", func() bool { return guard.Open() == 1 })
			t.Logf("slots given back %v after the silent client's answer", time.Since(start).Round(time.Millisecond))
		})
	}
}
