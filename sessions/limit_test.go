package sessions

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// Beyond edge.max_connections a connection is answered 503 and closed, and
// counted; a closed participant frees its slot.
func TestMaxConnectionsRefused(t *testing.T) {
	e := startEdge(t, configs.Edge{MaxConnections: 2}, nil)
	first := e.join(t, "limit-a")
	e.join(t, "limit-b")

	c, err := net.Dial("tcp", e.data)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testDeadline))
	io.WriteString(c, "GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third connection: %v %v, want 503 with Retry-After", resp, err)
	}
	if body, _ := io.ReadAll(resp.Body); !strings.Contains(string(body), "too many connections to this edge") {
		t.Errorf("refusal body %q", body)
	}
	if got := labelledValue(t, e.s, "ringlb_edge_rejected_connections_total", "max_connections"); got != 1 {
		t.Errorf("ringlb_edge_rejected_connections_total{reason=max_connections} = %v, want 1", got)
	}

	first.Close()
	client := http.Client{Timeout: testDeadline}
	healthtest.WaitUntil(t, "a slot freed after a participant left", func() bool {
		resp, err := client.Get("http://" + e.data + "/whoami")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}
