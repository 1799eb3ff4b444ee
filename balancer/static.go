package balancer

import (
	"context"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"sync"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// staticEdges are the edges listed in config rather than found by gossip
// (third-party backends). Each is checked by an active monitor (health.Prober)
// and is a ring member only while up. It owns the probers' goroutines until
// Close.
type staticEdges struct {
	edges  []staticEdge
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type staticEdge struct {
	member ring.Member
	prober *health.Prober
}

// newStaticEdges starts monitoring edges; changed is called (from a
// prober's goroutine) whenever one comes up or goes down — the ring is
// rebuilt then.
func newStaticEdges(edges []configs.StaticEdge, changed func(), logger *slog.Logger) *staticEdges {
	return newStaticEdgesSeeded(edges, changed, logger, nil)
}

// newStaticEdgesSeeded is newStaticEdges with each monitor starting from the
// state in states (name → up), the one the process this one replaced had:
// an edge it saw down stays off the ring until it passes Rise checks here.
func newStaticEdgesSeeded(edges []configs.StaticEdge, changed func(), logger *slog.Logger, states map[string]bool) *staticEdges {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &staticEdges{cancel: cancel}
	for _, e := range edges {
		mon := *e.Monitor // provisioned: a TCP check of the URL's port by default
		target := e.URL
		if u, err := url.Parse(e.URL); err == nil {
			target = net.JoinHostPort(u.Hostname(), strconv.Itoa(mon.Port))
		}
		name := e.Name
		p := health.NewProber(mon, target, func(up bool, why string) {
			logger.Info("static edge state changed", "edge", name, "up", up, "why", why)
			if changed != nil {
				changed()
			}
		}, logger)
		if up, ok := states[e.Name]; ok {
			p.Seed(up, "as the process this one replaced saw it")
		}
		s.edges = append(s.edges, staticEdge{member: ring.Member{Name: e.Name, URL: e.URL, Weight: e.Weight}, prober: p})
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			p.Run(ctx)
		}()
	}
	return s
}

// Members returns the static edges that are up.
func (s *staticEdges) Members() []ring.Member {
	var out []ring.Member
	for _, e := range s.edges {
		if up, _ := e.prober.Up(); up {
			out = append(out, e.member)
		}
	}
	return out
}

// states returns each edge's monitor state, name → up.
func (s *staticEdges) states() map[string]bool {
	out := make(map[string]bool, len(s.edges))
	for _, e := range s.edges {
		out[e.member.Name], _ = e.prober.Up()
	}
	return out
}

// Close stops the monitors and waits for them.
func (s *staticEdges) Close() {
	s.cancel()
	s.wg.Wait()
}
