package sessions

import (
	"net/http"
	"testing"

	"github.com/ringlb/ringlb/configs"
)

// X-Ringlb-Skip tells an edge that a balancer could not reach the edges it
// names: the replica then takes the session over from its owner, and
// every participant there is closed with 1012. Anyone who reaches an
// edge's data port and knows a session's key could send it: before, one
// unsigned join to the replica naming the live owner moved the session and
// closed both participants. Now a skip needs a balancer's signature for
// this edge, this request and this key.
func TestUnsignedSkipMovesNoSession(t *testing.T) {
	a, b, key := replPair(t, configs.ReplicationSync, "unsigned")
	p1, p2 := a.twoTalking(t, key, 1)

	forged := map[string]http.Header{
		"unsigned":               {headerSkip: {"edge-a"}},
		"signed for another key": b.skipHeader(key+"-other", "", "edge-a"),
		"signed for edge-a":      a.skipHeader(key, "", "edge-a"),
	}
	for name, h := range forged {
		c, resp, err := b.dialV1(t, key, "", h)
		if err == nil {
			c.Close()
			t.Fatalf("%s X-Ringlb-Skip: the replica took the session (101)", name)
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("%s X-Ringlb-Skip: %v (response %v), want 403", name, err, resp)
		}
	}
	if got := metricValue(t, b.s, "ringlb_edge_peer_requests_refused_total"); got != float64(len(forged)) {
		t.Errorf("ringlb_edge_peer_requests_refused_total = %v, want %d", got, len(forged))
	}
	// The session is still whole on its owner.
	p1.msg(t, "after")
	p1.readType(t, "ack")
	if m := p2.readType(t, "msg"); m.Seq != 2 {
		t.Errorf("after the forged skips p2 got %+v, want seq 2", m)
	}
}
