package sessions

import "slices"

// Seats: a token holder takes precedence over anonymous viewers.
//
// With edge.auth.anonymous: viewer, anyone who has a session's key — a
// viewer link minus its token, passed around — joins it as a viewer. Two
// things such joins could do to the token holders the session is for:
//
//   - fill it: max_participants anonymous viewers, and every editor after
//     them was refused 1008 "session is full" for as long as they stayed.
//     Now a token holder who finds the session full takes the seat of its
//     newest anonymous viewer, closed with 1008 (unseatViewer).
//   - hold it in the other mode: the first participant sets a session's
//     mode, and one anonymous viewer joining raw first had every
//     ringlb.v1 editor refused 1008 (or the reverse). Now a token holder
//     who finds the session in the other mode, and only anonymous viewers
//     ever in it, ends it and begins it anew in its own mode, the viewers
//     closed with 1008 (reclaim). Nothing is lost: an anonymous viewer
//     sends nothing (its v1 msgs are refused, its raw frames dropped), so
//     such a session has no history. A session a token holder or an
//     editor has joined, and one handed here or promoted, keeps its mode.
//
// Token holders of any role count (a token names someone the operator
// admitted); anonymous editors (anonymous: editor) are never unseated.

// Close reasons of an unseated viewer.
const (
	unseatedFull = "session is full: seat given to a token holder"
	unseatedMode = "session begun anew by a token holder speaking the other mode"
)

// anonymousViewer reports whether p joined without a token as a viewer.
func anonymousViewer(p *participant) bool {
	return p.viewer && p.token.Load() == nil
}

// unseatViewer makes room in s, full, for a token holder: its newest
// anonymous viewer is closed with 1008 and leaves at once. It reports
// whether there was one. Called with the shard and session locks held.
func (h *hub) unseatViewer(s *session) bool {
	for i := len(s.participants) - 1; i >= 0; i-- {
		if q := s.participants[i]; anonymousViewer(q) {
			h.unseat(s, i, unseatedFull)
			return true
		}
	}
	return false
}

// unseat removes s.participants[i] from s, tells the others it left, and
// closes it with 1008 and reason. Its reader's leave then finds it gone.
// Called with the shard and session locks held.
func (h *hub) unseat(s *session, i int, reason string) {
	q := s.participants[i]
	h.dropParticipant(s, i)
	q.stop(closePolicy, reason)
	h.metrics.unseated.Inc()
}

// dropParticipant removes s.participants[i] from s, counts it out of the
// session's newcomers and tells the others it left: what a leave and an
// unseat share. Called with the shard and session locks held.
func (h *hub) dropParticipant(s *session, i int) {
	q := s.participants[i]
	s.participants = slices.Delete(s.participants, i, i+1)
	if q.pooled {
		s.newcomerLeft(q)
	}
	h.userOffline(q)
	if s.v1 != nil {
		h.leaveV1(s, q)
	}
}

// reclaim ends s for p, a token holder, when s speaks the other mode and
// only anonymous viewers have ever joined it: they are closed with 1008
// and s is freed, so that p begins the session anew. It reports whether it
// did. Called with the shard lock held.
func (h *hub) reclaim(sh *hubShard, s *session, p *participant) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.viewersOnly || (s.v1 != nil) == p.v1 || s.movedTo != "" {
		return false
	}
	if len(s.participants) > 0 {
		for i := len(s.participants) - 1; i >= 0; i-- {
			h.unseat(s, i, unseatedMode)
		}
		h.metrics.sessionsActive.Add(-1)
	}
	if s.v1 != nil {
		h.freeIdle(sh, s)
	} else {
		h.free(sh, s)
	}
	return true
}
