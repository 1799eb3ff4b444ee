package sessions

import (
	"net/http"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// A drain refuses new sessions but lets participants join the live ones, and
// ends by closing who is left with 1012 at drain_timeout.
func TestDrain(t *testing.T) {
	e := startEdge(t, configs.Edge{DrainTimeout: configs.Duration(300 * time.Millisecond)}, nil)
	a := e.join(t, "live")
	defer a.Close()
	req, _ := http.NewRequest(http.MethodPost, "http://"+e.admin+"/api/drain", nil)
	req.Header.Set(health.HeaderAdmin, "1")
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
