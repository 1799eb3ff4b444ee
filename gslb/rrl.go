package gslb

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// Response rate limiting (RRL) against reflection floods: a spoofed-source
// flood makes an authoritative server send its answers to a victim, so UDP
// responses to one client prefix (/24, /56 by default) are limited to
// responses_per_second. Over the limit, every slip-th response is sent
// truncated (TC, no records) instead of dropped: a real client behind the
// prefix retries over TCP, which cannot be spoofed, while the victim gets a
// small packet at most. TCP is never limited.
//
// The table is fixed in size (2^6 shards × 2^10 buckets, about 2 MiB;
// netBuckets), so a flood from many prefixes cannot grow it.

const (
	rrlShardBits = 6
	rrlSlotBits  = 10
)

type rrlAction uint8

const (
	rrlAllow rrlAction = iota
	rrlSlip            // answer with TC and no records
	rrlDrop            // answer nothing
)

type rateLimiter struct {
	netBuckets   // rate: responses per second, also the burst
	slip         uint32
	limitedDrops func()
	limitedSlips func()
}

// newRateLimiter returns nil when RRL is off.
func newRateLimiter(cfg configs.RateLimit, m *metrics) *rateLimiter {
	if cfg.ResponsesPerSecond == nil || *cfg.ResponsesPerSecond <= 0 {
		return nil
	}
	slip := 0
	if cfg.Slip != nil {
		slip = *cfg.Slip
	}
	rl := &rateLimiter{netBuckets: newNetBuckets(rrlShardBits, rrlSlotBits, float64(*cfg.ResponsesPerSecond), cfg.IPv4Prefix, cfg.IPv6Prefix), slip: uint32(slip)}
	if m != nil {
		drops, slips := m.rateLimited.WithLabelValues("drop"), m.rateLimited.WithLabelValues("slip")
		rl.limitedDrops, rl.limitedSlips = drops.Inc, slips.Inc
	}
	return rl
}

// carryOver returns old in place of rl when both limit alike, so a reload
// does not hand every prefix a fresh budget.
func (rl *rateLimiter) carryOver(old *rateLimiter) *rateLimiter {
	if rl == nil || old == nil || rl.rate != old.rate ||
		rl.slip != old.slip || rl.v4Bits != old.v4Bits || rl.v6Bits != old.v6Bits {
		return rl
	}
	return old
}

// decide charges one response to client's prefix.
func (rl *rateLimiter) decide(client netip.Addr, now time.Time) rrlAction {
	_, ok, limited := rl.take(client, now, 1)
	if ok {
		return rrlAllow
	}
	if rl.slip > 0 && limited%rl.slip == 0 {
		if rl.limitedSlips != nil {
			rl.limitedSlips()
		}
		return rrlSlip
	}
	if rl.limitedDrops != nil {
		rl.limitedDrops()
	}
	return rrlDrop
}

// netBuckets is a token bucket per client network — an IPv4 or IPv6
// prefix, of the lengths gslb.rate_limit names, whatever it limits — in a
// table of fixed size (2^shardBits shards of 2^slotBits buckets, hashed by
// prefix), so a flood from many prefixes cannot grow it: idle prefixes are
// pruned by being overwritten. Each prefix has two candidate buckets and a newcomer
// takes the one used least recently, so a busy prefix (a reflection flood's
// victim, a client over its share) keeps its bucket while one-off prefixes
// churn through the others. When both are busy the newcomer evicts one,
// whose prefix starts afresh when it comes back: that errs towards
// answering. The hash is seeded per process so that nobody can compute
// prefixes that collide with another's buckets.
type netBuckets struct {
	rate   float64 // tokens a second, also the burst
	v4Bits int
	v6Bits int
	epoch  time.Time
	seed   maphash.Seed
	// Powers of two, so that picking a bucket is masks and shifts: it
	// runs for every UDP answer under RRL.
	shardBits uint
	slotMask  uint64
	shards    []netShard
}

type netShard struct {
	mu    sync.Mutex
	slots []netBucket
}

type netBucket struct {
	key     uint64
	tokens  float64
	last    int64 // ns since epoch
	limited uint32
}

func newNetBuckets(shardBits, slotBits uint, rate float64, v4Bits, v6Bits int) netBuckets {
	nb := netBuckets{rate: rate, v4Bits: v4Bits, v6Bits: v6Bits, epoch: time.Now(), seed: maphash.MakeSeed(),
		shardBits: shardBits, slotMask: 1<<slotBits - 1, shards: make([]netShard, 1<<shardBits)}
	for i := range nb.shards {
		nb.shards[i].slots = make([]netBucket, 1<<slotBits)
	}
	return nb
}

func (nb *netBuckets) shard(key uint64) *netShard {
	return &nb.shards[key&(1<<nb.shardBits-1)]
}

// key is client's prefix hashed, 0 when client is no address.
func (nb *netBuckets) key(client netip.Addr) uint64 {
	client = client.Unmap()
	bits := nb.v6Bits
	if client.Is4() {
		bits = nb.v4Bits
	}
	pfx, err := client.Prefix(bits)
	if err != nil {
		return 0
	}
	var b [17]byte
	a := pfx.Addr().As16()
	copy(b[:], a[:])
	b[16] = byte(bits)
	return maphash.Bytes(nb.seed, b[:]) | 1 // never 0: 0 marks an empty bucket
}

// slot is key's bucket in sh: the candidate holding key, else the one used
// least recently. The two candidates always differ: where key's two
// indexes coincided a newcomer had one bucket only, a busy prefix's as
// likely as any, and took it (TestRateLimiterKeepsBusyPrefix: the victim's
// bucket taken in about 1 run of 300). Called with sh.mu held.
func (nb *netBuckets) slot(sh *netShard, key uint64) *netBucket {
	i, j := (key>>nb.shardBits)&nb.slotMask, (key>>32)&nb.slotMask
	if j == i {
		j ^= 1
	}
	slot := &sh.slots[i]
	if slot.key != key {
		if other := &sh.slots[j]; other.key == key || other.last < slot.last {
			slot = other
		}
	}
	return slot
}

// take spends n tokens of client's prefix at now; a prefix new to the table
// starts with a full bucket. ok is false when fewer were left, and limited
// counts the bucket's refusals so far. A client with no address (key 0) is
// never refused.
func (nb *netBuckets) take(client netip.Addr, now time.Time, n float64) (key uint64, ok bool, limited uint32) {
	key = nb.key(client)
	if key == 0 {
		return 0, true, 0
	}
	sh := nb.shard(key)
	t := max(now.Sub(nb.epoch).Nanoseconds(), 1)
	sh.mu.Lock()
	slot := nb.slot(sh, key)
	if slot.key != key {
		*slot = netBucket{key: key, tokens: nb.rate, last: t}
	} else {
		slot.tokens = min(nb.rate, slot.tokens+float64(t-slot.last)*nb.rate/1e9)
		slot.last = t
	}
	if slot.tokens >= n {
		slot.tokens -= n
		sh.mu.Unlock()
		return key, true, 0
	}
	slot.limited++
	limited = slot.limited
	sh.mu.Unlock()
	return key, false, limited
}

// refund gives back the n tokens take spent for key, when its bucket is
// still key's (one evicted since starts full anyway).
func (nb *netBuckets) refund(key uint64, n float64) {
	if key == 0 {
		return
	}
	sh := nb.shard(key)
	sh.mu.Lock()
	if slot := nb.slot(sh, key); slot.key == key {
		slot.tokens = min(nb.rate, slot.tokens+n)
	}
	sh.mu.Unlock()
}

// truncatedReply appends to dst the slip response to the query pkt: its
// header and question with QR, AA and TC set, RA, Z and AD clear (a reply
// with no records authenticates nothing, RFC 6840 section 5.8), CD clear (an
// authoritative server's, RFC 4035 3.1.6, as every answer: finish) and no
// records; ok is false when pkt has no well-formed single
// question (then nothing is sent). end is where the question ends.
func truncatedReply(dst, pkt []byte) (_ []byte, end int, ok bool) {
	if len(pkt) < 12 || pkt[4] != 0 || pkt[5] != 1 {
		return dst, 0, false
	}
	off := questionNameEnd(pkt)
	if off < 0 || off+4 > len(pkt) {
		return dst, 0, false
	}
	dst = append(dst[:0], pkt[:off+4]...)
	const qr, aa, tc, ra, z, ad, cd = 0x80, 0x04, 0x02, 0x80, 0x40, 0x20, 0x10
	dst[2] |= qr | aa | tc
	dst[3] &^= ra | z | ad | cd | 0x0F // RA never; rcode NOERROR
	for i := 6; i < 12; i++ {
		dst[i] = 0
	}
	return dst, off + 4, true
}

// slipReply is the slip response to pkt (truncatedReply) with the rcode and
// AA its full answer would have, as far as the header and question say
// (answerVia, screen): NOTIMP for an opcode but QUERY; REFUSED, AA clear,
// for a class but IN and ANY, a name outside every zone, a transfer over
// UDP, type RRSIG in a signed zone; FORMERR for type NXNAME there; else
// NOERROR, AA clear, for a name at or below a delegation (a referral); else
// NOERROR with AA (a name that does not exist too: its NXDOMAIN would take
// a lookup, and a client retrying over TCP learns it there). Before, every
// slip claimed authority (AA) with NOERROR, for any name asked. As Knot's
// slips, which keep the answer's rcode. A query with EDNS gets an OPT as
// the full answer's (RFC 6891 7: a reply without one tells a resolver the
// server has no EDNS, and it may ask again without, DO and all): this
// server's UDP size, the query's DO; BADVERS for a version above 0; two
// OPTs are FORMERR with none (screen). tsig says pkt carries a TSIG (the
// caller signs the slip, signedSlip). Allocates nothing.
func (st *state) slipReply(dst, pkt []byte) (_ []byte, tsig, ok bool) {
	dst, end, ok := truncatedReply(dst, pkt)
	if !ok {
		return dst, false, false
	}
	x := scanRecords(pkt, end)
	rcode, aa := st.slipVerdict(pkt, end)
	switch {
	case x.opts > 1:
		rcode, aa = dns.RcodeFormatError, false
	case x.opts == 1:
		dst = appendSlipOPT(dst, uint16(st.maxUDP), x.optVersion, x.optDO)
		if x.optVersion != 0 {
			rcode, aa = dns.RcodeBadVers&0xF, false // the rest in the OPT
		}
	}
	const aaBit = 0x04
	if !aa {
		dst[2] &^= aaBit
	}
	dst[3] |= byte(rcode)
	return dst, x.tsig, true
}

// appendSlipOPT appends a bare OPT record to the slip dst (ARCOUNT 1): UDP
// size size, DO as asked, and for a version above 0 (which this server does
// not speak) the upper bits of BADVERS and version 0 (RFC 6891 6.1.3).
func appendSlipOPT(dst []byte, size uint16, version uint8, do bool) []byte {
	var extRcode byte
	if version != 0 {
		extRcode = byte(dns.RcodeBadVers >> 4)
	}
	var flags byte
	if do {
		flags = 0x80
	}
	dst = append(dst, 0, byte(dns.TypeOPT>>8), byte(dns.TypeOPT), byte(size>>8), byte(size), extRcode, 0, flags, 0, 0, 0)
	dst[11] = 1
	return dst
}

func (st *state) slipVerdict(pkt []byte, end int) (rcode int, aa bool) {
	if int(pkt[2]>>3)&0xF != dns.OpcodeQuery {
		return dns.RcodeNotImplemented, false
	}
	qtype, qclass := binary.BigEndian.Uint16(pkt[end-4:]), binary.BigEndian.Uint16(pkt[end-2:])
	if !servedClass(qclass) {
		return dns.RcodeRefused, false
	}
	if tcpOnly(qtype) {
		return dns.RcodeNotImplemented, false
	}
	z := st.zoneForWire(pkt[12:end-4], qtype)
	switch {
	case z == nil, qtype == dns.TypeIXFR, z.signer != nil && qtype == dns.TypeRRSIG:
		return dns.RcodeRefused, false
	case z.signer != nil && qtype == dns.TypeNXNAME:
		return dns.RcodeFormatError, true
	case z.referredWire(pkt[12:end-4], qtype):
		return dns.RcodeSuccess, false // a referral: the child's name
	}
	return dns.RcodeSuccess, true
}

// zoneForWire is zoneAnswering for a well-formed name in wire form, in any
// case (a question's, uncompressed), allocating nothing: DS at a zone's
// apex is the nearest zone's above it served here, as its full answer.
func (st *state) zoneForWire(name []byte, qtype uint16) *zone {
	var apex *zone
	for _, z := range st.zones {
		off := 0
		for len(name)-off > len(z.wire) && off < len(name) {
			off += int(name[off]) + 1
		}
		if len(name)-off == len(z.wire) && asciiFold(name[off:], z.wire) {
			if qtype == dns.TypeDS && apex == nil && off == 0 {
				apex = z
				continue
			}
			return z
		}
	}
	return apex
}

// asciiFold says whether a and b, of one length, are equal but for the
// case of ASCII letters (length octets are at most 63: never letters).
func asciiFold(a, b []byte) bool {
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// records is what a slip reads of a query's records past its question.
type records struct {
	tsig       bool  // a TSIG (where the full path would refuse it too, FORMERR)
	opts       int   // OPT records
	optVersion uint8 // the OPT's EDNS version
	optDO      bool  // the OPT's DO bit
}

// scanRecords reads the records of the query pkt past its question (which
// ends at end) without unpacking them; it stops at the first that runs
// past the packet.
func scanRecords(pkt []byte, end int) (x records) {
	n := int(binary.BigEndian.Uint16(pkt[6:])) + int(binary.BigEndian.Uint16(pkt[8:])) + int(binary.BigEndian.Uint16(pkt[10:]))
	eachRecord(pkt, end, n, func(at int) bool {
		switch binary.BigEndian.Uint16(pkt[at:]) {
		case dns.TypeTSIG:
			x.tsig = true
		case dns.TypeOPT:
			x.opts++
			x.optVersion = pkt[at+5]
			x.optDO = pkt[at+6]&0x80 != 0
		}
		return true
	})
	return x
}

// signedSlip is the slip to pkt, a query carrying a TSIG, as the full
// answer to it would be signed (RFC 8945 5.3): with the query's key when its
// TSIG verifies, so that a TSIG client takes it and retries over TCP
// (unsigned, it drops it as forged: dig and kdig do); else, as screen
// refuses such a query, NOTAUTH with the TSIG error (signed for BADTIME).
// plain is the unsigned slip, sent as it is when pkt does not unpack. Only
// signed queries take this path; it allocates as the full path does.
func (s *Server) signedSlip(st *state, pkt, plain []byte) []byte {
	r := new(dns.Msg)
	m := new(dns.Msg)
	if r.Unpack(pkt) != nil || r.IsTsig() == nil || malformed(r) != "" || m.Unpack(plain) != nil {
		return plain
	}
	status := s.verifyTSIG(pkt)
	if status != nil {
		m.Rcode, m.Authoritative = dns.RcodeNotAuth, false
		s.metrics.tsigErrors.WithLabelValues(tsigErrorName(tsigError(status))).Inc()
	}
	s.signReply(m, r, status)
	if m.IsTsig() == nil {
		return plain // the key went with a reload: as the full path, unsigned
	}
	b, err := s.packSigned(m, r.IsTsig().MAC)
	if err != nil {
		return nil
	}
	return b
}
