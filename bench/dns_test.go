package bench

import (
	"math"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// closedPort is a loopback address nothing listens on (TCP or UDP).
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// A DNS run against a server that is not there says so. Before, over TCP
// every client's dial failed silently ("0 queries, 0 answered, 0 lost",
// exit 0, nothing saying why), and over UDP every client's refusal was an
// rcode of its own, named with the client's ephemeral port (one entry per
// client in the summary).
func TestDNSBenchAgainstNoServer(t *testing.T) {
	addr := closedPort(t)
	res, err := RunDNS(t.Context(), DNSOptions{Server: addr, TCP: true, Clients: 4, Duration: 5 * time.Second}, nil)
	if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("over TCP to %s (nothing listening): %v, %+v; want an error naming the server and the refusal", addr, err, res)
	}

	res, err = RunDNS(t.Context(), DNSOptions{Server: addr, Clients: 8, Duration: 300 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Answered != 0 || res.Lost == 0 || len(res.Rcodes) != 1 {
		t.Errorf("over UDP to %s (nothing listening): %s; want every query lost, counted under one error", addr, res.Summary())
	}
	for k := range res.Rcodes {
		if strings.Contains(k, "127.0.0.1:") {
			t.Errorf("the error %q names a client's address", k)
		}
	}
}

// The latency percentiles of a DNS run sample the whole run, as `bench ws`
// does (a reservoir). Before, each client kept its first 20,000 answers
// only: of a long run, the percentiles were those of its first seconds.
// The server here answers its first 20,000 queries at once and every later
// one after a pause of at least slow: the later ones are the run's
// majority, so its median is at least slow.
func TestDNSLatencySamplesTheWholeRun(t *testing.T) {
	if testing.Short() {
		t.Skip("about 40,000 queries, most of them paced; skipped with -short")
	}
	const fast, total = 20000, 41000
	const slow = 100 * time.Microsecond
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if n.Add(1) > fast {
			time.Sleep(slow)
		}
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNameError)
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	res, err := RunDNS(t.Context(), DNSOptions{Server: pc.LocalAddr().String(), Clients: 1, Duration: 5 * time.Minute, MaxQueries: total}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Summary())
	if res.Answered < total-100 {
		t.Fatalf("answered %d of %d", res.Answered, total)
	}
	if res.Latency.P50 < slow {
		t.Errorf("p50 %s: the sample is the run's first %d answers (faster than %s), not the whole run", res.Latency.P50, fast, slow)
	}
}

// Over TCP, a client whose connection the server closed (many close after
// some queries: miekg/dns's default is 128, CoreDNS's) opens another, as
// dnsperf does. Before, it kept writing to the closed connection: every
// later query an instant "EOF", the run's QPS the first few queries of each
// client and the rest counted lost.
func TestDNSBenchReconnectsOverTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: ln, MaxTCPQueries: 8, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNameError)
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	res, err := RunDNS(t.Context(), DNSOptions{Server: ln.Addr().String(), TCP: true, Clients: 2, Duration: time.Minute, MaxQueries: 100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Summary())
	if res.Answered != 100 || res.Lost != 0 {
		t.Errorf("100 queries over connections the server closes after 8: %s", res.Summary())
	}
}

// A run's QPS is its answers over the time it sent queries, as dnsperf
// counts it: not over that time plus the wait for the queries lost at its
// end. The server here answers the first 200 queries and no other, so
// every client ends the run waiting out a query's timeout (three times
// the run's duration). Before, the QPS was 200 over about three seconds,
// a third of what the server answered while the run sent.
func TestDNSQPSIsOverTheSendingWindow(t *testing.T) {
	const answerFirst = 200
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if n.Add(1) > answerFirst {
			return // lost
		}
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNameError)
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	o := DNSOptions{Server: pc.LocalAddr().String(), Clients: 2, Duration: time.Second, Timeout: 3 * time.Second}
	res, err := RunDNS(t.Context(), o, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Summary())
	if res.Answered != answerFirst {
		t.Fatalf("answered %d, want the %d the server answers", res.Answered, answerFirst)
	}
	if want := answerFirst / o.Duration.Seconds(); math.Abs(res.QPS-want) > 1e-9*want {
		t.Errorf("QPS %.1f, want %.1f: %d answers over the %s the run sent", res.QPS, want, answerFirst, o.Duration)
	}
}
