package sessions

import (
	"errors"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
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
}

type hubShard struct {
	mu       sync.Mutex
	sessions map[string]*session
}

// session is the set of participants sharing one key. Its lock orders
// every broadcast: frames are enqueued to all recipients while holding it,
// so every participant's queue sees the same sequence.
type session struct {
	key     string
	created time.Time

	mu           sync.Mutex
	participants []*participant // in join order
}

func newHub(maxParticipants int, m *metrics) *hub {
	h := &hub{maxParticipants: maxParticipants, metrics: m, seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].sessions = make(map[string]*session)
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
	s := sh.sessions[string(key)]
	if s == nil {
		s = &session{key: string(key), created: time.Now()}
		sh.sessions[s.key] = s
		h.metrics.sessionsActive.Inc()
		h.metrics.sessionsHosted.Inc()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.participants) >= h.maxParticipants {
		return errSessionFull
	}
	s.participants = append(s.participants, p)
	p.session = s
	h.metrics.usersOnline.Inc()
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
	h.metrics.usersOnline.Dec()
	if len(s.participants) == 0 {
		delete(sh.sessions, s.key)
		h.metrics.sessionsActive.Dec()
	}
}

// broadcast enqueues f to every participant of from's session but from,
// in one order for all: the session lock is held across the whole fan-out
// and every send is non-blocking. A recipient whose queue is full is a slow
// consumer: it is closed with 1013 instead of delaying the others.
func (h *hub) broadcast(from *participant, f *frame) {
	s := from.session
	s.mu.Lock()
	for _, p := range s.participants {
		if p == from || p.stopping() {
			continue
		}
		f.retain()
		select {
		case p.send <- f:
		default:
			f.release()
			if p.stop(closeTryAgainLater, "send queue full") {
				h.metrics.slowConsumers.Inc()
			}
		}
	}
	s.mu.Unlock()
}

// sessionInfo is one row of GET /api/sessions.
type sessionInfo struct {
	Key          string    `json:"session"`
	Participants int       `json:"participants"`
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
			out = append(out, sessionInfo{Key: s.key, Participants: len(s.participants), Created: s.created})
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
