package gslb

import (
	"github.com/miekg/dns"
)

// Additional-section processing (RFC 1034 3.7, 4.3.2 step 6; RFC 1035
// 3.3.9, 3.3.11; RFC 2782): an answer's NS, MX and SRV records name hosts
// whose addresses the resolver needs next, so the zone's A and AAAA RRsets
// of those names go into the additional section, as NSD adds them:
//   - only targets inside the zone, and only from its own data: no CNAME
//     followed, a wildcard expanded to the target's name (NSD does);
//   - an MX or SRV target at or below a delegation is the child's and gets
//     nothing; an NS target there gets the zone's glue;
//   - a traffic-managed target gets nothing: its answer is the asker's
//     region's, which a resolver must ask for (and cache by ECS);
//   - each RRset once, every A RRset before every AAAA RRset (NSD's order,
//     which decides what is dropped first when they do not fit);
//   - optional: fit (budget.go) leaves out what does not fit, without TC;
//   - with DO in a signed zone, each carries its signatures (RFC 4035
//     3.1.1), when the signature budget allows, else it is left out.
// A referral's glue is the same rule applied to the cut's NS RRset
// (delegation.go). The lists are made once per RRset when the state is
// built (prepareAdditional), so an answer only looks its list up.

// rrsetID names an RRset of a zone: its owner as stored (a wildcard's is
// "*.…") and its type.
type rrsetID struct {
	owner  string
	rrtype uint16
}

// prepareAdditional makes the additional records of each NS, MX and SRV
// RRset of z; managed reports whether a name is traffic-managed.
func (z *zone) prepareAdditional(managed func(string) bool) {
	z.extra = map[rrsetID][]dns.RR{}
	for owner, byType := range z.names {
		for _, t := range []uint16{dns.TypeNS, dns.TypeMX, dns.TypeSRV} {
			if rrs := byType[t]; len(rrs) > 0 {
				if extra := z.addressesOfTargets(rrs, managed); len(extra) > 0 {
					z.extra[rrsetID{owner, t}] = extra
				}
			}
		}
	}
}

// additionalFor is the additional records of rrs, an RRset of z as stored
// (nil when it has none): what prepareAdditional made.
func (z *zone) additionalFor(rrs []dns.RR) []dns.RR {
	if len(rrs) == 0 || len(z.extra) == 0 {
		return nil
	}
	h := rrs[0].Header()
	return z.extra[rrsetID{h.Name, h.Rrtype}]
}

// addAdditional puts the additional records of rrs (an RRset of z as
// stored) in m's additional section. That section is empty before (the
// OPT, the TSIG and a referral's glue come after) and takes the zone's own
// list, shared by every answer, with no allocation: its capacity is its
// length, so whatever appends to it (the OPT, the TSIG) copies it first,
// and nothing writes into it in place (fit and the signer make new lists).
func (z *zone) addAdditional(m *dns.Msg, rrs []dns.RR) {
	extra := z.additionalFor(rrs)
	if len(m.Extra) == 0 {
		m.Extra = extra[:len(extra):len(extra)]
		return
	}
	m.Extra = append(m.Extra, extra...)
}

// addressesOfTargets is the A and AAAA RRsets z holds for the targets of
// rrs (NS, MX or SRV records), by the rules above.
func (z *zone) addressesOfTargets(rrs []dns.RR, managed func(string) bool) []dns.RR {
	var a, aaaa []dns.RR
	seen := map[string]bool{}
	for _, rr := range rrs {
		var target string
		glue := false
		switch v := rr.(type) {
		case *dns.NS:
			target, glue = v.Ns, true
		case *dns.MX:
			target = v.Mx
		case *dns.SRV:
			target = v.Target // "." (no service) is outside every zone
		default:
			continue
		}
		target = dns.CanonicalName(target)
		if seen[target] || !dns.IsSubDomain(z.origin, target) || managed(target) {
			continue
		}
		seen[target] = true
		if !glue && z.cut(target) != "" {
			continue // the child's: its servers answer for it
		}
		byType, ok := z.lookup(target)
		if !ok {
			continue
		}
		a = append(a, renamed(byType[dns.TypeA], target)...)
		aaaa = append(aaaa, renamed(byType[dns.TypeAAAA], target)...)
	}
	return append(a, aaaa...)
}

// renamed is rrs owned by name: rrs itself, or a wildcard's records copied
// under name.
func renamed(rrs []dns.RR, name string) []dns.RR {
	if len(rrs) == 0 || rrs[0].Header().Name == name {
		return rrs
	}
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		c := dns.Copy(rr)
		c.Header().Name = name
		out[i] = c
	}
	return out
}
