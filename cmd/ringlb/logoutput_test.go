package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// Logging to an output nobody reads neither waits nor grows without bound:
// lines beyond the queue are dropped and counted, and once the output is
// read again one line says how many.
func TestLogOutputNeverWaits(t *testing.T) {
	r, w := io.Pipe() // an unread pipe: every write waits
	out := newLogOutput(w)
	logger := slog.New(slog.NewTextHandler(out, nil))
	out.reportTo(logger)

	done := make(chan struct{})
	const lines = 3 * logQueueLines
	go func() {
		defer close(done)
		for i := range lines {
			logger.Warn("connection refused", "i", i)
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("logging waited for an output nobody reads")
	}
	dropped := float64(out.dropped.Load())
	t.Logf("%d lines logged to an unread output: %v dropped, %d bytes queued", lines, dropped, out.queued.Load())
	if dropped < lines-logQueueLines-1 {
		t.Errorf("ringlb_log_lines_dropped_total = %v, want at least %d", dropped, lines-logQueueLines-1)
	}
	if q := out.queued.Load(); q > logQueueBytes {
		t.Errorf("%d bytes queued, bound %d", q, logQueueBytes)
	}

	// Read again: the queued lines, then the count of the dropped ones.
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "log lines dropped") {
				found <- sc.Text()
			}
		}
	}()
	select {
	case line := <-found:
		t.Log(line)
	case <-time.After(60 * time.Second):
		t.Fatal("no line about the dropped lines once the output was read")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out.close(ctx)
	logger.Info("after close") // dropped, not a send on a closed channel
	r.Close()
}

// Closing waits for the queue no longer than its context when the output
// is still blocked: a stopping node exits.
func TestLogOutputCloseBounded(t *testing.T) {
	r, w := io.Pipe()
	defer r.Close()
	out := newLogOutput(w)
	slog.New(slog.NewTextHandler(out, nil)).Info("never read")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out.close(ctx) // returns: the test would hang otherwise
}
