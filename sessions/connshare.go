package sessions

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/balancer/acceptguard"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// connShare is the data port's per-address share of connections that carry
// nothing yet: from accept until a request has been read (the request
// timeout is 30 s, and a head may trickle in for all of it) and idle between
// requests (a minute). Such a connection holds a slot of max_connections all
// the same, and anyone reaches the data port, so one address could hold all
// of them — and the balancers' clients were refused, again each time the
// connections timed out. Each counts against its address's share
// (acceptguard.ClientNetwork, edge.max_direct_per_ip, its own count beside
// directShare's count of participants): at accept through the listener
// (beyond it admitted while the edge has room, and the first ended to make
// room when it has none: acceptguard.Config.Spill), given back when the
// request handler starts, taken again when the connection goes idle after its answer
// (beyond it closed then: an idle keep-alive connection is the client's to
// open again). A connection a member signed a request on is not taken
// again: edges keep a few idle connections to each other (claims,
// hand-offs), and a balancer its keep-alive pool of plain requests it
// forwards (health.Keyring.SignForwarded), each from one address. While a
// member balancer announces a peer_signing below PeerSigningForwarded (an
// earlier release: it signs no plain request) no idle connection is
// counted: its pool would fill its own share, and every upgrade it
// forwards then, a new connection from that address, be refused. A
// balancer's upgrade holds a slot for the moment its head takes to arrive.
//
// In force where the direct share is (a cluster with a key): without one a
// member's request cannot be told from anyone's.
type connShare struct {
	s   *Server
	per *acceptguard.PerAddr

	// n is how many connections the maps hold: a join's connection
	// (forgotten when it starts and when it is hijacked) takes no lock
	// while none is.
	n       atomic.Int64
	mu      sync.Mutex
	idle    map[net.Conn]acceptguard.Slot // connections idle, counted
	members map[net.Conn]struct{}         // connections a member signed on
}

func newConnShare(s *Server, limits acceptguard.PerAddrLimits) *connShare {
	return &connShare{
		s: s, per: acceptguard.NewPerAddr(limits),
		idle: map[net.Conn]acceptguard.Slot{}, members: map[net.Conn]struct{}{},
	}
}

// on reports whether the share is in force.
func (c *connShare) on() bool {
	o := c.s.hub.owner.Load()
	return o != nil && o.m.Keyring().Enabled()
}

// Admit is the listener's: a new connection from addr.
func (c *connShare) Admit(addr netip.Addr, now time.Time) (acceptguard.Slot, acceptguard.Verdict) {
	if !c.on() {
		return acceptguard.Slot{}, acceptguard.Admitted
	}
	return c.per.Admit(addr, now)
}

// Release is the listener's: gives back an accepted connection's slot.
func (c *connShare) Release(slot acceptguard.Slot) { c.per.Release(slot) }

// Limits is the listener's.
func (c *connShare) Limits() acceptguard.PerAddrLimits { return c.per.Limits() }

// msgFull answers a connection refused at edge.max_connections, or ended to
// make room there.
const msgFull = "too many connections to this edge; try again shortly"

// endedForRoom reports whether conn was admitted beyond its address's
// share and ended since to make room (acceptguard.Config.Spill): whatever
// it was sent, the edge was full.
func endedForRoom(conn net.Conn) bool {
	g, ok := conn.(*acceptguard.Conn)
	return ok && g.Ended()
}

// refuseFull answers ctx as a connection refused at the cap is: 503, to
// retry in a second. A balancer relays it to its client; closed unanswered
// instead, the connection was taken for this edge dying, and the session
// tried on its next edge.
func refuseFull(ctx *fasthttp.RequestCtx) {
	ctx.Error(msgFull+"\n", fasthttp.StatusServiceUnavailable)
	ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
	ctx.SetConnectionClose()
}

// active gives back what conn holds: a request has arrived on it whole.
// False: conn was admitted beyond its address's share and ended since to
// make room (acceptguard.Config.Spill); its request is refused.
func (c *connShare) active(conn net.Conn) bool {
	c.forget(conn, false)
	if g, ok := conn.(*acceptguard.Conn); ok {
		return g.ReleaseClient()
	}
	return true
}

// forwarded marks ctx's connection as a member balancer's when the plain
// request on it carries that balancer's signature for this edge
// (SignForwarded over its method and the key it routed).
func (c *connShare) forwarded(ctx *fasthttp.RequestCtx) {
	sig := ctx.Request.Header.Peek(configs.HeaderPeer)
	if len(sig) == 0 {
		return
	}
	o := c.s.hub.owner.Load()
	if o == nil || !o.m.Keyring().Enabled() || c.isMember(ctx.Conn()) {
		return
	}
	signer, err := o.m.Keyring().VerifyForwarded(string(sig), o.self, string(ctx.Method()), ctx.Request.Header.Peek(configs.HeaderKey), time.Now())
	if err != nil {
		return
	}
	if o.signedByBalancer(signer) {
		c.member(ctx.Conn())
	}
}

// isMember reports whether a member signed a request on conn.
func (c *connShare) isMember(conn net.Conn) bool {
	if c.n.Load() == 0 {
		return false
	}
	c.mu.Lock()
	_, ok := c.members[conn]
	c.mu.Unlock()
	return ok
}

// member records that a member (an edge, a balancer) signed a request on
// conn: it is not counted when idle.
func (c *connShare) member(conn net.Conn) {
	c.mu.Lock()
	if _, ok := c.members[conn]; !ok {
		c.members[conn] = struct{}{}
		c.n.Add(1)
	}
	c.mu.Unlock()
}

// connState is the data port's ConnState hook's part.
func (c *connShare) connState(conn net.Conn, st fasthttp.ConnState) {
	switch st {
	case fasthttp.StateIdle:
		c.idled(conn)
	case fasthttp.StateHijacked, fasthttp.StateClosed:
		c.forget(conn, true)
	}
}

// idled counts conn, idle after an answer, against its address's share,
// or closes it beyond the share.
func (c *connShare) idled(conn net.Conn) {
	if !c.on() {
		return
	}
	if c.n.Load() > 0 {
		c.mu.Lock()
		_, member := c.members[conn]
		_, counted := c.idle[conn] // idle again with no request handled between
		c.mu.Unlock()
		if member || counted {
			return
		}
	}
	addr := remoteAddr(conn)
	if !addr.IsValid() {
		return
	}
	if o := c.s.hub.owner.Load(); o != nil && o.m.BalancerBelow(health.PeerSigningForwarded) {
		return
	}
	slot, v := c.per.Admit(addr, time.Now())
	if v != acceptguard.Admitted {
		c.s.metrics.rejected.WithLabelValues(reasonDirectShare).Inc()
		c.s.shareLog.Warn(c.s.log, "idle connection closed: its address holds its share of connections not forwarded by a balancer (edge.max_direct_per_ip)", "remote", addr)
		// Its answer is written whole (the data port writes each one
		// before it reads on): nothing for a linger to protect. Its read
		// side is shut rather than the socket closed under the server,
		// whose next step, setting the idle deadline, then failed: a
		// connection error for each, logged and counted
		// (ringlb_edge_connection_errors_total). Shut, the server reads
		// the end of the stream and closes it as a client's close.
		if g, ok := conn.(*acceptguard.Conn); ok {
			g.NoLinger()
			if r, ok := g.NetConn().(interface{ CloseRead() error }); ok && r.CloseRead() == nil {
				return
			}
		}
		_ = conn.Close()
		return
	}
	c.mu.Lock()
	c.idle[conn] = slot
	c.n.Add(1)
	c.mu.Unlock()
}

// forget gives back conn's idle slot, and with gone its member mark.
func (c *connShare) forget(conn net.Conn, gone bool) {
	if c.n.Load() == 0 {
		return
	}
	c.mu.Lock()
	slot, ok := c.idle[conn]
	if ok {
		delete(c.idle, conn)
		c.n.Add(-1)
	}
	if _, member := c.members[conn]; member && gone {
		delete(c.members, conn)
		c.n.Add(-1)
	}
	c.mu.Unlock()
	if ok {
		c.per.Release(slot)
	}
}

// remoteAddr is conn's peer's IP address (invalid for a Unix socket).
func remoteAddr(conn net.Conn) netip.Addr {
	if ta, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}
