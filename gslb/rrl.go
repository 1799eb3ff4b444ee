package gslb

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"

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
// The table is fixed in size (rrlShards × rrlSlotsPerShard buckets, about
// 2 MiB, hashed by prefix), so a flood from many prefixes cannot grow it:
// idle prefixes are pruned by being overwritten. Each prefix has two candidate
// buckets and a newcomer takes the one used least recently, so a busy prefix
// (the victim of a reflection flood) keeps its bucket while spoofed one-off
// prefixes churn through the others. When both are busy the newcomer evicts
// one, which errs towards answering. The hash is seeded per process so that
// nobody can compute prefixes that collide with a victim's buckets.

const (
	rrlShards        = 64
	rrlSlotsPerShard = 1024
)

type rrlAction uint8

const (
	rrlAllow rrlAction = iota
	rrlSlip            // answer with TC and no records
	rrlDrop            // answer nothing
)

type rateLimiter struct {
	rate         float64 // responses per second, also the burst
	slip         uint32
	v4Bits       int
	v6Bits       int
	epoch        time.Time
	seed         maphash.Seed
	shards       [rrlShards]rrlShard
	limitedDrops func()
	limitedSlips func()
}

type rrlShard struct {
	mu    sync.Mutex
	slots [rrlSlotsPerShard]rrlBucket
}

type rrlBucket struct {
	key     uint64
	tokens  float64
	last    int64 // ns since epoch
	limited uint32
}

// newRateLimiter returns nil when RRL is off.
func newRateLimiter(cfg configs.RateLimit, m *metrics) *rateLimiter {
	if cfg.ResponsesPerSecond <= 0 {
		return nil
	}
	slip := 0
	if cfg.Slip != nil {
		slip = *cfg.Slip
	}
	rl := &rateLimiter{rate: float64(cfg.ResponsesPerSecond), slip: uint32(slip), v4Bits: cfg.IPv4Prefix, v6Bits: cfg.IPv6Prefix, epoch: time.Now(), seed: maphash.MakeSeed()}
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
	client = client.Unmap()
	bits := rl.v6Bits
	if client.Is4() {
		bits = rl.v4Bits
	}
	pfx, err := client.Prefix(bits)
	if err != nil {
		return rrlAllow // no address (not UDP): nothing to reflect
	}
	var b [17]byte
	a := pfx.Addr().As16()
	copy(b[:], a[:])
	b[16] = byte(bits)
	key := maphash.Bytes(rl.seed, b[:]) | 1 // never 0: 0 marks an empty bucket
	sh := &rl.shards[key%rrlShards]
	t := max(now.Sub(rl.epoch).Nanoseconds(), 1)
	sh.mu.Lock()
	slot := &sh.slots[(key/rrlShards)%rrlSlotsPerShard]
	if slot.key != key {
		if other := &sh.slots[(key>>32)%rrlSlotsPerShard]; other.key == key || other.last < slot.last {
			slot = other
		}
	}
	if slot.key != key {
		*slot = rrlBucket{key: key, tokens: rl.rate, last: t}
	} else {
		slot.tokens = min(rl.rate, slot.tokens+float64(t-slot.last)*rl.rate/1e9)
		slot.last = t
	}
	if slot.tokens >= 1 {
		slot.tokens--
		sh.mu.Unlock()
		return rrlAllow
	}
	slot.limited++
	slip := rl.slip > 0 && slot.limited%rl.slip == 0
	sh.mu.Unlock()
	if slip {
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

// truncatedReply appends to dst the slip response to the query pkt: its
// header and question with QR, AA and TC set and no records; ok is false when
// pkt has no well-formed single question (then nothing is sent).
func truncatedReply(dst, pkt []byte) ([]byte, bool) {
	if len(pkt) < 12 || pkt[4] != 0 || pkt[5] != 1 {
		return dst, false
	}
	off := 12
	for {
		if off >= len(pkt) {
			return dst, false
		}
		l := int(pkt[off])
		if l&0xC0 != 0 {
			return dst, false
		}
		off += 1 + l
		if l == 0 {
			break
		}
	}
	if off+4 > len(pkt) {
		return dst, false
	}
	dst = append(dst[:0], pkt[:off+4]...)
	const qr, aa, tc, ra = 0x80, 0x04, 0x02, 0x80
	dst[2] |= qr | aa | tc
	dst[3] &^= ra | 0x0F // RA never; rcode NOERROR
	for i := 6; i < 12; i++ {
		dst[i] = 0
	}
	return dst, true
}
