package health

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/acceptguard/fdtest"
	"github.com/ringlb/ringlb/configs"
)

// A check this process cannot make — no descriptor left for its socket —
// says nothing of the target: a gslb out of descriptors took every member
// it monitors for down (its regions failed over, latched), a balancer its
// static backends. The state holds while checks cannot be made, and checks
// count again once descriptors are back.
func TestChecksThisProcessCannotMakeHoldTheState(t *testing.T) {
	if !fdtest.Alone(t) {
		return
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer srv.Close()
	target := strings.TrimPrefix(srv.URL, "http://")
	type run struct {
		p  *Prober
		ch chan transition
	}
	var runs []run
	for _, typ := range []configs.MonitorType{configs.MonitorTCP, configs.MonitorHTTP} {
		p, ch := runProber(t, fastMonitor(typ), target)
		runs = append(runs, run{p, ch})
	}
	checked := func(p *Prober) time.Time {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.checked
	}
	// waitChecks waits until each prober has checked n more times.
	waitChecks := func(n int) {
		t.Helper()
		for _, r := range runs {
			last, seen := checked(r.p), 0
			deadline := time.Now().Add(30 * time.Second)
			for seen < n {
				if time.Now().After(deadline) {
					t.Fatalf("%s prober: %d checks in 30s, want %d", r.p.mon.Type, seen, n)
				}
				if c := checked(r.p); !c.Equal(last) {
					last, seen = c, seen+1
				}
				time.Sleep(time.Millisecond)
			}
		}
	}
	waitChecks(3)
	for _, r := range runs {
		if !r.p.Settled() {
			t.Fatalf("%s prober not settled up before the descriptors ran out", r.p.mon.Type)
		}
	}

	release := fdtest.ExhaustDescriptors(t)
	// Fall is 2: four checks without a descriptor each took the target down.
	waitChecks(2*fastMonitor("tcp").Fall + 1)
	release()
	waitChecks(3)
	for _, r := range runs {
		select {
		case tr := <-r.ch:
			t.Errorf("%s prober changed state while this process had no descriptor: %+v", r.p.mon.Type, tr)
		default:
		}
		if up, why := r.p.Up(); !up {
			t.Errorf("%s prober: target down after descriptors came back (%s)", r.p.mon.Type, why)
		}
	}
}
