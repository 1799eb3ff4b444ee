package sessions

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
)

// TestIdleParticipantsHoldNoGoroutine: idle participants, raw and v1, cost
// no goroutine (their readers park), and a parked participant still gets
// and relays frames, then parks again. Before the edge read frames itself,
// every participant kept a reader goroutine blocked in its read (1.0 per
// participant, BenchmarkIdleParticipant).
func TestIdleParticipantsHoldNoGoroutine(t *testing.T) {
	if !parkSupported {
		t.Skip("readers park on Linux only")
	}
	const n = 100
	e := startEdge(t, configs.Edge{}, nil)
	base := runtime.NumGoroutine()
	conns := make([]net.Conn, 0, n)
	for i := range n {
		if i%2 == 0 {
			conns = append(conns, rawJoinKey(t, e, "raw"))
		} else {
			conns = append(conns, rawJoinV1(t, e, "v1"))
		}
	}
	e.waitIdle(t, n)
	// Every reader is parked (waitIdle); fasthttp's idle workers and the
	// poller are all that may have come since.
	if grew := runtime.NumGoroutine() - base; grew >= n/2 {
		t.Fatalf("%d idle participants hold %d goroutines", n, grew)
	}

	// A parked raw participant's frame reaches the others, whose readers
	// are parked too; then everyone parks again.
	if _, err := conns[0].Write(appendClientFrame(nil, []byte("wake up"))); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conns[2])
	if kind, got := readServerFrame(t, br); kind != websocket.BinaryMessage || string(got) != "wake up" {
		t.Fatalf("got kind %d %q", kind, got)
	}
	e.waitIdle(t, n)
}

// readServerFrame reads one unmasked server frame (payload < 64 KiB).
func readServerFrame(t testing.TB, br *bufio.Reader) (kind int, payload []byte) {
	t.Helper()
	var h [4]byte
	if _, err := io.ReadFull(br, h[:2]); err != nil {
		t.Fatal(err)
	}
	n := int(h[1] & 0x7f)
	if n == 126 {
		if _, err := io.ReadFull(br, h[2:4]); err != nil {
			t.Fatal(err)
		}
		n = int(binary.BigEndian.Uint16(h[2:4]))
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		t.Fatal(err)
	}
	return int(h[0] & 0x0f), payload
}

// clientFrame is a masked client frame with any header bits.
func clientFrame(b0 byte, masked bool, payload []byte) []byte {
	key := [4]byte{0x11, 0x22, 0x33, 0x44}
	out := []byte{b0}
	mask := byte(0)
	if masked {
		mask = 0x80
	}
	switch {
	case len(payload) < 126:
		out = append(out, mask|byte(len(payload)))
	case len(payload) <= 0xffff:
		out = append(out, mask|126, byte(len(payload)>>8), byte(len(payload)))
	default:
		out = append(out, mask|127)
		out = binary.BigEndian.AppendUint64(out, uint64(len(payload)))
	}
	if !masked {
		return append(out, payload...)
	}
	out = append(out, key[:]...)
	for i, c := range payload {
		out = append(out, c^key[i%4])
	}
	return out
}

// closeOf reads server frames until a close frame and returns its code
// (1005 for none) and reason.
func closeOf(t testing.TB, c net.Conn) (int, string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(testDeadline))
	br := bufio.NewReader(c)
	for {
		kind, payload := readServerFrame(t, br)
		if kind != websocket.CloseMessage {
			continue
		}
		if len(payload) < 2 {
			return websocket.CloseNoStatusReceived, ""
		}
		return int(binary.BigEndian.Uint16(payload)), string(payload[2:])
	}
}

// TestReaderRefusesBadFrames: frames RFC 6455 forbids a client to send
// close the connection with 1002 and the reason, as the library's reader
// did; the session's others are not affected.
func TestReaderRefusesBadFrames(t *testing.T) {
	for _, tc := range []struct {
		name, reason string
		frames       []byte
	}{
		{"unmasked", "bad MASK", clientFrame(0x82, false, []byte("x"))},
		{"reserved bits", "RSV1 set, RSV2 set", clientFrame(0xe2, true, []byte("x"))},
		{"bad opcode", "bad opcode 3", clientFrame(0x83, true, []byte("x"))},
		{"long control", "len > 125 for control", clientFrame(0x89, true, make([]byte, 126))},
		{"fragmented control", "FIN not set on control", clientFrame(0x09, true, nil)},
		{"continuation first", "continuation after FIN", clientFrame(0x80, true, []byte("x"))},
		{"data inside a message", "data before FIN", append(clientFrame(0x02, true, []byte("a")), clientFrame(0x82, true, []byte("b"))...)},
		{"length with its top bit", "bad length", []byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0}}, // refused before its mask key
		{"bad close code", "bad close code 1005", clientFrame(0x88, true, []byte{0x03, 0xed})},
		{"close reason not UTF-8", "invalid utf8 payload in close frame", clientFrame(0x88, true, []byte{0x03, 0xe8, 0xff})},
		{"close body of one byte", "bad close payload", clientFrame(0x88, true, []byte{0x03})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEdge(t, configs.Edge{}, nil)
			bad := rawJoinKey(t, e, "s")
			other := e.join(t, "s")
			if _, err := bad.Write(tc.frames); err != nil {
				t.Fatal(err)
			}
			if code, reason := closeOf(t, bad); code != websocket.CloseProtocolError || reason != tc.reason {
				t.Fatalf("close %d %q, want 1002 %q", code, reason, tc.reason)
			}
			// Nothing of the refused frames was relayed; the session goes on.
			third := e.join(t, "s")
			if err := third.WriteMessage(websocket.TextMessage, []byte("after")); err != nil {
				t.Fatal(err)
			}
			if _, data, err := other.ReadMessage(); err != nil || string(data) != "after" {
				t.Fatalf("other got %q, %v", data, err)
			}
		})
	}
}

// TestTextNotUTF8Refused: a text message that is not UTF-8 closes its
// sender with 1007 (RFC 6455 8.1) and reaches no one, whole or in
// fragments; binary messages carry any bytes. The edge relayed it as it
// came, and every browser that got it would have failed its own
// connection: one participant could end a session's browsers.
func TestTextNotUTF8Refused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		frames []byte
	}{
		{"whole", clientFrame(0x81, true, []byte{'a', 0xff})},
		{"surrogate", clientFrame(0x81, true, []byte{0xed, 0xa0, 0x80})},
		{"cut by its end", append(clientFrame(0x01, true, []byte("ok")), clientFrame(0x80, true, []byte{0xc3})...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEdge(t, configs.Edge{}, nil)
			bad := rawJoinKey(t, e, "s")
			other := e.join(t, "s")
			if _, err := bad.Write(tc.frames); err != nil {
				t.Fatal(err)
			}
			third := e.join(t, "s")
			if err := third.WriteMessage(websocket.BinaryMessage, []byte{0xff}); err != nil {
				t.Fatal(err)
			}
			if kind, data, err := other.ReadMessage(); err != nil || kind != websocket.BinaryMessage || string(data) != "\xff" {
				t.Fatalf("other got %d %q, %v: the text was relayed", kind, data, err)
			}
			if code, reason := closeOf(t, bad); code != websocket.CloseInvalidFramePayloadData || reason != "invalid utf8 payload in text message" {
				t.Fatalf("close %d %q, want 1007", code, reason)
			}
		})
	}
}

// TestReaderFragmentsAndControlFrames: a message in fragments, with a ping
// and a pong between them, is relayed whole; the ping is answered.
func TestReaderFragmentsAndControlFrames(t *testing.T) {
	e := startEdge(t, configs.Edge{MaxMessageBytes: 1 << 20}, nil)
	from := rawJoinKey(t, e, "f")
	to := e.join(t, "f")
	big := strings.Repeat("0123456789abcdef", 8<<10) // 128 KiB: read past the read buffer
	var frames []byte
	frames = append(frames, clientFrame(0x01, true, []byte("he"))...)
	frames = append(frames, clientFrame(0x89, true, []byte("ping!"))...)
	frames = append(frames, clientFrame(0x00, true, []byte("llo "))...)
	frames = append(frames, clientFrame(0x8a, true, []byte("unsolicited pong"))...)
	frames = append(frames, clientFrame(0x80, true, []byte(big))...)
	// Byte by byte: every header and payload split across reads.
	go func() {
		for i := range frames {
			if _, err := from.Write(frames[i : i+1]); err != nil {
				return
			}
			if i > 64 {
				_, _ = from.Write(frames[i+1:])
				return
			}
		}
	}()
	_ = to.SetReadDeadline(time.Now().Add(testDeadline))
	kind, data, err := to.ReadMessage()
	if err != nil || kind != websocket.TextMessage || string(data) != "hello "+big {
		t.Fatalf("kind %d, %d bytes, %v", kind, len(data), err)
	}
	_ = from.SetReadDeadline(time.Now().Add(testDeadline))
	if kind, payload := readServerFrame(t, bufio.NewReader(from)); kind != websocket.PongMessage || string(payload) != "ping!" {
		t.Fatalf("answer to ping: kind %d %q", kind, payload)
	}
}

// TestFramesBehindTheHandshake: a client that sends its first frame in
// the same write as its upgrade request (before the 101, which RFC 6455
// says to wait for) still has it relayed: it waited in fasthttp's reader,
// which the edge reads first.
func TestFramesBehindTheHandshake(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	to := e.join(t, "early")
	c, err := net.Dial("tcp", e.data)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nctstickiness: early\r\n\r\n"
	msg := append([]byte(req), clientFrame(0x81, true, []byte("first"))...)
	msg = append(msg, clientFrame(0x81, true, []byte("second"))...)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"first", "second"} {
		if _, data, err := to.ReadMessage(); err != nil || string(data) != want {
			t.Fatalf("got %q, %v; want %q", data, err, want)
		}
	}
}

// TestCloseAnswered: a close frame is answered with its code, and one
// without a code with one without.
func TestCloseAnswered(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	for _, tc := range []struct {
		payload []byte
		code    int
	}{
		{[]byte{0x03, 0xe8, 'b', 'y', 'e'}, 1000},
		{nil, websocket.CloseNoStatusReceived},
		{[]byte{0x0f, 0xa0}, 4000},
	} {
		c := rawJoinKey(t, e, "close")
		if _, err := c.Write(clientFrame(0x88, true, tc.payload)); err != nil {
			t.Fatal(err)
		}
		if code, reason := closeOf(t, c); code != tc.code || reason != "" {
			t.Fatalf("answer %d %q, want %d", code, reason, tc.code)
		}
	}
}

// TestHugeAnnouncedLengthRefused: a frame announcing 2^62 bytes is refused
// with 1009 on its header, before a byte of it is buffered.
func TestHugeAnnouncedLengthRefused(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	c := rawJoinKey(t, e, "huge")
	h := []byte{0x82, 0x80 | 127}
	h = binary.BigEndian.AppendUint64(h, 1<<62)
	h = append(h, 1, 2, 3, 4)
	if _, err := c.Write(h); err != nil {
		t.Fatal(err)
	}
	if code, reason := closeOf(t, c); code != websocket.CloseMessageTooBig || reason != "message too big" {
		t.Fatalf("close %d %q, want 1009", code, reason)
	}
}

// TestMaskBytes: the word-wide mask equals the byte-wise definition, at
// every length and alignment.
func TestMaskBytes(t *testing.T) {
	key := [4]byte{0xa1, 0xb2, 0xc3, 0xd4}
	for n := range 40 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i * 7)
		}
		got := append([]byte(nil), b...)
		maskBytes(got, key)
		for i := range b {
			if got[i] != b[i]^key[i%4] {
				t.Fatalf("length %d, byte %d", n, i)
			}
		}
	}
}

// TestLingerDeadlineNeverDropsAPeer: a frame that comes just as a reader's
// linger ends is read, not taken for a timeout. A linger's deadline, left
// on the socket, once passed between the check and the read: the edge
// closed a live participant (bench/edge-direct.sh load-raw: 1 connection
// closed early, 19 msgs lost).
func TestLingerDeadlineNeverDropsAPeer(t *testing.T) {
	e := startEdge(t, configs.Edge{}, func(s *Server) { s.readerLinger = time.Millisecond })
	from := rawJoinKey(t, e, "l")
	to := e.join(t, "l")
	const frames = 400
	go func() {
		for i := range frames {
			if _, err := from.Write(appendClientFrame(nil, []byte{byte(i), byte(i >> 8)})); err != nil {
				return
			}
			// Gaps around the linger: some frames come just as it ends.
			time.Sleep(time.Duration(500+i%7*150) * time.Microsecond)
		}
	}()
	for i := range frames {
		_, data, err := to.ReadMessage()
		if err != nil {
			t.Fatalf("frame %d: %v (the sender was dropped?)", i, err)
		}
		if len(data) != 2 || int(data[0])|int(data[1])<<8 != i {
			t.Fatalf("frame %d: got %v", i, data)
		}
	}
}

// TestStaleDeadlineNeverDropsAPeer: a reader that finds the socket's read
// deadline passed, where it saw it still ahead an instant before (the
// linger's deadline, passing between the look and the read), reads on
// instead of ending the connection. It did end it: a live participant
// closed mid-run (bench/edge-direct.sh load-raw, "raw-read: i/o timeout",
// 19 and 34 msgs lost in two runs of ~87,000; the deadline had passed
// 180 µs before the read that failed).
func TestStaleDeadlineNeverDropsAPeer(t *testing.T) {
	if !parkSupported {
		t.Skip("readers park on Linux only")
	}
	e := startEdge(t, configs.Edge{}, nil)
	from := rawJoinKey(t, e, "stale")
	to := e.join(t, "stale")
	e.waitIdle(t, 2)
	var p *participant
	e.s.mu.Lock()
	for q := range e.s.conns {
		if q.raw.RemoteAddr().String() == from.LocalAddr().String() {
			p = q
		}
	}
	e.s.mu.Unlock()
	// Parked: no reader runs, so its notes are the test's to change. The
	// socket's deadline has passed; the note says a minute ahead.
	if err := p.raw.SetReadDeadline(time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	p.readDeadline = time.Now().Add(time.Minute).UnixNano()
	p.unpark() // a reader starts (the go statement orders the writes above before it)
	e.waitIdle(t, 2)
	if _, err := from.Write(appendClientFrame(nil, []byte("still here"))); err != nil {
		t.Fatal(err)
	}
	if _, data, err := to.ReadMessage(); err != nil || string(data) != "still here" {
		t.Fatalf("got %q, %v: the participant was dropped", data, err)
	}
}

// TestRelayWithoutEpoll: when the epoll set cannot be made (out of
// descriptors), readers block in their reads as before, and frames still
// go both ways.
func TestRelayWithoutEpoll(t *testing.T) {
	e := startEdge(t, configs.Edge{}, func(s *Server) { s.pollRetryAt = time.Now().Add(time.Hour) })
	a := e.join(t, "no-epoll")
	b := e.join(t, "no-epoll")
	for i, pair := range [][2]*websocket.Conn{{a, b}, {b, a}, {a, b}} {
		if err := pair[0].WriteMessage(websocket.TextMessage, []byte{'0' + byte(i)}); err != nil {
			t.Fatal(err)
		}
		if _, data, err := pair[1].ReadMessage(); err != nil || string(data) != string(rune('0'+i)) {
			t.Fatalf("frame %d: %q, %v", i, data, err)
		}
	}
	e.s.mu.Lock()
	defer e.s.mu.Unlock()
	for p := range e.s.conns {
		if p.reader.Load() == readerParked {
			t.Fatal("a reader parked without an epoll set")
		}
	}
}
