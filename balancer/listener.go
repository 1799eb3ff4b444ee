package balancer

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/balancer/acceptguard"
	"github.com/ringlb/ringlb/configs"
)

// Limit reasons, the values of the reason label of
// ringlb_balancer_rejected_connections_total.
const (
	rejectMaxConns   = "max_connections"
	rejectPerIPConns = "max_connections_per_ip"
	rejectPerIPRate  = "new_connections_per_ip"
	rejectMemory     = acceptguard.ReasonMemory
)

// proxyHeaderTimeout bounds waiting for a PROXY protocol header.
const proxyHeaderTimeout = 5 * time.Second

// wrapListener puts the data listener's guards in front of fasthttp: the
// accept guard on the socket itself (accept errors such as EMFILE back off
// instead of ending Serve; the total connection limit), then PROXY protocol
// (so the per-address limits see the real client address), then the
// per-address limits. The total needs no client address, so a connection
// beyond it is refused before any PROXY header is read.
func (b *Balancer) wrapListener(ln net.Listener) (net.Listener, error) {
	limits := b.current.Load().cfg.Limits
	tlsPort := b.tlsConfig != nil
	atCap, lowMemory := refusalAtCap, refusalLowMemory
	if tlsPort {
		atCap, lowMemory = refusalInTLS, refusalInTLS
	}
	guard := acceptguard.Wrap(ln, acceptguard.Config{
		Name: "balancer data", Logger: b.log,
		Errors:  b.metrics.acceptErrors.WithLabelValues("data"),
		Budget:  b.connBudget,
		Refused: b.metrics.rejectedTotal.WithLabelValues(rejectMaxConns),
		Refusal: atCap,
		Memory:  acceptguard.Process, RefusedMemory: b.metrics.rejectedTotal.WithLabelValues(rejectMemory),
		RefusalMemory: lowMemory,
	})
	ln = guard
	if pp := b.cfg.ProxyProtocol; pp.Enabled {
		policy, err := proxyPolicy(pp.TrustedFrom)
		if err != nil {
			return nil, err
		}
		ln = &proxyproto.Listener{Listener: ln, ConnPolicy: policy, ReadHeaderTimeout: proxyHeaderTimeout}
	}
	// Always in place, even with no limit set, so Reload can turn one on.
	l := &limitListener{Listener: ln, guard: guard, perIP: acceptguard.NewPerAddr(perAddrLimits(limits)), rejected: b.metrics.rejectedTotal, tls: tlsPort}
	b.mu.Lock()
	b.limiter = l
	b.mu.Unlock()
	b.limiterOnce.Do(func() { close(b.limiterSet) })
	return l, nil
}

// limiterOrNil waits (up to wait) for Serve to have put the limits in front
// of the data listener and returns them; nil when Serve has not.
func (b *Balancer) limiterOrNil(wait time.Duration) *limitListener {
	select {
	case <-b.limiterSet:
	case <-time.After(wait):
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.limiter
}

// Answers of the connections refused at a limit (the guard's part of
// them: the per-address ones of the data port are limitListener's).
var (
	refusalAtCap     = acceptguard.HTTPAnswer(503, "too many connections to this balancer; try again shortly")
	refusalLowMemory = acceptguard.HTTPAnswer(503, "this balancer is low on memory; try again shortly")
	refusalPerIP     = acceptguard.HTTPAnswer(429, "too many open connections from your address")
	// refusalInTLS refuses on a TLS port: nothing is written, and the
	// guard's linger closes with a FIN once the ClientHello has come and
	// been dropped (a close with it unread would be a reset). A plain
	// answer would reach a client in its handshake as a broken record
	// ("first record does not look like a TLS handshake"), and one inside
	// TLS would cost a handshake, CPU the refused client chooses, for
	// every connection the limits are there to shed: HAProxy closes too.
	refusalInTLS = []byte{}
)

// guardRedirect puts the accept guard in front of the TLS redirect
// listener (balancer.tls.redirect_from), whose fasthttp server would
// otherwise end on EMFILE like the data port's. Its connections count
// against limits.max_connections with the data port's (connBudget): the
// limit is derived from the descriptors the process has, and uncapped the
// plain port took connections from anyone until there were none left
// (TestRedirectPortHeldToTheConnectionLimits). One client is held to
// limits.max_connections_per_ip here too (redirectClients).
func (b *Balancer) guardRedirect(ln net.Listener) *acceptguard.Listener {
	clients := &redirectClients{PerAddr: acceptguard.NewPerAddr(acceptguard.PerAddrLimits{MaxConns: b.current.Load().cfg.Limits.MaxConnectionsPerIP})}
	if pp := b.cfg.ProxyProtocol; pp.Enabled {
		// Validated by configs, and refused by Serve if not.
		clients.proxies, _ = proxyPrefixes(pp.TrustedFrom)
		clients.allProxies = len(clients.proxies) == 0
	}
	g := acceptguard.Wrap(ln, acceptguard.Config{
		Name: "balancer redirect", Logger: b.log, Errors: b.metrics.acceptErrors.WithLabelValues("redirect"),
		Budget:       b.connBudget,
		Refused:      b.metrics.rejectedTotal.WithLabelValues(rejectMaxConns),
		Refusal:      refusalAtCap,
		Clients:      clients,
		RefusedPerIP: b.metrics.rejectedTotal.WithLabelValues(rejectPerIPConns),
		RefusalPerIP: refusalPerIP,
		Memory:       acceptguard.Process, RefusedMemory: b.metrics.rejectedTotal.WithLabelValues(rejectMemory),
		RefusalMemory: refusalLowMemory,
	})
	b.mu.Lock()
	b.redirectClients = clients.PerAddr
	b.mu.Unlock()
	return g
}

// redirectClients counts the redirect port's connections by client under
// limits.max_connections_per_ip, except those of the proxies in front when
// the data port reads PROXY protocol: this port reads no header, so a
// proxy's connections carry every client it forwards, under its address.
// A connection from anywhere else is its client's own, and is counted:
// exempting every connection behind PROXY protocol let one client reach
// the port directly and take the whole max_connections, which the data
// port shares, so that the data port refused everyone
// (TestRedirectPortHeldToTheConnectionLimits). With trusted_from empty
// every source may be a proxy, and none is counted.
type redirectClients struct {
	*acceptguard.PerAddr
	proxies    []netip.Prefix
	allProxies bool
}

func (c *redirectClients) Admit(addr netip.Addr, now time.Time) (acceptguard.Slot, acceptguard.Verdict) {
	if c.allProxies || containsAddr(c.proxies, addr) {
		return acceptguard.Slot{}, acceptguard.Admitted
	}
	return c.PerAddr.Admit(addr, now)
}

// setLimits changes the limits for connections accepted from now on: the
// total shared by the data and redirect ports, and each one's per-address
// limits.
func (b *Balancer) setLimits(limits configs.Limits) {
	b.connBudget.SetMax(limits.MaxConnections)
	b.mu.Lock()
	l, redirect := b.limiter, b.redirectClients
	b.mu.Unlock()
	if l != nil {
		l.perIP.SetLimits(perAddrLimits(limits))
	}
	if redirect != nil {
		redirect.SetLimits(acceptguard.PerAddrLimits{MaxConns: limits.MaxConnectionsPerIP})
	}
}

// perAddrLimits are the per-address part of limits.
func perAddrLimits(limits configs.Limits) acceptguard.PerAddrLimits {
	return acceptguard.PerAddrLimits{MaxConns: limits.MaxConnectionsPerIP, NewPerSecond: limits.NewConnectionsPerIP, NewBurst: limits.NewConnectionsBurst}
}

// proxyPolicy requires a PROXY header from trusted sources and refuses a
// header from any other: it would let a client choose the address the limits
// and X-Forwarded-For see. Untrusted sources may still connect without one.
func proxyPolicy(trusted []string) (proxyproto.ConnPolicyFunc, error) {
	if len(trusted) == 0 {
		return func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil }, nil
	}
	prefixes, err := proxyPrefixes(trusted)
	if err != nil {
		return nil, err
	}
	return func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
		if ap, err := netip.ParseAddrPort(o.Upstream.String()); err == nil && containsAddr(prefixes, ap.Addr()) {
			return proxyproto.REQUIRE, nil
		}
		return proxyproto.REJECT, nil
	}, nil
}

// proxyPrefixes parses balancer.proxy_protocol.trusted_from.
func proxyPrefixes(trusted []string) ([]netip.Prefix, error) {
	prefixes := make([]netip.Prefix, 0, len(trusted))
	for _, c := range trusted {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("balancer.proxy_protocol.trusted_from: %w", err)
		}
		prefixes = append(prefixes, p)
	}
	return prefixes, nil
}

// containsAddr reports whether one of prefixes holds addr (an IPv4-mapped
// IPv6 address as its IPv4 address).
func containsAddr(prefixes []netip.Prefix, addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// limitListener enforces the per-address limits on a connection's first
// read, because with PROXY protocol the client address is only known once
// the header has been read, and the accept loop must not wait for it. The
// total is the accept guard's (guard), checked at Accept. The per-address
// counts are perIP's, by client network (an IPv4 address, an IPv6 /64).
type limitListener struct {
	net.Listener
	guard    *acceptguard.Listener
	perIP    *acceptguard.PerAddr
	rejected *prometheus.CounterVec
	tls      bool // the port speaks TLS: refusals are refusalInTLS
}

func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &limitConn{Conn: c, l: l}, nil
}

// refusalPerIPRate answers a connection beyond its client's rate.
var refusalPerIPRate = acceptguard.HTTPAnswer(429, "too many new connections from your address; slow down")

// refuse answers a refused connection with a status line the client can
// understand (on a TLS port, with nothing), then closes it. The answer
// waits for the request to begin (RefuseServed): the connection is refused
// on its first read, as soon as it is accepted, and a client yet to send
// its request took an answer written then for a stray one
// (TestPerIPRefusalAnswersTheRequestNotBeforeIt).
func (l *limitListener) refuse(c net.Conn, reason string, answer []byte) {
	l.rejected.WithLabelValues(reason).Inc()
	if l.tls {
		answer = refusalInTLS
	}
	if g := guardConn(c); g != nil {
		l.guard.RefuseServed(c, g, answer)
		return
	}
	l.guard.Refuse(c, answer)
}

// held counts a tunnel taken over from the previous process against the
// limits, as if accepted here: the total (the accept guard) and its client
// address's count (admitted there, so never refused here). Close releases
// both, once.
type held struct {
	l       *limitListener
	addr    netip.Addr // carried on to the next process, counted or not
	slot    acceptguard.Slot
	release func() // the guard's slot
	once    sync.Once
}

func (l *limitListener) hold(addr netip.Addr) *held {
	return &held{l: l, addr: addr, release: l.guard.Hold(), slot: l.perIP.Hold(addr)}
}

func (h *held) Close() error {
	h.once.Do(func() {
		h.release()
		h.l.perIP.Release(h.slot)
	})
	return nil
}

// clientAddr is the client address the connection is counted under.
func (h *held) clientAddr() netip.Addr { return h.addr }

// limitConn counts its connection until Close, and applies the per-address
// limits on its first Read.
type limitConn struct {
	net.Conn
	l *limitListener

	once    sync.Once
	refused bool
	addr    netip.Addr
	slot    acceptguard.Slot

	closeOnce sync.Once
	closeErr  error
}

func (c *limitConn) Read(p []byte) (int, error) {
	c.once.Do(c.check)
	if c.refused {
		return 0, net.ErrClosed
	}
	return c.Conn.Read(p)
}

func (c *limitConn) check() {
	conn := untrustedSocket(c.Conn)
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return
	}
	c.addr = ap.Addr().Unmap()
	slot, v := c.l.perIP.Admit(c.addr, time.Now())
	switch v {
	case acceptguard.Admitted:
		c.slot = slot
	case acceptguard.TooManyNew:
		c.refused = true
		c.l.refuse(conn, rejectPerIPRate, refusalPerIPRate)
	default:
		c.refused = true
		c.l.refuse(conn, rejectPerIPConns, refusalPerIP)
	}
}

// untrustedSocket is the socket under c when c is a PROXY protocol
// connection from a source outside trusted_from, else c. Such a source's
// address is its socket's whatever it sends (a header from it is refused),
// so it is known at once: asked of the PROXY connection, it waited for the
// header to be looked for — up to proxyHeaderTimeout for a source that
// sends nothing — and so did a refusal written through it, each holding a
// slot of max_connections meanwhile, uncounted by client: one address
// reaching the port directly held every slot with idle connections
// (TestUntrustedSourceHeldToPerIPLimitsWithoutWaitingForAHeader).
func untrustedSocket(c net.Conn) net.Conn {
	if pc, ok := c.(*proxyproto.Conn); ok && pc.ProxyHeaderPolicy == proxyproto.REJECT {
		return pc.Raw()
	}
	return c
}

// RemoteAddr is the client's address: the PROXY header's when it names a
// TCP client, else the socket's. A v2 header may name a client without an
// IP address (HAProxy sends AF_UNIX for a unix-socket frontend's): such a
// client was counted under no address, every one passing the per-address
// limits, and fasthttp took it for 0.0.0.0 — X-Forwarded-For, the key of
// no_key: source_ip, the session table's budget. It is the proxy's own
// connection then, as a LOCAL header's is and as nginx takes a family it
// does not read (TestProxyHeaderNamingNoIPClientIsTheProxys).
func (c *limitConn) RemoteAddr() net.Addr {
	a := untrustedSocket(c.Conn).RemoteAddr()
	if pc, ok := c.Conn.(*proxyproto.Conn); ok {
		if _, tcp := a.(*net.TCPAddr); !tcp {
			return pc.Raw().RemoteAddr()
		}
	}
	return a
}

func (c *limitConn) Close() error {
	c.closeOnce.Do(func() {
		c.once.Do(func() {}) // a connection closed before any read was never admitted
		c.closeErr = c.Conn.Close()
		c.l.perIP.Release(c.slot)
	})
	return c.closeErr
}

// clientAddr is the client address the connection is counted under (after
// PROXY protocol); not valid when per-address limits are off.
func (c *limitConn) clientAddr() netip.Addr { return c.addr }

// inner returns the connection c wraps; the relay reaches the socket through it.
func (c *limitConn) inner() net.Conn { return c.Conn }

// wrapped is the connection that one of the balancer's own transparent
// wrappers of an accepted connection (limits, PROXY protocol, the accept
// guard) wraps; nil for any other connection.
func wrapped(c net.Conn) net.Conn {
	switch w := c.(type) {
	case *limitConn:
		return w.inner()
	case *proxyproto.Conn:
		return w.Raw()
	case *acceptguard.Conn:
		return w.NetConn()
	}
	return nil
}

// guardConn is the accept guard's connection inside c — the connection
// fasthttp serves, TLS and all — or nil.
func guardConn(c net.Conn) *acceptguard.Conn {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	for c != nil {
		if g, ok := c.(*acceptguard.Conn); ok {
			return g
		}
		c = wrapped(c)
	}
	return nil
}
