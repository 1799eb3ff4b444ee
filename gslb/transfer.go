package gslb

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Zone transfers: AXFR (and IXFR: one SOA for a secondary that has the
// current version, else the whole zone as RFC 1995 allows) over TCP to the
// prefixes in a zone's transfer.allow, signed with
// TSIG when the zone has a key; and NOTIFY to transfer.notify whenever a
// zone's serial changes (a reload, or a managed answer changing).
//
// A transfer carries each managed name's answer for its default region (what
// a client no geo prefix matches gets), with the name's current TTL: a
// secondary cannot do geo or failover, but it serves the answer the primary
// would give most clients, and the serial bump on every change of a managed
// answer (followed by a NOTIFY) keeps it current.

// xfrRecordBytes bounds one record's wire form (its owner name
// uncompressed), a zone check (zone.fits): a transfer message holds at
// least one record, and beside it its header (12 octets), its question
// (the zone's name, at most 255, type and class), our OPT (11, and a
// Client Subnet echo of at most 24: replyOPT) and a TSIG (its key's name,
// at most 255; type, class, TTL and length; the longest algorithm name,
// hmac-sha512., 13; time signed 6, fudge 2, MAC size 2, a SHA-512 MAC 64,
// original ID, error and other length 2 each). A bigger one made a
// message over the 65,535 octets of any DNS message: every transfer of
// its zone was cut there.
const xfrRecordBytes = dns.MaxMsgSize - (12 + 255 + 4 + 11 + 24 + 255 + 10 + 13 + 6 + 2 + 2 + 64 + 2 + 2 + 2)

// xfrMessageBytes bounds the records of one transfer message (uncompressed
// length), well under the 64 KiB a TCP message can hold.
const xfrMessageBytes = 32 << 10

// maxTransfersOut bounds the zone transfers sent at once, as BIND's
// transfers-out (its default too): each holds its zone's transfer (shared
// by the transfers of a serial, but an older serial's is kept by those
// still sending it), a message's buffer and a goroutine until its reader
// has taken it or the write deadline cuts it, and secondaries that ask
// and do not read could otherwise hold any number. One more is
// answered SERVFAIL at once; a secondary asks again at its retry.
const maxTransfersOut = 10

// serveTransfer answers an AXFR or IXFR query received over TCP, once
// screen (server.go) has passed it: a TSIG it carries has verified, so every
// message, refusals included, is signed with that key; an OPT it carries
// is sound, so every message, refusals included, carries ours (RFC 6891 7,
// RFC 5936 2.2.5; NSD puts it in every message of a transfer), as an
// answer to any query does: finish makes the single messages, sendTransfer
// the transfer's. Before, none had one: the client was told the server
// has no EDNS.
func (s *Server) serveTransfer(st *state, w dns.ResponseWriter, r *dns.Msg) {
	q := r.Question[0]
	refuse := func(rcode int, why string) {
		// Every refusal is in queries_total; the log says it sparingly.
		s.xfrRefusedLog.Warn(s.logger, "zone transfer refused", "zone", q.Name, "client", w.RemoteAddr().String(), "why", why)
		m := s.finish(st, replyTo(r, rcode), r, true, nil, ecsEcho(queryECS(r)))
		s.metrics.query(q.Qtype, rcode)
		w.WriteMsg(m)
	}
	qname := strings.ToLower(q.Name)
	z := st.zoneFor(qname)
	switch {
	case !servedClass(q.Qclass):
		// The zones are IN: the IN zone went out under another class's
		// question. Refused, as a query of that class is (answerVia), and
		// as NSD refuses it.
		refuse(dns.RcodeRefused, "class "+dns.Class(q.Qclass).String()+", not IN")
		return
	case z == nil:
		refuse(dns.RcodeRefused, "not a zone served here")
		return
	case z.origin != qname:
		refuse(dns.RcodeNotAuth, "not a zone apex")
		return
	}
	client := addrOf(w.RemoteAddr())
	if !slices.ContainsFunc(z.allow, func(p netip.Prefix) bool { return p.Contains(client) }) {
		refuse(dns.RcodeRefused, "client not in transfer.allow")
		return
	}
	if key := z.cfg.Transfer.TSIG; key != nil && !signedWith(r, key) {
		// An allowed address is not enough when the zone has a key: the
		// request must be signed with that key (RFC 8945), not merely
		// with a key of another zone.
		why := "unsigned request"
		if tsig := r.IsTsig(); tsig != nil {
			why = "signed with key " + tsig.Hdr.Name + ", not the zone's"
		}
		refuse(dns.RcodeNotAuth, why)
		return
	}
	if soa := st.soa(z); q.Qtype == dns.TypeIXFR && upToDate(r, z.origin, soa.Serial) {
		// RFC 1995 2 and 4: the asker has this version, or a newer one
		// (from another gslb node ahead of this one, or from this one
		// before a restart without its state set the serial back): the
		// current SOA alone tells it there is nothing to take. No
		// transfer is built or held for it.
		m := replyTo(r, dns.RcodeSuccess)
		m.Authoritative = true
		m.Answer = []dns.RR{soa}
		m = s.finish(st, m, r, true, nil, ecsEcho(queryECS(r)))
		s.metrics.query(q.Qtype, dns.RcodeSuccess)
		w.WriteMsg(m)
		return
	}
	select {
	case s.transfersOut <- struct{}{}:
		defer func() { <-s.transfersOut }()
	default:
		refuse(dns.RcodeServerFailure, fmt.Sprintf("%d transfers are being sent already", maxTransfersOut))
		return
	}
	xfr, err := st.transferOf(z)
	if err != nil {
		s.logger.Error("cannot build a zone transfer", "zone", z.origin, "err", err)
		refuse(dns.RcodeServerFailure, "building it failed")
		return
	}
	if err := s.sendTransfer(w, r, xfr, st.replyOPT(r.IsEdns0(), ecsEcho(queryECS(r)))); err != nil {
		s.logger.Warn("zone transfer cut", "zone", z.origin, "client", w.RemoteAddr().String(), "err", err)
		// Ended, so that the secondary sees it at once and asks again,
		// as after any cut transfer: before, it waited for the
		// rest until its timeout. A write that failed closed it already.
		w.Close()
		return
	}
	s.metrics.query(q.Qtype, dns.RcodeSuccess)
	s.logger.Info("zone transferred", "zone", z.origin, "client", w.RemoteAddr().String(), "records", xfr.records, "serial", xfr.serial)
}

// upToDate says whether r, an IXFR request for the zone origin, carries
// the zone's SOA (RFC 1995 3: in its authority section) with a serial at or
// ahead of serial in RFC 1982 arithmetic (3.2: less than 2^31 ahead; at
// exactly 2^31 the order is undefined, taken as behind, as Knot takes it:
// the whole zone errs towards a complete copy). Any other SOA, or none,
// asks for the whole zone.
func upToDate(r *dns.Msg, origin string, serial uint32) bool {
	if len(r.Ns) != 1 {
		return false
	}
	soa, ok := r.Ns[0].(*dns.SOA)
	return ok && dns.CanonicalName(soa.Hdr.Name) == origin && int32(soa.Serial-serial) >= 0
}

// sendTransfer writes xfr as the answer to r. Each message goes as it was
// packed once for every transfer of the serial: only its ID and flags and
// its question's type and class are made r's, and it is signed with TSIG
// when r is (tsigChain) — all a replay computes anew. A question in
// another case than the zone's (RingLB.test.) is echoed as asked, each
// message unpacked and packed again behind it: the packed ones compress
// names against the question as the zone spells it, and the asker's case
// in the question would become every name's. Secondaries ask in the
// zone's case; the slower way costs more than a replay of before
// (BenchmarkSignedAXFR, same-serial-other-case), less than a build. opt,
// when not nil, is our OPT (replyOPT, for a request with one), in every
// message, before its TSIG, as NSD puts it.
func (s *Server) sendTransfer(w dns.ResponseWriter, r *dns.Msg, xfr *builtTransfer, opt *dns.OPT) error {
	reply := replyTo(r, dns.RcodeSuccess)
	reply.Authoritative = true
	reply.Compress = true
	head, err := reply.Pack()
	if err != nil {
		return err
	}
	var optWire []byte // opt packed, appended to each packed message
	if opt != nil {
		reply.Extra = []dns.RR{opt}
		optWire = make([]byte, dns.Len(opt))
		n, err := dns.PackRR(opt, optWire, 0, nil, false)
		if err != nil {
			return err
		}
		optWire = optWire[:n]
	}
	chain, err := s.tsigChainFor(r)
	if err != nil {
		return fmt.Errorf("signing: %w", err)
	}
	q := r.Question[0]
	buf := make([]byte, 0, dns.MaxMsgSize)
	for _, msg := range xfr.msgs {
		if q.Name == xfr.origin {
			buf = append(buf[:0], msg...)
			copy(buf, head[:4]) // ID, flags
			binary.BigEndian.PutUint16(buf[xfr.qend-4:], q.Qtype)
			binary.BigEndian.PutUint16(buf[xfr.qend-2:], q.Qclass)
			if optWire != nil {
				// Packed without additional records: the OPT is the first.
				buf = append(buf, optWire...)
				binary.BigEndian.PutUint16(buf[10:], 1) // ARCOUNT
			}
		} else {
			m := new(dns.Msg)
			if err := m.Unpack(msg); err != nil {
				return err
			}
			reply.Answer = m.Answer
			if buf, err = reply.PackBuffer(buf[:cap(buf)]); err != nil {
				return err
			}
		}
		if chain != nil {
			if buf, err = chain.sign(buf, time.Now().Unix()); err != nil {
				return err
			}
		}
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// builtTransfer is a transfer of a zone at one serial, split into its
// messages (each at most xfrMessageBytes of records, uncompressed), each
// packed. Never changed once built: it is replayed to every transfer of
// that serial (xfrCache).
type builtTransfer struct {
	serial  uint32
	records int
	// origin is the question the messages were packed behind (the zone's
	// name, AXFR, IN), qend where that question ends in each.
	origin string
	qend   int
	msgs   [][]byte
	// from and until (Unix seconds, by the signer's clock) are when a
	// signed zone's signatures in it may be handed out: from the latest
	// inception until the first is due for replacement
	// (state.signedWindow, as sigEntry.fresh). Always, for an unsigned one.
	from, until int64
}

// newBuiltTransfer splits rrs, a transfer of the zone origin (SOA first
// and last), into its messages, and packs each.
func newBuiltTransfer(origin string, rrs []dns.RR) (*builtTransfer, error) {
	t := &builtTransfer{serial: rrs[0].(*dns.SOA).Serial, records: len(rrs), origin: origin, from: math.MinInt64, until: math.MaxInt64}
	m := &dns.Msg{Compress: true, Question: []dns.Question{{Name: origin, Qtype: dns.TypeAXFR, Qclass: dns.ClassINET}}}
	m.Response, m.Authoritative = true, true
	scratch := make([]byte, dns.MaxMsgSize)
	head, err := m.PackBuffer(scratch) // the header, then the question
	if err != nil {
		return nil, err
	}
	t.qend = len(head)
	for len(rrs) > 0 {
		n, size := 0, 0
		for n < len(rrs) && (n == 0 || size+dns.Len(rrs[n]) <= xfrMessageBytes) {
			size += dns.Len(rrs[n])
			n++
		}
		m.Answer = rrs[:n]
		wire, err := m.PackBuffer(scratch)
		if err != nil {
			return nil, err
		}
		t.msgs = append(t.msgs, bytes.Clone(wire))
		rrs = rrs[n:]
	}
	return t, nil
}

// xfrCache keeps a zone's last transfer: every secondary asks for the
// same serial after a NOTIFY. A signed zone's costs the NSEC chain over
// every name, a sort in canonical order and a lookup of every RRset's
// signatures to build (BenchmarkSignedAXFR, 20,000 names: 0.2–0.6 s and
// 109 MB allocated with every signature cached, seconds without); any
// zone's, packing every message. One entry a zone — its messages packed,
// the size of the transfer (5.5 MiB for 20,000 signed names) — replaced
// when the serial changes, gone with the zone when a reload replaces it. A signed zone's is kept only while every signature in it
// may still be handed out: a transfer made from it carries what one built
// afresh would, never a signature due for replacement, expired or not yet
// valid (a clock set back). The serial alone would not do: it changes
// every signature_refresh / 2 (resign), which keeps a signature that had
// just over signature_refresh left at the build for half of that again,
// and not at all when the clock is set back.
type xfrCache struct {
	mu  sync.Mutex // held while one is built: the zone's other transfers wait for it
	cur *builtTransfer
}

// transferOf is the transfer of z at st's serial: the cached one while it
// is current, else built (transferRecords, signedTransfer for a signed
// zone) and cached.
func (st *state) transferOf(z *zone) (*builtTransfer, error) {
	c := &z.xfr
	c.mu.Lock()
	defer c.mu.Unlock()
	now := int64(0)
	if z.signer != nil {
		now = z.signer.now().Unix()
	}
	if t := c.cur; t != nil && t.serial == st.soa(z).Serial && t.from <= now && now < t.until {
		return t, nil
	}
	// Dropped before the next is built: one at a time in memory, but for
	// those still being sent.
	c.cur = nil
	rrs := st.transferRecords(z)
	if z.signer != nil {
		var err error
		if rrs, err = st.signedTransfer(z, rrs); err != nil {
			return nil, fmt.Errorf("signing: %w", err)
		}
	}
	t, err := newBuiltTransfer(z.origin, rrs)
	if err != nil {
		return nil, fmt.Errorf("packing: %w", err)
	}
	if z.signer != nil {
		t.from, t.until = st.signedWindow(&dns.Msg{Answer: rrs})
	}
	c.cur = t
	return t, nil
}

// transferRecords is the zone as a transfer sends it: the SOA (current
// serial), every other record in a stable order with the managed names'
// current default-region answers instead of static addresses, the SOA again.
func (st *state) transferRecords(z *zone) []dns.RR {
	soa := st.soa(z)
	out := []dns.RR{soa}
	names := make([]string, 0, len(z.names))
	for n := range z.names {
		names = append(names, n)
	}
	slices.Sort(names)
	view := st.pools.view.Load()
	for _, name := range names {
		byType := z.names[name]
		types := make([]uint16, 0, len(byType))
		for t := range byType {
			types = append(types, t)
		}
		slices.Sort(types)
		nv := view.names[name]
		for _, t := range types {
			if t == dns.TypeSOA || nv != nil && (t == dns.TypeA || t == dns.TypeAAAA) {
				continue
			}
			out = append(out, byType[t]...)
		}
	}
	managed := make([]string, 0, len(view.names))
	for name := range view.names {
		if dns.IsSubDomain(z.origin, name) && st.zoneFor(name) == z {
			managed = append(managed, name)
		}
	}
	slices.Sort(managed)
	for _, name := range managed {
		nv := view.names[name]
		rv := nv.regions[nv.deflt]
		if rv == nil {
			continue
		}
		for _, fv := range rv.fam {
			for _, a := range fv.addrs {
				hdr := dns.RR_Header{Name: name, Class: dns.ClassINET, Ttl: fv.ttl}
				if a.Is4() {
					hdr.Rrtype = dns.TypeA
					out = append(out, &dns.A{Hdr: hdr, A: a.AsSlice()})
				} else {
					hdr.Rrtype = dns.TypeAAAA
					out = append(out, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
				}
			}
		}
	}
	return append(out, soa)
}

// reloadBump is what a reload adds to the serial: 0 when every zone holds
// the same records and keys and the managed names the same configuration as before
// (a SIGHUP that changed nothing must not send every secondary transferring),
// else 1.
func reloadBump(old, next *state) uint32 {
	if len(old.zones) != len(next.zones) || !reflect.DeepEqual(old.cfg.Names, next.cfg.Names) {
		return 1
	}
	for i, z := range old.zones {
		if z.origin != next.zones[i].origin || !slices.Equal(z.records(), next.zones[i].records()) || z.signer.id() != next.zones[i].signer.id() {
			return 1
		}
	}
	return 0
}

// reloadOffset is the serials' offset next serves with: old's plus bump
// (reloadBump), raised where a zone's file went back in serial
// (offsetPast): a reload that changed a zone serves it past its serial of
// before, one that changed nothing leaves it.
func reloadOffset(old, next *state, bump uint32) uint32 {
	return next.offsetPast(old.serial.Load()+bump, old.served(), bump > 0)
}

// served is each zone's serial as st serves it, by origin: kept with the
// offset (cluster.state_dir, an upgrade's hand-off) for the next process
// to go past.
func (st *state) served() map[string]uint32 {
	out := make(map[string]uint32, len(st.zones))
	for _, z := range st.zones {
		out[z.origin] = st.soa(z).Serial
	}
	return out
}

// offsetPast is offset, raised where a zone of st would serve an older
// serial than before (RFC 1982) — its file rolled back, serial and all
// (git revert, a backup restored) — or, changed, the same one: a
// secondary holding the serial of before takes its IXFR's answer for
// "nothing to transfer" and keeps the version rolled back from. Such a
// zone serves one past its serial of before. before holds the zones'
// serials served last (served), by origin.
func (st *state) offsetPast(offset uint32, before map[string]uint32, changed bool) uint32 {
	for _, z := range st.zones {
		was, ok := before[z.origin]
		if !ok {
			continue
		}
		if d := int32(z.soa.Serial + offset - was); d < 0 || d == 0 && changed {
			offset += was - (z.soa.Serial + offset) + 1
		}
	}
	return offset
}

// records is every record of z in presentation form, sorted.
func (z *zone) records() []string {
	var out []string
	for _, byType := range z.names {
		for _, rrs := range byType {
			for _, rr := range rrs {
				out = append(out, rr.String())
			}
		}
	}
	slices.Sort(out)
	return out
}

// notifyRetries and notifyTimeout follow RFC 1996 4.3: retry an
// unacknowledged NOTIFY a few times, then wait for the next change.
const (
	notifyRetries = 5
	notifyTimeout = 2 * time.Second
)

// maxNotifiesAtOnce bounds the NOTIFYs in flight (sendNotifies): each a
// socket and a goroutine until answered or notifyTimeout. BIND sends 20 a
// second (notify-rate); a round of more takes a deadline per this many.
const maxNotifiesAtOnce = 16

type notifyKey struct{ zone, target string }

// Results of a NOTIFY (ringlb_gslb_notifies_total).
const (
	notifyOK    = "ok"
	notifyError = "error"
)

// notifying is the zones of st that send NOTIFY.
func notifying(st *state) map[string]bool {
	zones := map[string]bool{}
	for _, z := range st.zones {
		if len(z.cfg.Transfer.Notify) > 0 {
			zones[z.origin] = true
		}
	}
	return zones
}

// countNotifies exports the NOTIFY counters of st's zones at 0 before st
// serves: made by a zone's first NOTIFY, its series first appeared at 1,
// no increase to Prometheus, so an alert on its errors missed the first
// ones (a secondary down since the gslb started). The NOTIFY loop deletes
// those of zones a reload removed.
func (s *Server) countNotifies(st *state) {
	for zone := range notifying(st) {
		s.metrics.notifies.WithLabelValues(zone, notifyOK)
		s.metrics.notifies.WithLabelValues(zone, notifyError)
	}
}

type notifyState struct {
	serial   uint32 // last serial acknowledged, or being retried
	acked    bool
	attempts int
}

// kickNotify asks the NOTIFY loop to look for changed serials; it never
// blocks (one pending kick is enough).
func (s *Server) kickNotify() {
	select {
	case s.notifyKick <- struct{}{}:
	default:
	}
}

// resignTick is how often the NOTIFY loop looks whether a signed zone's
// secondaries are due a new serial (resign).
const resignTick = time.Minute

// resign keeps a signed zone's secondaries' signatures from expiring. A
// secondary serves the signatures a transfer gave it until the serial
// changes; online signing replaces signatures as they age but changed no
// serial, so a zone whose managed answers stayed put left its secondaries
// serving expired signatures (bogus to every validator) from 72 h after
// their last transfer (TestSecondarysSignaturesNeverExpire). So the serial
// changes every signature_refresh / 2 (by the signers' clock) when nothing
// else has changed it: a transfer carries signatures with at least
// signature_refresh left, and the next is due half of it later, which
// leaves a secondary the other half (36 h by default) to notice, by NOTIFY
// or its SOA refresh. As PowerDNS's SOA-EDIT and Knot's re-signing do.
type resign struct {
	serial uint32    // the serial offset last seen
	at     time.Time // when it last changed, by the signers' clock
}

// check bumps st's serial when a secondary may hold signatures older than
// the period of st's signed zones that transfer; true when it did. seen is
// the signers' time it went by (zero: no such zone).
func (r *resign) check(st *state) (bumped bool, seen time.Time) {
	var period time.Duration
	var now func() time.Time
	for _, z := range st.zones {
		if !z.signedForSecondaries() {
			continue
		}
		if p := z.signer.refresh / 2; period == 0 || p < period {
			period, now = p, z.signer.now
		}
	}
	if period == 0 {
		return false, time.Time{}
	}
	t, serial := now(), st.serial.Load()
	switch {
	case r.at.IsZero() || serial != r.serial || t.Before(r.at):
		// A change (secondaries transfer anew), or the clock set back.
		r.serial, r.at = serial, t
		return false, t
	case t.Sub(r.at) < period:
		return false, t
	}
	r.serial, r.at = st.serial.Add(1), t
	return true, t
}

// signedForSecondaries is whether z is signed and has secondaries, who
// transfer it or are told of its changes: resign keeps their signatures
// current.
func (z *zone) signedForSecondaries() bool {
	return z.signer != nil && (len(z.allow) > 0 || len(z.cfg.Transfer.Notify) > 0)
}

// expiryWarning says (nil: nothing to say) when a secondary of z, cut off
// from this server, would serve it past its signatures. It serves the
// zone until the SOA expire after it last reached this server, with the
// signatures of its last transfer; resign changes the serial every
// signature_refresh / 2, so those have at least that much left then.
// Past it every validating resolver gets bogus answers from it until the
// zone expires. Said, not refused: NSD, BIND and Knot serve such a zone
// (Knot warns of an rrsig-refresh too short for caches; the usual 14 days
// of expire exceed their own default refresh), and a secondary in touch
// never sees it.
func (z *zone) expiryWarning() error {
	if !z.signedForSecondaries() || z.soa == nil {
		return nil
	}
	expire, held := time.Duration(z.soa.Expire)*time.Second, z.signer.refresh/2
	if expire <= held {
		return nil
	}
	// Named where the config has the field, as a problem of it is.
	return (&zoneProblems{z: z}).placed("dnssec", fmt.Errorf("the SOA expire (%s) is longer than the signatures a secondary holds are sure to last (half of signature_refresh, %s): one cut off from this server would serve the zone with expired signatures, bogus to every validating resolver, for up to %s; lower the SOA expire to %d or less, or raise signature_refresh to %s or more (and signature_validity above it)",
		expire, held, expire-held, int64(held/time.Second), 2*expire))
}

// notifyLoop sends NOTIFY for every zone whose serial differs from the last
// one its secondaries acknowledged, until ctx ends, and gives signed zones'
// secondaries new signatures (resign). Started by Start, stopped by
// Shutdown.
func (s *Server) notifyLoop(ctx context.Context) {
	sent := map[notifyKey]*notifyState{}
	counted := notifying(s.state.Load())
	var retry <-chan time.Time
	var rs resign
	tick := time.NewTicker(s.resignTick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			bumped, seen := rs.check(s.state.Load())
			s.resignSeen.Store(seen.UnixNano())
			if !bumped {
				continue // a pending retry stays pending
			}
			s.saveSerial()
			s.logger.Info("serial bumped: the signatures secondaries hold are due for replacement", "serial_offset", rs.serial)
		case <-s.notifyKick:
		case <-retry:
		}
		retry = nil
		st := s.state.Load()
		// Here, not in Reload: a NOTIFY to the old state's zone, in
		// flight across the reload, is counted here and no series of a
		// zone gone is made again after its deletion.
		zones := notifying(st)
		for zone := range counted {
			if !zones[zone] {
				s.metrics.notifies.DeletePartialMatch(prometheus.Labels{"zone": zone})
			}
		}
		counted = zones
		live := map[notifyKey]bool{}
		var round []*notifySend
		for _, z := range st.zones {
			serial := st.soa(z).Serial
			for _, target := range z.cfg.Transfer.Notify {
				k := notifyKey{z.origin, target}
				live[k] = true
				ns := sent[k]
				if ns == nil || ns.serial != serial {
					ns = &notifyState{serial: serial}
					sent[k] = ns
				}
				if ns.acked || ns.attempts >= notifyRetries {
					continue
				}
				ns.attempts++
				round = append(round, &notifySend{z: z, ns: ns, target: target})
			}
		}
		s.sendNotifies(ctx, st, round)
		if ctx.Err() != nil {
			return
		}
		pending := false
		for _, n := range round {
			z, ns := n.z, n.ns
			if n.err != nil {
				s.metrics.notifies.WithLabelValues(z.origin, notifyError).Inc()
				s.logger.Warn("NOTIFY not acknowledged", "zone", z.origin, "secondary", n.target, "serial", ns.serial, "attempt", ns.attempts, "err", n.err)
				pending = pending || ns.attempts < notifyRetries
				continue
			}
			ns.acked = true
			s.metrics.notifies.WithLabelValues(z.origin, notifyOK).Inc()
			s.logger.Info("NOTIFY acknowledged", "zone", z.origin, "secondary", n.target, "serial", ns.serial)
		}
		// Forget secondaries a reload removed.
		maps.DeleteFunc(sent, func(k notifyKey, _ *notifyState) bool { return !live[k] })
		if pending {
			retry = time.After(notifyTimeout)
		}
	}
}

// notifySend is one NOTIFY of a round of the NOTIFY loop: z's serial
// (ns.serial) to target, and what became of it.
type notifySend struct {
	z      *zone
	ns     *notifyState
	target string
	err    error
}

// sendNotifies sends round's NOTIFYs at once, at most maxNotifiesAtOnce at
// a time, and returns when each is answered or given up on. One after
// another, each unanswered one waited out its deadline before the next
// went: a secondary that was down held back every NOTIFY after it, of
// every zone, on every retry (TestSilentSecondaryDelaysNoOtherNotify).
func (s *Server) sendNotifies(ctx context.Context, st *state, round []*notifySend) {
	if len(round) == 0 {
		// Every serial change of a zone with no secondary to notify
		// (every failover): nothing to make a round's slots for.
		return
	}
	var wg sync.WaitGroup
	slots := make(chan struct{}, maxNotifiesAtOnce)
	for _, n := range round {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			n.err = s.sendNotify(ctx, st, n.z, n.ns.serial, n.target)
		}()
	}
	wg.Wait()
}

// sendNotify tells target that z is now at serial (RFC 1996), signed with
// the zone's TSIG key when it has one.
func (s *Server) sendNotify(ctx context.Context, st *state, z *zone, serial uint32, target string) error {
	m := new(dns.Msg)
	m.SetNotify(z.origin)
	m.Authoritative = true
	soa := st.soa(z)
	m.Answer = []dns.RR{soa}
	c := &dns.Client{Net: "udp", Timeout: notifyTimeout}
	key := z.cfg.Transfer.TSIG
	if key != nil {
		m.SetTsig(dns.CanonicalName(key.Name), dns.CanonicalName(key.Algorithm), tsigFudge, time.Now().Unix())
		c.TsigProvider = tsigProvider{s}
	}
	ctx, cancel := context.WithTimeout(ctx, notifyTimeout)
	defer cancel()
	conn, err := c.DialContext(ctx, target)
	if err != nil {
		return err
	}
	defer conn.Close()
	// A read does not watch ctx: closing the socket ends it at once when
	// Shutdown cancels, instead of at the deadline.
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	r, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	if err != nil {
		return err // a TSIG on the answer that does not verify included
	}
	if !r.Response {
		// The NOTIFY sent back (an echo, a loop): a request, QR clear,
		// with our ID, opcode and NOERROR; nobody answered it.
		return errors.New("NOTIFY came back as a request (QR clear), not answered")
	}
	if key != nil && !signedWith(r, key) {
		// RFC 8945 5.3: an answer to a signed request is signed with its
		// key. Whoever sent one unsigned, or signed with another key the
		// server knows (another zone's, which miekg/dns verifies all the
		// same), does not hold the zone's: not the secondary, whose
		// acknowledgement it would stand for.
		return errors.New("answered NOTIFY not signed with the zone's key")
	}
	if r.Opcode != dns.OpcodeNotify || r.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("answered %s to NOTIFY", dns.RcodeToString[r.Rcode])
	}
	return nil
}
