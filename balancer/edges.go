package balancer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/balancer/acceptguard"
	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
)

// responseTimeout bounds how long a WebSocket upgrade waits for the edge's
// response head, and writing a request to an edge. Edges answer at once
// (they do not long-poll), so a slow answer means a sick edge. A plain
// request's answer is bounded by limits.request_timeout instead (edgePool's
// answerTimeout).
const responseTimeout = 30 * time.Second

// edge is how the balancer reaches one edge: its parsed address and a
// keep-alive pool for plain HTTP. One per member URL, made on first use.
type edge struct {
	name string
	url  string
	addr string // host:port
	tls  bool
	// tlsConfig verifies the edge (https): a static edge's, as its start
	// or reload built it (staticEdge.verify, also its monitor's), or for
	// any other edge the system's roots and the URL's host.
	tlsConfig *tls.Config
	// static is the static edge's config it was made with (nil for any
	// other edge): a reload builds a new one, and the edge is made again.
	static *tls.Config
	// client proxies plain HTTP requests; it is safe for concurrent use and
	// keeps idle connections for reuse.
	client *fasthttp.HostClient
}

// dialError marks a failure to connect to an edge: nothing was sent, so the
// request can safely go to the next candidate.
type dialError struct {
	edge string
	err  error
}

func (e *dialError) Error() string { return fmt.Sprintf("dial edge %s: %v", e.edge, e.err) }
func (e *dialError) Unwrap() error { return e.err }

// edgePool holds an *edge per member URL. Entries are never removed: there is
// one per URL ever routed to, and an unused HostClient closes its idle
// connections after fasthttp's MaxIdleConnDuration, so a stale entry costs a
// few hundred bytes.
type edgePool struct {
	dialTimeout time.Duration
	// answerTimeout (limits.request_timeout) bounds a plain answer: its
	// head must come within it, then its body may pause for as long
	// between two reads from the edge, and between two writes to the
	// client (pooledConn.streamTo).
	answerTimeout time.Duration
	// stalled reports an answer cut because its edge sent nothing for
	// answerTimeout in the middle of its body.
	stalled func(edge string)
	// tlsFor returns the TLS config of the static edge m is (nil for any
	// other member): built by the start or reload that checked its files,
	// never read again here.
	tlsFor func(m ring.Member) *tls.Config
	// full reports whether the connections to edges — the keep-alive
	// pool's (open) and the tunnels' — have reached the connection
	// limit: the descriptors the limit is sized for are two a client
	// connection, its own and its edge's.
	full func(open int) bool
	// open counts the keep-alive pool's connections, in use or idle.
	open atomic.Int64

	mu    sync.RWMutex
	edges map[string]*edge // by member URL
}

func newEdgePool(dialTimeout, answerTimeout time.Duration, tlsFor func(ring.Member) *tls.Config, stalled func(edge string), full func(open int) bool) *edgePool {
	return &edgePool{dialTimeout: dialTimeout, answerTimeout: answerTimeout, stalled: stalled, tlsFor: tlsFor, full: full, edges: make(map[string]*edge)}
}

// makeRoom closes the pool's idle connections before a dial when the
// connections to edges have reached the limit: a burst of plain requests
// leaves as many idle ones for fasthttp's 10 s, which beside the tunnels'
// came to three descriptors a client connection, past the budget the
// limit derives from the open-file limit.
func (p *edgePool) makeRoom() {
	if p.full != nil && p.full(int(p.open.Load())) {
		p.closeIdle()
	}
}

// get returns the edge for m, creating it on first use and again when it
// became, or stopped being, a static edge, or a reload built its TLS config
// anew: a client certificate is renewed in place, under the same names,
// and a reload is how it is taken up. Before, an edge's files were read
// once, on its first request, for as long as the process ran
// (TestEdgeTLSFilesReadAgainOnReload).
func (p *edgePool) get(m ring.Member) (*edge, error) {
	var static *tls.Config
	if p.tlsFor != nil {
		static = p.tlsFor(m)
	}
	p.mu.RLock()
	e := p.edges[m.URL]
	p.mu.RUnlock()
	if e != nil && e.current(m, static) {
		return e, nil
	}
	e, err := p.newEdge(m, static)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.edges[m.URL]
	if old != nil && old.current(m, static) {
		return old, nil
	}
	if old != nil {
		// Its connections were made with the config as it was.
		old.client.CloseIdleConnections()
	}
	p.edges[m.URL] = e
	return e, nil
}

// current reports whether e is the edge for m, made with static, its
// static edge's TLS config, when it speaks TLS.
func (e *edge) current(m ring.Member, static *tls.Config) bool {
	return e.name == m.Name && (!e.tls || e.static == static)
}

func (p *edgePool) newEdge(m ring.Member, static *tls.Config) (*edge, error) {
	u, err := url.Parse(m.URL)
	if err != nil {
		return nil, fmt.Errorf("edge %s: bad url %q: %w", m.Name, m.URL, err)
	}
	e := &edge{name: m.Name, url: m.URL, static: static}
	port := ""
	switch u.Scheme {
	case "http", "ws":
		port = "80"
	case "https", "wss":
		port, e.tls = "443", true
	default:
		return nil, fmt.Errorf("edge %s: url %q: scheme must be http or https", m.Name, m.URL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("edge %s: url %q has no host", m.Name, m.URL)
	}
	e.addr = u.Host
	if u.Port() == "" {
		e.addr = net.JoinHostPort(u.Hostname(), port)
	}
	switch {
	case !e.tls:
	case static != nil:
		e.tlsConfig = static
	default:
		// No tls block: no file to read, the system's roots.
		if e.tlsConfig, err = (configs.EdgeTLS{}).ClientConfig(u.Hostname()); err != nil {
			return nil, fmt.Errorf("edge %s: %w", m.Name, err)
		}
	}
	e.client = &fasthttp.HostClient{
		Addr: e.addr,
		// No Name: HostClient sends it as the User-Agent of a request
		// that has none, and the backend took the client for the
		// balancer (NoDefaultUserAgentHeader below).
		IsTLS: e.tls, // the scheme; Dial does the handshake
		Dial: func(addr string) (net.Conn, error) {
			deadline := time.Now().Add(p.dialTimeout) // the handshake's too
			dial := func() (net.Conn, error) {
				p.makeRoom()
				c, err := (&net.Dialer{Timeout: p.dialTimeout}).Dial("tcp", addr)
				if err != nil {
					return nil, &dialError{edge: m.Name, err: err}
				}
				return c, nil
			}
			c, err := dial()
			if err != nil {
				return nil, err
			}
			p.open.Add(1)
			pc := &pooledConn{Conn: c, unread: acceptguard.NewUnread(c), edge: m.Name, pool: p}
			pc.peer = peerAddr{Addr: c.RemoteAddr(), conn: pc}
			if !e.tls {
				pc.redial = dial
				return pc, nil
			}
			// The handshake is part of the dial, as a tunnel's is
			// (edgePool.dial): within dial_timeout with the connect, and
			// a failed one — a certificate refused, or none within it —
			// is a failed dial (nothing was sent), so the request goes
			// to the next candidate. Left to HostClient, the handshake
			// had its write timeout (30 s) and its failure was the
			// answer's: a 502, and an edge that took connections and
			// never finished a handshake held each request 30 s
			// (TestEdgeHandshakeFailureFailsOver). Under TLS the session
			// is the connection's: a connection with stray bytes is not
			// replaced (no redial).
			tc := tls.Client(pc, e.tlsConfig)
			_ = tc.SetDeadline(deadline)
			if err := tc.Handshake(); err != nil {
				tc.Close()
				return nil, &dialError{edge: m.Name, err: err}
			}
			_ = tc.SetDeadline(time.Time{})
			return tc, nil
		},
		// A dial error goes to the next candidate at once (the balancer's
		// own retry); a GET or HEAD that met a pooled keep-alive connection
		// the edge had closed is retried here, and, to a TLS edge, any
		// request without a body that met one with stray bytes
		// (pooledConn: nothing was sent; to a plain one it went on a new
		// connection). Nothing else is: retrying every error (fasthttp's
		// default) sent one GET whose answer timed out or was broken to
		// the edge 5 times, and held its client 5 × 30 s. (fasthttp never
		// retries a request whose body streams.) Whether the connection
		// had carried a request before is the transport's to say
		// (edgeTransport).
		RetryIfErr: func(req *fasthttp.Request, attempts int, err error) (bool, bool) {
			return false, errors.Is(err, errStrayBytes) || staleConnection(err) && (req.Header.IsGet() || req.Header.IsHead())
		},
		Transport: edgeTransport{},
		// The answer's head within request_timeout; its body streams
		// after Do returns, timed per read from then on (streamTo).
		ReadTimeout:  p.answerTimeout,
		WriteTimeout: responseTimeout,
		// No cap of the pool's own: a request holds its connection until
		// its client's body has come, which a client sends as slowly as
		// request_timeout lets it, and fasthttp's default (512 a host,
		// any request beyond answered ErrNoFreeConns at once) let 512
		// trickling uploads turn every other client's plain request to
		// the edge into a 502, counted as the edge's failure
		// (TestSlowUploadsCannotTakeTheEdgePool). What is in flight is
		// bounded by the client connections (limits.max_connections,
		// each one request at a time, per address by
		// max_connections_per_ip), as a tunnel's edge connection is.
		MaxConns: math.MaxInt32,
		// Response bodies stream through (plugin downloads are large): the
		// balancer never holds a whole body in memory.
		StreamResponseBody: true,
		// A proxy forwards what it got: no path cleaning, no header name
		// rewriting, no User-Agent of its own.
		DisablePathNormalizing:        true,
		DisableHeaderNamesNormalizing: true,
		NoDefaultUserAgentHeader:      true,
		// A malformed answer's error would quote what was read of it —
		// the client's cookies the edge sets among it — into the log.
		SecureErrorLogMessage: true,
	}
	return e, nil
}

// dial opens a raw connection to e for a WebSocket tunnel.
func (p *edgePool) dial(ctx context.Context, e *edge) (net.Conn, error) {
	p.makeRoom()
	d := &net.Dialer{Timeout: p.dialTimeout}
	var (
		c   net.Conn
		err error
	)
	if e.tls {
		// Handshake included: a refused certificate is a failed dial
		// (nothing was sent), so the next candidate is tried.
		c, err = (&tls.Dialer{NetDialer: d, Config: e.tlsConfig}).DialContext(ctx, "tcp", e.addr)
	} else {
		c, err = d.DialContext(ctx, "tcp", e.addr)
	}
	if err != nil {
		return nil, &dialError{edge: e.name, err: err}
	}
	return c, nil
}

// closeIdle closes idle keep-alive connections to all edges.
func (p *edgePool) closeIdle() {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, e := range p.edges {
		e.client.CloseIdleConnections()
	}
}

// edgeTransport is fasthttp's transport, told which connection a request
// went on. A connection closed before a byte of answer to the first request
// it carried was not stale — no keep-alive lapsed under it: the edge ended
// it over this request (a Go handler's panic closes it so, a query of
// death; a filter's reset). Taken for stale, a GET was sent again on a new
// connection up to fasthttp's 5 attempts, each new, so one client request
// was five at the edge (TestRequestClosingAFreshConnectionNotResent): such
// a request is not sent again, and its client gets 502.
type edgeTransport struct{}

func (edgeTransport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (bool, error) {
	retry, err := fasthttp.DefaultTransport.RoundTrip(hc, req, resp)
	if err != nil && !retry {
		return retry, err // no connection (a dial), or nothing to send again
	}
	// The request went on a connection, whose address fasthttp gave resp.
	if c := answerConn(resp.RemoteAddr()); c != nil && c.requests.Add(1) == 1 && staleConnection(err) {
		return false, err
	}
	return retry, err
}

// errStrayBytes: a pooled connection to an edge had bytes waiting that no
// request asked for when the next request was to go on it.
var errStrayBytes = errors.New("bytes of no request waiting on a pooled edge connection")

// pooledConn is a connection of the keep-alive pool to an edge (under TLS,
// when the edge speaks it). It carries no request while bytes that answer
// none wait on it: an edge's answer that holds more than its framing says
// — a body on a HEAD, a Content-Length counted in characters, a stray
// 408 of an idle connection — leaves them there, and HostClient reads
// them as the next request's answer, which may be another client's: a
// page reflecting a client's input let it forge the answer the next client
// got (TestStrayBytesNeverAnswerAnotherClient). The first write of a
// request (the first after a read) checks the socket first and fails,
// writing nothing, when bytes wait (acceptguard.Unread, SIOCINQ): the
// request goes on a new connection put in its place (replace), whatever
// its body; under TLS the connection is closed and a request without a
// body goes on another one.
// Bytes left in HostClient's own reader past the answer are dropped with
// it when the answer ends.
//
// It also times the body of an answer that streams to a client
// (streamTo), and is found from the answer by its address (peerAddr).
type pooledConn struct {
	net.Conn
	unread *acceptguard.Unread
	read   atomic.Bool // a Read since the last Write: the next Write starts a request
	// spent: the answer read on it announced a body its status does not
	// carry (announcesBodyItHasNot), which the edge may send after its
	// head: the next request goes on a new connection, as with bytes
	// waiting. Set by the request that read the answer, once HostClient
	// has pooled the connection: a request taking it in between still
	// goes on it.
	spent  atomic.Bool
	closed atomic.Bool // Close has given the pool's count back
	edge   string
	pool   *edgePool
	peer   peerAddr // RemoteAddr
	// client is the connection the body of the answer being read here
	// streams to (streamTo); nil otherwise, and from the next request on.
	// Set and read by the goroutine that holds the connection for a
	// request (HostClient's pool hands it from one to the next).
	client net.Conn
	// redial, for a plain TCP edge (nil under TLS), dials a connection to
	// replace this one's when bytes of no request wait on it as a request
	// is to go out; rd and wd are the deadlines HostClient set, carried to
	// the new one.
	redial func() (net.Conn, error)
	rd, wd time.Time
	// requests counts the round trips made on this socket
	// (edgeTransport): its first request closed unanswered is not sent
	// again. A socket replace puts under it starts again at 0.
	requests atomic.Int32
}

func (c *pooledConn) SetDeadline(t time.Time) error {
	c.rd, c.wd = t, t
	return c.Conn.SetDeadline(t)
}

func (c *pooledConn) SetReadDeadline(t time.Time) error {
	c.rd = t
	return c.Conn.SetReadDeadline(t)
}

func (c *pooledConn) SetWriteDeadline(t time.Time) error {
	c.wd = t
	return c.Conn.SetWriteDeadline(t)
}

func (c *pooledConn) Read(p []byte) (int, error) {
	c.read.Store(true)
	if c.client == nil {
		return c.Conn.Read(p)
	}
	timeout := c.pool.answerTimeout
	_ = c.Conn.SetReadDeadline(time.Now().Add(timeout))
	n, err := c.Conn.Read(p)
	if n > 0 {
		// What was read is written to the client next, and that may
		// take as long again: the client's own pace.
		_ = c.client.SetWriteDeadline(time.Now().Add(timeout))
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.client = nil // fasthttp closes the connection; reported once
		c.pool.stalled(c.edge)
	}
	return n, err
}

func (c *pooledConn) Write(p []byte) (int, error) {
	if c.read.Swap(false) {
		c.client = nil // a new request: the last answer is over
		if c.spent.Swap(false) || c.unread.Pending() {
			if err := c.replace(); err != nil {
				return 0, err
			}
		}
	}
	return c.Conn.Write(p)
}

// replace puts a new connection to the edge under c, its deadlines
// carried over, when bytes of no request wait on c's as a request is to
// go out: nothing of the request was sent, so it goes on the new one
// whatever its body (a streamed body could not be sent again, and such a
// request got 502). Under TLS (no redial) it fails with errStrayBytes:
// HostClient closes c and sends a request without a body again.
func (c *pooledConn) replace() error {
	if c.redial == nil {
		return errStrayBytes
	}
	nc, err := c.redial()
	if err != nil {
		return err
	}
	_ = nc.SetReadDeadline(c.rd)
	_ = nc.SetWriteDeadline(c.wd)
	c.Conn.Close()
	c.Conn, c.unread = nc, acceptguard.NewUnread(nc)
	c.peer.Addr = nc.RemoteAddr()
	c.requests.Store(0)
	return nil
}

// RemoteAddr is the edge's address, carrying c: fasthttp's
// Response.RemoteAddr of an answer read here (answerConn).
func (c *pooledConn) RemoteAddr() net.Addr { return &c.peer }

// Close closes the connection and gives its place in the pool's count back
// (once: HostClient and a TLS client may both close it).
func (c *pooledConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.pool.open.Add(-1)
	}
	return c.Conn.Close()
}

// streamTo times the rest of the answer whose head HostClient has just read
// on c — its body, which fasthttp's server copies to client after the
// handler returns — by progress instead of as a whole: each read from the
// edge may wait answerTimeout for bytes, and what it returned is given
// answerTimeout to be written to the client (fasthttp's server gave the
// whole answer WriteTimeout, and HostClient's ReadTimeout covered the head
// and the whole body, so a download still flowing was cut at the timeout).
// The head stays bounded by HostClient's ReadTimeout, the first bytes to
// the client by the server's WriteTimeout. An edge that sends nothing for
// answerTimeout is cut and counted (stalled); a client that takes nothing
// is cut by its write deadline. The next request on c ends it.
func (c *pooledConn) streamTo(client net.Conn) { c.client = client }

// peerAddr is a pooled connection's remote address, with the connection.
type peerAddr struct {
	net.Addr
	conn *pooledConn
}

// answerConn is the pooled connection an answer was read on, from the
// answer's RemoteAddr (fasthttp's Response); nil for any other address.
// Under TLS too: crypto/tls asks the connection it wraps.
func answerConn(a net.Addr) *pooledConn {
	if p, ok := a.(*peerAddr); ok {
		return p.conn
	}
	return nil
}

// staleConnection reports whether err, from a request to an edge, says the
// connection was closed before a byte of answer came: a keep-alive
// connection the edge closed while it sat idle in the pool (io.EOF on the
// answer's first byte, which is how HostClient reports a close or reset
// there), or one the write found closed. A timeout or a malformed answer is
// the edge's answer to this request, not a stale connection.
func staleConnection(err error) bool {
	return !isDialError(err) && (errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET))
}

func isDialError(err error) bool {
	var de *dialError
	return errors.As(err, &de)
}

// dialTimedOut reports whether a dial failed by running out of
// dial_timeout (no answer to its SYN, or a handshake that did not finish),
// not by a refusal or a reset.
func dialTimedOut(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
