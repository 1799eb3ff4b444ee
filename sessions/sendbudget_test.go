package sessions

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/balancer/acceptguard/acceptguardtest"
	"github.com/ringlb/ringlb/configs"
)

// Each participant's send queue is bounded (send_queue frames), but not
// what they hold together: a client that opens sessions of its own, each
// with a participant that never reads and one that sends messages of the
// largest size, just short of filling the reader's queue, makes the edge
// hold sessions × send_queue × max_message_bytes for as long as
// the writer's deadline lets it. The attack: 8 such sessions. Before,
// the edge's heap grew by about 8 queues' worth. Now edge.max_queued_bytes
// bounds them together: beyond it, a frame for a participant that still
// has frames waiting closes it as a slow consumer (1013), and a
// participant that keeps up is never touched.
func TestSendQueuesBoundedTogether(t *testing.T) {
	const (
		sessions = 8
		frames   = 200 // below send_queue (256): no queue overflows on its own
		size     = 60 << 10
		budget   = 32 << 20
	)
	e := startEdge(t, configs.Edge{MaxQueuedBytes: budget}, func(s *Server) {
		s.writeWait = time.Minute // the non-readers are not dropped by their writer's deadline first
	})
	// A session that keeps up throughout.
	reader := e.join(t, "reading")
	readerPeer := e.join(t, "reading")

	base := heapInUse()
	slow := make([]*websocket.Conn, sessions)
	for i := range sessions {
		key := "hoard-" + string(rune('a'+i))
		// A fixed receive buffer, so the kernel does not absorb the stream
		// on the non-reader's behalf (see TestSlowConsumerClosed1013).
		slow[i], _ = e.dialHeader(t, http.Header{"Ctstickiness": {key}}, func(network, addr string) (net.Conn, error) {
			c, err := net.Dial(network, addr)
			if err == nil {
				err = c.(*net.TCPConn).SetReadBuffer(256 << 10)
			}
			return c, err
		})
		e.waitJoined(t)
		sender := e.join(t, key)
		payload := make([]byte, size)
		for range frames {
			if err := sender.WriteMessage(websocket.BinaryMessage, payload); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Every message has reached the edge and been handed to the queues.
	for deadline := time.Now().Add(testDeadline); metricValue(t, e.s, "ringlb_edge_messages_total") < sessions*frames && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	grew := int64(heapInUse()) - int64(base)
	queued := metricValue(t, e.s, "ringlb_edge_queued_bytes")
	closed := metricValue(t, e.s, "ringlb_edge_slow_consumers_total")
	t.Logf("%d sessions × %d msgs of %d KiB to a participant that does not read: heap +%d MiB, queued %.0f MiB (budget %d MiB), %v closed as slow consumers",
		sessions, frames, size>>10, grew>>20, queued/(1<<20), budget>>20, closed)
	if queued > budget+sessions*size {
		t.Errorf("send queues hold %.0f MiB together, want at most the budget (%d MiB) and a frame each", queued/(1<<20), budget>>20)
	}
	if closed == 0 {
		t.Error("no participant was closed for holding the budget")
	}
	// The session that keeps up was never touched.
	if err := reader.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if _, data, err := readerPeer.ReadMessage(); err != nil || string(data) != "still here" {
		t.Fatalf("the reading session after the hoard: %q, %v", data, err)
	}
}

// Low on memory, a send queue passes a burst (up to lowMemoryBurst, for
// lowMemoryGrace) and is refused past either; a connection receiving a
// message (no over) and a history (tryTakeHeld) get no burst.
func TestLowMemoryQueueBurst(t *testing.T) {
	mem, _ := acceptguardtest.Low(t)
	b := &byteBudget{mem: mem}
	b.limit.Store(1 << 30)
	var over int64
	if !b.tryTakeShareHeld(0, lowMemoryHold, &over) || over != 0 {
		t.Fatalf("within lowMemoryHold: refused, or counted as over (%d)", over)
	}
	if !b.tryTakeShareHeld(lowMemoryHold, 8<<10, &over) || over == 0 {
		t.Fatalf("a burst past lowMemoryHold: refused, or not counted as over (%d)", over)
	}
	if b.tryTakeShareHeld(lowMemoryBurst-4<<10, 8<<10, &over) {
		t.Error("a queue past lowMemoryBurst was let grow")
	}
	over = time.Now().Add(-2 * lowMemoryGrace).UnixNano() // over for longer than the grace
	if b.tryTakeShareHeld(lowMemoryHold, 1, &over) {
		t.Error("a queue over lowMemoryHold past lowMemoryGrace was let grow")
	}
	if b.tryTakeShareHeld(lowMemoryHold, 1, nil) {
		t.Error("a message arriving past lowMemoryHold was let grow")
	}
	if !b.tryTakeShareHeld(0, lowMemoryHold, nil) {
		t.Error("a message within lowMemoryHold refused")
	}
	if b.tryTakeHeld(lowMemoryHold, 1) {
		t.Error("a history past lowMemoryHold was let grow")
	}
}

// The send budget is the edge's, shared by every session: a client that
// fills it with participants of its own that never read leaves nothing
// for anyone else, and a participant of another session whose queue holds
// a frame when the next comes — a reader that keeps up, a moment behind a
// burst — was the one closed 1013, not the hoarders. The attack: one
// session of four non-readers and a sender filling their queues past the
// budget (each below send_queue), then, in another session, an honest
// sender's 50 msgs of 4 KiB in bursts of 10 to a reader that reads them
// all. Now a queue may grow only while it holds less than the budget has
// left free (sendbudget.go): hoarders stop at a share of it, and what is
// left free takes every small queue.
func TestHoardedBudgetShedsOnlyTheHoarders(t *testing.T) {
	const (
		hoarders = 4
		size     = 60 << 10
		budget   = 16 << 20
		frames   = 2 * budget / (hoarders * size) // twice the budget, below send_queue each
		honest   = 50
		burst    = 10
	)
	e := startEdge(t, configs.Edge{MaxQueuedBytes: budget}, func(s *Server) {
		s.writeWait = time.Minute // the hoarders hold for as long as their writer's deadline: the attack's best case
	})
	for range hoarders {
		_, _ = e.dialHeader(t, http.Header{"Ctstickiness": {"hoard"}}, func(network, addr string) (net.Conn, error) {
			c, err := net.Dial(network, addr)
			if err == nil {
				err = c.(*net.TCPConn).SetReadBuffer(64 << 10)
			}
			return c, err
		})
		e.waitJoined(t)
	}
	sender := e.join(t, "hoard")
	payload := make([]byte, size)
	for range frames {
		if err := sender.WriteMessage(websocket.BinaryMessage, payload); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the hoard's msgs handed to the queues", func() bool {
		return metricValue(t, e.s, "ringlb_edge_messages_total") >= frames
	})
	hoarded := metricValue(t, e.s, "ringlb_edge_queued_bytes")

	// Another session, honest: every msg is read as it comes.
	n, closedWith := honestSession(t, e, honest, burst)
	queued := metricValue(t, e.s, "ringlb_edge_queued_bytes")
	t.Logf("hoard: %d non-readers × %d msgs of %d KiB held %.1f MiB of a %d MiB budget; the other session's reader got %d of %d msgs (close %d); queued %.1f MiB, %v slow consumers",
		hoarders, frames, size>>10, hoarded/(1<<20), budget>>20, n, honest, closedWith, queued/(1<<20), metricValue(t, e.s, "ringlb_edge_slow_consumers_total"))
	if n != honest {
		t.Errorf("another session's reader got %d of %d msgs (closed %d) while one client hoarded the send budget", n, honest, closedWith)
	}
	if queued > budget+(hoarders+2)*size {
		t.Errorf("send queues hold %.1f MiB, want at most the budget (%d MiB) and a frame each", queued/(1<<20), budget>>20)
	}
}

// A frame for a participant whose queue is empty is always taken: it is
// written at once, so the budget overshoots by a frame per participant at
// most. A resume's replay is one queue slot holding the history, though,
// written at its client's pace: the attack is a client's participants that
// each read what they are sent, then, their queues empty, ask for the
// whole history (8 MiB: more than the socket takes at once) and read
// nothing. Before, each replay was taken whatever the budget held, so 8 of
// them held twice the 16 MiB budget, and a reader of another session a
// moment behind its talker's bursts was the one closed 1013. Now a replay
// is taken as a queue's growth is: only while it leaves the budget as
// much free as it holds, and the hoarders beyond that are closed 1013.
func TestReplaysHoardNoSendBudget(t *testing.T) {
	parallel(t)
	const (
		budget   = 16 << 20
		history  = 8 << 20
		hoarders = 8
		size     = 58000
		gen      = history / (size + 100) // msgs of size filling history.bytes
		honest   = 50
		burst    = 10
	)
	e := startEdge(t, configs.Edge{MaxQueuedBytes: budget, History: configs.History{Bytes: history}}, func(s *Server) {
		s.writeWait = time.Minute // the hoarders hold for as long as their writer's deadline: the attack's best case
	})
	filler := e.joinV1(t, "replays", "", nil)
	data := strings.Repeat("m", size)
	for range gen {
		filler.msg(t, data)
		filler.readType(t, "ack")
	}
	// The hoarders join, each reading what it is sent until every later
	// one's join has been told to it: then nothing more comes, and each
	// queue is empty.
	conns := make([]net.Conn, hoarders)
	frames := make([]*rawFrames, hoarders)
	for i := range conns {
		conns[i] = rawJoinV1With(t, e, "replays", "", 4<<10)
		frames[i] = newRawFrames(conns[i])
	}
	for i, rf := range frames {
		for joins := 0; joins < hoarders-1-i; {
			_, payload, err := rf.next()
			if err != nil {
				t.Fatal(err)
			}
			var m env
			if err := json.Unmarshal(payload, &m); err != nil {
				t.Fatalf("%q: %v", payload, err)
			}
			if m.Type == "join" {
				joins++
			}
		}
	}
	resume := appendClientTextFrame(nil, []byte(fmt.Sprintf(`{"type":"resume","after":0,"epoch":%q}`, filler.welcome.Epoch)))
	for _, c := range conns {
		if _, err := c.Write(resume); err != nil {
			t.Fatal(err)
		}
	}
	// Each resume acted on: its replay queued, or its participant closed.
	waitFor(t, "the hoarders' resumes acted on", func() bool {
		e.s.mu.Lock()
		defer e.s.mu.Unlock()
		done := 0
		for p := range e.s.conns {
			if p != nil && p.session != nil && p.session.key == "replays" && (p.replayWaiting() || p.stopping()) {
				done++
			}
		}
		return done >= hoarders
	})
	hoarded := metricValue(t, e.s, "ringlb_edge_queued_bytes")

	// Another session, honest: every msg is read as it comes.
	n, closedWith := honestSession(t, e, honest, burst)
	t.Logf("%d non-readers each resuming from 0 (an 8 MiB history) held %.1f MiB of a %d MiB budget (%v slow consumers); the other session's reader got %d of %d msgs (close %d)",
		hoarders, hoarded/(1<<20), budget>>20, metricValue(t, e.s, "ringlb_edge_slow_consumers_total"), n, honest, closedWith)
	if n != honest {
		t.Errorf("another session's reader got %d of %d msgs (closed %d) while one client's replays hoarded the send budget", n, honest, closedWith)
	}
	if hoarded > budget {
		t.Errorf("send queues hold %.1f MiB of replays, want at most the budget (%d MiB)", hoarded/(1<<20), budget>>20)
	}
}

// honestSession has a talker send msgs 4 KiB msgs to a reader in a session
// of its own, in bursts of burst, the reader reading every one as it
// comes; it returns how many the reader got and the code it was closed
// with (0: none).
func honestSession(t *testing.T, e *testEdge, msgs, burst int) (got, closedWith int) {
	t.Helper()
	talker := e.join(t, "talk")
	reader := e.join(t, "talk")
	read, code := make(chan int, 1), make(chan int, 1)
	go func() {
		n := 0
		for n < msgs {
			if _, _, err := reader.ReadMessage(); err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					code <- ce.Code
				}
				break
			}
			n++
		}
		read <- n
	}()
	msg := make([]byte, 4<<10)
	for i := 0; i < msgs; i += burst {
		for range burst {
			if err := talker.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(5 * time.Millisecond) // bursts, as people type: not part of any assertion
	}
	got = <-read
	select {
	case closedWith = <-code:
	default:
	}
	return got, closedWith
}
