package balancer

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// A full disk (/dev/full: every write fails with ENOSPC) loses lines, and
// every one lost is counted.
func TestAccessLogFullDiskCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := newAccessLog(reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	if err := a.apply(configs.AccessLog{Enabled: true, Path: "/dev/full", Sample: 1}); err != nil {
		t.Fatal(err)
	}
	e := accessEntry{at: time.Now(), kind: accessHTTP, status: 200}
	const n = 1000
	for range n {
		a.enqueue(&e)
		for len(a.entries) > accessQueue/2 {
			time.Sleep(time.Millisecond) // this test counts failed writes, not a writer behind
		}
	}
	healthtest.WaitUntil(t, "every line written to a full disk counted as dropped", func() bool {
		return gatherCounter(t, reg, "ringlb_balancer_access_log_dropped_total") == n
	})
}

// stalledFIFO makes a FIFO whose reader never reads: the access log's
// writer fills it (64 KiB) and its next write waits, as on a filesystem
// that stopped answering or a log shipper that stalled.
func stalledFIFO(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "access.fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return path
}

// stalledAccessLog is an access log writing to a FIFO nobody reads, its
// writer stuck and its queue full (lines dropped), and a line to log.
func stalledAccessLog(t *testing.T) (*accessLog, accessEntry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	a, err := newAccessLog(reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.apply(configs.AccessLog{Enabled: true, Path: stalledFIFO(t), Sample: 1}); err != nil {
		t.Fatal(err)
	}
	e := accessEntry{at: time.Now(), kind: accessHTTP, status: 200}
	healthtest.WaitUntil(t, "the writer stuck on the FIFO (the queue full)", func() bool {
		for range 1000 {
			a.enqueue(&e)
		}
		return gatherCounter(t, reg, "ringlb_balancer_access_log_dropped_total") > 0
	})
	return a, e
}

// A stalled access log file does not stall what changes it: SIGUSR1's
// reopen, a reload to another path and the balancer's stop return, and the
// new path gets lines.
func TestAccessLogStalledFileDoesNotHang(t *testing.T) {
	t.Parallel()
	a, e := stalledAccessLog(t)

	if !healthtest.Returns(a.reopen) {
		t.Fatal("reopen (SIGUSR1) did not return while the file was stalled")
	}
	next := filepath.Join(t.TempDir(), "access.log")
	var applyErr error
	if !healthtest.Returns(func() { applyErr = a.apply(configs.AccessLog{Enabled: true, Path: next, Sample: 1}) }) {
		t.Fatal("a reload to another path did not return while the file was stalled")
	}
	if applyErr != nil {
		t.Fatalf("reload to another path: %v", applyErr)
	}
	healthtest.WaitUntil(t, "lines in the new file", func() bool {
		a.enqueue(&e)
		raw, _ := os.ReadFile(next)
		return strings.Count(string(raw), "\n") > 0
	})
	if !healthtest.Returns(a.close) {
		t.Fatal("close (the balancer's stop) did not return while the file was stalled")
	}
}

// Stopping while the file is stalled returns: the balancer's stop is not
// held by its access log.
func TestAccessLogStalledFileCloses(t *testing.T) {
	t.Parallel()
	a, _ := stalledAccessLog(t)
	if !healthtest.Returns(a.close) {
		t.Fatal("close (the balancer's stop) did not return while the file was stalled")
	}
}

// A FIFO nobody has open for reading (a log shipper not started yet) is
// an error when the log is switched on, not a start that waits in open(2).
func TestAccessLogFIFOWithoutReader(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := newAccessLog(reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	path := filepath.Join(t.TempDir(), "access.fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	var applyErr error
	if !healthtest.Returns(func() { applyErr = a.apply(configs.AccessLog{Enabled: true, Path: path, Sample: 1}) }) {
		t.Fatal("switching the access log on to a FIFO without a reader did not return")
	}
	t.Logf("a FIFO without a reader: %v", applyErr)
	if applyErr == nil {
		t.Error("a FIFO without a reader was accepted")
	}
}
