package sessions

import (
	"container/list"
	"sync"
	"sync/atomic"
)

// historyBudget bounds the bytes of every ringlb.v1 history on this edge
// together (edge.history.total_bytes): its sessions', idle ones included,
// and the copies it keeps of other edges' sessions (replica.go). Without
// it a client filling one session after another and leaving each (kept
// for idle_grace) makes the edge hold sessions × history.bytes, whatever
// max_connections says.
//
// At the bound, the histories of idle sessions (no participant: only a
// resume could want them) give way first, oldest idle first; then a
// session's own oldest msgs. Nothing is refused: a resume from before what
// is kept gets a reset, as with the per-session bounds.
type historyBudget struct {
	limit atomic.Int64 // edge.history.total_bytes (Reload sets it)
	used  atomic.Int64 // wire bytes of every frame held in a history

	// idleMu guards idle, the sessions without participants, oldest
	// first. It is the innermost lock: taken under a shard's, a session's
	// or the replica store's, and under it a session's lock is only ever
	// tried (TryLock), never waited for.
	idleMu sync.Mutex
	idle   list.List // of *session
}

func newHistoryBudget(limit int) *historyBudget {
	b := &historyBudget{}
	b.limit.Store(int64(limit))
	return b
}

// take charges n bytes to the budget; false (nothing charged) when they
// do not fit.
func (b *historyBudget) take(n int) bool {
	if b.used.Add(int64(n)) <= b.limit.Load() {
		return true
	}
	b.used.Add(-int64(n))
	return false
}

func (b *historyBudget) give(n int) { b.used.Add(-int64(n)) }

// idled lists s (gone idle) as the newest idle session. Called with s.mu
// held.
func (b *historyBudget) idled(s *session) {
	b.idleMu.Lock()
	if s.v1.idleElem == nil {
		s.v1.idleElem = b.idle.PushBack(s)
	}
	b.idleMu.Unlock()
}

// busy takes s off the idle list (revived, or freed). Called with s.mu held.
func (b *historyBudget) busy(s *session) {
	if s.v1 == nil || s.v1.idleElem == nil {
		return
	}
	b.idleMu.Lock()
	b.idle.Remove(s.v1.idleElem)
	s.v1.idleElem = nil
	b.idleMu.Unlock()
}

// takeFromIdle empties the histories of idle sessions, oldest first, until
// n bytes fit; it reports whether they were charged. The caller holds
// some session's lock, so idle sessions' locks are only tried: one held
// now (being revived or freed) is skipped.
func (b *historyBudget) takeFromIdle(n int) bool {
	b.idleMu.Lock()
	defer b.idleMu.Unlock()
	for e := b.idle.Front(); e != nil; {
		next := e.Next()
		s := e.Value.(*session)
		if s.mu.TryLock() {
			// Its history goes; the session stays for idle_grace (a
			// resume gets a reset), off the list: nothing left to take.
			s.v1.forget()
			b.idle.Remove(e)
			s.v1.idleElem = nil
			s.mu.Unlock()
			if b.take(n) {
				return true
			}
		}
		e = next
	}
	return b.take(n)
}
