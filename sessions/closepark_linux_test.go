package sessions

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ringlb/ringlb/configs"
)

// A participant's socket leaves the poller's epoll set before it is
// closed. The kernel drops an epoll entry only once the socket's file goes,
// and epoll_wait holds the file of each entry it looks at: a socket closed
// just then (its peer's bytes had woken both the poller and a reader
// running since a stop) goes only once that epoll_wait returns to the
// poller — on an edge with nothing else to wake it, never: no FIN, the
// socket open for good (seen under -race on an overloaded machine, about
// once in thousands of drains; TestParticipantClosesAtOnce). Here a
// duplicate of the descriptor stands for that hold: the entry must be gone
// all the same once the participant has ended.
func TestClosedSocketLeavesThePoller(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	c := rawJoinKey(t, e, "leaving")
	p := waitParked(t, e)
	pl := e.s.parker()
	if pl == nil {
		t.Skip("no poller here")
	}
	held, err := unix.Dup(int(p.fd))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(held)
	var st unix.Stat_t
	if err := unix.Fstat(held, &st); err != nil {
		t.Fatal(err)
	}
	entry := fmt.Sprintf(" ino:%x ", st.Ino)
	if !strings.Contains(epollEntries(t, pl.epfd), entry) {
		t.Fatalf("the parked socket (inode %x) is not in the poller's set:\n%s", st.Ino, epollEntries(t, pl.epfd))
	}
	// The client leaves: the poller wakes the reader, which reads the end
	// and closes the participant's socket.
	c.Close()
	waitFor(t, "the participant's end", func() bool {
		_, conns := e.s.Stats()
		return conns == 0
	})
	if set := epollEntries(t, pl.epfd); strings.Contains(set, entry) {
		t.Errorf("the closed participant's socket (inode %x) is still in the poller's set:\n%s", st.Ino, set)
	}
}

// epollEntries is the kernel's list of what the epoll instance epfd
// watches (/proc/self/fdinfo: a "tfd:" line each, with the file's inode).
func epollEntries(t *testing.T, epfd int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", epfd))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitParked waits until e's one participant has its reader parked, and
// returns it.
func waitParked(t *testing.T, e *testEdge) *participant {
	t.Helper()
	var p *participant
	waitFor(t, "a parked reader", func() bool {
		e.s.mu.Lock()
		defer e.s.mu.Unlock()
		for q := range e.s.conns {
			p = q
		}
		return p != nil && p.reader.Load() == readerParked
	})
	return p
}
