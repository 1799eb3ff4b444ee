package sessions

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// fasthttp runs a hijack handler only if the connection is still fine once
// the request handler has returned: an answer it still holds for an earlier
// pipelined request is flushed first, and a failed flush closes the
// connection instead. On the balancer that left a tunnel and its backend
// connection behind per attempt (balancer: TestUpgradeAbandonedBeforeItsHijack).
// A join's per-address share and admission are taken for the handler to
// give back; the edge writes each answer before it reads the next request
// (ReduceMemoryUsage), so a client pipelining a request and a join and
// resetting at once finds the first write failing, not the hand-over, and
// whatever fasthttp does instead, the share comes back (upgrade's undo).
func TestJoinAbandonedBeforeItsHijack(t *testing.T) {
	cl := healthtest.New(t)
	cl.Join("bal-1", health.Meta{Role: health.RoleBalancer, State: health.StateAlive})
	e := startShareEdge(t, cl)
	healthtest.WaitMembers(t, e.m, "edge-a sees bal-1", func(ns []health.Node) bool { return len(ns) == 2 })

	const attempts = 3 * shareDirect
	for i := range attempts {
		c, err := net.Dial("tcp", e.data)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(testDeadline))
		// Both requests arrive in one read; the reset is queued behind
		// them, so the edge reads them, answers the first into its write
		// buffer and upgrades the second before a write finds the reset.
		if _, err := io.WriteString(c, "GET /whoami HTTP/1.1\r\nHost: e\r\n\r\n"+
			"GET /ws HTTP/1.1\r\nHost: e\r\nctstickiness: abandoned-"+string(rune('a'+i))+"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: "+protocolV1+"\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	waitFor(t, "the abandoned joins' connections closed", func() bool { return dataOpen(e) == 0 })
	held := -1
	defer func() {
		if t.Failed() {
			t.Logf("after %d abandoned joins: %d addresses still counted, %d of the share of %d joined directly", attempts, e.s.direct.Clients(), held, shareDirect)
		}
	}()
	waitFor(t, "the abandoned joins' shares given back", func() bool { return e.s.direct.Clients() == 0 })

	open, refusal := openJoins(t, e, "after", shareDirect+1, nil)
	held = len(open)
	if len(open) != shareDirect || refusal != http.StatusTooManyRequests {
		t.Errorf("after %d abandoned joins the address joined %d directly, then %d; want its whole share %d, then 429", attempts, len(open), refusal, shareDirect)
	}
	closeAll(open)
}
