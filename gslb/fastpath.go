package gslb

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// The UDP answer path. Each UDP socket has one reader loop that answers in
// place. Most queries repeat (the same name and type from clients of the same
// region), so each loop keeps the packed responses it built and answers a
// repeat by copying one and patching its ID, flags and the question's case:
// no unpacking, no allocation, no goroutine per query. Anything unusual (EDNS
// options such as Client Subnet, max_answers rotation, the query log, other
// opcodes, malformed packets) takes the full path through answer(), which is
// also what fills the cache. Rate limiting (rrl.go) comes before both.

// dnsDO is the DO bit of the OPT record's flags (RFC 3225).
const dnsDO = 1 << 15

// maxCachedResponses bounds each loop's cache; it is emptied when full and
// whenever the state or the pools' view changes.
const maxCachedResponses = 4096

// cachedAnswer is a packed answer of the UDP loop's cache.
type cachedAnswer struct {
	packed []byte
	// A signed answer is used from (Unix seconds: its latest signature's
	// inception) until its first signature is due for replacement
	// (state.signedWindow); until 0: unsigned, kept until the cache is
	// dropped.
	from, until int64
}

// fresh reports whether a signed answer may still be served at now (Unix
// seconds): see sigEntry.fresh.
func (c cachedAnswer) fresh(now int64) bool {
	return c.from <= now && now < c.until
}

type udpLoop struct {
	s     *Server
	conn  *net.UDPConn
	batch *udpBatch // nil: one write per answer
	cache map[string]cachedAnswer
	// via maps a name that is not traffic-managed but whose answer was made
	// for one — a CNAME (chain) to it — to that managed name, learnt as the
	// full path answers it, so that its cache key holds the asker's region
	// as the managed name's does. Emptied with the cache.
	via map[string]string
	// what the cache was built from
	st     *state
	view   *view
	serial uint32
	key    []byte
	out    []byte
}

// newUDPLoop is the state of one reader loop on conn; batch nil: one write
// per answer.
func newUDPLoop(s *Server, conn *net.UDPConn, batch *udpBatch) *udpLoop {
	return &udpLoop{s: s, conn: conn, batch: batch, cache: map[string]cachedAnswer{}, via: map[string]string{}, key: make([]byte, 0, 512), out: make([]byte, 0, 4096)}
}

func (s *Server) serveUDP(conn *net.UDPConn) error {
	l := newUDPLoop(s, conn, nil)
	buf := make([]byte, dns.MaxMsgSize)
	for {
		n, addr, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			continue
		}
		l.handle(buf[:n], addr)
	}
}

// send answers to; with batched I/O the answer goes out with the batch.
func (l *udpLoop) send(p []byte, to netip.AddrPort) {
	if l.batch != nil {
		l.batch.queue(p, to)
		return
	}
	l.conn.WriteToUDPAddrPort(p, to)
}

// rawQuery is what the fast path reads of a packet.
type rawQuery struct {
	id           uint16
	flags        uint16
	qname        []byte // wire form, as asked
	qtype        uint16
	qclass       uint16
	edns         bool
	udpSize      uint16
	ednsFlags    uint16
	fastPathable bool
}

// parseQuery reads a query's header, question and a bare OPT record; ok is
// false for anything the fast path does not handle.
func parseQuery(p []byte) (q rawQuery, ok bool) {
	if len(p) < 17 {
		return q, false
	}
	q.id = binary.BigEndian.Uint16(p)
	q.flags = binary.BigEndian.Uint16(p[2:])
	const qr, opcodeMask, tc = 1 << 15, 0xF << 11, 1 << 9
	if q.flags&(qr|opcodeMask|tc) != 0 {
		return q, false
	}
	qd, an, ns, ar := binary.BigEndian.Uint16(p[4:]), binary.BigEndian.Uint16(p[6:]), binary.BigEndian.Uint16(p[8:]), binary.BigEndian.Uint16(p[10:])
	if qd != 1 || an != 0 || ns != 0 || ar > 1 {
		return q, false
	}
	off := questionNameEnd(p)
	if off < 0 || off+4 > len(p) {
		return q, false
	}
	q.qname = p[12:off]
	q.qtype, q.qclass = binary.BigEndian.Uint16(p[off:]), binary.BigEndian.Uint16(p[off+2:])
	off += 4
	if ar == 1 {
		// A bare OPT: root name, type OPT, class = UDP size, TTL = ext
		// rcode, version, flags; no options (ECS and cookies go the full way).
		if off+11 != len(p) || p[off] != 0 || binary.BigEndian.Uint16(p[off+1:]) != dns.TypeOPT {
			return q, false
		}
		if p[off+6] != 0 || binary.BigEndian.Uint16(p[off+9:]) != 0 { // version 0, no options
			return q, false
		}
		q.edns = true
		q.udpSize = binary.BigEndian.Uint16(p[off+3:])
		q.ednsFlags = binary.BigEndian.Uint16(p[off+7:])
	} else if off != len(p) {
		return q, false
	}
	return q, true
}

func (l *udpLoop) handle(pkt []byte, addr netip.AddrPort) {
	s := l.s
	st := s.state.Load()
	v := st.pools.view.Load()
	if st != l.st || v != l.view || st.serial.Load() != l.serial || len(l.cache) >= maxCachedResponses {
		clear(l.cache)
		clear(l.via)
		l.st, l.view, l.serial = st, v, st.serial.Load()
	}
	if st.rrl != nil {
		switch st.rrl.decide(addr.Addr(), time.Now()) {
		case rrlDrop:
			return
		case rrlSlip:
			// slipReply first: it checks there is a header to read.
			out, tsig, ok := st.slipReply(l.out[:0], pkt)
			if !ok || acceptHeader(pkt) != dns.MsgAccept {
				return
			}
			if tsig {
				out = s.signedSlip(st, pkt, out)
			}
			if out != nil {
				l.send(out, addr)
			}
			return
		}
	}
	q, ok := parseQuery(pkt)
	cacheable := ok && !s.queryLog.Load()
	var key []byte
	if cacheable {
		key, cacheable = l.cacheKey(q, v, addr.Addr().Unmap())
		if cacheable {
			// A signed answer leaves the cache with its signatures'
			// freshness; time is read only for those.
			if c, hit := l.cache[string(key)]; hit && (c.until == 0 || c.fresh(s.now().Unix())) {
				out := append(l.out[:0], c.packed...)
				binary.BigEndian.PutUint16(out, q.id)
				// RD is copied from the query (RFC 1035 4.1.1); CD is
				// clear, as in every answer (finish).
				const rd = 1 << 8
				f := binary.BigEndian.Uint16(out[2:])&^rd | q.flags&rd
				binary.BigEndian.PutUint16(out[2:], f)
				copy(out[12:], q.qname) // the question's case, as asked
				s.metrics.query(q.qtype, int(out[3]&0xF))
				l.send(out, addr)
				return
			}
		}
	}
	// The full path.
	r := new(dns.Msg)
	err := r.Unpack(pkt)
	if ecsAt, short := rawFaults(pkt); err != nil || ecsAt > 0 || short {
		// A query we cannot parse (or with a malformed Client Subnet
		// option, RFC 7871 6, or shorter than its header's counts).
		if b := formErrFor(pkt); b != nil {
			s.metrics.query(0, dns.RcodeFormatError)
			l.send(b, addr)
		}
		return
	}
	if acceptHeader(pkt) == dns.MsgIgnore {
		return
	}
	var tsigStatus error
	if r.IsTsig() != nil {
		tsigStatus = s.verifyTSIG(pkt) // as the TCP server does (tsig.go)
	}
	// Answered for the name in lower case, the case asked copied back into
	// the question once packed (as a cached answer's is): names compress
	// only against names of the same case (miekg/dns), so an answer made
	// for a 0x20 resolver's WwW.RingLB.test wrote its owners and the
	// zone's names out again — bigger, at the edge of a client's buffer
	// truncated — and was kept for every later asker. The answer's names
	// equal to the question's, or below it, point into it and read as
	// asked, as NSD and Knot answer. Not a signed answer: its MAC covers
	// the bytes as packed.
	var asked []byte
	name := ""
	if end := questionNameEnd(pkt); end > 0 && len(r.Question) == 1 && r.IsTsig() == nil {
		asked, name = pkt[12:end], r.Question[0].Name
		r.Question[0].Name = strings.ToLower(name)
	}
	var leftOut bool
	m, managed := s.answerVia(st, r, net.UDPAddrFromAddrPort(addr), false, tsigStatus, &leftOut)
	if asked != nil {
		r.Question[0].Name = name // the query log's
	}
	if m == nil {
		return
	}
	if m.IsTsig() != nil {
		// Signed (or a TSIG error): packed and signed for this query
		// alone, never cached. parseQuery already sent signed queries here.
		b, err := s.packSigned(m, r.IsTsig().MAC)
		if err != nil {
			s.logger.Warn("cannot sign an answer", "err", err)
			return
		}
		s.count(st, r, m, addr.String())
		l.send(b, addr)
		return
	}
	out, err := m.PackBuffer(l.out[:0])
	if err != nil {
		return
	}
	l.out = out[:0]
	if asked != nil && questionNameEnd(out) == 12+len(asked) {
		copy(out[12:], asked)
	}
	s.count(st, r, m, addr.String())
	l.send(out, addr)
	// A truncated answer to DO may be one deferred to TCP for want of a
	// new signature, and one without additional records may have left
	// them out for the same want: the next one may be signed, so neither
	// is kept.
	if cacheable && key != nil && !(m.Truncated && q.ednsFlags&dnsDO != 0) && !leftOut {
		if managed != "" && v.names[managed] != nil {
			// Made for the managed name a CNAME led to: keyed as that
			// name's answers are, by region (or not kept, with
			// max_answers). Else the first asker's region would answer
			// every later client of this loop.
			if name := strings.ToLower(r.Question[0].Name); name != managed {
				l.via[name] = managed
				if key, cacheable = l.cacheKey(q, v, addr.Addr().Unmap()); !cacheable {
					// Kept only beside a cache entry, so bounded as
					// the cache is (a wildcard CNAME makes every
					// name asked one).
					delete(l.via, name)
					return
				}
			}
		}
		from, until := st.signedWindow(m)
		l.cache[string(key)] = cachedAnswer{packed: append([]byte(nil), out...), from: from, until: until}
	}
}

// questionNameEnd is the offset past the name of the message p's first
// question, read as a question's name is written — uncompressed (nothing
// before it to point to), at most 255 octets — or -1 when p holds none so.
func questionNameEnd(p []byte) int {
	for off := 12; off < len(p); {
		l := int(p[off])
		if l&0xC0 != 0 {
			return -1
		}
		off += 1 + l
		if off-12 > 255 {
			return -1
		}
		if l == 0 {
			return off
		}
	}
	return -1
}

func b2byte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// formErrFor is the answer to pkt, a query that does not parse (or
// refused as one: rawFaults), over UDP and TCP alike: FORMERR with its ID,
// the header alone. Not its flags: TC, RA, AD and CD would say things of an
// answer never made (CD and RA are clear in every answer, finish), and RD
// of a question never read whole; nor the question. nil for bytes that do
// not even claim to be a standard query (another protocol's, most likely):
// no answer, no reflection.
func formErrFor(pkt []byte) []byte {
	if len(pkt) < 12 || acceptHeader(pkt) == dns.MsgIgnore || int(pkt[2]>>3)&0xF != dns.OpcodeQuery {
		return nil
	}
	const qr = 1 << 15
	return []byte{pkt[0], pkt[1], qr >> 8, dns.RcodeFormatError, 0, 0, 0, 0, 0, 0, 0, 0}
}

// acceptHeader applies acceptQuery to a raw packet's header.
func acceptHeader(p []byte) dns.MsgAcceptAction {
	return acceptQuery(dns.Header{
		Bits: binary.BigEndian.Uint16(p[2:]), Qdcount: binary.BigEndian.Uint16(p[4:]),
		Ancount: binary.BigEndian.Uint16(p[6:]), Nscount: binary.BigEndian.Uint16(p[8:]), Arcount: binary.BigEndian.Uint16(p[10:]),
	})
}

// cacheKey is the lower-case name, type, class, EDNS size (as udpLimit
// caps it) and DO bit, and for a managed name the client's region —
// everything the answer depends on. Names with max_answers (rotated per
// client network) are not cached.
func (l *udpLoop) cacheKey(q rawQuery, v *view, client netip.Addr) ([]byte, bool) {
	k := l.key[:0]
	for _, c := range q.qname {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		k = append(k, c)
	}
	k = binary.BigEndian.AppendUint16(k, q.qtype)
	k = binary.BigEndian.AppendUint16(k, q.qclass)
	if q.edns {
		k = append(k, 1)
		// The size the answer is cut to, not the one asked: clients
		// asking 1232, 4096 or 65535 share one entry.
		k = binary.BigEndian.AppendUint16(k, uint16(l.st.udpLimit(true, q.udpSize)))
		k = binary.BigEndian.AppendUint16(k, q.ednsFlags)
	} else {
		k = append(k, 0)
	}
	// The presentation form of the name, for the managed-name lookup.
	var nameBuf [256]byte
	name := nameBuf[:0]
	for off := 0; off < len(q.qname) && q.qname[off] != 0; {
		n := int(q.qname[off])
		for _, c := range q.qname[off+1 : off+1+n] {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c == '.' || !configs.PlainOctet(c) {
				return nil, false // escapes: leave to the full path
			}
			name = append(name, c)
		}
		name = append(name, '.')
		off += 1 + n
	}
	if len(name) == 0 {
		name = append(name, '.')
	}
	nv := v.names[string(name)]
	if nv == nil {
		if managed, ok := l.via[string(name)]; ok {
			nv = v.names[managed]
		}
	}
	if nv != nil {
		if nv.cfg.MaxAnswers > 0 {
			return nil, false
		}
		region, _ := nv.clientRegion(client)
		k = append(k, region...)
		if rv := nv.regions[region]; rv != nil && rv.steer != nil {
			// A steering region answers by client network too.
			k = append(k, '/', b2byte(steered(client, rv.steer.share)))
		}
	}
	l.key = k
	return k, true
}
