package health

import (
	"net"
	"testing"

	"github.com/hashicorp/memberlist"
)

// A member confirmed (it answered a ping) whose leave memberlist reports
// between its confirmation and the record of its join: memberlist calls
// back from its own goroutines, so the leave found nothing pending and
// nothing recorded to drop, and the join recorded after it kept the
// departed node in the view — on every ring built from it — until it came
// back. The leave must win.
func TestLeaveDuringAConfirmationWins(t *testing.T) {
	m := startNode(t, testCluster("target"), edgeMeta(0))
	meta, err := edgeMeta(1).Encode()
	if err != nil {
		t.Fatal(err)
	}
	ghost := &memberlist.Node{Name: "ghost", Addr: net.IPv4(127, 0, 0, 1), Port: 9, Meta: meta}
	m.joined(ghost)
	p := m.unpend("ghost") // it answered a ping
	if p == nil {
		t.Fatal("the new member was not pending")
	}
	events{m}.NotifyLeave(ghost) // memberlist's leave, meanwhile
	m.believe(p)
	if hasMember("ghost")(m.Members()) {
		t.Fatalf("a member that left while its join was being confirmed is in the view: %v", m.Members())
	}

	// Confirmed without a leave, it is believed.
	m.joined(ghost) // back, after its leave: believed at once
	if !hasMember("ghost")(m.Members()) {
		t.Fatalf("a member back after its leave is not in the view: %v", m.Members())
	}
}
