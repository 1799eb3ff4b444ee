package health

import (
	"container/heap"
	"context"
	"math"
	"net"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/ringlb/ringlb/configs"
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
// A member announcing PeerSigningLive answers a challenge: a nonce sent
// it, echoed under its name (live.go), which a replay cannot. One of an
// earlier release is pinged: a real one answers within a round trip (or,
// when memberlist.Ping's fixed timeout is too short for a loaded node,
// memberlist's own probe of it is answered, or memberlist has kept it
// alive longer than a node that answers nothing lasts: probation) — but
// so do acks captured between other members and replayed, which
// memberlist matches by sequence number alone. memberlist's own failure
// detection still decides when a believed member is gone. A node that
// answers no UDP ping (TCP alone works: memberlist's probes fall back to
// TCP) is not believed until it does, or probation believes it; it is
// asked again, backing off, and logged. One announcing PeerSigningLive is
// challenged over TCP too once a UDP challenge goes unanswered (live.go).
//
// A replay can make a join only once memberlist has forgotten the node,
// GossipToTheDeadTime after it was taken for dead or left; before, a join
// needs an alive message of a higher incarnation than memberlist holds,
// which only the node itself makes. So a member back within half that time
// of its leave (a busy node taken for dead, and refuting it; pending or
// believed before) is believed at once, as memberlist believes it: under
// load, pings go unanswered as memberlist's probes do, and a flapping
// member would otherwise stay out until one is answered.
//
// On the wire: challenges and their answers (live.go), which an earlier
// release ignores; it is pinged, as before.

// pendingJoin is a member memberlist has taken in and this node has not yet
// heard answer: the latest of its node as memberlist told it.
type pendingJoin struct {
	node  memberlist.Node // under Membership.mu
	since time.Time       // set once
	asked int             // times asked to answer; under Membership.mu
	// level is the PeerSigning node.Meta announces (under
	// Membership.mu): from PeerSigningLive, only an answered challenge
	// believes it (live.go).
	level int
	// due is when it is asked next, wait how long after that it is asked
	// again, at (-1: none) its place in Membership.asking[queue]: under
	// Membership.mu (confirmJoins).
	due   time.Time
	wait  time.Duration
	at    int
	queue int
	// warned, noted: said so (unanswered); by whoever took it off
	// Membership.asking.
	warned, noted bool
}

// askQueue is pending members by when they are due to be asked (a heap).
type askQueue []*pendingJoin

func (q askQueue) Len() int           { return len(q) }
func (q askQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q askQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].at, q[j].at = i, j
}
func (q *askQueue) Push(x any) {
	p := x.(*pendingJoin)
	p.at = len(*q)
	*q = append(*q, p)
}
func (q *askQueue) Pop() any {
	old := *q
	p := old[len(old)-1]
	old[len(old)-1], p.at = nil, -1
	*q = old[:len(old)-1]
	return p
}

// maxConfirmWait bounds the wait between pings of a pending member, in
// probe intervals.
const maxConfirmWait = 8

// maxConfirmPings bounds the pings in flight for joins (a node joining a
// large cluster hears of every member at once).
const maxConfirmPings = 16

// Membership.asking's queues: a member due in askFirst is asked before any
// in askLater. A member is in askFirst for its first firstAsks turns, and
// whenever it challenges this node (heardFromLocked): members of a cluster
// starting together answer only once they have heard of the asker, a probe
// interval or two after it heard of them, and a member joining is asked
// so before the members backed off, however many of those a member
// holding the key has made up.
const (
	askFirst, askLater = 0, 1
	firstAsks          = 3
)

// maxConfirmSends bounds the challenges and pings sent pending members,
// in all, per probe interval (and at once): a member holding the key can
// tell every node of any number of made-up members in one push/pull, each
// asked until memberlist takes it for dead, which its probes, one member
// a probe interval, take as many intervals to get round to: 4,000 had a
// node send 457 challenges a probe interval, to wherever they said they
// were (TestMadeUpMembersAreConfirmedBounded). A node joining a cluster
// of as many members asks them all at once.
const maxConfirmSends = 128

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
	if n.Name == m.name || !configs.ValidNodeName(n.Name) || len(n.Meta) > memberlist.MetaMaxSize {
		// Itself, or a member record ignores whatever it answers.
		m.record("join", n)
		return
	}
	now := time.Now()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	for name, d := range m.departed {
		if now.Sub(d.at) >= m.rejoinWithin {
			delete(m.departed, name)
		}
	}
	d, back := m.departed[n.Name]
	delete(m.departed, n.Name)
	// On its address only: memberlist takes a dead or departed node's
	// name on another address without looking at its incarnation
	// (DeadNodeReclaimTime), so there a replay of an earlier life is a
	// join too, and is asked like any other.
	if back && d.addr == n.Address() {
		m.mu.Unlock()
		m.record("join", n)
		return
	}
	if p, ok := m.pending[n.Name]; ok {
		p.node, p.level = copyNode(n), metaLevel(n) // its confirm goes on
		m.mu.Unlock()
		return
	}
	p := &pendingJoin{node: copyNode(n), since: now, level: metaLevel(n), due: now, wait: m.probeInterval}
	m.pending[n.Name] = p
	m.askLocked(p)
	m.mu.Unlock()
}

// askLocked queues p, pending, to be asked at p.due (confirmJoins), in
// askFirst for its first turns. m.mu is held.
func (m *Membership) askLocked(p *pendingJoin) {
	p.queue = askLater
	if p.asked < firstAsks {
		p.queue = askFirst
	}
	heap.Push(&m.asking[p.queue], p)
	select {
	case m.askDue <- struct{}{}:
	default:
	}
}

// dropPendingLocked takes name out of what is pending and returns it
// (nil: it was not pending). m.mu is held.
func (m *Membership) dropPendingLocked(name string) *pendingJoin {
	p := m.pending[name]
	if p == nil {
		return nil
	}
	delete(m.pending, name)
	if p.at >= 0 {
		heap.Remove(&m.asking[p.queue], p.at)
	}
	return p
}

// heardFromLocked has name, if it is pending and waiting its turn, asked
// next: it has just challenged this node, as a member joining does —
// which hears of every made-up member too, and asks this node in its
// turn among them — so it need not wait behind the made-up members here,
// new or not (a made-up one would need a packet of the attacker's for
// each turn). m.mu is held.
func (m *Membership) heardFromLocked(name string) {
	if p := m.pending[name]; p != nil && p.at >= 0 && !(p.queue == askFirst && p.due.IsZero()) {
		heap.Remove(&m.asking[p.queue], p.at)
		p.queue, p.due = askFirst, time.Time{}
		heap.Push(&m.asking[askFirst], p)
		select {
		case m.askDue <- struct{}{}:
		default:
		}
	}
}

// updatedPending is memberlist's update of n: a member not yet confirmed only has
// its pending copy brought up to date. It reports whether n was pending.
func (m *Membership) updatedPending(n *memberlist.Node) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.pending[n.Name]
	if ok {
		p.node, p.level = copyNode(n), metaLevel(n)
	}
	return ok
}

// leftPending drops n when it leaves before it was confirmed (a replayed
// join, taken for dead by memberlist's probes): it was never a member here,
// and ringlb_gossip_joins_unconfirmed_total counts it — the warning of its
// unanswered ping is rate-limited, and a replay repeats as often as the
// attacker likes.
func (m *Membership) leftPending(n *memberlist.Node) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	ok := m.dropPendingLocked(n.Name) != nil
	if ok {
		delete(m.live, n.Name)
		m.pins.forget(n.Name)
		m.joinsUnconfirmed.Add(1)
	}
	return ok
}

// answered believes name, if it is pending: it answered a ping.
func (m *Membership) answered(name string) {
	if p := m.unpend(name); p != nil {
		m.believe(p)
	}
}

// unpend takes name out of what is pending and returns it (nil: it was not
// pending).
func (m *Membership) unpend(name string) *pendingJoin {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dropPendingLocked(name)
}

// believe records p's node, taken out of what is pending, as a member —
// unless it has left since. memberlist reports a leave from a goroutine of
// its own: one that came after unpend found nothing pending and nothing
// recorded to drop, and the join recorded after it kept the departed node
// in the view until it came back. A pending node has no departure on
// record (joined takes one as a rejoin, believed at once), so one there now
// is a leave since: it is recorded again, after the join.
func (m *Membership) believe(p *pendingJoin) {
	m.record("join", &p.node)
	m.mu.Lock()
	_, left := m.departed[p.node.Name]
	m.mu.Unlock()
	if left {
		m.record("leave", &p.node)
	}
}

// pingDelegate hears memberlist's own probes answered: this node is heard
// (probeAnswered), and a member whose answers to this node's pings come
// too late for memberlist.Ping's fixed timeout (a loaded node:
// memberlist's probes scale theirs) is believed when memberlist's probe
// of it is answered. Not from a member announcing PeerSigningLive, nor,
// while there is one, for this node's time away: the ack may be a
// replay (live.go); their challenges answer for them.
type pingDelegate struct{ m *Membership }

func (d pingDelegate) AckPayload() []byte { return nil }

func (d pingDelegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, _ []byte) {
	if d.m.liveCapable(other.Name) {
		return
	}
	if d.m.liveMembers.Load() == 0 {
		now := time.Now()
		d.m.probeAnswered(now, now.Add(-rtt))
	}
	d.m.answered(other.Name)
}

// probation is how long memberlist keeps a node that answers nothing
// alive at most: probed within two rounds of the members (a new node goes
// in at a random place of the probe order, which is shuffled every
// round), then suspected for at most its longest suspicion timeout. A
// pending member memberlist still holds after twice that is believed: it
// answers memberlist's probes, directly, through another member or over
// TCP, which a replay cannot.
func (m *Membership) probation() time.Duration {
	n := max(m.ml.NumMembers(), 1)
	return 2 * (2*time.Duration(n+1)*m.probeInterval + m.suspicion(n, m.suspicionMaxMult))
}

// suspicion is memberlist's suspicion timeout among n members, times mult
// (1: the shortest, with enough confirmations; suspicionMaxMult: the
// longest).
func (m *Membership) suspicion(n, mult int) time.Duration {
	return time.Duration(float64(m.suspicionMult*mult) * max(1, math.Log10(float64(n))) * float64(m.probeInterval))
}

// joinConfirmWait bounds how long Join waits for the members its seeds
// told of to answer.
const joinConfirmWait = 2 * time.Second

// unansweredWarnIntervals: a pending member unanswered for this many probe
// intervals (and at least joinConfirmWait) is warned of. Members of a
// cluster starting together answer a challenge only once they have heard
// of its sender, a probe interval or two after it heard of them: at every
// demo start a warning after the second unanswered challenge named a
// member believed a few milliseconds later.
const unansweredWarnIntervals = 10

// unanswered says, once per pending member, that name (at addr, pending
// since) has not answered this node's what: a debug line while that is
// what a start-up looks like, a warning once it has lasted beyond
// unansweredWarnIntervals (noted: the debug line was said). It reports
// whether the warning was due, said or held back by the log limit.
func (m *Membership) unanswered(name, addr, what string, since time.Time, noted *bool) bool {
	msg := "a gossip member does not answer this node's " + what + "; not believed until it does (a replayed capture of a node that is gone, or UDP blocked)"
	pending := time.Since(since)
	if pending < max(unansweredWarnIntervals*m.probeInterval, joinConfirmWait) {
		if !*noted {
			*noted = true
			m.logger.Debug(msg, "member", name, "addr", addr, "pending", pending.Round(time.Millisecond))
		}
		return false
	}
	if ok, suppressed := m.unconfirmedLog.Allow(time.Now()); ok {
		m.logger.Warn(msg, "member", name, "addr", addr, "pending", pending.Round(time.Millisecond), "others_not_logged", suppressed)
	}
	return true
}

// waitConfirmed returns once no member is pending, or within ctx and at
// most bound.
func (m *Membership) waitConfirmed(ctx context.Context, bound time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		m.mu.Lock()
		n := len(m.pending)
		m.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// departure is when a believed member left, and from which address.
type departure struct {
	at   time.Time
	addr string
}

// departedNow notes that memberlist took n for dead or gone (believed or
// pending): a join of it on that address within rejoinWithin is believed
// at once.
func (m *Membership) departedNow(n *memberlist.Node) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.departed[n.Name] = departure{at: time.Now(), addr: n.Address()}
}

// confirmJoins asks each pending member, when it is due, to answer — a
// liveness challenge when it announces PeerSigningLive (live.go), a ping
// otherwise — until it answers (then it is a member) or leaves, backing
// off from the probe interval to maxConfirmWait of them; at most
// maxConfirmSends a probe interval in all, askFirst before askLater. One
// goroutine for all the pending members, and one per ping in flight
// (maxConfirmPings): a member holding the key can make up any number.
func (m *Membership) confirmJoins() {
	defer m.retry.Done()
	select {
	case <-m.ready:
	case <-m.stop:
		return
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	tokens, last := float64(maxConfirmSends), time.Now()
	var due []*pendingJoin
	for {
		now := time.Now()
		tokens = min(maxConfirmSends, tokens+maxConfirmSends*float64(now.Sub(last))/float64(m.probeInterval))
		last = now
		m.mu.Lock()
		wake := time.Duration(-1) // nothing queued: until a member is
		for i := range m.asking {
			q := &m.asking[i]
			for len(*q) > 0 && !(*q)[0].due.After(now) && len(due) < int(tokens) {
				due = append(due, heap.Pop(q).(*pendingJoin))
			}
			if len(*q) > 0 && (wake < 0 || (*q)[0].due.Sub(now) < wake) {
				wake = max((*q)[0].due.Sub(now), 0)
			}
		}
		if wake == 0 {
			// Out of sends: until the next one is back.
			wake = time.Duration((1 - (tokens - float64(len(due)))) * float64(m.probeInterval) / maxConfirmSends)
		}
		m.mu.Unlock()
		tokens -= float64(len(due))
		for i, p := range due {
			m.ask(p, now)
			due[i] = nil
		}
		due = due[:0]
		if wake >= 0 {
			timer.Reset(wake)
		} else {
			timer.Stop()
		}
		select {
		case <-m.stop:
			return
		case <-m.askDue:
		case <-timer.C:
		}
	}
}

// ask asks p, taken off m.asking, to answer, and queues it again for its
// next turn — unless it is no longer pending, answers, or is being pinged
// (the ping queues it when it fails).
func (m *Membership) ask(p *pendingJoin, now time.Time) {
	m.mu.Lock()
	name := p.node.Name
	if m.pending[name] != p || m.closed {
		m.mu.Unlock()
		return
	}
	addr := net.UDPAddr{IP: slices.Clone(p.node.Addr), Port: int(p.node.Port)}
	live := p.level >= PeerSigningLive
	if live {
		p.asked++
	}
	asked := p.asked
	m.mu.Unlock()
	if live {
		// Its answer (receiveLive) believes it; asked again, backing
		// off, until then. No probation: memberlist keeps a member
		// alive on acks a replay can give.
		if asked > 1 && !p.warned {
			p.warned = m.unanswered(name, addr.String(), "liveness challenges", p.since, &p.noted)
		}
		if err := m.challenge(name, addr.String()); err != nil {
			m.logger.Debug("challenging a pending gossip member", "member", name, "err", err)
		}
		m.askAgain(p, now, true)
		return
	}
	if now.Sub(p.since) > m.probation() {
		m.logger.Info("believing a gossip member that memberlist has kept alive longer than it takes to find a node that does not answer, though it answered none of this node's pings", "member", name, "addr", addr.String())
		m.answered(name)
		return
	}
	select {
	case m.pings <- struct{}{}:
	default:
		m.askAgain(p, now, false) // a ping slot free by its next turn
		return
	}
	m.mu.Lock()
	p.asked++
	m.mu.Unlock()
	m.retry.Add(1)
	go func() {
		defer m.retry.Done()
		_, err := m.ml.Ping(name, &addr)
		<-m.pings
		if err == nil {
			m.answered(name)
			return
		}
		if !p.warned {
			p.warned = m.unanswered(name, addr.String(), "pings", p.since, &p.noted)
		}
		// Backing off: under load pings go unanswered for a while, and
		// pinging every pending member every interval added to the load
		// that made memberlist take members for dead.
		m.askAgain(p, time.Now(), true)
	}()
}

// askAgain queues p for its next turn, if it is still pending: after its
// wait from now, doubled for the turn after (asked: backoff), or (not
// asked) a probe interval from now.
func (m *Membership) askAgain(p *pendingJoin, now time.Time, asked bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pending[p.node.Name] != p || m.closed {
		return
	}
	wait := m.probeInterval
	if asked {
		wait, p.wait = p.wait, min(2*p.wait, maxConfirmWait*m.probeInterval)
	}
	p.due = now.Add(wait)
	m.askLocked(p)
}
