package gslb

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The queries counter's children are cached by query type and rcode so that
// counting costs no label hashing; the label folds every unknown type into
// "other", and so must the cache's key, or each of the 65536 types a client
// can send (times each rcode) stays in memory for good: 21 MB for three
// rcodes of every type, from 6 MB of queries.
func TestQueryTypesDoNotGrowTheMetricsCache(t *testing.T) {
	s := startGSLB(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""))
	c, err := net.Dial("udp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const types = 2000
	buf := make([]byte, 1500)
	for qt := 1000; qt < 1000+types; qt++ { // unassigned types: label "other"
		m := new(dns.Msg)
		m.SetQuestion("www.ringlb.test.", uint16(qt))
		b, _ := m.Pack()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	entries := 0
	s.metrics.counters.Range(func(any, any) bool { entries++; return true })
	t.Logf("%d query types asked: %d cached counters", types, entries)
	if got := counterValue(t, s, "ringlb_gslb_queries_total", "qtype", "other"); got != types {
		t.Errorf("queries_total{qtype=other} %v, want %d", got, types)
	}
	if entries > 10 {
		t.Errorf("%d query types asked left %d cached counters, want one per label pair", types, entries)
	}
}
