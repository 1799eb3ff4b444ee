package sessions

import (
	"bytes"
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
// connection whose frame would pass its share of it (no more than the
// budget leaves free) is closed 1013, and a session that sends whole
// messages is served.
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
	// Each takes its message only while it leaves at least as much free
	// (tryTakeShare): one fewer than fill the budget.
	fit := budget/size - 1
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
		t.Errorf("messages being received hold %.0f bytes, want the %d that fit their share of the budget (%d)", incoming, fit*size, budget)
	}
	if refused != float64(conns-fit) {
		t.Errorf("%v connections refused, want %d (those beyond the budget)", refused, conns-fit)
	}
	// What the hoarders held comes back when they go, and messages flow
	// as before.
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

// TestHoardedIncomingBudgetShedsOnlyTheHoarder: one client opens
// connections to sessions of its own, announces the largest message on
// each and sends a byte of it, as many as the incoming budget takes. The
// send budget is shared so that hoarders stop at a share of it
// (TestHoardedBudgetShedsOnlyTheHoarders); the incoming budget was not:
// the hoard spent it all, and an honest participant of another session,
// sending a 5-byte message, was closed 1013 and its message reached no
// one, for as long as the hoarder kept its frames open. Now a message is
// taken only while what its connection holds would be no more than the
// budget has left free: the hoarder's connections stop there, each
// leaving at least its own message's worth, the one beyond is closed 1013,
// and the honest messages — 5 bytes, 16 KiB — arrive and are relayed.
func TestHoardedIncomingBudgetShedsOnlyTheHoarder(t *testing.T) {
	const (
		size   = 60 << 10
		conns  = 64
		budget = conns * size // what the hoard spent whole before
	)
	e := startEdge(t, configs.Edge{MaxIncomingBytes: budget}, nil)
	a, b := e.join(t, "honest"), e.join(t, "honest")
	head := []byte{0x82, 0x80 | 126, byte(size >> 8), byte(size & 0xff), 1, 2, 3, 4, 'x'}
	for i := range conns {
		c := rawJoinKey(t, e, fmt.Sprintf("hoard-%d", i))
		if _, err := c.Write(head); err != nil {
			t.Fatal(err)
		}
	}
	// Every announcement read: taken, or its connection refused.
	waitFor(t, "every hoarding connection's frame read", func() bool {
		return metricValue(t, e.s, "ringlb_edge_incoming_bytes")+metricValue(t, e.s, "ringlb_edge_incoming_refused_total")*size >= conns*size
	})
	incoming := metricValue(t, e.s, "ringlb_edge_incoming_bytes")
	refused := metricValue(t, e.s, "ringlb_edge_incoming_refused_total")
	t.Logf("%d connections announcing %d KiB and sending a byte to a budget of %d KiB: %.0f KiB taken, %v closed 1013",
		conns, size>>10, budget>>10, incoming/(1<<10), refused)
	if incoming > budget-size {
		t.Errorf("the hoard holds %.0f bytes of the incoming budget (%d), want at most its share: %d left free", incoming, budget, size)
	}
	for i, n := range []int{5, 16 << 10} {
		msg := make([]byte, n)
		for j := range msg {
			msg[j] = byte('a' + (i+j)%26)
		}
		if err := a.WriteMessage(websocket.TextMessage, msg); err != nil {
			t.Fatalf("honest sender, msg of %d bytes: %v", n, err)
		}
		if _, data, err := b.ReadMessage(); err != nil || !bytes.Equal(data, msg) {
			t.Fatalf("an honest msg of %d bytes while one client hoards the incoming budget with %d connections: got %d bytes, %v (%v connections closed 1013 for the budget)",
				n, conns, len(data), err, metricValue(t, e.s, "ringlb_edge_incoming_refused_total"))
		}
	}
	if got := metricValue(t, e.s, "ringlb_edge_incoming_refused_total"); got != refused {
		t.Errorf("%v connections closed 1013 for the incoming budget once the hoard was read, want none: the honest sender was", got-refused)
	}
}
