package balancer

import (
	"context"
	"errors"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/health"
)

// The ring's members: the alive, non-draining edges of the gossip cluster
// plus the static edges of the config while their monitors pass. Every
// balancer that sees the same cluster computes the same ring (ring.Ring
// orders members itself), whatever order they joined in.

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
// static edges of the config (monitored from now on, swapped by Reload).
// Call it once, before Serve; Shutdown stops it. A balancer that is only
// given SetCluster (tests) reads the cluster — pins, 421 targets, the admin
// API — but its ring stays whatever the caller makes it.
func (b *Balancer) FollowCluster() error {
	c := b.clusterOrNil()
	if c == nil {
		return errNoCluster
	}
	b.static.Store(newStaticEdgesSeeded(b.current.Load().cfg.Edges, b.rebuildRing, b.log, b.inheritedStatic()))
	ctx, stop := context.WithCancel(context.Background())
	changes, unsubscribe := c.Subscribe()
	f := &membersFollower{stop: stop, unsubscribe: unsubscribe, done: make(chan struct{})}
	b.mu.Lock()
	b.follower = f
	b.mu.Unlock()
	go func() {
		defer close(f.done)
		ring.Follow(ctx, b.ring, changes, b.ringMembers)
	}()
	return nil
}

// ringMembers is the member rule: a gossip cluster is one region, so every
// alive edge in it is ours (health has already dropped members whose
// metadata it does not trust); static edges count while up.
func (b *Balancer) ringMembers() []ring.Member {
	var out []ring.Member
	if c := b.clusterOrNil(); c != nil {
		for _, n := range c.Members() {
			if n.Meta.Role == health.RoleEdge && n.Meta.State == health.StateAlive {
				out = append(out, ring.Member{Name: n.Name, URL: n.Meta.URL, Weight: n.Meta.Weight})
			}
		}
	}
	if st := b.static.Load(); st != nil {
		out = append(out, b.undrained(st.Members())...)
	}
	return out
}

// rebuildRing recomputes the ring now (a static edge came up or went
// down, or Reload changed them).
func (b *Balancer) rebuildRing() { b.ring.Update(b.ringMembers()) }

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
