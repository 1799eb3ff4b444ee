package sessions

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/balancer/acceptguard"
	"github.com/ringlb/ringlb/balancer/httplog"
	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
)

// Replication: a crash of an edge loses none of its ringlb.v1 sessions
// (docs/DESIGN.md, "Replication"; sessions/README.md).
//
// Every v1 session's owner streams its state — epoch, term, sequence and
// history — to one replica: the first edge after the session's host among
// the ring's candidates for its key (ring.Snapshot.Candidates), which is
// exactly where balancers send the key once the host is gone. The replica
// keeps a frozen copy that serves nothing (replica.go). When the host dies
// (gossip declares it dead, or a balancer names it in X-Ringlb-Skip on a
// join for the key) the replica promotes its copy: the same epoch and seq,
// so clients resume {after, epoch} there with nothing missed and no reset,
// and a term one higher. An owner that was only paused, or cut off, learns
// it was superseded — its replica answers its records with a fence of the
// higher term, and the promoting edge sends it one too — and yields: it
// stops sequencing and closes the session's participants with 1012 so they
// resume on the new owner.
//
// edge.replication says what an ack means. sync: a msg is sequenced and
// kept, but nobody — neither the others nor its sender's ack — sees it
// until the replica has acknowledged the batch that carries it (commit), so
// no msg anyone saw is missing on the replica. async: everyone sees it at
// once and the replica follows, its lag bounded by the stream's queue and
// reported. A replica that does not acknowledge within
// edge.replication_timeout (stopped, overloaded, gone) turns its stream to
// async — counted and logged, never a client blocked longer — until it
// catches up.
//
// This file is the owner's side: the replicator (one per edge, also the
// replica side's home), one link per replica edge (a long-lived signed
// WebSocket stream, its bounded queue, its batches and their acks), and
// the commit of waiting msgs. replwire.go is the stream's format;
// replica.go the receiving side, promotion and fencing.

// Bounds and timings of a replication stream.
const (
	// maxLinkQueue bounds the records waiting for one replica stream. A
	// replica that falls this far behind gets the sessions whose records did
	// not fit sent whole (a snapshot) once it has room again.
	maxLinkQueue = 4 << 20
	// linkDialTimeout bounds dialing a replica and reading its hello: a
	// stopped process accepts connections (the kernel's backlog) and answers
	// nothing.
	linkDialTimeout = 2 * time.Second
	// linkIdle is how often an idle stream says it is alive; streamIdle how
	// long either side waits for a batch before taking the stream for dead.
	linkIdle   = 30 * time.Second
	streamIdle = 3 * linkIdle
	// linkBackoffMax bounds the pause between two dials of a replica.
	linkBackoffMax = 2 * time.Second
	// fenceTTL is how long a fence waits for its stale owner to come back.
	fenceTTL = 5 * time.Minute
	// maxFences bounds the fences held for owners that are gone.
	maxFences = 100_000
)

// replicator is an edge's replication: the links to its replicas (as an
// owner) and the copies it keeps for other edges (as a replica,
// replica.go). Made by UseCluster; its goroutines stop at Shutdown.
type replicator struct {
	srv     *Server
	o       *ownership
	log     *slog.Logger
	sync    bool          // edge.replication: sync (else async, or off)
	off     bool          // edge.replication: off: replicate nothing, replica side only
	timeout time.Duration // edge.replication_timeout
	store   *replicaStore // copies of other edges' sessions (replica.go)
	dialer  websocket.Dialer

	mu     sync.Mutex
	closed bool
	links  map[string]*link // by replica edge
	// retiring are the links reassign ended that still write what was
	// queued on them (link.retire), until they stop: Shutdown cuts them.
	retiring map[*link]struct{}
	fences   map[string][]pendingFence // by stale owner: fences to deliver once it is back
	// takeovers are the sessions this edge took over (promote), by key,
	// kept for fenceTTL as their fences are (takenOver).
	takeovers map[string]takeover
	inbound   map[*websocket.Conn]*ownerStream // streams from owners (replica.go)
	// upgrades are the signatures of the upgrades that opened a stream
	// here: each opens one (serveReplicate).
	upgrades onceSigs
	// lastTick is watch's last wake; awake when it last woke from a
	// stall of this edge (tick).
	lastTick, awake time.Time
	// endLog spaces the lines of inbound streams ended by what they
	// carried: an owner begins its stream anew at once, so one that keeps
	// sending what ends it would write them as fast as it reconnects.
	endLog acceptguard.LogLimit
	// fullLog spaces the lines of copies refused by a full replica: one
	// per session, on either side.
	fullLog acceptguard.LogLimit

	stop chan struct{}
	wg   sync.WaitGroup // watch, every link's goroutines, every inbound stream
}

// pendingFence is a fence waiting for its stale owner.
type pendingFence struct {
	key  string
	term uint64
	at   time.Time
}

// takeover is a session this edge took over: from its owner, of its
// incarnation epoch, at term.
type takeover struct {
	from, epoch string
	term        uint64
	at          time.Time
}

// commitRef is a msg of a session waiting for the replica: once the batch
// carrying it is acknowledged, s may show everything up to seq — unless
// the session's turn (session.replTurn) has passed since.
type commitRef struct {
	s    *session
	seq  uint64
	turn uint64
}

// sentBatch is a batch written to the stream and not yet acknowledged.
type sentBatch struct {
	n       uint64
	at      time.Time // when its first record was queued
	commits []commitRef
}

// link is the stream to one replica edge. Its mutex is taken after a
// session's (replicate, snapshot) and never held while taking one.
type link struct {
	r       *replicator
	peer    string
	wake    chan struct{} // cap 1: records queued, or the stream ended
	done    chan struct{} // closed by close and retire
	stopped chan struct{} // closed as run returns
	// after are the retired links to the same edge that were still
	// writing what was queued on them when this one was made: it dials
	// only once they stopped, so none of their frees lands on the replica
	// after a snapshot this one sends (a free drops the copy it names).
	after []*link

	mu sync.Mutex
	// sessions are those replicated here (s.repl == l); resync those to
	// send whole (a snapshot) on the current stream: every one on a new
	// stream, any whose records did not fit or that the replica asked for.
	sessions map[*session]struct{}
	resync   map[*session]struct{}
	// refused are the sessions whose copy the replica did not keep (it is
	// full): sent nothing, their msgs waiting for nothing, until the next
	// stream sends them whole again.
	refused map[*session]struct{}
	// building is the batch being filled (records), commits the msgs it
	// carries that wait, builtAt when its first record came; spare is the
	// previous batch's buffer, reused.
	building, spare []byte
	commits         []commitRef
	builtAt         time.Time
	inflight        []sentBatch
	// orphans are sessions with msgs waiting and no record of them on the
	// live stream (it was down, the queue full, the session's snapshot not
	// sent yet), with when the oldest began to wait: the session's next
	// snapshot carries them (its ack commits them), or the fallback does.
	orphans map[*session]time.Time
	// fencesDue are the fences waiting for the peer when the stream
	// began, told a part at a time (tellFences): all in its first batch,
	// they could pass what the peer reads of one.
	fencesDue []pendingFence
	// gen counts streams; a session is in step with the replica when its
	// replGen is the current gen (its snapshot went on this stream).
	gen uint64
	// syncedGen is the stream whose synced record is queued: once every
	// session went whole on it (syncSessions).
	syncedGen uint64
	connected bool
	conn      *websocket.Conn
	stream    *streamConn // conn's connection, under the WebSocket
	nextBatch uint64
	// degraded: under sync, the replica took longer than
	// replication_timeout; msgs no longer wait for it until it catches up.
	degraded bool
	closed   bool
	// flushBy is set when reassign retires the link with records queued
	// or unacknowledged on a live stream: its writer writes them and waits
	// for their ack until then, and only then closes the stream.
	flushBy time.Time
}

// startReplication makes the edge's replicator; UseCluster calls it.
func (s *Server) startReplication(o *ownership) *replicator {
	r := &replicator{
		srv: s, o: o, log: s.log.With("component", "replication"),
		sync: s.cfg.Replication == configs.ReplicationSync, off: s.cfg.Replication == configs.ReplicationOff,
		timeout: s.cfg.ReplicationTimeout.D(),
		store:   newReplicaStore(s.hub.budget),
		links:   make(map[string]*link), retiring: make(map[*link]struct{}), fences: make(map[string][]pendingFence), takeovers: make(map[string]takeover),
		inbound: make(map[*websocket.Conn]*ownerStream),
		stop:    make(chan struct{}),
	}
	r.dialer = websocket.Dialer{
		HandshakeTimeout: linkDialTimeout,
		NetDialContext:   (&net.Dialer{Timeout: linkDialTimeout}).DialContext,
		ReadBufferSize:   16 << 10,
		WriteBufferSize:  64 << 10,
	}
	// Registered here, not in metrics.go: they read the replicator.
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ringlb_edge_replication_lag_seconds",
			Help: "Age of the oldest record this edge sent its replicas that is not acknowledged yet (0: all caught up).",
		}, r.lag),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ringlb_edge_replica_sessions",
			Help: "Copies of other edges' sessions this edge keeps as their replica.",
		}, func() float64 { return float64(r.store.count()) }),
	} {
		if err := s.reg.Register(c); err != nil {
			s.log.Warn("replication metric not registered", "err", err)
		}
	}
	s.hub.repl.Store(r)
	if !r.off {
		r.wg.Add(1)
		go r.watch()
	}
	return r
}

// close stops every stream and goroutine (Shutdown).
func (r *replicator) close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	close(r.stop)
	links := make([]*link, 0, len(r.links)+len(r.retiring))
	for _, l := range r.links {
		links = append(links, l)
	}
	for l := range r.retiring {
		links = append(links, l) // cut: Shutdown writes nothing more
	}
	for c := range r.inbound {
		_ = c.NetConn().Close()
	}
	r.mu.Unlock()
	for _, l := range links {
		l.close()
	}
	r.wg.Wait()
}

// replicaFor names the replica of a session of key hosted here: the first
// of the ring's candidates for key that is not this edge — where balancers
// send the key once this edge is gone (its owner without us, or, for a
// session pinned here, its owner) — "" when there is none. Every edge must
// choose by this rule alone: a replica elsewhere is one no join reaches.
// Right after a promotion that may be the edge promoted from, still on
// our ring: dead, its stream falls back to async until gossip drops it;
// alive (only unreachable for a balancer), the snapshot of the newer term
// fences it.
func (r *replicator) replicaFor(key string) string {
	var buf [8]ring.Member
	for _, m := range r.o.ring.Snapshot().Candidates([]byte(key), buf[:0]) {
		if m.Name != r.o.self {
			return m.Name
		}
	}
	return ""
}

// assign points the v1 session s at its replica, moving it from another
// one (freed there) when the ring changed. Called with s.mu held (and its
// shard's), r.mu not held.
func (r *replicator) assign(s *session) {
	if r.off || s.v1 == nil || s.movedTo != "" {
		return
	}
	r.mu.Lock()
	var l *link
	if !r.closed {
		if want := r.replicaFor(s.key); want != "" {
			l = r.linkLocked(want)
		}
	}
	r.mu.Unlock()
	if s.repl == l && l != nil {
		return
	}
	if s.repl != nil {
		s.repl.detach(s)
	}
	if l == nil {
		// No replica: nothing to wait for.
		r.srv.hub.commit(s, s.v1.seq)
		return
	}
	l.attach(s)
}

// release stops replicating s (freed, frozen, superseded): its replica
// drops its copy. Called with s.mu held.
func (r *replicator) release(s *session) {
	if s.repl != nil {
		s.repl.detach(s)
	}
}

// reassign moves every session whose replica the ring changed (a ring
// change), and retires the links to edges gone from the cluster.
//
// An edge gone from this edge's view may be alive all the same (taken for
// dead: a stall, a one-way partition), and its copies of the sessions
// moved off it go only by the frees assign just queued: its link is
// retired, not cut, so they are written and acknowledged before the
// stream closes — within writeWait, in the background, so a replica that
// is really dead stalls nothing. Cut at once, the frees were almost never
// written; the replica kept the copies for as long as this edge lived and
// promoted them, ended sessions and all, at its crash. What a retired link
// cannot deliver (the path to the replica is down) the replica drops
// itself once the stream stays down (sweepCopies).
func (r *replicator) reassign() {
	if !r.off && !r.srv.draining.Load() {
		r.srv.hub.eachSession(func(_ *hubShard, s *session) {
			s.mu.Lock()
			r.assign(s)
			s.mu.Unlock()
		})
	}
	r.mu.Lock()
	var gone []*link
	for name, l := range r.links {
		if !r.closed && !r.o.member(name) {
			delete(r.links, name)
			r.retiring[l] = struct{}{}
			gone = append(gone, l)
		}
	}
	r.mu.Unlock()
	for _, l := range gone {
		l.retire()
	}
}

// linkLocked returns the link to peer, made and started on first use.
// Called with r.mu held; nil once closed.
func (r *replicator) linkLocked(peer string) *link {
	if r.closed {
		return nil
	}
	if l := r.links[peer]; l != nil {
		return l
	}
	l := &link{
		r: r, peer: peer, wake: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{}),
		sessions: make(map[*session]struct{}), resync: make(map[*session]struct{}), refused: make(map[*session]struct{}),
		orphans: make(map[*session]time.Time),
	}
	for prev := range r.retiring {
		if prev.peer == peer {
			l.after = append(l.after, prev)
		}
	}
	r.links[peer] = l
	r.wg.Add(1)
	go l.run()
	return l
}

// replicate queues the msg f (seq) of s for its replica and reports
// whether it must wait for the replica before anyone sees it (sync).
// Called by publish with s.mu held. It never blocks: a replica that does
// not keep up gets the session whole later.
func (r *replicator) replicate(s *session, f *frame, seq uint64) (wait bool) {
	l := s.repl
	if l == nil {
		return false
	}
	v := s.v1
	payload := f.payload()
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.refused[s]; ok {
		return false // no copy there to keep it (refuse)
	}
	// Once one msg waits, the later ones wait behind it: one order for all.
	wait = r.sync && (!l.degraded || len(v.pending) > 0)
	switch {
	case l.closed:
		// Its close shows every msg waiting on it (commitAll), this one too
		// when it waits behind them; otherwise nothing is left to wait for.
		return len(v.pending) > 0
	case s.replGen != l.gen || !l.connected:
		// Its snapshot (still to be sent on this stream) will carry it.
	case len(l.building) > 0 && len(l.building)+recordHead+18+len(s.key)+len(payload) > maxLinkQueue:
		l.unsync(s)
	default:
		if len(l.building) == 0 {
			l.builtAt = time.Now()
		}
		l.building = appendMsg(l.building, v.term, seq, s.key, payload)
		if wait {
			l.commits = append(l.commits, commitRef{s, seq, s.replTurn})
		}
		l.kick()
		return wait
	}
	if wait {
		l.orphan(s, time.Now())
	}
	return wait
}

// skipped tells s's replica that its seq jumped past msgs lost with the
// previous owner (resume after a promotion). Called with s.mu held.
func (r *replicator) skipped(s *session) {
	l := s.repl
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if s.replGen == l.gen && l.connected && !l.closed {
		if len(l.building) == 0 {
			l.builtAt = time.Now()
		}
		l.building = appendSkip(l.building, s.v1.term, s.v1.seq, s.key)
		l.kick()
	}
}

// commit shows the msgs of c's session up to its seq, acknowledged by l's
// replica, unless the session has moved to another replica or must be
// sent whole again since (its turn passed: only its snapshot's ack shows
// them).
func (r *replicator) commit(c commitRef, l *link) {
	s := c.s
	s.mu.Lock()
	if s.repl == l && s.replGen != 0 && c.turn == s.replTurn {
		r.srv.hub.commit(s, c.seq)
	}
	s.mu.Unlock()
}

// commitAll shows every msg of s waiting for its replica l: the replica
// is too slow (fallback), gone, or the session has none any more. A
// session moved to another replica since waits for that one: shown here,
// its msgs were acknowledged with no replica holding them.
func (r *replicator) commitAll(s *session, l *link) {
	s.mu.Lock()
	if s.v1 != nil && (s.repl == l || s.repl == nil) {
		r.srv.hub.commit(s, s.v1.seq)
	}
	s.mu.Unlock()
}

// watch applies replication_timeout: a stream whose oldest waiting msg is
// older turns async (degraded) and every msg waiting on it is shown.
func (r *replicator) watch() {
	defer r.wg.Done()
	t := time.NewTicker(r.tickEvery())
	defer t.Stop()
	r.mu.Lock()
	r.lastTick = time.Now()
	r.mu.Unlock()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.tick(time.Now())
		}
	}
}

// tick is one of watch's wakes, at now.
//
// A wake more than replication_timeout after the last one means this edge
// did not run meanwhile (stopped, its machine stalled): its waiting msgs
// are older than the timeout though the replica has had no time to answer
// them — their records may not even be written yet, or the replica's
// fences for them (gossip took this edge for dead) not pushed yet. Only
// what waits from then on counts against the replica: falling back at the
// first wake showed, and acknowledged, msgs of sessions already promoted
// elsewhere without them. A shorter lateness is not taken for a stall: an
// edge whose wakes all come late (a starved machine) would never fall
// back.
func (r *replicator) tick(now time.Time) {
	r.mu.Lock()
	if now.Sub(r.lastTick) > r.timeout {
		r.awake = now
	}
	r.lastTick = now
	awake := r.awake
	links := make([]*link, 0, len(r.links))
	for _, l := range r.links {
		links = append(links, l)
	}
	r.mu.Unlock()
	for _, l := range links {
		l.checkTimeout(now, awake)
	}
}

// tickEvery is how often watch wakes.
func (r *replicator) tickEvery() time.Duration { return max(r.timeout/4, 5*time.Millisecond) }

// lag is the age of the oldest unacknowledged record of any stream.
func (r *replicator) lag() float64 {
	r.mu.Lock()
	links := make([]*link, 0, len(r.links))
	for _, l := range r.links {
		links = append(links, l)
	}
	r.mu.Unlock()
	var oldest time.Time
	for _, l := range links {
		l.mu.Lock()
		at := time.Time{}
		switch {
		case len(l.inflight) > 0:
			at = l.inflight[0].at
		case len(l.building) > 0:
			at = l.builtAt
		}
		l.mu.Unlock()
		if !at.IsZero() && (oldest.IsZero() || at.Before(oldest)) {
			oldest = at
		}
	}
	if oldest.IsZero() {
		return 0
	}
	return time.Since(oldest).Seconds()
}

// fenceLater remembers that the stale owner peer must be told it lost key
// (its incarnation epoch) to this edge at term. It is told on every stream
// to it until fenceTTL passes (a fence is idempotent): at once when it is
// still in the cluster (a balancer could not reach it), else once it is
// back.
func (r *replicator) fenceLater(peer, key, epoch string, term uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := pendingFence{key: key, term: term, at: time.Now()}
	// Bounded as the fences are; the old ones go when full, and at each
	// membership change.
	if len(r.takeovers) >= maxFences {
		r.pruneTakeovers(f.at)
	}
	if len(r.takeovers) < maxFences {
		r.takeovers[key] = takeover{from: peer, epoch: epoch, term: term, at: f.at}
	}
	r.fences[peer] = keepFence(r.fences[peer], f)
	// At once on the peer's own streams to this edge, if it has one up:
	// the peer may be out of this edge's reach (the reason a balancer
	// skipped it) while its stream here still works.
	for _, stream := range r.inbound {
		if stream.from == peer {
			stream.queueFence(f)
		}
	}
	if l := r.links[peer]; l != nil {
		l.queueFence(f)
	} else if r.o.member(peer) {
		r.linkLocked(peer)
	}
}

// takenOver returns the term at which this edge took the session of key,
// incarnation epoch, over from peer, when that is newer than term (0: it
// did not, or fenceTTL ago). Asked when peer sends that incarnation
// whole: once the takeover has ended here no fence of it is told
// (fenceHolds), and a peer cut off for longer than the takeover lived
// came back serving the stale incarnation, replicated here as if new. The
// epoch tells it from an incarnation the key's owner started since, which
// keeps its place.
func (r *replicator) takenOver(peer, key, epoch string, term uint64) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.takeovers[key]
	if !ok || t.from != peer || t.epoch != epoch || t.term <= term || time.Since(t.at) >= fenceTTL {
		return 0
	}
	return t.term
}

// pruneTakeovers forgets the takeovers older than fenceTTL. Called with
// r.mu held.
func (r *replicator) pruneTakeovers(now time.Time) {
	maps.DeleteFunc(r.takeovers, func(_ string, t takeover) bool { return now.Sub(t.at) >= fenceTTL })
}

// keepFence appends f to fs, the oldest giving way past maxFences.
func keepFence(fs []pendingFence, f pendingFence) []pendingFence {
	if len(fs) >= maxFences {
		fs = fs[1:]
	}
	return append(fs, f)
}

// fencesFor returns the fences waiting for peer that still hold
// (fenceHolds: checked without r.mu, which is taken under a shard's lock).
func (r *replicator) fencesFor(peer string) []pendingFence {
	r.mu.Lock()
	fences := append([]pendingFence(nil), r.fences[peer]...)
	r.mu.Unlock()
	return slices.DeleteFunc(fences, func(f pendingFence) bool { return !r.fenceHolds(f) })
}

// membershipChanged runs after every membership change (the ring already
// rebuilt): fences go to owners that are back, copies of a dead owner's
// sessions are promoted (replica.go).
func (r *replicator) membershipChanged(ringChanged bool) {
	if ringChanged {
		r.reassign()
	}
	now := time.Now()
	r.mu.Lock()
	r.pruneTakeovers(now)
	for peer, fs := range r.fences {
		kept := fs[:0]
		for _, f := range fs {
			if now.Sub(f.at) < fenceTTL {
				kept = append(kept, f)
			}
		}
		if len(kept) == 0 {
			delete(r.fences, peer)
			continue
		}
		r.fences[peer] = kept
		if r.o.member(peer) {
			r.linkLocked(peer) // a new stream sends them
		}
	}
	r.mu.Unlock()
	r.promoteOrphans()
}

// attach makes l the replica of s: its snapshot goes on the stream next.
// Called with s.mu held.
func (l *link) attach(s *session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s.repl, s.replGen = l, 0
	s.replTurn++
	l.sessions[s] = struct{}{}
	l.resync[s] = struct{}{}
	if len(s.v1.pending) > 0 {
		l.orphan(s, time.Now())
	}
	l.kick()
}

// detach stops replicating s here; the replica drops its copy. Called with
// s.mu held.
func (l *link) detach(s *session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.sessions, s)
	delete(l.resync, s)
	delete(l.refused, s)
	delete(l.orphans, s)
	// Whether or not s is in step with the stream: one waiting to be sent
	// whole again (unsync: its records did not fit the queue) has a copy
	// there all the same, which nothing else would drop while the stream
	// lasts. A free for a copy the replica lacks drops nothing.
	if l.connected && !l.closed {
		if len(l.building) == 0 {
			l.builtAt = time.Now()
		}
		l.building = appendFree(l.building, s.v1.term, s.key)
		l.kick()
	}
	s.repl, s.replGen = nil, 0
}

// unsync marks s for a snapshot on the current stream (its records stop
// until then). Called with s.mu and l.mu held.
func (l *link) unsync(s *session) {
	s.replGen = 0
	s.replTurn++
	if _, ok := l.sessions[s]; ok {
		l.resync[s] = struct{}{}
	}
	// Its waiting msgs no longer wait on a record (the ack of the batch
	// carrying theirs commits nothing out of step) but on its snapshot:
	// orphans, so replication_timeout still shows them should the stream
	// end or the replica go silent before the snapshot is sent. Tracked by
	// nothing, they waited until the replica came back or the ring changed.
	if len(s.v1.pending) > 0 {
		l.orphan(s, time.Now())
	}
	l.kick()
}

// orphanIfHere orphans s if it is still replicated here: one moved to
// another replica since its msgs went on this stream waits for that one.
// An orphan of another link's was never sent whole here, so it stayed,
// and at replication_timeout the healthy replica was taken for silent.
// Called with l.mu held.
func (l *link) orphanIfHere(s *session, at time.Time) {
	if _, ok := l.sessions[s]; ok {
		l.orphan(s, at)
	}
}

// orphan records that s has a msg waiting since at with no record on the
// live stream. Called with l.mu held.
func (l *link) orphan(s *session, at time.Time) {
	if t, ok := l.orphans[s]; !ok || at.Before(t) {
		l.orphans[s] = at
	}
}

// queueFence sends f on the current stream, if one is up (every new
// stream sends the replicator's fences for the peer anyway).
func (l *link) queueFence(f pendingFence) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.connected && !l.closed {
		l.appendFenceLocked(f)
	}
}

func (l *link) appendFenceLocked(f pendingFence) {
	if len(l.building) == 0 {
		l.builtAt = time.Now()
	}
	l.building = appendFence(l.building, f.term, l.r.o.self, f.key)
	l.kick()
}

// kick wakes the link's writer.
func (l *link) kick() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// close ends the link (Shutdown): its stream is closed at once, a retired
// one's too, and every msg still waiting on it is shown.
func (l *link) close() {
	l.mu.Lock()
	l.flushBy = time.Time{}
	if l.closed {
		if l.conn != nil {
			_ = l.conn.NetConn().Close()
		}
		l.kick()
		l.mu.Unlock()
		return
	}
	l.endLocked()
}

// retire ends the link to an edge gone from the cluster (reassign) as
// close does, but a live stream is closed only once what was queued on it
// and what it carried — the frees of the sessions moved off the edge,
// fences — is acknowledged, or writeWait has passed (serve).
func (l *link) retire() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	if l.connected && (len(l.building) > 0 || len(l.inflight) > 0) {
		l.flushBy = time.Now().Add(l.r.srv.writeWait)
	}
	l.endLocked()
}

// endLocked ends the link: its stream is closed (unless it is flushing)
// and every msg still waiting on it is shown: its sessions have no
// replica any more. Those moved to another one already (reassign, before
// it retires the link) wait for that one's snapshot, which carries them.
// Called with l.mu held; it releases it.
func (l *link) endLocked() {
	l.closed = true
	close(l.done)
	if l.conn != nil && l.flushBy.IsZero() {
		_ = l.conn.NetConn().Close()
	}
	refs := l.takeWaitingLocked()
	l.mu.Unlock()
	for _, c := range refs {
		l.r.commitAll(c.s, l)
	}
}

// takeWaitingLocked takes every waiting msg off the link.
func (l *link) takeWaitingLocked() []commitRef {
	refs := append([]commitRef(nil), l.commits...)
	for s := range l.orphans {
		refs = append(refs, commitRef{s: s})
	}
	for i := range l.inflight {
		refs = append(refs, l.inflight[i].commits...)
		l.inflight[i].commits = nil
	}
	clear(l.orphans)
	l.commits = nil
	return refs
}

// checkTimeout applies replication_timeout to the link (watch): at now,
// this edge running since awake (tick), msgs waiting from before it count
// from it.
func (l *link) checkTimeout(now, awake time.Time) {
	l.mu.Lock()
	oldest := time.Time{}
	older := func(t time.Time) {
		if oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
	}
	for _, at := range l.orphans {
		older(at)
	}
	if len(l.commits) > 0 {
		older(l.builtAt)
	}
	for i := range l.inflight {
		if len(l.inflight[i].commits) > 0 {
			older(l.inflight[i].at)
			break
		}
	}
	if !oldest.IsZero() && oldest.Before(awake) {
		oldest = awake
	}
	if oldest.IsZero() || (!l.degraded && now.Sub(oldest) < l.r.timeout) {
		l.mu.Unlock()
		return
	}
	// Only a silent replica is slow. Answers it sent that this edge has
	// yet to read or handle (this edge was paused past the timeout, or is
	// behind its own backlog) are this edge's delay, and may be fences: a
	// msg shown before them is one the new holder lacks.
	if l.connected && l.stream != nil && !l.stream.silent() {
		l.mu.Unlock()
		return
	}
	l.fallBackLocked(fmt.Sprintf("no acknowledgement for %s (replication_timeout %s)", now.Sub(oldest).Round(time.Millisecond), l.r.timeout))
}

// fallBackLocked turns the stream async (once) and shows every msg waiting
// on it. Called with l.mu held; it releases it.
func (l *link) fallBackLocked(why string) {
	if !l.degraded {
		l.degraded = true
		l.r.srv.metrics.replicationFallbacks.Inc()
		l.r.log.Warn("replica unavailable: replication falls back to async until it catches up", "replica", l.peer, "why", why)
	}
	refs := l.takeWaitingLocked()
	l.mu.Unlock()
	for _, c := range refs {
		l.r.commitAll(c.s, l)
	}
}

// run dials the replica and serves each stream until the link is closed.
func (l *link) run() {
	defer l.r.wg.Done()
	defer func() {
		l.r.mu.Lock()
		delete(l.r.retiring, l)
		l.r.mu.Unlock()
		close(l.stopped)
	}()
	for _, prev := range l.after {
		<-prev.stopped // within its writeWait, or cut by Shutdown
	}
	l.after = nil
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-l.done:
			return
		default:
		}
		conn, stream, keys, err := l.dial()
		if err != nil {
			l.r.log.Debug("replica not reached", "replica", l.peer, "err", err)
			if errors.Is(err, syscall.ECONNREFUSED) && l.r.sync {
				// Nothing listens there (a crashed edge, until gossip
				// drops it): waiting replication_timeout would gain nothing.
				l.mu.Lock()
				l.fallBackLocked("connection refused")
			}
			select {
			case <-l.done:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, linkBackoffMax)
			continue
		}
		backoff = 50 * time.Millisecond
		l.serve(conn, stream, keys)
	}
}

// dial opens a stream to the replica: the signed upgrade with our public
// key for the stream, then its hello with its own, from which both sides
// derive the stream's MAC keys (replwire.go).
func (l *link) dial() (*websocket.Conn, *streamConn, streamKeys, error) {
	r := l.r
	n, ok := r.o.m.Node(l.peer)
	if !ok || n.Meta.URL == "" {
		return nil, nil, streamKeys{}, fmt.Errorf("edge %s is not in the cluster", l.peer)
	}
	u, err := url.Parse(n.Meta.URL)
	if err != nil {
		return nil, nil, streamKeys{}, err
	}
	scheme := "ws"
	if u.Scheme == "https" {
		scheme = "wss"
	}
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, streamKeys{}, err
	}
	ours := base64.RawURLEncoding.EncodeToString(priv.PublicKey().Bytes())
	uri := configs.PathReplicate + "?from=" + url.QueryEscape(r.o.self) + "&key=" + ours
	h := make(map[string][]string)
	r.o.m.Keyring().SignRequest(h, r.o.self, l.peer, "GET", uri, nil)
	ctx, cancel := context.WithTimeout(context.Background(), linkDialTimeout)
	defer cancel()
	go func() { // a link closed meanwhile stops dialing
		select {
		case <-l.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	var stream *streamConn
	d := r.dialer
	d.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := r.dialer.NetDialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		stream = &streamConn{Conn: c}
		return stream, nil
	}
	conn, resp, err := d.DialContext(ctx, scheme+"://"+u.Host+uri, h)
	if err != nil {
		if resp != nil {
			return nil, nil, streamKeys{}, fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, nil, streamKeys{}, err
	}
	conn.SetReadLimit(maxAnswerBatch)
	_ = conn.SetReadDeadline(time.Now().Add(linkDialTimeout))
	_, msg, err := conn.ReadMessage()
	if err == nil {
		var theirs []byte
		if theirs, err = openHello(msg, r.o.m.Keyring(), r.o.self, l.peer, ours); err == nil {
			var keys streamKeys
			if keys, err = newStreamKeys(priv, theirs, true); err == nil {
				_ = conn.SetReadDeadline(time.Time{})
				return conn, stream, keys, nil
			}
		}
	}
	conn.Close()
	return nil, nil, streamKeys{}, fmt.Errorf("hello: %w", err)
}

// streamConn is the owner's end of a replica stream, under the WebSocket
// (and TLS). Its one reader (the dial, then readAnswers) counts what it
// takes from the kernel and says when it waits in a read, so the replica
// is taken for slow (replication_timeout) only when it is silent.
type streamConn struct {
	net.Conn
	reading   atomic.Bool
	delivered atomic.Uint64 // bytes its reads returned
}

func (c *streamConn) Read(b []byte) (int, error) {
	c.reading.Store(true)
	n, err := c.Conn.Read(b)
	// Cleared before the count grows: silent, seeing it set, reads a
	// count without these bytes, which the kernel's includes.
	c.reading.Store(false)
	c.delivered.Add(uint64(n))
	return n, err
}

// silent reports whether the replica owes the reader its next bytes: the
// reader waits in a read (the layers above hold no whole message for it)
// and the kernel has received nothing the reads have not returned. Where
// the kernel does not say (bytesReceived), the reader's wait alone decides.
func (c *streamConn) silent() bool {
	before := c.delivered.Load()
	if !c.reading.Load() {
		return false
	}
	got, ok := bytesReceived(c.Conn)
	if ok && got != before {
		// More came than was read (got < before: a kernel that does not
		// count, taken as not saying).
		return got < before
	}
	return c.delivered.Load() == before
}

// maxAnswerBatch bounds a replica's batch of answers (acks, resyncs,
// fences: at most a few per record of ours).
const maxAnswerBatch = 4 << 20

// serve runs one stream: every session is sent whole first, then records
// as they come, batched: whatever queued while the previous batch was
// written goes in the next.
func (l *link) serve(conn *websocket.Conn, stream *streamConn, keys streamKeys) {
	r := l.r
	fences := r.fencesFor(l.peer)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		conn.Close()
		return
	}
	l.gen++
	l.conn, l.stream, l.connected, l.nextBatch = conn, stream, true, 1
	// What queued for the previous stream is gone with it: every session
	// goes again whole (its snapshot commits what waited).
	for _, c := range l.commits {
		l.orphanIfHere(c.s, l.builtAt)
	}
	l.building, l.commits = l.building[:0], nil
	for s := range l.sessions {
		l.resync[s] = struct{}{}
	}
	clear(l.refused)
	l.fencesDue = fences
	gen := l.gen
	l.mu.Unlock()
	r.log.Debug("replica stream up", "replica", l.peer)

	ended := make(chan struct{})
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(ended)
		err := l.readAnswers(conn, keys.recv)
		if err != nil && !errors.Is(err, net.ErrClosed) {
			r.log.Debug("replica stream ended", "replica", l.peer, "err", err)
		}
		_ = conn.NetConn().Close()
	}()
	heartbeat := time.NewTimer(linkIdle)
	defer heartbeat.Stop()
	var (
		head  []byte
		flush *time.Timer // runs while a retired link writes what was queued
	)
	defer func() {
		if flush != nil {
			flush.Stop()
		}
	}()
stream:
	for {
		l.tellFences()
		l.syncSessions(gen)
		l.mu.Lock()
		idle := len(l.building) == 0
		flushBy, settled := l.flushBy, len(l.inflight) == 0
		l.mu.Unlock()
		done, flushed := l.done, (<-chan time.Time)(nil)
		if !flushBy.IsZero() {
			// Retired: done is closed, and the stream lasts until the
			// replica has acknowledged everything (ackUpTo wakes us) or
			// flushBy passes.
			if idle && settled {
				break
			}
			if flush == nil {
				flush = time.NewTimer(time.Until(flushBy))
			}
			done, flushed = nil, flush.C
		}
		if idle {
			select {
			case <-l.wake:
				continue
			case <-heartbeat.C:
				// An empty batch: its ack tells both sides the stream lives.
			case <-ended:
				break stream
			case <-done:
				break stream
			case <-flushed:
				break stream
			}
		}
		if err := l.writeNext(conn, keys.send, &head); err != nil {
			r.log.Debug("replica stream write failed", "replica", l.peer, "err", err)
			break
		}
		heartbeat.Reset(linkIdle)
	}
	_ = conn.NetConn().Close()
	<-ended
	l.mu.Lock()
	l.connected, l.conn, l.stream = false, nil, nil
	for i := range l.inflight {
		for _, c := range l.inflight[i].commits {
			l.orphanIfHere(c.s, l.inflight[i].at)
		}
	}
	clear(l.inflight)
	l.inflight = l.inflight[:0]
	l.mu.Unlock()
}

// writeNext writes what queued as the next batch (an empty one when
// nothing did), MAC'd with mac. head is the caller's buffer for the
// batch's head.
func (l *link) writeNext(conn *websocket.Conn, mac hash.Hash, head *[]byte) error {
	r := l.r
	l.mu.Lock()
	if l.closed && l.flushBy.IsZero() {
		l.mu.Unlock()
		return net.ErrClosed
	}
	deadline := time.Now().Add(r.srv.writeWait)
	if !l.flushBy.IsZero() && l.flushBy.Before(deadline) {
		deadline = l.flushBy
	}
	body := l.building
	b := sentBatch{n: l.nextBatch, at: l.builtAt, commits: l.commits}
	if len(body) == 0 {
		b.at = time.Now()
	}
	l.nextBatch++
	if cut := recordsWithin(body, maxLinkQueue); cut > 0 && cut < len(body) {
		// Frees and fences are queued whatever the queue holds: past the
		// replica's read limit the whole would end the stream. The rest
		// goes next, and with it the waiting msgs' commits (batches are
		// acked in order: none is committed before its record is in).
		b.commits = nil
		l.building = append(l.spare[:0], body[cut:]...)
		body = body[:cut]
	} else {
		l.building, l.commits = l.spare[:0], nil
	}
	l.inflight = append(l.inflight, b)
	l.spare = nil
	l.mu.Unlock()

	*head = appendBatchHead((*head)[:0], mac, b.n, body)
	_ = conn.NetConn().SetWriteDeadline(deadline)
	err := writeBatch(conn, *head, body)
	r.srv.metrics.replicationBytes.Add(float64(len(*head) + len(body)))
	l.mu.Lock()
	if cap(body) <= 2*maxLinkQueue {
		l.spare = body
	}
	l.mu.Unlock()
	return err
}

// recordsWithin returns the length of the longest run of whole records
// at the start of b that is at most limit bytes, or of its first record
// when that alone is longer (a msg's: the replica reads a batch of
// maxLinkQueue and a message).
func recordsWithin(b []byte, limit int) int {
	n := 0
	for n+recordHead <= len(b) {
		next := n + recordHead + int(binary.BigEndian.Uint32(b[n+1:]))
		if next > limit && n > 0 {
			break
		}
		n = next
	}
	return min(n, len(b))
}

// writeBatch writes one batch as one binary message.
func writeBatch(conn *websocket.Conn, head, body []byte) error {
	w, err := conn.NextWriter(websocket.BinaryMessage)
	if err != nil {
		return err
	}
	if _, err := w.Write(head); err != nil {
		return err
	}
	if _, err := w.Write(body); err != nil {
		return err
	}
	return w.Close()
}

// tellFences queues the fences due on the stream while the batch being
// filled has room (maxFencePush): the peer reads a batch up to its read
// limit, and past it ends the stream.
func (l *link) tellFences() {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for n < len(l.fencesDue) && len(l.building) < maxFencePush {
		l.appendFenceLocked(l.fencesDue[n])
		n++
	}
	l.fencesDue = l.fencesDue[n:]
	if len(l.fencesDue) == 0 {
		l.fencesDue = nil
	}
}

// syncSessions sends the sessions marked for it whole, while the queue has
// room: a few at a time, so records of the others keep flowing.
func (l *link) syncSessions(gen uint64) {
	var batch []*session
	for {
		l.mu.Lock()
		if l.closed || !l.connected || l.gen != gen || len(l.building) >= maxLinkQueue/2 {
			l.mu.Unlock()
			return
		}
		if len(l.resync) == 0 {
			if l.syncedGen != gen {
				// Every session went whole on this stream: the replica
				// drops the copies of ours it was not sent again.
				if len(l.building) == 0 {
					l.builtAt = time.Now()
				}
				l.building = appendSynced(l.building)
				l.syncedGen = gen
			}
			l.mu.Unlock()
			return
		}
		batch = batch[:0]
		for s := range l.resync {
			delete(l.resync, s)
			batch = append(batch, s)
			if len(batch) == 64 {
				break
			}
		}
		l.mu.Unlock()
		for _, s := range batch {
			s.mu.Lock()
			if s.repl == l && s.v1 != nil && s.movedTo == "" {
				l.mu.Lock()
				if l.gen == gen && l.connected {
					l.snapshotLocked(s)
				}
				l.mu.Unlock()
			}
			s.mu.Unlock()
		}
	}
}

// snapshotLocked queues s whole: its incarnation, then its history (the
// msgs still waiting included). Called with s.mu and l.mu held.
func (l *link) snapshotLocked(s *session) {
	v := s.v1
	if len(l.building) == 0 {
		l.builtAt = time.Now()
	}
	b := appendSnapshot(l.building, v.term, v.seq-uint64(v.n), v.epoch, s.key)
	var hole uint64
	v.entries(func(seq uint64, f *frame) {
		if f == nil {
			hole = seq
			return
		}
		if hole != 0 {
			b = appendSkip(b, v.term, hole, s.key)
			hole = 0
		}
		b = appendMsg(b, v.term, seq, s.key, f.payload())
	})
	if hole != 0 {
		b = appendSkip(b, v.term, hole, s.key)
	}
	l.building = b
	s.replGen = l.gen
	if len(v.pending) > 0 {
		l.commits = append(l.commits, commitRef{s, v.seq, s.replTurn})
	}
	if at, ok := l.orphans[s]; ok {
		// What waited with no record is in this snapshot: the batch is as
		// old as its oldest waiting msg (lag, replication_timeout).
		delete(l.orphans, s)
		if at.Before(l.builtAt) {
			l.builtAt = at
		}
	}
}

// readAnswers reads the replica's batches until the stream ends: acks
// commit what waited, resyncs send a session whole, fences make this edge
// yield a session.
func (l *link) readAnswers(conn *websocket.Conn, mac hash.Hash) error {
	want := uint64(1)
	var (
		done []commitRef
		msg  []byte
	)
	for {
		_ = conn.NetConn().SetReadDeadline(time.Now().Add(streamIdle))
		var kind int
		var err error
		kind, msg, err = readMessage(conn, msg)
		if err != nil {
			return err
		}
		if kind != websocket.BinaryMessage {
			return errBadRecord
		}
		records, err := openBatch(msg, mac, want)
		if err != nil {
			return err
		}
		want++
		acked, err := l.answered(records)
		if err != nil {
			return err
		}
		if acked != 0 {
			done = l.ackUpTo(acked, done[:0])
		}
	}
}

// answered acts on the records of one of the replica's answer batches —
// resyncs and fences — and returns the batch number it acknowledges (0:
// none).
func (l *link) answered(records []byte) (acked uint64, err error) {
	var rec record
	rd := reader{b: records}
	for rd.next(&rec) {
		switch rec.kind {
		case recAck:
			acked = rec.seq
		case recResync:
			l.resyncKey(string(rec.key))
		case recRefused:
			l.refuse(string(rec.key))
		case recFence:
			l.r.yield(string(rec.key), string(rec.epoch), rec.term)
		}
	}
	return acked, rd.err
}

// ackUpTo takes the batches up to acked off the stream and commits what
// they carried; done is a buffer for those commits, returned for reuse.
func (l *link) ackUpTo(acked uint64, done []commitRef) []commitRef {
	l.mu.Lock()
	i := 0
	for ; i < len(l.inflight) && l.inflight[i].n <= acked; i++ {
		done = append(done, l.inflight[i].commits...)
	}
	n := copy(l.inflight, l.inflight[i:])
	clear(l.inflight[n:])
	l.inflight = l.inflight[:n]
	if l.degraded && len(l.inflight) == 0 && len(l.building) == 0 && len(l.orphans) == 0 && len(l.resync) == 0 {
		l.degraded = false
		l.r.log.Info("replica caught up: replication is sync again", "replica", l.peer)
	}
	if !l.flushBy.IsZero() {
		l.kick() // a retired link's writer closes the stream once all is acknowledged
	}
	l.mu.Unlock()
	for _, c := range done {
		l.r.commit(c, l)
	}
	return done
}

// readMessage reads one WebSocket message whole into buf (reused: a
// stream's reader reads into the same buffer, unless one message made it
// large). The connection's read limit bounds it.
func readMessage(conn *websocket.Conn, buf []byte) (int, []byte, error) {
	if cap(buf) > 1<<20 {
		buf = nil
	}
	kind, rd, err := conn.NextReader()
	if err != nil {
		return 0, buf, err
	}
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, max(cap(buf), 4<<10))
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return kind, buf, nil
		}
		if err != nil {
			return kind, buf, err
		}
	}
}

// resyncKey sends the session of key whole: its replica lacks its state.
func (l *link) resyncKey(key string) {
	s := l.r.srv.hub.sessionOf(key)
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.repl == l {
		l.mu.Lock()
		// The batches that carried its records, this one's included, may
		// be acked without the replica having applied them: unsync passes
		// the session's turn, so their acks commit none of its msgs, only
		// its snapshot's does. Checking the session in step at the ack
		// was not enough: the writer, woken by unsync, may send the
		// snapshot before the ack is handled, and the msgs were shown
		// while the replica had none of them. A refused session's (the
		// appends after its snapshot, in the same batch) is not sent
		// again: it would be refused again, at once.
		if _, ok := l.refused[s]; !ok {
			l.unsync(s)
		}
		l.mu.Unlock()
	}
	s.mu.Unlock()
}

// refuse stops replicating the session of key on this stream: the replica
// is full and kept no copy. Its msgs wait for nothing: the waiting ones
// are shown at once, and counted and logged as a fallback, since no
// replica holds them. Sent whole to it again at once, it was refused again
// (and each append was answered with a resync): the next stream tries
// again.
func (l *link) refuse(key string) {
	s := l.r.srv.hub.sessionOf(key)
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.repl != l || s.v1 == nil {
		return
	}
	l.mu.Lock()
	_, again := l.refused[s]
	l.refused[s] = struct{}{}
	s.replGen = 0
	s.replTurn++ // the acks of batches sent before commit nothing more
	delete(l.resync, s)
	delete(l.orphans, s)
	l.mu.Unlock()
	if !again {
		l.r.srv.metrics.replicationFallbacks.Inc()
		l.r.fullLog.Warn(l.r.log, "replica full: a session is not replicated, its msgs acknowledged without a copy", "replica", l.peer, "key", httplog.KeyString(key))
	}
	l.r.srv.hub.commit(s, s.v1.seq)
}
