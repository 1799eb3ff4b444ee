package gslb

import (
	"testing"
	"time"

	"github.com/miekg/dns"
)

// notYetValid counts m's signatures whose inception is after now: a
// validator whose clock says now calls their RRsets bogus.
func notYetValid(m *dns.Msg, now time.Time) (sigs, early int) {
	for _, sec := range [][]dns.RR{m.Answer, m.Ns} {
		for _, rr := range sec {
			if sig, ok := rr.(*dns.RRSIG); ok {
				sigs++
				if !sig.ValidityPeriod(now) {
					early++
				}
			}
		}
	}
	return sigs, early
}

// A node whose clock ran a day ahead (a wrong RTC at boot, a spoofed NTP
// answer) signs with inceptions a day ahead, which no validator accepts
// until the real time reaches them. Once its clock is set right, it must
// not go on handing out those signatures from its caches — the signature
// cache's and the UDP loop's packed answers — for the day left until they
// become valid, or the days until their refresh: every validating resolver
// would call the zone bogus meanwhile.
func TestSignaturesAfterTheClockStepsBack(t *testing.T) {
	ksk, zsk := testKeys(t)
	cfg := signed(fuzzConfig(t), ksk, zsk)
	cfg.UDPWorkers = 1
	// No share table: it reads the test clock as a monotonic one (as
	// time.Now's is in production), which a step back would drain.
	cfg.Zones[0].DNSSEC.TCPClientShare = 1
	clock := newTestClock()
	clock.add(25 * time.Hour)
	s := startGSLBWith(t, cfg, clock.use)
	type ask struct {
		network, name string
		qtype         uint16
	}
	asks := []ask{
		{"udp", "ide.ringlb.test.", dns.TypeA}, {"tcp", "ide.ringlb.test.", dns.TypeA},
		{"udp", "ringlb.test.", dns.TypeDNSKEY}, {"tcp", "ringlb.test.", dns.TypeDNSKEY},
		{"udp", "nope.ringlb.test.", dns.TypeA}, {"tcp", "nope.ringlb.test.", dns.TypeA},
		{"udp", "ringlb.test.", dns.TypeSOA}, {"tcp", "ringlb.test.", dns.TypeMX},
	}
	for _, a := range asks { // signed a day ahead; cached
		query(t, s, a.network, a.name, a.qtype, withDO(false))
	}
	clock.add(-25 * time.Hour) // the clock set right
	sigs, early := 0, 0
	for _, a := range asks {
		m := query(t, s, a.network, a.name, a.qtype, withDO(false))
		n, e := notYetValid(m, clock.now())
		if n == 0 {
			t.Fatalf("%s %s: no signature in %v", a.network, a.name, m)
		}
		sigs, early = sigs+n, early+e
	}
	t.Logf("after the clock stepped back 25h: %d of %d signatures served not yet valid", early, sigs)
	if early > 0 {
		t.Errorf("%d of %d signatures served have an inception after the server's own clock", early, sigs)
	}
}
