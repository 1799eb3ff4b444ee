package sessions

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// rawUpgrade sends a WebSocket upgrade with the given header lines over a
// raw connection (Go's clients refuse some of the bytes under test) and
// returns the status and body of the answer.
func rawUpgrade(t *testing.T, addr, headers string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testDeadline))
	req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + headers + "\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp.StatusCode, ""
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestSessionKeyNotUTF8Refused: two different keys that are not UTF-8
// were two sessions that /api/sessions (and the v1 welcome, and logs)
// showed as one "\ufffd"; the edge refuses them with 400.
func TestSessionKeyNotUTF8Refused(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	for _, h := range []string{
		"ctstickiness: \xff\r\n",
		"ctstickiness: \xfe\r\n",
		"Cookie: ctstickiness=room-\xc3\r\n",
		"ctstickiness: a\xc2\x9b[2J\r\n", // C1 control (CSI)
	} {
		if status, body := rawUpgrade(t, e.data, h); status != http.StatusBadRequest {
			t.Errorf("%q: %d %s, want 400", h, status, body)
		} else {
			t.Logf("%q: %d %s", h, status, strings.TrimSpace(body))
		}
	}
	e.dial(t, "été")
	e.waitJoined(t)
	_, body := e.get(t, e.admin, "/api/sessions")
	var list []sessionInfo
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list) != 1 || list[0].Key != "été" {
		t.Fatalf("/api/sessions = %s (%v)", body, err)
	}
}

// TestEdgeAcceptsEveryKeyABalancerMayRoute: the edge holds keys to the most
// any balancer may pass (configs.MaxKeyLength, the bound of
// balancer.key.max_length), so no balancer setting makes its edges refuse a
// key it routes (a 300-byte key once passed a balancer and got 400 here).
func TestEdgeAcceptsEveryKeyABalancerMayRoute(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	e.dial(t, strings.Repeat("k", configs.MaxKeyLength))
	e.waitJoined(t)
	if status, body := rawUpgrade(t, e.data, "ctstickiness: "+strings.Repeat("k", configs.MaxKeyLength+1)+"\r\n"); status != http.StatusBadRequest || !strings.Contains(body, "more than 4096 bytes") {
		t.Fatalf("%d-byte key: %d %s, want 400", configs.MaxKeyLength+1, status, body)
	}
}
