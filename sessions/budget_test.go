package sessions

import (
	"bytes"
	"testing"

	"github.com/ringlb/ringlb/balancer/acceptguard/acceptguardtest"
)

// Low on memory a history grows no more past lowMemoryHold: idle
// sessions' histories give way first — freeing the msg's bytes themselves
// — then the history's own oldest msgs.
func TestLowMemoryHistoryGrowsNoMore(t *testing.T) {
	idle := newIdleSessions(100)
	budget := newHistoryBudget(1<<30, idle)
	budget.mem, _ = acceptguardtest.Low(t)
	msg := func(n int) *frame {
		p := bytes.Repeat([]byte{'m'}, n)
		return textFrame(n, func(b []byte) []byte { return append(b, p...) })
	}

	live := newV1Session(1000, 1<<20, budget)
	for range 10 {
		live.remember(msg(4 << 10))
	}
	if live.bytes > lowMemoryHold || live.n == 0 {
		t.Fatalf("low on memory, a history of %d msgs holds %d bytes, want at most %d", live.n, live.bytes, lowMemoryHold)
	}
	kept := live.n

	// An idle session's history, large enough to make room for one msg.
	s := &session{key: "idle", v1: newV1Session(1000, 1<<20, budget)}
	s.v1.remember(msg(8 << 10))
	idle.idled(s)
	live.remember(msg(4 << 10))
	if s.v1.n != 0 || live.n != kept+1 {
		t.Errorf("the idle history (%d msgs left) did not give way to the live one (%d msgs, was %d)", s.v1.n, live.n, kept)
	}
	// None left: the live history's own oldest give way, back within
	// lowMemoryHold.
	live.remember(msg(4 << 10))
	if live.bytes > lowMemoryHold {
		t.Errorf("with no idle history left the live one holds %d bytes, want at most %d", live.bytes, lowMemoryHold)
	}
	if used := budget.used.Load(); used != int64(live.bytes+s.v1.bytes) {
		t.Errorf("the budget counts %d bytes, the histories hold %d", used, live.bytes+s.v1.bytes)
	}
}
