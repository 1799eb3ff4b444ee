package configs

import (
	"strings"
	"testing"
)

// The check's summary shows the ring the nodes route by: cluster.ring, or
// balancer.ring when only that older place is set.
func TestSummaryShowsTheRing(t *testing.T) {
	for _, file := range []string{
		"cluster: { bind: 127.0.0.1:7946, ring: { partitions: 101, replication: 50, load: 1.25 } }",
		"cluster: { bind: 127.0.0.1:7946 }\nbalancer: { ring: { partitions: 101, replication: 50, load: 1.25 } }",
	} {
		cfg, err := Parse("t.yaml", []byte(file))
		if err != nil {
			t.Fatal(err)
		}
		if s := cfg.Summary(); !strings.Contains(s, "ring 101/50/1.25,") {
			t.Errorf("%s:\nsummary %s\nwant ring 101/50/1.25", file, s)
		}
	}
	cfg, err := Parse("t.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }"))
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Summary(); !strings.Contains(s, "ring 7919/400/1.05,") {
		t.Errorf("defaults: summary %s\nwant ring 7919/400/1.05", s)
	}
}
