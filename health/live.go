package health

import (
	"crypto/rand"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// A ping's ack proves less than joins.go needs: memberlist matches an ack
// by its sequence number alone — not by who sent it nor whom it pinged —
// and every process counts from 0, so acks captured between any two
// members, replayed without the key, answer this node's pings of a
// replayed join, and memberlist's own probes (the departed edge was
// believed within ~50 ms: TestReplayedAcksDoNotAnswerForADepartedEdge),
// and end a cut-off node's time away while it is still cut off.
//
// So a member announcing PeerSigningLive is asked to prove it is live:
// this node sends it (a user message: encrypted and authenticated with
// the cluster's key, as all gossip) a fresh random nonce and its own
// name; the member answers this node, by name, with the nonce and its own
// name; an answer counts only from the name the nonce was sent to, once,
// and only for the latest few nonces sent it. A replayed answer carries a
// nonce already used or never sent; a replayed challenge makes its
// challenger's member answer it again, which the challenger ignores
// (bounded: maxLiveAnswers). Such a member is believed on an answer only:
// not on a ping, nor on memberlist's probes, nor on probation.
//
// A member of an earlier release answers no challenge: it is believed on
// a ping, as before, and a replay of such a member's captures (its
// metadata announcing less) can still be believed through replayed acks.
//
// A challenger this node does not know by name (memberlist hands a
// delegate no sender address) is not answered: an address carried in the
// challenge would let a replayed one direct answers wherever a member
// once was. The challenger asks again (confirm backs off from a probe
// interval), by when the join that made it challenge has reached this
// node too.
//
// Challenges go by UDP, as memberlist's probes do; a member whose UDP a
// firewall drops (TCP alone works: memberlist's probes fall back to TCP)
// would never answer one. So while a member's latest UDP challenge is
// unanswered, its next one is sent over memberlist's stream (TCP, as
// encrypted and authenticated) too, with a nonce of its own, as a kind
// the member answers over the stream: one in flight per member either way.
// An earlier release does not know that kind (parseLive refuses it,
// NotifyMsg drops it) and answers the UDP challenge, as before.

// Wire form: 'L' | kind | nonce [16] | nameLen u8 | sender name.
const msgLive = 'L'

const (
	liveChallenge = 0
	liveAnswer    = 1
	// liveChallengeStream is a challenge sent over memberlist's stream,
	// answered (liveAnswer) the same way.
	liveChallengeStream = 2
	nonceLen            = 16
	// maxOutstanding nonces are kept per member, the latest: an answer
	// to an earlier one, late, still counts; one older is stale. Four
	// rounds, each of a UDP challenge and its stream copy.
	maxOutstanding = 8
	// maxLiveAnswers bounds the answers to one challenger per probe
	// interval: it asks a member at most once a round (confirm while the
	// member is pending, watchAway once believed), by UDP and over the
	// stream, and a replayed challenge must not make this node send at the
	// replay's rate.
	maxLiveAnswers = 4
	// maxStreamSends bounds the challenges and answers being sent over
	// the stream at once, across members: each is a dial, which waits
	// memberlist's TCPTimeout on an address that drops SYNs, and a member
	// holding the key can tell the cluster of any number of members at
	// any address (TestMadeUpMembersHoldFewStreamDials). A send with no
	// slot free waits for its member's next round; the UDP goes anyway.
	maxStreamSends = 16
)

var errLiveMsg = errors.New("malformed liveness message")

// liveState is what this node keeps per member for challenges: the
// nonces it sent it, and the answers it sent it lately.
type liveState struct {
	asked [maxOutstanding]outstanding
	next  int
	// answers were sent it since window began.
	window  time.Time
	answers int
	// asking, answering: a challenge to it, an answer to its, is being
	// sent over the stream (a dial to a member that is gone waits for
	// memberlist's TCPTimeout).
	asking, answering bool
}

type outstanding struct {
	nonce  [nonceLen]byte
	sent   time.Time
	live   bool // sent, not answered yet
	stream bool // sent over the stream
}

// ask records a fresh nonce sent it now (over the stream or not) and
// returns it.
func (st *liveState) ask(now time.Time, stream bool) [nonceLen]byte {
	var nonce [nonceLen]byte
	rand.Read(nonce[:])
	st.asked[st.next%maxOutstanding] = outstanding{nonce: nonce, sent: now, live: true, stream: stream}
	st.next++
	return nonce
}

// udpUnanswered reports whether the latest UDP challenge sent it is
// unanswered.
func (st *liveState) udpUnanswered() bool {
	for i := 1; i <= min(st.next, maxOutstanding); i++ {
		if a := st.asked[(st.next-i)%maxOutstanding]; !a.stream {
			return a.live
		}
	}
	return false
}

func liveMsg(kind byte, nonce [nonceLen]byte, name string) []byte {
	b := make([]byte, 0, 3+nonceLen+len(name))
	b = append(b, msgLive, kind)
	b = append(b, nonce[:]...)
	return appendName(b, name)
}

func parseLive(b []byte) (kind byte, nonce [nonceLen]byte, name string, err error) {
	if len(b) < 2+nonceLen+1 || b[0] != msgLive || b[1] > liveChallengeStream {
		return 0, nonce, "", errLiveMsg
	}
	copy(nonce[:], b[2:])
	name, rest, err := readName(b[2+nonceLen:])
	if err != nil || len(rest) != 0 || name == "" {
		return 0, nonce, "", errLiveMsg
	}
	return b[1], nonce, name, nil
}

// metaLevel is the PeerSigning level n's metadata announces (0: none, or
// metadata toNode does not read).
func metaLevel(n *memberlist.Node) int {
	node, err := toNode(n)
	if err != nil {
		return 0
	}
	return node.Meta.PeerSigning
}

// liveLocked is name's liveState, made if new. m.mu is held.
func (m *Membership) liveLocked(name string) *liveState {
	st := m.live[name]
	if st == nil {
		st = &liveState{}
		m.live[name] = st
	}
	return st
}

// forgetLive drops what was kept for name: it left.
func (m *Membership) forgetLive(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.live, name)
}

// challenge sends name, at addr (IP:port), a fresh nonce to answer, by
// UDP — and, while its latest UDP challenge is unanswered, another over
// the stream.
func (m *Membership) challenge(name, addr string) error {
	now := time.Now()
	m.mu.Lock()
	st := m.liveLocked(name)
	stream := st.udpUnanswered() && !st.asking
	var streamNonce [nonceLen]byte
	if stream {
		streamNonce = st.ask(now, true)
		st.asking = true
	}
	nonce := st.ask(now, false)
	m.mu.Unlock()
	if stream {
		m.goStream(name, addr, liveMsg(liveChallengeStream, streamNonce, m.name), false)
	}
	return m.ml.SendToAddress(memberlist.Address{Addr: addr, Name: name}, liveMsg(liveChallenge, nonce, m.name))
}

// goStream runs sendStream on a goroutine of its own (m.liveSends), unless
// the node is closed or maxStreamSends are in flight: a dial may wait for
// memberlist's TCPTimeout, and NotifyMsg, which answers, must not.
// Shutdown waits for it.
func (m *Membership) goStream(name, addr string, msg []byte, answer bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	select {
	case m.streamSends <- struct{}{}:
	default:
		m.streamEndedLocked(name, answer)
		return
	}
	m.liveSends.Go(func() {
		defer func() { <-m.streamSends }()
		m.sendStream(name, addr, msg, answer)
	})
}

// streamEndedLocked notes that a challenge (or, answer, an answer) to name
// is no longer being sent over the stream. m.mu is held.
func (m *Membership) streamEndedLocked(name string, answer bool) {
	if st := m.live[name]; st != nil && answer {
		st.answering = false
	} else if st != nil {
		st.asking = false
	}
}

// sendStream sends msg, a challenge or (answer) an answer, to name at
// addr (IP:port) over memberlist's stream (SendReliable: the delegate's
// NotifyMsg takes it there too), and notes it sent. Its own goroutine:
// the dial may wait for memberlist's TCPTimeout.
func (m *Membership) sendStream(name, addr string, msg []byte, answer bool) {
	node, err := streamNode(name, addr)
	if err == nil {
		err = m.ml.SendReliable(node, msg)
	}
	m.mu.Lock()
	m.streamEndedLocked(name, answer)
	closed := m.closed
	m.mu.Unlock()
	if err != nil && !closed {
		m.logger.Debug("sending a liveness challenge or answer over the gossip stream", "member", name, "addr", addr, "err", err)
	}
}

// streamNode is name at addr (IP:port), for SendReliable.
func streamNode(name, addr string) (*memberlist.Node, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	return &memberlist.Node{Name: name, Addr: ap.Addr().AsSlice(), Port: ap.Port()}, nil
}

// receiveLive takes a challenge (answered the way it came) or an answer
// (the member is live, if the nonce is one outstanding for it).
func (m *Membership) receiveLive(b []byte) error {
	kind, nonce, from, err := parseLive(b)
	if err != nil {
		return err
	}
	if from == m.name {
		return nil
	}
	select {
	case <-m.ready:
	default:
		return nil // memberlist is not this node's yet
	}
	if kind == liveAnswer {
		m.answeredChallenge(from, nonce)
		return nil
	}
	stream := kind == liveChallengeStream
	now := time.Now()
	m.mu.Lock()
	var addr string
	if n, ok := m.nodes[from]; ok {
		addr = n.Addr
	} else if p, ok := m.pending[from]; ok {
		addr = p.node.Address()
	} else {
		addr = m.ignoredAddr[from] // it asks to believe this node all the same
	}
	ok := addr != "" && !m.closed
	if ok {
		st := m.liveLocked(from)
		if now.Sub(st.window) > m.probeInterval {
			st.window, st.answers = now, 0
		}
		ok = st.answers < maxLiveAnswers && !(stream && st.answering)
		if ok {
			st.answers++
			st.answering = st.answering || stream
			m.heardFromLocked(from)
		}
	}
	m.mu.Unlock()
	if !ok {
		return nil
	}
	msg := liveMsg(liveAnswer, nonce, m.name)
	if stream {
		m.goStream(from, addr, msg, true)
		return nil
	}
	return m.ml.SendToAddress(memberlist.Address{Addr: addr, Name: from}, msg)
}

// answeredChallenge takes from's answer carrying nonce: one outstanding
// for from is proof that it is live now, answering this node.
func (m *Membership) answeredChallenge(from string, nonce [nonceLen]byte) {
	m.mu.Lock()
	var sent time.Time
	found := false
	if st := m.live[from]; st != nil {
		for i := range st.asked {
			if a := &st.asked[i]; a.live && a.nonce == nonce {
				a.live, sent, found = false, a.sent, true
				break
			}
		}
	}
	m.mu.Unlock()
	if !found {
		return // stale or replayed
	}
	m.probeAnswered(time.Now(), sent)
	m.answered(from)
}

// liveCapable reports whether name, believed or pending, announces
// PeerSigningLive: only a challenge answered proves it live.
func (m *Membership) liveCapable(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n, ok := m.nodes[name]; ok {
		return n.Meta.PeerSigning >= PeerSigningLive
	}
	if p, ok := m.pending[name]; ok {
		return p.level >= PeerSigningLive
	}
	return false
}

// challengeNext challenges the i-th (round robin) believed member that
// announces PeerSigningLive, if any, and returns the next i: an answer is
// how this node knows the cluster hears it (probeAnswered). Round robin,
// so that a member just gone does not go unanswered for long.
func (m *Membership) challengeNext(i int) int {
	type target struct{ name, addr string }
	m.mu.Lock()
	var live []target
	for _, n := range m.nodes {
		if n.Name != m.name && n.Meta.PeerSigning >= PeerSigningLive {
			live = append(live, target{n.Name, n.Addr})
		}
	}
	m.mu.Unlock()
	if len(live) == 0 {
		return i
	}
	slices.SortFunc(live, func(a, b target) int { return strings.Compare(a.name, b.name) })
	t := live[i%len(live)]
	if err := m.challenge(t.name, t.addr); err != nil {
		m.logger.Debug("challenging a gossip member", "member", t.name, "err", err)
	}
	return i + 1
}
