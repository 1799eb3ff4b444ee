package main

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ringlb/ringlb/bench"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/sessions"
)

// startTestEdge runs a relay on a free loopback port and returns its
// ws:// URL.
func startTestEdge(t *testing.T) string {
	t.Helper()
	srv := sessions.New(configs.Edge{}, "edge-b", "east", nil, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-served
	})
	return "ws://" + ln.Addr().String() + "/ws"
}

// Both modes of `bench ws` account for every message against a real edge:
// nothing lost, duplicated or split, and in v1 every seq seen once and
// every msg acked.
func TestBenchWSModes(t *testing.T) {
	url := startTestEdge(t)
	for _, mode := range []string{"raw", "v1"} {
		for _, saturate := range []bool{false, true} {
			o := bench.WSOptions{
				Targets: []string{url}, Sessions: 4, Participants: 3, Rate: 20, Size: 100,
				Duration: 500 * time.Millisecond, Drain: time.Second, Mode: mode, Saturate: saturate, Window: 8,
			}
			res, err := bench.RunWS(t.Context(), o, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s saturate=%v: %s", mode, saturate, res.Summary())
			if res.ConnsOK != 12 || res.Delivered == 0 || res.Delivered != res.Expected || res.Lost != 0 ||
				res.Duplicated != 0 || res.Reordered != 0 || res.SeqGaps != 0 || res.Unacked != 0 ||
				res.SplitSessions != 0 || res.ClosedEarly != 0 || res.Latency.Samples == 0 {
				t.Errorf("%s saturate=%v: %+v", mode, saturate, res)
			}
		}
	}
}
