package gslb

import (
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ringlb/ringlb/configs"
)

// A region's first failover is an increase of
// ringlb_gslb_failovers_total{name,region}, as Prometheus and the admin
// history read counters: a step from a value scraped before it. The
// shipped alert RinglbRegionFailedOver (increase(...[5m]) > 0) and the
// dashboard's failover marks (the history's events) see nothing else — a
// series that first appears at 1 is no increase to either. Before, the
// series was made by the first failover, so a region's first failover
// since the gslb started (on a gslb that runs for months: its only one)
// neither fired the alert nor marked the charts.
func TestFirstFailoverIsAnIncrease(t *testing.T) {
	e1 := newFakeBalancer(t)
	cfg := parseGSLBYAML(t, reloadStateYAML(reloadStateMember("e1", "192.0.2.1", e1.addr(), "")))
	cfg.Admin.HistoryInterval = configs.Duration(100 * time.Millisecond)
	s := startGSLB(t, cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.ServeAdmin(ln)
	admin := "http://" + ln.Addr().String()
	get := func(path string) *http.Response {
		t.Helper()
		resp, err := http.Get(admin + path)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		return resp
	}
	// failovers is east's series as a scrape shows it (nil: none).
	failovers := func() *float64 {
		t.Helper()
		resp := get("/metrics")
		defer resp.Body.Close()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		f := families["ringlb_gslb_failovers_total"]
		if f == nil {
			return nil
		}
		for _, m := range f.GetMetric() {
			if labels(m)["region"] == "east" && labels(m)["name"] == "ide.ringlb.test." {
				v := m.GetCounter().GetValue()
				return &v
			}
		}
		return nil
	}
	waitFor(t, "east answered from e1, its monitor settled", func() bool {
		return slices.Equal(eastAnswer(t, s), []string{"192.0.2.1"}) && monitorsSettled(s)
	})
	// history is the admin history: its sample times and events.
	type history struct {
		Times  []float64
		Events []struct{ Kind, Text string }
	}
	readHistory := func() history {
		t.Helper()
		resp := get("/api/history?minutes=1")
		defer resp.Body.Close()
		var h history
		if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	// A sample of the history taken now, before the failover.
	before := len(readHistory().Times)
	waitFor(t, "the history sampled east before its failover", func() bool { return len(readHistory().Times) >= before+2 })
	if v := failovers(); v == nil || *v != 0 {
		t.Errorf("before east's first failover a scrape shows ringlb_gslb_failovers_total for it at %v, want 0", v)
	}

	e1.healthy.Store(false)
	waitFor(t, "east failed over", func() bool { return slices.Equal(eastAnswer(t, s), []string{"192.0.2.9"}) })
	if v := failovers(); v == nil || *v != 1 {
		t.Fatalf("after east's failover ringlb_gslb_failovers_total for it is %v, want 1", v)
	}
	marked := func() bool {
		for _, e := range readHistory().Events {
			if e.Kind == "failover" && strings.Contains(e.Text, "east") {
				return true
			}
		}
		return false
	}
	// A few samples after the failover: the history has read it.
	after := len(readHistory().Times)
	waitFor(t, "the history sampled east after its failover", func() bool { return len(readHistory().Times) >= after+2 })
	if !marked() {
		t.Error("east's first failover is not among the history's events: the dashboard marks none")
	}
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// A reload that changes nothing is no failover. Its new pools' first
// rebuild, made before they take over the running pools' latches, finds a
// region the config serves nothing of (every member serve_mode remove)
// failed over anew; before, that counted in ringlb_gslb_failovers_total
// and logged "region failed over" on every reload (and on every refused
// one), so each SIGHUP or config PUT of config management fired
// RinglbRegionFailedOver for a region an operator took out on purpose.
func TestReloadCountsNoFailover(t *testing.T) {
	cfg := parseGSLBYAML(t, reloadStateYAML(reloadStateMember("e1", "192.0.2.1", "", configs.ServeRemove)))
	var logged syncBuffer
	s := startGSLBLogging(t, cfg, slog.New(slog.NewTextHandler(&logged, nil)), nil)
	count := func() float64 {
		var m dto.Metric
		if err := s.metrics.failovers.WithLabelValues("ide.ringlb.test.", "east").Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	waitFor(t, "east failed over", func() bool { return slices.Equal(eastAnswer(t, s), []string{"192.0.2.9"}) })
	started := count()
	const reloads = 3
	for range reloads {
		reloadReturns(t, s, parseGSLBYAML(t, reloadStateYAML(reloadStateMember("e1", "192.0.2.1", "", configs.ServeRemove))))
	}
	bad := parseGSLBYAML(t, reloadStateYAML(reloadStateMember("e1", "192.0.2.1", "", configs.ServeRemove)))
	bad.Zones[0].File = "testdata/no-such.zone"
	if err := s.Reload(bad); err == nil {
		t.Fatal("a reload with a missing zone file was taken")
	}
	if got := eastAnswer(t, s); !slices.Equal(got, []string{"192.0.2.9"}) {
		t.Fatalf("east after the reloads: %v", got)
	}
	if got := count(); got != started {
		t.Errorf("ringlb_gslb_failovers_total for east went from %v to %v over %d reloads and a refused one that changed nothing", started, got, reloads)
	}
	if n := strings.Count(logged.String(), "region failed over"); n != 1 {
		t.Errorf("%q logged %d times (want once, at the start):\n%s", "region failed over", n, logged.String())
	}
}

// A reload forgets the series of what it removed: a member no longer
// configured, or no longer monitored (serve_mode no), has no
// ringlb_gslb_member_up. Before, a dead member's 0 stayed exported for good
// after an operator took it out of the config (or set it serve_mode no),
// and the shipped alert RinglbPoolMemberDown (ringlb_gslb_member_up == 0)
// fired on until a restart.
func TestReloadForgetsWhatItRemoved(t *testing.T) {
	for _, tc := range []struct{ name, now string }{
		{"member removed", reloadStateMember("e2", "192.0.2.2", "", configs.ServeAlways)},
		{"member no longer monitored", reloadStateMember("e1", "192.0.2.1", "", configs.ServeNo)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, e1 := deadE1(t)
			s := startGSLB(t, parseGSLBYAML(t, reloadStateYAML(e1)))
			up := func() (float64, bool) {
				t.Helper()
				mfs, err := s.reg.Gather()
				if err != nil {
					t.Fatal(err)
				}
				for _, mf := range mfs {
					if mf.GetName() != "ringlb_gslb_member_up" {
						continue
					}
					for _, m := range mf.GetMetric() {
						if labels(m)["member"] == "e1" {
							return m.GetGauge().GetValue(), true
						}
					}
				}
				return 0, false
			}
			waitFor(t, "e1 down", func() bool {
				v, ok := up()
				return ok && v == 0 && monitorsSettled(s)
			})
			reloadReturns(t, s, parseGSLBYAML(t, reloadStateYAML(tc.now)))
			if v, ok := up(); ok {
				t.Errorf("after a reload that took e1 out of monitoring, ringlb_gslb_member_up{member=e1} is still exported at %v", v)
			}
		})
	}
}
