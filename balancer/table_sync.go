package balancer

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/health"
)

// The table is shared by the balancers of a gossip cluster on a gossip
// channel (health.Channel: encrypted and authenticated with the cluster's
// key, so a node without the key cannot write an entry). Each balancer
// sends to each other balancer directly, never to edges:
//
//   - deltas (packets, batched for a few milliseconds): every placement and
//     move made here, the first tunnel here of a key, every drain started
//     or ended;
//   - a refresh every linger/2 (a stream): every key with a tunnel open
//     here (live until now + linger + linger/2, renewed by the next
//     refresh) and every entry changed here since the last one. It keeps
//     another balancer's open sessions live there and repairs lost packets;
//   - the whole table (a stream, in parts) to a balancer that starts and
//     asks for it ("ask"); it routes only once it has it (startup wait). A
//     process that took the table over from the one it replaced (an
//     upgrade) asks too, once it has joined, and sends the keys open here
//     and its changes at once (checkAsks), and again to each peer once
//     that peer's answer is in (receiveAnswer), and at the end of the
//     round to any not told so: what the others sent while it was joining
//     went to the old process, and what it placed meanwhile went nowhere.
//     A peer drops what a balancer it has not yet taken in sends (health
//     believes a join once the member answers a challenge), so the first
//     may be lost; one that answered took this process's ask, so it takes
//     this process for a balancer.
//     An ask names the balancer asked and carries its time and its round's
//     id; each is answered once (takeAsk), and the asker takes only the
//     answer it waits for: memberlist takes a copy of an encrypted packet
//     as it took the original, and one ask captured on the wire, sent
//     again, had the whole table sent each time.
//
// Placements of one key meet by one rule, the same on every balancer
// (wins): the higher version (a move supersedes what it moved from), then
// the earlier placement, then the lower backend name. The balancer whose
// placement lost counts a conflict and closes its tunnels of the key to the
// losing backend, so their clients reconnect to the winner's.
//
// Nothing received is trusted beyond the key's word that the sender is a
// member: messages come only from balancers, sizes are bounded, every record
// is validated, and a backend named in a record must be one this balancer
// routes to (a gossip edge or a static edge of its config), else the record
// is not applied, only answered (answerGone).

// tableChannel is the gossip channel id of the session table.
const tableChannel = 'T'

// placerUnknown is a placer's name on the wire when this balancer knows
// none (placerIndex): a message names no empty name, and no member is
// named so (health.ValidNodeName), so no balancer takes it for its own.
const placerUnknown = "?"

// wins says whether placement a of a key beats placement b (different
// backends): the rule every balancer applies alike.
func wins(a, b entry, names *tableNames) bool {
	if c := precedes(a.version, a.placedAt, b.version, b.placedAt); c != 0 {
		return c > 0
	}
	return names.name(a.backend) < names.name(b.backend)
}

// recordWins is wins for a received record r over placement e, r's
// backend by its name (one this balancer may not know).
func recordWins(r tableRecord, e entry, names *tableNames) bool {
	if c := precedes(r.version, r.placedAt, e.version, e.placedAt); c != 0 {
		return c > 0
	}
	return r.backend < names.name(e.backend)
}

// precedes is wins before the backends' names: 1 when placement a (its
// version and time) beats b, -1 when b beats a, 0 when they tie.
func precedes(av uint16, aAt int64, bv uint16, bAt int64) int {
	switch {
	case av != bv:
		if av > bv {
			return 1
		}
		return -1
	case aAt != bAt:
		if aAt < bAt {
			return 1
		}
		return -1
	}
	return 0
}

// Reasons a received record or drain is ignored (the label of
// ringlb_balancer_session_table_ignored_total).
const (
	ignoredUnknown   = "unknown_backend"
	ignoredDown      = "backend_down"
	ignoredMalformed = "malformed"
	ignoredSender    = "not_a_balancer"
	ignoredFull      = "full"
	ignoredReplay    = "replayed" // an ask refused: a copy, or asked again too soon (takeAsk)
)

// Kinds of table messages sent (the label of
// ringlb_balancer_session_table_sync_bytes_total).
const (
	syncDelta   = "delta"
	syncRefresh = "refresh"
	syncAnswer  = "answer"
)

// merge applies a record from another balancer. fromDelta says it is a
// placement as it happened (its age is the sync lag).
func (t *sessionTable) merge(r tableRecord, fromDelta bool) { t.mergeRecord(r, fromDelta, false) }

// mergeRecord is merge; trusted says the record comes from the process
// this one replaced (an upgrade), whose placers' names are interned as
// they are.
func (t *sessionTable) mergeRecord(r tableRecord, fromDelta, trusted bool) {
	set := t.settings.Load()
	now := t.now()
	if r.until <= now {
		return // over already
	}
	// A member may not keep a key live beyond what any refresh could.
	r.until = min(r.until, now+int64(2*set.linger+refreshInterval(set.linger)))
	r.placedAt = min(r.placedAt, now+int64(time.Minute))
	rs := t.currentRoutes(t.ring.Snapshot())
	names := t.names.gen.Load()
	bi, known := t.names.lookup(r.backend)
	if _, routable := rs.routable(bi); !known || !routable {
		reason := ignoredDown
		if t.known == nil || !t.known(r.backend) {
			reason = ignoredUnknown
		}
		t.answerGone(r, rs, now, fromDelta)
		t.metrics.tableIgnored.WithLabelValues(reason).Inc()
		return
	}
	in := entry{placedAt: r.placedAt, until: r.until, version: r.version, backend: bi, placer: t.placerIndex(r.placer, trusted)}
	if r.open {
		in.openUntil = r.until
	}
	s := t.shard(r.hash)
	s.mu.Lock()
	if t.names.gen.Load() != names {
		// Names were retired since the lookups (reclaimNames): looked up
		// again, as current does.
		if bi, known = t.names.lookup(r.backend); !known {
			s.mu.Unlock()
			t.metrics.tableIgnored.WithLabelValues(ignoredDown).Inc()
			return
		}
		in.backend, in.placer = bi, t.placerIndex(r.placer, trusted)
	}
	cur, exists := s.entries[r.hash]
	var (
		closeList []*tunnel
		lost      bool
		conflict  bool
		answer    bool
		placed    bool
	)
	switch {
	case !exists:
		if !t.makeRoom(s, set, now) {
			s.mu.Unlock()
			t.metrics.tableIgnored.WithLabelValues(ignoredFull).Inc()
			return
		}
		cur, placed = in, true
	case cur.open == 0 && cur.until <= now:
		if in.version < cur.version {
			s.mu.Unlock()
			return // older than a placement of the key seen here
		}
		in.open = cur.open
		cur, placed = in, true
	case cur.backend == bi:
		if in.version > cur.version || (in.version == cur.version && in.placedAt < cur.placedAt) {
			cur.version, cur.placedAt, cur.placer = in.version, in.placedAt, in.placer
		} else if in.version < cur.version {
			// The sender holds an older version of this placement: told
			// this one, its next move of the key has the next version,
			// not one that ties with this and loses.
			answer = true
		}
		cur.until = max(cur.until, in.until)
		cur.openUntil = max(cur.openUntil, in.openUntil)
	case wins(in, cur, &t.names) || !routableHere(rs, cur.backend):
		// Two placements of one version met: a conflict, the placing
		// balancer's to count. A later version is a move made elsewhere
		// (the backend did not answer there): no conflict. A placement
		// on a backend that takes no live keys here (a drain past its
		// deadline) is no placement to lookup, which would place the key
		// anew: one on a backend that does wins over it, whatever their
		// versions (the others ignored it), or the tables never agree
		// and this balancer moves the live session off its backend.
		lost = cur.placer == t.selfIdx && in.version == cur.version
		if lost {
			t.logConflict(r.hash, cur, in)
		}
		conflict = in.version == cur.version
		closeList = t.tunnelsNotOn(s.tunnels[r.hash], r.backend)
		in.open = cur.open
		in.until = max(in.until, cur.until)
		in.openUntil = max(in.openUntil, cur.openUntil)
		in.flags = cur.flags
		cur, placed = in, true
	default:
		// This balancer's entry wins: the key is live all the same, and
		// the sender learns the winner from the answer below.
		cur.until = max(cur.until, in.until)
		cur.openUntil = max(cur.openUntil, in.openUntil)
		answer = true
	}
	s.entries[r.hash] = cur
	s.mu.Unlock()
	if placed && fromDelta && r.placedAt <= now {
		t.metrics.tableSyncLag.Observe(float64(now-r.placedAt) / 1e9)
	}
	if lost {
		t.metrics.tableConflicts.Inc()
	}
	if len(closeList) > 0 {
		reason := closeMoved
		if conflict {
			reason = closeConflict
		}
		t.closeTunnels(closeList, reason)
	}
	if answer {
		if sy := t.sync.Load(); sy != nil {
			sy.queue(r.hash, cur)
		}
	}
}

// placerIndex is the index of the balancer a record names as its placer.
// The placer is compared with this balancer alone (a placement of its own
// that lost is its conflict) and shown (GET /api/lookup's placed_by, a
// conflict's log line): a name interned already, or a balancer member's
// now, is interned; any other is 0, no name — a balancer gone, or one
// invented by a member holding the key. trusted interns it whatever it is
// (the process this one replaced, whose names were bounded so).
func (t *sessionTable) placerIndex(name string, trusted bool) uint16 {
	if i, ok := t.names.lookup(name); ok {
		return i
	}
	if trusted || t.isBalancer(name) {
		if i, ok := t.names.intern(name); ok {
			return i
		}
	}
	return 0
}

// isBalancer says whether name is a balancer member of the cluster now.
func (t *sessionTable) isBalancer(name string) bool {
	sy := t.sync.Load()
	if sy == nil || sy.cluster == nil {
		return false
	}
	n, ok := sy.cluster.Node(name)
	return ok && n.Meta.Role == health.RoleBalancer
}

// answerGone answers record r of a key on a backend that takes no live
// keys here: one this balancer's config does not have (a reload removed
// it here, or added it at the sender first), one past its drain deadline
// here (weight 0, or an admin drain), or a gossip edge not known here yet.
// The balancers route such a key by one rule: a placement on a backend
// some balancer does not route to gives way, as soon as that balancer has
// placed the key itself, whichever of the two the rule would pick —
// whatever placement the sender holds, every participant reaches one
// backend. So:
//
//   - Without a live entry of the key here on a backend that takes live
//     keys, r's version is kept as a tomb (an entry on no backend, never
//     sent): the key's next participant here is placed anew with the next
//     version (lookup, record), which supersedes r wherever it is known.
//     Ignored, this balancer placed the key anew as a new key, which lost
//     to r by the rule at the sender: the two routed the key to two
//     backends until their configs agreed.
//   - With one, that entry is sent back, as a move past r's version when r
//     would beat it (the sender, where r's backend takes keys, keeps
//     whichever placement the rule picks) — unless the sender learns from this
//     balancer's admin drain, sent along, that the backend takes no live
//     keys: a drain past its deadline on both makes any placement on a
//     backend that takes keys win (mergeRecord). Two placements made apart
//     across a cut met before the drain reached the one on the drained
//     edge, which kept its own by the rule, then routed the live key by its
//     ring until this balancer's next refresh (found by FuzzTableEvents:
//     seed drain-after-a-cut).
//   - Unless r is a later version than that entry: the sender knew this
//     placement and placed the key past it on a backend this balancer
//     does not route to, so it does not route to this one's (or could not
//     reach it). Then the key moves here to its owner on this balancer's
//     ring without its backend, as after a failed dial, past r's version:
//     both route to it when their configs differ by one edge each (an
//     edge replaced by another, the two reloads apart), and every
//     participant reaches it. Before, each kept its own edge, the other's
//     not routed, and the session stayed split until the configs agreed
//     (TestMutualConfigSkewSplitsNoSession). An entry moves so once
//     (entrySkewMoved): with more edges apart the owner may be one the
//     sender does not route to either, and two balancers moving each time
//     would send the key around their edges; the next time it moves past
//     r in place, as above.
//
// A delta is answered once a refresh interval (entryGoneAnswered): a move
// made elsewhere onto the backend before the drain reached its balancer,
// which replaced this entry there, arrives here as a delta after the drain,
// and the mover routes the live key by its ring once the drain reaches it
// (seed move-delta-after-the-drain). Answered at every delta, two
// balancers whose configs or drains differ, each routing the key to a
// backend the other does not, would send theirs back and forth.
func (t *sessionTable) answerGone(r tableRecord, rs *routeSet, now int64, fromDelta bool) {
	s := t.shard(r.hash)
	s.mu.Lock()
	e, ok := s.entries[r.hash]
	s.mu.Unlock()
	// Where the key moves if its backend here gives way to r (below),
	// found before the lock is taken again: a ring without a member may
	// take milliseconds to build, which lookups of the shard would wait.
	var away ring.Member
	from := e.backend
	if ok && from != 0 && r.version > e.version && e.flags&entrySkewMoved == 0 {
		away, _ = t.ring.Snapshot().Without(t.names.name(from)).LocateHash(r.hash)
	}
	var (
		moved     bool
		closeList []*tunnel
	)
	s.mu.Lock()
	e, ok = s.entries[r.hash]
	if !ok || e.open == 0 && (e.until <= now || !routableHere(rs, e.backend)) {
		t.keepTomb(s, r, e, ok)
		s.mu.Unlock()
		return
	}
	d, drained := t.drains.get(r.backend)
	gone := drained && d.on && d.deadline <= now
	ai, known := t.names.lookup(away.Name)
	// Moved to a backend the sender may route to (above): at once, even
	// for a delta answered already, as it happens once an entry.
	skew := away.Name != "" && known && ai != e.backend && e.backend == from && !gone &&
		r.version > e.version && e.flags&entrySkewMoved == 0 && routableHere(rs, ai)
	if !routableHere(rs, e.backend) || (fromDelta && e.flags&entryGoneAnswered != 0 && !skew) {
		s.mu.Unlock()
		return
	}
	if fromDelta {
		e.flags |= entryGoneAnswered
	}
	if !gone && recordWins(r, e, &t.names) {
		if skew {
			e.backend = ai
			e.flags |= entrySkewMoved
			closeList = t.tunnelsNotOn(s.tunnels[r.hash], away.Name)
			moved = true
		}
		// Moved past r (where it is, or away): the sender routes to r's
		// backend, so only a later version moves the key there, and its
		// tunnels of the key to r's backend close.
		e.version = r.version + 1
		e.placedAt, e.placer = now, t.selfIdx
		e.flags |= entryDirty
	}
	s.entries[r.hash] = e
	s.mu.Unlock()
	if moved {
		t.metrics.tableMoves.Inc()
		t.closeTunnels(closeList, closeMoved)
	}
	sy := t.sync.Load()
	if sy == nil {
		return
	}
	if drained {
		sy.queueDrain(r.backend)
	}
	sy.queue(r.hash, e)
}

// keepTomb keeps r's version as a tomb of key r.hash in s (locked): an
// entry on no backend (index 0, no name), live as long as r, never sent;
// cur is the key's entry here, if any (exists), with no tunnel open here.
func (t *sessionTable) keepTomb(s *tableShard, r tableRecord, cur entry, exists bool) {
	tomb := entry{version: r.version, placedAt: r.placedAt, until: r.until}
	if exists {
		tomb.version = max(tomb.version, cur.version)
		tomb.until = max(tomb.until, cur.until)
	} else if len(s.entries) >= t.settings.Load().perShard {
		// Only in room to spare: a tomb evicts no placement (makeRoom).
		return
	}
	s.entries[r.hash] = tomb
}

// routableHere says whether backend index i takes live keys in rs.
func routableHere(rs *routeSet, i uint16) bool {
	_, ok := rs.routable(i)
	return ok
}

// refreshInterval is how often a balancer renews its open keys at its
// peers; an open key is announced live for linger + this.
func refreshInterval(linger time.Duration) time.Duration {
	return max(linger/2, time.Second)
}

// wireRecord is an entry as sent: open when tunnels are open here, then
// live until a refresh interval past the next refresh.
func (t *sessionTable) wireRecord(h uint64, e entry, now int64, set *tableSettings) tableRecord {
	r := tableRecord{hash: h, backend: t.names.name(e.backend), placer: t.names.name(e.placer),
		version: e.version, placedAt: e.placedAt, until: e.until}
	if r.placer == "" {
		r.placer = placerUnknown
	}
	if e.open > 0 {
		r.open = true
		r.until = max(r.until, now+int64(set.linger+refreshInterval(set.linger)))
	}
	return r
}

// tableSync is the gossip side of a table (FollowCluster starts it).
type tableSync struct {
	t       *sessionTable
	ch      tableLink
	cluster Cluster

	mu      sync.Mutex
	pending []pendingRecord
	drains  []string // drains changed here, to send
	kick    chan struct{}
	answers chan takenAsk // peers that asked for the table
	// answering are the asks queued or being answered: an ask again
	// meanwhile (the asker had not all of it yet) is not answered twice.
	answering map[askJob]bool
	// taken are the asks taken lately, each until a copy of it could no
	// longer pass (askFresh), and lastTaken each peer's last one (takeAsk).
	// Both at most maxTakenAsks.
	taken     map[takenAsk]int64
	lastTaken map[string]lastAsk
	stop      chan struct{}
	wg        sync.WaitGroup

	// The round of asks (guarded by mu): asking until a peer's table is
	// in (checkAsks); inherited when the table routed before it, taken
	// over in an upgrade, and told once the keys open here and the
	// changes went out for that with the first asks. toldAnswered are
	// the peers told so after their answer was in, tellTo those due it
	// next (sendTells).
	asking       bool
	inherited    bool
	told         bool
	toldAnswered map[string]bool
	tellTo       []string
	refresh      chan struct{} // tellTo has peers (runStreams)
	started      time.Time
	wait         time.Duration
	// askID is this process's round of asks: fresh at each start, so no
	// answer to another round (an earlier process's, or a copy of one
	// sent again) is taken for this one's.
	askID uint64
	asked map[string]time.Time // peer → when last asked
	// tries counts each peer's asks this round: a check of a table
	// taken over ends on time only once every peer was asked twice.
	tries map[string]int
	parts map[string]*answerParts
	// stalled counts the asks made again because an answer under way
	// stalled (tests: a table sent twice for a reason).
	stalled     int
	othersSince time.Time
}

// tableLink is how the table's messages travel: the gossip channel
// (health.Channel), or a test's network.
type tableLink interface {
	SendPacket(to string, payload []byte) error
	Send(to string, payload []byte) error
	Close()
}

type askJob struct {
	peer string
	id   uint64
}

// lastAsk is when a peer's last ask was taken, or its answer went out
// whole (sent: the round it answered).
type lastAsk struct {
	at    int64
	round uint64
	sent  bool
}

// takenAsk is one ask as sent: a peer asks again with the same id and a
// new time; a copy has both the same.
type takenAsk struct {
	askJob
	at int64 // unix ns; 0 for an earlier release's ask, which has none
}

type pendingRecord struct {
	h uint64
	e entry
}

type answerParts struct {
	seen  map[uint32]bool
	parts uint32
	ready bool
	// last is when a part last arrived or was merged, and merging how
	// many are being merged: a peer whose answer is coming is not asked
	// again (checkAsks).
	last    time.Time
	merging int
}

// whole says whether every part of the answer is in.
func (a *answerParts) whole() bool { return len(a.seen) == int(a.parts) }

// maxPending bounds the deltas waiting to go out; beyond it they are
// dropped (the next refresh carries the entries).
const maxPending = 1 << 16

// Sync timings.
const (
	// deltaWindow batches the deltas of a burst into few packets: a
	// placement reaches the other balancers this much later at most (plus
	// the network).
	deltaWindow = 5 * time.Millisecond
	// askEvery: a starting balancer asks a peer again this often.
	askEvery = time.Second
	// answerStall: a peer whose answer is under way is asked again once
	// no part has come for this long (none is merging). Parts of a large
	// table came over 10 s on a loaded machine, gaps of over a second
	// between them; a part that never comes (its stream cut) is asked for
	// again well within memberlist's 10 s bound on a stream.
	answerStall = 5 * time.Second
	// othersSettle: a balancer that sees other members but no balancer
	// for this long takes it that there is none (the members a join
	// brings arrive together).
	othersSettle = time.Second
	// maxTakenAsks bounds the asks remembered (takeAsk): a balancer asks
	// each peer once a start, again only while no part of its answer comes.
	maxTakenAsks = 1024
)

func (t *sessionTable) startSync(c Cluster, startupWait time.Duration) error {
	sy := t.newSync(c, startupWait)
	ch, err := c.OpenChannel(tableChannel, sy.receive)
	if err != nil {
		return err
	}
	sy.ch = ch
	// From now until a peer's table is in (or the wait ends), requests
	// wait (routable).
	t.sync.Store(sy)
	sy.wg.Add(2)
	go sy.runPackets()
	go sy.runStreams()
	return nil
}

// newSync returns the gossip side of t, not yet sending or receiving.
func (t *sessionTable) newSync(c Cluster, startupWait time.Duration) *tableSync {
	return &tableSync{t: t, cluster: c, kick: make(chan struct{}, 1), answers: make(chan takenAsk, 16), stop: make(chan struct{}),
		refresh: make(chan struct{}, 1), asking: true, inherited: t.isReady.Load(), toldAnswered: map[string]bool{},
		started: time.Unix(0, t.now()), wait: startupWait, askID: rand.Uint64(), asked: map[string]time.Time{}, tries: map[string]int{}, parts: map[string]*answerParts{},
		answering: map[askJob]bool{}, taken: map[takenAsk]int64{}, lastTaken: map[string]lastAsk{}}
}

func (sy *tableSync) close() {
	select {
	case <-sy.stop:
		return
	default:
	}
	close(sy.stop)
	sy.wg.Wait()
	sy.ch.Close()
}

// queue sends entry e of key h to the peers with the next batch.
func (sy *tableSync) queue(h uint64, e entry) {
	sy.mu.Lock()
	if len(sy.pending) < maxPending {
		sy.pending = append(sy.pending, pendingRecord{h, e})
	}
	sy.mu.Unlock()
	select {
	case sy.kick <- struct{}{}:
	default:
	}
}

func (sy *tableSync) queueDrain(name string) {
	sy.mu.Lock()
	sy.drains = append(sy.drains, name)
	sy.mu.Unlock()
	select {
	case sy.kick <- struct{}{}:
	default:
	}
}

// peers are the other balancers of the cluster.
func (sy *tableSync) peers() (peers []string, others int) {
	for _, n := range sy.cluster.Members() {
		if n.Name == sy.t.self {
			continue
		}
		others++
		if n.Meta.Role == health.RoleBalancer {
			peers = append(peers, n.Name)
		}
	}
	return peers, others
}

// runPackets sends deltas as they come and, while its round of asks lasts,
// asks the peers for their tables.
func (sy *tableSync) runPackets() {
	defer sy.wg.Done()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	sy.checkAsks()
	for {
		select {
		case <-sy.stop:
			return
		case <-sy.kick:
			t := time.NewTimer(deltaWindow)
			select {
			case <-t.C:
			case <-sy.stop:
				t.Stop()
				return
			}
			sy.flushDeltas()
		case <-tick.C:
			sy.checkAsks()
		}
	}
}

// flushDeltas sends what queue gathered, in packets, to every peer.
func (sy *tableSync) flushDeltas() {
	sy.mu.Lock()
	pending, drains := sy.pending, sy.drains
	sy.pending, sy.drains = nil, nil
	sy.mu.Unlock()
	peers, _ := sy.peers()
	if len(peers) == 0 || (len(pending) == 0 && len(drains) == 0) {
		return
	}
	msgs := sy.t.deltaMessages(pending, drains)
	for _, peer := range peers {
		for _, m := range msgs {
			if err := sy.ch.SendPacket(peer, m); err != nil {
				sy.t.log.Debug("session table: delta not sent", "peer", peer, "err", err)
				break
			}
			sy.t.metrics.tableSyncBytes.WithLabelValues(syncDelta).Add(float64(len(m)))
		}
	}
}

// deltaMessages packs entries and drains into delta packets.
func (t *sessionTable) deltaMessages(pending []pendingRecord, drains []string) [][]byte {
	set := t.settings.Load()
	now := t.now()
	p := t.packer(health.MaxChannelPacket, []byte{msgDelta})
	for _, name := range drains {
		st, _ := t.drains.get(name)
		p.addDrain(name, st)
	}
	for _, r := range pending {
		p.add(t.wireRecord(r.h, r.e, now, set))
	}
	return p.messages()
}

// tablePacker lays drains and records out in messages of at most limit
// bytes each, every one starting with head: the one home of the loop that
// starts a message when an item does not fit in the last. A message holds
// at most 255 drains and 255 names (one byte counts each): bodies and
// sendRefresh put every drain in the first message whatever addDrain said,
// and the drains past the 255th (300 static edges drained) reached neither
// a new process in an upgrade, nor a starting balancer, nor a refresh.
type tablePacker struct {
	t     *sessionTable
	limit int
	head  []byte
	done  []*msgWriter
	w     *msgWriter
}

func (t *sessionTable) packer(limit int, head []byte) tablePacker {
	return tablePacker{t: t, limit: limit, head: head, w: newMsgWriter(limit, head)}
}

// next starts a message, the last one being full.
func (p *tablePacker) next() {
	p.done = append(p.done, p.w)
	p.w = newMsgWriter(p.limit, p.head)
}

func (p *tablePacker) addDrain(name string, st drainState) {
	if p.w.addDrain(name, st) {
		return
	}
	if !p.w.empty() {
		p.next()
		if p.w.addDrain(name, st) {
			return
		}
	}
	p.t.unwritable("drain", name)
}

func (p *tablePacker) add(r tableRecord) {
	if p.w.add(r) {
		return
	}
	if !p.w.empty() {
		p.next()
		if p.w.add(r) {
			return
		}
	}
	p.t.unwritable(r.backend, r.placer)
}

// writers returns the messages, at least one (maybe empty: a table with
// nothing in it is still an answer, of one part).
func (p *tablePacker) writers() []*msgWriter { return append(p.done, p.w) }

// messages returns the messages that hold something, as bytes.
func (p *tablePacker) messages() [][]byte {
	if len(p.done) == 0 && p.w.empty() {
		return nil
	}
	out := make([][]byte, 0, len(p.done)+1)
	for _, w := range p.done {
		out = append(out, w.bytes())
	}
	if !p.w.empty() {
		out = append(out, p.w.bytes())
	}
	return out
}

// unwritable counts a record or drain that fits in no message: a name
// longer than the wire's 255 bytes (configs refuses a static edge's name
// past configs.MaxNodeName, a member's is held to it, so only a config
// that was not checked gets here). The entry stays here and is shared
// with nobody, nor handed to a new process: said at most once every
// acceptguard.DefaultLogEvery, with how many there were since the start.
func (t *sessionTable) unwritable(names ...string) {
	n := t.unwritten.Add(1)
	if ok, _ := t.unwrittenLog.Allow(time.Now()); ok {
		long := ""
		for _, name := range names {
			if len(name) > 255 {
				long = name
			}
		}
		t.log.Error("session table: a record names a name too long for the table's messages (over 255 bytes); it is not shared with the other balancers nor handed to a new process",
			"name_bytes", len(long), "name_starts", long[:min(len(long), 64)], "not_written_since_start", n)
	}
}

// runStreams answers peers that ask for the table and sends the refresh.
func (sy *tableSync) runStreams() {
	defer sy.wg.Done()
	every := refreshInterval(sy.t.settings.Load().linger)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-sy.stop:
			return
		case job := <-sy.answers:
			sy.answer(job)
		case <-sy.refresh:
			sy.sendTells()
		case <-tick.C:
			sy.sendRefresh()
			if next := refreshInterval(sy.t.settings.Load().linger); next != every {
				every = next
				tick.Reset(every)
			}
		}
	}
}

// answer sends the table for one ask, which may come again after. The
// peer's next ask is taken an askEvery after this answer went out, not
// after it was taken (a large table takes longer than that to send); one
// that did not go out whole is forgotten: the peer's next ask (an earlier
// release's is the same) is answered.
func (sy *tableSync) answer(job takenAsk) {
	sent := sy.sendTable(job.askJob)
	sy.mu.Lock()
	delete(sy.answering, job.askJob)
	if sent {
		sy.lastTaken[job.peer] = lastAsk{at: sy.t.now(), round: job.id, sent: true}
	} else {
		delete(sy.taken, job)
		delete(sy.lastTaken, job.peer)
	}
	sy.mu.Unlock()
}

// each calls f with every entry (a shard at a time, under its lock: f
// must not block).
func (t *sessionTable) each(f func(h uint64, e *entry)) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for h, e := range s.entries {
			next := e
			if f(h, &next); next != e {
				s.entries[h] = next
			}
		}
		s.mu.Unlock()
	}
}

// sendRefresh sends every peer the keys open here and the entries changed
// here since the last refresh, with the drains.
func (sy *tableSync) sendRefresh() {
	peers, _ := sy.peers()
	sy.refreshPeers(peers, true)
}

// sendTells sends the peers due it (tellTo) what a refresh sends, the
// changes left marked: one that drops it (it has not taken this process
// in yet) has them from the next refresh all the same.
func (sy *tableSync) sendTells() {
	sy.mu.Lock()
	to := sy.tellTo
	sy.tellTo = nil
	sy.mu.Unlock()
	slices.Sort(to)
	sy.refreshPeers(slices.Compact(to), false)
}

// tell queues peers to be sent the keys open here and the changes made
// here (sendTells, on runStreams: a stream's dial must not hold up
// memberlist's goroutine, which receives answers). sy.mu is held.
func (sy *tableSync) tell(peers ...string) {
	sy.tellTo = append(sy.tellTo, peers...)
	select {
	case sy.refresh <- struct{}{}:
	default:
	}
}

// refreshPeers sends peers a refresh; renew (the refresh of every
// linger/2) marks the changes sent.
func (sy *tableSync) refreshPeers(peers []string, renew bool) {
	if len(peers) == 0 {
		return // changes stay marked until there is someone to tell
	}
	t := sy.t
	set := t.settings.Load()
	now := t.now()
	p := t.packer(maxStreamPart, []byte{msgRefresh})
	for name, st := range t.drains.all() {
		p.addDrain(name, st)
	}
	t.each(func(h uint64, e *entry) {
		if renew {
			e.flags &^= entryGoneAnswered
		}
		if e.open == 0 && e.flags&entryDirty == 0 {
			return
		}
		if renew {
			e.flags &^= entryDirty
		}
		if e.open == 0 && e.until <= now || e.backend == 0 {
			return // over, or a tomb (keepTomb)
		}
		p.add(t.wireRecord(h, *e, now, set))
	})
	msgs := p.messages()
	for _, peer := range peers {
		for _, m := range msgs {
			if err := sy.ch.Send(peer, m); err != nil {
				t.log.Debug("session table: refresh not sent", "peer", peer, "err", err)
				break
			}
			t.metrics.tableSyncBytes.WithLabelValues(syncRefresh).Add(float64(len(m)))
		}
	}
}

// sendTable sends the asker the whole table, in parts, each saying how
// many there are: the asker counts them in, whatever order they arrive in.
// It reports whether every part went.
func (sy *tableSync) sendTable(job askJob) bool {
	t := sy.t
	bodies := t.bodies(maxStreamPart - 17)
	ready := byte(0)
	if t.isReady.Load() {
		ready = 1
	}
	sent := 0
	for i, body := range bodies {
		head := binary.BigEndian.AppendUint64([]byte{msgAnswer}, job.id)
		head = binary.BigEndian.AppendUint32(head, uint32(i))
		head = binary.BigEndian.AppendUint32(head, uint32(len(bodies)))
		head = append(head, ready)
		body.head = head
		m := body.bytes()
		if err := sy.ch.Send(job.peer, m); err != nil {
			t.log.Warn("session table: could not send the table to a starting balancer", "peer", job.peer, "err", err)
			return false
		}
		sent += body.nr
		t.metrics.tableSyncBytes.WithLabelValues(syncAnswer).Add(float64(len(m)))
	}
	t.log.Info("session table sent to a starting balancer", "peer", job.peer, "entries", sent, "parts", len(bodies))
	return true
}

// bodies returns the table — the drains, then every live entry — as
// message bodies of at most limit bytes each.
func (t *sessionTable) bodies(limit int) []*msgWriter {
	set := t.settings.Load()
	now := t.now()
	p := t.packer(limit, nil)
	for name, st := range t.drains.all() {
		p.addDrain(name, st)
	}
	t.each(func(h uint64, e *entry) {
		if e.open == 0 && e.until <= now || e.backend == 0 {
			return // over, or a tomb (keepTomb)
		}
		p.add(t.wireRecord(h, *e, now, set))
	})
	return p.writers()
}

// askMessage is this balancer's ask to peer, which announces level: an
// earlier release's peer reads only the ask of its release, an id alone.
func (sy *tableSync) askMessage(peer string, level int, at int64) []byte {
	if level < health.PeerSigningTableAsk || len(peer) > 255 {
		return binary.BigEndian.AppendUint64([]byte{msgAskID}, sy.askID)
	}
	b := binary.BigEndian.AppendUint64([]byte{msgAsk}, sy.askID)
	b = binary.BigEndian.AppendUint64(b, uint64(at))
	b = append(b, byte(len(peer)))
	return append(b, peer...)
}

// parseAsk reads an ask's body (after its kind).
func parseAsk(b []byte) (id uint64, at int64, to string, ok bool) {
	if len(b) < 17 || len(b) != 17+int(b[16]) {
		return 0, 0, "", false
	}
	return binary.BigEndian.Uint64(b), int64(binary.BigEndian.Uint64(b[8:])), string(b[17:]), true
}

// askFresh says whether an ask sent at at may be answered at now: within
// the window a peer's signature is (health.PeerWindow), the clocks of a
// cluster's nodes being held to it already.
func askFresh(at, now int64) bool {
	d := now - at
	return d <= int64(health.PeerWindow) && d >= -int64(health.PeerWindow)
}

// takeAsk queues an answer to a peer's ask (dropped when many are queued:
// the peer asks again), unless the same ask is queued or being answered
// already — a starting balancer asks again each second until it has the
// whole table, and a large table takes longer than that to send and apply:
// each of its asks was answered with the whole table (600,000 entries: 4.7
// tables sent for one start, most after it had the first) — or it is a
// copy (valid false: out of its time, for another balancer, or an earlier
// release's ask from a balancer of this one). An ask is taken once: one
// seen again is a copy, sent by whoever captured it (memberlist takes it
// as it took the original); it is remembered while a copy of it could
// still pass the time check (an earlier release's ask, which has no time,
// while it is among the maxTakenAsks remembered). And one peer is answered
// at most once an askEvery, however many asks it sends. A copy is counted
// (ignoredReplay) and never answered.
func (sy *tableSync) takeAsk(peer string, id uint64, at int64, valid bool) {
	now := sy.t.now()
	ask := takenAsk{askJob{peer, id}, at}
	sy.mu.Lock()
	defer sy.mu.Unlock()
	if sy.answering[ask.askJob] {
		return
	}
	last, ok := sy.lastTaken[peer]
	_, seen := sy.taken[ask]
	if valid && !seen && ok && last.sent && last.round == id && now-last.at < int64(answerStall) {
		// The same round, asked again within answerStall of its answer
		// going out whole: the ask crossed the answer's last parts, still
		// on their way or waiting to be merged (the asker asks again once
		// none came for answerStall). On a loaded machine the whole table
		// went twice so. A part lost on the way is asked for again after.
		// Counted as an ask refused, as one within askEvery is.
		sy.t.metrics.tableIgnored.WithLabelValues(ignoredReplay).Inc()
		return
	}
	if !valid || seen || (ok && now-last.at < int64(askEvery)) || !sy.roomForAsk(now) {
		sy.t.metrics.tableIgnored.WithLabelValues(ignoredReplay).Inc()
		return
	}
	select {
	case sy.answers <- ask:
	default:
		return
	}
	sy.answering[ask.askJob] = true
	until := int64(math.MaxInt64)
	if at != 0 {
		until = at + int64(health.PeerWindow)
	}
	sy.taken[ask] = until
	sy.lastTaken[peer] = lastAsk{at: now}
}

// roomForAsk makes room to remember one more ask: what no copy can pass any
// more goes, then, in taken, the ask whose copies pass for the shortest
// time. It reports false when lastTaken holds maxTakenAsks peers asking
// or answered within the last answerStall (sy.mu held).
func (sy *tableSync) roomForAsk(now int64) bool {
	if len(sy.lastTaken) >= maxTakenAsks {
		for p, last := range sy.lastTaken {
			if now-last.at >= int64(answerStall) {
				delete(sy.lastTaken, p)
			}
		}
		if len(sy.lastTaken) >= maxTakenAsks {
			return false
		}
	}
	if len(sy.taken) < maxTakenAsks {
		return true
	}
	var (
		first takenAsk
		least int64 = math.MaxInt64
	)
	for a, until := range sy.taken {
		if until <= now {
			delete(sy.taken, a)
		} else if until <= least {
			first, least = a, until
		}
	}
	if len(sy.taken) >= maxTakenAsks {
		delete(sy.taken, first)
	}
	return true
}

// receiveAnswer merges a part of a peer's table sent for this balancer's
// ask, and counts the parts in.
func (sy *tableSync) receiveAnswer(from string, b []byte) error {
	if len(b) < 17 {
		return errTableMsg
	}
	id, part, parts, ready := binary.BigEndian.Uint64(b), binary.BigEndian.Uint32(b[8:]), binary.BigEndian.Uint32(b[12:]), b[16] == 1
	if part >= parts || parts > 1<<16 || b[16] > 1 {
		return errTableMsg
	}
	sy.mu.Lock()
	a := sy.parts[from]
	// Taken only from a peer asked in this round, until its answer is
	// whole: an answer to an ask of an earlier run, to nobody, or a copy
	// of one sent again once it was whole adds nothing.
	if _, asked := sy.asked[from]; id != sy.askID || !asked || (a != nil && a.whole()) {
		sy.mu.Unlock()
		return nil
	}
	if a == nil || a.parts != parts {
		a = &answerParts{seen: map[uint32]bool{}, parts: parts}
		sy.parts[from] = a
	}
	a.last = time.Unix(0, sy.t.now())
	a.merging++
	sy.mu.Unlock()
	err := readBody(b[17:], sy.t.mergeDrain, func(r tableRecord) { sy.t.merge(r, false) })
	sy.mu.Lock()
	a.merging--
	a.last = time.Unix(0, sy.t.now())
	if err == nil {
		a.seen[part], a.ready = true, ready
		if a.whole() && sy.inherited && !sy.toldAnswered[from] {
			// It took this process's ask: it takes this process for a
			// balancer now, whatever it did with the first asks' tell.
			sy.toldAnswered[from] = true
			sy.tell(from)
		}
	}
	sy.mu.Unlock()
	if err != nil {
		return err
	}
	sy.checkAsks()
	return nil
}

// checkAsks ends the round of asks once the table has a peer's whole table
// (a ready peer's, or every peer's when all of them are starting too), or
// once the cluster has members but no other balancer, or when the startup
// wait is over: the table routes from then on. Until then it asks the
// peers that have not answered. A table that routed before (inherited: the
// process this one replaced handed it over) is checked with the peers the
// same way, its entries merged by the one rule, and the first asks bring a
// refresh — the keys open here and the changes made here — at once: while
// this process was joining gossip, the others' changes went to the
// process it replaced, whose table was already handed over, and this one's
// went nowhere; a refresh waits linger/2 (30 s by default), and meanwhile a
// key moved elsewhere stayed where it was here, its session split.
func (sy *tableSync) checkAsks() {
	t := sy.t
	sy.mu.Lock()
	asking := sy.asking
	sy.mu.Unlock()
	if !asking {
		return
	}
	peers, others := sy.peers()
	now := time.Unix(0, t.now())
	sy.mu.Lock()
	var (
		why      string
		complete int
		ask      []string
		once     bool // a peer not answered was asked at most once
	)
	for _, p := range peers {
		a := sy.parts[p]
		if a != nil && a.whole() {
			complete++
			if a.ready && why == "" {
				why = "table received from " + p
			}
			continue
		}
		once = once || sy.tries[p] < 2 // counted before this check asks
		// Asked again after a second without an answer; once its answer
		// is under way, only when it stalls.
		if now.Sub(sy.asked[p]) >= askEvery && (a == nil || a.merging == 0 && now.Sub(a.last) >= answerStall) {
			sy.asked[p] = now
			sy.tries[p]++
			ask = append(ask, p)
			if a != nil {
				sy.stalled++
			}
		}
	}
	switch {
	case why != "":
	case len(peers) > 0 && complete == len(peers):
		why = "every other balancer is starting too; tables received from all"
	case len(peers) == 0 && others > 0:
		if sy.othersSince.IsZero() {
			sy.othersSince = now
		} else if now.Sub(sy.othersSince) >= othersSettle {
			why = "no other balancer in the cluster"
		}
	}
	if len(peers) > 0 || others == 0 {
		sy.othersSince = time.Time{}
	}
	// A table taken over routes while it is checked, so its check waits
	// for a second ask of every peer: one that answered the replaced
	// process within askEvery refuses the first (one a second a peer),
	// and a packet can be lost — with startup_wait at a second the check
	// ended before asking again, and the changes made while this process
	// was joining waited for a refresh (linger/2).
	if why == "" && now.Sub(sy.started) >= sy.wait && !(sy.inherited && once) {
		why = "startup_wait passed"
		if len(peers) > 0 {
			why = "startup_wait passed before every balancer answered"
		}
	}
	ended := why != "" && sy.asking
	if why != "" {
		sy.asking = false
	}
	if len(ask) > 0 && sy.inherited && !sy.told {
		sy.told = true
		sy.tell(peers...)
	}
	if ended && sy.inherited {
		// A peer that answered nothing may have dropped the first tell
		// (it had not taken this process in): told again now, as it is
		// asked no more.
		for _, p := range peers {
			if !sy.toldAnswered[p] {
				sy.tell(p)
			}
		}
	}
	inherited := sy.inherited
	sy.mu.Unlock()
	switch {
	case ended && inherited:
		t.log.Info("session table checked with the other balancers after the take-over", "why", why, "entries", t.len(), "took", now.Sub(sy.started).Round(time.Millisecond).String())
	case ended:
		t.markReady()
		t.log.Info("session table ready: routing", "why", why, "entries", t.len(), "waited", now.Sub(sy.started).Round(time.Millisecond).String())
	}
	if why != "" {
		return
	}
	for _, p := range ask {
		n, _ := sy.cluster.Node(p)
		if err := sy.ch.SendPacket(p, sy.askMessage(p, n.Meta.PeerSigning, now.UnixNano())); err != nil {
			t.log.Debug("session table: ask not sent", "peer", p, "err", err)
		}
	}
}

// drainState is a static edge's drain by the admin API, shared by the
// balancers: the latest stamp wins (after).
type drainState struct {
	on       bool
	deadline int64 // unix ns
	stamp    int64 // unix ns of the change
}

// after says whether change a wins over b: the later stamp, and of two with
// one stamp (made through two balancers at once) the stricter — a drain over
// an undrain, then the earlier deadline — so that a tie never gives live
// keys back to an edge one of them had already taken them from. Every
// balancer takes the same one: kept its own at a tie, each went on with the
// other's drain different from its own.
func (a drainState) after(b drainState) bool {
	if a.stamp != b.stamp {
		return a.stamp > b.stamp
	}
	if a.on != b.on {
		return a.on
	}
	return a.deadline < b.deadline
}

// drainStates are the admin drains known here, by static edge name.
type drainStates struct {
	mu sync.Mutex
	m  map[string]drainState
}

func (d *drainStates) init() { d.m = map[string]drainState{} }

// set records st for name unless a later change is known; it reports
// whether st was taken.
func (d *drainStates) set(name string, st drainState) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if cur, ok := d.m[name]; ok && !st.after(cur) {
		return false
	}
	d.m[name] = st
	return true
}

// change records a change made here (the operator's, through this
// balancer), stamped after every change known here: stamps are balancers'
// clocks, and one running ahead stamped its drain in this one's future,
// where an undrain stamped by this clock could not end it.
func (d *drainStates) change(name string, st drainState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if cur, ok := d.m[name]; ok && cur.stamp >= st.stamp && cur.stamp < math.MaxInt64 {
		st.stamp = cur.stamp + 1
	}
	d.m[name] = st
}

func (d *drainStates) get(name string) (drainState, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st, ok := d.m[name]
	return st, ok
}

func (d *drainStates) all() map[string]drainState {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]drainState, len(d.m))
	for k, v := range d.m {
		out[k] = v
	}
	return out
}

// mergeDrain applies a drain from another balancer, for a static edge of
// this balancer's config.
func (t *sessionTable) mergeDrain(name string, st drainState) {
	if t.isStatic == nil || !t.isStatic(name) {
		t.metrics.tableIgnored.WithLabelValues(ignoredUnknown).Inc()
		return
	}
	if t.drains.set(name, st) {
		t.routesGen.Add(1)
		t.onDrain()
		t.log.Info("static edge drain changed by another balancer", "edge", name, "draining", st.on, "deadline", time.Unix(0, st.deadline))
	}
}

// restoreDrain takes a drain kept over a restart (cluster.state_dir),
// before the table is shared.
func (t *sessionTable) restoreDrain(name string, st drainState) {
	if t.drains.set(name, st) {
		t.routesGen.Add(1)
	}
}

// setDrain starts (on) or ends a static edge's drain here and tells the
// other balancers.
func (t *sessionTable) setDrain(name string, on bool, deadline time.Time) {
	st := drainState{on: on, stamp: t.now()}
	if on {
		st.deadline = deadline.UnixNano()
	}
	t.drains.change(name, st)
	t.routesGen.Add(1)
	t.onDrain()
	if sy := t.sync.Load(); sy != nil {
		sy.queueDrain(name)
	}
}

// receive handles one message from a member (on memberlist's goroutine).
func (sy *tableSync) receive(from string, payload []byte) {
	t := sy.t
	n, ok := sy.cluster.Node(from)
	if !ok || n.Meta.Role != health.RoleBalancer {
		t.metrics.tableIgnored.WithLabelValues(ignoredSender).Inc()
		return
	}
	if len(payload) == 0 {
		t.metrics.tableIgnored.WithLabelValues(ignoredMalformed).Inc()
		return
	}
	var err error
	switch payload[0] {
	case msgDelta, msgRefresh:
		err = readBody(payload[1:], t.mergeDrain, func(r tableRecord) { t.merge(r, payload[0] == msgDelta) })
	case msgAsk:
		id, at, to, ok := parseAsk(payload[1:])
		if !ok {
			err = errTableMsg
			break
		}
		sy.takeAsk(from, id, at, to == t.self && askFresh(at, t.now()))
	case msgAskID:
		if len(payload) != 9 {
			err = errTableMsg
			break
		}
		// A balancer of this release asks in the form above: this one
		// from it is a copy of an ask it never sent.
		sy.takeAsk(from, binary.BigEndian.Uint64(payload[1:]), 0, n.Meta.PeerSigning < health.PeerSigningTableAsk)
	case msgAnswer:
		err = sy.receiveAnswer(from, payload[1:])
	default:
		err = errTableMsg
	}
	if err != nil {
		t.metrics.tableIgnored.WithLabelValues(ignoredMalformed).Inc()
		t.log.Debug("session table: ignoring a malformed message", "from", from, "bytes", len(payload))
	}
}
