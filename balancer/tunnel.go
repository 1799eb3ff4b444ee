package balancer

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// tunnel is one WebSocket connection after a successful handshake: a byte
// pipe between the client and the edge. It never parses frames, so text,
// binary, ping and close frames (with their codes) pass unchanged, and a frame
// costs no allocation.
//
// Copying uses io.Copy between the two connections: between two *net.TCPConn
// Go's TCPConn.ReadFrom moves the bytes with splice(2) through a kernel pipe,
// without copying them through user space. One goroutine per direction: the
// fasthttp hijack goroutine carries client→edge and run starts one for
// edge→client.
//
// Idle timeout without per-read cost: a splice cannot report progress until it
// returns, so instead of refreshing a deadline on every read, both
// connections get a read deadline at the end of the current round (now +
// TunnelIdleTimeout). When it fires, io.Copy returns with the byte count of
// the round; once both directions have returned, the tunnel closes if neither
// moved a byte, else a new round starts. A silent tunnel thus closes between
// one and two TunnelIdleTimeouts after its last byte, at the cost of two
// deadline updates per connection per round. The write deadline sits one
// round later, so a peer that stops reading (full TCP window) cannot hold a
// tunnel and its goroutines forever.
type tunnel struct {
	b    *Balancer
	edge string // edge name, for metrics and logs
	key  string // the stickiness key it was routed by
	// static: edge was a static edge of the config when the tunnel
	// opened, a third-party backend that moves none of its sessions: the
	// table closes the tunnel when its session moves, even once a reload
	// took the edge out of the config (tunnelsNotOn).
	static bool
	// url is where the tunnel went: a reload may give its static edge
	// another (record).
	url string
	// start is when the edge answered 101 (carried over a hand-off).
	start time.Time
	conn  net.Conn // to the edge
	// head is what goes to the client first: the edge's 101 response head
	// (plus an assigned cookie) and any bytes the edge sent right after it.
	head []byte
	idle time.Duration

	mu     sync.Mutex
	client net.Conn // set by run
	// loop and pair are set while the epoll relay carries the tunnel.
	loop *relayLoop
	pair *relayPair
	// done is released exactly once: by run, or by close when run never
	// starts (the hijack did not happen).
	doneOnce sync.Once
	started  bool
	closed   bool
	// movedAway: the tunnel moved to a new process (its access line is
	// that process's).
	movedAway bool

	// rounds is the state of a tunnel copied by goroutines (TLS), guarded
	// by mu; nil for one the relay carries (which counts in pair.bytes),
	// so that an idle relayed tunnel does not carry it.
	rounds *copyRounds

	// For the access log, guarded by mu: how the tunnel ended (endAs) and
	// the client (of a tunnel taken over from the previous process: its
	// address, port 0).
	endReason  string
	clientAddr netip.AddrPort
}

// copyRounds is the idle rounds of a tunnel copied by goroutines.
type copyRounds struct {
	round    chan struct{} // closed when the current round is resolved
	moved    int64         // bytes moved in the current round, both directions
	finished [2]bool       // direction returned from its copy this round
	ended    [2]bool       // direction is over (EOF or error)
	writeBy  time.Time     // write deadline of the current round
	// bytes copied, by direction (clientToEdge, edgeToClient), for the
	// access log
	bytes [2]uint64
}

// Ways a tunnel ends, as the access log names them.
const (
	endClient   = "client"   // the client closed first
	endEdge     = "edge"     // the edge closed first
	endIdle     = "idle"     // tunnel_idle_timeout
	endShutdown = "shutdown" // the balancer closed it (stopping)
	endError    = "error"    // a read or write failed
)

// endAs records how the tunnel ended, unless that is known already.
func (t *tunnel) endAs(reason string) {
	t.mu.Lock()
	if t.endReason == "" {
		t.endReason = reason
	}
	t.mu.Unlock()
}

// Tunnel directions.
const (
	clientToEdge = 0
	edgeToClient = 1
)

// run is the fasthttp hijack handler. c is the hijacked client connection;
// the server keeps hijacked connections open (KeepHijackedConns), so the
// tunnel closes it. Plain TCP tunnels go to the epoll relay and run returns
// at once; others (TLS) are copied by this goroutine and one more.
func (t *tunnel) run(c net.Conn) {
	handedOff := false
	defer func() {
		if !handedOff {
			t.release()
		}
	}()
	// fasthttp hands over a wrapper whose Read drains its request buffer
	// first; the TCP connection underneath is what splice and epoll need.
	client := c
	if u, ok := c.(interface{ UnsafeConn() net.Conn }); ok && u.UnsafeConn() != nil {
		client = u.UnsafeConn()
	}
	t.mu.Lock()
	if t.closed { // shut down between the handshake and the hijack
		t.mu.Unlock()
		t.conn.Close()
		client.Close()
		return
	}
	t.client, t.started = client, true
	t.clientAddr = remoteAddrPort(client.RemoteAddr())
	t.mu.Unlock()

	if err := t.greet(c, client); err != nil {
		t.b.log.Debug("tunnel setup failed", "edge", t.edge, "err", err)
		t.close()
		return
	}
	if t.b.relay != nil && t.b.relay.add(t, client, t.conn) {
		handedOff = true
		return
	}

	t.mu.Lock()
	t.rounds = &copyRounds{round: make(chan struct{})}
	t.armLocked(time.Now())
	t.mu.Unlock()

	done := make(chan struct{})
	go func() {
		defer close(done)
		t.pipe(edgeToClient, client, t.conn)
	}()
	t.pipe(clientToEdge, t.conn, client)
	<-done
	t.close()
}

// greet writes the edge's handshake answer to the client, then forwards the
// bytes fasthttp had already read from the client past the upgrade request
// (a client may send its first frames without waiting for the 101).
func (t *tunnel) greet(c, client net.Conn) error {
	_ = client.SetWriteDeadline(time.Now().Add(responseTimeout))
	if _, err := client.Write(t.head); err != nil {
		return err
	}
	t.head = nil
	_ = client.SetWriteDeadline(time.Time{})
	if c == client {
		return nil // no wrapper, so nothing buffered
	}
	// Drain the wrapper's buffer without blocking: with a read deadline in
	// the past, a read is served from the buffer while it has bytes, then
	// fails at once with a timeout without taking anything from the socket.
	// What the kernel holds stays there for splice.
	_ = client.SetReadDeadline(time.Unix(1, 0))
	var buf [4096]byte
	for {
		n, err := c.Read(buf[:])
		if n > 0 {
			if _, werr := t.conn.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			return err
		}
	}
	return client.SetReadDeadline(time.Time{})
}

// pipe copies src to dst until src ends, an error, or the tunnel goes idle.
func (t *tunnel) pipe(dir int, dst, src net.Conn) {
	for {
		n, err := io.Copy(dst, src)
		if err == nil {
			// src sent FIN: pass the half-close on, and let the other
			// direction finish what it has in flight.
			if dir == clientToEdge {
				t.endAs(endClient)
			} else {
				t.endAs(endEdge)
			}
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			} else {
				t.close()
			}
			t.end(dir, n)
			return
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && t.nextRound(dir, n) {
			continue
		}
		t.endAs(endError)
		t.close()
		t.end(dir, n)
		return
	}
}

// armLocked starts a round at now. Once one direction is over, rounds are
// of the fin timeout: the side that has not followed its peer's FIN may
// never do so (a client that neither reads nor closes).
func (t *tunnel) armLocked(now time.Time) {
	span := t.idle
	if r := t.rounds; r.ended[clientToEdge] || r.ended[edgeToClient] {
		span = min(span, t.b.cfg.TunnelFinTimeout.D())
	}
	readBy := now.Add(span)
	t.rounds.writeBy = readBy.Add(span)
	for _, c := range []net.Conn{t.client, t.conn} {
		_ = c.SetReadDeadline(readBy)
		_ = c.SetWriteDeadline(t.rounds.writeBy)
	}
}

// nextRound records that direction dir's copy returned on a deadline after
// moving n bytes, waits until the other direction's copy returns too, and
// reports whether the tunnel goes on.
func (t *tunnel) nextRound(dir int, n int64) bool {
	t.mu.Lock()
	r := t.rounds
	if t.closed || !time.Now().Before(r.writeBy) {
		// The write deadline fired: a peer stopped reading for a whole round.
		t.mu.Unlock()
		return false
	}
	r.moved += n
	r.bytes[dir] += uint64(n)
	r.finished[dir] = true
	if r.done() {
		return t.resolveLocked()
	}
	ch := r.round
	t.mu.Unlock()
	<-ch
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.closed
}

// end records that direction dir is over.
func (t *tunnel) end(dir int, n int64) {
	t.mu.Lock()
	r := t.rounds
	r.ended[dir] = true
	r.moved += n
	r.bytes[dir] += uint64(n)
	other := 1 - dir
	if !t.closed && r.finished[other] && !r.ended[other] {
		// The other direction waits for this round to end; it ends now.
		t.resolveLocked()
		return
	}
	if !t.closed && !r.ended[other] {
		// The other direction is still copying: its deadlines become the
		// fin timeout's.
		t.armLocked(time.Now())
	}
	t.mu.Unlock()
}

// done reports whether both directions have finished the round or ended.
func (r *copyRounds) done() bool {
	for d := range 2 {
		if !r.finished[d] && !r.ended[d] {
			return false
		}
	}
	return true
}

// resolveLocked ends the current round and unlocks t.mu: idle → close,
// else start the next round.
func (t *tunnel) resolveLocked() bool {
	r := t.rounds
	if r.moved == 0 {
		if t.endReason == "" {
			t.endReason = endIdle
		}
		t.mu.Unlock()
		t.b.log.Debug("tunnel idle, closing", "edge", t.edge, "idle_timeout", t.idle)
		t.close()
		return false
	}
	r.moved = 0
	r.finished = [2]bool{}
	close(r.round)
	r.round = make(chan struct{})
	t.armLocked(time.Now())
	t.mu.Unlock()
	return true
}

// close ends the tunnel: both connections close, which unblocks both copies.
// Safe to call many times and from any goroutine (Shutdown uses it).
func (t *tunnel) close() {
	t.mu.Lock()
	if t.loop != nil {
		l, p := t.loop, t.pair
		t.mu.Unlock()
		l.closePair(p) // the loop closes the sockets and calls relayClosed
		return
	}
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	if t.endReason == "" {
		t.endReason = endShutdown
	}
	if t.rounds != nil {
		close(t.rounds.round)
	}
	started := t.started
	t.mu.Unlock()
	if t.conn == nil {
		// Taken over from the previous process but not in the relay yet
		// (adopt closes its sockets): nothing here to close.
		t.release()
		return
	}
	t.conn.Close()
	if started {
		t.client.Close()
	} else {
		// run never started (and may never: the hijack can fail); release
		// here so Shutdown does not wait for it. If run starts later it
		// sees closed and returns.
		t.release()
	}
}

// abandon ends a tunnel whose client connection the server closed instead
// of handing it over: run never starts.
func (t *tunnel) abandon() {
	t.endAs(endClient)
	t.close()
}

// release unregisters the tunnel, once.
func (t *tunnel) release() {
	t.doneOnce.Do(func() { t.b.releaseTunnel(t) })
}

// setRelay records that the epoll relay now carries the tunnel, unless it
// was closed meanwhile (false). From then on the tunnel holds no Go
// connection: the relay's pair has the sockets and what counts them.
func (t *tunnel) setRelay(l *relayLoop, p *relayPair) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.loop, t.pair = l, p
	t.conn, t.client = nil, nil
	return true
}

// relayLoop is the loop carrying the tunnel, nil when none does.
func (t *tunnel) relayLoop() *relayLoop {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.loop
}

// settled reports whether the tunnel has left the handshake: carried by the
// relay, copied by goroutines, or closed.
func (t *tunnel) settled() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed || t.loop != nil || t.rounds != nil
}

// relayClosed is called by the relay loop once it has closed both sockets.
func (t *tunnel) relayClosed() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.release()
}
