package gslb

import (
	"strings"
	"testing"

	"github.com/ringlb/ringlb/health"
)

// regionLoadGauge is ringlb_gslb_region_load{region,measure} as s's
// registry holds it (false: not exported).
func regionLoadGauge(t *testing.T, s *Server, region, measure string) (float64, bool) {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "ringlb_gslb_region_load" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if l := labels(m); l["region"] == region && l["measure"] == measure {
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

// ringlb_gslb_region_load follows a region whose last edge leaves: its
// edges read 0, and with them the per-edge figures. Before, a region no
// edge announced any more was left out of the sample, and its gauges kept
// the last figures for good: a region whose every edge had gone showed
// them all there, loaded as before.
func TestRegionLoadFollowsTheLastEdgeLeaving(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	s, m := startNameserver(t, "gslb-a", gslbConfig(t, east, west, ""), "")
	edge := joinEdge(t, "edge-1", "east", m.Addr(), 7101, health.Load{Sessions: 40, Connections: 80, CPU: 30})
	waitFor(t, "the gslb sees east's edge and its load", func() bool {
		v, ok := regionLoadGauge(t, s, "east", "sessions_per_edge")
		return ok && v == 40
	})
	if err := edge.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the gslb sees east without edges", func() bool {
		l, ok := regionStatus(s, "east")["load"].(regionLoad)
		return !ok || l.Edges == 0
	})
	for measure, want := range map[string]float64{"edges": 0, "sessions_per_edge": 0, "connections_per_edge": 0, "cpu_percent": 0} {
		if v, ok := regionLoadGauge(t, s, "east", measure); !ok || v != want {
			t.Errorf("ringlb_gslb_region_load{region=east,measure=%s} = %v (exported %v) once its last edge left, want %v", measure, v, ok, want)
		}
	}
}

// A reload that takes a region out of the config takes its
// ringlb_gslb_region_load series with it, and a load sample of the
// replaced pools, taken across the reload, makes none of them again.
// Before, the region's last figures stayed exported for good: a region the
// operator had removed still showed its edges, loaded as they last were,
// and an alert on its load fired on until a restart.
func TestReloadForgetsARemovedRegionsLoad(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	s, m := startNameserver(t, "gslb-a", gslbConfig(t, east, west, ""), "")
	joinEdge(t, "edge-1", "east", m.Addr(), 7101, health.Load{Sessions: 40, Connections: 80, CPU: 30})
	waitFor(t, "the gslb sees east's edge and its load", func() bool {
		v, ok := regionLoadGauge(t, s, "east", "sessions_per_edge")
		return ok && v == 40
	})
	old := s.state.Load().pools
	// The same name with east renamed north: east is configured no more.
	reloadReturns(t, s, parseGSLBYAML(t, strings.ReplaceAll(gslbYAML("  rate_limit: { responses_per_second: 0 }\n", "", east.addr(), west.addr()), "east", "north")))
	waitFor(t, "a load sample of the new pools", func() bool {
		_, ok := regionLoadGauge(t, s, "north", "edges")
		return ok
	})
	for _, measure := range []string{"edges", "sessions_per_edge", "connections_per_edge", "cpu_percent"} {
		if v, ok := regionLoadGauge(t, s, "east", measure); ok {
			t.Errorf("after a reload that removed east, ringlb_gslb_region_load{region=east,measure=%s} is still exported at %v", measure, v)
		}
	}
	old.setLoads(map[string]regionLoad{"east": {Edges: 1, Sessions: 40}})
	if v, ok := regionLoadGauge(t, s, "east", "sessions_per_edge"); ok {
		t.Errorf("a load sample of the replaced pools exported ringlb_gslb_region_load{region=east} again, at %v", v)
	}
}
