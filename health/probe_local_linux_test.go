package health

import (
	"context"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

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
	holdsWithoutDescriptors(t, target)
}

// The same for a target named by a host name: with no descriptor left,
// the lookup cannot open its socket to the resolver, and the resolver's
// error (a net.DNSError) keeps only the text of why, not the errno — so
// the name "not resolving" took the target down. The names resolve here
// through a real DNS server on loopback that the process's resolver asks.
func TestNamedChecksThisProcessCannotMakeHoldTheState(t *testing.T) {
	if !fdtest.Alone(t) {
		return
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	const name = "target.ringlb.test"
	resolveOnLoopback(t, name, net.IPv4(127, 0, 0, 1))
	target := net.JoinHostPort(name, port)
	holdsWithoutDescriptors(t, target)
}

// resolveOnLoopback has the process's resolver ask a real DNS server on
// loopback, which answers name's A query with addrs, in that order, until
// the test ends. The resolver is the process's: the test runs in a
// process of its own (fdtest.Alone).
func resolveOnLoopback(t *testing.T, name string, addrs ...net.IP) {
	t.Helper()
	fqdn := dns.Fqdn(name)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	dnsSrv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) }, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if q.Question[0].Name == fqdn && q.Question[0].Qtype == dns.TypeA {
			for _, a := range addrs {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: fqdn, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: a})
			}
		}
		w.WriteMsg(m)
	})}
	go dnsSrv.ActivateAndServe()
	t.Cleanup(func() { dnsSrv.Shutdown() })
	<-started
	preferGo, dial := net.DefaultResolver.PreferGo, net.DefaultResolver.Dial
	net.DefaultResolver.PreferGo = true
	net.DefaultResolver.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "udp", pc.LocalAddr().String())
	}
	// A cleanup, run after the probers' own (registered later): they
	// resolve until they stop.
	t.Cleanup(func() { net.DefaultResolver.PreferGo, net.DefaultResolver.Dial = preferGo, dial })
}

// holdsWithoutDescriptors runs a TCP and an HTTP prober of target (up),
// leaves the process without a descriptor for more checks than fall, gives
// them back, and fails if either changed state or the target is not up, or
// if a check not made was not told (OnCheckNotMade: the roles count each
// one; logged once a run, a run of them was otherwise seen nowhere but in
// its first line), or was told as anything but lacking descriptors.
func holdsWithoutDescriptors(t *testing.T, target string) {
	t.Helper()
	type run struct {
		p  *Prober
		ch chan transition
		// notMade counts the checks told as not made, by what they lacked.
		notMade *notMadeCount
	}
	var runs []run
	for _, typ := range []configs.MonitorType{configs.MonitorTCP, configs.MonitorHTTP} {
		count := &notMadeCount{by: map[string]int{}}
		p, ch := runProber(t, fastMonitor(typ), target, func(p *Prober) { p.OnCheckNotMade(count.add) })
		runs = append(runs, run{p, ch, count})
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
		if up, why := r.p.Up(); !up || !r.p.Settled() {
			t.Fatalf("%s prober of %s not settled up before the descriptors ran out (%s)", r.p.mon.Type, target, why)
		}
	}

	for _, r := range runs {
		if got := r.notMade.snapshot(); len(got) != 0 {
			t.Fatalf("%s prober: checks told as not made while descriptors were free: %v", r.p.mon.Type, got)
		}
	}
	release := fdtest.ExhaustDescriptors(t)
	// Fall is 2: four checks without a descriptor each took the target down.
	notMade := 2*fastMonitor("tcp").Fall + 1
	waitChecks(notMade)
	release()
	waitChecks(3)
	for _, r := range runs {
		got := r.notMade.snapshot()
		t.Logf("%s prober: checks not made, by what they lacked: %v", r.p.mon.Type, got)
		if got[LackingDescriptors] < notMade || len(got) != 1 {
			t.Errorf("%s prober: checks told as not made %v, want %d or more, each lacking %s", r.p.mon.Type, got, notMade, LackingDescriptors)
		}
	}
	for _, r := range runs {
		select {
		case tr := <-r.ch:
			t.Errorf("%s prober of %s changed state while this process had no descriptor: %+v", r.p.mon.Type, target, tr)
		default:
		}
		if up, why := r.p.Up(); !up {
			t.Errorf("%s prober: target down after descriptors came back (%s)", r.p.mon.Type, why)
		}
	}
}

// notMadeCount counts the checks a prober tells as not made.
type notMadeCount struct {
	mu sync.Mutex
	by map[string]int
}

func (c *notMadeCount) add(lacking string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.by[lacking]++
}

func (c *notMadeCount) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.by)
}
