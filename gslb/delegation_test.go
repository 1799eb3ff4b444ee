package gslb

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// delegationZone is ringlb.test with delegations: sub (its name server
// inside it, with glue), secure (a DS), wide (twelve name servers inside
// it, whose glue fills more than 512 bytes), and a CNAME into sub.
func delegationConfig(t *testing.T) configs.GSLB {
	t.Helper()
	records := []string{
		"@ 3600 IN SOA ns1 hostmaster 2026120501 7200 3600 1209600 60",
		"@ 3600 IN NS ns1",
		"ns1 3600 IN A 192.0.2.53",
		"www 3600 IN A 192.0.2.80",
		"sub 3600 IN NS ns.sub",
		"ns.sub 3600 IN A 192.0.2.153",
		"ns.sub 3600 IN AAAA 2001:db8::153",
		"to-sub 3600 IN CNAME host.sub",
		"secure 3600 IN NS ns1",
		"secure 3600 IN DS 12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
	}
	for i := range 12 {
		records = append(records,
			fmt.Sprintf("wide 3600 IN NS a-rather-long-name-server-name-%02d.wide", i),
			fmt.Sprintf("a-rather-long-name-server-name-%02d.wide 3600 IN A 192.0.2.%d", i, 100+i),
			fmt.Sprintf("a-rather-long-name-server-name-%02d.wide 3600 IN AAAA 2001:db8::%d", i, 100+i))
	}
	quoted := make([]string, len(records))
	for i, r := range records {
		quoted[i] = fmt.Sprintf("%q", r)
	}
	return parseGSLBYAML(t, fmt.Sprintf("gslb:\n  listen: 127.0.0.1:0\n  rate_limit: { responses_per_second: 0 }\n  zones: [ { origin: ringlb.test, records: [ %s ] } ]\n", strings.Join(quoted, ", ")))
}

// rrsOf returns the records of sec of type t.
func rrsOf(sec []dns.RR, t uint16) []dns.RR {
	var out []dns.RR
	for _, rr := range sec {
		if rr.Header().Rrtype == t {
			out = append(out, rr)
		}
	}
	return out
}

// A name at or below an NS RRset under the apex is the child zone's: it is
// answered with a referral — no AA, the cut's NS RRset in authority, its
// name servers' glue in additional — where it was answered from the zone,
// authoritatively, and a name below the cut was NXDOMAIN. The cut's DS is
// the parent's, answered authoritatively; a CNAME into the child keeps its
// answer and adds the referral.
func TestDelegationsAreReferred(t *testing.T) {
	s := startGSLB(t, delegationConfig(t))
	for _, network := range []string{"udp", "tcp"} {
		for _, name := range []string{"sub.ringlb.test.", "host.sub.ringlb.test.", "ns.sub.ringlb.test.", "deep.host.SUB.ringlb.test."} {
			m := query(t, s, network, name, dns.TypeA, nil)
			if m.Rcode != dns.RcodeSuccess || m.Authoritative || len(m.Answer) != 0 {
				t.Fatalf("%s %s A: rcode %s, aa %v, %d answers; want a referral\n%v", network, name, dns.RcodeToString[m.Rcode], m.Authoritative, len(m.Answer), m)
			}
			// Names in any case: over UDP those below the question's
			// point into it, and read as asked.
			if ns := rrsOf(m.Ns, dns.TypeNS); len(ns) != 1 || !strings.EqualFold(ns[0].Header().Name, "sub.ringlb.test.") || !strings.EqualFold(ns[0].(*dns.NS).Ns, "ns.sub.ringlb.test.") {
				t.Fatalf("%s %s A: authority %v, want sub's NS", network, name, m.Ns)
			}
			if len(rrsOf(m.Extra, dns.TypeA)) != 1 || len(rrsOf(m.Extra, dns.TypeAAAA)) != 1 {
				t.Fatalf("%s %s A: additional %v, want ns.sub's A and AAAA", network, name, m.Extra)
			}
		}
		m := query(t, s, network, "sub.ringlb.test.", dns.TypeDS, nil)
		if !m.Authoritative || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 0 || len(rrsOf(m.Ns, dns.TypeSOA)) != 1 {
			t.Fatalf("%s sub DS: %v, want an authoritative NODATA", network, m)
		}
		m = query(t, s, network, "secure.ringlb.test.", dns.TypeDS, nil)
		if !m.Authoritative || len(rrsOf(m.Answer, dns.TypeDS)) != 1 {
			t.Fatalf("%s secure DS: %v, want its DS, authoritatively", network, m)
		}
		m = query(t, s, network, "to-sub.ringlb.test.", dns.TypeA, nil)
		if !m.Authoritative || len(rrsOf(m.Answer, dns.TypeCNAME)) != 1 || len(rrsOf(m.Ns, dns.TypeNS)) != 1 || len(rrsOf(m.Ns, dns.TypeSOA)) != 0 {
			t.Fatalf("%s to-sub A: %v, want the CNAME and sub's referral", network, m)
		}
		// Above and beside the cuts, the zone answers as before.
		if m := query(t, s, network, "www.ringlb.test.", dns.TypeA, nil); !m.Authoritative || len(m.Answer) != 1 {
			t.Fatalf("%s www A: %v", network, m)
		}
	}
}

// Over UDP a referral that cannot carry the glue of its name servers inside
// the child (RFC 9471) is truncated, so the resolver asks over TCP, where
// it is whole; glue the resolver can do without is dropped silently.
func TestReferralWithoutItsGlueIsTruncated(t *testing.T) {
	s := startGSLB(t, delegationConfig(t))
	m := query(t, s, "udp", "host.wide.ringlb.test.", dns.TypeA, nil) // no EDNS: 512 bytes
	if !m.Truncated {
		t.Fatalf("a 512-byte referral to wide, which has 24 glue records: TC clear, %d glue kept\n%v", len(m.Extra), m)
	}
	m = query(t, s, "tcp", "host.wide.ringlb.test.", dns.TypeA, nil)
	if m.Truncated || len(rrsOf(m.Ns, dns.TypeNS)) != 12 || len(m.Extra) != 24 {
		t.Fatalf("over TCP: TC %v, %d NS, %d glue; want 12 and 24\n%v", m.Truncated, len(rrsOf(m.Ns, dns.TypeNS)), len(m.Extra), m)
	}
	if m := query(t, s, "udp", "host.sub.ringlb.test.", dns.TypeA, nil); m.Truncated {
		t.Fatalf("a referral whose glue fits: TC set\n%v", m)
	}
}

// In a signed zone a referral asked with DO carries the cut's DS RRset or
// the NSEC proving it has none (NS, no DS: an insecure delegation), signed;
// the NS RRset and glue are the child's and go unsigned (RFC 4035 3.1.4).
func TestSignedReferrals(t *testing.T) {
	ksk, zsk := testKeys(t)
	s := startGSLB(t, signed(delegationConfig(t), ksk, zsk))
	keys := dnskeys(t, s)
	for _, network := range []string{"udp", "tcp"} {
		m := query(t, s, network, "host.sub.ringlb.test.", dns.TypeA, withDO(false))
		if m.Authoritative || len(m.Answer) != 0 || len(rrsOf(m.Ns, dns.TypeNS)) != 1 {
			t.Fatalf("%s: %v, want a referral", network, m)
		}
		for _, sig := range rrsOf(m.Ns, dns.TypeRRSIG) {
			if c := sig.(*dns.RRSIG).TypeCovered; c == dns.TypeNS {
				t.Fatalf("%s: the child's NS RRset signed by the parent\n%v", network, m)
			}
		}
		nsec := nsecOf(m)
		if nsec == nil || nsec.Hdr.Name != "sub.ringlb.test." || !slices.Equal(nsec.TypeBitMap, []uint16{dns.TypeNS, dns.TypeRRSIG, dns.TypeNSEC}) {
			t.Fatalf("%s: NSEC %v, want sub's with NS RRSIG NSEC (no DS)", network, nsec)
		}
		checkSigned(t, &dns.Msg{Ns: withoutType(m.Ns, dns.TypeNS)}, keys)

		m = query(t, s, network, "host.secure.ringlb.test.", dns.TypeA, withDO(false))
		if m.Authoritative || len(rrsOf(m.Ns, dns.TypeNS)) != 1 || len(rrsOf(m.Ns, dns.TypeDS)) != 1 || nsecOf(m) != nil {
			t.Fatalf("%s: %v, want a referral with secure's DS", network, m)
		}
		checkSigned(t, &dns.Msg{Ns: withoutType(m.Ns, dns.TypeNS)}, keys)

		// Without DO: the unsigned referral.
		m = query(t, s, network, "host.sub.ringlb.test.", dns.TypeA, nil)
		if len(m.Ns) != 1 || len(rrsOf(m.Ns, dns.TypeNS)) != 1 {
			t.Fatalf("%s without DO: authority %v, want sub's NS alone", network, m.Ns)
		}
	}
}

// withoutType returns sec less its records of type t.
func withoutType(sec []dns.RR, t uint16) []dns.RR {
	var out []dns.RR
	for _, rr := range sec {
		if rr.Header().Rrtype != t {
			out = append(out, rr)
		}
	}
	return out
}

// A traffic-managed name at or below a delegation of its zone is refused
// when the config is loaded — at start and on reload — with the zone's
// file, the name and the cut: the names there are the child zone's, whose
// name servers answer for them (NSD's nsd-checkzone and Knot take data
// below a cut as occluded). Before, it was served as managed, ahead of the
// referral, so this server and the child's contradicted each other.
func TestManagedNameBelowACutRefused(t *testing.T) {
	file, err := filepath.Abs("testdata/ringlb.test.zone") // holds the cut deleg
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ide.deleg.ringlb.test.", "deleg.ringlb.test.", "a.b.deleg.ringlb.test."} {
		cfg := fuzzConfig(t)
		cfg.Zones = slices.Clone(cfg.Zones)
		cfg.Zones[0].File = file
		cfg.Names = slices.Clone(cfg.Names)
		cfg.Names[0].Name = name
		_, err := New(cfg, "gslb-test", nil, nil)
		if err == nil {
			t.Fatalf("%s: loaded, want an error", name)
		}
		for _, want := range []string{"gslb.names[0].name", name, "deleg.ringlb.test.", file} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not name %q", name, err, want)
			}
		}
		// A reload to it changes nothing: the managed name stays.
		s := startGSLB(t, fuzzConfig(t))
		if err := s.Reload(cfg); err == nil {
			t.Errorf("%s: reload succeeded, want an error", name)
		}
		if m := query(t, s, "udp", "ide.ringlb.test.", dns.TypeA, nil); len(m.Answer) == 0 {
			t.Errorf("%s: after the refused reload, ide.ringlb.test. is not answered:\n%v", name, m)
		}
		if m := query(t, s, "udp", name, dns.TypeA, nil); m.Authoritative {
			t.Errorf("%s: answered authoritatively after the refused reload:\n%v", name, m)
		}
	}
	// Inline records are checked alike, named as such: the problem is the
	// managed name's, where the config file has it (gslb.yaml, parsed by
	// fuzzConfig), and names the zone's records.
	cfg := fuzzConfig(t)
	cfg.Zones = slices.Clone(cfg.Zones)
	cfg.Zones[0].File = ""
	cfg.Zones[0].Records = []string{"@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "@ 3600 IN NS ns1", "ide 3600 IN NS ns.elsewhere.example."}
	if _, err := New(cfg, "gslb-test", nil, nil); err == nil || !strings.Contains(err.Error(), "gslb.yaml:9: gslb.names[0].name: ide.ringlb.test. is at or below the delegation") ||
		!strings.Contains(err.Error(), "(its NS records in gslb.yaml:5, gslb.zones[0].records)") {
		t.Errorf("a managed name at a cut of inline records: error %v, want one naming the name and the records", err)
	}
}

// treeParent, treeChild, treeNoDS and treeDeep are four zones of one tree
// served together: parent.test, delegating child (with a DS, its name
// server's glue beside it) and nods (no DS: an insecure delegation) to
// zones this server serves too, deep to another server, below which
// a.deep.parent.test is served here all the same, and esc, a delegation to
// a name server written with an escape. Its names written with \DDD escapes, and targets spelling
// them otherwise, are zone_error_test.go's (TestEscapedNamesAnswered).
var treeParent = `$ORIGIN parent.test.
$TTL 3600
@          IN SOA   ns1 hostmaster 1 7200 3600 1209600 300
@          IN NS    ns1
ns1        IN A     192.0.2.53
child      IN NS    ns1.child
child      IN DS    12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
ns1.child  IN A     192.0.2.54
nods       IN NS    ns1
deep       IN NS    ns.elsewhere.example.
www        IN A     192.0.2.80
sp\032ace  IN A     192.0.2.90
dot\046ted IN A     192.0.2.91
\066ig     IN A     192.0.2.92
to-sp      IN CNAME sp\ ace
to-big     IN CNAME \066IG
mx         IN MX    10 sp\ ace
mx         IN MX    20 BIG
esc        IN NS    ns\ x.esc
ns\032x.esc IN A    192.0.2.93
`

var treeChild = `$ORIGIN child.parent.test.
$TTL 3600
@          IN SOA   ns1 hostmaster 7 7200 3600 1209600 600
@          IN NS    ns1
ns1        IN A     192.0.2.54
www        IN A     192.0.2.81
`

var treeNoDS = `$ORIGIN nods.parent.test.
$TTL 3600
@          IN SOA   ns1.parent.test. hostmaster 9 7200 3600 1209600 600
@          IN NS    ns1.parent.test.
www        IN A     192.0.2.82
`

var treeDeep = `$ORIGIN a.deep.parent.test.
$TTL 3600
@          IN SOA   ns1.parent.test. hostmaster 3 7200 3600 1209600 600
@          IN NS    ns1.parent.test.
`

// treeZones writes the tree's zone files (and extra's, origin: text) and
// returns them by origin, as startNSD and startKnot take them.
func treeZones(t *testing.T, extra map[string]string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	texts := map[string]string{"parent.test": treeParent, "child.parent.test": treeChild, "nods.parent.test": treeNoDS, "a.deep.parent.test": treeDeep}
	maps.Copy(texts, extra)
	zones := map[string]string{}
	for origin, text := range texts {
		zones[origin] = filepath.Join(dir, origin+".zone")
		if err := os.WriteFile(zones[origin], []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return zones
}

// treeConfig serves zones (treeZones), those of origins only when given,
// rate limiting off, each zone of keys (origin: key files) signed with its
// keys.
func treeConfig(t *testing.T, zones map[string]string, keys map[string][]string, origins ...string) configs.GSLB {
	t.Helper()
	if len(origins) == 0 {
		origins = slices.Sorted(maps.Keys(zones))
	}
	y := "gslb:\n  listen: 127.0.0.1:0\n  rate_limit: { responses_per_second: 0 }\n  zones:\n"
	for _, o := range origins {
		y += fmt.Sprintf("    - { origin: %s, file: %q }\n", o, zones[o])
	}
	cfg := parseGSLBYAML(t, y)
	for i := range cfg.Zones {
		if k := keys[strings.TrimSuffix(cfg.Zones[i].Origin, ".")]; k != nil {
			cfg.Zones[i].DNSSEC = configs.DefaultDNSSEC(k...)
		}
	}
	return cfg
}

// With the parent and the child zone served here, a DS query for the
// child's apex is answered from the parent (RFC 4035 3.1.4.1: the DS RRset
// is the parent's data; the child has none), as NSD and Knot answer it
// (TestTreeOfZonesAgainstNSDAndKnot): the parent's DS RRset, AA, or for a
// cut without DS the parent's NODATA and SOA. Before, the zone with the
// longest origin answered every type, and the child's NODATA with its SOA
// told a resolver the delegation has no DS. A zone served here below a cut
// of the parent's (a.deep, below deep) gets the parent's referral to deep,
// as NSD and Knot answer, and an RRL slip for it claims no authority, as
// that referral (it was the child's NODATA, AA, and its slip AA). Every
// other question at or below a child's apex is the child's; served alone,
// the child answers its DS query (no parent to ask). The UDP cache keeps
// the answer as made.
func TestDSAtAChildZonesApexIsAnsweredFromTheParent(t *testing.T) {
	zones := treeZones(t, nil)
	s := startGSLB(t, treeConfig(t, zones, nil))
	for _, network := range []string{"udp", "tcp"} {
		// Over UDP twice: the second from the loop's cache.
		for range 2 {
			m := query(t, s, network, "child.parent.test.", dns.TypeDS, nil)
			if m.Rcode != dns.RcodeSuccess || !m.Authoritative || len(m.Answer) != 1 || m.Answer[0].Header().Rrtype != dns.TypeDS {
				t.Errorf("%s child.parent.test. DS: want the parent's DS RRset, AA; got\n%v", network, m)
			}
			m = query(t, s, network, "nods.parent.test.", dns.TypeDS, nil)
			if m.Rcode != dns.RcodeSuccess || !m.Authoritative || len(m.Answer) != 0 || len(m.Ns) != 1 || !strings.EqualFold(m.Ns[0].Header().Name, "parent.test.") {
				t.Errorf("%s nods.parent.test. DS (a cut without DS): want the parent's NODATA, parent.test.'s SOA; got\n%v", network, m)
			}
		}
		for _, c := range []struct {
			name  string
			qtype uint16
			rcode int
		}{
			{"child.parent.test.", dns.TypeSOA, dns.RcodeSuccess},
			{"child.parent.test.", dns.TypeNS, dns.RcodeSuccess},
			{"CHILD.parent.test.", dns.TypeNS, dns.RcodeSuccess},
			{"www.child.parent.test.", dns.TypeDS, dns.RcodeSuccess},
			{"x.child.parent.test.", dns.TypeDS, dns.RcodeNameError},
		} {
			m := query(t, s, network, c.name, c.qtype, nil)
			soa := rrsOf(append(m.Answer, m.Ns...), dns.TypeSOA)
			if m.Rcode != c.rcode || !m.Authoritative || len(rrsOf(m.Answer, c.qtype))+len(soa) == 0 ||
				len(soa) > 0 && !strings.EqualFold(soa[0].Header().Name, "child.parent.test.") || len(m.Answer) > 0 && !strings.EqualFold(m.Answer[0].Header().Name, c.name) {
				t.Errorf("%s %s %s: want the child's answer, %s, AA; got\n%v", network, c.name, dns.TypeToString[c.qtype], dns.RcodeToString[c.rcode], m)
			}
		}
	}

	// Below a cut of the parent's: its referral, full answer and slip.
	cfg := treeConfig(t, zones, nil)
	slip := 1
	cfg.RateLimit.ResponsesPerSecond, cfg.RateLimit.Slip, cfg.RateLimit.IPv4Prefix = new(1), &slip, 32
	limited := startGSLB(t, cfg)
	for i, name := range []string{"a.deep.parent.test.", "A.Deep.Parent.Test.", "child.parent.test."} {
		m := new(dns.Msg).SetQuestion(name, dns.TypeDS)
		q, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		full, slips := fullThenSlips(t, limited, fmt.Sprintf("127.0.0.%d", 20+i), q)
		referral := full.Authoritative == false && len(rrsOf(full.Ns, dns.TypeNS)) == 1 && strings.EqualFold(full.Ns[0].Header().Name, "deep.parent.test.")
		if want := name != "child.parent.test."; full.Rcode != dns.RcodeSuccess || referral != want || full.Authoritative == want {
			t.Errorf("%s DS: want %s; got\n%v", name, map[bool]string{true: "the parent's referral to deep", false: "the parent's DS, AA"}[want], full)
		}
		for _, r := range slips {
			if r.Rcode != full.Rcode || r.Authoritative != full.Authoritative {
				t.Errorf("%s DS: a slip %s, AA %v; the full answer %s, AA %v", name, dns.RcodeToString[r.Rcode], r.Authoritative, dns.RcodeToString[full.Rcode], full.Authoritative)
			}
		}
	}

	// The child alone: its apex's DS is its own NODATA, as before.
	alone := startGSLB(t, treeConfig(t, zones, nil, "child.parent.test"))
	m := query(t, alone, "udp", "child.parent.test.", dns.TypeDS, nil)
	if m.Rcode != dns.RcodeSuccess || !m.Authoritative || len(m.Answer) != 0 || len(m.Ns) != 1 || !strings.EqualFold(m.Ns[0].Header().Name, "child.parent.test.") {
		t.Errorf("child.parent.test. DS, the child served alone: want its NODATA; got\n%v", m)
	}
}

// The same with the parent signed and nods unsigned (an insecure
// delegation): a validator trusting parent.test. asks this server for
// nods's DS, must be proved there is none by the parent's signed NSEC,
// and takes the child's unsigned answers. Before, it got the child's
// unsigned NODATA, called the delegation bogus, and every name of the
// child failed to resolve (delv: "broken trust chain"). delv, when
// installed, is the validator.
func TestSignedParentsInsecureChildResolves(t *testing.T) {
	ksk, zsk := testKeysFor(t, "parent.test")
	s := startGSLB(t, treeConfig(t, treeZones(t, nil), map[string][]string{"parent.test": {ksk, zsk}}))
	anchor, _, err := configs.ReadDNSSECKey(ksk, "parent.test")
	if err != nil {
		t.Fatal(err)
	}
	d := newDelv(t, s, anchor)
	// The parent's own names validate: the anchor and signatures are right.
	validated(t, d.run("127.0.0.1", "www.parent.test", "A"), false, "192.0.2.80")
	out := d.run("127.0.0.1", "www.nods.parent.test", "A")
	if !strings.Contains(out, "; unsigned answer") || !strings.Contains(out, "192.0.2.82") {
		t.Errorf("www.nods.parent.test A (an insecure delegation of the signed parent.test.): want an unsigned answer, 192.0.2.82; delv says:\n%s", out)
	}
}
