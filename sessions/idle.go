package sessions

import (
	"container/list"
	"sync"
	"sync/atomic"
)

// idleSessions are this edge's ringlb.v1 sessions without participants,
// kept for idle_grace so their clients can resume, in the order they went
// idle: the one home of that order. Two rules read it, oldest idle first:
//
//   - edge.max_idle_sessions (hub.trimIdle): beyond it the oldest idle
//     session is forgotten, as if its idle_grace had run out. Without it a
//     client opening one session after another with fresh keys, each
//     left at once, makes the edge hold connection rate × idle_grace
//     sessions (about 0.6 KiB each without history: idle_test.go),
//     whatever max_connections says;
//   - edge.history.total_bytes (budget.go): the histories of idle sessions
//     give way first.
//
// A session its last participant leaves having sequenced nothing is not
// kept (session.owesResumes): nothing to replay, so a churn of empty
// sessions pushes nobody out.
// Copies of other edges' sessions (replica.go) are not sessions here: they
// are bounded by their owners' caps (an owner that forgets a session frees
// its copy) and their histories by the budget. Sessions arriving idle — a
// drain's hand-off, a promotion — are idle sessions like any other.
type idleSessions struct {
	limit atomic.Int64 // edge.max_idle_sessions (Reload sets it)
	count atomic.Int64 // all.Len(), for trimIdle's fast path and the gauge

	// mu guards both lists. It is the innermost lock: taken under a
	// shard's, a session's or the replica store's, and under it a
	// session's lock is only ever tried (TryLock), never waited for. A
	// session's elements (v1Session.idleElem, keptElem) change only with
	// both its lock and mu held, so either one is enough to read them.
	mu   sync.Mutex
	all  list.List // of *session: every idle session, oldest first
	kept list.List // of *session: those of them still holding a history
}

func newIdleSessions(limit int) *idleSessions {
	l := &idleSessions{}
	l.limit.Store(int64(limit))
	return l
}

// idled lists s (gone idle) as the newest idle session. Called with s.mu
// held; the caller calls hub.trimIdle once it holds no lock.
func (l *idleSessions) idled(s *session) {
	v := s.v1
	l.mu.Lock()
	if v.idleElem == nil {
		v.idleElem = l.all.PushBack(s)
		l.count.Add(1)
	}
	if v.keptElem == nil && v.n > 0 {
		v.keptElem = l.kept.PushBack(s)
	}
	l.mu.Unlock()
}

// busy takes s off the lists (revived, or freed). Called with s.mu held.
func (l *idleSessions) busy(s *session) {
	v := s.v1
	if v == nil || v.idleElem == nil && v.keptElem == nil {
		return
	}
	l.mu.Lock()
	if v.idleElem != nil {
		l.all.Remove(v.idleElem)
		v.idleElem = nil
		l.count.Add(-1)
	}
	if v.keptElem != nil {
		l.kept.Remove(v.keptElem)
		v.keptElem = nil
	}
	l.mu.Unlock()
}

// oldest returns the session idle the longest, nil when none is.
func (l *idleSessions) oldest() *session {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.all.Front(); e != nil {
		return e.Value.(*session)
	}
	return nil
}

// trimIdle forgets the oldest idle sessions beyond edge.max_idle_sessions,
// each as if its idle_grace had run out: freed with its history, its
// replica's copy and its pin; a client resuming it gets a new session (a
// reset). Sessions with participants are never on the list. Called with no
// lock held (it takes shard and session locks); O(1) when under the cap,
// and per session forgotten.
func (h *hub) trimIdle() {
	for h.idle.count.Load() > h.idle.limit.Load() {
		s := h.idle.oldest()
		if s == nil {
			return
		}
		sh := h.shardOf(s.key)
		sh.mu.Lock()
		s.mu.Lock()
		// Still listed: still idle (revived or freed meanwhile, it is off
		// the list, and the loop looks at the next oldest).
		forgot := s.v1.idleElem != nil
		if forgot {
			h.freeIdle(sh, s)
		}
		s.mu.Unlock()
		sh.mu.Unlock()
		if forgot {
			h.metrics.idleForgotten.Inc()
			if h.expired != nil {
				h.expired(s.key)
			}
		}
	}
}
