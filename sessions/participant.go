package sessions

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/balancer/acceptguard"
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
// Its reader (wsread.go) owns it and waits for its writer at the end; the
// hub only enqueues frames to it.
//
// An idle participant, most of an edge's, has no goroutine at all. The
// reader parks as soon as its socket has nothing more to read, between
// messages (after waiting readerLinger for one more if a frame came while
// it ran): its goroutine ends, its read buffer goes back to the pool, and
// the socket waits in the Server's epoll set (park_linux.go), which starts
// a reader again when bytes come. The writer goroutine runs only while there is
// something to write (queued frames, a pong, a ping, the close frame); the
// send queue grows with use up to send_queue frames. What is left of an
// idle participant is this struct, its socket, its ping timer and its
// share of the session.
type participant struct {
	srv      *Server
	joinInfo // who it is and how it speaks (v1.go); set before run
	// admitted: the join was counted in its shard's admitting
	// (hub.reserve) and hub.join uncounts it.
	admitted bool
	// presencePaid: a msg of its has paid its session's joiners' bucket
	// for its join and leave (pace.go). The running reader's.
	presencePaid bool
	// pooled: counted among its session's newcomers by the last count
	// (pace.go). Under its session's lock.
	pooled bool
	// announced: the others have been told it joined; joinTick, its
	// session's presence tick at its join (presence.go). Under its
	// session's lock.
	announced bool
	joinTick  uint32
	// share is the participant's place in its address's share of the
	// data port (directshare.go; the zero Slot: none), given back when it
	// unregisters.
	share acceptguard.Slot
	// armed: the socket has been in the poller's epoll set. Set under
	// the poller's lock and out.mu; read under either.
	armed bool
	// gating: a message of its, read in its first second, waits its
	// session's joiners' turn (pace.go). Under its session's lock.
	gating bool
	// fd is the socket's descriptor, the poller's key, and rc reaches it
	// for the reader's non-blocking reads; rc nil: the reader never parks.
	fd int32
	rc syscall.RawConn
	// raw is the TCP connection. fasthttp hands the handler a wrapper
	// whose Close does nothing (fasthttp closes the socket when the
	// handler returns), so waking a blocked reader needs the real one.
	raw net.Conn
	// session is set by hub.join before the reader relays anything and read
	// by the reader only.
	session *session
	// token is the join token the participant holds, nil for none: the
	// one it joined with, or the last a ringlb.v1 refresh gave it
	// (lapse.go). Revocations match holders by its user, issue time and
	// nonce; it lapses when it expires or its secret is rotated out.
	// Written by the reader; read by revocations, the pinger and the
	// writer.
	token   atomic.Pointer[heldToken]
	stopped atomic.Bool // set by the first stop
	// reader is readerRunning while a goroutine reads, readerParked while
	// none does (the socket is armed), readerEnded at the end. Whoever
	// moves it from parked to running starts the reader (unpark).
	reader atomic.Int32
	// joinedMs is when it joined its session, Unix ms modulo 2³² (in what
	// padding leaves here: a participant stays within its size class):
	// for its first joinerWindow its messages draw on the session's
	// joiners' bucket too (newcomer, pace.go). Set by hub.join before
	// the reader relays anything.
	joinedMs uint32
	// lastFrame is when the last frame (data or control) began (Unix ns):
	// a peer silent for pongWait is dropped.
	lastFrame atomic.Int64
	// closeBy is when the close handshake gives up (Unix ns), once the
	// writer has sent the close frame; 0 before.
	closeBy atomic.Int64
	// readDeadline is the read deadline the readers last set on the
	// socket (Unix ns, 0: none), so they set it only when it changes.
	// Touched by the running reader only (readers follow one another
	// through p.reader); the writer sets one only once closing, when
	// readers follow closeDeadline, which it also sets.
	readDeadline int64
	// fanout paces what this participant's messages make the edge send
	// (pace.go); the running reader's, as readDeadline.
	fanout fanoutBucket

	// out is what the writer has to do, under its own lock (never held
	// while taking a session lock, nor across a write).
	out struct {
		mu sync.Mutex
		// queue is a ring of frames (head, n), each holding a reference
		// released by the writer (or by finish). It grows by
		// doubling up to limit frames: the bounded send queue.
		queue   []*frame
		head, n int
		limit   int
		// bytes is what the queued frames count against the edge's
		// send budget (sendbudget.go; nil: not counted).
		bytes  int64
		budget *byteBudget
		// overHold is when the queue last went over lowMemoryHold while
		// the process was low on memory (Unix ns; 0: under it since),
		// for the burst it may pass on (sendbudget.go).
		overHold int64
		// pong holds the payload of the latest ping from the peer until
		// the writer answers it (RFC 6455 5.5.3 allows answering only the
		// latest). Only the writer writes to the socket.
		pong    string
		pongDue bool
		pingDue bool
		// stopDue is set by stop with code and reason (0: close without a
		// close frame: the socket broke, or the reader ended); closing is
		// set once the writer has begun the close handshake.
		stopDue bool
		code    int
		reason  string
		closing bool
		writing bool // a writer goroutine runs
		ended   bool // the reader has ended: no writer starts any more
		// greeting: the 101 is not written yet (run writes it once the
		// participant has joined); frames queue, no writer starts.
		greeting bool
		// sockClosed: closeSocket has run; the poller arms no more.
		sockClosed bool
		// replays counts the replays of history (resumes' batches)
		// queued with a msg the writer has not taken yet: a client may
		// queue one at a time (handleV1), or resumes of a few bytes each
		// would pin a batch of the whole history apiece. So it is 0 or
		// 1, and a byte, in what padding leaves here: a participant
		// stays within its size class.
		replays uint8
	}
	writers sync.WaitGroup // the writer goroutine, while it runs
	// writeFn, pingFn and resumeFn are p.writeLoop, p.pingDue and p.resume
	// as func values, made once: `go p.writeFn()` then allocates nothing.
	writeFn, pingFn, resumeFn func()
	pinger                    *time.Timer // makes a ping due every pingInterval (untilPing)
}

// Reader states (participant.reader).
const (
	readerRunning int32 = iota
	readerParked
	readerEnded
)

func newParticipant(s *Server, raw net.Conn) *participant {
	p := &participant{srv: s, raw: raw}
	p.fd, p.rc = socketFD(raw)
	p.out.limit = s.cfg.SendQueue
	p.out.budget = &s.sendBudget
	p.out.greeting = true
	p.writeFn, p.pingFn, p.resumeFn = p.writeLoop, p.pingDue, p.resume
	return p
}

// socketFD returns c's descriptor and raw access to it, or nil when it has
// none to watch. c may wrap the socket (acceptguard.Conn does: NetConn).
func socketFD(c net.Conn) (int32, syscall.RawConn) {
	for {
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = w.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok || !parkSupported {
		return -1, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, nil
	}
	fd := int32(-1)
	if err := rc.Control(func(d uintptr) { fd = int32(d) }); err != nil {
		return -1, nil
	}
	return fd, rc
}

// enqueue adds f (one reference of the caller's, taken over) to the send
// queue without blocking; false when the queue is full, or holds frames
// while the edge's send budget is spent (the caller then releases f: p is
// a slow consumer). The hub calls it under a session lock.
func (p *participant) enqueue(f *frame) bool {
	o := &p.out
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == o.limit {
		return false
	}
	size := f.queuedSize()
	// A frame into an empty queue is written at once: never held back. A
	// replay is not: it goes at its client's pace, a whole history in one
	// slot, so it is taken as a queue's growth is. Taken whatever the
	// budget held, a client's non-readers resuming from their empty
	// queues each held a history past it, and others' readers were closed
	// 1013 (TestReplaysHoardNoSendBudget). Nor is a presence batch: one
	// slot, but a copy of up to a message per participant for each that
	// joined in its interval, far more than the frame each the budget
	// lets pass it.
	if o.bytes == 0 && f.batch == nil && !f.presence {
		o.budget.charge(size)
	} else if !o.budget.tryTakeShareHeld(o.bytes, size, &o.overHold) {
		return false
	}
	o.bytes += size
	if o.n == len(o.queue) {
		// Idle participants never get here; a busy one settles at the
		// depth its bursts reach.
		o.queue, o.head = growRing(o.queue, o.head, o.n, min(max(2*len(o.queue), 4), o.limit)), 0
	}
	o.queue[(o.head+o.n)%len(o.queue)] = f
	o.n++
	if f.batch != nil {
		o.replays++
	}
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
	if f.batch != nil {
		o.replays--
	}
	p.dequeued(f.queuedSize())
	return f
}

// takeReplayed takes the next msg of the replay b, the oldest frame queued,
// for the writer to write, and b off the queue with its last msg. Each msg
// leaves the send budget as it is taken, as a frame popped does: the rest
// are still held, and counted, while the writer writes one (a replay goes
// at the pace its client reads, and its history may have let its frames
// go meanwhile). b leaves before its last msg is written, not after: a
// client that has the replay's last msg may resume again, and a client
// quick to resume, or the writer descheduled after that write, found it
// still waiting. Called with out.mu held.
func (p *participant) takeReplayed(b *frame) *frame {
	f := b.batch[0]
	b.batch[0] = nil
	b.batch = b.batch[1:] // its reference is the writer's now
	p.dequeued(int64(len(f.wire())))
	if len(b.batch) == 0 {
		p.popFrame().release()
	}
	return f
}

// dequeued gives back size bytes of the send budget, taken off the queue.
// Called with out.mu held, or once no writer can run.
func (p *participant) dequeued(size int64) {
	o := &p.out
	o.bytes -= size
	o.budget.give(size)
	if o.bytes <= lowMemoryHold {
		o.overHold = 0 // kept up: the burst passed
	}
}

// replayWaiting reports whether a replay of p's is queued with a msg the
// writer has not taken yet.
func (p *participant) replayWaiting() bool {
	p.out.mu.Lock()
	defer p.out.mu.Unlock()
	return p.out.replays > 0
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

// pingDue makes the writer ping the peer (the pinger's callback). A parked
// reader has no read deadline running: a peer silent for pongWait is found
// here, and its reader started to end it. A participant whose join token
// has lapsed is closed instead (lapse.go).
//
// The timer is armed again here, whether or not the ping gets written: the
// writer pinged only once its queue was empty (now ahead of the queued
// frames, nextJob), and armed again by the writer after a ping, the timer
// of a participant whose queue never emptied fired once and never again —
// its token was never looked at again, and a
// holder feeding its own queue stayed past its expiry for as long as it
// liked (TestExpiredTokenWritesNothingThoughItsQueueNeverEmpties,
// TestExpiredViewerClosedThoughItsQueueNeverEmpties). A participant
// stopping is not armed again: finish stops the timer, and one armed after
// that would keep the participant alive.
func (p *participant) pingDue() {
	now := time.Now()
	if p.closeIfLapsed(now) || p.stopping() {
		return
	}
	if p.reader.Load() == readerParked && now.UnixNano()-p.lastFrame.Load() >= int64(p.srv.pongWait) {
		p.unpark()
	}
	p.out.mu.Lock()
	p.armPinger(now)
	p.out.pingDue = true
	p.wakeWriter()
	p.out.mu.Unlock()
}

// armPinger arms the ping timer for untilPing(now), with the token p
// holds now. Called with out.mu held, by pingDue and by a refresh
// (refreshToken): a callback that read the token before a refresh stored
// another arms the timer before the refresh does, or finds the new token.
// Once the reader has ended it arms nothing: finish stops the timer after
// setting ended, so a callback that looked at stopping before finish began
// either arms it before that stop or finds ended; armed after it, it held
// the ended participant one more ping interval
// (TestPingTimerNotArmedAfterFinish).
func (p *participant) armPinger(now time.Time) {
	if p.out.ended {
		return
	}
	p.pinger.Reset(p.untilPing(now))
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
	// A parked reader must run again: it waits for the peer's answer to
	// the close (or the closeWait deadline) and ends the connection.
	p.unpark()
	return true
}

// pongDue makes the writer answer a ping from the peer with data.
func (p *participant) pongDue(data string) {
	o := &p.out
	o.mu.Lock()
	o.pong, o.pongDue = data, true
	p.wakeWriter()
	o.mu.Unlock()
}

func (p *participant) stopping() bool { return p.stopped.Load() }

// run serves the connection until it closes or parks: it joins the
// session of key, writes the handshake's answer (head, the 101) and reads
// frames into the hub. The 101 goes out only once the participant is in
// the session, so a client holding it gets every frame sent after that;
// what the join queued (a refusal's close, v1's welcome) follows it.
// hijacked is fasthttp's view of the socket, which may hold bytes the
// client sent behind its handshake.
func (p *participant) run(key, head []byte, hijacked net.Conn) {
	s := p.srv
	p.lastFrame.Store(time.Now().UnixNano())
	// Made first, then armed: its callback, which arms it again, then
	// finds it in p.pinger (Reset orders the store before the callback).
	p.pinger = time.AfterFunc(time.Duration(1<<63-1), p.pingFn)
	p.pinger.Reset(p.untilPing(time.Now()))

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
	// The upgrade's resume has been replayed (v1) or is moot (raw, refused):
	// its epoch, as long as the client made it (up to a request head,
	// 16 KiB), is not kept for the connection's life.
	p.resumeEpoch = ""
	p.greet(head)
	if !p.read(hijacked) {
		p.finish()
	}
}

// resume is a reader started by unpark.
func (p *participant) resume() {
	if !p.read(nil) {
		p.finish()
	}
}

// unpark starts a reader for a parked participant (bytes came, it was
// stopped, or its peer has been silent too long); a no-op otherwise.
func (p *participant) unpark() {
	if p.reader.CompareAndSwap(readerParked, readerRunning) {
		go p.resumeFn()
	}
}

// read reads frames into the hub until the connection ends (false) or the
// reader parks (true: the goroutine may end; unpark starts another).
func (p *participant) read(hijacked net.Conn) (parked bool) {
	rd := p.srv.getReader(p, hijacked)
	for {
		err := rd.next()
		switch {
		case err == nil:
		case errors.Is(err, errPark):
			rd.release()
			if p.park() {
				return true
			}
			// Stopped meanwhile, or the socket cannot be watched now
			// (no epoll: out of descriptors): read on, blocking, until
			// the next frame.
			rd = p.srv.getReader(p, nil)
			rd.noPark = true
		default:
			rd.release()
			// The peer closed or went silent, the socket broke, or our
			// close handshake ended.
			if p.srv.log.Enabled(context.Background(), slog.LevelDebug) && !errors.Is(err, errPeerClosed) {
				p.srv.log.Debug("connection ended", "participant", p.id, "reason", err, "stopping", p.stopping())
			}
			return false
		}
	}
}

// setReadDeadline sets the socket's read deadline unless it is so already.
func (p *participant) setReadDeadline(t time.Time) error {
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	if ns == p.readDeadline {
		return nil
	}
	if err := p.raw.SetReadDeadline(t); err != nil {
		return err
	}
	p.readDeadline = ns
	return nil
}

// park lets the reader's goroutine go: the socket is armed in the poller,
// which starts a reader when a byte comes. It reports false when the
// caller must read on instead (it was stopped meanwhile, or arming
// failed). The reader holds nothing at this point (no buffer, no message),
// as another reader may start before park returns.
func (p *participant) park() bool {
	pl := p.srv.parker()
	if pl == nil {
		return false
	}
	p.reader.Store(readerParked)
	if err := pl.arm(p); err != nil {
		// Socket closed (or epoll refused it): whoever wins the state
		// reads on and finds the end.
		return !p.reader.CompareAndSwap(readerParked, readerRunning)
	}
	// stop sets stopped, then unparks; we set parked, then look at
	// stopped: one of the two sees the other, so a stop is never missed.
	if p.stopping() && p.reader.CompareAndSwap(readerParked, readerRunning) {
		return false
	}
	return true
}

// parkable reports whether this participant's reader may park.
func (p *participant) parkable() bool {
	return p.rc != nil && p.srv.parkIdle
}

// closeDeadline is when a closing reader stops waiting for the peer's
// close: closeWait after the writer sent ours; before it has, writeWait
// (the longest the close frame may take to write) more.
func (p *participant) closeDeadline(now time.Time) time.Time {
	if by := p.closeBy.Load(); by != 0 {
		return time.Unix(0, by)
	}
	return now.Add(p.srv.writeWait + p.srv.closeWait)
}

// received acts on one whole data message f from the peer, read at
// readAt, and returns what it costs the participant's fan-out pace
// (pace.go).
//
// Every message is handed on here, and a participant being closed
// (revoked, refused, a slow consumer, shut down, whatever the reason)
// hands on nothing more: the reader skips a frame begun after the stop as
// it comes (wsReader.next), but a message whose header came before it may
// be finished at the peer's leisure within closeWait — a revoked editor
// kept one in flight and finished it once told, and its msg was sequenced,
// relayed and kept (TestRevokedEditorsMessageInFlightReachesNoOne); an
// honest client closed 1013 resent the msg it never got an ack for.
//
// Nor does a participant whose token has lapsed: the pinger closes it at
// its token's expiry, but a message read after that and before the
// pinger's callback has run would still go; looked at here, at the price
// of a time comparison, a lapsed token writes nothing more.
//
// Both are looked at again as the message goes out, under its session's
// lock (relays): a newcomer's message may wait its session's joiners'
// turn after it was read (joinersTurn), its sender stopped or its token
// lapsed meanwhile.
func (p *participant) received(f *frame, readAt time.Time) (cost int64) {
	if p.stopping() || p.closeIfLapsed(readAt) {
		return 0
	}
	s := p.srv
	if p.v1 {
		if p.session != nil {
			return p.handleV1(f.kind, f.payload(), readAt)
		}
		return fanoutCost(len(f.payload()), 1)
	}
	f.encode()
	f.readAt = readAt
	s.metrics.messages.Inc()
	// A viewer's frames are dropped: raw mode has no envelope to
	// refuse them with, and closing would cost a viewer its view.
	deliveries := 0
	if p.session != nil && !p.viewer && p.joinersTurn(len(f.payload()), readAt) {
		deliveries = s.hub.broadcast(p, f)
	}
	return fanoutCost(len(f.payload()), deliveries)
}

// finish ends the connection once its reader has: the participant leaves
// its session, its writer has stopped, its queue is released and the
// socket is closed.
func (p *participant) finish() {
	s := p.srv
	p.stop(0, "") // the peer closed, the socket broke, a timeout, or our close handshake ended
	s.hub.leave(p)
	// leave has returned, so nothing is enqueued any more; once ended is
	// set no writer starts either, nor is the ping timer armed again
	// (armPinger): stopped after, it stays stopped.
	p.out.mu.Lock()
	p.out.ended = true
	p.out.mu.Unlock()
	p.pinger.Stop()
	p.writers.Wait()
	for p.out.n > 0 {
		p.popFrame().release()
	}
	p.reader.Store(readerEnded)
	p.closeSocket()
	if pl := s.poll.Load(); pl != nil {
		pl.forget(p)
	}
	s.unregister(p)
}

// closeSocket closes the socket, out of the poller's epoll set first
// (poller.disarm says why); the poller arms it no more.
func (p *participant) closeSocket() {
	p.out.mu.Lock()
	p.out.sockClosed = true
	if pl := p.srv.poll.Load(); p.armed && pl != nil {
		pl.disarm(p)
	}
	p.out.mu.Unlock()
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

// writeJob is what the writer does next.
type writeJob int

const (
	jobNone writeJob = iota // nothing: the writer ends
	jobFrame
	jobReplayed // a msg of a replay (takeReplayed)
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
	case o.pingDue:
		// Before the frames queued: a peer that only reads (a viewer of
		// a busy session, one on a slow link) proves itself alive by its
		// pongs alone. Pinged only from an empty queue, one whose queue
		// never emptied for pongWait was never pinged, and its reader
		// dropped it as silent without a close frame.
		o.pingDue = false
		return jobPing, nil, ""
	case o.n > 0:
		if b := o.queue[o.head]; b.batch != nil {
			return jobReplayed, p.takeReplayed(b), ""
		}
		return jobFrame, p.popFrame(), ""
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
		case jobFrame, jobReplayed:
			// The frame is written as the reader encoded it, straight to
			// the socket, bypassing the library's writer (which would copy
			// it into a per-connection buffer, and cost two allocations per
			// frame larger than that buffer in its writev path).
			//
			// Only this goroutine writes to the socket once the 101 is
			// out (control frames too: writeControl), so frames stay in
			// queue order and never interleave. A failed or timed-out
			// partial write ends the connection (broken).
			_ = p.raw.SetWriteDeadline(time.Now().Add(s.writeWait))
			_, err := p.raw.Write(f.wire())
			if err == nil && job == jobFrame {
				// A replayed msg's lag is its age: not the relay's.
				s.metrics.lag.Observe(time.Since(f.readAt).Seconds())
			}
			f.release()
			if err != nil {
				p.broken()
				return
			}
		case jobPong:
			if err := p.writeControl(websocket.PongMessage, nil, pong); err != nil {
				p.broken()
				return
			}
		case jobPing:
			if err := p.writeControl(websocket.PingMessage, nil, ""); err != nil {
				p.broken()
				return
			}
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
	switch code {
	case 0: // no close frame
	case websocket.CloseNoStatusReceived:
		// The answer to a close without a code is a close without one
		// (1005 itself never goes on the wire).
		_ = p.writeControl(websocket.CloseMessage, nil, "")
	default:
		var c [2]byte
		binary.BigEndian.PutUint16(c[:], uint16(code))
		_ = p.writeControl(websocket.CloseMessage, c[:], reason)
	}
	by := time.Now().Add(s.closeWait)
	p.closeBy.Store(by.UnixNano())
	_ = p.raw.SetReadDeadline(by)
}

// writeControl writes a control frame of op with payload a then b (at most
// 125 bytes in all; more of b is cut), from a pooled frame.
func (p *participant) writeControl(op int, a []byte, b string) error {
	s := p.srv
	f := s.frames.get()
	defer f.release()
	f.kind = op
	f.buf = append(f.buf, a...)
	f.buf = append(f.buf, b[:min(len(b), maxControlPayload-len(a))]...)
	f.encode()
	_ = p.raw.SetWriteDeadline(time.Now().Add(s.writeWait))
	_, err := p.raw.Write(f.wire())
	return err
}

// broken handles a failed write: the socket is unusable, so the reader is
// woken by closing it.
func (p *participant) broken() {
	p.stop(0, "")
	p.closeSocket()
}

// rawConn unwraps fasthttp's hijacked connection.
func rawConn(c net.Conn) net.Conn {
	if u, ok := c.(interface{ UnsafeConn() net.Conn }); ok {
		return u.UnsafeConn()
	}
	return c
}
