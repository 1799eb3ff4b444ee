package sessions

import (
	"bytes"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
)

// TestRelayFrameSizes crosses every boundary of the server frame header the
// reader encodes once per frame (7-bit, 16-bit and 64-bit lengths), read
// back by a real client.
func TestRelayFrameSizes(t *testing.T) {
	e := startEdge(t, configs.Edge{MaxMessageBytes: 1 << 20}, nil)
	from := e.join(t, "sizes")
	to := e.join(t, "sizes")
	for _, size := range []int{0, 1, 125, 126, 127, 1023, 1024, 1025, 65535, 65536, 65537, 200_000, 1 << 20} {
		for _, kind := range []int{websocket.TextMessage, websocket.BinaryMessage} {
			payload := bytes.Repeat([]byte{'a' + byte(size%26)}, size)
			if err := from.WriteMessage(kind, payload); err != nil {
				t.Fatal(err)
			}
			gotKind, got, err := to.ReadMessage()
			if err != nil {
				t.Fatalf("%d bytes: %v", size, err)
			}
			if gotKind != kind || !bytes.Equal(got, payload) {
				t.Fatalf("%d bytes kind %d: got %d bytes kind %d", size, kind, len(got), gotKind)
			}
		}
	}
}

// TestKeepalive: the writer pings; a peer that answers stays, one that stops
// answering is dropped once pongWait passes without a frame or pong from it.
func TestKeepalive(t *testing.T) {
	parallel(t)
	e := startEdge(t, configs.Edge{}, func(s *Server) {
		s.pingInterval = 20 * time.Millisecond
		// The live peers must answer within pongWait: wide enough for a
		// busy machine to schedule them.
		s.pongWait = 5 * time.Second
	})
	live := e.join(t, "k")
	other := e.join(t, "k")
	mute := e.join(t, "k")

	pings := make(chan struct{}, 1024)
	live.SetPingHandler(func(data string) error {
		pings <- struct{}{}
		return live.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(testDeadline))
	})
	received := make(chan string, 1)
	go func() {
		for {
			_, data, err := live.ReadMessage()
			if err != nil {
				close(received)
				return
			}
			received <- string(data)
		}
	}()
	go func() { // other answers pings too (the library's default handler)
		for {
			if _, _, err := other.ReadMessage(); err != nil {
				return
			}
		}
	}()
	mute.SetPingHandler(func(string) error { return nil }) // never pongs

	// The mute peer is dropped: the socket closes without a close frame
	// (nothing to say to a peer that is gone), which the client library
	// reports as 1006.
	if code := closeCode(t, mute); code != websocket.CloseAbnormalClosure {
		t.Fatalf("mute peer: close code %d, want 1006 (no close frame)", code)
	}
	// The live peer has answered more pings than fit in pongWait and is
	// still relayed to: they come pingInterval apart at the least, so
	// this many (a fifth more than fit) took it a second past pongWait,
	// where one whose pongs kept nothing open was dropped.
	for range int(e.s.pongWait/e.s.pingInterval) * 6 / 5 {
		select {
		case <-pings:
		case <-time.After(testDeadline):
			t.Fatal("no ping")
		}
	}
	// A client's ping is answered (by the writer goroutine).
	pongs := make(chan string, 1)
	live.SetPongHandler(func(data string) error { pongs <- data; return nil })
	if err := live.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(testDeadline)); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-pongs:
		if got != "are you there" {
			t.Fatalf("pong %q", got)
		}
	case <-time.After(testDeadline):
		t.Fatal("no pong")
	}
	if err := other.WriteMessage(websocket.TextMessage, []byte("still there?")); err != nil {
		t.Fatal(err)
	}
	select {
	case msg, ok := <-received:
		if !ok || msg != "still there?" {
			t.Fatalf("live peer: %q %v", msg, ok)
		}
	case <-time.After(testDeadline):
		t.Fatal("live peer got nothing")
	}
}
