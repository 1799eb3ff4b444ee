package gslb

import (
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// A query for type RRSIG in a signed zone. An online signer has no RRSIG
// RRset to give (it signs what an answer holds, as it answers), and the
// NODATA it gave instead could not be proved: the NSEC of a signed name
// lists RRSIG, so the proof contradicted the answer and validators called
// it bogus. It is refused, as Knot's online signing refuses it (REFUSED, AA
// clear, nothing signed), with DO or without; an unsigned zone still says
// NODATA, which is true there.
func TestRRSIGQueryInSignedZone(t *testing.T) {
	ksk, zsk := testKeys(t)
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	cfg := gslbConfig(t, east, west, "")
	s := startGSLB(t, signed(cfg, ksk, zsk))
	names := []string{"www.ringlb.test.", "ide.ringlb.test.", "nope.ringlb.test."}
	refused, asked := 0, 0
	for _, name := range names {
		for _, network := range []string{"udp", "tcp"} {
			for _, do := range []bool{true, false} {
				edit := withDO(false)
				if !do {
					edit = func(m *dns.Msg) { m.SetEdns0(1232, false) }
				}
				m := query(t, s, network, name, dns.TypeRRSIG, edit)
				asked++
				if m.Rcode == dns.RcodeRefused && !m.Authoritative && len(m.Answer)+len(m.Ns) == 0 {
					refused++
					continue
				}
				t.Errorf("%s %s RRSIG (DO %v): %s, AA %v, %d answers, %d in authority; want REFUSED, no AA, nothing",
					network, name, do, dns.RcodeToString[m.Rcode], m.Authoritative, len(m.Answer), len(m.Ns))
			}
		}
	}
	t.Logf("RRSIG queries in the signed zone refused: %d of %d", refused, asked)

	// A validator is told no, rather than handed a proof it calls bogus
	// (before: "insecurity proof failed" for each of the three names).
	key, _, err := configs.ReadDNSSECKey(ksk, "ringlb.test")
	if err != nil {
		t.Fatal(err)
	}
	bogus := 0
	for _, name := range names {
		out := delvRun(t, s, key, "127.0.0.1", name, "RRSIG")
		if strings.Contains(out, "insecurity proof failed") || strings.Contains(out, "bogus") || strings.Contains(out, "no valid") {
			bogus++
			t.Errorf("delv rejects the answer to %s RRSIG:\n%s", name, out)
		} else {
			t.Logf("delv %s RRSIG: %s", name, firstLine(out))
		}
	}
	t.Logf("answers delv rejected: %d of %d", bogus, len(names))

	// The zone unsigned: NODATA, as before.
	plain := startGSLB(t, cfg)
	if m := query(t, plain, "udp", "www.ringlb.test.", dns.TypeRRSIG, withDO(false)); m.Rcode != dns.RcodeSuccess || !m.Authoritative || len(m.Answer) != 0 || len(m.Ns) != 1 {
		t.Errorf("unsigned zone, RRSIG query: %v", m)
	}
}
