package gslb

import (
	"strings"

	"github.com/miekg/dns"
)

// The answer-size budget. A UDP answer goes to whatever address the query
// claims to come from, so its size is what a spoofed query can reflect: it
// is capped at gslb.max_udp_size (1232 by default, as NSD and Knot since DNS
// Flag Day 2020), whatever buffer the client advertises. What does not fit
// leaves as whole RRsets (RFC 2181 §9), never a part of one: a resolver
// caches what it gets as the complete set.

// udpLimit is how big a UDP answer to a query may be: the EDNS buffer size
// the client advertises, 512 when it advertises less or has no EDNS (RFC
// 6891 6.2.5, RFC 1035), never more than max_udp_size.
func (st *state) udpLimit(edns bool, clientSize uint16) int {
	if !edns {
		return dns.MinMsgSize
	}
	return min(max(int(clientSize), dns.MinMsgSize), st.maxUDP)
}

// fit makes m at most size bytes on the wire, compressed. Additional
// records go first, as NSD leaves them out (fitExtra); then, while it does
// not fit, the last RRset goes: authority, then answer. TC is set when an
// answer or authority RRset had to go (the client must retry over TCP for
// a complete answer; the SOA of a negative answer is part of it, RFC 2308),
// not for additional records, which are optional (RFC 2181 §9). The OPT
// and the TSIG (its MAC already at full length, see signReply) always
// stay: the budget is what is left beside them.
func fit(m *dns.Msg, size int) {
	var tsig, opt dns.RR
	if t := m.IsTsig(); t != nil {
		tsig = t
		m.Extra = m.Extra[:len(m.Extra)-1]
		// Packed last and uncompressed (dns.TsigGenerate), so its own length.
		size -= dns.Len(t)
	}
	for i, rr := range m.Extra {
		if rr.Header().Rrtype == dns.TypeOPT {
			opt = rr
			m.Extra = append(m.Extra[:i:i], m.Extra[i+1:]...)
			size -= dns.Len(rr) // owned by the root: nothing to compress
			break
		}
	}
	// Uncompressed first: no compression table to build, and what fits
	// uncompressed fits compressed. Compression stays on either way: it
	// keeps answers, and what they reflect, small.
	m.Compress = false
	if m.Len() > size {
		m.Compress = true
		if extra := m.Extra; len(extra) > 0 && m.Len() > size {
			m.Extra = nil
			if m.Len() <= size {
				fitExtra(m, extra, size)
			}
		}
		for m.Len() > size && dropLastRRset(m) {
		}
	}
	m.Compress = true
	if opt != nil {
		m.Extra = append(m.Extra, opt)
	}
	if tsig != nil {
		m.Extra = append(m.Extra, tsig)
	}
}

// fitExtra puts back into m, which fits size without them, what of the
// additional records extra fits: RRset by RRset (each with its
// signatures) in order, leaving out one that does not fit and trying the
// next of its type, and none of the next type once one was left out — what
// NSD keeps of the same records, so a resolver gets the same addresses of
// either (TestDifferentialAgainstNSD). Dropping from the end, as the other
// sections are, kept fewer: one big RRset early in the list took every one
// after it with it.
func fitExtra(m *dns.Msg, extra []dns.RR, size int) {
	m.Extra = make([]dns.RR, 0, len(extra))
	var prev uint16
	skipped := false
	for i := 0; i < len(extra); {
		j := endOfRRset(extra, i)
		t := extra[i].Header().Rrtype
		if skipped && t != prev {
			break
		}
		prev = t
		n := len(m.Extra)
		m.Extra = append(m.Extra, extra[i:j]...)
		if m.Len() > size {
			m.Extra = m.Extra[:n]
			skipped = true
		}
		i = j
	}
}

// endOfRRset is the index after the RRset that starts at rrs[i], its
// signatures (the RRSIGs after it covering its type) included.
func endOfRRset(rrs []dns.RR, i int) int {
	h0 := rrs[i].Header()
	j := i + 1
	for j < len(rrs) && sameRRset(h0, rrs[j].Header()) {
		j++
	}
	for j < len(rrs) {
		sig, ok := rrs[j].(*dns.RRSIG)
		if !ok || sig.TypeCovered != h0.Rrtype || !strings.EqualFold(sig.Hdr.Name, h0.Name) {
			break
		}
		j++
	}
	return j
}

// dropLastRRset removes the last RRset of m (additional, else authority,
// else answer: the records at the section's end with the owner, type and
// class of its last one, with the RRset they sign when they are RRSIGs),
// setting TC when it is not an additional one; false
// when there is none left. Our answers put each RRset's records together.
func dropLastRRset(m *dns.Msg) bool {
	for _, sec := range []struct {
		rrs      *[]dns.RR
		required bool
	}{{&m.Extra, false}, {&m.Ns, true}, {&m.Answer, true}} {
		rrs := *sec.rrs
		if len(rrs) == 0 {
			continue
		}
		i := startOfRRset(rrs, len(rrs)-1)
		if sig, ok := rrs[len(rrs)-1].(*dns.RRSIG); ok && i > 0 {
			// Signatures go with the RRset they cover, just before them
			// (dnssec.go): a set without them is bogus to a validator,
			// they are nothing without it.
			if h := rrs[i-1].Header(); h.Rrtype == sig.TypeCovered && strings.EqualFold(h.Name, sig.Hdr.Name) {
				i = startOfRRset(rrs, i-1)
			}
		}
		*sec.rrs = rrs[:i]
		m.Truncated = m.Truncated || sec.required
		return true
	}
	return false
}

// startOfRRset is the index of the first record of the RRset rrs[last]
// ends: the records before it with its owner, type and class.
func startOfRRset(rrs []dns.RR, last int) int {
	h0 := rrs[last].Header()
	i := last
	for i > 0 {
		h := rrs[i-1].Header()
		if h.Rrtype != h0.Rrtype || h.Class != h0.Class || !strings.EqualFold(h.Name, h0.Name) {
			break
		}
		i--
	}
	return i
}
