package sessions

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
)

// A drain refuses new sessions but lets participants join the live ones, and
// ends by closing who is left with 1012 at drain_timeout.
func TestDrain(t *testing.T) {
	e := startEdge(t, configs.Edge{DrainTimeout: configs.Duration(300 * time.Millisecond)}, nil)
	a := e.join(t, "live")
	defer a.Close()
	req, _ := http.NewRequest(http.MethodPost, "http://"+e.admin+"/api/drain", nil)
	req.Header.Set(configs.HeaderAdmin, "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /api/drain: %v %v", resp, err)
	}
	resp.Body.Close()
	select {
	case <-e.s.Draining():
	case <-time.After(testDeadline):
		t.Fatal("Draining not closed")
	}
	if resp, _ := e.get(t, e.admin, "/healthz"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/healthz while draining: %d", resp.StatusCode)
	}
	// A new session is refused before the upgrade...
	d := websocket.Dialer{HandshakeTimeout: testDeadline}
	if _, resp, err := d.Dial("ws://"+e.data+"/ws", http.Header{"Ctstickiness": {"new"}}); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("new session while draining: %v %v", resp, err)
	}
	// ...a participant of the live one is not, and sees its peers.
	b := e.join(t, "live")
	defer b.Close()
	a.WriteMessage(websocket.TextMessage, []byte("hi"))
	b.SetReadDeadline(time.Now().Add(testDeadline))
	if _, msg, err := b.ReadMessage(); err != nil || string(msg) != "hi" {
		t.Fatalf("joined the live session while draining: %q %v", msg, err)
	}
	// At drain_timeout the rest are closed with 1012.
	if code := closeCode(t, a); code != 1012 {
		t.Fatalf("close code at drain timeout: %d, want 1012", code)
	}
}

// The attack: any web page an operator has open can POST to a loopback admin
// port (a "simple" text/plain request needs no CORS preflight). It drained
// an edge before the admin rule; now the edge keeps serving. With a token,
// nothing but the token drains it.
func TestAdminDrainNeedsProof(t *testing.T) {
	token := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(token, []byte("edge-admin-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		cfg    configs.Edge
		header map[string]string
		want   int
	}{
		{"a page's cross-origin POST", configs.Edge{}, map[string]string{"Content-Type": "text/plain", "Origin": "http://evil.example"}, http.StatusForbidden},
		{"a page's form POST", configs.Edge{}, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusForbidden},
		{"no token", configs.Edge{Admin: configs.Admin{TokenFile: token}}, map[string]string{configs.HeaderAdmin: "1"}, http.StatusUnauthorized},
		{"the token", configs.Edge{Admin: configs.Admin{TokenFile: token}}, map[string]string{"Authorization": "Bearer edge-admin-token-0123456789"}, http.StatusAccepted},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := startEdge(t, tt.cfg, nil)
			req, _ := http.NewRequest(http.MethodPost, "http://"+e.admin+"/api/drain", strings.NewReader("x=1"))
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("POST /api/drain: %d, want %d", resp.StatusCode, tt.want)
			}
			if drained := e.s.draining.Load(); drained != (tt.want == http.StatusAccepted) {
				t.Errorf("draining = %v after a %d", drained, resp.StatusCode)
			}
		})
	}
}
