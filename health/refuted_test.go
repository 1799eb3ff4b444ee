package health

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"
)

// A node the cluster suspected or took for dead (busy, or cut off from the
// others) hears of it from memberlist only as a log line, one of those
// memberlist (v0.7.0, state.go: suspectNode, deadNode) prints as it refutes
// a suspect or dead message about itself; others that had dropped it take
// it back as they hear the refutation. Such a line, written to the logger
// memberlistConfig gives memberlist, is BackAt and a membership change;
// another of memberlist's warnings is neither.
func TestRefutedDeathIsBackAt(t *testing.T) {
	m := startNode(t, testCluster("node-0"), edgeMeta(0))
	changes, unsubscribe := m.Subscribe()
	defer unsubscribe()
	mc, err := memberlistConfig(testCluster("node-0"), nil, slog.New(slog.DiscardHandler), m.refutedDeath)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-changes: // the start's
	default:
	}
	mc.Logger.Printf("[WARN] memberlist: Refuting an alive message for '%s' (%v:%d) meta:(%v VS %v), vsn:(%v VS %v)", "node-0", "127.0.0.1", 7946, nil, nil, nil, nil)
	if back := m.BackAt(); !back.IsZero() {
		t.Fatalf("BackAt %v after another of memberlist's warnings, want zero", back)
	}
	for _, format := range []string{"[WARN] memberlist: Refuting a suspect message (from: %s)", "[WARN] memberlist: Refuting a dead message (from: %s)"} {
		before := time.Now()
		mc.Logger.Printf(format, "node-1")
		if back := m.BackAt(); back.Before(before) {
			t.Fatalf("BackAt %v after %q at %v", back, format, before)
		}
		waitChange(t, changes, format)
		mc.Logger.Printf(format, "node-1") // the same time away
		answered := time.Now()
		m.probeAnswered(answered, answered)
		if back := m.BackAt(); !back.Equal(answered) {
			t.Fatalf("BackAt %v once a probe was answered at %v, want that", back, answered)
		}
		waitChange(t, changes, "the answer after "+format)
	}
	if n := m.backs[backRefuted].Load(); n != 2 {
		t.Errorf("ringlb_gossip_back_total{reason=\"refuted\"} %d, want 2 (one a time away)", n)
	}
}

func waitChange(t *testing.T, changes <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-changes:
	case <-time.After(30 * time.Second):
		t.Fatalf("no membership change signalled for %s", what)
	}
}

// A pause of the process longer than a probe and the others' shortest
// suspicion timeout may have had it taken for dead: the node is away, as
// after a refutation, until a member answers it (the end-to-end partition
// test stops an edge's process for real; here the watch's check is given
// the times such a pause leaves between two of its ticks).
func TestPauseIsBackAt(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	m := nodes[0]
	changes, unsubscribe := m.Subscribe()
	defer unsubscribe()
	after := int64(m.dropAfter(2))
	for _, c := range []struct {
		ran, answered int64 // before now
		want          int
		away          bool
	}{
		{2 * int64(m.probeInterval), 0, 0, false},
		{after, after, 0, false},
		{after + 1, 0, backPaused, true},
		{after + 1, after + 1, backPaused, true},
		{0, after + 1, backUnanswered, true},
	} {
		const now = int64(time.Hour)
		if reason, away := quiet(now, now-c.ran, now-c.answered, after); away != c.away || away && reason != c.want {
			t.Errorf("quiet with the watch run %v and answered %v ago: %v %s, want %v %s", time.Duration(c.ran), time.Duration(c.answered), away, backReasons[reason], c.away, backReasons[c.want])
		}
	}
	now := time.Now()
	last := now.Add(-m.probeInterval - m.dropAfter(2))
	m.noticeGap(last, now)
	if back := m.BackAt(); back.Before(now) {
		t.Fatalf("BackAt %v after a pause past the suspicion timeout that ended at %v", back, now)
	}
	if n := m.backs[backPaused].Load(); n < 1 {
		t.Fatalf("ringlb_gossip_back_total{reason=\"paused\"} %d, want 1 or more", n)
	}
	// Back at the next probe node-1 answers.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		m.mu.Lock()
		away := !m.awayAt.IsZero()
		m.mu.Unlock()
		if !away {
			break
		}
		select {
		case <-changes:
		case <-ctx.Done():
			t.Fatal("still away: no probe of node-1 answered")
		}
	}
	if back := m.BackAt(); !back.After(last) {
		t.Fatalf("BackAt %v once back, not after the pause began at %v", back, last)
	}
}

// A node alone has nobody to answer its probes, and nobody to drop it: a
// node started long before its seeds is not away once they come.
func TestAloneIsNotUnanswered(t *testing.T) {
	m := startNode(t, testCluster("node-0"), edgeMeta(0))
	m.answeredAt.Store(m.mono(time.Now().Add(-time.Hour)))
	now := time.Now()
	m.noticeGap(now.Add(-m.probeInterval), now)
	if got := m.answeredAt.Load(); got < m.mono(now) {
		t.Fatalf("alone, the last answer is still %v before the check", time.Duration(m.mono(now)-got))
	}
	if back := m.BackAt(); !back.IsZero() {
		t.Fatalf("BackAt %v alone, want zero", back)
	}
}

// A process resumed from a pause runs the placement of a join queued
// meanwhile and the watch's first tick in no set order: BackAt tells of
// the pause itself, before the watch has run since.
func TestBackAtSeesAPauseBeforeTheWatch(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	m := nodes[0]
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for m.awayBound.Load() == 0 { // the watch has run with the other member
		select {
		case <-ctx.Done():
			t.Fatal("the watch never ran with two members")
		case <-time.After(m.probeInterval):
		}
	}
	// Stopped since the watch's last tick, for an hour.
	m.tickAt.Store(m.mono(time.Now().Add(-time.Hour)))
	m.answeredAt.Store(m.mono(time.Now().Add(-time.Hour)))
	now := time.Now()
	if back := m.BackAt(); back.Before(now) {
		t.Fatalf("BackAt %v as the process resumes from an hour's pause at %v, before its watch ran", back, now)
	}
}

// Join's own wait for its seeds is no pause and no silence: a seed that
// takes a connection and answers nothing holds Join for memberlist's TCP
// timeout, longer than the others take to drop a node. The watch's clocks
// start when it does, after that wait.
func TestJoinsWaitIsNotAway(t *testing.T) {
	seed := startNode(t, testCluster("node-0"), edgeMeta(0))
	stalled, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	type acceptance struct {
		conn net.Conn
		at   time.Time
	}
	accepted := make(chan acceptance, 1)
	go func() {
		if c, err := stalled.Accept(); err == nil {
			accepted <- acceptance{c, time.Now()} // left unanswered
		}
	}()
	m := startNode(t, testCluster("node-1", stalled.Addr().String(), seed.Addr()), edgeMeta(1))
	var at time.Time
	select {
	case a := <-accepted:
		defer a.conn.Close()
		at = a.at
	case <-time.After(30 * time.Second):
		t.Fatal("Join returned without trying the stalled seed")
	}
	if tick, answered := m.tickAt.Load(), m.answeredAt.Load(); tick < m.mono(at) || answered < m.mono(at) {
		t.Fatalf("the watch's clocks (run %v, answered %v) from before Join's wait on the stalled seed (%v): its first tick reads that wait as a pause", time.Duration(tick), time.Duration(answered), time.Duration(m.mono(at)))
	}
}
