package sessions

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
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

// peerLines is refusalLines of the edge's own refusals: the HTTP server's
// lines (a connection it ended on a refused body: TestMalformedRequestsLogSparingly)
// are spaced by a limit of their own.
type peerLines struct{ refusalLines }

func (h peerLines) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h peerLines) WithGroup(string) slog.Handler      { return h }

func (h peerLines) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "error when serving connection") {
		return nil
	}
	return h.refusalLines.Handle(ctx, r)
}

// Refused edge-to-edge requests are anyone's to send, a few bytes each: they
// must not write a log line each. The attack: 2,000 unsigned hand-offs and
// replication upgrades pipelined on one connection. Before, each was a WARN
// line: 2,000 lines in 19 ms. Now one line an interval, counting the
// refusals it stands for; the metric counts every one. The hand-offs'
// heads are signed (a different length each: a head signature takes a slot
// once), so that their bodies are read and refused and the connection goes
// on; hand-off heads refused for their own signature, each answered 403 and
// its connection closed, are spaced the same way.
func TestPeerRefusalsLogSparingly(t *testing.T) {
	var lines, refusals atomic.Int64
	cl := healthtest.New(t)
	a := startClusterEdgeWith(t, cl, "edge-a", slog.New(peerLines{refusalLines{&lines, &refusals}}), testRing)
	b := startClusterEdge(t, cl, "edge-b")
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	c, err := net.Dial("tcp", a.data)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testDeadline))
	const n, heads = 2000, 200
	start := time.Now()
	go func() {
		w := bufio.NewWriter(c)
		for i := range n {
			if i%2 == 0 {
				body := `{"from":"edge-b","sessions":[]}` + strings.Repeat(" ", i)
				head := b.m.Keyring().SignHead("edge-b", "edge-a", http.MethodPost, pathHandoff, len(body))
				fmt.Fprintf(w, "POST %s HTTP/1.1\r\nHost: x\r\nX-Ringlb-Peer: edge-b 1 x edge-a\r\n%s: %s\r\nContent-Length: %d\r\n\r\n%s", pathHandoff, configs.HeaderPeerHead, head, len(body), body)
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
	for i, code := 0, answers(declareBodies(t, a.data, pathHandoff, heads, maxHandoffBody)); i < heads; i++ {
		if got := <-code; got != http.StatusForbidden {
			t.Fatalf("unsigned hand-off head answered %d, want 403", got)
		}
	}
	const all = n + heads
	t.Logf("and %d unsigned hand-off heads: %d WARN lines in all", heads, lines.Load())
	if got := metricValue(t, a.s, "ringlb_edge_peer_requests_refused_total"); got != all {
		t.Errorf("ringlb_edge_peer_requests_refused_total = %v, want %d", got, all)
	}
	// One line an interval (10 s): 22 lines would take over 3 minutes.
	if got := lines.Load(); got < 1 || got > all/100 {
		t.Errorf("%d WARN lines for %d refusals, want a few", got, all)
	}
	if got := refusals.Load() + int64(a.s.peerLog.Held()); got != all {
		t.Errorf("the lines stand for %d refusals (and %d are still to be logged), want %d in all", refusals.Load(), a.s.peerLog.Held(), all)
	}
}
