package sessions

import (
	"net/netip"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/balancer/acceptguard"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// reasonDirectShare labels ringlb_edge_rejected_connections_total for a
// join refused beyond its address's share (edge.max_direct_per_ip).
const reasonDirectShare = "direct_per_ip"

// directLimits are the per-address limits of direct participants.
func directLimits(cfg configs.Edge) acceptguard.PerAddrLimits {
	return acceptguard.PerAddrLimits{MaxConns: cfg.MaxDirectPerIP}
}

// directShare decides whether a WebSocket join of key counts against its
// address's share of the data port. The data port has no share per
// connection: balancers carry every client's tunnel from a few addresses.
// But anyone on the network reaches it, and one client could hold all of
// max_connections with participants. A balancer of the cluster signs each
// upgrade it forwards for this edge (health.Keyring.SignUpgrade; with a
// skip, the skip's signature): such a participant counts against nothing.
// Any other — unsigned, signed by a node that is not a member balancer, or
// for another edge, key or request — counts against its address's share
// (acceptguard.ClientNetwork: an IPv4 address, an IPv6 /64) for its life,
// and beyond it the join is answered 429 and its connection closed.
//
// Not applied: without a cluster (ownership "none", behind a third-party
// balancer) or a cluster key (the documented insecure mode), where a
// balancer's upgrade cannot be told from a client's and a share would cap
// the balancers. While a member balancer announces a peer_signing below
// PeerSigningUpgrade (an earlier release: it signs no upgrade, during a
// rolling upgrade) every unsigned participant is counted but none refused,
// so an address over its share once it is gone takes no more until under.
func (s *Server) directShare(ctx *fasthttp.RequestCtx, key []byte) (acceptguard.Slot, bool) {
	o := s.hub.owner.Load()
	if o == nil || !o.m.Keyring().Enabled() || o.fromBalancer(ctx, key) {
		return acceptguard.Slot{}, true
	}
	addr, _ := netip.AddrFromSlice(ctx.RemoteIP())
	if o.m.BalancerBelow(health.PeerSigningUpgrade) {
		return s.direct.Hold(addr), true
	}
	slot, v := s.direct.Admit(addr, time.Now())
	if v == acceptguard.Admitted {
		return slot, true
	}
	s.metrics.rejected.WithLabelValues(reasonDirectShare).Inc()
	s.shareLog.Warn(s.log, "join refused: its address holds its share of participants not forwarded by a balancer (edge.max_direct_per_ip)", "remote", ctx.RemoteIP())
	ctx.Error("too many connections from this address to this edge; connect through a balancer\n", fasthttp.StatusTooManyRequests)
	ctx.SetConnectionClose()
	return acceptguard.Slot{}, false
}

// fromBalancer reports whether the upgrade of key carries a member
// balancer's signature for this edge: over SkipMessage when it carries
// X-Ringlb-Skip (checkSkip has verified it, whoever signed it), else over
// the key (SignUpgrade).
func (o *ownership) fromBalancer(ctx *fasthttp.RequestCtx, key []byte) bool {
	sig := ctx.Request.Header.Peek(configs.HeaderPeer)
	if len(sig) == 0 {
		return false
	}
	kr, now := o.m.Keyring(), time.Now()
	var (
		signer string
		err    error
	)
	if skip := ctx.Request.Header.Peek(headerSkip); len(skip) > 0 {
		signer, err = kr.VerifyRequest(string(sig), o.self, string(ctx.Method()), string(ctx.RequestURI()), health.SkipMessage(string(skip), key), now)
	} else {
		signer, err = kr.VerifyUpgrade(string(sig), o.self, string(ctx.RequestURI()), key, now)
	}
	if err != nil {
		return false
	}
	return o.signedByBalancer(signer)
}

// signedByBalancer reports whether signer, whose signature is verified, is
// a member balancer — or was one until gossip lost it less than a
// signature's window (health.PeerWindow) ago: a balancer overloaded by the
// very wave of reconnections it forwards can miss its gossip probes and be
// taken for dead for a moment, and the upgrades it forwards must not then
// count against its address's share (they all come from it: beyond the
// share they were refused). Its signatures are no less the cluster's.
func (o *ownership) signedByBalancer(signer string) bool {
	n, ok := o.m.Node(signer)
	if !ok {
		n, ok = o.m.Left(signer, health.PeerWindow)
	}
	return ok && n.Meta.Role == health.RoleBalancer
}
