//go:build linux

package balancer

import (
	"context"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
)

// A `weight: 0` drain lasts its deadline from the config that began it, not
// from the last restart or upgrade: its clock goes on across a restart with
// cluster.state_dir and across a hand-off. Before, each process started it
// afresh, so a balancer restarted or upgraded every half hour never ended
// a one-hour drain.
func TestWeightZeroDrainClockSurvivesRestartAndUpgrade(t *testing.T) {
	edge := startRawEdge(t)
	zero := 0
	cfg := configs.Balancer{Edges: []configs.StaticEdge{{Name: "drained", URL: edge, Weight: &zero}, {Name: "serving", URL: edge}}}
	cfg.Admin.StateDir = t.TempDir()
	deadline := func(b *Balancer) time.Time {
		t.Helper()
		e, ok := b.static.Load().edge("drained")
		if !ok {
			t.Fatal("no static edge drained")
		}
		draining, dl := b.staticDrain(e)
		if !draining {
			t.Fatal("the weight-0 edge does not drain")
		}
		return dl
	}
	first := newHandOffBalancerOn(t, cfg, ring.New(ring.DefaultConfig()), mustListen(t))
	first.startStatic(first.current.Load())
	want := deadline(first)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := first.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	restarted := newHandOffBalancerOn(t, cfg, ring.New(ring.DefaultConfig()), mustListen(t))
	restarted.startStatic(restarted.current.Load())
	got := deadline(restarted)
	t.Logf("drain deadline after a restart with state_dir: %s later than the config's", got.Sub(want))
	if !got.Equal(want) {
		t.Errorf("after a restart the drain ends at %s, want %s: its clock started again", got, want)
	}

	// The new process of an upgrade has no state_dir: only the hand-off
	// carries the clock.
	noState := cfg
	noState.Admin.StateDir = ""
	upgraded := newHandOffBalancerOn(t, noState, ring.New(ring.DefaultConfig()), mustListen(t))
	stateHandedOver(t, restarted, upgraded)
	got = deadline(upgraded)
	t.Logf("drain deadline after an upgrade: %s later than the config's", got.Sub(want))
	if !got.Equal(want) {
		t.Errorf("after an upgrade the drain ends at %s, want %s: its clock started again", got, want)
	}
}
