package sessions

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/health/healthtest"
)

// refusalLines is a slog handler counting WARN lines and the refusals
// they say they stand for (each itself and those it held back).
type refusalLines struct{ lines, refusals *atomic.Int64 }

func (h refusalLines) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h refusalLines) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h refusalLines) WithGroup(string) slog.Handler                { return h }
func (h refusalLines) Handle(_ context.Context, r slog.Record) error {
	h.lines.Add(1)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "suppressed" {
			h.refusals.Add(1 + a.Value.Int64())
		}
		return true
	})
	return nil
}

// Refused edge-to-edge requests are anyone's to send, a few bytes each: they
// must not write a log line each. The attack: 2,000 unsigned hand-offs and
// replication upgrades pipelined on one connection. Before, each was a WARN
// line: 2,000 lines in 19 ms. Now one line an interval, counting the
// refusals it stands for; the metric counts every one.
func TestPeerRefusalsLogSparingly(t *testing.T) {
	var lines, refusals atomic.Int64
	cl := healthtest.New(t)
	a := startClusterEdgeWith(t, cl, "edge-a", slog.New(refusalLines{&lines, &refusals}), testRing)
	b := startClusterEdge(t, cl, "edge-b")
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	c, err := net.Dial("tcp", a.data)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testDeadline))
	const n = 2000
	body := `{"from":"edge-b","sessions":[]}`
	start := time.Now()
	go func() {
		w := bufio.NewWriter(c)
		for i := range n {
			if i%2 == 0 {
				fmt.Fprintf(w, "POST %s HTTP/1.1\r\nHost: x\r\nX-Ringlb-Peer: edge-b 1 x edge-a\r\nContent-Length: %d\r\n\r\n%s", pathHandoff, len(body), body)
			} else {
				fmt.Fprintf(w, "GET %s?from=edge-b&key=%s HTTP/1.1\r\nHost: x\r\n\r\n", pathReplicate, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
			}
		}
		w.Flush()
	}()
	br := bufio.NewReader(c)
	for i := range n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("request %d answered %d, want 403", i, resp.StatusCode)
		}
	}
	t.Logf("%d refused in %v: %d WARN lines", n, time.Since(start), lines.Load())
	if got := metricValue(t, a.s, "ringlb_edge_peer_requests_refused_total"); got != n {
		t.Errorf("ringlb_edge_peer_requests_refused_total = %v, want %d", got, n)
	}
	// One line an interval (10 s): 20 lines would take over 3 minutes.
	if got := lines.Load(); got < 1 || got > n/100 {
		t.Errorf("%d WARN lines for %d refusals, want a few", got, n)
	}
	if got := refusals.Load() + int64(a.s.peerLog.Held()); got != n {
		t.Errorf("the lines stand for %d refusals (and %d are still to be logged), want %d in all", refusals.Load(), a.s.peerLog.Held(), n)
	}
}
