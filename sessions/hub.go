package sessions

import (
	"errors"
	"hash/maphash"
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
	edge        string        // this edge's name, in welcome
	idleGrace   time.Duration // how long a v1 session outlives its last participant
	historyMsgs int           // edge.history.messages
	historyByte int           // edge.history.bytes
	// expired, when set (tests only), is called when an idle session is freed.
	expired func(key string)
	// owner, once set (UseCluster), is told under the shard lock when a
	// session is created here and when it is gone, so pins follow sessions.
	owner atomic.Pointer[ownership]

	// users counts connections per token user, so ringlb_edge_users_online
	// counts a user with three tabs once. Users without a token are their
	// connection and never enter the map.
	usersMu sync.Mutex
	users   map[string]int
}

type hubShard struct {
	mu       sync.Mutex
	sessions map[string]*session
	// Ownership (owner.go). admitting counts joins admitted before their
	// upgrade and not yet joined, so a peer's claim never races a join.
	// claims are keys another edge asked to host (we had none live); moved
	// are sessions handed to another edge by a drain. Both expire.
	admitting map[string]admitted
	claims    map[string]handover
	moved     map[string]handover
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
	// failed): the new edge need not wait for one to start the session.
	empty bool
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
	// movedTo is the edge a drain handed this session to: no msg is
	// sequenced and nobody joins here any more (owner.go).
	movedTo string
}

func newHub(maxParticipants int, m *metrics) *hub {
	h := &hub{maxParticipants: maxParticipants, metrics: m, seed: maphash.MakeSeed(), users: make(map[string]int)}
	for i := range h.shards {
		sh := &h.shards[i]
		sh.sessions = make(map[string]*session)
		sh.admitting = make(map[string]admitted)
		sh.claims = make(map[string]handover)
		sh.moved = make(map[string]handover)
	}
	return h
}

func (h *hub) shard(key []byte) *hubShard {
	return &h.shards[maphash.Bytes(h.seed, key)&(hubShards-1)]
}

func (h *hub) shardOf(key string) *hubShard {
	return &h.shards[maphash.String(h.seed, key)&(hubShards-1)]
}

// join adds p to the session of key, creating the session for its first
// participant. It fails with errSessionFull at max_participants.
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
	if s == nil {
		s = &session{key: string(key), created: time.Now()}
		if p.v1 {
			s.v1 = newV1Session(h.historyMsgs, h.historyByte)
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
	case len(s.participants) >= h.maxParticipants:
		return errSessionFull
	}
	if len(s.participants) == 0 {
		h.metrics.sessionsActive.Inc()
		if s.v1 != nil && s.v1.idleTimer != nil {
			// Revived within idle_grace. If the timer already fired, its
			// expire waits for the shard lock and then finds a newer
			// generation (or participants), and leaves the session be.
			s.v1.idleTimer.Stop()
			s.v1.idleTimer = nil
		}
	}
	s.participants = append(s.participants, p)
	p.session = s
	h.userOnline(p)
	if s.v1 != nil {
		h.joinV1(s, p)
	}
	return nil
}

// leave removes p from its session; the last participant to leave frees
// the session. After leave returns no frame is enqueued to p any more.
func (h *hub) leave(p *participant) {
	s := p.session
	if s == nil {
		return
	}
	sh := h.shardOf(s.key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.Index(s.participants, p)
	if i < 0 {
		return
	}
	s.participants = slices.Delete(s.participants, i, i+1)
	h.userOffline(p)
	if s.v1 != nil {
		h.leaveV1(s, p)
	}
	if len(s.participants) == 0 {
		h.metrics.sessionsActive.Dec()
		if s.v1 != nil && h.idleGrace > 0 {
			h.keepIdle(s)
			return
		}
		h.free(sh, s)
	}
}

// free removes s from its shard and releases its history. Called with the
// shard and session locks held.
func (h *hub) free(sh *hubShard, s *session) {
	delete(sh.sessions, s.key)
	if s.v1 != nil {
		s.v1.forget()
	}
	if o := h.owner.Load(); o != nil {
		o.freed(s.key)
	}
}

// keepIdle keeps a ringlb.v1 session without participants for idle_grace,
// so a client that reconnects resumes from its history, then frees it.
// Called with the shard and session locks held.
func (h *hub) keepIdle(s *session) {
	v := s.v1
	v.idleGen++
	gen := v.idleGen
	v.idleTimer = time.AfterFunc(h.idleGrace, func() { h.expire(s, gen) })
}

// expire frees s if it is still idle in generation gen.
func (h *hub) expire(s *session, gen uint64) {
	sh := h.shardOf(s.key)
	sh.mu.Lock()
	s.mu.Lock()
	freed := false
	if len(s.participants) == 0 && s.v1.idleGen == gen && s.v1.idleTimer != nil && sh.sessions[s.key] == s {
		s.v1.idleTimer = nil
		h.free(sh, s)
		freed = true
	}
	s.mu.Unlock()
	sh.mu.Unlock()
	if freed && h.expired != nil {
		h.expired(s.key)
	}
}

// close frees every idle session and stops its timer (Shutdown).
func (h *hub) close() {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, s := range sh.sessions {
			s.mu.Lock()
			if len(s.participants) == 0 && s.v1 != nil {
				if s.v1.idleTimer != nil {
					s.v1.idleTimer.Stop()
					s.v1.idleTimer = nil
				}
				h.free(sh, s)
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
// consumer: it is closed with 1013 instead of delaying the others.
func (h *hub) broadcast(from *participant, f *frame) {
	s := from.session
	s.mu.Lock()
	if s.movedTo != "" {
		s.mu.Unlock()
		return // handed to another edge: its participants are being closed
	}
	h.deliverOthers(s, from, f)
	s.mu.Unlock()
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
