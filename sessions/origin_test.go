package sessions

import (
	"net/http"
	"testing"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
)

// A browser attaches the ctstickiness cookie to a WebSocket opened by any
// page of the same site (another subdomain, another port of the host), so
// such a page joined the session the victim's pad last set — read its text
// and wrote in it — without knowing its key. A cookie-keyed upgrade from
// another Origin is refused; the page's own origin, a key the client sends
// itself and a client without Origin (no browser) join as before.
func TestCookieKeyFromAnotherOriginJoinsNothing(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	victim := e.joinV1(t, "victim-pad", "", nil)
	tests := []struct {
		name   string
		header http.Header
		want   int
	}{
		{"another site of the domain", http.Header{"Cookie": {"ctstickiness=victim-pad"}, "Origin": {"http://preview.example.com"}}, http.StatusForbidden},
		{"another port of the host", http.Header{"Cookie": {"ctstickiness=victim-pad"}, "Origin": {"http://" + e.data + "0"}}, http.StatusForbidden},
		{"a sandboxed frame", http.Header{"Cookie": {"ctstickiness=victim-pad"}, "Origin": {"null"}}, http.StatusForbidden},
		{"the pad's own origin", http.Header{"Cookie": {"ctstickiness=victim-pad"}, "Origin": {"http://" + e.data}}, http.StatusSwitchingProtocols},
		{"the pad's own origin over TLS in front", http.Header{"Cookie": {"ctstickiness=victim-pad"}, "Origin": {"https://" + e.data}}, http.StatusSwitchingProtocols},
		{"no browser", http.Header{"Cookie": {"ctstickiness=victim-pad"}}, http.StatusSwitchingProtocols},
		{"a key sent by the client", http.Header{"Ctstickiness": {"victim-pad"}, "Origin": {"http://preview.example.com"}}, http.StatusSwitchingProtocols},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := websocket.Dialer{HandshakeTimeout: testDeadline, Subprotocols: []string{protocolV1}}
			c, resp, err := d.Dial("ws://"+e.data+"/ws", tt.header)
			if c != nil {
				defer c.Close()
			}
			if resp == nil {
				t.Fatalf("no answer: %v", err)
			}
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if c != nil {
				e.waitJoined(t)
				if j := victim.readType(t, "join"); j.Participant == "" {
					t.Fatalf("the victim saw %+v", j)
				}
			}
		})
	}
}
