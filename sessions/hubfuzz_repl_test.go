package sessions

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/health"
)

// FuzzHubReplEvents is FuzzHubEvents (hubfuzz_test.go) with sync
// replication (edge.replication: sync) and a tight history budget: the
// same events and checks, and events that play the replica's side of the
// stream without sockets. The owner here is edge-1; its sessions'
// replica is edge-2, whose replica code (replicator.apply, its copies)
// reads every batch this edge ships.
//
// The stream's events: the link ships what it queued (the sessions to
// send whole first, as its serve loop does), edge-2 applies the oldest
// batch shipped and answers it (acks commit what waited; resyncs and
// fences are handled as readAnswers does), replication_timeout runs out
// (fallback to async), the stream ends and begins anew (every session
// sent whole again), edge-2 asks for a session whole, the link is closed
// and another takes its place (a ring change), edge-2's answer to a
// batch handled with the link's writer run between its resyncs and its
// ack (the writer is woken by a resync, on a goroutine of its own). And
// a fence of a newer owner (the real replicator.yield), edge-2 dropping
// its copy of a session (so it answers the next record with a resync),
// and a crash of this edge's session of a key whose copy edge-2
// promotes: modelled as the copy promoted here (replicator.promote), the
// crashed session's clients closed, so a client resumes across the
// promotion from any seq it may have seen.
//
// Promotion by its own paths, with this edge as the replica of two other
// edges, edge-4 and edge-5 (their clients not played, only whether each
// one's session of a key lives): either starts a session of a key when no
// other lives (placement would send the join there) and replicates it
// here through this edge's replicator (replicator.apply, acknowledged
// unless answered with a resync or fence); it crashes, drains, is declared
// dead by gossip (crashed, or taken for dead while its session lives on)
// or comes back, each change running promoteOrphans on a ring that gives
// the keys here or, to edge-2 alone, elsewhere; gossip lists a crashed
// edge's copies while the other edge, which took the session over (term +
// 1), sends its newer copy (fuzzMembers.onNode: between promoteOrphans'
// listing and its promotion); a join, as ownership.admit runs it once the
// ring gives the key here, promotes the copy of an owner gone or in the
// balancer's skip (promoteOnJoin; every join here goes through it, an
// edge crashed that gossip has not declared dead in its skip), and is
// sent to the other edge whose session lives; an edge claims the key here
// (hub.claim), told no, and starts the session, its claim holding until
// evSweep.
//
// Checked besides: no msg or ack is ever queued to a client at a seq past
// its session's committed one (a resume or welcome included); a
// session's pending msgs are exactly its seqs after committed, and each
// is tracked by its link (a batch's commit, an orphan, a resync) — one
// that nothing tracks waits forever, past any fallback; after a fallback
// nothing of its link is pending; handoffState carries the pending msgs;
// without a fallback or closed link, edge-2's copy holds every seq a
// session of this edge's shows, at every step (but for sessions handed
// or promoted here, whose seqs came from elsewhere), and a promoted copy
// every seq a client was shown; no seq names two msgs (what a promotion's reserve
// covers); every msg a history holds (edge-2's copies too) is the one
// sequenced at its seq. A resume across a promotion gets its msgs, its
// lost ones as holes, or a reset that says why. Never two live sessions
// of a key, this edge's and the other edges' (a fenced one no longer
// counts); a copy promoted from another edge holds every seq this edge
// acknowledged to it (under sync, all it showed), and when that edge's
// session lives on a fence at the new term waits for it (fenceLater) —
// then its session counts as yielded.
//
// The input is FuzzHubEvents': a byte of config, then a byte of
// replication config (bits 0–1: history.total_bytes, from ample to about
// two msgs), then two bytes an event, its low five bits the event
// (FuzzHubEvents' sixteen, then the stream's).
//
// Not reached: the stream's sockets, MACs and timers (writeNext's write,
// readAnswers' read, checkTimeout's clock and the silent check: each an
// event here), a batch over maxLinkQueue (unsync when the queue is full,
// the cut of writeNext), pushed fences and fenceLater's links to a peer
// alive (a fence waits on a link that never runs: the other edge is taken
// to yield once told), a ring that moves a session between replicas and
// back on one link (detach then attach with its old batches' acks still
// to come), the low-memory paths of the history budget. Of promotion: the
// rest of ownership.admit (pins, claims sent to previous owners, a refused
// claim taking an owner for dead), so the other edges' sessions are found
// by the model (a join goes where one lives), and a session started on a
// claim counts against a promotion here only while its claim holds: past
// it promote is told nothing of it (the claimer's pin, not played, sends
// joins there; promoteOrphans reads no pins); a drain's hand-off by a
// draining owner (its session simply lives on, then dies with it);
// sweepCopies; a session promoted here replicated onward to edge-2 is
// checked as one from elsewhere; the other edges never replicate to each
// other, nor receive this edge's fences.
func FuzzHubReplEvents(f *testing.F) {
	// Promotion through its own paths: edge-4 replicates a here, then
	// crashes; a join skipping it promotes the copy; gossip taking it
	// for dead while it lives (fenced); edge-5's newer copy arriving as
	// gossip lists edge-4's; edge-5's claim holding as gossip declares
	// edge-4 dead; a draining owner; a ring giving the key elsewhere.
	f.Add([]byte{0x0c, 0, evOwnerSend, 0x80, evOwnerState, 0x00, evJoinPromote, 0x00, evPublish, 0x00, evShip, 0, evAck, 0, evRead, 0x00})
	f.Add([]byte{0x0c, 0, evOwnerSend, 0x80, evOwnerState, 0x20, evOwnerSend, 0x40, evJoin, 0x01, evPublish, 0x01, evRead, 0x01})
	f.Add([]byte{0x0c, 0, evOwnerSend, 0x80, evGossipRace, 0x00, evJoin, 0x02, evOwnerState, 0x30, evJoin, 0x03})
	f.Add([]byte{0x0c, 0, evOwnerSend, 0x80, evOwnerState, 0x00, evClaim, 0x10, evOwnerState, 0x20, evJoin, 0x00, evSweep, 0, evJoin, 0x01})
	f.Add([]byte{0x0c, 0, evOwnerSend, 0x80, evOwnerState, 0x40, evJoin, 0x00, evOwnerState, 0x00, evOwnerState, 0x20, evJoin, 0x01})
	f.Add([]byte{0x0c, 0, evOwnerSend, 0x88, evOwnerState, 0x00, evOwnerState, 0xa0, evJoin, 0x08, evOwnerState, 0x60, evOwnerSend, 0x08})
	f.Fuzz(func(t *testing.T, in []byte) {
		runHubEvents(t, in, true)
	})
}

// The events of FuzzHubReplEvents after FuzzHubEvents' (its bits 0–4).
const (
	evShip        = numHubEvents + iota // the link sends what it queued as a batch
	evAck                               // edge-2 applies the oldest batch sent and answers it (bit 4: the link's writer runs in between)
	evFallback                          // replication_timeout: the link falls back to async
	evStreamDown                        // the stream ends
	evStreamUp                          // a stream begins anew
	evResyncKey                         // edge-2 asks for key's session whole
	evRelink                            // the link closes and a new one replaces it
	evFence                             // a fence of a newer owner of key: bit 4 stale
	evPromote                           // key's session crashes here; its copy is promoted
	evCopyLost                          // edge-2 drops its copy of key (full, or taken for stale)
	evOwnerSend                         // another edge (bit 4: edge-4, edge-5) replicates its session of key here: bits 6–7 msgs
	evOwnerState                        // that edge crashes, is declared dead by gossip, drains or is back (bits 5–6; bit 7: the ring then)
	evGossipRace                        // that edge crashes and is declared dead; the other's newer copy of key comes as its copies are listed
	evJoinPromote                       // client joins key with that edge in the balancer's skip (bit 5 clear) or none
	evClaim                             // that edge claims key here, taking its other owner for dead
	numReplEvents
)

// historyTotals are the history budgets of FuzzHubReplEvents (its
// replication config, bits 0–1): ample, a few msgs, two, one.
var historyTotals = [4]int{1 << 20, 400, 150, 80}

// fuzzMembers is the cluster as gossip tells this edge of it (replicator
// asks only Node, a claim's goneEdges Left): the other edges alive, edge-2
// never (its replicator runs here). onNode runs once as Node is asked of
// its edge: what happens meanwhile (a copy arriving between
// promoteOrphans' listing and its promotion).
type fuzzMembers struct {
	Membership
	alive  map[string]health.Node
	onNode func(name string)
}

// PinnedTo: the harness's gossip carries no pins (promote's pin rule is
// TestPromotionRespectsAPin's).
func (m *fuzzMembers) PinnedTo(uint64, ...string) (health.Node, bool) { return health.Node{}, false }

func (m *fuzzMembers) Node(name string) (health.Node, bool) {
	if f := m.onNode; f != nil {
		m.onNode = nil
		f(name)
	}
	n, ok := m.alive[name]
	return n, ok
}

func (*fuzzMembers) Left(string, time.Duration) (health.Node, bool) { return health.Node{}, false }

// otherEdge is an edge besides edge-1 and edge-2 that may hold a session
// of a key (FuzzHubReplEvents): its owner, replicating it here (edge-1 its
// replica), or an edge that claimed the key here and started it. Its
// clients are not played: only whether its session of each key lives.
type otherEdge struct {
	name     string
	crashed  bool // its sessions are gone; gossip may not say so yet
	draining bool
	incs     [2]*incarnation
}

// incarnation is an other edge's session of a key.
type incarnation struct {
	epoch            string
	term, seq, acked uint64 // acked: the last seq edge-1 acknowledged (shown under sync)
	live             bool   // neither crashed nor fenced
	// superseded: promoted here; no other edge takes it over too (only
	// this edge held its copy).
	superseded bool
	// byClaim: started on a claim here (evClaim).
	byClaim bool
}

// hubFuzzRepl is the replication of a FuzzHubReplEvents run: this edge's
// replicator and its link to edge-2, and edge-2's replicator (copies
// only).
type hubFuzzRepl struct {
	r, r2 *replicator
	l     *link
	// sent are the batches written on the stream, oldest first, edge-2
	// has not applied yet.
	sent [][]byte
	// async: msgs were shown without the replica (a fallback, a closed
	// link): a promoted copy may lack seqs a client saw.
	async bool
	// elsewhere are sessions whose committed seqs came from another
	// edge (a hand-off, a promotion), not through edge-2.
	elsewhere map[*session]bool
	// dropped is each session's committed seq when edge-2 dropped its
	// copy (evCopyLost): edge-2 lacks what it had, not what came since.
	dropped map[*session]uint64
	// members is this edge's cluster; others, edge-4 and edge-5.
	members *fuzzMembers
	others  [2]*otherEdge
	incs    int // incarnations begun elsewhere
}

func newHubFuzzRepl(h *hub, m *metrics) *hubFuzzRepl {
	log := slog.New(slog.DiscardHandler)
	members := &fuzzMembers{alive: map[string]health.Node{"edge-4": {}, "edge-5": {}}}
	o := &ownership{self: "edge-1", m: members, ring: ring.New(ring.Config{Partitions: 7, Replication: 4, Load: 1.25})}
	o.ring.Update([]ring.Member{{Name: "edge-1"}, {Name: "edge-2"}})
	newRepl := func(srv *Server, o *ownership) *replicator {
		return &replicator{
			srv: srv, o: o, log: log, sync: true, timeout: time.Second,
			// One edge's budget holds its copies too: edge-2's share
			// this one's, so they compete with its histories.
			store: newReplicaStore(h.budget),
			links: map[string]*link{}, retiring: map[*link]struct{}{}, fences: map[string][]pendingFence{}, takeovers: map[string]takeover{}, inbound: map[*websocket.Conn]*ownerStream{},
			stop: make(chan struct{}),
		}
	}
	rp := &hubFuzzRepl{elsewhere: map[*session]bool{}, dropped: map[*session]uint64{}, members: members}
	rp.others = [2]*otherEdge{{name: "edge-4"}, {name: "edge-5"}}
	rp.r = newRepl(&Server{name: "edge-1", hub: h, metrics: m, log: log}, o)
	for _, e := range rp.others {
		// A link without its goroutine: fences for them queue on it
		// (fenceLater), nothing dials.
		rp.r.links[e.name] = &link{
			r: rp.r, peer: e.name, wake: make(chan struct{}, 1), done: make(chan struct{}),
			sessions: map[*session]struct{}{}, resync: map[*session]struct{}{}, orphans: map[*session]time.Time{},
		}
	}
	h2 := newHub(16, m)
	h2.idle = newIdleSessions(16)
	h2.budget = h.budget
	h2.historyMsgs, h2.historyByte = h.historyMsgs, h.historyByte // its copies' bounds
	o2 := &ownership{self: "edge-2", m: &fuzzMembers{}, ring: o.ring}
	rp.r2 = newRepl(&Server{name: "edge-2", hub: h2, metrics: m, log: log}, o2)
	rp.l = rp.newLink()
	rp.streamUp()
	h.repl.Store(rp.r)
	return rp
}

// newLink makes the link to edge-2 as linkLocked does, without its
// goroutine: the fuzz plays its stream.
func (rp *hubFuzzRepl) newLink() *link {
	l := &link{
		r: rp.r, peer: "edge-2", wake: make(chan struct{}, 1), done: make(chan struct{}),
		sessions: map[*session]struct{}{}, resync: map[*session]struct{}{}, orphans: map[*session]time.Time{},
	}
	rp.r.mu.Lock()
	rp.r.links["edge-2"] = l
	rp.r.mu.Unlock()
	return l
}

// streamUp is what link.serve does as a stream begins.
func (rp *hubFuzzRepl) streamUp() bool {
	l := rp.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.connected || l.closed {
		return false
	}
	l.gen++
	l.connected, l.nextBatch = true, 1
	for _, c := range l.commits {
		l.orphan(c.s, l.builtAt)
	}
	l.building, l.commits = l.building[:0], nil
	for s := range l.sessions {
		l.resync[s] = struct{}{}
	}
	rp.sent = nil
	return true
}

// streamDown is what link.serve does as its stream ends: what was sent
// and not acknowledged waits with no record on a live stream.
func (rp *hubFuzzRepl) streamDown() bool {
	l := rp.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.connected {
		return false
	}
	l.connected = false
	for i := range l.inflight {
		for _, c := range l.inflight[i].commits {
			l.orphan(c.s, l.inflight[i].at)
		}
	}
	clear(l.inflight)
	l.inflight = l.inflight[:0]
	rp.sent = nil
	return true
}

// ship is one turn of link.serve's loop: the sessions to send whole,
// then what queued written as the next batch (writeNext, its write
// kept for edge-2 to read).
func (rp *hubFuzzRepl) ship() bool {
	l := rp.l
	l.mu.Lock()
	gen, up := l.gen, l.connected && !l.closed
	l.mu.Unlock()
	if !up {
		return false
	}
	l.syncSessions(gen)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := sentBatch{n: l.nextBatch, at: l.builtAt, commits: l.commits}
	if len(l.building) == 0 {
		b.at = time.Now()
	}
	l.nextBatch++
	rp.sent = append(rp.sent, append([]byte(nil), l.building...))
	l.building, l.commits = l.building[:0], nil
	l.inflight = append(l.inflight, b)
	return true
}

// ack is edge-2 reading the oldest batch sent (serveStream: apply, then
// its answers and ack) and this edge reading the answer (readAnswers);
// with writer, the link's writer (serve's loop, woken by a resync) runs
// between the answer's records and the commits of its ack.
func (rp *hubFuzzRepl) ack(writer bool) (answers []byte, ok bool) {
	if len(rp.sent) == 0 {
		return nil, false
	}
	l := rp.l
	batch := rp.sent[0]
	rp.sent = rp.sent[1:]
	answers, err := rp.r2.apply("edge-1", batch, nil)
	if err != nil {
		panic("edge-2 refused a batch: " + err.Error())
	}
	l.mu.Lock()
	n := l.inflight[0].n
	l.mu.Unlock()
	answers = appendAck(answers, n)
	acked, err := l.answered(answers)
	if err != nil {
		panic("edge-2's answer does not read: " + err.Error())
	}
	if writer {
		l.mu.Lock()
		gen, up := l.gen, l.connected && !l.closed
		l.mu.Unlock()
		if up {
			l.syncSessions(gen)
		}
	}
	l.ackUpTo(acked, nil)
	return answers, true
}

// relink closes the link (its waiting msgs shown) and makes another
// (disconnected) that every session moves to, as a ring change does.
func (rp *hubFuzzRepl) relink() {
	old := rp.l
	rp.r.mu.Lock()
	delete(rp.r.links, "edge-2")
	rp.r.mu.Unlock()
	old.close()
	rp.l = rp.newLink()
	rp.sent = nil
	rp.r.srv.hub.eachSession(func(_ *hubShard, s *session) {
		s.mu.Lock()
		rp.r.assign(s)
		s.mu.Unlock()
	})
}

// tracked reports whether s's pending msgs are waiting on something that
// shows them: its link's batch being filled or one sent (a commit at
// or past its last pending seq), an orphan (its next snapshot, or the
// fallback, shows it), or a snapshot due. Called with s.mu held.
func tracked(s *session) bool {
	l := s.repl
	if l == nil {
		return false
	}
	last := s.v1.pending[len(s.v1.pending)-1].seq
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.orphans[s]; ok {
		return true
	}
	for _, c := range l.commits {
		if c.s == s && c.seq >= last && s.replGen == l.gen {
			return true
		}
	}
	for _, b := range l.inflight {
		for _, c := range b.commits {
			if c.s == s && c.seq >= last && s.replGen == l.gen {
				return true
			}
		}
	}
	_, due := l.resync[s]
	return due && l.connected
}

// queuedPast returns a msg or ack queued to p at a seq past its
// session's committed one ("" when none). Called with p.session's lock
// held.
func queuedPast(t *testing.T, p *participant) (e env, found bool) {
	committed := p.session.v1.committed
	o := &p.out
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := range o.n {
		f := o.queue[(o.head+i)%len(o.queue)]
		for _, m := range jobMessages(f) {
			var e env
			if err := json.Unmarshal(m, &e); err != nil {
				t.Fatal(err)
			}
			if (e.Type == "msg" || e.Type == "ack") && e.Seq > committed {
				return e, true
			}
		}
	}
	return env{}, false
}

// msgOf returns the msg ("from data") a history frame holds.
func msgOf(t *testing.T, f *frame) string {
	var e env
	if err := json.Unmarshal(f.payload(), &e); err != nil {
		t.Fatal(err)
	}
	return e.From + " " + string(e.Data)
}

// copyIn returns r's copy of key's session (nil: none).
func copyIn(r *replicator, key string) *v1Session {
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	if c := r.store.copies[key]; c != nil {
		return c.v
	}
	return nil
}

// send has e replicate its live session of key (k) here, n msgs more
// (each logged by sequenced first): sent whole when this edge's copy is
// not at its seq, then the msgs, as one batch applied by this edge's
// replicator. A fence answered ends e's session (it yields); without a
// resync or fence for key the batch is acknowledged: what it carried is
// shown.
func (rp *hubFuzzRepl) send(e *otherEdge, k int, key string, n int, sequenced func(epoch string, seq uint64, msg string)) (answers []byte) {
	inc := e.incs[k]
	var recs []byte
	if c := copyIn(rp.r, key); c == nil || c.epoch != inc.epoch || c.term != inc.term || c.seq != inc.seq {
		recs = appendSnapshot(recs, inc.term, inc.seq, inc.epoch, key)
	}
	for range n {
		inc.seq++
		msg := fmt.Sprintf("%s %d", strings.ReplaceAll(e.name, "-", ""), inc.seq)
		sequenced(inc.epoch, inc.seq, msg)
		recs = appendMsg(recs, inc.term, inc.seq, key, envelope(inc.seq, msg))
	}
	if len(recs) == 0 {
		return nil
	}
	answers, err := rp.r.apply(e.name, recs, nil)
	if err != nil {
		panic("edge-1 refused a batch: " + err.Error())
	}
	acked := true
	var rec record
	rd := reader{b: answers}
	for rd.next(&rec) {
		if string(rec.key) != key {
			continue
		}
		acked = false
		if rec.kind == recFence {
			inc.live = false
		}
	}
	if acked {
		inc.acked = inc.seq
	}
	return answers
}

// begin starts e's incarnation of key (k), at seq 0, when the model
// allows one: e is alive, and no session of key lives anywhere modelled
// (placement's claims and pins would send the join there). here: this
// edge has a session of key in its map, live or frozen — one handed on or
// yielded lives on at an edge not played (edge-2, edge-3).
func (rp *hubFuzzRepl) begin(e *otherEdge, k int, here bool) *incarnation {
	if _, alive := rp.members.alive[e.name]; !alive || e.crashed || e.draining || here || rp.liveElsewhere(k) != nil {
		return nil
	}
	rp.incs++
	e.incs[k] = &incarnation{epoch: fmt.Sprintf("%s-%d", e.name, rp.incs), term: 1, live: true}
	return e.incs[k]
}

// liveElsewhere returns an other edge whose session of key (k) lives.
func (rp *hubFuzzRepl) liveElsewhere(k int) *otherEdge {
	for _, e := range rp.others {
		if inc := e.incs[k]; inc != nil && inc.live {
			return e
		}
	}
	return nil
}

// other returns the other edge bit 4 of arg names, and the one it does not.
func (rp *hubFuzzRepl) other(arg byte) (e, f *otherEdge) {
	i := int(arg>>4) & 1
	return rp.others[i], rp.others[1-i]
}

// crash ends every session of e.
func (e *otherEdge) crash() {
	e.crashed = true
	for _, inc := range e.incs {
		if inc != nil {
			inc.live = false
		}
	}
}

// gossip runs what a membership change runs of promotion
// (membershipChanged: promoteOrphans), on a ring that gives the keys here
// (the cluster's, edge-1 and edge-2) or, elsewhere, to edge-2 alone.
func (rp *hubFuzzRepl) gossip(elsewhere bool) {
	if elsewhere {
		rp.r.o.ring.Update([]ring.Member{{Name: "edge-2"}})
		defer rp.r.o.ring.Update([]ring.Member{{Name: "edge-1"}, {Name: "edge-2"}})
	}
	rp.r.promoteOrphans()
}

// fenced reports whether a fence of key at term or later waits for peer.
func (rp *hubFuzzRepl) fenced(peer, key string, term uint64) bool {
	rp.r.mu.Lock()
	defer rp.r.mu.Unlock()
	for _, f := range rp.r.fences[peer] {
		if f.key == key && f.term >= term {
			return true
		}
	}
	return false
}

// claimHolds reports whether e's claim on key holds here.
func (rp *hubFuzzRepl) claimHolds(h *hub, key string, e *otherEdge) bool {
	sh := h.shardOf(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	c, ok := sh.claimed(key, rp.r.o.goneEdges(nil), h.now())
	return ok && c == e.name
}
