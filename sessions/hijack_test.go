package sessions

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
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
	e, _ := startShareEdgeWithBalancer(t)

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
	// The edge may still be accepting some of them: the address joins
	// its whole share once every one is gone — each join attempt, until
	// then, may be refused at accept while they are counted.
	round := 0
	var open []*websocket.Conn
	refusal := 0
	defer func() {
		if t.Failed() {
			t.Logf("after %d abandoned joins: %d addresses still counted, the last round joined %d of the share of %d directly, then %d",
				attempts, e.s.direct.Clients(), len(open), shareDirect, refusal)
		}
	}()
	waitFor(t, "the address joining its whole share again", func() bool {
		closeAll(open)
		round++
		open, refusal = openJoins(t, e, fmt.Sprintf("after-%d", round), shareDirect+1, nil)
		return len(open) == shareDirect && refusal == http.StatusTooManyRequests
	})
	closeAll(open)
	waitFor(t, "every direct participant gone", func() bool { return e.s.direct.Clients() == 0 })
}
