package health

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// busyScheduler keeps every one of the process's Ps running goroutines
// that never block, until the test ends: a process whose goroutines are all
// busy, as a balancer's are when hundreds of participants reconnect at once
// on a machine out of CPU.
func busyScheduler(t *testing.T) {
	t.Helper()
	prev := runtime.GOMAXPROCS(1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := 0
			for {
				select {
				case <-stop:
					return
				default:
				}
				for j := range 1_000_000 {
					x += j
				}
			}
		}()
	}
	t.Cleanup(func() {
		close(stop)
		wg.Wait()
		runtime.GOMAXPROCS(prev)
	})
}

// A TCP check is the kernel's verdict, not the Go scheduler's: a process
// whose goroutines are all busy ran the check's expired timer before it
// read the network poller, so a check of a target whose kernel answered in
// microseconds timed out — at once for every static edge of a balancer in
// a reconnect storm (TestThirdPartySessionsNeverSplit: the two balancers'
// monitors took different live relays for down in the same second, and a
// killed relay's sessions moved to different fallbacks through each).
// Before, 20 of 20 checks failed so here.
func TestTCPCheckIsTheKernelsVerdictInABusyProcess(t *testing.T) {
	target := acceptingListener(t).Addr().String()
	mon := configs.Monitor{Type: configs.MonitorTCP, Timeout: configs.Duration(50 * time.Millisecond)}
	p := NewProber(mon, target, nil, nil)
	busyScheduler(t)
	failed := 0
	var first error
	for range 20 {
		if err := p.check(context.Background()); err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	if failed != 0 {
		t.Errorf("%d of 20 checks of a listening target failed in a busy process (first: %v)", failed, first)
	}
}

// fullQueueTarget listens with the smallest accept queue and fills it, so
// the kernel drops new SYNs: a check of it times out.
func fullQueueTarget(t *testing.T) string {
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
	f := os.NewFile(uintptr(fd), "full-queue")
	t.Cleanup(func() { f.Close() })
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// Fill the queue: dials that complete while it has room; the first
	// that times out says it is full.
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("the accept queue never filled")
	return ""
}

// A target that does not answer fails the check at its timeout, and a
// check waiting on one ends soon after its prober is stopped, not at the
// timeout.
func TestTCPCheckOfASilentTarget(t *testing.T) {
	target := fullQueueTarget(t)
	mon := configs.Monitor{Type: configs.MonitorTCP, Timeout: configs.Duration(300 * time.Millisecond)}
	p := NewProber(mon, target, nil, nil)
	err := p.check(context.Background())
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !strings.Contains(err.Error(), "i/o timeout") {
		t.Fatalf("check of a target dropping SYNs: %v, want an i/o timeout", err)
	}
	p = NewProber(configs.Monitor{Type: configs.MonitorTCP, Timeout: configs.Duration(time.Hour)}, target, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.check(ctx) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("a stopped check: %v, want canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a check of an hour's timeout held its prober's stop")
	}
}
