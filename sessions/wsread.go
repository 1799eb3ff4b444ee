package sessions

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/fasthttp/websocket"
)

// The edge's side of WebSocket framing for reading (RFC 6455 5.2–5.5):
// client frames, masked, parsed from a pooled buffer that a reader holds
// only while it runs.
//
// Why not the library's reader (fasthttp/websocket's NextReader): it keeps
// a read buffer in every connection for the connection's life and hides
// whether bytes wait in it, so a reader could never tell that its
// connection has nothing left to read and let its goroutine go
// (participant.park); and it allocates once per message. The handshake is
// still the library's (Server.serveWebSocket).

// wsReadBufferSize is the socket read buffer of a running reader (pooled
// with it): a dozen small frames of a burst come in one read, a large
// frame's payload is read past it, straight into its frame. The size the
// library's reader kept in every connection: a reader that lingers holds
// what every connection held before.
const wsReadBufferSize = 1 << 10

// maxControlPayload bounds a control frame's payload (RFC 6455 5.5).
const maxControlPayload = 125

// wsContinuation is the opcode of a data frame continuing a message.
const wsContinuation = 0

// errPark: the connection has nothing to read, between messages: the
// reader may let its goroutine go (participant.park).
var errPark = errors.New("idle")

// errSilent: the peer sent no frame (not even a pong) for pongWait.
var errSilent = errors.New("peer silent")

// errPeerClosed: the peer sent its close frame (answered by the writer).
var errPeerClosed = errors.New("closed by peer")

// wsReader reads one participant's frames while its reader runs: it is
// taken from the Server's pool when a reader starts and returned when it
// parks, so nothing of it is kept while the participant is idle (a reader
// parks only between messages with no byte unread).
type wsReader struct {
	p   *participant
	buf [wsReadBufferSize]byte
	r   int // buf[r:w] read from the socket, not parsed yet
	w   int
	// msg is the data message being assembled from its fragments; nil
	// between messages. held is what its frames' announced lengths took
	// of the edge's incoming budget (sendbudget.go).
	msg  *frame
	held int64
	// hijacked, until it has nothing more, is fasthttp's view of the
	// socket: bytes a client sent right behind its handshake (RFC 6455
	// says wait for the 101; some do not) wait in fasthttp's reader.
	hijacked net.Conn
	// discard: the connection is closing after a refusal (1009, 1002):
	// what the peer still sends is read and dropped until it closes, so
	// that unread data does not make the kernel reset the connection and
	// destroy the close frame on its way.
	discard bool
	noPark  bool // parking failed: block in reads until a frame comes
	heard   bool // a frame came while this reader ran: it lingers before parking

	// tryFn is tryRead bound to this reader, made once with it: the
	// non-blocking read passes it to RawConn.Read without allocating.
	tryFn  func(fd uintptr) bool
	tryDst []byte
	tryN   int
	tryErr error
}

// getReader takes a reader for p from the pool.
func (s *Server) getReader(p *participant, hijacked net.Conn) *wsReader {
	rd, _ := s.readers.Get().(*wsReader)
	if rd == nil {
		rd = new(wsReader)
		rd.tryFn = rd.tryRead
	}
	rd.p, rd.hijacked = p, hijacked
	return rd
}

// release puts rd back in the pool, with what it holds released.
func (rd *wsReader) release() {
	rd.dropMsg()
	s := rd.p.srv
	// Reset field by field: the buffer's bytes need no clearing.
	rd.p, rd.r, rd.w, rd.msg, rd.hijacked = nil, 0, 0, nil, nil
	rd.discard, rd.noPark, rd.heard, rd.tryDst, rd.tryN, rd.tryErr = false, false, false, nil, 0, nil
	s.readers.Put(rd)
}

// next reads and acts on one frame. It returns errPark when the connection
// is idle between messages, errPeerClosed after the peer's close frame,
// and any read error.
func (rd *wsReader) next() error {
	p := rd.p
	if rd.discard {
		rd.r, rd.w = 0, 0
		_, err := rd.read(rd.buf[:], false)
		return err
	}
	if err := rd.need(2, rd.msg == nil); err != nil {
		return err
	}
	b0, b1 := rd.buf[rd.r], rd.buf[rd.r+1]
	fin, op, length7 := b0&0x80 != 0, int(b0&0x0f), b1&0x7f

	// Every problem of the first two bytes at once, as the library
	// reports them, before waiting for the rest of the header.
	var problems []string
	// No extension is negotiated (permessage-deflate included), so no
	// RSV bit may be set.
	if b0&0x40 != 0 {
		problems = append(problems, "RSV1 set")
	}
	if b0&0x20 != 0 {
		problems = append(problems, "RSV2 set")
	}
	if b0&0x10 != 0 {
		problems = append(problems, "RSV3 set")
	}
	switch op {
	case websocket.CloseMessage, websocket.PingMessage, websocket.PongMessage:
		if length7 > maxControlPayload {
			problems = append(problems, "len > 125 for control")
		}
		if !fin {
			problems = append(problems, "FIN not set on control")
		}
	case websocket.TextMessage, websocket.BinaryMessage:
		if rd.msg != nil {
			problems = append(problems, "data before FIN")
		}
	case wsContinuation:
		if rd.msg == nil {
			problems = append(problems, "continuation after FIN")
		}
	default:
		problems = append(problems, "bad opcode "+strconv.Itoa(op))
	}
	if b1&0x80 == 0 {
		problems = append(problems, "bad MASK") // RFC 6455 5.1: clients mask every frame
	}
	if problems != nil {
		rd.refuse(websocket.CloseProtocolError, joinProblems(problems))
		return nil
	}

	head := 2 + 4 // the mask key follows the length
	switch length7 {
	case 126:
		head += 2
	case 127:
		head += 8
		// RFC 6455 5.2: a 64-bit length has its top bit 0. Refused as
		// soon as it is read, as the library's reader does.
		if err := rd.need(2+8, false); err != nil {
			return err
		}
		if rd.buf[rd.r+2]&0x80 != 0 {
			rd.refuse(websocket.CloseProtocolError, "bad length")
			return nil
		}
	}
	if err := rd.need(head, false); err != nil {
		return err
	}
	h := rd.buf[rd.r : rd.r+head]
	length := uint64(length7)
	switch length7 {
	case 126:
		length = uint64(binary.BigEndian.Uint16(h[2:]))
	case 127:
		length = binary.BigEndian.Uint64(h[2:])
	}
	key := [4]byte(h[head-4:])
	rd.r += head
	p.lastFrame.Store(time.Now().UnixNano())
	rd.heard = true
	rd.noPark = false // try parking again at the next boundary

	if op >= websocket.CloseMessage {
		n := int(length)
		if err := rd.need(n, false); err != nil {
			return err
		}
		payload := rd.buf[rd.r : rd.r+n]
		rd.r += n
		maskBytes(payload, key)
		if err := rd.control(op, payload); err != nil {
			return err
		}
		// A ping or pong costs a read and, for a ping, a pong written
		// back, as a message to nobody does: unpaced, a client sending
		// pings as fast as its socket took them kept an edge core busy
		// on its own, the flood the fan-out pace closed for messages
		// (TestControlFrameFloodIsPaced).
		p.paceFrame(fanoutCost(n, 1), time.Now())
		return nil
	}

	if p.stopping() {
		// Closing: data is dropped until the peer's close frame, a
		// frame begun now unread (one begun before is dropped whole
		// once it has come: participant.received).
		if rd.msg != nil && fin {
			rd.dropMsg()
		} else if rd.msg == nil && !fin {
			rd.msg = p.srv.frames.get() // only marks a message in progress
		}
		if err := rd.skip(length); err != nil {
			return err
		}
		p.paceFrame(fanoutCost(0, 1), time.Now())
		return nil
	}
	if op != wsContinuation {
		rd.msg = p.srv.frames.get()
		rd.msg.kind = op
	}
	// The limit is checked on the announced length, before reading a
	// byte of it: a peer cannot make the edge buffer more than
	// max_message_bytes.
	if length > uint64(p.srv.cfg.MaxMessageBytes-len(rd.msg.payload())) {
		rd.refuse(closeTooBig, "message too big")
		return nil
	}
	// Taken from the edge's incoming budget for as long as the message
	// is being received: the payload is made room for before it comes.
	// The connection's share of it, as a send queue's of the send budget
	// (sendbudget.go): connections holding messages half-sent stop there,
	// and what they leave free takes the messages that arrive whole.
	if !p.srv.incoming.tryTakeShareHeld(rd.held, int64(length), nil) {
		p.srv.metrics.incomingRefused.Inc()
		rd.refuse(closeTryAgainLater, "edge busy: too many messages arriving at once")
		return nil
	}
	rd.held += int64(length)
	if err := rd.payload(rd.msg, int(length), key); err != nil {
		return err
	}
	if !fin {
		// A fragment costs a read, as a message to nobody does (its
		// bytes are paid with its message): paced only once whole, a
		// message of empty fragments without end kept an edge core busy
		// (TestFragmentFloodIsPaced).
		p.paceFrame(fanoutCost(0, 1), time.Now())
		return nil
	}
	f := rd.msg
	// RFC 6455 8.1: a text message that is not UTF-8 fails the
	// connection. Relayed, it would fail the connection of every
	// browser it reached: one participant could end a session's.
	if f.kind == websocket.TextMessage && !utf8.Valid(f.payload()) {
		rd.refuse(websocket.CloseInvalidFramePayloadData, "invalid utf8 payload in text message")
		return nil
	}
	rd.msg = nil
	p.srv.incoming.give(rd.held)
	rd.held = 0
	now := time.Now()
	cost := p.received(f, now)
	f.release()
	p.pace(cost, now)
	return nil
}

// dropMsg releases the message being received, if any, and what it took
// of the incoming budget.
func (rd *wsReader) dropMsg() {
	if rd.msg != nil {
		rd.msg.release()
		rd.msg = nil
	}
	rd.p.srv.incoming.give(rd.held)
	rd.held = 0
}

// refuse closes the connection with code and reason, then drops whatever
// the peer still sends until it closes (discard).
func (rd *wsReader) refuse(code int, reason string) {
	rd.p.stop(code, reason)
	rd.discard = true
	rd.dropMsg()
}

func joinProblems(problems []string) string {
	s := problems[0]
	for _, q := range problems[1:] {
		s += ", " + q
	}
	return s
}

// control acts on a control frame (payload unmasked, ≤ 125 bytes).
func (rd *wsReader) control(op int, payload []byte) error {
	p := rd.p
	switch op {
	case websocket.PingMessage:
		if !p.stopping() {
			p.pongDue(string(payload))
		}
	case websocket.CloseMessage:
		code, text := websocket.CloseNoStatusReceived, []byte(nil)
		if len(payload) == 1 {
			// RFC 6455 5.5.1: a body begins with a two-byte code.
			rd.refuse(websocket.CloseProtocolError, "bad close payload")
			return nil
		}
		if len(payload) >= 2 {
			code, text = int(binary.BigEndian.Uint16(payload)), payload[2:]
			if !validCloseCode(code) {
				rd.refuse(websocket.CloseProtocolError, "bad close code "+strconv.Itoa(code))
				return nil
			}
			if !utf8.Valid(text) {
				rd.refuse(websocket.CloseProtocolError, "invalid utf8 payload in close frame")
				return nil
			}
		}
		// Answered with the same code (none for none), unless this is
		// the answer to our own close.
		p.stop(code, "")
		return errPeerClosed
	}
	return nil // a pong: its arrival (lastFrame) is all that counts
}

// validCloseCode reports whether a peer may send code (RFC 6455 7.4; the
// library's list).
func validCloseCode(code int) bool {
	switch code {
	case 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013:
		return true
	}
	return code >= 3000 && code <= 4999
}

// payload appends the frame's n payload bytes to f, unmasked. A large
// remainder is read straight into f, not through the read buffer.
func (rd *wsReader) payload(f *frame, n int, key [4]byte) error {
	start := len(f.buf)
	f.buf = slices.Grow(f.buf, n)[:start+n]
	dst := f.buf[start:]
	for got := 0; got < n; {
		if rd.r == rd.w {
			if n-got >= wsReadBufferSize/2 {
				m, err := rd.read(dst[got:], false)
				got += m
				if err != nil {
					return err
				}
				continue
			}
			if err := rd.fill(false); err != nil {
				return err
			}
		}
		c := copy(dst[got:], rd.buf[rd.r:rd.w])
		rd.r += c
		got += c
	}
	maskBytes(dst, key)
	return nil
}

// skip reads past n payload bytes.
func (rd *wsReader) skip(n uint64) error {
	for n > 0 {
		if rd.r == rd.w {
			if err := rd.fill(false); err != nil {
				return err
			}
		}
		c := min(n, uint64(rd.w-rd.r))
		rd.r += int(c)
		n -= c
	}
	return nil
}

// need makes n bytes (n ≤ the buffer) readable at buf[r:]. boundary: no
// message is in progress, so an idle connection may park here.
func (rd *wsReader) need(n int, boundary bool) error {
	for rd.w-rd.r < n {
		if err := rd.fill(boundary && rd.r == rd.w); err != nil {
			return err
		}
	}
	return nil
}

// fill reads more into the buffer, moving what is unread to its start
// first.
func (rd *wsReader) fill(boundary bool) error {
	if rd.r > 0 {
		rd.w = copy(rd.buf[:], rd.buf[rd.r:rd.w])
		rd.r = 0
	}
	n, err := rd.read(rd.buf[rd.w:], boundary)
	rd.w += n
	return err
}

// read reads from the socket into dst. At a boundary (no message in
// progress, nothing unread) of a participant that may park, it returns
// errPark when nothing comes: at once if no frame came while this reader
// ran, else after lingering (errSilent once the peer has been silent for
// pongWait). Otherwise it blocks until the deadline the participant's state
// calls for: closing, until the close handshake's end (closeDeadline); else
// pongWait after the last frame.
func (rd *wsReader) read(dst []byte, boundary bool) (int, error) {
	p := rd.p
	s := p.srv
	if rd.hijacked != nil {
		if n, ok, err := rd.readHijacked(dst); ok {
			return n, err
		}
	}
	stopping := p.stopping()
	silentAt := time.Unix(0, p.lastFrame.Load()).Add(s.pongWait)
	if boundary && !stopping && !rd.noPark && p.parkable() {
		now := time.Now()
		if !now.Before(silentAt) {
			return 0, errSilent
		}
		if rd.heard && s.readerLinger > 0 {
			return rd.linger(dst, now, silentAt)
		}
		// This read does not wait: any deadline not passed yet will do
		// (the linger's, most often), and a parked reader's silence is
		// its ping timer's to notice (participant.pingDue).
		if d := p.readDeadline; d != 0 && d <= time.Now().UnixNano() {
			if err := p.setReadDeadline(time.Time{}); err != nil {
				return 0, err
			}
		}
		n, err := rd.readNow(dst)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The deadline left by the linger passed between the check
			// above and this read (a frame that came just as the linger
			// ended): none, and again. Ending here closed a live
			// participant (bench/edge-direct.sh load-raw).
			if err := p.setReadDeadline(time.Time{}); err != nil {
				return 0, err
			}
			n, err = rd.readNow(dst)
		}
		if n > 0 || !errors.Is(err, errWouldBlock) {
			return n, err
		}
		return 0, errPark
	}
	deadline := silentAt
	if stopping {
		deadline = p.closeDeadline(time.Now())
	}
	if err := p.setReadDeadline(deadline); err != nil {
		return 0, err
	}
	n, err := p.raw.Read(dst)
	if stopping && n > 0 {
		// Closing, what comes is dropped (discard, skip), but each read
		// costs as a message to nobody of what it read: unpaced, a
		// client refused 1009 had 2.2 GB read and dropped in the close
		// handshake's 2 s (TestFloodWhileClosingIsPaced).
		p.paceFrame(fanoutCost(n, 1), time.Now())
	}
	return n, err
}

// linger blocks in a read until readerLinger after the last frame: a
// participant that has just sent is likely to send again soon (typing, a
// cursor moving), and waking a parked reader costs more than keeping this
// one blocked (an epoll_ctl, a hop through the poller's goroutine, a
// goroutine start: +30 % edge CPU and +0.08 ms p50 at 1 msg/s per
// participant when every reader parked between msgs, bench/RESULTS.md).
// A timeout is errPark.
func (rd *wsReader) linger(dst []byte, now, silentAt time.Time) (int, error) {
	p := rd.p
	s := p.srv
	until := time.Unix(0, p.lastFrame.Load()).Add(s.readerLinger)
	if silentAt.Before(until) {
		until = silentAt
	}
	// A deadline set by an earlier linger, still between half and all of
	// readerLinger away, is kept: one timer update less per msg of a
	// participant that keeps sending.
	if d := p.readDeadline; d == 0 || d < now.Add(s.readerLinger/2).UnixNano() || d > until.UnixNano() {
		if err := p.setReadDeadline(until); err != nil {
			return 0, err
		}
	}
	n, err := p.raw.Read(dst)
	if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		if !time.Now().Before(silentAt) {
			return 0, errSilent
		}
		// Parking sees a stop that came meanwhile (the writer's close
		// deadline may be what passed) and reads on.
		return 0, errPark
	}
	return n, err
}

// readNow reads what the socket holds without waiting: errWouldBlock when
// it holds nothing, io.EOF when the peer has closed.
func (rd *wsReader) readNow(dst []byte) (int, error) {
	rd.tryDst = dst
	err := rd.p.rc.Read(rd.tryFn)
	n, rerr := rd.tryN, rd.tryErr
	rd.tryDst, rd.tryN, rd.tryErr = nil, 0, nil
	switch {
	case err != nil:
		return 0, err // closed
	case n > 0:
		return n, nil
	case rerr != nil:
		return 0, rerr
	}
	return 0, io.EOF
}

// readHijacked reads what fasthttp's reader still holds (ok), or finds it
// empty: from then on the socket is read directly (ok false). With the
// read deadline in the past, fasthttp's reader returns what it buffered
// and the socket returns a timeout at once, without reading a byte.
func (rd *wsReader) readHijacked(dst []byte) (n int, ok bool, err error) {
	if err := rd.p.setReadDeadline(time.Unix(1, 0)); err != nil {
		return 0, true, err
	}
	n, err = rd.hijacked.Read(dst)
	if n > 0 {
		return n, true, nil
	}
	rd.hijacked = nil
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, false, nil
	}
	return 0, true, err
}

// maskBytes applies (and so removes) a client frame's mask to b, which
// starts at the payload's first byte.
func maskBytes(b []byte, key [4]byte) {
	k := uint64(binary.LittleEndian.Uint32(key[:]))
	k |= k << 32
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^k)
	}
	for ; i < len(b); i++ {
		b[i] ^= key[i&3]
	}
}
