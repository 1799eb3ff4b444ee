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
// made (at least one); a second's worth may go at once; past it the
// reader, having relayed the message, waits until the rate has paid for
// it before it reads the next. Nothing is dropped or reordered: the
// sender's socket fills and its TCP window closes, as for any slow
// server. A reader waits at most a second per message (the debt is
// capped at a second's worth), so pacing never outlasts a participant's
// keepalive and a stop ends the wait within paceSlice.

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

// fanoutCost is what a message of size bytes delivered deliveries times
// counts against its sender's bucket.
func fanoutCost(size, deliveries int) int64 {
	return int64(max(deliveries, 1)) * int64(size+configs.FanoutDeliveryBytes)
}

// pace charges p's bucket with the cost of a message read at now and,
// past it, waits — its reader holding the next message back — until the
// rate has paid, or until p is stopped.
func (p *participant) pace(cost int64, now time.Time) {
	s := p.srv
	wait := p.fanout.charge(cost, s.fanoutRate.Load(), now.UnixNano())
	if wait <= 0 {
		return
	}
	s.metrics.fanoutPaced.Inc()
	// What was waited, not what was owed: a stop ends the wait early.
	var waited time.Duration
	for waited < wait && !p.stopping() {
		d := min(wait-waited, paceSlice)
		time.Sleep(d)
		waited += d
	}
	s.metrics.fanoutPacedSeconds.Add(waited.Seconds())
}
