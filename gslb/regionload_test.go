package gslb

import (
	"testing"

	"github.com/ringlb/ringlb/health"
)

// ringlb_gslb_region_load follows a region whose last edge leaves: its
// edges read 0, and with them the per-edge figures. Before, a region no
// edge announced any more was left out of the sample, and its gauges kept
// the last figures for good: a region whose every edge had gone showed
// them all there, loaded as before.
func TestRegionLoadFollowsTheLastEdgeLeaving(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	s, m := startNameserver(t, "gslb-a", gslbConfig(t, east, west, ""), "")
	gauge := func(measure string) (float64, bool) {
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
				if l := labels(m); l["region"] == "east" && l["measure"] == measure {
					return m.GetGauge().GetValue(), true
				}
			}
		}
		return 0, false
	}
	edge := joinEdge(t, "edge-1", "east", m.Addr(), 7101, health.Load{Sessions: 40, Connections: 80, CPU: 30})
	waitFor(t, "the gslb sees east's edge and its load", func() bool {
		v, ok := gauge("sessions_per_edge")
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
		if v, ok := gauge(measure); !ok || v != want {
			t.Errorf("ringlb_gslb_region_load{region=east,measure=%s} = %v (exported %v) once its last edge left, want %v", measure, v, ok, want)
		}
	}
}
