package gslb

import (
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ringlb/ringlb/balancer/acceptguard/fdtest"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// A pool member's check this process cannot make (out of descriptors)
// holds the member's state and is logged once a run: counted in
// ringlb_gslb_monitor_checks_not_made_total, one each, by what was lacking.
// Before, a gslb whose monitors went blind for an hour said so in one line
// and nowhere on its metrics.
func TestChecksNotMadeAreCounted(t *testing.T) {
	if !fdtest.Alone(t) {
		return
	}
	y := tcpCheckedYAML(t)
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	p, err := newPools(parseGSLBYAML(t, y), slog.New(slog.DiscardHandler), m)
	if err != nil {
		t.Fatal(err)
	}
	p.start()
	defer p.stop()
	var members []*member
	for _, r := range p.names["ide.ringlb.test."].regions {
		members = append(members, r.members...)
	}
	healthtest.WaitUntil(t, "the members' checks settle", func() bool {
		for _, mem := range members {
			if !mem.prober.Settled() {
				return false
			}
		}
		return true
	})
	notMade := func(lacking string) float64 {
		var d dto.Metric
		if err := m.checksNotMade.WithLabelValues(lacking).Write(&d); err != nil {
			t.Fatal(err)
		}
		return d.GetCounter().GetValue()
	}
	for _, lacking := range health.LackingReasons() {
		if got := notMade(lacking); got != 0 {
			t.Fatalf("checks not made for want of %s before descriptors ran out: %v", lacking, got)
		}
	}

	release := fdtest.ExhaustDescriptors(t)
	// Each of the two members' checks, more of them than fall: each one
	// counted, not once a run.
	const want = 3 * 2
	healthtest.WaitUntil(t, "checks not made counted", func() bool { return notMade(health.LackingDescriptors) >= want })
	release()
	t.Logf("checks not made: %v for want of descriptors", notMade(health.LackingDescriptors))
	for _, mem := range members {
		if up, why := mem.prober.Up(); !up {
			t.Errorf("%s taken down while its checks could not be made: %s", mem.key.member, why)
		}
	}
	for _, lacking := range []string{health.LackingMemory, health.LackingLocalPorts} {
		if got := notMade(lacking); got != 0 {
			t.Errorf("checks not made out of descriptors counted lacking %s: %v", lacking, got)
		}
	}
}
