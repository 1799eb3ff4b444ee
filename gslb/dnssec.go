package gslb

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// DNSSEC, signed online. A zone with gslb.zones[].dnssec answers a query
// that has the DO bit with RRSIGs on every RRset of the answer and authority
// sections — managed names included, whose answers change on failover — and
// proves a negative answer with one NSEC record made for the name asked
// (compact denial of existence, RFC 9824): the name "exists" with only the
// types it has (NODATA), or with the NXNAME type alone (no such name, sent
// as NOERROR, or NXDOMAIN when the query has the CO bit). One signature per
// negative answer, and no chain a client can walk to list the zone. Answers
// to queries without DO are unchanged.
//
// Signatures are cached by the content of the RRset they cover (a hash of
// its records in canonical form, whatever the case of the name asked) and
// replaced by new ones once less than signature_refresh is left of them;
// an answer that changes (a failover) gets its signature on first use.
//
// Keys: active KSKs (flags 257) sign the DNSKEY, CDS and CDNSKEY sets,
// active ZSKs (256) everything else (the KSKs, when there is no active ZSK).
// Every configured key, active or published, is in the DNSKEY set; CDS and
// CDNSKEY list the active KSKs, for the parent.
//
// A wildcard's answer is signed as the name asked (its RRSIG counts the
// labels of that name): with compact denial a name that matches a wildcard
// exists as far as a validator can tell, so no proof that it does not
// exist, which online signing cannot give without listing the zone, is
// needed. delv validates it (TestDNSSECValidatesWithDelv).

// signer signs one zone's answers. Immutable but for its cache; built by
// Reload, which hands the cache over when the keys and timings stay.
type signer struct {
	origin string
	// ksks sign the key sets; zsks everything else (ksks when empty).
	ksks, zsks []signingKey
	dnskeys    []dns.RR // every key, active or published
	cds        []dns.RR // one CDS (SHA-256) per active KSK
	cdnskeys   []dns.RR // one CDNSKEY per active KSK
	validity   time.Duration
	refresh    time.Duration
	// fingerprint names the keys and timings: two signers with the same
	// one make the same signatures, so a reload keeps the cache.
	fingerprint string
	cache       *sigCache
	// budget bounds the new signatures UDP answers may cost
	// (signatures_per_second); tcpBudget, as many again, TCP answers'.
	// Apart, so that TCP clients cannot spend what spoofed UDP floods are
	// held to, nor UDP floods starve the resolvers they send to TCP.
	budget, tcpBudget *signBudget
	// tcpShare holds each client network to its share of tcpBudget
	// (tcp_client_share), nil when that is the whole of it.
	tcpShare *netBuckets
	// tcpPatience is how long a TCP answer waits for its turn in
	// tcpBudget before it is answered SERVFAIL.
	tcpPatience time.Duration
	// now is time.Now; tests move it to see signatures refreshed.
	now func() time.Time
	// signed counts signatures by where they came from ("cache",
	// "signed"), and answers deferred to TCP ("deferred").
	signed func(from string)
}

// errSignBudget: a UDP answer would need a new signature beyond the budget.
var errSignBudget = errors.New("over signatures_per_second: retry over TCP")

// errSignBudgetTCP: a TCP answer waited tcpPatience for a new signature
// beyond the budget and did not get one.
var errSignBudgetTCP = errors.New("over signatures_per_second over TCP")

// errSignShareTCP: a TCP answer would need a new signature beyond its
// client network's share of the TCP budget.
var errSignShareTCP = errors.New("over the client network's share of signatures_per_second over TCP")

// tcpSignPatience is how long a TCP answer waits for a new signature when
// the budget is spent: a resolver's retry usually gets its turn within it,
// and a client asking for more than the budget waits instead of spending
// the gslb's CPU. Waiting answers are bounded by max_tcp_connections.
const tcpSignPatience = time.Second

// The share table (netBuckets) is fixed at 2^4 × 2^8 = 4096 buckets, 128
// KiB a signed zone. TCP sources are real (a handshake), and at most
// max_tcp_connections of them are served at a time, so a busy network keeps
// its bucket; one pushed out by a flood of others comes back with a full
// share, which errs towards answering and stays within tcpBudget.
const (
	tcpShareShardBits = 4
	tcpShareSlotBits  = 8
)

// spend says which budget a new signature comes from.
type spend uint8

const (
	spendNone spend = iota // a zone transfer, to an allowed client
	spendUDP               // over budget: errSignBudget at once
	spendTCP               // over the client's share: errSignShareTCP at once; over budget: wait up to tcpPatience
	// spendTCPOptional is spendTCP for what an answer may leave out (its
	// additional records): over budget, errSignBudgetTCP at once.
	spendTCPOptional
)

// signBudget is a token bucket of new signatures: rate a second, and as
// many in a burst. An RRset spends one a key that signs it.
type signBudget struct {
	mu     sync.Mutex
	rate   float64
	tokens float64
	last   time.Time
}

func newSignBudget(rate float64) *signBudget {
	return &signBudget{rate: rate, tokens: rate}
}

// take spends n signatures, false when fewer are left at now. The bucket's
// clock only goes forward: a caller that read the time before waiting for
// the lock brings an earlier now, and set back, the clock had the next
// caller credited for the same time again.
func (b *signBudget) take(now time.Time, n float64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.IsZero() || now.After(b.last) {
		if !b.last.IsZero() {
			b.tokens = min(b.rate, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		}
		b.last = now
	}
	if b.tokens < n {
		return false
	}
	b.tokens -= n
	return true
}

// wait spends n signatures, waiting (by the real clock, at most patience)
// for the bucket to refill at now's pace; false when it did not.
func (b *signBudget) wait(now func() time.Time, patience time.Duration, n float64) bool {
	start := time.Now()
	for {
		if b.take(now(), n) {
			return true
		}
		b.mu.Lock()
		next := time.Duration((n - b.tokens) / b.rate * float64(time.Second))
		b.mu.Unlock()
		if time.Since(start)+next > patience {
			return false
		}
		time.Sleep(max(next, time.Millisecond))
	}
}

type signingKey struct {
	key  *dns.DNSKEY
	tag  uint16
	priv crypto.Signer
}

// newSigner reads the keys of cfg for zone origin; nets says what a client
// network is (the prefixes of gslb.rate_limit).
func newSigner(origin string, cfg *configs.DNSSEC, nets configs.RateLimit) (*signer, error) {
	sg := &signer{origin: origin, validity: cfg.SignatureValidity.D(), refresh: cfg.SignatureRefresh.D(), cache: newSigCache(),
		tcpPatience: tcpSignPatience, now: time.Now}
	var fp strings.Builder
	fmt.Fprintf(&fp, "%s %s %d", sg.validity, sg.refresh, cfg.DNSKEYTTL)
	for _, kc := range cfg.Keys {
		key, priv, err := kc.Read(origin) // as the config's check read it
		if err != nil {
			return nil, fmt.Errorf("zone %s dnssec: %w", origin, err)
		}
		key.Hdr.Ttl = uint32(cfg.DNSKEYTTL)
		sg.dnskeys = append(sg.dnskeys, key)
		fmt.Fprintf(&fp, " %s:%s", key.PublicKey, kc.State)
		if kc.State != configs.KeyActive {
			continue
		}
		sk := signingKey{key: key, tag: key.KeyTag(), priv: priv}
		if key.Flags == configs.FlagsKSK {
			sg.ksks = append(sg.ksks, sk)
			ds := key.ToDS(dns.SHA256).ToCDS()
			sg.cds = append(sg.cds, ds)
			sg.cdnskeys = append(sg.cdnskeys, key.ToCDNSKEY())
		} else {
			sg.zsks = append(sg.zsks, sk)
		}
	}
	if len(sg.ksks) == 0 {
		return nil, fmt.Errorf("zone %s dnssec: no active key-signing key", origin)
	}
	sg.fingerprint = fp.String()
	// The budgets count signatures, and an RRset costs one a key that
	// signs it (two through a rollover, up to 8 keys): each holds at least
	// what the RRset with the most keys spends, or it would never be signed.
	perSet := float64(max(len(sg.ksks), len(sg.zsks)))
	rate := max(float64(cfg.SignaturesPerSecond), perSet)
	sg.budget, sg.tcpBudget = newSignBudget(rate), newSignBudget(rate)
	if share := cfg.TCPClientShare; share > 0 && share < 1 {
		// At least one RRset a second, or a bucket never holds enough.
		nb := newNetBuckets(tcpShareShardBits, tcpShareSlotBits, max(share*rate, perSet), nets.IPv4Prefix, nets.IPv6Prefix)
		sg.tcpShare = &nb
	}
	return sg, nil
}

// id is the signer's fingerprint, "" for none (an unsigned zone).
func (sg *signer) id() string {
	if sg == nil {
		return ""
	}
	return sg.fingerprint
}

// keysFor returns the keys that sign an RRset of type t.
func (sg *signer) keysFor(t uint16) []signingKey {
	switch {
	case t == dns.TypeDNSKEY || t == dns.TypeCDS || t == dns.TypeCDNSKEY:
		return sg.ksks
	case len(sg.zsks) > 0:
		return sg.zsks
	}
	return sg.ksks
}

// apexSet returns the signer's own RRset of type t at the apex (DNSKEY,
// CDS, CDNSKEY), nil for other types.
func (sg *signer) apexSet(t uint16) []dns.RR {
	switch t {
	case dns.TypeDNSKEY:
		return sg.dnskeys
	case dns.TypeCDS:
		return sg.cds
	case dns.TypeCDNSKEY:
		return sg.cdnskeys
	}
	return nil
}

// sigEntry is one cached set of signatures over one RRset.
type sigEntry struct {
	sigs []*dns.RRSIG
	// inception (Unix seconds): before it the signatures are not valid,
	// and the entry is signed again (fresh), as from refreshAt on.
	inception, refreshAt int64
}

// fresh reports whether e's signatures may still be served at now (Unix
// seconds). Before their inception too they may not: made while the clock
// ran ahead (a wrong clock at boot, a spoofed NTP answer), they are bogus
// to every validator until the real time reaches it, and without this they
// were served until their refresh, days later.
func (e sigEntry) fresh(now int64) bool {
	return e.inception <= now && now < e.refreshAt
}

// sigs returns the signatures of rrset (one per key that signs its type):
// cached ones while they have more than refresh left, else new ones, from
// the budget spend names (errSignBudget, errSignBudgetTCP when it has none),
// over TCP within the share of client's network (errSignShareTCP).
func (sg *signer) sigs(rrset []dns.RR, from spend, client netip.Addr) (sigEntry, error) {
	key, err := rrsetKey(rrset)
	if err != nil {
		return sigEntry{}, err
	}
	now := sg.now()
	if e, ok := sg.cache.get(key); ok && e.fresh(now.Unix()) {
		sg.count("cache")
		return e, nil
	}
	h := rrset[0].Header()
	keys := sg.keysFor(h.Rrtype)
	cost := float64(len(keys)) // one signature a key
	switch from {
	case spendUDP:
		if !sg.budget.take(now, cost) {
			return sigEntry{}, errSignBudget
		}
	case spendTCP, spendTCPOptional:
		// Over its share a client is refused at once, not made to wait
		// like the shared budget's: miekg/dns answers a connection's
		// queries one after another, so a wait holds the connection and
		// one of max_tcp_connections' slots, which every client shares,
		// up to tcpPatience per query — the starving the share is there
		// to end, moved from signatures to connections. Within its share
		// a client waits for the shared budget: when that is spent, it is
		// by many clients each within theirs, and turns come round.
		var share uint64
		if sg.tcpShare != nil {
			var ok bool
			if share, ok, _ = sg.tcpShare.take(client, now, cost); !ok {
				return sigEntry{}, errSignShareTCP
			}
		}
		var got bool
		if from == spendTCPOptional {
			got = sg.tcpBudget.take(now, cost)
		} else {
			got = sg.tcpBudget.wait(sg.now, sg.tcpPatience, cost)
		}
		if !got {
			if sg.tcpShare != nil {
				sg.tcpShare.refund(share, cost) // it got no signature
			}
			return sigEntry{}, errSignBudgetTCP
		}
		now = sg.now()
	}
	// An hour back: a validator whose clock is behind ours still accepts it.
	inception, expiration := now.Add(-time.Hour), now.Add(sg.validity)
	e := sigEntry{inception: inception.Unix(), refreshAt: expiration.Add(-sg.refresh).Unix()}
	signed := starSafe(rrset)
	for _, k := range keys {
		sig := &dns.RRSIG{Hdr: dns.RR_Header{Ttl: h.Ttl}, Algorithm: k.key.Algorithm, OrigTtl: h.Ttl,
			Inception: uint32(inception.Unix()), Expiration: uint32(expiration.Unix()), KeyTag: k.tag, SignerName: sg.origin}
		// Sign covers the canonical form (owner in lower case): the same
		// signature serves every case of the name asked, and each answer
		// puts the name as asked on its copy (signRRsets).
		if err := sig.Sign(k.priv, signed); err != nil {
			return sigEntry{}, fmt.Errorf("sign %s %s with key %d: %w", h.Name, dns.TypeToString[h.Rrtype], k.tag, err)
		}
		e.sigs = append(e.sigs, sig)
	}
	sg.cache.put(key, e)
	sg.count("signed")
	return e, nil
}

func (sg *signer) count(from string) {
	if sg.signed != nil {
		sg.signed(from)
	}
}

// signRRsets returns rrs (a section of an answer: RRsets, each one's records
// together) with each RRset followed by its signatures, new ones from the
// budget spend names (and client's share of it).
func (sg *signer) signRRsets(rrs []dns.RR, from spend, client netip.Addr) ([]dns.RR, error) {
	if len(rrs) == 0 {
		return rrs, nil
	}
	out := make([]dns.RR, 0, 2*len(rrs))
	for i := 0; i < len(rrs); {
		j := i + 1
		for j < len(rrs) && sameRRset(rrs[i].Header(), rrs[j].Header()) {
			j++
		}
		set := rrs[i:j]
		out = append(out, set...)
		if t := set[0].Header().Rrtype; t != dns.TypeRRSIG && t != dns.TypeOPT && t != dns.TypeTSIG &&
			(t != dns.TypeCNAME || !synthesised(rrs, set[0].Header().Name)) {
			// A CNAME synthesised from a DNAME goes unsigned (RFC 6672
			// 5.3.1): validators derive it from the signed DNAME.
			e, err := sg.sigs(set, from, client)
			if err != nil {
				return nil, err
			}
			for _, sig := range e.sigs {
				c := *sig
				c.Hdr.Name = set[0].Header().Name // as asked
				c.Hdr.Rrtype, c.Hdr.Class, c.Hdr.Ttl = dns.TypeRRSIG, set[0].Header().Class, set[0].Header().Ttl
				out = append(out, &c)
			}
		}
		i = j
	}
	return out, nil
}

// signMsg signs the answer and authority sections of m, new signatures
// from the budget spend names (over TCP, within the share of client's
// network: the connection's source), and its additional section, which
// holds only additional records then (additional.go; the OPT, the TSIG and
// a referral's glue are added after): those are optional, so when the
// budget has no signatures left for them, or a signature cannot be made,
// they are left out (extraLeftOut), and never waited for.
func (sg *signer) signMsg(m *dns.Msg, from spend, client netip.Addr) (extraLeftOut bool, err error) {
	if m.Answer, err = sg.signRRsets(m.Answer, from, client); err != nil {
		return false, err
	}
	if m.Ns, err = sg.signRRsets(m.Ns, from, client); err != nil {
		return false, err
	}
	if len(m.Extra) > 0 {
		if from == spendTCP {
			from = spendTCPOptional
		}
		if m.Extra, err = sg.signRRsets(m.Extra, from, client); err != nil {
			m.Extra = nil
			return true, nil
		}
	}
	return false, nil
}

func sameRRset(a, b *dns.RR_Header) bool {
	return a.Rrtype == b.Rrtype && a.Class == b.Class && strings.EqualFold(a.Name, b.Name)
}

// rrsetKey identifies an RRset by content: its records packed
// uncompressed, owner names in lower case, sorted. SHA-256, because clients
// choose the owner of every negative answer's NSEC: an entry they could
// make collide with another RRset's would hand out a wrong signature.
func rrsetKey(rrset []dns.RR) ([32]byte, error) {
	// Packed as a message: dns.PackRR would write each record's Rdlength,
	// and the zone's records are shared by every goroutine answering.
	msg := dns.Msg{Answer: rrset}
	b, err := msg.Pack()
	if err != nil {
		return [32]byte{}, err
	}
	recs := make([][]byte, 0, len(rrset))
	off := 12 // the header
	for range rrset {
		start := off
		// The owner's labels: their length octets (at most 63) are never
		// ASCII letters.
		for off < len(b) && b[off] != 0 {
			for k := off + 1; k <= off+int(b[off]) && k < len(b); k++ {
				if 'A' <= b[k] && b[k] <= 'Z' {
					b[k] += 'a' - 'A'
				}
			}
			off += int(b[off]) + 1
		}
		off++ // the root label
		if off+10 > len(b) {
			return [32]byte{}, fmt.Errorf("rrset of %s does not pack", rrset[0].Header().Name)
		}
		off += 10 + int(binary.BigEndian.Uint16(b[off+8:]))
		if off > len(b) {
			return [32]byte{}, fmt.Errorf("rrset of %s does not pack", rrset[0].Header().Name)
		}
		recs = append(recs, b[start:off])
	}
	slices.SortFunc(recs, bytes.Compare)
	h := sha256.New()
	for _, r := range recs {
		h.Write(r)
	}
	var key [32]byte
	copy(key[:], h.Sum(nil))
	return key, nil
}

// sigCacheEntries bounds each of the cache's two generations: with the
// other generation, at most 2×64Ki signed RRsets (about 45 MiB a signed zone:
// 353 bytes an entry with one signature, measured; a rollover's second key
// adds one) are kept.
const sigCacheEntries = 64 << 10

// sigCache holds signatures by RRset content in two generations: lookups
// read the current one, then the previous one (and move what they find
// forward); when the current one is full it becomes the previous one and
// the oldest is dropped. A flood of one-off names (each a new NSEC to sign)
// thus churns through the cache without it growing, and what is asked for
// all the time survives.
type sigCache struct {
	mu       sync.Mutex
	cur, old map[[32]byte]sigEntry
}

func newSigCache() *sigCache {
	return &sigCache{cur: map[[32]byte]sigEntry{}, old: map[[32]byte]sigEntry{}}
}

func (c *sigCache) get(k [32]byte) (sigEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.cur[k]; ok {
		return e, true
	}
	e, ok := c.old[k]
	if ok {
		c.putLocked(k, e)
	}
	return e, ok
}

func (c *sigCache) put(k [32]byte, e sigEntry) {
	c.mu.Lock()
	c.putLocked(k, e)
	c.mu.Unlock()
}

func (c *sigCache) putLocked(k [32]byte, e sigEntry) {
	if len(c.cur) >= sigCacheEntries {
		c.old, c.cur = c.cur, make(map[[32]byte]sigEntry, sigCacheEntries/4)
	}
	c.cur[k] = e
}

// clear empties the cache (benchmarks: every answer signed afresh).
func (c *sigCache) clear() {
	c.mu.Lock()
	clear(c.cur)
	clear(c.old)
	c.mu.Unlock()
}

func (c *sigCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.old)
}

// compactNSEC is the NSEC of a compact negative answer (RFC 9824) at owner:
// the next name is owner's immediate successor (successor), so it covers
// no other name; types are those owner has (none for an empty
// non-terminal), or NXNAME alone when it does not exist. Its TTL is the
// negative answer's (RFC 9077).
func compactNSEC(owner string, types []uint16, ttl uint32) *dns.NSEC {
	return &dns.NSEC{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeNSEC, Class: dns.ClassINET, Ttl: ttl},
		NextDomain: successor(owner), TypeBitMap: typeBitmap(types)}
}

// successor is name's immediate successor in canonical order (RFC 4034
// 6.1), in lower case: RFC 4471 3.1.2's absolute method. \000.name while
// that fits in 255 octets — every name but the longest. Clients choose the
// names a compact answer is made for, the longest included: \000. in front
// of a name of 254 or 255 octets made a next name of 256 or 257, which no
// DNS message may carry, so the whole answer did not parse. For those, the
// first label with a zero octet added, while the name then fits; else the
// first label with its last octet below 0xff incremented and the octets
// after it dropped (no name of this length lies between: a longer label or
// a child would not fit); a label all of 0xff is the last of its parent's
// children, and the parent's successor beside them is taken so, from its
// first label.
func successor(name string) string {
	var buf [256]byte
	n, err := dns.PackDomainName(dns.Fqdn(name), buf[:], 0, nil, false)
	if err != nil || n+2 <= 255 {
		return `\000.` + strings.ToLower(name)
	}
	wire := buf[:n]
	for i, c := range wire {
		if 'A' <= c && c <= 'Z' { // length octets are at most 63: never letters
			wire[i] = c + 'a' - 'A'
		}
	}
	for off := 0; off < len(wire) && wire[off] != 0; off += int(wire[off]) + 1 {
		l := int(wire[off])
		label, rest := wire[off+1:off+1+l], wire[off+1+l:]
		if l < 63 && (off > 0 || n+1 <= 255) {
			// A parent is at least 64 octets shorter: room for one more.
			return unpackName(append(append(append([]byte{byte(l + 1)}, label...), 0), rest...))
		}
		for i := l - 1; i >= 0; i-- {
			if label[i] == 0xff {
				continue
			}
			c := label[i] + 1
			if 'A' <= c && c <= 'Z' {
				c = 'Z' + 1 // upper case sorts as lower case: '@' is followed by '['
			}
			out := append(append([]byte{byte(i + 1)}, label[:i]...), c)
			return unpackName(append(out, rest...))
		}
	}
	return "." // a zone's names of 0xff all the way up: none follows, the chain wraps
}

// unpackName is the presentation form of a name in wire form.
func unpackName(wire []byte) string {
	name, _, err := dns.UnpackDomainName(wire, 0)
	if err != nil {
		return "."
	}
	return name
}

// typeBitmap is types plus RRSIG and NSEC (a signed name has both),
// sorted and without repeats, as NSEC's bitmap must be.
func typeBitmap(types []uint16) []uint16 {
	out := append(slices.Clone(types), dns.TypeRRSIG, dns.TypeNSEC)
	slices.Sort(out)
	return slices.Compact(out)
}

// typesAt lists the types a name of z has, from its records (byType) and,
// at the apex of a signed zone, the signer's key sets.
func (z *zone) typesAt(name string, byType map[uint16][]dns.RR) []uint16 {
	types := make([]uint16, 0, len(byType)+3)
	// At a cut the zone is authoritative for NS and DS alone: glue at the
	// cut's own name (its A, AAAA) is the child's, and an NSEC there lists
	// no type the parent does not hold (RFC 4035 2.3), as the referral's
	// does (refer). A DS question's NODATA listed the glue's A.
	cut := name != z.origin && z.cuts[name]
	for t, rrs := range byType {
		if len(rrs) > 0 && (!cut || t == dns.TypeNS || t == dns.TypeDS) {
			types = append(types, t)
		}
	}
	if z.signer != nil && name == z.origin {
		types = append(types, dns.TypeDNSKEY)
		if len(z.signer.cds) > 0 {
			types = append(types, dns.TypeCDS, dns.TypeCDNSKEY)
		}
	}
	return types
}

// nsecAsked answers a question of type NSEC for name (as asked) in z,
// whose types are types: the NSEC a negative answer there would carry, in
// the answer section — at a name that exists, one that does not
// (NXNAME), a managed name and a CNAME's owner alike. As a NODATA, its own
// bitmap (NSEC) contradicted the answer it proved, and validators called
// it bogus; at a CNAME's owner the CNAME was followed, and BIND took the
// CNAME answer to an NSEC question for a malformed one (NSEC stands beside
// a CNAME, RFC 4035 2.5, and is the owner's own).
func (st *state) nsecAsked(m *dns.Msg, z *zone, name string, types []uint16) {
	m.Answer = append(m.Answer, compactNSEC(name, types, st.negativeSOA(z).Header().Ttl))
}

// deny completes a negative answer about name (as asked) in z: the SOA in
// authority and, when sg signs it (nil: unsigned), the compact NSEC that
// proves it. types are the types name has; exists is false for a name
// that does not exist, whose proof is the NXNAME type.
func (st *state) deny(m *dns.Msg, z *zone, name string, types []uint16, exists bool, sg *signer) {
	soa := st.negativeSOA(z)
	m.Ns = append(m.Ns, soa)
	if sg == nil {
		return
	}
	if !exists {
		types = []uint16{dns.TypeNXNAME}
	}
	m.Ns = append(m.Ns, compactNSEC(name, types, soa.Header().Ttl))
}

// dnssecFor is the signer of z for query r: nil when z is unsigned or r
// has no DO bit (its answer is the same as without DNSSEC).
func dnssecFor(z *zone, r *dns.Msg) *signer {
	if z.signer == nil {
		return nil
	}
	if opt := r.IsEdns0(); opt != nil && opt.Do() {
		return z.signer
	}
	return nil
}

// compactOK reports whether r asks for NXDOMAIN in compact negative
// answers (the CO bit, RFC 9824 4): without it a name that does not exist
// is answered NOERROR, which every validator accepts as the NODATA its
// NSEC proves.
func compactOK(r *dns.Msg) bool {
	opt := r.IsEdns0()
	return opt != nil && opt.Do() && opt.Co()
}

// dnssecTypes are the records a signed zone's data must not hold: the
// signer makes them.
func dnssecType(t uint16) bool {
	switch t {
	case dns.TypeRRSIG, dns.TypeNSEC, dns.TypeNSEC3, dns.TypeNSEC3PARAM, dns.TypeDNSKEY, dns.TypeCDS, dns.TypeCDNSKEY:
		return true
	}
	return false
}

// signedWindow is when m's signatures may be served (Unix seconds): from
// the latest inception until the first is due for replacement, in any
// section; 0, 0 when m has none. The UDP loop's cache keeps a packed signed
// answer no longer than the signature cache keeps its signatures
// (sigEntry.fresh) — its additional records' too, which may have been
// signed days before its answer's: kept by the answer's alone, it served
// them past their expiration
// (TestCachedAnswerServesNoStaleAdditionalSignature).
func (st *state) signedWindow(m *dns.Msg) (from, until int64) {
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			sig, ok := rr.(*dns.RRSIG)
			if !ok {
				continue
			}
			refresh := int64(0)
			for _, z := range st.zones {
				if z.signer != nil && z.origin == dns.CanonicalName(sig.SignerName) {
					refresh = int64(z.signer.refresh / time.Second)
				}
			}
			if at := int64(sig.Expiration) - refresh; until == 0 || at < until {
				until = at
			}
			from = max(from, int64(sig.Inception))
		}
	}
	return from, until
}

// signedTransfer is rrs, a transfer of z (SOA first and last), signed: the
// key sets at the apex, every RRset followed by its signatures, and an NSEC
// chain over every name with records, in canonical order (RFC 4034 6.1), so
// that a secondary serves the zone as any signed zone. Managed names are in
// it with the answers the transfer carries.
func (st *state) signedTransfer(z *zone, rrs []dns.RR) ([]dns.RR, error) {
	sg := z.signer
	soa := rrs[0]
	body := append([]dns.RR{soa}, rrs[1:len(rrs)-1]...)
	for _, t := range []uint16{dns.TypeDNSKEY, dns.TypeCDS, dns.TypeCDNSKEY} {
		body = append(body, sg.apexSet(t)...)
	}
	types := map[string][]uint16{}
	var names []string
	// A delegation's NS RRset and its glue are the child's: neither signed
	// nor, below the cut, in the NSEC chain (RFC 4035 2.2, 2.3); the cut's
	// NSEC lists NS and its DS, which is the parent's and signed.
	var child []dns.RR
	signable := body[:0:0]
	for _, rr := range body {
		h := rr.Header()
		name := strings.ToLower(h.Name)
		if c := z.cut(name); c != "" && (c != name || h.Rrtype != dns.TypeDS) {
			child = append(child, rr)
			if c != name || h.Rrtype != dns.TypeNS {
				continue
			}
		} else {
			signable = append(signable, rr)
		}
		if _, ok := types[name]; !ok {
			names = append(names, name)
		}
		types[name] = append(types[name], h.Rrtype)
	}
	body = signable
	slices.SortFunc(names, canonicalCompare)
	ttl := st.negativeSOA(z).Header().Ttl
	for i, name := range names {
		next := names[(i+1)%len(names)] // the last one points back to the apex
		nsec := compactNSEC(name, types[name], ttl)
		nsec.NextDomain = next
		body = append(body, nsec)
	}
	// RRsets of one name and type may lie apart in the list (the key sets,
	// managed answers): gather each before signing.
	slices.SortStableFunc(body, func(a, b dns.RR) int {
		if c := canonicalCompare(strings.ToLower(a.Header().Name), strings.ToLower(b.Header().Name)); c != 0 {
			return c
		}
		return int(a.Header().Rrtype) - int(b.Header().Rrtype)
	})
	signed, err := sg.signRRsets(body, spendNone, netip.Addr{})
	if err != nil {
		return nil, err
	}
	signed = append(signed, child...)
	// The SOA opens and closes a transfer (RFC 5936 2.2): lift it to the front.
	for i, rr := range signed {
		if rr.Header().Rrtype == dns.TypeSOA {
			signed = append(append([]dns.RR{rr}, signed[:i]...), signed[i+1:]...)
			break
		}
	}
	return append(signed, soa), nil
}

// canonicalCompare orders names as DNSSEC does (RFC 4034 6.1): by their
// labels from the root down, each compared as lower-case octets, a name
// before its descendants.
func canonicalCompare(a, b string) int {
	la, lb := wireLabels(a), wireLabels(b)
	for i := 1; i <= min(len(la), len(lb)); i++ {
		if c := bytes.Compare(la[len(la)-i], lb[len(lb)-i]); c != 0 {
			return c
		}
	}
	return len(la) - len(lb)
}

// wireLabels returns name's labels as octets (escapes resolved), lower case.
func wireLabels(name string) [][]byte {
	buf := make([]byte, 256)
	n, err := dns.PackDomainName(dns.Fqdn(name), buf, 0, nil, false)
	if err != nil {
		return [][]byte{[]byte(name)}
	}
	var labels [][]byte
	for i := 0; i < n && buf[i] != 0; i += int(buf[i]) + 1 {
		labels = append(labels, bytes.ToLower(buf[i+1:i+1+int(buf[i])]))
	}
	return labels
}

// starSafe is rrset as miekg/dns's Sign counts its owner's labels right:
// Sign takes any owner whose first label begins with '*' for a wildcard
// and leaves a label out of the RRSIG's count, but only the label "*" is
// one (RFC 4592 2.1.1, RFC 4034 3.1.3). An owner such as *foo — any client
// may ask for one, and its negative answer is signed — was signed with a
// count one short, and a validator took the answer for a wildcard's
// expansion without the proof that goes with one: bogus. Such an owner's
// first '*' is written \042, the same octet on the wire, which Sign reads
// as no wildcard. Other owners are rrset itself, nothing copied.
func starSafe(rrset []dns.RR) []dns.RR {
	name := rrset[0].Header().Name
	if !strings.HasPrefix(name, "*") || strings.HasPrefix(name, "*.") {
		return rrset
	}
	out := make([]dns.RR, len(rrset))
	for i, rr := range rrset {
		c := dns.Copy(rr)
		c.Header().Name = `\042` + name[1:]
		out[i] = c
	}
	return out
}
