package gslb

import (
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// escapedManagedYAML manages name (as written in the config, single-quoted:
// its backslashes kept) and, when also is not "", a second name.
func escapedManagedYAML(name, also string) string {
	names := "    - { name: '" + name + "', regions: { east: { serve_mode: always, members: [ { name: e1, address: 192.0.2.1 } ] } } }\n"
	if also != "" {
		names += "    - { name: '" + also + "', regions: { east: { serve_mode: always, members: [ { name: e2, address: 192.0.2.2 } ] } } }\n"
	}
	return `gslb:
  listen: 127.0.0.1:0
  rate_limit: { responses_per_second: 0 }
  zones: [ { origin: ringlb.test, file: testdata/ringlb.test.zone } ]
  names:
` + names
}

// A managed name may be written with escapes (RFC 1035 5.1), as a zone's
// names may: \105DE.ringlb.test is ide.ringlb.test, and is answered from
// its pool, as the zone file's escaped names are (configs.UnpackedName). Before, it
// was lower-cased only: kept as \105de.ringlb.test., a name no question
// unpacks to, so ide.ringlb.test was NXDOMAIN; and the same name managed
// twice, once escaped, was let through, one pool silently dropped.
func TestEscapedManagedNameAnswered(t *testing.T) {
	s := startGSLB(t, parseGSLBYAML(t, escapedManagedYAML(`\105DE.ringlb.test`, "")))
	for _, network := range []string{"udp", "tcp"} {
		for _, qname := range []string{"ide.ringlb.test.", "IDE.ringlb.test.", `\105de.ringlb.test.`} {
			m := query(t, s, network, qname, dns.TypeA, nil)
			if got := answerIPs(m); m.Rcode != dns.RcodeSuccess || got != "192.0.2.1" {
				t.Errorf("%s %s A: %s %q, want NOERROR 192.0.2.1", network, qname, dns.RcodeToString[m.Rcode], got)
			}
		}
	}
	if _, err := configs.Parse("gslb.yaml", []byte("cluster: { bind: 127.0.0.1:0 }\n"+escapedManagedYAML(`\105DE.ringlb.test`, "ide.ringlb.test"))); err == nil || !strings.Contains(err.Error(), "managed twice") {
		t.Errorf("ide.ringlb.test managed twice, once escaped: check says %v", err)
	}
}

// A managed name with an octet miekg/dns writes escaped though printable
// (@, ;, (, ), ", ') is one the UDP answer cache must key by region like
// any other: its presentation form there must be the one the pools key it
// by. The cache spelt a\;b as a;b, found no managed name, and kept the
// first asker's region's answer for every client of the loop: west's
// clients got east's member (before, 5 of these 6 names, a\;b already
// before escaped managed names were unpacked; now none).
func TestManagedNameWithEscapedOctetsCachedPerRegion(t *testing.T) {
	for _, name := range []string{`a@b`, `a\;b`, `a\(b`, `a"b`, `a'b`, `a\ b`} {
		// One UDP loop: every query meets the one cache.
		y := `gslb:
  listen: 127.0.0.1:0
  udp_workers: 1
  rate_limit: { responses_per_second: 0 }
  zones: [ { origin: ringlb.test, file: testdata/ringlb.test.zone } ]
  names:
    - name: '` + strings.ReplaceAll(name, "'", "''") + `.ringlb.test'
      geo: { east: [127.0.0.1/32], west: [127.0.0.2/32] }
      default_region: east
      regions:
        east: { serve_mode: always, members: [ { name: e4, address: 192.0.2.1 } ] }
        west: { serve_mode: always, members: [ { name: w4, address: 192.0.2.2 } ] }
`
		s := startGSLB(t, parseGSLBYAML(t, y))
		qname := configs.UnpackedName(name + ".ringlb.test.")
		for _, c := range []struct{ src, want string }{{"127.0.0.1", "192.0.2.1"}, {"127.0.0.2", "192.0.2.2"}, {"127.0.0.1", "192.0.2.1"}} {
			if m := queryFrom(t, s, "udp", c.src, qname, dns.TypeA, nil); answerIPs(m) != c.want {
				t.Errorf("%s A from %s: %s %q, want %s", qname, c.src, dns.RcodeToString[m.Rcode], answerIPs(m), c.want)
			}
		}
	}
}
