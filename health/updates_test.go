package health

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"
)

// A member whose admin address this node does not believe (outside its
// allowed networks; or on loopback, announced from another host's gossip
// address: an edge's admin port listens on 127.0.0.1 by default) stays a
// member without it, and is said so once, as an ignored member's reason
// is: not at each update of its metadata. An edge announces its load every
// 2 s while it changes, and a member holding the key updates its metadata
// as fast as gossip carries it.
func TestPartlyDistrustedMemberIsWarnedOfOnce(t *testing.T) {
	var mu sync.Mutex
	warned := 0
	h := slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		if bytes.Contains(p, []byte("ignoring that part")) {
			mu.Lock()
			warned++
			mu.Unlock()
		}
		return len(p), nil
	}), &slog.HandlerOptions{Level: slog.LevelWarn})
	cfg := testCluster("bal-1")
	cfg.AllowedNetworks = []string{"127.0.0.0/8"}
	seed := startTuned(t, cfg, Meta{Role: RoleBalancer, Region: "east", State: StateAlive}, slog.New(h), tuning{})
	ecfg := testCluster("edge-1", seed.Addr())
	ecfg.AllowedNetworks = cfg.AllowedNetworks
	meta := edgeMeta(1)
	meta.Admin = "http://198.51.100.1:9101"
	edge := startNode(t, ecfg, meta)

	const updates = 20
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for i := 1; i <= updates; i++ {
		loadReaches(t, ctx, edge, seed, i)
	}
	if n, _ := seed.Node(edge.LocalName()); n.Meta.Admin != "" {
		t.Errorf("admin address outside the allowed networks believed: %q", n.Meta.Admin)
	}
	// Once per life in this node's view: a busy machine may have it
	// taken for dead and back meanwhile.
	lives := 1
	for _, ev := range seed.Recent() {
		if ev.Kind == "leave" && ev.Node.Name == edge.LocalName() {
			lives++
		}
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d metadata updates of a member whose admin address is not believed: %d warnings (%d lives in view)", updates, warned, lives)
	if warned < 1 || warned > lives {
		t.Errorf("warned %d times of the same distrusted admin address in %d lives in view, want once a life", warned, lives)
	}
}

// Left remembers a member's leave however many metadata updates other
// members make since: every edge announces its load every 2 s while it
// changes, so a cluster of ten such edges made 64 events (all Recent
// keeps) in 13 s, and an edge stopped finding a balancer gossip had lost a
// moment before — whose forwarded upgrades it counts against no share for
// a signature's window, 30 s — and an edge gone within two settle windows.
// Nor does the dashboards' list of recent events lose the leave to them.
func TestLeftOutlivesOtherMembersUpdates(t *testing.T) {
	seed := startNode(t, testCluster("edge-a"), edgeMeta(0))
	gone := startNode(t, testCluster("bal-1", seed.Addr()), Meta{Role: RoleBalancer, Region: "east", State: StateAlive})
	busy := startNode(t, testCluster("edge-b", seed.Addr()), edgeMeta(1))
	waitAll(t, []*Membership{seed}, func(ns []Node) bool { return len(ns) == 3 })
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := gone.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitAll(t, []*Membership{seed}, func(ns []Node) bool { return len(ns) == 2 })
	if _, ok := seed.Left(gone.LocalName(), time.Hour); !ok {
		t.Fatalf("%s does not know %s left", seed.LocalName(), gone.LocalName())
	}
	const updates = recentEvents + 1
	for i := 1; i <= updates; i++ {
		loadReaches(t, ctx, busy, seed, i)
	}
	n, ok := seed.Left(gone.LocalName(), time.Hour)
	recent := seed.Recent()
	shown := slices.ContainsFunc(recent, func(ev Event) bool { return ev.Kind == "leave" && ev.Node.Name == gone.LocalName() })
	t.Logf("after %d load updates of another member: Left(%s) = %v; its leave among the %d recent events: %v", updates, gone.LocalName(), ok, len(recent), shown)
	if !ok || n.Meta.Role != RoleBalancer {
		t.Errorf("Left(%s) = %+v, %v after %d updates of another member; want the balancer that left", gone.LocalName(), n, ok, updates)
	}
	// What a dashboard shows of them (kind, role, state) says nothing of
	// a load: such an update is no event there.
	if !shown {
		t.Errorf("the recent events lost %s's leave to %d load updates of another member", gone.LocalName(), updates)
	}
}

// loadReaches announces sessions as from's load and waits until to sees it.
func loadReaches(t *testing.T, ctx context.Context, from, to *Membership, sessions int) {
	t.Helper()
	if err := from.UpdateMeta(ctx, func(m *Meta) { m.Load = &Load{Sessions: sessions} }); err != nil {
		t.Fatal(err)
	}
	err := to.Wait(ctx, func(ns []Node) bool {
		for _, n := range ns {
			if n.Name == from.LocalName() && n.Meta.Load != nil && n.Meta.Load.Sessions == sessions {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("load %d never reached %s: %v", sessions, to.LocalName(), err)
	}
}
