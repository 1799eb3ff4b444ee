package gslb

import (
	"fmt"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// Delegations: an NS RRset below a zone's apex cuts the zone (RFC 1034
// 4.2.1): the names at and below it are the child zone's, which this server
// does not serve. A query for one is answered with a referral (RFC 1034
// 4.3.2 step 3b): no AA, the cut's NS RRset in authority, the addresses of
// its name servers that the zone holds as glue in additional — and, in a
// signed zone asked with DO, the cut's DS RRset or the NSEC that proves it
// has none (RFC 4035 3.1.4), signed; the NS RRset and glue are the child's
// and go unsigned. The DS RRset itself is the parent's: a DS query for the
// cut is answered from the zone, authoritatively. Before, the NS RRset was
// served as data and names below it from the zone, authoritatively: a
// subdomain delegated to another server (an _acme-challenge name handed to
// an ACME DNS server) got NXDOMAIN here and resolvers never went there.

// cut returns the delegation point that holds name (name itself or its
// ancestor below the apex with an NS RRset, the one nearest the apex: data
// below a cut is the child's, a cut within it too), "" when none does.
func (z *zone) cut(name string) string {
	if len(z.cuts) == 0 {
		return ""
	}
	found := ""
	for n := name; n != z.origin; {
		if z.cuts[n] {
			found = n
		}
		i, end := dns.NextLabel(n, 0)
		if end {
			break
		}
		n = n[i:]
	}
	return found
}

// occludedNames refuses each traffic-managed name at or below a delegation
// of its zone, or a DNAME (dname.go): the names there are the child zone's, answered by its name
// servers, which resolvers are referred to (NSD's nsd-checkzone and Knot
// take data below a cut as occluded). Served as managed, ahead of the
// referral, this server's answer and the child's would contradict each
// other, and which one a resolver got would depend on what it asked first.
// Checked where zone files are read (the config's check reads none).
func (st *state) occludedNames(cfg *configs.GSLB) []error {
	var errs []error
	for i, n := range cfg.Names {
		name := dns.CanonicalName(n.Name)
		z := st.zoneFor(name)
		if z == nil {
			continue // in no zone: the config's check says so
		}
		// Named where the config file has the name, as configs.Load
		// names its own problems.
		problem := func(format string, args ...any) error {
			return placed(cfg, fmt.Sprintf("gslb.names[%d].name", i), fmt.Errorf(format, args...))
		}
		if c := z.cut(name); c != "" {
			errs = append(errs, problem("%s is at or below the delegation %s of zone %s (its NS records in %s): "+
				"names there are the child zone's; manage it in the child zone, or remove the delegation", name, c, z.origin, z.where(z.firstAt(c))))
		}
		d := z.dnames[name]
		if d == nil {
			d = z.dnameAbove(name)
		}
		if d != nil {
			// Below a DNAME every name is rewritten (RFC 6672), and at its
			// owner a managed answer would stand beside a redirection of
			// the names below: either way the DNAME decides, not the pools.
			errs = append(errs, problem("%s is at or below the DNAME at %s of zone %s (in %s), which rewrites the names below it to %s: "+
				"manage the name the DNAME leads to, or remove the DNAME", name, d.Hdr.Name, z.origin, z.where(z.firstAt(d.Hdr.Name)), d.Target))
		}
	}
	return errs
}

// referredWire is cut for an RRL slip, allocating nothing: whether a
// question for name (wire form, any case) of qtype is answered with a
// referral — at or below a cut, but for the cut's own DS.
func (z *zone) referredWire(name []byte, qtype uint16) bool {
	for _, cw := range z.cutWires {
		off := 0
		for len(name)-off > len(cw) && off < len(name) {
			off += int(name[off]) + 1
		}
		if len(name)-off == len(cw) && asciiFold(name[off:], cw) && (off > 0 || qtype != dns.TypeDS) {
			return true
		}
	}
	return false
}

// referral is the part of a referral to a cut that is not signed: the
// NS RRset (authority) and the glue (additional), which answerVia adds
// after signing. required is the glue for name servers at or below the cut,
// without which the child cannot be reached (RFC 9471): over UDP, an answer
// that cannot carry it all is truncated.
type referral struct {
	ns, glue, required []dns.RR
}

// refer makes the referral to the cut c of z, and adds to m's authority
// what of it is signed in a signed answer (sg, nil when unsigned): the
// cut's DS RRset, else the NSEC that proves there is none.
func (st *state) refer(m *dns.Msg, z *zone, c string, sg *signer) *referral {
	at := z.names[c]
	ref := &referral{ns: at[dns.TypeNS], glue: z.additionalFor(at[dns.TypeNS])}
	for _, g := range ref.glue {
		if dns.IsSubDomain(c, g.Header().Name) {
			ref.required = append(ref.required, g)
		}
	}
	if sg != nil {
		if ds := at[dns.TypeDS]; len(ds) > 0 {
			m.Ns = append(m.Ns, ds...)
		} else {
			// An insecure delegation: the cut's types as the parent
			// holds them, NS and no DS (RFC 4035 2.3, 5.2).
			m.Ns = append(m.Ns, compactNSEC(c, []uint16{dns.TypeNS}, st.negativeSOA(z).Header().Ttl))
		}
	}
	return ref
}

// put adds r's unsigned records to m: the NS RRset first in authority, the
// glue in additional (the cut's NS RRset's additional records,
// additional.go: out-of-zone name servers' addresses are the resolver's to
// find).
func (r *referral) put(m *dns.Msg) {
	m.Ns = append(append(make([]dns.RR, 0, len(r.ns)+len(m.Ns)), r.ns...), m.Ns...)
	m.Extra = append(m.Extra, r.glue...)
}

// lacks reports whether m, fitted to its transport, lost glue r requires:
// fit drops additional records as optional.
func (r *referral) lacks(m *dns.Msg) bool {
	for _, g := range r.required {
		found := false
		for _, rr := range m.Extra {
			if rr == g {
				found = true
				break
			}
		}
		if !found {
			return true
		}
	}
	return false
}
