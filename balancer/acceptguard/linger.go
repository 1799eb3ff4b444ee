package acceptguard

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// A server that closes a connection while the client may still be sending
// — after an error answer (fasthttp's 431 for a head over its buffer, a 400,
// a 413 before the body) or a refusal, or on its idle timeout — closes a
// socket with bytes unread, or one that receives more after the close, and
// the kernel answers either with a reset (RFC 9112 9.6). A client still
// writing then gets "connection reset by peer", and one that gives up on
// that error (Go's transport does) loses the answer it had been sent. So a
// Listener's connections linger before they close, as nginx
// (lingering_close) and net/http (closeWriteAndWait) do: the write side is
// shut, so the client reads the answer and the end, and what it still sends
// is read and dropped until it closes too. Bounded: lingerTime and
// lingerBytes for the drop, lingerMax connections of a Listener at once
// (beyond, a connection closes at once: a flood of bad requests must not
// hold descriptors), and none once the Listener is closed (shutdown stays
// bounded). A lingering connection keeps its slots under the caps until its
// socket is closed.
//
// A refusal (Refuse) is an answer to the client's request, so it is written
// once the request has begun to arrive: an HTTP client takes a response that
// comes before its request for a stray one on an idle connection and drops
// it (Go's transport: "unsolicited response"), and the refused client saw
// the connection fail without the 503 that says why. It waits lingerTime at
// most for the request to begin (a client that sends nothing gets the answer
// then), then lingers as above.
const (
	lingerTime  = 500 * time.Millisecond
	lingerBytes = 64 << 10
	lingerMax   = 64
)

type closeWriter interface{ CloseWrite() error }

// lingering is the connections a Listener is lingering on: at most
// lingerMax, each in a slot, so that stop can end them.
type lingering struct {
	// timeout bounds each wait of a linger: lingerTime (tests change it).
	timeout time.Duration

	mu      sync.Mutex
	slots   [lingerMax]lingerSlot
	stopped bool
	wg      sync.WaitGroup // the lingers in progress
}

// lingerSlot is one connection lingering. It is the reader that drops what
// the client still sends (up to left bytes): the drop allocates nothing.
type lingerSlot struct {
	c    net.Conn // nil: free
	left int64
	one  [1]byte // the first byte of a refused request
}

// linger lingers on c before its close, if it can (c can shut its write
// side, a slot is free, the Listener is open), and returns once the linger
// has ended; the caller then closes c. asked, when set, is written first
// if a request begins to arrive within the linger, else c is closed at
// once: the refusal of a connection the server closes unanswered (one
// ended to make room, spill.go). Without a linger it is written at once,
// as Refuse does then: a request on its way is still answered.
func (g *lingering) linger(c net.Conn, asked []byte) {
	cw, ok := c.(closeWriter)
	var s *lingerSlot
	if ok {
		s = g.take(c)
	}
	if s == nil {
		if asked != nil {
			writeRefusal(c, asked)
		}
		return
	}
	s.linger(cw, asked, asked != nil, g.timeout)
	g.give(s)
}

// take gives c a slot, or nil: every slot is taken, or the Listener is
// closed.
func (g *lingering) take(c net.Conn) *lingerSlot {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return nil
	}
	for i := range g.slots {
		if s := &g.slots[i]; s.c == nil {
			s.c = c
			g.wg.Add(1)
			return s
		}
	}
	return nil
}

func (g *lingering) give(s *lingerSlot) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s.c = nil
	g.wg.Done()
}

// stop ends every linger — its connection is closed — and waits for them;
// none starts after it.
func (g *lingering) stop() {
	var conns [lingerMax]net.Conn
	g.mu.Lock()
	g.stopped = true
	for i := range g.slots {
		conns[i] = g.slots[i].c
	}
	g.mu.Unlock()
	for _, c := range conns {
		if c != nil {
			_ = c.Close()
		}
	}
	g.wg.Wait()
}

// linger writes answer (if any) once the request has begun to arrive —
// with onlyAsked, only if it begins within timeout — shuts the write side
// and drops what else comes. It ends by its deadlines, the client's close,
// or the connection's.
func (s *lingerSlot) linger(cw closeWriter, answer []byte, onlyAsked bool, timeout time.Duration) {
	c := s.c
	if answer != nil {
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		n, err := c.Read(s.one[:])
		if n == 0 && err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return // gone, or reset: nobody to answer
		}
		if n == 0 && onlyAsked {
			return // nothing asked: nothing to answer, nor to protect
		}
		writeRefusal(c, answer)
	}
	if cw.CloseWrite() != nil {
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	s.left = lingerBytes
	_, _ = io.Copy(io.Discard, s)
}

// Read reads from the slot's connection, up to what is left to drop.
func (s *lingerSlot) Read(p []byte) (int, error) {
	if s.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.c.Read(p)
	s.left -= int64(n)
	return n, err
}

// Refuse answers a connection that will not be served with answer and
// closes it, lingering (see lingering above: the answer is written once the
// request begins to arrive) on a goroutine the Listener owns. At lingerMax,
// once the Listener is closed, or for a connection that cannot shut its
// write side, the answer is written (bounded in time) and the connection
// closed at once — one that wraps a Conn of a Listener lingers in its Close
// (RefuseServed waits for its request as well).
func (l *Listener) Refuse(c net.Conn, answer []byte) {
	cw, _ := c.(closeWriter)
	s := l.refusing(c, cw, answer)
	if s == nil {
		return
	}
	go func() {
		defer l.lingering.give(s)
		s.linger(cw, answer, false, l.lingering.timeout)
		_ = c.Close()
	}()
}

// RefuseServed refuses c, a server's wrapper of conn, one of the Listener's
// Conns (PROXY protocol; limits checked on the first read), as Refuse does:
// the answer written once the request begins to arrive, then a linger on
// conn's socket. Refuse cannot shut such a c's write side, and wrote its
// answer at once: a client that had connected and not yet sent its request
// (a preconnected or pooled socket) got an answer to nothing, which an HTTP
// client drops as a stray response on an idle connection (Go's transport:
// "unsolicited response"). It runs on the caller's goroutine — the
// server's, serving c — and returns once c is closed.
func (l *Listener) RefuseServed(c net.Conn, conn *Conn, answer []byte) {
	cw, _ := conn.Conn.(closeWriter)
	s := l.refusing(c, cw, answer)
	if s == nil {
		return
	}
	conn.NoLinger() // it lingers here, not once more in its Close
	s.linger(cw, answer, false, l.lingering.timeout)
	l.lingering.give(s)
	_ = c.Close()
}

// refusing takes a slot for c to linger in, its write side shut by cw;
// without one (cw nil, every slot taken, the Listener closed) c is
// answered and closed at once, and it is nil.
func (l *Listener) refusing(c net.Conn, cw closeWriter, answer []byte) *lingerSlot {
	var s *lingerSlot
	if cw != nil {
		s = l.lingering.take(c)
	}
	if s == nil {
		writeRefusal(c, answer)
		_ = c.Close()
	}
	return s
}

// writeRefusal writes answer, bounded in time.
func writeRefusal(c net.Conn, answer []byte) {
	_ = c.SetWriteDeadline(time.Now().Add(refusalWriteTimeout))
	_, _ = c.Write(answer)
}
