package configs

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// The ring places every edge's weight × cluster.ring.replication points on
// its circle, 16 bytes each, at every rebuild: each field within its range,
// 1000 static edges of weight 10 at replication 10000 made 100 million
// points (1.6 GB and minutes a build, 50 s and 615 MB at replication 4000)
// and `ringlb check` accepted it. The total is bounded now at the largest
// legitimate ring, every static edge at the largest weight and the
// default replication (4 s and 66 MB a build at 1<<20 partitions,
// TestLargestRingBuilds), and refused beyond it at the replication's line.
func TestRingPointsAreBounded(t *testing.T) {
	file := func(replication, weight int) []byte {
		var b strings.Builder
		fmt.Fprintf(&b, "cluster:\n  name: b1\n  bind: 127.0.0.1:7946\n  ring:\n    partitions: 1048576\n    replication: %d\nbalancer:\n  edges:\n", replication)
		for i := range MaxStaticEdges {
			fmt.Fprintf(&b, "    - { name: e%d, url: \"http://127.0.0.1:%d\", weight: %d }\n", i, 1024+i, weight)
		}
		return []byte(b.String())
	}
	for _, tt := range []struct {
		replication, weight int
		want                string
	}{
		{DefaultRingReplication, MaxEdgeWeight, ""},
		{10000, 1, "b.yaml:6: cluster.ring.replication: "},
		{10000, MaxEdgeWeight, "b.yaml:6: cluster.ring.replication: "},
		{DefaultRingReplication + 1, MaxEdgeWeight, "b.yaml:6: cluster.ring.replication: "},
		{4000, 1, ""},
	} {
		_, err := Parse("b.yaml", file(tt.replication, tt.weight))
		t.Logf("%d static edges of weight %d, replication %d: %v", MaxStaticEdges, tt.weight, tt.replication, err)
		if tt.want == "" {
			if err != nil {
				t.Errorf("replication %d, weight %d: %v, want no problem", tt.replication, tt.weight, err)
			}
			continue
		}
		var errs Errors
		if !errors.As(err, &errs) || len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), tt.want) {
			t.Errorf("replication %d, weight %d: %v, want the one problem %q…", tt.replication, tt.weight, err, tt.want)
		}
	}
}
