package sessions

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
)

// fuzzMaxMessage is the edge's max_message_bytes under FuzzReader: small
// enough for the fuzzer to reach, larger than the reader's buffer so that
// payloads read past it are reached too.
const fuzzMaxMessage = 3000

// wsMessage is one data message as a reader delivers it.
type wsMessage struct {
	kind    int
	payload string
}

// wsOutcome is what a reader made of a client's bytes: the messages it
// delivered, in order, and the payload of the close frame it answered
// with (nil: none, the connection just ended).
type wsOutcome struct {
	msgs  []wsMessage
	close []byte
}

func (o wsOutcome) String() string {
	s := fmt.Sprintf("%d messages", len(o.msgs))
	for i, m := range o.msgs {
		if i == 4 {
			s += " …"
			break
		}
		s += fmt.Sprintf(" [%d %.40q]", m.kind, m.payload)
	}
	if o.close == nil {
		return s + ", no close"
	}
	if len(o.close) < 2 {
		return s + ", close without code"
	}
	return s + fmt.Sprintf(", close %d %q", binary.BigEndian.Uint16(o.close), o.close[2:])
}

// FuzzReader feeds any bytes to the edge's frame reader (wsread.go) as a
// client's frames, through a real edge: a raw connection joins a session,
// writes them (right behind its upgrade request when early, so that they
// wait in fasthttp's reader), and half-closes. The messages the edge
// relays to another participant, and the close frame it answers with, must
// be what the library's reader (fasthttp/websocket, a server Conn with
// the same read limit) makes of the same bytes, but for the edge's
// documented differences (wantFromEdge). The edge's incoming budget is
// back to nothing after each connection.
func FuzzReader(f *testing.F) {
	for _, frames := range [][]byte{
		nil,
		clientFrame(0x82, true, []byte("x")),
		clientFrame(0x81, true, []byte("héllo")),
		clientFrame(0x81, true, []byte{0xff, 'a'}),
		clientFrame(0x82, true, nil),
		slices.Concat(clientFrame(0x01, true, []byte("he")), clientFrame(0x89, true, []byte("ping!")),
			clientFrame(0x00, true, []byte("ll")), clientFrame(0x8a, true, []byte("pong")), clientFrame(0x80, true, []byte("o"))),
		slices.Concat(clientFrame(0x01, true, []byte{0xc3}), clientFrame(0x80, true, []byte{0xa9})), // é split across frames
		clientFrame(0x82, true, bytes.Repeat([]byte("0123456789"), 200)),                            // read past the buffer
		clientFrame(0x82, true, make([]byte, fuzzMaxMessage+1)),                                     // too big
		slices.Concat(clientFrame(0x02, true, make([]byte, 2000)), clientFrame(0x80, true, make([]byte, 1001))),
		clientFrame(0x82, false, []byte("x")),
		clientFrame(0xc2, true, []byte("x")),
		clientFrame(0xf3, false, []byte("x")),
		clientFrame(0x89, true, make([]byte, 126)),
		clientFrame(0x09, true, nil),
		clientFrame(0x80, true, []byte("x")),
		slices.Concat(clientFrame(0x02, true, []byte("a")), clientFrame(0x82, true, []byte("b"))),
		clientFrame(0x88, true, []byte{0x03, 0xed}),
		clientFrame(0x88, true, []byte{0x03, 0xe8, 0xff}),
		clientFrame(0x88, true, []byte{0x03, 0xe8, 'b', 'y', 'e'}),
		clientFrame(0x88, true, nil),
		clientFrame(0x88, true, []byte{0x03, 0xf1}), // 1009 from the peer: echoed as it came
		slices.Concat(clientFrame(0x82, true, []byte("a")), clientFrame(0x88, true, []byte{0x0f, 0xa0}), clientFrame(0x82, true, []byte("after close"))),
		{0x82, 0x80 | 127, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, // 2^62
		{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, // 2^63: the top bit RFC 6455 says is 0
		{0x82, 0x80 | 126, 0x00, 0x05, 1, 2, 3, 4, 'a', 'b', 'c', 'd', 'e'},
		clientFrame(0x82, true, []byte("cut short"))[:9],
	} {
		f.Add(frames, false)
		f.Add(frames, true)
	}

	e := startEdge(f, configs.Edge{MaxMessageBytes: fuzzMaxMessage, SendQueue: 1 << 14}, nil)
	rig := &readerRig{e: e}
	f.Cleanup(rig.drop)
	f.Fuzz(func(t *testing.T, in []byte, early bool) {
		rig.check(t, in, early)
	})
}

// readerRig is FuzzReader's session: recv gets what the edge relays of
// each input, marker sends the mark that ends it. Made by the first check
// and after one that failed (a failed connection is not read again: the
// library panics on the thousandth read of one).
type readerRig struct {
	e             *testEdge
	sessions      int
	key           string
	recv, marker  *websocket.Conn
	markerStopped chan struct{}
}

// join opens the rig's two connections to a new session.
func (r *readerRig) join(t *testing.T) {
	t.Helper()
	r.sessions++
	r.key = fmt.Sprintf("fuzz-%d", r.sessions)
	h := http.Header{}
	h.Set("ctstickiness", r.key)
	d := websocket.Dialer{HandshakeTimeout: testDeadline}
	for _, c := range []**websocket.Conn{&r.recv, &r.marker} {
		conn, _, err := d.Dial("ws://"+r.e.data+"/ws", h)
		if err != nil {
			r.drop()
			t.Fatal(err)
		}
		*c = conn
		r.e.waitJoined(t)
	}
	// The marker gets every message relayed too: it reads them, so that
	// it is never a slow consumer.
	r.markerStopped = make(chan struct{})
	go func(marker *websocket.Conn, stopped chan<- struct{}) {
		defer close(stopped)
		for {
			if _, _, err := marker.ReadMessage(); err != nil {
				return
			}
		}
	}(r.marker, r.markerStopped)
}

// drop closes the rig's connections, if any.
func (r *readerRig) drop() {
	for _, c := range []**websocket.Conn{&r.recv, &r.marker} {
		if *c != nil {
			(*c).Close()
			*c = nil
		}
	}
	if r.markerStopped != nil {
		<-r.markerStopped
		r.markerStopped = nil
	}
}

// check is FuzzReader's check of one input: in, written by a raw
// participant (early: right behind its upgrade request), read by the
// edge, against what the library reads of it.
func (r *readerRig) check(t *testing.T, in []byte, early bool) {
	t.Helper()
	want := wantFromEdge(libraryReads(t, in, fuzzMaxMessage), in)
	if r.recv == nil {
		r.join(t)
	}
	ok := false
	defer func() {
		if !ok {
			r.drop()
		}
	}()

	var got wsOutcome
	c := dialFrames(t, r.e, r.key, in, early)
	got.close = readCloseAnswer(t, c)
	// The edge closed the socket after the participant left its
	// session: everything it relayed is queued for recv already, and
	// the mark comes after it.
	var mark [16]byte
	_, _ = rand.Read(mark[:])
	_ = r.marker.SetWriteDeadline(time.Now().Add(testDeadline))
	if err := r.marker.WriteMessage(websocket.BinaryMessage, mark[:]); err != nil {
		t.Fatal(err)
	}
	_ = r.recv.SetReadDeadline(time.Now().Add(testDeadline))
	for {
		kind, data, err := r.recv.ReadMessage()
		if err != nil {
			t.Fatalf("recv: %v (after %v)", err, got)
		}
		if kind == websocket.BinaryMessage && bytes.Equal(data, mark[:]) {
			break
		}
		if len(data) > fuzzMaxMessage {
			t.Fatalf("the edge relayed a message of %d bytes, over max_message_bytes", len(data))
		}
		got.msgs = append(got.msgs, wsMessage{kind, string(data)})
	}
	if !slices.Equal(got.msgs, want.msgs) || !bytes.Equal(got.close, want.close) {
		t.Fatalf("edge read %v\nwant       %v", got, want)
	}
	if held := r.e.s.incoming.used.Load(); held != 0 {
		t.Fatalf("incoming budget holds %d bytes after the connection ended", held)
	}
	ok = true
}

// wantFromEdge is what the edge must make of a client's bytes that the
// library made lib of; the differences are the edge's choices:
//   - a text message that is not UTF-8 closes the connection with 1007
//     (RFC 6455 8.1); the library relays it, and every browser it reached
//     would fail its connection;
//   - 1009 says why ("message too big"); the library's says nothing;
//   - a 64-bit length with its top bit set (RFC 6455 5.2: it is 0), on
//     which the library ends the connection without a word, is answered
//     1002 "bad length";
//   - a close frame with a body of one byte (RFC 6455 5.5.1: a body
//     begins with a two-byte code), which the library takes for one
//     without a body, is answered 1002 "bad close payload".
func wantFromEdge(lib libraryOutcome, in []byte) wsOutcome {
	want := wsOutcome{msgs: lib.msgs, close: lib.close}
	var ce *websocket.CloseError
	if errors.As(lib.err, &ce) && ce.Code == websocket.CloseNoStatusReceived && closeBodyLen(in) == 1 {
		return wsOutcome{msgs: lib.msgs, close: websocket.FormatCloseMessage(websocket.CloseProtocolError, "bad close payload")}
	}
	for i, m := range lib.msgs {
		if m.kind == websocket.TextMessage && !utf8.ValidString(m.payload) {
			return wsOutcome{msgs: lib.msgs[:i], close: websocket.FormatCloseMessage(websocket.CloseInvalidFramePayloadData, "invalid utf8 payload in text message")}
		}
	}
	tooBig := websocket.FormatCloseMessage(websocket.CloseMessageTooBig, "message too big")
	switch {
	case errors.Is(lib.err, websocket.ErrReadLimit) && lib.close != nil:
		want.close = tooBig
	case errors.Is(lib.err, websocket.ErrReadLimit):
		want.close = websocket.FormatCloseMessage(websocket.CloseProtocolError, "bad length")
	}
	return want
}

// closeBodyLen walks a client's frames up to its first close frame and
// returns the length of its body (-1: no close frame is whole in in).
func closeBodyLen(in []byte) int {
	for len(in) >= 2 {
		op, n, head := in[0]&0x0f, uint64(in[1]&0x7f), 2
		switch n {
		case 126:
			if len(in) < 4 {
				return -1
			}
			n, head = uint64(binary.BigEndian.Uint16(in[2:])), 4
		case 127:
			if len(in) < 10 {
				return -1
			}
			n, head = binary.BigEndian.Uint64(in[2:]), 10
		}
		if in[1]&0x80 != 0 {
			head += 4
		}
		if len(in) < head || uint64(len(in)-head) < n {
			return -1
		}
		if op == websocket.CloseMessage {
			return int(n)
		}
		in = in[head+int(n):]
	}
	return -1
}

// libraryOutcome is what the library's reader made of a client's bytes,
// and the error it ended with.
type libraryOutcome struct {
	wsOutcome
	err error
}

// libraryReads runs the library's server-side reader over in, as a
// client's frames after its handshake, with limit as its read limit.
func libraryReads(t *testing.T, in []byte, limit int) libraryOutcome {
	t.Helper()
	conn := &memConn{in: bytes.NewReader(in)}
	w := &hijackWriter{conn: conn}
	r, err := http.NewRequest(http.MethodGet, "/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	u := websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024}
	ws, err := u.Upgrade(w, r, nil)
	if err != nil {
		t.Fatalf("library upgrade: %v", err)
	}
	conn.out.Reset() // the 101
	var out libraryOutcome
	ws.SetReadLimit(int64(limit))
	for {
		kind, data, err := ws.ReadMessage()
		if err != nil {
			out.err = err
			break
		}
		out.msgs = append(out.msgs, wsMessage{kind, string(data)})
	}
	// What it wrote: pongs, then its close frame, if any.
	br := bufio.NewReader(&conn.out)
	for {
		kind, payload, err := readFrame(br)
		if err != nil {
			break
		}
		if kind == websocket.CloseMessage {
			out.close = payload
			break
		}
	}
	return out
}

// dialFrames opens a WebSocket by hand to key, writes frames (right
// behind the upgrade request when early, else once the 101 came) and
// half-closes the connection.
func dialFrames(t *testing.T, e *testEdge, key string, frames []byte, early bool) *net.TCPConn {
	t.Helper()
	nc, err := net.Dial("tcp", e.data)
	if err != nil {
		t.Fatal(err)
	}
	c := nc.(*net.TCPConn)
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(testDeadline))
	req := []byte("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nctstickiness: " + key + "\r\n\r\n")
	if early {
		req = append(req, frames...)
	}
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	// Read the head byte by byte: nothing after it may be buffered away.
	var head []byte
	one := make([]byte, 1)
	for len(head) < 4 || string(head[len(head)-4:]) != "\r\n\r\n" {
		if _, err := c.Read(one); err != nil {
			t.Fatalf("upgrade: %v after %q", err, head)
		}
		head = append(head, one[0])
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101 ")) {
		t.Fatalf("upgrade: %q", head)
	}
	e.waitJoined(t)
	if !early {
		// Refused frames are read and dropped until the peer closes, but a
		// close frame ends the reading: the rest may not be written.
		_, _ = c.Write(frames)
	}
	_ = c.CloseWrite()
	return c
}

// readCloseAnswer reads server frames until the connection ends and
// returns the close frame's payload (nil: none came).
func readCloseAnswer(t *testing.T, c net.Conn) []byte {
	t.Helper()
	br := bufio.NewReader(c)
	var closed []byte
	for {
		kind, payload, err := readFrame(br)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the edge never ended the connection: %v", err)
			}
			return closed
		}
		switch kind {
		case websocket.CloseMessage:
			if closed != nil {
				t.Fatalf("a second close frame %q", payload)
			}
			closed = payload
		case websocket.PongMessage:
		default:
			t.Fatalf("the edge sent a frame of kind %d (%q) to a raw participant alone in reading", kind, payload)
		}
	}
}

// readFrame reads one unmasked, unfragmented server frame.
func readFrame(br *bufio.Reader) (kind int, payload []byte, err error) {
	var h [8]byte
	if _, err := io.ReadFull(br, h[:2]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		if _, err := io.ReadFull(br, h[:2]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(h[:2]))
	case 127:
		if _, err := io.ReadFull(br, h[:8]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(h[:8])
	}
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("server frame of %d bytes", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		return 0, nil, err
	}
	return int(h[0] & 0x0f), payload, nil
}

// memConn is the library's connection under libraryReads: reads come from
// in, writes go to out. The library reads and writes it from one
// goroutine.
type memConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *memConn) Read(p []byte) (int, error)       { return c.in.Read(p) }
func (c *memConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// hijackWriter is the http.ResponseWriter the library upgrades: it hands
// over conn.
type hijackWriter struct {
	conn *memConn
	h    http.Header
}

func (w *hijackWriter) Header() http.Header {
	if w.h == nil {
		w.h = http.Header{}
	}
	return w.h
}
func (w *hijackWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *hijackWriter) WriteHeader(int)             {}
func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return w.conn, bufio.NewReadWriter(bufio.NewReader(w.conn), bufio.NewWriter(w.conn)), nil
}
