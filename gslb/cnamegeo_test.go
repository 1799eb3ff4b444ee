package gslb

import (
	"fmt"
	"net"
	"slices"
	"testing"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// cnameToManaged is the test config with ringlb.test's records inline and
// one more: app, a CNAME to the managed name ide (as the demo's www is).
// One UDP loop, so that every query meets the same answer cache.
func cnameToManagedConfig(t *testing.T, extra string) *Server {
	t.Helper()
	return cnameToManagedConfig2(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), extra))
}

func cnameToManagedConfig2(t *testing.T, cfg configs.GSLB) *Server {
	t.Helper()
	cfg.UDPWorkers = 1
	return startGSLB(t, withCNAMEToManaged(cfg))
}

// withCNAMEToManaged is cfg with ringlb.test's records inline, app a CNAME
// to the managed name ide.
func withCNAMEToManaged(cfg configs.GSLB) configs.GSLB {
	cfg.Zones = slices.Clone(cfg.Zones)
	cfg.Zones[0].File = ""
	cfg.Zones[0].Records = []string{
		"@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60",
		"@ 3600 IN NS ns1",
		"ns1 3600 IN A 127.0.0.1",
		"app 300 IN CNAME ide",
	}
	return cfg
}

// A name that is a CNAME to a traffic-managed name answers by region too,
// whoever asked it first: the UDP loop's answer cache must not hand one
// region's answer, cached for the first client, to every later client.
func TestCNAMEToManagedNameAnswersByRegion(t *testing.T) {
	s := cnameToManagedConfig(t, "")
	for range 3 { // east asks first, and again: the answer is cached
		if got := answerIPs(queryFrom(t, s, "udp", "127.0.0.1", "app.ringlb.test.", dns.TypeA, nil)); got != "192.0.2.1" {
			t.Fatalf("from east: %s, want east's 192.0.2.1", got)
		}
	}
	for _, net := range []string{"udp", "tcp"} {
		if got := answerIPs(queryFrom(t, s, net, "127.0.0.2", "app.ringlb.test.", dns.TypeA, nil)); got != "192.0.2.2" {
			t.Errorf("%s from west after east: %s, want west's 192.0.2.2", net, got)
		}
	}
}

// Names learnt to lead to a managed name are remembered only beside a cache
// entry: a wildcard CNAME to a name with max_answers (never cached) makes
// every name asked one, and would grow the loop's memory without bound.
func TestCNAMEToManagedNameMemoryBounded(t *testing.T) {
	cfg := withCNAMEToManaged(fuzzConfig(t))
	cfg.Names[0].MaxAnswers = 1
	cfg.Zones[0].Records = append(cfg.Zones[0].Records, "*.w 300 IN CNAME ide")
	s, err := New(cfg, "gslb-test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	l := newUDPLoop(s, sink, nil) // answers to itself, unread: only the loop's state counts
	for i := range 1000 {
		pkt, _ := question(fmt.Sprintf("n%d.w.ringlb.test.", i), dns.TypeA, 0).Pack()
		l.handle(pkt, sink.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	if len(l.via) != 0 || len(l.cache) != 0 {
		t.Errorf("1000 names by a wildcard CNAME to a max_answers name: %d remembered, %d cached; want none", len(l.via), len(l.cache))
	}
}
