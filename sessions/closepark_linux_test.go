package sessions

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ringlb/ringlb/balancer/acceptguard/acceptguardtest"
	"github.com/ringlb/ringlb/configs"
)

// A reader that parks as its participant is stopped, unseen by the stop,
// is started halfway to the close handshake's deadline, reads the peer's
// answer and ends the handshake: a parked reader has no deadline running,
// and its ping timer is not re-armed once closing. Here the lost wake is
// made by hand: the poller no longer watches the socket, and the stop
// finds the reader running (about to park), so it starts none. (One
// reading of a rare failure of TestParticipantClosesAtOnce under -race —
// a drained participant's socket left open — which still happens with
// this in: its cause is not this, or not only.)
func TestStoppedParkedReaderEndsTheCloseHandshake(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	c := rawJoinKey(t, e, "parked")
	var p *participant
	waitFor(t, "a parked reader", func() bool {
		e.s.mu.Lock()
		defer e.s.mu.Unlock()
		for q := range e.s.conns {
			p = q
		}
		return p != nil && p.reader.Load() == readerParked
	})
	pl := e.s.parker()
	if pl == nil {
		t.Skip("no poller here")
	}
	if err := unix.EpollCtl(pl.epfd, unix.EPOLL_CTL_DEL, int(p.fd), nil); err != nil {
		t.Fatal(err)
	}
	p.reader.Store(readerRunning)
	p.stop(closeServiceRestart, "test")
	p.reader.Store(readerParked)

	_ = c.SetDeadline(time.Now().Add(acceptguardtest.Patience))
	answerCloseThenFIN(t, c)
}
