package health

import (
	"context"
	"log/slog"
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
		m.probeAnswered(answered)
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
	now := time.Now()
	m.noticeGap(now.Add(-2*m.probeInterval), now)
	// (Not BackAt: a loaded machine's late answers to the node's probes
	// may make it away, unanswered, meanwhile.)
	if n := m.backs[backPaused].Load(); n != 0 {
		t.Fatalf("ringlb_gossip_back_total{reason=\"paused\"} %d after a gap of two probe intervals, want 0", n)
	}
	now = time.Now()
	m.noticeGap(now.Add(-m.probeInterval-m.dropAfter(2)), now)
	if back := m.BackAt(); back.Before(now) {
		t.Fatalf("BackAt %v after a pause past the suspicion timeout that ended at %v", back, now)
	}
	if n := m.backs[backPaused].Load(); n != 1 {
		t.Fatalf("ringlb_gossip_back_total{reason=\"paused\"} %d, want 1", n)
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
	if back := m.BackAt(); back.Before(now) {
		t.Fatalf("BackAt %v once back, before the pause ended at %v", back, now)
	}
}

// A node alone has nobody to answer its probes, and nobody to drop it: a
// node started long before its seeds is not away once they come.
func TestAloneIsNotUnanswered(t *testing.T) {
	m := startNode(t, testCluster("node-0"), edgeMeta(0))
	m.answeredAt.Store(0)
	now := time.Now()
	m.noticeGap(now.Add(-m.probeInterval), now)
	if got := m.answeredAt.Load(); got != now.UnixNano() {
		t.Fatalf("alone, the last answer is still %v, want the check's time %v", time.Unix(0, got), now)
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
	m.tickAt.Store(time.Now().Add(-time.Hour).UnixNano())
	m.answeredAt.Store(time.Now().Add(-time.Hour).UnixNano())
	now := time.Now()
	if back := m.BackAt(); back.Before(now) {
		t.Fatalf("BackAt %v as the process resumes from an hour's pause at %v, before its watch ran", back, now)
	}
}
