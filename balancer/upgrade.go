package balancer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/balancer/httplog"
	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// Limits on an edge's answer to a WebSocket upgrade.
const (
	// maxResponseHead bounds the edge's response head; a 101 carries a
	// handful of short headers, so more means a broken or hostile edge.
	maxResponseHead = 16 << 10
	// maxInterimAnswers bounds the 1xx answers (100 Continue to a
	// forwarded Expect, 103 Early Hints) passed over before the edge's
	// answer to an upgrade.
	maxInterimAnswers = 16
)

var (
	errHeadTooLarge    = errors.New("response head too large")
	errTooManyInterims = errors.New("too many 1xx answers before the answer")
	errNotWebSocket    = errors.New("101 that accepts no WebSocket handshake (Upgrade: websocket and the client key's Sec-WebSocket-Accept)")
)

// acceptsWebSocket reports whether the 101 head (its lines as switchedHead
// reads them: LF ends a line, names in any case, blanks around values)
// switches to WebSocket for the client that sent key: Upgrade names
// websocket and Sec-WebSocket-Accept, once, is the key's (RFC 6455,
// 4.2.2). After a 101 the balancer is a byte tunnel and reads nothing the
// client sends: a 101 that is no WebSocket server's answer — a page that
// answers with the status a client asks for, its connection staying HTTP
// — let the client's next requests reach the backend raw, with the
// X-Forwarded-For and the headers the balancer drops of its choosing. Only
// a server that read the key computes its accept. No allocation.
func acceptsWebSocket(head, key []byte) bool {
	if len(key) == 0 || len(key) > 64 {
		return false // RFC 6455's is 24 bytes
	}
	var in [64 + len(websocketGUID)]byte
	sum := sha1.Sum(append(append(in[:0], key...), websocketGUID...))
	var want [28]byte
	base64.StdEncoding.Encode(want[:], sum[:])
	accepts, upgrade := 0, false
	for s := nextLine(head, 0, len(head)); s < len(head); {
		e := nextLine(head, s, len(head))
		line := head[s:e]
		s = e
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue
		}
		name, value := bytes.TrimRight(line[:colon], " \t"), bytes.Trim(line[colon+1:], " \t\r\n")
		switch {
		case asciiEqualFold(name, fasthttp.HeaderSecWebSocketAccept):
			if accepts++; !bytes.Equal(value, want[:]) {
				return false
			}
		case asciiEqualFold(name, fasthttp.HeaderUpgrade):
			upgrade = asciiEqualFold(value, "websocket")
		}
	}
	return accepts == 1 && upgrade
}

// websocketGUID is RFC 6455's, appended to a key for its accept.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// serveUpgrade handles a WebSocket upgrade: dial the owner first, hand it the
// client's upgrade request and only when it answers 101 take the client
// connection over (hijack) and become a byte tunnel. Dialing before
// hijacking means a dead edge or a 421 is handled while the client still
// waits for an ordinary HTTP answer, so it can be retried or relayed.
func (b *Balancer) serveUpgrade(ctx *fasthttp.RequestCtx, snap *ring.Snapshot, rt requestRoute, cookie []byte) {
	key, owner := rt.key, rt.target
	if c := b.clusterOrNil(); c != nil && !rt.inTable {
		// A session pinned to another edge (it outlived a ring change
		// there) is sent straight to it, saving the 421 hop. The table,
		// when it has the key, knows where it is already.
		if n, ok := c.PinnedTo(rt.hash); ok && n.Name != owner.Name && n.Meta.Role == health.RoleEdge && n.Meta.URL != "" {
			owner = ring.Member{Name: n.Name, URL: n.Meta.URL, Weight: n.Meta.Weight}
		}
	}
	var h fasthttp.RequestHeader
	ctx.Request.Header.CopyTo(&h)
	if target := h.RequestURI(); len(target) == 0 || target[0] != '/' {
		// A target in absolute form (any scheme: fasthttp takes ws://
		// too) names the host (RFC 9112, 3.2.2): the edge gets the origin
		// form and the target's host, as HostClient sends a plain request
		// — the client's Host, which the balancer's X-Forwarded-Host
		// contradicted, would make a backend reading Host and one reading
		// the target each see another site. Any other form ("*", an
		// authority) names no resource to upgrade.
		if bytes.Index(target, []byte("://")) <= 0 {
			b.refuse(ctx, fasthttp.StatusBadRequest, errUpgradeTarget)
			return
		}
		h.SetRequestURIBytes(originForm(target))
		h.SetHostBytes(ctx.Host())
	}
	prepareRequestHeader(ctx, &h, key, true)
	// An upgrade has no body (serveData refused any): nothing but this
	// head and then WebSocket frames reaches the edge, and no framing
	// header says otherwise.
	h.Del(fasthttp.HeaderContentLength)
	h.Del(fasthttp.HeaderTransferEncoding)
	// Nor does any other protocol than the one the balancer took the
	// request for: isWebSocketUpgrade reads the first Upgrade line, and a
	// second one (h2c) reaching the edge had a backend that switches to it
	// answer 101 for h2c on this connection.
	h.Del(fasthttp.HeaderUpgrade)
	h.Set(fasthttp.HeaderUpgrade, "websocket")

	var tun *tunnel
	edge, err := b.forward(snap, key, owner, func(m ring.Member, skipped []string) (string, error) {
		// A 421 followed here left its answer streaming from the edge
		// that sent it: closed with it.
		ctx.Response.Reset()
		e, err := b.edges.get(m)
		if err != nil {
			return "", &dialError{edge: m.Name, err: err}
		}
		// Every upgrade is signed for the edge it goes to with the
		// cluster's key: the edge holds participants that did not come
		// through a balancer to a per-address share, and ours, all from
		// this balancer's few addresses, to none. Each attempt signs anew
		// (another edge, maybe a skip).
		kr := b.keyring()
		var sig string
		if len(skipped) > 0 {
			// Tell the fallback edge which edges we could not reach, so it
			// checks ownership on the ring without them — the signature
			// covering the skip: a skip moves a session to the edge it
			// reaches, and an edge takes it from nobody else.
			skip := strings.Join(skipped, ",")
			h.Set(headerSkip, skip)
			sig = kr.Sign(b.name, m.Name, fasthttp.MethodGet, string(h.RequestURI()), health.SkipMessage(skip, key))
		} else if kr.Enabled() { // (without a key, not even the URI's string)
			sig = kr.SignUpgrade(b.name, m.Name, string(h.RequestURI()), key)
		}
		if sig != "" {
			h.Set(configs.HeaderPeer, sig)
		}
		var (
			conn      net.Conn
			head      []byte
			n, status int
		)
		for attempt := 0; ; attempt++ {
			// Not ctx itself: fasthttp cancels a request's context when
			// its server shuts down, and a graceful stop (an upgrade's
			// hand-off included) lets in-flight handshakes finish. The
			// dial is bounded by dial_timeout either way.
			conn, err = b.edges.dial(context.WithoutCancel(ctx), e)
			if err != nil {
				return "", err
			}
			head, n, status, err = handshake(conn, h.Header())
			if err == nil {
				break
			}
			conn.Close()
			if errors.Is(err, errClosedUnanswered) {
				// Closed before a byte of answer: the edge is dying, or
				// it ended the connection for room (its spill) before
				// this balancer — starved, perhaps — wrote the request.
				// Once more on a new connection: a dying edge refuses
				// the dial, a live one answers.
				if attempt == 0 {
					continue
				}
				// Closed twice: a dying edge refuses the next dial, and
				// the key goes on as after any failed dial. One that
				// accepts it is alive and ends this request (a handler
				// that panics on it: any client's to send); blamed,
				// every live session on it had its next participants
				// placed elsewhere with a skip for suspectCooldown, a
				// split (TestUpgradeClosedUnansweredByALiveBackendSplitsNothing).
				// This client gets 502, as from HAProxy, which sends a
				// request elsewhere only when its connect failed.
				probe, perr := b.edges.dial(context.WithoutCancel(ctx), e)
				if perr != nil {
					return "", perr
				}
				probe.Close()
				b.metrics.backendErrorsTotal.WithLabelValues(m.Name, errorKindHandshake).Inc()
				return "", fmt.Errorf("edge %s: websocket handshake: %w", m.Name, err)
			}
			b.metrics.backendErrorsTotal.WithLabelValues(m.Name, errorKindHandshake).Inc()
			return "", fmt.Errorf("edge %s: websocket handshake: %w", m.Name, err)
		}
		if status == fasthttp.StatusSwitchingProtocols && !acceptsWebSocket(head[:n], ctx.Request.Header.Peek(fasthttp.HeaderSecWebSocketKey)) {
			conn.Close()
			b.metrics.backendErrorsTotal.WithLabelValues(m.Name, errorKindHandshake).Inc()
			return "", fmt.Errorf("edge %s: websocket handshake: %w", m.Name, errNotWebSocket)
		}
		if status == fasthttp.StatusSwitchingProtocols {
			_ = conn.SetDeadline(time.Time{})
			_, static := b.static.Load().edge(m.Name)
			tun = &tunnel{b: b, edge: m.Name, static: static, url: m.URL, key: string(key), start: time.Now(), conn: conn, head: switchedHead(head, n, cookie), idle: b.cfg.TunnelIdleTimeout.D()}
			return "", nil
		}
		// Any other answer goes back to the client as an HTTP response,
		// its body streamed (relayAnswer owns conn from here).
		err = relayAnswer(&ctx.Response, head, conn, ctx.IsHead())
		if err != nil {
			b.metrics.backendErrorsTotal.WithLabelValues(m.Name, errorKindHandshake).Inc()
			return "", fmt.Errorf("edge %s: read response: %w", m.Name, err)
		}
		if status == fasthttp.StatusMisdirectedRequest {
			return string(ctx.Response.Header.Peek(headerOwner)), nil
		}
		return "", nil
	})
	switch {
	case err != nil:
		// The error quotes the edge's answer (its status line, a header
		// line, a cookie it sets for the client): redacted.
		b.upgradeFailLog.Warn(b.log, "websocket upgrade failed", "edge", edge, "err", httplog.Redact(err.Error()))
		b.replyFailed(ctx, edge, err)
	case tun != nil:
		if !b.registerTunnel(tun) {
			tun.conn.Close()
			b.reply(ctx, "", fasthttp.StatusServiceUnavailable, []byte("service unavailable: shutting down\n"))
			return
		}
		if b.table.record(rt.hash, edge, rt.basis, clientAddr(ctx), tun) == recordStale {
			// Another balancer placed the key elsewhere between our
			// lookup and this answer, and won: this client belongs with
			// the session there. It retries at once and is sent there.
			tun.close()
			b.reply(ctx, edge, fasthttp.StatusServiceUnavailable, []byte("service unavailable: this session was just placed on another backend; retry\n"))
			ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "0")
			return
		}
		b.countRequest(edge, fasthttp.StatusSwitchingProtocols)
		// No response from fasthttp: the client gets the edge's own 101
		// head, byte for byte, from the tunnel.
		ctx.HijackSetNoResponse(true)
		// The tunnel closes the connection when it ends, at once: no
		// linger, whose shutdown of the write side would reach a socket
		// the relay or the next process holds.
		if g := guardConn(ctx.Conn()); g != nil {
			g.NoLinger()
		}
		// fasthttp may still close the connection instead of handing it
		// over (a failed write of an earlier pipelined answer): the tunnel
		// and its edge connection are then ended with it.
		client := ctx.Conn()
		b.handovers.Pending(client, tun.abandon)
		ctx.Hijack(func(c net.Conn) {
			b.handovers.Taken(client)
			tun.run(c)
		})
	default:
		stripHopByHopResponse(&ctx.Response.Header)
		dropAdminCookie(&ctx.Response.Header)
		if cookie != nil {
			ctx.Response.Header.Add(fasthttp.HeaderSetCookie, string(cookie))
		}
		b.countRequest(edge, ctx.Response.StatusCode())
	}
}

// errUpgradeTarget: an upgrade whose target is neither a path nor a URL.
var errUpgradeTarget = errors.New("upgrade request target is neither a path nor a URL")

// originForm is the path and query of an absolute-form target (one holding
// "://"), byte for byte: "/" when it has no path.
func originForm(target []byte) []byte {
	rest := target[bytes.Index(target, []byte("://"))+3:]
	i := bytes.IndexAny(rest, "/?#")
	switch {
	case i < 0:
		return []byte("/")
	case rest[i] == '/':
		return rest[i:]
	}
	return append([]byte("/"), rest[i:]...)
}

// handshake writes the upgrade request to the edge and reads its response
// head. It returns what it read — the head (head[:n]) and any bytes after it
// — and the status code. Interim answers (1xx but 101) before it are passed
// over: taken for the answer, a 100 Continue was relayed as the final answer
// and the edge's 101 behind it lost.
func handshake(conn net.Conn, request []byte) (buf []byte, n, status int, err error) {
	_ = conn.SetDeadline(time.Now().Add(responseTimeout))
	if _, err := conn.Write(request); err != nil {
		if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
			return nil, 0, 0, errClosedUnanswered
		}
		return nil, 0, 0, err
	}
	buf = make([]byte, 0, 4096)
	from, interims := 0, 0 // from: where the head's end may start
	for {
		if i := bytes.Index(buf[from:], []byte("\r\n\r\n")); i >= 0 {
			n = from + i + 4
			status, err := parseStatus(buf[:n])
			if err != nil || status >= 200 || status == fasthttp.StatusSwitchingProtocols {
				return buf, n, status, err
			}
			if interims++; interims > maxInterimAnswers {
				return nil, 0, 0, errTooManyInterims
			}
			buf, from = buf[:copy(buf, buf[n:])], 0
			continue
		}
		from = max(len(buf)-3, 0)
		if len(buf) == cap(buf) {
			if cap(buf) >= maxResponseHead {
				return nil, 0, 0, errHeadTooLarge
			}
			buf = slices.Grow(buf, cap(buf))
		}
		m, err := conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil && bytes.Index(buf[from:], []byte("\r\n\r\n")) < 0 {
			if len(buf) == 0 && interims == 0 && (err == io.EOF || errors.Is(err, syscall.ECONNRESET)) {
				// Closed before a byte of answer: the edge's process is
				// dying (a kill closes its listener after accepting) or it
				// shed the connection. Nothing reached the client and the
				// upgrade is a GET: try it elsewhere, as after a failed dial.
				return nil, 0, 0, errClosedUnanswered
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, 0, 0, err
		}
	}
}

// errClosedUnanswered: the edge closed the connection without answering.
var errClosedUnanswered = errors.New("edge closed the connection without answering")

// parseStatus reads the status code of "HTTP/1.1 101 Switching Protocols".
// A code below 100 has no class (RFC 9110, 15): taken for an interim
// answer, one was passed over and what its body held read as the answer.
func parseStatus(head []byte) (int, error) {
	if len(head) < 12 || !bytes.HasPrefix(head, []byte("HTTP/1.")) || head[8] != ' ' {
		return 0, fmt.Errorf("malformed status line %q", head[:min(len(head), 32)])
	}
	code := 0
	for _, c := range head[9:12] {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("malformed status line %q", head[:min(len(head), 32)])
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return 0, fmt.Errorf("malformed status line %q", head[:min(len(head), 32)])
	}
	return code, nil
}

// relayAnswer makes resp the edge's non-101 answer to an upgrade: its head
// (read starts with it, and holds any bytes after it too) and its body,
// streamed from conn as the client takes it, as a plain request's answer
// is. Read whole first (up to 1 MiB), an answer the client did not read
// held that much of the balancer per connection: a client asking for a
// download with upgrade headers, the app ignoring them. relayAnswer owns
// conn: it is closed once the body is relayed or resp is reset, or on an
// error. head: the request is a HEAD (the answer has no body whatever its
// Content-Length says).
func relayAnswer(resp *fasthttp.Response, read []byte, conn net.Conn, head bool) error {
	resp.Reset()
	in := fasthttp.AcquireResponse()
	in.StreamBody, in.SkipBody = true, head
	// Copied to resp with the head: an answer without a Content-Type
	// goes on without one, as a plain request's (the data server's
	// NoDefaultContentType).
	in.Header.SetNoDefaultContentType(true)
	// The default 4 KiB buffer bounds the head, as HostClient's does a
	// plain request's answer's (a 101's may be longer: handshake).
	br := bufio.NewReader(io.MultiReader(bytes.NewReader(read), conn))
	if err := in.ReadLimitBody(br, 0); err != nil {
		fasthttp.ReleaseResponse(in)
		conn.Close()
		return err
	}
	in.Header.CopyTo(&resp.Header)
	if err := wellFormedAnswer(&resp.Header); err != nil {
		_ = in.CloseBodyStream()
		fasthttp.ReleaseResponse(in)
		conn.Close()
		resp.Reset()
		return err
	}
	if in.BodyStream() == nil {
		fasthttp.ReleaseResponse(in)
		conn.Close()
		return nil
	}
	size := in.Header.ContentLength()
	if size < 0 {
		size = -1 // chunked or until the edge closes: chunked to the client
	}
	resp.SetBodyStream(&relayedBody{in: in, conn: conn}, size)
	return nil
}

// relayedBody is an edge's answer body on its way to the client; fasthttp
// closes it once written (or when the response is reset).
type relayedBody struct {
	in   *fasthttp.Response
	conn net.Conn
}

func (r *relayedBody) Read(p []byte) (int, error) {
	if r.in == nil {
		return 0, io.ErrClosedPipe
	}
	return r.in.BodyStream().Read(p)
}

func (r *relayedBody) Close() error {
	if r.in == nil {
		return nil
	}
	err := r.in.CloseBodyStream()
	fasthttp.ReleaseResponse(r.in)
	r.in = nil
	r.conn.Close()
	return err
}

// switchedHead is what the client gets of the edge's 101 head buf[:n] (the
// bytes after it, the edge's first frames, follow unchanged): the edge's
// header lines byte for byte, but for its Set-Cookie lines for the admin
// ports' login cookie, which are dropped (dropAdminCookie says why), and a
// Set-Cookie line for an assigned key (cookie, when not nil) added at the
// end. No allocation when there is nothing to drop or add.
//
// The head is not re-framed, so the lines are read here as a browser reads
// them: a line ends at LF (a CR before it is part of the end), a line
// starting with a space or tab continues the one before (obs-fold), and a
// header name is compared with case folded and trailing whitespace
// trimmed. Before that, as RFC 9112 asks of a gateway (2.2, 5.2), every
// bare CR and every obs-fold is replaced in place with spaces, so no client
// that ends lines at a bare CR or ignores folds reads a line here unseen.
// Two passes over the head, which handshake bounds (maxResponseHead).
func switchedHead(buf []byte, n int, cookie []byte) []byte {
	end := n - 2 // the blank line: every header line before it ends in LF
	// Backwards, so a line that starts with a bare CR, a space once
	// replaced, is a fold too.
	for i := end - 1; i >= 0; i-- {
		switch buf[i] {
		case '\r':
			if buf[i+1] != '\n' {
				buf[i] = ' '
			}
		case '\n':
			if c := buf[i+1]; c == ' ' || c == '\t' {
				buf[i] = ' '
				if i > 0 && buf[i-1] == '\r' {
					buf[i-1] = ' '
				}
			}
		}
	}
	first := nextLine(buf, 0, end) // past the status line
	drop := false
	for s := first; s < end && !drop; {
		e := nextLine(buf, s, end)
		drop = setsAdminCookieLine(buf[s:e])
		s = e
	}
	if !drop && cookie == nil {
		return buf
	}
	out := make([]byte, 0, len(buf)+len(cookie)+16)
	if !drop {
		out = append(out, buf[:end]...)
	} else {
		out = append(out, buf[:first]...)
		for s := first; s < end; {
			e := nextLine(buf, s, end)
			if !setsAdminCookieLine(buf[s:e]) {
				out = append(out, buf[s:e]...)
			}
			s = e
		}
	}
	if cookie != nil {
		out = append(out, "Set-Cookie: "...)
		out = append(out, cookie...)
		out = append(out, "\r\n"...)
	}
	out = append(out, "\r\n"...)
	return append(out, buf[n:]...)
}

// nextLine is where the line of buf starting at s ends: past its LF, or at
// end.
func nextLine(buf []byte, s, end int) int {
	if i := bytes.IndexByte(buf[s:end], '\n'); i >= 0 {
		return s + i + 1
	}
	return end
}

// setsAdminCookieLine reports whether a raw header line (its line end
// included) is a Set-Cookie for the admin ports' login cookie.
func setsAdminCookieLine(line []byte) bool {
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return false
	}
	name := line[:colon]
	for len(name) > 0 && (name[len(name)-1] == ' ' || name[len(name)-1] == '\t') {
		name = name[:len(name)-1]
	}
	return asciiEqualFold(name, fasthttp.HeaderSetCookie) && setsAdminCookie(line[colon+1:])
}
