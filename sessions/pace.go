package sessions

import (
	"time"

	"github.com/ringlb/ringlb/configs"
)

// Pacing each participant's fan-out (edge.max_fanout_bytes_per_second).
//
// A message a participant sends costs the edge a delivery to every other
// participant of its session: a queueing, a writer's wake-up and a write
// each. Nothing else bounds how many a participant makes it do a second —
// TCP only slows a sender to what the edge can take, and the edge takes
// as fast as a core can deliver — so one editor sending small messages as
// fast as its socket took them to a full session kept an edge core busy
// on its own. Each participant has a token bucket of bytes: a message
// takes its size plus configs.FanoutDeliveryBytes once per delivery it
// made (at least one); a ping, a pong or a message's fragment as a message
// to nobody (wsReader.next). A second's worth may go at once; past it the
// reader, having relayed the message, waits until the rate has paid for
// it before it reads the next. Nothing is dropped or reordered: the
// sender's socket fills and its TCP window closes, as for any slow
// server. A reader waits at most a second per message (the debt is
// capped at a second's worth), so pacing never outlasts a participant's
// keepalive and a stop ends the wait within paceSlice (the wait for a
// frame read after the stop, the close handshake's end: paceFrame).
//
// A bucket starts full, so a participant's first second cost nobody
// anything: one client holding a session's key as an editor that joined,
// sent one msg and left, in a loop, paid every msg from a bucket nobody
// had drawn on and cost the edge N-1 deliveries a cycle, as fast as it
// could connect (TestChurningEditorsFanoutIsPaced). So the messages a
// participant sends in its first second in a session (joinerWindow) are
// paid from its session's joiners' bucket too, which its newcomers share:
// the rate and a second's worth for each newcomer still connected (at
// least one). A participant that has stayed a second no longer draws on
// it — its own bucket would have refilled by then anyway.
//
// Unlike its own bucket, the joiners' bucket is paid before a message
// goes, not after: a newcomer's message that finds it in debt waits, read
// but not relayed, until the rate has paid (joinersTurn), and is charged
// when it goes, so newcomers' messages go one at a time once it is spent.
// Paid after, a message would always go: a connection that leaves once it
// has sent has no next message to hold back. A message waits at most
// until its sender's first second is over, and then goes uncharged, as one
// read after it would: a churner joining as the rate paid for one
// participant found, each time, the room its own join made, and kept an
// honest newcomer's first msg waiting for as long as it churned
// (TestChurnerHoldsNoNewcomerBack).
//
// Leaving is what tells a churner from a crowd. A newcomer counted in
// brings its second's worth at once (and the rate again); it is counted
// for two seconds, or while a message of its waits (one read in its first
// second may reach its turn later). One that stays past that, or leaves
// after its first second, takes its second's worth and what it spent with
// it; one that leaves within it takes its second's worth and leaves what
// it spent. A class of 50 opening a link at once
// stays: each brings its own, as if each had its own bucket, and nobody
// waits (TestJoiningCrowdIsNotPaced). A churner leaves: one connection at
// a time, it brings one participant's pace, which all its connections
// share. Its first msg pays for its join and leave too. A connection whose message waits its
// turn and that closes its side meanwhile (TCP_INFO: connected) has its
// message dropped, as any a closing participant sends: a ringlb.v1 client
// that left without its ack sends it again on its next connection. Kept
// waiting, a churner that sent and dropped each connection at once had
// the edge hold them, each a seat, and filled the session (15 free seats
// of 15, TestChurningEditorsFanoutIsPaced). A client that keeps its
// connections open brings a second's worth for each, as any participant
// that stays does. Nothing else of a newcomer waits: its welcome,
// resumes and pings are its own bucket's, as before.

// paceSlice is how long a pacing reader sleeps before looking whether its
// participant was stopped.
const paceSlice = 50 * time.Millisecond

// fanoutBucket is one participant's token bucket. Touched by its running
// reader only (readers follow one another through participant.reader).
type fanoutBucket struct {
	tokens int64 // bytes; below zero: owed
	at     int64 // Unix ns of the last charge; 0: full
}

// charge takes cost bytes at now (Unix ns) from a bucket refilled at rate
// bytes a second up to a second's worth, and returns how long its owner
// must wait until it is out of debt (0: it is not).
func (b *fanoutBucket) charge(cost, rate, now int64) time.Duration {
	switch elapsed := now - b.at; {
	case b.at == 0 || elapsed >= 2*int64(time.Second):
		b.tokens = rate // full from any debt (at most a second's worth)
	case elapsed > 0:
		b.tokens = min(rate, b.tokens+int64(float64(rate)*float64(elapsed)/float64(time.Second)))
	}
	b.at = now
	b.tokens = max(b.tokens-cost, -rate)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(float64(-b.tokens) / float64(rate) * float64(time.Second))
}

// joinerWindow is how long a participant's messages draw on its session's
// joiners' bucket after it joined: the time its own bucket takes to refill
// from empty, so a connection that stays no longer saves anything by
// having started full.
const joinerWindow = time.Second

// joinerSlice is how long a newcomer waiting its turn sleeps before it
// looks again: shorter than paceSlice, since it also looks whether its
// connection has closed, and a churner dropping connections as fast as
// it can held 6–15 of a session's 15 free seats with waiting ones at 50
// ms, 2–4 at 10 ms (TestChurningEditorsFanoutIsPaced).
const joinerSlice = 10 * time.Millisecond

// newcomer reports whether p had joined its session less than
// joinerWindow before now (Unix ns). Modulo 2³² ms, as joinedMs: a
// participant there for 49.7 days counts as one again for a second.
func (p *participant) newcomer(now int64) bool { return p.joinedWithin(now, joinerWindow) }

// joinedWithin reports whether p had joined its session less than d
// before now (Unix ns), modulo 2³² ms as joinedMs.
func (p *participant) joinedWithin(now int64, d time.Duration) bool {
	return uint32(now/int64(time.Millisecond))-p.joinedMs < uint32(d/time.Millisecond)
}

// joinerTurn charges the joiners' bucket of p's session with what a
// message of size bytes from p, a newcomer, costs fanned out to the others
// now (its first, its join and leave too), and returns 0; or, while the
// bucket is past what its newcomers bring, charges nothing and returns
// how long until it is not. Once p's first second is over it returns 0
// and charges nothing: a message waits its turn no longer than that. The newcomers still connected are counted
// again (a scan of the session, a getsockopt for each newcomer) when p
// joined since the last count or that is paceSlice old: each brings a
// second's worth at once, so a crowd's last joiner finds its own there.
// Takes s.mu.
func (h *hub) joinerTurn(p *participant, size int, rate int64) time.Duration {
	s := p.session
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().UnixNano()
	if !p.newcomer(now) {
		// Its first second is over: a message it read then would not
		// have drawn on the pool at all, and a churner keeping the pool
		// in debt (joining as the rate paid for one participant, its
		// own join making the room it spent) held an honest newcomer's
		// first msg for as long as it churned.
		p.gating = false
		return 0
	}
	p.gating = true
	if now-s.newcomersAt >= int64(paceSlice) || !tickBefore(p.joinedMs, uint32(s.newcomersAt/int64(time.Millisecond))) {
		s.newcomersAt, s.newcomers = now, 0
		stayed := int64(0)
		for _, r := range s.participants {
			switch {
			case (r.gating || r.joinedWithin(now, 2*joinerWindow)) && connected(r) && !r.stopping():
				// Counted a second longer than its messages draw on
				// the pool: one read in its first second may come to
				// its turn later (its reader, a lock, its wait), and
				// counts until it has gone.
				s.newcomers++
				r.pooled = true
			case r.pooled && !r.joinedWithin(now, 2*joinerWindow):
				stayed++ // past its count, still here
				r.pooled = false
			default:
				r.pooled = false // its connection closed: left
			}
		}
		// A newcomer that stayed takes its second's worth with it and
		// what it spent of the pool: what it spent was its own. One
		// that left took its second's worth and left what it spent.
		s.joiners.tokens = min(s.joiners.tokens+stayed*rate, rate)
	}
	others := len(s.participants) - 1
	cost := fanoutCost(size, others)
	presence := s.v1 != nil && !p.presencePaid
	if presence {
		// Its join and its leave are told to every other participant,
		// at once or with the batch its first msg takes out with it
		// (publish): a churner sending a msg from each connection
		// made three times a msg's deliveries a cycle so. Its first msg
		// pays for both.
		cost += fanoutCost(0, 2*others)
	}
	if wait := s.joiners.share(cost, rate, int64(max(s.newcomers, 1)), now); wait > 0 {
		return wait // nothing charged
	}
	p.presencePaid = p.presencePaid || presence
	p.gating = false
	return 0
}

// joinersTurn waits, for a message of size bytes p read at readAt, until
// its session's joiners' bucket lets it go (joinerTurn), if p had joined
// less than joinerWindow before; false when p was stopped meanwhile, or
// its peer closed its side of the connection: the message is dropped, as
// any a closing participant sends. A stop that comes after its last look,
// during the slice before its turn, is the session's to see (relays).
func (p *participant) joinersTurn(size int, readAt time.Time) bool {
	if !p.newcomer(readAt.UnixNano()) {
		return true
	}
	s := p.srv
	rate := s.fanoutRate.Load()
	for held := false; ; held = true {
		wait := s.hub.joinerTurn(p, size, rate)
		if wait <= 0 {
			return true
		}
		if !held {
			s.metrics.joinersPaced.Inc()
			// Held while it waits: counted as being received again
			// (max_incoming_bytes), though never refused for it.
			s.incoming.charge(int64(size))
			defer s.incoming.give(int64(size))
		}
		// A client that sent and left without its ack: waiting, its
		// connection would hold a seat of the session for nothing.
		if p.stopping() || !connected(p) {
			return false
		}
		// Slices, not the whole wait: the other newcomers waiting may
		// take the bucket first, and a stop or a close ends the wait.
		time.Sleep(min(wait, joinerSlice))
	}
}

// newcomerLeft counts p, counted among its session's newcomers, out as it
// leaves: within its first second it leaves what it spent of the pool
// (a churner's connections pay one another's way); past it, what it spent
// was its own second's worth, and goes with it. Called with s.mu held.
func (s *session) newcomerLeft(p *participant) {
	p.pooled = false
	s.newcomers = max(s.newcomers-1, 0)
	if p.srv != nil && !p.newcomer(time.Now().UnixNano()) {
		rate := p.srv.fanoutRate.Load()
		s.joiners.tokens = min(s.joiners.tokens+rate, rate)
	}
}

// share is charge for a bucket n participants share, each bringing a
// second's worth at rate: it holds one's above zero and may go n-1 more
// below before anyone waits, refilled at n times the rate. It charges cost
// unless the bucket is past that, and then returns how long until it is
// not, charging nothing. n may change from one call to the next: a
// participant counted in brings its second's worth at once, one counted
// out takes it away.
func (b *fanoutBucket) share(cost, rate, n, now int64) time.Duration {
	floor := -(n - 1) * rate
	switch elapsed := now - b.at; {
	case b.at == 0 || elapsed >= 2*int64(time.Second):
		b.tokens = rate // full from any debt (at most a second's worth past the floor)
	case elapsed > 0:
		b.tokens = min(rate, b.tokens+int64(float64(n*rate)*float64(elapsed)/float64(time.Second)))
	}
	b.at = now
	if b.tokens < floor {
		return time.Duration(float64(floor-b.tokens) / float64(n*rate) * float64(time.Second))
	}
	b.tokens = max(b.tokens-cost, floor-rate)
	return 0
}

// fanoutCost is what a message of size bytes delivered deliveries times
// counts against its sender's bucket.
func fanoutCost(size, deliveries int) int64 {
	return int64(max(deliveries, 1)) * int64(size+configs.FanoutDeliveryBytes)
}

// pace charges p's bucket with the cost of a message read at now and,
// past it, waits — its reader holding the next message back — until the
// rate has paid, or until p is stopped.
func (p *participant) pace(cost int64, now time.Time) { p.paceFor(cost, now, false) }

// paceFrame is pace for a frame read at now that is not a whole message
// (a fragment, a control frame), or for what came once p was stopped (a
// frame, a read of bytes dropped): that waits out its pace until the close
// handshake's end, the stop ending no wait. A stopped participant's frames
// are read until then, looking for its close, and unpaced, a client closed
// at its join (1008) flooded empty frames for all of closeWait, connection
// after connection (TestFloodWhileClosingIsPaced).
func (p *participant) paceFrame(cost int64, now time.Time) {
	p.paceFor(cost, now, p.stopping())
}

// paceFor is pace; closing: p was stopped before the frame paid for came,
// and only the close handshake's end, not the stop, ends the wait (past
// it the reader's next read from the socket ends the connection).
func (p *participant) paceFor(cost int64, now time.Time, closing bool) {
	s := p.srv
	wait := p.fanout.charge(cost, s.fanoutRate.Load(), now.UnixNano())
	if wait <= 0 {
		return
	}
	s.metrics.fanoutPaced.Inc()
	// What was waited, not what was owed: a stop ends the wait early.
	var waited time.Duration
	for waited < wait {
		if closing {
			if by := p.closeBy.Load(); by != 0 && time.Now().UnixNano() >= by {
				break
			}
		} else if p.stopping() {
			break
		}
		d := min(wait-waited, paceSlice)
		time.Sleep(d)
		waited += d
	}
	s.metrics.fanoutPacedSeconds.Add(waited.Seconds())
}
