package sessions

import (
	"context"
	"errors"
	"hash/maphash"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// hubShards spreads sessions over independent locks so joins and leaves of
// different sessions do not contend on one mutex. A power of two.
const hubShards = 64

// errSessionFull refuses a join to a session at max_participants.
var errSessionFull = errors.New("session is full")

// errSessionMoved refuses a join to a session a drain handed to another
// edge during the handshake (1012: reconnect through a balancer).
var errSessionMoved = errors.New("session moved to another edge")

// hub is the relay core: it groups participants into sessions by key and
// fans frames out to them in one order per session. It does not own sockets
// (tailscale derp style): already-upgraded connections are handed to it as
// participants (join) and taken back (leave); their reader and writer
// goroutines belong to the Server.
type hub struct {
	maxParticipants int
	metrics         *metrics
	seed            maphash.Seed
	shards          [hubShards]hubShard

	// ringlb.v1 (v1.go): set by New before the hub is used.
	edge        string         // this edge's name, in welcome
	idleGrace   time.Duration  // how long a v1 session outlives its last participant
	historyMsgs int            // edge.history.messages
	historyByte int            // edge.history.bytes
	budget      *historyBudget // edge.history.total_bytes, for every history here
	idle        *idleSessions  // the sessions without participants, edge.max_idle_sessions
	// texts recycles the frames v1 writes per msg (msg, ack, pong).
	texts textPools
	// expired, when set (tests only), is called when an idle session is freed.
	expired func(key string)
	// clock, when set (tests only: FuzzPlacementEvents moves it by hand),
	// is the time of the ownership marks (admissions, claims, hand-over
	// marks) and of the ring views that placement.go keeps; nil: the wall
	// clock. Read on the join path only (a nil check), never per frame.
	clock func() time.Time
	// owner, once set (UseCluster), is told under the shard lock when a
	// session is created here and when it is gone, so pins follow sessions.
	owner atomic.Pointer[ownership]
	// repl, once set (UseCluster), replicates v1 sessions to their replica
	// (replication.go) and keeps other edges' copies (replica.go).
	repl atomic.Pointer[replicator]

	// users counts connections per token user, so ringlb_edge_users_online
	// counts a user with three tabs once. Users without a token are their
	// connection and never enter the map.
	usersMu sync.Mutex
	users   map[string]int
	// anonymous counts the participants online without a token (each one
	// a user of its own in ringlb_edge_users_online).
	anonymous atomic.Int64
}

type hubShard struct {
	mu       sync.Mutex
	sessions map[string]*session
	// Ownership (placement.go; kept by lookup, reserve, claim and sweep
	// below). admitting counts joins admitted before their
	// upgrade and not yet joined, so a peer's claim never races a join.
	// claims are keys another edge asked to host (we had none live); moved
	// are sessions handed to another edge by a drain. Both expire.
	admitting map[string]admitted
	claims    map[string]handover
	moved     map[string]handover
	// installed are keys a hand-off from edge installed here lately: a
	// claim's answer naming this edge for one of them, once its session
	// has ended here, announces nothing more to come.
	installed map[string]handover
}

// admitted counts joins of one key between admission and join; at is the
// latest admission, so sweep can drop counts a lost handshake left behind.
type admitted struct {
	n  int
	at time.Time
}

// handover names the edge a key belongs to for a while.
type handover struct {
	edge  string
	until time.Time
	// empty: no state follows (a raw-mode session, or a hand-off that
	// failed or was taken): the new edge need not wait for one to start
	// the session.
	empty bool
	// handed: a claim recorded for the edge a drain elsewhere handed the
	// key to (hub.handedOn), not by that edge itself, at since; at: that
	// edge's address as the drain gave it.
	handed bool
	since  time.Time
	at     string
}

// session is the set of participants sharing one key. Its lock orders
// every broadcast: frames are enqueued to all recipients while holding it,
// so every participant's queue sees the same sequence.
type session struct {
	key     string
	created time.Time

	mu           sync.Mutex
	participants []*participant // in join order
	v1           *v1Session     // nil: a raw session
	// movedTo is the edge a drain handed this session to, or that took it
	// over while this edge was unreachable (a fence, replica.go): no msg is
	// sequenced and nobody joins here any more (handOff, drain.go).
	movedTo string
	// repl is the stream to the session's replica (nil: none); replGen
	// the stream its snapshot went on (replication.go).
	repl    *link
	replGen uint64
	// replTurn passes each time the session's copy on a replica may be
	// dropped or replaced — attached to a replica (again), or to be sent
	// whole again: the acks of batches queued before commit none of its
	// msgs, which its next snapshot's ack shows (replication.go). A
	// replica moved away and back while a batch's ack was on its way had
	// that ack show msgs after the replica dropped the copy, before the
	// new snapshot came.
	replTurn uint64
	// viewersOnly: only anonymous viewers have joined it since it began
	// here (seats.go), so it holds nothing a token holder could lose.
	viewersOnly bool
	// joiners paces what its newcomers fan out together (pace.go), at
	// newcomers times the rate: those joined less than joinerWindow ago
	// and still connected, counted at newcomersAt (Unix ns).
	newcomers   int32
	joiners     fanoutBucket
	newcomersAt int64
}

func newHub(maxParticipants int, m *metrics) *hub {
	h := &hub{maxParticipants: maxParticipants, metrics: m, seed: maphash.MakeSeed(), users: make(map[string]int)}
	h.texts.init()
	for i := range h.shards {
		sh := &h.shards[i]
		sh.sessions = make(map[string]*session)
		sh.admitting = make(map[string]admitted)
		sh.claims = make(map[string]handover)
		sh.moved = make(map[string]handover)
		sh.installed = make(map[string]handover)
	}
	return h
}

// now is the time of the ownership marks and ring views (clock).
func (h *hub) now() time.Time {
	if h.clock != nil {
		return h.clock()
	}
	return time.Now()
}

func (h *hub) shard(key []byte) *hubShard {
	return &h.shards[maphash.Bytes(h.seed, key)&(hubShards-1)]
}

func (h *hub) shardOf(key string) *hubShard {
	return &h.shards[maphash.String(h.seed, key)&(hubShards-1)]
}

// join adds p to the session of key, creating the session for its first
// participant. It fails with errSessionFull at max_participants, and when
// the session speaks the other mode; a token holder takes precedence over
// anonymous viewers in both (seats.go).
// Lock order: shard, then session.
func (h *hub) join(key []byte, p *participant) error {
	sh := h.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if p.admitted {
		sh.unadmit(string(key))
		p.admitted = false
	}
	s := sh.sessions[string(key)]
	if s != nil && s.movedTo != "" {
		return errSessionMoved
	}
	holder := p.token.Load() != nil
	if s != nil && holder && h.reclaim(sh, s, p) {
		s = nil
	}
	created := s == nil
	if s == nil {
		s = &session{key: string(key), created: time.Now(), viewersOnly: anonymousViewer(p)}
		if p.v1 {
			s.v1 = newV1Session(h.historyMsgs, h.historyByte, h.budget)
		}
		sh.sessions[s.key] = s
		h.metrics.sessionsHosted.Inc()
		if o := h.owner.Load(); o != nil {
			o.created(s.key)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.v1 == nil && p.v1:
		return errSessionRaw
	case s.v1 != nil && !p.v1:
		return errSessionV1
	case len(s.participants) >= h.maxParticipants && !(holder && h.unseatViewer(s)):
		return errSessionFull
	}
	if !anonymousViewer(p) {
		s.viewersOnly = false
	}
	if created && s.v1 != nil {
		if r := h.repl.Load(); r != nil {
			r.assign(s)
		}
	}
	if len(s.participants) == 0 {
		h.metrics.sessionsActive.Add(1)
		if s.v1 != nil && s.v1.idleTimer != nil {
			// Revived within idle_grace. If the timer already fired, its
			// expire waits for the shard lock and then finds a newer
			// generation (or participants), and leaves the session be.
			s.v1.idleTimer.Stop()
			s.v1.idleTimer = nil
			h.idle.busy(s)
		}
	}
	s.participants = append(s.participants, p)
	p.session = s
	p.joinedMs = uint32(time.Now().UnixMilli())
	h.userOnline(p)
	if s.v1 != nil {
		h.joinV1(s, p)
	}
	return nil
}

// leave removes p from its session; the last participant to leave frees
// the session (a v1 one once idle_grace has passed, or the cap of idle
// sessions forgets it). After leave returns no frame is enqueued to p any
// more.
func (h *hub) leave(p *participant) {
	s := p.session
	if s == nil {
		return
	}
	// Deferred first, so it runs last: after the locks below are released.
	defer h.trimIdle()
	sh := h.shardOf(s.key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.Index(s.participants, p)
	if i < 0 {
		return
	}
	h.dropParticipant(s, i)
	if len(s.participants) == 0 {
		h.metrics.sessionsActive.Add(-1)
		// Kept for its clients to resume — unless another session of the
		// key replaced it (a frozen one, liveOrUnfrozen): nobody resumes
		// it, and idle it would hold a slot and its history for nothing.
		if s.v1 != nil && h.idleGrace > 0 && sh.sessions[s.key] == s && s.owesResumes() {
			h.keepIdle(s)
			return
		}
		h.free(sh, s)
	}
}

// owesResumes reports whether a resume of s, a ringlb.v1 session its last
// participant left, could be owed anything: a msg it sequenced (seq > 0,
// those waiting for the replica included), seqs a dead owner may have
// given under its epoch (a promoted copy, bumpable), or, frozen, the edge
// it went to (its entry sends joins there). One that sequenced nothing is
// freed at once: a resume of it from seq 0 gets reset "epoch" at seq 0
// from the session that starts anew, which loses nothing. Kept, it took a
// slot of edge.max_idle_sessions for nothing, and a client opening fresh
// keys and leaving each at once (an anonymous viewer can do no more)
// pushed honest idle sessions out, whose resumes got a reset in place of
// their replay (TestKeyChurnPushesNoIdleSessionOut). Called with s.mu held.
func (s *session) owesResumes() bool {
	return s.v1.seq > 0 || s.v1.bumpable || s.movedTo != ""
}

// free removes s from its shard and releases its history. Called with the
// shard and session locks held.
func (h *hub) free(sh *hubShard, s *session) {
	if s.v1 != nil {
		h.idle.busy(s)
		s.v1.dropPending()
		s.v1.forget()
		if r := h.repl.Load(); r != nil {
			r.release(s)
		}
	}
	if sh.sessions[s.key] != s {
		return // a frozen session a promotion replaced (replica.go)
	}
	delete(sh.sessions, s.key)
	if o := h.owner.Load(); o != nil {
		o.freed(s.key)
	}
}

// keepIdle keeps a ringlb.v1 session without participants for idle_grace,
// so a client that reconnects resumes from its history, then frees it.
// Called with the shard and session locks held; the caller calls trimIdle
// once it holds no lock, as the newest idle session may be one too many.
func (h *hub) keepIdle(s *session) {
	v := s.v1
	v.idleGen++
	gen := v.idleGen
	v.idleTimer = time.AfterFunc(h.idleGrace, func() { h.expire(s, gen) })
	h.idle.idled(s)
}

// expire frees s if it is still idle in generation gen: its idle_grace ran
// out. (A session no longer in its shard's map — a frozen one a promotion
// replaced, replica.go — is released all the same; free leaves the map be.)
func (h *hub) expire(s *session, gen uint64) {
	sh := h.shardOf(s.key)
	sh.mu.Lock()
	s.mu.Lock()
	freed := false
	if len(s.participants) == 0 && s.v1.idleGen == gen && s.v1.idleTimer != nil {
		h.freeIdle(sh, s)
		freed = true
	}
	s.mu.Unlock()
	sh.mu.Unlock()
	if freed && h.expired != nil {
		h.expired(s.key)
	}
}

// freeIdle frees s, idle: its timer stopped (a timer left to run would
// keep s reachable until it fired), its history, replica and pin released.
// Called with the shard and session locks held.
func (h *hub) freeIdle(sh *hubShard, s *session) {
	if s.v1.idleTimer != nil {
		s.v1.idleTimer.Stop()
		s.v1.idleTimer = nil
	}
	h.free(sh, s)
}

// close frees every idle session and stops its timer (Shutdown).
func (h *hub) close() {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, s := range sh.sessions {
			s.mu.Lock()
			if len(s.participants) == 0 && s.v1 != nil {
				h.freeIdle(sh, s)
			}
			s.mu.Unlock()
		}
		sh.mu.Unlock()
	}
}

// userOnline counts p's user in ringlb_edge_users_online, once however many
// connections it has. Called with p's session lock held.
func (h *hub) userOnline(p *participant) {
	if !p.shared {
		h.anonymous.Add(1)
		h.metrics.usersOnline.Inc()
		return
	}
	h.usersMu.Lock()
	h.users[p.user]++
	if h.users[p.user] == 1 {
		h.metrics.usersOnline.Inc()
	}
	h.usersMu.Unlock()
}

func (h *hub) userOffline(p *participant) {
	if !p.shared {
		h.anonymous.Add(-1)
		h.metrics.usersOnline.Dec()
		return
	}
	h.usersMu.Lock()
	if h.users[p.user]--; h.users[p.user] <= 0 {
		delete(h.users, p.user)
		h.metrics.usersOnline.Dec()
	}
	h.usersMu.Unlock()
}

// broadcast enqueues f to every participant of from's session but from,
// in one order for all: the session lock is held across the whole fan-out
// and every send is non-blocking. A recipient whose queue is full is a slow
// consumer: it is closed with 1013 instead of delaying the others. It
// returns how many participants f went to.
func (h *hub) broadcast(from *participant, f *frame) int {
	s := from.session
	s.mu.Lock()
	if !relays(s, from) {
		s.mu.Unlock()
		return 0
	}
	n := h.deliverOthers(s, from, f)
	s.mu.Unlock()
	return n
}

// relays reports whether a message from may go to its session s now, the
// one place every message a participant sends is let out (broadcast,
// publish). Not when s was handed to another edge (its participants are
// being closed; a ringlb.v1 client resends what was not acked once it
// resumes on the new owner), nor when from is being closed or its token
// has lapsed by now: a participant being closed relays nothing more
// (participant.received drops what arrives after the stop, but a
// newcomer's message read before it may wait its session's joiners' turn,
// joinersTurn, and was relayed when its turn came, the revocation
// answered meanwhile: TestRevokedNewcomersHeldMsgReachesNoOne). Looked at
// under s.mu: a stop made before the lock is seen, and what the others
// are sent after a revocation's answer is sequenced after the stop.
// Called with s.mu held; closing a lapsed holder never blocks.
func relays(s *session, from *participant) bool {
	if s.movedTo != "" || from.stopping() {
		return false
	}
	return from.token.Load() == nil || !from.closeIfLapsed(time.Now())
}

// sessionInfo is one row of GET /api/sessions.
type sessionInfo struct {
	Key          string    `json:"session"`
	Protocol     string    `json:"protocol"` // "raw" or "ringlb.v1"
	Participants int       `json:"participants"`
	Seq          uint64    `json:"seq,omitempty"`     // ringlb.v1: last sequence number
	History      int       `json:"history,omitempty"` // ringlb.v1: messages kept for resume
	Created      time.Time `json:"created"`
}

// list returns every live session, sorted by key.
func (h *hub) list() []sessionInfo {
	out := []sessionInfo{}
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, s := range sh.sessions {
			s.mu.Lock()
			info := sessionInfo{Key: s.key, Protocol: "raw", Participants: len(s.participants), Created: s.created}
			if s.v1 != nil {
				info.Protocol, info.Seq, info.History = protocolV1, s.v1.seq, s.v1.n
			}
			out = append(out, info)
			s.mu.Unlock()
		}
		sh.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b sessionInfo) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// count returns the number of live sessions.
func (h *hub) count() int {
	n := 0
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		n += len(sh.sessions)
		sh.mu.Unlock()
	}
	return n
}

// sessionOf is the session of key here, or nil.
func (h *hub) sessionOf(key string) *session {
	sh := h.shardOf(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.sessions[key]
}

// lookup reports whether a session of key is live or joining here, or which
// edge it belongs to instead (moved by a drain, claimed by another edge).
// Claims and hand-over marks naming an edge for which gone reports true (it
// left the cluster, or the balancer could not reach it) are disregarded
// (a claim a drain recorded for its new owner only once that edge left:
// claimed).
func (h *hub) lookup(key []byte, self string, gone goneEdges) (live bool, redirect string) {
	sh := h.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.lookup(string(key), self, gone, h.now())
}

// liveOrUnfrozen reports whether a session of key is live here. A frozen
// one (handed on or yielded by this edge, its participants closing) is not:
// it leaves the map for the session that replaces it, which hub.free then
// leaves be. Called with the shard lock held.
func (sh *hubShard) liveOrUnfrozen(key string) (live bool) {
	s := sh.sessions[key]
	if s == nil {
		return false
	}
	s.mu.Lock()
	frozen := s.movedTo != ""
	s.mu.Unlock()
	if frozen {
		delete(sh.sessions, key)
	}
	return !frozen
}

// lookup is hub.lookup with the shard lock held.
func (sh *hubShard) lookup(key, self string, gone goneEdges, now time.Time) (live bool, redirect string) {
	if live, redirect = sh.held(key, gone, now); live || redirect != "" {
		return live, redirect
	}
	if c, ok := sh.claimed(key, gone, now); ok && c != self {
		return false, c
	}
	return false, ""
}

// held is lookup but for claims: whether a session of key is live or
// joining here, or the edge this one handed it to. Called with sh.mu held.
func (sh *hubShard) held(key string, gone goneEdges, now time.Time) (live bool, redirect string) {
	if s := sh.sessions[key]; s != nil {
		s.mu.Lock()
		moved := s.movedTo
		s.mu.Unlock()
		switch {
		case moved == "":
			return true, ""
		case !gone.gone(moved):
			return false, moved
		}
		// Frozen, handed to an edge that is gone since: nobody hosts it;
		// a claim made since may name its owner.
	}
	if sh.admitting[key].n > 0 {
		return true, ""
	}
	if m, ok := sh.moved[key]; ok && now.Before(m.until) && !gone.gone(m.edge) {
		return false, m.edge
	}
	return false, ""
}

// reserve admits a join of key unless the key belongs elsewhere now; an
// admitted join is counted until hub.join (or unreserve), so a claim racing
// it sees the session as live.
func (h *hub) reserve(key []byte, self string, gone goneEdges) (redirect string) {
	sh := h.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := h.now()
	if _, redirect = sh.lookup(string(key), self, gone, now); redirect != "" {
		return redirect
	}
	// A session frozen here that lookup did not send the join after was
	// handed to an edge that is gone since: nobody's, it gives way to the
	// one the join starts (else the join would be closed 1012 for it at
	// every try until its idle_grace ran out).
	sh.liveOrUnfrozen(string(key))
	a := sh.admitting[string(key)]
	sh.admitting[string(key)] = admitted{n: a.n + 1, at: now}
	return ""
}

func (h *hub) unreserve(key []byte) {
	sh := h.shard(key)
	sh.mu.Lock()
	sh.unadmit(string(key))
	sh.mu.Unlock()
}

func (sh *hubShard) unadmit(key string) {
	a, ok := sh.admitting[key]
	if !ok {
		return
	}
	if a.n--; a.n <= 0 {
		delete(sh.admitting, key)
		return
	}
	sh.admitting[key] = a
}

// admitTimeout is past any handshake (a request must be read in
// requestReadTimeout): sweep forgets admissions this old, which a
// handshake that never reached its handler left behind.
const admitTimeout = 2 * requestReadTimeout

// claim answers edge by's claim on key: the edge hosting it, or "" after
// recording the claim for ttl.
func (h *hub) claim(key []byte, self, by string, ttl time.Duration, gone goneEdges) string {
	sh := h.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := h.now()
	live, redirect := sh.lookup(string(key), by, gone, now)
	switch {
	case live:
		return self
	case redirect == by && sh.moved[string(key)].empty:
		// Handed to the claimer with no state coming (raw mode, or the
		// hand-off failed or was taken: the claimer holds the key no
		// more): it starts the session itself.
		return ""
	case redirect != "":
		return redirect
	}
	sh.claims[string(key)] = handover{edge: by, until: now.Add(ttl)}
	return ""
}

// handedOn records, for ttl, that a drain on another edge handed key to
// edge to: joins and claims of it here go there, as to's own claim would
// send them, whatever edge claimed it here before (a hand-off carries a
// live session; a claim only asked to start one). It returns the edge
// hosting key instead ("" when recorded): this one, when a session of key
// is live or joining here, or the edge this one handed it to.
func (h *hub) handedOn(key []byte, self, to, at string, ttl time.Duration) string {
	sh := h.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := h.now()
	switch live, redirect := sh.held(string(key), goneEdges{}, now); {
	case live:
		return self
	case redirect != "":
		return redirect
	}
	sh.claims[string(key)] = handover{edge: to, until: now.Add(ttl), handed: true, since: now, at: at}
	return ""
}

// handedAt returns the address a drain gave for edge, to which it handed
// key (handedOn), while that claim holds ("" if none).
func (h *hub) handedAt(key []byte, edge string) string {
	sh := h.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if c, ok := sh.claims[string(key)]; ok && c.handed && c.edge == edge && h.now().Before(c.until) {
		return c.at
	}
	return ""
}

// claimed returns the edge whose claim on key holds here: not expired,
// that edge not gone — but a claim recorded for the edge a drain elsewhere
// handed the key to (handedOn) holds while that edge is not heard of here
// yet, for as long as gossip could still bring word of it (gossipBound):
// within it, only its leaving, or a balancer's word that it could not
// reach it, voids it; past it, an edge still unheard of is gone (it
// crashed before word of it came: gossip tells of no death before the
// life). Called with sh.mu held.
func (sh *hubShard) claimed(key string, gone goneEdges, now time.Time) (string, bool) {
	c, ok := sh.claims[key]
	if !ok || !c.holds(gone, now) {
		return "", false
	}
	return c.edge, true
}

// holds reports whether claim c holds (claimed).
func (c handover) holds(gone goneEdges, now time.Time) bool {
	switch {
	case !now.Before(c.until):
		return false
	case c.handed && now.Before(c.since.Add(gossipBound)):
		return !gone.left(c.edge)
	}
	return !gone.gone(c.edge)
}

// nothingComing marks hand-overs whose state will not arrive (the hand-off
// failed, or was taken already), so their new edge starts them instead of
// waiting.
func (h *hub) nothingComing(keys ...string) {
	for _, key := range keys {
		sh := h.shardOf(key)
		sh.mu.Lock()
		if m, ok := sh.moved[key]; ok {
			m.empty = true
			sh.moved[key] = m
		}
		sh.mu.Unlock()
	}
}

// movedOn names to as the edge a frozen session of key (and joins of it)
// go to now, until until: the edge its drain first chose drains too.
func (h *hub) movedOn(key, to string, until time.Time) {
	sh := h.shardOf(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if m, ok := sh.moved[key]; ok {
		m.edge, m.until = to, until
		sh.moved[key] = m
	}
	if s := sh.sessions[key]; s != nil {
		s.mu.Lock()
		if s.movedTo != "" {
			s.movedTo = to
		}
		s.mu.Unlock()
	}
}

// installedLately reports whether a hand-off installed a session of key
// here within the hand-over window.
func (h *hub) installedLately(key []byte) bool {
	sh := h.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m, ok := sh.installed[string(key)]
	return ok && h.now().Before(m.until)
}

// awaitInstall waits until a session of key is here (a hand-off installed
// it), polling: hand-offs are rare and short.
func (h *hub) awaitInstall(ctx context.Context, key []byte) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		sh := h.shard(key)
		sh.mu.Lock()
		_, ok := sh.sessions[string(key)]
		sh.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// dropClaims forgets the claims for which void reports true.
func (h *hub) dropClaims(void func(handover) bool) {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		maps.DeleteFunc(sh.claims, func(_ string, c handover) bool { return void(c) })
		sh.mu.Unlock()
	}
}

// sweep forgets expired claims and hand-over marks.
func (h *hub) sweep(now time.Time) {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, marks := range sh.marks() {
			maps.DeleteFunc(marks, func(_ string, m handover) bool { return !now.Before(m.until) })
		}
		maps.DeleteFunc(sh.admitting, func(_ string, a admitted) bool { return now.Sub(a.at) > admitTimeout })
		sh.mu.Unlock()
	}
}

// marks are the shard's marks that expire with the hand-over window:
// claims, hand-overs and installs. Called with sh.mu held.
func (sh *hubShard) marks() [3]map[string]handover {
	return [3]map[string]handover{sh.claims, sh.moved, sh.installed}
}

// install creates an idle ringlb.v1 session from a hand-off sent by from;
// false when the key is live here already, or another edge (not from, and
// not gone) claimed it here lately: told this edge hosted nothing, that
// edge starts the key, and a session installed here beside it was a
// split (TestHandOffOverAClaimSplitsNoSession) — refused, the sender's
// clients rejoin and the claim sends them there. A frozen one gives way:
// this edge handed it on or yielded it, so what comes back is newer (a
// drain of the edge that took it over).
func (h *hub) install(hs handoffSession, from string, gone goneEdges) bool {
	// Deferred first, so it runs last: after the shard lock is released.
	defer h.trimIdle()
	sh := h.shardOf(hs.Key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.admitting[hs.Key].n > 0 || sh.liveOrUnfrozen(hs.Key) {
		return false
	}
	if c, ok := sh.claimed(hs.Key, gone, h.now()); ok && c != from {
		return false
	}
	s := &session{key: hs.Key, created: time.Now(), v1: newV1Session(h.historyMsgs, h.historyByte, h.budget)}
	v := s.v1
	v.epoch = hs.Epoch
	v.term = max(hs.Term, 1)
	v.seq = hs.Seq - uint64(len(hs.History))
	for _, env := range hs.History {
		v.seq++
		if string(env) == "null" { // a hole (replica.go, handoffState)
			v.rememberHole()
			continue
		}
		v.remember(textFrame(len(env), func(b []byte) []byte { return append(b, env...) }))
	}
	v.seq = hs.Seq
	v.committed = v.seq
	delete(sh.claims, hs.Key)
	sh.sessions[hs.Key] = s
	// As long as the sender's hand-over mark names this edge (set just
	// before it sent the hand-off).
	sh.installed[hs.Key] = handover{edge: from, until: h.now().Add(settleWindow)}
	h.metrics.sessionsHosted.Inc()
	if o := h.owner.Load(); o != nil {
		o.created(hs.Key)
	}
	s.mu.Lock()
	if h.idleGrace > 0 {
		h.keepIdle(s)
	}
	if r := h.repl.Load(); r != nil {
		r.store.drop(hs.Key) // the hand-off is newer than any copy held here
		r.assign(s)
	}
	s.mu.Unlock()
	return true
}

// eachSession calls f for every session, with its shard's lock held.
func (h *hub) eachSession(f func(*hubShard, *session)) {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, s := range sh.sessions {
			f(sh, s)
		}
		sh.mu.Unlock()
	}
}
