package operator

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Two admin planes on one registry (a test serving two, a process serving
// two roles' ports) count on the registry's counters: the second's counts
// were made on counters of its own that no scrape read.
func TestSecondAdminPlaneCountsOnTheRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	newMetrics(reg)
	second := newMetrics(reg)
	second.auditRecords.Inc()
	second.logins.WithLabelValues("ok").Inc()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	scraped := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			scraped[f.GetName()] += m.GetCounter().GetValue()
		}
	}
	for _, name := range []string{"ringlb_admin_audit_records_total", "ringlb_admin_logins_total"} {
		if scraped[name] != 1 {
			t.Errorf("%s scrapes %v, want the second plane's 1", name, scraped[name])
		}
	}
}
