package gslb

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// slipServer is a server whose RRL lets one response a second through per
// address (ipv4_prefix 32) and slips every other one (slip 1), with the
// zone's TSIG key.
func slipServer(t *testing.T) *Server {
	t.Helper()
	cfg := withTransfer(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""), configs.Transfer{Allow: []string{"127.0.0.1/32"}, TSIG: tsigConfig(t)})
	slip := 1
	cfg.RateLimit.ResponsesPerSecond = new(1)
	cfg.RateLimit.Slip = &slip
	cfg.RateLimit.IPv4Prefix = 32
	return startGSLB(t, cfg)
}

// A slip (a truncated reply sent for a response RRL holds back) says what
// the full answer would say of the name, as Knot's slips do: an answer for
// a name outside every zone is REFUSED without AA, and a slip is no
// different (before: NOERROR with AA, a claim of authority over any name);
// one of the zone's names keeps AA, one at or below a delegation has none,
// as its referral; an AXFR (TCP only) is NOTIMP whatever its name.
func TestSlipSaysWhatTheAnswerWould(t *testing.T) {
	s := slipServer(t)
	for _, tt := range []struct {
		name, src, qname string
		qclass, qtype    uint16
		rcode            int
		aa               bool
	}{
		{"in the zone", "127.0.0.3", "www.ringlb.test.", dns.ClassINET, dns.TypeA, dns.RcodeSuccess, true},
		{"in the zone, case as asked", "127.0.0.4", "WWW.RingLB.Test.", dns.ClassINET, dns.TypeA, dns.RcodeSuccess, true},
		{"outside every zone", "127.0.0.5", "www.example.org.", dns.ClassINET, dns.TypeA, dns.RcodeRefused, false},
		{"a parent of the zone", "127.0.0.6", "test.", dns.ClassINET, dns.TypeA, dns.RcodeRefused, false},
		{"a name ending like the zone", "127.0.0.7", "xringlb.test.", dns.ClassINET, dns.TypeA, dns.RcodeRefused, false},
		{"class CHAOS", "127.0.0.8", "www.ringlb.test.", dns.ClassCHAOS, dns.TypeA, dns.RcodeRefused, false},
		{"a delegation (a referral)", "127.0.0.9", "deleg.ringlb.test.", dns.ClassINET, dns.TypeA, dns.RcodeSuccess, false},
		{"below a delegation, case as asked", "127.0.0.10", "Host.DELEG.ringlb.test.", dns.ClassINET, dns.TypeA, dns.RcodeSuccess, false},
		{"AXFR (a TCP exchange)", "127.0.0.11", "ringlb.test.", dns.ClassINET, dns.TypeAXFR, dns.RcodeNotImplemented, false},
		{"AXFR of a zone not served", "127.0.0.12", "example.org.", dns.ClassINET, dns.TypeAXFR, dns.RcodeNotImplemented, false},
		{"IXFR", "127.0.0.13", "ringlb.test.", dns.ClassINET, dns.TypeIXFR, dns.RcodeRefused, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion(tt.qname, tt.qtype)
			m.Question[0].Qclass = tt.qclass
			q, _ := m.Pack()
			full, slips := fullThenSlips(t, s, tt.src, q)
			if full.Truncated || full.Rcode != tt.rcode || full.Authoritative != tt.aa {
				t.Fatalf("the full answer: TC %v, %s, AA %v; the test expects %s, AA %v", full.Truncated, dns.RcodeToString[full.Rcode], full.Authoritative, dns.RcodeToString[tt.rcode], tt.aa)
			}
			wrong := 0
			for _, r := range slips {
				if r.Rcode != full.Rcode || r.Authoritative != full.Authoritative || len(r.Answer)+len(r.Ns) != 0 || r.Question[0].Name != tt.qname {
					wrong++
					t.Errorf("slip: %s, AA %v, question %s; the full answer: %s, AA %v", dns.RcodeToString[r.Rcode], r.Authoritative, r.Question[0].Name, dns.RcodeToString[full.Rcode], full.Authoritative)
				}
			}
			t.Logf("%s: %d slips, %d saying otherwise than the full answer", tt.qname, len(slips), wrong)
		})
	}
}

// A slip to a query with EDNS carries an OPT as the full answer does (RFC
// 6891 7): the server's UDP size and the query's DO. Without one a
// resolver takes the server for one without EDNS and may ask it again
// without — DO and the signatures gone. A version above 0 gets BADVERS, as
// the full answer. Before, 0 of the slips carried an OPT.
func TestSlipToEDNSQueryHasOPT(t *testing.T) {
	s := slipServer(t)
	for _, tt := range []struct {
		name, src string
		version   uint8
		do        bool
	}{
		{"DO", "127.0.0.9", 0, true},
		{"no DO", "127.0.0.10", 0, false},
		{"version 1", "127.0.0.11", 1, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion("www.ringlb.test.", dns.TypeA)
			m.SetEdns0(4096, tt.do)
			m.IsEdns0().SetVersion(tt.version)
			q, _ := m.Pack()
			full, slips := fullThenSlips(t, s, tt.src, q)
			withOPT := 0
			for _, r := range slips {
				opt, fopt := r.IsEdns0(), full.IsEdns0()
				switch {
				case opt == nil:
					t.Errorf("slip without an OPT to a query with one (the full answer's: %v)", fopt)
				case fopt == nil:
					t.Fatalf("the full answer has no OPT: %v", full)
				case opt.UDPSize() != fopt.UDPSize() || opt.Do() != fopt.Do() || opt.Version() != 0 || r.Rcode != full.Rcode:
					t.Errorf("slip's OPT: size %d, DO %v, version %d, rcode %s; the full answer's: size %d, DO %v, rcode %s",
						opt.UDPSize(), opt.Do(), opt.Version(), dns.RcodeToString[r.Rcode], fopt.UDPSize(), fopt.Do(), dns.RcodeToString[full.Rcode])
				default:
					withOPT++
				}
			}
			t.Logf("EDNS %s: %d slips, %d with the full answer's OPT (%s)", tt.name, len(slips), withOPT, rcodeLabel(full.Rcode))
		})
	}
}

// A slip answering a TSIG-signed query is signed with the query's key (RFC
// 8945 5.3: a response to a signed request is signed), as BIND's are:
// unsigned, a TSIG client (dig, kdig: "expected a TSIG") drops it and never
// retries over TCP. The signed query over TCP is answered (RRL is UDP's).
// A query whose TSIG does not verify gets the refusal the full answer
// would: NOTAUTH with the TSIG error, still truncated.
func TestSlipToSignedQueryIsSigned(t *testing.T) {
	s := slipServer(t)
	const key = "xfr.ringlb.test."
	slips, signedOK := 0, 0
	for range 6 {
		q, mac := signedQuery(t, "www.ringlb.test.", dns.TypeA, key, dns.HmacSHA256, testTSIGSecret, time.Now().Unix())
		p := exchangeFrom(t, s, "udp", "127.0.0.9", q)
		r := new(dns.Msg)
		if err := r.Unpack(p); err != nil {
			t.Fatal(err)
		}
		if !r.Truncated {
			continue
		}
		slips++
		ts := r.IsTsig()
		if ts == nil || ts.Error != 0 {
			t.Errorf("slip to a signed query: TSIG %v, want one signed with %s", ts, key)
			continue
		}
		if err := dns.TsigVerify(p, testTSIGSecret, mac, false); err != nil {
			t.Errorf("slip's TSIG does not verify: %v", err)
			continue
		}
		if r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer)+len(r.Ns) != 0 {
			t.Errorf("signed slip: %v", r)
			continue
		}
		signedOK++
	}
	t.Logf("slips to signed queries: %d, signed with the query's key and verifying: %d", slips, signedOK)
	if slips == 0 {
		t.Fatal("no slip in 6 queries over a limit of 1 a second")
	}

	// The client's retry over TCP, signed, is answered and verified by a
	// miekg/dns client holding the key.
	m := question("www.ringlb.test.", dns.TypeA, 0)
	m.SetTsig(key, dns.HmacSHA256, 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second, TsigSecret: map[string]string{key: testTSIGSecret}}
	c.Dialer = &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}}
	if r, _, err := c.Exchange(m, s.Addr()); err != nil || r.IsTsig() == nil || len(r.Answer) != 1 {
		t.Fatalf("retry over TCP: %v, %v", r, err)
	}

	// A wrong MAC: the slip is the refusal, NOTAUTH and BADSIG, unsigned.
	wrongSecret := "d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldA=="
	bad := 0
	for range 4 {
		q, _ := signedQuery(t, "www.ringlb.test.", dns.TypeA, key, dns.HmacSHA256, wrongSecret, time.Now().Unix())
		r := new(dns.Msg)
		if err := r.Unpack(exchangeFrom(t, s, "udp", "127.0.0.10", q)); err != nil {
			t.Fatal(err)
		}
		if !r.Truncated {
			continue
		}
		bad++
		if ts := r.IsTsig(); r.Rcode != dns.RcodeNotAuth || r.Authoritative || ts == nil || ts.Error != dns.RcodeBadSig || ts.MAC != "" {
			t.Errorf("slip to a query with a wrong MAC: %s, AA %v, TSIG %v; want NOTAUTH, BADSIG, unsigned", dns.RcodeToString[r.Rcode], r.Authoritative, ts)
		}
	}
	if bad == 0 {
		t.Fatal("no slip to the queries with a wrong MAC")
	}
}

// Packets too short for a header, over the rate limit, are dropped, not
// read past their end: the slip's check of the header came after the
// header was read (FuzzUDPHandle found it: a 1-byte packet over the limit
// ended the UDP loop with a panic).
func TestSlipOfAShortPacket(t *testing.T) {
	cfg := fuzzConfig(t)
	slip := 1
	cfg.RateLimit.ResponsesPerSecond = new(1)
	cfg.RateLimit.Slip = &slip
	s, err := New(cfg, "test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	l := newUDPLoop(s, conn, nil)
	to := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	for _, p := range [][]byte{{'1'}, {'1'}, make([]byte, 11), {0, 1, 0, 0, 0, 1}} {
		l.handle(p, to)
	}
}

// A slip, and the look for a malformed Client Subnet option, allocate
// nothing: RRL's slips are what a reflection flood costs the server.
func TestSlipAllocatesNothing(t *testing.T) {
	ksk, zsk := testKeys(t)
	s, err := New(signed(fuzzConfig(t), ksk, zsk), "test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := s.state.Load()
	buf := make([]byte, 0, 512)
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"WWW.ringlb.test.", dns.TypeRRSIG}, {"example.org.", dns.TypeRRSIG}, {"host.DELEG.ringlb.test.", dns.TypeA}} {
		name := q.name
		m := new(dns.Msg)
		m.SetQuestion(name, q.qtype)
		ecs("10.2.3.4", 24)(m)
		pkt, _ := m.Pack()
		if n := testing.AllocsPerRun(100, func() {
			_, tsig, ok := st.slipReply(buf[:0], pkt)
			if at, _ := rawFaults(pkt); !ok || tsig || at != 0 {
				t.Fatal("slip")
			}
		}); n != 0 {
			t.Errorf("%s: a slip allocates %v times", name, n)
		}
	}
}

// fullThenSlips sends q from src to s (slipServer: a limit of 1 a second)
// once for its full answer, then 4 times more: the full answer, and the
// slips among the four (a reply without TC is one a token came back for
// meanwhile). It fails the test when none is a slip.
func fullThenSlips(t *testing.T, s *Server, src string, q []byte) (*dns.Msg, []*dns.Msg) {
	t.Helper()
	full := new(dns.Msg)
	if err := full.Unpack(exchangeFrom(t, s, "udp", src, q)); err != nil {
		t.Fatal(err)
	}
	var slips []*dns.Msg
	for range 4 {
		r := new(dns.Msg)
		if err := r.Unpack(exchangeFrom(t, s, "udp", src, q)); err != nil {
			t.Fatal(err)
		}
		if r.Truncated {
			slips = append(slips, r)
		}
	}
	if len(slips) == 0 {
		t.Fatal("no slip in 4 queries over a limit of 1 a second")
	}
	return full, slips
}
