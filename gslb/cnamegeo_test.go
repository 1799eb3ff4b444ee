package gslb

import (
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
