package bench

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/health/healthtest"
)

// farAheadTarget is a ringlb.v1 target that answers a participant's first
// msg with numbers far past anything the run sent: a msg from the
// session's other participant numbered n, and the ack of the msg at seq.
type farAheadTarget struct {
	seq uint64
	n   uint32
}

func (f farAheadTarget) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{Subprotocols: []string{protocolV1}}
	c, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	c.WriteMessage(websocket.TextMessage, []byte(`{"type":"welcome","seq":0,"epoch":"e","participant":"`+r.RemoteAddr+`"}`))
	for first := true; ; first = false {
		_, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		if !first {
			continue
		}
		var m struct {
			Data chaosData `json:"data"`
		}
		if json.Unmarshal(msg, &m) != nil {
			return
		}
		// The other participant of a session of two.
		other := strings.TrimSuffix(m.Data.C, ".0") + ".1"
		if strings.HasSuffix(m.Data.C, ".1") {
			other = strings.TrimSuffix(m.Data.C, ".1") + ".0"
		}
		c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"msg","seq":1,"from":"other","ts":%d,"data":{"c":%q,"n":%d}}`, time.Now().UnixMilli(), other, f.n))
		c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"ack","seq":%d}`, f.seq))
	}
}

// `ringlb bench chaos` keeps no more for a seq or msg number than the
// run's msgs can have used: one far past them is a protocol violation,
// kept nowhere. Before, the session's log was grown to the seq, an entry a
// seq, and the receiver's record of a sender's msgs to the msg number, a
// bit a number: a target acking at seq 2^22 and numbering a msg 2^30 made
// the run allocate hundreds of MB per participant (2^40 and 2^32-1: it
// ran out of memory).
func TestChaosHoldsNothingFarAhead(t *testing.T) {
	url := serveTarget(t, nil, farAheadTarget{seq: 1 << 22, n: 1 << 30})
	since := allocatedSince()
	w, err := StartChaos(t.Context(), ChaosOptions{
		Targets: []string{url}, Sessions: 1, Participants: 2,
		Rate: 20, Duration: time.Minute, Quiesce: time.Second,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Both participants' msg and ack read: taken (before), or refused.
	healthtest.WaitUntil(t, "the far-ahead frames read", func() bool {
		s := w.sessions[0]
		s.mu.Lock()
		clients := s.clients
		s.mu.Unlock()
		acked := 0
		for _, c := range clients {
			c.mu.Lock()
			if c.last >= 1<<22 || c.violations >= 2 {
				acked++
			}
			c.mu.Unlock()
		}
		return acked == 2
	})
	res := w.Stop(t.Context())
	allocated := since()
	t.Logf("acked at seq 2^22, a msg numbered 2^30: %d MB allocated; %d violations %v", allocated>>20, res.ProtocolViolations, res.ProtocolViolationDetails)
	if allocated > 32<<20 {
		t.Errorf("%d MB allocated for two seqs and msg numbers far ahead, want a few", allocated>>20)
	}
}
