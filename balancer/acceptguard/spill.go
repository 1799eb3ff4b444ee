package acceptguard

import (
	"container/list"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"
)

// msgEvicted is the log line of a connection closed to make room.
const msgEvicted = "connection ended to make room: its client holds more than its share of connections not yet served"

// ErrEnded is what a connection ended to make room reads from then on
// (Conn.Ended): a timeout (it wraps os.ErrDeadlineExceeded), so that an
// HTTP server answers the request it was waiting for with its error
// handler — whose user answers it as the refusal it is — and logs nothing.
var ErrEnded = fmt.Errorf("acceptguard: connection ended to make room: %w", os.ErrDeadlineExceeded)

// past is the read deadline of a connection ended to make room.
var past = time.Unix(1, 0)

// spill is a Listener's connections admitted beyond their client's share
// (Config.Spill): kept while the listener has room, the first closed when
// it has none — from the client holding the most of them, oldest first —
// until their request arrives (Conn.ReleaseClient). Bounded by the cap:
// every connection in it holds a slot under it.
//
// The clients are kept in tiers by how many they hold, from the most down,
// so that ending one for room does not go through every client: that runs
// for each connection accepted at the cap, under the lock each spilled
// connection's ReleaseClient and Close take, and the clients can be many (a
// share of 1, an IPv6 /64 each). Copied and sorted each time, 20000 of them
// took milliseconds for every accept (BenchmarkSpillEnd).
type spill struct {
	mu sync.Mutex
	by map[netip.Addr]*spillClient
	// top and bottom are the tiers of the clients holding the most and
	// the fewest; nil: none.
	top, bottom *spillTier
}

// spillClient is one client's spilled connections, oldest first, and its
// place in its tier.
type spillClient struct {
	key   netip.Addr
	conns list.List // *Conn
	tier  *spillTier
	at    *list.Element // in tier.clients
}

// spillTier is the clients holding n spilled connections each; lower holds
// fewer (nil: none do).
type spillTier struct {
	n             int
	clients       list.List // *spillClient
	lower, higher *spillTier
}

// add records c, admitted beyond client's share.
func (s *spill) add(client netip.Addr, c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.by == nil {
		s.by = map[netip.Addr]*spillClient{}
	}
	sc := s.by[client]
	if sc == nil {
		sc = &spillClient{key: client}
		s.by[client] = sc
	}
	c.spillIn, c.spillAt = sc, sc.conns.PushBack(c)
	s.retierLocked(sc)
	c.state.Or(connSpilled)
}

// leave takes c out of the spill, if it is in it, and reports whether it
// was evicted instead.
func (s *spill) leave(c *Conn) (evicted bool) {
	if c.state.Load()&connSpilled == 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.spillAt != nil {
		s.removeLocked(c)
	}
	return c.state.Load()&connEvicted != 0
}

// maxEvictChecks bounds the connections evict looks at for one room.
const maxEvictChecks = 16

// evict takes out a connection to end for room, marked evicted (its slot
// under the cap passes to the connection that needs the room: its Close
// does not give it back) and its client, or nil when none is spilled. The candidates are
// the oldest of the client holding the most, then of the next, and so on,
// maxEvictChecks at most; one that a request has reached already (bytes
// unread on its socket: a balancer's upgrade a moment from being served)
// is passed over for one that nothing has reached, else the first of them
// is taken all the same: bytes unread say only that the server has not
// read them yet — under load, on every connection accepted a moment ago,
// an attacker's as much as a balancer's — and kept, they held the room
// against everyone. Ended, its request is answered as at the cap (Close,
// a server's error handler).
func (s *spill) evict() (*Conn, netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first *list.Element // the first passed over
	checks := 0
	for t := s.top; t != nil && checks < maxEvictChecks; t = t.lower {
		for ce := t.clients.Front(); ce != nil && checks < maxEvictChecks; ce = ce.Next() {
			for e := ce.Value.(*spillClient).conns.Front(); e != nil && checks < maxEvictChecks; e = e.Next() {
				checks++
				if !Pending(e.Value.(*Conn).Conn) {
					return s.evictLocked(e)
				}
				if first == nil {
					first = e
				}
			}
		}
	}
	if first == nil {
		return nil, netip.Addr{}
	}
	return s.evictLocked(first)
}

// evictLocked takes out e's connection, marked evicted and ended, and its
// client. It is ended under s.mu: a Close of it waits there (leave) before
// its linger sets a deadline of its own, which an end after the lock could
// put in the past, closing it unanswered.
func (s *spill) evictLocked(e *list.Element) (*Conn, netip.Addr) {
	c := e.Value.(*Conn)
	s.removeLocked(c)
	c.state.Or(connEvicted)
	c.end()
	return c, c.spillIn.key
}

// removeLocked takes c out of its client's list (c.spillAt nil after).
func (s *spill) removeLocked(c *Conn) {
	sc := c.spillIn
	sc.conns.Remove(c.spillAt)
	c.spillAt = nil
	s.retierLocked(sc)
	if sc.conns.Len() == 0 {
		delete(s.by, sc.key)
	}
}

// retierLocked moves sc to the tier of what it holds now: one more or one
// fewer than its tier's (none: out of every tier).
func (s *spill) retierLocked(sc *spillClient) {
	n, from := sc.conns.Len(), sc.tier
	var to *spillTier
	switch {
	case n == 0:
	case from == nil: // a new client: 1
		to = s.tierAbove(nil, n)
	case n > from.n:
		to = s.tierAbove(from, n)
	default:
		to = s.tierBelow(from, n)
	}
	if from != nil {
		from.clients.Remove(sc.at)
		if from.clients.Len() == 0 {
			s.unlink(from)
		}
	}
	sc.tier, sc.at = to, nil
	if to != nil {
		sc.at = to.clients.PushBack(sc)
	}
}

// tierAbove is the tier of n next above t (nil: the lowest), made if none.
func (s *spill) tierAbove(t *spillTier, n int) *spillTier {
	next := s.bottom
	if t != nil {
		next = t.higher
	}
	if next != nil && next.n == n {
		return next
	}
	nt := &spillTier{n: n, lower: t, higher: next}
	if t != nil {
		t.higher = nt
	} else {
		s.bottom = nt
	}
	if next != nil {
		next.lower = nt
	} else {
		s.top = nt
	}
	return nt
}

// tierBelow is the tier of n next below t, made if none.
func (s *spill) tierBelow(t *spillTier, n int) *spillTier {
	if t.lower != nil && t.lower.n == n {
		return t.lower
	}
	nt := &spillTier{n: n, lower: t.lower, higher: t}
	if t.lower != nil {
		t.lower.higher = nt
	} else {
		s.bottom = nt
	}
	t.lower = nt
	return nt
}

func (s *spill) unlink(t *spillTier) {
	if t.lower != nil {
		t.lower.higher = t.higher
	} else {
		s.bottom = t.higher
	}
	if t.higher != nil {
		t.higher.lower = t.lower
	} else {
		s.top = t.lower
	}
	t.lower, t.higher = nil, nil
}

// end ends an evicted connection without closing its socket under the
// server reading it, so that it can still answer: a read it waits in ends
// at once, and any read from now on (Read, SetReadDeadline), with
// ErrEnded. A client that sent a request gets the server's answer to that
// error, not a connection closed unanswered — which a balancer takes for an
// edge dying, and tries the session's next edge. The close lingers (the
// request is read and dropped), so that the answer is not lost to a reset.
func (c *Conn) end() { _ = c.Conn.SetReadDeadline(past) }

// Ended reports whether c was ended to make room (Config.Spill,
// Config.EndWaiting): its
// request, if one arrives, is to be refused as at the cap.
func (c *Conn) Ended() bool { return c.state.Load()&connEvicted != 0 }

// SetReadDeadline sets the read deadline of c's socket; an ended c keeps
// its deadline in the past.
func (c *Conn) SetReadDeadline(t time.Time) error {
	err := c.Conn.SetReadDeadline(t)
	if c.Ended() {
		_ = c.Conn.SetReadDeadline(past)
	}
	return err
}

// SetDeadline sets both deadlines of c's socket; an ended c keeps its
// read deadline in the past, and its write deadline too when it was ended
// stalled writing (Config.EndStalledWrites).
func (c *Conn) SetDeadline(t time.Time) error {
	err := c.Conn.SetDeadline(t)
	if c.Ended() {
		_ = c.Conn.SetReadDeadline(past)
	}
	if c.state.Load()&connWriteEnded != 0 {
		_ = c.Conn.SetWriteDeadline(past)
	}
	return err
}

// SetWriteDeadline sets the write deadline of c's socket; c ended while
// stalled writing keeps it in the past: a server that sets a deadline for
// each write (gslb's) would otherwise wait out its own again.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	err := c.Conn.SetWriteDeadline(t)
	if c.state.Load()&connWriteEnded != 0 {
		_ = c.Conn.SetWriteDeadline(past)
	}
	return err
}

// stalled: c's write has waited Config.EndStalledWrites (its timer).
func (c *Conn) stalled() { c.l.waiting.stalled(c) }

// Len is how many connections are spilled (tests, an operator's view).
func (s *spill) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, sc := range s.by {
		n += sc.conns.Len()
	}
	return n
}
