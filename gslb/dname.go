package gslb

import (
	"fmt"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// DNAME (RFC 6672): a DNAME record at a name redirects every name below it
// (not the name itself) to the same name below its target. A query for one
// is answered with the DNAME, a CNAME synthesised from it — the name asked
// to its rewritten name, with the DNAME's TTL (RFC 6672 3.1, 5.3.1) — and
// the chase of that name as of a CNAME's (answerVia), the rcode the last
// name's (RFC 6604). A rewritten name longer than 255 octets is YXDOMAIN
// (RFC 6672 2.2). Signed, the DNAME is signed and the synthesised CNAME is
// not: validators derive it from the DNAME (RFC 6672 5.3.1).
//
// Names below a DNAME have no data of their own (RFC 6672 2.4): a zone
// holding any is refused at load, as NSD and Knot take it as occluded, so
// that a name below a DNAME always reaches the synthesis and never a
// wildcard or a record of the file.

// dnameAbove returns the DNAME that rewrites name (lower case): the one at
// an ancestor of name, the apex included, name itself excluded; nil when
// none does. A zone without DNAME records returns at once.
func (z *zone) dnameAbove(name string) *dns.DNAME {
	if len(z.dnames) == 0 {
		return nil
	}
	var found *dns.DNAME
	for n := name; n != z.origin; {
		i, end := dns.NextLabel(n, 0)
		if end {
			break
		}
		n = n[i:]
		if d := z.dnames[n]; d != nil {
			found = d // the one nearest the apex: data below it is refused
		}
	}
	return found
}

// dnameTarget is name (below d's owner, lower case) rewritten by d, and
// whether it fits in 255 octets.
func dnameTarget(d *dns.DNAME, name string) (string, bool) {
	prefix := name[:len(name)-len(d.Hdr.Name)]
	target := strings.ToLower(dns.Fqdn(d.Target))
	if target != "." {
		target = prefix + target
	} else {
		target = prefix
	}
	return target, nameWireLen(target) <= 255
}

// nameWireLen is the length on the wire of name (fully qualified, not the
// root, in presentation form: an escape is one octet). dns.IsDomainName
// lets 256 through.
func nameWireLen(name string) int {
	// The DNS library's own packing reads the escapes; it does not refuse
	// a name past 255 octets, it counts it. A rewritten name is a query's
	// prefix and a target, each at most 255: twice that fits.
	var buf [2 * 256]byte
	n, err := dns.PackDomainName(dns.Fqdn(name), buf[:], 0, nil, false)
	if err != nil {
		return len(buf)
	}
	return n
}

// synthesise is the CNAME d makes for name (RFC 6672 3.1): its TTL the
// DNAME's.
func synthesise(d *dns.DNAME, name, target string) *dns.CNAME {
	return &dns.CNAME{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: d.Hdr.Ttl}, Target: target}
}

// synthesised reports whether the CNAME RRset owned by name in section rrs
// was synthesised from a DNAME there (at an ancestor of name): names below
// a DNAME have no records of their own, so any CNAME of theirs is.
func synthesised(rrs []dns.RR, name string) bool {
	for _, rr := range rrs {
		if h := rr.Header(); h.Rrtype == dns.TypeDNAME && !strings.EqualFold(h.Name, name) && dns.IsSubDomain(h.Name, name) {
			return true
		}
	}
	return false
}

// inAnswer reports whether d is in answer already (a chain that meets the
// same DNAME twice carries it once: RFC 2181 5).
func inAnswer(answer []dns.RR, d *dns.DNAME) bool {
	return slices.ContainsFunc(answer, func(rr dns.RR) bool { return rr == dns.RR(d) })
}

// occludedByDNAME is the data below a DNAME (RFC 6672 2.4), which a zone
// may not hold: it would never be answered, every name there being
// rewritten. One problem for each name, where its first record was
// written, naming the DNAME.
func (z *zone) occludedByDNAME() []recordProblem {
	if len(z.dnames) == 0 {
		return nil
	}
	var names []string
	for name, byType := range z.names {
		if len(byType) > 0 && z.dnameAbove(name) != nil {
			names = append(names, name)
		}
	}
	slices.SortFunc(names, canonicalCompare)
	var out []recordProblem
	for _, name := range names {
		d := z.dnameAbove(name)
		out = append(out, recordProblem{z.firstAt(name), fmt.Errorf("%s is below the DNAME at %s: names there are rewritten to %s (RFC 6672), its records would never be answered; remove them or the DNAME",
			name, d.Hdr.Name, d.Target)})
	}
	return out
}

// recordProblem is a problem of the record written at at.
type recordProblem struct {
	at  recordPos
	err error
}
