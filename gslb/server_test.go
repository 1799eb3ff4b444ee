package gslb

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// member is a regional balancer stand-in: its health endpoint can be turned
// off, and closed for good.
type fakeBalancer struct {
	srv     *httptest.Server
	healthy atomic.Bool
}

func newFakeBalancer(t *testing.T) *fakeBalancer {
	f := &fakeBalancer{}
	f.healthy.Store(true)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !f.healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeBalancer) addr() string { return strings.TrimPrefix(f.srv.URL, "http://") }

// gslbConfig is the demo-like config: zone ringlb.test from testdata, managed
// name ide.ringlb.test with east (127.0.0.1/32) and west (127.0.0.2/32).
func gslbConfig(t *testing.T, east, west *fakeBalancer, extra string) configs.GSLB {
	t.Helper()
	return parseGSLB(t, extra, east.addr(), west.addr())
}

func parseGSLB(t testing.TB, extra, eastProbe, westProbe string) configs.GSLB {
	t.Helper()
	// RRL off: tests ask from one address far faster than its default
	// rate; the tests of RRL turn it on.
	return parseGSLBYAML(t, gslbYAML("  rate_limit: { responses_per_second: 0 }\n", extra, eastProbe, westProbe))
}

// gslbYAML is parseGSLB's gslb section, with rateLimit's lines (none: the
// defaults).
func gslbYAML(rateLimit, extra, eastProbe, westProbe string) string {
	return fmt.Sprintf(`gslb:
  listen: 127.0.0.1:0
%s  zones: [ { origin: ringlb.test, file: testdata/ringlb.test.zone } ]
  monitors:
    bal: { type: http, interval: 1s, timeout: 1s, rise: 2, fall: 4, jitter: 0.01 }
  names:
    - name: ide.ringlb.test
      ttl: 30
      failover_ttl: 5
      geo: { east: [127.0.0.1/32, 10.1.0.0/16], west: [127.0.0.2/32, 10.2.0.0/16] }
      default_region: east
%s      regions:
        east: { monitor: bal, failover: [west], members: [ { name: bal-1, address: 192.0.2.1, probe: %q } ] }
        west: { monitor: bal, failover: [east], members: [ { name: bal-2, address: 192.0.2.2, probe: %q } ] }
`, rateLimit, extra, eastProbe, westProbe)
}

// tcpCheckedYAML is gslbYAML with both regions' members checked by TCP
// connects, every 50 ms, at a listener of the test's that accepts and
// closes: members that rise in a tenth of a second.
func tcpCheckedYAML(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	y := gslbYAML("", "", ln.Addr().String(), ln.Addr().String())
	return strings.Replace(y, "bal: { type: http, interval: 1s, timeout: 1s, rise: 2, fall: 4, jitter: 0.01 }", "bal: { type: tcp, port: 80, interval: 50ms, timeout: 50ms, rise: 2, fall: 2 }", 1)
}

func parseGSLBYAML(t testing.TB, y string) configs.GSLB {
	t.Helper()
	// Only the gslb section is used; gossip on loopback needs no key.
	cfg, err := configs.Parse("gslb.yaml", []byte("cluster: { bind: 127.0.0.1:0 }\n"+y))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.GSLB
}

func startGSLB(t *testing.T, cfg configs.GSLB) *Server {
	t.Helper()
	return startGSLBWith(t, cfg, nil)
}

// startGSLBWith is startGSLB with prepare run on the server before it starts.
func startGSLBWith(t *testing.T, cfg configs.GSLB, prepare func(*Server)) *Server {
	t.Helper()
	return startGSLBLogging(t, cfg, nil, prepare)
}

// startGSLBLogging is startGSLBWith with the server's log going to logger
// (nil: discarded).
func startGSLBLogging(t *testing.T, cfg configs.GSLB, logger *slog.Logger, prepare func(*Server)) *Server {
	t.Helper()
	s, err := New(cfg, "gslb-test", logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(s)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s
}

func query(t *testing.T, s *Server, net, name string, qtype uint16, edit func(*dns.Msg)) *dns.Msg {
	t.Helper()
	return queryFrom(t, s, net, "127.0.0.1", name, qtype, edit)
}

func queryFrom(t *testing.T, s *Server, network, src, name string, qtype uint16, edit func(*dns.Msg)) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edit != nil {
		edit(m)
	}
	c := &dns.Client{Net: network, Timeout: 5 * time.Second, Dialer: &net.Dialer{Timeout: 5 * time.Second}}
	if src != "" {
		if network == "tcp" {
			c.Dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		} else {
			c.Dialer.LocalAddr = &net.UDPAddr{IP: net.ParseIP(src)}
		}
	}
	r, _, err := c.Exchange(m, s.Addr())
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return r
}

func TestAuthoritative(t *testing.T) {
	s := startGSLB(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""))
	tests := []struct {
		name      string
		qname     string
		qtype     uint16
		rcode     int
		answers   int
		authority uint16 // type expected in authority, 0 for none
		check     func(*dns.Msg) string
	}{
		{"A", "www.ringlb.test.", dns.TypeA, dns.RcodeSuccess, 1, 0, nil},
		{"AAAA", "www.ringlb.test.", dns.TypeAAAA, dns.RcodeSuccess, 1, 0, nil},
		{"MX", "ringlb.test.", dns.TypeMX, dns.RcodeSuccess, 1, 0, nil},
		{"SRV", "_ide._tcp.ringlb.test.", dns.TypeSRV, dns.RcodeSuccess, 1, 0, nil},
		{"CAA", "ringlb.test.", dns.TypeCAA, dns.RcodeSuccess, 1, 0, nil},
		{"PTR", "1.ringlb.test.", dns.TypePTR, dns.RcodeSuccess, 1, 0, nil},
		{"NS", "ringlb.test.", dns.TypeNS, dns.RcodeSuccess, 1, 0, nil},
		{"SOA", "ringlb.test.", dns.TypeSOA, dns.RcodeSuccess, 1, 0, nil},
		{"NXDOMAIN", "nope.ringlb.test.", dns.TypeA, dns.RcodeNameError, 0, dns.TypeSOA, nil},
		{"NODATA", "mail.ringlb.test.", dns.TypeTXT, dns.RcodeSuccess, 0, dns.TypeSOA, nil},
		{"empty non-terminal", "sub.ringlb.test.", dns.TypeA, dns.RcodeSuccess, 0, dns.TypeSOA, nil},
		{"CNAME chased", "alias2.ringlb.test.", dns.TypeA, dns.RcodeSuccess, 3, 0, func(m *dns.Msg) string {
			if m.Answer[0].Header().Rrtype != dns.TypeCNAME || m.Answer[2].(*dns.A).A.String() != "192.0.2.80" {
				return fmt.Sprint(m.Answer)
			}
			return ""
		}},
		{"CNAME out of zone", "away.ringlb.test.", dns.TypeA, dns.RcodeSuccess, 1, 0, nil},
		{"wildcard", "x.wild.ringlb.test.", dns.TypeA, dns.RcodeSuccess, 1, 0, func(m *dns.Msg) string {
			if m.Answer[0].Header().Name != "x.wild.ringlb.test." {
				return "wildcard answer not renamed: " + m.Answer[0].Header().Name
			}
			return ""
		}},
		{"ANY minimal", "www.ringlb.test.", dns.TypeANY, dns.RcodeSuccess, 1, 0, func(m *dns.Msg) string {
			if h, ok := m.Answer[0].(*dns.HINFO); !ok || h.Cpu != "RFC8482" {
				return fmt.Sprint(m.Answer)
			}
			return ""
		}},
		{"REFUSED", "example.com.", dns.TypeA, dns.RcodeRefused, 0, 0, nil},
		{"case preserved", "WwW.RiNgLb.TeSt.", dns.TypeA, dns.RcodeSuccess, 1, 0, func(m *dns.Msg) string {
			if m.Question[0].Name != "WwW.RiNgLb.TeSt." {
				return "question not echoed as asked: " + m.Question[0].Name
			}
			return ""
		}},
	}
	for _, tt := range tests {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tt.name+"/"+network, func(t *testing.T) {
				m := query(t, s, network, tt.qname, tt.qtype, func(m *dns.Msg) { m.RecursionDesired = true })
				if m.Rcode != tt.rcode || len(m.Answer) != tt.answers {
					t.Fatalf("rcode %s, %d answers; want %s, %d\n%v", dns.RcodeToString[m.Rcode], len(m.Answer), dns.RcodeToString[tt.rcode], tt.answers, m)
				}
				if tt.rcode != dns.RcodeRefused && !m.Authoritative {
					t.Error("AA not set")
				}
				if m.RecursionAvailable {
					t.Error("RA set")
				}
				if tt.authority != 0 && (len(m.Ns) != 1 || m.Ns[0].Header().Rrtype != tt.authority) {
					t.Errorf("authority %v, want one %s", m.Ns, dns.TypeToString[tt.authority])
				}
				if tt.check != nil {
					if msg := tt.check(m); msg != "" {
						t.Error(msg)
					}
				}
			})
		}
	}
}

func TestEDNSAndTruncation(t *testing.T) {
	s := startGSLB(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""))
	// Six 100-byte TXT records do not fit 512 bytes: TC over UDP...
	m := query(t, s, "udp", "big.ringlb.test.", dns.TypeTXT, nil)
	if !m.Truncated || len(m.Answer) == 6 {
		t.Fatalf("plain UDP: TC %v with %d answers", m.Truncated, len(m.Answer))
	}
	// ...then the client retries over TCP and gets everything.
	if m := query(t, s, "tcp", "big.ringlb.test.", dns.TypeTXT, nil); m.Truncated || len(m.Answer) != 6 {
		t.Fatalf("TCP retry: TC %v with %d answers", m.Truncated, len(m.Answer))
	}
	// With EDNS0 and a 4096-byte buffer it fits over UDP, and the OPT comes back.
	m = query(t, s, "udp", "big.ringlb.test.", dns.TypeTXT, func(m *dns.Msg) { m.SetEdns0(4096, false) })
	if m.Truncated || len(m.Answer) != 6 || m.IsEdns0() == nil {
		t.Fatalf("EDNS 4096: TC %v, %d answers, OPT %v", m.Truncated, len(m.Answer), m.IsEdns0())
	}
	// EDNS version 1: BADVERS.
	m = query(t, s, "udp", "www.ringlb.test.", dns.TypeA, func(m *dns.Msg) {
		m.SetEdns0(4096, false)
		m.IsEdns0().SetVersion(1)
	})
	if m.Rcode != dns.RcodeBadVers {
		t.Fatalf("EDNS version 1: rcode %s, want BADVERS", dns.RcodeToString[m.Rcode])
	}
	// Two questions: FORMERR.
	m = query(t, s, "udp", "www.ringlb.test.", dns.TypeA, func(m *dns.Msg) {
		m.Question = append(m.Question, dns.Question{Name: "mail.ringlb.test.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	})
	if m.Rcode != dns.RcodeFormatError {
		t.Fatalf("two questions: rcode %s, want FORMERR", dns.RcodeToString[m.Rcode])
	}
}

// Garbage that is not a DNS query gets no answer at all; the server keeps
// answering real queries.
func TestGarbageIgnored(t *testing.T) {
	s := startGSLB(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""))
	c, err := net.Dial("udp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, junk := range [][]byte{{1, 2, 3}, []byte("GET / HTTP/1.1\r\n\r\n"), make([]byte, 11)} {
		c.Write(junk)
	}
	resp := new(dns.Msg)
	resp.SetQuestion("www.ringlb.test.", dns.TypeA)
	resp.Response = true // a response: never answered (no reflection loops)
	b, _ := resp.Pack()
	c.Write(b)
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 512)
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("answered garbage with %d bytes", n)
	}
	if m := query(t, s, "udp", "www.ringlb.test.", dns.TypeA, nil); len(m.Answer) != 1 {
		t.Fatal("no longer answering")
	}
}

func answerIPs(m *dns.Msg) string {
	var out []string
	for _, rr := range m.Answer {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, v.A.String())
		case *dns.AAAA:
			out = append(out, v.AAAA.String())
		}
	}
	return strings.Join(out, ",")
}

func ecs(addr string, bits uint8) func(*dns.Msg) {
	return func(m *dns.Msg) {
		m.SetEdns0(1232, false)
		ip := net.ParseIP(addr)
		family := uint16(1)
		if ip.To4() == nil {
			family = 2
		} else {
			ip = ip.To4()
		}
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: family, SourceNetmask: bits, Address: ip})
	}
}

func TestRegionsByAddressAndECS(t *testing.T) {
	s := startGSLB(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""))
	if got := answerIPs(queryFrom(t, s, "udp", "127.0.0.1", "ide.ringlb.test.", dns.TypeA, nil)); got != "192.0.2.1" {
		t.Errorf("from 127.0.0.1: %s, want east", got)
	}
	if got := answerIPs(queryFrom(t, s, "udp", "127.0.0.2", "ide.ringlb.test.", dns.TypeA, nil)); got != "192.0.2.2" {
		t.Errorf("from 127.0.0.2: %s, want west", got)
	}
	m := query(t, s, "udp", "IDE.ringlb.test.", dns.TypeA, ecs("10.2.3.0", 24))
	if got := answerIPs(m); got != "192.0.2.2" || m.Answer[0].Header().Ttl != 30 {
		t.Errorf("ECS 10.2.3.0/24: %s ttl %d, want west ttl 30", got, m.Answer[0].Header().Ttl)
	}
	var scope *dns.EDNS0_SUBNET
	for _, o := range m.IsEdns0().Option {
		if e, ok := o.(*dns.EDNS0_SUBNET); ok {
			scope = e
		}
	}
	if scope == nil || scope.SourceNetmask != 24 || scope.SourceScope != 16 {
		t.Errorf("ECS echo %+v, want source 24 scope 16 (the matched 10.2.0.0/16)", scope)
	}
	if m := query(t, s, "udp", "ide.ringlb.test.", dns.TypeAAAA, nil); len(m.Answer) != 0 || len(m.Ns) != 1 {
		t.Errorf("AAAA of an IPv4-only pool: %v, want NODATA", m)
	}
}

// waitAnswer polls until the answer for src is want (monitors act on their
// own schedule); it returns how long that took. Its bound is the tests'
// patience, not a few checks' worth: a failover of fall 4 one-second
// checks took 4 s of the 10 s it had on a busy machine.
func waitAnswer(t *testing.T, s *Server, src, want string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		m := queryFrom(t, s, "udp", src, "ide.ringlb.test.", dns.TypeA, nil)
		if m.Rcode == dns.RcodeSuccess && answerIPs(m) == want || want == "SERVFAIL" && m.Rcode == dns.RcodeServerFailure {
			return time.Since(start)
		}
		if time.Since(start) > healthtest.Patience {
			t.Fatalf("from %s: answer %s (%s), want %s", src, answerIPs(m), dns.RcodeToString[m.Rcode], want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFailoverAndRecovery(t *testing.T) {
	// Its own server and fake balancers (ports of their own) and no package
	// state: it waits on the monitor (a second a check), beside the others.
	t.Parallel()
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	s := startGSLB(t, gslbConfig(t, east, west, ""))
	waitAnswer(t, s, "127.0.0.1", "192.0.2.1")
	east.healthy.Store(false)
	took := waitAnswer(t, s, "127.0.0.1", "192.0.2.2")
	mon := s.state.Load().cfg.Monitors["bal"]
	t.Logf("east failed over to west %s after its monitor started failing (interval %s × fall %d)", took, mon.Interval.D(), mon.Fall)
	if m := queryFrom(t, s, "udp", "127.0.0.1", "ide.ringlb.test.", dns.TypeA, nil); m.Answer[0].Header().Ttl != 5 {
		t.Errorf("failover TTL %d, want failover_ttl 5", m.Answer[0].Header().Ttl)
	}
	east.healthy.Store(true)
	waitAnswer(t, s, "127.0.0.1", "192.0.2.1")
	// Both down: serve_all (default) answers the region's own members.
	east.healthy.Store(false)
	west.healthy.Store(false)
	waitAnswer(t, s, "127.0.0.2", "192.0.2.2")
	m := queryFrom(t, s, "udp", "127.0.0.1", "ide.ringlb.test.", dns.TypeA, nil)
	if answerIPs(m) != "192.0.2.1" {
		t.Errorf("all down, serve_all: %s", answerIPs(m))
	}
}

func TestAllDownServfail(t *testing.T) {
	// Its own server and fake balancers (ports of their own) and no package
	// state: it waits on the monitor (a second a check), beside the others.
	t.Parallel()
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	s := startGSLB(t, gslbConfig(t, east, west, "      all_down: servfail\n"))
	east.healthy.Store(false)
	west.healthy.Store(false)
	waitAnswer(t, s, "127.0.0.1", "SERVFAIL")
}

func TestManualRecoverAndServeModes(t *testing.T) {
	// Its own server and fake balancers (ports of their own) and no package
	// state: it waits on the monitor (a second a check), beside the others.
	t.Parallel()
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	s := startGSLB(t, gslbConfig(t, east, west, "      auto_recover: false\n"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.ServeAdmin(ln)
	admin := "http://" + ln.Addr().String()
	post := func(path string) int {
		req, _ := http.NewRequest(http.MethodPost, admin+path, nil)
		req.Header.Set(configs.HeaderAdmin, "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	east.healthy.Store(false)
	waitAnswer(t, s, "127.0.0.1", "192.0.2.2")
	east.healthy.Store(true)
	// auto_recover off: east stays failed over although healthy...
	for range 20 {
		if got := answerIPs(queryFrom(t, s, "udp", "127.0.0.1", "ide.ringlb.test.", dns.TypeA, nil)); got != "192.0.2.2" {
			if up, _ := s.state.Load().pools.names["ide.ringlb.test."].regions["east"].members[0].prober.Up(); up {
				t.Fatalf("recovered without the operator: %s", got)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	// ...until the operator recovers it, once its monitor says it is up
	// again (a recover while it is down would not hold).
	waitFor(t, "east's monitor up again", func() bool {
		up, _ := s.state.Load().pools.names["ide.ringlb.test."].regions["east"].members[0].prober.Up()
		return up
	})
	if code := post("/api/pools/ide.ringlb.test/east/recover"); code != 200 {
		t.Fatalf("recover: %d", code)
	}
	waitAnswer(t, s, "127.0.0.1", "192.0.2.1")

	// Serve modes through the admin API: remove → east fails over; always →
	// served although its monitor fails; clearing the override → obey.
	if code := post("/api/pools/ide.ringlb.test/east/bal-1/mode?mode=remove"); code != 200 {
		t.Fatalf("override: %d", code)
	}
	waitAnswer(t, s, "127.0.0.1", "192.0.2.2")
	post("/api/pools/ide.ringlb.test/east/recover")
	post("/api/pools/ide.ringlb.test/east/bal-1/mode?mode=always")
	post("/api/pools/ide.ringlb.test/east/recover")
	east.healthy.Store(false)
	waitAnswer(t, s, "127.0.0.1", "192.0.2.1")
	// no: neither served nor monitored.
	east.healthy.Store(true)
	post("/api/pools/ide.ringlb.test/east/bal-1/mode?mode=no")
	waitAnswer(t, s, "127.0.0.1", "192.0.2.2")
	post("/api/pools/ide.ringlb.test/east/bal-1/mode?mode=always")
	post("/api/pools/ide.ringlb.test/east/recover")
	waitAnswer(t, s, "127.0.0.1", "192.0.2.1")
	if code := post("/api/querylog?on=true"); code != 200 || !s.queryLog.Load() {
		t.Fatalf("query log switch: %d", code)
	}
	if code := post("/api/querylog?on=maybe"); code != 400 {
		t.Fatalf("query log switch with a bad value: %d", code)
	}
	query(t, s, "udp", "www.ringlb.test.", dns.TypeA, nil) // logged, by the full path
	post("/api/querylog?on=false")
	if code := post("/api/pools/ide.ringlb.test/east/bal-1/mode?mode=sometimes"); code != 400 {
		t.Fatalf("bad mode: %d, want 400", code)
	}
	resp, err := http.Get(admin + "/api/pools")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`"override": "always"`, `"member": "bal-1"`, `"why":`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/api/pools lacks %s:\n%s", want, body)
		}
	}
	resp, _ = http.Get(admin + "/metrics")
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"ringlb_gslb_queries_total{qtype=\"A\",rcode=\"NOERROR\"}", "ringlb_gslb_member_up{member=\"bal-1\"", "ringlb_gslb_failovers_total{name=\"ide.ringlb.test.\",region=\"east\"}"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestMaxAnswersDeterministic(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	cfg := gslbConfig(t, east, west, "      max_answers: 2\n")
	n := &cfg.Names[0]
	r := n.Regions["east"]
	r.ServeMode = configs.ServeAlways
	r.Members = nil
	for i := 1; i <= 5; i++ {
		r.Members = append(r.Members, configs.Member{Name: fmt.Sprintf("m%d", i), Address: fmt.Sprintf("192.0.2.%d", 10+i), ServeMode: configs.ServeAlways})
	}
	n.Regions["east"] = r
	s := startGSLB(t, cfg)
	seen := map[string]bool{}
	for _, subnet := range []string{"10.1.1.0", "10.1.2.0", "10.1.3.0", "10.1.4.0", "10.1.5.0"} {
		first := answerIPs(query(t, s, "udp", "ide.ringlb.test.", dns.TypeA, ecs(subnet, 24)))
		for range 3 {
			if again := answerIPs(query(t, s, "udp", "ide.ringlb.test.", dns.TypeA, ecs(subnet, 24))); again != first {
				t.Fatalf("client %s got %s then %s", subnet, first, again)
			}
		}
		if strings.Count(first, ",") != 1 {
			t.Fatalf("max_answers 2: %s", first)
		}
		seen[first] = true
	}
	if len(seen) < 2 {
		t.Errorf("every client got the same pair %v", seen)
	}
}

// Reload under query load: not one query is lost or refused.
func TestReloadLosesNoQuery(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	cfg := gslbConfig(t, east, west, "")
	s := startGSLB(t, cfg)
	var sent, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
			m := new(dns.Msg)
			m.SetQuestion("ide.ringlb.test.", dns.TypeA)
			for {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				r, _, err := c.Exchange(m, s.Addr())
				if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
					failed.Add(1)
				}
			}
		}()
	}
	for i := range 10 {
		next := cfg
		next.Names = append([]configs.ManagedName(nil), cfg.Names...)
		next.Names[0].TTL = 30 + i
		if err := s.Reload(next); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d queries during 10 reloads, %d failed", sent.Load(), failed.Load())
	if failed.Load() != 0 || sent.Load() == 0 {
		t.Fatalf("%d of %d queries failed across reloads", failed.Load(), sent.Load())
	}
	if m := query(t, s, "udp", "ide.ringlb.test.", dns.TypeA, nil); m.Answer[0].Header().Ttl != 39 {
		t.Errorf("ttl after reloads %d, want 39", m.Answer[0].Header().Ttl)
	}
	bad := cfg
	bad.Listen = "127.0.0.1:1"
	if err := s.Reload(bad); err == nil {
		t.Error("reload with a new listen address accepted")
	}
}

func TestSerialBumpsOnAnswerChange(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	s := startGSLB(t, gslbConfig(t, east, west, ""))
	serial := func() uint32 { return query(t, s, "udp", "ringlb.test.", dns.TypeSOA, nil).Answer[0].(*dns.SOA).Serial }
	before := serial()
	east.healthy.Store(false)
	waitAnswer(t, s, "127.0.0.1", "192.0.2.2")
	deadline := time.Now().Add(5 * time.Second)
	for serial() <= before {
		if time.Now().After(deadline) {
			t.Fatalf("SOA serial still %d after a managed answer changed", before)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fuzzConfig has the same zone and pools, with members that are always
// served (no monitors run in fuzzing).
func fuzzConfig(tb testing.TB) configs.GSLB {
	cfg := parseGSLB(tb, "", "127.0.0.1:1", "127.0.0.1:1")
	for _, r := range []string{"east", "west"} {
		reg := cfg.Names[0].Regions[r]
		reg.Monitor = ""
		for i := range reg.Members {
			reg.Members[i].ServeMode = configs.ServeAlways
		}
		cfg.Names[0].Regions[r] = reg
	}
	return cfg
}

func BenchmarkAnswer(b *testing.B) {
	s, err := New(fuzzConfig(b), "bench", nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	st := s.state.Load()
	remote := &net.UDPAddr{IP: net.ParseIP("10.1.2.3"), Port: 5353}
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"ide.ringlb.test.", dns.TypeA}, {"www.ringlb.test.", dns.TypeA}, {"nope.ringlb.test.", dns.TypeA},
		{"ringlb.test.", dns.TypeMX}, {"ringlb.test.", dns.TypeNS}} {
		r := new(dns.Msg)
		r.SetQuestion(q.name, q.qtype)
		b.Run(benchLabel(q.name, q.qtype), func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 512)
			for b.Loop() {
				m := s.answer(st, r, remote, false, nil)
				if _, err := m.PackBuffer(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkUDPCacheHit is the UDP answer path for a repeated query: parse,
// cache lookup, patch, send.
func BenchmarkUDPCacheHit(b *testing.B) {
	b.Run("plain", func(b *testing.B) { benchmarkUDPCacheHit(b, fuzzConfig(b), "ide.ringlb.test.", 0, false) })
	b.Run("rrl", func(b *testing.B) {
		cfg := fuzzConfig(b)
		cfg.RateLimit.ResponsesPerSecond = new(10_000_000) // charged, never limited
		benchmarkUDPCacheHit(b, cfg, "ide.ringlb.test.", 0, false)
	})
	// With EDNS the key holds the buffer size as capped (udpLimit).
	b.Run("edns4096", func(b *testing.B) { benchmarkUDPCacheHit(b, fuzzConfig(b), "ide.ringlb.test.", 4096, false) })
	// A signed answer (DO) is cached packed too, signatures and all.
	b.Run("signed", func(b *testing.B) {
		ksk, zsk := testKeys(b)
		benchmarkUDPCacheHit(b, signed(fuzzConfig(b), ksk, zsk), "ide.ringlb.test.", 1232, true)
	})
	// A CNAME to a managed name: keyed by the region too, through the
	// loop's map of such names.
	b.Run("cname-to-managed", func(b *testing.B) {
		benchmarkUDPCacheHit(b, withCNAMEToManaged(fuzzConfig(b)), "app.ringlb.test.", 0, false)
	})
	// An answer with additional records (the MX target's address).
	b.Run("mx", func(b *testing.B) {
		benchmarkUDPCacheHitType(b, fuzzConfig(b), "ringlb.test.", dns.TypeMX, 1232, false)
	})
}

// benchLabel names a benchmark's query: its name below ringlb.test., its
// type when not A.
func benchLabel(name string, qtype uint16) string {
	label := strings.TrimSuffix(strings.TrimSuffix(name, "ringlb.test."), ".")
	if label == "" {
		label = "apex"
	}
	if qtype != dns.TypeA {
		label += "-" + strings.ToLower(dns.TypeToString[qtype])
	}
	return label
}

func benchmarkUDPCacheHit(b *testing.B, cfg configs.GSLB, qname string, udpSize uint16, do bool) {
	benchmarkUDPCacheHitType(b, cfg, qname, dns.TypeA, udpSize, do)
}

func benchmarkUDPCacheHitType(b *testing.B, cfg configs.GSLB, qname string, qtype uint16, udpSize uint16, do bool) {
	s, err := New(cfg, "bench", nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	go func() { // drain, so the sink's buffer never fills
		buf := make([]byte, 2048)
		for {
			if _, _, err := sink.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
		}
	}()
	l := newUDPLoop(s, conn, nil)
	m := question(qname, qtype, udpSize)
	if do {
		m.IsEdns0().SetDo()
	}
	pkt, _ := m.Pack()
	to := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	l.handle(pkt, to) // fill the cache
	b.ReportAllocs()
	for b.Loop() {
		l.handle(pkt, to)
	}
}

// A member whose listener dies (connection refused, not a 503) is taken out
// by its refused checks, and comes back once it listens again. How long the
// failover took is logged, not asserted: on a busy machine a check can be
// late by any amount, which says nothing about the monitor.
func TestFailoverWhenMemberDies(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	serve := func(ln net.Listener) *http.Server {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
		go srv.Serve(ln)
		return srv
	}
	srv := serve(ln)
	west := newFakeBalancer(t)
	cfg := parseGSLB(t, "", addr, west.addr())
	mon := cfg.Monitors["bal"]
	mon.Interval, mon.Timeout, mon.Fall, mon.Rise = configs.Duration(250*time.Millisecond), configs.Duration(200*time.Millisecond), 2, 2
	cfg.Monitors = map[string]configs.Monitor{"bal": mon}
	s := startGSLB(t, cfg)
	waitAnswer(t, s, "127.0.0.1", "192.0.2.1")
	srv.Close() // the member dies: its port refuses connections
	took := waitAnswer(t, s, "127.0.0.1", "192.0.2.2")
	bound := time.Duration(mon.Fall)*mon.Interval.D() + time.Second
	t.Logf("answer changed %s after the member's listener closed (interval %s × fall %d, target interval × fall + 1 s = %s)", took, mon.Interval.D(), mon.Fall, bound)
	if up, why := s.state.Load().pools.names["ide.ringlb.test."].regions["east"].members[0].prober.Up(); up || !strings.Contains(why, "connection refused") {
		t.Errorf("east's member after failover: up %v, why %q; want down by its refused connections", up, why)
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again to test recovery: %v", addr, err)
	}
	srv = serve(ln)
	defer srv.Close()
	took = waitAnswer(t, s, "127.0.0.1", "192.0.2.1")
	t.Logf("back %s after it listened again (rise %d)", took, mon.Rise)
}

// gslb.udp_workers sets the number of UDP sockets (and loops) on the port;
// changing it needs a restart, which a reload says.
func TestUDPWorkers(t *testing.T) {
	cfg := parseGSLB(t, "", "127.0.0.1:1", "127.0.0.1:1")
	cfg.UDPWorkers = 1
	s := startGSLB(t, cfg)
	s.mu.Lock()
	n := len(s.udp)
	s.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d UDP sockets, want 1", n)
	}
	if r := query(t, s, "udp", "ringlb.test.", dns.TypeSOA, nil); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("SOA over the one worker: %s", dns.RcodeToString[r.Rcode])
	}
	cfg.UDPWorkers = 2
	if err := s.Reload(cfg); err == nil || !strings.Contains(err.Error(), "gslb.udp_workers") {
		t.Fatalf("reload changing udp_workers: %v, want a restart-needed error", err)
	}
}
