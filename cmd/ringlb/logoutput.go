package main

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// logOutput is where a node's log lines go: a bounded queue that one
// goroutine writes to stderr. Stderr is a pipe to whatever supervises the
// process, and a pipe nobody reads (a stalled supervisor, `ringlb edge 2>&1
// | slow-consumer`) fills at 64 KiB; from then on every write to it waits.
// Lines are logged by the accept loops (refusals), under locks and on
// per-connection paths, and slog's handler writes under one mutex for
// every logger: a write that waits would stop them all, the data port's
// accept loop first (TestBlockedStderrKeepsServing). A line that does not
// fit in the queue is dropped and counted (ringlb_log_lines_dropped_total),
// and once stderr is read again a line says how many were lost.
type logOutput struct {
	w       io.Writer
	lines   chan []byte
	queued  atomic.Int64 // bytes in lines
	dropped atomic.Uint64
	done    chan struct{}

	mu     sync.Mutex // logger, closed
	logger *slog.Logger
	closed bool
}

// Bounds of the queue: lines and bytes (a line is a few hundred bytes; one
// with a long error is kept whole up to the byte bound).
const (
	logQueueLines = 4096
	logQueueBytes = 1 << 20
)

// logFlushTimeout bounds how long a stopping node waits for its queued
// lines to reach stderr.
const logFlushTimeout = 2 * time.Second

// newLogOutput starts the goroutine that writes to w; close stops it.
func newLogOutput(w io.Writer) *logOutput {
	o := &logOutput{w: w, lines: make(chan []byte, logQueueLines), done: make(chan struct{})}
	go o.run()
	return o
}

// Write queues a copy of p (slog reuses its buffer) and never waits.
func (o *logOutput) Write(p []byte) (int, error) {
	n := int64(len(p))
	if o.queued.Add(n) > logQueueBytes {
		o.queued.Add(-n)
		o.dropped.Add(1)
		return len(p), nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		o.queued.Add(-n)
		o.dropped.Add(1)
		return len(p), nil
	}
	select {
	case o.lines <- append([]byte(nil), p...):
	default:
		o.queued.Add(-n)
		o.dropped.Add(1)
	}
	return len(p), nil
}

// reportTo names the logger that says how many lines were dropped (one
// writing to o).
func (o *logOutput) reportTo(logger *slog.Logger) {
	o.mu.Lock()
	o.logger = logger
	o.mu.Unlock()
}

func (o *logOutput) run() {
	defer close(o.done)
	var reported uint64
	for line := range o.lines {
		_, _ = o.w.Write(line) // stderr failing is not for stderr to say
		o.queued.Add(-int64(len(line)))
		// Said once the queue is empty: stderr is read again by then.
		if d := o.dropped.Load(); d > reported && len(o.lines) == 0 {
			o.mu.Lock()
			logger := o.logger
			o.mu.Unlock()
			if logger != nil {
				logger.Warn("log lines dropped: stderr was not being read", "dropped", d-reported, "dropped_total", d)
			}
			reported = d
		}
	}
}

// close writes what is queued, waiting at most until ctx ends (stderr may
// still be blocked: the process exits anyway), and stops the writer. Lines
// logged later are dropped.
func (o *logOutput) close(ctx context.Context) {
	o.mu.Lock()
	if !o.closed {
		o.closed = true
		close(o.lines)
	}
	o.mu.Unlock()
	select {
	case <-o.done:
	case <-ctx.Done():
	}
}

// closeWithin is close bounded by d.
func (o *logOutput) closeWithin(d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	o.close(ctx)
}

// collector exports the count of dropped lines.
func (o *logOutput) collector() prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ringlb_log_lines_dropped_total",
		Help: "Log lines dropped because stderr was not being read (its pipe full): a node never waits for its log."},
		func() float64 { return float64(o.dropped.Load()) })
}
