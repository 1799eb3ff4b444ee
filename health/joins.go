package health

import (
	"net"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"
)

// A member memberlist takes in is believed only once it has answered this
// node's ping.
//
// memberlist encrypts and authenticates every packet, but it keeps no
// record of the packets it has taken: a capture decrypts as well later as
// it did then. An alive message is news whenever memberlist has no newer
// one for its node, and memberlist forgets a node that left or died
// GossipToTheDeadTime after (30 s on a LAN). Anyone who captured the UDP
// packets of an edge that has since left could replay them, without the
// key, and the edge was back on every ring until probes took it for dead
// again (suspicion: seconds) — then again at the next replay, as long as
// the attacker liked (TestReplayedAliveDoesNotResurrectADepartedEdge).
// memberlist's incarnation numbers keep a replay from changing a member
// that is still known; a join is the one change a replay can make.
//
// A ping carries a fresh sequence number, and only a node holding the key
// answers it, under the name asked for: a replayed join never answers, a
// real one does within a round trip. memberlist's own failure detection
// still decides when a believed member is gone. A node that answers no UDP
// ping (TCP alone works: memberlist's probes fall back to TCP) is not
// believed until it does; it is retried every probe interval and logged.
//
// Nothing changes on the wire: every release answers pings.

// pendingJoin is a member memberlist has taken in and this node has not yet
// heard answer: the latest of its node as memberlist told it.
type pendingJoin struct {
	node memberlist.Node
}

// maxConfirmPings bounds the pings in flight for joins (a node joining a
// large cluster hears of every member at once).
const maxConfirmPings = 16

// copyNode copies what memberlist hands its event callbacks: its own
// goroutines keep writing to n afterwards.
func copyNode(n *memberlist.Node) memberlist.Node {
	c := *n
	c.Addr = slices.Clone(n.Addr)
	c.Meta = slices.Clone(n.Meta)
	return c
}

// joined is memberlist's join of n: the node itself is believed at once,
// any other once it answers (confirm).
func (m *Membership) joined(n *memberlist.Node) {
	if n.Name == m.name {
		m.record("join", n)
		return
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	_, confirming := m.pending[n.Name]
	m.pending[n.Name] = &pendingJoin{node: copyNode(n)}
	if !confirming {
		m.retry.Add(1)
		go m.confirm(n.Name)
	}
	m.mu.Unlock()
}

// updatedPending is memberlist's update of n: a member not yet confirmed only has
// its pending copy brought up to date. It reports whether n was pending.
func (m *Membership) updatedPending(n *memberlist.Node) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.pending[n.Name]
	if ok {
		p.node = copyNode(n)
	}
	return ok
}

// leftPending drops n when it leaves before it was confirmed (a replayed
// join, taken for dead by memberlist's probes): it was never a member here.
func (m *Membership) leftPending(n *memberlist.Node) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.pending[n.Name]
	delete(m.pending, n.Name)
	return ok
}

// confirm pings name until it answers (then it is a member), it leaves, or
// the membership shuts down.
func (m *Membership) confirm(name string) {
	defer m.retry.Done()
	select {
	case <-m.ready:
	case <-m.stop:
		return
	}
	warned := false
	for {
		m.mu.Lock()
		p, ok := m.pending[name]
		var addr net.UDPAddr
		if ok {
			addr = net.UDPAddr{IP: slices.Clone(p.node.Addr), Port: int(p.node.Port)}
		}
		m.mu.Unlock()
		if !ok {
			return
		}
		var err error
		select {
		case m.pings <- struct{}{}:
			_, err = m.ml.Ping(name, &addr)
			<-m.pings
		case <-m.stop:
			return
		}
		if err == nil {
			m.mu.Lock()
			p, ok := m.pending[name]
			delete(m.pending, name)
			m.mu.Unlock()
			if ok {
				m.memberStreams(&p.node, true)
				m.record("join", &p.node)
			}
			return
		}
		m.unconfirmed.Add(1)
		if !warned {
			warned = true
			if ok, suppressed := m.unconfirmedLog.Allow(time.Now()); ok {
				m.logger.Warn("a gossip member does not answer this node's pings; not believed until it does (a replayed capture of a node that is gone, or UDP blocked)",
					"member", name, "addr", addr.String(), "others_not_logged", suppressed)
			}
		}
		select {
		case <-time.After(m.probeInterval):
		case <-m.stop:
			return
		}
	}
}
