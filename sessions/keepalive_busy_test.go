package sessions

import (
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
)

// TestReadingViewerOfABusySessionIsPinged: a participant that reads
// everything and sends nothing (a viewer, a pad on a slow link) proves
// itself alive by its pongs alone. In a session busier than it reads, its
// send queue never empties; the writer pinged only from an empty queue, so
// such a participant was never pinged, sent nothing for pongWait, and its
// reader dropped it as silent — without a close frame, every 70 s for as
// long as the session stayed busy. A due ping now goes before the queued
// frames, and the reader is kept for as long as it reads and answers.
func TestReadingViewerOfABusySessionIsPinged(t *testing.T) {
	const backlog, size = 100, 60000
	e := startEdge(t, configs.Edge{}, func(s *Server) {
		s.pingInterval = 100 * time.Millisecond
		// Wide enough for a ping to come through the frames the sockets'
		// buffers hold ahead of it on a loaded machine.
		s.pongWait = 2 * time.Second
	})
	ann := e.joinV1(t, "doc", "", nil)
	vic := rawJoinV1With(t, e, "doc", "", 1<<16)
	ann.readType(t, "join")
	edit := sendBacklog(t, ann, backlog, size)
	// vic reads one edit every 10 ms, and ann sends one more for each:
	// vic's queue holds about backlog all along. It answers each ping.
	rf := newRawFrames(vic)
	read, pings := 0, 0
	watch := 3 * e.s.pongWait // past the point where the silent are dropped
	until := time.Now().Add(watch)
	for time.Now().Before(until) {
		op, n, err := rf.head()
		if err != nil {
			t.Fatalf("vic, reading a busy session and answering every ping, dropped after %d msgs and %d pings: %v", read, pings, err)
		}
		switch {
		case op == websocket.CloseMessage:
			payload, _ := rf.body(n)
			t.Fatalf("vic, reading a busy session and answering every ping, closed after %d msgs and %d pings: %q", read, pings, payload)
		case op == websocket.PingMessage:
			payload, err := rf.body(n)
			if err != nil {
				t.Fatal(err)
			}
			pong := appendClientFrame(nil, payload)
			pong[0] = 0x80 | websocket.PongMessage
			if _, err := vic.Write(pong); err != nil {
				t.Fatalf("vic's pong: %v", err)
			}
			pings++
			continue
		}
		if err := rf.skip(n); err != nil {
			t.Fatal(err)
		}
		if n < size {
			continue // the welcome
		}
		read++
		time.Sleep(10 * time.Millisecond)
		if err := ann.WriteMessage(websocket.TextMessage, edit); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("vic, reading a busy session for %v: %d msgs read, %d pings answered", watch, read, pings)
	if pings == 0 {
		t.Fatalf("vic was never pinged in %v of reading a busy session", watch)
	}
}
