package balancer

import (
	"net/http"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
)

// A browser attaches the ctstickiness cookie (the pad's, or one the
// balancer assigned: SameSite=Lax) to a WebSocket opened by any page of
// the same site, another subdomain of the domain included: such a page was
// tunnelled to the victim's session without knowing its key. A
// cookie-keyed upgrade from another Origin is refused before any edge is
// dialed; the page's own origin, a key the client sends itself (a header,
// the query) and a client without Origin go through as before.
func TestCookieKeyedUpgradeFromAnotherOriginIsRefused(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	cookie := "ctstickiness=victim-pad"
	tests := []struct {
		name, path string
		header     http.Header
		want       int
	}{
		{"another site of the domain", "/ws", http.Header{"Cookie": {cookie}, "Origin": {"https://preview.example.com"}}, http.StatusForbidden},
		{"a sandboxed frame", "/ws", http.Header{"Cookie": {cookie}, "Origin": {"null"}}, http.StatusForbidden},
		{"the page's own origin", "/ws", http.Header{"Cookie": {cookie}, "Origin": {"http://" + h.addr}}, http.StatusSwitchingProtocols},
		{"no browser", "/ws", http.Header{"Cookie": {cookie}}, http.StatusSwitchingProtocols},
		{"a key in the header", "/ws", http.Header{"Ctstickiness": {"victim-pad"}, "Origin": {"https://preview.example.com"}}, http.StatusSwitchingProtocols},
		{"a key in the query", "/ws?token=victim-pad", http.Header{"Origin": {"https://preview.example.com"}}, http.StatusSwitchingProtocols},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
			c, resp, err := d.Dial("ws://"+h.addr+tt.path, tt.header)
			if c != nil {
				defer c.Close()
			}
			if resp == nil {
				t.Fatalf("no answer: %v", err)
			}
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d (edge %q), want %d", resp.StatusCode, resp.Header.Get("X-Ringlb-Edge"), tt.want)
			}
			if c != nil {
				_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
				if err := c.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
					t.Fatal(err)
				}
				if _, got, err := c.ReadMessage(); err != nil || string(got) != "hi" {
					t.Fatalf("echo %q %v", got, err)
				}
			}
		})
	}
}
