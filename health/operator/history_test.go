package operator

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/health"
)

// edgeLike registers an edge's kind of metrics: a gauge, a counter, a
// labelled gauge and a histogram.
type edgeLike struct {
	sessions prometheus.Gauge
	messages prometheus.Counter
	up       *prometheus.GaugeVec
	fails    *prometheus.CounterVec
	lag      prometheus.Histogram
}

func newEdgeLike(reg *prometheus.Registry) *edgeLike {
	e := &edgeLike{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "t_sessions"}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{Name: "t_messages_total"}),
		up:       prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "t_up"}, []string{"name", "region", "member"}),
		fails:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "t_failovers_total"}, []string{"name", "region"}),
		lag:      prometheus.NewHistogram(prometheus.HistogramOpts{Name: "t_lag_seconds", Buckets: []float64{0.001, 0.01, 0.1, 1}}),
	}
	reg.MustRegister(e.sessions, e.messages, e.up, e.fails, e.lag)
	return e
}

var testSeries = []SeriesSpec{
	{Name: "sessions", Metric: "t_sessions", Kind: Gauge},
	{Name: "messages_per_second", Metric: "t_messages_total", Kind: Rate},
	{Name: "members_up", Metric: "t_up", Kind: Gauge, By: []string{"name", "region"}},
	{Name: "lag_p50", Metric: "t_lag_seconds", Kind: Quantile, Quantile: 0.5},
	{Name: "lag_p99", Metric: "t_lag_seconds", Kind: Quantile, Quantile: 0.99},
	{Name: "failover", Metric: "t_failovers_total", Kind: Increase, By: []string{"name", "region"}, Event: "failover"},
}

// The history computes what the charts draw: gauges as they are, counters
// as rates, histogram quantiles over each interval, per-label series, and
// events from counters, audit records and membership.
func TestHistorySeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEdgeLike(reg)
	h := newHistory("edge-1", "edge", reg, testSeries, 10*time.Second, slog.New(slog.DiscardHandler))
	t0 := time.Unix(1_800_000_000, 0)
	joined := t0.Add(5 * time.Second)
	alive := health.Meta{State: health.StateAlive}
	h.WatchMembership(func() []health.Event {
		return []health.Event{
			{Kind: "join", Node: health.Node{Name: "edge-2", Meta: alive}, At: joined},
			// A load figure changed: nothing to mark.
			{Kind: "update", Node: health.Node{Name: "edge-2", Meta: alive}, At: joined.Add(time.Second)},
		}
	})

	e.sessions.Set(3)
	e.up.WithLabelValues("ide.", "east", "bal-1").Set(1)
	e.up.WithLabelValues("ide.", "east", "bal-2").Set(1)
	e.up.WithLabelValues("ide.", "west", "bal-3").Set(0)
	e.fails.WithLabelValues("ide.", "west").Add(1) // before the first sample: not an event
	h.Sample(t0)
	e.messages.Add(50)
	for range 90 {
		e.lag.Observe(0.005) // bucket (0.001, 0.01]
	}
	for range 10 {
		e.lag.Observe(0.5) // bucket (0.1, 1]
	}
	e.fails.WithLabelValues("ide.", "west").Add(1)
	h.auditEvent(Record{At: t0.Add(7 * time.Second), Node: "bal-1", Who: "user:alice", Action: "drain", Target: "edge-1", Result: 202})
	h.auditEvent(Record{At: t0.Add(8 * time.Second), Node: "bal-1", Who: "user:alice", Action: "drain", Target: "edge-9", Result: 404}) // failed: no mark
	h.Sample(t0.Add(10 * time.Second))
	h.Sample(t0.Add(20 * time.Second)) // nothing observed: no lag

	v := h.View(60)
	if len(v.Times) != 3 || v.Times[0] != float64(t0.Unix()) {
		t.Fatalf("times %v", v.Times)
	}
	want := map[string][]float64{
		"sessions":              {3, 3, 3},
		"messages_per_second":   {math.NaN(), 5, 0},
		"members_up{ide.,east}": {2, 2, 2},
		"members_up{ide.,west}": {0, 0, 0},
		"lag_p50":               {math.NaN(), 0.001 + 0.009*50/90, math.NaN()},
		"lag_p99":               {math.NaN(), 0.1 + 0.9*(99-90)/10.0, math.NaN()},
	}
	for key, w := range want {
		got := v.Series[key]
		if len(got) != len(w) {
			t.Errorf("%s: %v, want %v", key, got, w)
			continue
		}
		for i := range w {
			if math.IsNaN(w[i]) != math.IsNaN(got[i]) || !math.IsNaN(w[i]) && math.Abs(w[i]-got[i]) > 1e-9 {
				t.Errorf("%s: %v, want %v", key, got, w)
				break
			}
		}
	}
	var kinds []string
	for _, e := range v.Events {
		kinds = append(kinds, e.Kind+":"+e.Text)
	}
	if got := strings.Join(kinds, " | "); got != "membership:edge-2 join | drain:drain edge-1 by user:alice | failover:{ide.,west}" {
		t.Errorf("events: %s", got)
	}
	raw, err := json.Marshal(v)
	if err != nil || !strings.Contains(string(raw), `"messages_per_second":[null,5,0]`) {
		t.Errorf("JSON: %v %s", err, raw)
	}
}

// The ring keeps HistorySamples samples whatever runs; ?minutes cuts it.
func TestHistoryRingWraps(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEdgeLike(reg)
	h := newHistory("edge-1", "edge", reg, testSeries, time.Second, slog.New(slog.DiscardHandler))
	t0 := time.Unix(1_800_000_000, 0)
	for i := range 2*HistorySamples + 7 {
		e.sessions.Set(float64(i))
		h.Sample(t0.Add(time.Duration(i) * time.Second))
	}
	v := h.View(60)
	last := 2*HistorySamples + 6
	if len(v.Times) != HistorySamples || v.Series["sessions"][HistorySamples-1] != float64(last) || v.Series["sessions"][0] != float64(last-HistorySamples+1) {
		t.Fatalf("after %d samples: %d times, sessions %v … %v", last+1, len(v.Times), v.Series["sessions"][0], v.Series["sessions"][HistorySamples-1])
	}
	if v := h.View(2); len(v.Times) != 120 || v.Times[119] != float64(t0.Unix()+int64(last)) {
		t.Fatalf("2 minutes at 1 s: %d times, last %v", len(v.Times), v.Times[len(v.Times)-1])
	}
}

// Label values come from the node's own registry, but a label that takes
// new values for ever (a churning cluster's edge names) must not grow the
// history: at most maxSeries series, and series that left the ring go.
func TestHistorySeriesBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEdgeLike(reg)
	h := newHistory("edge-1", "edge", reg, testSeries, time.Second, slog.New(slog.DiscardHandler))
	t0 := time.Unix(1_800_000_000, 0)
	for i := range 3 * HistorySamples {
		e.up.Reset()
		e.up.WithLabelValues("ide.", fmt.Sprintf("region-%d", i), "m").Set(1)
		h.Sample(t0.Add(time.Duration(i) * time.Second))
	}
	h.mu.Lock()
	n := len(h.series)
	h.mu.Unlock()
	if n > maxSeries {
		t.Fatalf("%d series after %d label values, want at most %d", n, 3*HistorySamples, maxSeries)
	}
}

// historyFor fills a history the size of a busy node's: series series
// (balancer 5, edge 7, gslb 2 + 2 per pool), HistorySamples samples.
func registryWith(series int) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "t_g"}, []string{"i"})
	reg.MustRegister(g)
	for i := range series {
		g.WithLabelValues(fmt.Sprint(i)).Set(float64(i))
	}
	return reg
}

func historyFor(reg *prometheus.Registry) *History {
	h := newHistory("n", "edge", reg, []SeriesSpec{{Name: "g", Metric: "t_g", Kind: Gauge, By: []string{"i"}}}, 10*time.Second, slog.New(slog.DiscardHandler))
	t0 := time.Unix(1_800_000_000, 0)
	for i := range HistorySamples {
		h.Sample(t0.Add(time.Duration(i) * 10 * time.Second))
	}
	for i := range maxEvents {
		h.AddEvent(Event{At: t0, Kind: "membership", Text: fmt.Sprintf("edge-%d join", i)})
	}
	return h
}

// BenchmarkHistoryMemory measures a full history (an hour at 10 s) per node:
// the heap it holds, for the series count of each role and for the bound.
// go test ./health/operator -run XXX -bench HistoryMemory -benchtime 1x
func BenchmarkHistoryMemory(b *testing.B) {
	for _, c := range []struct {
		name   string
		series int
	}{{"balancer", 5}, {"edge", 7}, {"gslb-4-pools", 10}, {"bound", maxSeries}} {
		b.Run(c.name, func(b *testing.B) {
			var bytes float64
			for range b.N {
				reg := registryWith(c.series)
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				h := historyFor(reg)
				runtime.GC()
				runtime.ReadMemStats(&after)
				bytes = float64(after.HeapAlloc) - float64(before.HeapAlloc)
				runtime.KeepAlive(h)
			}
			b.ReportMetric(bytes, "heap-bytes/node")
		})
	}
}

// TestHistoryMemoryBounded holds the bound the README states: a full
// history at the series limit stays under 384 KiB (measured 155–230 KB).
func TestHistoryMemoryBounded(t *testing.T) {
	reg := registryWith(maxSeries)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	h := historyFor(reg)
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	runtime.KeepAlive(h)
	t.Logf("a full history of %d series × %d samples and %d events holds %d bytes", maxSeries, HistorySamples, maxEvents, held)
	if held > 384<<10 {
		t.Errorf("history holds %d bytes, want ≤ 384 KiB", held)
	}
}

// A series is read back as it is written: null is no value (NaN, a gap in
// the chart), not 0; what is not an array of numbers is refused.
func TestFloatsReadBack(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // fmt of the floats; "error" when refused
	}{
		{`[1,null,2.5]`, "[1 NaN 2.5]"},
		{"[\n  1,\n  null\n]", "[1 NaN]"},
		{`[]`, "[]"},
		{`[-1e3, 0.001]`, "[-1000 0.001]"},
		{`["1"]`, "error"},
		{`[[1]]`, "error"},
		{`{}`, "error"},
	} {
		var f Floats
		err := json.Unmarshal([]byte(tc.in), &f)
		got := fmt.Sprint([]float64(f))
		if err != nil {
			got = "error"
		}
		if got != tc.want {
			t.Errorf("%s read as %s (%v), want %s", tc.in, got, err, tc.want)
		}
	}
}
