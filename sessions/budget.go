package sessions

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
	// Wire bytes of every frame held in a history, against
	// edge.history.total_bytes (Reload sets the limit).
	byteBudget

	// idle are the sessions without participants (idle.go): their
	// histories give way first, oldest idle first.
	idle *idleSessions
}

func newHistoryBudget(limit int, idle *idleSessions) *historyBudget {
	b := &historyBudget{idle: idle}
	b.limit.Store(int64(limit))
	return b
}

// takeFromIdle empties the histories of idle sessions, oldest first, until
// n bytes fit; it reports whether they were charged. Low on memory (the
// process's, not the budget), the idle histories emptied must free n bytes
// themselves: the histories may not grow. The caller holds some session's
// lock, so idle sessions' locks are only tried: one held now (being revived
// or freed) is skipped.
func (b *historyBudget) takeFromIdle(n int64) bool {
	low := b.mem.LowFor(n)
	var freed int64
	l := b.idle
	l.mu.Lock()
	defer l.mu.Unlock()
	for e := l.kept.Front(); e != nil; {
		next := e.Next()
		s := e.Value.(*session)
		if s.mu.TryLock() {
			// Its history goes; the session stays idle for idle_grace (a
			// resume gets a reset), off the kept list: nothing left to take.
			freed += int64(s.v1.bytes)
			s.v1.forget()
			l.kept.Remove(e)
			s.v1.keptElem = nil
			s.mu.Unlock()
			if (!low || freed >= n) && b.tryTake(n) {
				return true
			}
		}
		e = next
	}
	return (!low || freed >= n) && b.tryTake(n)
}
