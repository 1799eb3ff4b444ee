package sessions

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// The edge's HTTP server logs a line for every connection it ends on a
// malformed request head, and such a request is anyone's to send who
// reaches the data port: 200 of them from one client wrote 200 WARN lines.
// They are counted now (ringlb_edge_connection_errors_total) and written
// at most once an interval, each saying how many it stands for.
func TestMalformedRequestsLogSparingly(t *testing.T) {
	var lines, refusals atomic.Int64
	e := startEdgeLogging(t, configs.Edge{}, slog.New(refusalLines{&lines, &refusals}), nil)
	const n = 200
	for i := range n {
		c, err := net.Dial("tcp", e.data)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(testDeadline))
		if _, err := io.WriteString(c, "GET /ws HTTP/1.1\r\nNo colon here\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(c) // the 400, then the edge closes
		c.Close()
		if !strings.HasPrefix(string(got), "HTTP/1.1 400 ") {
			t.Fatalf("request %d: %.40q, want 400", i, got)
		}
	}
	// fasthttp counts and logs once the connection's goroutine ends.
	var counted float64
	for deadline := time.Now().Add(testDeadline); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if counted = metricValue(t, e.s, "ringlb_edge_connection_errors_total"); counted == n {
			break
		}
	}
	t.Logf("%d malformed requests: %d WARN lines, counted %v", n, lines.Load(), counted)
	if counted != n {
		t.Errorf("ringlb_edge_connection_errors_total = %v, want %d", counted, n)
	}
	if got := lines.Load(); got < 1 || got > n/20 {
		t.Errorf("%d WARN lines for %d malformed requests, want one an interval", got, n)
	}
	if got := refusals.Load() + int64(e.s.httpLog.Held()); got != n {
		t.Errorf("the lines stand for %d requests (and %d are still to be logged), want %d", refusals.Load(), e.s.httpLog.Held(), n)
	}
}
