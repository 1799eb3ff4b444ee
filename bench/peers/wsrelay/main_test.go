package main

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/bench"
)

// startRelay serves a relay on a free loopback port.
func startRelay(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: newRelay(name).serve, ReadTimeout: time.Minute}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Shutdown()
		<-done
	})
	return "ws://" + ln.Addr().String() + "/ws"
}

// TestBenchCountsEveryMessage runs `ringlb bench ws -saturate` through the
// relay with more messages in flight per sender than the relay's send queue
// holds: a benchmark backend must slow its senders down (TCP backpressure),
// never drop, or the benchmark measures how fast frames are thrown away.
// The greeting each connection gets first is not one of the benchmark's
// messages.
func TestBenchCountsEveryMessage(t *testing.T) {
	// A name whose greeting's first 16 bytes read as the benchmark's stamp
	// of participant 1's first message: only the frame's type and size
	// tell it from one.
	url := startRelay(t, "stamp---\x01\x00\x00\x00\x00\x00\x00\x00")
	for _, window := range []int{16, 4 * sendQueue} {
		res, err := bench.RunWS(context.Background(), bench.WSOptions{
			Targets: []string{url}, Sessions: 4, Participants: 2, Saturate: true, Window: window,
			Size: 256, Duration: 2 * time.Second, Drain: 20 * time.Second,
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("window %d: %s", window, res.Summary())
		if res.ConnsOK != 8 || res.Sent == 0 {
			t.Fatalf("window %d: %d connections, %d sent", window, res.ConnsOK, res.Sent)
		}
		if res.Foreign != int64(res.ConnsOK) {
			t.Errorf("window %d: %d foreign frames, want one greeting per connection (%d)", window, res.Foreign, res.ConnsOK)
		}
		if res.Delivered != res.Expected || res.Lost != 0 || res.Duplicated != 0 || res.Reordered != 0 {
			t.Errorf("window %d: delivered %d of %d expected (lost %d, duplicated %d, reordered %d)",
				window, res.Delivered, res.Expected, res.Lost, res.Duplicated, res.Reordered)
		}
	}
}
