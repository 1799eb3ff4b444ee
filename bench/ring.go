package bench

// `ringlb bench ring`: how evenly a ring of N edges spreads session keys,
// how many keys each membership change moves against the ideal, and what
// a lookup costs — for choosing balancer.ring's partitions, replication
// and load (docs/DESIGN.md, "The ring").

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
)

// RingOptions describes one `ringlb bench ring` run; it is bounded by Keys
// and by the lookup time budget.
type RingOptions struct {
	Ring  ring.Config `json:"ring"`
	Edges int         `json:"edges"` // the ring measured: edge-1 … edge-N
	Keys  int         `json:"keys"`  // session keys sampled
	// LookupTime bounds the lookup timing loop (default 300ms).
	LookupTime time.Duration `json:"lookup_time_ns"`
}

// RingResult is what a run measured.
type RingResult struct {
	Options RingOptions `json:"options"`
	// Shares are the edges' shares of the N-edge ring: of its partitions
	// and of the sampled keys.
	Shares []RingShare `json:"shares"`
	// Busiest is the largest key share over the mean (1/N).
	Busiest float64 `json:"busiest_over_mean"`
	// Changes are membership changes from the N-edge ring: one edge added,
	// then each edge removed in turn.
	Changes []RingChange `json:"changes"`
	// LookupNs is the mean cost of one Locate of a 24-byte key.
	LookupNs float64 `json:"lookup_ns"`
	// BuildTime is what building the N-edge ring took (paid on each
	// membership change).
	BuildTime time.Duration `json:"build_ns"`
}

// RingShare is one edge's share of the ring.
type RingShare struct {
	Edge       string  `json:"edge"`
	Partitions float64 `json:"partitions"`
	Keys       float64 `json:"keys"`
}

// RingChange is one membership change and the keys it moved.
type RingChange struct {
	Change string  `json:"change"` // "+edge-4", "-edge-2"
	Moved  float64 `json:"moved"`  // fraction of keys whose owner changed
	// Ideal is the least any ring can move: the added edge's fair share
	// (1/(N+1)), or what the removed edge held.
	Ideal float64 `json:"ideal"`
	// Needless is the fraction that moved between edges the change did
	// not touch: a perfect ring moves none.
	Needless float64 `json:"needless"`
}

// Ratio is Moved over Ideal.
func (c RingChange) Ratio() float64 {
	if c.Ideal == 0 {
		return 0
	}
	return c.Moved / c.Ideal
}

func (o *RingOptions) setDefaults() {
	if o.Ring == (ring.Config{}) {
		o.Ring = ring.DefaultConfig()
	}
	if o.Edges == 0 {
		o.Edges = 3
	}
	if o.Keys == 0 {
		o.Keys = 100_000
	}
	if o.LookupTime == 0 {
		o.LookupTime = 300 * time.Millisecond
	}
}

func (o *RingOptions) validate() error {
	errs := []error{o.Ring.Validate()}
	if o.Edges < 1 || o.Edges > 200 {
		errs = append(errs, fmt.Errorf("edges must be in range [1, 200], got %d", o.Edges))
	}
	if o.Keys < 100 || o.Keys > 10_000_000 {
		errs = append(errs, fmt.Errorf("keys must be in range [100, 10000000], got %d", o.Keys))
	}
	if o.LookupTime <= 0 || o.LookupTime > time.Minute {
		errs = append(errs, fmt.Errorf("lookup time must be in range (0, 1m], got %s", o.LookupTime))
	}
	return errors.Join(errs...)
}

// RunRing measures rings built with o.Ring. progress gets a line per step;
// nil for none.
func RunRing(ctx context.Context, o RingOptions, progress io.Writer) (*RingResult, error) {
	o.setDefaults()
	if err := o.validate(); err != nil {
		return nil, &OptionsError{err}
	}
	if progress == nil {
		progress = io.Discard
	}
	res := &RingResult{Options: o}
	keys := make([][]byte, o.Keys)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "bench-session-%010d", i) // 24 bytes, like a short token
	}
	edges := make([]ring.Member, o.Edges+1)
	for i := range edges {
		edges[i] = ring.Member{Name: "edge-" + strconv.Itoa(i+1)}
	}
	current := edges[:o.Edges]

	fmt.Fprintf(progress, "[ring] building %d edges (%d partitions, replication %d, load %g)\n", o.Edges, o.Ring.Partitions, o.Ring.Replication, o.Ring.Load)
	t0 := time.Now()
	base := ring.New(o.Ring).Update(current)
	res.BuildTime = time.Since(t0)
	owners := ownersOf(base, keys)
	count := map[string]int{}
	for _, e := range owners {
		count[e]++
	}
	partitions := base.Shares()
	for _, m := range current {
		share := float64(count[m.Name]) / float64(len(keys))
		res.Shares = append(res.Shares, RingShare{Edge: m.Name, Partitions: partitions[m.Name], Keys: share})
		res.Busiest = max(res.Busiest, share*float64(o.Edges))
	}

	// touched is the edge a change adds or removes.
	type change struct {
		name    string
		members []ring.Member
		touched string
	}
	changes := []change{{"+" + edges[o.Edges].Name, edges, edges[o.Edges].Name}}
	for i, m := range current {
		if len(current) > 1 {
			changes = append(changes, change{"-" + m.Name, slices.Delete(slices.Clone(current), i, i+1), m.Name})
		}
	}
	for _, ch := range changes {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		fmt.Fprintf(progress, "[ring] %s\n", ch.name)
		after := ownersOf(ring.New(o.Ring).Update(ch.members), keys)
		c := RingChange{Change: ch.name}
		for i := range keys {
			if owners[i] == after[i] {
				continue
			}
			c.Moved++
			if owners[i] != ch.touched && after[i] != ch.touched {
				c.Needless++
			}
		}
		c.Moved /= float64(len(keys))
		c.Needless /= float64(len(keys))
		if strings.HasPrefix(ch.name, "+") {
			c.Ideal = 1 / float64(o.Edges+1)
		} else {
			c.Ideal = float64(count[ch.touched]) / float64(len(keys))
		}
		res.Changes = append(res.Changes, c)
	}

	fmt.Fprintf(progress, "[ring] timing lookups for %s\n", o.LookupTime)
	res.LookupNs = timeLookups(ctx, base, keys, o.LookupTime)
	return res, nil
}

func ownersOf(s *ring.Snapshot, keys [][]byte) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		m, _ := s.Locate(k)
		out[i] = m.Name
	}
	return out
}

// timeLookups returns the mean ns of Locate over keys, in rounds until
// budget has passed (at least one round, at most 1000).
func timeLookups(ctx context.Context, s *ring.Snapshot, keys [][]byte, budget time.Duration) float64 {
	var n int
	var sink int
	start := time.Now()
	for round := 0; round < 1000 && ctx.Err() == nil; round++ {
		for _, k := range keys {
			m, _ := s.Locate(k)
			sink += len(m.Name)
		}
		n += len(keys)
		if time.Since(start) >= budget {
			break
		}
	}
	_ = sink
	return float64(time.Since(start).Nanoseconds()) / float64(max(n, 1))
}

// Summary is the one line printed at the end of a run.
func (r *RingResult) Summary() string {
	o := r.Options
	var add, remove RingChange
	for _, c := range r.Changes {
		if strings.HasPrefix(c.Change, "+") {
			add = c
		} else if c.Ratio() > remove.Ratio() {
			remove = c
		}
	}
	line := fmt.Sprintf("ring: %d edges, %d partitions, replication %d, load %g | busiest %.3f× mean | %s moved %.2f%% (%.2f× ideal)",
		o.Edges, o.Ring.Partitions, o.Ring.Replication, o.Ring.Load, r.Busiest, add.Change, 100*add.Moved, add.Ratio())
	if remove.Change != "" {
		line += fmt.Sprintf(" | worst removal %s moved %.2f%% (%.2f× ideal)", remove.Change, 100*remove.Moved, remove.Ratio())
	}
	return line + fmt.Sprintf(" | lookup %.1f ns | build %.1f ms", r.LookupNs, float64(r.BuildTime)/1e6)
}

// WriteSVG draws each edge's share and the keys each change moved.
func (r *RingResult) WriteSVG(w io.Writer) error {
	o := r.Options
	shares := panel{title: fmt.Sprintf("Share of session keys per edge (%d edges; fair share %.1f%%)", o.Edges, 100/float64(o.Edges)),
		xLabel: "edge", yLabel: "share, %", barSeries: []string{"keys", "partitions"}}
	for _, s := range r.Shares {
		shares.bars = append(shares.bars, barGroup{label: s.Edge, values: []float64{100 * s.Keys, 100 * s.Partitions}})
	}
	moved := panel{title: "Keys moved per membership change (needlessly: between edges the change did not touch)", xLabel: "change", yLabel: "keys moved, %",
		barSeries: []string{"moved", "ideal", "needlessly"}}
	for _, c := range r.Changes {
		moved.bars = append(moved.bars, barGroup{label: c.Change, values: []float64{100 * c.Moved, 100 * c.Ideal, 100 * c.Needless}})
	}
	c := chart{
		title: fmt.Sprintf("ringlb bench ring: partitions %d, replication %d, load %g", o.Ring.Partitions, o.Ring.Replication, o.Ring.Load),
		note: fmt.Sprintf("%d keys | busiest edge %.3f× the mean | lookup %.1f ns | build %.1f ms",
			o.Keys, r.Busiest, r.LookupNs, float64(r.BuildTime)/1e6),
		panels: []panel{shares, moved},
	}
	return c.writeSVG(w)
}
