package sessions

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
)

// A frame's announced length is made room for before its payload comes, and
// each connection may announce up to max_message_bytes: a client that
// announces the largest message on each of its connections and sends one
// byte of it holds connections × max_message_bytes of the edge's heap, for
// as long as it sends a frame now and then. The attack: 300 connections
// announcing 60 KiB each. Before, the heap grew by about 300 × 60 KiB. Now
// edge.max_incoming_bytes bounds what is being received together: the
// connection whose frame would pass it is closed 1013, and a session that
// sends whole messages is served.
func TestIncomingMessagesBoundedTogether(t *testing.T) {
	const (
		conns  = 300
		size   = 60 << 10
		budget = 4 << 20
	)
	e := startEdge(t, configs.Edge{MaxIncomingBytes: budget}, nil)
	a, b := e.join(t, "whole"), e.join(t, "whole")

	base := heapInUse()
	// A masked binary frame announcing size bytes (16-bit length), and one
	// byte of its payload.
	head := []byte{0x82, 0x80 | 126, byte(size >> 8), byte(size & 0xff), 1, 2, 3, 4, 'x'}
	held := make([]net.Conn, conns)
	for i := range conns {
		held[i] = rawJoinKey(t, e, fmt.Sprintf("announce-%d", i))
		if _, err := held[i].Write(head); err != nil {
			t.Fatal(err)
		}
	}
	fit := budget / size
	settled := func() bool {
		return metricValue(t, e.s, "ringlb_edge_incoming_bytes")+metricValue(t, e.s, "ringlb_edge_incoming_refused_total")*size >= conns*size
	}
	for deadline := time.Now().Add(testDeadline); !settled() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	incoming := metricValue(t, e.s, "ringlb_edge_incoming_bytes")
	refused := metricValue(t, e.s, "ringlb_edge_incoming_refused_total")
	t.Logf("%d connections announcing %d KiB and sending a byte: heap +%d MiB, incoming %.1f MiB (budget %d MiB), %v closed 1013",
		conns, size>>10, (int64(heapInUse())-int64(base))>>20, incoming/(1<<20), budget>>20, refused)
	if incoming > budget || incoming != float64(fit*size) {
		t.Errorf("messages being received hold %.0f bytes, want the %d that fit the budget (%d)", incoming, fit*size, budget)
	}
	if refused != float64(conns-fit) {
		t.Errorf("%v connections refused, want %d (those beyond the budget)", refused, conns-fit)
	}
	// While the budget is spent a new message is refused as well (1013;
	// its client reconnects): what the hoarders held comes back when they
	// go, and messages flow again.
	for _, c := range held {
		c.Close()
	}
	for deadline := time.Now().Add(testDeadline); metricValue(t, e.s, "ringlb_edge_incoming_bytes") != 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if got := metricValue(t, e.s, "ringlb_edge_incoming_bytes"); got != 0 {
		t.Fatalf("the hoarders gone, %v bytes still counted as being received", got)
	}
	if err := a.WriteMessage(websocket.TextMessage, []byte("whole")); err != nil {
		t.Fatal(err)
	}
	if _, data, err := b.ReadMessage(); err != nil || string(data) != "whole" {
		t.Fatalf("a whole message after the hoard: %q, %v", data, err)
	}
}
