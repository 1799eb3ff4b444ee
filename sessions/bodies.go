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
	// maxHandoffBody bounds a hand-off's body: a batch of maxHandoffBytes,
	// or one session larger than that alone (drain.go). fasthttp's
	// default limit, which bounded it before.
	maxHandoffBody = 4 << 20
	// handoffBodies is how many hand-off bodies the data port reads at
	// once. Its signature is checked only once its body has come (the
	// MAC covers it), so anyone may announce one; a draining edge sends
	// its batches one at a time, so a few cover several edges draining at
	// once, and no more than this many × maxHandoffBody is ever allotted.
	// Beyond, a hand-off is answered 503 + Retry-After at once.
	handoffBodies = 4
)

// Reasons a request body is refused (ringlb_edge_request_bodies_refused_total).
const (
	bodyTooLarge = "too_large"              // over its path's limit
	bodyBusy     = "busy"                   // a hand-off while handoffBodies are being read
	bodyMemory   = acceptguard.ReasonMemory // a hand-off while the process is low on memory
)

// bodyGate holds the hand-off bodies being read: each slot is the request
// (its header, which fasthttp keeps at one address for the request's life)
// until its handler or the error handler gives it back, or until its read
// deadline has passed, whichever comes first (a read that failed without
// either running still frees its slot).
type bodyGate struct {
	mu    sync.Mutex
	slots [handoffBodies]struct {
		req   *fasthttp.RequestHeader
		until time.Time
	}
}

// take gives req a slot until until, if one is free.
func (g *bodyGate) take(req *fasthttp.RequestHeader, now, until time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := range g.slots {
		sl := &g.slots[i]
		if sl.req == nil || !now.Before(sl.until) {
			sl.req, sl.until = req, until
			return true
		}
	}
	return false
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
	if s.handoffLowMemory(h.ContentLength()) {
		// Refused before a byte of it is allotted, whatever its size
		// (every hand-off body is longer than a byte): its sessions are
		// new holders, as a new connection is, and installed while low
		// their histories would be cut to what a holder may keep. The
		// draining sender keeps them and tries again (drain.go).
		return fasthttp.RequestConfig{MaxRequestBodySize: 1}
	}
	now := time.Now()
	// The sender gives the whole request handoffTimeout: a body that has
	// not come by then never will, and its slot is free again.
	if !s.bodies.take(h, now, now.Add(handoffTimeout)) {
		return fasthttp.RequestConfig{MaxRequestBodySize: maxPlainBody}
	}
	return fasthttp.RequestConfig{MaxRequestBodySize: maxHandoffBody, ReadTimeout: handoffTimeout}
}

// handoffLowMemory reports whether a hand-off announcing n bytes is refused
// for the process's memory: low, or it would be with n more bytes.
func (s *Server) handoffLowMemory(n int) bool { return s.incoming.mem.LowFor(int64(n)) }

// requestError is the data port's ErrorHandler: fasthttp's answers, and
// the refusals of bodyLimit's limits (413, or 503 for a hand-off refused
// for now: every slot taken, or the process low on memory), counted and
// logged sparingly (acceptguard.LogLimit).
func (s *Server) requestError(ctx *fasthttp.RequestCtx, err error) {
	h := &ctx.Request.Header
	s.bodies.give(h)
	var small *fasthttp.ErrSmallBuffer
	var netErr *net.OpError
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		reason := bodyTooLarge
		// A hand-off within its limit was refused only for want of memory
		// or of a slot (a chunked one, which edges never send, counts as
		// too large). Which, is asked again: the memory's verdict can only
		// have changed at a sample since the head, microseconds ago, and
		// either way the answer is the same 503.
		if n := h.ContentLength(); isHandoff(h) && n > 0 && n <= maxHandoffBody {
			reason = bodyBusy
			if s.handoffLowMemory(n) {
				reason = bodyMemory
			}
		}
		s.metrics.bodiesRefused.WithLabelValues(reason).Inc()
		s.bodyLog.Warn(s.log, "request body refused", "reason", reason, "remote", ctx.RemoteIP(), "announced", h.ContentLength())
		switch reason {
		case bodyBusy:
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
