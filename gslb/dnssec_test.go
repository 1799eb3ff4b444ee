package gslb

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// testClock is a clock tests move; signers read it from the goroutines
// that answer.
type testClock struct{ ns atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}

func (c *testClock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *testClock) add(d time.Duration) { c.ns.Add(int64(d)) }

// use makes every signer of s, and its UDP loops' cache of signed answers,
// read the clock (before s starts).
func (c *testClock) use(s *Server) {
	s.now = c.now
	for _, z := range s.state.Load().zones {
		if z.signer != nil {
			z.signer.now = c.now
		}
	}
}

// testKeys makes a KSK and a ZSK for ringlb.test in a temporary directory.
func testKeys(t testing.TB) (ksk, zsk string) {
	t.Helper()
	return testKeysFor(t, "ringlb.test")
}

// testKeysFor is testKeys for the zone origin.
func testKeysFor(t testing.TB, origin string) (ksk, zsk string) {
	t.Helper()
	dir := t.TempDir()
	var err error
	if ksk, _, err = configs.GenerateDNSSECKey(dir, origin, true); err != nil {
		t.Fatal(err)
	}
	if zsk, _, err = configs.GenerateDNSSECKey(dir, origin, false); err != nil {
		t.Fatal(err)
	}
	return ksk, zsk
}

// signed returns cfg with its zone signed by keys (all active).
func signed(cfg configs.GSLB, keys ...string) configs.GSLB {
	zones := slices.Clone(cfg.Zones)
	zones[0].DNSSEC = configs.DefaultDNSSEC(keys...)
	cfg.Zones = zones
	return cfg
}

// withDO is a query edit: EDNS with the DO bit (and CO when co).
func withDO(co bool) func(*dns.Msg) {
	return func(m *dns.Msg) {
		m.SetEdns0(1232, true)
		m.IsEdns0().SetCo(co)
	}
}

// dnskeys returns the zone's DNSKEY set, as served.
func dnskeys(t *testing.T, s *Server) []*dns.DNSKEY {
	t.Helper()
	m := query(t, s, "tcp", "ringlb.test.", dns.TypeDNSKEY, withDO(false))
	var keys []*dns.DNSKEY
	for _, rr := range m.Answer {
		if k, ok := rr.(*dns.DNSKEY); ok {
			keys = append(keys, k)
		}
	}
	return keys
}

// checkSigned fails unless every RRset of m's answer and authority sections
// carries a signature that verifies with one of keys, made by a key whose
// tag is in signers; it returns the tags that signed.
func checkSigned(t *testing.T, m *dns.Msg, keys []*dns.DNSKEY) map[uint16]bool {
	t.Helper()
	byTag := map[uint16]*dns.DNSKEY{}
	for _, k := range keys {
		byTag[k.KeyTag()] = k
	}
	tags := map[uint16]bool{}
	for _, sec := range [][]dns.RR{m.Answer, m.Ns} {
		sets := map[string][]dns.RR{}
		sigs := map[string][]*dns.RRSIG{}
		for _, rr := range sec {
			if sig, ok := rr.(*dns.RRSIG); ok {
				k := strings.ToLower(sig.Hdr.Name) + "/" + dns.TypeToString[sig.TypeCovered]
				sigs[k] = append(sigs[k], sig)
				continue
			}
			k := strings.ToLower(rr.Header().Name) + "/" + dns.TypeToString[rr.Header().Rrtype]
			sets[k] = append(sets[k], rr)
		}
		for k, set := range sets {
			if len(sigs[k]) == 0 {
				t.Errorf("%s has no RRSIG in\n%v", k, m)
				continue
			}
			for _, sig := range sigs[k] {
				key := byTag[sig.KeyTag]
				if key == nil {
					t.Errorf("%s signed by key %d, not in the DNSKEY set", k, sig.KeyTag)
					continue
				}
				if err := sig.Verify(key, set); err != nil {
					t.Errorf("%s: signature by %d does not verify: %v", k, sig.KeyTag, err)
				}
				if !sig.ValidityPeriod(time.Now()) {
					t.Errorf("%s: signature not valid now: %v", k, sig)
				}
				tags[sig.KeyTag] = true
			}
		}
	}
	return tags
}

func nsecOf(m *dns.Msg) *dns.NSEC {
	for _, rr := range m.Ns {
		if n, ok := rr.(*dns.NSEC); ok {
			return n
		}
	}
	return nil
}

func TestSignedAnswers(t *testing.T) {
	ksk, zsk := testKeys(t)
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	s := startGSLB(t, signed(gslbConfig(t, east, west, ""), ksk, zsk))
	keys := dnskeys(t, s)
	if len(keys) != 2 {
		t.Fatalf("DNSKEY set %v, want the KSK and the ZSK", keys)
	}
	kskTag, zskTag := keys[0].KeyTag(), keys[1].KeyTag()
	if keys[0].Flags != configs.FlagsKSK {
		kskTag, zskTag = zskTag, kskTag
	}

	t.Run("DNSKEY signed by the KSK", func(t *testing.T) {
		m := query(t, s, "udp", "ringlb.test.", dns.TypeDNSKEY, withDO(false))
		if tags := checkSigned(t, m, keys); !tags[kskTag] || tags[zskTag] {
			t.Errorf("DNSKEY signed by %v, want the KSK %d only", tags, kskTag)
		}
		if !m.IsEdns0().Do() {
			t.Error("DO not copied into the answer")
		}
	})
	t.Run("CDS and CDNSKEY for the parent", func(t *testing.T) {
		m := query(t, s, "udp", "ringlb.test.", dns.TypeCDS, withDO(false))
		if len(m.Answer) != 2 || m.Answer[0].(*dns.CDS).KeyTag != kskTag || m.Answer[0].(*dns.CDS).DigestType != dns.SHA256 {
			t.Fatalf("CDS: %v", m.Answer)
		}
		checkSigned(t, m, keys)
		m = query(t, s, "udp", "ringlb.test.", dns.TypeCDNSKEY, withDO(false))
		if len(m.Answer) != 2 || m.Answer[0].(*dns.CDNSKEY).Flags != configs.FlagsKSK {
			t.Fatalf("CDNSKEY: %v", m.Answer)
		}
	})
	for _, tt := range []struct {
		name, qname string
		qtype       uint16
		answers     int // records other than RRSIGs
	}{
		{"managed A", "IDE.RingLB.test.", dns.TypeA, 1},
		{"static A", "www.ringlb.test.", dns.TypeA, 1},
		{"CNAME chain", "alias2.ringlb.test.", dns.TypeA, 3},
		{"wildcard", "x.wild.ringlb.test.", dns.TypeA, 1},
		{"SOA", "ringlb.test.", dns.TypeSOA, 1},
		{"ANY minimal", "www.ringlb.test.", dns.TypeANY, 1},
	} {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tt.name+"/"+network, func(t *testing.T) {
				m := query(t, s, network, tt.qname, tt.qtype, withDO(false))
				n := 0
				for _, rr := range m.Answer {
					if _, ok := rr.(*dns.RRSIG); !ok {
						n++
					}
				}
				if m.Rcode != dns.RcodeSuccess || n != tt.answers {
					t.Fatalf("rcode %s, %d answers; want %d\n%v", dns.RcodeToString[m.Rcode], n, tt.answers, m)
				}
				if tags := checkSigned(t, m, keys); !tags[zskTag] || tags[kskTag] {
					t.Errorf("signed by %v, want the ZSK %d only", tags, zskTag)
				}
			})
		}
	}
	t.Run("wildcard signed as the name asked", func(t *testing.T) {
		m := query(t, s, "udp", "x.wild.ringlb.test.", dns.TypeA, withDO(false))
		for _, rr := range m.Answer {
			if sig, ok := rr.(*dns.RRSIG); ok && (sig.Labels != 4 || sig.Hdr.Name != "x.wild.ringlb.test.") {
				t.Errorf("RRSIG %v, want labels 4 at the name asked", sig)
			}
		}
	})
	for _, tt := range []struct {
		name, qname string
		qtype       uint16
		co          bool
		rcode       int
		types       []uint16 // the NSEC's bitmap
	}{
		{"NXDOMAIN", "nope.ringlb.test.", dns.TypeA, false, dns.RcodeSuccess, []uint16{dns.TypeRRSIG, dns.TypeNSEC, dns.TypeNXNAME}},
		{"NXDOMAIN with CO", "nope.ringlb.test.", dns.TypeA, true, dns.RcodeNameError, []uint16{dns.TypeRRSIG, dns.TypeNSEC, dns.TypeNXNAME}},
		{"NODATA", "mail.ringlb.test.", dns.TypeTXT, false, dns.RcodeSuccess, []uint16{dns.TypeA, dns.TypeRRSIG, dns.TypeNSEC}},
		{"empty non-terminal", "sub.ringlb.test.", dns.TypeA, false, dns.RcodeSuccess, []uint16{dns.TypeRRSIG, dns.TypeNSEC}},
		{"apex NODATA", "ringlb.test.", dns.TypeTXT, false, dns.RcodeSuccess, []uint16{dns.TypeNS, dns.TypeSOA, dns.TypeMX, dns.TypeRRSIG, dns.TypeNSEC, dns.TypeDNSKEY, dns.TypeCDS, dns.TypeCDNSKEY, dns.TypeCAA}},
		{"managed NODATA", "ide.ringlb.test.", dns.TypeAAAA, false, dns.RcodeSuccess, []uint16{dns.TypeA, dns.TypeRRSIG, dns.TypeNSEC}},
		{"wildcard NODATA", "x.wild.ringlb.test.", dns.TypeTXT, false, dns.RcodeSuccess, []uint16{dns.TypeA, dns.TypeRRSIG, dns.TypeNSEC}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := query(t, s, "udp", tt.qname, tt.qtype, withDO(tt.co))
			if m.Rcode != tt.rcode || len(m.Answer) != 0 {
				t.Fatalf("rcode %s with %d answers, want %s and none\n%v", dns.RcodeToString[m.Rcode], len(m.Answer), dns.RcodeToString[tt.rcode], m)
			}
			if tt.co != m.IsEdns0().Co() {
				t.Errorf("CO in the answer %v, want %v", m.IsEdns0().Co(), tt.co)
			}
			n := nsecOf(m)
			if n == nil || !strings.EqualFold(n.Hdr.Name, tt.qname) || n.NextDomain != `\000.`+tt.qname {
				t.Fatalf("NSEC %v, want one at %s covering only it", n, tt.qname)
			}
			want := slices.Clone(tt.types)
			slices.Sort(want)
			if !slices.Equal(n.TypeBitMap, want) {
				t.Errorf("NSEC types %v, want %v", n.TypeBitMap, want)
			}
			checkSigned(t, m, keys)
		})
	}
	t.Run("explicit NXNAME query", func(t *testing.T) {
		if m := query(t, s, "udp", "www.ringlb.test.", dns.TypeNXNAME, withDO(false)); m.Rcode != dns.RcodeFormatError {
			t.Errorf("rcode %s, want FORMERR (RFC 9824 3.5)", dns.RcodeToString[m.Rcode])
		}
	})
	t.Run("without DO nothing is signed", func(t *testing.T) {
		for _, q := range []string{"ide.ringlb.test.", "nope.ringlb.test."} {
			m := query(t, s, "udp", q, dns.TypeA, func(m *dns.Msg) { m.SetEdns0(1232, false) })
			for _, rr := range append(m.Answer, m.Ns...) {
				if typ := rr.Header().Rrtype; typ == dns.TypeRRSIG || typ == dns.TypeNSEC {
					t.Errorf("%s without DO carries %v", q, rr)
				}
			}
			if q == "nope.ringlb.test." && m.Rcode != dns.RcodeNameError {
				t.Errorf("NXDOMAIN without DO answered %s", dns.RcodeToString[m.Rcode])
			}
		}
	})
	t.Run("failover answer signed afresh", func(t *testing.T) {
		east.healthy.Store(false)
		t.Cleanup(func() { east.healthy.Store(true) })
		waitAnswer(t, s, "127.0.0.1", "192.0.2.2")
		m := query(t, s, "udp", "ide.ringlb.test.", dns.TypeA, withDO(false))
		if answerIPs(m) != "192.0.2.2" || m.Answer[0].Header().Ttl != 5 {
			t.Fatalf("after failover: %v", m)
		}
		checkSigned(t, m, keys)
	})
}

// The signature of an RRset is made once and served from the cache — for
// every case of the name asked — until less than signature_refresh is left
// of it; then it is made again.
func TestSignatureCacheAndRefresh(t *testing.T) {
	ksk, zsk := testKeys(t)
	clock := newTestClock()
	s := startGSLBWith(t, signed(fuzzConfig(t), ksk, zsk), clock.use)
	sg := s.state.Load().zones[0].signer
	sig := func(name string) *dns.RRSIG {
		// TCP: the UDP loop's own cache of packed answers does not answer it.
		m := query(t, s, "tcp", name, dns.TypeA, withDO(false))
		for _, rr := range m.Answer {
			if sig, ok := rr.(*dns.RRSIG); ok {
				return sig
			}
		}
		t.Fatalf("no signature in %v", m)
		return nil
	}
	// A managed name's answer is owned by the name as asked.
	first := sig("ide.ringlb.test.")
	if again := sig("IDE.RingLB.test."); again.Signature != first.Signature || again.Hdr.Name != "IDE.RingLB.test." {
		t.Errorf("the same RRset asked in another case was signed again (or named otherwise): %v", again)
	}
	if n := sg.cache.len(); n != 1 {
		t.Errorf("%d cache entries for one RRset", n)
	}
	// Just before the refresh point the cached one serves; just after, a new one.
	validity, refresh := 168*time.Hour, 72*time.Hour
	if got := time.Unix(int64(first.Expiration), 0).Sub(clock.now().Truncate(time.Second)); got != validity {
		t.Errorf("validity %s, want %s", got, validity)
	}
	clock.add(validity - refresh - time.Second)
	if s := sig("ide.ringlb.test."); s.Signature != first.Signature {
		t.Error("signature replaced before its refresh time")
	}
	clock.add(2 * time.Second)
	refreshed := sig("ide.ringlb.test.")
	if refreshed.Signature == first.Signature || refreshed.Expiration <= first.Expiration {
		t.Errorf("not refreshed: expiration %d, was %d", refreshed.Expiration, first.Expiration)
	}
	if refreshed.Inception != uint32(clock.now().Add(-time.Hour).Unix()) {
		t.Errorf("inception %d, want an hour before now", refreshed.Inception)
	}
}

// A flood of one-off names (each negative answer a new NSEC to sign) never
// grows the signature cache beyond its two generations, and an RRset asked
// all along stays in it.
func TestSignatureCacheBounded(t *testing.T) {
	c := newSigCache()
	hot := [32]byte{1}
	c.put(hot, sigEntry{refreshAt: 1})
	for i := 0; i < 3*sigCacheEntries; i++ {
		var k [32]byte
		k[0], k[1], k[2], k[3] = 2, byte(i), byte(i>>8), byte(i>>16)
		c.put(k, sigEntry{})
		if i%1000 == 0 {
			if _, ok := c.get(hot); !ok {
				t.Fatalf("the hot entry was dropped after %d one-off entries", i)
			}
		}
	}
	if n := c.len(); n > 2*sigCacheEntries {
		t.Errorf("%d entries, want at most %d", n, 2*sigCacheEntries)
	}
}

// Truncation drops an RRset together with its signatures, never one
// without the other.
func TestTruncationKeepsSignaturesWithTheirRRset(t *testing.T) {
	ksk, zsk := testKeys(t)
	s := startGSLB(t, signed(fuzzConfig(t), ksk, zsk))
	keys := dnskeys(t, s)
	// The CNAME chain to six 100-byte TXT records, signed, in 512 bytes.
	q := question("bigalias.ringlb.test.", dns.TypeTXT, 512)
	q.IsEdns0().SetDo()
	m, size := exchangeSized(t, s, "udp", q)
	if !m.Truncated || size > 512 {
		t.Fatalf("TC %v, %d bytes", m.Truncated, size)
	}
	checkSigned(t, m, keys) // every RRset left has its signature
	for _, rr := range m.Answer {
		if sig, ok := rr.(*dns.RRSIG); ok && sig.TypeCovered == dns.TypeTXT {
			t.Errorf("the TXT set's signature stayed without it: %v", m)
		}
	}
	full, _ := exchangeSized(t, s, "tcp", q)
	if full.Truncated || len(full.Answer) != 2+6+1 {
		t.Errorf("over TCP: TC %v, %d records, want the CNAME, the TXT set and their two signatures", full.Truncated, len(full.Answer))
	}
	checkSigned(t, full, keys)
}

// A signed answer repeated over UDP comes from the loop's cache of packed
// answers, signatures and all, with no new signature made.
func TestSignedAnswerCachedOnUDP(t *testing.T) {
	ksk, zsk := testKeys(t)
	cfg := signed(fuzzConfig(t), ksk, zsk)
	cfg.UDPWorkers = 1
	s := startGSLB(t, cfg)
	keys := dnskeys(t, s)
	signedNow := func() float64 { return counterValue(t, s, "ringlb_gslb_signatures_total", "from", "signed") }
	first, _ := exchangeSized(t, s, "udp", doQuestion("ide.ringlb.test."))
	before := signedNow()
	for i := 0; i < 20; i++ {
		m, _ := exchangeSized(t, s, "udp", doQuestion("ide.ringlb.test."))
		m.Id = first.Id
		if m.String() != first.String() {
			t.Fatalf("answer %d differs:\n%v\nwas\n%v", i, m, first)
		}
		checkSigned(t, m, keys)
	}
	if after := signedNow(); after != before {
		t.Errorf("%g new signatures for a repeated query", after-before)
	}
}

func doQuestion(name string) *dns.Msg {
	q := question(name, dns.TypeA, 1232)
	q.IsEdns0().SetDo()
	return q
}

// A signed transfer carries the key sets, every RRset's signatures and an
// NSEC chain over every name in canonical order, managed names included
// with the answer they have now; every signature verifies.
func TestSignedAXFR(t *testing.T) {
	ksk, zsk := testKeys(t)
	cfg := signed(withTransfer(t, fuzzConfig(t), configs.Transfer{Allow: []string{"127.0.0.0/8"}}), ksk, zsk)
	s := startGSLB(t, cfg)
	keys := dnskeys(t, s)
	rrs, err := axfr(t, s, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if rrs[0].Header().Rrtype != dns.TypeSOA || rrs[len(rrs)-1].Header().Rrtype != dns.TypeSOA {
		t.Fatal("a transfer must open and close with the SOA")
	}
	// The delegation's NS RRset and glue are the child's: unsigned, and no
	// NSEC below the cut; the cut's NSEC says NS and nothing of the glue.
	var parents []dns.RR
	for _, rr := range rrs[1 : len(rrs)-1] {
		h := rr.Header()
		switch {
		case h.Name == "deleg.ringlb.test." && h.Rrtype == dns.TypeNS, h.Name == "ns.deleg.ringlb.test." && h.Rrtype == dns.TypeA:
		case h.Rrtype == dns.TypeRRSIG && (rr.(*dns.RRSIG).TypeCovered == dns.TypeNS && h.Name == "deleg.ringlb.test." || h.Name == "ns.deleg.ringlb.test."):
			t.Errorf("the child's records signed: %v", rr)
		case h.Rrtype == dns.TypeNSEC && h.Name == "ns.deleg.ringlb.test.":
			t.Errorf("an NSEC below the cut: %v", rr)
		case h.Rrtype == dns.TypeNSEC && h.Name == "deleg.ringlb.test." && !slices.Equal(rr.(*dns.NSEC).TypeBitMap, []uint16{dns.TypeNS, dns.TypeRRSIG, dns.TypeNSEC}):
			t.Errorf("the cut's NSEC %v, want NS RRSIG NSEC", rr)
		default:
			parents = append(parents, rr)
		}
	}
	checkSigned(t, &dns.Msg{Answer: parents}, keys)
	var chain []*dns.NSEC
	has := map[string]bool{}
	for _, rr := range rrs {
		has[strings.ToLower(rr.Header().Name)+"/"+dns.TypeToString[rr.Header().Rrtype]] = true
		if n, ok := rr.(*dns.NSEC); ok {
			chain = append(chain, n)
		}
	}
	for _, want := range []string{"ringlb.test./DNSKEY", "ringlb.test./CDS", "ringlb.test./CDNSKEY", "ide.ringlb.test./A", "ide.ringlb.test./NSEC", "*.wild.ringlb.test./A",
		"deleg.ringlb.test./NS", "deleg.ringlb.test./NSEC", "ns.deleg.ringlb.test./A"} {
		if !has[want] {
			t.Errorf("no %s in the transfer", want)
		}
	}
	// The chain: each NSEC's next name is the following NSEC's owner, the
	// last one's the apex, in canonical order.
	for i, n := range chain {
		next := chain[(i+1)%len(chain)].Hdr.Name
		if n.NextDomain != next {
			t.Errorf("NSEC %s -> %s, want -> %s", n.Hdr.Name, n.NextDomain, next)
		}
		if i > 0 && canonicalCompare(chain[i-1].Hdr.Name, n.Hdr.Name) >= 0 {
			t.Errorf("%s before %s: not canonical order", chain[i-1].Hdr.Name, n.Hdr.Name)
		}
	}
	if chain[0].Hdr.Name != "ringlb.test." || chain[len(chain)-1].NextDomain != "ringlb.test." {
		t.Errorf("the chain does not start and end at the apex")
	}
}

func TestCanonicalOrder(t *testing.T) {
	// RFC 4034 6.1's own example.
	want := []string{"example.", "a.example.", "yljkjljk.a.example.", "Z.a.example.", "zABC.a.EXAMPLE.", "z.example.", `\001.z.example.`, "*.z.example.", `\200.z.example.`}
	got := slices.Clone(want)
	slices.Reverse(got)
	slices.SortFunc(got, canonicalCompare)
	if !slices.Equal(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}

// The zone's own DNSSEC records would contradict the signer's: refused.
func TestSignedZoneRefusesItsOwnDNSSECRecords(t *testing.T) {
	ksk, zsk := testKeys(t)
	cfg := signed(fuzzConfig(t), ksk, zsk)
	cfg.Zones[0].File = ""
	cfg.Zones[0].Records = []string{"@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "@ 3600 IN DNSKEY 257 3 13 AAAA"}
	if _, err := New(cfg, "t", nil, nil); err == nil || !strings.Contains(err.Error(), "signed online") {
		t.Errorf("err %v, want the DNSKEY refused", err)
	}
}

// --- A real validator: delv from Debian's bind9-dnsutils. ---

// delvRun runs delv against s with trust in anchor (a DNSKEY), and returns
// its output.
func delvRun(t *testing.T, s *Server, anchor *dns.DNSKEY, src string, args ...string) string {
	t.Helper()
	return newDelv(t, s, anchor).run(src, args...)
}

// delv asks one server with trust in one anchor; run may be called from
// several goroutines.
type delv struct {
	path, anchors, root, host, port string
}

// newDelv writes anchor's trust-anchors file for delv against s.
func newDelv(t *testing.T, s *Server, anchor *dns.DNSKEY) *delv {
	t.Helper()
	path, err := exec.LookPath("delv")
	if err != nil {
		t.Skip("delv not installed (apt-get install bind9-dnsutils): no real validator to check signatures against")
	}
	anchors := filepath.Join(t.TempDir(), "anchors")
	// A trust anchor for the zone itself, as for a zone whose parent is
	// unsigned (or, here, does not exist).
	ta := fmt.Sprintf("trust-anchors {\n  %s static-key %d %d %d %q;\n};\n", anchor.Hdr.Name, anchor.Flags, anchor.Protocol, anchor.Algorithm, anchor.PublicKey)
	if err := os.WriteFile(anchors, []byte(ta), 0o644); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(s.Addr())
	return &delv{path: path, anchors: anchors, root: "+root=" + strings.TrimSuffix(anchor.Hdr.Name, "."), host: host, port: port}
}

// run runs delv from the source address src with args, and returns its
// output.
func (d *delv) run(src string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"@" + d.host, "-p", d.port, "-b", src, "-a", d.anchors, d.root, "+nocrypto"}, args...)
	out, _ := exec.CommandContext(ctx, d.path, full...).CombinedOutput()
	return string(out)
}

// validated fails unless delv fully validated the answer (positive or negative)
// and it contains each of want.
func validated(t *testing.T, out string, negative bool, want ...string) {
	t.Helper()
	verdict := "; fully validated"
	if negative {
		verdict = "; negative response, fully validated"
	}
	if !strings.Contains(out, verdict) {
		t.Errorf("delv did not say %q:\n%s", verdict, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("delv output lacks %q:\n%s", w, out)
		}
	}
}

// TestDNSSECValidatesWithDelv checks the signed zone with a real validating
// resolver (delv, trusting the zone's KSK): signed A of a managed name
// before and after a failover, NXDOMAIN and NODATA proofs, a wildcard, a
// CNAME chain; and that the same delv refuses an unsigned zone.
func TestDNSSECValidatesWithDelv(t *testing.T) {
	// Its own server and fake balancers (ports of their own) and no package
	// state: it waits on the monitor (a second a check), beside the others.
	t.Parallel()
	if _, err := exec.LookPath("delv"); err != nil {
		t.Skip("delv not installed (apt-get install bind9-dnsutils): no real validator to check signatures against")
	}
	ksk, zsk := testKeys(t)
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	cfg := gslbConfig(t, east, west, "")

	// Before: the zone unsigned (as every zone was), a validator that
	// trusts the key gets nothing it can check — a forged answer would look
	// the same to it.
	unsigned := startGSLB(t, cfg)
	key, _, err := configs.ReadDNSSECKey(ksk, "ringlb.test")
	if err != nil {
		t.Fatal(err)
	}
	out := delvRun(t, unsigned, key, "127.0.0.1", "ide.ringlb.test", "A")
	if strings.Contains(out, "fully validated") {
		t.Fatalf("delv validated an unsigned zone:\n%s", out)
	}
	t.Logf("unsigned zone, delv says: %s", firstLine(out))

	s := startGSLB(t, signed(cfg, ksk, zsk))
	validated(t, delvRun(t, s, key, "127.0.0.1", "ide.ringlb.test", "A"), false, "192.0.2.1", "RRSIG")
	validated(t, delvRun(t, s, key, "127.0.0.2", "ide.ringlb.test", "A"), false, "192.0.2.2")
	// Compact denial: delv 9.18 knows no NXNAME, and takes the proof for
	// the NODATA it also is.
	validated(t, delvRun(t, s, key, "127.0.0.1", "nope.ringlb.test", "A"), true, "NSEC \\000.nope.ringlb.test. RRSIG NSEC TYPE128")
	validated(t, delvRun(t, s, key, "127.0.0.1", "mail.ringlb.test", "TXT"), true, "NXRRSET")
	validated(t, delvRun(t, s, key, "127.0.0.1", "ide.ringlb.test", "AAAA"), true, "NXRRSET")
	validated(t, delvRun(t, s, key, "127.0.0.1", "sub.ringlb.test", "A"), true)
	validated(t, delvRun(t, s, key, "127.0.0.1", "x.wild.ringlb.test", "A"), false, "192.0.2.99")
	validated(t, delvRun(t, s, key, "127.0.0.1", "alias2.ringlb.test", "A"), false, "192.0.2.80")
	validated(t, delvRun(t, s, key, "127.0.0.1", "ringlb.test", "DNSKEY"), false)
	validated(t, delvRun(t, s, key, "127.0.0.1", "+tcp", "ringlb.test", "MX"), false)

	// The east balancer goes down: east's clients get west's member, in an
	// answer signed on the spot, which validates.
	east.healthy.Store(false)
	waitAnswer(t, s, "127.0.0.1", "192.0.2.2")
	validated(t, delvRun(t, s, key, "127.0.0.1", "ide.ringlb.test", "A"), false, "192.0.2.2")
	east.healthy.Store(true)
	waitAnswer(t, s, "127.0.0.1", "192.0.2.1")
	validated(t, delvRun(t, s, key, "127.0.0.1", "ide.ringlb.test", "A"), false, "192.0.2.1")

	// A validator that trusts another key: bogus, not validated.
	otherKSK, _ := testKeys(t)
	other, _, _ := configs.ReadDNSSECKey(otherKSK, "ringlb.test")
	if out := delvRun(t, s, other, "127.0.0.1", "ide.ringlb.test", "A"); strings.Contains(out, "fully validated") {
		t.Errorf("delv validated with a key the zone does not have:\n%s", out)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

// Answers to queries without DO are byte for byte what they were before
// DNSSEC (testdata/nodo.golden, recorded from the server without it),
// whether the zone is signed or not.
func TestAnswersWithoutDOUnchanged(t *testing.T) {
	raw, err := os.ReadFile("testdata/nodo.golden")
	if err != nil {
		t.Fatal(err)
	}
	golden := strings.Split(strings.TrimSpace(string(raw)), "\n")
	ksk, zsk := testKeys(t)
	for _, tc := range []struct {
		name string
		cfg  configs.GSLB
	}{{"unsigned", fuzzConfig(t)}, {"signed", signed(fuzzConfig(t), ksk, zsk)}} {
		t.Run(tc.name, func(t *testing.T) {
			lines, answers := noDOAnswers(t, startGSLB(t, tc.cfg))
			if len(lines) != len(golden) {
				t.Fatalf("%d answers, the golden file has %d", len(lines), len(golden))
			}
			for i, line := range lines {
				if line != golden[i] {
					m := new(dns.Msg)
					m.Unpack(answers[line])
					t.Errorf("answer changed:\n got %s\nwant %s\n%v", line, golden[i], m)
				}
			}
		})
	}
}

// keyTags returns the tags of keys, and of those the KSKs.
func keyTags(keys []*dns.DNSKEY) (all, ksks []uint16) {
	for _, k := range keys {
		all = append(all, k.KeyTag())
		if k.Flags == configs.FlagsKSK {
			ksks = append(ksks, k.KeyTag())
		}
	}
	slices.Sort(all)
	slices.Sort(ksks)
	return all, ksks
}

func tagOf(t *testing.T, file string) uint16 {
	t.Helper()
	k, _, err := configs.ReadDNSSECKey(file, "ringlb.test")
	if err != nil {
		t.Fatal(err)
	}
	return k.KeyTag()
}

func sortedTags(tags ...uint16) []uint16 {
	slices.Sort(tags)
	return tags
}

// TestKeyRollover runs the two rollovers the README describes, each step a
// config edit and a reload: a pre-published ZSK rollover and a
// double-signature KSK rollover. At every step it checks the DNSKEY set,
// which keys sign what, and that a validator (delv, when installed; the
// signatures' own verification always) accepts the zone.
func TestKeyRollover(t *testing.T) {
	ksk1, zsk1 := testKeys(t)
	ksk2, zsk2 := testKeys(t)
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	base := gslbConfig(t, east, west, "")
	withKeys := func(keys ...configs.DNSSECKey) configs.GSLB {
		cfg := signed(base)
		cfg.Zones[0].DNSSEC.Keys = keys
		return cfg
	}
	active := func(f string) configs.DNSSECKey { return configs.DNSSECKey{File: f, State: configs.KeyActive} }
	published := func(f string) configs.DNSSECKey { return configs.DNSSECKey{File: f, State: configs.KeyPublished} }
	s := startGSLB(t, withKeys(active(ksk1), active(zsk1)))
	haveDelv := true
	if _, err := exec.LookPath("delv"); err != nil {
		haveDelv = false
		t.Log("delv not installed: signatures checked with miekg/dns only")
	}
	anchor := func(f string) *dns.DNSKEY {
		k, _, _ := configs.ReadDNSSECKey(f, "ringlb.test")
		return k
	}
	serial := func() uint32 {
		return query(t, s, "udp", "ringlb.test.", dns.TypeSOA, nil).Answer[0].(*dns.SOA).Serial
	}
	var oldZSKAnswer *dns.Msg
	steps := []struct {
		name       string
		keys       []configs.DNSSECKey
		dnskeys    []uint16 // the DNSKEY set
		dataBy     uint16   // the key that signs data
		keysBy     []uint16 // the keys that sign the DNSKEY set (and CDS lists)
		anchors    []string // KSKs a validator may trust
		notAnchors []string // KSKs it may no longer trust
	}{
		{"start", []configs.DNSSECKey{active(ksk1), active(zsk1)}, sortedTags(tagOf(t, ksk1), tagOf(t, zsk1)), tagOf(t, zsk1), []uint16{tagOf(t, ksk1)}, []string{ksk1}, nil},
		{"ZSK 1: publish the new ZSK", []configs.DNSSECKey{active(ksk1), active(zsk1), published(zsk2)}, sortedTags(tagOf(t, ksk1), tagOf(t, zsk1), tagOf(t, zsk2)), tagOf(t, zsk1), []uint16{tagOf(t, ksk1)}, []string{ksk1}, nil},
		{"ZSK 2: the new ZSK signs, the old one stays published", []configs.DNSSECKey{active(ksk1), published(zsk1), active(zsk2)}, sortedTags(tagOf(t, ksk1), tagOf(t, zsk1), tagOf(t, zsk2)), tagOf(t, zsk2), []uint16{tagOf(t, ksk1)}, []string{ksk1}, nil},
		{"ZSK 3: remove the old ZSK", []configs.DNSSECKey{active(ksk1), active(zsk2)}, sortedTags(tagOf(t, ksk1), tagOf(t, zsk2)), tagOf(t, zsk2), []uint16{tagOf(t, ksk1)}, []string{ksk1}, nil},
		{"KSK 1: add the new KSK, both sign the DNSKEY set", []configs.DNSSECKey{active(ksk1), active(ksk2), active(zsk2)}, sortedTags(tagOf(t, ksk1), tagOf(t, ksk2), tagOf(t, zsk2)), tagOf(t, zsk2), sortedTags(tagOf(t, ksk1), tagOf(t, ksk2)), []string{ksk1, ksk2}, nil},
		{"KSK 2: remove the old KSK", []configs.DNSSECKey{active(ksk2), active(zsk2)}, sortedTags(tagOf(t, ksk2), tagOf(t, zsk2)), tagOf(t, zsk2), []uint16{tagOf(t, ksk2)}, []string{ksk2}, []string{ksk1}},
	}
	for i, st := range steps {
		before := serial()
		if i > 0 {
			if err := s.Reload(withKeys(st.keys...)); err != nil {
				t.Fatalf("%s: reload: %v", st.name, err)
			}
			if after := serial(); after == before {
				t.Errorf("%s: the serial stayed %d: secondaries would not transfer the new keys", st.name, after)
			}
		}
		keys := dnskeys(t, s)
		if all, _ := keyTags(keys); !slices.Equal(all, st.dnskeys) {
			t.Errorf("%s: DNSKEY set %v, want %v", st.name, all, st.dnskeys)
		}
		m := query(t, s, "tcp", "ringlb.test.", dns.TypeDNSKEY, withDO(false))
		if by := checkSigned(t, m, keys); !slices.Equal(slices.Sorted(maps.Keys(by)), st.keysBy) {
			t.Errorf("%s: DNSKEY set signed by %v, want %v", st.name, by, st.keysBy)
		}
		m = query(t, s, "tcp", "ringlb.test.", dns.TypeCDS, withDO(false))
		var cds []uint16
		for _, rr := range m.Answer {
			if c, ok := rr.(*dns.CDS); ok {
				cds = append(cds, c.KeyTag)
			}
		}
		if !slices.Equal(sortedTags(cds...), st.keysBy) {
			t.Errorf("%s: CDS lists %v, want %v", st.name, cds, st.keysBy)
		}
		data := query(t, s, "tcp", "ide.ringlb.test.", dns.TypeA, withDO(false))
		if by := checkSigned(t, data, keys); len(by) != 1 || !by[st.dataBy] {
			t.Errorf("%s: data signed by %v, want %d", st.name, by, st.dataBy)
		}
		if i == 0 {
			oldZSKAnswer = data
		}
		if i == 2 {
			// A resolver may still hold the old ZSK's signature: it
			// verifies while that key is published.
			checkSigned(t, oldZSKAnswer, keys)
		}
		if !haveDelv {
			continue
		}
		for _, a := range st.anchors {
			validated(t, delvRun(t, s, anchor(a), "127.0.0.1", "ide.ringlb.test", "A"), false, "192.0.2.1")
			validated(t, delvRun(t, s, anchor(a), "127.0.0.1", "nope.ringlb.test", "A"), true)
		}
		for _, a := range st.notAnchors {
			if out := delvRun(t, s, anchor(a), "127.0.0.1", "ide.ringlb.test", "A"); strings.Contains(out, "fully validated") {
				t.Errorf("%s: validated with the retired KSK %d as trust anchor:\n%s", st.name, tagOf(t, a), out)
			}
		}
	}
}

// dig +dnssec against the signed zone shows the signatures.
func TestDigShowsSignatures(t *testing.T) {
	dig, err := exec.LookPath("dig")
	if err != nil {
		t.Skip("dig not installed (apt-get install bind9-dnsutils)")
	}
	ksk, zsk := testKeys(t)
	s := startGSLB(t, signed(fuzzConfig(t), ksk, zsk))
	host, port, _ := net.SplitHostPort(s.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, dig, "@"+host, "-p", port, "+dnssec", "+norec", "ide.ringlb.test", "A").CombinedOutput()
	if err != nil {
		t.Fatalf("dig: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "RRSIG\tA 13 3 30") || !strings.Contains(string(out), "flags: do;") {
		t.Errorf("dig +dnssec shows no RRSIG:\n%s", out)
	}
}

// startTCPSigner starts cfg's server on a test clock, which stands still
// until the test moves it (no signing budget refills meanwhile), with a TCP
// answer waiting 20 ms at most for a signature.
func startTCPSigner(t *testing.T, cfg configs.GSLB) (*Server, *testClock) {
	t.Helper()
	clock := newTestClock()
	return startGSLBWith(t, cfg, func(s *Server) {
		clock.use(s)
		for _, z := range s.state.Load().zones {
			if z.signer != nil {
				z.signer.tcpPatience = 20 * time.Millisecond
			}
		}
	}), clock
}

// A flood of DO queries over UDP for names never asked before (spoofed
// sources, a random-subdomain attack) would cost one ECDSA signature each.
// Beyond signatures_per_second (with a second of burst) such a UDP query
// gets an empty TC answer instead: its resolver retries over TCP, which
// spoofed sources cannot, and which is always answered signed. The clock
// is held still, so the bucket never refills: exactly the burst is signed.
// Over TCP, where sources are real and a deferred resolver retries, new
// signatures have a budget of their own: a client asking for more waits its
// turn, then gets SERVFAIL, instead of spending the gslb's CPU on signing.
// The test clock stands still, so the bucket never refills until moved.
// The one client may spend the whole budget here (tcp_client_share 1):
// its share of it is TestFreshSignaturesSharedOverTCP's.
func TestFreshSignaturesBoundedOverTCP(t *testing.T) {
	ksk, zsk := testKeys(t)
	cfg := signed(fuzzConfig(t), ksk, zsk)
	cfg.Zones[0].DNSSEC.SignaturesPerSecond = 100
	cfg.Zones[0].DNSSEC.TCPClientShare = 1
	s, clock := startTCPSigner(t, cfg)
	keys := dnskeys(t, s)
	before := counterValue(t, s, "ringlb_gslb_signatures_total", "from", "signed")
	const flood = 300
	refused := 0
	var conn *dns.Conn
	for i := range flood {
		if i%100 == 0 { // a hundred queries a connection
			if conn != nil {
				conn.Close()
			}
			var err error
			if conn, err = dns.Dial("tcp", s.Addr()); err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if err := conn.WriteMsg(doQuestion(fmt.Sprintf("t%05d.nope.ringlb.test.", i))); err != nil {
			t.Fatal(err)
		}
		m, err := conn.ReadMsg()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case m.Rcode == dns.RcodeServerFailure && len(m.Answer)+len(m.Ns) == 0:
			refused++
		case nsecOf(m) == nil:
			t.Fatalf("query %d over TCP: %v", i, m)
		}
	}
	made := counterValue(t, s, "ringlb_gslb_signatures_total", "from", "signed") - before
	t.Logf("%d TCP queries for new names: %.0f new signatures, %d SERVFAIL after waiting", flood, made, refused)
	if made > 100 || refused < flood-100 {
		t.Errorf("%.0f new signatures for %d new names over TCP, %d refused; want at most the burst of 100", made, flood, refused)
	}
	if got := counterValue(t, s, "ringlb_gslb_signatures_total", "from", "refused"); got != float64(refused) {
		t.Errorf("refused counted %g, answered %d", got, refused)
	}
	// A second later the budget has refilled: a new name is answered signed.
	clock.add(time.Second)
	m := query(t, s, "tcp", "later.nope.ringlb.test.", dns.TypeA, withDO(false))
	if nsecOf(m) == nil {
		t.Fatalf("over TCP once the budget refilled: %v", m)
	}
	checkSigned(t, m, keys)
}

func TestFreshSignaturesBoundedOverUDP(t *testing.T) {
	ksk, zsk := testKeys(t)
	cfg := signed(fuzzConfig(t), ksk, zsk)
	cfg.Zones[0].DNSSEC.SignaturesPerSecond = 100
	s := startGSLBWith(t, cfg, newTestClock().use)
	keys := dnskeys(t, s) // signs the DNSKEY set: one of the burst
	before := counterValue(t, s, "ringlb_gslb_signatures_total", "from", "signed")
	const flood = 2000
	truncated := 0
	for i := range flood {
		m, _ := exchangeSized(t, s, "udp", doQuestion(fmt.Sprintf("r%05d.nope.ringlb.test.", i)))
		if m.Truncated {
			truncated++
			if len(m.Answer)+len(m.Ns) != 0 {
				t.Fatalf("a deferred answer carries records: %v", m)
			}
		}
	}
	made := counterValue(t, s, "ringlb_gslb_signatures_total", "from", "signed") - before
	t.Logf("%d UDP queries for new names: %.0f new signatures, %d answered TC", flood, made, truncated)
	// Each answer signs its SOA (cached after the first) and its own NSEC.
	if made > 100 || truncated < flood-100 {
		t.Errorf("%.0f new signatures for %d new names over UDP, %d TC; want at most the burst of 100", made, flood, truncated)
	}
	// The resolver's retry over TCP is answered, signed.
	m := query(t, s, "tcp", "r01999.nope.ringlb.test.", dns.TypeA, withDO(false))
	if m.Truncated || nsecOf(m) == nil {
		t.Fatalf("over TCP: %v", m)
	}
	checkSigned(t, m, keys)
	// What is signed already is still answered over UDP.
	if m, _ := exchangeSized(t, s, "udp", doQuestion("r00000.nope.ringlb.test.")); m.Truncated || nsecOf(m) == nil {
		t.Errorf("a name signed before the budget ran out: %v", m)
	}
}

// A first label that starts with '*' but is not the wildcard label "*"
// (RFC 4592 2.1.1: only a label of exactly one asterisk is a wildcard) is
// an ordinary name. Its RRSIGs must count it (RFC 4034 3.1.3): counted one
// short, a validator takes the RRset for a wildcard expansion of
// *.<parent> and wants a proof that the name asked does not exist, which
// the answer does not carry (and must not). miekg/dns's Sign took any
// owner beginning with '*' for a wildcard: labels 2 for *foo.ringlb.test,
// and delv failed every answer for such a name (starSafe).
func TestOwnerBeginningWithAStarIsNoWildcard(t *testing.T) {
	ksk, zsk := testKeys(t)
	s := startGSLB(t, signed(fuzzConfig(t), ksk, zsk))
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{`*foo.ringlb.test.`, dns.TypeA},     // no such name: its compact NSEC
		{`*x.wild.ringlb.test.`, dns.TypeA},  // below *.wild: the wildcard's A, as the name asked
		{`*x.wild.ringlb.test.`, dns.TypeMX}, // its NODATA
	} {
		m := query(t, s, "tcp", q.name, q.qtype, withDO(false))
		for _, sec := range [][]dns.RR{m.Answer, m.Ns} {
			for _, rr := range sec {
				sig, ok := rr.(*dns.RRSIG)
				if !ok || sig.Hdr.Name != q.name {
					continue
				}
				if want := dns.CountLabel(q.name); int(sig.Labels) != want {
					parent := q.name[dns.Split(q.name)[1]:]
					t.Errorf("%s %s: RRSIG over %s has labels %d, the name has %d: a validator reads it as expanded from *.%s",
						q.name, dns.TypeToString[q.qtype], dns.TypeToString[sig.TypeCovered], sig.Labels, want, parent)
				}
			}
		}
	}
	key, _, err := configs.ReadDNSSECKey(ksk, "ringlb.test")
	if err != nil {
		t.Fatal(err)
	}
	d := newDelv(t, s, key)
	validated(t, d.run("127.0.0.1", `*foo.ringlb.test`, "A"), true)
	validated(t, d.run("127.0.0.1", `*x.wild.ringlb.test`, "A"), false, "192.0.2.99")
	validated(t, d.run("127.0.0.1", `*x.wild.ringlb.test`, "MX"), true)
}

// A query for type NSEC at a traffic-managed name is answered as at any
// name (answerVia's NSEC case): the NSEC itself, in the answer section.
// answerManaged had no such case: it answered NODATA, proved by that very
// NSEC, whose bitmap lists NSEC — the answer contradicted its own proof,
// and delv called it bogus (the case TestNSECQueryForANameThatDoesNotExist
// closed for names that do not exist).
func TestNSECQueryAtAManagedName(t *testing.T) {
	ksk, zsk := testKeys(t)
	s := startGSLB(t, signed(gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""), ksk, zsk))
	for _, network := range []string{"udp", "tcp"} {
		r := query(t, s, network, "ide.ringlb.test.", dns.TypeNSEC, withDO(false))
		if len(r.Answer) == 0 {
			t.Errorf("%s: NSEC at the managed name ide: nothing in the answer section (a NODATA proved by an NSEC listing NSEC):\n%v", network, r)
		}
	}
	key, _, err := configs.ReadDNSSECKey(ksk, "ringlb.test")
	if err != nil {
		t.Fatal(err)
	}
	out := delvRun(t, s, key, "127.0.0.1", "ide.ringlb.test", "NSEC")
	t.Logf("delv: %s", firstLine(out))
	validated(t, out, false, `\000.ide.ringlb.test. A RRSIG NSEC`)
}

// NSEC may stand beside a CNAME (RFC 4035 2.5, RFC 2181 10.1: the CNAME's
// owner has its own RRSIG and NSEC), so a query for type NSEC at a CNAME's
// owner is answered with that owner's NSEC, never by following the CNAME —
// as NSD serves an offline-signed copy. The server followed the CNAME and
// answered with its target's NSEC; BIND takes a CNAME answer for type NSEC
// for a malformed response ("CNAME response for NSEC RR", FORMERR) and
// resolution failed. A wildcard CNAME likewise.
func TestNSECQueryAtACNAMEsOwner(t *testing.T) {
	ksk, zsk := testKeys(t)
	cfg := signed(dnameConfig(t, "ns1 3600 IN A 127.0.0.1", "www 3600 IN A 192.0.2.80", "docs 3600 IN CNAME www", "*.wc 3600 IN CNAME www"), ksk, zsk)
	s := startGSLB(t, cfg)
	for _, name := range []string{"docs.ringlb.test.", "x.wc.ringlb.test."} {
		r := query(t, s, "tcp", name, dns.TypeNSEC, withDO(false))
		for _, rr := range r.Answer {
			if rr.Header().Rrtype == dns.TypeCNAME {
				t.Errorf("NSEC at %s (a CNAME's owner): the CNAME followed, not the owner's NSEC:\n%v", name, r)
				break
			}
		}
	}
	key, _, err := configs.ReadDNSSECKey(ksk, "ringlb.test")
	if err != nil {
		t.Fatal(err)
	}
	d := newDelv(t, s, key)
	validated(t, d.run("127.0.0.1", "docs.ringlb.test", "NSEC"), false, `\000.docs.ringlb.test. CNAME RRSIG NSEC`)
	validated(t, d.run("127.0.0.1", "x.wc.ringlb.test", "NSEC"), false, `\000.x.wc.ringlb.test. CNAME RRSIG NSEC`)
}

// The NSEC at a delegation point lists NS, DS when there is one, RRSIG and
// NSEC — never the glue the parent holds at the cut's own name, which is
// not its authoritative data (RFC 4035 2.3: "bits corresponding to any
// non-NS RRset for which the parent is not authoritative MUST be clear").
// The referral's NSEC and the signed transfer's chain left it out; the
// NODATA answer to a DS query at the cut listed it (delv took it, but the
// two proofs of one name disagreed).
func TestDSNodataAtACutListsNoGlue(t *testing.T) {
	ksk, zsk := testKeys(t)
	s := startGSLB(t, signed(dnameConfig(t, "ns1 3600 IN A 127.0.0.1", "cut 3600 IN NS cut", "cut 3600 IN A 192.0.2.53"), ksk, zsk))
	r := query(t, s, "tcp", "cut.ringlb.test.", dns.TypeDS, withDO(false))
	n := nsecOf(r)
	if n == nil {
		t.Fatalf("DS at the cut: no NSEC\n%v", r)
	}
	if slices.Contains(n.TypeBitMap, dns.TypeA) {
		t.Errorf("DS at the cut: the NSEC lists the glue's A (%v): the parent claims authority for it\n%v", n, r)
	}
	ref := nsecOf(query(t, s, "tcp", "cut.ringlb.test.", dns.TypeA, withDO(false)))
	if ref == nil || !slices.Equal(ref.TypeBitMap, n.TypeBitMap) {
		t.Errorf("the cut's NSEC differs between the referral (%v) and the DS NODATA (%v)", ref, n)
	}
}

// The signing budget's clock only goes forward: a take with an earlier
// time (a caller that read the clock before it waited for the lock) set it
// back, and the next take was credited for the same time again.
func TestSignBudgetCreditsEachMomentOnce(t *testing.T) {
	b := newSignBudget(10)
	base := time.Unix(1_700_000_000, 0)
	if !b.take(base, 10) {
		t.Fatal("a full bucket refused its burst")
	}
	if !b.take(base.Add(time.Second), 10) {
		t.Fatal("a second's refill refused")
	}
	b.take(base.Add(500*time.Millisecond), 0) // a caller a moment late
	if b.take(base.Add(time.Second), 5) {
		t.Error("the half second before the last take was credited again")
	}
}
