package sessions

import (
	"sync/atomic"
	"time"

	"github.com/ringlb/ringlb/balancer/acceptguard"
)

// byteBudget bounds bytes held across the edge for one purpose: what the
// send queues hold (edge.max_queued_bytes), what is being received
// (edge.max_incoming_bytes), what the histories keep (historyBudget,
// edge.history.total_bytes). Each connection or session is bounded on its
// own (send_queue frames, max_message_bytes, history.bytes), but not their
// sum: a client with many connections holds many times the bound of one.
type byteBudget struct {
	used  atomic.Int64
	limit atomic.Int64
	// mem, when low, leaves each holder at most lowMemoryHold (tryTakeHeld).
	mem *acceptguard.Memory
}

// lowMemoryHold is what one holder — a participant's send queue, a
// connection's message being received — may hold while the process is low
// on memory (acceptguard.Memory): a participant that keeps up holds less
// (its frames are written as they come), and the edit, cursor and presence
// messages of a session are far smaller. Beyond it the holder is closed
// 1013 (try again later), as when the budget itself is spent: the largest
// holders go first, and the sessions that keep up go on.
const lowMemoryHold = 16 << 10

// A send queue that keeps up still takes in a burst — a few participants
// speaking at once — faster than its writer passes it on: low on memory it
// may hold up to lowMemoryBurst, for up to lowMemoryGrace, before it must
// be back under lowMemoryHold. Shedding it at lowMemoryHold closed a reader
// that kept up (four senders of 6 KiB at once: closed 1013 before it had
// read one). The price: a queue that does not read is shed past
// lowMemoryBurst, four times lowMemoryHold, not at lowMemoryHold itself.
const (
	lowMemoryBurst = 64 << 10
	lowMemoryGrace = time.Second
)

// tryTake charges n bytes unless that would pass the limit. A nil budget
// (a participant made without a Server, in benchmarks) counts nothing.
func (b *byteBudget) tryTake(n int64) bool {
	if b == nil {
		return true
	}
	if b.used.Add(n) > b.limit.Load() {
		b.used.Add(-n)
		return false
	}
	return true
}

// tryTakeShare is tryTake for a holder holding held bytes — a send queue,
// a connection receiving a message: it may grow only while it would hold
// no more than the budget has left free after the take (a dynamic
// threshold, as switches share one packet buffer between ports). k
// holders that never let go stop at limit/(k+1) each, so they never spend
// the whole budget, and what stays free takes every holder holding less:
// the readers that keep up, a moment behind a burst; the messages that
// arrive whole. Taking the whole budget, the hoarders closed those
// instead: another session's reader got 0–11 of 50 msgs, closed 1013
// (TestHoardedBudgetShedsOnlyTheHoarders), and an honest 5-byte message
// was refused 1013 while one client held 64 connections' messages
// half-sent (TestHoardedIncomingBudgetShedsOnlyTheHoarder). Nothing passes
// the limit.
func (b *byteBudget) tryTakeShare(held, n int64) bool {
	if b == nil {
		return true
	}
	if u := b.used.Add(n); held+n > b.limit.Load()-u {
		b.used.Add(-n)
		return false
	}
	return true
}

// tryTakeHeld is tryTake for a holder already holding held bytes (a
// history), which the process's memory may refuse as well: low on memory,
// a holder may not grow past lowMemoryHold. Only a holder past it pays for
// the check.
func (b *byteBudget) tryTakeHeld(held, n int64) bool {
	return b.memoryLets(held, n, nil) && b.tryTake(n)
}

// tryTakeShareHeld is tryTakeShare for a holder holding held bytes, which
// the process's memory may refuse as well: low on memory, it may not grow
// past lowMemoryHold; a send queue (over not nil) may pass it by a burst,
// under lowMemoryBurst and for lowMemoryGrace from *over (when it went
// over: Unix ns, 0 when under, which popFrame resets).
func (b *byteBudget) tryTakeShareHeld(held, n int64, over *int64) bool {
	return b.memoryLets(held, n, over) && b.tryTakeShare(held, n)
}

// memoryLets reports whether the process's memory lets a holder of held
// bytes take n more: always while it is not low or the holder stays
// within lowMemoryHold; a send queue (over not nil) also within a burst.
// Only a queue past lowMemoryHold while low reads the clock.
func (b *byteBudget) memoryLets(held, n int64, over *int64) bool {
	if b == nil || held+n <= lowMemoryHold || !b.mem.LowFor(n) {
		return true
	}
	if over == nil {
		return false
	}
	now := time.Now().UnixNano()
	if *over == 0 {
		*over = now
	}
	return held+n <= lowMemoryBurst && now-*over <= int64(lowMemoryGrace)
}

// charge takes n bytes whatever the limit.
func (b *byteBudget) charge(n int64) {
	if b != nil {
		b.used.Add(n)
	}
}

// give returns n bytes no longer held.
func (b *byteBudget) give(n int64) {
	if b != nil {
		b.used.Add(-n)
	}
}

// The send queues: 8 sessions, each with a participant that never reads
// beside one sending the largest messages just short of filling its queue,
// grew the heap by 65 MiB (TestSendQueuesBoundedTogether), and thousands
// of connections reach gigabytes. A frame for a participant whose queue is
// empty is always taken (it is written at once: a reader that keeps up
// never waits on the budget, and the overshoot is at most a frame per
// participant); a frame for one that still has frames waiting is refused
// once its queue would hold more than the budget has left free
// (tryTakeShare), and that participant is closed as a slow consumer
// (1013), giving its queue back (participant.enqueue).
//
// The incoming messages: a frame's announced length is taken before its
// payload comes (wsReader.next), so connections that each announce the
// largest message and send a byte of it held connections ×
// max_message_bytes (TestIncomingMessagesBoundedTogether). A message is
// taken only while what its connection would hold is no more than the
// budget has left free (tryTakeShare, the send queues' rule): the
// connections of a client that announces messages and never finishes them
// stop at a share of the budget, each leaving at least its own message's
// worth free, and the one whose frame would pass its share is closed 1013.
// Before, they spent the whole budget, and every other participant's next
// message, however small, was refused 1013 for as long as they held it
// (TestHoardedIncomingBudgetShedsOnlyTheHoarder). Each connection holds
// one message at most, so the share is per connection: the edge has no
// client address it can trust behind a balancer (README.md, presence).
// The price: a message takes at most half the budget, so
// max_incoming_bytes is at least twice max_message_bytes (configs), and
// while hoarders hold their share an honest message larger than half of
// what they left free is refused 1013 as all were before; at the defaults
// (64 MiB, 64 KiB) a thousand senders of the largest messages at once fit.

// queuedSize is what f counts against the send budget while queued: the
// bytes it holds. A batch (a resume's replay) holds the msgs it has still
// to write, each counted until the writer takes it (takeReplayed). They
// are history frames, but the history gives their bytes back as it moves
// on, while the batch holds them until written: counted as nothing here,
// a client resuming again and again as it moved its history on held MiBs
// that neither budget, nor low-memory shedding, saw
// (TestReplaysAreCountedAndOneWaits).
func (f *frame) queuedSize() int64 {
	if f.batch != nil {
		n := 0
		for _, g := range f.batch {
			n += len(g.wire())
		}
		return int64(n)
	}
	return int64(len(f.buf))
}
