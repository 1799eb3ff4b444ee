package sessions

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// A participant keeps nothing of its upgrade's ?epoch once joined: epochs
// are 16 characters, but a client may send one as long as a request head.
// The attack: 200 idle ringlb.v1 participants resuming with a 15 KiB
// epoch. Before, each kept it for its whole life: 12–14 KiB per
// participant against ~2 KiB with a real epoch, 6–7× what an idle
// connection costs. Now 0.3–1.7 KiB, what participants with a real epoch
// hold.
func TestResumeEpochNotKept(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	const n = 200
	epoch := strings.Repeat("e", 15<<10)
	conns := make([]net.Conn, 0, n)
	for i := range n {
		c, err := net.Dial("tcp", e.data)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(testDeadline))
		fmt.Fprintf(c, "GET /ws?resume=0&epoch=%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\nctstickiness: epoch-%d\r\n\r\n", epoch, protocolV1, i)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade %d: %v %v", i, resp, err)
		}
		e.waitJoined(t)
		conns = append(conns, c)
	}
	e.waitIdle(t, n)
	held := heapInUse()
	for _, c := range conns {
		c.Close()
	}
	healthtest.WaitUntil(t, "every participant gone", func() bool { _, k := e.s.Stats(); return k == 0 })
	perParticipant := (int64(held) - int64(heapInUse())) / n
	t.Logf("%d idle v1 participants that resumed with a %d-byte epoch held %d B each", n, len(epoch), perParticipant)
	// ~2 KiB at most with a real epoch; 12–14 KiB when the epoch was kept.
	if perParticipant > 8<<10 {
		t.Errorf("each participant held %d B, want what one with a 16-byte epoch holds (~2 KiB)", perParticipant)
	}
}
