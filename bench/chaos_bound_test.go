package bench

import (
	"testing"
	"time"

	"github.com/ringlb/ringlb/health/healthtest"
)

// `ringlb bench chaos` holds no more of a target's frame than a welcome
// can take: a longer one is a protocol violation, dropped as it is read.
// Before, a frame was read whole into memory however long: a target
// sending one of 64 MiB made the run allocate twice that, per participant.
func TestChaosHoldsNoHugeFrame(t *testing.T) {
	const huge = 64 << 20
	url := serveTarget(t, nil, hugeFrameTarget{bytes: huge, welcome: true})
	since := allocatedSince()
	w, err := StartChaos(t.Context(), ChaosOptions{
		Targets: []string{url}, Sessions: 1, Participants: 1,
		Rate: 2, Duration: time.Minute, Quiesce: time.Second,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	healthtest.WaitUntil(t, "the huge frame read", func() bool {
		w.violMu.Lock()
		defer w.violMu.Unlock()
		return len(w.violations) > 0
	})
	res := w.Stop(t.Context())
	allocated := since()
	t.Logf("a %d MiB frame after the welcome: %d MB allocated; violations %v", huge>>20, allocated>>20, res.ProtocolViolationDetails)
	if allocated > huge/4 {
		t.Errorf("%d MB allocated reading a %d MiB frame, want well under it", allocated>>20, huge>>20)
	}
}
