//go:build linux

package balancer

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ringlb/ringlb/balancer/acceptguard"
)

// relay moves the bytes of established WebSocket tunnels with epoll, the way
// HAProxy and nginx do, instead of two goroutines per tunnel: an idle tunnel
// then costs two sockets and a small struct — no goroutine stacks, no copy
// buffers and no splice pipes (Go's splice holds a pipe, two more fds, for as
// long as a copy waits). One event loop per CPU, each with one copy buffer.
//
// The loops use the sockets' file descriptors directly and never the Go
// net.Conn methods while a tunnel is in a loop; a tunnel's sockets are closed
// only under its loop's lock, so an fd number is never reused under a loop's
// feet.
type relay struct {
	loops     []*relayLoop
	next      uint32
	mu        sync.Mutex
	wg        sync.WaitGroup
	log       *slog.Logger
	closeOnce sync.Once
}

// relayBufferSize is each loop's copy buffer: one read per event up to this
// (so an end's pending bytes never exceed it: maxMovedPending says so to a
// hand-off's parser).
const relayBufferSize = maxMovedPending

type relayLoop struct {
	r      *relay
	epfd   int
	wakefd int // eventfd: wakes the loop for Close
	// file wraps epfd so that the loop waits in Go's netpoller (the epoll
	// descriptor is readable while it has events) instead of blocking a
	// thread in epoll_wait: no thread hand-off per wake-up. Measured the
	// other way (each loop on a locked thread of its own, in epoll_wait):
	// 1.13-1.17x the CPU at 1000 x 3 at 1 msg/s, each loop's thread waking
	// on its own where the netpoller collects both loops' events in one
	// wake-up; no higher saturation rate; and a loop blocked in the system
	// call keeps its P, so HTTP requests waited for sysmon (up to 10 ms)
	// unless GOMAXPROCS grew by a P per loop. README, "Where a message
	// waits at saturation".
	file *os.File
	raw  syscall.RawConn
	buf  []byte
	idle time.Duration
	// fin replaces idle for a tunnel one side has closed (at most idle).
	fin time.Duration

	mu     sync.Mutex
	ends   map[int32]*relayEnd
	closed bool
	served uint64 // readiness events served, for tests of what the loop does
}

// relayEnd is one socket of a tunnel.
type relayEnd struct {
	fd int
	// conn is the Go connection the socket came from, closed with the
	// tunnel to end its accounting (limits); for a tunnel taken over from
	// the previous process, its accounting here (held), or nil.
	conn    io.Closer
	peer    *relayEnd
	pair    *relayPair
	pending []byte // bytes read from peer not yet written to this socket
	// heldSince is when pending last began or shrank (unix nanoseconds):
	// bytes that wait on a socket that takes none close the tunnel after
	// the idle timeout, whatever its other direction carries.
	heldSince int64
	eof       bool   // read side finished (FIN received)
	events    uint32 // interest registered with epoll
}

type relayPair struct {
	t          *tunnel
	client     relayEnd
	edge       relayEnd
	lastActive int64 // unix nanoseconds
	// bytes moved, by direction (clientToEdge, edgeToClient); carried
	// over by a hand-off.
	bytes  [2]uint64
	closed bool
	// clientFINFirst, edgeFINFirst: which side closed first, for the
	// access log (neither: none has yet).
	clientFINFirst, edgeFINFirst bool
}

func newRelay(log *slog.Logger, idle, fin time.Duration) (*relay, error) {
	r := &relay{log: log}
	for range max(runtime.GOMAXPROCS(0), 1) {
		l, err := newRelayLoop(r, idle, fin)
		if err != nil {
			r.close()
			return nil, err
		}
		r.loops = append(r.loops, l)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			l.run()
		}()
	}
	return r, nil
}

func newRelayLoop(r *relay, idle, fin time.Duration) (*relayLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("epoll nonblock: %w", err)
	}
	file := os.NewFile(uintptr(epfd), "relay-epoll")
	raw, err := file.SyscallConn()
	if err != nil {
		file.Close()
		unix.Close(wakefd)
		return nil, fmt.Errorf("epoll in the netpoller: %w", err)
	}
	return &relayLoop{r: r, epfd: epfd, wakefd: wakefd, file: file, raw: raw, buf: make([]byte, relayBufferSize), idle: idle, fin: min(fin, idle), ends: map[int32]*relayEnd{}}, nil
}

// rawFD returns the socket's descriptor. The conn keeps owning it. It looks
// through the balancer's own transparent wrappers (limits, PROXY protocol),
// whose buffers are empty by then (greet drained them), and the accept
// guard's; never through TLS.
func rawFD(c net.Conn) (int, *net.TCPConn, bool) {
	tc, ok := unwrapConn(c).(*net.TCPConn)
	if !ok {
		return 0, nil, false
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, nil, false
	}
	fd := -1
	if err := raw.Control(func(f uintptr) { fd = int(f) }); err != nil || fd < 0 {
		return 0, nil, false
	}
	return fd, tc, true
}

// unwrapConn is the connection inside the balancer's own transparent
// wrappers (limits, PROXY protocol, the accept guard).
func unwrapConn(c net.Conn) net.Conn {
	for {
		in := wrapped(c)
		if in == nil {
			return c
		}
		c = in
	}
}

// takeOver returns a duplicate of fd for the loop to own. The caller then
// closes the Go connection, which takes the socket out of Go's own poller:
// otherwise every byte would wake Go's netpoller as well as the loop.
func takeOver(fd int) (int, error) {
	return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
}

// add hands a tunnel's two sockets to a loop; from now on the loop owns them.
// It reports false (and leaves the sockets alone) if they are not plain TCP
// sockets or the relay is closed.
func (r *relay) add(t *tunnel, client, edge net.Conn) bool {
	cRaw, cInner, ok1 := rawFD(client)
	eRaw, eInner, ok2 := rawFD(edge)
	if !ok1 || !ok2 {
		return false
	}
	cfd, err := takeOver(cRaw)
	if err != nil {
		return false
	}
	efd, err := takeOver(eRaw)
	if err != nil {
		unix.Close(cfd)
		return false
	}
	added := false
	defer func() {
		if !added {
			unix.Close(cfd)
			unix.Close(efd)
		}
	}()
	r.mu.Lock()
	l := r.loops[int(r.next)%len(r.loops)]
	r.next++
	r.mu.Unlock()

	p := &relayPair{t: t, lastActive: time.Now().UnixNano()}
	p.client = relayEnd{fd: cfd, pair: p}
	p.edge = relayEnd{fd: efd, pair: p}
	p.client.peer, p.edge.peer = &p.edge, &p.client

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	for _, e := range []*relayEnd{&p.client, &p.edge} {
		e.events = unix.EPOLLIN | unix.EPOLLRDHUP
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, e.fd, &unix.EpollEvent{Events: e.events, Fd: int32(e.fd)}); err != nil {
			l.forgetLocked(p)
			return false
		}
		l.ends[int32(e.fd)] = e
	}
	if !t.setRelay(l, p) { // closed meanwhile (a shutdown)
		l.forgetLocked(p)
		return false
	}
	// The loop owns the duplicates now (it cannot run before l.mu is
	// released): closing the Go connections takes the sockets out of Go's
	// poller, and the wrappers that count them (limits) keep counting until
	// the tunnel ends, without the closed sockets' Go side.
	cInner.Close()
	eInner.Close()
	p.client.conn, p.edge.conn = releaseSocket(client), releaseSocket(edge)
	added = true
	return true
}

// releaseSocket lets a connection's closed socket go from the wrappers
// that count the connection (limits, the accept guard): they get a
// placeholder instead, and the net.TCPConn, its netFD and addresses are
// freed — half of what an idle tunnel held in memory. It returns what the
// relay closes when the tunnel ends (the outermost wrapper), nil for a bare
// socket (nothing counts it). A wrapper that is not the balancer's own (PROXY
// protocol) keeps what it wraps.
func releaseSocket(c net.Conn) io.Closer {
	switch w := c.(type) {
	case *net.TCPConn:
		return nil
	case *limitConn:
		if releaseSocket(w.Conn) == nil {
			w.Conn = relayOwned{}
		}
	case *acceptguard.Conn:
		if releaseSocket(w.NetConn()) == nil {
			w.SetNetConn(relayOwned{})
		}
	}
	return c
}

// relayOwned stands in for a socket the relay owns, inside the wrappers
// that count a connection: Close does nothing (the loop closes the
// socket), I/O fails as on a closed connection.
type relayOwned struct{}

func (relayOwned) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (relayOwned) Write([]byte) (int, error)        { return 0, net.ErrClosed }
func (relayOwned) Close() error                     { return nil }
func (relayOwned) LocalAddr() net.Addr              { return (*net.TCPAddr)(nil) }
func (relayOwned) RemoteAddr() net.Addr             { return (*net.TCPAddr)(nil) }
func (relayOwned) SetDeadline(time.Time) error      { return nil }
func (relayOwned) SetReadDeadline(time.Time) error  { return nil }
func (relayOwned) SetWriteDeadline(time.Time) error { return nil }

// sweepInterval is how often a loop looks for tunnels idle for idle (the
// shorter of its two timeouts): a quarter of it, within [10 ms, 1 s].
func sweepInterval(idle time.Duration) time.Duration {
	return min(max(idle/4, 10*time.Millisecond), time.Second)
}

// run serves the loop's events until the relay closes. After a batch it
// polls again at once and parks only when nothing is ready. Yielding the
// CPU between batches (sched_yield, "busy-polling a little") was measured:
// 0.84-0.95x the loop's CPU at saturation for no higher rate, and 1.12-1.44x
// the added median latency at 1000 x 3, 1 msg/s (the loop waits behind
// whatever else is runnable); not kept.
func (l *relayLoop) run() {
	events := make([]unix.EpollEvent, 256)
	sweepEvery := sweepInterval(min(l.idle, l.fin))
	nextSweep := time.Now().Add(sweepEvery)
	l.file.SetReadDeadline(nextSweep)
	// The poll function and what it sets are made once: a closure made in
	// the loop would escape to the heap on every wake-up.
	var (
		n       int
		waitErr error
	)
	poll := func(fd uintptr) bool {
		// Never blocks: with nothing ready, Read parks this goroutine
		// in the netpoller until the epoll descriptor is readable.
		n, waitErr = epollPoll(int(fd), events)
		if waitErr == unix.EINTR {
			n, waitErr = 0, nil
		}
		return n > 0 || waitErr != nil
	}
	for {
		n, waitErr = 0, nil
		err := l.raw.Read(poll)
		if waitErr != nil {
			err = waitErr
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			l.mu.Lock()
			closed := l.closed
			l.mu.Unlock()
			if !closed {
				l.r.log.Error("relay loop stopped", "err", err)
				l.closeAll()
			}
			return
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return
		}
		now := time.Now()
		l.serveLocked(events[:n], now)
		if now.After(nextSweep) {
			// What became ready since the wait ended is served first: a
			// loop starved past its deadline (it woke with nothing and
			// waited its turn) would otherwise close as idle a tunnel
			// whose bytes arrived meanwhile. One non-blocking epoll call a
			// sweep.
			if m, err := epollPoll(l.epfd, events); err == nil && m > 0 {
				l.serveLocked(events[:m], now)
			}
			l.sweepLocked(now)
			nextSweep = now.Add(sweepEvery)
			l.file.SetReadDeadline(nextSweep)
		}
		l.mu.Unlock()
	}
}

// serveLocked serves a batch of readiness events. Called with l.mu held.
func (l *relayLoop) serveLocked(events []unix.EpollEvent, now time.Time) {
	for _, ev := range events {
		if int(ev.Fd) == l.wakefd {
			continue
		}
		e, ok := l.ends[ev.Fd]
		if !ok || e.pair.closed {
			continue
		}
		l.served++
		l.handle(e, ev.Events, now)
	}
}

// handle serves one readiness event of socket e. Called with l.mu held.
//
// epoll reports an error or a hang-up on every wait, whatever interest the
// socket has: an event the tunnel can do nothing with (its bytes wait on
// the peer) would come back at once, and the loop would serve it until the
// peer moved — forever, for a peer that never reads. So an error ends the
// tunnel, and a hang-up that moves nothing parks the socket (park).
func (l *relayLoop) handle(e *relayEnd, ev uint32, now time.Time) {
	p := e.pair
	if ev&unix.EPOLLERR != 0 {
		// A socket error (a reset, mostly): neither direction goes on.
		l.closePairLocked(p, "socket error: "+socketError(e.fd))
		return
	}
	moved, pending, eof := p.bytes, len(e.pending), e.eof
	peerPending := len(e.peer.pending)
	if ev&unix.EPOLLOUT != 0 && len(e.pending) > 0 {
		l.flush(e)
	}
	if !p.closed && ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 && !e.eof && len(e.peer.pending) == 0 {
		l.pump(e)
	}
	if len(e.pending) < pending {
		e.heldSince = now.UnixNano()
	}
	if peerPending == 0 && len(e.peer.pending) > 0 {
		e.peer.heldSince = now.UnixNano()
	}
	switch {
	case p.closed:
	case p.bytes != moved || len(e.pending) != pending || e.eof != eof:
		// Only bytes that move keep a tunnel from the idle sweep: an
		// event that moves none is not activity.
		p.lastActive = now.UnixNano()
	case ev&unix.EPOLLHUP != 0:
		l.park(e)
	}
}

// park takes e, hung up with its bytes waiting on its peer, out of the wait
// until its peer has drained: registered one-shot with no interest, the
// hang-up is reported once more and then not at all; rearm registers e's
// interest again. What e's socket still holds is read then.
func (l *relayLoop) park(e *relayEnd) {
	if e.events == unix.EPOLLONESHOT {
		return // parked already: that was its last report
	}
	e.events = unix.EPOLLONESHOT
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, e.fd, &unix.EpollEvent{Events: unix.EPOLLONESHOT, Fd: int32(e.fd)}); err != nil {
		l.closePairLocked(e.pair, "epoll_ctl: "+err.Error())
	}
}

// socketError is the pending error of socket fd, in words.
func socketError(fd int) string {
	n, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err.Error()
	}
	return syscall.Errno(n).Error()
}

// pump reads what e has and writes it to e's peer. A few reads at most per
// event, so one busy tunnel cannot starve the others on this loop.
func (l *relayLoop) pump(e *relayEnd) {
	for range 4 {
		n, err := rawRead(e.fd, l.buf)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			return
		case err != nil:
			l.closePairLocked(e.pair, "read: "+err.Error())
			return
		case n == 0:
			// FIN: pass the half-close on; the tunnel ends when both
			// directions have.
			e.eof = true
			if !e.peer.eof {
				if e == &e.pair.client {
					e.pair.clientFINFirst = true
				} else {
					e.pair.edgeFINFirst = true
				}
			}
			unix.Shutdown(e.peer.fd, unix.SHUT_WR)
			if e.peer.eof {
				l.closePairLocked(e.pair, "")
				return
			}
			l.rearm(e)
			return
		}
		if e == &e.pair.client {
			e.pair.bytes[clientToEdge] += uint64(n)
		} else {
			e.pair.bytes[edgeToClient] += uint64(n)
		}
		w, err := writeAll(e.peer.fd, l.buf[:n])
		if err != nil {
			l.closePairLocked(e.pair, "write: "+err.Error())
			return
		}
		if w < n {
			// The peer's socket buffer is full: keep the rest, stop reading
			// e until it drains (backpressure reaches e's sender through TCP).
			e.peer.pending = append(e.peer.pending[:0], l.buf[w:n]...)
			l.rearm(e)
			l.rearm(e.peer)
			return
		}
		if n < len(l.buf) {
			return
		}
	}
}

// flush writes e's pending bytes; it reports whether they are all out.
func (l *relayLoop) flush(e *relayEnd) bool {
	w, err := writeAll(e.fd, e.pending)
	if err != nil {
		l.closePairLocked(e.pair, "write: "+err.Error())
		return false
	}
	e.pending = e.pending[w:]
	if len(e.pending) > 0 {
		return false
	}
	e.pending = nil // let a large buffer go
	l.rearm(e)
	l.rearm(e.peer)
	return true
}

func writeAll(fd int, b []byte) (int, error) {
	done := 0
	for done < len(b) {
		n, err := rawWrite(fd, b[done:])
		if err == unix.EAGAIN {
			return done, nil
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// rearm sets e's epoll interest from its state: readable while it has not
// ended and its peer has nothing pending; writable while it has pending bytes.
func (l *relayLoop) rearm(e *relayEnd) {
	want := e.interest()
	if want == e.events {
		return
	}
	e.events = want
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, e.fd, &unix.EpollEvent{Events: want, Fd: int32(e.fd)}); err != nil {
		l.closePairLocked(e.pair, "epoll_ctl: "+err.Error())
	}
}

// interest is the epoll interest e's state calls for (rearm).
func (e *relayEnd) interest() uint32 {
	var want uint32
	if !e.eof && len(e.peer.pending) == 0 {
		want |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if len(e.pending) > 0 {
		want |= unix.EPOLLOUT
	}
	return want
}

// sweepLocked closes tunnels with no bytes either way for the idle timeout,
// and tunnels with bytes a side has not taken any of for as long: as
// HAProxy's timeout tunnel bounds each side's writes (nginx's send_timeout),
// so that a client that never reads cannot keep its tunnel, and what the
// loop holds for it, by sending a byte now and then. A tunnel one side
// has closed gets the fin timeout instead: its other side, which has not
// followed, may never do so (a client that neither reads nor closes), and
// would hold the tunnel, and a graceful stop, for the idle timeout.
func (l *relayLoop) sweepLocked(now time.Time) {
	if l.idle <= 0 {
		return
	}
	limit := now.Add(-l.idle).UnixNano()
	finLimit := now.Add(-l.fin).UnixNano()
	for _, e := range l.ends {
		p := e.pair
		if e != &p.client {
			continue
		}
		switch {
		case p.lastActive < limit:
			l.closePairLocked(p, "idle")
		case p.client.stalled(limit) || p.edge.stalled(limit):
			l.closePairLocked(p, "stalled")
		case (p.client.eof || p.edge.eof) && p.lastActive < finLimit:
			l.closePairLocked(p, "fin timeout")
		}
	}
}

// stalled reports whether bytes have waited on e, which took none of them,
// since before limit.
func (e *relayEnd) stalled(limit int64) bool {
	return len(e.pending) > 0 && e.heldSince < limit
}

// forgetLocked takes p's sockets out of the loop (epoll and its table),
// those it has. Called with l.mu held.
func (l *relayLoop) forgetLocked(p *relayPair) {
	for _, e := range []*relayEnd{&p.client, &p.edge} {
		if l.ends[int32(e.fd)] == e {
			unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, e.fd, nil)
			delete(l.ends, int32(e.fd))
		}
	}
}

// closePairLocked removes both sockets from epoll, closes them and releases
// the tunnel. Called with l.mu held.
func (l *relayLoop) closePairLocked(p *relayPair, why string) {
	if p.closed {
		return
	}
	p.closed = true
	l.forgetLocked(p)
	for _, e := range []*relayEnd{&p.client, &p.edge} {
		unix.Close(e.fd)
		if e.conn != nil {
			e.conn.Close() // its socket is closed already; this ends its accounting (limits)
		}
		e.pending = nil
	}
	if why != "" {
		l.r.log.Debug("tunnel closed", "edge", p.t.edge, "why", why)
	}
	firstFIN := ""
	switch {
	case p.clientFINFirst:
		firstFIN = endClient
	case p.edgeFINFirst:
		firstFIN = endEdge
	}
	p.t.endAs(endReason(why, firstFIN))
	p.t.relayClosed()
}

// endReason names, for the access log, how the loop closed a tunnel.
func endReason(why, firstFIN string) string {
	switch why {
	case "", "fin timeout":
		// The side that closed first ended it; the fin timeout only
		// bounded the wait for the other.
		return firstFIN
	case "idle", "stalled":
		return endIdle
	case "closed", "relay stopped":
		return endShutdown
	}
	return endError
}

// closePair closes one tunnel from outside the loop (Shutdown).
func (l *relayLoop) closePair(p *relayPair) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closePairLocked(p, "closed")
}

func (l *relayLoop) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	pairs := map[*relayPair]bool{}
	for _, e := range l.ends {
		pairs[e.pair] = true
	}
	for p := range pairs {
		l.closePairLocked(p, "relay stopped")
	}
	l.closed = true
}

// close stops every loop, closing what they still carry. Once: the wake
// and epoll descriptors are closed by number, and a second close would
// close whatever socket has since been given that number (a second
// Shutdown does call it).
func (r *relay) close() {
	r.closeOnce.Do(r.closeLoops)
}

func (r *relay) closeLoops() {
	for _, l := range r.loops {
		l.closeAll()
		var one [8]byte
		one[0] = 1
		unix.Write(l.wakefd, one[:])
	}
	r.wg.Wait()
	for _, l := range r.loops {
		l.file.Close() // closes epfd
		unix.Close(l.wakefd)
	}
}

// The loop's sockets and epoll descriptor are non-blocking, so their system
// calls return at once: made raw, they skip the scheduler's bookkeeping for
// calls that may block, which is a measurable share of relaying a small
// WebSocket frame.

func rawRead(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// epollPoll collects ready events without waiting (timeout 0).
func epollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// pairs lists the tunnels the loops carry now.
func (r *relay) pairs() []*relayPair {
	var out []*relayPair
	for _, l := range r.loops {
		l.mu.Lock()
		for _, e := range l.ends {
			if e == &e.pair.client && !e.pair.closed {
				out = append(out, e.pair)
			}
		}
		l.mu.Unlock()
	}
	return out
}

// detach takes a tunnel out of its loop without closing its sockets, for a
// hand-off: from here on the loop neither reads nor writes them, so what
// the tunnel holds is exactly what the kernel buffers and its pending
// bytes hold. It reports false when the tunnel has closed meanwhile. The
// caller ships or closes the tunnel with finishDetached. One at a time, so
// each tunnel pauses only while its own record is on the way.
func (r *relay) detach(p *relayPair) bool {
	l := p.t.relayLoop()
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.closed {
		return false
	}
	l.forgetLocked(p)
	// Closed for the loop: a late close() of the tunnel leaves the sockets
	// to finishDetached.
	p.closed = true
	return true
}

// finishDetached closes this process's copies of a detached tunnel's
// sockets (the new process holds its own when moved) and releases the
// tunnel here.
func (r *relay) finishDetached(p *relayPair, moved bool, why string) {
	for _, e := range []*relayEnd{&p.client, &p.edge} {
		unix.Close(e.fd)
		if e.conn != nil {
			e.conn.Close()
		}
		e.pending = nil
	}
	if !moved {
		r.log.Debug("tunnel closed", "edge", p.t.edge, "why", why)
		p.t.endAs(endShutdown)
	} else {
		p.t.mu.Lock()
		p.t.movedAway = true // its access line is the new process's
		p.t.mu.Unlock()
	}
	p.t.relayClosed()
}

// adopt puts a tunnel taken over from the previous process into a loop:
// its sockets cfd and efd (now owned by the relay) with the state the
// previous process's loop had. Bytes already pending for an end are
// written before anything more is read for it, so nothing is reordered.
func (r *relay) adopt(t *tunnel, m *movedTunnel, cfd, efd int, account io.Closer) error {
	for _, fd := range []int{cfd, efd} {
		if err := unix.SetNonblock(fd, true); err != nil {
			return fmt.Errorf("adopt tunnel: %w", err)
		}
	}
	r.mu.Lock()
	l := r.loops[int(r.next)%len(r.loops)]
	r.next++
	r.mu.Unlock()

	p := &relayPair{t: t, lastActive: m.lastActive, bytes: m.bytes}
	p.client = relayEnd{fd: cfd, conn: account, pair: p, pending: m.toClient, eof: m.clientEOF, heldSince: m.lastActive}
	p.edge = relayEnd{fd: efd, pair: p, pending: m.toEdge, eof: m.edgeEOF, heldSince: m.lastActive}
	p.client.peer, p.edge.peer = &p.edge, &p.client

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("adopt tunnel: relay closed")
	}
	for _, e := range []*relayEnd{&p.client, &p.edge} {
		e.events = e.interest()
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, e.fd, &unix.EpollEvent{Events: e.events, Fd: int32(e.fd)}); err != nil {
			l.forgetLocked(p)
			return fmt.Errorf("adopt tunnel: epoll_ctl: %w", err)
		}
		l.ends[int32(e.fd)] = e
	}
	if !t.setRelay(l, p) {
		l.forgetLocked(p)
		return errors.New("adopt tunnel: closed")
	}
	if p.client.eof && p.edge.eof && len(p.client.pending) == 0 && len(p.edge.pending) == 0 {
		l.closePairLocked(p, "")
	}
	return nil
}

// movedState is what a detached tunnel's relay pair carries to the next
// process.
func (p *relayPair) movedState(m *movedTunnel) {
	m.edge, m.key, m.start = p.t.edge, p.t.key, p.t.start
	if c, ok := p.client.conn.(interface{ clientAddr() netip.Addr }); ok {
		m.clientAddr = c.clientAddr()
	}
	m.lastActive = p.lastActive
	m.bytes = p.bytes
	m.toClient, m.toEdge = p.client.pending, p.edge.pending
	m.clientEOF, m.edgeEOF = p.client.eof, p.edge.eof
	m.counted = p.t.b.table.counts(p.t)
}

// fds returns the pair's sockets, client first.
func (p *relayPair) fds() (int, int) { return p.client.fd, p.edge.fd }

// checkTCPSocket makes sure received descriptors are TCP sockets before
// the relay reads and writes them.
func checkTCPSocket(fds ...int) error {
	for _, fd := range fds {
		typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil {
			return fmt.Errorf("received descriptor: %w", err)
		}
		domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil {
			return fmt.Errorf("received descriptor: %w", err)
		}
		if typ != unix.SOCK_STREAM || (domain != unix.AF_INET && domain != unix.AF_INET6) {
			return fmt.Errorf("received descriptor is not a TCP socket (domain %d, type %d)", domain, typ)
		}
	}
	return nil
}

func closeFD(fd int) { unix.Close(fd) }
