package sessions

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// unsureLines counts the WARN lines of joins refused for an unanswered
// claim and the joins they say they stand for.
type unsureLines struct{ lines, joins *atomic.Int64 }

func (h unsureLines) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h unsureLines) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h unsureLines) WithGroup(string) slog.Handler                { return h }
func (h unsureLines) Handle(_ context.Context, r slog.Record) error {
	if !strings.HasPrefix(r.Message, "claim unanswered") {
		return nil
	}
	h.lines.Add(1)
	h.joins.Add(1)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "suppressed" {
			h.joins.Add(a.Value.Int64())
		}
		return true
	})
	return nil
}

// While a previous owner of its keys answers claims with errors (a member
// still, so not taken for dead), an edge refuses those joins 503 until it
// answers or leaves. Anyone's joins do that: before, each wrote a WARN
// line (20 joins, 20 lines); now one line an interval says how many it
// stands for.
func TestUnansweredClaimsLogSparingly(t *testing.T) {
	failing := serveHandler(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "broken", http.StatusInternalServerError)
	}))
	cl := healthtest.New(t)
	cl.Join("edge-b", health.Meta{Role: health.RoleEdge, Region: "east", URL: failing, Weight: 1, State: health.StateAlive})
	var lines, joins atomic.Int64
	a := startClusterEdgeWith(t, cl, "edge-a", slog.New(unsureLines{&lines, &joins}), testRing)
	waitRing(t, []*clusterEdge{a}, "edge-a", "edge-b")

	// Within settleWindow of edge-a's join every key it owns was edge-b's
	// on the balancers' rings: each join claims it there first.
	const n = 20
	refused := 0
	for i := 0; refused < n; i++ {
		key := fmt.Sprintf("unsure-%d", i)
		if ownerOf(key, "edge-a", "edge-b") != "edge-a" {
			continue
		}
		_, resp, err := a.dialV1(t, key, "", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("join %s: %v %v, want 503 (its previous owner did not answer the claim)", key, resp, err)
		}
		refused++
	}
	t.Logf("%d joins refused for an unanswered claim: %d WARN lines (standing for %d)", n, lines.Load(), joins.Load())
	if lines.Load() != 1 {
		t.Errorf("%d WARN lines for %d refused joins, want 1 an interval", lines.Load(), n)
	}
}

// serveHandler serves h on a loopback listener until the test ends and
// returns its URL.
func serveHandler(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}
