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
		if s := cfg.Summary(); !strings.Contains(s, "ring 101/50/1.25)") {
			t.Errorf("%s:\nsummary %s\nwant ring 101/50/1.25)", file, s)
		}
	}
	cfg, err := Parse("t.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }"))
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Summary(); !strings.Contains(s, "ring 7919/400/1.05)") {
		t.Errorf("defaults: summary %s\nwant ring 7919/400/1.05", s)
	}
}

// The check's summary describes the roles the file configures, and only
// those: a gslb file's its DNS port, zones, names and monitors (it gave
// an edge's and a balancer's defaults, and nothing of the gslb).
func TestSummaryDescribesTheFilesRoles(t *testing.T) {
	for _, tt := range []struct {
		name, file string
		want, not  []string
	}{
		{"gslb", goodGSLB,
			[]string{"gslb DNS 127.0.0.1:5353", "1 zones (ringlb.test.)", "1 names (ide.ringlb.test.)", "1 monitors (bal)"},
			[]string{"edge ", "balancer ", "demo nodes"}},
		{"edge", "cluster: { bind: 127.0.0.1:7946 }\nedge: { listen: 127.0.0.1:7101 }\n",
			[]string{"edge 127.0.0.1:7101, max_connections "},
			[]string{"balancer ", "gslb ", "demo nodes"}},
		{"balancer", "cluster: { bind: 127.0.0.1:7946 }\nbalancer: { listen: 127.0.0.1:8080 }\n",
			[]string{"balancer 127.0.0.1:8080, max_connections ", "0 static edges"},
			[]string{"edge ", "gslb ", "demo nodes"}},
		{"no role", "cluster: { bind: 127.0.0.1:7946 }\n",
			[]string{"no edge, balancer or gslb section"},
			[]string{"max_connections", "DNS", "demo nodes"}},
	} {
		cfg, err := Parse("t.yaml", []byte(tt.file))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		s := cfg.Summary()
		for _, w := range tt.want {
			if !strings.Contains(s, w) {
				t.Errorf("%s: summary %s\nwant %q", tt.name, s, w)
			}
		}
		for _, n := range tt.not {
			if strings.Contains(s, n) {
				t.Errorf("%s: summary %s\nhas %q", tt.name, s, n)
			}
		}
	}
	cfg, err := LoadDemo()
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Summary()
	for _, w := range []string{"edge max_connections", "balancer max_connections", "gslb 1 zones", "6 demo nodes (bal-1 balancer 127.0.0.1:8080, "} {
		if !strings.Contains(s, w) {
			t.Errorf("demo: summary %s\nwant %q", s, w)
		}
	}
}
