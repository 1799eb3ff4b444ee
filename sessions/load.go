package sessions

import (
	"context"
	"errors"
	"math"
	"runtime"
	"time"

	"github.com/ringlb/ringlb/health"
)

// LoadInterval is how often an edge samples and, when it changed, announces
// its load: gslb nodes sample it once per exchange round (about as often).
const LoadInterval = 2 * time.Second

// PublishLoad announces this edge's load in its gossip metadata
// (health.Meta.Load: live sessions, WebSocket connections, CPU busy percent)
// every interval, so that gslb nodes can steer clients away from a loaded
// region. Only a changed load is gossiped. It returns at once; the returned
// stop ends the publishing and waits for it (call it before m.Shutdown).
func (s *Server) PublishLoad(m *health.Membership, every time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		cpu := cpuSampler{}
		cpu.sample() // the first figure is over the first interval
		var last *health.Load
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			// Sessions someone is in: one kept for idle_grace without a
			// participant is not load, and a client that joined made-up
			// keys and left at once made the edge announce hundreds.
			_, conns := s.Stats()
			l := health.Load{Sessions: int(s.metrics.sessionsActive.Load()), Connections: conns, CPU: cpu.sample()}
			if last != nil && *last == l {
				continue
			}
			// Bounded by the interval: the next sample replaces this one anyway.
			uctx, ucancel := context.WithTimeout(ctx, every)
			err := m.UpdateMeta(uctx, func(meta *health.Meta) { meta.Load = &l })
			ucancel()
			switch {
			case errors.Is(err, health.ErrShutdown):
				return
			case err != nil && ctx.Err() == nil:
				// The local metadata changed all the same; gossip carries it on.
				s.log.Debug("load announced without confirmation", "err", err)
			}
			last = &l
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// cpuSampler measures how busy this process keeps the CPUs its Go runtime
// uses (GOMAXPROCS), between two samples: 100 means every one of them was
// busy the whole time.
type cpuSampler struct {
	wall time.Time
	cpu  time.Duration
}

// sample returns the busy percent since the previous sample (0 for the
// first, or where the process's CPU time is not known).
func (c *cpuSampler) sample() int {
	now := time.Now()
	used, ok := processCPUTime()
	prevWall, prevCPU := c.wall, c.cpu
	c.wall, c.cpu = now, used
	if !ok || prevWall.IsZero() {
		return 0
	}
	elapsed := now.Sub(prevWall) * time.Duration(runtime.GOMAXPROCS(0))
	if elapsed <= 0 {
		return 0
	}
	pct := math.Round(100 * float64(used-prevCPU) / float64(elapsed))
	return int(min(max(pct, 0), 100))
}
