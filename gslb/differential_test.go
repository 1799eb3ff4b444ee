//go:build linux

package gslb

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The differential test: an operator replacing NSD (or Knot) with ringlb
// expects the same answers for the static part of a zone. The same zone
// files are served by a peer and by ringlb; the same queries go to both,
// over UDP and TCP, and the answers are compared (compareDNS; diffNormal
// says what is compared and how). The corpus is one for every peer; what
// is left out for a peer, and why, is the peer's own (diffPeer).

// diffZone is the zone both servers serve. Every name is here for a query
// of diffCorpus.
var diffZone = fmt.Sprintf(`$ORIGIN diff.test.
$TTL 3600
@          IN SOA  ns1 hostmaster 2026120501 7200 3600 1209600 300
@          IN NS   ns1
@          IN NS   ns2.elsewhere.example.
@          IN NS   ns.sub
@          IN NS   ns.host.wild
@          IN A    192.0.2.1
@          IN MX   10 mail
@          IN MX   20 mx.elsewhere.example.
@          IN CAA  0 issue "ca.example"
_sip._tcp  IN SRV  10 5 5060 www
unknown    IN TYPE65280 \# 3 010203
ns1        IN A    192.0.2.53
ns1        IN AAAA 2001:db8::53
mail       IN A    192.0.2.25
www    300 IN A    192.0.2.80
www    300 IN A    192.0.2.81
www        IN AAAA 2001:db8::80
txt        IN TXT  "plain" "with space" "semi;colon" "quote\"inside" "back\\slash" "\000\255\010 octets" "" "UPPER lower"
txt        IN TXT  "a second record"
long-txt   IN TXT  "%[1]s"
cname1     IN CNAME cname2
cname2     IN CNAME www
out        IN CNAME target.elsewhere.example.
dangling   IN CNAME nothing-here
loop1      IN CNAME loop2
loop2      IN CNAME loop1
to-wild    IN CNAME host.wild
*.wild     IN A    192.0.2.99
*.wild     IN TXT  "from the wildcard"
sub.wild   IN A    192.0.2.98
*.wc       IN CNAME www
a.b.ent    IN A    192.0.2.7
MiXeD      IN A    192.0.2.77
mixed      IN A    192.0.2.78
UPPER      IN TXT  "owner in upper case"
Alias      IN CNAME WWW
a\.dot     IN A    192.0.2.46
ttls   60  IN A    192.0.2.60
ttls   60  IN A    192.0.2.61
%[2]sbig-txt    IN TXT  "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb1"
big-txt    IN TXT  "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2"
big-txt    IN TXT  "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb3"
big-txt    IN TXT  "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb4"
big-txt    IN TXT  "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb5"
big-txt    IN TXT  "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb6"
to-big     IN CNAME big-txt
to-apex    IN CNAME @
sub        IN NS   ns.sub
ns.sub     IN A    192.0.2.153
ns.sub     IN AAAA 2001:db8::153
to-sub     IN CNAME host.sub
inner.sub  IN NS   ns.inner.sub
sib        IN NS   ns1
sib        IN NS   ns.sub
sib        IN NS   ns.elsewhere.example.
secure     IN NS   ns1
secure     IN DS   12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
dn     600 IN DNAME tgt
dn         IN A    192.0.2.110
tgt        IN A    192.0.2.111
host.tgt   IN A    192.0.2.112
host.tgt   IN TXT  "below the DNAME's target"
a.b.tgt    IN TXT  "two below the DNAME's target"
x.y.z.tgt  IN A    192.0.2.113
alias.tgt  IN CNAME www
DnCase     IN DNAME TgT
dn-out     IN DNAME elsewhere.example.
dn-wild    IN DNAME wild
dn-dn      IN DNAME dn
dn-apex    IN DNAME @
to-dn      IN CNAME host.dn
to-dn-nx   IN CNAME nope.dn
dl1        IN DNAME dl2
dl2        IN DNAME dl1
dn-long    IN DNAME %[3]s
`, strings.Repeat("a", 255), diffBig(), diffLongName[52:])

// addZone is served by ringlb and by an NSD without minimal-responses,
// which adds the addresses of the targets of an answer's MX and SRV records
// to its additional section (minimal-responses does so for NS answers and
// referrals only). Its apex NS is out of the zone, so that what that NSD
// adds to every positive answer — the apex NS in authority — brings no
// addresses with it.
var addZone = `$ORIGIN add.test.
$TTL 3600
@          IN SOA  ns.elsewhere.example. hostmaster 2026120501 7200 3600 1209600 300
@          IN NS   ns.elsewhere.example.
@          IN MX   10 mail
@          IN MX   15 MAIL
@          IN MX   20 mx.elsewhere.example.
@          IN MX   30 alias
@          IN MX   40 host.wild
@          IN MX   50 mx.sub
@          IN MX   60 none
@          IN MX   70 sub
@          IN MX   80 ent
@          IN MX   90 mail.diff.test.
mail       IN A    192.0.2.25
mail       IN AAAA 2001:db8::25
alias      IN CNAME mail
*.wild     IN A    192.0.2.99
*.wild     IN AAAA 2001:db8::99
sub        IN NS   ns.sub
sub        IN A    192.0.2.150
ns.sub     IN A    192.0.2.153
mx.sub     IN A    192.0.2.154
a.ent      IN A    192.0.2.7
_sip._tcp  IN SRV  10 5 5060 mail
_sip._tcp  IN SRV  20 5 5060 host.wild
_sip._tcp  IN SRV  30 5 5060 mx.sub
_sip._tcp  IN SRV  40 5 5060 alias
_sip._tcp  IN SRV  50 5 5060 sip.elsewhere.example.
_sip._tcp  IN SRV  60 5 5060 mail
_sip._udp  IN SRV  0 0 0 .
to-mx      IN CNAME @
*.mxw      IN MX   10 mail
only-a     IN MX   10 a.ent
big        IN MX   10 b1
big        IN MX   20 b2
big        IN MX   30 b3
` + addBig

// addBig is the address sets of big.add.test.'s MX targets: in 512 bytes,
// b1's 20 A records (320 bytes) leave no room for b2's 8 (128), whether or
// not the apex NS (34) is there, and room for b3's 2, but not for b3's
// AAAA, as NSD leaves out every AAAA RRset once an A RRset was left out.
// In 700, every A RRset and b3's AAAA, not b1's 10 (280).
var addBig = func() string {
	var b strings.Builder
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&b, "b1         IN A    198.51.100.%d\n", i)
	}
	for i := 1; i <= 10; i++ {
		fmt.Fprintf(&b, "b1         IN AAAA 2001:db8::1:%d\n", i)
	}
	for i := 1; i <= 8; i++ {
		fmt.Fprintf(&b, "b2         IN A    198.51.101.%d\n", i)
	}
	b.WriteString("b3         IN A    198.51.102.1\nb3         IN A    198.51.102.2\nb3         IN AAAA 2001:db8::3:1\n")
	return b.String()
}()

// diffBig is 60 A records at big.diff.test. (about 1 KB: no fit in 512
// bytes), written out as NSD reads no $GENERATE.
func diffBig() string {
	var b strings.Builder
	for i := 1; i <= 60; i++ {
		fmt.Fprintf(&b, "big        IN A    198.51.100.%d\n", i)
	}
	return b.String()
}

// diffLongName is a name of 255 octets on the wire (the most a name may
// have): a 51-octet label and three of 63 above diff.test. (11 octets).
var diffLongName = strings.Repeat("l", 51) + "." + strings.Repeat("m", 63) + "." + strings.Repeat("n", 63) + "." + strings.Repeat("o", 63) + ".diff.test."

// diffQuery is one query of the corpus: a question, and what is done to
// the message after SetQuestion.
type diffQuery struct {
	what  string // the case's name, unique: a peer's deviations are keyed by it
	name  string
	qtype uint16
	edit  func(*dns.Msg)
	// full: asked of the peer serving answers with the addresses of MX and
	// SRV targets (NSD without minimal-responses; diffPeer.start).
	full bool
	// udpOnly, when set, says why the query is sent over UDP only, whatever
	// the peer.
	udpOnly string
}

// diffDeviation is what of one case of the corpus is not compared with one
// peer, and why: a difference ringlb documents (gslb/README.md), a
// behaviour of the peer's the RFCs do not call for, or answers the RFCs
// allow both of.
type diffDeviation struct {
	// skip, when set, says why the answers are not compared at all;
	// skipUDP and skipTCP: over that transport only.
	skip, skipUDP, skipTCP string
	// ignore names the parts of the answers not compared (diffNormal's
	// "question", "rd", "cd", "aa", "additional": the additional section
	// but the OPT; "additional-below-cut": the additional records of
	// names at or below a delegation; "additional-repeats": an additional
	// record's repeats; "apex-ns": the zone's NS RRset in the authority
	// section of a positive answer), and why.
	ignore []string
	why    string
}

func edns(size uint16, do bool) func(*dns.Msg) {
	return func(m *dns.Msg) { m.SetEdns0(size, do) }
}

// cdSet is edit (when not nil), then CD set.
func cdSet(edit func(*dns.Msg)) func(*dns.Msg) {
	return func(m *dns.Msg) {
		if edit != nil {
			edit(m)
		}
		m.CheckingDisabled = true
	}
}

func diffCorpus() []diffQuery {
	q := func(what, name string, qtype uint16) diffQuery {
		return diffQuery{what: what, name: name, qtype: qtype}
	}
	qe := func(what, name string, qtype uint16, edit func(*dns.Msg)) diffQuery {
		return diffQuery{what: what, name: name, qtype: qtype, edit: edit}
	}
	// full asks the peer that adds addresses for MX and SRV targets.
	full := func(d diffQuery) diffQuery {
		d.full = true
		return d
	}
	return []diffQuery{
		q("apex SOA", "diff.test.", dns.TypeSOA),
		q("apex NS", "diff.test.", dns.TypeNS),
		qe("apex NS, DO", "diff.test.", dns.TypeNS, edns(1232, true)),
		q("NS through a CNAME", "to-apex.diff.test.", dns.TypeNS),
		q("apex A", "diff.test.", dns.TypeA),
		q("apex MX", "diff.test.", dns.TypeMX),
		q("apex NODATA AAAA", "diff.test.", dns.TypeAAAA),
		q("apex NODATA TXT", "diff.test.", dns.TypeTXT),
		q("apex DNSKEY (unsigned)", "diff.test.", dns.TypeDNSKEY),
		q("apex RRSIG without DO", "diff.test.", dns.TypeRRSIG),
		q("apex NSEC without DO", "diff.test.", dns.TypeNSEC),
		q("apex DS", "diff.test.", dns.TypeDS),
		q("apex CAA", "diff.test.", dns.TypeCAA),
		q("SRV", "_sip._tcp.diff.test.", dns.TypeSRV),
		q("unknown type (RFC 3597)", "unknown.diff.test.", 65280),
		q("unknown type's name NODATA", "unknown.diff.test.", dns.TypeA),
		q("apex unknown type", "diff.test.", 65280),
		q("A with AAAA", "ns1.diff.test.", dns.TypeA),
		q("AAAA", "ns1.diff.test.", dns.TypeAAAA),
		q("two A", "www.diff.test.", dns.TypeA),
		q("AAAA of www", "www.diff.test.", dns.TypeAAAA),
		q("NODATA MX", "www.diff.test.", dns.TypeMX),
		q("NODATA unknown type", "www.diff.test.", 65280),
		q("RRSIG without DO at a name", "www.diff.test.", dns.TypeRRSIG),
		q("TXT odd strings", "txt.diff.test.", dns.TypeTXT),
		q("TXT 255 octets", "long-txt.diff.test.", dns.TypeTXT),
		q("NXDOMAIN", "nope.diff.test.", dns.TypeA),
		q("NXDOMAIN below an existing name", "nope.www.diff.test.", dns.TypeA),
		q("NXDOMAIN two below an existing name", "a.nope.www.diff.test.", dns.TypeAAAA),
		q("CNAME chain in zone", "cname1.diff.test.", dns.TypeA),
		q("CNAME chain, type of no target", "cname1.diff.test.", dns.TypeMX),
		q("CNAME asked", "cname1.diff.test.", dns.TypeCNAME),
		q("CNAME second link", "cname2.diff.test.", dns.TypeAAAA),
		q("CNAME out of zone", "out.diff.test.", dns.TypeA),
		q("CNAME out of zone, CNAME asked", "out.diff.test.", dns.TypeCNAME),
		q("CNAME to a name that does not exist", "dangling.diff.test.", dns.TypeA),
		q("CNAME loop", "loop1.diff.test.", dns.TypeA),
		q("CNAME to a wildcard's name", "to-wild.diff.test.", dns.TypeA),
		q("CNAME to a big set", "to-big.diff.test.", dns.TypeTXT),
		q("wildcard A", "host.wild.diff.test.", dns.TypeA),
		q("wildcard TXT", "host.wild.diff.test.", dns.TypeTXT),
		q("wildcard NODATA", "host.wild.diff.test.", dns.TypeAAAA),
		q("wildcard two labels down", "a.b.wild.diff.test.", dns.TypeA),
		q("the wildcard's own name", "*.wild.diff.test.", dns.TypeA),
		q("the wildcard's own name NODATA", "*.wild.diff.test.", dns.TypeMX),
		q("below the wildcard's own name", "x.*.wild.diff.test.", dns.TypeA),
		q("the wildcard's parent (ENT)", "wild.diff.test.", dns.TypeA),
		q("existing name beside the wildcard", "sub.wild.diff.test.", dns.TypeA),
		q("existing name beside the wildcard NODATA", "sub.wild.diff.test.", dns.TypeTXT),
		q("below a name beside the wildcard (no wildcard)", "x.sub.wild.diff.test.", dns.TypeA),
		q("wildcard CNAME", "host.wc.diff.test.", dns.TypeA),
		q("wildcard CNAME asked", "host.wc.diff.test.", dns.TypeCNAME),
		q("empty non-terminal", "ent.diff.test.", dns.TypeA),
		q("empty non-terminal, second level", "b.ent.diff.test.", dns.TypeTXT),
		q("below the empty non-terminal", "a.b.ent.diff.test.", dns.TypeA),
		q("NXDOMAIN below an empty non-terminal", "x.ent.diff.test.", dns.TypeA),
		q("names differing in case, one RRset", "mixed.diff.test.", dns.TypeA),
		q("mixed-case query", "MiXeD.DiFf.TeSt.", dns.TypeA),
		q("upper-case owner asked in lower case", "upper.diff.test.", dns.TypeTXT),
		q("upper-case query", "WWW.DIFF.TEST.", dns.TypeA),
		// Fits the buffer only with the answer's names compressed into the
		// question, whatever its case, as NSD and Knot compress them
		// (ringlb's were truncated: gslb/README.md).
		qe("upper-case query, an answer that fits compressed", "BIG-TXT.DIFF.TEST.", dns.TypeTXT, edns(736, false)),
		qe("upper-case query, a CNAME and a set that fit compressed", "TO-BIG.DIFF.TEST.", dns.TypeTXT, edns(760, false)),
		q("mixed-case wildcard query", "HoSt.WiLd.diff.test.", dns.TypeA),
		q("mixed-case NXDOMAIN", "NoPe.Diff.Test.", dns.TypeA),
		q("CNAME written in upper case", "alias.diff.test.", dns.TypeA),
		q("escaped dot in a label", `a\.dot.diff.test.`, dns.TypeA),
		q("a.dot as two labels", "a.dot.diff.test.", dns.TypeA),
		q("own TTLs", "ttls.diff.test.", dns.TypeA),
		q("name of 255 octets", diffLongName, dns.TypeA),
		q("name of 255 octets NODATA", diffLongName, dns.TypeTXT),
		q("name of 255 octets NXDOMAIN", "x"+diffLongName[1:], dns.TypeA),
		q("delegation NS", "sub.diff.test.", dns.TypeNS),
		q("delegation A", "sub.diff.test.", dns.TypeA),
		q("below a delegation", "host.sub.diff.test.", dns.TypeA),
		q("below a delegation, DS", "host.sub.diff.test.", dns.TypeDS),
		q("below a delegation, ANY", "deep.host.sub.diff.test.", dns.TypeANY),
		q("glue", "ns.sub.diff.test.", dns.TypeA),
		q("a CNAME into a delegation", "to-sub.diff.test.", dns.TypeA),
		q("a delegation with sibling and outside name servers", "sib.diff.test.", dns.TypeA),
		q("a delegation with a DS", "secure.diff.test.", dns.TypeA),
		q("DS at a delegation that has one", "secure.diff.test.", dns.TypeDS),
		q("a cut below a cut", "inner.sub.diff.test.", dns.TypeA),
		q("DS at a delegation", "sub.diff.test.", dns.TypeDS),
		q("ANY at the apex", "diff.test.", dns.TypeANY),
		q("ANY at a name", "www.diff.test.", dns.TypeANY),
		q("ANY at a name that does not exist", "nope.diff.test.", dns.TypeANY),
		// ANY where a CNAME is: its RRset, not followed (RFC 8482 4.2
		// allows the HINFO only where no CNAME is).
		q("ANY at a CNAME", "cname1.diff.test.", dns.TypeANY),
		qe("ANY at a CNAME, DO", "cname1.diff.test.", dns.TypeANY, edns(1232, true)),
		q("ANY at a wildcard CNAME", "host.wc.diff.test.", dns.TypeANY),
		q("ANY at a CNAME out of the zone", "out.diff.test.", dns.TypeANY),
		q("ANY below a DNAME, at a CNAME", "alias.dn.diff.test.", dns.TypeANY),
		// DNAME (RFC 6672): the DNAME, a CNAME synthesised from it (the
		// DNAME's TTL) and the chase of its target as of a CNAME's, the
		// rcode the last name's.
		q("DNAME asked", "dn.diff.test.", dns.TypeDNAME),
		q("A at a DNAME's own name", "dn.diff.test.", dns.TypeA),
		q("NODATA at a DNAME's own name", "dn.diff.test.", dns.TypeNS),
		q("CNAME asked at a DNAME's own name", "dn.diff.test.", dns.TypeCNAME),
		q("below a DNAME, target in zone", "host.dn.diff.test.", dns.TypeA),
		q("below a DNAME, TXT", "host.dn.diff.test.", dns.TypeTXT),
		q("below a DNAME, NODATA at the target", "host.dn.diff.test.", dns.TypeAAAA),
		q("two below a DNAME", "a.b.dn.diff.test.", dns.TypeTXT),
		q("three below a DNAME", "x.y.z.dn.diff.test.", dns.TypeA),
		q("below a DNAME, target an ENT", "b.dn.diff.test.", dns.TypeA),
		q("below a DNAME, target does not exist", "nope.dn.diff.test.", dns.TypeA),
		q("below a DNAME, CNAME asked", "host.dn.diff.test.", dns.TypeCNAME),
		q("below a DNAME, DNAME asked", "host.dn.diff.test.", dns.TypeDNAME),
		q("below a DNAME, ANY", "host.dn.diff.test.", dns.TypeANY),
		q("DNAME then CNAME", "alias.dn.diff.test.", dns.TypeA),
		q("CNAME then DNAME", "to-dn.diff.test.", dns.TypeA),
		q("CNAME then DNAME to a name that does not exist", "to-dn-nx.diff.test.", dns.TypeA),
		q("DNAME then DNAME", "host.dn-dn.diff.test.", dns.TypeA),
		q("DNAME to the apex", "www.dn-apex.diff.test.", dns.TypeA),
		q("DNAME to the apex, then CNAME chain", "cname1.dn-apex.diff.test.", dns.TypeA),
		q("DNAME to the apex, then itself", "host.dn.dn-apex.diff.test.", dns.TypeA),
		q("DNAME out of zone", "host.dn-out.diff.test.", dns.TypeA),
		q("DNAME to a wildcard's parent", "host.dn-wild.diff.test.", dns.TypeA),
		q("DNAME to a wildcard's parent, NODATA", "host.dn-wild.diff.test.", dns.TypeMX),
		q("DNAME loop", "a.dl1.diff.test.", dns.TypeA),
		q("DNAME written in mixed case", "host.dncase.diff.test.", dns.TypeA),
		q("mixed-case query below a DNAME", "HoSt.Dn.DiFf.TeSt.", dns.TypeA),
		q("mixed-case query at a DNAME", "DN.diff.test.", dns.TypeDNAME),
		q("DNAME synthesis too long (YXDOMAIN)", strings.Repeat("x", 60)+".dn-long.diff.test.", dns.TypeA),
		q("DNAME synthesis just fits", strings.Repeat("x", 40)+".dn-long.diff.test.", dns.TypeA),
		qe("below a DNAME, DO", "host.dn.diff.test.", dns.TypeA, edns(1232, true)),
		qe("below a DNAME, target does not exist, DO", "nope.dn.diff.test.", dns.TypeA, edns(1232, true)),
		qe("below a DNAME, EDNS 512", "host.dn.diff.test.", dns.TypeA, edns(512, false)),
		q("big set, no EDNS (TC over UDP)", "big.diff.test.", dns.TypeA),
		q("big TXT, no EDNS (TC over UDP)", "big-txt.diff.test.", dns.TypeTXT),
		qe("big set, EDNS 512", "big.diff.test.", dns.TypeA, edns(512, false)),
		qe("big set, EDNS 1232", "big.diff.test.", dns.TypeA, edns(1232, false)),
		qe("big set, EDNS 4096", "big.diff.test.", dns.TypeA, edns(4096, false)),
		qe("big TXT, EDNS 4096 DO", "big-txt.diff.test.", dns.TypeTXT, edns(4096, true)),
		qe("EDNS 512", "www.diff.test.", dns.TypeA, edns(512, false)),
		qe("EDNS below 512", "www.diff.test.", dns.TypeA, edns(100, false)),
		qe("EDNS 4096", "www.diff.test.", dns.TypeA, edns(4096, false)),
		qe("EDNS 65535 DO", "www.diff.test.", dns.TypeA, edns(65535, true)),
		qe("EDNS DO NXDOMAIN", "nope.diff.test.", dns.TypeA, edns(1232, true)),
		qe("EDNS DO NODATA", "www.diff.test.", dns.TypeMX, edns(1232, true)),
		qe("EDNS DO RRSIG", "www.diff.test.", dns.TypeRRSIG, edns(1232, true)),
		qe("EDNS DO DNSKEY", "diff.test.", dns.TypeDNSKEY, edns(1232, true)),
		qe("EDNS version 1 (BADVERS)", "www.diff.test.", dns.TypeA, func(m *dns.Msg) {
			m.SetEdns0(1232, false)
			m.IsEdns0().SetVersion(1)
		}),
		qe("EDNS version 1 (BADVERS) for another zone", "example.org.", dns.TypeA, func(m *dns.Msg) {
			m.SetEdns0(1232, false)
			m.IsEdns0().SetVersion(1)
		}),
		qe("EDNS unknown option", "www.diff.test.", dns.TypeA, func(m *dns.Msg) {
			m.SetEdns0(1232, false)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_LOCAL{Code: 65001, Data: []byte{1, 2, 3}})
		}),
		qe("RD clear", "www.diff.test.", dns.TypeA, func(m *dns.Msg) { m.RecursionDesired = false }),
		qe("CD set", "www.diff.test.", dns.TypeA, func(m *dns.Msg) { m.CheckingDisabled = true }),
		// CD in every kind of answer: an authoritative server clears it
		// (RFC 4035 3.1.6).
		qe("CD set, DO", "www.diff.test.", dns.TypeA, cdSet(edns(1232, true))),
		qe("CD set, NXDOMAIN", "nope.diff.test.", dns.TypeA, cdSet(nil)),
		qe("CD set, NODATA", "www.diff.test.", dns.TypeMX, cdSet(nil)),
		qe("CD set, a referral", "host.sub.diff.test.", dns.TypeA, cdSet(nil)),
		qe("CD set, another zone", "example.org.", dns.TypeA, cdSet(nil)),
		qe("CD set, big set, no EDNS (TC over UDP)", "big.diff.test.", dns.TypeA, cdSet(nil)),
		qe("CD set, EDNS version 1 (BADVERS)", "www.diff.test.", dns.TypeA, cdSet(func(m *dns.Msg) {
			m.SetEdns0(1232, false)
			m.IsEdns0().SetVersion(1)
		})),
		qe("CD set, opcode STATUS", "www.diff.test.", dns.TypeA, cdSet(func(m *dns.Msg) { m.Opcode = dns.OpcodeStatus })),
		qe("CD set, AXFR", "diff.test.", dns.TypeAXFR, cdSet(nil)),
		qe("AD set", "www.diff.test.", dns.TypeA, func(m *dns.Msg) { m.AuthenticatedData = true }),
		qe("opcode IQUERY", "www.diff.test.", dns.TypeA, func(m *dns.Msg) { m.Opcode = dns.OpcodeIQuery }),
		qe("opcode STATUS", "www.diff.test.", dns.TypeA, func(m *dns.Msg) { m.Opcode = dns.OpcodeStatus }),
		qe("opcode 3 (unassigned)", "www.diff.test.", dns.TypeA, func(m *dns.Msg) { m.Opcode = 3 }),
		qe("opcode UPDATE", "diff.test.", dns.TypeSOA, func(m *dns.Msg) { m.Opcode = dns.OpcodeUpdate }),
		qe("opcode 15", "www.diff.test.", dns.TypeA, func(m *dns.Msg) { m.Opcode = 15 }),
		qe("opcode IQUERY, RD clear", "www.diff.test.", dns.TypeA, func(m *dns.Msg) { m.Opcode, m.RecursionDesired = dns.OpcodeIQuery, false }),
		qe("opcode NOTIFY", "diff.test.", dns.TypeSOA, func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }),
		{what: "a response (QR set): no answer", name: "www.diff.test.", qtype: dns.TypeA, edit: func(m *dns.Msg) { m.Response = true },
			udpOnly: "compared over UDP only: each side's silence costs the client's timeout"},
		q("another zone", "example.org.", dns.TypeA),
		q("the parent zone", "test.", dns.TypeSOA),
		q("the root", ".", dns.TypeNS),
		q("a name ending like the zone", "xdiff.test.", dns.TypeA),
		qe("class CH", "diff.test.", dns.TypeSOA, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }),
		qe("class HS", "www.diff.test.", dns.TypeA, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassHESIOD }),
		qe("class ANY", "www.diff.test.", dns.TypeA, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassANY }),
		qe("class NONE", "www.diff.test.", dns.TypeA, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassNONE }),
		qe("two questions", "www.diff.test.", dns.TypeA, func(m *dns.Msg) {
			m.Question = append(m.Question, dns.Question{Name: "mail.diff.test.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
		}),
		{what: "no question", name: "www.diff.test.", qtype: dns.TypeA, edit: func(m *dns.Msg) { m.Question = nil }},
		// With an OPT, the FORMERR carries one (RFC 6891 7).
		qe("two questions, EDNS", "www.diff.test.", dns.TypeA, func(m *dns.Msg) {
			m.SetEdns0(1232, true)
			m.Question = append(m.Question, dns.Question{Name: "mail.diff.test.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
		}),
		qe("no question, EDNS", "www.diff.test.", dns.TypeA, func(m *dns.Msg) {
			m.SetEdns0(1232, true)
			m.Question = nil
		}),
		q("AXFR", "diff.test.", dns.TypeAXFR),
		q("IXFR", "diff.test.", dns.TypeIXFR),
		// Additional-section processing (RFC 1034 3.7, RFC 1035 3.3.9, RFC
		// 2782) of MX and SRV answers, as NSD does it without
		// minimal-responses: the A and AAAA RRsets the zone holds for
		// each target, wildcards expanded, none below a cut, no CNAME
		// followed, each once; dropped whole, without TC, when they do
		// not fit.
		full(q("MX targets: in zone, out of zone, CNAME, wildcard, below and at a cut, none, ENT, another zone", "add.test.", dns.TypeMX)),
		full(qe("MX targets, DO", "add.test.", dns.TypeMX, edns(1232, true))),
		full(q("MX through a CNAME", "to-mx.add.test.", dns.TypeMX)),
		full(q("MX of a wildcard", "host.mxw.add.test.", dns.TypeMX)),
		full(q("MX to a name with A only", "only-a.add.test.", dns.TypeMX)),
		full(q("SRV targets", "_sip._tcp.add.test.", dns.TypeSRV)),
		full(qe("SRV targets, DO", "_sip._tcp.add.test.", dns.TypeSRV, edns(4096, true))),
		full(q("SRV no service (target .)", "_sip._udp.add.test.", dns.TypeSRV)),
		full(q("apex NS, out of zone", "add.test.", dns.TypeNS)),
		full(q("MX of big sets, no EDNS: some left out", "big.add.test.", dns.TypeMX)),
		full(qe("MX of big sets, EDNS 512", "big.add.test.", dns.TypeMX, edns(512, false))),
		full(qe("MX of big sets, EDNS 700 DO", "big.add.test.", dns.TypeMX, edns(700, true))),
		full(qe("MX of big sets, EDNS 1232", "big.add.test.", dns.TypeMX, edns(1232, false))),
		full(q("A of an MX target", "mail.add.test.", dns.TypeA)),
		full(q("MX NODATA", "mail.add.test.", dns.TypeMX)),
	}
}

// dnameFits: the answer below dn-long that fits 512 bytes only compressed.
const dnameFits = "ringlb compresses the synthesised CNAME's target to the DNAME's RDATA before it (RFC 1035 4.1.4: a pointer " +
	"to any earlier name; RFC 3597 4 and RFC 6672 2.5 forbid compressing the DNAME's RDATA only, which ringlb never does: " +
	"TestDNAMERdataNeverCompressed), and the whole answer fits 512 bytes; NSD and Knot write the target out and truncate " +
	"(TC), compared over TCP"

// dnameANY: ANY below a DNAME, where both peers answer one RRset of the
// target.
const dnameANY = "below a DNAME, NSD and Knot chase and answer one RRset of the target (RFC 8482 4.1); ringlb chases and answers " +
	"the synthesised HINFO at the target (RFC 8482 4.2, the target having no CNAME), as it answers every ANY (gslb/README.md, " +
	"Answers; TestDNAMEPaths): the DNAME and CNAME are the same, and one rule for ANY everywhere"

// nsdDeviations are the cases of the corpus not compared with NSD, or
// compared in part, each with why.
func nsdDeviations() map[string]diffDeviation {
	const (
		mxMinimal = "NSD with minimal-responses adds no addresses for the targets of MX and SRV answers; " +
			"ringlb adds them as NSD without it does (gslb/README.md, Answers), compared with add.test's MX and SRV"
		apexNS = "NSD without minimal-responses adds the zone's NS RRset to the authority section of every " +
			"positive answer; ringlb does not (gslb/README.md, Measured: \"NSD adds NS and glue in authority " +
			"and additional; ringlb does not\"): RFC 1034 4.3.2 step 6 makes it optional"
		minimalANY = "ringlb answers ANY minimally (RFC 8482: one HINFO), gslb/README.md, Answers; NSD with every RRset"
		nsdCD      = "NSD copies the query's CD into NOTIMP and BADVERS answers; RFC 4035 3.1.6 has an authoritative " +
			"server clear it, as NSD does in its other answers, and Knot and ringlb in every answer"
		echoNotImp = "NSD echoes no question in NOTIMP; ringlb does (gslb/README.md, Answers: \"each echoing the ID, " +
			"opcode and question\")"
		notify = "ringlb answers NOTIFY NOTIMP (gslb/README.md, Answers: it is the primary, it takes no NOTIFY); NSD REFUSED"
		echoQ  = "NSD echoes no question in REFUSED for a class it serves no zone of; RFC 1035 4.1.1 has the " +
			"question echoed, and ringlb does (gslb/README.md, Answers)"
		anyClass = "QCLASS * (RFC 1035 3.2.5): ringlb answers it as IN, authoritatively; NSD with AA clear. " +
			"RFC 1034/1035 say nothing of AA for it"
		formErr = "FORMERR for a message the server does not take: NSD sends the header with RD clear and no " +
			"question, ringlb echoes RD and the first question (gslb/README.md, Answers: \"each echoing the ID, " +
			"opcode and question\"); RFC 1035 defines nothing more"
		noQTCP = "NSD closes a TCP connection whose query has no question; ringlb answers FORMERR"
		noOPT  = "NSD's FORMERR to a query with two questions and an OPT carries no OPT; RFC 6891 7 says a response " +
			"to a request with one MUST, and ringlb's does (gslb/README.md, Answers), as Knot's FORMERR for no question"
		noQEDNS = "NSD answers a query with no question and an OPT NOERROR, with its OPT (RFC 7873 5.4 has that for a " +
			"query carrying a COOKIE alone, which this one does not); ringlb FORMERR with its OPT, as Knot"
	)
	ignore := func(why string, parts ...string) diffDeviation { return diffDeviation{ignore: parts, why: why} }
	d := map[string]diffDeviation{
		"apex MX":                          ignore(mxMinimal, "additional"),
		"SRV":                              ignore(mxMinimal, "additional"),
		"ANY at the apex":                  {skip: minimalANY},
		"ANY at a name":                    {skip: minimalANY},
		"below a DNAME, ANY":               {skip: dnameANY},
		"DNAME synthesis just fits":        {skipUDP: dnameFits},
		"opcode IQUERY":                    ignore(echoNotImp, "question"),
		"opcode STATUS":                    ignore(echoNotImp, "question"),
		"opcode 3 (unassigned)":            ignore(echoNotImp, "question"),
		"opcode UPDATE":                    ignore(echoNotImp, "question"),
		"opcode 15":                        ignore(echoNotImp, "question"),
		"opcode IQUERY, RD clear":          ignore(echoNotImp, "question"),
		"opcode NOTIFY":                    {skip: notify},
		"CD set, opcode STATUS":            ignore(echoNotImp+". "+nsdCD, "question", "cd"),
		"CD set, EDNS version 1 (BADVERS)": ignore(nsdCD, "cd"),
		"class HS":                         ignore(echoQ, "question"),
		"class ANY":                        ignore(anyClass, "aa"),
		"class NONE":                       ignore(echoQ, "question"),
		"two questions":                    ignore(formErr, "rd", "question"),
		"no question":                      {skipTCP: noQTCP},
		"two questions, EDNS":              {skip: noOPT},
		"no question, EDNS":                {skip: noQEDNS},
	}
	// The NSD without minimal-responses (full) adds the zone's NS RRset to
	// every positive answer.
	for _, q := range diffCorpus() {
		if q.full {
			d[q.what] = ignore(apexNS, "apex-ns")
		}
	}
	return d
}

// knotDeviations are the cases of the corpus not compared with Knot, or
// compared in part, each with why.
func knotDeviations() map[string]diffDeviation {
	const (
		minimalANY = "RFC 8482 4.1 and 4.2 allow both: Knot answers ANY with one RRset of the name, over UDP and TCP; " +
			"ringlb with one HINFO (gslb/README.md, Answers)"
		update = "Knot implements UPDATE (RFC 2136) and refuses one no ACL allows NOTAUTH; ringlb takes none: " +
			"NOTIMP (gslb/README.md, Answers; RFC 2136 2.2: NOTIMP, the server does not support the opcode)"
		notify = "Knot takes NOTIFY from the primaries its ACL names, NOTAUTH otherwise; ringlb, the primary, " +
			"answers NOTIFY NOTIMP (gslb/README.md, Answers)"
		formErr = "Knot drops a query with two questions: no answer over UDP, the TCP connection closed; ringlb " +
			"answers FORMERR (gslb/README.md, Answers); RFC 1035 requires neither, RFC 8906 counts silence a failure"
		transfer = "Knot refuses a transfer no ACL allows NOTAUTH (RFC 8945's \"not authorized\"), an IXFR over UDP " +
			"too; ringlb REFUSED, RFC 1035 4.1.1's rcode for a zone transfer a server will not perform, as NSD " +
			"(gslb/README.md, Zone transfers)"
		repeats = "Knot adds a target's addresses once for each record naming it (MX 10 mail and MX 15 MAIL, two SRV " +
			"to mail), repeating RRsets RFC 2181 5.5 says are not repeated; ringlb and NSD add each once"
		belowCut = "Knot adds the addresses it holds at or below a delegation (glue, occluded data) for MX and SRV " +
			"targets there; ringlb and NSD add nothing for them, the child zone's names (gslb/README.md, Answers). " +
			"RFC 1034 4.3.2 step 6 allows either"
		bigOrder = "which additional RRsets fit in a UDP answer: Knot adds each target's A then AAAA, target by target, " +
			"keeping each that fits; ringlb and NSD every A RRset before every AAAA RRset, no AAAA after an A left out " +
			"(gslb/README.md, Answers). RFC 2181 9 asks only for whole RRsets; compared whole at EDNS 1232"
	)
	ignore := func(why string, parts ...string) diffDeviation { return diffDeviation{ignore: parts, why: why} }
	targets := ignore(repeats+". "+belowCut, "additional-repeats", "additional-below-cut")
	return map[string]diffDeviation{
		"ANY at the apex":           {skip: minimalANY},
		"ANY at a name":             {skip: minimalANY},
		"below a DNAME, ANY":        {skip: dnameANY},
		"DNAME synthesis just fits": {skipUDP: dnameFits},
		"DNAME loop": {skip: "Knot repeats a DNAME loop's synthesised CNAMEs (a.dl1 to a.dl2 three times, a.dl2 to a.dl1 twice), " +
			"RRsets RFC 2181 5 says are not repeated; ringlb and NSD answer each once, the loop stopped where it closes, as for a CNAME loop"},
		"DNAME synthesis too long (YXDOMAIN)": {skip: "Knot answers NXDOMAIN with the DNAME and the SOA; RFC 6672 2.2 has YXDOMAIN, " +
			"which ringlb and NSD answer, with the DNAME"},
		"opcode UPDATE":       {skip: update},
		"opcode NOTIFY":       {skip: notify},
		"two questions":       {skip: formErr},
		"two questions, EDNS": {skip: formErr},
		"AXFR":                {skipTCP: transfer},
		"CD set, AXFR":        {skipTCP: transfer},
		"IXFR":                {skip: transfer},
		"MX targets: in zone, out of zone, CNAME, wildcard, below and at a cut, none, ENT, another zone": targets,
		"MX targets, DO":                         targets,
		"MX through a CNAME":                     targets,
		"SRV targets":                            targets,
		"SRV targets, DO":                        targets,
		"MX of big sets, no EDNS: some left out": ignore(bigOrder, "additional"),
		"MX of big sets, EDNS 512":               ignore(bigOrder, "additional"),
		"MX of big sets, EDNS 700 DO":            ignore(bigOrder, "additional"),
	}
}

// sbinPath is program's binary, "" when it is not installed (on the PATH
// or in /usr/sbin, which a user's PATH may leave out).
func sbinPath(program string) string {
	for _, p := range []string{program, "/usr/sbin/" + program} {
		if p, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	return ""
}

// freePort is a port free for UDP and TCP on 127.0.0.1 when asked: NSD
// binds it after, so another process may take it in between (startNSD then
// tries another).
func freePort(t *testing.T) int {
	t.Helper()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		return port
	}
}

// startNSD runs NSD in the foreground serving zones (origin without the
// final dot: zone file), all its files in a directory of its own, as the
// current user, and returns its address once it answers diff.test.'s SOA
// (runDNSPeer). minimal sets minimal-responses: NSD adds no NS RRset in
// authority nor its glue in additional to a positive answer, nor addresses
// for an MX or SRV answer's targets — for NS answers and referrals only
// (ringlb adds no NS RRset: README, Measured: "NSD adds NS and glue in
// authority and additional; ringlb does not"). hide-identity,
// hide-version: no CH identity answers (NSD's own identity is not
// compared).
func startNSD(t *testing.T, nsd string, minimal bool, zones map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	mode := map[bool]string{true: "yes", false: "no"}[minimal]
	var zoneConf strings.Builder
	for _, origin := range slices.Sorted(maps.Keys(zones)) {
		fmt.Fprintf(&zoneConf, "zone:\n\tname: %s\n\tzonefile: %q\n", origin, zones[origin])
	}
	// NSD answers SERVFAIL for a zone that did not load: no waiting for it.
	return runDNSPeer(t, "NSD", "diff.test.", nil, func(attempt, port int) *exec.Cmd {
		conf := filepath.Join(dir, fmt.Sprintf("nsd-%d.conf", attempt))
		err := os.WriteFile(conf, []byte(fmt.Sprintf(`server:
	ip-address: 127.0.0.1@%d
	port: %d
	server-count: 1
	username: ""
	chroot: ""
	zonesdir: %q
	database: ""
	zonelistfile: %q
	xfrdfile: %q
	xfrdir: %q
	pidfile: %q
	verbosity: 1
	hide-identity: yes
	hide-version: yes
	minimal-responses: %s
	reuseport: no
	rrl-ratelimit: 0
remote-control:
	control-enable: no
%s`, port, port, dir, filepath.Join(dir, "zone.list"), filepath.Join(dir, "xfrd.state"), dir,
			filepath.Join(dir, "nsd.pid"), mode, zoneConf.String())), 0o600)
		if err != nil {
			t.Fatal(err)
		}
		return exec.Command(nsd, "-d", "-c", conf)
	})
}

// startKnot runs knotd (Knot DNS 3.2) in the foreground serving zones
// (origin without the final dot: zone file), its config, rundir,
// storage and copies of the zone files in a directory of its own, and
// returns its address once it answers diff.test.'s SOA (runDNSPeer). As
// an operator would: semantic-checks on (the extra checks: NS at the apex,
// glue, DS records), the zone file loaded whole; no journal and no zone
// file written back (nothing changes the zones). identity and version
// empty: no CH identity answers (Knot's own identity is not compared).
// Knot answers as it does by default: no minimal-responses setting, the
// addresses of NS, MX and SRV targets in additional, no NS RRset in
// authority of a positive answer, 1232 bytes of EDNS UDP payload at most.
// The config has no user: knotd runs as whoever starts it, and a test run
// as root starts it as nobody, a server under test with no privilege.
func startKnot(t *testing.T, knotd string, zones map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	var zoneConf strings.Builder
	for _, origin := range slices.Sorted(maps.Keys(zones)) {
		text, err := os.ReadFile(zones[origin])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, origin+".zone"), text, 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&zoneConf, "  - domain: %s\n    file: %q\n", origin, filepath.Join(dir, origin+".zone"))
	}
	for _, sub := range []string{"run", "storage"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// nobody writes in dir: the timer and journal databases, the control
	// socket.
	cred := asNobody(t, dir)
	// Knot listens before its zones are loaded, and answers SERVFAIL for
	// a zone it has not loaded yet.
	loading := func(r *dns.Msg) bool { return r.Rcode == dns.RcodeServerFailure }
	return runDNSPeer(t, "Knot", "diff.test.", loading, func(attempt, port int) *exec.Cmd {
		conf := filepath.Join(dir, fmt.Sprintf("knot-%d.conf", attempt))
		err := os.WriteFile(conf, []byte(fmt.Sprintf(`server:
    rundir: %q
    listen: 127.0.0.1@%d
    identity: ""
    version: ""
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: notice
database:
    storage: %q
template:
  - id: default
    semantic-checks: on
    zonefile-load: whole
    zonefile-sync: -1
    journal-content: none
zone:
%s`, filepath.Join(dir, "run"), port, filepath.Join(dir, "storage"), zoneConf.String())), 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if cred != nil {
			if err := os.Chown(conf, int(cred.Uid), int(cred.Gid)); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(knotd, "-c", conf)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		return cmd
	})
}

// asNobody makes dir (and all in it) nobody's when the test runs as root,
// and returns the credential to run a peer with there: a server under
// test with no privilege. nil when not root: the peer runs as the test.
func asNobody(t *testing.T, dir string) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	const nobody = 65534
	// nobody may reach dir: t.TempDir's parent is 0700.
	if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
		t.Fatal(err)
	}
	err := filepath.WalkDir(dir, func(path string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(path, nobody, nobody)
	})
	if err != nil {
		t.Fatal(err)
	}
	return &syscall.Credential{Uid: nobody, Gid: nobody}
}

// runDNSPeer runs the process command makes to serve on port of
// 127.0.0.1 (attempt numbers its config), in a process group of its own,
// and returns its address once it answers zone's SOA with the zone's;
// loading, when set, tells an answer given while the zones are
// still loading, to ask again. The port is free when picked (freePort):
// another process may take it before the peer binds it, so it tries
// another, five times. The process is stopped (its group: NSD forks its
// server and xfrd processes) when the test ends.
func runDNSPeer(t *testing.T, name, zone string, loading func(*dns.Msg) bool, command func(attempt, port int) *exec.Cmd) string {
	t.Helper()
	var tried []string
	for attempt := 0; attempt < 5; attempt++ {
		port := freePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cmd := command(attempt, port)
		out := new(syncBuffer) // written by exec's copying goroutine while the peer runs
		cmd.Stdout, cmd.Stderr = out, out
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.Setpgid = true
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() {
			// SIGTERM lets the peer stop its children; SIGKILL to the
			// group then leaves nothing behind, whatever it did.
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
			}
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if r := ready(addr, zone, exited, loading); r != nil {
			t.Cleanup(stop)
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
				t.Fatalf("%s's SOA answer:\n%v\n%s's output:\n%s", name, r, name, out.String())
			}
			return addr
		}
		stop()
		tried = append(tried, addr+": "+out.String())
	}
	t.Fatalf("%s did not answer:\n%s", name, strings.Join(tried, "\n"))
	return ""
}

// ready asks addr for zone's SOA until it is answered (but for an
// answer loading tells, when set), the process exits (exited closed) or a
// minute has passed (a loaded machine); the answer, the last one given
// while loading when the minute is up, nil when none came.
func ready(addr, zone string, exited <-chan struct{}, loading func(*dns.Msg) bool) *dns.Msg {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := &dns.Client{Net: "udp", Timeout: 250 * time.Millisecond}
	m := new(dns.Msg).SetQuestion(zone, dns.TypeSOA)
	var last *dns.Msg
	for {
		r, _, err := c.ExchangeContext(ctx, m, addr)
		if err == nil {
			if loading == nil || !loading(r) {
				return r
			}
			last = r
		}
		select {
		case <-exited:
			return nil
		case <-ctx.Done():
			return last
		case <-time.After(20 * time.Millisecond): // not listening yet: refused at once
		}
	}
}

// diffExchange sends q to addr over network and returns its answer in the
// form compared (diffNormal, but for ignore's parts), or what went wrong.
func diffExchange(q diffQuery, ignore []string, network, addr string) string {
	m := new(dns.Msg)
	m.SetQuestion(q.name, q.qtype)
	if q.edit != nil {
		q.edit(m)
	}
	// UDPSize: read whatever comes (a reply may exceed what was asked).
	c := &dns.Client{Net: network, UDPSize: dns.MaxMsgSize, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	var nerr net.Error
	switch {
	case errors.As(err, &nerr) && nerr.Timeout():
		return "no answer"
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		// Without the addresses and ports the error names.
		return "connection closed without an answer"
	case err != nil && r == nil:
		return "error: " + err.Error()
	}
	return diffNormal(r, ignore)
}

// diffNormal is r as compared: the header's flags and rcode (extended
// rcode included), the question as echoed, and each section as a sorted
// list of records in presentation form, TTLs included, but for ignore's
// parts (diffDeviation). Normalised:
//   - the ID is not compared (the client checks it), nor the order of the
//     records within a section (RFC 1035 gives it no meaning);
//   - domain names in owners and RDATA are compared in lower case (RFC 4343:
//     names compare case-insensitively). NSD writes an answer's owner
//     compressed to the question, in the case asked, and an RDATA name in
//     the case it first read it; ringlb keeps a zone's names in lower case
//     and RDATA names as written. The question is compared as echoed, case
//     kept;
//   - the OPT record is compared as its UDP size, version and DO bit, not
//     its options (NSD's NSID and the like are its own identity).
func diffNormal(r *dns.Msg, ignore []string) string {
	ignored := func(part string) bool { return slices.Contains(ignore, part) }
	flag := func(part string, v bool) string {
		if ignored(part) {
			return "-"
		}
		return fmt.Sprint(v)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "opcode %s rcode %s qr=%v aa=%s tc=%v rd=%s ra=%v ad=%v cd=%s z=%v\n",
		dns.OpcodeToString[r.Opcode], dns.RcodeToString[r.Rcode], r.Response, flag("aa", r.Authoritative), r.Truncated,
		flag("rd", r.RecursionDesired), r.RecursionAvailable, r.AuthenticatedData, flag("cd", r.CheckingDisabled), r.Zero)
	if !ignored("question") {
		for _, q := range r.Question {
			fmt.Fprintf(&b, "question %s\n", q.String())
		}
	}
	section := func(name string, rrs []dns.RR) {
		var lines []string
		for _, rr := range rrs {
			if o, ok := rr.(*dns.OPT); ok {
				lines = append(lines, fmt.Sprintf("OPT udp=%d version=%d do=%v", o.UDPSize(), o.Version(), o.Do()))
				continue
			}
			if name == "additional" && ignored("additional") {
				continue
			}
			if name == "additional" && ignored("additional-below-cut") && belowCut(rr.Header().Name) {
				continue
			}
			if h := rr.Header(); name == "authority" && ignored("apex-ns") && h.Rrtype == dns.TypeNS && len(r.Answer) > 0 &&
				len(r.Question) == 1 && strings.EqualFold(h.Name, zoneOf(r.Question[0].Name)) {
				continue
			}
			lines = append(lines, lowerNames(rr).String())
		}
		slices.Sort(lines)
		if name == "additional" && ignored("additional-repeats") {
			lines = slices.Compact(lines)
		}
		for _, l := range lines {
			fmt.Fprintf(&b, "%s %s\n", name, l)
		}
	}
	section("answer", r.Answer)
	section("authority", r.Ns)
	section("additional", r.Extra)
	return b.String()
}

// belowCut says whether name is at or below a delegation of diffZone or
// addZone (an NS RRset below the apex).
func belowCut(name string) bool {
	name = strings.ToLower(name)
	for _, text := range []string{diffZone, addZone} {
		zp := dns.NewZoneParser(strings.NewReader(text), "", "")
		for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
			h := rr.Header()
			if h.Rrtype == dns.TypeNS && h.Name != zoneOf(h.Name) && dns.IsSubDomain(h.Name, name) {
				return true
			}
		}
	}
	return false
}

// zoneOf is the zone of diffZone or addZone that name is in.
func zoneOf(name string) string {
	if dns.IsSubDomain("add.test.", strings.ToLower(name)) {
		return "add.test."
	}
	return "diff.test."
}

// lowerNames is a copy of rr with its owner and the domain names of its
// RDATA in lower case (the types of diffZone's records).
func lowerNames(rr dns.RR) dns.RR {
	rr = dns.Copy(rr)
	rr.Header().Name = strings.ToLower(rr.Header().Name)
	switch v := rr.(type) {
	case *dns.CNAME:
		v.Target = strings.ToLower(v.Target)
	case *dns.DNAME:
		v.Target = strings.ToLower(v.Target)
	case *dns.NS:
		v.Ns = strings.ToLower(v.Ns)
	case *dns.MX:
		v.Mx = strings.ToLower(v.Mx)
	case *dns.SRV:
		v.Target = strings.ToLower(v.Target)
	case *dns.SOA:
		v.Ns, v.Mbox = strings.ToLower(v.Ns), strings.ToLower(v.Mbox)
	}
	return rr
}

// TestDifferentialAgainstNSD compares ringlb with NSD 4.6 (compareDNS):
// diff.test against NSD with minimal-responses, add.test's MX and SRV
// answers (full) against NSD without it (startNSD).
func TestDifferentialAgainstNSD(t *testing.T) {
	// Its own server and peer processes (ports of their own, files in its
	// own directories) and no package state: beside the other sweeps.
	t.Parallel()
	compareDNS(t, diffPeer{name: "NSD", program: "nsd", pkg: "nsd", deviations: nsdDeviations(),
		start: func(t *testing.T, nsd string, zones map[string]string) (string, string) {
			return startNSD(t, nsd, true, zones), startNSD(t, nsd, false, zones)
		}})
}

// TestDifferentialAgainstKnot compares ringlb with Knot DNS 3.2
// (compareDNS), one knotd for every case (startKnot).
func TestDifferentialAgainstKnot(t *testing.T) {
	// Its own server and peer processes (ports of their own, files in its
	// own directories) and no package state: beside the other sweeps.
	t.Parallel()
	compareDNS(t, diffPeer{name: "Knot", program: "knotd", pkg: "knot", deviations: knotDeviations(),
		start: func(t *testing.T, knotd string, zones map[string]string) (string, string) {
			addr := startKnot(t, knotd, zones)
			return addr, addr
		}})
}

// diffPeer is an authoritative server ringlb's answers are compared with.
type diffPeer struct {
	name    string // as the log names it
	program string // its binary: without it the test skips
	pkg     string // Debian's package of it, for the skip's message
	// start runs the peer's binary bin serving zones (origin without the
	// final dot: zone file) for the rest of the test, its own files in a
	// t.TempDir, and returns the addresses to ask: full, the one for the
	// cases marked full (addresses for MX and SRV targets), which may be
	// addr.
	start func(t *testing.T, bin string, zones map[string]string) (addr, full string)
	// deviations: the corpus's cases (by what) not compared with this
	// peer, or compared in part, each with why.
	deviations map[string]diffDeviation
}

// compareDNS is the differential test against peer: diffZone and addZone
// are served by the peer and by ringlb, each query of diffCorpus goes to
// both over UDP and TCP, and the answers, in diffNormal's form, must be the
// same, but for the peer's deviations.
func compareDNS(t *testing.T, peer diffPeer) {
	if testing.Short() {
		t.Skip("a comparison of answers with another server's: not with -short")
	}
	bin := sbinPath(peer.program)
	if bin == "" {
		t.Skipf("%s not installed (apt-get install %s): no reference server to compare with", peer.program, peer.pkg)
	}
	corpus := diffCorpus()
	cases := map[string]bool{}
	for _, q := range corpus {
		if cases[q.what] {
			t.Fatalf("two cases named %q: a deviation would be either's", q.what)
		}
		cases[q.what] = true
	}
	for what := range peer.deviations {
		if !cases[what] {
			t.Fatalf("%s's deviation %q names no case of the corpus", peer.name, what)
		}
	}
	dir := t.TempDir()
	zones := map[string]string{}
	for origin, text := range map[string]string{"diff.test": diffZone, "add.test": addZone} {
		zones[origin] = filepath.Join(dir, origin+".zone")
		if err := os.WriteFile(zones[origin], []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	peerAddr := map[bool]string{}
	peerAddr[false], peerAddr[true] = peer.start(t, bin, zones)
	s := startGSLB(t, parseGSLBYAML(t, fmt.Sprintf(`gslb:
  listen: 127.0.0.1:0
  rate_limit: { responses_per_second: 0 }
  zones: [ { origin: diff.test, file: %q }, { origin: add.test, file: %q } ]
`, zones["diff.test"], zones["add.test"])))
	compared, skipped := 0, 0
	for _, q := range corpus {
		dev := peer.deviations[q.what]
		for _, network := range []string{"udp", "tcp"} {
			why := dev.skip
			if why == "" && network == "udp" {
				why = dev.skipUDP
			}
			if why == "" && network == "tcp" {
				why = cmp.Or(q.udpOnly, dev.skipTCP)
			}
			if why != "" {
				skipped++
				continue
			}
			compared++
			// Both at once: a query neither answers (a response sent as
			// a query) costs each client its whole timeout.
			var want string
			var asked sync.WaitGroup
			asked.Go(func() { want = diffExchange(q, dev.ignore, network, peerAddr[q.full]) })
			got := diffExchange(q, dev.ignore, network, s.Addr())
			asked.Wait()
			if got != want {
				note := ""
				if dev.why != "" {
					note = " (not compared: " + strings.Join(dev.ignore, ", ") + ": " + dev.why + ")"
				}
				t.Errorf("%s (%s %s) over %s%s:\n%s:\n%sringlb:\n%s", q.what, q.name, dns.TypeToString[q.qtype], network, note, peer.name, want, got)
			}
		}
	}
	t.Logf("%d queries compared with %s, %d left out (each with its reason in diffCorpus or %s's deviations)", compared, peer.name, skipped, peer.name)
}

// TestTreeOfZonesAgainstNSDAndKnot serves the tree of zones (treeZones:
// a parent and children of it served here, names written with escapes) with
// ringlb and with NSD and Knot where installed, and compares their answers
// to DS queries at and below the children's apexes and to the escaped
// names, over UDP and TCP (diffNormal's form). Before, ringlb answered 13
// of these 21 queries otherwise than they (12 than both, the MX answer's
// additional section than Knot): DS at a zone's apex from that zone
// (TestDSAtAChildZonesApexIsAnsweredFromTheParent), the escaped names
// NXDOMAIN, their targets not found (TestEscapedNamesAnswered).
func TestTreeOfZonesAgainstNSDAndKnot(t *testing.T) {
	if testing.Short() {
		t.Skip("a comparison of answers with other servers': not with -short")
	}
	t.Parallel()
	// diff.test: what the peers' start waits for (runDNSPeer).
	zones := treeZones(t, map[string]string{"diff.test": diffZone})
	peers := map[string]string{}
	if nsd := sbinPath("nsd"); nsd != "" {
		peers["NSD"] = startNSD(t, nsd, true, zones)
	}
	if knotd := sbinPath("knotd"); knotd != "" {
		peers["Knot"] = startKnot(t, knotd, zones)
	}
	if len(peers) == 0 {
		t.Skip("neither nsd nor knotd installed (apt-get install nsd knot): no reference server to compare with")
	}
	s := startGSLB(t, treeConfig(t, zones, nil))
	q := func(what, name string, qtype uint16) diffQuery {
		return diffQuery{what: what, name: name, qtype: qtype}
	}
	for _, c := range []struct {
		q diffQuery
		// nsdIgnore: not compared with NSD, whose minimal-responses adds
		// no addresses for an MX answer's targets (startNSD).
		nsdIgnore []string
	}{
		{q: q("DS at a child's apex (the parent holds it)", "child.parent.test.", dns.TypeDS)},
		{q: diffQuery{what: "DS at a child's apex, DO", name: "child.parent.test.", qtype: dns.TypeDS, edit: edns(1232, true)}},
		{q: q("DS at a child's apex, case", "Child.PARENT.test.", dns.TypeDS)},
		{q: q("DS at a child's apex, none in the parent", "nods.parent.test.", dns.TypeDS)},
		{q: q("DS at a zone's apex below a cut of the parent's", "a.deep.parent.test.", dns.TypeDS)},
		{q: q("DS below a child's apex", "www.child.parent.test.", dns.TypeDS)},
		{q: q("DS below a child's apex, no such name", "x.child.parent.test.", dns.TypeDS)},
		{q: q("DS at the top zone's apex", "parent.test.", dns.TypeDS)},
		{q: q("NS at a child's apex", "child.parent.test.", dns.TypeNS)},
		{q: q("SOA at a child's apex", "child.parent.test.", dns.TypeSOA)},
		{q: q("A in a child", "www.child.parent.test.", dns.TypeA)},
		{q: q(`sp\032ace A`, `sp\ ace.parent.test.`, dns.TypeA)},
		{q: q(`sp\032ace A, case`, `Sp\ ACE.parent.test.`, dns.TypeA)},
		{q: q(`dot\046ted A`, `dot\.ted.parent.test.`, dns.TypeA)},
		{q: q("dot.ted A (two labels)", "dot.ted.parent.test.", dns.TypeA)},
		{q: q(`\066ig A`, "big.parent.test.", dns.TypeA)},
		{q: q(`\066ig A, case`, "BIG.parent.test.", dns.TypeA)},
		{q: q(`CNAME to sp\ ace`, "to-sp.parent.test.", dns.TypeA)},
		{q: q(`CNAME to \066IG`, "to-big.parent.test.", dns.TypeA)},
		{q: q("MX to escaped names", "mx.parent.test.", dns.TypeMX), nsdIgnore: []string{"additional"}},
		{q: q(`referral to ns\ x.esc, its glue`, "host.esc.parent.test.", dns.TypeA)},
	} {
		for _, network := range []string{"udp", "tcp"} {
			for name, addr := range peers {
				var ignore []string
				if name == "NSD" {
					ignore = c.nsdIgnore
				}
				if want, got := diffExchange(c.q, ignore, network, addr), diffExchange(c.q, ignore, network, s.Addr()); got != want {
					t.Errorf("%s (%s %s) over %s:\n%s:\n%sringlb:\n%s", c.q.what, c.q.name, dns.TypeToString[c.q.qtype], network, name, want, got)
				}
			}
		}
	}
}
