package balancer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// staticEdges are the edges listed in config rather than found by gossip
// (third-party backends). Each is checked by an active monitor (health.Prober)
// and is a ring member only while up and not draining (weight 0, or a drain
// through the admin API: the session table keeps its live sessions on it). It
// owns the probers' goroutines until Close.
type staticEdges struct {
	edges  []staticEdge
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type staticEdge struct {
	member ring.Member
	prober *health.Prober
	// verify is how the edge is verified and what it is shown, for its
	// checks (prober) and its requests (edgePool) alike: one value, built
	// from its tls block's files by the start or reload that checked them.
	verify *tls.Config
	// zeroSince is when the config gave the edge weight 0 (a drain), kept
	// over reloads that keep it; zero otherwise.
	zeroSince time.Time
}

// newStaticEdges starts monitoring edges, each verified by its config in
// verify (edgeTLSConfigs; by name); changed is called (from a prober's
// goroutine) whenever one comes up or goes down — the ring is rebuilt then
// —, notMade (may be nil) for every check this process could not make
// (Prober.OnCheckNotMade). prev are the edges being replaced (a reload),
// nil at start: an edge of prev at the same URL keeps the state its
// monitor settled on.
func newStaticEdges(edges []configs.StaticEdge, verify map[string]*tls.Config, prev *staticEdges, changed func(), notMade func(lacking string), logger *slog.Logger) *staticEdges {
	return newStaticEdgesSeeded(edges, verify, prev, changed, notMade, logger, nil, nil)
}

// newStaticEdgesSeeded is newStaticEdges with each monitor starting from the
// state in states (name → up), the one the process this one replaced had:
// an edge it saw down stays off the ring until it passes Rise checks here.
// An edge of weight 0 goes on with its drain's clock from zeroSince (name →
// since when), as the process this one replaced or cluster.state_dir had
// it: started afresh at each start, a drain lasted its deadline past the
// last restart or upgrade, not past the config that began it.
func newStaticEdgesSeeded(edges []configs.StaticEdge, verify map[string]*tls.Config, prev *staticEdges, changed func(), notMade func(lacking string), logger *slog.Logger, states map[string]bool, zeroSince map[string]time.Time) *staticEdges {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &staticEdges{cancel: cancel}
	now := time.Now()
	for _, e := range edges {
		mon := *e.Monitor // provisioned: a TCP check of the URL's port by default
		target := e.URL
		if u, err := url.Parse(e.URL); err == nil {
			target = net.JoinHostPort(u.Hostname(), strconv.Itoa(mon.Port))
		}
		name := e.Name
		c := verify[e.Name]
		if c == nil {
			// Not built (its files did not load, which refuses a start
			// or reload): nothing verifies, so its checks and requests
			// fail rather than trust anyone.
			logger.Error("static edge has no TLS configuration: its https checks and requests fail", "edge", e.Name)
			c = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: x509.NewCertPool()}
		}
		p := health.NewVerifyingProber(mon, target, c, func(up bool, why string) {
			logger.Info("static edge state changed", "edge", name, "up", up, "why", why)
			if changed != nil {
				changed()
			}
		}, logger)
		if notMade != nil {
			p.OnCheckNotMade(notMade)
		}
		if up, ok := states[e.Name]; ok {
			p.Seed(up, "as the process this one replaced saw it")
		} else if old, ok := prev.edge(e.Name); ok && old.member.URL == e.URL && old.prober.Settled() {
			// A reload: a monitor starts up, and one started afresh put an
			// edge its predecessor saw down back on the ring for fall
			// checks — for good, with reloads as often. Its run of checks
			// carries too: counted again from zero, a backend failing its
			// checks and reloaded every fall-1 of them stayed on the ring.
			p.Carry(old.prober)
		}
		weight := 1
		if e.Weight != nil {
			weight = *e.Weight
		}
		se := staticEdge{member: ring.Member{Name: e.Name, URL: e.URL, Weight: weight}, prober: p, verify: c}
		if weight == 0 {
			se.zeroSince = now
			if old, ok := prev.edge(e.Name); ok && !old.zeroSince.IsZero() {
				se.zeroSince = old.zeroSince
			} else if since, ok := zeroSince[e.Name]; ok && !since.IsZero() {
				// Not after now: a clock that ran ahead, or a state file
				// from one, postpones no drain.
				se.zeroSince = since
				if since.After(now) {
					se.zeroSince = now
				}
			}
		}
		s.edges = append(s.edges, se)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			p.Run(ctx)
		}()
	}
	return s
}

// edgeTLSConfigs builds how each static edge is verified, by name: as its
// requests are and as its https checks are (EdgeTLS.ClientConfig: its
// tls.ca_file or the system's roots, server_name or the URL's host, its
// client certificate), so that an impostor answering at its address does
// not keep it up. Its files are read here, and nowhere else: a start or
// reload calls it once (prepareReloadable), and an edge's files that do not
// load are one error each, naming the edge.
func edgeTLSConfigs(edges []configs.StaticEdge) (map[string]*tls.Config, []error) {
	out := make(map[string]*tls.Config, len(edges))
	var errs []error
	for i, e := range edges {
		host := ""
		if u, err := url.Parse(e.URL); err == nil {
			host = u.Hostname()
		}
		c, err := e.TLS.ClientConfig(host)
		if err != nil {
			errs = append(errs, fmt.Errorf("balancer.edges[%d].%w", i, err))
			continue
		}
		out[e.Name] = c
	}
	return out, errs
}

// edge returns the static edge named name.
func (s *staticEdges) edge(name string) (staticEdge, bool) {
	if s == nil {
		return staticEdge{}, false
	}
	for _, e := range s.edges {
		if e.member.Name == name {
			return e, true
		}
	}
	return staticEdge{}, false
}

// all returns every static edge (none for nil).
func (s *staticEdges) all() []staticEdge {
	if s == nil {
		return nil
	}
	return s.edges
}

// Members returns the static edges that are up with a weight above 0 (the
// admin API's drains are the caller's to leave out).
func (s *staticEdges) Members() []ring.Member {
	var out []ring.Member
	for _, e := range s.edges {
		if up, _ := e.prober.Up(); up && e.member.Weight > 0 {
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

// zeroSince returns when each edge of weight 0 got it (its drain's clock),
// by name; nil when none has.
func (s *staticEdges) zeroSince() map[string]time.Time {
	var out map[string]time.Time
	for _, e := range s.all() {
		if !e.zeroSince.IsZero() {
			if out == nil {
				out = map[string]time.Time{}
			}
			out[e.member.Name] = e.zeroSince
		}
	}
	return out
}

// Close stops the monitors and waits for them.
func (s *staticEdges) Close() {
	s.cancel()
	s.wg.Wait()
}
