// Package gslb is ringlb's authoritative DNS server for the IDE domain:
// zones from master files or inline records, and traffic-managed names
// answered from region pools with health-based failover.
//
// It answers only for its zones (no recursion); it is not a resolver.
package gslb

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/balancer/acceptguard"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/operator"
)

// maxCNAMEChain bounds CNAME chasing inside our zones.
const maxCNAMEChain = 8

// Server is the authoritative DNS server. Create it with New, Start it,
// stop it with Shutdown.
type Server struct {
	name    string
	logger  *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics

	state atomic.Pointer[state]

	// queryLog logs every query; set from gslb.query_log on New and
	// Reload, and switched by the admin API.
	queryLog atomic.Bool
	// notifyKick wakes the NOTIFY loop after a serial may have changed.
	notifyKick chan struct{}

	// peers holds the other gslb nodes' probe views (agree.go).
	peers atomic.Pointer[peerViews]
	// localLoads are the regions' edges' loads this node's gossip shows,
	// from the last exchange round (steer.go), for GET /api/monitors.
	localLoads atomic.Pointer[map[string]regionLoad]
	// keyring is the cluster's key (UsePeers): peers sign their reads of
	// the admin API with it, and this node its reads of theirs.
	keyring atomic.Pointer[health.Keyring]
	// background ends with Shutdown: the NOTIFY and peer exchange loops.
	background context.Context
	stop       context.CancelFunc

	// op is the admin plane: logins, audit log, operator state, history
	// (admin.go).
	op *operator.Node
	// saving orders saves of the operator state (admin.go).
	saving sync.Mutex
	// operating orders the operator's changes to the pools (overrides,
	// recovers) with a reload's taking over of their state: one landing on
	// the old pools after the reload copied them was answered 200 and lost.
	operating sync.Mutex

	mu     sync.Mutex
	udp    []*net.UDPConn // one per CPU, sharing the port (SO_REUSEPORT), each with its loop
	tcp    *dns.Server
	addr   string
	admin  adminServer
	closed bool
	served sync.WaitGroup
	// udpServed counts the UDP loops, which Shutdown lets finish their
	// batch before closing their sockets.
	udpServed sync.WaitGroup
	// tcpListener is the TCP listener DNS serves (StopAccepting).
	tcpListener net.Listener
	// tcpReadTimeout and tcpWriteTimeout bound a TCP connection's first
	// read and each write (tcp.go).
	tcpReadTimeout, tcpWriteTimeout time.Duration
	// tcpIdleTimeout bounds a TCP connection's wait between queries
	// (tests hold their connections longer).
	tcpIdleTimeout time.Duration
	// tcpWriteStall is how long a write waits on a client that does not
	// read before the connection may be ended to make room (tcp.go).
	tcpWriteStall time.Duration
	// tcpGuard caps the TCP connections (Reload changes the cap); nil
	// until StartOn.
	tcpGuard atomic.Pointer[acceptguard.Listener]
	// mem is the process's memory (acceptguard.Process; a test's own):
	// while it is low, new TCP connections are refused.
	mem *acceptguard.Memory
	// xfrRefusedLog lets one refused zone transfer an interval be logged
	// (transfer.go): anyone can ask, pipelined on a connection.
	xfrRefusedLog acceptguard.LogLimit
	// transfersOut holds a token per zone transfer being sent, at most
	// maxTransfersOut (transfer.go).
	transfersOut chan struct{}
	// now is time.Now: the UDP loop's clock for signed answers; tests move
	// it with the signers'.
	now func() time.Time
	// resignTick: how often the NOTIFY loop looks whether signed zones'
	// secondaries are due a new serial (transfer.go); resignSeen, the
	// signers' time it last looked at (Unix ns), for tests that move it.
	resignTick time.Duration
	resignSeen atomic.Int64
	// beforePoolsStart, nil but in tests, runs between a reload's swap of
	// the state and its pools' start (Reload).
	beforePoolsStart func()
	// beforeFirstPoolsStart, nil but in tests, runs as Start is about to
	// start the monitors of the state served.
	beforeFirstPoolsStart func()
}

// state is everything a query reads, swapped whole by Reload.
type state struct {
	cfg   configs.GSLB
	zones []*zone // longest origin first
	pools *pools
	// serial is added to every zone's SOA serial: it grows each time a
	// managed answer changes, so secondaries and caches see a new version.
	serial atomic.Uint32
	// rrl is response rate limiting, nil when off.
	rrl *rateLimiter
	// tsig holds the TSIG keys of every zone, by canonical key name.
	tsig map[string]tsigKey
	// adminToken is the operator's bearer token (gslb.admin.token_file);
	// empty: none, the admin port is on loopback.
	adminToken []byte
	// metricsToken reads /metrics only (gslb.admin.metrics_token_file;
	// nil: none).
	metricsToken []byte
	// maxUDP is gslb.max_udp_size: the most a UDP answer may hold, and the
	// buffer size our OPT advertises (budget.go).
	maxUDP int
	// warnings are what cfg is served with but worth knowing (a zone's
	// expiryWarning), said by Check and logged at a start and a reload.
	warnings []error
}

// New loads cfg's zones and pools. Nothing listens until Start.
func New(cfg configs.GSLB, name string, logger *slog.Logger, reg *prometheus.Registry) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Server{name: name, logger: logger.With("component", "gslb"), reg: reg, notifyKick: make(chan struct{}, 1), transfersOut: make(chan struct{}, maxTransfersOut), tcpReadTimeout: tcpReadTimeout, tcpWriteTimeout: tcpWriteTimeout, tcpIdleTimeout: tcpIdleTimeout, tcpWriteStall: tcpWriteStall, mem: acceptguard.Process, now: time.Now, resignTick: resignTick}
	s.background, s.stop = context.WithCancel(context.Background())
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("gslb: register metrics: %w", err)
	}
	s.metrics = m
	st, err := s.build(cfg)
	if err != nil {
		return nil, err
	}
	logWarnings(s.logger, st.warnings)
	s.attach(st)
	s.countNotifies(st)
	s.state.Store(st)
	s.queryLog.Store(cfg.QueryLog)
	s.useOperator(cfg) // restores overrides and latches before any answer
	return s, nil
}

// Check is what New refuses of cfg — its zones loaded as they are served,
// its names checked against them, its pools built — with nothing started:
// `ringlb check` refuses what a start would. Before, the check saw only the
// config's shape, and a zone a start refused (a second SOA, a CNAME beside
// other data, a managed name below a delegation) passed it. warnings are
// what a start would log of cfg and serve anyway.
func Check(cfg configs.GSLB) (warnings []error, err error) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		return nil, err
	}
	s := &Server{logger: slog.New(slog.DiscardHandler), metrics: m, now: time.Now}
	st, err := s.build(cfg)
	if err != nil {
		return nil, err
	}
	return st.warnings, nil
}

// logWarnings logs ws, a state's warnings, as a config's are logged
// (configs.Errors.LogWarnings).
func logWarnings(log *slog.Logger, ws []error) {
	for _, w := range ws {
		if fe := (*configs.FieldError)(nil); errors.As(w, &fe) {
			configs.Errors{fe}.LogWarnings(log)
		} else {
			log.Warn("config: " + w.Error())
		}
	}
}

// placed is err, a problem of cfg's field at path, named where the config
// file has it (configs.GSLB.Place), as configs.Load names its own
// problems; by the path alone in a config not read from a file.
func placed(cfg *configs.GSLB, path string, err error) error {
	if p, ok := cfg.Place(path); ok {
		return p.Problem("%v", err)
	}
	return fmt.Errorf("%s: %w", path, err)
}

func (s *Server) build(cfg configs.GSLB) (*state, error) {
	// A config that skipped configs' defaults (max_udp_size 0) still
	// answers: with 512 bytes, what every client takes.
	st := &state{cfg: cfg, rrl: newRateLimiter(cfg.RateLimit, s.metrics), maxUDP: max(cfg.MaxUDPSize, dns.MinMsgSize)}
	var errs []error
	keys, err := loadTSIGKeys(cfg.Zones)
	if err != nil {
		errs = append(errs, err)
	}
	st.tsig = keys
	// The tokens as the config's check read them (configs.Admin.Token).
	if st.adminToken, err = cfg.Admin.Token(); err != nil {
		errs = append(errs, placed(&cfg, "gslb.admin.token_file", err))
	}
	if st.metricsToken, err = cfg.Admin.ReadMetricsToken(); err != nil {
		errs = append(errs, placed(&cfg, "gslb.admin.metrics_token_file", err))
	}
	for _, zc := range cfg.Zones {
		z, err := loadZone(zc, cfg.RateLimit)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if z.signer != nil {
			z.signer.signed = s.metrics.signed
		}
		if w := z.expiryWarning(); w != nil {
			st.warnings = append(st.warnings, w)
		}
		st.zones = append(st.zones, z)
	}
	// Longest origin first, so a child zone wins over its parent.
	for i := 1; i < len(st.zones); i++ {
		for j := i; j > 0 && dns.CountLabel(st.zones[j].origin) > dns.CountLabel(st.zones[j-1].origin); j-- {
			st.zones[j], st.zones[j-1] = st.zones[j-1], st.zones[j]
		}
	}
	p, err := newPools(cfg, s.logger, s.metrics)
	if err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, st.occludedNames(&cfg)...)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// A managed name exists in its zone's tree, records in the file or
	// not, and the names above it too: else those were NXDOMAIN while it
	// answered, and a wildcard above it answered for it and below it
	// (TestManagedNamesAreInTheirZonesTree).
	for name := range p.names {
		if z := st.zoneFor(name); z != nil {
			z.addName(name)
		}
	}
	managed := func(name string) bool { return p.names[name] != nil }
	for _, z := range st.zones {
		z.prepareAdditional(managed)
	}
	p.agree = s.agreed
	st.pools = p
	return st, nil
}

// attach gives st's pools the callbacks that save the operator state and
// move the zones' serial, once st is (about to be) the server's: a reload
// attaches them after its pools took over the old ones' state
// (pools.inherit), which must neither save nor count from the old state.
func (s *Server) attach(st *state) {
	// The server's now: its gauges are written, from here on and at once.
	st.pools.served.Store(true)
	defer st.pools.rebuild()
	st.pools.onLatch = s.saveState
	st.pools.onChange = func() {
		st.serial.Add(1)
		s.saveSerial()
		s.kickNotify()
	}
}

// Start binds UDP and TCP on cfg.listen (port 0 picks one free port for
// both) and starts the monitors. It returns once both listeners serve.
func (s *Server) Start(ctx context.Context) error {
	cfg := s.state.Load().cfg
	pcs, ln, err := Bind(cfg.Listen, cfg.UDPWorkers)
	if err != nil {
		return err
	}
	return s.StartOn(ctx, pcs, ln)
}

// Bind opens the DNS sockets of gslb.listen: a TCP listener and udp_workers
// UDP sockets sharing its port (SO_REUSEPORT; one per CPU when 0).
//
// With port 0 the TCP listener picks the port: the kernel's choice for a
// listener skips the ports TCP connections hold, while its choice for UDP
// knows only UDP. Beside thousands of client connections, whose source
// ports (connect takes even ones first) stay held in TIME_WAIT for a
// minute, half the UDP choices were taken for TCP, and ten tries in a row
// failed often enough to fail test runs ("bind: address already in use").
// UDP ports are rarely held, and another try takes a new port.
func Bind(listen string, workers int) ([]net.PacketConn, net.Listener, error) {
	if workers <= 0 || udpSockets() == 1 {
		workers = udpSockets()
	}
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		ln, lerr := net.Listen("tcp", listen)
		if lerr != nil {
			return nil, nil, fmt.Errorf("gslb listen tcp %s: %w", listen, lerr)
		}
		var pcs []net.PacketConn
		pcs, err = listenUDP(ln.Addr().String(), workers)
		if err == nil {
			return pcs, ln, nil
		}
		ln.Close()
		if !strings.HasSuffix(listen, ":0") {
			return nil, nil, err
		}
	}
	return nil, nil, err
}

// StartOn serves DNS on sockets from Bind, or inherited from the process
// this one replaces (a hitless upgrade: the same sockets, so no query finds
// the port closed), and starts the monitors. pcs must be *net.UDPConn.
func (s *Server) StartOn(ctx context.Context, pcs []net.PacketConn, ln net.Listener) error {
	if len(pcs) == 0 || ln == nil {
		return errors.New("gslb: no sockets to serve on")
	}
	// miekg/dns retries a temporary accept error (EMFILE) at once, a busy
	// loop on a whole core while descriptors are short, and returns on any
	// other: the guard backs off instead and never ends serving.
	// It also caps the connections (gslb.max_tcp_connections) and one
	// client's share of them (max_tcp_connections_per_ip): beyond either a
	// new one is closed at once, without a word — DNS has no refusal to
	// send before a query (tcp.go) — but at the cap one within its client's
	// share takes the place of the connection that has waited the longest
	// for its next query, if any does (EndWaiting): shares bound what one
	// address holds, and many addresses' waiting connections held every
	// slot. And while the process is low on memory it takes no new one
	// (closed so too): a connection holds a goroutine and its buffers
	// until its deadlines, where a UDP answer holds nothing past its send:
	// UDP goes on answering (a resolver sent to TCP by a truncated answer
	// asks another of the zone's servers).
	cfg := s.state.Load().cfg
	guard := acceptguard.Wrap(ln, acceptguard.Config{Name: "gslb tcp", Logger: s.logger, Errors: s.metrics.acceptErrors,
		MaxConns: cfg.MaxTCPConnections, Refused: s.metrics.tcpRefused,
		MaxConnsPerIP: cfg.MaxTCPConnectionsPerIP, RefusedPerIP: s.metrics.tcpRefusedPerIP,
		EndWaiting: true, EndedWaiting: s.metrics.tcpEndedWaiting, EndStalledWrites: s.tcpWriteStall,
		Memory: s.mem, RefusedMemory: s.metrics.rejected.WithLabelValues(acceptguard.ReasonMemory),
		// A stop (Shutdown, an upgrade's hand-off) ends connections with
		// pipelined queries unread: they linger, so that the answers
		// written reach the client and its kernel does not drop them at a
		// reset (TestTCPStopDeliversTheAnswersWritten).
		LingerAtStop: true})
	s.tcpGuard.Store(guard)
	ln = guard
	served := writeDeadlineListener{Listener: ln, timeout: s.tcpWriteTimeout}
	handler := dns.HandlerFunc(s.serveDNS)
	// miekg/dns answers FORMERR itself, without the handler, to what does
	// not unpack: counted here.
	accept := dns.MsgAcceptFunc(acceptQuery)
	invalid := dns.MsgInvalidFunc(func(m []byte, _ error) {
		if len(m) >= 12 { // a header, so accepted and answered; shorter gets nothing
			s.metrics.query(0, dns.RcodeFormatError)
		}
	})
	if len(pcs) > 1 {
		// Evenly over the loops; failing that (a kernel without classic BPF
		// for SO_REUSEPORT), by the kernel's hash of the client's address.
		if err := spreadQueries(pcs[0], len(pcs)); err != nil {
			s.logger.Warn("UDP queries go to the sockets by a hash of the client's address, not evenly", "sockets", len(pcs), "err", err)
		}
	}
	tcpUp := make(chan struct{})
	ups := []chan struct{}{tcpUp}
	s.mu.Lock()
	for _, pc := range pcs {
		s.udp = append(s.udp, pc.(*net.UDPConn))
	}
	s.tcpListener = ln
	s.tcp = &dns.Server{Listener: served, Handler: handler, NotifyStartedFunc: func() { close(tcpUp) }, MsgAcceptFunc: accept, MsgInvalidFunc: invalid, TsigProvider: tsigProvider{s},
		ReadTimeout: s.tcpReadTimeout, IdleTimeout: func() time.Duration { return s.tcpIdleTimeout }, MaxTCPQueries: tcpMaxQueries,
		DecorateReader: func(r dns.Reader) dns.Reader { return queryReader{r} }}
	s.addr = pcs[0].LocalAddr().String()
	udp := s.udp
	s.mu.Unlock()
	errc := make(chan error, 1)
	s.served.Add(1)
	go func() {
		defer s.served.Done()
		if err := s.tcp.ActivateAndServe(); err != nil {
			errc <- err
		}
	}()
	for _, conn := range udp {
		s.served.Add(1)
		s.udpServed.Add(1)
		go func() {
			defer s.served.Done()
			defer s.udpServed.Done()
			if err := s.serveUDPBatched(conn); err != nil && !s.stopping(err) { // returns when Shutdown stops it
				s.logger.Error("UDP loop ended", "err", err)
			}
		}()
	}
	for _, up := range ups {
		select {
		case <-up:
		case err := <-errc:
			return fmt.Errorf("gslb serve: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.beforeFirstPoolsStart != nil {
		s.beforeFirstPoolsStart()
	}
	// Under mu, as a reload starts its pools: one that ran since the
	// listeners came up started the state it served already, and the
	// state it replaced was stopped before it started.
	s.mu.Lock()
	if !s.closed {
		s.state.Load().pools.start()
	}
	s.mu.Unlock()
	s.served.Add(1)
	go func() {
		defer s.served.Done()
		s.notifyLoop(s.background)
	}()
	s.kickNotify() // secondaries may have missed changes while we were down
	s.logger.Info("gslb serving", "addr", s.addr, "zones", len(s.state.Load().zones))
	return nil
}

// Addr is the address DNS is served on (UDP and TCP), once started.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Reload swaps in a new configuration without dropping a query: queries in
// flight finish on the old state, the next ones read the new. Monitor states
// carry over for members that stay. On error nothing changes.
func (s *Server) Reload(cfg configs.GSLB) error {
	old := s.state.Load()
	if err := errors.Join(
		configs.RestartNeeded("gslb.listen", old.cfg.Listen, cfg.Listen),
		configs.RestartNeeded("gslb.udp_workers", old.cfg.UDPWorkers, cfg.UDPWorkers),
		old.cfg.Admin.RestartChanges("gslb", cfg.Admin),
	); err != nil {
		return fmt.Errorf("reload refused, nothing changed: %w", err)
	}
	applyUsers, usersErr := s.op.ReloadUsers("gslb", cfg.Admin)
	st, err := s.build(cfg)
	if err := errors.Join(err, usersErr); err != nil {
		return fmt.Errorf("reload refused, nothing changed: %w", err) // st's pools never started
	}
	logWarnings(s.logger, st.warnings)
	applyUsers()
	// From taking over the old pools' state to serving the new ones, no
	// operator change lands on the old pools: it would be lost.
	s.operating.Lock()
	old = s.state.Load()
	changed := st.pools.inherit(old.pools)
	s.attach(st)
	if g := s.tcpGuard.Load(); g != nil {
		g.SetMax(cfg.MaxTCPConnections) // connections open stay open
		g.SetMaxPerIP(cfg.MaxTCPConnectionsPerIP)
	}
	st.rrl = st.rrl.carryOver(old.rrl)
	for _, z := range st.zones {
		// Same keys and timings, same signatures: a SIGHUP does not make
		// every RRset be signed again.
		for _, oz := range old.zones {
			if z.signer != nil && oz.origin == z.origin && oz.signer.id() == z.signer.id() {
				z.signer.cache = oz.signer.cache
			}
		}
	}
	bump := reloadBump(old, st)
	if changed {
		// The answers changed without the names' config (the monitors',
		// say): before, the zone changed under the same serial.
		bump = 1
	}
	offset := reloadOffset(old, st, bump)
	st.serial.Store(offset)
	s.countNotifies(st)
	s.state.Store(st)
	s.operating.Unlock()
	// What it took over, without the overrides and latches of members and
	// regions it removed: saved in memory only, they came back with a
	// restart (TestReloadSavesTheStateItTookOver).
	s.saveState()
	if offset != old.serial.Load() {
		s.saveSerial()
	}
	// Started under mu, against Shutdown: pools started after it stopped
	// the server's would probe until the process exits, owned by nobody (a
	// PUT /api/config answered while the node stops). Likewise once
	// another reload replaced st: it stopped the pools it found, st's,
	// before they started.
	if s.beforePoolsStart != nil {
		s.beforePoolsStart()
	}
	s.mu.Lock()
	if s.tcp != nil && !s.closed && s.state.Load() == st {
		st.pools.start()
	}
	s.mu.Unlock()
	old.pools.stop()
	// The series old wrote that the pools served now do not: another
	// reload may have replaced st since, bringing back what st dropped.
	s.operating.Lock()
	s.state.Load().pools.forget(old.pools)
	s.operating.Unlock()
	s.queryLog.Store(cfg.QueryLog)
	s.kickNotify()
	s.logger.Info("gslb configuration reloaded", "zones", len(st.zones), "names", len(st.pools.names))
	return nil
}

// Shutdown stops serving (bounded by ctx) and stops the monitors.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	udp, tcp := s.udp, s.tcp
	s.mu.Unlock()
	s.stop()
	var errs []error
	// Each loop answers the batch it has read before it reads again: a
	// read deadline in the past stops it there, and only then is the
	// socket closed, so no query read is left unanswered. (After a hand-off
	// the new process holds the same sockets and reads what is left.)
	for _, c := range udp {
		_ = c.SetReadDeadline(time.Unix(1, 0))
	}
	udpDone := make(chan struct{})
	go func() { s.udpServed.Wait(); close(udpDone) }()
	select {
	case <-udpDone:
	case <-ctx.Done():
	}
	for _, c := range udp {
		c.Close()
	}
	if tcp != nil {
		if err := tcp.ShutdownContext(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	s.state.Load().pools.stop()
	errs = append(errs, s.admin.shutdown(ctx))
	s.op.Close()
	done := make(chan struct{})
	go func() { s.served.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}

// StopAccepting closes the TCP listener (this process's copy of it) and
// nothing else: connections already accepted are answered on. Before a
// Shutdown that hands the sockets to a new process, it lets the queries on
// connections just accepted here be read and answered first (Shutdown
// unblocks every connection's read at once).
func (s *Server) StopAccepting() {
	s.mu.Lock()
	ln := s.tcpListener
	s.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
}

// stopping reports whether err ended a UDP loop because Shutdown stopped it.
func (s *Server) stopping(err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed && (errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded))
}

// acceptQuery decides from the header alone: responses get no answer at
// all, so the server cannot be used to reflect traffic or loop with another
// server. Everything else is unpacked (bounded by the message size): other
// opcodes so that their NOTIMP echoes the question (screen); queries with
// no question or several, or more records than a query has (sectionsFit),
// so that their FORMERR is answerVia's: through finish, with our OPT when
// the query has one (RFC 6891 7) and its TSIG when one verified —
// miekg/dns's own FORMERR (TCP) and the UDP loop's header check carried
// neither.
func acceptQuery(h dns.Header) dns.MsgAcceptAction {
	const qrBit = 1 << 15
	if h.Bits&qrBit != 0 {
		return dns.MsgIgnore
	}
	if op := int(h.Bits>>11) & 0xF; op != dns.OpcodeQuery {
		return dns.MsgAccept
	}
	return dns.MsgAccept
}

// sectionsFit reports whether a query carries no more records than a query
// has: one answer record at most, one authority record (the SOA an IXFR
// request carries, RFC 1995) and two additional (its OPT and TSIG). One
// that carries more gets FORMERR (answerVia), through finish like the
// other FORMERRs: with our OPT when its own passed screen (RFC 6891 7),
// signed when its TSIG verified. Refused on the header alone before, it
// got the header and question only, as neither NSD nor Knot answers.
func sectionsFit(r *dns.Msg) bool {
	return len(r.Answer) <= 1 && len(r.Ns) <= 1 && len(r.Extra) <= 2
}

// rawFaults reads the raw message msg once for what miekg/dns lets pass.
//
// ecsAt is the offset of the FAMILY field of a malformed EDNS Client
// Subnet option in msg; 0: none. Malformed (RFC 7871 6, 7.1.2): an address of other than ceil(SOURCE PREFIX-LENGTH / 8)
// bytes, or with a bit set beyond the prefix, a family but 1 (IPv4) and 2
// (IPv6) — or 0 with a prefix of 0 and no address, as dig once sent and
// BIND takes —, a prefix longer than its family's address, an option too
// short for its fixed part. miekg/dns
// refuses the last three when it unpacks, but pads or cuts an address of
// the wrong length to its family's size, and keeps no trace of it: so the
// raw message is read, as the UDP loop and the TCP reader have it.
//
// short is whether msg ends before the questions and records its header counts —
// a question cut before its type or class, a record counted and not
// sent. Such a message does not parse (RFC 1035 4.1: the counts are the
// entries of each section), and NSD answers it FORMERR; miekg/dns reads
// what is there and stops, so it was answered as a whole query — a
// question without its class as one of class 0, a missing record as none.
// A message without a header is neither: not one to answer at all.
// Allocates nothing.
func rawFaults(msg []byte) (ecsAt int, short bool) {
	if len(msg) < 12 {
		return 0, false
	}
	off := questionsEnd(msg)
	if off < 0 {
		return 0, true
	}
	rrs := int(binary.BigEndian.Uint16(msg[6:])) + int(binary.BigEndian.Uint16(msg[8:])) + int(binary.BigEndian.Uint16(msg[10:]))
	found, read := 0, 0
	eachRecord(msg, off, rrs, func(at int) bool {
		read++
		if binary.BigEndian.Uint16(msg[at:]) != dns.TypeOPT {
			return true
		}
		for o, end := at+10, at+10+int(binary.BigEndian.Uint16(msg[at+8:])); o+4 <= end; {
			code, n := binary.BigEndian.Uint16(msg[o:]), int(binary.BigEndian.Uint16(msg[o+2:]))
			o += 4
			if o+n > end {
				break
			}
			if code == dns.EDNS0SUBNET && n >= 4 {
				family, source, addr := binary.BigEndian.Uint16(msg[o:]), int(msg[o+2]), n-4
				bits := 0
				switch family {
				case 1:
					bits = 32
				case 2:
					bits = 128
				}
				// The address's last byte holds the bits beyond the prefix
				// (RFC 7871 6: zero; a server SHOULD say FORMERR).
				beyond := addr > 0 && addr == (source+7)/8 && msg[o+4+addr-1]&byte(0xff>>(source-8*(addr-1))) != 0
				if (bits == 0 && (family != 0 || source != 0 || addr != 0)) || source > bits || addr != (source+7)/8 || beyond {
					found = o
					return false
				}
			}
			o += n
		}
		return true
	})
	// Stopped at a bad option, the walk did not reach the rest: the
	// message is refused for the option.
	return found, found == 0 && read < rrs
}

// questionsEnd is the offset past the questions of the message msg, as
// many as its header counts; -1 when msg ends before them (or has no
// header).
func questionsEnd(msg []byte) int {
	if len(msg) < 12 {
		return -1
	}
	off := 12
	for range int(binary.BigEndian.Uint16(msg[4:])) {
		if off = skipName(msg, off); off < 0 || off+4 > len(msg) {
			return -1
		}
		off += 4
	}
	return off
}

// skipName is the offset past the name at off in msg (compressed or not),
// or -1 when it runs past msg or uses a reserved label type.
func skipName(msg []byte, off int) int {
	for off < len(msg) {
		l := int(msg[off])
		switch {
		case l&0xC0 == 0xC0:
			if off+2 > len(msg) {
				return -1
			}
			return off + 2
		case l&0xC0 != 0:
			return -1
		case l == 0:
			return off + 1
		}
		off += 1 + l
	}
	return -1
}

// eachRecord calls fn with the offset of the TYPE field of each of the n
// resource records in msg from off, each known to fit in msg whole, until
// fn returns false or a record does not fit (its name unreadable, its
// RDATA past the end). Allocates nothing.
func eachRecord(msg []byte, off, n int, fn func(at int) bool) {
	for range n {
		if off = skipName(msg, off); off < 0 || off+10 > len(msg) {
			return
		}
		next := off + 10 + int(binary.BigEndian.Uint16(msg[off+8:]))
		if next > len(msg) || !fn(off) {
			return
		}
		off = next
	}
}

// serveDNS answers one query over TCP (UDP has its own loop, fastpath.go).
// Authoritative only: RD is ignored, RA never set.
func (s *Server) serveDNS(w dns.ResponseWriter, r *dns.Msg) {
	st := s.state.Load()
	tcp := w.LocalAddr().Network() == "tcp"
	// miekg/dns verified r's TSIG, if any, with tsigProvider (tsig.go).
	status := w.TsigStatus()
	if tcp && !r.Response && len(r.Question) == 1 && sectionsFit(r) && (r.Question[0].Qtype == dns.TypeAXFR || r.Question[0].Qtype == dns.TypeIXFR) {
		if m := s.screen(st, r, true, status); m != nil {
			s.count(st, r, m, w.RemoteAddr().String())
			s.writeReply(w, m, r)
			return
		}
		s.serveTransfer(st, w, r)
		return
	}
	m := s.answer(st, r, w.RemoteAddr(), tcp, status)
	if m == nil {
		return // not a query we answer at all (a response, garbage)
	}
	// Counted before it is written: a client holding its answer finds it
	// in the metrics.
	s.count(st, r, m, w.RemoteAddr().String())
	s.writeReply(w, m, r)
}

// count records an answered query in the metrics and, when on, the query log.
func (s *Server) count(st *state, r, m *dns.Msg, client string) {
	var qtype uint16
	name := ""
	if len(r.Question) == 1 {
		qtype, name = r.Question[0].Qtype, r.Question[0].Name
	}
	s.metrics.query(qtype, m.Rcode)
	if s.queryLog.Load() {
		s.logger.Info("query", "client", client, "name", name, "type", typeLabel(qtype), "rcode", rcodeLabel(m.Rcode), "answers", len(m.Answer))
	}
}

// typeLabel keeps the qtype label of the queries metric to known types.
func typeLabel(t uint16) string {
	if s, ok := dns.TypeToString[t]; ok {
		return s
	}
	return "other"
}

// answer builds the response to r from st; nil means send nothing.
// tsigStatus is the verification of r's TSIG (nil when it has none).
func (s *Server) answer(st *state, r *dns.Msg, remote net.Addr, tcp bool, tsigStatus error) *dns.Msg {
	m, _ := s.answerVia(st, r, remote, tcp, tsigStatus, nil)
	return m
}

// answerVia is answer, and the traffic-managed name the answer was made
// for ("" when none): the name asked, or the one its CNAME chain led to.
// Such an answer depends on who asks (region, steering, max_answers).
// leftOut, when not nil, is set when the answer left out additional
// records the signature budget had no signatures for: the next answer may
// carry them, so this one is not to be cached.
func (s *Server) answerVia(st *state, r *dns.Msg, remote net.Addr, tcp bool, tsigStatus error, leftOut *bool) (_ *dns.Msg, managed string) {
	if r.Response {
		return nil, "" // never answer a response: reflection loops
	}
	if m := s.screen(st, r, tcp, tsigStatus); m != nil {
		return m, ""
	}
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	m.RecursionAvailable = false
	// The query's Client Subnet option: echoed in every answer from here
	// on, refusals too (RFC 7871 7.2.1: whether or not it was needed).
	ecsIn := queryECS(r)
	finish := func(ecs *dns.EDNS0_SUBNET) *dns.Msg {
		return s.finish(st, m, r, tcp, tsigStatus, ecs)
	}
	if len(r.Question) != 1 || !sectionsFit(r) {
		// No question, or several, or more records than a query has
		// (acceptQuery lets them through): its OPT and TSIG passed screen,
		// so the FORMERR carries our OPT (RFC 6891 7) and is signed as any
		// answer.
		m.SetRcode(r, dns.RcodeFormatError)
		m.Authoritative = false
		return finish(nil), ""
	}
	q := r.Question[0]
	qname := strings.ToLower(q.Name)
	// A refusal claims no authority (AA clear), as NSD and Knot answer
	// what they do not serve.
	if !servedClass(q.Qclass) {
		m.Authoritative = false
		m.SetRcode(r, dns.RcodeRefused)
		return finish(ecsEcho(ecsIn)), ""
	}
	if !tcp && tcpOnly(q.Qtype) {
		// Carrying no ECS, as the other NOTIMPs.
		m.Authoritative = false
		m.SetRcode(r, dns.RcodeNotImplemented)
		return finish(nil), ""
	}
	z := st.zoneAnswering(qname, q.Qtype)
	if z == nil {
		m.Authoritative = false
		m.SetRcode(r, dns.RcodeRefused)
		return finish(ecsEcho(ecsIn)), ""
	}
	if q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR {
		m.Authoritative = false
		m.SetRcode(r, dns.RcodeRefused) // transfers are served by serveTransfer over TCP
		return finish(ecsEcho(ecsIn)), ""
	}
	if z.signer != nil && q.Qtype == dns.TypeRRSIG {
		// An online signer holds no RRSIG RRset: it signs what an answer
		// carries as it answers. A NODATA could not be proved — the NSEC of
		// a signed name lists RRSIG, contradicting it, and validators call
		// it bogus — and every set's signatures would cost a signature per
		// RRset for one small query. Refused, with DO or without, as Knot's
		// online signing refuses it.
		m.Authoritative = false
		m.SetRcode(r, dns.RcodeRefused)
		return finish(ecsEcho(ecsIn)), ""
	}
	if z.signer != nil && q.Qtype == dns.TypeNXNAME {
		// A meta-type, only ever in a compact answer's NSEC (RFC 9824 3.5).
		m.SetRcode(r, dns.RcodeFormatError)
		return finish(nil), ""
	}
	// sg signs the answer: nil for an unsigned zone or a query without DO,
	// whose answer is then exactly what it was before DNSSEC.
	sg := dnssecFor(z, r)
	var ref *referral // a referral's NS RRset and glue, added unsigned
	finish = func(ecs *dns.EDNS0_SUBNET) *dns.Msg {
		if sg != nil && m.Rcode != dns.RcodeServerFailure {
			from := spendUDP
			if tcp {
				from = spendTCP
			}
			// The share is the connection's source's, never ECS's: a
			// client cannot spend another's by naming it.
			extraLeftOut, err := sg.signMsg(m, from, addrOf(remote))
			if extraLeftOut && leftOut != nil {
				*leftOut = true
			}
			switch {
			case errors.Is(err, errSignBudget):
				// Over UDP, which anyone can spoof, new signatures are
				// budgeted: beyond it the resolver is told to retry over
				// TCP (TC, nothing else), where it is answered signed.
				m.Answer, m.Ns, m.Extra = nil, nil, nil
				m.Rcode, m.Truncated = dns.RcodeSuccess, true
				s.metrics.signed("deferred")
			case errors.Is(err, errSignBudgetTCP):
				// Over TCP the answer waited its turn and did not get
				// it: the client asks for more than the budget.
				m.Answer, m.Ns, m.Extra = nil, nil, nil
				m.Rcode = dns.RcodeServerFailure
				s.metrics.signed("refused")
			case errors.Is(err, errSignShareTCP):
				// Its network has spent its share: the others keep theirs.
				m.Answer, m.Ns, m.Extra = nil, nil, nil
				m.Rcode = dns.RcodeServerFailure
				s.metrics.signed("client_share")
			case err != nil:
				// An unsigned answer would be bogus to every validator.
				s.logger.Warn("cannot sign an answer", "zone", z.origin, "err", err)
				m.Answer, m.Ns, m.Extra = nil, nil, nil
				m.Rcode = dns.RcodeServerFailure
			}
		}
		if ref == nil || m.Rcode != dns.RcodeSuccess || m.Truncated {
			return s.finish(st, m, r, tcp, tsigStatus, ecs)
		}
		ref.put(m)
		m = s.finish(st, m, r, tcp, tsigStatus, ecs)
		if !tcp && ref.lacks(m) {
			m.Truncated = true
		}
		return m
	}

	// Client address for region selection: EDNS Client Subnet (ecsIn),
	// else source.
	client := addrOf(remote)
	// ecsAddr is the ECS address as written, in its family: an IPv4-mapped
	// one in family 2 is answered as IPv4 (client), its scope in IPv6.
	var ecsAddr netip.Addr
	// A source prefix of 0 carries no address (its client opted out, RFC
	// 7871 7.1.2): the querier's own answer, scope 0.
	if ecsIn != nil && ecsIn.SourceNetmask > 0 {
		if a, ok := netip.AddrFromSlice(ecsIn.Address); ok {
			if ecsIn.Family == 1 {
				a = a.Unmap() // miekg/dns keeps family 1 as a mapped address
			}
			// The bits beyond the source prefix are not the client's (RFC
			// 7871 6: zero), and a resolver keys what it caches on the
			// prefix alone: an answer chosen by them would be kept for
			// every client of the prefix.
			if p, err := a.Prefix(int(ecsIn.SourceNetmask)); err == nil {
				a = p.Addr()
			}
			ecsAddr, client = a, a.Unmap()
		}
	}

	var ecsOut *dns.EDNS0_SUBNET
	name := qname
	for hops := 0; ; hops++ {
		// owner is the name as asked, for the proofs of a negative answer.
		owner := name
		if hops == 0 {
			owner = q.Name
		}
		if nv := st.pools.view.Load().names[name]; nv != nil {
			// Its records owned by the name the chain reached (the name
			// asked, as asked, at the chain's start).
			mq := q
			mq.Name = owner
			region, scope := s.answerManaged(st, m, z, mq, name, nv, client, sg)
			if ecsIn != nil {
				scope = nv.ecsScope(client, region, scope)
				if ecsIn.Family == 2 && ecsAddr.Is6() {
					scope = ecsScopeIPv6(ecsAddr, scope)
				}
				// A /0 source names no client; and a NODATA for a type the
				// name has in no region is every client's (RFC 7871 7.4:
				// a negative answer's scope is 0).
				if ecsIn.SourceNetmask == 0 || (m.Rcode == dns.RcodeSuccess && !steeredType(q.Qtype)) {
					scope = 0
				}
				ecsOut = &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: ecsIn.Family, SourceNetmask: ecsIn.SourceNetmask,
					SourceScope: uint8(min(scope, 255)), Address: ecsIn.Address}
			}
			return finish(ecsOut), name
		}
		if c := z.cut(name); c != "" && (c != name || q.Qtype != dns.TypeDS) {
			// The child's name: a referral (delegation.go). After a CNAME
			// the answer holds the chain, authoritatively, and the
			// referral follows it, as NSD answers.
			if hops == 0 {
				m.Authoritative = false
			}
			ref = st.refer(m, z, c, sg)
			return finish(ecsEcho(ecsIn)), ""
		}
		if d := z.dnameAbove(name); d != nil {
			// Below a DNAME: the DNAME and the CNAME it makes for name,
			// then the chase goes on as for a CNAME (dname.go).
			if hops >= maxCNAMEChain {
				return finish(ecsEcho(ecsIn)), ""
			}
			if !inAnswer(m.Answer, d) {
				m.Answer = append(m.Answer, d)
			}
			target, ok := dnameTarget(d, name)
			if !ok {
				// Too long a name to make (RFC 6672 2.2): the DNAME alone.
				m.Rcode = dns.RcodeYXDomain
				return finish(ecsEcho(ecsIn)), ""
			}
			m.Answer = append(m.Answer, synthesise(d, name, target))
			if q.Qtype == dns.TypeCNAME || !dns.IsSubDomain(z.origin, target) || cnameOf(m.Answer[:len(m.Answer)-1], target) {
				// The CNAME asked, a target out of the zone (the resolver
				// follows it), or a loop, as for a CNAME.
				return finish(ecsEcho(ecsIn)), ""
			}
			name = target
			continue
		}
		byType, exists := z.lookup(name)
		if !exists && sg != nil && q.Qtype == dns.TypeNSEC {
			st.nsecAsked(m, z, owner, []uint16{dns.TypeNXNAME})
			return finish(ecsEcho(ecsIn)), ""
		}
		if !exists {
			// NXDOMAIN at the end of a CNAME chain too: the rcode is the
			// last name's (RFC 2308 2.1, RFC 6604 3); a chain to a name that
			// does not exist was answered NOERROR, a NODATA for a name that
			// does exist, where NSD answers NXDOMAIN.
			if sg == nil || compactOK(r) {
				// Signed, a name that does not exist is NOERROR with its
				// NXNAME proof, unless the client says it reads those.
				m.SetRcode(r, dns.RcodeNameError)
			}
			st.deny(m, z, owner, nil, false, sg)
			return finish(ecsEcho(ecsIn)), ""
		}
		if z.signer != nil && name == z.origin {
			if keys := z.signer.apexSet(q.Qtype); keys != nil {
				m.Answer = append(m.Answer, keys...)
				return finish(ecsEcho(ecsIn)), ""
			}
		}
		if q.Qtype == dns.TypeANY {
			// RFC 8482: a minimal answer instead of every record (after a
			// DNAME, at its target, as NSD and Knot answer ANY there). The
			// synthesised HINFO only where no CNAME is (4.2): a CNAME and
			// other data at one owner is what RFC 1034 3.6.2 forbids. A
			// CNAME's owner gets its CNAME RRset, not followed (one RRset
			// of the name, 4.1), as NSD and Knot answer.
			if cname := byType[dns.TypeCNAME]; len(cname) > 0 {
				m.Answer = append(m.Answer, st.owned(cname, name, z)...)
				return finish(ecsEcho(ecsIn)), ""
			}
			m.Answer = append(m.Answer, &dns.HINFO{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeHINFO, Class: dns.ClassINET, Ttl: 3600}, Cpu: "RFC8482"})
			return finish(ecsEcho(ecsIn)), ""
		}
		if rrs := byType[q.Qtype]; len(rrs) > 0 {
			m.Answer = append(m.Answer, st.owned(rrs, name, z)...)
			z.addAdditional(m, rrs)
			return finish(ecsEcho(ecsIn)), ""
		}
		if sg != nil && q.Qtype == dns.TypeNSEC {
			// Before a CNAME is followed: the owner's own NSEC.
			st.nsecAsked(m, z, owner, z.typesAt(name, byType))
			return finish(ecsEcho(ecsIn)), ""
		}
		if cname := byType[dns.TypeCNAME]; len(cname) > 0 && hops < maxCNAMEChain {
			m.Answer = append(m.Answer, st.owned(cname, name, z)...)
			target := strings.ToLower(cname[0].(*dns.CNAME).Target)
			if !dns.IsSubDomain(z.origin, target) {
				return finish(ecsEcho(ecsIn)), "" // out of zone: the resolver follows it
			}
			if cnameOf(m.Answer, target) {
				// A loop: its CNAME is in the answer already. Following it
				// repeated the loop's records up to maxCNAMEChain and added
				// a NODATA's SOA; the loop's records once, as NSD answers
				// (RFC 1034 3.6.2: loops are detected, and RFC 2181 5: an
				// RRset holds no record twice).
				return finish(ecsEcho(ecsIn)), ""
			}
			name = target
			continue
		}
		// NODATA: the name exists without this type.
		st.deny(m, z, owner, z.typesAt(name, byType), true, sg)
		return finish(ecsEcho(ecsIn)), ""
	}
}

// tcpOnly says whether a question of type qtype over UDP is NOTIMP: AXFR
// is a TCP exchange (RFC 5936 4.2), answered NOTIMP whatever the zone, as
// NSD and Knot answer it (it was REFUSED); of a class not served, REFUSED
// first, as both answer class NONE. IXFR over UDP is a
// transfer RFC 1995 allows, not served here: REFUSED, as NSD. Queries
// (answerVia) and RRL's slips (slipVerdict) alike.
func tcpOnly(qtype uint16) bool {
	return qtype == dns.TypeAXFR
}

// servedClass says whether a question of class c is answered: every zone
// is IN (the loader refuses records of other classes), and QCLASS * (RFC
// 1035 3.2.5) is answered as IN, as NSD and Knot answer it; any other class
// is REFUSED — queries (answerVia), transfers (serveTransfer) and RRL's
// slips (slipVerdict) alike.
func servedClass(c uint16) bool {
	return c == dns.ClassINET || c == dns.ClassANY
}

// screen answers what is refused before the question is looked at, and
// returns nil for the rest. In order: a message whose EDNS or TSIG records
// are misplaced or repeated gets FORMERR (RFC 6891 6.1.1, RFC 8945 5.1),
// with neither OPT nor TSIG since neither can be trusted; a TSIG that did
// not verify gets NOTAUTH with the TSIG error (RFC 8945 5.2), so a bad
// signature is never answered; an EDNS version above 0 gets BADVERS (RFC
// 6891 6.1.3); any opcode but QUERY gets NOTIMP (RFC 1035 4.1.1, RFC 6895
// 2.2: we take no UPDATE, and, as the primary, no NOTIFY). The ID, opcode
// and question are echoed in each.
func (s *Server) screen(st *state, r *dns.Msg, tcp bool, tsigStatus error) *dns.Msg {
	if why := malformed(r); why != "" {
		s.logger.Debug("query refused", "rcode", "FORMERR", "why", why)
		return replyTo(r, dns.RcodeFormatError)
	}
	var rcode int
	switch opt := r.IsEdns0(); {
	case r.IsTsig() != nil && tsigStatus != nil:
		rcode = dns.RcodeNotAuth
		e := tsigErrorName(tsigError(tsigStatus))
		s.metrics.tsigErrors.WithLabelValues(e).Inc()
		s.logger.Debug("query refused", "rcode", "NOTAUTH", "tsig_error", e, "key", r.IsTsig().Hdr.Name)
	case opt != nil && opt.Version() != 0:
		rcode = dns.RcodeBadVers
	case r.Opcode != dns.OpcodeQuery:
		rcode = dns.RcodeNotImplemented
	default:
		return nil
	}
	m := new(dns.Msg).SetRcode(r, rcode)
	// RD is copied into the response (RFC 1035 4.1.1), whatever the opcode:
	// miekg/dns's SetReply copies it for QUERY only, and NOTIMP answers
	// the others (NSD copies it).
	m.RecursionDesired = r.RecursionDesired
	return s.finish(st, m, r, tcp, tsigStatus, nil)
}

// malformed says what makes r's OPT or TSIG records unreadable, "" when
// nothing does: an OPT or TSIG outside the additional section, two OPTs, an
// OPT not owned by the root, a TSIG other than the last record or without
// its RDATA.
func malformed(r *dns.Msg) string {
	for _, sec := range [][]dns.RR{r.Answer, r.Ns} {
		for _, rr := range sec {
			if t := rr.Header().Rrtype; t == dns.TypeOPT || t == dns.TypeTSIG {
				return dns.TypeToString[t] + " outside the additional section"
			}
		}
	}
	opts := 0
	for i, rr := range r.Extra {
		switch h := rr.Header(); h.Rrtype {
		case dns.TypeOPT:
			opts++
			if opts > 1 {
				return "more than one OPT"
			}
			if h.Name != "." {
				return "OPT owned by " + h.Name + ", not the root"
			}
		case dns.TypeTSIG:
			if i != len(r.Extra)-1 {
				return "TSIG not the last record"
			}
			// miekg/dns unpacks a TSIG with no RDATA (RDLENGTH 0) as
			// one with no algorithm: nothing to verify, nothing to echo.
			if rr.(*dns.TSIG).Algorithm == "" {
				return "TSIG without RDATA"
			}
		}
	}
	return ""
}

// replyTo is the head of an answer to r with rcode that does not go through
// finish: the ID, opcode and question echoed, RD copied (SetRcode), CD clear
// as in every answer (finish).
func replyTo(r *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg).SetRcode(r, rcode)
	m.CheckingDisabled = false
	return m
}

// finish completes m, the answer to r: our OPT when r has one (advertising
// max_udp_size, carrying ecs), the TSIG when r has one (signReply), and the
// size budget of the transport (fit: TCP 64 KiB, UDP udpLimit).
func (s *Server) finish(st *state, m, r *dns.Msg, tcp bool, tsigStatus error, ecs *dns.EDNS0_SUBNET) *dns.Msg {
	// CD is a resolver's: an authoritative server clears it (RFC 4035
	// 3.1.6), as NSD and Knot do; miekg/dns's SetReply copies it.
	m.CheckingDisabled = false
	opt := r.IsEdns0()
	var clientSize uint16
	if opt != nil {
		clientSize = opt.UDPSize()
	}
	size := dns.MaxMsgSize
	if !tcp {
		size = st.udpLimit(opt != nil, clientSize)
	}
	if o := st.replyOPT(opt, ecs); o != nil {
		m.Extra = append(m.Extra, o)
	}
	s.signReply(m, r, tsigStatus)
	fit(m, size)
	return m
}

// replyOPT is our OPT in an answer to a query whose OPT is opt, carrying
// ecs; nil when the query has none. Every answer to a query with an OPT
// carries one (RFC 6891 7: else a resolver takes the server for one
// without EDNS), those finish completes and a zone transfer's messages
// (transfer.go) alike: it advertises max_udp_size.
func (st *state) replyOPT(opt *dns.OPT, ecs *dns.EDNS0_SUBNET) *dns.OPT {
	if opt == nil {
		return nil
	}
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.SetUDPSize(uint16(st.maxUDP))
	// DO is copied into the answer (RFC 3225 3); CO says we read it
	// (RFC 9824 4). Neither is set for a query without DO.
	if opt.Do() {
		o.SetDo()
		o.SetCo(opt.Co())
	}
	if ecs != nil {
		o.Option = append(o.Option, ecs)
	}
	return o
}

// queryECS is r's Client Subnet option, nil when it has none.
func queryECS(r *dns.Msg) *dns.EDNS0_SUBNET {
	var ecs *dns.EDNS0_SUBNET
	if opt := r.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_SUBNET); ok {
				ecs = e
			}
		}
	}
	return ecs
}

// steeredType says whether a managed name's answer of type qtype depends
// on the region: its addresses (ANY is answered with one).
func steeredType(qtype uint16) bool {
	return qtype == dns.TypeA || qtype == dns.TypeAAAA || qtype == dns.TypeANY
}

func ecsEcho(in *dns.EDNS0_SUBNET) *dns.EDNS0_SUBNET {
	if in == nil {
		return nil
	}
	// Scope 0: the answer is the same whatever the client's network.
	return &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: in.Family, SourceNetmask: in.SourceNetmask, Address: in.Address}
}

// answerManaged answers a traffic-managed name for client, whose region it
// returns with the prefix length the answer depends on: the matched geo
// prefix's, at least the client's network's when steering or max_answers
// decide by it. (ecsScope makes that the ECS scope: only for ECS queries,
// as it is another pass over the geo list.) sg proves a NODATA (nil:
// unsigned).
func (s *Server) answerManaged(st *state, m *dns.Msg, z *zone, q dns.Question, name string, nv *nameView, client netip.Addr, sg *signer) (region string, bits int) {
	region, bits = nv.clientRegion(client)
	rv := nv.regions[region]
	fam := rv.fam
	if rv.steer != nil {
		// The answer now depends on the client's network: say so in the scope.
		bits = steerScope(client, bits)
		// Steered: each family the target serves from there, the others
		// as the region answers them (a target without IPv6 members had
		// steered clients answered AAAA NODATA).
		if st := rv.steer; steered(client, st.share) {
			if len(st.v4) > 0 {
				fam[ipv4] = familyView{addrs: st.v4, ttl: st.ttl}
			}
			if len(st.v6) > 0 {
				fam[ipv6] = familyView{addrs: st.v6, ttl: st.ttl}
			}
		}
	}
	// Each family is answered, failed over or SERVFAIL on its own; ANY
	// with one address (RFC 8482: one RRset is enough) of a family the
	// region answers — it was the IPv4 one alone, and a region of IPv6
	// members answered ANY NODATA. Another type is SERVFAIL only when no
	// family has an address to answer and one is SERVFAIL.
	var f familyView
	switch q.Qtype {
	case dns.TypeA:
		f = fam[ipv4]
	case dns.TypeAAAA:
		f = fam[ipv6]
	default:
		f = fam[ipv4]
		if len(f.addrs) == 0 {
			f = fam[ipv6]
		}
		f.servfail = len(f.addrs) == 0 && (fam[ipv4].servfail || fam[ipv6].servfail)
	}
	if f.servfail {
		m.Rcode = dns.RcodeServerFailure
		return region, bits
	}
	var addrs []netip.Addr
	var buf [16]netip.Addr
	from := f.addrs
	switch q.Qtype {
	case dns.TypeA, dns.TypeAAAA:
		addrs = pick(buf[:0], f.addrs, nv.cfg.MaxAnswers, client)
	case dns.TypeANY:
		addrs = pick(buf[:0], f.addrs, nv.cfg.MaxAnswers, client)
		if len(addrs) > 1 {
			addrs = addrs[:1] // RFC 8482: one record is enough
		}
	}
	if n := nv.cfg.MaxAnswers; n > 0 && n < len(from) {
		// A subset rotated by the client's network: say so in the scope,
		// or a resolver gives one network's subset to all its clients.
		bits = steerScope(client, bits)
	}
	for _, a := range addrs {
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: f.ttl}
		if a.Is4() {
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
		} else {
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	if len(m.Answer) == 0 {
		// Static records at the managed name (TXT, say) still answer.
		byType, _ := z.lookup(name)
		if len(byType[q.Qtype]) > 0 {
			m.Answer = append(m.Answer, st.owned(byType[q.Qtype], name, z)...)
			z.addAdditional(m, byType[q.Qtype])
		} else {
			// A family answered SERVFAIL has its type all the same: a
			// validator must not take this proof to deny it.
			types := z.typesAt(name, byType)
			if len(fam[ipv4].addrs) > 0 || fam[ipv4].servfail {
				types = append(types, dns.TypeA)
			}
			if len(fam[ipv6].addrs) > 0 || fam[ipv6].servfail {
				types = append(types, dns.TypeAAAA)
			}
			if sg != nil && q.Qtype == dns.TypeNSEC {
				st.nsecAsked(m, z, q.Name, types)
			} else {
				st.deny(m, z, q.Name, types, true, sg)
			}
		}
	}
	return region, bits
}

// cnameOf reports whether answer holds a CNAME owned by name (lower case:
// the chain's owners are the zone's names or a wildcard's renamed to the
// lower-cased name asked).
func cnameOf(answer []dns.RR, name string) bool {
	for _, rr := range answer {
		if h := rr.Header(); h.Rrtype == dns.TypeCNAME && h.Name == name {
			return true
		}
	}
	return false
}

// zoneFor returns the zone qname falls in (the longest origin), or nil.
func (st *state) zoneFor(qname string) *zone {
	return st.zoneAnswering(qname, 0)
}

// zoneAnswering returns the zone that answers a question for qname of
// qtype, or nil: the zone qname falls in, but for DS at a zone's apex the
// nearest zone above it served here, when there is one. The DS RRset is
// the parent's data, and so is the proof that there is none (RFC 4035
// 3.1.4.1), as NSD and Knot answer it: the child's NODATA told a resolver
// the delegation has no DS, and with a signed parent a validator called an
// insecure child bogus. Every answer to a question takes its zone here (the
// UDP cache keeps answers by name and type, so a kept one was made here
// too); an RRL slip by zoneForWire, the same rule.
func (st *state) zoneAnswering(qname string, qtype uint16) *zone {
	var apex *zone // the zone qname is the apex of, for DS
	for _, z := range st.zones {
		if !dns.IsSubDomain(z.origin, qname) {
			continue
		}
		if qtype == dns.TypeDS && apex == nil && z.origin == qname {
			apex = z // longest origin first: a zone above it comes later
			continue
		}
		return z
	}
	return apex
}

// owned returns rrs as answers for name: the apex SOA with the current
// serial, wildcard records renamed to the name asked.
func (st *state) owned(rrs []dns.RR, name string, z *zone) []dns.RR {
	if rrs[0].Header().Rrtype == dns.TypeSOA {
		return []dns.RR{st.soa(z)}
	}
	return renamed(rrs, name)
}

func (st *state) soa(z *zone) *dns.SOA {
	soa := *z.soa
	soa.Serial += st.serial.Load()
	return &soa
}

// negativeSOA is the SOA for the authority section of NXDOMAIN and NODATA,
// its TTL the negative-caching TTL (RFC 2308).
func (st *state) negativeSOA(z *zone) dns.RR {
	soa := st.soa(z)
	soa.Hdr.Ttl = min(soa.Hdr.Ttl, soa.Minttl)
	return soa
}

func addrOf(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// listenUDP opens n UDP sockets on one address with SO_REUSEPORT, so the
// kernel spreads queries over n reader goroutines. With port 0 the first
// socket's port is used for the rest.
func listenUDP(addr string, n int) ([]net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = setReusePort(fd) })
		return errors.Join(err, serr)
	}}
	var pcs []net.PacketConn
	for i := 0; i < max(n, 1); i++ {
		pc, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			for _, p := range pcs {
				p.Close()
			}
			return nil, fmt.Errorf("gslb listen udp %s: %w", addr, err)
		}
		pcs = append(pcs, pc)
		addr = pc.LocalAddr().String()
	}
	return pcs, nil
}
