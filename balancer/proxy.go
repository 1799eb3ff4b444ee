package balancer

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/balancer/httplog"
	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/operator"
)

// Routing limits (docs/DESIGN.md, "Data path", step 5).
const (
	// maxDialAttempts: edges tried per request when dialing fails — the
	// owner, then the next candidates of the key. Bounded so a partitioned
	// balancer fails fast instead of walking the whole ring.
	maxDialAttempts = 3
	// maxRedirects: 421 + X-Ringlb-Owner hops followed per request. One is
	// enough when views agree; the second covers a pin that moved meanwhile.
	maxRedirects = 2
)

// Header names of the wire contract.
const (
	headerOwner = configs.HeaderOwner
	headerEdge  = configs.HeaderEdge
)

// reservedPrefix is ringlb's own path namespace on data ports: the health
// check here, edge-to-edge requests on edges. Nothing under it is proxied.
var reservedPrefix = []byte(configs.PathReserved)

// headerSkip names, on a WebSocket upgrade sent to a fallback edge, the edges
// whose dial failed, so the edge checks ownership on the ring without them
// (the ring gossip will agree on once they are declared dead).
const headerSkip = configs.HeaderSkip

// errNoEdge: every edge tried could not be dialed.
var errNoEdge = errors.New("no edge reachable")

// errOutOfResources: a dial failed in this process (health.LocalFailure), not
// at the edge.
var errOutOfResources = errors.New("this balancer is out of descriptors, memory or local ports")

// errUnrequestedSwitch: an edge answered a plain request with 101.
var errUnrequestedSwitch = errors.New("101 Switching Protocols to a request that asked for no upgrade")

// serveData is the data port's handler.
func (b *Balancer) serveData(ctx *fasthttp.RequestCtx) {
	if b.access.on.Load() {
		defer b.access.request(ctx, time.Now())
	}
	// Framing first: nothing of a refused request is looked at further
	// or forwarded, the health path included.
	cur := b.current.Load()
	if code, err := refusal(&ctx.Request.Header, cur.cfg.Limits.MaxBodyBytes); code != 0 {
		b.refuse(ctx, code, err)
		return
	}
	if string(ctx.Path()) == HealthPath && (ctx.IsGet() || ctx.IsHead()) {
		b.serveHealth(ctx)
		return
	}
	if bytes.HasPrefix(ctx.Path(), reservedPrefix) {
		// Edge-to-edge paths (claims, session hand-off) live under this
		// prefix on the edges' data port: never reachable through us.
		b.reply(ctx, "", fasthttp.StatusNotFound, []byte("not found\n"))
		return
	}
	if len(ctx.Host()) == 0 {
		b.refuse(ctx, fasthttp.StatusBadRequest, errNoHost)
		return
	}

	if len(ctx.Request.Header.Peek(headerRequestID)) == 0 {
		var idBuf [32]byte
		ctx.Request.Header.SetBytesV(headerRequestID, b.newRequestID(&idBuf))
	}

	var kb keyBuf
	keys := cur.keys
	key, source, err := keys.extract(&ctx.Request, &kb)
	assigned := false
	switch {
	case errors.Is(err, errNoKey) && keys.byIP:
		// Every key-less request of one client goes to one edge.
		if key = ipKey(ctx.RemoteIP(), &kb); key == nil {
			b.reply(ctx, "", fasthttp.StatusBadRequest, keys.rejectBody(err))
			return
		}
	case errors.Is(err, errNoKey) && keys.assignCookie != "":
		key, assigned = assignKey(&kb), true
	case err != nil:
		b.reply(ctx, "", fasthttp.StatusBadRequest, keys.rejectBody(err))
		return
	case source == sourceCookie && isWebSocketUpgrade(&ctx.Request.Header) &&
		configs.CrossOriginCookieKey(ctx.Request.Header.Peek(fasthttp.HeaderOrigin), ctx.Host()):
		// The browser attached the cookie to another page's socket: that
		// page would be tunnelled to the cookie's session.
		b.refuse(ctx, fasthttp.StatusForbidden, configs.ErrCrossOriginCookieKey)
		return
	}

	// A balancer that shares its table waits for a peer's before it
	// routes (bounded by session_table.startup_wait): a key it does not
	// know yet would go to its ring owner, not to its session.
	if !b.table.waitRoutable(ctx.Done()) {
		b.reply(ctx, "", fasthttp.StatusServiceUnavailable, []byte("service unavailable: shutting down\n"))
		return
	}
	// A live key goes to its session's backend, whatever the ring says
	// now; a new one to its ring owner.
	h := xxhash.Sum64(key)
	snap := b.ring.Snapshot()
	rt := requestRoute{key: key, hash: h}
	rt.target, rt.basis, rt.inTable = b.table.lookup(h, snap)
	if !rt.inTable {
		owner, ok := snap.Locate(key)
		if !ok {
			b.reply(ctx, "", fasthttp.StatusServiceUnavailable, []byte("service unavailable: no edge on the ring\n"))
			return
		}
		rt.target = owner
	}

	var cookie []byte
	if assigned {
		cookie = b.assignedCookie(key, ctx.IsTLS())
	}
	if isWebSocketUpgrade(&ctx.Request.Header) {
		b.serveUpgrade(ctx, snap, rt, cookie)
		return
	}
	b.serveHTTP(ctx, snap, rt, cookie)
}

// requestRoute is where serveData sends a request: the key, its hash, the backend
// chosen (the table's or the ring owner) and what the table said, for
// recording the answer.
type requestRoute struct {
	key     []byte
	hash    uint64
	target  ring.Member
	basis   placement
	inTable bool
}

// clientAddr is the request's client address (after PROXY protocol), the
// unit of the session table's new-key budget.
func clientAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	a, _ := netip.AddrFromSlice(ctx.RemoteIP())
	return a
}

func (b *Balancer) serveHealth(ctx *fasthttp.RequestCtx) {
	// The data server sets no default type (an edge's answer goes on
	// with its own); the balancer's own answers name theirs.
	ctx.SetContentType("text/plain; charset=utf-8")
	if b.maintenance.Load() {
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.SetBodyString("maintenance\n")
		return
	}
	if !b.table.routable() {
		// Starting: the table from the other balancers is not in yet
		// (requests wait for it, within startup_wait), and the ring may
		// not have every edge yet either. Not ready, so 503 for whatever
		// checks it (keepalived, a load balancer in front), but marked as
		// starting: a gslb's monitor takes it for no finding, not for a
		// balancer that is down, and does not fail its region over.
		ctx.Response.Header.Set(configs.HeaderStarting, "session table")
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.SetBodyString("session table syncing\n")
		return
	}
	if len(b.ring.Snapshot().Members()) == 0 {
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.SetBodyString("no edge routable\n")
		return
	}
	ctx.SetBodyString("ok\n")
}

// refuse answers a request refused for its framing or body (refusal, or a
// body failing as it streams) and closes the connection: what follows a
// refused head on it cannot be trusted to start the next request.
// reason is one of framing.go's errors, never a stream's (which would
// show addresses).
func (b *Balancer) refuse(ctx *fasthttp.RequestCtx, code int, reason error) {
	body := reason.Error() + "\n"
	if code == fasthttp.StatusBadRequest {
		body = "bad request: " + body
	}
	b.reply(ctx, "", code, []byte(body))
	if code == fasthttp.StatusMethodNotAllowed {
		ctx.Response.Header.Set(fasthttp.HeaderAllow, allowedMethods)
	}
	ctx.SetConnectionClose()
}

// expectContinue refuses, instead of a 100 Continue, a request whose body
// the handler would refuse, so the client does not send it.
func (b *Balancer) expectContinue(ctx *fasthttp.RequestCtx) int {
	if code, _ := refusal(&ctx.Request.Header, b.current.Load().cfg.Limits.MaxBodyBytes); code != 0 {
		b.countRequest("", code)
		return code
	}
	return fasthttp.StatusContinue
}

// reply answers the client from the balancer itself.
// replyFailed answers a request no edge answered (err, from forward): 503
// with a retry when this process is short of resources, else 502.
func (b *Balancer) replyFailed(ctx *fasthttp.RequestCtx, edge string, err error) {
	if errors.Is(err, errOutOfResources) {
		b.reply(ctx, edge, fasthttp.StatusServiceUnavailable, []byte("service unavailable: the balancer is out of resources; retry\n"))
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
		return
	}
	b.reply(ctx, edge, fasthttp.StatusBadGateway, []byte("bad gateway: no edge answered\n"))
}

func (b *Balancer) reply(ctx *fasthttp.RequestCtx, edge string, code int, body []byte) {
	ctx.Response.Reset()
	ctx.SetStatusCode(code)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBody(body)
	b.countRequest(edge, code)
}

func (b *Balancer) countRequest(edge string, code int) {
	b.metrics.requestsTotal.WithLabelValues(edge, codeLabel(code)).Inc()
}

// assignedCookie renders the Set-Cookie value for an assigned key. Not
// HttpOnly: the key picks an edge and a session, it is not a credential, and
// the IDE page may show or share it.
func (b *Balancer) assignedCookie(key []byte, secure bool) []byte {
	c := make([]byte, 0, 96)
	c = append(c, b.current.Load().keys.assignCookie...)
	c = append(c, '=')
	c = append(c, key...)
	c = append(c, "; Path=/; SameSite=Lax"...)
	if secure {
		c = append(c, "; Secure"...)
	}
	return c
}

// forward sends one request along the route of key: the owner first; after a
// dial error the next of the key's candidates (at most maxDialAttempts edges
// in all); after a 421 naming another owner, that owner (at most maxRedirects
// hops). try makes one attempt and returns the X-Ringlb-Owner of a 421 answer
// ("" otherwise; the 421 itself is relayed when not followed), or an error.
// forward returns the name of the edge that answered.
func (b *Balancer) forward(snap *ring.Snapshot, key []byte, owner ring.Member, try func(m ring.Member, skipped []string) (redirect string, err error)) (string, error) {
	var (
		skipBuf [maxDialAttempts + 1]string
		skipped = skipBuf[:0]
		candBuf [8]ring.Member
		cands   []ring.Member
		tried   [maxDialAttempts + maxRedirects]string
		nTried  int
		dials   int
		hops    int
		target  = owner
		retried string // the edge a timed-out dial was tried again on
	)
	// Passive health: an owner whose dial failed moments ago is skipped
	// for the same next candidate every balancer would pick, instead of
	// costing each request a failed dial.
	if b.isSuspect(owner.Name) {
		cands = snap.Candidates(key, candBuf[:0])
		target = b.fallback(snap, key, owner.Name, cands, nil)
		if target.Name == "" {
			target = owner
		}
		if target != owner {
			skipped = append(skipped, owner.Name)
		}
	} else if ro, ok := snap.Locate(key); ok && ro.Name != owner.Name && b.isSuspect(ro.Name) {
		// Sent by the session table to another edge than the ring's
		// owner, which is unreachable: an edge checking ownership does so
		// on the ring without it, as after a failover.
		skipped = append(skipped, ro.Name)
	}
	for {
		if nTried < len(tried) {
			tried[nTried] = target.Name
			nTried++
		}
		redirect, err := try(target, skipped)
		switch {
		case err == nil && redirect == "":
			return target.Name, nil
		case err == nil:
			if hops == maxRedirects || redirect == target.Name {
				return target.Name, nil // relay the 421
			}
			next, ok := memberNamed(snap, redirect)
			if !ok {
				// Not on the ring: a draining edge still hosting the
				// session (it hands it on shortly) is in gossip.
				next, ok = b.clusterEdge(redirect)
			}
			if !ok {
				// Every request to a backend answering so would say it
				// (a third-party backend's 421 is its own), and the name
				// is the backend's text: said when it is a node name.
				owner := redirect
				if !configs.ValidNodeName(owner) {
					owner = "(not a node name)"
				}
				b.strayOwnerLog.Warn(b.log, "421 names an edge not on the ring; relaying it", "edge", target.Name, "owner", owner)
				return target.Name, nil
			}
			hops++
			target = next
		case isDialError(err) && health.LocalFailure(err):
			// No edge failed: this process could not open the
			// connection. Another edge would fail alike, and the key
			// sent elsewhere (the owner taken for suspect, a skip)
			// would split its live session: the client is answered 503
			// and retries once connections have closed.
			b.metrics.backendErrorsTotal.WithLabelValues(target.Name, errorKindLocal).Inc()
			b.edgeFailLog.Warn(b.log, "cannot dial an edge: this process is out of resources", "edge", target.Name, "err", err)
			return target.Name, fmt.Errorf("%w: %w", errOutOfResources, err)
		case isDialError(err) && dialTimedOut(err) && retried != target.Name:
			// Alive but slow to accept (its accept queue full while a
			// crowd reconnects, a starved process): tried there again
			// once before it is taken for suspect. Sent elsewhere at
			// once, the key's live session split — its next participants
			// on the fallback while the others stayed, and the other
			// balancers, whose dials went through, sent more there
			// (TestDialTimeoutToALiveBackendIsTriedAgain). A refusal —
			// nothing listens — moves the key at once, as before.
			b.metrics.backendErrorsTotal.WithLabelValues(target.Name, errorKindDial).Inc()
			b.edgeFailLog.Warn(b.log, "edge slow to accept; dialing it again", "edge", target.Name, "err", err)
			retried = target.Name
		case isDialError(err):
			b.metrics.backendErrorsTotal.WithLabelValues(target.Name, errorKindDial).Inc()
			b.markSuspect(target.Name)
			b.edgeFailLog.Warn(b.log, "edge unreachable", "edge", target.Name, "err", err)
			if len(skipped) < cap(skipped) && !slices.Contains(skipped, target.Name) {
				skipped = append(skipped, target.Name)
			}
			dials++
			if dials == maxDialAttempts {
				return "", fmt.Errorf("%w: %d dials failed, last: %w", errNoEdge, dials, err)
			}
			if cands == nil {
				cands = snap.Candidates(key, candBuf[:0])
			}
			next := b.fallback(snap, key, target.Name, cands, tried[:nTried])
			if next.Name == "" {
				return "", fmt.Errorf("%w: %w", errNoEdge, err)
			}
			target = next
		default:
			return target.Name, err
		}
	}
}

// fallback is where key goes when failed cannot be reached: its owner on
// the ring without failed — the ring every balancer builds once failed is
// taken down, so a balancer that already has and one that has not yet send
// the key to the same edge, whether the key was routed to failed by the
// ring or by the session table — unless tried or suspect; else the first
// candidate not tried (cands are the key's candidates on snap). Zero when
// none is left.
func (b *Balancer) fallback(snap *ring.Snapshot, key []byte, failed string, cands []ring.Member, tried []string) ring.Member {
	if w, ok := snap.Without(failed).Locate(key); ok && w.Name != failed && !slices.Contains(tried, w.Name) && !b.isSuspect(w.Name) {
		return w
	}
	for _, c := range cands {
		if c.Name != failed && !slices.Contains(tried, c.Name) && !b.isSuspect(c.Name) {
			return c
		}
	}
	if next, ok := nextCandidate(cands, append(tried, failed)); ok {
		return next
	}
	return ring.Member{}
}

func memberNamed(snap *ring.Snapshot, name string) (ring.Member, bool) {
	for _, m := range snap.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return ring.Member{}, false
}

// clusterEdge returns the edge named name from gossip, whatever its state:
// a 421 may name a draining edge, which has left the ring but still hosts
// the session until it hands it on.
func (b *Balancer) clusterEdge(name string) (ring.Member, bool) {
	c := b.clusterOrNil()
	if c == nil {
		return ring.Member{}, false
	}
	for _, n := range c.Members() {
		if n.Name == name && n.Meta.Role == health.RoleEdge && n.Meta.URL != "" {
			return ring.Member{Name: n.Name, URL: n.Meta.URL, Weight: n.Meta.Weight}, true
		}
	}
	return ring.Member{}, false
}

// nextCandidate returns the first candidate not tried yet.
func nextCandidate(cands []ring.Member, tried []string) (ring.Member, bool) {
next:
	for _, c := range cands {
		for _, t := range tried {
			if c.Name == t {
				continue next
			}
		}
		return c, true
	}
	return ring.Member{}, false
}

// serveHTTP proxies a plain HTTP request through the edge's keep-alive pool.
func (b *Balancer) serveHTTP(ctx *fasthttp.RequestCtx, snap *ring.Snapshot, rt requestRoute, cookie []byte) {
	key := rt.key
	req := &ctx.Request
	clientClose := req.Header.ConnectionClose()
	http10 := !req.Header.IsHTTP11()
	length := req.Header.ContentLength() // -1 chunked, -2 no body
	prepareRequestHeader(ctx, &req.Header, key, false)
	// The client's "Connection: close" is about its own connection, not
	// about the pooled one to the edge.
	req.Header.ResetConnectionClose()
	if req.Header.IsHead() {
		// A HEAD's connection to the edge is not kept: a handler that
		// answers HEAD as GET sends a body after the head, maybe a moment
		// after it, and on a kept connection it would be read as the next
		// request's answer — another client's (pooledConn catches what
		// has arrived by then; this, what has not).
		req.Header.SetConnectionClose()
	}
	// Re-framed: the edge gets the balancer's own Content-Length or
	// chunked coding for the body it streams, whatever the client wrote
	// (or named in Connection, which prepareRequestHeader strips). The
	// body streams through bodyLimit, which counts a chunked one against
	// max_body_bytes and tells the client's failures from the edge's.
	var body *bodyLimit
	switch {
	case req.IsBodyStream() && (length > 0 || length == -1):
		body = &bodyLimit{r: req.BodyStream(), left: b.current.Load().cfg.Limits.MaxBodyBytes}
		if length == -1 {
			body.trailer = &req.Header
		}
		req.SetBodyStream(body, length)
	case length >= 0:
		req.Header.SetContentLength(length)
	}

	edge, err := b.forward(snap, key, rt.target, func(m ring.Member, _ []string) (string, error) {
		e, err := b.edges.get(m)
		if err != nil {
			return "", &dialError{edge: m.Name, err: err}
		}
		// Signed for the edge it goes to with the cluster's key: the edge
		// counts a connection idle between requests against its address's
		// share unless a member signed a request on it, and this pool's
		// connections, all from this balancer's few addresses, idle there
		// between requests. Each attempt signs anew (another edge).
		if kr := b.keyring(); kr.Enabled() {
			req.Header.Set(configs.HeaderPeer, kr.SignForwarded(b.name, m.Name, string(req.Header.Method()), key))
		}
		// The client's scheme (https when the balancer terminates TLS) is
		// not the edge's; HostClient refuses a mismatch.
		if e.tls {
			req.URI().SetScheme("https")
		} else {
			req.URI().SetScheme("http")
		}
		if err := e.client.Do(req, &ctx.Response); err != nil {
			if fault := body.clientFault(); fault != nil {
				// The client's body failed, not the edge: no error is
				// counted against it and nothing is retried.
				return "", fault
			}
			if !isDialError(err) {
				b.metrics.backendErrorsTotal.WithLabelValues(m.Name, errorKindResponse).Inc()
				err = fmt.Errorf("edge %s: %w", m.Name, err)
			}
			return "", err
		}
		if ctx.Response.StatusCode() == fasthttp.StatusSwitchingProtocols {
			// Never asked for (Upgrade is stripped): the connection now
			// speaks something else, yet HostClient keeps it for the next
			// request, whose answer would be whatever comes next on it —
			// another client's. Its idle connections close, that one among
			// them; nothing of the switch reaches the client.
			e.client.CloseIdleConnections()
			b.metrics.backendErrorsTotal.WithLabelValues(m.Name, errorKindResponse).Inc()
			return "", fmt.Errorf("edge %s: %w", m.Name, errUnrequestedSwitch)
		}
		if err := wellFormedAnswer(&ctx.Response.Header); err != nil {
			b.metrics.backendErrorsTotal.WithLabelValues(m.Name, errorKindResponse).Inc()
			return "", fmt.Errorf("edge %s: %w", m.Name, err)
		}
		if announcesBodyItHasNot(&ctx.Response.Header) {
			// HostClient took the answer as ending with its head and
			// pooled the connection: a body the edge sends after it
			// would answer the next request on it, any client's.
			if c := answerConn(ctx.Response.RemoteAddr()); c != nil {
				c.spent.Store(true)
			}
		}
		// A body is sent once: after it streamed to this edge the 421
		// is relayed, not followed with an empty body.
		if ctx.Response.StatusCode() == fasthttp.StatusMisdirectedRequest && body == nil {
			return string(ctx.Response.Header.Peek(headerOwner)), nil
		}
		return "", nil
	})
	if clientClose {
		ctx.SetConnectionClose()
	}
	if fault := body.clientFault(); fault != nil {
		// The edge's request was aborted unfinished (HostClient closes
		// the connection on a failed write), so it never completes.
		var ne net.Error
		code, reason := fasthttp.StatusBadRequest, errBodyUnreadable
		switch {
		case errors.Is(fault, errBodyTooLarge):
			code, reason = fasthttp.StatusRequestEntityTooLarge, errBodyTooLarge
		case errors.As(fault, &ne) && ne.Timeout():
			code, reason = fasthttp.StatusRequestTimeout, errBodyTimeout
		}
		b.log.Debug("request body failed", "edge", edge, "err", httplog.Redact(fault.Error()))
		b.refuse(ctx, code, reason)
		return
	}
	if err != nil {
		// fasthttp's error quotes the edge's answer (a session cookie it
		// sets for the client) or the client's body: redacted.
		b.proxyFailLog.Warn(b.log, "proxy failed", "edge", edge, "err", httplog.Redact(err.Error()))
		b.replyFailed(ctx, edge, err)
		return
	}
	stripHopByHopResponse(&ctx.Response.Header)
	dropAdminCookie(&ctx.Response.Header)
	if cookie != nil {
		ctx.Response.Header.Add(fasthttp.HeaderSetCookie, string(cookie))
	}
	if ctx.Response.StatusCode() != fasthttp.StatusMisdirectedRequest {
		// The key's backend answered: it lives there for linger more.
		b.table.record(rt.hash, edge, rt.basis, clientAddr(ctx), nil)
	}
	b.countRequest(edge, ctx.Response.StatusCode())
	if http10 && ctx.Response.Header.ContentLength() < 0 {
		if ctx.Response.IsBodyStream() && !ctx.IsHead() && bodyAllowed(ctx.Response.StatusCode()) {
			b.closeDelimited(ctx, answerConn(ctx.Response.RemoteAddr()))
			return
		}
		// No body follows (HEAD, 304): the head alone, without the
		// coding an HTTP/1.0 client cannot read.
		ctx.Response.Header.Del(fasthttp.HeaderTransferEncoding)
	}
	if ctx.Response.IsBodyStream() {
		// The body streams to the client after this handler returns,
		// timed between reads and writes, not as a whole.
		if c := answerConn(ctx.Response.RemoteAddr()); c != nil {
			c.streamTo(ctx.Conn())
		}
	}
}

// bodyAllowed reports whether an answer of status code may carry a body
// (RFC 9110, 6.4.1: not 1xx, 204 or 304).
func bodyAllowed(code int) bool {
	return code >= 200 && code != fasthttp.StatusNoContent && code != fasthttp.StatusNotModified
}

// closeDelimited sends an answer of unknown length to an HTTP/1.0 client
// as nginx does: without a transfer coding, its end the connection's close.
// fasthttp's server writes such a body chunked whatever the request's
// version, a coding HTTP/1.0 cannot carry (RFC 9112, 6.1): the client took
// the chunk sizes for the body and, having asked for keep-alive, waited
// for an end that never came. The server writes nothing (the connection is
// hijacked once any answer before it is flushed); the body streams as
// streamTo times it, each read from the edge and each write to the client
// within request_timeout, the head too.
func (b *Balancer) closeDelimited(ctx *fasthttp.RequestCtx, edgeConn *pooledConn) {
	ctx.SetConnectionClose()
	h := &ctx.Response.Header
	h.Del(fasthttp.HeaderTransferEncoding)
	h.SetConnectionClose()
	client := ctx.Conn()
	// Should the server close the connection instead of handing it over
	// (a failed write of an earlier pipelined answer), the edge's answer
	// is dropped with it, its connection not left held.
	b.handovers.Pending(client, func() { _ = ctx.Response.CloseBodyStream() })
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		b.handovers.Taken(client)
		// Shutdown waits for the answer as for a tunnel, and cuts it with
		// the client connections when its context ends.
		held := b.holdAnswer(c)
		defer func() {
			c.Close() // KeepHijackedConns: the connection is ours to close
			_ = ctx.Response.CloseBodyStream()
			if held {
				b.releaseAnswer(c)
			}
		}()
		timeout := b.current.Load().cfg.Limits.RequestTimeout.D()
		_ = c.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := c.Write(h.Header()); err != nil {
			return
		}
		if edgeConn != nil {
			edgeConn.streamTo(c)
		}
		_, _ = io.Copy(c, ctx.Response.BodyStream())
	})
}

// answerStalled reports an answer cut in the middle of its body because
// its edge sent nothing for limits.request_timeout (pooledConn.streamTo):
// the answer was lost, as one whose head never came.
func (b *Balancer) answerStalled(edge string) {
	b.metrics.backendErrorsTotal.WithLabelValues(edge, errorKindResponse).Inc()
	b.proxyFailLog.Warn(b.log, "edge answer stalled; cut", "edge", edge, "request_timeout", b.cfg.Limits.RequestTimeout.D())
}

// prepareRequestHeader readies a client request head to go to an edge.
func prepareRequestHeader(ctx *fasthttp.RequestCtx, h *fasthttp.RequestHeader, key []byte, upgrade bool) {
	// Hop-by-hop headers describe the client's connection, not ours to the
	// edge. Headers the client names in Connection go too — after which the
	// X-Forwarded-* below are set, so a client cannot have them stripped by
	// listing them. An upgrade's too, but for Upgrade itself: a Connection
	// header naming ctstickiness or X-Forwarded-For that reached the edge
	// made a proxy in front of the app (which deletes what Connection
	// names) drop the routed key, so the app took the client's cookie
	// instead — another session than the one routed — and the client's
	// address.
	if conn := h.Peek(fasthttp.HeaderConnection); len(conn) > 0 {
		for name := range bytes.SplitSeq(conn, []byte{','}) {
			if name = bytes.TrimSpace(name); len(name) > 0 && !(upgrade && asciiEqualFold(name, fasthttp.HeaderUpgrade)) {
				h.DelBytes(name)
			}
		}
	}
	h.Del(fasthttp.HeaderConnection)
	if upgrade {
		h.Set(fasthttp.HeaderConnection, "Upgrade")
	} else {
		h.Del(fasthttp.HeaderUpgrade)
	}
	for _, name := range [...]string{"Keep-Alive", "Proxy-Connection", fasthttp.HeaderProxyAuthorization, fasthttp.HeaderTE, fasthttp.HeaderTrailer} {
		h.Del(name)
	}

	// X-Forwarded-For is appended to, never trusted: every entry but the
	// last (ours, the peer address) may be forged by the client. Every line
	// the client sent is merged into one before ours, so the last entry of
	// the last line is the peer however a backend joins them.
	// X-Forwarded-Proto and -Host are overwritten, so a client cannot claim
	// https or another host to the edge; dropClientVouched removes what
	// would say otherwise (their second lines included).
	ip := ctx.RemoteIP().String()
	prior := forwardedFor(h, ip)
	dropClientVouched(h)
	// The admin ports' login session is a credential for them alone, but
	// cookies go by host, not port (RFC 6265, 8.5): an operator logged in
	// to an admin port on this host's name sends it here too, and a
	// backend — a third-party static edge — would get a 12-hour login to
	// the admin API. The Cookie lines are parsed already (h.All above):
	// no allocation. Both names: a login over TLS sets the other.
	h.DelCookie(operator.SessionCookie)
	h.DelCookie(operator.SessionHostCookie)
	if prior != nil {
		h.SetBytesV(fasthttp.HeaderXForwardedFor, prior)
	} else {
		h.Set(fasthttp.HeaderXForwardedFor, ip)
	}
	if ctx.IsTLS() {
		h.Set(fasthttp.HeaderXForwardedProto, "https")
	} else {
		h.Set(fasthttp.HeaderXForwardedProto, "http")
	}
	h.SetBytesV(fasthttp.HeaderXForwardedHost, ctx.Host())

	// The edge gets the key the balancer routed with in ctstickiness, whatever
	// its source (header, cookie, hashed query parameter, assigned), so it
	// checks ownership with the very key that was hashed. Del first: a
	// repeated client header must not leave a second, different value.
	h.Del(keyHeader)
	h.SetBytesV(keyHeader, key)
}

// forwardedFor is the X-Forwarded-For the edge gets when the client sent
// one: every line of the client's, in order, then ip; nil when it sent none.
func forwardedFor(h *fasthttp.RequestHeader, ip string) []byte {
	var xff []byte
	for k, v := range h.All() {
		if asciiEqualFold(k, fasthttp.HeaderXForwardedFor) && len(v) > 0 {
			xff = append(append(xff, v...), ", "...)
		}
	}
	if xff == nil {
		return nil
	}
	return append(xff, ip...)
}

// dropClientVouched removes the client's headers that a backend reads as the
// balancer's word: the X-Ringlb- namespace (the cluster's own: the skip list
// that makes an edge ignore owners, peer signatures, claims), every
// X-Forwarded- header (the balancer writes -For, -Proto and -Host after this;
// a second line of one of them, or -Port or -Prefix, would contradict it),
// Forwarded (RFC 7239, which Spring and Rack prefer to X-Forwarded-*) and
// X-Real-IP. Names compare with ASCII case folded and '_' read as '-', as
// CGI-style backends (PHP, Rack, WSGI) do. No allocation when the client
// sent none of them.
func dropClientVouched(h *fasthttp.RequestHeader) {
	var names [][]byte
	for k := range h.All() {
		if clientVouched(k) && !slices.ContainsFunc(names, func(n []byte) bool { return bytes.Equal(n, k) }) {
			names = append(names, bytes.Clone(k))
		}
	}
	for _, k := range names {
		h.DelBytes(k) // every line of that name
	}
}

// clientVouched reports whether a client's header name is one of
// dropClientVouched's.
func clientVouched(name []byte) bool {
	return nameHasPrefix(name, "x-ringlb-") || nameHasPrefix(name, "x-forwarded-") ||
		len(name) == len("forwarded") && nameHasPrefix(name, "forwarded") ||
		len(name) == len("x-real-ip") && nameHasPrefix(name, "x-real-ip")
}

// nameHasPrefix reports whether name starts with prefix (lower case, dashes),
// ASCII case folded and '_' read as '-'.
func nameHasPrefix(name []byte, prefix string) bool {
	if len(name) < len(prefix) {
		return false
	}
	for i := range len(prefix) {
		c := asciiLower(name[i])
		if c == '_' {
			c = '-'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// errMalformedAnswer: an edge's answer whose head no client reads as the
// edge wrote it.
var errMalformedAnswer = errors.New("answer with a status below 100 or a header name that is no token")

// wellFormedAnswer readies the head of an edge's answer, as fasthttp read
// it, to go to a client, or refuses it (errMalformedAnswer). fasthttp
// re-frames the body, but writes the status line and the header names as
// the edge did:
//
//   - the version is the balancer's own, HTTP/1.1 (RFC 9110, 6.2): an
//     HTTP/1.0 answer without a length went out as HTTP/1.0 with the
//     chunked coding fasthttp frames it with, which an HTTP/1.0 message
//     cannot carry (RFC 9112, 6.1) — a client reading it to the close took
//     the chunk sizes and the next pipelined answer for its body — and
//     "HTTP/2.0" or "HTTP/1.2" went on as written;
//   - a reason phrase with a control byte (fasthttp turns CR and LF into
//     spaces, not NUL or the others) gives way to the status's own;
//   - a status below 100 is refused: fasthttp writes "099" as "99", a
//     status line no client reads, and, taking it for a status without a
//     body, the body after a head without a length;
//   - so is a header name with a space inside (fasthttp keeps it; HAProxy
//     and nginx refuse the answer).
//
// TestRelayedAnswerHeadIsWellFormed. No allocation but for an answer that
// declares a Trailer.
func wellFormedAnswer(h *fasthttp.ResponseHeader) error {
	if h.StatusCode() < 100 {
		return errMalformedAnswer
	}
	for k := range h.All() {
		if bytes.IndexByte(k, ' ') >= 0 {
			return errMalformedAnswer
		}
	}
	h.SetProtocol(nil) // HTTP/1.1
	for _, c := range h.StatusMessage() {
		if c < ' ' && c != '\t' || c == 0x7f {
			h.SetStatusMessage(nil) // the status's own
			break
		}
	}
	return nil
}

// announcesBodyItHasNot reports whether an answer's head announces a body
// (Transfer-Encoding, or a Content-Length other than 0) that its status
// says it has not (204, 304): HostClient takes it as ending with its head,
// and a body the edge sends anyway, after it, would answer the next
// request on the connection (pooledConn.spent).
func announcesBodyItHasNot(h *fasthttp.ResponseHeader) bool {
	code := h.StatusCode()
	return (code == fasthttp.StatusNoContent || code == fasthttp.StatusNotModified) && h.ContentLength() != 0 && h.ContentLength() != -2
}

// stripHopByHopResponse removes the edge connection's hop-by-hop headers.
// "Connection: close" from the edge closes the pooled edge connection, not the
// client's.
func stripHopByHopResponse(h *fasthttp.ResponseHeader) {
	h.ResetConnectionClose()
	for _, name := range [...]string{fasthttp.HeaderConnection, "Keep-Alive", "Proxy-Connection", fasthttp.HeaderTE, fasthttp.HeaderTrailer, fasthttp.HeaderUpgrade} {
		h.Del(name)
	}
}

// dropAdminCookie removes a backend's Set-Cookie lines for the admin ports'
// login cookie from its answer; the others stay, in their order. Cookies
// go by host, not port (RFC 6265, 8.5): a backend — a third-party static
// edge — answering through the balancer sets cookies for the host name the
// admin ports are opened by too, and one named operator.SessionCookie (or
// operator.SessionHostCookie, a login's over TLS) would overwrite the
// operator's login (a logout), or log their browser in to the admin port
// as a session of the backend's choosing (login CSRF).
// fasthttp has parsed the lines (joined folds, ended lines at a bare LF,
// refused a bare CR, trimmed the header name): only the values are read
// here. No allocation unless there is a line to drop.
func dropAdminCookie(h *fasthttp.ResponseHeader) {
	drop := false
	for _, v := range h.Cookies() {
		if drop = setsAdminCookie(v); drop {
			break
		}
	}
	if !drop {
		return
	}
	var kept [][]byte
	for _, v := range h.Cookies() {
		if !setsAdminCookie(v) {
			kept = append(kept, bytes.Clone(v)) // Del below lets the next Add reuse v's bytes
		}
	}
	h.Del(fasthttp.HeaderSetCookie)
	for _, v := range kept {
		h.AddBytesV(fasthttp.HeaderSetCookie, v)
	}
}

// setsAdminCookie reports whether a Set-Cookie value sets the admin ports'
// login cookie as a browser reads it (RFC 6265bis, 5.6): the name-value
// pair ends at the first ';', the name at its first '=', both trimmed of
// whitespace; names are case-sensitive. A cookie with no name ("NAME" or
// "=NAME...") is sent as its value alone, which a server — Go's net/http,
// the admin port's — reads as a cookie named by it, first on the paths
// where it is the more specific: so is one whose value names the cookie.
func setsAdminCookie(v []byte) bool {
	if i := bytes.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	name, value := v, []byte(nil)
	if i := bytes.IndexByte(v, '='); i >= 0 {
		name, value = v[:i], v[i+1:]
	}
	if name = trimCookieSpace(name); len(name) == 0 {
		if i := bytes.IndexByte(value, '='); i >= 0 {
			value = value[:i]
		}
		name = trimCookieSpace(value)
	}
	return string(name) == operator.SessionCookie || string(name) == operator.SessionHostCookie
}

// trimCookieSpace trims whitespace and control bytes from both ends of b,
// more than browsers trim, so no padding hides a name.
func trimCookieSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] <= ' ' || b[0] == 0x7f) {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] <= ' ' || b[len(b)-1] == 0x7f) {
		b = b[:len(b)-1]
	}
	return b
}

func isWebSocketUpgrade(h *fasthttp.RequestHeader) bool {
	return h.ConnectionUpgrade() && bytes.EqualFold(h.Peek(fasthttp.HeaderUpgrade), []byte("websocket"))
}

// headerRequestID carries a request's id from the client (kept) or from the
// balancer (generated), so edge logs can be matched with the balancer's.
const headerRequestID = configs.HeaderRequestID

// newRequestID formats the next request id into buf: 16 hex digits of a
// per-process random prefix and 16 of a counter. No allocation.
func (b *Balancer) newRequestID(buf *[32]byte) []byte {
	var raw [8]byte
	binary.BigEndian.PutUint64(raw[:], b.requestIDs.Add(1))
	hex.Encode(buf[:16], b.requestIDPrefix[:])
	hex.Encode(buf[16:], raw[:])
	return buf[:]
}

// suspectCooldown is how long an edge whose dial failed is skipped by new
// requests (gossip confirms a crash within seconds; this bridges the gap).
const suspectCooldown = 5 * time.Second

func (b *Balancer) markSuspect(name string) {
	b.suspects.Store(name, time.Now().Add(suspectCooldown).UnixNano())
}

func (b *Balancer) isSuspect(name string) bool {
	v, ok := b.suspects.Load(name)
	if !ok {
		return false
	}
	if time.Now().UnixNano() < v.(int64) {
		return true
	}
	b.suspects.CompareAndDelete(name, v)
	return false
}
