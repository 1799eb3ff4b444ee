package sessions

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
)

// Close codes the edge sends (the wire contract's, configs/contract.go).
const (
	// closePolicy refuses a join the edge will not take: the session is at
	// max_participants, the token was revoked.
	closePolicy = configs.ClosePolicy
	// closeTooBig closes a participant that sent a frame over max_message_bytes.
	closeTooBig = configs.CloseTooBig
	// closeServiceRestart closes everyone on Shutdown: reconnect through the
	// balancer, which routes to the session's new owner.
	closeServiceRestart = configs.CloseServiceRestart
	// closeTryAgainLater closes a slow consumer whose send queue was full.
	closeTryAgainLater = configs.CloseTryAgainLater
)

// participant is one WebSocket connection joined (or joining) a session.
// Its reader goroutine (run) owns it and waits for its writer; the hub only
// enqueues frames to it.
//
// The writer goroutine runs only while there is something to write (queued
// frames, a pong, a ping, the close frame) and ends when the queue is
// empty; the queue grows with use up to send_queue frames. An idle
// participant, most of an edge's, thus costs one goroutine (the reader, in
// its read) and no queue.
type participant struct {
	srv      *Server
	conn     *websocket.Conn
	joinInfo // who it is and how it speaks (v1.go); set before run
	// admitted: the join was counted in its shard's admitting
	// (hub.reserve) and hub.join uncounts it.
	admitted bool
	// raw is the TCP connection under conn. fasthttp hands the handler a
	// wrapper whose Close does nothing (fasthttp closes the socket when the
	// handler returns), so waking a blocked reader needs the real one.
	raw net.Conn
	// session is set by hub.join before the reader relays anything and read
	// by the reader goroutine only.
	session *session
	stopped atomic.Bool // set by the first stop

	// out is what the writer has to do, under its own lock (never held
	// while taking a session lock, nor across a write).
	out struct {
		mu sync.Mutex
		// queue is a ring of frames (head, n), each holding a reference
		// released by the writer (or by run on exit). It grows by
		// doubling up to limit frames: the bounded send queue.
		queue   []*frame
		head, n int
		limit   int
		// pong holds the payload of the latest ping from the peer until
		// the writer answers it (RFC 6455 5.5.3 allows answering only the
		// latest). The reader must not write the pong itself: the writer's
		// frames bypass the library's write lock, and the library's pong
		// would cut the deadline of a frame write in progress to its own 1s.
		pong    string
		pongDue bool
		pingDue bool
		// stopDue is set by stop with code and reason (0: close without a
		// close frame: the peer closed, or the socket broke); closing is
		// set once the writer has begun the close handshake.
		stopDue bool
		code    int
		reason  string
		closing bool
		writing bool // a writer goroutine runs
		ended   bool // run has ended: no writer starts any more
		// greeting: the 101 is not written yet (run writes it once the
		// participant has joined); frames queue, no writer starts.
		greeting bool
	}
	writers sync.WaitGroup // the writer goroutine, while it runs
	// writeFn and pingFn are p.writeLoop and p.pingDue as func values,
	// made once: `go p.writeFn()` then allocates nothing.
	writeFn, pingFn func()
	pinger          *time.Timer // makes a ping due every pingInterval
}

func newParticipant(s *Server, conn *websocket.Conn) *participant {
	p := &participant{srv: s, conn: conn, raw: rawConn(conn.NetConn())}
	p.out.limit = s.cfg.SendQueue
	p.out.greeting = true
	p.writeFn, p.pingFn = p.writeLoop, p.pingDue
	return p
}

// enqueue adds f (one reference of the caller's, taken over) to the send
// queue without blocking; false when the queue is full (the caller then
// releases f: p is a slow consumer). The hub calls it under a session lock.
func (p *participant) enqueue(f *frame) bool {
	o := &p.out
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == o.limit {
		return false
	}
	if o.n == len(o.queue) {
		// Idle participants never get here; a busy one settles at the
		// depth its bursts reach.
		o.queue, o.head = growRing(o.queue, o.head, o.n, min(max(2*len(o.queue), 4), o.limit)), 0
	}
	o.queue[(o.head+o.n)%len(o.queue)] = f
	o.n++
	p.wakeWriter()
	return true
}

// popFrame takes the oldest frame off the queue (not empty). Called with
// out.mu held, or once no writer can run.
func (p *participant) popFrame() *frame {
	o := &p.out
	f := o.queue[o.head]
	o.queue[o.head] = nil
	o.head = (o.head + 1) % len(o.queue)
	o.n--
	return f
}

// wakeWriter starts the writer unless it runs. Called with out.mu held.
func (p *participant) wakeWriter() {
	o := &p.out
	if o.writing || o.ended || o.greeting {
		return
	}
	o.writing = true
	p.writers.Add(1)
	go p.writeFn()
}

// pingDue makes the writer ping the peer (the pinger's callback).
func (p *participant) pingDue() {
	p.out.mu.Lock()
	p.out.pingDue = true
	p.wakeWriter()
	p.out.mu.Unlock()
}

// stop asks the participant to close with code (0: without a close frame).
// Only the first call counts; it reports whether it was the first. It never
// blocks, so the hub may call it under a session lock.
func (p *participant) stop(code int, reason string) bool {
	if !p.stopped.CompareAndSwap(false, true) {
		return false
	}
	o := &p.out
	o.mu.Lock()
	o.stopDue, o.code, o.reason = true, code, reason
	p.wakeWriter()
	o.mu.Unlock()
	return true
}

func (p *participant) stopping() bool { return p.stopped.Load() }

// run serves the connection until it closes: it joins the session of key,
// writes the handshake's answer (head, the 101) and reads frames into the
// hub. The 101 goes out only once the participant is in the session, so a
// client holding it gets every frame sent after that; what the join queued
// (a refusal's close, v1's welcome) follows it. On return the participant
// has left its session, its writer has stopped, its queue is released and
// the socket is closed.
func (p *participant) run(key, head []byte) {
	s := p.srv
	p.conn.SetReadLimit(int64(s.cfg.MaxMessageBytes))
	p.conn.SetPongHandler(func(string) error {
		p.extendReadDeadline()
		return nil
	})
	p.conn.SetPingHandler(func(data string) error {
		p.extendReadDeadline()
		o := &p.out
		o.mu.Lock()
		o.pong, o.pongDue = data, true
		p.wakeWriter()
		o.mu.Unlock()
		return nil
	})
	p.extendReadDeadline()
	p.pinger = time.AfterFunc(s.pingInterval, p.pingFn)

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
	p.greet(head)

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
	p.pinger.Stop()
	// leave has returned, so nothing is enqueued any more; once ended is
	// set no writer starts either.
	p.out.mu.Lock()
	p.out.ended = true
	p.out.mu.Unlock()
	p.writers.Wait()
	for p.out.n > 0 {
		p.popFrame().release()
	}
	if errors.Is(err, websocket.ErrReadLimit) {
		p.linger()
	}
	_ = p.raw.Close()
}

// greet writes the handshake's answer, then lets the writer send what
// queued meanwhile.
func (p *participant) greet(head []byte) {
	_ = p.raw.SetWriteDeadline(time.Now().Add(p.srv.writeWait))
	if _, err := p.raw.Write(head); err != nil {
		p.broken()
	}
	o := &p.out
	o.mu.Lock()
	o.greeting = false
	if o.n > 0 || o.stopDue || o.pongDue || o.pingDue {
		p.wakeWriter()
	}
	o.mu.Unlock()
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

// writeJob is what the writer does next.
type writeJob int

const (
	jobNone writeJob = iota // nothing: the writer ends
	jobFrame
	jobPong
	jobPing
	jobClose
)

// nextJob takes the writer's next job off out, or ends the writer (jobNone,
// with writing cleared under the same lock, so a later enqueue starts a new
// one). A stop wins over queued frames: a slow consumer or a draining edge
// should not first flush a full queue. After the close handshake only
// pongs are left undone and the writer ends.
func (p *participant) nextJob() (job writeJob, f *frame, pong string) {
	o := &p.out
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.closing:
	case o.stopDue:
		o.closing = true
		return jobClose, nil, ""
	case o.pongDue:
		o.pongDue = false
		return jobPong, nil, o.pong
	case o.n > 0:
		return jobFrame, p.popFrame(), ""
	case o.pingDue:
		o.pingDue = false
		return jobPing, nil, ""
	}
	o.writing = false
	return jobNone, nil, ""
}

// writeLoop writes what is due, queued frames in order, until nothing is
// left; on stop it sends the close frame and bounds the close handshake.
// Started by wakeWriter, at most one at a time.
func (p *participant) writeLoop() {
	defer p.writers.Done()
	s := p.srv
	for {
		job, f, pong := p.nextJob()
		switch job {
		case jobNone:
			return
		case jobClose:
			p.closeHandshake()
		case jobFrame:
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
		case jobPong:
			if err := p.conn.WriteControl(websocket.PongMessage, []byte(pong), time.Now().Add(s.writeWait)); err != nil {
				p.broken()
				return
			}
		case jobPing:
			if err := p.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.writeWait)); err != nil {
				p.broken()
				return
			}
			p.pinger.Reset(s.pingInterval)
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
	p.out.mu.Lock()
	code, reason := p.out.code, p.out.reason
	p.out.mu.Unlock()
	if code != 0 {
		_ = p.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(s.writeWait))
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
