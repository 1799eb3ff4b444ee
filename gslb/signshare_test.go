package gslb

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// One TCP client asking for more new signatures than the budget must not
// starve the others: it is held to its network's share of the TCP signing
// budget, and a second client still gets signed answers meanwhile. Client A
// pipelines 300 queries for names never asked before (each a new NSEC to
// sign) from 127.0.0.2 over three connections, claiming 127.0.0.3 in EDNS
// Client Subnet (which must not make it B); once A is refused, B asks for 10
// new names from 127.0.0.3. rate_limit.ipv4_prefix is 32 so that the two
// loopback sources are two networks, as RRL would count them. The test
// clock stands still: no bucket refills while it runs.
func TestFreshSignaturesSharedOverTCP(t *testing.T) {
	ksk, zsk := testKeys(t)
	cfg := signed(fuzzConfig(t), ksk, zsk)
	cfg.Zones[0].DNSSEC.SignaturesPerSecond = 100
	cfg.RateLimit.IPv4Prefix = 32
	s, clock := startTCPSigner(t, cfg)
	keys := dnskeys(t, s)
	signedBefore := counterValue(t, s, "ringlb_gslb_signatures_total", "from", "signed")
	refusedNow := func() float64 {
		return counterValue(t, s, "ringlb_gslb_signatures_total", "from", "refused") +
			counterValue(t, s, "ringlb_gslb_signatures_total", "from", "client_share")
	}

	const conns, perConn = 3, 100
	var mu sync.Mutex
	aSigned, aRefused := 0, 0
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for c := range conns {
		wg.Go(func() {
			n, refused, err := pipeline(s.Addr(), "127.0.0.2", "127.0.0.3", fmt.Sprintf("a%d", c), perConn)
			mu.Lock()
			aSigned, aRefused = aSigned+n, aRefused+refused
			mu.Unlock()
			if err != nil {
				errs <- err
			}
		})
	}
	// B asks once A is beyond what it may have.
	waitFor(t, "client A refused a signature", func() bool { return refusedNow() > 0 })
	bSigned, bRefused := 0, 0
	client := &dns.Client{Net: "tcp", Timeout: 10 * time.Second,
		Dialer: &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}}}
	conn, err := client.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const bQueries = 10
	for i := range bQueries {
		m, _, err := client.ExchangeWithConn(doQuestion(fmt.Sprintf("b%03d.nope.ringlb.test.", i)), conn)
		if err != nil {
			t.Fatalf("B's query %d: %v", i, err)
		}
		switch {
		case m.Rcode == dns.RcodeServerFailure:
			bRefused++
		case nsecOf(m) != nil:
			checkSigned(t, m, keys)
			bSigned++
		default:
			t.Fatalf("B's query %d: %v", i, m)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	made := counterValue(t, s, "ringlb_gslb_signatures_total", "from", "signed") - signedBefore
	t.Logf("A: %d queries for new names over TCP, %d signed, %d SERVFAIL; B: %d of %d signed, %d SERVFAIL; %.0f new signatures in all (budget 100)",
		conns*perConn, aSigned, aRefused, bSigned, bQueries, bRefused, made)
	if bSigned != bQueries {
		t.Errorf("B got %d of %d answers signed (%d SERVFAIL) while A flooded", bSigned, bQueries, bRefused)
	}
	if aSigned > 100/4 {
		t.Errorf("A got %d new signatures, more than its network's share (25 of 100)", aSigned)
	}
	if made > 100 {
		t.Errorf("%.0f new signatures over TCP, budget 100", made)
	}
	if got := counterValue(t, s, "ringlb_gslb_signatures_total", "from", "client_share"); got != float64(aRefused) {
		t.Errorf("client_share counted %g, A was refused %d", got, aRefused)
	}
	// A second later A's share has refilled: it is held to a rate, not shut out.
	clock.add(time.Second)
	m := queryFrom(t, s, "tcp", "127.0.0.2", "later.nope.ringlb.test.", dns.TypeA, withDO(false))
	if nsecOf(m) == nil {
		t.Fatalf("A over TCP once its share refilled: %v", m)
	}
	checkSigned(t, m, keys)
}

// pipeline sends n queries with DO for new names under prefix over one TCP
// connection from src, all written before the answers are read (with ECS
// claiming ecs), and counts the signed and the SERVFAIL answers.
func pipeline(addr, src, ecs, prefix string, n int) (signed, refused int, err error) {
	d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return 0, 0, err
	}
	conn := &dns.Conn{Conn: nc}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	var writeErr error
	var wg sync.WaitGroup
	defer func() {
		conn.Close() // ends the writer's blocked write, if any
		wg.Wait()
		if err == nil {
			err = writeErr
		}
	}()
	wg.Go(func() {
		for i := range n {
			q := doQuestion(fmt.Sprintf("%s-%03d.nope.ringlb.test.", prefix, i))
			q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 32, Address: net.ParseIP(ecs).To4()})
			if writeErr = conn.WriteMsg(q); writeErr != nil {
				return
			}
		}
	})
	for range n {
		m, err := conn.ReadMsg()
		if err != nil {
			return signed, refused, err
		}
		switch {
		case m.Rcode == dns.RcodeServerFailure && len(m.Answer)+len(m.Ns) == 0:
			refused++
		case nsecOf(m) != nil:
			signed++
		default:
			return signed, refused, fmt.Errorf("from %s: %v", src, m)
		}
	}
	return signed, refused, nil
}

// The share counts client networks as RRL does (IPv6 by /56 here), is
// given back when the shared budget had no signature for the client, and
// is off at tcp_client_share 1.
func TestTCPClientShareRules(t *testing.T) {
	ksk, zsk := testKeys(t)
	cfg := configs.DefaultDNSSEC(ksk, zsk)
	cfg.SignaturesPerSecond, cfg.TCPClientShare = 10, 0.5 // 5 a network
	nets := configs.RateLimit{IPv4Prefix: 24, IPv6Prefix: 56}
	sg, err := newSigner("ringlb.test.", cfg, nets)
	if err != nil {
		t.Fatal(err)
	}
	clock := newTestClock()
	sg.now, sg.tcpPatience = clock.now, time.Millisecond
	n := 0
	sign := func(client string) error {
		n++ // a new RRset every time: never from the cache
		a := &dns.A{Hdr: dns.RR_Header{Name: "ide.ringlb.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: uint32(n)}, A: net.IPv4(192, 0, 2, 1)}
		_, err := sg.sigs([]dns.RR{a}, spendTCP, netip.MustParseAddr(client))
		return err
	}
	for i := range 5 {
		// One /56, two addresses.
		if err := sign([]string{"2001:db8:0:1::1", "2001:db8:0:2::1"}[i%2]); err != nil {
			t.Fatalf("signature %d within the share: %v", i, err)
		}
	}
	if err := sign("2001:db8:0:3::1"); !errors.Is(err, errSignShareTCP) {
		t.Errorf("a sixth signature for the same /56: %v, want the share refused", err)
	}
	for i := range 5 {
		if err := sign("2001:db8:1::1"); err != nil {
			t.Fatalf("another /56's signature %d: %v", i, err)
		}
	}
	// The budget of 10 is spent; a third network waits for it in vain,
	// and each time gets its token back.
	for i := range 8 {
		if err := sign("192.0.2.1"); !errors.Is(err, errSignBudgetTCP) {
			t.Fatalf("attempt %d with the budget spent: %v, want the budget refused (the share given back)", i, err)
		}
	}
	clock.add(time.Second)
	for i := range 5 {
		if err := sign("192.0.2.200"); err != nil { // the same /24
			t.Fatalf("signature %d after a second: %v", i, err)
		}
	}

	cfg.TCPClientShare = 1
	whole, err := newSigner("ringlb.test.", cfg, nets)
	if err != nil {
		t.Fatal(err)
	}
	if whole.tcpShare != nil {
		t.Error("tcp_client_share 1 keeps a table of shares")
	}
}
