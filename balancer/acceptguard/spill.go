package acceptguard

import (
	"container/list"
	"fmt"
	"net/netip"
	"os"
	"slices"
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
type spill struct {
	mu sync.Mutex
	by map[netip.Addr]*list.List // client network → its spilled connections, oldest first
}

// add records c, admitted beyond client's share.
func (s *spill) add(client netip.Addr, c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.by == nil {
		s.by = map[netip.Addr]*list.List{}
	}
	l := s.by[client]
	if l == nil {
		l = list.New()
		s.by[client] = l
	}
	c.spillKey, c.spillAt = client, l.PushBack(c)
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
		s.removeLocked(c.spillKey, c.spillAt)
		c.spillAt = nil
	}
	return c.state.Load()&connEvicted != 0
}

// maxEvictChecks bounds the connections evict looks at for one room.
const maxEvictChecks = 16

// evict takes out a connection to end for room, marked evicted (its slot
// under the cap passes to the connection that needs the room: its Close
// does not give it back), or nil when none will do. The candidates are the
// oldest of the client holding the most, then of the next, and so on; one
// that a request has reached already (bytes unread on its socket: a
// balancer's upgrade a moment from being served) is passed over, since
// ending it would leave that request unanswered — a balancer takes such a
// close for the edge dying, and tries the session's next edge. At most
// maxEvictChecks are looked at. The caller ends it (end).
func (s *spill) evict() *Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.by) == 0 {
		return nil
	}
	clients := make([]netip.Addr, 0, len(s.by))
	for k := range s.by {
		clients = append(clients, k)
	}
	slices.SortFunc(clients, func(a, b netip.Addr) int { return s.by[b].Len() - s.by[a].Len() })
	checks := 0
	for _, k := range clients {
		for e := s.by[k].Front(); e != nil; e = e.Next() {
			if checks++; checks > maxEvictChecks {
				return nil
			}
			c := e.Value.(*Conn)
			if pending(c.Conn) {
				continue
			}
			s.removeLocked(k, e)
			c.spillAt = nil
			c.state.Or(connEvicted)
			return c
		}
	}
	return nil
}

func (s *spill) removeLocked(key netip.Addr, e *list.Element) {
	l := s.by[key]
	l.Remove(e)
	if l.Len() == 0 {
		delete(s.by, key)
	}
}

// end ends an evicted connection without closing its socket under the
// server reading it, so that it can still answer: a read it waits in ends
// at once, and any read from now on (Read, SetReadDeadline), with
// ErrEnded. A client that sent a request gets the server's answer to that
// error, not a connection closed unanswered — which a balancer takes for an
// edge dying, and tries the session's next edge. The close lingers (the
// request is read and dropped), so that the answer is not lost to a reset.
func (c *Conn) end() { _ = c.Conn.SetReadDeadline(past) }

// Ended reports whether c was ended to make room (Config.Spill): its
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
// read deadline in the past.
func (c *Conn) SetDeadline(t time.Time) error {
	err := c.Conn.SetDeadline(t)
	if c.Ended() {
		_ = c.Conn.SetReadDeadline(past)
	}
	return err
}

// Len is how many connections are spilled (tests, an operator's view).
func (s *spill) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, l := range s.by {
		n += l.Len()
	}
	return n
}
