package health

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

func fastMonitor(typ configs.MonitorType) configs.Monitor {
	return configs.Monitor{Type: typ, Path: configs.PathHealth, ExpectStatus: 200,
		Interval: configs.Duration(20 * time.Millisecond), Timeout: configs.Duration(500 * time.Millisecond), Rise: 2, Fall: 2}
}

type transition struct {
	up  bool
	why string
}

// runProber runs a prober of target, each of before applied to it first,
// until the test ends.
func runProber(t *testing.T, mon configs.Monitor, target string, before ...func(*Prober)) (*Prober, chan transition) {
	t.Helper()
	ch := make(chan transition, 16)
	p := NewProber(mon, target, func(up bool, why string) { ch <- transition{up, why} }, nil)
	for _, f := range before {
		f(p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return p, ch
}

func next(t *testing.T, ch chan transition) transition {
	t.Helper()
	select {
	case tr := <-ch:
		return tr
	case <-time.After(30 * time.Second):
		t.Fatal("no state change within 10s")
		return transition{}
	}
}

func TestHTTPProbeFallAndRise(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_ringlb/health" || !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	p, ch := runProber(t, fastMonitor("http"), strings.TrimPrefix(srv.URL, "http://"))
	if up, _ := p.Up(); !up {
		t.Fatal("prober does not start up")
	}
	healthy.Store(false)
	if tr := next(t, ch); tr.up || !strings.Contains(tr.why, "status 503, want 200") {
		t.Fatalf("after failures: %+v", tr)
	}
	healthy.Store(true)
	if tr := next(t, ch); !tr.up {
		t.Fatalf("after recovery: %+v", tr)
	}
}

// acceptingListener accepts and closes connections until the test ends.
func acceptingListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln
}

func TestTCPProbe(t *testing.T) {
	ln := acceptingListener(t)
	p, ch := runProber(t, fastMonitor("tcp"), ln.Addr().String())
	ln.Close()
	if tr := next(t, ch); tr.up || !strings.Contains(tr.why, "connection refused") {
		t.Fatalf("closed listener: %+v", tr)
	}
	if up, why := p.Up(); up || why == "" {
		t.Fatalf("Up() = %v %q", up, why)
	}
}

// A prober starts up, unsettled: its first check confirms nothing until
// rise successes (or fall failures) in a row; a seeded state is settled.
func TestProberSettles(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer srv.Close()
	mon := fastMonitor("http")
	mon.Rise = 3
	p := NewProber(mon, strings.TrimPrefix(srv.URL, "http://"), nil, nil)
	if p.Settled() {
		t.Fatal("a new prober is settled before any check")
	}
	for i := 1; i <= 3; i++ {
		p.checkOnce(context.Background())
		if got, want := p.Settled(), i >= 3; got != want {
			t.Fatalf("after %d successes (rise 3): settled %v, want %v", i, got, want)
		}
	}
	q := NewProber(mon, "127.0.0.1:1", nil, nil)
	q.Seed(false, "as the prober it replaces saw it")
	if !q.Settled() {
		t.Error("a seeded prober is not settled")
	}
}

// Checks confirming the start state (up) are no transition, so onChange is
// not called, but OnSettled's hook is, once; a prober that settles by a
// transition (down after fall failures) calls onChange only.
func TestProberOnSettled(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer srv.Close()
	mon := fastMonitor("http")
	changes, settles := 0, 0
	p := NewProber(mon, strings.TrimPrefix(srv.URL, "http://"), func(bool, string) { changes++ }, nil)
	p.OnSettled(func() { settles++ })
	for i := 1; i <= 4; i++ {
		p.checkOnce(context.Background())
		if want := min(max(i-1, 0), 1); settles != want || changes != 0 {
			t.Fatalf("after %d successes (rise 2): %d settles, %d changes; want %d, 0", i, settles, changes, want)
		}
	}
	changes, settles = 0, 0
	q := NewProber(mon, "127.0.0.1:1", func(bool, string) { changes++ }, nil)
	q.OnSettled(func() { settles++ })
	for range 3 {
		q.checkOnce(context.Background())
	}
	if changes != 1 || settles != 0 {
		t.Errorf("down after fall failures: %d changes, %d settles; want 1, 0", changes, settles)
	}
}

// A named prober's Host carries the target's port unless it is the
// scheme's own, as a browser's request for https://host:port/ does.
func TestNamedProberHost(t *testing.T) {
	for _, tc := range []struct {
		typ          configs.MonitorType
		target, want string
	}{
		{configs.MonitorHTTPS, "192.0.2.1:443", "bal.ringlb.test"},
		{configs.MonitorHTTPS, "192.0.2.1:8443", "bal.ringlb.test:8443"},
		{configs.MonitorHTTPS, "[2001:db8::1]:8443", "bal.ringlb.test:8443"},
		{configs.MonitorHTTP, "192.0.2.1:80", "bal.ringlb.test"},
		{configs.MonitorHTTP, "192.0.2.1:443", "bal.ringlb.test:443"},
	} {
		p := NewNamedProber(configs.Monitor{Type: tc.typ}, tc.target, "bal.ringlb.test", nil, nil, nil)
		if p.host != tc.want {
			t.Errorf("%s check of %s: Host %q, want %q", tc.typ, tc.target, p.host, tc.want)
		}
	}
	if p := NewVerifyingProber(configs.Monitor{Type: configs.MonitorHTTPS}, "192.0.2.1:8443", nil, nil, nil); p.host != "" {
		t.Errorf("a prober without a name asks for %q, want the target", p.host)
	}
}

// An answer marked configs.HeaderStarting is no finding: any number of them
// neither take an up target down nor bring a down one up, nor settle the
// prober. Past configs.MaxSessionStartupWait of them in a row (longer than
// any balancer starts) they are failures; an unmarked 503 always is.
func TestStartingAnswerHoldsTheState(t *testing.T) {
	var starting atomic.Bool
	starting.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if starting.Load() {
			w.Header().Set(configs.HeaderStarting, "session table")
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	changes := 0
	p := NewProber(fastMonitor("http"), strings.TrimPrefix(srv.URL, "http://"), func(bool, string) { changes++ }, nil)
	for range 10 {
		p.checkOnce(context.Background())
	}
	if up, why := p.Up(); !up || p.Settled() || changes != 0 || !strings.Contains(why, "starting") {
		t.Fatalf("after 10 starting answers (fall 2): up %v, settled %v, %d changes, why %q; want up, unsettled, none, starting", up, p.Settled(), changes, why)
	}
	// Starting for longer than any balancer does: failures.
	p.mu.Lock()
	p.startingSince = time.Now().Add(-configs.MaxSessionStartupWait)
	p.mu.Unlock()
	p.checkOnce(context.Background())
	p.checkOnce(context.Background())
	if up, _ := p.Up(); up || changes != 1 {
		t.Fatalf("starting for %s: up %v, %d changes; want down", configs.MaxSessionStartupWait, up, changes)
	}
	// A down target answering as starting stays down.
	q := NewProber(fastMonitor("http"), strings.TrimPrefix(srv.URL, "http://"), nil, nil)
	q.Seed(false, "down before")
	for range 5 {
		q.checkOnce(context.Background())
	}
	if up, _ := q.Up(); up {
		t.Error("a down target answering as starting came up")
	}
	// Unmarked, a 503 fails as before: down after fall.
	starting.Store(false)
	r := NewProber(fastMonitor("http"), strings.TrimPrefix(srv.URL, "http://"), nil, nil)
	r.checkOnce(context.Background())
	r.checkOnce(context.Background())
	if up, why := r.Up(); up || !strings.Contains(why, "status 503, want 200") {
		t.Errorf("after fall unmarked 503s: up %v, why %q; want down", up, why)
	}
}
