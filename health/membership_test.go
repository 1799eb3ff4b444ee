package health

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/ringlb/ringlb/configs"
)

// testCluster is the configuration the tests (and their figures) use:
// memberlist's local profile with short intervals.
func testCluster(name string, join ...string) configs.Cluster {
	return configs.Cluster{
		Name: name, Region: "east", Bind: "127.0.0.1:0", Join: join, Profile: "local",
		ProbeInterval: configs.Duration(100 * time.Millisecond), GossipInterval: configs.Duration(50 * time.Millisecond),
	}
}

func startNode(t *testing.T, cfg configs.Cluster, meta Meta) *Membership {
	t.Helper()
	return startTuned(t, cfg, meta, nil, tuning{})
}

// startTuned is startNode with the node's logger and tune.
func startTuned(t *testing.T, cfg configs.Cluster, meta Meta, logger *slog.Logger, tune tuning) *Membership {
	t.Helper()
	m, err := joinOn(t.Context(), cfg, meta, logger, nil, tune)
	if err != nil {
		t.Fatalf("join %s: %v", cfg.Name, err)
	}
	stopAtCleanup(t, m)
	return m
}

// stopAtCleanup shuts m down when the test ends.
func stopAtCleanup(t *testing.T, m *Membership) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		m.Shutdown(ctx)
	})
}

func edgeMeta(i int) Meta {
	return Meta{Role: RoleEdge, Region: "east", URL: fmt.Sprintf("http://127.0.0.1:%d", 7101+i), Weight: 1, State: StateAlive}
}

// startCluster starts n nodes joining through the first and waits until each
// sees all n, returning how long convergence took.
func startCluster(t *testing.T, n int) ([]*Membership, time.Duration) {
	t.Helper()
	start := time.Now()
	seed := startNode(t, testCluster("node-0"), edgeMeta(0))
	nodes := []*Membership{seed}
	for i := 1; i < n; i++ {
		nodes = append(nodes, startNode(t, testCluster(fmt.Sprintf("node-%d", i), seed.Addr()), edgeMeta(i)))
	}
	waitAll(t, nodes, func(ns []Node) bool { return len(ns) == n })
	return nodes, time.Since(start)
}

func waitAll(t *testing.T, nodes []*Membership, cond func([]Node) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, m := range nodes {
		if err := m.Wait(ctx, cond); err != nil {
			t.Fatalf("%s: condition not reached: %v; members %v", m.LocalName(), err, m.Members())
		}
	}
}

func TestClusterConverges(t *testing.T) {
	nodes, took := startCluster(t, 5)
	t.Logf("5 nodes converged in %s (probe 100ms, gossip 50ms)", took)
	for _, m := range nodes {
		ms := m.Members()
		for i, n := range ms {
			if n.Name != fmt.Sprintf("node-%d", i) || n.Meta.Role != RoleEdge || n.Meta.URL != edgeMeta(i).URL {
				t.Errorf("%s sees member %d as %+v", m.LocalName(), i, n)
			}
		}
		if len(m.Recent()) == 0 {
			t.Errorf("%s recorded no events", m.LocalName())
		}
	}
}

func TestCrashedNodeIsDetected(t *testing.T) {
	nodes, _ := startCluster(t, 4)
	victim := nodes[3]
	start := time.Now()
	if err := victim.crash(); err != nil {
		t.Fatal(err)
	}
	waitAll(t, nodes[:3], func(ns []Node) bool {
		for _, n := range ns {
			if n.Name == "node-3" {
				return false
			}
		}
		return true
	})
	t.Logf("crashed node dropped from every view %s after it stopped (probe 100ms)", time.Since(start))
	var kinds []string
	for _, ev := range nodes[0].Recent() {
		if ev.Node.Name == "node-3" {
			kinds = append(kinds, ev.Kind)
		}
	}
	if kinds[len(kinds)-1] != "leave" {
		t.Errorf("events for node-3: %v, want a final leave", kinds)
	}
	// Left finds it as it was, within the time asked, and no live member.
	if n, ok := nodes[0].Left("node-3", time.Minute); !ok || n.Meta.URL != edgeMeta(3).URL {
		t.Errorf("Left(node-3, 1m) = %+v, %v; want its last metadata", n, ok)
	}
	if _, ok := nodes[0].Left("node-3", 0); ok {
		t.Error("Left(node-3, 0) found it")
	}
	for _, name := range []string{"node-1", "node-9"} {
		if _, ok := nodes[0].Left(name, time.Minute); ok {
			t.Errorf("Left(%s) found a member that did not leave", name)
		}
	}
}

func TestGracefulLeave(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := nodes[2].Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := nodes[2].Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	waitAll(t, nodes[:2], func(ns []Node) bool { return len(ns) == 2 })
	t.Logf("left node dropped from every view %s after Shutdown began", time.Since(start))
}

func TestMetadataUpdatePropagates(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	ch, unsubscribe := nodes[0].Subscribe()
	defer unsubscribe()
	if err := nodes[1].UpdateMeta(t.Context(), func(m *Meta) { m.State = StateDraining }); err != nil {
		t.Fatal(err)
	}
	if nodes[1].Meta().State != StateDraining {
		t.Fatal("local meta not updated")
	}
	waitAll(t, []*Membership{nodes[0], nodes[2]}, func([]Node) bool { return true })
	waitAll(t, nodes, func(ns []Node) bool {
		for _, n := range ns {
			if n.Name == "node-1" {
				return n.Meta.State == StateDraining
			}
		}
		return false
	})
	// Notifications are spaced (notifyEvery): the update's comes within
	// that, not necessarily by now.
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Error("subscriber was not notified of the update")
	}
	for _, m := range nodes {
		edges := m.Edges("east")
		if len(edges) != 2 || edges[0].Name != "node-0" || edges[1].Name != "node-2" {
			t.Errorf("%s: Edges(east) = %v, want node-0 and node-2", m.LocalName(), edges)
		}
		if other := m.Edges("west"); len(other) != 0 {
			t.Errorf("%s: Edges(west) = %v", m.LocalName(), other)
		}
		// What form of peer signature each makes travels with the rest,
		// through an update too.
		for _, n := range m.Members() {
			if n.Meta.PeerSigning != PeerSigningTableAsk {
				t.Errorf("%s sees %s announce peer signing %d, want %d", m.LocalName(), n.Name, n.Meta.PeerSigning, PeerSigningTableAsk)
			}
		}
	}
}

func writeKey(t *testing.T, n int) string {
	t.Helper()
	key := make([]byte, n)
	for i := range key {
		key[i] = byte(i*7 + n)
	}
	path := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestEncryptedCluster(t *testing.T) {
	key := writeKey(t, 32)
	c0 := testCluster("enc-0")
	c0.SecretKeyFile = key
	seed := startNode(t, c0, edgeMeta(0))
	c1 := testCluster("enc-1", seed.Addr())
	c1.SecretKeyFile = key
	peer := startNode(t, c1, edgeMeta(1))
	waitAll(t, []*Membership{seed, peer}, func(ns []Node) bool { return len(ns) == 2 })

	// A node with another key cannot join: it stays alone.
	c2 := testCluster("enc-2", seed.Addr())
	c2.SecretKeyFile = writeKey(t, 16)
	stranger := startNode(t, c2, edgeMeta(2))
	c3 := testCluster("plain-3", seed.Addr())
	plain := startNode(t, c3, edgeMeta(3))
	// A node that does join afterwards proves gossip went on meanwhile.
	c4 := testCluster("enc-4", peer.Addr())
	c4.SecretKeyFile = key
	late := startNode(t, c4, edgeMeta(4))
	waitAll(t, []*Membership{seed, peer, late}, func(ns []Node) bool { return len(ns) == 3 })
	for _, m := range []*Membership{seed, peer, late} {
		for _, n := range m.Members() {
			if n.Name == "enc-2" || n.Name == "plain-3" {
				t.Errorf("%s admitted %s", m.LocalName(), n.Name)
			}
		}
	}
	if len(stranger.Members()) != 1 || len(plain.Members()) != 1 {
		t.Errorf("outsiders see %v and %v", stranger.Members(), plain.Members())
	}
}

func TestBadKeyFile(t *testing.T) {
	c := testCluster("bad")
	c.SecretKeyFile = writeKey(t, 20)
	_, err := Join(t.Context(), c, edgeMeta(0), nil)
	if err == nil || !strings.Contains(err.Error(), "key is 20 bytes, want 16, 24 or 32") {
		t.Fatalf("err = %v", err)
	}
}

// What a config may have a node gossip (configs.MaxRegion,
// configs.MaxAdvertiseURL) fits memberlist's limit beside the rest of the
// metadata at its longest: a draining edge's, carrying its load, announced
// at an IPv6 admin address with a zone. Before those bounds, a region the
// check passed failed the start, or left the load unannounced.
func TestMetaFitsWhatAConfigAllows(t *testing.T) {
	longest := Meta{
		Role: RoleBalancer, Region: strings.Repeat("r", configs.MaxRegion), URL: strings.Repeat("u", configs.MaxAdvertiseURL),
		Admin: "http://[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%abcdefghijklmno]:65535", Weight: configs.MaxEdgeWeight,
		State: StateDraining, Load: &Load{Sessions: math.MinInt64, Connections: math.MinInt64, CPU: math.MinInt64},
		PeerSigning: PeerSigningTableAsk,
	}
	b, err := longest.Encode()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d of %d bytes", len(b), memberlist.MetaMaxSize)
}

func TestMetaLimit(t *testing.T) {
	big := edgeMeta(0)
	big.URL = "http://" + strings.Repeat("a", 600) + ":7101"
	if _, err := big.Encode(); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("Encode of %d-byte URL: %v", len(big.URL), err)
	}
	if _, err := Join(t.Context(), testCluster("big"), big, nil); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("Join with oversized meta: %v", err)
	}
	m := startNode(t, testCluster("small"), edgeMeta(0))
	if err := m.UpdateMeta(t.Context(), func(meta *Meta) { meta.Admin = big.URL }); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("UpdateMeta oversized: %v", err)
	}
	if m.Meta().Admin != "" {
		t.Fatal("rejected update was applied")
	}
}

func TestJoinRetriesUntilSeedIsUp(t *testing.T) {
	// Reserve an address for the seed, start the joiner first, then the
	// seed. The address is free between the probe's crash and the seed's
	// bind, and anyone on the machine may take it then: another attempt
	// on a new address.
	for attempt := 1; ; attempt++ {
		probe := startNode(t, testCluster("probe"), edgeMeta(9))
		addr := probe.Addr()
		probe.crash()
		seedCfg := testCluster("late-seed")
		seedCfg.Bind = addr
		joiner := startNode(t, testCluster("early", addr), edgeMeta(1))
		seed := rebind(t, seedCfg, edgeMeta(0), attempt)
		if seed == nil {
			continue
		}
		waitAll(t, []*Membership{joiner, seed}, func(ns []Node) bool { return len(ns) == 2 })
		return
	}
}

// rebindAttempts bounds the scenarios a test runs again because the address
// it had freed for a node to bind again was taken meanwhile.
const rebindAttempts = 5

// holdAddr keeps addr, which a stopped node just freed, for the node that
// binds it again: a UDP socket and a TCP listener that answer nothing (to
// the cluster the node stays as dead as before) and that release lets go
// of right before the rebind. Free, the address of a node that stays away
// for seconds is taken by a dial's ephemeral port often enough, and for as
// long as that connection lasts, on a machine running other tests.
func holdAddr(t *testing.T, addr string) (release func()) {
	t.Helper()
	udp, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("hold %s, freed by a node that stopped: %v", addr, err)
	}
	tcp, err := net.Listen("tcp", addr)
	if err != nil {
		udp.Close()
		t.Fatalf("hold %s, freed by a node that stopped: %v", addr, err)
	}
	var once sync.Once
	release = func() { once.Do(func() { tcp.Close(); udp.Close() }) }
	t.Cleanup(release)
	return release
}

// rebind starts a node on the address cfg.Bind, which the test freed: nil
// when something else holds it now (another package's test, a dial's
// ephemeral port) and the test should run its scenario again on a new one,
// a failure after the attempt-th time.
func rebind(t *testing.T, cfg configs.Cluster, meta Meta, attempt int) *Membership {
	t.Helper()
	return rebindLogged(t, cfg, meta, nil, attempt)
}

// rebindLogged is rebind with the node's logger.
func rebindLogged(t *testing.T, cfg configs.Cluster, meta Meta, logger *slog.Logger, attempt int) *Membership {
	t.Helper()
	return rebindTuned(t, cfg, meta, logger, tuning{}, attempt)
}

// rebindTuned is rebindLogged with tune.
func rebindTuned(t *testing.T, cfg configs.Cluster, meta Meta, logger *slog.Logger, tune tuning, attempt int) *Membership {
	t.Helper()
	m, err := joinOn(t.Context(), cfg, meta, logger, nil, tune)
	if errors.Is(err, syscall.EADDRINUSE) || (err != nil && strings.Contains(err.Error(), "address already in use")) {
		if attempt >= rebindAttempts {
			t.Fatalf("join %s: %v, %d times", cfg.Name, err, attempt)
		}
		t.Logf("attempt %d: %s was taken before %s bound it again (%v); once more", attempt, cfg.Bind, cfg.Name, err)
		return nil
	}
	if err != nil {
		t.Fatalf("join %s: %v", cfg.Name, err)
	}
	stopAtCleanup(t, m)
	return m
}

// TestRestartedSeedRejoins: the first node (the seed, which has no seeds of
// its own) is killed, taken for dead by the others, and started again on the
// same address with an empty view. The nodes that list it as their seed join
// it again, so it sees the whole cluster, not only itself.
func TestRestartedSeedRejoins(t *testing.T) {
	for attempt := 1; ; attempt++ {
		nodes, _ := startCluster(t, 3)
		seedAddr := nodes[0].Addr()
		if err := nodes[0].crash(); err != nil {
			t.Fatal(err)
		}
		waitAll(t, nodes[1:], func(ns []Node) bool { return len(ns) == 2 })
		cfg := testCluster("node-0")
		cfg.Bind = seedAddr
		start := time.Now()
		restarted := rebind(t, cfg, edgeMeta(0), attempt)
		if restarted == nil {
			continue
		}
		waitAll(t, append([]*Membership{restarted}, nodes[1:]...), func(ns []Node) bool { return len(ns) == 3 })
		t.Logf("restarted seed back in every view %s after it started (seed check every %s)", time.Since(start), seedCheckLocal)
		return
	}
}

// TestUnreachedSeeds: a seed is reached when any of its addresses is a live
// member or this node; names are resolved (localhost only: no lookup leaves
// the machine).
func TestUnreachedSeeds(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	_, port, _ := strings.Cut(nodes[1].Addr(), ":")
	_, ownPort, _ := strings.Cut(nodes[0].Addr(), ":")
	dead := startNode(t, testCluster("gone"), edgeMeta(5))
	deadAddr := dead.Addr()
	dead.crash()
	seeds := []string{nodes[1].Addr(), "localhost:" + port, nodes[0].Addr(), "127.0.0.1:" + ownPort, deadAddr, "no-port"}
	got := nodes[0].unreachedSeeds(t.Context(), seeds)
	want := []string{deadAddr, "no-port"}
	if !slices.Equal(got, want) {
		t.Fatalf("unreachedSeeds(%v) = %v, want %v", seeds, got, want)
	}
}

func TestShutdownBoundedByExpiredContext(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	// Stop the peer without leaving so nothing acknowledges our leave.
	if err := nodes[1].crash(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	// What is asserted is that it returns at all (memberlist reads a wait
	// of 0 as "forever"); how long it took is reported.
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- nodes[0].Shutdown(expired) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Shutdown with an expired ctx did not return")
	}
	t.Logf("Shutdown with an expired ctx returned after %s", time.Since(start))
	if err := nodes[0].UpdateMeta(context.Background(), func(m *Meta) { m.State = StateDraining }); !errors.Is(err, ErrShutdown) {
		t.Errorf("UpdateMeta after Shutdown: %v, want ErrShutdown", err)
	}
	if err := nodes[0].UpdateMeta(ctx, func(*Meta) {}); !errors.Is(err, context.Canceled) {
		t.Errorf("UpdateMeta with a cancelled ctx: %v", err)
	}
}

func TestMemberlistLogsAtDebug(t *testing.T) {
	var buf strings.Builder
	var mu sync.Mutex
	h := slog.NewTextHandler(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return buf.Write(p) }), &slog.HandlerOptions{Level: slog.LevelDebug})
	w := &logWriter{logger: slog.New(h)}
	fmt.Fprintln(w, "2026/01/02 [ERR] memberlist: Failed to decrypt packet")
	fmt.Fprint(w, "[WARN] memberlist: Was able to connect to x over TCP but UDP probes failed\n")
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	for _, want := range []string{`level=DEBUG msg="Failed to decrypt packet" component=memberlist memberlist_level=ERR`, `level=DEBUG msg="Was able to connect`} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// BalancerBelow follows the live balancers' peer_signing as gossip
// changes it: an edge asks it for every request no balancer signed, so it
// is kept with the member set, not computed per call.
func TestBalancerBelowFollowsMembers(t *testing.T) {
	edge := startNode(t, testCluster("edge"), edgeMeta(0))
	// An edge's level is not a balancer's.
	if err := edge.UpdateMeta(t.Context(), func(m *Meta) { m.PeerSigning = PeerSigningBound }); err != nil {
		t.Fatal(err)
	}
	if edge.BalancerBelow(PeerSigningForwarded) {
		t.Fatal("below with no balancer at all")
	}
	bal := startNode(t, testCluster("balancer", edge.Addr()), Meta{Role: RoleBalancer, Region: "east", State: StateAlive})
	waitAll(t, []*Membership{edge}, func(ns []Node) bool { return len(ns) == 2 })
	if edge.BalancerBelow(PeerSigningForwarded) {
		t.Error("a balancer of this release counted below PeerSigningForwarded")
	}
	if err := bal.UpdateMeta(t.Context(), func(m *Meta) { m.PeerSigning = PeerSigningHead }); err != nil {
		t.Fatal(err)
	}
	waitAll(t, []*Membership{edge}, func(ns []Node) bool {
		return slices.ContainsFunc(ns, func(n Node) bool { return n.Name == "balancer" && n.Meta.PeerSigning == PeerSigningHead })
	})
	if !edge.BalancerBelow(PeerSigningUpgrade) || edge.BalancerBelow(PeerSigningHead) {
		t.Errorf("balancer at PeerSigningHead: below Upgrade %v (want true), below Head %v (want false)",
			edge.BalancerBelow(PeerSigningUpgrade), edge.BalancerBelow(PeerSigningHead))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := bal.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitAll(t, []*Membership{edge}, func(ns []Node) bool { return len(ns) == 1 })
	if edge.BalancerBelow(PeerSigningUpgrade) {
		t.Error("a balancer that left still counted")
	}
}
