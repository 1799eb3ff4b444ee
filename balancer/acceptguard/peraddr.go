package acceptguard

import (
	"net/netip"
	"sync"
	"time"
)

// ClientNetwork is what one client is counted by: its IPv4 address, or its
// IPv6 /64 — one host is handed a whole /64, and would otherwise be as many
// clients as it has addresses. A 4-in-6 address counts as its IPv4 one.
func ClientNetwork(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// PerAddrLimits are a PerAddr's limits; each 0 is no limit.
type PerAddrLimits struct {
	// MaxConns is the connections one client may hold open at once.
	MaxConns int
	// NewPerSecond is the rate of new connections one client may open (a
	// token bucket of NewBurst tokens).
	NewPerSecond float64
	NewBurst     int
}

func (l PerAddrLimits) off() bool { return l.MaxConns == 0 && l.NewPerSecond == 0 }

// Verdict is what Admit decided.
type Verdict uint8

const (
	// Admitted: the connection may be served.
	Admitted Verdict = iota
	// TooManyOpen: the client holds MaxConns connections already.
	TooManyOpen
	// TooManyNew: the client's bucket of new connections is empty.
	TooManyNew
)

// PerAddr is the one bookkeeping of per-client connection limits: how many
// connections each client holds open and, with a rate, a token bucket of
// new connections per client. A listener asks Admit when it learns a
// connection's client address (at Accept, or — behind PROXY protocol —
// once the header is read) and gives the Slot back with Release when the
// connection closes. Only clients that hold a connection or have spent
// tokens are kept, so the map is bounded by the open connections plus the
// clients of the last burst/rate seconds. Safe for concurrent use.
type PerAddr struct {
	mu     sync.Mutex
	limits PerAddrLimits
	addrs  map[netip.Addr]*addrState
	swept  time.Time
}

type addrState struct {
	conns  int
	tokens float64
	last   time.Time
}

// Clients is what a Listener counts each client's connections with
// (Config.Clients): a *PerAddr, or a user's policy over one (the edge's
// share applies only in a cluster with a key).
type Clients interface {
	Admit(addr netip.Addr, now time.Time) (Slot, Verdict)
	Release(Slot)
	Limits() PerAddrLimits
}

var _ Clients = (*PerAddr)(nil)

// A Slot is what Admit or Hold gave a connection; Release gives it back.
// The zero Slot holds nothing.
type Slot struct {
	key     netip.Addr
	counted bool
}

// sweepEvery is how often Admit drops the clients that hold no connection
// and whose bucket has refilled since: a client that opened one connection
// and never came back must not stay in the map for ever.
const sweepEvery = time.Minute

// NewPerAddr counts clients by ClientNetwork, under limits (SetLimits
// changes them).
func NewPerAddr(limits PerAddrLimits) *PerAddr {
	return &PerAddr{limits: limits, addrs: map[netip.Addr]*addrState{}}
}

// SetLimits changes the limits for connections admitted from now on; the
// connections open stay open and count.
func (p *PerAddr) SetLimits(l PerAddrLimits) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.limits = l
}

// Limits are the limits in force.
func (p *PerAddr) Limits() PerAddrLimits {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.limits
}

// Admit applies the limits to a new connection from addr at now. Admitted,
// the Slot holds the connection's place until Release (with every limit
// off, it holds nothing and nothing is kept).
func (p *PerAddr) Admit(addr netip.Addr, now time.Time) (Slot, Verdict) {
	k := ClientNetwork(addr)
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.limits
	if l.off() {
		return Slot{}, Admitted
	}
	if now.Sub(p.swept) >= sweepEvery {
		p.sweepLocked(now)
	}
	st := p.addrs[k]
	if st == nil {
		st = &addrState{tokens: float64(l.NewBurst), last: now}
		p.addrs[k] = st
	}
	if l.NewPerSecond > 0 {
		p.refillLocked(st, now)
		if st.tokens < 1 {
			p.forgetLocked(k, st)
			return Slot{}, TooManyNew
		}
		st.tokens--
	}
	if l.MaxConns > 0 && st.conns >= l.MaxConns {
		p.forgetLocked(k, st)
		return Slot{}, TooManyOpen
	}
	st.conns++
	return Slot{key: k, counted: true}, Admitted
}

// Hold counts a connection from addr that was admitted elsewhere (taken
// over from the process this one replaced): never refused, it may take its
// client beyond MaxConns; new ones are refused until it is back under.
func (p *PerAddr) Hold(addr netip.Addr) Slot {
	if !addr.IsValid() {
		return Slot{}
	}
	k := ClientNetwork(addr)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.limits.off() {
		return Slot{}
	}
	st := p.addrs[k]
	if st == nil {
		st = &addrState{tokens: float64(p.limits.NewBurst), last: time.Now()}
		p.addrs[k] = st
	}
	st.conns++
	return Slot{key: k, counted: true}
}

// Release gives back what s holds; call it once per Slot.
func (p *PerAddr) Release(s Slot) {
	if !s.counted {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.addrs[s.key]
	if st == nil {
		return
	}
	st.conns--
	if p.limits.NewPerSecond > 0 {
		p.refillLocked(st, time.Now())
	}
	p.forgetLocked(s.key, st)
}

// Clients is the number of clients kept (tests, and an operator's view).
func (p *PerAddr) Clients() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.addrs)
}

// refillLocked adds the tokens earned since st.last. A now before it (an
// Admit that read the clock before another's Release took the lock) earns
// nothing, and takes nothing away.
func (p *PerAddr) refillLocked(st *addrState, now time.Time) {
	if d := now.Sub(st.last); d > 0 {
		st.tokens = min(st.tokens+d.Seconds()*p.limits.NewPerSecond, float64(p.limits.NewBurst))
		st.last = now
	}
}

// forgetLocked drops the state of a client with no connection and a full
// bucket: it is the state a client never seen starts with.
func (p *PerAddr) forgetLocked(k netip.Addr, st *addrState) {
	if st.conns == 0 && (p.limits.NewPerSecond == 0 || st.tokens >= float64(p.limits.NewBurst)) {
		delete(p.addrs, k)
	}
}

// sweepLocked forgets every client that forgetLocked would, its bucket
// refilled to now.
func (p *PerAddr) sweepLocked(now time.Time) {
	p.swept = now
	for k, st := range p.addrs {
		if st.conns == 0 && p.limits.NewPerSecond > 0 {
			p.refillLocked(st, now)
		}
		p.forgetLocked(k, st)
	}
}
