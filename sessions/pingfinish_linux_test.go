package sessions

import (
	"runtime"
	"strings"
	"testing"

	"github.com/ringlb/ringlb/configs"
)

// A ping timer that fires as its participant finishes is not armed again
// once finish has stopped it. pingDue looks at stopping first and arms the
// timer later, under out.mu; a stop and finish's pinger.Stop in between
// (the peer hung up as its ping fell due) left the timer armed for one
// more ping interval, holding the ended participant, its session's share
// and all it points to until it fired. Here the test holds out.mu to make
// that interleaving certain: the callback waits past its look at stopping,
// finish runs up to out.mu, then both go on.
func TestPingTimerNotArmedAfterFinish(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	rawJoinKey(t, e, "finishing")
	p := waitParked(t, e)
	// Parked, p has no reader: the test is its reader, and ends it.
	p.out.mu.Lock()
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		p.pingDue()
	}()
	waitLocking(t, "(*participant).pingDue(")
	p.stopped.Store(true) // stopped meanwhile (the hub, a revocation, a write that failed)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		p.finish()
	}()
	waitLocking(t, "(*participant).finish(")
	p.out.mu.Unlock()
	<-pinged
	<-finished
	if p.pinger.Stop() {
		t.Error("the ended participant's ping timer is armed: it holds the participant one more ping interval")
	}
}

// waitLocking waits until a goroutine running fn waits for a mutex.
func waitLocking(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	waitFor(t, fn+" waiting for a lock", func() bool {
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "[sync.Mutex.Lock") && strings.Contains(g, fn) {
				return true
			}
		}
		return false
	})
}
