package health

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/acceptguard/fdtest"
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
// Before, 19 or 20 of 20 checks failed so here.
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
	addr, _ := fullQueueListener(t)
	return addr
}

// fullQueueListener is fullQueueTarget with its listening socket: closed,
// the SYNs it dropped are refused when they come again.
func fullQueueListener(t *testing.T) (string, *os.File) {
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
			return addr, f
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("the accept queue never filled")
	return "", nil
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

// busyCheckEnv names, for a child process of the test binary, the target
// it checks while busy (httpCheckedByABusyProcess).
const busyCheckEnv = "RINGLB_TEST_BUSY_CHECK"

// httpCheckedByABusyProcess checks target (scheme://host:port) busyChecks times
// from a child process of the test binary whose goroutines are all busy,
// and returns the child's report. The target's server stays in this
// process, which is not busy: an answer is the server's, in time, and a
// failed check is the checking process's.
func httpCheckedByABusyProcess(t *testing.T, target string) (failed int, report string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), busyCheckEnv+"="+target)
	out, err := cmd.CombinedOutput()
	m := regexp.MustCompile(`busy checks failed: (\d+) of \d+`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("the busy checking process (%v) said no count:\n%s", err, out)
	}
	failed, _ = strconv.Atoi(string(m[1]))
	return failed, string(out)
}

// busyChecks is how many checks the busy child process makes.
const busyChecks = 8

// busyHTTPChecks runs in the child process: busyChecks checks of the target named
// by busyCheckEnv with every goroutine of the process busy. It reports
// whether it is the child.
func busyHTTPChecks(t *testing.T) bool {
	target := os.Getenv(busyCheckEnv)
	if target == "" {
		return false
	}
	scheme, addr, _ := strings.Cut(target, "://")
	mon := configs.Monitor{Type: configs.MonitorType(scheme), Path: "/", ExpectStatus: http.StatusOK, Timeout: configs.Duration(250 * time.Millisecond)}
	p := NewProber(mon, addr, nil, nil)
	busyScheduler(t)
	failed := 0
	for range busyChecks {
		if err := p.check(context.Background()); err != nil {
			if failed == 0 {
				t.Logf("first failure: %v", err)
			}
			failed++
		}
	}
	t.Logf("busy checks failed: %d of %d", failed, busyChecks)
	return true
}

// An HTTP or HTTPS check is the kernel's verdict too: the target's answer
// there in time passes it, however late the busy checking process looks
// (before, net/http ran its timers first: 8 of 8 failed so, HTTP and
// HTTPS alike).
func TestHTTPCheckIsTheKernelsVerdictInABusyProcess(t *testing.T) {
	if busyHTTPChecks(t) {
		return
	}
	if testing.Short() {
		t.Skip("a child process busy for seconds")
	}
	for _, tls := range []bool{false, true} {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
		// The busy process's checks end their connections: the server
		// is not to log each.
		srv.Config.ErrorLog = log.New(io.Discard, "", 0)
		if tls {
			srv.StartTLS()
		} else {
			srv.Start()
		}
		defer srv.Close()
		failed, report := httpCheckedByABusyProcess(t, srv.URL)
		if failed != 0 {
			t.Errorf("%d of %d checks of %s failed in a busy process:\n%s", failed, busyChecks, srv.URL, report)
		}
	}
}

// A target named by a host name with several addresses, the first of which
// drops SYNs — a dual-stack edge whose IPv6 path is black-holed — and the
// next listening: net.Dialer tries the next address 300 ms on (RFC 8305),
// and the checks through it passed; a check that gave the first address
// the whole timeout failed every time, the target down though it answered.
func TestCheckOfANameTriesItsNextAddress(t *testing.T) {
	if !fdtest.Alone(t) {
		return
	}
	// 127.0.0.1 dropping SYNs, 127.0.0.2 listening, on one port: another
	// test's process may hold the port on 127.0.0.2, so another is taken.
	var port string
	var ln net.Listener
	for try := 1; ln == nil; try++ {
		_, port, _ = net.SplitHostPort(fullQueueTarget(t))
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", port))
		switch {
		case err == nil:
			ln = l
		case !errors.Is(err, syscall.EADDRINUSE) || try == 20:
			t.Fatal(err)
		}
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	const name = "dual.ringlb.test"
	resolveOnLoopback(t, name, net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 2))
	target := net.JoinHostPort(name, port)
	for _, typ := range []configs.MonitorType{configs.MonitorTCP, configs.MonitorHTTP} {
		mon := configs.Monitor{Type: typ, Timeout: configs.Duration(3 * time.Second), ExpectStatus: http.StatusOK}
		p := NewProber(mon, target, nil, nil)
		began := time.Now()
		err := p.check(context.Background())
		t.Logf("%s check of %s (first address dropping SYNs, second listening): %v in %v", typ, target, err, time.Since(began).Round(time.Millisecond))
		if err != nil {
			t.Errorf("%s check of a name whose second address listens failed: %v", typ, err)
		}
	}
	// Every address silent: the check fails with a timeout, at its
	// deadline.
	const silent = "silent.ringlb.test"
	resolveOnLoopback(t, silent, net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 1))
	p := NewProber(configs.Monitor{Type: configs.MonitorTCP, Timeout: configs.Duration(time.Second)}, net.JoinHostPort(silent, port), nil, nil)
	err := p.check(context.Background())
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("check of a name whose every address drops SYNs: %v, want a timeout", err)
	}
}

// A check whose target refused it at one address was made, though another
// address could not be tried for want of a descriptor: the refusal is a
// finding about the target. The first address drops SYNs until its
// listener closes, and refuses the SYN it sends again (TCP's first
// retransmission, a second on); the second, tried 300 ms on, finds no
// descriptor. The error was the first failure's, the descriptor's, so the
// check was "not made" and the target's state held, down or not.
func TestCheckRefusedAtOneAddressIsMadeThoughAnotherLackedADescriptor(t *testing.T) {
	if !fdtest.Alone(t) {
		return
	}
	sink, listener := fullQueueListener(t) // 127.0.0.1
	_, portText, _ := net.SplitHostPort(sink)
	port, _ := strconv.Atoi(portText)
	addrs := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")}
	spare, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	release := fdtest.ExhaustDescriptors(t)
	spare.Close() // one descriptor free: the first address's socket
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		fd, _, err := connectFirst(context.Background(), addrs, uint16(port), time.Now().Add(20*time.Second))
		done <- result{fd, err}
	}()
	// Its SYN sent (the socket is made and connected at once), the
	// listener goes: the SYN sent again is refused.
	time.Sleep(100 * time.Millisecond)
	listener.Close()
	// Its descriptor taken again, so that the second address finds none.
	if f, err := os.Open(os.DevNull); err == nil {
		defer f.Close()
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the connect never ended")
	}
	release()
	if r.err == nil {
		syscall.Close(r.fd)
		t.Fatal("connected to a closed listener")
	}
	t.Logf("first address refused, second without a descriptor: %v", r.err)
	if lacking := LocalLacking(r.err); lacking != "" || !errors.Is(r.err, syscall.ECONNREFUSED) {
		t.Errorf("check refused by the target at one address, the other lacking a descriptor: %v (lacking %q), want the refusal, a check made", r.err, lacking)
	}
}
