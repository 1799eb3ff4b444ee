package gslb

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// A zone file's problem keeps its file, what is wrong and where, and never
// the token it stopped at: the file may be one that is not a zone (the
// config names it), whose tokens are secrets.
func TestZoneProblemsQuoteNoToken(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, content, want string }{
		{"a keyring", "c2VjcmV0LWdvc3NpcC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==\n", `dns: not a TTL at line: 1:`},
		{"a token with quotes", "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60\nx 60 IN A \"s3cr3t: \\\"quoted\\\"\"\n", `dns: bad A A at line: 2:`},
		{"a users line", "admin:$2y$10$s3cr3tHashPart0123456789\n", `dns: not a TTL at line: 1:`},
	} {
		file := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
		if err := os.WriteFile(file, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := loadZone(configs.Zone{Origin: "ringlb.test", File: file}, configs.RateLimit{})
		t.Logf("%s: %v", tc.name, err)
		if err == nil || !strings.Contains(err.Error(), file+": "+tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "c2VjcmV0")) {
			t.Errorf("%s: the problem quotes the file: %v", tc.name, err)
		}
	}
}

// zcHead is a zone's usual start: $TTL, SOA, apex NS and its address (the
// zone-loading tests' zc.test).
const zcHead = "$ORIGIN zc.test.\n$TTL 3600\n@ IN SOA ns1 hostmaster 2026120501 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 192.0.2.53\n"

// zc is a zone of zcHead and lines.
func zc(lines ...string) string { return zcHead + strings.Join(lines, "\n") + "\n" }

// loadZoneText writes text as a zone file of zc.test and loads it; it
// returns the file's path too, for what an error must name.
func loadZoneText(t *testing.T, text string) (*zone, string, error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "zc.test.zone")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	z, err := loadZone(configs.Zone{Origin: "zc.test", File: file}, configs.RateLimit{})
	return z, file, err
}

// Zones NSD and Knot both refuse as broken (the zone-loading differential
// test, TestZoneLoadingAgainstCheckers): before, ringlb loaded each and
// answered wrongly — the A of a name that also has a CNAME (the CNAME never
// followed), a class CH record in answers to IN queries, a record whose
// owner or target is longer than 255 octets or whose RDATA has no wire form
// (a TLSA's bad hex, 80 KB of TXT) left out of every answer and transfer.
// Now each is refused, the error naming the file, the line and the name.
// So are records of the types that exist only in messages (RFC 6895 3.1:
// OPT, TSIG, AXFR, ANY and the rest of 128 to 255; type 0), which NSD and
// Knot load: an OPT in a transfer's answer section makes the secondary
// drop the transfer (RFC 6891 6.1.1: an OPT anywhere but the additional
// section is malformed), and asked for, an AXFR record is a transfer.
func TestZoneLoadRefusesBrokenRecords(t *testing.T) {
	a63 := strings.Repeat("a", 63)
	long := a63 + "." + a63 + "." + a63 + "." + strings.Repeat("b", 54) // 256 octets in zc.test.
	for _, tc := range []struct {
		name, record, want string
	}{
		{"CNAME and A at one name", "www IN CNAME target.example.\nwww IN A 192.0.2.80", "www.zc.test. has a CNAME and A"},
		{"A and CNAME at one name", "www IN A 192.0.2.80\nwww IN CNAME target.example.", "www.zc.test. has a CNAME and A"},
		{"CNAME at the apex", "@ IN CNAME target.example.", "zc.test. has a CNAME and NS"},
		{"CNAME and DNAME at one name", "www IN CNAME target.example.\nwww IN DNAME target.example.", "www.zc.test. has a CNAME and DNAME"},
		{"CNAME at a delegation", "sub IN NS ns.example.\nsub IN CNAME target.example.", "sub.zc.test. has a CNAME and NS"},
		{"a record of class CH", `www CH TXT "chaos"`, "www.zc.test. TXT of class CH"},
		{"a record of CLASS3", `www CLASS3 A 192.0.2.1`, "www.zc.test. A of class CH"},
		{"an owner of 256 octets", long + " IN A 192.0.2.1", "longer than 255 octets"},
		{"a target of 256 octets", "www IN CNAME " + long, "www.zc.test. CNAME: a name in it is longer than 255 octets"},
		{"a TLSA's bad hex", "_443._tcp IN TLSA 3 1 1 zz", "_443._tcp.zc.test. TLSA: its RDATA has no wire form"},
		{"an OPT record", `www IN TYPE41 \# 0`, "www.zc.test. OPT: a meta-type"},
		{"an AXFR record", `www IN TYPE252 \# 0`, "www.zc.test. AXFR: a meta-type"},
		{"type 0", `www IN TYPE0 \# 0`, "www.zc.test. TYPE0: a meta-type"},
		{"80 KB of TXT", "www IN TXT " + strings.Repeat(`"`+strings.Repeat("x", 200)+`" `, 400), "www.zc.test. TXT: its RDATA has no wire form"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := zc("; before", tc.record)
			line := strings.Count(text, "\n") // the record's last line
			z, file, err := loadZoneText(t, text)
			t.Logf("%v", err)
			if err == nil {
				t.Fatalf("loaded, %d names", len(z.names))
			}
			if want := fmt.Sprintf("%s line %d: ", file, line); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want %q and %q", err, want, tc.want)
			}
		})
	}
}

// Zones NSD and Knot both load: before, ringlb refused a CNAME or DNAME
// written twice ("more than one CNAME"), and loaded an A written twice
// to answer it twice (RFC 2181 5: an RRset holds no duplicates) and an
// RRset whose TTLs differ to answer it so (RFC 2181 5.2 has a client treat
// that as an error). Now a record written twice is one record, and an
// RRset's TTL is its first record's, as NSD and BIND make it.
func TestZoneLoadMergesDuplicatesAndTTLs(t *testing.T) {
	z, _, err := loadZoneText(t, zc(
		"alias IN CNAME target.example.", "alias IN CNAME TARGET.example.",
		"dn IN DNAME tgt.example.", "dn IN DNAME tgt.example.",
		"www 300 IN A 192.0.2.80", "WWW 600 IN A 192.0.2.80", "www 900 IN A 192.0.2.81",
		`txt IN TXT "a"`, `txt IN TXT "a"`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		qtype uint16
		want  string
	}{
		{"alias.zc.test.", dns.TypeCNAME, "alias.zc.test.\t3600\tIN\tCNAME\ttarget.example."},
		{"dn.zc.test.", dns.TypeDNAME, "dn.zc.test.\t3600\tIN\tDNAME\ttgt.example."},
		{"www.zc.test.", dns.TypeA, "www.zc.test.\t300\tIN\tA\t192.0.2.80 www.zc.test.\t300\tIN\tA\t192.0.2.81"},
		{"txt.zc.test.", dns.TypeTXT, "txt.zc.test.\t3600\tIN\tTXT\t\"a\""},
	} {
		var got []string
		for _, rr := range z.names[c.name][c.qtype] {
			got = append(got, rr.String())
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("%s %s: %q, want %q", c.name, dns.TypeToString[c.qtype], got, c.want)
		}
	}
}

// A problem found in the records, not in their syntax, names the file and
// the line of the record, in an $INCLUDEd file too, and the record's name:
// before, "zone zc.test.: more than one SOA" said neither which file nor
// where. Inline records not read from a config file are named by their
// index in the list (read from one, by its line: TestZoneProblemsNamedWhere
// TheConfigHasThem); before, by the line of the records joined
// ("records of zc.test. line 4", records[3]). A problem in an included
// file's syntax names the file by its absolute path: before, by the path
// without its leading slash ("tmp/zones/bad.zone").
func TestZoneProblemsNameFileAndLine(t *testing.T) {
	dir := t.TempDir()
	inc := filepath.Join(dir, "more.zone")
	if err := os.WriteFile(inc, []byte("; more\n\n@ IN SOA ns1 hostmaster 2 7200 3600 1209600 300\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.zone")
	if err := os.WriteFile(bad, []byte("www IN A 192.0.2.1\nbad IN A 300.0.0.1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, text, want string }{
		{"a second SOA", zc("@ IN SOA ns1 hostmaster 2 7200 3600 1209600 300"), "%s line 6: zc.test.: a second SOA"},
		{"a second SOA, over lines", zc("; x", "", "@ IN SOA ns1 hostmaster (", "  2 7200", "  3600 1209600 300 )"), "%s line 8: zc.test.: a second SOA"},
		{"a SOA below the apex", zc("sub IN SOA ns1 hostmaster 2 7200 3600 1209600 300"), "%s line 6: sub.zc.test.: a SOA not at the apex"},
		{"a name out of the zone", zc("www IN A 192.0.2.1", "$ORIGIN other.test.", "www IN A 192.0.2.1"), "%s line 8: www.other.test. is outside the zone"},
		{"data below a DNAME", zc("dn IN DNAME tgt", "", "x.dn IN A 192.0.2.1"), "%s line 8: x.dn.zc.test. is below the DNAME at dn.zc.test."},
		{"a second SOA in an include", zc("$INCLUDE " + inc), inc + " line 3: zc.test.: a second SOA"},
		{"a bad address in an include", zc("$INCLUDE " + bad), "zone zc.test.: " + bad + ": dns: bad A A at line: 2:"},
		{"an include of itself", zc("$INCLUDE zc.test.zone"), "zone zc.test.: %s: dns: too deeply nested $INCLUDE at line: 6:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, file, err := loadZoneText(t, tc.text)
			want := strings.ReplaceAll(tc.want, "%s", file)
			t.Logf("%v", err)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("%v, want %q", err, want)
			}
		})
	}
	_, err := loadZone(configs.Zone{Origin: "zc.test", Records: []string{"@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 300", "@ 3600 IN NS ns1", "www 3600 IN CNAME x.example.", "www 3600 IN TXT \"x\""}}, configs.RateLimit{})
	if want := "zone zc.test.: records[3]: www.zc.test. has a CNAME and TXT"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("%v, want %q", err, want)
	}
}

// A zone is checked whole: every problem of it is said, each at its line,
// and the zone refused, as nsd-checkzone and kzonecheck report a zone.
// Before, its load stopped at the first, and an operator fixed a zone of
// five problems in five runs. A syntax problem ends the reading (the
// parser goes no further): the problems before it are said with it, and
// nothing of what the zone lacks, its SOA not read yet.
func TestZoneLoadSaysEveryProblem(t *testing.T) {
	z, file, err := loadZoneText(t, zc(
		"www IN CNAME target.example.", // line 6
		"www IN A 192.0.2.80",
		`chaos CH TXT "x"`,
		"@ IN SOA ns1 hostmaster 2 7200 3600 1209600 300",
		"dn IN DNAME tgt",
		"x.dn IN A 192.0.2.1", // line 11
		"out.example. IN A 192.0.2.1"))
	t.Logf("%v", err)
	if z != nil || err == nil {
		t.Fatalf("a zone of six problems loaded")
	}
	want := []string{
		"line 7: www.zc.test. has a CNAME and A",
		"line 8: chaos.zc.test. TXT of class CH",
		"line 9: zc.test.: a second SOA",
		"line 12: out.example. is outside the zone",
		"line 11: x.dn.zc.test. is below the DNAME at dn.zc.test.",
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Errorf("%d problems said, want %d", len(lines), len(want))
	}
	for i, w := range want {
		if w = "zone zc.test.: " + file + " " + w; i >= len(lines) || !strings.HasPrefix(lines[i], w) {
			t.Errorf("problem %d: want %q", i, w)
		}
	}

	// A syntax problem after a problem: both, and no "no SOA".
	_, file, err = loadZoneText(t, "$TTL 3600\nwww IN CNAME x.example.\nwww IN A 192.0.2.1\nbad IN A 300.0.0.1\n@ IN SOA ns1 hostmaster 2 7200 3600 1209600 300\n")
	t.Logf("%v", err)
	lines = strings.Split(fmt.Sprint(err), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], file+" line 3: www.zc.test. has a CNAME and A") || !strings.Contains(lines[1], file+": dns: bad A A at line: 4:") {
		t.Errorf("a problem, then a syntax problem: %v, want both, and nothing after", err)
	}
}

// A zone's problems are said up to maxZoneProblems, the rest counted: a
// zone of a million bad records is not a million lines of log.
func TestZoneLoadSaysAHundredProblemsAndCountsTheRest(t *testing.T) {
	var records []string
	for i := range maxZoneProblems + 50 {
		records = append(records, fmt.Sprintf(`c%d CH TXT "x"`, i))
	}
	z, _, err := loadZoneText(t, zc(records...))
	if z != nil || err == nil {
		t.Fatalf("a zone of %d problems loaded", len(records))
	}
	lines := strings.Split(err.Error(), "\n")
	t.Logf("%d lines, the last two:\n%s", len(lines), strings.Join(lines[max(len(lines)-2, 0):], "\n"))
	if len(lines) != maxZoneProblems+1 || !strings.Contains(lines[maxZoneProblems-1], "c99.zc.test. TXT of class CH") ||
		!strings.Contains(lines[maxZoneProblems], "zone zc.test.: and 50 more problems, not said (the first 100 are)") {
		t.Errorf("%d lines, want %d problems and how many more", len(lines), maxZoneProblems)
	}
}

// A zone read from a config file is named where the file has it, as
// configs.Load names every other problem (FILE:LINE: field.path: …): an
// inline record by the config file's line of it and its path, a zone
// file's record by the zone file's line and the field naming the file, a
// managed name by its own. Before, an inline record was named by its index
// in the list as a line ("records of ringlb.test. line 4", line 11 of the
// file), and none said its config file or field path.
func TestZoneProblemsNamedWhereTheConfigHasThem(t *testing.T) {
	dir := t.TempDir()
	zoneFile := filepath.Join(dir, "zc.test.zone")
	if err := os.WriteFile(zoneFile, []byte(zc("www IN CNAME x.example.", "www IN A 192.0.2.1")), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "g.yaml")
	if err := os.WriteFile(path, []byte(`cluster: { bind: 127.0.0.1:0 }
gslb:
  listen: 127.0.0.1:0
  zones:
    - origin: ringlb.test
      records:
        - "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60"
        - "ns1 3600 IN A 127.0.0.1"
        - "www 3600 IN CNAME ns1"
        - "www 3600 IN A 127.0.0.1"
        - "sub 3600 IN NS ns.elsewhere.example."
    - origin: zc.test
      file: zc.test.zone
  names:
    - name: ide.sub.ringlb.test
      regions:
        east: { serve_mode: always, members: [ { name: bal-1, address: 192.0.2.1 } ] }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := configs.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Check(cfg.GSLB)
	t.Logf("%v", err)
	for _, want := range []string{
		path + ":10: gslb.zones[0].records[3]: www.ringlb.test. has a CNAME and A",
		path + ":13: gslb.zones[1].file: " + zoneFile + " line 7: www.zc.test. has a CNAME and A",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q", want)
		}
	}
	// Without the zones' problems, the managed name's.
	cfg.GSLB.Zones[0].Records = slices.Delete(cfg.GSLB.Zones[0].Records, 3, 4)
	cfg.GSLB.Zones = cfg.GSLB.Zones[:1]
	_, err = Check(cfg.GSLB)
	t.Logf("%v", err)
	if want := path + ":15: gslb.names[0].name: ide.sub.ringlb.test. is at or below the delegation sub.ringlb.test. of zone ringlb.test. (its NS records in " + path + ":6, gslb.zones[0].records)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("want %q", want)
	}
	// Records changed since they were read are not named by lines that
	// hold others: by their index.
	cfg.GSLB.Zones[0].Records = append(slices.Clone(cfg.GSLB.Zones[0].Records), "ns1 3600 IN CNAME ns2")
	_, err = Check(cfg.GSLB)
	t.Logf("%v", err)
	if want := "zone ringlb.test.: records[4]: ns1.ringlb.test. has a CNAME and A"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("want %q", want)
	}
}

// BenchmarkLoadZone loads a zone file of 100,000 names (an A and a TXT
// each): what a start or a reload of a big zone costs, its checks included.
func BenchmarkLoadZone(b *testing.B) {
	var text strings.Builder
	text.WriteString(zcHead)
	for i := range 100000 {
		fmt.Fprintf(&text, "h%d 300 IN A 192.0.%d.%d\nh%d IN TXT \"host %d\"\n", i, i>>8&255, i&255, i, i)
	}
	file := filepath.Join(b.TempDir(), "zc.test.zone")
	if err := os.WriteFile(file, []byte(text.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := loadZone(configs.Zone{Origin: "zc.test", File: file}, configs.RateLimit{}); err != nil {
			b.Fatal(err)
		}
	}
}

// A zone file may write any octet of a label as \DDD or \X (RFC 1035 5.1):
// parent.test's sp\032ace, dot\046ted and \066ig are the names "sp ace",
// "dot.ted" (one label) and "Big", and its targets spell them otherwise
// (sp\ ace, \066IG, BIG, ns\ x.esc for ns\032x.esc). Names are keyed as
// miekg/dns writes the names it unpacks from questions (sp\ ace, dot\.ted,
// big), in lower case: asked in any case, each is answered, as NSD and Knot
// answer (TestTreeOfZonesAgainstNSDAndKnot); a CNAME to one is followed,
// an MX target's addresses and a name server's glue are added. The answer's
// owner is the zone's name in lower case, as every owner of a zone. Before,
// the names were keyed as written (sp\032ace, \066ig) and looked up as
// unpacked: 7 of 7 questions for them were NXDOMAIN — which, by RFC 8020,
// denies every name below too — and 4 of 5 targets were not found (a CNAME
// chain NXDOMAIN, an MX answer without addresses, a referral without its
// glue); the CNAME to \066IG was, spelt with its owner's escape.
func TestEscapedNamesAnswered(t *testing.T) {
	s := startGSLB(t, treeConfig(t, treeZones(t, nil), nil, "parent.test"))
	for _, c := range []struct {
		name  string
		qtype uint16
		owner string // of the answer's last record, as the zone keeps it
		want  string // the addresses in the answer, or additional section for MX and referrals
	}{
		{`sp\ ace.parent.test.`, dns.TypeA, `sp\ ace.parent.test.`, "192.0.2.90"},
		{`Sp\ ACE.parent.test.`, dns.TypeA, `sp\ ace.parent.test.`, "192.0.2.90"},
		{`sp\032ace.parent.test.`, dns.TypeA, `sp\ ace.parent.test.`, "192.0.2.90"},
		{`dot\.ted.parent.test.`, dns.TypeA, `dot\.ted.parent.test.`, "192.0.2.91"},
		{`big.parent.test.`, dns.TypeA, "big.parent.test.", "192.0.2.92"},
		{`BIG.parent.test.`, dns.TypeA, "big.parent.test.", "192.0.2.92"},
		{`bIg.parent.test.`, dns.TypeA, "big.parent.test.", "192.0.2.92"},
		{`to-sp.parent.test.`, dns.TypeA, `sp\ ace.parent.test.`, "192.0.2.90"},
		{`to-big.parent.test.`, dns.TypeA, "big.parent.test.", "192.0.2.92"},
		{`mx.parent.test.`, dns.TypeMX, "mx.parent.test.", "192.0.2.90,192.0.2.92"},
		{`host.esc.parent.test.`, dns.TypeA, "", "192.0.2.93"},
	} {
		for _, network := range []string{"udp", "tcp"} {
			m := query(t, s, network, c.name, c.qtype, nil)
			got := answerIPs(m)
			if c.qtype == dns.TypeMX || c.owner == "" {
				got = answerIPs(&dns.Msg{Answer: m.Extra})
			}
			if m.Rcode != dns.RcodeSuccess || got != c.want {
				t.Errorf("%s %s %s: want NOERROR %s; got %s %q\n%v", network, c.name, dns.TypeToString[c.qtype], c.want, dns.RcodeToString[m.Rcode], got, m)
			}
		}
		if c.owner == "" {
			continue
		}
		// The owner as made, before miekg/dns compresses it against the
		// question as asked; the question as it arrives, unpacked.
		r := new(dns.Msg).SetQuestion(c.name, c.qtype)
		if b, err := r.Pack(); err != nil || r.Unpack(b) != nil {
			t.Fatal(c.name, err)
		}
		m := s.answer(s.state.Load(), r, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, true, nil)
		if len(m.Answer) == 0 || m.Answer[len(m.Answer)-1].Header().Name != c.owner {
			t.Errorf("%s %s: want the answer owned by %s; got %v", c.name, dns.TypeToString[c.qtype], c.owner, m.Answer)
		}
	}
	// dot\.ted is one label: dot.ted, two, does not exist.
	if m := query(t, s, "udp", "dot.ted.parent.test.", dns.TypeA, nil); m.Rcode != dns.RcodeNameError {
		t.Errorf("dot.ted.parent.test. A: want NXDOMAIN; got\n%v", m)
	}
}
