package bench

// The chaos scenario: the chaos workload (chaos.go) under a script of
// cluster changes. `ringlb bench chaos` runs it against any cluster (its
// steps run shell commands and admin calls, chaos_cluster.go); the
// end-to-end test runs the very same script with steps that start and kill
// its own processes.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// ChaosScenario is the chaos workload under a script: traffic for Hold
// (the "steady" phase, ending in a check point), then each step in turn:
// its action, a settle (every participant it disconnected back, none lost
// for Quiet), Hold more traffic with guests coming and going, and a split
// check point. Every wait in it is bounded; none of its times is a verdict:
// the result reports them, the caller judges the counts.
type ChaosScenario struct {
	Options ChaosOptions
	Steps   []ChaosStep
	// Hold is the traffic before the first step and after each step has
	// settled, before its check point (default 5s).
	Hold time.Duration
	// Quiet: a step has settled once no participant has lost its
	// connection for this long (default 1s).
	Quiet time.Duration
	// SettleTimeout bounds each step's action and, separately, its settle
	// (default 60s). It is a liveness bound, kept generous so a busy
	// machine only makes the figures worse: who is still down when it ends
	// is counted (ChaosPhase.Unresumed), and the run goes on.
	SettleTimeout time.Duration
	// Owner, when set, names the edge that owns a key now (a balancer's
	// GET /api/lookup). At each step's check point the sessions the step
	// disconnected are looked up: ChaosPhase.OffOwner counts those not on
	// their owner.
	Owner func(ctx context.Context, key string) (string, error)
	// Progress gets a line a second and a line per check point; nil for
	// none.
	Progress io.Writer
}

// ChaosStep is one change of the cluster.
type ChaosStep struct {
	// Name names the phase the step starts: "scale-out", "drain", "crash".
	Name string
	// Edge is the edge the step acts on ("" when none, e.g. an edge added):
	// the result tells the sessions on it at the step apart from the others.
	Edge string
	// Do makes the change and returns once it is in (the balancers' rings
	// have it), or with an error, which ends the run. ctx ends after the
	// scenario's SettleTimeout.
	Do func(ctx context.Context) error
}

// ChaosScenarioSettings are a scenario's timings and steps, kept in the
// result.
type ChaosScenarioSettings struct {
	Steps         []string      `json:"steps"`
	Hold          time.Duration `json:"hold_ns"`
	Quiet         time.Duration `json:"quiet_ns"`
	SettleTimeout time.Duration `json:"settle_timeout_ns"`
}

const (
	defaultChaosHold          = 5 * time.Second
	defaultChaosQuiet         = time.Second
	defaultChaosSettleTimeout = 60 * time.Second
	// chaosConnectAllowance is what a run's default Duration allows for
	// connecting every participant and for Stop.
	chaosConnectAllowance = 2 * time.Minute
	// maxOffOwnerDetails bounds ChaosPhase.OffOwnerDetails.
	maxOffOwnerDetails = 10
	// ownerLookups bounds the owner lookups in flight at a check point.
	ownerLookups = 16
)

func (s *ChaosScenario) setDefaults() {
	if s.Hold == 0 {
		s.Hold = defaultChaosHold
	}
	if s.Quiet == 0 {
		s.Quiet = defaultChaosQuiet
	}
	if s.SettleTimeout == 0 {
		s.SettleTimeout = defaultChaosSettleTimeout
	}
	if s.Options.Duration == 0 {
		// Bound the run by what the script may take at most, not by the
		// workload's own default, which does not know the script.
		s.Options.setDefaults()
		n := time.Duration(len(s.Steps))
		s.Options.Duration = (n+1)*s.Hold + n*(2*s.SettleTimeout) + s.Options.Quiesce + chaosConnectAllowance
	}
	s.Options.setDefaults()
}

func (s *ChaosScenario) validate() error {
	var errs []error
	if s.Hold < 0 || s.Hold > 10*time.Minute {
		errs = append(errs, fmt.Errorf("hold must be in range [0, 10m], got %s", s.Hold))
	}
	if s.Quiet < 0 || s.Quiet > time.Minute {
		errs = append(errs, fmt.Errorf("quiet must be in range [0, 1m], got %s", s.Quiet))
	}
	if s.SettleTimeout < time.Second || s.SettleTimeout > 10*time.Minute {
		errs = append(errs, fmt.Errorf("settle timeout must be in range [1s, 10m], got %s", s.SettleTimeout))
	}
	seen := map[string]bool{"steady": true, "end": true}
	for i, st := range s.Steps {
		switch {
		case st.Name == "":
			errs = append(errs, fmt.Errorf("step %d has no name", i+1))
		case seen[st.Name]:
			errs = append(errs, fmt.Errorf("step %d: name %q is taken (steady and end are the run's own)", i+1, st.Name))
		}
		seen[st.Name] = true
		if st.Do == nil {
			errs = append(errs, fmt.Errorf("step %q has no action", st.Name))
		}
	}
	return errors.Join(errs...)
}

// Run runs the scenario and returns its result. When a step fails, the
// workload is stopped and the result so far comes back with the error.
func (s ChaosScenario) Run(ctx context.Context) (*ChaosResult, error) {
	s.setDefaults()
	if err := errors.Join(s.validate(), s.Options.validate()); err != nil {
		return nil, &OptionsError{err}
	}
	w, err := StartChaos(ctx, s.Options, s.Progress)
	if err != nil {
		return nil, err
	}
	settings := &ChaosScenarioSettings{Hold: s.Hold, Quiet: s.Quiet, SettleTimeout: s.SettleTimeout, Steps: []string{}}
	for _, st := range s.Steps {
		settings.Steps = append(settings.Steps, st.Name)
	}
	stepErr := s.script(ctx, w)
	res := w.Stop(ctx)
	res.Scenario = settings
	return res, stepErr
}

// script is the run between StartChaos and Stop.
func (s ChaosScenario) script(ctx context.Context, w *Chaos) error {
	if !s.hold(ctx, w) {
		return ctx.Err()
	}
	s.checkPoint(ctx, w, "steady")
	for _, st := range s.Steps {
		w.Event(st.Name, st.Edge)
		w.logf("%s: started", st.Name)
		actCtx, cancel := context.WithTimeout(ctx, s.SettleTimeout)
		err := st.Do(actCtx)
		cancel()
		change := w.now()
		w.mu.Lock()
		p := w.phases[len(w.phases)-1]
		p.Change = change - p.At
		w.mu.Unlock()
		if err != nil {
			w.logf("%s: %v", st.Name, err)
			return fmt.Errorf("step %s: %w", st.Name, err)
		}
		w.logf("%s: in after %s", st.Name, p.Change.Round(time.Millisecond))
		settleCtx, cancel := context.WithTimeout(ctx, s.SettleTimeout)
		err = w.Settle(settleCtx, s.Quiet)
		cancel()
		if err != nil {
			w.logf("%s: %v (the run goes on; the result counts who is not back)", st.Name, err)
		} else {
			w.mu.Lock()
			p.Settled = true
			w.mu.Unlock()
		}
		if !s.hold(ctx, w) {
			return ctx.Err()
		}
		s.checkPoint(ctx, w, st.Name)
	}
	return nil
}

// hold lets traffic run for Hold; false when ctx or the run ended first.
func (s ChaosScenario) hold(ctx context.Context, w *Chaos) bool {
	t := time.NewTimer(s.Hold)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-w.ctx.Done():
	}
	return false
}

// checkPoint checks for splits, logs what it found and, with Owner, checks
// that the sessions the current phase disconnected are on their owner.
func (s ChaosScenario) checkPoint(ctx context.Context, w *Chaos, name string) {
	cp := w.CheckPoint(name)
	w.logf("check point %-9s connected %d, split %d, sessions by edge %s", name, cp.Connected, cp.Split, formatCounts(cp.SessionsByEdge))
	if s.Owner == nil || name == "steady" {
		return
	}
	w.mu.Lock()
	p := w.phases[len(w.phases)-1]
	var disconnected []*chaosSession
	for _, sess := range w.sessions {
		if p.disconnected[sess.idx] {
			disconnected = append(disconnected, sess)
		}
	}
	w.mu.Unlock()
	if len(disconnected) == 0 {
		return
	}
	// Lookups go out a few at a time: one after another, a busy machine
	// made each wait its turn in the scheduler and 350 took 44 s.
	type found struct {
		on, owner string
		err       error
	}
	results := make([]found, len(disconnected))
	lookCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range min(ownerLookups, len(disconnected)) {
		wg.Go(func() {
			for i := range jobs {
				if err := lookCtx.Err(); err != nil {
					results[i].err = err
					continue
				}
				edges := map[string]bool{}
				for _, v := range disconnected[i].connected() {
					edges[v.edge] = true
				}
				owner, err := s.Owner(lookCtx, disconnected[i].key)
				if err != nil {
					// The admin API is not answering: do not try the rest.
					// The first failure is the cause, not the cancels it
					// brings about.
					stop(fmt.Errorf("owner of %s: %w", disconnected[i].key, err))
				}
				results[i] = found{joinSorted(edges), owner, err}
			}
		})
	}
	for i := range disconnected {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	checked, off := 0, 0
	var details []string
	for i, r := range results {
		if r.err != nil {
			continue
		}
		checked++
		if r.on != r.owner {
			off++
			if len(details) < maxOffOwnerDetails {
				details = append(details, fmt.Sprintf("%s on %q, owner %s", disconnected[i].key, r.on, r.owner))
			}
		}
	}
	if cause := context.Cause(lookCtx); cause != nil {
		w.logf("check point %s: %v (owner check stopped)", name, cause)
	}
	w.mu.Lock()
	p.OwnerChecked, p.OffOwner, p.OffOwnerDetails = checked, off, details
	w.mu.Unlock()
	w.logf("check point %-9s %d of %d sessions it disconnected on their key's owner", name, checked-off, len(disconnected))
}
