package operator

import (
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
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
