package health

import (
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
		select {
		case <-changes:
		case <-time.After(30 * time.Second):
			t.Fatalf("no membership change signalled for %q", format)
		}
	}
	if n := m.backs[backRefuted].Load(); n != 2 {
		t.Errorf("ringlb_gossip_back_total{reason=\"refuted\"} %d, want 2", n)
	}
}

// A pause of the process longer than a probe and the others' shortest
// suspicion timeout may have had it taken for dead: BackAt, as a
// refutation is (the end-to-end partition test stops an edge's process
// for real; here the watch's check is given the times such a pause leaves
// between two of its ticks).
func TestPauseIsBackAt(t *testing.T) {
	m := startNode(t, testCluster("node-0"), edgeMeta(0))
	last := time.Now().Add(time.Hour) // after any tick of the node's own watch
	m.noticeGap(last, last.Add(2*m.probeInterval))
	if back := m.BackAt(); back.After(last) {
		t.Fatalf("BackAt %v after a gap of two probe intervals, want none", back)
	}
	paused := last.Add(m.probeInterval + time.Duration(m.suspicionMult+1)*m.probeInterval)
	m.noticeGap(last, paused)
	if back := m.BackAt(); !back.Equal(paused) {
		t.Fatalf("BackAt %v after a pause past the suspicion timeout, want %v", back, paused)
	}
}
