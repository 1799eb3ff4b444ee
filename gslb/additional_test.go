package gslb

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// additionalConfig is ringlb.test with the managed name ide (as
// fuzzConfig's) and MX, SRV and NS records whose targets the zone holds
// addresses for: mail (A and AAAA), many (30 A records: more than fit
// beside the answer in 512 bytes), the managed ide, and a name below the
// delegation sub.
func additionalConfig(t *testing.T) configs.GSLB {
	t.Helper()
	records := []string{
		"@ 3600 IN SOA ns1 hostmaster 2026120501 7200 3600 1209600 60",
		"@ 3600 IN NS ns1",
		"ns1 3600 IN A 192.0.2.53",
		"@ 3600 IN MX 10 mail",
		"@ 3600 IN MX 20 mx.sub",
		"mail 3600 IN A 192.0.2.25",
		"mail 3600 IN AAAA 2001:db8::25",
		"_ide._tcp 3600 IN SRV 10 5 443 ide",
		"_mail._tcp 3600 IN SRV 10 5 25 mail",
		"bulk 3600 IN MX 10 many",
		"bulk 3600 IN MX 20 mail",
		"sub 3600 IN NS ns.sub",
		"ns.sub 3600 IN A 192.0.2.153",
		"mx.sub 3600 IN A 192.0.2.154",
	}
	for i := range 30 {
		records = append(records, fmt.Sprintf("many 3600 IN A 198.51.100.%d", i+1))
	}
	cfg := fuzzConfig(t)
	cfg.Zones = slices.Clone(cfg.Zones)
	cfg.Zones[0].File, cfg.Zones[0].Records = "", records
	return cfg
}

// mailSignedExtra is what an MX answer with DO brings in additional for
// mail, as extraOf writes it: its addresses and their signatures.
var mailSignedExtra = []string{"RRSIG mail.ringlb.test. A", "RRSIG mail.ringlb.test. AAAA",
	"mail.ringlb.test. 3600 in a 192.0.2.25", "mail.ringlb.test. 3600 in aaaa 2001:db8::25"}

// checkExtraSigned fails unless every signature in m's additional section
// (an answer over network) is valid at now and verifies, by one of keys,
// over the RRset it covers there.
func checkExtraSigned(t *testing.T, network string, m *dns.Msg, keys []*dns.DNSKEY, now time.Time) {
	t.Helper()
	for _, rr := range m.Extra {
		sig, ok := rr.(*dns.RRSIG)
		if !ok {
			continue
		}
		if !sig.ValidityPeriod(now) {
			t.Errorf("over %s: the signature of %s %s expired at %s, now %s", network, sig.Hdr.Name,
				dns.TypeToString[sig.TypeCovered], time.Unix(int64(sig.Expiration), 0).UTC(), now.UTC())
		}
		set := rrsOf(m.Extra, sig.TypeCovered)
		if !slices.ContainsFunc(keys, func(k *dns.DNSKEY) bool { return k.KeyTag() == sig.KeyTag && sig.Verify(k, set) == nil }) {
			t.Errorf("over %s: %v does not verify over %v", network, sig, set)
		}
	}
}

// extraOf is m's additional section in presentation form, sorted, but for
// the OPT; RRSIGs as "RRSIG <owner> <type covered>".
func extraOf(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Extra {
		switch v := rr.(type) {
		case *dns.OPT:
		case *dns.RRSIG:
			out = append(out, "RRSIG "+strings.ToLower(v.Hdr.Name)+" "+dns.TypeToString[v.TypeCovered])
		default:
			out = append(out, strings.ReplaceAll(strings.ToLower(rr.String()), "\t", " "))
		}
	}
	slices.Sort(out)
	return out
}

// An answer's NS, MX and SRV records bring the addresses the zone holds for
// their targets in additional (RFC 1034 3.7, RFC 2782), as NSD adds them:
// none for a traffic-managed target (its answer is the asker's region's),
// nor for an MX target below a cut; glue for an NS target. Before, the
// additional section of these answers was empty.
func TestAdditionalSectionAddresses(t *testing.T) {
	s := startGSLB(t, additionalConfig(t))
	mail := []string{"mail.ringlb.test. 3600 in a 192.0.2.25", "mail.ringlb.test. 3600 in aaaa 2001:db8::25"}
	for _, tc := range []struct {
		name  string
		qtype uint16
		want  []string
	}{
		{"ringlb.test.", dns.TypeMX, mail},
		{"ringlb.test.", dns.TypeNS, []string{"ns1.ringlb.test. 3600 in a 192.0.2.53"}},
		{"_mail._tcp.ringlb.test.", dns.TypeSRV, mail},
		{"_ide._tcp.ringlb.test.", dns.TypeSRV, nil},
		{"ringlb.test.", dns.TypeA, nil},
	} {
		for _, network := range []string{"udp", "tcp"} {
			m := query(t, s, network, tc.name, tc.qtype, nil)
			if m.Rcode != dns.RcodeSuccess || len(m.Answer) == 0 && tc.qtype != dns.TypeA {
				t.Fatalf("%s %s over %s: %v", tc.name, dns.TypeToString[tc.qtype], network, m)
			}
			if got := extraOf(m); !slices.Equal(got, tc.want) {
				t.Errorf("%s %s over %s: additional\n%s\nwant\n%s", tc.name, dns.TypeToString[tc.qtype], network,
					strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		}
	}
}

// Additional records are optional: over UDP, those that do not fit are
// left out, RRset by RRset, and TC stays clear (the answer is complete);
// over TCP they all come.
func TestAdditionalRecordsDroppedWithoutTC(t *testing.T) {
	s := startGSLB(t, additionalConfig(t))
	// many's 30 A records (480 bytes) do not fit beside the answer in 512
	// bytes; mail's A, after them, does; mail's AAAA, of the next type, is
	// left out as NSD leaves it out (fitExtra).
	m := query(t, s, "udp", "bulk.ringlb.test.", dns.TypeMX, nil)
	if m.Truncated || len(m.Answer) != 2 {
		t.Fatalf("UDP, no EDNS: TC %v, %d answers, want no TC and 2:\n%v", m.Truncated, len(m.Answer), m)
	}
	if got, want := extraOf(m), []string{"mail.ringlb.test. 3600 in a 192.0.2.25"}; !slices.Equal(got, want) {
		t.Errorf("UDP, no EDNS: additional\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	m = query(t, s, "tcp", "bulk.ringlb.test.", dns.TypeMX, nil)
	if got := len(extraOf(m)); m.Truncated || got != 32 {
		t.Errorf("TCP: TC %v, %d additional records, want no TC and 32:\n%v", m.Truncated, got, m)
	}
}

// With DO, a signed zone's additional records carry their signatures (RFC
// 4035 3.1.1), and the signatures verify; without DO, none.
func TestSignedAdditionalRecords(t *testing.T) {
	ksk, zsk := testKeys(t)
	s := startGSLB(t, signed(additionalConfig(t), ksk, zsk))
	keys := dnskeys(t, s)
	for _, network := range []string{"udp", "tcp"} {
		m := query(t, s, network, "ringlb.test.", dns.TypeMX, withDO(false))
		want := mailSignedExtra
		if got := extraOf(m); !slices.Equal(got, want) {
			t.Fatalf("over %s with DO: additional\n%s\nwant\n%s", network, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		checkExtraSigned(t, network, m, keys, time.Now())
		m = query(t, s, network, "ringlb.test.", dns.TypeMX, nil)
		if got := extraOf(m); len(got) != 2 {
			t.Errorf("over %s without DO: additional %v, want mail's A and AAAA only", network, got)
		}
	}
}

// Over UDP with the signature budget spent, an answer whose own RRsets
// need new signatures goes out TC and empty — its additional records too,
// which were unsigned then — and one whose RRsets are signed already loses
// only the additional records it cannot sign, without TC, and is not kept
// in the UDP loops' cache: once the budget has refilled, the same query
// gets them, signed.
func TestAdditionalRecordsWhenTheSignatureBudgetIsSpent(t *testing.T) {
	ksk, zsk := testKeys(t)
	cfg := signed(additionalConfig(t), ksk, zsk)
	cfg.Zones[0].DNSSEC.SignaturesPerSecond = 100
	clock := newTestClock()
	s := startGSLBWith(t, cfg, clock.use) // the budget refills only when the clock moves
	st := s.state.Load()
	sg := st.zones[0].signer
	// The apex MX RRset signed beforehand (as by a transfer), not the
	// addresses of its target.
	if _, err := sg.sigs(st.zones[0].names["ringlb.test."][dns.TypeMX], spendNone, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if m, _ := exchangeSized(t, s, "udp", doQuestion(fmt.Sprintf("r%05d.nope.ringlb.test.", i))); m.Truncated {
			break
		}
		if i > 1000 {
			t.Fatal("the signature budget is never spent")
		}
	}
	mxQuestion := func(name string) *dns.Msg {
		q := question(name, dns.TypeMX, 1232)
		q.IsEdns0().SetDo()
		return q
	}
	// bulk's MX RRset has no signature yet: deferred.
	m, _ := exchangeSized(t, s, "udp", mxQuestion("bulk.ringlb.test."))
	if !m.Truncated || len(m.Answer)+len(m.Ns)+len(extraOf(m)) != 0 {
		t.Errorf("an MX answer to sign over a spent budget: want TC and no records, got\n%v", m)
	}
	m, _ = exchangeSized(t, s, "udp", mxQuestion("ringlb.test."))
	if m.Truncated || len(rrsOf(m.Answer, dns.TypeRRSIG)) == 0 || len(extraOf(m)) != 0 {
		t.Errorf("an MX answer signed already, over a spent budget: want it signed, no additional records and no TC, got\n%v", m)
	}
	clock.add(time.Second)
	want := mailSignedExtra
	for i := range 8 { // whichever UDP loop reads it
		m, _ = exchangeSized(t, s, "udp", mxQuestion("ringlb.test."))
		if got := extraOf(m); !slices.Equal(got, want) {
			t.Fatalf("query %d once the budget refilled: additional\n%s\nwant\n%s", i, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

// The UDP loops' cache keeps a signed answer no longer than its additional
// records' signatures are fresh, not only its answer's: mail's addresses
// signed days before the MX RRset, the cached MX answer served their
// signatures past their expiration (a validator finds them bogus) until
// the MX signature's own refresh, days later. Over TCP they were fresh.
func TestCachedAnswerServesNoStaleAdditionalSignature(t *testing.T) {
	ksk, zsk := testKeys(t)
	cfg := signed(additionalConfig(t), ksk, zsk)
	cfg.UDPWorkers = 1 // one loop, one cache
	clock := newTestClock()
	s := startGSLBWith(t, cfg, clock.use)
	keys := dnskeys(t, s)
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		query(t, s, "tcp", "mail.ringlb.test.", qtype, withDO(false)) // signed now
	}
	validity, refresh := 168*time.Hour, 72*time.Hour
	// Just before mail's refresh point the MX RRset is signed afresh and
	// the answer, with mail's signatures from the cache, kept.
	clock.add(validity - refresh - time.Hour)
	query(t, s, "udp", "ringlb.test.", dns.TypeMX, withDO(false))
	clock.add(refresh + 2*time.Hour) // mail's first signatures have expired
	for _, network := range []string{"udp", "tcp"} {
		m := query(t, s, network, "ringlb.test.", dns.TypeMX, withDO(false))
		want := mailSignedExtra
		if got := extraOf(m); !slices.Equal(got, want) {
			t.Fatalf("over %s: additional\n%s\nwant\n%s", network, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		checkExtraSigned(t, network, m, keys, clock.now())
	}
}
