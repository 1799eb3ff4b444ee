package acceptguard

import (
	"net"
	"sync"
	"sync/atomic"
)

// Handovers is what a server has set aside for connections it is handing
// to a hijack handler, so it can be given back should the server close a
// connection instead. fasthttp runs a hijack handler only if the connection
// is still fine once the request handler has returned: an answer it still
// holds for an earlier pipelined request is flushed first, and a failed
// flush (the client reset) closes the connection and runs no handler.
// Whatever the request handler reserved for the handler to own (a tunnel and
// its backend connection, a per-client share, a stream's place in a wait
// group) then had no owner. The server calls Pending before it returns from
// the request handler, the hijack handler calls Taken first, and the server's
// ConnState hook calls Closed for StateClosed: exactly one of the two ever
// happens for a connection, so the undo runs exactly when the handler never
// will. The zero value is ready to use.
type Handovers struct {
	// n counts pending hand-overs: Closed, called for every connection the
	// server closes, looks no further while there are none.
	n  atomic.Int64
	mu sync.Mutex
	m  map[net.Conn]func()
}

// Pending records that c is being handed to a hijack handler; undo gives
// back what the handler would have owned, should it never run. c is the
// connection the server serves (fasthttp's RequestCtx.Conn).
func (h *Handovers) Pending(c net.Conn, undo func()) {
	h.mu.Lock()
	if h.m == nil {
		h.m = make(map[net.Conn]func())
	}
	if _, ok := h.m[c]; !ok {
		h.n.Add(1)
	}
	h.m[c] = undo
	h.mu.Unlock()
}

// Taken is the hijack handler's first call: c is its owner's now.
func (h *Handovers) Taken(c net.Conn) { h.take(c) }

// Closed runs the undo of c's hand-over, if one is pending: the server
// closed c, so its hijack handler never runs.
func (h *Handovers) Closed(c net.Conn) {
	if undo := h.take(c); undo != nil {
		undo()
	}
}

// Len is the number of pending hand-overs.
func (h *Handovers) Len() int { return int(h.n.Load()) }

func (h *Handovers) take(c net.Conn) func() {
	if h.n.Load() == 0 {
		return nil
	}
	h.mu.Lock()
	undo, ok := h.m[c]
	if ok {
		delete(h.m, c)
		h.n.Add(-1)
	}
	h.mu.Unlock()
	return undo
}
