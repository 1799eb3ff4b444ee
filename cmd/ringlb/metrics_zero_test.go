package main

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestLabelledCountersStartAtZero drives the real binary: every known
// label value of the three roles' labelled counters is on a fresh node's
// first scrape, at 0. Prometheus reads a counter's increase from a value
// scraped before it: a series that first appears at 1 is no increase, so
// an alert on increase(...) > 0 missed the first StatsD push that failed,
// the first NOTIFY a secondary did not acknowledge, the first forged TSIG,
// the first login locked out — on a node that runs for months, often the
// only one. The balancer's per-edge error counters are there from when the
// edge is routed to; the gslb's NOTIFY counters are scraped while its
// first NOTIFY is in flight: made by its result, they were not there yet.
func TestLabelledCountersStartAtZero(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	// A StatsD server nobody answers (UDP: a push never fails), and a
	// secondary that reads the NOTIFY and answers it only once the test
	// has scraped.
	statsd, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer statsd.Close()
	secondary, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer secondary.Close()
	stats := fmt.Sprintf("statsd: { address: %q, interval: 1h }", statsd.LocalAddr())

	edgeCfg := filepath.Join(dir, "edge.yaml")
	writeFile(t, edgeCfg, clusterSection("edge-z", "")+"edge: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0 }, "+stats+" }\n")
	edge := startProc(t, bin, "edge", "-config", edgeCfg).waitLog(t, "edge started")
	balCfg := filepath.Join(dir, "balancer.yaml")
	writeFile(t, balCfg, clusterSection("bal-z", "")+fmt.Sprintf("balancer: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0 }, edges: [ { name: static, url: \"http://%s\" } ], %s }\n", edge["listen"], stats))
	bal := startProc(t, bin, "balancer", "-config", balCfg).waitLog(t, "balancer started")
	gslbCfg := filepath.Join(dir, "gslb.yaml")
	writeFile(t, gslbCfg, clusterSection("gslb-z", "")+fmt.Sprintf(`gslb:
  listen: 127.0.0.1:0
  admin: { listen: 127.0.0.1:0 }
  %s
  zones: [ { origin: ringlb.test, records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "ns1 3600 IN A 127.0.0.1" ], transfer: { notify: [ %q ] } } ]
`, stats, secondary.LocalAddr()))
	gslb := startProc(t, bin, "gslb", "-config", gslbCfg).waitLog(t, "gslb started")
	buf := make([]byte, 512)
	if err := secondary.SetReadDeadline(time.Now().Add(60 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := secondary.ReadFrom(buf); err != nil {
		t.Fatalf("no NOTIFY from the gslb: %v", err)
	}

	scrape := func(admin any) map[string]map[string]float64 {
		t.Helper()
		resp, err := (&http.Client{Timeout: 20 * time.Second}).Get(fmt.Sprintf("http://%s/metrics", admin))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]map[string]float64{}
		for name, f := range families {
			out[name] = map[string]float64{}
			for _, m := range f.GetMetric() {
				var series string
				for _, l := range m.GetLabel() {
					series += fmt.Sprintf("%s=%s,", l.GetName(), l.GetValue())
				}
				out[name][series] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
		return out
	}
	// The balancer's static edge on its ring: its error counters are made
	// as it is routed to.
	for deadline := time.Now().Add(60 * time.Second); scrape(bal["admin"])["ringlb_balancer_ring_members"][""] != 1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the balancer never put its static edge on its ring")
		}
	}
	common := map[string][]string{
		"ringlb_statsd_pushes_total": {"result=ok,", "result=failed,"},
		"ringlb_admin_logins_total":  {"result=ok,", "result=wrong,", "result=locked,", "result=busy,"},
	}
	for _, role := range []struct {
		name, admin any
		want        map[string][]string
	}{
		{"edge", edge["admin"], map[string][]string{
			"ringlb_edge_request_bodies_refused_total": {"reason=too_large,", "reason=busy,", "reason=memory,", "reason=replayed,"},
		}},
		{"balancer", bal["admin"], map[string][]string{
			"ringlb_balancer_backend_errors_total":               {"edge=static,kind=dial,", "edge=static,kind=handshake,", "edge=static,kind=response,", "edge=static,kind=local,"},
			"ringlb_balancer_rejected_connections_total":         {"reason=max_connections,", "reason=max_connections_per_ip,", "reason=new_connections_per_ip,", "reason=memory,"},
			"ringlb_balancer_session_table_evictions_total":      {"reason=expired,", "reason=capacity,"},
			"ringlb_balancer_session_table_refused_total":        {"reason=new_key_budget,", "reason=full,"},
			"ringlb_balancer_session_table_tunnels_closed_total": {"reason=moved,", "reason=conflict,", "reason=drain_deadline,"},
			"ringlb_balancer_session_table_ignored_total":        {"reason=unknown_backend,", "reason=backend_down,", "reason=malformed,", "reason=not_a_balancer,", "reason=full,", "reason=replayed,"},
			"ringlb_balancer_session_table_sync_bytes_total":     {"kind=delta,", "kind=refresh,", "kind=answer,"},
			"ringlb_balancer_monitor_checks_not_made_total":      {"reason=descriptors,", "reason=memory,", "reason=local_ports,"},
		}},
		{"gslb", gslb["admin"], map[string][]string{
			"ringlb_gslb_tsig_errors_total":             {"error=BADKEY,", "error=BADSIG,", "error=BADTIME,"},
			"ringlb_gslb_notifies_total":                {"result=ok,zone=ringlb.test.,", "result=error,zone=ringlb.test.,"},
			"ringlb_gslb_monitor_checks_not_made_total": {"reason=descriptors,", "reason=memory,", "reason=local_ports,"},
		}},
	} {
		got := scrape(role.admin)
		for _, want := range []map[string][]string{common, role.want} {
			for name, series := range want {
				for _, s := range series {
					if v, ok := got[name][s]; !ok || v != 0 {
						t.Errorf("%s's first scrape: %s{%s} = %v (exported %v), want 0", role.name, name, s, v, ok)
					}
				}
			}
		}
	}
}
