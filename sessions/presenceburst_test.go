package sessions

import (
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// A session's joins and leaves go out at most once per presenceInterval,
// together; each event took a slot of every participant's send queue, so
// 60 participants leaving at once (a classroom's laptops closing, a NAT's
// connections reset) put 59 leaves into every queue in one go, and with
// send_queue 32 — valid beside max_participants 100 — every participant
// that kept up, reading all the while, was closed 1013 as a slow consumer
// (and a burst of joins did the same, as often as 60 joins fell within
// one interval). Now each participant's share of a batch takes one slot,
// its events in it one message after another, as before on the wire.
//
// The attack needs no token and no speed beyond closing sockets: 60
// readers join a session holding two more, then all leave at once. Every
// participant reads as fast as the edge writes; none may be closed, and
// the two left end with the session's true presence.
func TestPresenceBurstTakesOneQueueSlot(t *testing.T) {
	const joiners = 60
	e := startEdge(t, configs.Edge{MaxParticipants: 100, SendQueue: 32}, nil)
	key := "burst"

	// A participant reading all the while: its view of the session's
	// presence, and how its connection ended (closed: the code, 0 for
	// none) once it has.
	type reader struct {
		c      *websocket.Conn
		id     string
		mu     sync.Mutex
		view   presenceView
		ended  bool
		closed int
	}
	join := func() *reader {
		c, resp, err := e.dialV1(t, key, "", nil)
		if err != nil {
			t.Errorf("dial: %v (%v)", err, resp)
			return nil
		}
		v := &v1Client{Conn: c}
		_, b, err := c.ReadMessage()
		if err == nil {
			err = json.Unmarshal(b, &v.welcome)
		}
		if err != nil || v.welcome.Type != "welcome" {
			t.Errorf("welcome: %q %v", b, err)
			return nil
		}
		r := &reader{c: c, id: v.welcome.Participant, view: v.presence()}
		go func() {
			for {
				_, b, err := c.ReadMessage()
				if err != nil {
					var ce *websocket.CloseError
					r.mu.Lock()
					if r.ended = true; errors.As(err, &ce) {
						r.closed = ce.Code
					}
					r.mu.Unlock()
					return
				}
				var m env
				if json.Unmarshal(b, &m) == nil {
					r.mu.Lock()
					r.view.apply(m)
					r.mu.Unlock()
				}
			}
		}()
		return r
	}
	// sees reports whether r's view holds n participants, and fails the
	// test if r was closed.
	sees := func(r *reader, n int) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.ended {
			t.Fatalf("participant %s closed %d while reading all the while, its view %d of %d participants", r.id, r.closed, len(r.view), n)
		}
		return len(r.view) == n
	}

	honest, other := join(), join()
	rs := make([]*reader, joiners)
	var wg sync.WaitGroup
	for i := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs[i] = join()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	all := append([]*reader{honest, other}, rs...)
	healthtest.WaitUntil(t, "every participant told of every join", func() bool {
		for _, r := range all {
			if !sees(r, len(all)) {
				return false
			}
		}
		return true
	})
	for _, r := range rs {
		_ = r.c.UnderlyingConn().Close() // all at once, within one interval
	}
	healthtest.WaitUntil(t, "the two left told of every leave", func() bool {
		return sees(honest, 2) && sees(other, 2)
	})
	for _, r := range []*reader{honest, other} {
		r.mu.Lock()
		if !r.view.is([]string{honest.id, other.id}) {
			t.Errorf("%s's view %v, want the two left", r.id, r.view)
		}
		r.mu.Unlock()
	}
	if v := counterValue(e.s.metrics.slowConsumers); v != 0 {
		t.Errorf("ringlb_edge_slow_consumers_total %v, want 0: every participant read all the while", v)
	}
}
