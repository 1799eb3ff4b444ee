package balancer

import (
	"context"
	"errors"
	"maps"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/health"
)

// The ring's members: the alive, non-draining edges of the gossip cluster
// plus the static edges of the config while their monitors pass and they are
// not draining. Every balancer that sees the same cluster computes the same
// ring (ring.Ring orders members itself), whatever order they joined in.
//
// The session table routes live keys to a wider set (routeMembers): the
// ring's members and the static edges off it (down by their monitor, or
// draining until their deadline).

// membersFollower is what FollowCluster runs: one goroutine rebuilding the
// ring on every membership change, stopped by Shutdown.
type membersFollower struct {
	stop        context.CancelFunc
	unsubscribe func()
	done        chan struct{}
}

// errNoCluster: FollowCluster needs SetCluster first.
var errNoCluster = errors.New("balancer: FollowCluster before SetCluster")

// FollowCluster makes the ring follow the cluster set by SetCluster and the
// static edges of the config (monitored from now on, swapped by Reload), and
// shares the session table with the cluster's other balancers: until it has
// a peer's table (or balancer.session_table.startup_wait passed) requests
// wait and the health path answers 503. Call it once, before Serve;
// Shutdown stops it. A balancer that is only given SetCluster (tests) reads
// the cluster — pins, 421 targets, the admin API — but its ring stays
// whatever the caller makes it and its table stays its own.
func (b *Balancer) FollowCluster() error {
	c := b.clusterOrNil()
	if c == nil {
		return errNoCluster
	}
	rl := b.current.Load()
	cfg := rl.cfg
	b.startStatic(rl)
	// The ring first: a peer's table is checked against it as it comes in.
	b.rebuildRing()
	if err := b.table.startSync(c, cfg.SessionTable.StartupWait.D()); err != nil {
		return err
	}
	ctx, stop := context.WithCancel(context.Background())
	changes, unsubscribe := c.Subscribe()
	f := &membersFollower{stop: stop, unsubscribe: unsubscribe, done: make(chan struct{})}
	b.mu.Lock()
	b.follower = f
	b.mu.Unlock()
	after := b.goneEdgeSeriesAfter
	go func() {
		defer close(f.done)
		forgot := make(chan struct{})
		go func() {
			defer close(forgot)
			b.forgetGoneEdges(ctx, after)
		}()
		ring.Follow(ctx, b.ring, changes, b.ringMembers)
		<-forgot
	}()
	return nil
}

// defaultGoneEdgeSeriesAfter is how long an edge is gone before its series
// go: many scrapes, so its last counts were read, and longer than an edge
// restarting under its own name takes, which keeps its counts.
const defaultGoneEdgeSeriesAfter = 10 * time.Minute

// forgetGoneEdges deletes the series of the edges gone for after until ctx
// ends: gossip edges restarted under new names (a name per pod) would
// otherwise grow connections_active, requests_total and
// backend_errors_total for as long as the process runs. Gone is neither
// on the ring nor known (knownEdge); an edge back in time keeps its
// series, and one back later starts them again (a counter reset, which
// Prometheus reads as one).
func (b *Balancer) forgetGoneEdges(ctx context.Context, after time.Duration) {
	goneSince := map[string]time.Time{}
	tick := time.NewTicker(after / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			named := b.metrics.edgesWithSeries()
			snap := b.ring.Snapshot()
			for name := range goneSince {
				if !named[name] {
					delete(goneSince, name)
				}
			}
			for name := range named {
				if _, on := snap.Member(name); on || name == "" || b.knownEdge(name) {
					delete(goneSince, name)
					continue
				}
				since, seen := goneSince[name]
				if !seen {
					goneSince[name] = now
					continue
				}
				if now.Sub(since) >= after && b.forgetEdge(name) {
					delete(goneSince, name)
				}
			}
		}
	}
}

// forgetEdge deletes the series of edge name unless a tunnel to it is
// still open. Under b.mu, which tunnels are counted in and out under: a
// gauge deleted under an open tunnel would read -1 once it closed.
func (b *Balancer) forgetEdge(name string) bool {
	b.mu.Lock()
	if b.metrics.tunnelGauge(name) != 0 {
		b.mu.Unlock()
		return false
	}
	b.metrics.deleteEdge(name)
	b.mu.Unlock()
	// Back since the sweep found it gone: its rejoin's ring rebuild may
	// have made its error counters just before the delete, which took
	// them. Made again, as routing to it made them.
	if b.knownEdge(name) {
		b.metrics.zeroErrors(name)
	}
	return true
}

// knownEdge reports whether name is an edge of this balancer's: a static
// edge of its config, or a gossip edge in any state (a draining one
// included).
func (b *Balancer) knownEdge(name string) bool {
	if _, ok := b.static.Load().edge(name); ok {
		return true
	}
	if c := b.clusterOrNil(); c != nil {
		n, ok := c.Node(name)
		return ok && n.Meta.Role == health.RoleEdge
	}
	return false
}

// ringMembers is the member rule: a gossip cluster is one region, so every
// alive edge in it is ours (health has already dropped members whose
// metadata it does not trust); static edges count while up and not
// draining.
func (b *Balancer) ringMembers() []ring.Member {
	var out []ring.Member
	defer func() {
		// An edge's error counters at 0 from when it is routed to.
		for _, m := range out {
			b.metrics.zeroErrors(m.Name)
		}
	}()
	if c := b.clusterOrNil(); c != nil {
		for _, n := range c.Members() {
			if n.Meta.Role == health.RoleEdge && n.Meta.State == health.StateAlive {
				out = append(out, ring.Member{Name: n.Name, URL: n.Meta.URL, Weight: n.Meta.Weight})
			}
		}
	}
	if st := b.static.Load(); st != nil {
		for _, m := range st.Members() {
			if d, ok := b.table.drains.get(m.Name); !ok || !d.on {
				out = append(out, m)
			}
		}
	}
	return out
}

// staticDrain says whether static edge e drains (weight 0 or the admin
// API), and until when its live sessions stay.
func (b *Balancer) staticDrain(e staticEdge) (bool, time.Time) {
	var deadline time.Time
	draining := false
	if !e.zeroSince.IsZero() {
		draining, deadline = true, e.zeroSince.Add(b.table.settings.Load().drainAfter)
	}
	if d, ok := b.table.drains.get(e.member.Name); ok && d.on {
		if dl := time.Unix(0, d.deadline); !draining || dl.Before(deadline) {
			deadline = dl
		}
		draining = true
	}
	return draining, deadline
}

// routeMembers is where live keys may go now: every member of snap, and
// every other static edge of the config unless its drain deadline has
// passed — whatever its monitor says. The monitor decides which backends
// take new keys; a live session stays with its backend as long as the
// backend accepts connections, and moves on a failed dial (the passive
// health of forward). A monitor's false alarm on one balancer thus moves
// no session, and a dead backend's sessions move at their next
// participant, as they would have.
func (b *Balancer) routeMembers(snap *ring.Snapshot) []ring.Member {
	st := b.static.Load()
	out := snap.Members()
	now := time.Now()
	for _, e := range st.all() {
		if _, on := snap.Member(e.member.Name); on {
			continue
		}
		if draining, deadline := b.staticDrain(e); draining && !now.Before(deadline) {
			continue
		}
		out = append(out, e.member)
	}
	return out
}

// tableHooks tell the session table what this balancer routes to.
func (b *Balancer) tableHooks() tableHooks {
	isStatic := func(name string) bool {
		_, ok := b.static.Load().edge(name)
		return ok
	}
	return tableHooks{
		routesFor: b.routeMembers,
		isStatic:  isStatic,
		known:     b.knownEdge,
		drainsPast: func() map[string]bool {
			past := map[string]bool{}
			now := time.Now()
			for _, e := range b.static.Load().all() {
				if draining, deadline := b.staticDrain(e); draining && !now.Before(deadline) {
					past[e.member.Name] = true
				}
			}
			return past
		},
		onDrain: func() {
			b.saveState()
			b.staticChanged()
		},
	}
}

// startStatic starts monitoring rl's static edges, with the TLS configs
// its start or reload built, from the states the process this one replaced
// saw (an upgrade); once only: ReceiveState starts them early, for the
// table it takes over to route to them.
func (b *Balancer) startStatic(rl *reloadable) {
	b.mu.Lock()
	if b.static.Load() != nil {
		b.mu.Unlock()
		return
	}
	st, zero := b.staticStates, b.zeroSince
	b.staticStates, b.zeroSince = nil, nil
	b.static.Store(newStaticEdgesSeeded(rl.cfg.Edges, rl.edgeTLS, nil, b.staticChanged, b.checkNotMade, b.log, st, zero))
	b.mu.Unlock()
	b.saveZeroSince()
}

// saveZeroSince saves the operator state when the static edges' weight-0
// clocks changed (a start, a reload): a restart with cluster.state_dir goes
// on from them.
func (b *Balancer) saveZeroSince() {
	now := b.static.Load().zeroSince()
	b.mu.Lock()
	same := maps.EqualFunc(now, b.savedZeroSince, time.Time.Equal)
	b.savedZeroSince = now
	b.mu.Unlock()
	if !same {
		b.saveState()
	}
}

// zeroSinceToSave is what the operator state holds of the weight-0 clocks:
// the static edges', or, before they start, those they will start from.
func (b *Balancer) zeroSinceToSave() map[string]time.Time {
	if st := b.static.Load(); st != nil {
		return st.zeroSince()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.zeroSince
}

// checkNotMade counts a static edge's check this process could not make,
// by what it lacked.
func (b *Balancer) checkNotMade(lacking string) {
	b.metrics.checksNotMade.WithLabelValues(lacking).Inc()
}

// staticChanged rebuilds the ring once it follows the cluster (a static
// edge came up or went down, or a drain changed); before, the ring is the
// replaced process's copy (ReceiveState), which static edges alone would
// not rebuild.
func (b *Balancer) staticChanged() {
	b.mu.Lock()
	following := b.follower != nil
	b.mu.Unlock()
	if following {
		b.rebuildRing()
	}
}

// rebuildRing recomputes the ring now (a static edge came up or went
// down, a drain changed, or Reload changed them).
func (b *Balancer) rebuildRing() { b.ring.Rebuild(b.ringMembers) }

// stopFollowing ends FollowCluster's goroutine and the static monitors.
func (b *Balancer) stopFollowing() {
	b.mu.Lock()
	f := b.follower
	b.follower = nil
	b.mu.Unlock()
	if f != nil {
		f.stop()
		f.unsubscribe()
		<-f.done
	}
	if st := b.static.Swap(nil); st != nil {
		st.Close()
	}
}
