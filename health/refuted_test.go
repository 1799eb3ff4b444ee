package health

import (
	"log/slog"
	"testing"
	"time"
)

// A node the cluster took for dead (busy, or cut off past the failure
// detector's timeout) hears of it from memberlist only as a log line, the
// one memberlist (v0.7.0, state.go: deadNode) prints as it refutes a dead
// message about itself; the others take it back as they hear the
// refutation. That line, written to the logger memberlistConfig gives
// memberlist, is BackAt and a membership change; a refuted suspicion (the
// others never dropped the node) is neither.
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
	mc.Logger.Printf("[WARN] memberlist: Refuting a suspect message (from: %s)", "node-1")
	if back := m.BackAt(); !back.IsZero() {
		t.Fatalf("BackAt %v after a refuted suspicion, want zero", back)
	}
	before := time.Now()
	mc.Logger.Printf("[WARN] memberlist: Refuting a dead message (from: %s)", "node-1")
	if back := m.BackAt(); back.Before(before) {
		t.Fatalf("BackAt %v after a refuted death at %v", back, before)
	}
	select {
	case <-changes:
	case <-time.After(30 * time.Second):
		t.Fatal("no membership change signalled for a refuted death")
	}
}
