package health

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringlb/ringlb/balancer/acceptguard"
	"github.com/ringlb/ringlb/configs"
)

// Anyone who reaches the gossip port can open TCP streams to it, and
// memberlist takes them all: each gets a goroutine, and an encrypted one is
// read whole — up to the 20 MB its length prefix may announce — before its
// MAC can say it came from no member. Streams from one address, each
// sending 20 MB of garbage, grew a node's heap by 600 MiB with 24 of them
// (TestGossipStreamFloodBounded), and nothing bounded how many.
//
// streamGuard stands between memberlist and its TCP transport and bounds
// what inbound streams may hold, per client address and in all:
//
//   - open streams: a stream beyond configs.MaxGossipStreams, or beyond
//     maxGossipStreamsPerAddr from its address, is closed at once;
//   - bytes read: a stream's reads draw on a budget of gossipStreamBytes for
//     all open streams and gossipStreamBytesPerAddr for its address, given
//     back when memberlist closes the stream. A read the budget cannot cover
//     fails, and memberlist drops the stream as it drops any broken one.
//
// The per-address share is larger than the largest stream a member sends
// (memberlist's 20 MB push/pull limit), so a member's exchange always fits
// when its address has nothing else open; what an address's streams may
// hold, another's still get. Members' streams are short (a push/pull every
// few seconds to one peer, a channel message, a fallback ping): the caps
// are far above what a cluster uses. A stream refused or cut costs a member
// one exchange, which memberlist retries on its next interval; UDP gossip
// is untouched. Outbound streams (this node dialing a member) are not
// bounded here: they go only to members, which hold the key.
//
// Streams that send nothing hold their slots until memberlist's stream
// timeout (10 s on a LAN), so a stranger with a few addresses, each within
// its share, could hold every slot and open each again as it is closed:
// no node could join, no member push/pull. Two things keep the slots for
// the cluster:
//
//   - streams from a member's address (the address memberlist knows the
//     member by, as counted per client) are counted in a pool of their own
//     with the same caps, which strangers never reach. It is a priority,
//     not trust: such a stream is still refused without the key;
//   - when the strangers' pool is full, a new stranger's stream (a node
//     joining is one) closes the oldest stranger's stream instead of being
//     refused. Joins and members' exchanges take milliseconds; to shut a
//     joiner out, a flood must open the whole pool's worth of streams
//     within one exchange.
const (
	maxGossipStreamsPerAddr  = 8
	gossipStreamBytes        = 96 << 20
	gossipStreamBytesPerAddr = 24 << 20
)

// Reasons a stream is refused or cut: indexes of streamGuard.refused, and
// by refusalReasons the values of the reason label of
// ringlb_gossip_streams_refused_total.
const (
	refusedStreams = iota
	refusedBytes
	refusedEvicted
	refusalKinds
)

var refusalReasons = [refusalKinds]string{refusedStreams: "streams", refusedBytes: "bytes", refusedEvicted: "evicted"}

// The pools inbound streams are counted in: strangers', and members'
// (streams from an address a member has).
const (
	poolStrangers = iota
	poolMembers
)

var errStreamBudget = errors.New("gossip stream cut: its address's share, or the node's, of the read budget for inbound streams is used up")

type streamGuard struct {
	*socketTransport
	out  chan net.Conn
	stop chan struct{} // Shutdown has begun
	down chan struct{} // the transport has stopped
	done chan struct{} // the forwarder has returned

	shutdown sync.Once
	shutErr  error

	log     *slog.Logger
	refused [refusalKinds]atomic.Uint64 // by reason

	mu        sync.Mutex
	pools     [2]streamUse // by pool (poolStrangers, poolMembers)
	evicting  int          // strangers' streams closed to make room, not yet given back by memberlist
	strangers []*guardedStream
	perAddr   map[netip.Addr]*streamUse
	members   map[string]netip.Addr // member name → its address, counted per client
	memberAt  map[netip.Addr]int    // address → how many members have it
	// logLimit bounds the refusal log to a line an interval, each with
	// the counts it stands for: a flood must not flood the log.
	logLimit acceptguard.LogLimit
	unlogged [refusalKinds]uint64
}

type streamUse struct {
	open  int
	bytes int64
}

// guardTransport starts forwarding t's inbound streams to memberlist
// within the bounds above.
func guardTransport(t *socketTransport, logger *slog.Logger) *streamGuard {
	g := &streamGuard{socketTransport: t, out: make(chan net.Conn), stop: make(chan struct{}), down: make(chan struct{}), done: make(chan struct{}),
		log: logger, perAddr: map[netip.Addr]*streamUse{}, members: map[string]netip.Addr{}, memberAt: map[netip.Addr]int{}}
	go g.forward()
	return g
}

// StreamCh is what memberlist reads inbound streams from.
func (g *streamGuard) StreamCh() <-chan net.Conn { return g.out }

// Shutdown stops the transport and the forwarder. memberlist shuts the
// transport down before it stops reading streams, and the transport's
// accept loop may be handing one over meanwhile: the forwarder closes
// such streams until the transport has stopped.
//
// Once: memberlist shuts down the transport of a node it failed to start,
// and Join does too when memberlist did not get that far.
func (g *streamGuard) Shutdown() error {
	g.shutdown.Do(func() {
		close(g.stop)
		g.shutErr = g.socketTransport.Shutdown()
		close(g.down)
		<-g.done
	})
	return g.shutErr
}

func (g *streamGuard) forward() {
	defer close(g.done)
	in := g.socketTransport.StreamCh()
	for {
		select {
		case c := <-in:
			gc := g.admit(c)
			if gc == nil {
				continue
			}
			select {
			case g.out <- gc:
			case <-g.stop:
				gc.Close()
				g.drain(in)
				return
			}
		case <-g.stop:
			g.drain(in)
			return
		}
	}
}

// drain closes streams the transport hands over while it shuts down, until
// it has (its Shutdown waits for its accept loop, which may be blocked
// handing one over).
func (g *streamGuard) drain(in <-chan net.Conn) {
	for {
		select {
		case c := <-in:
			c.Close()
		case <-g.down:
			return
		}
	}
}

// admit counts c against the stream caps: the guarded stream, or nil when
// it was refused (and closed).
func (g *streamGuard) admit(c net.Conn) *guardedStream {
	addr := remoteAddr(c)
	g.mu.Lock()
	pool := poolStrangers
	if g.memberAt[addr] > 0 {
		pool = poolMembers
	}
	u := g.perAddr[addr]
	if u != nil && u.open >= maxGossipStreamsPerAddr {
		g.refuseLocked(refusedStreams, addr)
		g.mu.Unlock()
		c.Close()
		return nil
	}
	open := g.pools[pool].open
	if pool == poolStrangers {
		open -= g.evicting
	}
	var evict *guardedStream
	if open >= configs.MaxGossipStreams && pool == poolStrangers {
		// The oldest stranger's stream not already closed makes room
		// (memberlist gives its slot back when it sees it closed).
		i := slices.IndexFunc(g.strangers, func(s *guardedStream) bool { return !s.evicted })
		if i >= 0 {
			evict = g.strangers[i]
		}
	}
	if open >= configs.MaxGossipStreams && evict == nil {
		g.refuseLocked(refusedStreams, addr)
		g.mu.Unlock()
		c.Close()
		return nil
	}
	if evict != nil {
		evict.evicted = true
		g.evicting++
		g.refuseLocked(refusedEvicted, evict.addr)
	}
	if u == nil {
		u = &streamUse{}
		g.perAddr[addr] = u
	}
	u.open++
	g.pools[pool].open++
	s := &guardedStream{Conn: c, g: g, addr: addr, pool: pool}
	if pool == poolStrangers {
		g.strangers = append(g.strangers, s)
	}
	g.mu.Unlock()
	if evict != nil {
		evict.Conn.Close()
	}
	return s
}

// member notes that the member called name is at addr (present), or has
// left; the node's own name is never passed.
func (g *streamGuard) member(name string, addr netip.Addr, present bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if was, ok := g.members[name]; ok {
		if present && was == addr {
			return
		}
		delete(g.members, name)
		if g.memberAt[was]--; g.memberAt[was] == 0 {
			delete(g.memberAt, was)
		}
	}
	if present {
		g.members[name] = addr
		g.memberAt[addr]++
	}
}

// maxStreamRead bounds one read's reservation, so the budget follows the
// bytes a stream has read rather than the buffer it reads into.
const maxStreamRead = 64 << 10

// reserve takes up to want bytes of the read budget for s; 0: none left.
func (g *streamGuard) reserve(s *guardedStream, want int) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	u, p := g.perAddr[s.addr], &g.pools[s.pool]
	n := min(int64(want), maxStreamRead, gossipStreamBytes-p.bytes, gossipStreamBytesPerAddr-u.bytes)
	if n <= 0 {
		g.refuseLocked(refusedBytes, s.addr)
		return 0
	}
	p.bytes += n
	u.bytes += n
	return int(n)
}

// giveBack returns bytes reserved for s and not read.
func (g *streamGuard) giveBack(s *guardedStream, n int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.perAddr[s.addr].bytes -= n
	g.pools[s.pool].bytes -= n
}

// release gives back a closed stream's slot and the bytes it read.
func (g *streamGuard) release(s *guardedStream) {
	g.mu.Lock()
	defer g.mu.Unlock()
	u, p := g.perAddr[s.addr], &g.pools[s.pool]
	u.open--
	u.bytes -= s.read
	p.open--
	p.bytes -= s.read
	if u.open == 0 {
		delete(g.perAddr, s.addr)
	}
	if s.pool == poolStrangers {
		g.strangers = slices.DeleteFunc(g.strangers, func(o *guardedStream) bool { return o == s })
	}
	if s.evicted {
		g.evicting--
	}
}

func (g *streamGuard) refuseLocked(reason int, addr netip.Addr) {
	g.refused[reason].Add(1)
	g.unlogged[reason]++
	if ok, _ := g.logLimit.Allow(time.Now()); ok {
		g.log.Warn("gossip streams refused: too many open, or holding too much, from one address or in all",
			"streams", g.unlogged[refusedStreams], "bytes", g.unlogged[refusedBytes], "evicted", g.unlogged[refusedEvicted],
			"last_from", addr.String(), "open_strangers", g.pools[poolStrangers].open, "open_members", g.pools[poolMembers].open,
			"open_bytes", g.pools[poolStrangers].bytes+g.pools[poolMembers].bytes)
		g.unlogged = [refusalKinds]uint64{}
	}
}

// remoteAddr is the client a stream is counted under: an IPv4 address, an
// IPv6 /64, as every per-client limit of ringlb counts (the zero Addr, one
// bucket, when the transport gives no address).
func remoteAddr(c net.Conn) netip.Addr {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return acceptguard.ClientNetwork(ap.Addr())
}

// guardedStream draws every read on the guard's budget and gives it back,
// with its slot, when closed.
type guardedStream struct {
	net.Conn
	g       *streamGuard
	addr    netip.Addr
	pool    int
	read    int64 // reads only in memberlist's one goroutine for the stream
	evicted bool  // under g.mu: closed to make room for a newer stranger's stream

	once sync.Once
}

func (s *guardedStream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n := s.g.reserve(s, len(p))
	if n == 0 {
		return 0, errStreamBudget
	}
	got, err := s.Conn.Read(p[:n])
	s.read += int64(got)
	if got < n {
		s.g.giveBack(s, int64(n-got))
	}
	return got, err
}

func (s *guardedStream) Close() error {
	err := s.Conn.Close()
	s.once.Do(func() { s.g.release(s) })
	return err
}
