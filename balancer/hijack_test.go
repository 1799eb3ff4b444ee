package balancer

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// fasthttp runs a hijack handler only if the connection is still fine once
// the handler has returned: a response it still holds for an earlier
// pipelined request is flushed first, and a failed flush closes the
// connection instead. A tunnel registered for the upgrade (its edge
// connection open, counted in Tunnels and in Shutdown's wait) was then never
// released: a client pipelining a plain request and an upgrade and resetting
// while the edge answers left one edge connection behind per attempt, for
// good — no client slot holds it, so no connection limit stops it.
func TestUpgradeAbandonedBeforeItsHijack(t *testing.T) {
	const attempts = 12
	h := newHarness(t, configs.Balancer{})
	upgrades := make(chan struct{}, attempts)
	proceed := make(chan struct{}, attempts)
	var edgeClosed atomic.Int32
	url := serveConns(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
				_, _ = io.Copy(io.Discard, req.Body)
				if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
					return
				}
				continue
			}
			upgrades <- struct{}{}
			<-proceed
			if _, err := io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+wsSampleAccept+"\r\n\r\n"); err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, br) // until the balancer closes the tunnel
			edgeClosed.Add(1)
			return
		}
	})
	h.ring.Update([]ring.Member{{Name: "third-party", URL: url, Weight: 1}})

	for i := range attempts {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(healthtest.Patience))
		if _, err := io.WriteString(c, "GET /plain HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n\r\n"+wsHead+"\r\n"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-upgrades:
		case <-time.After(healthtest.Patience):
			t.Fatalf("attempt %d: the upgrade never reached the backend", i)
		}
		// A reset: every write of the balancer to the client fails now.
		_ = c.(*net.TCPConn).SetLinger(0)
		c.Close()
		proceed <- struct{}{}
	}
	open := attempts
	defer func() {
		if t.Failed() {
			t.Logf("%d of %d abandoned upgrades' tunnels open, %d backend connections closed", open, attempts, edgeClosed.Load())
		}
	}()
	healthtest.WaitUntil(t, "every abandoned upgrade's tunnel released", func() bool { open = h.bal.Tunnels(); return open == 0 })
	healthtest.WaitUntil(t, "every abandoned upgrade's backend connection closed", func() bool { return edgeClosed.Load() == attempts })
}
