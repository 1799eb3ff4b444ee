// Package healthtest starts real gossip members on loopback for the tests of
// the packages that consume membership (balancer, sessions, gslb,
// cmd/ringlb): memberlist's local profile with short intervals, one cluster
// key shared by the nodes of a test, cleanup registered with the test. It
// also holds the one "wait until" of those tests, generous and bounded, so
// no test asserts on how long something took.
//
// It is for tests only: nothing in a binary imports it.
package healthtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// Patience bounds every wait of a test: long enough for a busy CI machine
// (gossip converges in well under a second when idle), short enough that a
// broken test still ends.
const Patience = 30 * time.Second

// Timings of a test cluster: failure detection within about two seconds
// (a probe every 400 ms, answered within 200 ms, then suspicion), gossip
// rounds of 50 ms. Probes of 100 ms, answered within 50 ms, took live
// members for dead whenever the race-built test process waited that long
// for a CPU beside other work: rings lost a member and got it back, and an
// edge took over its peer's sessions (sessions'
// TestPushedFencesInterleaveWithAcks failed 20 of 30 runs so, 1 of 12 at
// 400 ms).
const (
	ProbeInterval  = 400 * time.Millisecond
	GossipInterval = 50 * time.Millisecond
)

// Cluster is one test's gossip cluster: the key its nodes share and the
// gossip address of its first node, which the others join.
type Cluster struct {
	t       testing.TB
	keyFile string // "" for a cluster without a key

	mu   sync.Mutex
	seed string
}

// New returns a keyed cluster (a fresh key in the test's temporary
// directory), as every cluster beyond loopback is.
func New(t testing.TB) *Cluster {
	t.Helper()
	key := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(key, []byte(configs.GenerateKey()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &Cluster{t: t, keyFile: key}
}

// NewKeyless returns a cluster without a key: loopback only, the mode in
// which edges fall back to checking the sender's address.
func NewKeyless(t testing.TB) *Cluster { return &Cluster{t: t} }

// KeyFile is the cluster's keyring file ("" when keyless).
func (c *Cluster) KeyFile() string { return c.keyFile }

// Config is the cluster section of a node named name: loopback on a free
// port, the test timings, the cluster's key, joining the first node.
func (c *Cluster) Config(name string) configs.Cluster {
	cfg := configs.Cluster{
		Name: name, Region: "east", Bind: "127.0.0.1:0", Profile: configs.ProfileLocal,
		ProbeInterval: configs.Duration(ProbeInterval), GossipInterval: configs.Duration(GossipInterval),
		SecretKeyFile: c.keyFile,
	}
	c.mu.Lock()
	if c.seed != "" {
		cfg.Join = []string{c.seed}
	}
	c.mu.Unlock()
	return cfg
}

// Join starts a member named name announcing meta (the first one seeds the
// cluster) and stops it when the test ends.
func (c *Cluster) Join(name string, meta health.Meta) *health.Membership {
	c.t.Helper()
	return c.JoinWith(c.Config(name), meta)
}

// JoinWith starts a member from cfg (a Config the test adjusted).
func (c *Cluster) JoinWith(cfg configs.Cluster, meta health.Meta) *health.Membership {
	c.t.Helper()
	m, err := health.Join(context.Background(), cfg, meta, nil)
	if err != nil {
		c.t.Fatalf("join %s: %v", cfg.Name, err)
	}
	c.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m.Shutdown(ctx)
	})
	c.mu.Lock()
	if c.seed == "" {
		c.seed = m.Addr()
	}
	c.mu.Unlock()
	return m
}

// WaitMembers waits, on membership events, until cond holds for m's live
// members; it fails the test after Patience.
func WaitMembers(t testing.TB, m *health.Membership, what string, cond func([]health.Node) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()
	if err := m.Wait(ctx, cond); err != nil {
		t.Fatalf("%s: %s: not within %s; members %v", m.LocalName(), what, Patience, m.Members())
	}
}

// AnnouncePeerSigning has m announce level as its peer_signing (what a
// node of an earlier release announces) and waits until watcher sees it.
func AnnouncePeerSigning(t testing.TB, m, watcher *health.Membership, level int) {
	t.Helper()
	if err := m.UpdateMeta(t.Context(), func(meta *health.Meta) { meta.PeerSigning = level }); err != nil {
		t.Fatal(err)
	}
	name := m.LocalName()
	WaitMembers(t, watcher, fmt.Sprintf("%s announcing peer_signing %d", name, level), func(ns []health.Node) bool {
		for _, n := range ns {
			if n.Name == name {
				return n.Meta.PeerSigning == level
			}
		}
		return false
	})
}

// Returns reports whether f returns within Patience: for a call that must
// not hang (a stop, a reopen) whatever a stalled peer or file does.
func Returns(f func()) bool {
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(Patience):
		return false
	}
}

// WaitUntil polls cond until it holds and fails the test after Patience.
// Use it where no event says the state changed (a ring rebuilt on another
// goroutine, a counter); prefer WaitMembers where gossip is what changes.
func WaitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, Patience)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// AnswersRefused reads ringlb_peer_answers_refused_total of the membership
// m: the peers' answers it took as no answer (health.Keyring.ReadAnswer).
func AnswersRefused(t testing.TB, m *health.Membership) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "ringlb_peer_answers_refused_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}
