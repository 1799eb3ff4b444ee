package acceptguard

import (
	"bufio"
	"context"
	"math"
	"net/http"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// inUseNow is what the process holds now: the runtime's count against its
// memory limit once a collection has run and the freed memory has gone
// back to the system (another test's included).
func inUseNow() int64 {
	debug.FreeOSMemory()
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64() - s[1].Value.Uint64())
}

// withMemoryLimit sets the runtime's memory limit for the test and starts
// a Memory watching it.
func withMemoryLimit(t *testing.T, limit int64) *Memory {
	t.Helper()
	prev := debug.SetMemoryLimit(limit)
	m := &Memory{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Watch(ctx, nil)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		debug.SetMemoryLimit(prev)
	})
	return m
}

func waitMemory(t *testing.T, m *Memory, low bool) {
	t.Helper()
	deadline := time.Now().Add(testWait)
	for m.Low() != low {
		if time.Now().After(deadline) {
			t.Fatalf("Low() not %v within %s", low, testWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Near the process's memory limit the listener refuses every new
// connection, with its own answer and counter, and accepts again once
// the memory is given back. Real memory against the runtime's real limit.
func TestLowMemoryRefusesConnections(t *testing.T) {
	const hold = 64 << 20
	m := withMemoryLimit(t, inUseNow()+hold)
	var refused, refusedMem counter
	var logs logLines
	g := Wrap(listen(t), Config{Name: "test", Logger: logs.logger(), Refused: &refused,
		Memory: m, RefusedMemory: &refusedMem, RefusalMemory: HTTPAnswer(http.StatusServiceUnavailable, "low on memory"), LogEvery: time.Hour})
	defer g.Close()
	next := acceptNext(t, g)
	dial(t, g.Addr().String())
	next()

	// The process takes what is left of its limit, and keeps it.
	ballast := make([]byte, hold)
	for i := range ballast {
		ballast[i] = 1 // touched: in use, not just reserved
	}
	runtime.GC()
	waitMemory(t, m, true)
	for i := range 3 {
		c := dial(t, g.Addr().String())
		line, _ := bufio.NewReader(c).ReadString('\n')
		if !strings.HasPrefix(line, "HTTP/1.1 503 ") {
			t.Fatalf("connection %d while low on memory: %q, want a 503", i, line)
		}
	}
	if refusedMem.value() != 3 || refused.value() != 0 || g.Open() != 1 {
		t.Errorf("refused for memory %d, at the cap %d, open %d; want 3, 0, 1", refusedMem.value(), refused.value(), g.Open())
	}
	if n := logs.count(msgRefusedMemory); n != 1 {
		t.Errorf("%d %q lines for 3 refusals within LogEvery, want 1", n, msgRefusedMemory)
	}

	// Given back: the watcher collects while low, so it sees it.
	runtime.KeepAlive(ballast)
	ballast = nil
	waitMemory(t, m, false)
	dial(t, g.Addr().String())
	next()
}

// LowFor counts the trackers' buffers as they are now, not as of the last
// sample: a burst of large buffers between two samples is refused before it
// takes the process past its limit.
func TestLowForCountsTrackersNow(t *testing.T) {
	const room = 64 << 20
	m := withMemoryLimit(t, inUseNow()+room)
	var held atomic.Int64
	untrack := m.Track(held.Load)
	defer untrack()
	// Sampled at least once with nothing tracked.
	for deadline := time.Now().Add(testWait); m.untracked.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no sample taken")
		}
	}
	if m.LowFor(1 << 20) {
		t.Fatal("low with the limit far away")
	}
	held.Store(room) // a burst no sample has seen yet
	if !m.LowFor(1 << 20) {
		t.Error("LowFor ignores what the trackers hold now")
	}
	untrack()
	if m.LowFor(1<<20) && !m.Low() {
		t.Error("an untracked count still counts")
	}
}

// Without a limit (the runtime's default) nothing is ever low, and Watch
// returns at once.
func TestNoLimitNeverLow(t *testing.T) {
	prev := debug.SetMemoryLimit(math.MaxInt64)
	defer debug.SetMemoryLimit(prev)
	m := &Memory{}
	m.Watch(context.Background(), nil) // returns: there is nothing to watch
	if m.Low() || m.LowFor(math.MaxInt64/2) {
		t.Error("low without a limit")
	}
	var nilMem *Memory
	if nilMem.Low() || nilMem.LowFor(1) {
		t.Error("a nil Memory is low")
	}
}
