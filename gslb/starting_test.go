package gslb

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// A balancer still starting (its session table not in yet) answers its
// health path 503 with configs.HeaderStarting, as balancer.serveHealth
// does: it routes once its table is in, within its startup_wait, and
// requests wait for that meanwhile. The gslb's monitor must not take it
// for down: a gslb started beside it (the demo, a cluster brought up
// together) failed its region over for seconds, moving the region's
// clients to another region. Here the west balancer answers as starting
// for more checks than fall, then as ready: west never fails over, and
// its clients are answered west's address throughout.
func TestStartingBalancerDoesNotFailItsRegionOver(t *testing.T) {
	t.Parallel()
	const startingChecks = 5 // more than fall (2) in a row
	var checks atomic.Int32
	ready := make(chan struct{})
	west := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := checks.Add(1)
		if n <= startingChecks {
			w.Header().Set(configs.HeaderStarting, "session table")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "session table syncing\n")
			return
		}
		if n == startingChecks+3 { // two successes: rise
			close(ready)
		}
		io.WriteString(w, "ok\n")
	}))
	t.Cleanup(west.Close)
	east := newFakeBalancer(t)
	cfg := parseGSLB(t, "", east.addr(), strings.TrimPrefix(west.URL, "http://"))
	mon := cfg.Monitors["bal"]
	mon.Interval, mon.Timeout, mon.Fall, mon.Rise = configs.Duration(100*time.Millisecond), configs.Duration(100*time.Millisecond), 2, 2
	cfg.Monitors = map[string]configs.Monitor{"bal": mon}
	var logged syncBuffer
	s := startGSLBLogging(t, cfg, slog.New(slog.NewTextHandler(&logged, nil)), nil)
	// West's clients are asked for until the balancer has answered as ready
	// rise times; every answer must be west's own.
	giveUp := time.After(60 * time.Second) // liveness only: checks run every 100 ms
	for started := false; !started; {
		select {
		case <-ready:
			started = true
		case <-giveUp:
			t.Fatalf("the monitor checked the balancer %d times in 60 s, want %d", checks.Load(), startingChecks+3)
		case <-time.After(20 * time.Millisecond):
		}
		if got := answerIPs(queryFrom(t, s, "udp", "127.0.0.2", "ide.ringlb.test.", dns.TypeA, nil)); got != "192.0.2.2" {
			t.Errorf("west's client answered %s while west's balancer was starting, want west's own 192.0.2.2", got)
			break
		}
	}
	if strings.Contains(logged.String(), "region failed over") {
		t.Errorf("a starting balancer failed its region over:\n%s", logged.String())
	}
	if up, why := s.state.Load().pools.names["ide.ringlb.test."].regions["west"].members[0].prober.Up(); !up {
		t.Errorf("west's member after it started: up %v, why %q", up, why)
	}
	t.Logf("log:\n%s", logged.String())
}
