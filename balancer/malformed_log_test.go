package balancer

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
)

// fasthttp logs a line for every connection it ends on a malformed request,
// and such a request is anyone's to send: 2,000 of them, 46 kB from one
// client, wrote 2,000 WARN lines and 572 kB of log in a third of a second.
// The lines are counted now, and written at most once per 10 s, with how
// many were held back.
func TestMalformedRequestsLogBounded(t *testing.T) {
	var logs lockedBuffer
	r := ring.New(ring.DefaultConfig())
	b, addr := serveBalancerLogging(t, configs.Balancer{}, r, slog.New(slog.NewJSONHandler(&logs, nil)))
	const n = 200
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nNo colon here\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(c) // the 400, then the balancer closes
		c.Close()
		if !strings.HasPrefix(string(got), "HTTP/1.1 400 ") {
			t.Fatalf("request %d: %.40q, want 400", i, got)
		}
	}
	// fasthttp counts and logs once the connection's goroutine ends.
	var counted float64
	for range 200 {
		if counted = gatherCounter(t, b.reg, "ringlb_balancer_connection_errors_total"); counted == n {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if counted != n {
		t.Errorf("ringlb_balancer_connection_errors_total %v, want %d", counted, n)
	}
	lines := 0
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec struct{ Source string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Source == "fasthttp" {
			lines++
		}
	}
	t.Logf("%d malformed requests: %d log lines", n, lines)
	if lines == 0 || lines > 10 {
		t.Errorf("%d log lines for %d malformed requests, want one per 10 s", lines, n)
	}
}
