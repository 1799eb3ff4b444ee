package acceptguard

import (
	"net"
	"testing"
)

// Exactly one of Taken and Closed happens for a connection handed over;
// the undo runs for Closed only, once, and other connections' closes touch
// nothing.
func TestHandovers(t *testing.T) {
	var h Handovers
	a, b := &net.TCPConn{}, &net.TCPConn{}
	undone := map[net.Conn]int{}
	h.Closed(a) // nothing pending: nothing to do
	h.Pending(a, func() { undone[a]++ })
	h.Pending(b, func() { undone[b]++ })
	if h.Len() != 2 {
		t.Fatalf("Len %d, want 2", h.Len())
	}
	h.Taken(a) // a's handler ran
	h.Closed(a)
	h.Closed(b) // b's never will
	h.Closed(b)
	if undone[a] != 0 || undone[b] != 1 || h.Len() != 0 {
		t.Errorf("undone a %d, b %d, %d pending; want 0, 1, 0", undone[a], undone[b], h.Len())
	}
}
