package sessions

import (
	"errors"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
)

// A balancer that cannot reach a session's owner has the replica take the
// session over; the owner, still serving its participants, must then be
// fenced. A busy session fences its owner at its next message (the
// replica answers the record with a fence). An idle one had to wait for
// the replica to dial the owner and say so on a stream of its own — and
// an owner the balancer could not reach is often one the replica cannot
// reach either (overloaded, its backlog full): the participants stayed on
// the old owner while joins went to the new one, the session split for as
// long as the owner stayed unreachable. The owner's own stream to the
// replica — the one the copy came by — is up all along: the fence goes
// back on it at once.
func TestIdleStaleOwnerFencedOnItsOwnStream(t *testing.T) {
	a, b, key := replPair(t, configs.ReplicationSync, "idlefence")
	p1 := a.joinV1(t, key, "", nil)
	p2 := a.joinV1(t, key, "", nil)
	p1.readType(t, "join")
	p1.msg(t, "before")
	p1.readType(t, "ack")
	p2.readType(t, "msg")
	epoch := p1.welcome.Epoch

	// edge-a takes no new connection from now on (its backlog full, as
	// far as anyone dialing it can tell); what it has keeps working.
	a.s.mu.Lock()
	for _, ln := range a.s.listeners {
		ln.Close()
	}
	a.s.mu.Unlock()

	took := time.Now()
	g := b.joinSkipping(t, key, "resume=1&epoch="+epoch, "edge-a")
	if g.welcome.Epoch != epoch || g.welcome.Seq != 1 {
		t.Fatalf("welcome on the replica %+v, want epoch %s seq 1", g.welcome, epoch)
	}
	// Nobody on edge-a says a word: its participants are moved all the same.
	for _, p := range []*v1Client{p1, p2} {
		p.SetReadDeadline(time.Now().Add(testDeadline))
		for {
			_, data, err := p.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != closeServiceRestart {
					t.Fatalf("the stale owner's idle participant ended with %v, want 1012", err)
				}
				break
			}
			t.Logf("the stale owner's participant got %s", data)
		}
	}
	t.Logf("the idle stale owner's participants were closed %s after the takeover", time.Since(took).Round(time.Millisecond))
	if v := metricValue(t, a.s, "ringlb_edge_replication_fenced_total"); v != 1 {
		t.Errorf("fenced %v, want 1", v)
	}
}
