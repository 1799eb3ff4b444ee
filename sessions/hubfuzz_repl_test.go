package sessions

import (
	"encoding/json"
	"log/slog"
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
// lost ones as holes, or a reset that says why.
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
// alive, a ring that moves a session between replicas and back on one
// link (detach then attach with its old batches' acks still to come),
// promotion on join or by gossip (promoteOnJoin, promoteOrphans), and
// the low-memory paths of the history budget.
func FuzzHubReplEvents(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		runHubEvents(t, in, true)
	})
}

// The events of FuzzHubReplEvents after FuzzHubEvents' (its bits 0–4).
const (
	evShip       = numHubEvents + iota // the link sends what it queued as a batch
	evAck                              // edge-2 applies the oldest batch sent and answers it (bit 4: the link's writer runs in between)
	evFallback                         // replication_timeout: the link falls back to async
	evStreamDown                       // the stream ends
	evStreamUp                         // a stream begins anew
	evResyncKey                        // edge-2 asks for key's session whole
	evRelink                           // the link closes and a new one replaces it
	evFence                            // a fence of a newer owner of key: bit 4 stale
	evPromote                          // key's session crashes here; its copy is promoted
	evCopyLost                         // edge-2 drops its copy of key (full, or taken for stale)
	numReplEvents
)

// historyTotals are the history budgets of FuzzHubReplEvents (its
// replication config, bits 0–1): ample, a few msgs, two, one.
var historyTotals = [4]int{1 << 20, 400, 150, 80}

// fuzzMembers is a cluster no other edge of which is alive (replicator
// asks only Node).
type fuzzMembers struct{ Membership }

func (fuzzMembers) Node(string) (health.Node, bool) { return health.Node{}, false }

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
}

func newHubFuzzRepl(h *hub, m *metrics) *hubFuzzRepl {
	log := slog.New(slog.DiscardHandler)
	o := &ownership{self: "edge-1", m: fuzzMembers{}, ring: ring.New(ring.Config{Partitions: 7, Replication: 4, Load: 1.25})}
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
	rp := &hubFuzzRepl{elsewhere: map[*session]bool{}, dropped: map[*session]uint64{}}
	rp.r = newRepl(&Server{name: "edge-1", hub: h, metrics: m, log: log}, o)
	h2 := newHub(16, m)
	h2.idle = newIdleSessions(16)
	h2.budget = h.budget
	h2.historyMsgs, h2.historyByte = h.historyMsgs, h.historyByte // its copies' bounds
	o2 := &ownership{self: "edge-2", m: fuzzMembers{}, ring: o.ring}
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
		for _, g := range jobFrames(f) {
			var e env
			if err := json.Unmarshal(g.payload(), &e); err != nil {
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
