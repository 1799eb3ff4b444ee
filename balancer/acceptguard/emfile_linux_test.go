package acceptguard

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/balancer/acceptguard/fdtest"
)

// These tests make the kernel itself answer accept(2) with EMFILE: they
// lower their process's soft RLIMIT_NOFILE to a few above what it holds and
// take the rest with /dev/null. Each runs in a process of its own (alone):
// in the test binary's, a descriptor an earlier test still held (a
// connection lingering before its close) could be freed while descriptors
// are exhausted, and accept would take it (fdtest).

// waitFor polls cond until it holds, failing after testWait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, testWait)
		}
		time.Sleep(time.Millisecond)
	}
}

// A guarded listener meets EMFILE: Accept does not return, counts each
// failure, backs off 5 ms doubling, logs once, and hands out the waiting
// connections once descriptors are free again.
func TestAcceptBacksOffOnEMFILE(t *testing.T) {
	if !fdtest.Alone(t) {
		return
	}
	ln := listen(t)
	var errs counter
	var logs logLines
	var mu sync.Mutex
	var delays []time.Duration
	g := Wrap(ln, Config{Name: "test", Logger: logs.logger(), Errors: &errs, LogEvery: time.Hour})
	defer g.Close()
	g.waited = func(d time.Duration) {
		mu.Lock()
		delays = append(delays, d)
		mu.Unlock()
	}
	// Connections waiting in the backlog: accepting them needs a descriptor.
	for range 3 {
		dial(t, ln.Addr().String())
	}
	release := fdtest.ExhaustDescriptors(t)
	conns, failed := acceptLoop(g)
	waitFor(t, "4 failed accepts", func() bool { return errs.value() >= 4 })
	select {
	case c := <-conns:
		t.Fatalf("accepted %v with no descriptor free", c.RemoteAddr())
	case err := <-failed:
		t.Fatalf("Accept returned %v", err)
	default:
	}
	release()
	start := time.Now()
	for i := range 3 {
		select {
		case c := <-conns:
			c.Close()
		case err := <-failed:
			t.Fatalf("Accept returned %v", err)
		case <-time.After(testWait):
			t.Fatalf("connection %d not accepted after descriptors were freed", i)
		}
	}
	t.Logf("%d failed accepts, then 3 accepted %s after release", errs.value(), time.Since(start).Round(time.Millisecond))
	mu.Lock()
	got := append([]time.Duration(nil), delays...)
	mu.Unlock()
	if len(got) < 4 || got[0] != minDelay {
		t.Fatalf("backoffs %v, want at least 4 starting at %s", got, minDelay)
	}
	for i := 1; i < len(got); i++ {
		if got[i] != min(2*got[i-1], maxDelay) {
			t.Fatalf("backoffs %v do not double up to %s", got, maxDelay)
		}
	}
	if n := logs.count(msgAcceptFailed); n != 1 {
		t.Errorf("%d log lines for %d failures within LogEvery, want 1", n, errs.value())
	}
	if !bytes.Contains(logs.buf.Bytes(), []byte("too many open files")) {
		t.Errorf("the log line does not name the error: %s", logs.buf.Bytes())
	}
}

// fasthttp's Serve ends on an accept error it does not know as a timeout
// (EMFILE included): behind the guard it keeps serving.
func TestFasthttpServesThroughEMFILE(t *testing.T) {
	if !fdtest.Alone(t) {
		return
	}
	ln := listen(t)
	var errs counter
	g := Wrap(ln, Config{Name: "test", Errors: &errs})
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }}
	// The clients wait in the backlog until the server accepts them.
	clients := []net.Conn{dial(t, ln.Addr().String()), dial(t, ln.Addr().String())}
	release := fdtest.ExhaustDescriptors(t)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(g) }()
	defer srv.Shutdown()
	waitFor(t, "3 failed accepts", func() bool { return errs.value() >= 3 })
	select {
	case err := <-served:
		release()
		t.Fatalf("fasthttp's Serve returned with descriptors exhausted: %v", err)
	default:
	}
	release()
	for i, c := range clients {
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("client %d after release: %v %v", i, resp, err)
		}
	}
}

// The admin ports are net/http servers, which are not guarded: Go's
// http.Server.Serve backs off on EMFILE by itself. This checks it does.
func TestNetHTTPBacksOffOnEMFILE(t *testing.T) {
	if !fdtest.Alone(t) {
		return
	}
	ln := listen(t)
	var logs logLines
	srv := &http.Server{
		Handler:  http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }),
		ErrorLog: log.New(&logs, "", 0),
	}
	c := dial(t, ln.Addr().String()) // waits in the backlog
	release := fdtest.ExhaustDescriptors(t)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer srv.Close()
	waitFor(t, "net/http reporting an accept error", func() bool {
		logs.mu.Lock()
		defer logs.mu.Unlock()
		return bytes.Contains(logs.buf.Bytes(), []byte("too many open files; retrying in"))
	})
	select {
	case err := <-served:
		release()
		t.Fatalf("http.Server.Serve returned with descriptors exhausted: %v", err)
	default:
	}
	release()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after release: %v %v", resp, err)
	}
}
