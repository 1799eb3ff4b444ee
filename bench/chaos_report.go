package bench

// What a chaos run reports: the table per phase that `ringlb bench chaos`
// prints and the end-to-end test logs, two runs side by side, and the chart.

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Phase returns the phase named name.
func (r *ChaosResult) Phase(name string) (ChaosPhase, bool) {
	for _, p := range r.Phases {
		if p.Name == name {
			return p, true
		}
	}
	return ChaosPhase{Name: name}, false
}

// WriteTable writes the run as a table, a row per phase (README.md, "chaos"
// explains the columns).
func (r *ChaosResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tat\tchange\ton edge\tsplit\tdisconnected\telsewhere\tlost\tlost to reset\tduplicated\tresets\tresume p50/p90/max\tunresumed\tresumed on\toff owner\t")
	for _, p := range r.Phases {
		change, offOwner := "-", "-"
		if p.Name != "steady" {
			change = roundMS(p.Change).String()
			if !p.Settled {
				change += " (not settled)"
			}
		}
		if p.OwnerChecked > 0 {
			offOwner = fmt.Sprintf("%d/%d", p.OffOwner, p.OwnerChecked)
		}
		fmt.Fprintf(tw, "%s\t%.1fs\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t%s\t%s\t\n", p.Name, p.At.Seconds(), change, p.SessionsOnEdge,
			p.SplitSessions, p.SessionsDisconnected, p.DisconnectedElsewhere, p.Lost, p.LostToReset,
			p.DuplicatedSequenced+p.DuplicatedDeliveries, p.Resets, formatResume(p.Resume),
			p.Unresumed, formatCounts(p.ResumedOn), offOwner)
	}
	return tw.Flush()
}

// WriteChaosComparison writes runs of one scenario side by side (ringlb and
// HAProxy), a column per run, a row per figure; the steps are the first
// run's.
func WriteChaosComparison(w io.Writer, names []string, runs []*ChaosResult) error {
	if len(runs) == 0 || len(names) != len(runs) {
		return fmt.Errorf("chaos comparison: %d names for %d runs", len(names), len(runs))
	}
	var steps []ChaosPhase
	for _, p := range runs[0].Phases {
		if p.Name != "steady" {
			steps = append(steps, p)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\t%s\t\n", strings.Join(names, "\t"))
	row := func(label string, f func(*ChaosResult) any) {
		cells := make([]string, len(runs))
		for i, r := range runs {
			cells[i] = fmt.Sprint(f(r))
		}
		fmt.Fprintf(tw, "%s\t%s\t\n", label, strings.Join(cells, "\t"))
	}
	phase := func(r *ChaosResult, name string) ChaosPhase { p, _ := r.Phase(name); return p }
	row("split sessions", func(r *ChaosResult) any { return r.SplitSessions })
	for _, s := range steps {
		row("  split by "+s.Name, func(r *ChaosResult) any { return phase(r, s.Name).SplitSessions })
	}
	for _, s := range steps {
		row("disconnected by "+s.Name, func(r *ChaosResult) any { return phase(r, s.Name).SessionsDisconnected })
	}
	for _, s := range steps {
		if s.Edge != "" {
			row("  "+s.Name+": disconnected, not on "+s.Edge, func(r *ChaosResult) any { return phase(r, s.Name).DisconnectedElsewhere })
		}
	}
	for _, s := range steps {
		row("lost / duplicated across "+s.Name, func(r *ChaosResult) any {
			p := phase(r, s.Name)
			return fmt.Sprintf("%d / %d", p.Lost+p.LostToReset, p.DuplicatedSequenced+p.DuplicatedDeliveries)
		})
	}
	for _, s := range steps {
		row(s.Name+" → sessions back p50/max", func(r *ChaosResult) any {
			p := phase(r, s.Name)
			if p.Resume.Samples == 0 {
				return "-"
			}
			return fmt.Sprintf("%s / %s", roundMS(p.Resume.P50), roundMS(p.Resume.Max))
		})
	}
	row("resets", func(r *ChaosResult) any { return r.Resets })
	row("lost (all phases)", func(r *ChaosResult) any { return r.Lost + r.LostToReset })
	return tw.Flush()
}

func roundMS(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

func formatResume(p Percentiles) string {
	if p.Samples == 0 {
		return "-"
	}
	return fmt.Sprintf("%s/%s/%s", roundMS(p.P50), roundMS(p.P90), roundMS(p.Max))
}

// formatCounts writes counts by name, sorted: "edge-2:99 edge-3:95".
func formatCounts(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s:%d", n, m[n])
	}
	return b.String()
}

// WriteSVG draws the run: connected participants over time with each step
// marked, deliveries per second, and what each phase split and
// disconnected.
func (r *ChaosResult) WriteSVG(w io.Writer) error {
	o := r.Options
	live := line{name: "connected"}
	var at []time.Duration
	var delivered []int64
	var most float64
	for _, t := range r.Timeline {
		live.points = append(live.points, [2]float64{t.At.Seconds(), float64(t.Live)})
		at = append(at, t.At)
		delivered = append(delivered, t.Delivered)
		most = max(most, float64(t.Live))
	}
	connected := []line{live}
	bars := panel{title: "Per phase", yLabel: "sessions", barSeries: []string{"split", "disconnected", "unresumed"}}
	for _, p := range r.Phases {
		bars.bars = append(bars.bars, barGroup{label: p.Name, values: []float64{float64(p.SplitSessions), float64(p.SessionsDisconnected), float64(p.Unresumed)}})
		if p.Name != "steady" {
			// A step as a vertical line at its start.
			connected = append(connected, line{name: fmt.Sprintf("%s at %.1fs", p.Name, p.At.Seconds()),
				points: [][2]float64{{p.At.Seconds(), 0}, {p.At.Seconds(), most}}})
		}
	}
	c := chart{
		title: fmt.Sprintf("ringlb bench chaos: %d sessions × %d participants", o.Sessions, o.Participants),
		note: fmt.Sprintf("%g msg/s each | split %d, lost %d, lost to reset %d, duplicated %d, resets %d, gave up %d",
			o.Rate, r.SplitSessions, r.Lost, r.LostToReset, r.Duplicated, r.Resets, r.GaveUp),
		panels: []panel{
			{title: "Participants connected", xLabel: "time since start, s", yLabel: "connected", lines: connected},
			{title: "Throughput", xLabel: "time since start, s", yLabel: "messages delivered / s",
				lines: []line{{name: "delivered/s", points: ratePerSecond(at, delivered)}}},
			bars,
		},
	}
	return c.writeSVG(w)
}
