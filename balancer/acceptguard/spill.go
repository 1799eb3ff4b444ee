package acceptguard

import (
	"container/list"
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// msgEvicted is the log line of a connection closed to make room.
const msgEvicted = "connection closed to make room: its client holds more than its share of connections not yet served"

// errEnded is what a connection ended to make room reads: the server
// closed it (net.ErrClosed), which a server takes for its own close — no
// error answer, no error logged — though a request had begun to arrive.
var errEnded = fmt.Errorf("acceptguard: connection ended to make room: %w", net.ErrClosed)

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

// evict takes out the oldest connection of the client holding the most,
// marked evicted (its slot under the cap passes to the connection that
// needs the room: its Close does not give it back), or nil when the spill
// is empty. The caller ends it (end).
func (s *spill) evict() *Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var most *list.List
	var key netip.Addr
	for k, l := range s.by {
		if most == nil || l.Len() > most.Len() {
			most, key = l, k
		}
	}
	if most == nil {
		return nil
	}
	e := most.Front()
	c := e.Value.(*Conn)
	s.removeLocked(key, e)
	c.spillAt = nil
	c.state.Or(connEvicted | connNoLinger)
	return c
}

func (s *spill) removeLocked(key netip.Addr, e *list.Element) {
	l := s.by[key]
	l.Remove(e)
	if l.Len() == 0 {
		delete(s.by, key)
	}
}

// end ends an evicted connection without closing its socket under the
// server reading it: its read side is shut, so the server's read ends
// (errEnded: closed, no error answer, nothing logged) and it closes the
// connection (a request that arrived whole meanwhile is answered by
// ReleaseClient's false). A socket that cannot be shut so is closed.
func (c *Conn) end() {
	if r, ok := c.Conn.(interface{ CloseRead() error }); ok && r.CloseRead() == nil {
		return
	}
	_ = c.Conn.Close()
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
