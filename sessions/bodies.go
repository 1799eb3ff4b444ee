package sessions

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/balancer/acceptguard"
)

// Request bodies on the data port. fasthttp reads a request's body whole
// before the handler runs, and allocates the length its head announces
// before a byte of the body comes: with fasthttp's default limit (4 MiB),
// a head of a hundred bytes from anyone held 4 MiB for the read timeout
// (TestDeclaredBodiesAllocateNothing: 64 such heads, heap +257 MiB for
// 30 s; at max_connections, GiBs). So the limit is set per request, on its
// head (bodyLimit), before any of it is allocated: the data port takes no
// body from a client, and only the edge-to-edge paths need one.
const (
	// maxPlainBody bounds the body of every request but a hand-off. The
	// largest the data port needs is a claim's: one session key.
	maxPlainBody = maxKeyLength
	// maxHandoffBody bounds a hand-off's body at the default edge.history:
	// a batch of maxHandoffBytes, or one session larger than that alone
	// (drain.go). Every edge takes one this long (handoffBodyLimit).
	maxHandoffBody = 4 << 20
	// handoffFraming bounds what a hand-off of one session holds beside
	// its history's envelopes and their commas: the sender's name, the
	// session's key and epoch, each escaped, its seq and term.
	handoffFraming = 64 << 10
	// handoffBodies is how many hand-off bodies the data port reads at
	// once. A hand-off's signature covers its body, so it is checked only
	// once the body has come; the head is signed too (checkHead), so with
	// a cluster key only an edge of the cluster gets a slot. A draining
	// edge sends its batches one at a time, so a few cover several edges
	// draining at once, and no more than this many × handoffBodyLimit is
	// ever allotted. Beyond, a hand-off is answered 503 + Retry-After at
	// once.
	handoffBodies = 4
)

// Reasons a request body is refused (ringlb_edge_request_bodies_refused_total).
const (
	bodyTooLarge = "too_large"              // over its path's limit
	bodyBusy     = "busy"                   // a hand-off while handoffBodies are being read
	bodyMemory   = acceptguard.ReasonMemory // a hand-off while the process is low on memory
	bodyReplayed = "replayed"               // a hand-off whose head signature already took a slot
)

// bodyGate holds the hand-off bodies being read: each slot is the request
// (its header, which fasthttp keeps at one address for the request's life)
// until its handler or the error handler gives it back, or until its read
// deadline has passed, whichever comes first (a read that failed without
// either running still frees its slot). It remembers the head signatures
// that took a slot (onceSigs): one seen on the wire and sent again within
// health.PeerWindow takes no second slot. Past sigsKept of them in 2 ×
// PeerWindow (a hand-off of up to 2 MiB every quarter second, from every
// edge together) the oldest is forgotten first, and could take one slot
// once more.
type bodyGate struct {
	mu    sync.Mutex
	slots [handoffBodies]struct {
		req   *fasthttp.RequestHeader
		until time.Time
	}
	heads onceSigs
}

// take gives req a slot until until, if one is free and its head's
// signature (sig; "" for none: not remembered) has taken none before.
func (g *bodyGate) take(req *fasthttp.RequestHeader, sig string, now, until time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.heads.seen(sig, now) {
		return false
	}
	for i := range g.slots {
		sl := &g.slots[i]
		if sl.req == nil || !now.Before(sl.until) {
			sl.req, sl.until = req, until
			g.heads.add(sig, now)
			return true
		}
	}
	return false
}

// took reports whether the head signature sig has taken a slot before.
func (g *bodyGate) took(sig string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.heads.seen(sig, now)
}

// give frees req's slot, if it holds one.
func (g *bodyGate) give(req *fasthttp.RequestHeader) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := range g.slots {
		if g.slots[i].req == req {
			g.slots[i].req = nil
		}
	}
}

// isHandoff reports whether a request head is a hand-off: a POST whose
// request-target's path is exactly pathHandoff. Any other spelling fasthttp
// would normalize to it (a dot segment, a double slash) gets the plain
// limit: a refusal, never a larger allotment.
func isHandoff(h *fasthttp.RequestHeader) bool {
	if !h.IsPost() {
		return false
	}
	uri := h.RequestURI()
	if i := bytes.IndexByte(uri, '?'); i >= 0 {
		uri = uri[:i]
	}
	return string(uri) == pathHandoff
}

// bodyLimit is the data port's HeaderReceived: the body limit of one
// request, set on its head before fasthttp allocates any of its body.
func (s *Server) bodyLimit(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if h.IsGet() || h.IsHead() {
		return fasthttp.RequestConfig{} // fasthttp reads no body
	}
	if !isHandoff(h) || h.ContentLength() == 0 {
		return fasthttp.RequestConfig{MaxRequestBodySize: maxPlainBody}
	}
	now := time.Now()
	sig, err := s.handoffHead(h, now)
	if err != nil {
		// Not an edge of the cluster: no slot, nothing allotted;
		// requestError answers 403.
		return fasthttp.RequestConfig{MaxRequestBodySize: 1}
	}
	if s.handoffLowMemory(h.ContentLength()) {
		// Refused before a byte of it is allotted, whatever its size
		// (every hand-off body is longer than a byte): its sessions are
		// new holders, as a new connection is, and installed while low
		// their histories would be cut to what a holder may keep. The
		// draining sender keeps them and tries again (drain.go).
		return fasthttp.RequestConfig{MaxRequestBodySize: 1}
	}
	// The sender gives the whole request the handoffTime of its length: a
	// body that has not come by then never will, and its slot is free
	// again. A length over the limit is refused at once (413).
	limit := s.handoffBodyLimit()
	took := handoffTime(min(h.ContentLength(), limit))
	if s.handoffRead > 0 {
		took = min(took, s.handoffRead)
	}
	if !s.bodies.take(h, sig, now, now.Add(took)) {
		return fasthttp.RequestConfig{MaxRequestBodySize: maxPlainBody}
	}
	return fasthttp.RequestConfig{MaxRequestBodySize: limit, ReadTimeout: took}
}

// handoffBodyLimit is the longest hand-off body this edge reads: a
// session whose history is as large as this edge's edge.history lets one
// be comes alone, and is taken whole — with a fixed 4 MiB, a drain of
// sessions whose histories an operator let grow past it reset their
// clients (TestDrainHandsOnAHistoryLargerThanARequest). Never less than
// maxHandoffBody, which the sender may cut a session to (drain.go).
func (s *Server) handoffBodyLimit() int {
	msgs, bytes := s.hub.historyBounds()
	return max(maxHandoffBody, bytes+5*msgs+handoffFraming) // an envelope's comma, or "null," for a lost seq
}

// handoffHead checks the head of a hand-off h before it may have a slot
// (ownership.checkHead), and returns its signature ("" when none is
// checked). An edge outside a cluster checks none: it refuses every
// hand-off (serveHandoff).
func (s *Server) handoffHead(h *fasthttp.RequestHeader, now time.Time) (string, error) {
	o := s.hub.owner.Load()
	if o == nil {
		return "", nil
	}
	return o.checkHead(h, now)
}

// handoffLowMemory reports whether a hand-off announcing n bytes is refused
// for the process's memory: low, or it would be with n more bytes.
func (s *Server) handoffLowMemory(n int) bool { return s.incoming.mem.LowFor(int64(n)) }

// requestError is the data port's ErrorHandler: fasthttp's answers, and
// the refusals of bodyLimit's limits (413; 403 for a hand-off whose head
// is not an edge's; 503 for a hand-off refused for now: every slot taken,
// its head signature already used, or the process low on memory),
// counted and logged sparingly (acceptguard.LogLimit).
func (s *Server) requestError(ctx *fasthttp.RequestCtx, err error) {
	h := &ctx.Request.Header
	s.bodies.give(h)
	var small *fasthttp.ErrSmallBuffer
	var netErr *net.OpError
	switch {
	case endedForRoom(ctx.Conn()):
		refuseFull(ctx)
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		reason := bodyTooLarge
		// A hand-off within its limit was refused for its head, or for
		// want of memory or of a slot (a chunked one, which edges never
		// send, counts as too large). Which, is asked again: each verdict
		// can only have changed since the head, microseconds ago, at a
		// membership change or a memory sample, or for a signature at the
		// very edge of its time window.
		if n := h.ContentLength(); isHandoff(h) && n > 0 && n <= s.handoffBodyLimit() {
			now := time.Now()
			sig, err := s.handoffHead(h, now)
			if err != nil {
				s.metrics.peerRefused.Inc()
				s.peerLog.Warn(s.log, "hand-off head refused: no slot", "remote", ctx.RemoteIP(), "announced", n, "err", err)
				ctx.Error("forbidden: not an edge of this cluster\n", fasthttp.StatusForbidden)
				return
			}
			switch {
			case s.handoffLowMemory(n):
				reason = bodyMemory
			case s.bodies.took(sig, now):
				reason = bodyReplayed
			default:
				reason = bodyBusy
			}
		}
		s.metrics.bodiesRefused.WithLabelValues(reason).Inc()
		s.bodyLog.Warn(s.log, "request body refused", "reason", reason, "remote", ctx.RemoteIP(), "announced", h.ContentLength())
		switch reason {
		case bodyBusy, bodyReplayed:
			// Replayed: an edge's own hand-off sent twice in the second
			// its signature names is signed anew when sent again.
			ctx.Error("service unavailable: hand-offs busy\n", fasthttp.StatusServiceUnavailable)
		case bodyMemory:
			ctx.Error("service unavailable: this edge is low on memory\n", fasthttp.StatusServiceUnavailable)
		default:
			ctx.Error("request body too large\n", fasthttp.StatusRequestEntityTooLarge)
			return
		}
		// The draining edge that sent it tries again then (drain.go).
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
	// The rest as fasthttp's own error handler answers them.
	case errors.As(err, &small):
		ctx.Error("Too big request header", fasthttp.StatusRequestHeaderFieldsTooLarge)
	case errors.As(err, &netErr) && netErr.Timeout():
		ctx.Error("Request timeout", fasthttp.StatusRequestTimeout)
	default:
		ctx.Error("Error when parsing request", fasthttp.StatusBadRequest)
	}
}
