// Package balancer is ringlb's regional front tier: it reads the stickiness
// key of every HTTP request and WebSocket upgrade, hashes it onto the ring of
// edges and proxies to the owner, so every participant of a session meets on
// one edge. WebSockets become byte tunnels after the handshake.
//
// It does not own membership: the caller keeps the *ring.Ring current (from
// gossip and static edges) and the balancer reads a snapshot per request, so a
// ring change never touches a live connection. It keeps one kind of session
// state, shared with the other balancers: which backend each live key is on
// (the live-session table, table.go), so a session stays whole on backends
// that do not check ownership themselves.
package balancer

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/balancer/acceptguard"
	"github.com/ringlb/ringlb/balancer/httplog"
	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/operator"
)

// HealthPath answers 200 while at least one edge is routable, else 503; the
// path keepalived and the GSLB probe. The only path not proxied.
const HealthPath = configs.PathHealth

// errNotProvisioned: New or Reload was given a config that configs did not
// provision — a wiring bug, not an operator's error.
var errNotProvisioned = errors.New("balancer: config not provisioned (load it with configs.Load, or call its Provision)")

// ErrClosed is returned by Serve and ServeAdmin after Shutdown.
var ErrClosed = errors.New("balancer: shut down")

// Balancer proxies requests and WebSocket tunnels to the edge owning each
// request's stickiness key. Create it with New, run Serve (data port) and
// ServeAdmin (admin port), stop it with Shutdown.
type Balancer struct {
	name    string
	cfg     configs.Balancer
	ring    *ring.Ring
	log     *slog.Logger
	reg     *prometheus.Registry
	keys    *keyExtractor
	edges   *edgePool
	metrics *metrics
	// relay carries plain-TCP tunnels after the handshake (nil: goroutines).
	relay *relay
	// table is the live-session table (table.go), shared with the other
	// balancers once FollowCluster runs.
	table *sessionTable
	// access is the access log (accesslog.go), off unless configured.
	access *accessLog
	// maintenance fails the health path (HealthPath) while traffic still
	// flows, so a GSLB takes the balancer out of DNS first (admin API).
	maintenance atomic.Bool
	// sentMaintenance is the maintenance SendState handed to an upgrade's
	// new process (HandOffEnd).
	sentMaintenance atomic.Bool
	// saves orders the saves of the operator state (saveState): snapshots
	// are taken and numbered under mu, and one older than the snapshot
	// written last is not written.
	saves struct {
		mu    sync.Mutex
		order operator.SaveOrder
	}
	// beforeStateWrite, nil but in tests, runs between a save's snapshot
	// of the operator state and its write (saveState).
	beforeStateWrite func()
	// beforeStaticSwap, nil but in tests, runs between a reload's new
	// static edges starting and their swap in (applyReload).
	beforeStaticSwap func()
	// inheritEnds says the process this one replaces ends its table with
	// an empty part (handoffState.TableEnd).
	inheritEnds atomic.Bool

	data  *fasthttp.Server
	admin *http.Server
	// httpLog carries the data and redirect servers' own error lines:
	// counted, written at most once per acceptguard.DefaultLogEvery.
	httpLog httplog.Logger
	// edgeFailLog, proxyFailLog and upgradeFailLog space the lines of an
	// edge that does not answer: every client request to it would write
	// one (backend_errors_total counts each).
	edgeFailLog, proxyFailLog, upgradeFailLog acceptguard.LogLimit
	// strayOwnerLog spaces the lines of 421s naming no edge on the ring.
	strayOwnerLog acceptguard.LogLimit
	// peerClient calls other nodes' admin APIs (dashboard.go).
	peerClient *http.Client
	// op is the admin plane: logins, audit log, operator state, history
	// (admin.go).
	op *operator.Node
	// static are the config's static edges while FollowCluster runs;
	// follower is its goroutine (members.go).
	static   atomic.Pointer[staticEdges]
	follower *membersFollower
	// goneEdgeSeriesAfter is how long an edge is gone before its series
	// are deleted (forgetGoneEdges).
	goneEdgeSeriesAfter time.Duration
	// current holds what Reload may change; read once per request.
	current atomic.Pointer[reloadable]
	cluster clusterRef
	// suspects are edges whose dial failed recently (passive health): new
	// requests skip them for suspectCooldown. name → unix nanos until.
	suspects sync.Map
	// requestIDs numbers generated X-Request-Id values after a random
	// per-process prefix.
	requestIDPrefix [8]byte
	requestIDs      atomic.Uint64
	limiter         *limitListener // set by Serve, under mu
	// connBudget is limits.max_connections: the data and redirect ports'
	// connections together (listener.go).
	connBudget *acceptguard.Budget
	// redirectClients are the redirect port's per-client counts (set by
	// ServeRedirect, under mu).
	redirectClients *acceptguard.PerAddr
	limiterSet      chan struct{} // closed once limiter is set
	limiterOnce     sync.Once
	redirect        *fasthttp.Server // set by ServeRedirect
	// stopWatch ends the certificate watcher (TLS only); watchDone is
	// closed when it has.
	stopWatch, watchDone chan struct{}
	stopOnce             sync.Once
	tlsConfig            *tls.Config // nil: plain HTTP on the data port

	mu      sync.Mutex
	closing bool
	stopped bool // stopServing ran (Shutdown or HandOff)
	// staticStates are the previous process's static edge monitor states
	// (ReceiveState), for FollowCluster's monitors to start from.
	staticStates map[string]bool
	// zeroSince are when static edges got weight 0 (their drain's clock),
	// as the process this one replaced (ReceiveState) or cluster.state_dir
	// (restoreState) had them, for FollowCluster's static edges to go on
	// from; savedZeroSince is what state_dir holds (saveZeroSince).
	zeroSince, savedZeroSince map[string]time.Time
	// listeners are those Serve and ServeRedirect were given: Shutdown
	// closes them itself, as one may be handed to fasthttp only after
	// fasthttp's own Shutdown has run.
	listeners []net.Listener
	tunnels   map[*tunnel]struct{}
	conns     map[net.Conn]struct{} // client connections fasthttp serves, for a forced stop
	// answering: hijacked client connections an answer is streamed to
	// until their close (Balancer.closeDelimited), for a forced stop.
	answering map[net.Conn]struct{}
	// handovers: upgrades answered 101 whose connection fasthttp has not
	// handed to the tunnel yet (ended if it closes the connection instead).
	handovers acceptguard.Handovers
	wg        sync.WaitGroup // one per registered tunnel
}

// New returns a Balancer named name (its cluster node name, for logs and
// /api/ring) routing with r. cfg must be provisioned (configs.Load does it,
// or cfg.Provision for one built in code): the balancer sets no default and
// repeats no check of its own. A nil reg gets a new registry with the Go and
// process collectors. What can still fail (reading the certificate and the
// admin token) is reported at once.
func New(cfg configs.Balancer, name string, r *ring.Ring, logger *slog.Logger, reg *prometheus.Registry) (*Balancer, error) {
	if r == nil {
		return nil, errors.New("balancer: nil ring")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if !cfg.Provisioned() {
		return nil, errNotProvisioned
	}
	rl, errs := prepareReloadable(cfg)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	b := &Balancer{
		name:       name,
		cfg:        cfg,
		ring:       r,
		log:        logger.With("component", "balancer"),
		reg:        reg,
		tunnels:    make(map[*tunnel]struct{}),
		conns:      make(map[net.Conn]struct{}),
		answering:  make(map[net.Conn]struct{}),
		limiterSet: make(chan struct{}),
		connBudget: acceptguard.NewBudget(cfg.Limits.MaxConnections),
		peerClient: newPeerClient(),

		goneEdgeSeriesAfter: defaultGoneEdgeSeriesAfter,
	}
	b.edges = newEdgePool(cfg.DialTimeout.D(), cfg.Limits.RequestTimeout.D(), func(m ring.Member) *tls.Config {
		// The static edge's own config, which its monitor checks with;
		// a member at another URL is not that edge.
		if e, ok := b.static.Load().edge(m.Name); ok && e.member.URL == m.URL {
			return e.verify
		}
		return nil
	}, b.answerStalled, func(open int) bool {
		max := b.connBudget.Max()
		return max > 0 && open+b.Tunnels() >= max
	})
	var err error
	if b.metrics, err = newMetrics(reg, r, b.certExpiry, b.tableGauges()); err != nil {
		return nil, fmt.Errorf("balancer: register metrics: %w", err)
	}
	b.httpLog = httplog.Logger{L: b.log, Limit: &httplog.Limit{Lines: b.metrics.connectionErrors}}
	b.data = &fasthttp.Server{
		Handler:               b.serveData,
		ReadTimeout:           cfg.Limits.RequestTimeout.D(),
		WriteTimeout:          cfg.Limits.RequestTimeout.D(),
		IdleTimeout:           cfg.IdleTimeout.D(),
		NoDefaultServerHeader: true,
		// An edge's answer goes to the client with its own Content-Type
		// or none: fasthttp's default (text/plain) made a browser show
		// an untyped answer as text, or, with nosniff, refuse it as a
		// script, where it sniffed it. The balancer's own answers name
		// theirs (reply).
		NoDefaultContentType: true,
		// Bodies are forwarded, never parsed here.
		DisablePreParseMultipartForm: true,
		// Request bodies stream to the edge as they arrive: fasthttp
		// reads at most 8 KiB of one before the handler, which refuses
		// a declared length over max_body_bytes and counts a chunked
		// body as it streams (framing.go).
		StreamRequestBody: true,
		// Expect: 100-continue for a body that would be refused gets
		// the refusal instead, before the client sends it.
		ExpectHandler: b.expectContinue,
		// The read buffer bounds the request head (fasthttp answers 431).
		ReadBufferSize:  cfg.Limits.MaxHeaderBytes,
		CloseOnShutdown: true,
		// Tunnels own their client connections after the hijack (the
		// epoll relay outlives the hijack handler).
		KeepHijackedConns: true,
		ConnState:         b.trackConn,
		// Malformed requests are anyone's to send: their content
		// (tokens, cookies) stays out of the error lines (httplog).
		SecureErrorLogMessage: true,
		Logger:                b.httpLog,
	}
	b.current.Store(rl)
	binary.LittleEndian.PutUint64(b.requestIDPrefix[:], rand.Uint64())
	if rl.cert != nil {
		b.tlsConfig = &tls.Config{
			MinVersion: tls.VersionTLS12,
			// fasthttp speaks HTTP/1.1 only, which WebSocket needs anyway.
			NextProtos: []string{"http/1.1"},
			// The certificate is read per handshake from the current
			// reloadable state, so Reload swaps it without a restart.
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return b.current.Load().cert, nil },
		}
	}
	if rl.cert != nil {
		b.stopWatch = make(chan struct{})
		b.watchDone = make(chan struct{})
		go func() {
			defer close(b.watchDone)
			b.watchCertificates(b.stopWatch, certCheckInterval)
		}()
	}
	// The table before the admin server: the operator state it restores
	// holds the table's drains.
	b.table = newSessionTable(name, cfg.SessionTable, r, b.metrics, b.log, b.tableHooks())
	b.admin = b.newAdminServer()
	if b.relay, err = newRelay(b.log, cfg.TunnelIdleTimeout.D(), cfg.TunnelFinTimeout.D()); err != nil {
		return nil, fmt.Errorf("start tunnel relay: %w", err)
	}
	if err := b.startAccessLog(cfg.AccessLog); err != nil {
		b.relay.close()
		return nil, err
	}
	return b, nil
}

// Serve serves the data port on ln until Shutdown; it then returns nil.
// With balancer.tls set it terminates TLS on ln; tunnels then copy through
// crypto/tls instead of splice(2).
func (b *Balancer) Serve(ln net.Listener) error {
	if !b.register(ln) {
		return ErrClosed
	}
	ln, err := b.wrapListener(ln)
	if err != nil {
		return err
	}
	if b.tlsConfig != nil {
		ln = tls.NewListener(ln, b.tlsConfig)
	}
	return b.served(b.data.Serve(ln))
}

// register records a listener to serve, unless Shutdown has begun.
func (b *Balancer) register(ln net.Listener) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closing {
		return false
	}
	b.listeners = append(b.listeners, ln)
	return true
}

// served maps the end of a Serve that Shutdown or HandOff caused to nil.
func (b *Balancer) served(err error) error {
	b.mu.Lock()
	closing := b.closing || b.stopped
	b.mu.Unlock()
	if closing && errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections, lets in-flight requests finish and
// WebSocket tunnels run until ctx expires, then closes what is left and waits
// for every goroutine the balancer started. It returns ctx.Err() when it had
// to close connections, else nil.
func (b *Balancer) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	b.closing = true
	b.mu.Unlock()

	dataErr, errs := b.stopServing(ctx, ctx)
	done := make(chan struct{})
	go func() {
		b.wg.Wait()
		close(done)
	}()
	forced := false
	select {
	case <-done:
	case <-ctx.Done():
		forced = true
	}
	if forced || dataErr != nil {
		b.mu.Lock()
		tunnels := make([]*tunnel, 0, len(b.tunnels))
		for t := range b.tunnels {
			tunnels = append(tunnels, t)
		}
		conns := make([]net.Conn, 0, len(b.conns))
		for c := range b.conns {
			conns = append(conns, c)
		}
		for c := range b.answering {
			conns = append(conns, c) // hijacked: not in conns any more
		}
		b.mu.Unlock()
		// Closed outside the lock (every connection's start and end
		// takes it) and without TLS's close_notify: a request cut here
		// did not end cleanly, and crypto/tls waits up to 5 s to send the
		// alert to a client that reads nothing whose send queue is full —
		// one connection after the other, past the shutdown's bound.
		for _, c := range conns {
			if tc, ok := c.(*tls.Conn); ok {
				c = tc.NetConn()
			}
			c.Close()
		}
		if len(tunnels) > 0 {
			b.log.Info("shutdown: closing tunnels", "tunnels", len(tunnels))
		}
		for _, t := range tunnels {
			t.close()
		}
		<-done
	}
	b.edges.closeIdle()
	b.stopFollowing()
	b.table.close()
	b.access.close()
	if b.stopWatch != nil {
		b.stopOnce.Do(func() { close(b.stopWatch) })
		<-b.watchDone
	}
	if b.relay != nil {
		b.relay.close()
	}
	if forced || dataErr != nil {
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}

// stopServing stops every server of the balancer (admin, data, redirect)
// and closes their listeners, waiting for in-flight requests: the data
// port's bounded by ctx, the admin and redirect ports' by others, at whose
// end the admin port's unfinished requests are cut; tunnels go on. Once:
// Shutdown after HandOff does not repeat it.
func (b *Balancer) stopServing(ctx, others context.Context) (dataErr error, errs []error) {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return nil, nil
	}
	b.stopped = true
	redirect := b.redirect
	b.mu.Unlock()
	// Every server stops accepting at once, then each waits for its own
	// requests in flight: one after the other, a request trickled to the
	// admin port kept the data port accepting (and placing keys) for as
	// long as it held the admin server's stop.
	adminErr := make(chan error, 1)
	go func() {
		err := b.admin.Shutdown(others)
		if err != nil {
			// A request still being read (a head or a body trickled in)
			// would otherwise run on, and a change it makes land after
			// the process has handed its state over: cut, it changed
			// nothing, and its client sees so.
			_ = b.admin.Close()
		}
		b.op.Close()
		adminErr <- err
	}()
	redirected := make(chan struct{})
	go func() {
		defer close(redirected)
		if redirect != nil {
			_ = redirect.ShutdownWithContext(others)
		}
	}()
	// Stops accepting, closes idle keep-alive connections, waits for
	// in-flight requests (a WebSocket handshake included).
	dataErr = b.data.ShutdownWithContext(ctx)
	if err := <-adminErr; err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		errs = append(errs, fmt.Errorf("admin: %w", err))
	}
	<-redirected
	// A Serve that passed its closing check just before Shutdown began
	// may hand its listener to fasthttp only now, after fasthttp's
	// Shutdown: closing it ends that Serve. (Closed after, not before:
	// fasthttp reports a listener closed under it as a failed shutdown.)
	b.mu.Lock()
	for _, ln := range b.listeners {
		_ = ln.Close()
	}
	b.mu.Unlock()
	return dataErr, errs
}

// Tunnels returns the number of live WebSocket tunnels.
func (b *Balancer) Tunnels() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.tunnels)
}

// registerTunnel adds t unless the balancer is shutting down.
func (b *Balancer) registerTunnel(t *tunnel) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closing {
		return false
	}
	b.tunnels[t] = struct{}{}
	b.wg.Add(1)
	b.metrics.connectionsActive.WithLabelValues(t.edge).Inc()
	return true
}

// holdAnswer records c as streaming a hijacked answer (closeDelimited), so
// that Shutdown waits for it and cuts it when forced; false when the
// balancer is shutting down: the answer then goes on unwaited for, still
// bounded by request_timeout between reads and writes.
func (b *Balancer) holdAnswer(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closing {
		return false
	}
	b.answering[c] = struct{}{}
	b.wg.Add(1)
	return true
}

func (b *Balancer) releaseAnswer(c net.Conn) {
	b.mu.Lock()
	delete(b.answering, c)
	b.mu.Unlock()
	b.wg.Done()
}

func (b *Balancer) releaseTunnel(t *tunnel) {
	b.mu.Lock()
	delete(b.tunnels, t)
	// Under b.mu, as registerTunnel counts it: forgetEdge reads the gauge
	// under it.
	b.metrics.connectionsActive.WithLabelValues(t.edge).Dec()
	b.mu.Unlock()
	b.table.closed(t)
	b.access.tunnel(t)
	b.wg.Done()
}

// trackConn keeps the set of client connections fasthttp serves, so Shutdown
// can close them when its context expires.
func (b *Balancer) trackConn(c net.Conn, state fasthttp.ConnState) {
	b.mu.Lock()
	switch state {
	case fasthttp.StateNew:
		b.conns[c] = struct{}{}
	case fasthttp.StateHijacked, fasthttp.StateClosed:
		delete(b.conns, c) // a hijacked connection belongs to its tunnel
	}
	b.mu.Unlock()
	if state == fasthttp.StateClosed {
		// An upgrade's tunnel whose hijack never came: fasthttp closed
		// the connection instead.
		b.handovers.Closed(c)
	}
}
