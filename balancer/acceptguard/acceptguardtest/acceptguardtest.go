// Package acceptguardtest holds what the tests of the packages behind the
// accept guard share: Low makes an acceptguard.Memory low on memory for the
// tests of the packages that consult one (sessions, gslb) — the real
// watcher, against the runtime's real memory limit, with a tracker holding
// most of it, so a test reaches the low state at once and leaves it when it
// says, without filling the test process's memory; on Linux,
// SendAfterAnswer, NotReset and ResetAfterWrite are the raw client that
// checks an answer to a bad request survives the close after it, and Alone
// and ExhaustDescriptors run a test out of file descriptors.
//
// It is for tests only: nothing in a binary imports it.
package acceptguardtest

import (
	"context"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/acceptguard"
)

// limit is the runtime memory limit set while a Low memory is watched: far
// above what any test process uses, so only the tracker's count decides.
const limit = 1 << 40

// patience bounds the waits for the watcher's next sample.
const patience = 30 * time.Second

// Low returns a Memory that is low on memory — a tracker holds 95 % of the
// runtime's limit — until recover is called or the test ends. recover
// waits until the Memory is no longer low.
func Low(t testing.TB) (m *acceptguard.Memory, release func()) {
	t.Helper()
	prev := debug.SetMemoryLimit(limit)
	m = &acceptguard.Memory{}
	var held atomic.Int64
	held.Store(limit / 100 * 95)
	untrack := m.Track(held.Load)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Watch(ctx, nil)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		untrack()
		debug.SetMemoryLimit(prev)
	})
	wait(t, m, true)
	return m, func() {
		t.Helper()
		held.Store(0)
		wait(t, m, false)
	}
}

// wait waits until m.Low() is low.
func wait(t testing.TB, m *acceptguard.Memory, low bool) {
	t.Helper()
	for deadline := time.Now().Add(patience); m.Low() != low; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Memory.Low() not %v within %s", low, patience)
		}
	}
}
