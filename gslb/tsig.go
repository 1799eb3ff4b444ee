package gslb

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// TSIG (RFC 8945), for every message that carries one: queries over UDP and
// TCP, zone transfers, NOTIFY. The keys are those of the zones'
// transfer.tsig; tsigProvider is the one place a key is looked up and a MAC
// computed or checked. Over TCP miekg/dns verifies a request with it before
// the handler runs (w.TsigStatus()); the UDP loop calls verifyTSIG, which
// does the same. Either way the handler gets the verdict as an error and
// screen (server.go) refuses what did not verify: NOTAUTH with BADKEY (key
// or algorithm unknown), BADSIG (wrong MAC) or BADTIME (time signed outside
// the fudge, checked after the MAC as RFC 8945 5.2 orders). signReply puts
// the matching TSIG on the answer.
//
// Not done: truncated MACs (a MAC shorter than the hash fails as BADSIG),
// and the replay cache RFC 8945 5.2.3 suggests (a signed query replayed
// within the fudge gets the same answer again, which tells nothing new).

// tsigFudge is the fudge (seconds) of every TSIG we make: what RFC 8945
// recommends, and what NSD, Knot and BIND put in theirs. A TSIG we answer
// with states our fudge, not the request's echoed back (Knot: "the Fudge
// should always be set to the server default", as BIND answers).
const tsigFudge = 300

// tsigKey is one TSIG key of the configuration, its secret decoded.
type tsigKey struct {
	algorithm string // canonical, e.g. hmac-sha256.
	secret    []byte
}

// loadTSIGKeys is every zone's TSIG secret, as the config's check read it
// (configs.TSIG.Secret). A key name used by several zones must have one
// secret.
func loadTSIGKeys(zones []configs.Zone) (map[string]tsigKey, error) {
	keys := map[string]tsigKey{}
	var errs []error
	for i := range zones {
		z := &zones[i]
		t := z.Transfer.TSIG
		if t == nil {
			continue
		}
		secret, err := t.Secret()
		if err != nil {
			errs = append(errs, tsigProblem(z, "secret_file", err))
			continue
		}
		name := dns.CanonicalName(t.Name)
		k := tsigKey{algorithm: dns.CanonicalName(t.Algorithm), secret: secret}
		if old, ok := keys[name]; ok && (old.algorithm != k.algorithm || !hmac.Equal(old.secret, k.secret)) {
			errs = append(errs, tsigProblem(z, "name", fmt.Errorf("another zone has a different secret or algorithm under the same name, %s", t.Name)))
			continue
		}
		keys[name] = k
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return keys, nil
}

// tsigProblem is err, a problem of the field of z's TSIG key, named where
// the config file has it (configs.Zone.Place), else by the zone and key.
func tsigProblem(z *configs.Zone, field string, err error) error {
	if p, ok := z.Place("transfer.tsig." + field); ok {
		return p.Problem("%v", err)
	}
	return fmt.Errorf("zone %s tsig key %s: %w", z.Origin, z.Transfer.TSIG.Name, err)
}

// tsigProvider signs and verifies with the keys of the current state, so a
// reload changes keys without restarting the TCP server.
type tsigProvider struct{ s *Server }

func (p tsigProvider) key(t *dns.TSIG) (hash.Hash, error) {
	k, ok := p.s.state.Load().tsig[dns.CanonicalName(t.Hdr.Name)]
	if !ok {
		return nil, dns.ErrSecret
	}
	// The algorithm is the key's, never the message's choice: a key
	// configured for SHA-256 must not verify a SHA-1 MAC.
	if dns.CanonicalName(t.Algorithm) != k.algorithm {
		return nil, dns.ErrKeyAlg
	}
	switch k.algorithm {
	case dns.HmacSHA1:
		return hmac.New(sha1.New, k.secret), nil
	case dns.HmacSHA256:
		return hmac.New(sha256.New, k.secret), nil
	case dns.HmacSHA384:
		return hmac.New(sha512.New384, k.secret), nil
	case dns.HmacSHA512:
		return hmac.New(sha512.New, k.secret), nil
	}
	return nil, dns.ErrKeyAlg
}

func (p tsigProvider) Generate(msg []byte, t *dns.TSIG) ([]byte, error) {
	h, err := p.key(t)
	if err != nil {
		return nil, err
	}
	h.Write(msg)
	return h.Sum(nil), nil
}

func (p tsigProvider) Verify(msg []byte, t *dns.TSIG) error {
	b, err := p.Generate(msg, t)
	if err != nil {
		return err
	}
	mac, err := hex.DecodeString(t.MAC)
	if err != nil {
		return err
	}
	if !hmac.Equal(b, mac) {
		return dns.ErrSig
	}
	return nil
}

// signedWith says whether m carries a TSIG named as key (in any case,
// RFC 4343): a zone's key is held by its secondaries only, and a TSIG that
// verified with another key the server knows (another zone's) proves
// nothing of them. The MAC is checked where the message is read.
func signedWith(m *dns.Msg, key *configs.TSIG) bool {
	t := m.IsTsig()
	return t != nil && dns.CanonicalName(t.Hdr.Name) == dns.CanonicalName(key.Name)
}

// verifyTSIG checks the TSIG of a query that arrived over UDP, as the TCP
// server checks it: with tsigProvider, the MAC before the time.
func (s *Server) verifyTSIG(pkt []byte) error {
	// The check rewrites its buffer (the ID and ARCOUNT the MAC covers):
	// never the socket's, which the fast path may still read.
	return dns.TsigVerifyWithProvider(bytes.Clone(pkt), tsigProvider{s}, "", false)
}

// tsigError is the TSIG error (RFC 8945 5.2) for a verification failure.
func tsigError(status error) uint16 {
	switch status {
	case dns.ErrTime:
		return dns.RcodeBadTime
	case dns.ErrSecret, dns.ErrKeyAlg:
		return dns.RcodeBadKey
	}
	return dns.RcodeBadSig // a wrong MAC, or one that cannot be read
}

// tsigErrorName labels a TSIG error in metrics and logs (miekg/dns has no
// table for them; its RcodeToString calls 16 BADSIG, 17 BADKEY, 18 BADTIME
// among rcodes, but 16 is BADVERS there too).
func tsigErrorName(e uint16) string {
	switch e {
	case dns.RcodeBadSig:
		return "BADSIG"
	case dns.RcodeBadKey:
		return "BADKEY"
	case dns.RcodeBadTime:
		return "BADTIME"
	}
	return "other"
}

// signReply appends the TSIG that m, the answer to r, carries (RFC 8945
// 5.3): none when r has none; when r's key or MAC did not verify, the error
// and no MAC (an unsigned answer, 5.3.2: we cannot sign with a key we do not
// have, and must not sign with one the client did not prove to hold); else a
// TSIG for the writer to sign (dns.TsigGenerate) with r's key, chained to
// r's MAC. An error carries r's time signed, which the client matches its
// request by (and for BADTIME its own time check passes); BADTIME our time
// in Other Data too, so it can see the skew. Knot and BIND answer the same.
//
// The MAC is filled with zeros of the hash's length: signing replaces it, and
// until then fit counts the TSIG at its final size.
func (s *Server) signReply(m, r *dns.Msg, status error) {
	rt := r.IsTsig()
	if rt == nil {
		return
	}
	now := time.Now().Unix()
	// Names echoed in canonical form: what the MAC covers anyway, and
	// never an empty string, which would pack as nothing at all.
	t := &dns.TSIG{Hdr: dns.RR_Header{Name: dns.CanonicalName(rt.Hdr.Name), Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
		Algorithm: dns.CanonicalName(rt.Algorithm), TimeSigned: uint64(now), Fudge: tsigFudge, OrigId: m.Id}
	if status != nil {
		t.Error = tsigError(status)
		t.TimeSigned = rt.TimeSigned
		if t.Error != dns.RcodeBadTime {
			m.Extra = append(m.Extra, t) // unsigned: packSigned
			return
		}
		t.OtherLen, t.OtherData = 6, fmt.Sprintf("%012x", now)
	}
	h, err := tsigProvider{s}.key(t)
	if err != nil {
		return // the key went with a reload since the query verified: answer unsigned
	}
	t.MACSize = uint16(h.Size())
	t.MAC = strings.Repeat("00", h.Size())
	m.Extra = append(m.Extra, t)
}

// packSigned packs m, an answer carrying the TSIG signReply gave it, signed
// (dns.TsigGenerate) with that key and chained to requestMAC — but for an
// error that may not be signed (BADKEY, BADSIG), which goes as signReply
// made it: dns.TsigGenerate would zero its time signed.
func (s *Server) packSigned(m *dns.Msg, requestMAC string) ([]byte, error) {
	if e := m.IsTsig().Error; e == dns.RcodeBadKey || e == dns.RcodeBadSig {
		return m.Pack()
	}
	b, _, err := dns.TsigGenerateWithProvider(m, tsigProvider{s}, requestMAC, false)
	return b, err
}

// writeReply writes m, the answer to r, over TCP: as w.WriteMsg would,
// with a TSIG as packSigned makes it.
func (s *Server) writeReply(w dns.ResponseWriter, m, r *dns.Msg) {
	if m.IsTsig() == nil {
		w.WriteMsg(m)
		return
	}
	b, err := s.packSigned(m, r.IsTsig().MAC)
	if err != nil {
		s.logger.Warn("cannot sign an answer", "err", err)
		return
	}
	w.Write(b)
}

// tsigChain signs the messages of one answer in several — a zone transfer —
// from their bytes, packed beforehand (transfer.go packs a transfer once
// for every request of its serial): what miekg/dns's writer does while it
// packs each (dns.TsigGenerate), with the TSIG signReply gives the answer
// to the request. RFC 8945 5.3.1: the first message's MAC covers the
// request's MAC, the message and every TSIG variable; each later one's the
// MAC before it, the message and the timers only. Only for a request that
// verified (no TSIG error to answer).
type tsigChain struct {
	t     dns.TSIG
	h     hash.Hash
	prev  []byte // the MAC the next message is chained to
	first []byte // the variables the first message's MAC covers but for the timers
	n     int    // messages signed
}

// tsigChainFor is the chain for the answer to r, which verified; nil when
// r carries no TSIG. An error ends the transfer: a request that came
// signed is never answered unsigned — not when its key went with a reload
// since it verified either (signReply then gives no TSIG).
func (s *Server) tsigChainFor(r *dns.Msg) (*tsigChain, error) {
	if r.IsTsig() == nil {
		return nil, nil
	}
	m := new(dns.Msg)
	m.SetReply(r)
	s.signReply(m, r, nil)
	t := m.IsTsig()
	if t == nil {
		return nil, fmt.Errorf("key %s: %w", r.IsTsig().Hdr.Name, dns.ErrSecret)
	}
	c := &tsigChain{t: *t}
	var err error
	if c.h, err = (tsigProvider{s}).key(t); err != nil {
		return nil, err
	}
	if c.prev, err = hex.DecodeString(r.IsTsig().MAC); err != nil {
		return nil, err
	}
	// Key name, class, TTL, algorithm (RFC 8945 4.3.3), names uncompressed
	// and in canonical form.
	buf := make([]byte, 2*255+6)
	off, err := dns.PackDomainName(dns.CanonicalName(t.Hdr.Name), buf, 0, nil, false)
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint16(buf[off:], dns.ClassANY)
	binary.BigEndian.PutUint32(buf[off+2:], t.Hdr.Ttl)
	if off, err = dns.PackDomainName(dns.CanonicalName(t.Algorithm), buf, off+6, nil, false); err != nil {
		return nil, err
	}
	c.first = buf[:off]
	return c, nil
}

// sign appends to msg, a message of the answer packed without its TSIG,
// the TSIG signed at now, chained to the message before.
func (c *tsigChain) sign(msg []byte, now int64) ([]byte, error) {
	c.t.TimeSigned = uint64(now)
	c.h.Reset()
	var b [8]byte
	binary.BigEndian.PutUint16(b[:], uint16(len(c.prev)))
	c.h.Write(b[:2])
	c.h.Write(c.prev)
	c.h.Write(msg) // its ID the request's, the TSIG's original ID
	if c.n == 0 {
		c.h.Write(c.first)
	}
	binary.BigEndian.PutUint16(b[:], uint16(c.t.TimeSigned>>32))
	binary.BigEndian.PutUint32(b[2:], uint32(c.t.TimeSigned))
	binary.BigEndian.PutUint16(b[6:], c.t.Fudge)
	c.h.Write(b[:8])
	if c.n == 0 {
		other, err := hex.DecodeString(c.t.OtherData)
		if err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint16(b[:], c.t.Error)
		binary.BigEndian.PutUint16(b[2:], uint16(len(other)))
		c.h.Write(b[:4])
		c.h.Write(other)
	}
	c.prev = c.h.Sum(c.prev[:0])
	c.n++
	c.t.MAC = hex.EncodeToString(c.prev)
	c.t.MACSize = uint16(len(c.prev))
	off := len(msg)
	msg = slices.Grow(msg, dns.Len(&c.t))
	end, err := dns.PackRR(&c.t, msg[:cap(msg)], off, nil, false)
	if err != nil {
		return nil, err
	}
	msg = msg[:end]
	binary.BigEndian.PutUint16(msg[10:], binary.BigEndian.Uint16(msg[10:])+1) // ARCOUNT
	return msg, nil
}
