//go:build linux

package gslb

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// The zone-loading differential test: an operator moving a zone from NSD or
// Knot to ringlb expects a zone both load to load, and a zone both refuse
// as broken to be refused, with an error naming the file, the line and
// what is wrong. Each case of zoneCorpus is a small zone file (what
// operators get wrong, what an attacker of a config pipeline would try),
// handed to loadZone, nsd-checkzone and kzonecheck (its default semantic
// checks). Where ringlb's verdict differs from both peers' agreeing one,
// the case says why (zoneCase.stricter, zoneCase.laxer); the peers'
// own disagreements are logged, not judged.

// zcOrigin is every case's zone.
const zcOrigin = "zc.test"

// zoneCase is one zone file of the corpus.
type zoneCase struct {
	name string // unique
	text string // the zone file; the line a refusal must name ends in ";!"
	// files are other files beside the zone's (name: text), for $INCLUDE;
	// dirs, directories beside it.
	files map[string]string
	dirs  []string
	// dir: the zone's file is a directory.
	dir bool
	// signed: ringlb signs the zone online (gslb.zones[].dnssec).
	signed bool
	// errFile is the file a refusal must name when it is not the zone's
	// nor one holding the marked line (an included file's syntax).
	errFile string
	// stricter: why ringlb refuses what both peers load; laxer: why it
	// loads what both refuse. Either, set where ringlb's verdict is the
	// same as the peers', is an error: a stale reason.
	stricter, laxer string
}

func zoneCorpus() []zoneCase {
	big := func(n int, s string) string { return strings.Repeat(s, n) }
	a63 := big(63, "a")
	const meta = "a record of a meta-type (RFC 6895 3.1: types only messages hold, never a zone) is refused (gslb/README.md, Zones)"
	const generate = "$GENERATE is BIND's, and ringlb reads it as BIND does (gslb/README.md, Zones): each record it makes is " +
		"checked as if written out; NSD knows no $GENERATE, Knot 3.2's checker refuses it"
	return []zoneCase{
		// The file as a whole.
		{name: "a good zone", text: zc("www IN A 192.0.2.80", "www IN AAAA 2001:db8::80")},
		{name: "empty file", text: ""},
		{name: "comments only", text: "; nothing here\n;\n"},
		{name: "no SOA", text: "$ORIGIN zc.test.\n$TTL 3600\n@ IN NS ns1\nns1 IN A 192.0.2.53\n"},
		{name: "two SOAs", text: zc("@ IN SOA ns1 hostmaster 2026120502 7200 3600 1209600 300 ;!")},
		{name: "the same SOA twice", text: zc("@ IN SOA ns1 hostmaster 2026120501 7200 3600 1209600 300 ;!")},
		{name: "SOA not at the apex", text: zc("sub IN SOA ns1 hostmaster 1 7200 3600 1209600 300 ;!")},
		{name: "SOA not the first record", text: "$ORIGIN zc.test.\n$TTL 3600\n@ IN NS ns1\nns1 IN A 192.0.2.53\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n"},
		{name: "SOA over several lines", text: "$ORIGIN zc.test.\n$TTL 3600\n@ IN SOA ns1 hostmaster (\n  1 ; serial\n  7200 3600\n  1209600 300 )\n@ IN NS ns1\nns1 IN A 192.0.2.53\n"},
		{name: "SOA with too few fields", text: "$ORIGIN zc.test.\n$TTL 3600\n@ IN SOA ns1 hostmaster 1 7200 3600 ;!\n@ IN NS ns1\nns1 IN A 192.0.2.53\n"},
		{name: "SOA serial 0", text: "$TTL 3600\n@ IN SOA ns1 hostmaster 0 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 192.0.2.53\n"},
		{name: "SOA serial 2^32-1", text: "$TTL 3600\n@ IN SOA ns1 hostmaster 4294967295 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 192.0.2.53\n"},
		{name: "SOA serial 2^32", text: "$TTL 3600\n@ IN SOA ns1 hostmaster 4294967296 7200 3600 1209600 300 ;!\n@ IN NS ns1\nns1 IN A 192.0.2.53\n"},
		{name: "SOA of another class", text: "$TTL 3600\n@ CH SOA ns1 hostmaster 1 7200 3600 1209600 300 ;!\n@ IN NS ns1\nns1 IN A 192.0.2.53\n"},
		{name: "no apex NS", text: "$ORIGIN zc.test.\n$TTL 3600\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\nns1 IN A 192.0.2.53\n"},
		{name: "CRLF line ends", text: strings.ReplaceAll(zc("www IN A 192.0.2.80"), "\n", "\r\n")},
		{name: "no final newline", text: strings.TrimSuffix(zc("www IN A 192.0.2.80"), "\n")},
		{name: "tabs", text: strings.ReplaceAll(zc("www\tIN\tA\t192.0.2.80"), " ", "\t")},
		{name: "binary garbage", text: "\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00>\x00 ;!\n"},
		{name: "a NUL byte in an owner", text: zc("w\x00w IN A 192.0.2.80 ;!")},
		{name: "a NUL byte in a TXT string", text: zc("www IN TXT \"a\x00b\" ;!")},
		{name: "a very long line", text: zc("www IN TXT " + big(400, "\""+big(200, "x")+"\" ") + ";!")},
		{name: "a record too big for a transfer's message", text: zc("www IN TXT " + big(255, "\""+big(255, "x")+"\" ") + ";!"),
			stricter: "its transfer message, with the OPT and TSIG beside it, would pass 65,535 octets: every signed transfer of the zone was cut there (xfrRecordBytes)"},
		{name: "a line of 1 MB", text: zc(big(1<<20, "x") + " ;!")},
		{name: "unterminated quote", text: zc("www IN TXT \"open ;!")},
		{name: "unbalanced parenthesis", text: zc("www IN TXT ( \"a\" ;!")},
		{name: "a closing parenthesis alone", text: zc("www IN TXT \"a\" ) ;!")},
		{name: "the zone's file is a directory", dir: true},

		// Names.
		{name: "record outside the origin", text: zc("www.other.test. IN A 192.0.2.80 ;!")},
		{name: "record at the origin's parent", text: zc("test. IN A 192.0.2.80 ;!")},
		{name: "record at the root", text: zc(". IN A 192.0.2.80 ;!")},
		{name: "$ORIGIN out of the zone", text: zc("$ORIGIN other.test.", "www IN A 192.0.2.80 ;!")},
		{name: "$ORIGIN to the root", text: zc("$ORIGIN .", "www IN A 192.0.2.80 ;!")},
		{name: "$ORIGIN within the zone", text: zc("$ORIGIN sub.zc.test.", "www IN A 192.0.2.80")},
		{name: "$ORIGIN relative", text: zc("$ORIGIN sub", "www IN A 192.0.2.80"), laxer: "a relative $ORIGIN is taken relative to the origin before it, as BIND " +
			"takes it (RFC 1035 5.1: a relative name is completed with the origin): www.sub.zc.test., which is what the operator wrote; NSD and Knot want it absolute"},
		{name: "$ORIGIN without a name", text: zc("$ORIGIN ;!", "www IN A 192.0.2.80")},
		{name: "an unknown directive", text: zc("$FROBNICATE 1 ;!", "www IN A 192.0.2.80")},
		{name: "relative and absolute names", text: zc("www IN A 192.0.2.80", "www2.zc.test. IN A 192.0.2.81", "@ IN MX 10 mail.example.com", "mail IN CNAME www.zc.test.")},
		{name: "owner in upper case", text: zc("WWW IN A 192.0.2.80", "www IN A 192.0.2.81")},
		{name: "a name of 255 octets", text: zc(a63 + "." + a63 + "." + a63 + "." + big(53, "b") + " IN A 192.0.2.1")},
		{name: "a name of 256 octets", text: zc(a63 + "." + a63 + "." + a63 + "." + big(54, "b") + " IN A 192.0.2.1 ;!")},
		{name: "a label of 63 octets", text: zc(a63 + " IN A 192.0.2.1")},
		{name: "a label of 64 octets", text: zc(a63 + "a IN A 192.0.2.1 ;!")},
		{name: "a target of 256 octets", text: zc("www IN CNAME " + a63 + "." + a63 + "." + a63 + "." + big(54, "b") + " ;!")},
		{name: "an empty label", text: zc("a..b IN A 192.0.2.1 ;!")},
		{name: "an escaped dot", text: zc(`a\.b IN A 192.0.2.1`)},
		{name: "escaped octets", text: zc(`\000\255\032x IN A 192.0.2.1`)},
		{name: "an escaped octet past 255", text: zc(`a\256 IN A 192.0.2.1 ;!`)},
		{name: "a short escape", text: zc(`a\25 IN A 192.0.2.1 ;!`)},
		{name: "a backslash at the end of a name", text: zc(`a\ IN A 192.0.2.1 ;!`)},
		{name: "UTF-8 in a name", text: zc("café IN A 192.0.2.1")},
		{name: "a star inside a name", text: zc("a.*.b IN A 192.0.2.1")},
		{name: "123 labels, 255 octets", text: zc(big(122, "a.") + "a IN A 192.0.2.1")},
		{name: "124 labels, 257 octets", text: zc(big(123, "a.") + "a IN A 192.0.2.1 ;!")},

		// TTLs.
		{name: "$TTL missing, SOA with a TTL", text: "$ORIGIN zc.test.\n@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 192.0.2.53\n"},
		{name: "$TTL missing, no TTL anywhere", text: "$ORIGIN zc.test.\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 192.0.2.53\n"},
		{name: "$TTL not a number", text: "$TTL forever ;!\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 192.0.2.53\n"},
		{name: "$TTL above 2^31", text: "$TTL 3000000000\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 192.0.2.53\n"},
		{name: "TTL in units", text: zc("www 1h30m IN A 192.0.2.80", "www2 1w IN A 192.0.2.81")},
		{name: "TTL 0", text: zc("www 0 IN A 192.0.2.80")},
		{name: "TTL 2^31-1", text: zc("www 2147483647 IN A 192.0.2.80")},
		{name: "TTL 2^31", text: zc("www 2147483648 IN A 192.0.2.80")},
		{name: "TTL 2^32-1", text: zc("www 4294967295 IN A 192.0.2.80")},
		{name: "TTL 2^32", text: zc("www 4294967296 IN A 192.0.2.80 ;!")},
		{name: "TTLs differ in an RRset", text: zc("www 300 IN A 192.0.2.80", "www 600 IN A 192.0.2.81")},
		{name: "TTLs differ in the apex NS", text: zc("@ 60 IN NS ns2", "ns2 IN A 192.0.2.54")},
		{name: "a negative TTL", text: zc("www -1 IN A 192.0.2.80 ;!")},

		// Duplicates.
		{name: "the same A twice", text: zc("www IN A 192.0.2.80", "www IN A 192.0.2.80")},
		{name: "the same A twice, owner's case differs", text: zc("www IN A 192.0.2.80", "WWW IN A 192.0.2.80")},
		{name: "the same A twice, TTLs differ", text: zc("www 300 IN A 192.0.2.80", "www 600 IN A 192.0.2.80")},
		{name: "the same TXT twice", text: zc(`www IN TXT "a"`, `www IN TXT "a"`)},
		{name: "the same CNAME twice", text: zc("www IN CNAME target.example.", "www IN CNAME target.example.")},
		{name: "the same NS twice", text: zc("@ IN NS ns1")},
		{name: "the same A twice, spelt differently", text: zc("www IN A 192.0.2.80", "www IN TYPE1 \\# 4 c0000250")},

		// Classes and types.
		{name: "a record of class CH", text: zc(`www CH TXT "chaos" ;!`)},
		{name: "a record of class HS", text: zc(`www HS TXT "hesiod" ;!`)},
		{name: "a record of CLASS255", text: zc(`www CLASS255 TXT "any" ;!`)},
		{name: "a record of CLASS3", text: zc(`www CLASS3 A 192.0.2.1 ;!`)},
		{name: "an unknown type (RFC 3597)", text: zc(`www IN TYPE65534 \# 3 010203`)},
		{name: "an unknown type, empty", text: zc(`www IN TYPE65534 \# 0`)},
		{name: "an unknown type, length too long", text: zc(`www IN TYPE65534 \# 4 010203 ;!`)},
		{name: "an unknown type, length too short", text: zc(`www IN TYPE65534 \# 2 010203 ;!`)},
		{name: "an unknown type, odd hex", text: zc(`www IN TYPE65534 \# 2 01020 ;!`)},
		{name: "a known type in RFC 3597 form", text: zc(`www IN TYPE1 \# 4 c0000250`)},
		{name: "a known type in RFC 3597 form, bad length", text: zc(`www IN TYPE1 \# 3 c00002 ;!`)},
		{name: "type 0", text: zc(`www IN TYPE0 \# 0 ;!`)},
		{name: "an OPT record", text: zc(`www IN TYPE41 \# 0 ;!`), stricter: meta + ": an OPT in a transfer's answer section is a malformed message (RFC 6891 6.1.1)"},
		{name: "a TSIG record", text: zc(`www IN TYPE250 \# 0 ;!`), stricter: meta + ": a TSIG is a message's signature, the last record of its additional section (RFC 8945 5.1)"},
		{name: "an AXFR record", text: zc(`www IN TYPE252 \# 0 ;!`), stricter: meta + ": asked for, AXFR is a transfer, the record never an answer"},
		{name: "an ANY record", text: zc(`www IN TYPE255 \# 0 ;!`), stricter: meta + ": asked for, ANY is every RRset (RFC 8482: one HINFO), the record never an answer"},
		{name: "a type number past 65535", text: zc(`www IN TYPE65536 \# 0 ;!`)},

		// Malformed RDATA.
		{name: "a bad IPv4 address", text: zc("www IN A 192.0.2.256 ;!")},
		{name: "an IPv4 address of five octets", text: zc("www IN A 192.0.2.1.5 ;!")},
		{name: "an IPv4 address with a leading zero", text: zc("www IN A 192.0.02.1 ;!")},
		{name: "an IPv6 address in A", text: zc("www IN A 2001:db8::1 ;!")},
		{name: "an IPv4 address in AAAA", text: zc("www IN AAAA 192.0.2.1 ;!")},
		{name: "an IPv4-mapped AAAA", text: zc("www IN AAAA ::ffff:192.0.2.1")},
		{name: "a bad IPv6 address", text: zc("www IN AAAA 2001:db8:::1 ;!")},
		{name: "an A without an address", text: zc("www IN A ;!")},
		{name: "an A with two addresses", text: zc("www IN A 192.0.2.1 192.0.2.2 ;!")},
		{name: "MX preference 65536", text: zc("@ IN MX 65536 mail ;!")},
		{name: "MX without a preference", text: zc("@ IN MX mail ;!")},
		{name: "MX preference negative", text: zc("@ IN MX -1 mail ;!")},
		{name: "SRV port 65536", text: zc("_s._tcp IN SRV 0 0 65536 www ;!")},
		{name: "a TXT string of 255 octets", text: zc(`www IN TXT "` + big(255, "x") + `"`)},
		{name: "a TXT string of 256 octets", text: zc(`www IN TXT "` + big(256, "x") + `" ;!`)},
		{name: "RDATA of 65536 octets", text: zc("www IN TYPE65534 \\# 65536 " + big(65536, "00") + " ;!")},
		{name: "a bad hex in TLSA", text: zc("_443._tcp IN TLSA 3 1 1 zz ;!")},
		{name: "a bad base64 in DNSKEY", text: zc("@ IN DNSKEY 257 3 13 !!!! ;!")},
		{name: "CAA with a bad flag", text: zc(`@ IN CAA 256 issue "ca.example" ;!`)},
		{name: "a bad LOC", text: zc("www IN LOC 91 0 0 N 0 0 0 E 0m ;!")},
		{name: "SVCB and HTTPS", text: zc(`_dns IN SVCB 1 www alpn=dot port=853`, `www IN HTTPS 1 . alpn=h2`)},
		{name: "HTTPS with a bad key", text: zc(`www IN HTTPS 1 . nokey=1 ;!`)},
		{name: "NS with an address as target", text: zc("@ IN NS 192.0.2.1")},

		// CNAME (RFC 1034 3.6.2, RFC 2181 10.1).
		{name: "CNAME and A at one name", text: zc("www IN CNAME target.example.", "www IN A 192.0.2.80 ;!")},
		{name: "A and CNAME at one name", text: zc("www IN A 192.0.2.80", "www IN CNAME target.example. ;!")},
		{name: "CNAME and TXT at one name", text: zc("www IN CNAME target.example.", `www IN TXT "x" ;!`)},
		{name: "CNAME and an unknown type at one name", text: zc("www IN CNAME target.example.", `www IN TYPE65534 \# 0 ;!`)},
		{name: "CNAME at the apex", text: zc("@ IN CNAME target.example. ;!")},
		{name: "two CNAMEs at a name", text: zc("www IN CNAME a.example.", "www IN CNAME b.example. ;!")},
		{name: "CNAME and DNAME at one name", text: zc("www IN CNAME target.example.", "www IN DNAME target.example. ;!")},
		{name: "CNAME and NS at one name", text: zc("sub IN NS ns.example.", "sub IN CNAME target.example. ;!")},
		{name: "CNAME and DS at one name", text: zc("www IN CNAME target.example.", "www IN DS 12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef ;!")},
		{name: "CNAME with RRSIG and NSEC (unsigned zone)", text: zc("www IN CNAME target.example.", "www IN NSEC zc.test. CNAME RRSIG NSEC", "www IN RRSIG CNAME 13 3 3600 20300101000000 20200101000000 12345 zc.test. AAAA")},
		{name: "CNAME to itself", text: zc("www IN CNAME www")},
		{name: "a CNAME loop", text: zc("a IN CNAME b", "b IN CNAME a")},
		{name: "a wildcard CNAME", text: zc("*.w IN CNAME www", "www IN A 192.0.2.80")},
		{name: "NS to a CNAME", text: zc("@ IN NS alias", "alias IN CNAME ns1")},
		{name: "MX to a CNAME", text: zc("@ IN MX 10 alias", "alias IN CNAME ns1")},
		{name: "SRV to a CNAME", text: zc("_s._tcp IN SRV 0 0 443 alias", "alias IN CNAME ns1")},
		{name: "CNAME below a cut", text: zc("sub IN NS ns.example.", "www.sub IN CNAME www")},

		// Delegations.
		{name: "a delegation with glue", text: zc("sub IN NS ns.sub", "ns.sub IN A 192.0.2.153")},
		{name: "a delegation out of the zone", text: zc("sub IN NS ns.example.")},
		{name: "a delegation without its glue", text: zc("sub IN NS ns.sub")},
		{name: "an apex NS in the zone without an address", text: zc("@ IN NS ns9")},
		{name: "data below a cut", text: zc("sub IN NS ns.example.", "www.sub IN A 192.0.2.80")},
		{name: "TXT below a cut", text: zc("sub IN NS ns.example.", `www.sub IN TXT "occluded"`)},
		{name: "an A at a cut", text: zc("sub IN NS ns.example.", "sub IN A 192.0.2.80")},
		{name: "MX at a cut", text: zc("sub IN NS ns.example.", "sub IN MX 10 www")},
		{name: "a cut below a cut", text: zc("sub IN NS ns.example.", "inner.sub IN NS ns.example.")},
		{name: "a delegation with DS", text: zc("sub IN NS ns.example.", "sub IN DS 12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")},
		{name: "DS without a delegation", text: zc("www IN DS 12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")},
		{name: "DS at the apex", text: zc("@ IN DS 12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")},
		{name: "a wildcard NS", text: zc("*.w IN NS ns.example.")},
		{name: "a wildcard below a cut", text: zc("sub IN NS ns.example.", "*.sub IN A 192.0.2.80")},
		{name: "a delegation to a name below a DNAME", text: zc("sub IN NS ns.dn", "dn IN DNAME www")},

		// DNAME (RFC 6672).
		{name: "DNAME", text: zc("dn IN DNAME tgt", "tgt IN A 192.0.2.1")},
		{name: "DNAME with data below", text: zc("dn IN DNAME tgt", "www.dn IN A 192.0.2.1 ;!")},
		{name: "DNAME with a delegation below", text: zc("dn IN DNAME tgt", "sub.dn IN NS ns.example. ;!")},
		{name: "two DNAMEs at a name", text: zc("dn IN DNAME a.example.", "dn IN DNAME b.example. ;!")},
		{name: "the same DNAME twice", text: zc("dn IN DNAME a.example.", "dn IN DNAME a.example.")},
		{name: "DNAME at the apex", text: zc("@ IN DNAME example.")},
		{name: "DNAME and NS at one name", text: zc("sub IN NS ns.example.", "sub IN DNAME example.")},
		{name: "DNAME below a DNAME", text: zc("dn IN DNAME tgt", "in.dn IN DNAME tgt ;!")},
		{name: "a wildcard DNAME", text: zc("*.w IN DNAME example.")},
		{name: "DNAME to itself", text: zc("dn IN DNAME dn")},
		{name: "DNAME to below itself", text: zc("dn IN DNAME x.dn")},

		// $INCLUDE and $GENERATE.
		{name: "$INCLUDE", text: zc("$INCLUDE more.zone"), files: map[string]string{"more.zone": "www IN A 192.0.2.80\n"}},
		{name: "$INCLUDE with an origin", text: zc("$INCLUDE more.zone sub.zc.test."), files: map[string]string{"more.zone": "www IN A 192.0.2.80\n"}},
		{name: "$INCLUDE of a missing file", text: zc("$INCLUDE missing.zone ;!")},
		{name: "$INCLUDE of a directory", text: zc("$INCLUDE d ;!"), dirs: []string{"d"}},
		{name: "$INCLUDE of itself", text: zc("$INCLUDE zone ;!")},
		{name: "$INCLUDE of /etc/passwd", text: zc("$INCLUDE /etc/passwd"), errFile: "/etc/passwd"},
		{name: "$INCLUDE of a file with a bad record", text: zc("$INCLUDE more.zone"), files: map[string]string{"more.zone": "www IN A 192.0.2.80\nbad IN A 300.0.0.1 ;!\n"}},
		{name: "$INCLUDE of a file with a record out of the zone", text: zc("$INCLUDE more.zone"), files: map[string]string{"more.zone": "\n\nwww.other.test. IN A 192.0.2.80 ;!\n"}},
		{name: "$INCLUDE of a file with a second SOA", text: zc("$INCLUDE more.zone"), files: map[string]string{"more.zone": "; another SOA\n@ IN SOA ns1 hostmaster 2 7200 3600 1209600 300 ;!\n"}},
		{name: "$INCLUDE without a file", text: zc("$INCLUDE ;!")},
		{name: "$GENERATE", text: zc("$GENERATE 1-10 host$ IN A 192.0.2.$"), laxer: generate},
		{name: "$GENERATE of 65536 names", text: zc("$GENERATE 0-65535 h$ IN A 192.0.2.1"), laxer: generate},
		{name: "$GENERATE with a bad range", text: zc("$GENERATE 10-1 host$ IN A 192.0.2.$ ;!")},

		// DNSSEC records in the zone.
		{name: "DNSKEY in an unsigned zone", text: zc("@ IN DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==")},
		{name: "DNSKEY in a zone ringlb signs", signed: true, text: zc("@ IN DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ== ;!"),
			stricter: "a signed zone's DNSKEY set is the signer's, from gslb.zones[].dnssec.keys (gslb/README.md, DNSSEC): one from the file would be published unsigned beside it"},
		{name: "RRSIG in a zone ringlb signs", signed: true, text: zc("www IN A 192.0.2.80", "www IN RRSIG A 13 3 3600 20300101000000 20200101000000 12345 zc.test. AAAA ;!"),
			stricter: "signatures in a zone ringlb signs are the signer's; one from the file would contradict them"},
		{name: "NSEC in a zone ringlb signs", signed: true, text: zc("www IN A 192.0.2.80", "www IN NSEC zc.test. A RRSIG NSEC ;!"),
			stricter: "a zone ringlb signs has its NSEC records made online (compact denial); one from the file would contradict them"},
		{name: "NSEC3PARAM in a zone ringlb signs", signed: true, text: zc("@ IN NSEC3PARAM 1 0 0 - ;!"),
			stricter: "ringlb signs with NSEC; an NSEC3PARAM from the file would announce a chain that is not there"},
		{name: "a child's DNSKEY in a zone ringlb signs", signed: true, text: zc("sub IN NS ns.example.", "sub IN DS 12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")},
		{name: "RRSIG in an unsigned zone", text: zc("www IN A 192.0.2.80", "www IN RRSIG A 13 3 3600 20300101000000 20200101000000 12345 zc.test. AAAA")},
		{name: "NSEC3PARAM in an unsigned zone", text: zc("@ IN NSEC3PARAM 1 0 0 -")},
	}
}

// zoneVerdict is one loader's verdict on a case.
type zoneVerdict struct {
	ok  bool
	out string // the error, or the checker's output
}

// checkZoneFile runs a peer's checker on a zone file; it accepts the zone
// when it exits 0.
// The checker runs in the zone's directory: nsd-checkzone opens a relative
// $INCLUDE from its working directory, where nsd would run (its zonesdir).
// It runs with Linux's default limit of 1024 open files, as from a login
// shell: kzonecheck follows a zone's $INCLUDE of itself until it has no
// file left to open, and with the test's limit (up to the hard one, tens
// of thousands) that took it 4 GB and most of the test's time; it refuses
// the zone either way.
func checkZoneFile(dir, bin string, args ...string) zoneVerdict {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", `ulimit -n 1024 && exec "$0" "$@"`, bin}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return zoneVerdict{ok: err == nil, out: strings.TrimSpace(string(out))}
}

// lineOf is the line of text ending in ";!" (1-based), 0 when none.
func lineOf(text string) int {
	for i, l := range strings.Split(text, "\n") {
		if strings.HasSuffix(strings.TrimRight(l, "\r"), ";!") {
			return i + 1
		}
	}
	return 0
}

// TestZoneLoadingAgainstCheckers runs zoneCorpus through loadZone,
// nsd-checkzone (NSD 4.6) and kzonecheck (Knot 3.2; four checkers at once)
// and asserts: ringlb refuses what both refuse and loads what both load,
// but for the cases' written reasons; every refusal names the file, the
// marked line and, for a problem in the records, the name; no load panics
// or hangs. Before the fixes it found (gslb/README.md, Zone files), 19
// zones both refuse were loaded, 2 both load were refused, and 27 of 68
// refusals named no file or not the line; now none.
func TestZoneLoadingAgainstCheckers(t *testing.T) {
	// No server: files of its own and the peers' checkers, beside the
	// other sweeps.
	t.Parallel()
	if testing.Short() {
		t.Skip("runs the peers' zone checkers on every case: not with -short")
	}
	nsd, knot := sbinPath("nsd-checkzone"), sbinPath("kzonecheck")
	if nsd == "" || knot == "" {
		t.Skip("nsd-checkzone or kzonecheck not installed (apt-get install nsd knot-dnssecutils): no zone checkers to compare with")
	}
	began := time.Now()
	ksk, zsk := testKeysFor(t, zcOrigin)
	corpus := zoneCorpus()
	type result struct {
		c                 zoneCase
		file              string
		ringlb, nsd, knot zoneVerdict
	}
	results := make([]result, len(corpus))
	seen := map[string]bool{}
	sem := make(chan struct{}, 4) // the peers' checkers, four at once: each mostly waits on its start
	var wg sync.WaitGroup
	for i, c := range corpus {
		if seen[c.name] {
			t.Fatalf("two cases named %q", c.name)
		}
		seen[c.name] = true
		dir := filepath.Join(t.TempDir(), "case")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, "zone")
		if c.dir {
			if err := os.Mkdir(file, 0o700); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(file, []byte(c.text), 0o600); err != nil {
			t.Fatal(err)
		}
		for name, text := range c.files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		for _, d := range c.dirs {
			if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		results[i] = result{c: c, file: file}
		r := &results[i]
		wg.Add(2)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			r.nsd = checkZoneFile(dir, nsd, zcOrigin, file)
		}()
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			r.knot = checkZoneFile(dir, knot, "-v", "-o", zcOrigin, file)
		}()
		zcfg := configs.Zone{Origin: zcOrigin, File: file}
		if c.signed {
			zcfg.DNSSEC = configs.DefaultDNSSEC(ksk, zsk)
		}
		r.ringlb = loadZoneGuarded(t, zcfg)
	}
	wg.Wait()
	t.Logf("%d cases loaded and checked by three loaders in %v", len(corpus), time.Since(began).Round(time.Millisecond))
	var agree, stricter, laxer, peersDiffer int
	for _, r := range results {
		c := r.c
		peers := fmt.Sprintf("NSD %s, Knot %s", verdictWord(r.nsd.ok), verdictWord(r.knot.ok))
		if !r.knot.ok && !strings.Contains(r.knot.out, "Serious semantic error") && strings.Contains(r.knot.out, "Error summary") {
			// kzonecheck runs every semantic check; knotd, by default
			// (semantic-checks: off), only the serious ones.
			peers += " (an optional semantic check: knotd loads it)"
		}
		t.Logf("%s: ringlb %s, %s\n\tringlb: %s\n\tNSD: %s\n\tKnot: %s", c.name, verdictWord(r.ringlb.ok), peers,
			oneLine(r.ringlb.out, 300), oneLine(r.nsd.out, 300), oneLine(r.knot.out, 300))
		peersAgree := r.nsd.ok == r.knot.ok
		switch {
		case !peersAgree:
			peersDiffer++
		case r.ringlb.ok == r.nsd.ok:
			agree++
		case r.ringlb.ok:
			laxer++
			if c.laxer == "" {
				t.Errorf("%s: ringlb loads the zone NSD and Knot refuse, with no reason why that is safe", c.name)
			} else {
				t.Logf("\tringlb laxer: %s", c.laxer)
			}
		default:
			stricter++
			if c.stricter == "" {
				t.Errorf("%s: ringlb refuses the zone NSD and Knot load, with no reason: %s", c.name, r.ringlb.out)
			} else {
				t.Logf("\tringlb stricter: %s", c.stricter)
			}
		}
		if (c.laxer != "" && !(peersAgree && r.ringlb.ok && !r.nsd.ok)) || (c.stricter != "" && !(peersAgree && !r.ringlb.ok && r.nsd.ok)) {
			t.Errorf("%s: the case gives a reason for a deviation there is not (ringlb %s, %s)", c.name, verdictWord(r.ringlb.ok), peers)
		}
		if !r.ringlb.ok {
			if problem := unplaced(r.ringlb.out, r.file, c); problem != "" {
				t.Errorf("%s: ringlb's refusal %s: %s", c.name, problem, r.ringlb.out)
			}
		}
	}
	t.Logf("%d cases: %d where ringlb agrees with NSD and Knot, %d where it is stricter than both, %d where it is laxer than both (each with its reason above), %d where NSD and Knot differ",
		len(results), agree, stricter, laxer, peersDiffer)
}

func verdictWord(ok bool) string {
	if ok {
		return "loads"
	}
	return "refuses"
}

// oneLine is s on one line, cut to n bytes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}

// unplaced says what ringlb's refusal of c (its zone file at file) leaves
// out, "" when nothing: the file, the line the case marks (";!", in the
// zone's file or an included one), and, for a problem in the records
// rather than their syntax, the name.
func unplaced(msg, file string, c zoneCase) string {
	wantFile, line := file, lineOf(c.text)
	for name, text := range c.files {
		if l := lineOf(text); l > 0 {
			wantFile, line = filepath.Join(filepath.Dir(file), name), l
		}
	}
	if c.errFile != "" {
		wantFile, line = c.errFile, 0
	}
	if !strings.Contains(msg, wantFile) {
		return "names not the file " + wantFile
	}
	if line > 0 && !regexp.MustCompile(fmt.Sprintf(`\bline:? %d\b`, line)).MatchString(msg) {
		return fmt.Sprintf("names not line %d", line)
	}
	if line > 0 && !strings.Contains(msg, ": dns: ") && !strings.Contains(msg, "."+zcOrigin+".") && !strings.Contains(msg, " "+zcOrigin+".") && !strings.Contains(msg, " .") {
		return "names no name"
	}
	return ""
}

// loadZoneGuarded is loadZone, a panic or a load that never returns
// failing the test (and the case) instead of the run.
func loadZoneGuarded(t *testing.T, zc configs.Zone) zoneVerdict {
	done := make(chan zoneVerdict, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- zoneVerdict{out: fmt.Sprintf("panic: %v", p)}
				t.Errorf("loadZone(%s) panicked: %v", zc.File, p)
			}
		}()
		z, err := loadZone(zc, configs.RateLimit{})
		if err != nil {
			done <- zoneVerdict{out: err.Error()}
			return
		}
		done <- zoneVerdict{ok: z != nil}
	}()
	select {
	case v := <-done:
		return v
	case <-time.After(5 * time.Minute): // a liveness bound: every case loads in milliseconds
		t.Fatalf("loadZone(%s) did not return in five minutes", zc.File)
		return zoneVerdict{}
	}
}
