package sessions

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// historyHeld sums the history bytes every session of e holds.
func historyHeld(e *testEdge) (sessions, bytes int) {
	e.s.hub.eachSession(func(_ *hubShard, s *session) {
		s.mu.Lock()
		if s.v1 != nil {
			sessions++
			bytes += s.v1.bytes
		}
		s.mu.Unlock()
	})
	return sessions, bytes
}

// One client with one connection at a time (max_connections 4) fills one
// ringlb.v1 session after another with history and leaves it: each is kept
// for idle_grace with its history, so without an edge-wide bound the edge
// holds sessions × history.bytes. The histories together stay within
// edge.history.total_bytes.
func TestHistoryBoundedAcrossSessions(t *testing.T) {
	const (
		perSession = 128 << 10
		total      = 1 << 20
		sessions   = 48 // 6 MiB of history without the edge-wide bound
		msgBytes   = 30 << 10
	)
	e := startEdge(t, configs.Edge{
		MaxConnections: 4,
		IdleGrace:      configs.Duration(time.Hour),
		History:        configs.History{Messages: 1000, Bytes: perSession, TotalBytes: total},
	}, nil)
	baseline := heapAfterGC()
	data := strings.Repeat("h", msgBytes)
	for i := range sessions {
		c := e.joinV1(t, fmt.Sprintf("hoard-%d", i), "", nil)
		for range perSession / msgBytes {
			c.msg(t, data)
			c.readType(t, "ack")
		}
		c.leave(t)
	}
	n, held := historyHeld(e)
	grown := heapAfterGC() - baseline
	t.Logf("%d sessions held by one client, %d bytes of history (heap grew %d)", n, held, grown)
	if held > total {
		t.Fatalf("%d sessions hold %d bytes of history, over edge.history.total_bytes %d", n, held, total)
	}
	if got := metricValue(t, e.s, "ringlb_edge_history_bytes"); int(got) != held {
		t.Errorf("ringlb_edge_history_bytes = %v, want %d", got, held)
	}

	// The edge still keeps history for the session in use: the budget
	// is taken from idle sessions first.
	c := e.joinV1(t, "in-use", "", nil)
	for range 3 {
		c.msg(t, data)
		c.readType(t, "ack")
	}
	if r := resumeFrom(t, e, "in-use", c.welcome.Epoch, 0); r != "" {
		t.Fatalf("live session under a full budget: reset %q, want its history", r)
	}
}
