package operator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ringlb/ringlb/health"
)

// History is the last hour of a node's own figures: every interval it reads
// its Prometheus registry and keeps one sample per series in a fixed ring of
// HistorySamples, plus the events an operator wants marked on a chart
// (membership changes, drains, failovers, serve-mode changes, maintenance).
// Its memory is bounded whatever happens: HistorySamples × (at most
// maxSeries series + the times) floats, and maxEvents events.
type History struct {
	node, role string
	gather     prometheus.Gatherer
	specs      []SeriesSpec
	interval   time.Duration
	log        *slog.Logger
	recent     atomic.Pointer[func() []health.Event]

	mu          sync.Mutex
	times       [HistorySamples]int64 // Unix milliseconds
	count, next int                   // samples held; where the next goes
	series      map[string]*[HistorySamples]float64
	counters    map[string]float64  // last counter sums (rates, increases)
	buckets     map[string][]bucket // last histogram buckets (quantiles)
	prevAt      time.Time           // when counters and buckets were read
	events      [maxEvents]Event    // ring
	eventCount  int                 // events held
	eventNext   int
	lastMember  time.Time // the newest membership event taken
	// memberState is each node's last state seen: an update that changes
	// nothing an operator marks (a load figure in the metadata, every few
	// seconds) is not an event.
	memberState map[string]health.State
	seriesFull  bool // a series was refused (maxSeries): logged once
}

// History bounds.
const (
	// HistorySamples is the ring's length: an hour at the default 10 s
	// interval (admin.history_interval).
	HistorySamples = 360
	// maxSeries bounds the series of one node; per-label series beyond it
	// are not kept (logged once).
	maxSeries = 64
	// maxEvents bounds the events kept.
	maxEvents = 256
	// maxMinutes is the most GET /api/history?minutes=N gives.
	maxMinutes = 60
)

// SeriesKind is how a series is computed from its metric.
type SeriesKind int

const (
	// Gauge: the value now (summed over the label sets that fold into one
	// series).
	Gauge SeriesKind = iota
	// Rate: a counter's increase per second since the last sample.
	Rate
	// Quantile: a histogram's Quantile over the observations since the
	// last sample (NaN when there were none).
	Quantile
	// Increase: no series; an event of kind Event each time the counter
	// grows (a failover).
	Increase
)

// SeriesSpec chooses one series (or one per label value) from a metric of
// the node's registry.
type SeriesSpec struct {
	// Name is the series' name in GET /api/history.
	Name string
	// Metric is the Prometheus family it is read from.
	Metric string
	Kind   SeriesKind
	// Quantile is the quantile (0–1) of a Quantile series.
	Quantile float64
	// By splits the series by these labels: "Name{v1,v2}" per value.
	By []string
	// Where keeps only the label sets with these values.
	Where map[string]string
	// Event is the event kind of an Increase.
	Event string
}

// Event is a moment marked on the dashboard's charts.
type Event struct {
	At   time.Time `json:"at"`
	Kind string    `json:"kind"` // "membership", "drain", "failover", "serve_mode", "maintenance", "recover"
	Node string    `json:"node"` // the node that recorded it
	Text string    `json:"text"`
}

type bucket struct{ upper, count float64 }

func newHistory(node, role string, gather prometheus.Gatherer, specs []SeriesSpec, interval time.Duration, log *slog.Logger) *History {
	return &History{node: node, role: role, gather: gather, specs: specs, interval: interval, log: log,
		series: map[string]*[HistorySamples]float64{}, counters: map[string]float64{}, buckets: map[string][]bucket{},
		memberState: map[string]health.State{}}
}

// WatchMembership adds membership changes (health.Membership.Recent) to the
// events, read at every sample.
func (h *History) WatchMembership(recent func() []health.Event) {
	if h != nil {
		h.recent.Store(&recent)
	}
}

// AddEvent marks a moment.
func (h *History) AddEvent(e Event) {
	if h == nil {
		return
	}
	if e.Node == "" {
		e.Node = h.node
	}
	h.mu.Lock()
	h.addEventLocked(e)
	h.mu.Unlock()
}

func (h *History) addEventLocked(e Event) {
	h.events[h.eventNext] = e
	h.eventNext = (h.eventNext + 1) % maxEvents
	h.eventCount = min(h.eventCount+1, maxEvents)
}

// eventfulActions are the audit actions marked on the charts.
var eventfulActions = map[string]bool{"drain": true, "serve_mode": true, "maintenance": true, "recover": true, "config": true}

// auditEvent marks a successful change of the audit log on the charts.
func (h *History) auditEvent(r Record) {
	if !eventfulActions[r.Action] || r.Result >= 300 {
		return
	}
	text := r.Action + " " + r.Target + " by " + r.Who
	if r.For != "" {
		text += " for " + r.For
	}
	h.AddEvent(Event{At: r.At, Kind: r.Action, Node: r.Node, Text: text})
}

// Start samples every interval in a goroutine of its own until the
// returned stop is called; stop waits for it to end. A role runs it while
// its admin port serves.
func (h *History) Start() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// Run samples every interval until ctx ends.
func (h *History) Run(ctx context.Context) {
	h.Sample(time.Now())
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			h.Sample(now)
		}
	}
}

// Sample reads the registry once and appends a sample at now.
func (h *History) Sample(now time.Time) {
	mfs, err := h.gather.Gather()
	if err != nil {
		// A collector's error leaves the other families usable.
		h.log.Debug("history: gather", "err", err)
	}
	families := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		families[mf.GetName()] = mf
	}
	var recent []health.Event
	if f := h.recent.Load(); f != nil {
		recent = (*f)()
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	dt := now.Sub(h.prevAt).Seconds()
	first := h.prevAt.IsZero()
	values := map[string]float64{}
	for _, spec := range h.specs {
		mf := families[spec.Metric]
		if mf == nil {
			continue
		}
		switch spec.Kind {
		case Gauge:
			for key, v := range sums(spec, mf) {
				values[key] = v
			}
		case Rate, Increase:
			for key, v := range sums(spec, mf) {
				prev, seen := h.counters[key]
				h.counters[key] = v
				switch {
				case spec.Kind == Increase:
					if seen && v > prev {
						h.addEventLocked(Event{At: now.UTC(), Kind: spec.Event, Node: h.node, Text: strings.TrimPrefix(key, spec.Name)})
					}
				case !first && seen && v >= prev && dt > 0:
					values[key] = (v - prev) / dt
				}
			}
		case Quantile:
			for key, bs := range histograms(spec, mf) {
				prev, seen := h.buckets[key]
				h.buckets[key] = bs
				if !first && seen {
					values[key] = quantileBetween(prev, bs, spec.Quantile)
				}
			}
		}
	}
	h.prevAt = now

	slot := h.next
	h.times[slot] = now.UnixMilli()
	for _, s := range h.series {
		s[slot] = math.NaN()
	}
	for key, v := range values {
		s := h.series[key]
		if s == nil {
			if len(h.series) >= maxSeries {
				if !h.seriesFull {
					h.seriesFull = true
					h.log.Warn("history: series limit reached, new series are not kept", "limit", maxSeries, "series", key)
				}
				continue
			}
			s = new([HistorySamples]float64)
			for i := range s {
				s[i] = math.NaN()
			}
			h.series[key] = s
		}
		s[slot] = v
	}
	h.next = (h.next + 1) % HistorySamples
	h.count = min(h.count+1, HistorySamples)
	// A series with no value left in the ring (an edge gone for an hour)
	// is dropped, so series of departed nodes do not pile up.
	for key, s := range h.series {
		if allNaN(s) {
			delete(h.series, key)
		}
	}
	// Counters of label sets no longer exported are forgotten likewise.
	if len(h.counters) > 4*maxSeries {
		h.counters = map[string]float64{}
	}

	for _, e := range recent {
		if !e.At.After(h.lastMember) {
			continue
		}
		h.lastMember = e.At
		prev, known := h.memberState[e.Node.Name]
		switch e.Kind {
		case "leave":
			delete(h.memberState, e.Node.Name)
		default:
			if len(h.memberState) >= maxMembersTracked && !known {
				h.memberState = map[string]health.State{} // a churning cluster: start over rather than grow
			}
			h.memberState[e.Node.Name] = e.Node.Meta.State
		}
		text := e.Node.Name + " " + e.Kind
		if e.Kind == "update" {
			if known && prev == e.Node.Meta.State {
				continue
			}
			text = e.Node.Name + " " + string(e.Node.Meta.State)
		}
		h.addEventLocked(Event{At: e.At.UTC(), Kind: "membership", Node: h.node, Text: text})
	}
}

// maxMembersTracked bounds the states remembered for membership events.
const maxMembersTracked = 1024

func allNaN(s *[HistorySamples]float64) bool {
	for _, v := range s {
		if !math.IsNaN(v) {
			return false
		}
	}
	return true
}

// seriesKey names the series a label set folds into.
func seriesKey(spec SeriesSpec, m *dto.Metric) (string, bool) {
	for name, want := range spec.Where {
		if labelValue(m, name) != want {
			return "", false
		}
	}
	if len(spec.By) == 0 {
		return spec.Name, true
	}
	vals := make([]string, len(spec.By))
	for i, l := range spec.By {
		vals[i] = labelValue(m, l)
	}
	return spec.Name + "{" + strings.Join(vals, ",") + "}", true
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// sums adds up a counter or gauge family per series.
func sums(spec SeriesSpec, mf *dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, m := range mf.GetMetric() {
		key, ok := seriesKey(spec, m)
		if !ok {
			continue
		}
		switch {
		case m.Counter != nil:
			out[key] += m.GetCounter().GetValue()
		case m.Gauge != nil:
			out[key] += m.GetGauge().GetValue()
		case m.Untyped != nil:
			out[key] += m.GetUntyped().GetValue()
		}
	}
	return out
}

// histograms merges a histogram family's buckets per series.
func histograms(spec SeriesSpec, mf *dto.MetricFamily) map[string][]bucket {
	merged := map[string]map[float64]float64{}
	for _, m := range mf.GetMetric() {
		key, ok := seriesKey(spec, m)
		if !ok || m.GetHistogram() == nil {
			continue
		}
		bs := merged[key]
		if bs == nil {
			bs = map[float64]float64{}
			merged[key] = bs
		}
		hist := m.GetHistogram()
		for _, b := range hist.GetBucket() {
			bs[b.GetUpperBound()] += float64(b.GetCumulativeCount())
		}
		bs[math.Inf(1)] += float64(hist.GetSampleCount())
	}
	out := make(map[string][]bucket, len(merged))
	for key, bs := range merged {
		list := make([]bucket, 0, len(bs))
		for u, c := range bs {
			list = append(list, bucket{u, c})
		}
		sort.Slice(list, func(i, j int) bool { return list[i].upper < list[j].upper })
		out[key] = list
	}
	return out
}

// quantileBetween is quantile q of the observations between two readings of
// a histogram, interpolated linearly inside its bucket as Prometheus'
// histogram_quantile does; NaN without observations.
func quantileBetween(prev, cur []bucket, q float64) float64 {
	before := make(map[float64]float64, len(prev))
	for _, b := range prev {
		before[b.upper] = b.count
	}
	delta := make([]bucket, len(cur))
	for i, b := range cur {
		delta[i] = bucket{b.upper, b.count - before[b.upper]}
	}
	if len(delta) == 0 {
		return math.NaN()
	}
	total := delta[len(delta)-1].count // +Inf
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range delta {
		if b.count >= rank {
			if math.IsInf(b.upper, 1) {
				return lower // beyond the largest bound: that bound
			}
			if b.count == below {
				return b.upper
			}
			return lower + (b.upper-lower)*(rank-below)/(b.count-below)
		}
		lower, below = b.upper, b.count
	}
	return lower
}

// HistoryView is GET /api/history: the series over the last minutes, as
// columns over Times, and the events in that span.
type HistoryView struct {
	Node     string            `json:"node"`
	Role     string            `json:"role"`
	Interval float64           `json:"interval_seconds"`
	Times    Floats            `json:"times"` // Unix seconds
	Series   map[string]Floats `json:"series"`
	Events   []Event           `json:"events"`
}

// Floats is a series: NaN (no value) is written as null.
type Floats []float64

// MarshalJSON writes the floats (the shortest exact form: times are Unix
// seconds with milliseconds), NaN as null.
func (f Floats) MarshalJSON() ([]byte, error) {
	out := make([]byte, 0, 2+len(f)*8)
	out = append(out, '[')
	for i, v := range f {
		if i > 0 {
			out = append(out, ',')
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			out = append(out, "null"...)
			continue
		}
		out = strconv.AppendFloat(out, v, 'f', -1, 64)
	}
	return append(out, ']'), nil
}

// UnmarshalJSON reads what MarshalJSON writes, null as NaN (no value).
// It is read value by value in place (b is valid JSON: encoding/json
// checked it): a peer's 4 MiB answer holds 2 million values, which taken
// through []*float64 cost 48 MB and as many allocations; here 16 MB, one.
func (f *Floats) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*f = nil
		return nil
	}
	if len(b) < 2 || b[0] != '[' || b[len(b)-1] != ']' {
		return fmt.Errorf("a series is an array of numbers, got %.20q", b)
	}
	b = bytes.TrimSpace(b[1 : len(b)-1])
	values := make(Floats, 0, bytes.Count(b, []byte{','})+1)
	for len(b) > 0 {
		var value []byte
		value, b, _ = bytes.Cut(b, []byte{','})
		value = bytes.TrimSpace(value)
		if string(value) == "null" {
			values = append(values, math.NaN())
			continue
		}
		v, err := strconv.ParseFloat(string(value), 64)
		if err != nil {
			return fmt.Errorf("a series is an array of numbers, got %.20q", value)
		}
		values = append(values, v)
	}
	*f = values
	return nil
}

// PeerHistory is node's GET /api/history answer (body) as a cluster-wide
// view shows it: named as node's, the node read and whose signature the
// answer carried, and so are its events — not as the answer names them,
// which would let one node chart its figures and events in another's name —
// and held to the bounds a node keeps its own to (its newest HistorySamples
// samples, maxSeries series, maxEvents events, each name and text
// maxRecordField).
func PeerHistory(node string, body []byte) (HistoryView, error) {
	var v HistoryView
	if err := json.Unmarshal(body, &v); err != nil {
		return HistoryView{}, err
	}
	newest := func(s Floats) Floats { return s[max(len(s)-HistorySamples, 0):] }
	names := make([]string, 0, len(v.Series))
	for name := range v.Series {
		names = append(names, name)
	}
	sort.Strings(names)
	series := make(map[string]Floats, min(len(names), maxSeries))
	for _, name := range names[:min(len(names), maxSeries)] {
		series[boundField(name)] = newest(v.Series[name])
	}
	events := v.Events[max(len(v.Events)-maxEvents, 0):]
	for i := range events {
		events[i].Node, events[i].Kind, events[i].Text = node, boundField(events[i].Kind), boundField(events[i].Text)
	}
	if events == nil {
		events = []Event{}
	}
	return HistoryView{Node: node, Role: boundField(v.Role), Interval: v.Interval, Times: newest(v.Times), Series: series, Events: events}, nil
}

// View returns the last minutes (1–60) of the history.
func (h *History) View(minutes int) HistoryView {
	minutes = min(max(minutes, 1), maxMinutes)
	h.mu.Lock()
	defer h.mu.Unlock()
	want := int(time.Duration(minutes) * time.Minute / h.interval)
	n := min(max(want, 1), h.count)
	v := HistoryView{Node: h.node, Role: h.role, Interval: h.interval.Seconds(), Times: make(Floats, n), Series: map[string]Floats{}, Events: []Event{}}
	start := (h.next - n + HistorySamples) % HistorySamples
	for i := range n {
		v.Times[i] = float64(h.times[(start+i)%HistorySamples]) / 1000
	}
	for key, s := range h.series {
		col := make(Floats, n)
		for i := range n {
			col[i] = s[(start+i)%HistorySamples]
		}
		v.Series[key] = col
	}
	var since time.Time
	if n > 0 {
		since = time.UnixMilli(h.times[start])
	}
	for i := range h.eventCount {
		e := h.events[(h.eventNext-h.eventCount+i+maxEvents)%maxEvents]
		// A node younger than the span asked for shows all it has.
		if n < want || !e.At.Before(since) {
			v.Events = append(v.Events, e)
		}
	}
	sort.SliceStable(v.Events, func(i, j int) bool { return v.Events[i].At.Before(v.Events[j].At) })
	return v
}
