package bench

// Charts: small, dependency-free SVG written by hand, one file per run,
// beside its JSON. A chart is a column of panels; a panel plots lines (a
// latency CDF, a rate over time) or bars (shares, keys moved). Every series
// is a <g class="series" data-name="..."> so tests and readers can find it.

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// chart is one SVG document: a title over panels stacked top to bottom.
type chart struct {
	title  string
	note   string // one line under the title (the run's parameters)
	panels []panel
}

// panel is one plot: lines (xy) or bars (categories).
type panel struct {
	title          string
	xLabel, yLabel string
	logX           bool    // logarithmic x axis (latency)
	yMax           float64 // 0: from the data
	lines          []line
	bars           []barGroup // used when lines is empty
	barSeries      []string   // the names of a barGroup's values, in order
}

type line struct {
	name   string
	points [][2]float64 // x, y
}

// barGroup is one category (an edge, a membership change) with one value
// per bar series.
type barGroup struct {
	label  string
	values []float64
}

// Layout, in SVG user units (pixels).
const (
	chartWidth   = 760
	panelHeight  = 250
	chartHeader  = 56
	plotLeft     = 70
	plotRight    = 150 // room for the legend
	plotTop      = 30
	plotBottom   = 44
	panelSpacing = 10
)

// palette is colour-blind friendly (Okabe–Ito).
var palette = []string{"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"}

// writeSVG renders c. Numbers are formatted with a fixed precision, so the
// same result always gives the same bytes.
func (c chart) writeSVG(w io.Writer) error {
	bw := bufio.NewWriter(w)
	height := chartHeader + len(c.panels)*(panelHeight+panelSpacing)
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		chartWidth, height, chartWidth, height)
	fmt.Fprintf(bw, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(bw, `<text x="%d" y="22" font-size="16" font-weight="bold">%s</text>`+"\n", plotLeft, esc(c.title))
	if c.note != "" {
		fmt.Fprintf(bw, `<text x="%d" y="42" fill="#555">%s</text>`+"\n", plotLeft, esc(c.note))
	}
	for i, p := range c.panels {
		p.write(bw, chartHeader+i*(panelHeight+panelSpacing))
	}
	fmt.Fprintln(bw, "</svg>")
	return bw.Flush()
}

func (p panel) write(w *bufio.Writer, top int) {
	x0, x1 := float64(plotLeft), float64(chartWidth-plotRight)
	y0, y1 := float64(top+panelHeight-plotBottom), float64(top+plotTop)
	fmt.Fprintf(w, `<g class="panel" data-title="%s">`+"\n", esc(p.title))
	fmt.Fprintf(w, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", plotLeft, top+plotTop-10, esc(p.title))

	// Scales.
	yMax := p.yMax
	xMin, xMax := math.Inf(1), math.Inf(-1)
	for _, l := range p.lines {
		for _, pt := range l.points {
			if p.logX && pt[0] <= 0 {
				continue
			}
			xMin, xMax = math.Min(xMin, pt[0]), math.Max(xMax, pt[0])
			if p.yMax == 0 {
				yMax = math.Max(yMax, pt[1])
			}
		}
	}
	for _, g := range p.bars {
		for _, v := range g.values {
			if p.yMax == 0 {
				yMax = math.Max(yMax, v)
			}
		}
	}
	if yMax <= 0 {
		yMax = 1
	}
	yTicks := niceTicks(0, yMax)
	yMax = yTicks[len(yTicks)-1]
	ys := func(v float64) float64 { return y0 - (v/yMax)*(y0-y1) }

	// Y axis and grid.
	for _, t := range yTicks {
		fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x0, ys(t), x1, ys(t))
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-6, ys(t)+4, tickLabel(t))
	}
	fmt.Fprintf(w, `<text transform="translate(%d %.1f) rotate(-90)" text-anchor="middle" fill="#333">%s</text>`+"\n",
		16, (y0+y1)/2, esc(p.yLabel))
	fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle" fill="#333">%s</text>`+"\n", (x0+x1)/2, top+panelHeight-6, esc(p.xLabel))

	if len(p.lines) > 0 {
		p.writeLines(w, top+plotTop, x0, x1, xMin, xMax, ys)
	} else {
		p.writeBars(w, top+plotTop, x0, x1, y0, ys)
	}
	fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", x0, y0, x1, y0)
	fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", x0, y0, x0, y1)
	fmt.Fprintln(w, "</g>")
}

func (p panel) writeLines(w *bufio.Writer, top int, x0, x1, xMin, xMax float64, ys func(float64) float64) {
	y0 := ys(0)
	if math.IsInf(xMin, 1) { // no points
		xMin, xMax = 0.1, 1
	}
	var xTicks []float64
	var xs func(float64) float64
	if p.logX {
		lo, hi := math.Floor(math.Log10(xMin)), math.Ceil(math.Log10(xMax))
		if hi == lo {
			hi++
		}
		for e := lo; e <= hi; e++ {
			xTicks = append(xTicks, math.Pow(10, e))
		}
		xs = func(v float64) float64 { return x0 + (math.Log10(v)-lo)/(hi-lo)*(x1-x0) }
	} else {
		xTicks = niceTicks(math.Min(xMin, 0), xMax)
		lo, hi := xTicks[0], xTicks[len(xTicks)-1]
		xs = func(v float64) float64 { return x0 + (v-lo)/(hi-lo)*(x1-x0) }
	}
	for _, t := range xTicks {
		fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", xs(t), y0, xs(t), y0+4)
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", xs(t), y0+16, tickLabel(t))
	}
	for i, l := range p.lines {
		color := palette[i%len(palette)]
		fmt.Fprintf(w, `<g class="series" data-name="%s">`+"\n", esc(l.name))
		var d strings.Builder
		for _, pt := range l.points {
			if p.logX && pt[0] <= 0 {
				continue
			}
			cmd := "L"
			if d.Len() == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&d, "%s%.1f %.1f ", cmd, xs(pt[0]), ys(pt[1]))
		}
		fmt.Fprintf(w, `<path d="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.TrimSpace(d.String()), color)
		legend(w, top, i, l.name, color)
		fmt.Fprintln(w, "</g>")
	}
}

func (p panel) writeBars(w *bufio.Writer, top int, x0, x1, y0 float64, ys func(float64) float64) {
	if len(p.bars) == 0 {
		return
	}
	slot := (x1 - x0) / float64(len(p.bars))
	width := slot * 0.8 / float64(max(len(p.barSeries), 1))
	for gi, g := range p.bars {
		cx := x0 + slot*(float64(gi)+0.5)
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", cx, y0+16, esc(g.label))
	}
	for si, name := range p.barSeries {
		color := palette[si%len(palette)]
		fmt.Fprintf(w, `<g class="series" data-name="%s">`+"\n", esc(name))
		for gi, g := range p.bars {
			if si >= len(g.values) {
				continue
			}
			x := x0 + slot*float64(gi) + slot*0.1 + width*float64(si)
			v := g.values[si]
			fmt.Fprintf(w, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>`+"\n",
				x, ys(v), width, y0-ys(v), color, esc(g.label), esc(name), strconv.FormatFloat(v, 'g', 4, 64))
		}
		legend(w, top, si, name, color)
		fmt.Fprintln(w, "</g>")
	}
}

// legend labels series i of a panel whose plot starts at top.
func legend(w *bufio.Writer, top, i int, name, color string) {
	x, y := chartWidth-plotRight+14, top+i*18
	fmt.Fprintf(w, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n", x, y, color, x+18, y+10, esc(name))
}

// niceTicks returns 4–8 evenly spaced round ticks covering [lo, hi].
func niceTicks(lo, hi float64) []float64 {
	if math.IsInf(lo, 0) || math.IsNaN(lo) || math.IsInf(hi, 0) || math.IsNaN(hi) {
		lo, hi = 0, 1 // never loop on a value no data should give
	}
	if hi <= lo {
		hi = lo + 1
	}
	raw := (hi - lo) / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var ticks []float64
	for k := math.Floor(lo / step); k*step < hi+step*0.999; k++ {
		// 12 significant digits drop binary noise (3×0.2 = 0.6000000000000001).
		t, _ := strconv.ParseFloat(strconv.FormatFloat(k*step, 'g', 12, 64), 64)
		ticks = append(ticks, t)
	}
	return ticks
}

func tickLabel(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', 4, 64) + "M"
	case a >= 1e4:
		return strconv.FormatFloat(v/1e3, 'g', 4, 64) + "k"
	default:
		return strconv.FormatFloat(v, 'g', 4, 64)
	}
}

func esc(s string) string { return template.HTMLEscapeString(s) }

// CDFPoint is one point of a latency distribution: Fraction of the samples
// took at most Latency.
type CDFPoint struct {
	Latency  time.Duration `json:"latency_ns"`
	Fraction float64       `json:"fraction"`
}

// cdf summarizes samples that each count once; see latencies.cdf.
func cdf(d []time.Duration) []CDFPoint {
	return mergeLatencies([]*latencySample{{seen: len(d), d: d}}).cdf()
}

// cdf summarizes the latencies in at most ~200 points, denser in the tail
// (p99, p99.9 and the maximum are always kept).
func (l latencies) cdf() []CDFPoint {
	if len(l) == 0 {
		return nil
	}
	total := l[len(l)-1].cum
	var out []CDFPoint
	add := func(q float64) {
		i := l.rank(q)
		f := l[i].cum / total
		if n := len(out); n > 0 && out[n-1].Fraction >= f {
			return
		}
		out = append(out, CDFPoint{Latency: l[i].d, Fraction: f})
	}
	for i := range 190 {
		add(float64(i) / 190)
	}
	for _, q := range []float64{0.99, 0.995, 0.999, 0.9999, 1} {
		add(q)
	}
	return out
}

func cdfLine(name string, points []CDFPoint) line {
	l := line{name: name}
	for _, p := range points {
		l.points = append(l.points, [2]float64{float64(p.Latency) / 1e6, p.Fraction})
	}
	return l
}

// ratePerSecond turns cumulative counts at times into a rate between
// ticks. A tick less than 200ms after the one before (the end of a run,
// just after a ticker's tick) is merged into the next interval: its rate
// would be noise.
func ratePerSecond(at []time.Duration, total []int64) [][2]float64 {
	var out [][2]float64
	for i, prev := 1, 0; i < len(at); i++ {
		if dt := (at[i] - at[prev]).Seconds(); dt >= 0.2 {
			out = append(out, [2]float64{at[i].Seconds(), float64(total[i]-total[prev]) / dt})
			prev = i
		}
	}
	return out
}

// WriteSVG draws the run: latency CDF, deliveries per second and open
// connections over time.
func (r *WSResult) WriteSVG(w io.Writer) error {
	o := r.Options
	var at []time.Duration
	var delivered []int64
	conns := line{name: "connections"}
	for _, t := range r.Timeline {
		at = append(at, t.At)
		delivered = append(delivered, t.Delivered)
		conns.points = append(conns.points, [2]float64{t.At.Seconds(), float64(t.Connections)})
	}
	c := chart{
		title: fmt.Sprintf("ringlb bench ws (%s): %d sessions × %d participants", o.Mode, o.Sessions, o.Participants),
		note: fmt.Sprintf("%g msg/s each, %d B, %s | %.0f msgs/s delivered | p50 %.3f ms, p99 %.3f ms | lost %d, split %d",
			o.Rate, o.Size, o.Duration, r.DeliveredPerS, float64(r.Latency.P50)/1e6, float64(r.Latency.P99)/1e6, r.Lost, r.SplitSessions),
		panels: []panel{
			{title: "End-to-end latency (send → delivered to another participant)", xLabel: "latency, ms (log scale)",
				yLabel: "fraction of messages", logX: true, yMax: 1, lines: []line{cdfLine("latency", r.LatencyCDF)}},
			{title: "Throughput", xLabel: "time since start, s", yLabel: "messages delivered / s",
				lines: []line{{name: "delivered/s", points: ratePerSecond(at, delivered)}}},
			{title: "Connections", xLabel: "time since start, s", yLabel: "open connections", lines: []line{conns}},
		},
	}
	if o.Saturate {
		c.note = fmt.Sprintf("saturating, window %d | %.0f msgs/s delivered | p50 %.3f ms, p99 %.3f ms | lost %d, split %d",
			o.Window, r.DeliveredPerS, float64(r.Latency.P50)/1e6, float64(r.Latency.P99)/1e6, r.Lost, r.SplitSessions)
	}
	return c.writeSVG(w)
}

// WriteSVG draws the run: latency CDF and answers per second over time.
func (r *DNSResult) WriteSVG(w io.Writer) error {
	var at []time.Duration
	var answered []int64
	for _, t := range r.Timeline {
		at = append(at, t.At)
		answered = append(answered, t.Answered)
	}
	proto := "UDP"
	if r.Options.TCP {
		proto = "TCP"
	}
	c := chart{
		title: fmt.Sprintf("ringlb bench dns: %s, %d clients over %s", r.Options.Server, r.Options.Clients, proto),
		note: fmt.Sprintf("%d queries, %d lost | %.0f QPS | p50 %.3f ms, p99 %.3f ms", r.Sent, r.Lost, r.QPS,
			float64(r.Latency.P50)/1e6, float64(r.Latency.P99)/1e6),
		panels: []panel{
			{title: "Query latency (sent → answer read)", xLabel: "latency, ms (log scale)", yLabel: "fraction of queries",
				logX: true, yMax: 1, lines: []line{cdfLine("latency", r.LatencyCDF)}},
			{title: "Throughput", xLabel: "time since start, s", yLabel: "answers / s",
				lines: []line{{name: "answers/s", points: ratePerSecond(at, answered)}}},
		},
	}
	return c.writeSVG(w)
}
