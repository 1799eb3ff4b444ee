package health

import (
	"encoding/binary"
	"errors"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Pins say "this session lives on this node" for sessions whose node no
// longer owns them on the ring (docs/DESIGN.md, "The one hard property"): when an
// edge joins, keys it now owns may still be live on their old edge, which
// pins them, so the new owner sends their participants there (421) instead
// of starting a second session.
//
// A pin is the 64-bit hash of a session key (keys never travel in gossip)
// and belongs to the node that announced it. Each node spreads its own pin
// and unpin operations as memberlist broadcasts, numbered by a per-node
// sequence so a late pin never resurrects an unpinned session, and sends
// its whole set in push/pull exchanges, which repair lost broadcasts and
// teach joining nodes. A node's pins vanish with the node.

// Wire forms (big-endian):
//
//	op:    'P' | nameLen u8 | name | seq u64 | op u8 (1 pin, 0 unpin) | hash u64
//	state: 'S' | nameLen u8 | name | seq u64 | count u32 | count × (hash u64, seq u64)
const (
	msgPinOp    = 'P'
	msgPinState = 'S'
)

// maxTombstones bounds the unpins remembered per origin (to order them
// against late pins); the oldest are forgotten first.
const maxTombstones = 1 << 16

var (
	errPinMsg    = errors.New("malformed pin message")
	errPinOrigin = errors.New("pins of a node that is not a member")
	errPinStale  = errors.New("pin operation or set older than the set of its node merged here (a retransmission, or a replay)")
)

// pinKeep is how long the pins of a node that left are kept, in case it
// comes back (a false failure detection).
const pinKeep = time.Minute

// originPins is what one node has pinned, as known here.
type originPins struct {
	pins  map[uint64]uint64 // hash → seq of the pin
	tombs map[uint64]uint64 // hash → seq of the unpin
	// stateSeq is the seq of the latest whole set of the node merged here
	// (0: none): it says all the node had pinned up to it, so an operation
	// numbered at or below it, or an older set, is old news.
	stateSeq uint64
	leftAt   time.Time // zero while the node is a member
}

type pinTable struct {
	name string // this node
	// member reports whether memberlist has told this node of name (a
	// member, believed or not yet). A pin names its node in the message
	// itself, and a node's pins are kept until it leaves: from a name no
	// node has, which never leaves, they were kept for good — a member
	// holding the key sent a push/pull's worth (20 MB) under a new name
	// each time (TestPinsOfNoMemberAreNotKept). Called without t.mu
	// (it takes Membership.mu, which is held around left and back).
	member func(name string) bool

	mu     sync.Mutex
	seq    uint64
	own    map[uint64]uint64 // hash → seq of our pin
	remote map[string]*originPins
	queue  *memberlist.TransmitLimitedQueue
}

func newPinTable(name string, member func(string) bool, numNodes func() int, retransmit int) *pinTable {
	t := &pinTable{name: name, member: member, seq: uint64(time.Now().UnixNano()), own: map[uint64]uint64{}, remote: map[string]*originPins{}}
	t.queue = &memberlist.TransmitLimitedQueue{NumNodes: numNodes, RetransmitMult: retransmit}
	return t
}

// pinBroadcast is one pin or unpin; a newer one for the same hash replaces
// it in the queue (memberlist.NamedBroadcast).
type pinBroadcast struct {
	name string
	msg  []byte
}

func (b pinBroadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b pinBroadcast) Name() string                          { return b.name }
func (b pinBroadcast) Message() []byte                       { return b.msg }
func (b pinBroadcast) Finished()                             {}

func appendName(b []byte, name string) []byte {
	b = append(b, byte(len(name)))
	return append(b, name...)
}

func (t *pinTable) set(hash uint64, pin bool) {
	t.mu.Lock()
	_, has := t.own[hash]
	if has == pin {
		t.mu.Unlock()
		return
	}
	t.seq++
	seq := t.seq
	if pin {
		t.own[hash] = seq
	} else {
		delete(t.own, hash)
	}
	t.mu.Unlock()
	msg := make([]byte, 0, 2+len(t.name)+17)
	msg = append(msg, msgPinOp)
	msg = appendName(msg, t.name)
	msg = binary.BigEndian.AppendUint64(msg, seq)
	op := byte(0)
	if pin {
		op = 1
	}
	msg = append(msg, op)
	msg = binary.BigEndian.AppendUint64(msg, hash)
	t.queue.QueueBroadcast(pinBroadcast{name: strconv.FormatUint(hash, 16), msg: msg})
}

// origin is what name has pinned, nil when name is neither a member
// (member, asked before t.mu was taken) nor a node whose pins are kept
// since it left (its pins go on changing while it is taken for dead
// wrongly: PinnedByGone). Called with t.mu held.
func (t *pinTable) origin(name string, member bool) *originPins {
	o := t.remote[name]
	if o == nil && member {
		o = &originPins{pins: map[uint64]uint64{}, tombs: map[uint64]uint64{}}
		t.remote[name] = o
	}
	return o
}

// apply records one operation of origin, unless a newer one is known.
// Called with t.mu held.
func (o *originPins) apply(hash, seq uint64, pin bool) {
	if s, ok := o.pins[hash]; ok && s >= seq {
		return
	}
	if s, ok := o.tombs[hash]; ok && s >= seq {
		return
	}
	if pin {
		delete(o.tombs, hash)
		o.pins[hash] = seq
		return
	}
	delete(o.pins, hash)
	if len(o.tombs) >= maxTombstones {
		oldest, min := uint64(0), ^uint64(0)
		for h, s := range o.tombs {
			if s < min {
				oldest, min = h, s
			}
		}
		delete(o.tombs, oldest)
	}
	o.tombs[hash] = seq
}

// readName reads the nameLen-prefixed name at b[0:].
func readName(b []byte) (string, []byte, error) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return "", nil, errPinMsg
	}
	n := int(b[0])
	return string(b[1 : 1+n]), b[1+n:], nil
}

// receive applies a broadcast from another node.
func (t *pinTable) receive(msg []byte) error {
	if len(msg) == 0 || msg[0] != msgPinOp {
		return errPinMsg
	}
	name, rest, err := readName(msg[1:])
	if err != nil || len(rest) != 17 || rest[8] > 1 {
		return errPinMsg
	}
	if name == t.name {
		return nil
	}
	seq, pin, hash := binary.BigEndian.Uint64(rest), rest[8] == 1, binary.BigEndian.Uint64(rest[9:])
	member := t.member(name)
	t.mu.Lock()
	defer t.mu.Unlock()
	o := t.origin(name, member)
	if o == nil {
		return errPinOrigin
	}
	if seq <= o.stateSeq {
		// memberlist keeps no record of the packets it took: a pin
		// captured on the wire and sent again, without the key, after
		// its unpin was a pin again where no tombstone held it (a node
		// that learnt the origin's pins from its set), and sent the
		// session's joins to a node that no longer has it.
		return errPinStale
	}
	o.apply(hash, seq, pin)
	return nil
}

// state is this node's whole set, for push/pull.
func (t *pinTable) state() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := make([]byte, 0, 2+len(t.name)+12+16*len(t.own))
	b = append(b, msgPinState)
	b = appendName(b, t.name)
	b = binary.BigEndian.AppendUint64(b, t.seq)
	b = binary.BigEndian.AppendUint32(b, uint32(len(t.own)))
	for h, s := range t.own {
		b = binary.BigEndian.AppendUint64(b, h)
		b = binary.BigEndian.AppendUint64(b, s)
	}
	return b
}

// merge applies another node's whole set: its pins, and the unpin of every
// pin of it known here that is older than the state and missing from it.
func (t *pinTable) merge(buf []byte) error {
	if len(buf) == 0 || buf[0] != msgPinState {
		return errPinMsg
	}
	name, rest, err := readName(buf[1:])
	if err != nil || len(rest) < 12 {
		return errPinMsg
	}
	seq, count := binary.BigEndian.Uint64(rest), binary.BigEndian.Uint32(rest[8:])
	rest = rest[12:]
	if uint64(len(rest)) != 16*uint64(count) {
		return errPinMsg
	}
	if name == t.name {
		return nil
	}
	member := t.member(name)
	t.mu.Lock()
	defer t.mu.Unlock()
	o := t.origin(name, member)
	if o == nil {
		return errPinOrigin
	}
	if seq < o.stateSeq {
		return errPinStale // a push/pull replayed, as a pin above
	}
	in := make(map[uint64]struct{}, count)
	for i := 0; i < len(rest); i += 16 {
		h, s := binary.BigEndian.Uint64(rest[i:]), binary.BigEndian.Uint64(rest[i+8:])
		in[h] = struct{}{}
		o.apply(h, s, true)
	}
	for h, s := range o.pins {
		if _, ok := in[h]; !ok && s <= seq {
			o.apply(h, seq, false)
		}
	}
	o.stateSeq = max(o.stateSeq, seq)
	return nil
}

// left sets aside what a node that left had pinned, and forgets the pins of
// nodes gone longer than pinKeep.
func (t *pinTable) left(name string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if o := t.remote[name]; o != nil {
		o.leftAt = now
	}
	for n, o := range t.remote {
		if !o.leftAt.IsZero() && now.Sub(o.leftAt) > pinKeep {
			delete(t.remote, n)
		}
	}
}

// forget drops what a node never believed had pinned, as it leaves (pins
// kept from an earlier departure aside): its leave never reaches left, so
// they would stay counted as a member's for good.
func (t *pinTable) forget(name string) {
	t.mu.Lock()
	if o := t.remote[name]; o != nil && o.leftAt.IsZero() {
		delete(t.remote, name)
	}
	t.mu.Unlock()
}

// back counts a node's kept pins again: it is a member once more.
func (t *pinTable) back(name string) {
	t.mu.Lock()
	if o := t.remote[name]; o != nil {
		if !o.leftAt.IsZero() {
			// Back from a leave, it may be a new process, numbering
			// from its start time: below its earlier life's where the
			// wall clock stepped back meanwhile. Its next set is the
			// floor again.
			o.stateSeq = 0
		}
		o.leftAt = time.Time{}
	}
	t.mu.Unlock()
}

// holder returns the member (or, with gone, the node that left) that
// pinned hash, if any other did.
func (t *pinTable) holder(hash uint64, gone bool, skip []string) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, o := range t.remote {
		if o.leftAt.IsZero() == gone || slices.Contains(skip, name) {
			continue
		}
		if _, ok := o.pins[hash]; ok {
			return name, true
		}
	}
	return "", false
}

func (t *pinTable) count() (own, remote int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, o := range t.remote {
		if o.leftAt.IsZero() {
			remote += len(o.pins)
		}
	}
	return len(t.own), remote
}

// Pin announces that the session whose key hashes to hash lives on this
// node although the ring may say otherwise. Idempotent.
func (m *Membership) Pin(hash uint64) { m.pins.set(hash, true) }

// Unpin withdraws a pin (the session ended, or this node owns it again).
func (m *Membership) Unpin(hash uint64) { m.pins.set(hash, false) }

// PinnedTo returns a live node that pinned hash, other than this one and
// those skip names. Two nodes may pin one key (a session split, as DESIGN
// allows when a balancer could not reach its edge): when one is skipped,
// the other is the one a join must go to.
func (m *Membership) PinnedTo(hash uint64, skip ...string) (Node, bool) {
	name, ok := m.pins.holder(hash, false, skip)
	if !ok {
		return Node{}, false
	}
	return m.Node(name)
}

// PinnedByGone names a node that pinned hash and left the cluster less than
// a minute ago: gossip may have taken it for dead wrongly, so its sessions
// may live on.
func (m *Membership) PinnedByGone(hash uint64) (string, bool) {
	return m.pins.holder(hash, true, nil)
}

// PinCount returns the number of this node's pins and of the other nodes' pins known here.
func (m *Membership) PinCount() (own, remote int) { return m.pins.count() }

// Node returns the live member named name, whatever its role or state.
func (m *Membership) Node(name string) (Node, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.nodes[name]
	return n, ok
}

// toldOf reports whether memberlist has told this node of name and not of
// its leave since: a member, one whose metadata is not trusted, or one
// not yet believed (joins.go) — whose pins a joining node takes in the
// same push/pull that tells it of the node.
func (m *Membership) toldOf(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, member := m.nodes[name]
	_, ignored := m.ignored[name]
	_, pending := m.pending[name]
	return member || ignored || pending
}

// pinRetransmitFactor multiplies memberlist's retransmissions for pins: a
// broadcast's sends go to random peers, so with memberlist's few (4 in a
// small cluster) some peer often got none and learnt a pin only at the next
// push/pull, a second later (measured on 3 nodes). Pins are 30 bytes; more
// sends cost little, and a pin missed costs a 421 hop or worse.
const pinRetransmitFactor = 3
