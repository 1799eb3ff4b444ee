package balancer

import (
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// slowAcceptEdge is namedRawEdge on a socket listening with the smallest
// accept queue; while held it accepts nothing, and once its queue is full
// the kernel drops new SYNs: a dial to it times out, as to a backend alive
// but slow to accept (a burst of reconnections, a starved process). Its
// accept loop ends with the test, held or not.
func slowAcceptEdge(t *testing.T, name string) (url string, held *atomic.Bool) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "slow-accept")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	held = new(atomic.Bool)
	done := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		ln.Close()
	})
	serve := namedUpgrade(name)
	go func() {
		for {
			for held.Load() {
				select {
				case <-done:
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return "http://" + ln.Addr().String(), held
}

// A dial that times out to the backend of a live session is tried there
// again before the backend is taken for suspect: alive but slow to accept
// (its accept queue full for a moment), it still holds the session. Before,
// any dial error marked it suspect for 5 s and sent the key to the
// fallback: the session's next participant on another backend than the
// first — a split, which TestThirdPartySessionsNeverSplit saw once at
// load 8 when 100+ participants of a killed backend reconnected at once.
// A refusal (nothing listens) still moves the key at once.
func TestDialTimeoutToALiveBackendIsTriedAgain(t *testing.T) {
	slowURL, held := slowAcceptEdge(t, "e1")
	cfg := configs.Balancer{DialTimeout: configs.Duration(1500 * time.Millisecond)}
	b, addr := startBalancerFor(t, cfg, slowURL)
	b.ring.Update([]ring.Member{{Name: "e1", URL: slowURL, Weight: 1}, {Name: "e2", URL: namedRawEdge(t, "e2"), Weight: 1}})
	key := keyOwnedOn(t, b.ring, "e1")
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if status, owner := upgradeStatus(t, first, key); !strings.HasPrefix(status, "101") || owner != "e1" {
		t.Fatalf("first participant: %s from %q, want 101 from e1", status, owner)
	}

	// e1 accepts nothing for a while (but the Accept under way, which
	// takes the first filler); the second fills its queue.
	held.Store(true)
	for range 2 {
		filler, err := net.Dial("tcp", strings.TrimPrefix(slowURL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer filler.Close()
	}
	second, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	answered := make(chan [2]string, 1)
	go func() { // ends with second's 30 s deadline at most
		status, owner, err := upgradeAnswer(second, key)
		if err != nil {
			status = err.Error()
		}
		answered <- [2]string{status, owner}
	}()
	dialErrors := func() float64 {
		var m dto.Metric
		if err := b.metrics.backendErrorsTotal.WithLabelValues("e1", errorKindDial).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	healthtest.WaitUntil(t, "the balancer's dial to e1 timed out", func() bool {
		select {
		case a := <-answered:
			answered <- a
			return true
		default:
		}
		return dialErrors() >= 1
	})
	held.Store(false) // e1 accepts again: the queue drains
	a := <-answered
	t.Logf("the second participant, e1's first dial timed out: %s from %q; e1 suspect %v", a[0], a[1], b.isSuspect("e1"))
	if !strings.HasPrefix(a[0], "101") || a[1] != "e1" {
		t.Errorf("the second participant of e1's live session: %s from %q, want 101 from e1 (the first is there)", a[0], a[1])
	}
}
