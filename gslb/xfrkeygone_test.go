package gslb

import (
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// A reload that takes the zone's key away while a signed transfer request
// is between its check and its first message ends the transfer: a request
// that came signed is never answered unsigned. Before, the zone went out
// without a TSIG, and a secondary that accepts an unsigned message when
// it asked signed (miekg/dns's does) took it.
func TestTransferEndsWhenItsKeyGoesWithAReload(t *testing.T) {
	signed := withTransfer(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""), configs.Transfer{Allow: []string{"127.0.0.1/32"}, TSIG: tsigConfig(t)})
	s := startGSLB(t, signed)
	z := s.state.Load().zoneFor("ringlb.test.")
	// Held, the zone's transfer cache stops the request past its checks,
	// before the transfer is built and signed.
	z.xfr.mu.Lock()
	m := new(dns.Msg)
	m.SetAxfr("ringlb.test.")
	m.SetTsig("xfr.ringlb.test.", dns.HmacSHA256, 300, time.Now().Unix())
	req, _, err := dns.TsigGenerate(m, testTSIGSecret, "", false)
	if err != nil {
		z.xfr.mu.Unlock()
		t.Fatal(err)
	}
	co, err := dns.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		z.xfr.mu.Unlock()
		t.Fatal(err)
	}
	defer co.Close()
	co.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := co.Write(req); err != nil {
		z.xfr.mu.Unlock()
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); len(s.transfersOut) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			z.xfr.mu.Unlock()
			t.Fatal("the transfer never started")
		}
	}
	unsigned := withTransfer(t, signed, configs.Transfer{Allow: []string{"127.0.0.1/32"}})
	err = s.Reload(unsigned)
	z.xfr.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	// Read as bytes: a client may take an unsigned message for the answer
	// to its signed request.
	p, err := co.ReadMsgHeader(nil)
	if err == nil {
		a := new(dns.Msg)
		if err := a.Unpack(p); err != nil {
			t.Fatal(err)
		}
		t.Fatalf("signed request answered %s with %d records, TSIG %v; want the transfer ended", dns.RcodeToString[a.Rcode], len(a.Answer), a.IsTsig())
	}
	t.Logf("transfer ended: %v", err)
}
