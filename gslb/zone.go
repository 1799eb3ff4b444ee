package gslb

import (
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// zone is one authoritative zone, immutable once loaded: its records indexed
// by lower-case owner name and type.
type zone struct {
	origin string // lower case, fully qualified
	// wire is origin in wire form, for matching a question's name without
	// unpacking it (an RRL slip, rrl.go).
	wire  []byte
	soa   *dns.SOA
	names map[string]map[uint16][]dns.RR
	// cfg is the zone's configuration (transfer rules).
	cfg configs.Zone
	// source is where its records were read, for errors: the file's
	// absolute path, or "records of ORIGIN" (inline records).
	source string
	// allow is cfg.Transfer.Allow, parsed: who may AXFR.
	allow []netip.Prefix
	// signer signs answers to queries with DO (dnssec.go); nil: unsigned.
	signer *signer
	// xfr is the signed zone's last transfer (transfer.go).
	xfr xfrCache
	// cuts are the names below the apex with an NS RRset: delegations
	// (delegation.go); cutWires the same in wire form, lower case, for
	// an RRL slip (rrl.go).
	cuts     map[string]bool
	cutWires [][]byte
	// dnames are the zone's DNAME records by owner (dname.go); nil in a
	// zone without one, which then costs its answers nothing.
	dnames map[string]*dns.DNAME
	// extra is the additional records of each NS, MX and SRV RRset
	// (additional.go), made when the state is built; nil before.
	extra map[rrsetID][]dns.RR
}

// regularFiles opens a zone file's $INCLUDEs as the file itself is opened
// (configs.OpenRegular). The parser hands it absolute paths (the zone's
// file is made absolute, relative includes are joined to its directory)
// without their leading slash, as an fs.FS takes names.
type regularFiles struct{}

func (regularFiles) Open(name string) (fs.File, error) {
	f, _, err := configs.OpenRegular("/" + name)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// loadZone parses a zone from its master file or inline records; nets says
// what a client network is, for its signer.
func loadZone(zc configs.Zone, nets configs.RateLimit) (*zone, error) {
	z := &zone{origin: strings.ToLower(dns.Fqdn(zc.Origin)), names: map[string]map[uint16][]dns.RR{}, cfg: zc}
	for _, c := range zc.Transfer.Allow {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("zone %s transfer.allow: %w", z.origin, err)
		}
		z.allow = append(z.allow, p.Masked())
	}
	var zp *dns.ZoneParser
	if zc.File != "" {
		// A regular file only, its includes too: a FIFO put in the place
		// of either after the check would hold a reload in open(2).
		// Made absolute for the includes (regularFiles), not cleaned:
		// "link/../zone" is the zone beside the link's target, as the
		// kernel resolves it, and was opened so before; its includes
		// are joined to its directory as named, cleaned, as ever.
		file := zc.File
		if !filepath.IsAbs(file) {
			wd, err := os.Getwd()
			if err != nil {
				return nil, fmt.Errorf("zone %s: %w", z.origin, err)
			}
			file = wd + string(filepath.Separator) + file
		}
		z.source = file
		f, _, err := configs.OpenRegular(file)
		if err != nil {
			return nil, fmt.Errorf("zone %s: %w", z.origin, err)
		}
		defer f.Close()
		zp = dns.NewZoneParser(f, z.origin, file)
		zp.SetIncludeAllowed(true) // a file may include others, as in BIND
		zp.SetIncludeFS(regularFiles{})
	} else {
		// Inline records include nothing: they come with the config, which
		// the config API takes from an operator's client.
		z.source = "records of " + z.origin
		zp = dns.NewZoneParser(strings.NewReader(strings.Join(zc.Records, "\n")), z.origin, z.source)
	}
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		if err := z.add(rr); err != nil {
			return nil, err
		}
	}
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("zone %s: %w", z.origin, configs.ZoneError(err))
	}
	if z.soa == nil {
		return nil, fmt.Errorf("zone %s: no SOA record at the apex", z.origin)
	}
	if err := z.occludedByDNAME(); err != nil {
		return nil, err
	}
	z.wire = make([]byte, 256)
	n, err := dns.PackDomainName(z.origin, z.wire, 0, nil, false)
	if err != nil {
		return nil, fmt.Errorf("zone %s: %w", z.origin, err)
	}
	z.wire = z.wire[:n]
	for c := range z.cuts {
		w := make([]byte, 256)
		n, err := dns.PackDomainName(c, w, 0, nil, false)
		if err != nil {
			return nil, fmt.Errorf("zone %s: %w", z.origin, err)
		}
		z.cutWires = append(z.cutWires, w[:n])
	}
	if zc.DNSSEC != nil {
		sg, err := newSigner(z.origin, zc.DNSSEC, nets)
		if err != nil {
			return nil, err
		}
		z.signer = sg
	}
	return z, nil
}

func (z *zone) add(rr dns.RR) error {
	h := rr.Header()
	h.Name = strings.ToLower(h.Name)
	if !dns.IsSubDomain(z.origin, h.Name) {
		return fmt.Errorf("zone %s: %s is outside the zone", z.origin, h.Name)
	}
	if z.cfg.DNSSEC != nil && dnssecType(h.Rrtype) && (h.Name == z.origin || h.Rrtype != dns.TypeDNSKEY && h.Rrtype != dns.TypeCDS && h.Rrtype != dns.TypeCDNSKEY) {
		// A signed zone's keys, signatures and NSEC records are the
		// signer's: ones from the file would contradict them.
		return fmt.Errorf("zone %s: %s %s in the zone's data; it is signed online (dnssec), remove it", z.origin, h.Name, dns.TypeToString[h.Rrtype])
	}
	if h.Rrtype == dns.TypeSOA {
		if h.Name != z.origin {
			return fmt.Errorf("zone %s: SOA at %s, not at the apex", z.origin, h.Name)
		}
		if z.soa != nil {
			return fmt.Errorf("zone %s: more than one SOA", z.origin)
		}
		z.soa = rr.(*dns.SOA)
	}
	byType := z.names[h.Name]
	if byType == nil {
		byType = map[uint16][]dns.RR{}
		z.names[h.Name] = byType
		// Empty non-terminals exist too: a name below them has records.
		for n := h.Name; n != z.origin; {
			i, end := dns.NextLabel(n, 0)
			if end {
				break
			}
			n = n[i:]
			if _, ok := z.names[n]; !ok {
				z.names[n] = map[uint16][]dns.RR{}
			}
		}
	}
	if h.Rrtype == dns.TypeCNAME && len(byType[dns.TypeCNAME]) > 0 {
		return fmt.Errorf("zone %s: more than one CNAME at %s", z.origin, h.Name)
	}
	if h.Rrtype == dns.TypeDNAME {
		// A singleton (RFC 6672 2.4): one target for every name below.
		if z.dnames[h.Name] != nil {
			return fmt.Errorf("zone %s: more than one DNAME at %s", z.origin, h.Name)
		}
		if z.dnames == nil {
			z.dnames = map[string]*dns.DNAME{}
		}
		z.dnames[h.Name] = rr.(*dns.DNAME)
	}
	if h.Rrtype == dns.TypeNS && h.Name != z.origin {
		if z.cuts == nil {
			z.cuts = map[string]bool{}
		}
		z.cuts[h.Name] = true
	}
	byType[h.Rrtype] = append(byType[h.Rrtype], rr)
	return nil
}

// lookup returns the records of name (lower case) and whether the name
// exists, falling back to a wildcard at the closest encloser (RFC 4592).
func (z *zone) lookup(name string) (map[uint16][]dns.RR, bool) {
	if byType, ok := z.names[name]; ok {
		return byType, true
	}
	// Closest encloser: the longest existing ancestor.
	for n := name; n != z.origin; {
		i, end := dns.NextLabel(n, 0)
		if end {
			break
		}
		n = n[i:]
		if _, ok := z.names[n]; ok {
			if wild, ok := z.names["*."+n]; ok {
				return wild, true
			}
			return nil, false
		}
	}
	return nil, false
}
