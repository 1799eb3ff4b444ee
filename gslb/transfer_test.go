package gslb

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

const testTSIGSecret = "c2VjcmV0IHNoYXJlZCB3aXRoIHRoZSBzZWNvbmRhcnk="

// axfr transfers ringlb.test from s, signed with secret when keyName is set.
func axfr(t *testing.T, s *Server, keyName, secret string) ([]dns.RR, error) {
	t.Helper()
	return axfrFrom(t, s, "127.0.0.1", keyName, secret)
}

// axfrFrom is axfr from the source address src.
func axfrFrom(t *testing.T, s *Server, src, keyName, secret string) ([]dns.RR, error) {
	t.Helper()
	return axfrOf(t, s, "ringlb.test.", src, keyName, secret)
}

// axfrOf is axfrFrom of the zone origin.
func axfrOf(t *testing.T, s *Server, origin, src, keyName, secret string) ([]dns.RR, error) {
	t.Helper()
	m := new(dns.Msg)
	m.SetAxfr(origin)
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	tr := &dns.Transfer{Conn: &dns.Conn{Conn: c}, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	if keyName != "" {
		m.SetTsig(keyName, dns.HmacSHA256, 300, time.Now().Unix())
		tr.TsigSecret = map[string]string{keyName: secret}
	}
	ch, err := tr.In(m, s.Addr())
	if err != nil {
		return nil, err
	}
	var rrs []dns.RR
	for env := range ch {
		if env.Error != nil {
			return rrs, env.Error
		}
		rrs = append(rrs, env.RR...)
	}
	return rrs, nil
}

func withTransfer(t *testing.T, cfg configs.GSLB, tr configs.Transfer) configs.GSLB {
	t.Helper()
	zones := append([]configs.Zone(nil), cfg.Zones...)
	zones[0].Transfer = tr
	cfg.Zones = zones
	return cfg
}

func tsigConfig(t testing.TB) *configs.TSIG {
	f := filepath.Join(t.TempDir(), "xfr.key")
	if err := os.WriteFile(f, []byte(testTSIGSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &configs.TSIG{Name: "xfr.ringlb.test.", Algorithm: "hmac-sha256", SecretFile: f}
}

func TestAXFR(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	base := gslbConfig(t, east, west, "")
	t.Run("allowed", func(t *testing.T) {
		s := startGSLB(t, withTransfer(t, base, configs.Transfer{Allow: []string{"127.0.0.0/8"}}))
		rrs, err := axfr(t, s, "", "")
		if err != nil {
			t.Fatal(err)
		}
		first, firstOK := rrs[0].(*dns.SOA)
		last, lastOK := rrs[len(rrs)-1].(*dns.SOA)
		if !firstOK || !lastOK || first.Serial != last.Serial {
			t.Fatalf("transfer not framed by the SOA: %v ... %v", rrs[0], rrs[len(rrs)-1])
		}
		if want := query(t, s, "udp", "ringlb.test.", dns.TypeSOA, nil).Answer[0].(*dns.SOA).Serial; first.Serial != want {
			t.Errorf("transfer serial %d, SOA query says %d", first.Serial, want)
		}
		text := ""
		for _, rr := range rrs {
			text += rr.String() + "\n"
		}
		for _, want := range []string{"www.ringlb.test.\t3600\tIN\tA\t192.0.2.80", "ide.ringlb.test.\t30\tIN\tA\t192.0.2.1", "big.ringlb.test.", "*.wild.ringlb.test."} {
			if !strings.Contains(text, want) {
				t.Errorf("transfer lacks %q:\n%s", want, text)
			}
		}
		// Over UDP an AXFR is not implemented (RFC 5936 4.2: TCP only),
		// claiming no authority, as NSD and Knot answer it.
		if m := query(t, s, "udp", "ringlb.test.", dns.TypeAXFR, nil); m.Rcode != dns.RcodeNotImplemented || m.Authoritative {
			t.Errorf("AXFR over UDP: %s, AA %v", dns.RcodeToString[m.Rcode], m.Authoritative)
		}
	})
	t.Run("source not allowed", func(t *testing.T) {
		s := startGSLB(t, withTransfer(t, base, configs.Transfer{Allow: []string{"127.0.0.1/32"}}))
		if rrs, err := axfrFrom(t, s, "127.0.0.2", "", ""); err == nil || !strings.Contains(err.Error(), "rcode") {
			t.Fatalf("transfer to 127.0.0.2, allow 127.0.0.1/32: %d records, err %v", len(rrs), err)
		}
		// Refused, not failed: the answer says so.
		if m := queryFrom(t, s, "tcp", "127.0.0.2", "ringlb.test.", dns.TypeAXFR, nil); m.Rcode != dns.RcodeRefused || len(m.Answer) != 0 {
			t.Fatalf("AXFR from 127.0.0.2: %s with %d records", dns.RcodeToString[m.Rcode], len(m.Answer))
		}
		if rrs, err := axfrFrom(t, s, "127.0.0.1", "", ""); err != nil || len(rrs) < 10 {
			t.Fatalf("transfer to the allowed 127.0.0.1: %d records, %v", len(rrs), err)
		}
	})
	t.Run("no allow list", func(t *testing.T) {
		s := startGSLB(t, base)
		if _, err := axfr(t, s, "", ""); err == nil {
			t.Fatal("transfer served without transfer.allow")
		}
	})
	t.Run("tsig", func(t *testing.T) {
		s := startGSLB(t, withTransfer(t, base, configs.Transfer{Allow: []string{"127.0.0.1/32"}, TSIG: tsigConfig(t)}))
		if _, err := axfr(t, s, "", ""); err == nil {
			t.Error("unsigned transfer served with a TSIG key configured")
		}
		wrong := base64.StdEncoding.EncodeToString([]byte("not the secret"))
		if _, err := axfr(t, s, "xfr.ringlb.test.", wrong); err == nil {
			t.Error("transfer signed with the wrong secret served")
		}
		if _, err := axfr(t, s, "other.ringlb.test.", testTSIGSecret); err == nil {
			t.Error("transfer signed with an unknown key name served")
		}
		rrs, err := axfr(t, s, "xfr.ringlb.test.", testTSIGSecret)
		if err != nil || len(rrs) < 10 {
			t.Fatalf("signed transfer: %d records, %v", len(rrs), err)
		}
		// The answer to an unsigned request says why: NOTAUTH.
		if m := query(t, s, "tcp", "ringlb.test.", dns.TypeAXFR, nil); m.Rcode != dns.RcodeNotAuth || len(m.Answer) != 0 {
			t.Fatalf("unsigned AXFR: %s with %d records", dns.RcodeToString[m.Rcode], len(m.Answer))
		}
		// The key does not open the door to a source outside allow.
		if _, err := axfrFrom(t, s, "127.0.0.2", "xfr.ringlb.test.", testTSIGSecret); err == nil {
			t.Error("signed transfer served to a source outside allow")
		}
	})
	t.Run("tsig over many messages", func(t *testing.T) {
		// A zone too big for one message: every message is signed, the
		// later ones chained to the previous MAC (RFC 8945 5.3.1).
		zoneText, err := os.ReadFile(base.Zones[0].File)
		if err != nil {
			t.Fatal(err)
		}
		var big strings.Builder
		big.Write(zoneText)
		for i := range 3000 {
			fmt.Fprintf(&big, "bulk%d 300 IN TXT \"%s\"\n", i, strings.Repeat("x", 40))
		}
		cfg := withTransfer(t, base, configs.Transfer{Allow: []string{"127.0.0.1/32"}, TSIG: tsigConfig(t)})
		cfg.Zones[0].File = filepath.Join(t.TempDir(), "big.zone")
		if err := os.WriteFile(cfg.Zones[0].File, []byte(big.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		s := startGSLB(t, cfg)
		rrs, err := axfr(t, s, "xfr.ringlb.test.", testTSIGSecret)
		if err != nil || len(rrs) < 3000 {
			t.Fatalf("signed transfer of a big zone: %d records, %v", len(rrs), err)
		}
		if rrs[0].Header().Rrtype != dns.TypeSOA || rrs[len(rrs)-1].Header().Rrtype != dns.TypeSOA {
			t.Fatal("big transfer not framed by the SOA")
		}
	})
	t.Run("IXFR from an older serial gets the whole zone", func(t *testing.T) {
		s := startGSLB(t, withTransfer(t, base, configs.Transfer{Allow: []string{"127.0.0.1/32"}}))
		m := new(dns.Msg)
		m.SetIxfr("ringlb.test.", 1, "ns1.ringlb.test.", "hostmaster.ringlb.test.")
		c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
		r, _, err := c.Exchange(m, s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) < 10 || r.Answer[0].Header().Rrtype != dns.TypeSOA || r.Answer[len(r.Answer)-1].Header().Rrtype != dns.TypeSOA {
			t.Fatalf("IXFR: %s, %d records", dns.RcodeToString[r.Rcode], len(r.Answer))
		}
	})
}

// fakeSecondary records the NOTIFYs it receives.
type fakeSecondary struct {
	addr    string
	notices chan uint32
}

func newFakeSecondary(t *testing.T) *fakeSecondary {
	t.Helper()
	return newSigningSecondary(t, nil)
}

// newSigningSecondary is a fakeSecondary that knows the TSIG keys in
// secrets (name → base64) and records only NOTIFYs whose signature verifies.
func newSigningSecondary(t *testing.T, secrets map[string]string) *fakeSecondary {
	t.Helper()
	f := &fakeSecondary{notices: make(chan uint32, 64)}
	f.addr = serveNotifyUDP(t, "secondary", secrets, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if t := r.IsTsig(); t != nil && secrets != nil && w.TsigStatus() == nil {
			m.SetTsig(t.Hdr.Name, t.Algorithm, 300, time.Now().Unix()) // signed by WriteMsg
		}
		w.WriteMsg(m)
		if secrets != nil && (r.IsTsig() == nil || w.TsigStatus() != nil) {
			return
		}
		if r.Opcode == dns.OpcodeNotify && len(r.Answer) == 1 {
			if soa, ok := r.Answer[0].(*dns.SOA); ok {
				f.notices <- soa.Serial
			}
		}
	})
	return f
}

// serveNotifyUDP serves h on a UDP port of 127.0.0.1, with the TSIG keys
// in secrets (name → base64), until the test ends, and returns its
// address; what names it in the failure to start.
func serveNotifyUDP(t *testing.T, what string, secrets map[string]string, h dns.HandlerFunc) string {
	t.Helper()
	up := make(chan struct{})
	srv := &dns.Server{Addr: "127.0.0.1:0", Net: "udp", NotifyStartedFunc: func() { close(up) }, TsigSecret: secrets,
		// NOTIFY is not a query: accept it (the default refuses it).
		MsgAcceptFunc: func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept },
		Handler:       h}
	go srv.ListenAndServe()
	select {
	case <-up:
	case <-time.After(5 * time.Second):
		t.Fatal(what + " did not start")
	}
	t.Cleanup(func() { srv.Shutdown() })
	return srv.PacketConn.LocalAddr().String()
}

func (f *fakeSecondary) next(t *testing.T) uint32 {
	t.Helper()
	select {
	case s := <-f.notices:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no NOTIFY")
		return 0
	}
}

// NOTIFY goes out at start and after every serial change; the secondary
// then transfers the new serial.
func TestNotifyOnSerialChange(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	sec := newFakeSecondary(t)
	cfg := withTransfer(t, gslbConfig(t, east, west, ""), configs.Transfer{Allow: []string{"127.0.0.1/32"}, Notify: []string{sec.addr}})
	zoneText, err := os.ReadFile(cfg.Zones[0].File)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Zones[0].File = filepath.Join(t.TempDir(), "ringlb.test.zone")
	if err := os.WriteFile(cfg.Zones[0].File, zoneText, 0o644); err != nil {
		t.Fatal(err)
	}
	s := startGSLB(t, cfg)
	soaSerial := func() uint32 { return query(t, s, "udp", "ringlb.test.", dns.TypeSOA, nil).Answer[0].(*dns.SOA).Serial }
	first := sec.next(t)
	east.healthy.Store(false) // a managed answer changes: serial bump, NOTIFY
	waitAnswer(t, s, "127.0.0.1", "192.0.2.2")
	for serial := sec.next(t); serial <= first; serial = sec.next(t) {
	}
	// A reload that changes nothing keeps the serial: no transfer for nothing.
	before := soaSerial()
	if err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if after := soaSerial(); after != before {
		t.Errorf("reload of the same zone moved the serial from %d to %d", before, after)
	}
	// A reload that changes a record bumps it and notifies.
	if err := os.WriteFile(cfg.Zones[0].File, append(zoneText, "added 300 IN TXT \"new\"\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	want := soaSerial()
	if want == before {
		t.Fatalf("reload with a new record kept the serial at %d", want)
	}
	for serial := sec.next(t); serial != want; serial = sec.next(t) {
	}
	rrs, err := axfr(t, s, "", "")
	if err != nil || rrs[0].(*dns.SOA).Serial != want {
		t.Fatalf("transfer after NOTIFY of %d: %v, %v", want, rrs[:1], err)
	}
	text := ""
	for _, rr := range rrs {
		text += rr.String() + "\n"
	}
	if !strings.Contains(text, "added.ringlb.test.\t300\tIN\tTXT\t\"new\"") {
		t.Errorf("transfer lacks the record the reload added:\n%s", text)
	}
	if !strings.Contains(text, "ide.ringlb.test.\t5\tIN\tA\t192.0.2.2") {
		t.Errorf("transfer does not carry the failed-over answer with failover_ttl:\n%s", text)
	}
}

// A secondary that never answers keeps the NOTIFY loop retrying; Shutdown
// still ends it within its deadline.
func TestNotifyStopsOnShutdown(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	cfg := withTransfer(t, gslbConfig(t, east, west, ""), configs.Transfer{Notify: []string{silent.LocalAddr().String()}})
	s, err := New(cfg, "gslb-test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := silent.ReadFrom(buf)
	if err != nil {
		t.Fatal("no NOTIFY sent:", err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf[:n]); err != nil || m.Opcode != dns.OpcodeNotify || m.Question[0].Qtype != dns.TypeSOA || !m.Authoritative {
		t.Fatalf("not a NOTIFY for the SOA: %v (%v)", m, err)
	}
	// The loop now waits for an answer that never comes.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown while a NOTIFY is unanswered: %v", err)
	}
}

// With a TSIG key on the zone, NOTIFY is signed with it.
func TestNotifySigned(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	sec := newSigningSecondary(t, map[string]string{"xfr.ringlb.test.": testTSIGSecret})
	cfg := withTransfer(t, gslbConfig(t, east, west, ""), configs.Transfer{Notify: []string{sec.addr}, TSIG: tsigConfig(t)})
	s := startGSLB(t, cfg)
	current := func() uint32 { return query(t, s, "udp", "ringlb.test.", dns.TypeSOA, nil).Answer[0].(*dns.SOA).Serial }
	// Monitors coming up may move the serial once more: wait for its NOTIFY.
	for got := sec.next(t); got != current(); got = sec.next(t) {
	}
}

// RFC 6891 7: the answer to a request carrying an OPT carries one, the
// server's (max_udp_size, DO copied), and a transfer's are no exception
// (RFC 5936 2.2.5): the refusals — an address not allowed, signed or not,
// a request without the zone's key, a name below the apex, a class but IN;
// NSD's and Knot's carry theirs — an IXFR at the current serial, and every
// message of a transfer, built or replayed, in the zone's case or another
// (each unpacked and packed again), its TSIG over it (rawXFRRequest
// verifies each), as NSD puts one in every message. Without an OPT in the
// request, none in the answer. Before, none had one (10 of 10 refusals, the
// IXFR, 9 of 9 messages of three transfers), where a query asked the same
// way had.
func TestTransferAnswersCarryTheOPT(t *testing.T) {
	cfg := bigZone(t, 2000) // several messages, with TSIG
	cfg.Zones = slices.Clone(cfg.Zones)
	cfg.Zones[0].Transfer.Allow = []string{"127.0.0.1/32"}
	s := transferServer(t, cfg, nil)
	size := uint16(s.state.Load().maxUDP)
	hasOPT := func(m *dns.Msg, do bool) bool {
		o := m.IsEdns0()
		return o != nil && o.UDPSize() == size && o.Do() == do && o.Version() == 0
	}
	// ask asks from src, signed when signed (its answer's TSIG verified:
	// miekg/dns verifies none of a NOTAUTH).
	ask := func(src, name string, qtype, qclass uint16, serial uint32, do, signed bool) *dns.Msg {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		m.Question[0].Qclass = qclass
		if qtype == dns.TypeIXFR {
			m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "ringlb.test.", Rrtype: dns.TypeSOA, Class: dns.ClassINET}, Ns: "a.", Mbox: "b.", Serial: serial}}
		}
		m.SetEdns0(1232, do)
		c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}}
		if signed {
			m.SetTsig(tsigConfig(t).Name, dns.HmacSHA256, 300, time.Now().Unix())
			c.TsigSecret = map[string]string{tsigConfig(t).Name: testTSIGSecret}
		}
		r, _, err := c.Exchange(m, s.Addr())
		if err != nil {
			t.Fatalf("%s %s from %s: %v", name, dns.TypeToString[qtype], src, err)
		}
		return r
	}
	for _, c := range []struct {
		what, src, name string
		qtype, qclass   uint16
		signed          bool
		rcode           int
	}{
		{"from an address not allowed", "127.0.0.2", "ringlb.test.", dns.TypeAXFR, dns.ClassINET, false, dns.RcodeRefused},
		{"from an address not allowed, signed", "127.0.0.2", "ringlb.test.", dns.TypeAXFR, dns.ClassINET, true, dns.RcodeRefused},
		{"unsigned", "127.0.0.1", "ringlb.test.", dns.TypeAXFR, dns.ClassINET, false, dns.RcodeNotAuth},
		{"below the apex", "127.0.0.1", "www.ringlb.test.", dns.TypeAXFR, dns.ClassINET, false, dns.RcodeNotAuth},
		{"of class CH", "127.0.0.1", "ringlb.test.", dns.TypeIXFR, dns.ClassCHAOS, false, dns.RcodeRefused},
	} {
		for _, do := range []bool{false, true} {
			if r := ask(c.src, c.name, c.qtype, c.qclass, 0, do, c.signed); r.Rcode != c.rcode || !hasOPT(r, do) || (r.IsTsig() != nil) != c.signed {
				t.Errorf("%s %s %s, DO %v: want %s with our OPT; got %s, OPT %v, TSIG %v", dns.TypeToString[c.qtype], c.name, c.what, do, dns.RcodeToString[c.rcode], dns.RcodeToString[r.Rcode], r.IsEdns0(), r.IsTsig())
			}
		}
	}
	serial := s.state.Load().soa(s.state.Load().zones[0]).Serial
	if r := ask("127.0.0.1", "ringlb.test.", dns.TypeIXFR, dns.ClassINET, serial, true, true); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || !hasOPT(r, true) {
		t.Errorf("IXFR at the current serial: want one SOA and our OPT; got %s, %d answers, OPT %v", dns.RcodeToString[r.Rcode], len(r.Answer), r.IsEdns0())
	}
	for _, name := range []string{"ringlb.test.", "ringlb.test.", "RingLB.Test."} { // built, replayed, another case
		for _, edns := range []bool{true, false} {
			req := new(dns.Msg)
			req.SetQuestion(name, dns.TypeAXFR)
			if edns {
				req.SetEdns0(4096, true)
			}
			msgs := rawXFRRequest(t, s, req, true)
			without := 0
			for _, m := range msgs {
				if edns && !hasOPT(m, true) || !edns && m.IsEdns0() != nil {
					without++
				}
			}
			if len(msgs) < 2 || without > 0 {
				t.Errorf("AXFR of %s, EDNS %v: %d of %d messages otherwise", name, edns, without, len(msgs))
			}
		}
	}
}
