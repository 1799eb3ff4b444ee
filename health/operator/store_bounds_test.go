package operator

import (
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/health/healthtest"
)

// A state file that is not what the store writes — grown huge (a disk
// fault, a runaway writer), or a FIFO — is refused without reading it whole
// or waiting on it: the node starts with the config's own state, as with a
// corrupt file.
func TestStoreLoadBounded(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A sparse file: no disk used, 256 MiB to read.
	huge, err := os.Create(filepath.Join(dir, "balancer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := huge.Truncate(256 << 20); err != nil {
		t.Fatal(err)
	}
	huge.Close()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	var v struct{}
	err = s.Load("balancer", &v)
	runtime.ReadMemStats(&ms)
	read := ms.TotalAlloc - before
	t.Logf("a 256 MiB state file: %v, %d MiB allocated reading it", err, read>>20)
	if err == nil {
		t.Error("a 256 MiB state file was accepted")
	}
	if read > 2*maxStateFile {
		t.Errorf("%d MiB allocated reading a 256 MiB state file, bound %d MiB", read>>20, maxStateFile>>20)
	}

	if err := syscall.Mkfifo(filepath.Join(dir, "gslb-pools.json"), 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Load("gslb-pools", &v) }()
	select {
	case err := <-done:
		t.Logf("a FIFO as state file: %v", err)
		if err == nil {
			t.Error("a FIFO as state file was accepted")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Load waited on a FIFO")
	}
}

// An audit log that is a FIFO is not read or appended to (either would wait
// in open(2) for a writer or a reader, at start): records are kept in
// memory, as when the directory cannot be written.
func TestAuditLogFIFOKeptInMemory(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{auditFile, auditPrevFile} {
		if err := syscall.Mkfifo(filepath.Join(dir, name), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var a *AuditLog
	if !healthtest.Returns(func() {
		a = newAuditLog("bal-1", dir, slog.New(slog.DiscardHandler), newMetrics(prometheus.NewRegistry()))
	}) {
		t.Fatal("the audit log waited on a FIFO at start")
	}
	a.Add(Record{Who: "token", Action: "drain", Target: "edge-1", Result: 202})
	if got := a.List(10); len(got) != 1 {
		t.Errorf("records in memory: %+v", got)
	}
}
