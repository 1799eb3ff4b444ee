package gslb

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/ringlb/ringlb/configs"
)

// TestCDClearedInEveryAnswer: CD is a resolver's bit; an authoritative
// server clears it in its answers (RFC 4035 3.1.6), as NSD and Knot do.
// Validators set it in every query they send (RFC 6840 5.9). ringlb
// copied it, through miekg/dns's SetReply and the UDP cache's patching:
// each way an answer is made here, cached or not, refused, a transfer.
// (A rate-limited slip: TestTruncatedReply.)
func TestCDClearedInEveryAnswer(t *testing.T) {
	s := startGSLB(t, withTransfer(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""),
		configs.Transfer{Allow: []string{"127.0.0.0/8"}}))
	cd := func(m *dns.Msg) { m.CheckingDisabled = true }
	for _, c := range []struct {
		what, network, name string
		qtype               uint16
		edit                func(*dns.Msg)
	}{
		{"an answer", "udp", "www.ringlb.test.", dns.TypeA, cd},
		{"the same answer, from the UDP cache", "udp", "www.ringlb.test.", dns.TypeA, cd},
		{"over TCP", "tcp", "www.ringlb.test.", dns.TypeA, cd},
		{"NXDOMAIN", "udp", "nope.ringlb.test.", dns.TypeA, cd},
		{"a managed name", "udp", "ide.ringlb.test.", dns.TypeA, cd},
		{"DO", "udp", "www.ringlb.test.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(1232, true); cd(m) }},
		{"another zone (REFUSED)", "udp", "example.org.", dns.TypeA, cd},
		{"AXFR over UDP (NOTIMP)", "udp", "ringlb.test.", dns.TypeAXFR, cd},
		{"BADVERS", "udp", "www.ringlb.test.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(1232, false); m.IsEdns0().SetVersion(1); cd(m) }},
		{"two OPT records (FORMERR)", "udp", "www.ringlb.test.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(1232, false); m.SetEdns0(1232, false); cd(m) }},
		{"two OPT records over TCP (FORMERR)", "tcp", "www.ringlb.test.", dns.TypeA, func(m *dns.Msg) {
			m.SetEdns0(1232, false)
			m.Extra = append(m.Extra, m.Extra[0])
			cd(m)
		}},
	} {
		r := query(t, s, c.network, c.name, c.qtype, c.edit)
		if r.CheckingDisabled {
			t.Errorf("%s (%s %s over %s): CD set in the answer (rcode %s)", c.what, c.name, dns.TypeToString[c.qtype], c.network, dns.RcodeToString[r.Rcode])
		}
	}
	// Zone transfers: every message, and a refusal.
	for _, name := range []string{"ringlb.test.", "nope.ringlb.test."} {
		conn, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		co := &dns.Conn{Conn: conn}
		m := new(dns.Msg).SetAxfr(name)
		m.CheckingDisabled = true
		if err := co.WriteMsg(m); err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		for soas := 0; soas < 2; {
			r, err := co.ReadMsg()
			if err != nil {
				t.Fatalf("AXFR %s: %v", name, err)
			}
			if r.CheckingDisabled {
				t.Errorf("AXFR %s: CD set in a message (rcode %s)", name, dns.RcodeToString[r.Rcode])
			}
			if r.Rcode != dns.RcodeSuccess {
				break
			}
			for _, rr := range r.Answer {
				if rr.Header().Rrtype == dns.TypeSOA {
					soas++
				}
			}
		}
	}
}
