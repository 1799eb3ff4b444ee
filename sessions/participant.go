package sessions

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
)

// Close codes the edge sends (DESIGN.md, "Close codes").
const (
	// closePolicy refuses a join the edge will not take: the session is at
	// max_participants.
	closePolicy = websocket.ClosePolicyViolation // 1008
	// closeTooBig closes a participant that sent a frame over max_message_bytes.
	closeTooBig = websocket.CloseMessageTooBig // 1009
	// closeServiceRestart closes everyone on Shutdown: reconnect through the
	// balancer, which routes to the session's new owner.
	closeServiceRestart = websocket.CloseServiceRestart // 1012
	// closeTryAgainLater closes a slow consumer whose send queue was full.
	closeTryAgainLater = websocket.CloseTryAgainLater // 1013
)

// participant is one WebSocket connection joined (or joining) a session.
// Its reader goroutine (run, on the connection's own goroutine) owns it and
// starts, stops and waits for its one writer goroutine; the hub only
// enqueues frames to it.
type participant struct {
	srv      *Server
	conn     *websocket.Conn
	joinInfo // who it is and how it speaks (v1.go); set before run
	// admitted: the join was counted in its shard's admitting (owner.go)
	// and hub.join uncounts it.
	admitted bool
	// raw is the TCP connection under conn. fasthttp hands the handler a
	// wrapper whose Close does nothing (fasthttp closes the socket when the
	// handler returns), so waking a blocked reader needs the real one.
	raw net.Conn
	// session is set by hub.join before the reader relays anything and read
	// by the reader goroutine only.
	session *session
	// send is the bounded outbound queue, cfg.SendQueue frames; each queued
	// frame holds a reference released by the writer (or by run on exit).
	send chan *frame
	// pong holds the payload of the latest ping from the peer until the
	// writer answers it (RFC 6455 5.5.3 allows answering only the latest).
	// The reader must not write the pong itself: the writer's frames
	// bypass the library's write lock, and the library's pong would cut
	// the deadline of a frame write in progress to its own 1s.
	pong chan string
	// quit is closed by the first stop; code and reason are written before
	// and read by the writer after.
	quit    chan struct{}
	stopped atomic.Bool
	code    int // close code to send; 0: send none (the peer closed, or the socket broke)
	reason  string
}

func newParticipant(s *Server, conn *websocket.Conn) *participant {
	return &participant{
		srv:  s,
		conn: conn,
		raw:  rawConn(conn.NetConn()),
		send: make(chan *frame, s.cfg.SendQueue),
		pong: make(chan string, 1),
		quit: make(chan struct{}),
	}
}

// stop asks the participant to close with code (0: without a close frame).
// Only the first call counts; it reports whether it was the first. It never
// blocks, so the hub may call it under a session lock.
func (p *participant) stop(code int, reason string) bool {
	if !p.stopped.CompareAndSwap(false, true) {
		return false
	}
	p.code, p.reason = code, reason
	close(p.quit)
	return true
}

func (p *participant) stopping() bool { return p.stopped.Load() }

// run serves the connection until it closes: it starts the writer, joins
// the session of key and reads frames into the hub. On return the
// participant has left its session, its writer has stopped, its queue is
// released and the socket is closed.
func (p *participant) run(key []byte) {
	s := p.srv
	p.conn.SetReadLimit(int64(s.cfg.MaxMessageBytes))
	p.conn.SetPongHandler(func(string) error {
		p.extendReadDeadline()
		return nil
	})
	p.conn.SetPingHandler(func(data string) error {
		p.extendReadDeadline()
		// Only this goroutine sends on pong, so after emptying it there
		// is room.
		select {
		case <-p.pong:
		default:
		}
		p.pong <- data
		return nil
	})
	p.extendReadDeadline()

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		p.writeLoop()
	}()

	if err := s.hub.join(key, p); errors.Is(err, errSessionMoved) {
		// A drain handed the session on during the handshake: reconnect
		// through a balancer, which finds its new edge.
		p.stop(closeServiceRestart, err.Error())
	} else if err != nil {
		// Refused after the upgrade: browsers cannot read an HTTP error body
		// from a failed handshake, but they do get a close code and reason.
		p.stop(closePolicy, err.Error())
	} else if s.joined != nil {
		s.joined(string(key))
	}

	err := p.readLoop()
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &ce):
		p.stop(0, "") // the peer closed; the library has answered its close frame
	case errors.Is(err, websocket.ErrReadLimit):
		// The library has sent 1009 already; stop records why.
		p.stop(closeTooBig, "message too big")
	default:
		p.stop(0, "") // timeout, reset, EOF, or the end of our own close handshake
	}
	s.hub.leave(p)
	<-writerDone
	// leave has returned, so nothing is enqueued any more.
	for {
		select {
		case f := <-p.send:
			f.release()
			continue
		default:
		}
		break
	}
	if errors.Is(err, websocket.ErrReadLimit) {
		p.linger()
	}
	_ = p.raw.Close()
}

// readLoop reads data frames and hands each to the hub until the
// connection fails or, once stopped, until the peer answers the close.
func (p *participant) readLoop() error {
	if p.v1 {
		return p.readLoopV1()
	}
	s := p.srv
	for {
		kind, r, err := p.conn.NextReader()
		if err != nil {
			return err
		}
		if p.stopping() {
			continue // closing: discard until the peer's close frame
		}
		p.extendReadDeadline()
		f := s.frames.get()
		f.kind = kind
		if err := readFrame(f, r); err != nil {
			f.release()
			return err
		}
		f.encode()
		f.readAt = time.Now()
		s.metrics.messages.Inc()
		// A viewer's frames are dropped: raw mode has no envelope to
		// refuse them with, and closing would cost a viewer its view.
		if p.session != nil && !p.viewer {
			s.hub.broadcast(p, f)
		}
		f.release()
	}
}

// readFrame reads one whole message into f's buffer. The read limit set on
// the connection bounds it to max_message_bytes.
func readFrame(f *frame, r io.Reader) error {
	for {
		if len(f.buf) == cap(f.buf) {
			f.grow()
		}
		n, err := r.Read(f.buf[len(f.buf):cap(f.buf)])
		f.buf = f.buf[:len(f.buf)+n]
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// writeLoop writes queued frames in order and pings every pingInterval. On
// stop it sends the close frame and bounds the close handshake.
func (p *participant) writeLoop() {
	s := p.srv
	ping := time.NewTicker(s.pingInterval)
	defer ping.Stop()
	for {
		// A stop wins over queued frames: a slow consumer or a draining
		// edge should not first flush a full queue.
		select {
		case <-p.quit:
			p.closeHandshake()
			return
		default:
		}
		select {
		case f := <-p.send:
			if f.batch != nil {
				if !p.writeBatch(f) {
					return
				}
				continue
			}
			// The frame is written as the reader encoded it, straight to
			// the socket, bypassing the library's writer (which would copy
			// it into a per-connection buffer, and cost two allocations per
			// frame larger than that buffer in its writev path).
			//
			// Point of risk: the library still writes control frames (the
			// close echo, 1009, protocol errors: all ending the connection)
			// from the reader goroutine, under its own lock
			// that this write does not take. They cannot interleave with
			// this frame because both are single Write calls on one
			// *net.TCPConn, and the runtime holds the socket's write lock for
			// a whole Write (internal/poll.FD.Write). Only this goroutine
			// writes data frames, so frames stay in queue order. A failed or
			// timed-out partial write ends the connection (broken).
			_ = p.raw.SetWriteDeadline(time.Now().Add(s.writeWait))
			_, err := p.raw.Write(f.wire())
			if err == nil {
				s.metrics.lag.Observe(time.Since(f.readAt).Seconds())
			}
			f.release()
			if err != nil {
				p.broken()
				return
			}
		case data := <-p.pong:
			if err := p.conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(s.writeWait)); err != nil {
				p.broken()
				return
			}
		case <-ping.C:
			if err := p.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.writeWait)); err != nil {
				p.broken()
				return
			}
		case <-p.quit:
			p.closeHandshake()
			return
		}
	}
}

// closeHandshake sends the close frame, if any, and gives the peer
// closeWait to answer it; the reader sees the answer (or the deadline) and
// ends the connection. Closing the socket at once instead could reset it
// and lose the close frame on its way.
//
// The close frame gets writeWait like any frame: it queues behind data the
// peer has not read yet (a slow consumer's socket buffer is full), and
// giving up early would close without telling the peer why.
func (p *participant) closeHandshake() {
	s := p.srv
	if p.code != 0 {
		_ = p.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(p.code, p.reason), time.Now().Add(s.writeWait))
	}
	_ = p.raw.SetReadDeadline(time.Now().Add(s.closeWait))
}

// broken handles a failed write: the socket is unusable, so the reader is
// woken by closing it.
func (p *participant) broken() {
	p.stop(0, "")
	_ = p.raw.Close()
}

// rawConn unwraps fasthttp's hijacked connection.
func rawConn(c net.Conn) net.Conn {
	if u, ok := c.(interface{ UnsafeConn() net.Conn }); ok {
		return u.UnsafeConn()
	}
	return c
}

// extendReadDeadline keeps a live peer's read deadline pongWait ahead. A
// stopped participant keeps its close-handshake deadline; the second check
// undoes an extension that raced with stop.
func (p *participant) extendReadDeadline() {
	if p.stopping() {
		return
	}
	_ = p.raw.SetReadDeadline(time.Now().Add(p.srv.pongWait))
	if p.stopping() {
		_ = p.raw.SetReadDeadline(time.Now().Add(p.srv.closeWait))
	}
}

// linger reads and discards what the peer still sends, until it closes or
// closeWait passes. After a frame over the limit the rest of that frame is
// still unread; closing with unread data makes the kernel send a reset,
// which can destroy the 1009 close frame before the peer reads it.
func (p *participant) linger() {
	_ = p.raw.SetReadDeadline(time.Now().Add(p.srv.closeWait))
	_, _ = io.Copy(io.Discard, p.conn.NetConn()) // through fasthttp's buffer
}
