package gslb

import (
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// firstExpiry is when the first signature of a transfer expires.
func firstExpiry(rrs []dns.RR) time.Time {
	var first uint32
	for _, rr := range rrs {
		if sig, ok := rr.(*dns.RRSIG); ok && (first == 0 || sig.Expiration < first) {
			first = sig.Expiration
		}
	}
	return time.Unix(int64(first), 0)
}

// A secondary serves the signatures a transfer gave it until the serial
// changes and it transfers again — what it checks every SOA refresh, and
// what a NOTIFY tells it at once. Online signing replaces signatures as
// they age (signature_refresh), but that changed no serial: a zone whose
// managed answers stayed put (no failover for a week, the usual case)
// left its secondaries serving expired signatures, bogus to every
// validating resolver, while they and the primary agreed they were
// current. Here a secondary checks the serial every 2 h (the zone's SOA
// refresh) for two weeks (its SOA expire) with nothing changing, and
// counts the hours it held an expired signature.
func TestSecondarysSignaturesNeverExpire(t *testing.T) {
	ksk, zsk := testKeys(t)
	cfg := signed(withTransfer(t, fuzzConfig(t), configs.Transfer{Allow: []string{"127.0.0.0/8"}}), ksk, zsk)
	cfg.Names, cfg.Monitors = nil, nil // nothing changes a managed answer
	clock := newTestClock()
	s := startGSLBWith(t, cfg, func(s *Server) {
		clock.use(s)
		s.resignTick = time.Millisecond
	})
	serial := func() uint32 {
		m := query(t, s, "tcp", "ringlb.test.", dns.TypeSOA, nil)
		return m.Answer[0].(*dns.SOA).Serial
	}
	transfer := func() time.Time {
		rrs, err := axfr(t, s, "", "")
		if err != nil {
			t.Fatal(err)
		}
		return firstExpiry(rrs)
	}
	held, have := transfer(), serial()
	start := clock.now()
	transfers, expired := 1, 0
	const step = 2 * time.Hour
	for clock.now().Sub(start) < 14*24*time.Hour {
		clock.add(step)
		// The primary's clock moves on by the second, and it looks each
		// minute; here it has looked once the clock has moved.
		waitFor(t, "the NOTIFY loop looked at the clock", func() bool { return s.resignSeen.Load() >= clock.now().UnixNano() })
		if now := serial(); now != have {
			held, have = transfer(), now
			transfers++
		}
		if !clock.now().Before(held) {
			expired++
		}
	}
	t.Logf("two weeks with nothing changed: %d transfers; the secondary held expired signatures for %d of %d refresh checks (%s)",
		transfers, expired, int(14*24*time.Hour/step), time.Duration(expired)*step)
	if expired > 0 {
		t.Errorf("the secondary served expired signatures for %s of two weeks", time.Duration(expired)*step)
	}
}
