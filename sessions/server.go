// Package sessions is the session relay of a ringlb edge: every participant
// of a session (one stickiness key) meets here, and each frame one of them
// sends is relayed to all the others, in one order for all.
//
// It serves the edge's data port (/ws, /whoami, /) and admin port
// (/healthz, /metrics, /api/sessions). It is not a router: balancers choose
// the edge. With a cluster (UseCluster, placement.go) the edge checks that
// choice on its own copy of the ring and names the owner (421) of a session
// that is not its own, so none splits; without one it hosts whatever it is
// sent.
// It speaks raw mode (no subprotocol) and ringlb.v1 (JSON envelopes,
// sequence numbers, history and resume: v1.go), and checks signed join
// tokens (token.go, auth.go).
package sessions

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/balancer/acceptguard"
	"github.com/ringlb/ringlb/balancer/httplog"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/operator"
)

// headerEdge names the edge on every response, the 101 included, so
// clients and tests can see where the balancer sent them.
const headerEdge = configs.HeaderEdge

// Timings of the data port and of every connection.
const (
	// requestReadTimeout bounds reading one HTTP request, so a client
	// trickling a request cannot hold a connection.
	requestReadTimeout = 30 * time.Second
	// defaultPingInterval is how often the writer pings the peer (ahead of
	// frames queued for it: a peer that only reads answers with pongs).
	defaultPingInterval = 30 * time.Second
	// defaultWriteWait bounds writing one frame. A peer that accepts no
	// data for this long is dropped (its writer is blocked, not the others).
	defaultWriteWait = 10 * time.Second
	// defaultCloseWait bounds a close handshake: how long the peer has to
	// answer our close frame before the socket is closed.
	defaultCloseWait = 2 * time.Second
	// defaultReaderLinger is how long a reader that got a frame keeps its
	// goroutine waiting for the next (wsReader.linger): longer than
	// the gaps of someone typing or moving a cursor, short beside the
	// time people spend reading and thinking.
	defaultReaderLinger = 2 * time.Second
)

// Buffer sizes. Idle connections dominate an edge (people think between
// keystrokes), so an idle connection holds no buffer at all: its reader
// takes a pooled read buffer while it runs (wsread.go), and relayed frames
// are written straight from the shared frame buffer
// (participant.writeLoop).
//
// The library's Conn made by the upgrade is dropped at once (the reader and
// the writer are ours), so its buffers are garbage from birth: the
// smallest read buffer it takes, and its write buffer, never used, would
// come from the shared pool.
const (
	upgradeReadBufferSize = 128
	writeBufferSize       = 4 << 10
)

// ErrClosed is returned by Serve and ServeAdmin after Shutdown.
var ErrClosed = errors.New("sessions: shut down")

// Server is an edge's session relay. Create it with New, run Serve (data
// port) and ServeAdmin (admin port), stop it with Shutdown.
type Server struct {
	cfg     configs.Edge
	name    string
	region  string
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics
	hub     *hub
	frames  framePool
	// handovers: upgraded connections fasthttp has not handed to their
	// handler yet (upgrade).
	handovers acceptguard.Handovers
	whoami    []byte
	// auth is how joins are admitted (edge.auth: the join-token secret,
	// what a join without a token becomes); Reload swaps it (reload.go).
	auth        atomic.Pointer[authState]
	revocations *revocations
	// adminToken is the operator's bearer token for the admin port (empty:
	// none, the admin port is on loopback; Reload swaps it); keyring is the
	// cluster's key, with which peers sign their reads of the admin port
	// and edges sign their claims and hand-offs (UseKeyring).
	adminToken atomic.Pointer[[]byte]
	// metricsToken reads /metrics only (edge.admin.metrics_token_file;
	// empty: none).
	metricsToken atomic.Pointer[[]byte]
	keyring      atomic.Pointer[health.Keyring]
	// reloadMu serializes Reload; applied is the section it last applied.
	reloadMu sync.Mutex
	applied  configs.Edge
	// overlapEnd, under reloadMu, closes the previous secret's holders when
	// a rotation's overlap ends (lapse.go); stopped by the next Reload and
	// by Shutdown.
	overlapEnd *time.Timer
	// op is the admin plane: logins, audit log, history (admin.go).
	op *operator.Node

	upgrader websocket.FastHTTPUpgrader
	// writeBuffers is the library's WriteBufferPool, shared by every
	// connection of this Server.
	writeBuffers sync.Pool
	// readers holds running readers' state and buffers (*wsReader).
	readers sync.Pool
	// poll wakes parked readers (park_linux.go); made by the first park
	// (parker), closed by Shutdown once every participant has ended. Set
	// under pollMu; read without it (a closing socket leaves its set).
	pollMu      sync.Mutex
	poll        atomic.Pointer[poller]
	pollRetryAt time.Time // newPoller failed: not tried again before
	pollShut    bool      // Shutdown has closed it: never made again
	data        *fasthttp.Server
	admin       *http.Server
	// bodies holds the hand-off bodies being read (bodies.go); bodyLog,
	// peerLog and skipLog space the lines of refused bodies, refused
	// edge-to-edge requests and joins refused for their X-Ringlb-Skip.
	bodies                    bodyGate
	bodyLog, peerLog, skipLog acceptguard.LogLimit
	// direct counts the participants that did not come through a
	// balancer of the cluster, by address (edge.max_direct_per_ip:
	// directshare.go); shareLog spaces the lines of joins it refuses.
	direct   *acceptguard.PerAddr
	shareLog acceptguard.LogLimit
	// idleShare counts the data port's connections that carry nothing
	// yet (no request, or idle between requests) by address, under the
	// same share (connshare.go).
	idleShare *connShare
	// sendBudget bounds what every send queue holds together
	// (edge.max_queued_bytes), incoming what every connection is in the
	// middle of receiving (edge.max_incoming_bytes): sendbudget.go.
	sendBudget, incoming byteBudget
	// fanoutRate is edge.max_fanout_bytes_per_second (pace.go).
	fanoutRate atomic.Int64
	// untrackMemory takes the budgets' counts out of acceptguard.Process's
	// at Shutdown.
	untrackMemory func()
	// httpLog spaces the data port's HTTP server lines (a connection
	// ended on a malformed request head), counting each.
	httpLog httplog.Limit

	// Keepalive and close timings; fields so tests can shorten them.
	pingInterval time.Duration
	pongWait     time.Duration // read deadline: a peer silent this long (no frame, no pong) is dropped
	writeWait    time.Duration
	closeWait    time.Duration
	parkIdle     bool // readers park when their socket has nothing to read
	// readerLinger: a reader that got a frame waits this long for the
	// next before parking (wsReader.linger).
	readerLinger time.Duration
	// handoffRead, when set, bounds below handoffTime how long a hand-off
	// body may take to come (bodyLimit): a slot whose body never comes is
	// free again, its head answered 408, that much sooner.
	handoffRead time.Duration

	draining atomic.Bool // set by a drain or Shutdown: /healthz answers 503
	// drainStarted is closed when draining begins (Draining).
	drainStarted chan struct{}
	drainOnce    sync.Once
	// handOffMu serializes a drain's hand-offs (handOn); handedAt is the
	// ring version the last one placed sessions by, handed whether one ran.
	handOffMu sync.Mutex
	handedAt  uint64
	handed    bool
	// lastHandOff is when the drain last handed sessions on (lingerUntil).
	lastHandOff time.Time
	// createdDraining counts sessions created while draining (a join
	// admitted before the drain, upgraded after its hand-off looked);
	// handedCreated is its value at the last hand-off.
	createdDraining atomic.Uint64
	handedCreated   uint64
	// installing is held (read) by a hand-off installing sessions here;
	// a drain takes it once after draining is set, so every session
	// installed is one its hand-off sees, and none comes after it
	// (serveHandoff refuses while draining).
	installing sync.RWMutex
	// drainCancel stops a background drain (admin POST /api/drain);
	// drainDone waits for it.
	drainCancel context.CancelFunc
	drainDone   sync.WaitGroup

	// joined, when set (tests only), is called after each successful join,
	// before the 101 is written, so tests wait for a signal instead of
	// sleeping.
	joined func(key string)

	mu        sync.Mutex
	closing   bool
	listeners []net.Listener // passed to Serve, closed by Shutdown
	conns     map[*participant]struct{}
	wg        sync.WaitGroup // one per registered connection (its run)
}

// New returns the relay of the edge name in region. Zero fields of cfg get
// defaults: max_participants 64, max_message_bytes 64 KiB, send_queue 256,
// max_connections derived from the open-file limit, drain_timeout 30s,
// idle_grace 60s, history 1000 messages and 1 MiB; edge.auth gets
// configs.EdgeAuth.Provision's. A nil logger discards; a nil reg gets a new
// registry.
func New(cfg configs.Edge, name, region string, logger *slog.Logger, reg *prometheus.Registry) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if !cfg.Provisioned() {
		// A wiring bug, not an operator's error: configs sets every
		// default, and the edge repeats none of them.
		panic("sessions: config not provisioned (load it with configs.Load, or call its Provision)")
	}
	s := &Server{
		cfg:          cfg,
		name:         name,
		region:       region,
		log:          logger.With("component", "sessions"),
		reg:          reg,
		pingInterval: defaultPingInterval,
		pongWait:     2*defaultPingInterval + defaultWriteWait,
		writeWait:    defaultWriteWait,
		closeWait:    defaultCloseWait,
		parkIdle:     true,
		readerLinger: defaultReaderLinger,
		conns:        make(map[*participant]struct{}),
		drainStarted: make(chan struct{}),
	}
	m, err := newMetrics(reg)
	if err != nil {
		// Only a registry already holding our names gets here: a wiring
		// bug (two edges on one registry), not an operator error.
		panic(fmt.Sprintf("sessions: register metrics: %v", err))
	}
	s.metrics = m
	s.httpLog.Lines = m.connectionErrors
	s.hub = newHub(cfg.MaxParticipants, m)
	s.hub.edge = name
	s.hub.idleGrace = cfg.IdleGrace.D()
	s.hub.historyMsgs, s.hub.historyByte = cfg.History.Messages, cfg.History.Bytes
	s.hub.idle = newIdleSessions(cfg.MaxIdleSessions)
	s.hub.budget = newHistoryBudget(cfg.History.TotalBytes, s.hub.idle)
	s.sendBudget.limit.Store(int64(cfg.MaxQueuedBytes))
	s.incoming.limit.Store(int64(cfg.MaxIncomingBytes))
	s.fanoutRate.Store(int64(cfg.MaxFanoutBytesPerSecond))
	s.direct = acceptguard.NewPerAddr(directLimits(cfg))
	s.idleShare = newConnShare(s, directLimits(cfg))
	// Low on memory, the largest holders are shed (sendbudget.go) and the
	// histories grow no more (v1.remember); the messages being received
	// and the histories are buffers a client makes the edge allocate,
	// counted fresh where the process's memory is sampled. The send queues
	// are not: a broadcast's frame is one buffer however many queues hold it.
	s.sendBudget.mem, s.incoming.mem, s.hub.budget.mem = acceptguard.Process, acceptguard.Process, acceptguard.Process
	s.untrackMemory = acceptguard.Process.Track(func() int64 { return s.incoming.used.Load() + s.hub.budget.used.Load() })
	for _, c := range boundGauges(s) {
		if err := reg.Register(c); err != nil {
			panic(fmt.Sprintf("sessions: register metrics: %v", err))
		}
	}
	s.revocations = newRevocations(cfg.Auth.MaxTokenTTL.D(), m.revocationsHeld)
	s.applied = cfg
	auth, err := newAuthState(cfg.Auth, nil, time.Now())
	if err != nil {
		s.log.Error("join tokens will be refused", "err", err)
	}
	s.auth.Store(auth)
	token, err := cfg.Admin.Token()
	if err != nil {
		// Fail closed: a token nobody knows, so the admin API
		// answers only /healthz until the file is fixed.
		s.log.Error("admin token unreadable: the admin API refuses every request but /healthz", "err", err)
		token = []byte(configs.GenerateKey())
	}
	s.adminToken.Store(&token)
	metrics, err := cfg.Admin.ReadMetricsToken()
	if err != nil {
		// Fail closed: no scrape-only token is taken.
		s.log.Error("metrics token unreadable: /metrics takes only the operator's credentials", "err", err)
	}
	s.metricsToken.Store(&metrics)
	s.whoami, _ = json.Marshal(struct {
		Edge   string `json:"edge"`
		Region string `json:"region"`
	}{name, region})
	s.upgrader = websocket.FastHTTPUpgrader{
		ReadBufferSize:  upgradeReadBufferSize,
		WriteBufferSize: writeBufferSize,
		WriteBufferPool: &s.writeBuffers,
		Subprotocols:    []string{protocolV1},
		// Every origin is allowed here: a session is guarded by its
		// unguessable key (and a signed join token), not by the page that
		// opened the socket. A key the browser attached itself, a cookie,
		// is held to its page's origin before (serveWebSocket).
		CheckOrigin: func(*fasthttp.RequestCtx) bool { return true },
		Error: func(ctx *fasthttp.RequestCtx, status int, reason error) {
			ctx.Response.Header.Set("Sec-Websocket-Version", "13")
			ctx.Error(reason.Error()+"\n", status)
		},
	}
	s.data = &fasthttp.Server{
		Handler:                      s.serveData,
		ReadTimeout:                  requestReadTimeout,
		WriteTimeout:                 requestReadTimeout,
		IdleTimeout:                  time.Minute,
		NoDefaultServerHeader:        true,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		// Every head a balancer forwards fits (a key of up to
		// configs.MaxKeyLength included); the buffer is the request
		// reader's, released after the handshake (ReduceMemoryUsage).
		ReadBufferSize: configs.EdgeHeadBytes,
		// Hands the upgraded connection over without fasthttp's
		// request reader (released once the request is read and nothing
		// is buffered behind it, as for a WebSocket handshake). Without it
		// every idle participant keeps that reader for its whole life.
		// Plain requests are rare on the data port; their cost is moot.
		ReduceMemoryUsage: true,
		// The upgrade handler hands the connection to a goroutine of its
		// own and returns (serveConn), so fasthttp recycles the request
		// context and its parsed headers (~6 KiB) at once instead of
		// holding them for the connection's whole life. The socket is then
		// ours to close (participant.run does).
		KeepHijackedConns: true,
		// Malformed requests are anyone's to send: their content
		// (tokens, cookies) stays out of the error lines (httplog).
		SecureErrorLogMessage: true,
		Logger:                httplog.Logger{L: s.log, Limit: &s.httpLog},
		// Each request's body limit is set on its head, before fasthttp
		// allocates the body it announces (bodies.go).
		HeaderReceived: s.bodyLimit,
		ErrorHandler:   s.requestError,
		ConnState: func(c net.Conn, st fasthttp.ConnState) {
			s.idleShare.connState(c, st)
			if st == fasthttp.StateClosed {
				s.handovers.Closed(c)
			}
		},
	}
	s.admin = s.newAdminServer()
	return s
}

// Serve serves the data port on ln until Shutdown; it then returns nil.
// Connections beyond edge.max_connections are answered 503 and closed;
// failed accepts (EMFILE...) are retried after a backoff, never returned.
//
//	GET /ws      WebSocket relay; session key from header or cookie ctstickiness
//	GET /whoami  {"edge":"<name>","region":"<region>"}
//	GET /        the demo pad (pad.go)
func (s *Server) Serve(ln net.Listener) error {
	guarded := acceptguard.Wrap(ln, acceptguard.Config{
		Name: "edge data", Logger: s.log, Errors: s.metrics.acceptErrors,
		MaxConns: s.cfg.MaxConnections, Refused: s.metrics.rejected.WithLabelValues("max_connections"),
		Refusal: acceptguard.HTTPAnswer(fasthttp.StatusServiceUnavailable, msgFull),
		Clients: s.idleShare, PerIPSetting: "max_direct_per_ip", RefusedPerIP: s.metrics.rejected.WithLabelValues(reasonDirectShare),
		// A balancer's burst of upgrades arrives from one address before
		// any head shows its signature: beyond the share, connections are
		// admitted while there is room and ended first when there is none
		// (answered msgFull: refuseFull, or the listener's Refusal), never
		// refused at accept, so no RefusalPerIP.
		Spill:  true,
		Memory: acceptguard.Process, RefusedMemory: s.metrics.rejected.WithLabelValues(acceptguard.ReasonMemory),
		RefusalMemory: acceptguard.HTTPAnswer(fasthttp.StatusServiceUnavailable, "this edge is low on memory; try again shortly"),
	})
	if !s.addListener(guarded) {
		return ErrClosed
	}
	return s.data.Serve(guarded)
}

// addListener records ln for Shutdown to close, unless it has begun. A
// Serve racing with Shutdown then finds its listener closed and returns
// nil, instead of serving after fasthttp's Shutdown found nothing to stop.
func (s *Server) addListener(ln net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.listeners = append(s.listeners, ln)
	return true
}

func (s *Server) serveData(ctx *fasthttp.RequestCtx) {
	if !s.idleShare.active(ctx.Conn()) {
		refuseFull(ctx)
		return
	}
	// Set last, so it survives ctx.Error (which resets the response) and
	// lands on the 101, which fasthttp writes after this returns.
	defer ctx.Response.Header.Set(headerEdge, s.name)
	path := string(ctx.Path()) // no allocation: the compiler optimizes string(b) in a switch
	switch path {
	case "/ws":
		s.serveWebSocket(ctx)
	case pathClaim:
		s.serveClaim(ctx)
	case pathHandoff:
		s.serveHandoff(ctx)
	case pathReplicate:
		s.serveReplicate(ctx)
	case "/whoami":
		s.idleShare.forwarded(ctx)
		if !getOrHead(ctx) {
			return
		}
		ctx.SetContentType("application/json")
		ctx.SetBody(s.whoami)
	case "/", padScriptPath, padStylePath:
		s.idleShare.forwarded(ctx)
		servePad(ctx, path)
	default:
		s.idleShare.forwarded(ctx)
		ctx.Error("not found\n", fasthttp.StatusNotFound)
	}
}

func getOrHead(ctx *fasthttp.RequestCtx) bool {
	if ctx.IsGet() || ctx.IsHead() {
		return true
	}
	ctx.Error("method not allowed\n", fasthttp.StatusMethodNotAllowed)
	ctx.Response.Header.Set(fasthttp.HeaderAllow, "GET, HEAD")
	return false
}

func (s *Server) serveWebSocket(ctx *fasthttp.RequestCtx) {
	key, err := sessionKey(&ctx.Request.Header)
	if err != nil {
		ctx.Error("bad request: "+err.Error()+"\n", fasthttp.StatusBadRequest)
		return
	}
	// Behind a balancer the key is in the header; a browser reaching the
	// edge directly sends it as a cookie, which any page of its site gets
	// attached (configs.CrossOriginCookieKey).
	if len(ctx.Request.Header.Peek(keyName)) == 0 && configs.CrossOriginCookieKey(ctx.Request.Header.Peek(fasthttp.HeaderOrigin), ctx.Host()) {
		ctx.Error("forbidden: "+configs.ErrCrossOriginCookieKey.Error()+"\n", fasthttp.StatusForbidden)
		return
	}
	if err := s.checkSkip(ctx, key); err != nil {
		s.metrics.peerRefused.Inc()
		s.peerLog.Warn(s.log, "join refused: its X-Ringlb-Skip is not signed by a node of this cluster", "remote", ctx.RemoteIP(), "err", err)
		ctx.Error("forbidden: "+err.Error()+"\n", fasthttp.StatusForbidden)
		return
	}
	info, token, ok := s.admit(ctx, key)
	if !ok {
		return
	}
	share, ok := s.directShare(ctx, key)
	if !ok {
		return
	}
	owner, err := s.place(ctx, key)
	if err != nil || owner != "" {
		s.direct.Release(share)
	}
	switch {
	case err != nil:
		ctx.Error("service unavailable: "+err.Error()+"\n", fasthttp.StatusServiceUnavailable)
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
		return
	case owner != "":
		s.metrics.misdirected.Inc()
		ctx.Error("misdirected: the session belongs to edge "+owner+"\n", fasthttp.StatusMisdirectedRequest)
		ctx.Response.Header.Set(headerOwner, owner) // after Error, which resets headers
		return
	}
	// The request (and key with it) is recycled once this returns; the
	// connection handler runs after that.
	owned := []byte(string(key))
	if err := s.upgrade(ctx, func(conn *websocket.Conn) {
		info.v1 = conn.Subprotocol() == protocolV1
		// ctx is valid until this handler returns: the 101 fasthttp would
		// have written, headers and all (X-Ringlb-Edge, set last).
		head := append([]byte(nil), ctx.Response.Header.Header()...)
		// Only the socket is kept: the library's Conn (and its buffers)
		// is left to the GC (wsread.go says why).
		s.serveConn(conn.NetConn(), owned, head, info, token, share)
	}, func() {
		s.hub.unreserve(owned)
		s.direct.Release(share)
	}); err != nil {
		return
	}
	// The participant writes the 101 itself once it has joined (run).
	ctx.HijackSetNoResponse(true)
}

// upgrade upgrades ctx's connection to a WebSocket that handler serves once
// the request handler has returned, and tells the accept guard that the
// connection is handler's from now on: it is closed when its session or
// stream ends, at once, without the linger of a connection the HTTP server
// closes. undo gives back what the handler was to own (a share, a place in
// a wait group) when the upgrade fails, and when fasthttp closes the
// connection instead of running handler (Handovers says when).
func (s *Server) upgrade(ctx *fasthttp.RequestCtx, handler websocket.FastHTTPHandler, undo func()) error {
	conn := ctx.Conn()
	if err := s.upgrader.Upgrade(ctx, func(c *websocket.Conn) {
		s.handovers.Taken(conn)
		handler(c)
	}); err != nil {
		undo()
		return err
	}
	s.handovers.Pending(conn, undo)
	if g, ok := conn.(*acceptguard.Conn); ok {
		g.NoLinger()
	}
	return nil
}

// placeTimeout bounds a new session's ownership checks: claims to the
// previous owners (peerTimeout each) or the wait for a hand-off in flight.
const placeTimeout = handoffTimeout

// errDraining refuses a new session while the edge drains (no cluster to
// send it elsewhere).
var errDraining = errors.New("edge draining")

// place admits a join of key (counted until it joins; see hub.reserve), or
// names the edge the session belongs to, or refuses it. A session live here
// is always joined: live sessions never move on a ring change, so none
// splits. A new one is checked against the cluster's ring (placement.go).
func (s *Server) place(ctx *fasthttp.RequestCtx, key []byte) (string, error) {
	o := s.hub.owner.Load()
	var (
		skip []string
		gone goneEdges
	)
	if o != nil {
		skip = skipList(ctx.Request.Header.Peek(headerSkip))
		gone = o.goneEdges(skip)
	}
	live, owner := s.hub.lookup(key, s.name, gone)
	if owner != "" {
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.Debug("join redirected: moved or claimed", "key", httplog.Key(key), "owner", owner)
		}
		return owner, nil
	}
	if !live {
		if o == nil {
			if s.draining.Load() {
				return "", errDraining
			}
		} else {
			// Not the request's context: the HTTP client may hold it
			// after we return, and fasthttp recycles it.
			pctx, cancel := context.WithTimeout(context.Background(), placeTimeout)
			owner, err := o.place(pctx, key, skip)
			cancel()
			if err != nil || owner != "" {
				return owner, err
			}
		}
	}
	return s.hub.reserve(key, s.name, gone), nil
}

// skipList parses X-Ringlb-Skip: the edges a balancer could not reach for
// this request, comma-separated (at most 8 are read).
func skipList(h []byte) []string {
	if len(h) == 0 {
		return nil
	}
	var out []string
	for _, f := range strings.Split(string(h), ",") {
		if f = strings.TrimSpace(f); f != "" && len(out) < 8 {
			out = append(out, f)
		}
	}
	return out
}

// serveConn registers one upgraded connection (hijacked: fasthttp's view
// of its socket; token, the join token admit verified, nil for none) and
// runs it on a goroutine of its own (counted in s.wg),
// returning at once so that fasthttp's hijack goroutine ends and releases
// the request (KeepHijackedConns).
func (s *Server) serveConn(hijacked net.Conn, key, head []byte, info joinInfo, token *heldToken, share acceptguard.Slot) {
	p := newParticipant(s, rawConn(hijacked))
	p.joinInfo = info
	p.token.Store(token)
	p.admitted = true
	p.share = share
	if !s.register(p) {
		s.hub.unreserve(key)
		s.direct.Release(share)
		// Shutdown began during the handshake: upgrade, then say so.
		_ = p.raw.SetWriteDeadline(time.Now().Add(s.closeWait))
		_, _ = p.raw.Write(head)
		var c [2]byte
		binary.BigEndian.PutUint16(c[:], closeServiceRestart)
		_ = p.writeControl(websocket.CloseMessage, c[:], "edge shutting down")
		_ = p.raw.Close() // KeepHijackedConns: fasthttp leaves the socket to us
		return
	}
	s.revokedAfterRegister(p)     // revoked since admit: it joins only to be closed with 1008
	go p.run(key, head, hijacked) // finish unregisters p
}

// pollRetry is how long after a failed newPoller the next is tried.
const pollRetry = 10 * time.Second

// parker returns the poller that wakes parked readers, made on first use;
// nil when readers cannot park (not Linux, Shutdown has begun, or epoll
// refused: out of descriptors, most likely, under load or attack; the
// readers then block in their reads as before, and it is tried again
// pollRetry later, so the edge parks again once descriptors are back).
func (s *Server) parker() *poller {
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	pl := s.poll.Load()
	if pl != nil || s.pollShut || !parkSupported || time.Now().Before(s.pollRetryAt) || s.closingNow() {
		return pl
	}
	pl, err := newPoller()
	if err != nil {
		s.pollRetryAt = time.Now().Add(pollRetry)
		s.log.Warn("idle connections keep their reader goroutine for now", "err", err, "retry_in", pollRetry)
		return nil
	}
	s.poll.Store(pl)
	return pl
}

func (s *Server) closingNow() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// register adds p to the connections Shutdown closes, unless it has begun.
func (s *Server) register(p *participant) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[p] = struct{}{}
	s.wg.Add(1)
	s.metrics.connectionsActive.Inc()
	return true
}

func (s *Server) unregister(p *participant) {
	s.mu.Lock()
	delete(s.conns, p)
	s.mu.Unlock()
	s.direct.Release(p.share)
	s.metrics.connectionsActive.Dec()
	s.wg.Done()
}

// Shutdown stops accepting connections, closes every WebSocket with 1012
// (service restart: reconnect through the balancer) and waits for every
// goroutine the server started, the close handshakes included. When ctx
// expires first it closes the remaining sockets, waits, and returns
// ctx.Err(). /healthz answers 503 from the start of Shutdown until the admin
// port closes last.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginDrain()
	s.reloadMu.Lock()
	if s.overlapEnd != nil {
		s.overlapEnd.Stop()
	}
	s.reloadMu.Unlock()
	s.mu.Lock()
	s.closing = true
	if s.drainCancel != nil {
		s.drainCancel()
	}
	for _, ln := range s.listeners {
		_ = ln.Close()
	}
	s.mu.Unlock()

	var errs []error
	// Stop accepting first, so clients reconnecting on 1012 are not taken
	// back here. Waits for in-flight plain requests and handshakes.
	// net.ErrClosed: the listener was closed above already.
	if err := s.data.ShutdownWithContext(ctx); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		errs = append(errs, fmt.Errorf("data port: %w", err))
	}

	s.drainDone.Wait()
	n := s.closeAll("edge shutting down")
	if n > 0 {
		s.log.Info("shutdown: closing connections", "connections", n)
	}

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	forced := false
	select {
	case <-done:
	case <-ctx.Done():
		forced = true
		s.mu.Lock()
		for p := range s.conns {
			p.closeSocket()
		}
		s.mu.Unlock()
		<-done
	}
	s.hub.close()
	s.untrackMemory()
	// Every connection has ended: no reader parks any more.
	s.pollMu.Lock()
	if pl := s.poll.Load(); pl != nil {
		pl.close()
		s.poll.Store(nil)
	}
	s.pollShut = true
	s.pollMu.Unlock()
	if o := s.hub.owner.Load(); o != nil {
		o.close()
	}
	if r := s.hub.repl.Load(); r != nil {
		r.close()
	}

	if err := s.admin.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		errs = append(errs, fmt.Errorf("admin port: %w", err))
	}
	s.op.Close()
	if forced {
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}

// Stats returns the number of live sessions and WebSocket connections.
func (s *Server) Stats() (sessions, connections int) {
	s.mu.Lock()
	connections = len(s.conns)
	s.mu.Unlock()
	return s.hub.count(), connections
}
