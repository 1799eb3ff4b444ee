package acceptguard

import (
	"container/list"
	"sync"
)

// msgEndedWaiting is the log line of a waiting connection ended to make room.
const msgEndedWaiting = "connection ended to make room: it waited the longest for its client's next request"

// waiting is a Listener's connections waiting for their client's next
// request (Config.EndWaiting), the longest waiting first: accepted,
// answered (written to) or waiting again (Conn.Waiting), and no request
// read whole since (Conn.Serving). At the cap a new connection takes the
// place of the first without bytes unread (Listener.endWaiting). Bounded by
// the cap: every connection in it holds a slot under it.
//
// Why: a per-client share bounds what one address holds, not what many do.
// A few hosts (or one host's IPv6 prefix, a /64 each) opening their shares
// of connections that send a request now and then, within the server's
// idle deadline, held every slot of a DNS port for as long as they liked
// (gslb's TestTCPWaitingConnectionsCannotHoldEverySlot: another client's
// queries closed unanswered) — and so would requests trickled a byte at a
// time, were a connection busy once a byte is read, or messages the server
// ignores, were it busy until it writes. Ending the one that waited the
// longest costs a client that keeps a connection for later a reconnection
// (RFC 7766 6.2.3 lets a DNS server close idle connections), and one that
// wants to hold slots has to keep each of them busy.
type waiting struct {
	mu    sync.Mutex
	conns list.List // *Conn
}

// wait puts c at the back, unless it waits already. Its place is c.spillAt:
// a listener has a spill or waiting connections, never both.
func (w *waiting) wait(c *Conn) {
	if c.state.Load()&connWaiting != 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if c.state.Load()&(connClosed|connEvicted) == 0 {
		w.pushLocked(c)
	}
}

// pushLocked puts c at the back, unless it waits already. Called with
// w.mu held.
func (w *waiting) pushLocked(c *Conn) {
	if c.state.Load()&connWaiting == 0 {
		c.spillAt = w.conns.PushBack(c)
		c.state.Or(connWaiting)
	}
}

// busy takes c out, if it waits (Conn.Serving, Close).
func (w *waiting) busy(c *Conn) {
	if c.state.Load()&connWaiting == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if c.spillAt != nil {
		w.conns.Remove(c.spillAt)
		c.spillAt = nil
		c.state.And(^uint32(connWaiting))
	}
}

// stalled puts c at the back, unless it waits already, as a connection
// whose write has waited Config.EndStalledWrites for its client to read: the
// server waits on its client, as for an idle one. Not once the write has
// completed (a timer that fired late), nor for a closed or ended c.
func (w *waiting) stalled(c *Conn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		st := c.state.Load()
		if st&connWriting == 0 || st&(connClosed|connEvicted) != 0 {
			return
		}
		if c.state.CompareAndSwap(st, st|connStalled) {
			break
		}
	}
	w.pushLocked(c)
}

// end takes out the connection that has waited the longest with nothing
// unread on its socket (maxEvictChecks looked at; one with bytes unread has
// a request on its way in, and is busy) — or stalled writing to a client
// that does not read, whatever is unread: the requests of a client that
// pipelines them and reads no answer —, marked evicted: its slot under the
// cap passes to the connection that needs the room (its Close does not
// give it back), and ended (as the spill's are: under the lock; a stalled
// one's write too). nil: none.
func (w *waiting) end() *Conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	checks := 0
	for e := w.conns.Front(); e != nil && checks < maxEvictChecks; e = e.Next() {
		checks++
		c := e.Value.(*Conn)
		stalled := c.state.Load()&connStalled != 0
		if !stalled && Pending(c.Conn) {
			continue
		}
		w.conns.Remove(e)
		c.spillAt = nil
		c.state.And(^uint32(connWaiting))
		c.state.Or(connEvicted)
		c.end()
		if stalled {
			c.state.Or(connWriteEnded)
			_ = c.Conn.SetWriteDeadline(past)
		}
		return c
	}
	return nil
}

// Stalled is how many connections wait with a write stalled
// (Config.EndStalledWrites; tests, an operator's view).
func (l *Listener) Stalled() int {
	if l.waiting == nil {
		return 0
	}
	l.waiting.mu.Lock()
	defer l.waiting.mu.Unlock()
	n := 0
	for e := l.waiting.conns.Front(); e != nil; e = e.Next() {
		if e.Value.(*Conn).state.Load()&connStalled != 0 {
			n++
		}
	}
	return n
}

// Len is how many connections wait (tests, an operator's view).
func (w *waiting) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.conns.Len()
}
