package sessions

import (
	"time"

	"github.com/fasthttp/websocket"
)

// Pacing each ringlb.v1 session's presence.
//
// Every join and leave sends a presence event to every other participant:
// N-1 deliveries each. A participant's own messages are paced (pace.go),
// but presence belonged to nobody's bucket — a joiner is a new connection
// with a full one — so one client holding a session's key (an anonymous
// viewer will do) that joined and left in a loop cost one handshake per
// cycle, and the edge 2 × (N-1) deliveries (TestPresenceChurnIsPaced).
//
// So a session sends presence at most once per presenceInterval. The
// first change after a quiet interval goes out at once; the changes after
// it are held and go out together when the interval ends, as their net
// effect: a participant that joined and left within it is told to nobody
// who never saw it (its join and leave cancel), one that left is told as
// a leave, one that joined as a join. Nobody waits to join, nor is anyone
// refused: only what the others are told of a join or leave waits, at
// most an interval. A welcome lists the session's true participants, as
// always; while changes are held, a participant that joined meanwhile
// knows more than the others, and the batch brings each participant what
// it has not been told (presence ticks below), so none is told a join
// twice or a leave of someone it never saw, and every one ends with the
// session's true presence. The batch is delivered under the session lock,
// like any frame: one order for all.
//
// Not charged to a client's address: a balancer's upgrade comes from the
// balancer's address, and the client's (X-Forwarded-For) is not covered
// by its signature; nor would an address's pace stop a client with many
// addresses, nor spare the honest users behind its NAT. Per session, the
// churn of any number of clients and addresses tells the session's
// participants at most two events an interval per churning connection
// (the leave of the one announced, the join of the one present), however
// many cycles it makes.

// presenceInterval is how often a session's presence may go out: short
// beside anything a person notices of who else is in a document, long
// beside a handshake (a churning client's cycle took 1–9 ms on loopback).
const presenceInterval = 100 * time.Millisecond

// heldPresence is what a session holds back for its next presence batch.
// Joiners not told yet are the participants with announced false.
type heldPresence struct {
	timer *time.Timer // sends the batch (flushPresence)
	// gone are the participants that left since the batch was due and
	// that a participant still here knows of.
	gone []goneMember
}

// goneMember is a participant that left while presence was held.
type goneMember struct {
	memberInfo
	joined, left uint32 // presence ticks
	announced    bool   // its join was told to all
}

// tickBefore orders presence ticks (v1Session.presenceTick), which wrap;
// the ticks compared are those of one batch's interval.
func tickBefore(a, b uint32) bool { return int32(a-b) < 0 }

// knowsJoin reports whether r has been told of a participant that joined
// at tick joined (announced: told to all): r was, or r joined after it
// and its welcome listed it. Called with the session lock held.
func knowsJoin(r *participant, announced bool, joined uint32) bool {
	return announced || (!r.announced && tickBefore(joined, r.joinTick))
}

// knowsGone reports whether r still holds g for present.
func knowsGone(r *participant, g *goneMember) bool {
	if r.announced {
		return g.announced
	}
	return knowsJoin(r, g.announced, g.joined) && tickBefore(r.joinTick, g.left)
}

// presenceDue reports whether a presence event of s may go out now, and
// takes the interval if so; otherwise the change is held for the batch,
// which is scheduled if it was not. Called with s.mu held.
func (h *hub) presenceDue(s *session, now time.Time) bool {
	v := s.v1
	if v.held != nil {
		return false
	}
	ns := now.UnixNano()
	if wait := v.presenceAt + int64(presenceInterval) - ns; v.presenceAt != 0 && wait > 0 {
		v.held = &heldPresence{}
		v.held.timer = time.AfterFunc(time.Duration(wait), func() { h.flushPresence(s) })
		return false
	}
	v.presenceAt = ns
	return true
}

// holdLeave keeps p, which left while presence was held, for the batch:
// its leave goes to whoever knows of it. Called with s.mu held.
func (h *hub) holdLeave(s *session, p *participant) {
	v := s.v1
	h.metrics.presencePaced.Inc()
	if !p.announced {
		// Joined and left within the interval: neither is told to
		// anyone but the joiners whose welcome listed it.
		h.metrics.presenceCoalesced.Add(2)
	}
	v.held.gone = append(v.held.gone, goneMember{memberInfo{p.id, p.user}, p.joinTick, v.presenceTick, p.announced})
	// Keep only those someone still here knows of: a churning client's
	// flaps, seen by nobody, hold nothing.
	gone := v.held.gone[:0]
	for _, g := range v.held.gone {
		for _, r := range s.participants {
			if knowsGone(r, &g) {
				gone = append(gone, g)
				break
			}
		}
	}
	clear(v.held.gone[len(gone):])
	v.held.gone = gone
}

// flushPresence sends the presence batch of s when its interval ends.
func (h *hub) flushPresence(s *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h.sendHeldPresence(s)
}

// sendHeldPresence sends what s holds back: to each participant, a leave
// for every participant gone it knows of, then a join for every
// participant here it does not. Sent before its interval ends when a
// participant whose join is held publishes (publish): a join goes before
// its participant's first msg, so nobody gets a msg from someone it has
// not been told of. Called with s.mu held.
//
// Each participant's events go in one frame, one message after another
// (presenceBatch): one slot of its send queue, however many joined or left
// in the interval. One slot per event, 60 joins or leaves within one
// interval put 60 frames into every queue at once, and with send_queue
// under that every participant, reading all the while, was closed 1013
// (TestPresenceBurstTakesOneQueueSlot). Those told of all before the
// interval get the same events: one frame for all of them.
func (h *hub) sendHeldPresence(s *session) {
	v := s.v1
	held := v.held
	if held == nil {
		return // the session emptied meanwhile (endPresence)
	}
	v.held = nil
	if s.movedTo != "" {
		return // handed on: its participants are being closed
	}
	// Each event encoded once: leaves[i] of held.gone[i], joins[j] of
	// s.participants[j] if its join is held (unpooled frames, so their
	// bytes may outlive them: left to the GC).
	leaves := make([][]byte, len(held.gone))
	for i := range held.gone {
		leaves[i] = jsonFrame(presenceFrame{"leave", held.gone[i].memberInfo}).wire()
	}
	joins := make([][]byte, len(s.participants))
	for j, q := range s.participants {
		if !q.announced {
			joins[j] = jsonFrame(presenceFrame{"join", memberInfo{q.id, q.user}}).wire()
		}
	}
	var msgs [][]byte  // one participant's events
	var toldAll *frame // those told of all before get the same events
	sent := false
	for _, r := range s.participants {
		if r.announced && toldAll != nil {
			h.deliver(r, toldAll)
			continue
		}
		msgs = msgs[:0]
		for i := range held.gone {
			if knowsGone(r, &held.gone[i]) {
				msgs = append(msgs, leaves[i])
			}
		}
		for j, q := range s.participants {
			if q != r && !q.announced && !knowsJoin(r, false, q.joinTick) {
				msgs = append(msgs, joins[j])
			}
		}
		if len(msgs) == 0 {
			continue
		}
		f := presenceBatch(msgs)
		h.deliver(r, f)
		sent = true
		if r.announced {
			toldAll = f // released below
		} else {
			f.release()
		}
	}
	if toldAll != nil {
		toldAll.release()
	}
	for _, q := range s.participants {
		q.announced = true
	}
	if sent {
		v.presenceAt = time.Now().UnixNano()
	}
}

// presenceBatch returns an unpooled frame whose wire is msgs, server
// messages encoded already, one after another: the writer writes them as
// one frame, in one write, and the client reads each message as if it
// had come alone.
func presenceBatch(msgs [][]byte) *frame {
	n := 0
	for _, m := range msgs {
		n += len(m)
	}
	f := &frame{kind: websocket.TextMessage, buf: make([]byte, frameHeadroom, frameHeadroom+n), start: frameHeadroom, presence: true}
	for _, m := range msgs {
		f.buf = append(f.buf, m...)
	}
	f.readAt = time.Now()
	f.refs.Store(1)
	return f
}

// endPresence drops what s holds back once it has nobody left to tell.
// Called with s.mu held.
func (h *hub) endPresence(s *session) {
	v := s.v1
	if v.held != nil {
		v.held.timer.Stop()
		v.held = nil
	}
}
