package sessions

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// unsureLines is refusalLines of the lines of joins refused for an
// unanswered claim.
type unsureLines struct{ refusalLines }

func (h unsureLines) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h unsureLines) WithGroup(string) slog.Handler      { return h }

func (h unsureLines) Handle(ctx context.Context, r slog.Record) error {
	if !strings.HasPrefix(r.Message, "claim unanswered") {
		return nil
	}
	return h.refusalLines.Handle(ctx, r)
}

// While a previous owner of its keys answers claims with errors (a member
// still, so not taken for dead), an edge refuses those joins 503 until it
// answers or leaves. Anyone's joins do that: before, each wrote a WARN
// line (20 joins, 20 lines); now one line an interval says how many it
// stands for.
func TestUnansweredClaimsLogSparingly(t *testing.T) {
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "broken", http.StatusInternalServerError)
	}))
	t.Cleanup(failing.Close)
	cl := healthtest.New(t)
	cl.Join("edge-b", health.Meta{Role: health.RoleEdge, Region: "east", URL: failing.URL, Weight: 1, State: health.StateAlive})
	var lines, joins atomic.Int64
	a := startClusterEdgeWith(t, cl, "edge-a", slog.New(unsureLines{refusalLines{&lines, &joins}}), testRing)
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
